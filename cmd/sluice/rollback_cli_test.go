package main

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/sinks/astra/dataapitest"
)

// jsonl is a chunk file of the ids with content tagged by pass.
func jsonl(pass string, ids ...string) []byte {
	var b strings.Builder
	for _, id := range ids {
		fmt.Fprintf(&b, `{"chunk_id":%q,"content":"%s content of %s"}`+"\n", id, pass, id)
	}
	return []byte(b.String())
}

// Issue 13, finding 2, through the binary: `sluice jobs rollback B --restore-previous` puts
// back the version of each document B replaced (A's, on the embedded store) instead of
// deleting it; on AstraDB, which keeps no previous version, the same request is refused at
// once (exit 1 naming why) and deletes nothing. Without the serve wiring it answered 501.
func TestRollbackRestorePreviousThroughTheCLI(t *testing.T) {
	ids := []string{"rp_1", "rp_2", "rp_3"}
	s := startServer(t, "serve", nil, "--data-dir", filepath.Join(t.TempDir(), "data"))
	a := mustPostJSON(t, s.base+"/v1/jobs?env=dev&file=a.jsonl", jsonl("A", ids...), http.StatusAccepted)
	waitJobCompleted(t, s.base, a["job_id"].(string))
	b := mustPostJSON(t, s.base+"/v1/jobs?env=dev&file=b.jsonl", jsonl("B", ids...), http.StatusAccepted)
	waitJobCompleted(t, s.base, b["job_id"].(string))

	out, errOut, code := cliRun(t, []string{"SLUICE_API_URL=" + s.base}, "jobs", "rollback", b["job_id"].(string), "--restore-previous", "--json")
	if code != 0 || !strings.Contains(out, `"restored": 3`) || !strings.Contains(out, `"state": "rolled_back"`) {
		t.Fatalf("jobs rollback --restore-previous: exit %d\n%s%s", code, out, errOut)
	}
	for _, id := range ids {
		doc := getJSON(t, s.base+"/v1/chunks/"+id+"?env=dev", 200)
		if doc["content"] != "A content of "+id {
			t.Errorf("%s after restoring: %v, want A's version", id, doc["content"])
		}
	}
	// A's documents are back, so A is not superseded.
	if j := getJSON(t, s.base+"/v1/jobs/"+a["job_id"].(string), 200); j["state"] != "completed" {
		t.Errorf("job A after B's restoring rollback: %v", j["state"])
	}

	double := dataapitest.New(dataapitest.Config{})
	defer double.Close()
	sa := startServer(t, "serve", []string{"ASTRA_DB_API_ENDPOINT=" + double.URL(), "ASTRA_DB_APPLICATION_TOKEN=" + double.Token()},
		"--data-dir", filepath.Join(t.TempDir(), "data"))
	c := mustPostJSON(t, sa.base+"/v1/jobs?env=dev&file=c.jsonl", jsonl("C", ids...), http.StatusAccepted)
	waitJobCompleted(t, sa.base, c["job_id"].(string))
	out, errOut, code = cliRun(t, []string{"SLUICE_API_URL=" + sa.base}, "jobs", "rollback", c["job_id"].(string), "--restore-previous")
	if code != exitFailure || !strings.Contains(errOut, "400") || !strings.Contains(errOut, "keeps no previous versions") {
		t.Fatalf("restore on AstraDB: exit %d, want %d with a 400 saying why\n%s%s", code, exitFailure, out, errOut)
	}
	if n := len(double.Documents("default_keyspace", "ttrpg_chunks_dev")); n != 3 {
		t.Fatalf("AstraDB holds %d documents after the refused restore, want 3", n)
	}
	if j := getJSON(t, sa.base+"/v1/jobs/"+c["job_id"].(string), 200); j["state"] != "completed" || j["rollback"] != nil {
		t.Fatalf("job after the refused restore: %v, rollback %v", j["state"], j["rollback"])
	}
}
