package pipeline_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluice-dev/sluice/pipeline"
	"github.com/sluice-dev/sluice/pipeline/commands"
	"github.com/sluice-dev/sluice/pipeline/intake"
	"github.com/sluice-dev/sluice/pipeline/requirements"
	"github.com/sluice-dev/sluice/pipeline/sign"
	"github.com/sluice-dev/sluice/schemas"
)

// Regression (issue 11, finding 4): a decision published straight onto the broker, its actor
// chosen by whoever published it, entered the hash-chained audit as "admin: forged-admin".
// Now the command worker dead-letters (class auth) every command the API did not sign, before
// decoding it, and nothing changes; a genuine decision through the API still applies.
func TestForgedCommandsAreDeadLettered(t *testing.T) {
	a := newAPIEnv(t)
	ctx := context.Background()
	feature := map[string]any{"title": "Dice roller", "description": "Roll dice for everyone at the table", "priority": "medium", "requester": "gm.bob"}
	id := a.json(t, "POST", "/v1/features?wait=5s", writerToken, feature, 201)["feature"].(map[string]any)["request_id"].(string)

	forged := decideCmd(id, requirements.ActionApprove, nil, nil)
	forged.CommandID, forged.Actor, forged.IssuedAt = "forged-1", "forged-admin", time.Now().UTC()
	body, err := json.Marshal(forged)
	if err != nil {
		t.Fatal(err)
	}
	otherKey, err := sign.NewKey("not-the-api-key-0123456789abcdefghijklmnop")
	if err != nil {
		t.Fatal(err)
	}
	genuineSig := testKey(t).Sign(sign.Command, body)
	altered := strings.Replace(string(body), "forged-admin", "forged-admix", 1)
	cases := []struct {
		name, body, sig, reason string
	}{
		{"unsigned", string(body), "", "no signature"},
		{"signed with another key", string(body), otherKey.Sign(sign.Command, body), "signed with key"},
		{"signature of another purpose", string(body), testKey(t).Sign(sign.Rollback, body), "forged or altered"},
		{"altered after signing", altered, genuineSig, "forged or altered"},
		{"garbage signature", string(body), "v1:" + testKey(t).ID() + ":!!", "forged or altered"},
		{"malformed header", string(body), "hmac", "not v1:<key id>:<mac>"},
	}
	for i, tc := range cases {
		m := nats.NewMsg(schemas.FeatureSubject(id))
		m.Data = []byte(tc.body)
		m.Header.Set(nats.MsgIdHdr, "forged-"+string(rune('a'+i)))
		if tc.sig != "" {
			m.Header.Set(schemas.HeaderSignature, tc.sig)
		}
		if _, err := a.js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	var dl []map[string]any
	waitFor(t, "every forged command dead-lettered", func() bool { dl = a.deadLetters(t); return len(dl) == len(cases) })
	for i, tc := range cases {
		e := dl[i]["error"].(map[string]any)
		if e["class"] != "auth" || !strings.Contains(e["message"].(string), tc.reason) || !strings.Contains(e["message"].(string), "command refused") {
			t.Errorf("%s: dead letter error %v, want class auth saying %q", tc.name, e, tc.reason)
		}
	}
	// Nothing changed: still pending at version 1, no audit entry by the forger.
	f, err := a.store.GetFeature(ctx, id)
	if err != nil || f.Status != requirements.StatusPending || f.Version != 1 {
		t.Fatalf("after forged approvals: %+v, %v", f, err)
	}
	audit, err := a.store.ListAudit(ctx, id, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range audit {
		if e.Admin == "forged-admin" || e.Admin == "forged-admix" {
			t.Fatalf("forged audit entry: %+v", e)
		}
	}
	// The genuine decision through the API applies, under the token's name.
	dec := a.json(t, "POST", "/v1/features/"+id+"/decision?wait=5s", adminToken, map[string]any{"action": "approve", "expected_version": 1}, 200)
	if f := dec["feature"].(map[string]any); f["status"] != "approved" || f["approved_by"] != "alice-admin" {
		t.Fatalf("genuine decision: %v", dec)
	}
	if n := len(a.deadLetters(t)); n != len(cases) {
		t.Fatalf("%d dead letters after the genuine decision", n)
	}
}

// A command worker and a client without a key are configuration errors, not a silent
// acceptance of unsigned commands.
func TestCommandKeyRequired(t *testing.T) {
	ce := newCmdEnv(t)
	if _, err := commands.NewWorker(commands.WorkerConfig{JS: ce.js, Streams: ce.cs, Store: ce.store}); err == nil || !strings.Contains(err.Error(), "Key is required") {
		t.Fatalf("worker without a key: %v", err)
	}
	if _, err := commands.NewClient(commands.ClientConfig{JS: ce.js, Streams: ce.cs, Store: ce.store}); err == nil || !strings.Contains(err.Error(), "Key is required") {
		t.Fatalf("client without a key: %v", err)
	}
}

// Regression (issue 11, finding 4): a rollback event published straight onto the broker
// deleted 50,000 documents with no requester recorded. Now the worker dead-letters every
// rollback the API did not sign, deletes nothing and leaves the job as it was; a loader's
// signed rollback still works.
func TestForgedRollbackIsDeadLettered(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.startWorker(t, e.store, nil)
	ctx := context.Background()
	res, _ := e.load(t, writeChunks(t, t.TempDir(), 20, "fr_%04d"), false)
	otherKey, err := sign.NewKey("not-the-api-key-0123456789abcdefghijklmnop")
	if err != nil {
		t.Fatal(err)
	}
	ev := schemas.JobRollback{JobID: res.JobID, Env: "dev", RequestedAt: time.Now().UTC()}
	body, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	for i, sig := range []string{"", otherKey.Sign(sign.Rollback, body), testKey(t).Sign(sign.Command, body)} {
		m := nats.NewMsg(schemas.JobSubject("dev"))
		m.Data = body
		m.Header.Set(nats.MsgIdHdr, "forged-rollback-"+string(rune('a'+i)))
		if sig != "" {
			m.Header.Set(schemas.HeaderSignature, sig)
		}
		if _, err := e.js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	var dl []map[string]any
	waitFor(t, "three rollbacks dead-lettered", func() bool { dl = e.deadLetters(t); return len(dl) == 3 })
	for _, d := range dl {
		if er := d["error"].(map[string]any); er["class"] != "auth" || !strings.Contains(er["message"].(string), "rollback refused") {
			t.Errorf("dead letter error %v", er)
		}
	}
	if n := e.count(t); n != 20 {
		t.Fatalf("%d documents after forged rollbacks, want 20", n)
	}
	if j, err := e.jobs.Get(ctx, res.JobID); err != nil || j.Rollback != nil {
		t.Fatalf("job after forged rollbacks: %+v, %v", j.Rollback, err)
	}
	// A worker without a key refuses even a signed rollback.
	keyless := newEnv(t, envOpts{})
	keyless.startWorker(t, keyless.store, func(c *pipeline.WorkerConfig) { c.Key = nil })
	res2, _ := keyless.load(t, writeChunks(t, t.TempDir(), 3, "fk_%04d"), false)
	if _, err := keyless.loader(t).Rollback(ctx, res2.JobID, "operator"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the rollback dead-lettered by a keyless worker", func() bool { dl = keyless.deadLetters(t); return len(dl) == 1 })
	if msg := dl[0]["error"].(map[string]any)["message"].(string); !strings.Contains(msg, "no command key") {
		t.Errorf("keyless worker: %q", msg)
	}
	if n := keyless.count(t); n != 3 {
		t.Fatalf("keyless worker deleted documents: %d left", n)
	}
	// A loader without a key cannot publish one.
	l, err := intake.NewLoader(intake.LoaderConfig{JS: e.js, Jobs: e.jobs})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Rollback(ctx, res.JobID, "operator"); err == nil || !strings.Contains(err.Error(), "no command key") {
		t.Fatalf("keyless loader rollback: %v", err)
	}
}
