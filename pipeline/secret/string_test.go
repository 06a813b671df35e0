package secret_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/pipeline/secret"
)

// A String shows Redacted through fmt, slog (both handlers) and encoding/json, held directly
// or in a struct; decoding still fills it; empty stays visibly empty.
func TestStringRedacted(t *testing.T) {
	const value = "hunter2-very-secret"
	type holder struct {
		Name     string
		Password secret.String
		Nested   struct{ Token secret.String }
		Ptr      *secret.String
	}
	s := secret.String(value)
	h := holder{Name: "n", Password: s, Ptr: &s}
	h.Nested.Token = s
	var outs []string
	for _, verb := range []string{"%s", "%v", "%+v", "%#v", "%q", "%x", "%X", "%d", "%10s", "%T"} {
		outs = append(outs, fmt.Sprintf(verb, s), fmt.Sprintf(verb, h), fmt.Sprintf(verb, &h))
	}
	outs = append(outs, fmt.Sprint(s, h), fmt.Sprintln(s, h), s.String(), s.GoString())
	b, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	outs = append(outs, string(b))
	for _, newH := range []func(*bytes.Buffer) slog.Handler{
		func(w *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(w, nil) },
		func(w *bytes.Buffer) slog.Handler { return slog.NewTextHandler(w, nil) },
	} {
		var buf bytes.Buffer
		slog.New(newH(&buf)).Info("config", "password", s, "holder", h, "ptr", &h, slog.Any("any", s))
		outs = append(outs, buf.String())
	}
	for _, o := range outs {
		if strings.Contains(o, value) || strings.Contains(o, fmt.Sprintf("%x", value)) {
			t.Errorf("the secret shows: %s", o)
		}
	}
	if !strings.Contains(outs[len(outs)-1], secret.Redacted) {
		t.Errorf("text log does not say %s: %s", secret.Redacted, outs[len(outs)-1])
	}
	if string(s) != value {
		t.Errorf("string(s) = %q", string(s))
	}
	var back holder
	if err := json.Unmarshal([]byte(`{"Password":"p4ss"}`), &back); err != nil || string(back.Password) != "p4ss" {
		t.Errorf("decoded %q, %v", back.Password, err)
	}
	if got := fmt.Sprintf("%v|%q", secret.String(""), secret.String("")); got != `|""` {
		t.Errorf("empty String prints %s", got)
	}
}

// A DSN shows everything but its password, in every form it can hold one.
func TestDSNMasked(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"/data/graph.db", "/data/graph.db"},
		{"postgres://sluice@db:5432/graph", "postgres://sluice@db:5432/graph"},
		{"postgres://sluice:pa55w0rd@db:5432/graph?sslmode=require", "postgres://sluice:[REDACTED]@db:5432/graph?sslmode=require"},
		{"postgres://db/graph?user=sluice&password=pa55w0rd&sslmode=disable", "postgres://db/graph?user=sluice&password=[REDACTED]&sslmode=disable"},
		{"host=db user=sluice password=pa55w0rd dbname=graph", "host=db user=sluice password=[REDACTED] dbname=graph"},
		{"host=db password='pa55 w0rd' dbname=graph", "host=db password=[REDACTED] dbname=graph"},
	} {
		d := secret.DSN(tc.in)
		var buf bytes.Buffer
		slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "dsn", d)
		slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "dsn", d, "in", struct{ D secret.DSN }{d})
		b, _ := json.Marshal(struct{ D secret.DSN }{d})
		outs := []string{d.Masked(), fmt.Sprint(d), fmt.Sprintf("%q %#v %+v", d, d, struct{ D secret.DSN }{d}), buf.String(), string(b)}
		if outs[0] != tc.want {
			t.Errorf("Masked(%q) = %q, want %q", tc.in, outs[0], tc.want)
		}
		for _, o := range outs {
			if strings.Contains(o, "pa55") {
				t.Errorf("%q: the password shows: %s", tc.in, o)
			}
		}
	}
}
