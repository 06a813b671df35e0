package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/sinks/astra/dataapitest"
	"github.com/sluice-dev/sluice/sources/httpapi"
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

// Issue 18: `sluice jobs rollback --dry-run` prints what the rollback would do and changes
// nothing; the rollback then does exactly that. On the embedded store B rewrote A's
// documents and two of its own: deleting names A; restoring puts A's three back and deletes
// two. On AstraDB restoring is previewed as unsupported (a delete, not allowed as asked).
func TestRollbackDryRunThroughTheCLI(t *testing.T) {
	ids := []string{"dr_1", "dr_2", "dr_3"}
	s := startServer(t, "serve", nil, "--data-dir", filepath.Join(t.TempDir(), "data"))
	env := []string{"SLUICE_API_URL=" + s.base}
	a := mustPostJSON(t, s.base+"/v1/jobs?env=dev&file=a.jsonl", jsonl("A", ids...), http.StatusAccepted)
	waitJobCompleted(t, s.base, a["job_id"].(string))
	b := mustPostJSON(t, s.base+"/v1/jobs?env=dev&file=b.jsonl", jsonl("B", append(ids, "dr_4", "dr_5")...), http.StatusAccepted)
	bid := b["job_id"].(string)
	waitJobCompleted(t, s.base, bid)

	preview := func(env []string, args ...string) httpapi.RollbackPreview {
		t.Helper()
		out, errOut, code := cliRun(t, env, append([]string{"jobs", "rollback", "--dry-run", "--json"}, args...)...)
		if code != 0 {
			t.Fatalf("jobs rollback --dry-run %v: exit %d\n%s%s", args, code, out, errOut)
		}
		var p httpapi.RollbackPreview
		if err := json.Unmarshal([]byte(out), &p); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		return p
	}
	del := preview(env, bid)
	if !del.CanRollBack || del.Documents != 5 || del.Deleted != 5 || del.Restored != 0 ||
		fmt.Sprint(del.SupersededJobs) != fmt.Sprint([]jobs.SupersededJob{{JobID: a["job_id"].(string), Documents: 3}}) {
		t.Fatalf("dry run, deleting: %+v", del)
	}
	res := preview(env, bid, "--restore-previous")
	if !res.CanRollBack || res.Documents != 5 || res.Deleted != 2 || res.Restored != 3 || len(res.SupersededJobs) != 0 {
		t.Fatalf("dry run, restoring: %+v", res)
	}
	out, errOut, code := cliRun(t, env, "jobs", "rollback", bid, "--dry-run")
	if code != 0 || !strings.Contains(out, "5 the job wrote last: 5 would be deleted, 0 restored") ||
		!strings.Contains(out, "job "+a["job_id"].(string)+": 3 of its documents would be deleted") || !strings.Contains(out, "can roll back  yes") {
		t.Fatalf("dry run, text: exit %d\n%s%s", code, out, errOut)
	}
	// Nothing changed.
	if j := getJSON(t, s.base+"/v1/jobs/"+bid, 200); j["state"] != "completed" || j["rollback"] != nil {
		t.Fatalf("job B after dry runs: %v, rollback %v", j["state"], j["rollback"])
	}
	// The rollback does what the dry run said.
	out, errOut, code = cliRun(t, env, "jobs", "rollback", bid, "--restore-previous", "--json")
	var got jobs.Job
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil {
		t.Fatalf("jobs rollback --restore-previous: exit %d\n%s%s", code, out, errOut)
	}
	if r := got.Rollback; r == nil || r.Deleted != res.Deleted || r.Restored != res.Restored || len(r.SupersededJobs) != 0 {
		t.Fatalf("rollback %+v, dry run said %+v", got.Rollback, res)
	}
	if after := preview(env, bid); after.CanRollBack || !strings.Contains(after.Reason, "already rolled back") {
		t.Fatalf("dry run after the rollback: %+v", after)
	}

	double := dataapitest.New(dataapitest.Config{})
	defer double.Close()
	sa := startServer(t, "serve", []string{"ASTRA_DB_API_ENDPOINT=" + double.URL(), "ASTRA_DB_APPLICATION_TOKEN=" + double.Token()},
		"--data-dir", filepath.Join(t.TempDir(), "data"))
	aenv := []string{"SLUICE_API_URL=" + sa.base}
	c := mustPostJSON(t, sa.base+"/v1/jobs?env=dev&file=c.jsonl", jsonl("C", ids...), http.StatusAccepted)
	waitJobCompleted(t, sa.base, c["job_id"].(string))
	d := mustPostJSON(t, sa.base+"/v1/jobs?env=dev&file=d.jsonl", jsonl("D", ids[:2]...), http.StatusAccepted)
	did := d["job_id"].(string)
	waitJobCompleted(t, sa.base, did)
	ar := preview(aenv, did, "--restore-previous")
	if ar.CanRollBack || ar.RestoreSupported || !strings.Contains(ar.Reason, "keeps no previous versions") ||
		ar.Documents != 2 || ar.Deleted != 2 || ar.Restored != 0 {
		t.Fatalf("dry run, restoring on AstraDB: %+v", ar)
	}
	ad := preview(aenv, did)
	if !ad.CanRollBack || ad.Deleted != 2 ||
		fmt.Sprint(ad.SupersededJobs) != fmt.Sprint([]jobs.SupersededJob{{JobID: c["job_id"].(string), Documents: 2}}) {
		t.Fatalf("dry run, deleting on AstraDB: %+v", ad)
	}
	if n := len(double.Documents("default_keyspace", "ttrpg_chunks_dev")); n != 3 {
		t.Fatalf("AstraDB holds %d documents after dry runs, want 3", n)
	}
	out, errOut, code = cliRun(t, aenv, "jobs", "rollback", did, "--json")
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil {
		t.Fatalf("jobs rollback on AstraDB: exit %d\n%s%s", code, out, errOut)
	}
	if r := got.Rollback; r == nil || r.Deleted != ad.Deleted || fmt.Sprint(r.SupersededJobs) != fmt.Sprint(ad.SupersededJobs) {
		t.Fatalf("rollback on AstraDB %+v, dry run said %+v", got.Rollback, ad)
	}
}
