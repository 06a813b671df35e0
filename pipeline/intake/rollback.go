package intake

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/pipeline/sign"
	"github.com/sluice-dev/sluice/pipeline/telemetry"
	"github.com/sluice-dev/sluice/schemas"
)

// publishSignedRollback publishes rollback event ev on its env's job subject, signed with key
// (the workers refuse a rollback without the API's signature), and waits for the stream to
// store it.
func publishSignedRollback(ctx context.Context, js jetstream.JetStream, key *sign.Key, msgID string, ev schemas.JobRollback) error {
	b, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encode rollback event: %w", err)
	}
	m := nats.NewMsg(schemas.JobSubject(ev.Env))
	m.Data = b
	m.Header.Set(nats.MsgIdHdr, msgID)
	m.Header.Set(schemas.HeaderSchema, string(schemas.JobEvent))
	key.SignMsg(sign.Rollback, m)
	telemetry.Inject(ctx, m.Header)
	if _, err := js.PublishMsg(ctx, m); err != nil {
		return fmt.Errorf("publish rollback event %s: %w", msgID, err)
	}
	return nil
}
