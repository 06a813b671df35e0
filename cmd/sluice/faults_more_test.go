package main

import (
	"bytes"
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

	"github.com/jackc/pgx/v5"

	"github.com/sluice-dev/sluice/pipeline/intake"
	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/pipeline/requirements"
	"github.com/sluice-dev/sluice/sinks/graph"
	"github.com/sluice-dev/sluice/sinks/graph/pgtest"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// TestFaultSuiteMore adds two scenarios to the fault suite (faults_test.go), with its helpers
// and its rows: a PostgreSQL crash in the middle of a graph load, and per-key command order
// with two API processes and three worker processes while a worker is killed. Each fails on
// any loss, duplicate or unexpected dead letter.
func TestFaultSuiteMore(t *testing.T) {
	if testing.Short() {
		t.Skip("the fault suite runs real processes for minutes")
	}

	t.Run("PostgreSQL crash and restart mid-graph-load", func(t *testing.T) {
		const nodes, edges = 3000, 30000
		pg := pgtest.StartClusterWith(pgtest.Config{Durable: true})
		t.Cleanup(pg.Stop)
		dsn := pg.Database(t)
		e := newFaultEnv(t, false)
		e.worker(e.nats.url(), "--drain-timeout", "10s", "--graph-dsn", dsn)
		path, wantNodes, wantEdges := writeGraphFile(t, nodes, edges)
		// 32 KiB messages (a tenth of the default) cut the graph into ≈100 transactions, so
		// the crash lands between and inside many of them, not in one of a dozen.
		l, err := intake.NewLoader(intake.LoaderConfig{JS: e.js, Jobs: e.jobs, SpoolDir: filepath.Join(e.dataDir, "spool"), MaxGraphMessageBytes: 32 << 10})
		if err != nil {
			t.Fatal(err)
		}
		res, err := l.Load(context.Background(), intake.LoadRequest{Env: "dev", Path: path})
		if err != nil {
			t.Fatal(err)
		}
		total := res.Total
		// Nodes come first (a few messages); a third of the messages applied is well into the
		// edges.
		before := e.job(res.JobID, time.Minute, func(j jobs.Job) bool { return j.Written >= total/3 })
		if before.State.Done() {
			t.Fatalf("the job ended before the crash: %+v", before)
		}
		if err := pg.Crash(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Second)
		if err := pg.Restart(); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		job := e.job(res.JobID, 2*time.Minute, func(j jobs.Job) bool { return j.State.Done() })
		recovery := time.Since(start)

		gotNodes, gotEdges, bumped := graphRows(t, dsn)
		row := faultRow{
			Scenario: t.Name(), Recovery: recovery,
			Load:  fmt.Sprintf("graph file of %d nodes and %d edges, one job of %d messages (32 KiB), PostgreSQL graph store", nodes, edges, total),
			Fault: fmt.Sprintf("PostgreSQL crashed (pg_ctl stop -m immediate) with %d of %d messages applied, down 3 s, restarted", before.Written, total),
			Note:  "recovery from PostgreSQL back up to the job's completion: the graph line is held by the graph store's circuit breaker, probed every ≤5 s",
		}
		row.Lost = int64(missing(wantNodes, gotNodes) + missing(wantEdges, gotEdges))
		// A row applied twice would carry version 2 (the apply marker failed); a row the file
		// does not hold would be an invention; counts beyond the messages a double count.
		row.Duplicated = int64(bumped+missing(gotNodes, wantNodes)+missing(gotEdges, wantEdges)) +
			max(0, job.Written+job.DeadLettered-total)
		row.DeadLettered = int64(len(deadLetterIDs(t, e.streams.DLQ)))
		if row.Lost != 0 || row.Duplicated != 0 || row.DeadLettered != 0 || job.State != jobs.JobCompleted || job.Written != total {
			t.Fatalf("after the crash: job %s, %d of %d messages written, %d dead-lettered; PostgreSQL holds %d of %d nodes and %d of %d edges; lost %d, duplicated %d (%d rows at version > 1), dead letters %d",
				job.State, job.Written, total, job.DeadLettered, len(gotNodes), nodes, len(gotEdges), edges, row.Lost, row.Duplicated, bumped, row.DeadLettered)
		}
		recordFault(row)
	})

	t.Run("per-key command order, two APIs, three workers killed in turn", func(t *testing.T) {
		// Two `sluice api` and three `sluice worker` processes, each with a data directory of
		// its own, as on five hosts: what they share is what a real deployment shares. The
		// requirements store is AstraDB (here the Data API double): the embedded SQLite store
		// is a file in one process's data directory, which workers on other hosts cannot
		// open. The graph (commands are projected into it) is PostgreSQL, the broker an
		// external nats-server, and the command signing key one secret file given to every
		// process (--command-key-file), as a mounted secret would be.
		const features, steps, versions = 40, 4, 25
		pg := pgtest.StartClusterWith(pgtest.Config{Durable: true})
		t.Cleanup(pg.Stop)
		dsn := pg.Database(t)
		e := newFaultEnv(t, true)
		keyFile := filepath.Join(t.TempDir(), "command.key")
		if err := os.WriteFile(keyFile, []byte("fault-suite-command-key-0123456789abcdef\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		shared := []string{"--graph-dsn", dsn, "--command-key-file", keyFile}
		workerArgs := func() []string { // e.worker adds --nats-url
			return append([]string{"--data-dir", t.TempDir(), "--drain-timeout", "10s"}, shared...)
		}
		apiArgs := func() []string {
			return append([]string{"--data-dir", t.TempDir(), "--nats-url", e.nats.url()}, shared...)
		}
		var workers []*os.Process
		for range 3 {
			workers = append(workers, e.worker(e.nats.url(), workerArgs()...).Process)
		}
		astraEnv := []string{"ASTRA_DB_API_ENDPOINT=" + e.double.URL(), "ASTRA_DB_APPLICATION_TOKEN=" + e.double.Token()}
		apis := []*server{
			startServer(t, "api", astraEnv, apiArgs()...),
			startServer(t, "api", astraEnv, apiArgs()...),
		}

		// 100 ms per Data API call (a command makes several) keeps a backlog in the
		// partitions, so the workers killed below hold commands in flight. At 20 ms, once
		// commands were grouped across partitions, a full CI run caught every worker idle.
		e.double.SetLatency(100*time.Millisecond, 0)

		// Each key's mutations go out one after another, alternating between the two APIs:
		// the next only once the previous was accepted (202: JetStream stored it), so the
		// order of acceptance is the key's submission order. The keys run concurrently.
		// Every feature request goes pending → approved → in_progress → completed, each step
		// with expected_version: applied out of order, a step is refused (stale_version or
		// illegal_transition) and the key stops short. The one requirements key gets 25
		// versions, 1.0.1 … 1.0.25.
		total := features*steps + versions
		sent := make([][]string, features+1)      // command ids per key, in acceptance order
		sentAt := make([][]time.Time, features+1) // when each was accepted
		reqIDs := make([]string, features)
		errs := make(chan error, features+1)
		var wg sync.WaitGroup
		for k := range features + 1 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for step := range stepsOf(k, features, steps, versions) {
					api := apis[(k+step)%2]
					path, body := orderCommand(k, step, features, reqIDs)
					status, out, err := postJSON(api.base+path, body)
					if err != nil || status != http.StatusAccepted {
						errs <- fmt.Errorf("key %d step %d via %s: %d %v %v", k, step, api.base, status, out, err)
						return
					}
					if step == 0 && k < features {
						reqIDs[k], _ = out["request_id"].(string)
					}
					id, _ := out["command_id"].(string)
					sent[k], sentAt[k] = append(sent[k], id), append(sentAt[k], time.Now())
				}
			}()
		}
		// At a quarter, half and three quarters of the commands applied, kill a worker with
		// SIGKILL, holding whatever it holds, and start another in its place a second later:
		// each of the three in turn, one at a time. The partitions do not share their work
		// evenly between the workers at every moment, so one kill alone may find its worker
		// idle; three in turn make sure commands in flight are hit (checked below).
		ctx := context.Background()
		events, err := e.js.Stream(ctx, sjs.StreamEvents)
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
		var killedAt []string
		for i, w := range workers {
			target := uint64(total * (i + 1) / 4)
			for deadline := time.Now().Add(time.Minute); applied() < target; time.Sleep(10 * time.Millisecond) {
				select {
				case err := <-errs:
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
			e.worker(e.nats.url(), workerArgs()...)
		}
		restarted := time.Now()
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}

		// Done when every key's last command has its change-feed event.
		want := map[string][]string{} // key → command ids in submission order
		keyOf := func(k int) string {
			if k < features {
				return reqIDs[k]
			}
			return requirements.RequirementsKey
		}
		for k := range features + 1 {
			want[keyOf(k)] = sent[k]
		}
		var got map[string][]mutationEvent
		for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
			got = mutationEvents(t, e)
			done := 0
			for key, ids := range want {
				if evs := got[key]; len(evs) > 0 && evs[len(evs)-1].CommandID == ids[len(ids)-1] {
					done++
				}
			}
			if done == len(want) {
				break
			}
			if time.Now().After(deadline) {
				// The checks below say which keys stopped short, and why.
				t.Errorf("only %d of %d keys saw their last command applied within 2 minutes", done, len(want))
				break
			}
		}
		recovery := time.Since(restarted)
		// The kills must have hit commands in flight: those (and the ones queued behind them
		// in their partitions) were applied only after AckWait (10 s) ran out.
		held := 0
		for k := range features + 1 {
			for i, ev := range got[keyOf(k)] {
				if i < len(sentAt[k]) && ev.at.Sub(sentAt[k][i]) > 9*time.Second {
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
		// The stores: every feature request completed at version 4 with its four audit
		// entries in order; the requirements versions in submission order.
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
		// The graph projection the workers share in PostgreSQL: each feature request's node
		// written once per command (version 4, status completed), one decision node each,
		// one node per requirements version.
		proj := projectedNodes(t, dsn)
		for _, id := range reqIDs {
			if n := proj[requirements.FeatureNodeID(id)]; n.version != steps || n.status != "completed" {
				t.Errorf("graph node of %s: version %d, status %q; want %d, completed", id, n.version, n.status, steps)
				row.Duplicated += max(0, n.version-steps)
			}
		}
		kinds := map[string]int{}
		for id := range proj {
			kinds[id[:strings.IndexByte(id, ':')]]++
		}
		if kinds["feature"] != features || kinds["decision"] != features || kinds["requirements"] != versions {
			t.Errorf("graph holds %v nodes by prefix; want %d feature, %d decision, %d requirements", kinds, features, features, versions)
		}
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
	})
}

// writeGraphFile writes a GraphStore batch file of n nodes and m edges (m ≤ 10n, every edge
// distinct) and returns its path and the node and edge ids the graph must hold after it.
func writeGraphFile(t *testing.T, n, m int) (path string, nodes, edges []string) {
	t.Helper()
	if m > 10*n {
		t.Fatalf("writeGraphFile: at most 10 edges per node, %d > 10 × %d", m, n)
	}
	var b bytes.Buffer
	b.WriteString(`{"nodes":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		id := fmt.Sprintf("n:%05d", i)
		fmt.Fprintf(&b, `{"id":%q,"type":"Rule","properties":{"name":"rule %d"}}`, id, i)
		nodes = append(nodes, id)
	}
	b.WriteString(`],"edges":[`)
	for i := range m {
		if i > 0 {
			b.WriteByte(',')
		}
		// Source i mod n, target 1 … 10 places further: every pair distinct, no self-loop.
		src, dst := fmt.Sprintf("n:%05d", i%n), fmt.Sprintf("n:%05d", (i%n+i/n+1)%n)
		fmt.Fprintf(&b, `{"source":%q,"type":"depends_on","target":%q,"properties":{"weight":%d}}`, src, dst, i)
		edges = append(edges, graph.EdgeID(src, "depends_on", dst))
	}
	b.WriteString(`]}`)
	path = filepath.Join(t.TempDir(), "graph.json")
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, nodes, edges
}

// graphRows reads every node and edge id from the PostgreSQL graph store, and counts the rows
// whose version is above 1 (written more than once).
func graphRows(t *testing.T, dsn string) (nodes, edges []string, bumped int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, q := range []struct {
		table string
		into  *[]string
	}{{"graph_nodes", &nodes}, {"graph_edges", &edges}} {
		rows, err := conn.Query(ctx, `SELECT id, version FROM `+q.table)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var id string
			var v int64
			if err := rows.Scan(&id, &v); err != nil {
				t.Fatal(err)
			}
			*q.into = append(*q.into, id)
			if v > 1 {
				bumped++
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
	}
	return nodes, edges, bumped
}

// projected is a node of the command projection: its version and its status property.
type projected struct {
	version int64
	status  string
}

// projectedNodes reads the nodes of the command projection (feature, decision and
// requirements version nodes) from the PostgreSQL graph store.
func projectedNodes(t *testing.T, dsn string) map[string]projected {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT id, version, properties::json->>'status' FROM graph_nodes
		WHERE id LIKE 'feature:%' OR id LIKE 'decision:%' OR id LIKE 'requirements:%'`)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]projected{}
	for rows.Next() {
		var id string
		var p projected
		var status *string
		if err := rows.Scan(&id, &p.version, &status); err != nil {
			t.Fatal(err)
		}
		if status != nil {
			p.status = *status
		}
		out[id] = p
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// missing counts the elements of want that got does not hold.
func missing(want, got []string) int {
	have := make(map[string]bool, len(got))
	for _, s := range got {
		have[s] = true
	}
	n := 0
	for _, s := range want {
		if !have[s] {
			n++
		}
	}
	return n
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
