package pipeline_test

import (
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/pipeline"
)

// The retry and dead-letter lines name the message by the attributes the dead letters use
// (issue 16): job_id (was job, or absent), stream_seq (was seq), msg_id, dead_letter_id, and
// err — never seq, job, id or error.
func TestLogsNameIDsAlike(t *testing.T) {
	e := newEnv(t, envOpts{})
	var buf lockedBuffer
	sink := newFaultySink(e.store)
	sink.reject["ids_0004"] = true
	sink.failTimes["ids_0002"] = 1
	e.startWorker(t, sink, func(c *pipeline.WorkerConfig) { c.Logger = slog.New(slog.NewJSONHandler(&buf, nil)) })
	_, job := e.load(t, writeChunks(t, t.TempDir(), 6, "ids_%04d"), false)
	dl := e.deadLetters(t)
	if job.DeadLettered != 1 || len(dl) != 1 {
		t.Fatalf("job %+v, %d dead letters", job, len(dl))
	}
	var dead, retried bool
	for line := range strings.Lines(buf.String()) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		for _, old := range []string{"seq", "job", "id", "error"} {
			if _, ok := rec[old]; ok {
				t.Errorf("attribute %q: %s", old, line)
			}
		}
		msg, _ := rec["msg"].(string)
		if !strings.HasPrefix(msg, "dead-lettered") && !strings.HasPrefix(msg, "retrying") {
			continue
		}
		seq, _ := rec["stream_seq"].(float64)
		if rec["job_id"] != job.JobID || seq < 1 || rec["err"] == nil || rec["subject"] == nil {
			t.Errorf("%s names the message badly: %s", msg, line)
		}
		if strings.HasPrefix(msg, "dead-lettered") {
			dead = true
			if rec["dead_letter_id"] != dl[0]["id"] || seq != dl[0]["stream_seq"] {
				t.Errorf("the dead-letter line does not name dead letter %v (stream_seq %v): %s", dl[0]["id"], dl[0]["stream_seq"], line)
			}
		} else {
			retried = true
		}
	}
	if !dead || !retried {
		t.Fatalf("dead-lettered logged %v, retrying logged %v:\n%s", dead, retried, buf.String())
	}
}
