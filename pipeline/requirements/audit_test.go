package requirements_test

import (
	"slices"
	"testing"

	"github.com/sluice-dev/sluice/pipeline/requirements"
)

// chain builds a trail of two interleaved requests: A1 B1 A2 A3.
func chain() []requirements.AuditEntry {
	mk := func(id, old, new string) requirements.AuditEntry {
		return requirements.AuditEntry{Timestamp: "2025-10-09T08:53:20.000000Z", RequestID: id, OldStatus: old, NewStatus: new, Admin: "api-admin"}
	}
	a1 := requirements.ChainEntry(nil, mk("FR-111", "", "pending"))
	b1 := requirements.ChainEntry(nil, mk("FR-222", "", "pending"))
	a2 := requirements.ChainEntry(&a1, mk("FR-111", "pending", "approved"))
	a3 := requirements.ChainEntry(&a2, mk("FR-111", "approved", "in_progress"))
	return []requirements.AuditEntry{a1, b1, a2, a3}
}

func TestVerifyChain(t *testing.T) {
	tests := []struct {
		name   string
		tamper func([]requirements.AuditEntry) []requirements.AuditEntry
		want   []string
	}{
		{name: "intact", tamper: func(e []requirements.AuditEntry) []requirements.AuditEntry { return e }},
		{name: "field edited", tamper: func(e []requirements.AuditEntry) []requirements.AuditEntry {
			e[2].NewStatus = "rejected"
			return e
		}, want: []string{"Line 3: checksum mismatch"}},
		{name: "edited and re-checksummed", tamper: func(e []requirements.AuditEntry) []requirements.AuditEntry {
			e[2].Admin = "mallory"
			e[2].Checksum = requirements.AuditChecksum(e[2])
			return e
		}, want: []string{"Line 4: chain broken"}},
		{name: "entry removed", tamper: func(e []requirements.AuditEntry) []requirements.AuditEntry {
			return slices.Delete(e, 2, 3)
		}, want: []string{"Line 3: chain broken"}},
		{name: "entries swapped", tamper: func(e []requirements.AuditEntry) []requirements.AuditEntry {
			e[2], e[3] = e[3], e[2]
			return e
		}, want: []string{"Line 3: chain broken", "Line 4: chain broken"}},
		{name: "entry replayed", tamper: func(e []requirements.AuditEntry) []requirements.AuditEntry {
			return append(e, e[3])
		}, want: []string{"Line 5: chain broken"}},
		{name: "other request's interleaving does not matter", tamper: func(e []requirements.AuditEntry) []requirements.AuditEntry {
			return []requirements.AuditEntry{e[0], e[2], e[3], e[1]}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, problems := requirements.VerifyChain(tt.tamper(chain()))
			if ok != (len(tt.want) == 0) || !slices.Equal(problems, tt.want) {
				t.Errorf("VerifyChain = %v %q, want %q", ok, problems, tt.want)
			}
		})
	}
	c := chain()
	if c[0].Seq != 1 || c[0].PrevChecksum != "" || c[2].Seq != 2 || c[2].PrevChecksum != c[0].Checksum || c[1].PrevChecksum != "" {
		t.Errorf("chain links %+v", c)
	}
}
