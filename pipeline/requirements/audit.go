package requirements

import "fmt"

// ChainEntry links e after prev, the previous entry of the same request (nil for the first):
// it sets Seq, PrevChecksum and Checksum and returns the result. It is pure.
//
// Chains are per request, not one global log: mutations of one key are applied in order by
// whichever worker holds the key, so a per-key chain needs no coordination across keys or
// workers (a global chain would serialise every mutation of every key on one head record).
// Editing any entry breaks its own checksum, and rewriting its checksum too breaks the next
// entry's link.
func ChainEntry(prev *AuditEntry, e AuditEntry) AuditEntry {
	e.Seq, e.PrevChecksum = 1, ""
	if prev != nil {
		e.Seq, e.PrevChecksum = prev.Seq+1, prev.Checksum
	}
	e.Checksum = AuditChecksum(e)
	return e
}

// VerifyChain checks entries, the whole audit trail in append order (line 1 first). It
// reports, like the Python integrity endpoint, "Line N: checksum mismatch" for an entry whose
// checksum is not AuditChecksum of its fields, and "Line N: chain broken" for an entry whose
// Seq is not one more than the previous entry of its request (1 for the first) or whose
// PrevChecksum is not that entry's stored checksum: an entry was edited, removed, inserted or
// moved. ok is true when there are no problems. It is pure.
//
// A deleted last entry of a request leaves no broken link; Store.VerifyAudit also compares
// each request's last Seq with its version for that.
func VerifyChain(entries []AuditEntry) (ok bool, problems []string) {
	type head struct {
		seq int64
		sum string
	}
	last := map[string]head{}
	for i, e := range entries {
		line := i + 1
		if AuditChecksum(e) != e.Checksum {
			problems = append(problems, fmt.Sprintf("Line %d: checksum mismatch", line))
		}
		h := last[e.RequestID] // zero head for the first entry: seq 0, sum ""
		if e.Seq != h.seq+1 || e.PrevChecksum != h.sum {
			problems = append(problems, fmt.Sprintf("Line %d: chain broken", line))
		}
		last[e.RequestID] = head{e.Seq, e.Checksum}
	}
	return len(problems) == 0, problems
}
