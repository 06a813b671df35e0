package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/sluice-dev/sluice/pipeline/jobs"
)

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func truncateText(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n]) + "…"
}

// Rejection listings stop at a limit and say how many are left: a file of 176,465 junk lines
// printed 1,000 of them and no count. Job records keep at most schemas.MaxIssues (1,000)
// rejections, so that is the limit elsewhere; a terminal gets the first 20 (a screenful),
// --json always carries the whole record.
const (
	rejectionsShown         = 1000
	rejectionsShownTerminal = 20
)

// rejectionLimit is how many rejection lines to print on w.
func rejectionLimit(w io.Writer) int {
	if isTerminal(w) {
		return rejectionsShownTerminal
	}
	return rejectionsShown
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// printRejections prints up to limit rejection lines, then "and N more rejected items" with
// the number of rejected items not printed: total (the job's count) less those printed.
func printRejections(w io.Writer, rs []jobs.ItemIssue, total int64, limit int) {
	shown := rs[:min(len(rs), limit)]
	for _, r := range shown {
		id := ""
		if r.ID != "" {
			id = " (" + r.ID + ")"
		}
		fmt.Fprintf(w, "  rejected item %d%s: %s\n", r.Index, id, r.Reason)
	}
	if left := total - int64(len(shown)); left > 0 && len(rs) > 0 {
		fmt.Fprintf(w, "  and %d more rejected items\n", left)
	}
}

// progressBar draws one status line per update on a terminal, and nothing elsewhere.
type progressBar struct {
	w       io.Writer
	enabled bool
	mu      sync.Mutex // guards last
	last    time.Time
}

func newProgressBar(w io.Writer, want bool) *progressBar {
	return &progressBar{w: w, enabled: want && isTerminal(w)}
}

func (p *progressBar) update(file string, j jobs.Job) {
	if !p.enabled {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if time.Since(p.last) < 100*time.Millisecond && !j.State.Done() {
		return
	}
	p.last = time.Now()
	done := j.Written + j.DeadLettered
	total := j.Published
	pct := 0.0
	if total > 0 {
		pct = 100 * float64(done) / float64(total)
	}
	const width = 30
	filled := int(pct / 100 * width)
	bar := make([]byte, width)
	for i := range bar {
		bar[i] = '.'
		if i < filled {
			bar[i] = '#'
		}
	}
	fmt.Fprintf(p.w, "\r%-30.30s [%s] %5.1f%% %d/%d", file, bar, pct, done, total)
}

func (p *progressBar) done() {
	if p.enabled {
		fmt.Fprintln(p.w)
	}
}

// printTable prints items under header as aligned columns, one row each; row gives an item's
// cells, tab-separated.
func printTable[T any](w io.Writer, header string, items []T, row func(T) string) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, it := range items {
		fmt.Fprintln(tw, row(it))
	}
	_ = tw.Flush()
}

// printMore says how to list the next page, when there is one (cursor not empty).
func printMore(w io.Writer, cmdLine, cursor string) {
	if cursor != "" {
		fmt.Fprintf(w, "more: %s --cursor %s\n", cmdLine, cursor)
	}
}
