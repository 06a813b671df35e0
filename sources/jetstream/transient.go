package jetstream

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// provisionPatience bounds how long provisioning retries a broker that answers "not now":
// a JetStream cluster electing its meta leader after a restart (10008), requests timing out
// while servers come back, a connection reconnecting. Sluice's processes start with the
// cluster in Kubernetes and compose, and a worker that exited on the first timeout left its
// start-up to the restart policy (issue 15's three-node proof saw "provision stream
// SLUICE_COMMANDS: context deadline exceeded" with four processes provisioning at once).
// Two minutes outlasts a rolling restart of three servers; past it the error is returned.
const provisionPatience = 2 * time.Minute

// provisionAttempt bounds one run of provisioning under a caller's deadline. A request sent
// while the cluster has no meta leader may never be answered, and JetStream waits for the
// context's deadline when it has one (its own 5 s per request only when it has none); a new run
// sends it again. Runs are idempotent, and a slow one keeps what it created, so the next does
// less.
const provisionAttempt = 15 * time.Second

// formingPatience bounds how long provisioning retries a placement refused with no reason
// given (a bare 10005, "no suitable peers for placement"). NATS says that both of a cluster
// with fewer servers than the replicas asked for, which no wait cures, and of a cluster still
// forming, whose meta leader has not yet heard from every server: a CI run created an R3
// stream a moment after three servers had elected a leader and was refused so. Servers join
// within seconds of each other; half a minute covers that and keeps the wait for a cluster
// that is simply too small short.
const formingPatience = 30 * time.Second

// forming reports whether err is a placement refused without a reason (see formingPatience).
func forming(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jsErrCodeNoSuitablePeers &&
		strings.TrimSpace(apiErr.Description) == "no suitable peers for placement"
}

// jsErrCodeClusterNotAvailable is JetStream's 10008, "JetStream system temporarily
// unavailable": no meta leader (yet), so the cluster cannot create or look anything up.
const jsErrCodeClusterNotAvailable jetstream.ErrorCode = 10008

// jsErrCodeNoSuitablePeers is JetStream's 10005, "no suitable peers for placement", followed by
// its reasons.
const jsErrCodeNoSuitablePeers jetstream.ErrorCode = 10005

// retryTransient runs f, which must be safe to run again (provisioning is: it creates what is
// missing and changes what differs), until it succeeds, fails for a reason a retry will not
// change, ctx ends, or provisionPatience has passed; it returns f's last outcome. It blocks.
//
// A request the server refused for want of permission is never answered, so it times out like
// a slow one; the connection's last error tells them apart, and such a failure is returned at
// once with the violation joined, which names the subject (a role without stream-admin
// permission creating what is missing: run `sluice provision`, or --provision off).
func retryTransient[T any](ctx context.Context, js jetstream.JetStream, f func(context.Context) (T, error)) (T, error) {
	deadline := time.Now().Add(provisionPatience)
	formingDeadline := time.Now().Add(formingPatience)
	delay := 250 * time.Millisecond
	for {
		actx, cancel := ctx, context.CancelFunc(func() {})
		if _, ok := ctx.Deadline(); ok {
			actx, cancel = context.WithTimeout(ctx, provisionAttempt)
		}
		v, err := f(actx)
		cancel()
		if err != nil && transient(err) {
			if perm := js.Conn().LastError(); errors.Is(perm, nats.ErrPermissionViolation) {
				return v, errors.Join(err, perm)
			}
		}
		retry := transient(err) || (forming(err) && time.Now().Before(formingDeadline))
		if err == nil || !retry || ctx.Err() != nil || time.Now().After(deadline) {
			return v, err
		}
		select {
		case <-ctx.Done():
			return v, err
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// transient reports whether err, or every error joined in it, is one a retry may cure: a
// JetStream request that timed out (not because ctx ended), no responders, a connection
// reconnecting, a cluster without a meta leader, or one with servers offline that a stream's
// replicas need. A missing object (ModeOff), a conflict, a
// refused permission or placement is not.
func transient(err error) bool {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs := j.Unwrap()
		for _, e := range errs {
			if !transient(e) {
				return false
			}
		}
		return len(errs) > 0
	}
	var missing *MissingError
	var conflict *ConflictError
	if errors.As(err, &missing) || errors.As(err, &conflict) {
		return false
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		// 10005 names its reasons in its description only: "peer offline" is a server that
		// may come back (a restart); a cluster too small or tags that match no server are not.
		return apiErr.ErrorCode == jsErrCodeClusterNotAvailable ||
			(apiErr.ErrorCode == jsErrCodeNoSuitablePeers && strings.Contains(apiErr.Description, "peer offline"))
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrConnectionReconnecting) || errors.Is(err, nats.ErrDisconnected)
}
