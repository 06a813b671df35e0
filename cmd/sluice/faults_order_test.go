package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pipeline/requirements"
	"github.com/sluice-dev/sluice/sinks/graph/pgtest"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// The order scenario of TestFaultSuiteMore: per-key command order with two API processes and
// three worker processes while the workers are killed in turn.

// orderCluster is the deployment of the order scenario: two `sluice api` and three `sluice
// worker` processes, each with a data directory of its own, as on five hosts: what they share
// is what a real deployment shares. The requirements store is AstraDB (here the Data API
// double): the embedded SQLite store is a file in one process's data directory, which workers
// on other hosts cannot open. The graph (commands are projected into it) is PostgreSQL, the
// broker an external nats-server, and the command signing key one secret file given to every
// process (--command-key-file), as a mounted secret would be.
type orderCluster struct {
	e       *faultEnv
	dsn     string
	apis    []*server
	workers []*os.Process
	// workerArgs returns the arguments of a new worker (e.worker adds --nats-url).
	workerArgs func() []string
}

// startOrderCluster starts the order scenario's deployment.
func startOrderCluster(t *testing.T) *orderCluster {
	t.Helper()
	pg := pgtest.StartClusterWith(pgtest.Config{Durable: true})
	t.Cleanup(pg.Stop)
	c := &orderCluster{dsn: pg.Database(t), e: newFaultEnv(t, true)}
	keyFile := filepath.Join(t.TempDir(), "command.key")
	if err := os.WriteFile(keyFile, []byte("fault-suite-command-key-0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	shared := []string{"--graph-dsn", c.dsn, "--command-key-file", keyFile}
	c.workerArgs = func() []string { // e.worker adds --nats-url
		return append([]string{"--data-dir", t.TempDir(), "--drain-timeout", "10s"}, shared...)
	}
	apiArgs := func() []string {
		return append([]string{"--data-dir", t.TempDir(), "--nats-url", c.e.nats.url()}, shared...)
	}
	for range 3 {
		c.workers = append(c.workers, c.e.worker(c.e.nats.url(), c.workerArgs()...).Process)
	}
	astraEnv := []string{"ASTRA_DB_API_ENDPOINT=" + c.e.double.URL(), "ASTRA_DB_APPLICATION_TOKEN=" + c.e.double.Token()}
	c.apis = []*server{
		startServer(t, "api", astraEnv, apiArgs()...),
		startServer(t, "api", astraEnv, apiArgs()...),
	}
	return c
}

// orderSend is the order scenario's commands being sent, one goroutine per key.
type orderSend struct {
	features int
	sent     [][]string    // command ids per key, in acceptance order
	sentAt   [][]time.Time // when each was accepted
	reqIDs   []string      // the feature request of each feature key
	errs     chan error
	wg       sync.WaitGroup
}

// sendOrdered starts sending each key's mutations one after another, alternating between the
// two APIs: the next only once the previous was accepted (202: JetStream stored it), so the
// order of acceptance is the key's submission order. The keys run concurrently.
func sendOrdered(apis []*server, features, steps, versions int) *orderSend {
	s := &orderSend{
		features: features,
		sent:     make([][]string, features+1),
		sentAt:   make([][]time.Time, features+1),
		reqIDs:   make([]string, features),
		errs:     make(chan error, features+1),
	}
	for k := range features + 1 {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			for step := range stepsOf(k, features, steps, versions) {
				api := apis[(k+step)%2]
				path, body := orderCommand(k, step, features, s.reqIDs)
				status, out, err := postJSON(api.base+path, body)
				if err != nil || status != http.StatusAccepted {
					s.errs <- fmt.Errorf("key %d step %d via %s: %d %v %v", k, step, api.base, status, out, err)
					return
				}
				if step == 0 && k < features {
					s.reqIDs[k], _ = out["request_id"].(string)
				}
				id, _ := out["command_id"].(string)
				s.sent[k], s.sentAt[k] = append(s.sent[k], id), append(s.sentAt[k], time.Now())
			}
		}()
	}
	return s
}

// wait waits for every key's commands to be sent and fails the test on the first refused one.
func (s *orderSend) wait(t *testing.T) {
	t.Helper()
	s.wg.Wait()
	close(s.errs)
	for err := range s.errs {
		t.Fatal(err)
	}
}

// keyOf is the key of key index k: its feature request, or the requirements key.
func (s *orderSend) keyOf(k int) string {
	if k < s.features {
		return s.reqIDs[k]
	}
	return requirements.RequirementsKey
}

// killWorkersInTurn kills each worker with SIGKILL at a quarter, half and three quarters of the
// total commands applied, holding whatever it holds, and starts another in its place a second
// later: each of the three in turn, one at a time. It returns the applied count at each kill.
func killWorkersInTurn(t *testing.T, c *orderCluster, s *orderSend, total int) (killedAt []string) {
	t.Helper()
	ctx := context.Background()
	events, err := c.e.js.Stream(ctx, sjs.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	applied := func() uint64 {
		info, err := events.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs // mutation events only: no job runs here
	}
	for i, w := range c.workers {
		target := uint64(total * (i + 1) / 4)
		for deadline := time.Now().Add(time.Minute); applied() < target; time.Sleep(10 * time.Millisecond) {
			select {
			case err := <-s.errs:
				t.Fatal(err)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d commands applied after a minute; waiting for %d", applied(), total, target)
			}
		}
		_ = w.Signal(syscall.SIGKILL)
		killedAt = append(killedAt, fmt.Sprint(applied()))
		time.Sleep(time.Second)
		c.e.worker(c.e.nats.url(), c.workerArgs()...)
	}
	return killedAt
}

// lastEvents waits until every key's last command (want: key → command ids in submission
// order) has its change-feed event, up to 2 minutes, and returns the events by key.
func lastEvents(t *testing.T, e *faultEnv, want map[string][]string) map[string][]mutationEvent {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
		got := mutationEvents(t, e)
		done := 0
		for key, ids := range want {
			if evs := got[key]; len(evs) > 0 && evs[len(evs)-1].CommandID == ids[len(ids)-1] {
				done++
			}
		}
		if done == len(want) {
			return got
		}
		if time.Now().After(deadline) {
			// The checks that follow say which keys stopped short, and why.
			t.Errorf("only %d of %d keys saw their last command applied within 2 minutes", done, len(want))
			return got
		}
	}
}

// checkAppliedInOrder checks that each key's change-feed events are its submitted commands, all
// applied, in submission order, and counts the lost and duplicated ones into row.
func checkAppliedInOrder(t *testing.T, want map[string][]string, got map[string][]mutationEvent, row *faultRow) {
	t.Helper()
	for key, ids := range want {
		var applied []string
		for _, ev := range got[key] {
			if !ev.Applied {
				t.Errorf("%s: command %s refused: %s", key, ev.CommandID, ev.Refusal)
			}
			applied = append(applied, ev.CommandID)
		}
		row.Lost += int64(missing(ids, applied))
		row.Duplicated += int64(max(0, len(applied)-len(ids)))
		if !slices.Equal(applied, ids) {
			t.Errorf("%s: applied %v, submitted %v", key, applied, ids)
		}
	}
}

// checkOrderStores checks the stores: every feature request completed at version steps with its
// four audit entries in order; the requirements versions in submission order; the audit chain
// intact. Extra audit entries count as duplicates in row.
func checkOrderStores(t *testing.T, apis []*server, reqIDs []string, steps, versions int, row *faultRow) {
	t.Helper()
	for k, id := range reqIDs {
		f := getJSON(t, apis[k%2].base+"/v1/features/"+id, 200)
		feat, _ := f["feature"].(map[string]any)
		if feat["status"] != "completed" || feat["version"] != float64(steps) {
			t.Errorf("%s: %s at version %v, want completed at %d", id, feat["status"], feat["version"], steps)
		}
		var trail []string
		audit, _ := f["audit"].([]any)
		for _, a := range slices.Backward(audit) { // newest first
			m, _ := a.(map[string]any)
			trail = append(trail, fmt.Sprintf("%v>%v", m["old_status"], m["new_status"]))
		}
		if w := []string{">pending", "pending>approved", "approved>in_progress", "in_progress>completed"}; !slices.Equal(trail, w) {
			t.Errorf("%s: audit trail %v, want %v", id, trail, w)
			row.Duplicated += int64(max(0, len(trail)-len(w)))
		}
	}
	vl := getJSON(t, apis[0].base+"/v1/requirements", 200)
	list, _ := vl["versions"].([]any)
	var order []string
	for _, v := range list {
		m, _ := v.(map[string]any)
		doc := getJSON(t, fmt.Sprintf("%s/v1/requirements/%.0f", apis[1].base, m["version_id"]), 200)
		d, _ := doc["document"].(map[string]any)
		order = append(order, fmt.Sprint(d["version"]))
	}
	slices.Reverse(order) // listed newest first
	var wantOrder []string
	for i := range versions {
		wantOrder = append(wantOrder, fmt.Sprintf("1.0.%d", i+1))
	}
	if !slices.Equal(order, wantOrder) {
		t.Errorf("requirements versions by version id: %v, want %v", order, wantOrder)
	}
	if integ := getJSON(t, apis[0].base+"/v1/audit/integrity", 200); integ["integrity_valid"] != true {
		t.Errorf("audit integrity: %v", integ)
	}
}

// checkOrderProjection checks the graph projection the workers share in PostgreSQL: each
// feature request's node written once per command (version steps, status completed), one
// decision node each, one node per requirements version. Versions beyond steps count as
// duplicates in row.
func checkOrderProjection(t *testing.T, dsn string, reqIDs []string, steps, versions int, row *faultRow) {
	t.Helper()
	features := len(reqIDs)
	proj := projectedNodes(t, dsn)
	for _, id := range reqIDs {
		if n := proj[requirements.FeatureNodeID(id)]; n.version != int64(steps) || n.status != "completed" {
			t.Errorf("graph node of %s: version %d, status %q; want %d, completed", id, n.version, n.status, steps)
			row.Duplicated += max(0, n.version-int64(steps))
		}
	}
	kinds := map[string]int{}
	for id := range proj {
		kinds[id[:strings.IndexByte(id, ':')]]++
	}
	if kinds["feature"] != features || kinds["decision"] != features || kinds["requirements"] != versions {
		t.Errorf("graph holds %v nodes by prefix; want %d feature, %d decision, %d requirements", kinds, features, features, versions)
	}
}

// faultCommandOrder: per-key command order, two APIs, three workers killed in turn. Every
// feature request goes pending → approved → in_progress → completed, each step with
// expected_version: applied out of order, a step is refused (stale_version or
// illegal_transition) and the key stops short. The one requirements key gets 25 versions,
// 1.0.1 … 1.0.25.
func faultCommandOrder(t *testing.T) {
	const features, steps, versions = 40, 4, 25
	c := startOrderCluster(t)
	e := c.e

	// 100 ms per Data API call (a command makes several) keeps a backlog in the
	// partitions, so the workers killed below hold commands in flight. At 20 ms, once
	// commands were grouped across partitions, a full CI run caught every worker idle.
	e.double.SetLatency(100*time.Millisecond, 0)

	total := features*steps + versions
	s := sendOrdered(c.apis, features, steps, versions)
	// The partitions do not share their work evenly between the workers at every moment, so
	// one kill alone may find its worker idle; three in turn make sure commands in flight are
	// hit (checked below).
	killedAt := killWorkersInTurn(t, c, s, total)
	restarted := time.Now()
	s.wait(t)

	// Done when every key's last command has its change-feed event.
	want := map[string][]string{} // key → command ids in submission order
	for k := range features + 1 {
		want[s.keyOf(k)] = s.sent[k]
	}
	got := lastEvents(t, e, want)
	recovery := time.Since(restarted)
	// The kills must have hit commands in flight: those (and the ones queued behind them
	// in their partitions) were applied only after AckWait (10 s) ran out.
	held := 0
	for k := range features + 1 {
		for i, ev := range got[s.keyOf(k)] {
			if i < len(s.sentAt[k]) && ev.at.Sub(s.sentAt[k][i]) > 9*time.Second {
				held++
			}
		}
	}
	if held == 0 {
		t.Error("no command waited for AckWait: the killed workers held none, the scenario proved nothing")
	}

	row := faultRow{
		Scenario: t.Name(), Recovery: recovery,
		Load: fmt.Sprintf("%d commands: %d feature requests × %d ordered steps (expected_version) and %d requirements versions on one key, sent through 2 sluice api, applied by 3 sluice worker (AstraDB double, PostgreSQL graph)",
			total, features, steps, versions),
		Fault: fmt.Sprintf("SIGKILL each worker in turn at %s of %d commands applied, start another 1 s later each time", strings.Join(killedAt, ", "), total),
		Note:  fmt.Sprintf("%d commands waited for a killed worker's AckWait (10 s); checked per key: change-feed events, audit trail and final state in submission order; recovery from the last new worker's start to the last key's last event", held),
	}
	checkAppliedInOrder(t, want, got, &row)
	checkOrderStores(t, c.apis, s.reqIDs, steps, versions, &row)
	checkOrderProjection(t, c.dsn, s.reqIDs, steps, versions, &row)
	row.DeadLettered = int64(len(deadLetterIDs(t, e.streams.DLQ)))
	if v := e.double.Stats().Violations; len(v) != 0 {
		t.Errorf("Data API protocol violations: %v", v)
	}
	if row.Lost != 0 || row.Duplicated != 0 || row.DeadLettered != 0 {
		t.Errorf("lost %d, duplicated %d, dead-lettered %d", row.Lost, row.Duplicated, row.DeadLettered)
	}
	if t.Failed() {
		t.FailNow()
	}
	recordFault(row)
}

// stepsOf is how many commands key k gets: the feature keys (k < features) steps each, the
// requirements key versions.
func stepsOf(k, features, steps, versions int) int {
	if k < features {
		return steps
	}
	return versions
}

// orderCommand returns the route and body of step step of key k (see the order scenario):
// feature keys are submitted, approved, started and completed, each with the version it
// expects; the last key submits requirements version 1.0.<step+1>.
func orderCommand(k, step, features int, reqIDs []string) (path, body string) {
	if k == features {
		return "/v1/requirements", fmt.Sprintf(`{"title":"Rules engine, step %d","version":"1.0.%d","description":"Version %d of the requirements.",`+
			`"requirements":{"functional":[],"non_functional":[]},"author":"fault suite"}`, step+1, step+1, step+1)
	}
	id := reqIDs[k]
	switch step {
	case 0:
		return "/v1/features", fmt.Sprintf(`{"title":"Feature %d","description":"An ordered feature request.","priority":"high","requester":"fault_suite"}`, k)
	case 1:
		return "/v1/features/" + id + "/decision", `{"action":"approve","reason":"step 2","expected_version":1}`
	case 2:
		return "/v1/features/" + id + "/transition", `{"to":"in_progress","reason":"step 3","expected_version":2}`
	default:
		return "/v1/features/" + id + "/transition", `{"to":"completed","reason":"step 4","expected_version":3}`
	}
}

// postJSON posts body and decodes the JSON answer.
func postJSON(url, body string) (int, map[string]any, error) {
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var out map[string]any
	err = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out, err
}

// mutationEvent is the part of a change-feed mutation event the order scenario checks.
type mutationEvent struct {
	CommandID string          `json:"command_id"`
	Key       string          `json:"key"`
	Applied   bool            `json:"applied"`
	Refusal   json.RawMessage `json:"refusal"`
	// at is when the event was stored.
	at time.Time
}

// mutationEvents reads every mutation event of the change feed, by key in stream order (the
// order the workers applied the commands in).
func mutationEvents(t *testing.T, e *faultEnv) map[string][]mutationEvent {
	t.Helper()
	ctx := context.Background()
	s, err := e.js.Stream(ctx, sjs.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]mutationEvent{}
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil || !strings.HasPrefix(m.Subject, sjs.MutationEventSubject("")) {
			continue
		}
		var ev mutationEvent
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Fatalf("event %d: %v", seq, err)
		}
		ev.at = m.Time
		out[ev.Key] = append(out[ev.Key], ev)
	}
	return out
}
