package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/sluice-dev/sluice/pipeline/jobs"
)

// EventSource follows the change feed; *jobs.EventFeed implements it. It must be safe for
// concurrent use.
type EventSource interface {
	// Follow calls fn, from one goroutine, with every event whose sequence is above since
	// (0: every event kept; jobs.FeedFromNow: only new ones) until fn returns an error
	// (returned) or ctx ends (ctx's error). It blocks.
	Follow(ctx context.Context, since int64, fn func(jobs.Event) error) error
}

// eventBuffer bounds events read from the feed but not yet written to a slow client; when it
// is full the feed waits (flow control), nothing is dropped.
const eventBuffer = 256

// eventRoutes registers the change feed: server-sent events and a WebSocket, both ScopeRead.
func (s *Server) eventRoutes() {
	s.handle("GET /v1/events", s.require(ScopeRead, s.withEvents(s.eventsSSE)))
	s.handle("GET /v1/ws", s.require(ScopeRead, s.withEvents(s.eventsWS)))
}

// withEvents answers 501 when the server has no EventSource.
func (s *Server) withEvents(h http.HandlerFunc) http.HandlerFunc {
	return s.ifEnabled(s.cfg.Events != nil, "The change feed is not enabled on this server.", h)
}

// sinceParam reads where to resume: the Last-Event-ID header (SSE reconnects send it), else
// ?since=; a sequence N resumes after N, 0 replays everything kept, absent follows new events
// only.
func sinceParam(r *http.Request) (int64, error) {
	v := r.Header.Get("Last-Event-ID")
	what := "Last-Event-ID"
	if v == "" {
		v, what = r.URL.Query().Get("since"), "since"
	}
	if v == "" {
		return jobs.FeedFromNow, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%s %q is not an event sequence number (0 or more)", what, v)
	}
	return n, nil
}

// typesParam reads ?types=mutation,job: which event types to send; empty means all.
func typesParam(r *http.Request) (map[string]bool, error) {
	v := r.URL.Query().Get("types")
	if v == "" {
		return nil, nil
	}
	out := map[string]bool{}
	for _, t := range strings.Split(v, ",") {
		switch t {
		case "mutation", "job":
			out[t] = true
		default:
			return nil, fmt.Errorf("types: %q is not an event type (mutation, job)", t)
		}
	}
	return out, nil
}

// feedParams reads where a change feed resumes (sinceParam) and which event types it sends
// (typesParam); its error is the 400 answer's text.
func feedParams(r *http.Request) (since int64, types map[string]bool, err error) {
	if since, err = sinceParam(r); err != nil {
		return 0, nil, err
	}
	if types, err = typesParam(r); err != nil {
		return 0, nil, err
	}
	return since, types, nil
}

// follow runs the feed into a bounded channel until ctx ends or the server shuts down. The
// returned channel is closed when following stops; errc then holds its error.
func (s *Server) follow(ctx context.Context, since int64, types map[string]bool) (<-chan jobs.Event, <-chan error) {
	ch := make(chan jobs.Event, eventBuffer)
	errc := make(chan error, 1)
	go func() {
		defer close(ch)
		errc <- s.cfg.Events.Follow(ctx, since, func(ev jobs.Event) error {
			if types != nil && !types[ev.Type] {
				return nil
			}
			select {
			case ch <- ev:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	return ch, errc
}

// streamContext is r's context, also cancelled when the server starts shutting down.
func (s *Server) streamContext(r *http.Request) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(r.Context())
	go func() {
		select {
		case <-s.stopStreams:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// sseKeepAlive is how often an idle event stream gets a comment line, so proxies keep it open.
const sseKeepAlive = 15 * time.Second

// startSSE answers 200 with the headers of a server-sent event stream (not cached, not
// buffered by a proxy) and flushes them, so the client sees the stream open at once. It
// returns the controller that flushes each event. jobEvents and eventsSSE share it.
func startSSE(w http.ResponseWriter) *http.ResponseController {
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	_ = rc.Flush()
	return rc
}

// writeKeepAlive writes an SSE comment line and flushes it; an error means the client is gone.
func writeKeepAlive(w io.Writer, rc *http.ResponseController) error {
	if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
		return err
	}
	_ = rc.Flush()
	return nil
}

// eventsSSE handles GET /v1/events: server-sent events, "id:" the event's stream sequence,
// "event:" its type, "data:" its JSON payload. Resumable with Last-Event-ID or ?since=.
func (s *Server) eventsSSE(w http.ResponseWriter, r *http.Request) {
	since, types, err := feedParams(r)
	if err != nil {
		s.problem(w, r, http.StatusBadRequest, err.Error())
		return
	}
	ctx, cancel := s.streamContext(r)
	defer cancel()
	events, errc := s.follow(ctx, since, types)
	defer func() {
		cancel()
		for range events { // let the follower finish
		}
	}()
	rc := startSSE(w)
	keep := time.NewTicker(sseKeepAlive)
	defer keep.Stop()
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				if err := <-errc; err != nil && ctx.Err() == nil {
					s.log.Warn("change feed failed", "err", err)
					fmt.Fprintf(w, "event: error\ndata: %q\n\n", "change feed failed")
					_ = rc.Flush()
				}
				return
			}
			if _, err := fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", ev.Seq, ev.Type, ev.Data); err != nil {
				return
			}
			if len(events) == 0 {
				_ = rc.Flush()
			}
		case <-keep.C:
			if writeKeepAlive(w, rc) != nil {
				return
			}
		case <-ctx.Done():
			return
		}
	}
}

// wsFrame is one WebSocket text frame: the event with its payload inline.
type wsFrame struct {
	Seq     uint64    `json:"seq"`
	Type    string    `json:"type"`
	Subject string    `json:"subject"`
	Time    time.Time `json:"time"`
	Data    any       `json:"data"`
}

// eventsWS handles GET /v1/ws: the change feed over a WebSocket, one JSON text frame per event
// ({"seq","type","subject","time","data"}), from ?since=. Messages from the client are read
// and ignored (a ping keeps the connection open). The server closes with 1001 when it shuts
// down.
func (s *Server) eventsWS(w http.ResponseWriter, r *http.Request) {
	since, types, err := feedParams(r)
	if err != nil {
		s.problem(w, r, http.StatusBadRequest, err.Error())
		return
	}
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{WSBearerSubprotocol}})
	if err != nil {
		return // Accept answered the client
	}
	defer conn.CloseNow()
	ctx, cancel := s.streamContext(r)
	defer cancel()
	// CloseRead reads (and drops) client messages; cctx ends when the client closes. It gets
	// its own context: cancelling a read closes the connection without a close frame.
	cctx := conn.CloseRead(context.Background())
	go func() {
		select {
		case <-cctx.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	events, errc := s.follow(ctx, since, types)
	defer func() {
		cancel()
		for range events {
		}
	}()
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				if err := <-errc; err != nil && ctx.Err() == nil {
					s.log.Warn("change feed failed", "err", err)
					_ = conn.Close(websocket.StatusInternalError, "change feed failed")
				}
				return
			}
			frame := wsFrame{Seq: ev.Seq, Type: ev.Type, Subject: ev.Subject, Time: ev.Time, Data: ev.Data}
			wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
			err := writeWSJSON(wctx, conn, frame)
			wcancel()
			if err != nil {
				return
			}
		case <-ctx.Done():
			select {
			case <-s.stopStreams:
				_ = conn.Close(websocket.StatusGoingAway, "server shutting down")
			default:
			}
			return
		}
	}
}

func writeWSJSON(ctx context.Context, c *websocket.Conn, v wsFrame) error {
	b, err := jsonMarshal(v)
	if err != nil {
		return err
	}
	if err := c.Write(ctx, websocket.MessageText, b); err != nil {
		if errors.Is(err, context.Canceled) {
			return err
		}
		return fmt.Errorf("write websocket frame: %w", err)
	}
	return nil
}

// jsonMarshal encodes v; Data is a json.RawMessage, so the payload is inlined as is.
func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }
