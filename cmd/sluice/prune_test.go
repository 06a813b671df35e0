package main

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/sluice-dev/sluice/sinks/graph"
)

// sluice serve prunes graph-batch apply markers older than a day, and keeps the command
// worker's markers, which dedupe a command resent at any time.
func TestServePrunesGraphBatchMarkers(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	path := filepath.Join(dataDir, "graph.db")
	ctx := context.Background()
	g, err := graph.Open(ctx, path, graph.Options{}) // creates the schema
	if err != nil {
		t.Fatal(err)
	}
	_ = g.Close()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	old := time.Now().Add(-48 * time.Hour).UnixMicro()
	recent := time.Now().Add(-time.Hour).UnixMicro()
	for id, at := range map[string]int64{
		"SLUICE_GRAPH:1": old, "SLUICE_GRAPH:2": old, "SLUICE_GRAPH:3": recent, "command:FR-1": old,
	} {
		if _, err := db.Exec(`INSERT INTO graph_applied (msg_id, applied_at) VALUES (?, ?)`, id, at); err != nil {
			t.Fatal(err)
		}
	}
	startServer(t, "serve", nil, "--data-dir", dataDir)

	left := func() []string {
		rows, err := db.Query(`SELECT msg_id FROM graph_applied ORDER BY msg_id`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var ids []string
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		return ids
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ids := left()
		if len(ids) == 2 && ids[0] == "SLUICE_GRAPH:3" && ids[1] == "command:FR-1" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("markers left %v, want the recent graph batch's and the command's", ids)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
