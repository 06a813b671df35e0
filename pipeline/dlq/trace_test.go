package dlq_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/sluice-dev/sluice/pipeline/dlq"
	"github.com/sluice-dev/sluice/schemas"
)

// TestDeadLetterTraceID checks a dead letter's trace id comes from the one strict traceparent
// parser (schemas.TraceIDFromTraceparent). The sender had a loose parser of its own that took
// any 32 characters between the first two dashes, so a malformed header gave a trace id that
// no trace has.
func TestDeadLetterTraceID(t *testing.T) {
	e := newEnv(t)
	e.startWorker(t, newFaultySink(e.store, "tp_ok", "tp_upper", "tp_short_parent", "tp_zero"))
	for _, tc := range []struct {
		name, id, traceparent, want string
	}{
		{name: "valid", id: "tp_ok", traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
			want: "0af7651916cd43dd8448eb211c80319c"},
		{name: "upper-case hex", id: "tp_upper", traceparent: "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01"},
		{name: "short parent id", id: "tp_short_parent", traceparent: "00-0af7651916cd43dd8448eb211c80319c-xyz-01"},
		{name: "all-zero trace id", id: "tp_zero", traceparent: "00-00000000000000000000000000000000-b7ad6b7169203331-01"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := nats.NewMsg("sluice.v1.chunks.test")
			m.Data = []byte(`{"chunk_id":"` + tc.id + `","content":"x"}`)
			m.Header.Set(schemas.HeaderTraceparent, tc.traceparent)
			ack, err := e.js.PublishMsg(context.Background(), m)
			if err != nil {
				t.Fatal(err)
			}
			id := schemas.StreamChunks + "-" + strconv.FormatUint(ack.Sequence, 10)
			var got dlq.Entry
			waitFor(t, "dead letter of "+tc.id, func() bool {
				got, err = e.dlq.Get(context.Background(), id)
				return err == nil
			})
			if got.Envelope.TraceID != tc.want {
				t.Fatalf("trace_id = %q, want %q", got.Envelope.TraceID, tc.want)
			}
		})
	}
}
