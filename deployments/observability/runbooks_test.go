package observability_test

import (
	"bufio"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

const (
	operationsDoc  = "../../docs/operations.md"
	runbookSection = "Alerts and runbooks"
)

// heading is one Markdown heading of a document, with the anchor GitHub gives it.
type heading struct {
	level  int
	text   string
	anchor string
	body   strings.Builder
}

// headings returns the headings of a Markdown file outside fenced code blocks, each with the
// text under it up to the next heading, and every anchor GitHub makes (a repeated anchor gets
// -1, -2 …).
func headings(t *testing.T, path string) []*heading {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var hs []*heading
	seen := map[string]int{}
	fenced := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
		}
		if !fenced {
			if level := len(line) - len(strings.TrimLeft(line, "#")); level > 0 && level <= 6 && strings.HasPrefix(line[level:], " ") {
				text := strings.TrimSpace(line[level:])
				anchor := slug(text)
				if n := seen[anchor]; n > 0 {
					seen[anchor]++
					anchor += "-" + strconv.Itoa(n)
				} else {
					seen[anchor] = 1
				}
				hs = append(hs, &heading{level: level, text: text, anchor: anchor})
				continue
			}
		}
		if len(hs) > 0 {
			hs[len(hs)-1].body.WriteString(line + "\n")
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return hs
}

// slug is GitHub's anchor for a heading: lower case, punctuation dropped (hyphens and
// underscores kept), spaces made hyphens.
func slug(text string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(text) {
		switch {
		case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}

func TestSlug(t *testing.T) {
	tests := []struct{ name, text, want string }{
		{name: "alert", text: "SluiceDown", want: "sluicedown"},
		{name: "words", text: "Alerts and runbooks", want: "alerts-and-runbooks"},
		{name: "code and colon", text: "Measuring AstraDB loading: `sluice bench astra`", want: "measuring-astradb-loading-sluice-bench-astra"},
		{name: "code only", text: "Large originals: `payload_ref`", want: "large-originals-payload_ref"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := slug(tt.text); got != tt.want {
				t.Fatalf("slug(%q) = %q, want %q", tt.text, got, tt.want)
			}
		})
	}
}

// TestEveryAlertHasARunbook checks docs/operations.md against alerts.yaml: every alert has a
// "### Name" section under "## Alerts and runbooks" saying what it means, how to look and what
// to do; its runbook_url's anchor is that section's; no section is left for an alert that is
// gone; and every link to an anchor of the document from the section lands on a heading.
func TestEveryAlertHasARunbook(t *testing.T) {
	hs := headings(t, operationsDoc)
	anchors := map[string]bool{}
	for _, h := range hs {
		anchors[h.anchor] = true
	}
	runbooks := map[string]*heading{}
	in := false
	var section strings.Builder
	for _, h := range hs {
		if h.level <= 2 {
			in = h.level == 2 && h.text == runbookSection
		}
		if !in {
			continue
		}
		section.WriteString(h.body.String())
		if h.level == 3 {
			runbooks[h.text] = h
		}
	}
	if len(runbooks) == 0 {
		t.Fatalf("%s: no \"## %s\" section with \"### AlertName\" subsections", operationsDoc, runbookSection)
	}

	alerts := map[string]bool{}
	for _, g := range parseAlerts(t).Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts[r.Alert] = true
			h, ok := runbooks[r.Alert]
			if !ok {
				t.Errorf("%s: no \"### %s\" under \"## %s\" in %s", r.Alert, r.Alert, runbookSection, operationsDoc)
				continue
			}
			want := runbookBase + "#" + h.anchor
			if got := r.Annotations["runbook_url"]; got != want {
				t.Errorf("%s: runbook_url %q, want %q (the heading's anchor)", r.Alert, got, want)
			}
			for _, part := range []string{"**Means:**", "**Look:**", "**Do:**"} {
				if !strings.Contains(h.body.String(), part) {
					t.Errorf("%s: its runbook has no %s part", r.Alert, part)
				}
			}
		}
	}
	for name := range runbooks {
		if !alerts[name] {
			t.Errorf("\"### %s\" in %s: no such alert in %s", name, operationsDoc, alertsFile)
		}
	}

	link := regexp.MustCompile(`\]\(#([^)\s]+)\)`)
	for _, m := range link.FindAllStringSubmatch(section.String(), -1) {
		if !anchors[m[1]] {
			t.Errorf("the runbooks link to #%s, which is no heading of %s", m[1], operationsDoc)
		}
	}
}
