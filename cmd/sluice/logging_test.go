package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/sluice-dev/sluice/pipeline/secret"
	"github.com/sluice-dev/sluice/sinks/astra/dataapi"
	"github.com/sluice-dev/sluice/sources/httpapi"
	"github.com/sluice-dev/sluice/sources/httpapi/client"
)

func TestParseLogFormat(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"", logJSON, true}, // a bytes.Buffer is no terminal
		{"json", logJSON, true},
		{" TEXT ", logText, true},
		{"yaml", "", false},
		{"logfmt", "", false},
	} {
		got, err := parseLogFormat(tc.in, &bytes.Buffer{})
		var ue usageError
		switch {
		case tc.ok && (err != nil || got != tc.want):
			t.Errorf("parseLogFormat(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		case !tc.ok && (!errors.As(err, &ue) || !strings.Contains(err.Error(), "SLUICE_LOG_FORMAT")):
			t.Errorf("parseLogFormat(%q) = %q, %v; want a usage error naming SLUICE_LOG_FORMAT", tc.in, got, err)
		}
	}
	cmd := exec.Command(binary, "version")
	cmd.Env = append(cmd.Environ(), "SLUICE_LOG_FORMAT=yaml")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), `SLUICE_LOG_FORMAT "yaml": want json or text`) {
		t.Fatalf("sluice version with SLUICE_LOG_FORMAT=yaml: %v\n%s", err, out)
	}
}

// Secrets are redacted by their type: every configuration struct that holds one, logged
// whole at debug in both formats, shows none of them; and an attribute whose key names a
// secret is redacted whatever its type (the handler's guard).
func TestLogRedactsSecrets(t *testing.T) {
	secrets := map[string]string{
		"NATS_PASSWORD":              "nats-pass-0123456789abcdef",
		"ASTRA_DB_APPLICATION_TOKEN": "AstraCS:astra-token-0123456789",
		"SLUICE_COMMAND_KEY":         "command-key-0123456789abcdef",
		"SLUICE_TOKEN":               "api-client-token-0123456789",
		"SLUICE_GRAPH_DSN":           "graph-db-pass-0123456789",
	}
	for k, v := range secrets {
		t.Setenv(k, v)
	}
	t.Setenv("SLUICE_GRAPH_DSN", "postgres://sluice:"+secrets["SLUICE_GRAPH_DSN"]+"@graph-db:5432/graph")
	const apiToken = "api-server-token-0123456789"
	var c config
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	bindServe(fs, &c)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if err := applyEnv(fs); err != nil {
		t.Fatal(err)
	}
	if string(c.NATS.Password) != secrets["NATS_PASSWORD"] || string(c.Astra.Token) != secrets["ASTRA_DB_APPLICATION_TOKEN"] || string(c.CommandKey) != secrets["SLUICE_COMMAND_KEY"] {
		t.Fatalf("the secrets were not read: %q %q %q", c.NATS.Password, c.Astra.Token, c.CommandKey)
	}
	tokens := []httpapi.Token{{Name: "ops", Token: apiToken, Scopes: []httpapi.Scope{httpapi.ScopeAdmin}}}
	cc := client.Config{URL: client.DefaultURL, Token: secret.String(secrets["SLUICE_TOKEN"])}
	for _, format := range []string{logJSON, logText} {
		var buf bytes.Buffer
		log := newLogger(&buf, slog.LevelDebug, format)
		log.Debug("configuration", "config", c)
		log.Debug("parts", "nats", c.NATS, "astra", c.Astra, "astra_cfg", dataapi.Config(c.Astra),
			"nats_ptr", &c.NATS, "api_list", tokens, "client", cc)
		log.Debug("values", "p", c.NATS.Password, "k", c.CommandKey, "t", tokens[0].Token)
		// The guard: plain strings under keys that name a secret.
		log.Info("forgotten", "password", secrets["NATS_PASSWORD"], "astra_token", secrets["ASTRA_DB_APPLICATION_TOKEN"],
			slog.Group("auth", "Authorization", "Bearer "+apiToken), "client_secret", []byte(secrets["SLUICE_COMMAND_KEY"]))
		log.Info("not secrets", "tokens_required", true, "tokens", 3)
		out := buf.String()
		for name, v := range secrets {
			if strings.Contains(out, v) {
				t.Errorf("%s: %s shows in the log:\n%s", format, name, out)
			}
		}
		if strings.Contains(out, apiToken) {
			t.Errorf("%s: the API token shows in the log:\n%s", format, out)
		}
		if !strings.Contains(out, "postgres://sluice:"+secret.Redacted+"@graph-db:5432/graph") {
			t.Errorf("%s: the graph DSN is not shown masked:\n%s", format, out)
		}
		if !strings.Contains(out, secret.Redacted) || strings.Contains(out, "!ERROR") {
			t.Errorf("%s: no %s, or a value the handler could not write:\n%s", format, secret.Redacted, out)
		}
		if want := map[string]string{logJSON: `"tokens_required":true,"tokens":3`, logText: "tokens_required=true tokens=3"}[format]; !strings.Contains(out, want) {
			t.Errorf("%s: a bool or a number under a secret-like key was redacted; want %s in:\n%s", format, want, out)
		}
	}
}

// With no SLUICE_LOG_FORMAT a process whose stderr is not a terminal logs JSON: one object a
// line with time, level and msg; SLUICE_LOG_FORMAT=text logs key=value text. At debug, the
// configuration is logged and its secrets are not.
func TestLogFormat(t *testing.T) {
	const key = "command-key-for-the-log-test-0123456789"
	for _, format := range []string{"", "text"} {
		t.Run("format="+format, func(t *testing.T) {
			cmd, logs := startProc(t, "serve", []string{"SLUICE_LOG_FORMAT=" + format, "SLUICE_LOG_LEVEL=debug", "SLUICE_COMMAND_KEY=" + key},
				"serve", "--data-dir", t.TempDir(), "--http-addr", freeAddr(t), "--ops-addr", "off")
			waitRunning(t, logs)
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("serve: %v", err)
				}
			case <-time.After(60 * time.Second):
				t.Fatal("serve did not stop within 60 s of SIGTERM")
			}
			out := logs.String()
			if strings.Contains(out, key) {
				t.Fatalf("the command key shows in the log:\n%s", out)
			}
			var msgs []string
			sc := bufio.NewScanner(strings.NewReader(out))
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				line := sc.Text()
				if format == "text" {
					if !strings.HasPrefix(line, "time=") || !strings.Contains(line, " level=") || !strings.Contains(line, " msg=") {
						t.Fatalf("not a text log line: %s", line)
					}
					msgs = append(msgs, line)
					continue
				}
				var rec map[string]any
				if err := json.Unmarshal([]byte(line), &rec); err != nil {
					t.Fatalf("not a JSON object: %s: %v", line, err)
				}
				for _, k := range []string{"time", "level", "msg"} {
					if _, ok := rec[k].(string); !ok {
						t.Fatalf("no %s in %s", k, line)
					}
				}
				if _, err := time.Parse(time.RFC3339Nano, rec["time"].(string)); err != nil {
					t.Fatalf("time: %v in %s", err, line)
				}
				msgs = append(msgs, fmt.Sprint(rec["msg"]))
			}
			for _, want := range []string{"configuration", "sluice running", "sluice stopped"} {
				if !strings.Contains(strings.Join(msgs, "\n"), want) {
					t.Fatalf("no %q line:\n%s", want, out)
				}
			}
		})
	}
}
