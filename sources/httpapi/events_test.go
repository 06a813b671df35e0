package httpapi_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/sources/embedded"
	"github.com/sluice-dev/sluice/sources/embedded/embeddedtest"
	"github.com/sluice-dev/sluice/sources/httpapi"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// feedServer runs an API whose change feed is the real one (jobs.EventFeed over an
// embedded nats-server) and returns it with the JetStream context.
func feedServer(t *testing.T) (*httpapi.Server, jetstream.JetStream) {
	t.Helper()
	_, _, js := embeddedtest.Start(t, embedded.Config{LazySync: true})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := sjs.ProvisionCommands(ctx, js, sjs.ProvisionConfig{}); err != nil {
		t.Fatal(err)
	}
	// The cap is above the clients a test opens one after another, whose handlers end a
	// moment after each client leaves.
	s := newServer(t, httpapi.Config{Tokens: testTokens(), Events: jobs.NewEventFeed(js), MaxFeedsPerToken: 64})
	run(t, s)
	return s, js
}

// eventConsumers lists the consumers the broker holds on the change-feed stream.
func eventConsumers(t *testing.T, js jetstream.JetStream) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, sjs.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	l := st.ConsumerNames(ctx)
	for n := range l.Name() {
		names = append(names, n)
	}
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	return names
}

// waitFeedsGone waits up to within for the reader token's feeds to be 0 and the stream's
// consumers to be back to want.
func waitFeedsGone(t *testing.T, s *httpapi.Server, js jetstream.JetStream, want int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		feeds, cons := httpapi.OpenFeeds(s, "reader"), eventConsumers(t, js)
		if feeds == 0 && len(cons) == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s after the clients left: %d feeds open for the token, %d consumers on %s (want 0 and %d): %v",
				within, feeds, len(cons), sjs.StreamEvents, want, cons)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// rawFeed opens a feed over a bare TCP connection, reads the response head and returns the
// connection, so the test can drop it the way a crashed client or a cut network does.
func rawFeed(t *testing.T, addr, request string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(c, request, readTok); err != nil {
		c.Close()
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusSwitchingProtocols {
		c.Close()
		t.Fatalf("feed answered %s", resp.Status)
	}
	return c
}

const (
	rawSSE = "GET /v1/events HTTP/1.1\r\nHost: sluice\r\nAuthorization: Bearer %s\r\n\r\n"
	rawWS  = "GET /v1/ws HTTP/1.1\r\nHost: sluice\r\nAuthorization: Bearer %s\r\nUpgrade: websocket\r\n" +
		"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)

// Regression: a change-feed client that closed its connection right after the response head
// left its JetStream consumer on the broker until the server's InactiveThreshold dropped it
// (≈30 s; 6 of 30 such requests against `sluice serve`): the handler saw the client leave at
// once, but the feed's ctx was cancelled while the consumer's create request was in flight,
// so the create failed with context.Canceled on the client side while the broker created the
// consumer, and nothing deleted it. Now every such consumer is deleted, the feed slot is
// given back and the consumer count is back where it was within 3 s, for server-sent events
// and for a WebSocket dropped without a close frame.
func TestFeedClientLeavingLeavesNoConsumer(t *testing.T) {
	tests := []struct {
		name    string
		request string
	}{
		{"server-sent events", rawSSE},
		{"websocket without a close frame", rawWS},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, js := feedServer(t)
			base := len(eventConsumers(t, js))
			const clients = 40
			for range clients {
				rawFeed(t, s.Addr(), tc.request).Close()
			}
			waitFeedsGone(t, s, js, base, 3*time.Second)
		})
	}
}

// A client that stays connected keeps its feed, its consumer and its events: leaving is
// noticed from the connection, never guessed from silence.
func TestFeedClientStayingKeepsReceiving(t *testing.T) {
	s, js := feedServer(t)
	base := len(eventConsumers(t, js))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.Addr()+"/v1/events", nil)
	req.Header.Set("Authorization", "Bearer "+readTok)
	resp, err := client(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	ws, _, err := websocket.Dial(ctx, "ws://"+s.Addr()+"/v1/ws", &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + readTok}}, HTTPClient: client(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()

	// Longer than any delay the server could take to notice a client gone.
	time.Sleep(2500 * time.Millisecond)
	if feeds, cons := httpapi.OpenFeeds(s, "reader"), eventConsumers(t, js); feeds != 2 || len(cons) != base+2 {
		t.Fatalf("two connected clients: %d feeds, %d consumers (want 2 and %d)", feeds, len(cons), base+2)
	}
	for i := range 3 {
		if _, err := js.Publish(ctx, sjs.MutationEventSubject(fmt.Sprintf("k%d", i)), fmt.Appendf(nil, `{"type":"mutation","n":%d}`, i)); err != nil {
			t.Fatal(err)
		}
	}
	sc := bufio.NewScanner(resp.Body)
	for i := 0; i < 3; {
		if !sc.Scan() {
			t.Fatalf("server-sent events ended after %d events: %v", i, sc.Err())
		}
		if line := sc.Text(); strings.HasPrefix(line, "data: ") {
			if want := fmt.Sprintf(`"n":%d`, i); !strings.Contains(line, want) {
				t.Fatalf("event %d: %q, want %s", i, line, want)
			}
			i++
		}
	}
	for i := range 3 {
		_, b, err := ws.Read(ctx)
		if err != nil {
			t.Fatalf("websocket ended after %d events: %v", i, err)
		}
		if want := fmt.Sprintf(`"n":%d`, i); !strings.Contains(string(b), want) {
			t.Fatalf("frame %d: %s, want %s", i, b, want)
		}
	}
	resp.Body.Close()
	_ = ws.Close(websocket.StatusNormalClosure, "")
	waitFeedsGone(t, s, js, base, 3*time.Second)
}

// TestFeedRefusesBadParameters checks that both change feeds answer 400, before opening a
// stream, to a resume point or an event type they cannot follow (feedParams).
func TestFeedRefusesBadParameters(t *testing.T) {
	s, _ := feedServer(t)
	h := s.Handler()
	tests := []struct {
		name   string
		query  string
		header map[string]string
		detail string
	}{
		{name: "since not a number", query: "?since=abc", detail: `since "abc" is not an event sequence number`},
		{name: "since negative", query: "?since=-1", detail: `since "-1" is not an event sequence number`},
		{name: "Last-Event-ID not a number", header: map[string]string{"Last-Event-ID": "x"}, detail: `Last-Event-ID "x" is not`},
		{name: "unknown type", query: "?types=job,bogus", detail: `types: "bogus" is not an event type`},
		{name: "empty type", query: "?types=job,", detail: `types: "" is not an event type`},
	}
	for _, route := range []string{"/v1/events", "/v1/ws"} {
		for _, tt := range tests {
			t.Run(route+" "+tt.name, func(t *testing.T) {
				p := decodeProblem(t, serve(t, h, "GET", route+tt.query, readTok, nil, tt.header), http.StatusBadRequest)
				if !strings.Contains(p.Detail, tt.detail) {
					t.Errorf("detail = %q, want it to contain %q", p.Detail, tt.detail)
				}
			})
		}
	}
}
