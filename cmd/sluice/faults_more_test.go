package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluice-dev/sluice/pipeline/intake"
	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/sinks/graph"
	"github.com/sluice-dev/sluice/sinks/graph/pgtest"
)

// TestFaultSuiteMore adds two scenarios to the fault suite (faults_test.go), with its helpers
// and its rows: a PostgreSQL crash in the middle of a graph load, and per-key command order
// with two API processes and three worker processes while a worker is killed. Each fails on
// any loss, duplicate or unexpected dead letter. The order scenario and its helpers are in
// faults_order_test.go.
func TestFaultSuiteMore(t *testing.T) {
	if testing.Short() {
		t.Skip("the fault suite runs real processes for minutes")
	}
	t.Run("PostgreSQL crash and restart mid-graph-load", faultPostgresCrashMidGraphLoad)
	t.Run("per-key command order, two APIs, three workers killed in turn", faultCommandOrder)
}

// faultPostgresCrashMidGraphLoad: PostgreSQL crashes and restarts in the middle of a graph
// load; the load completes with every node and edge written once.
func faultPostgresCrashMidGraphLoad(t *testing.T) {
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
