package requirements_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/pipeline/requirements"
	"github.com/sluice-dev/sluice/pipeline/requirements/reqtest"
	"github.com/sluice-dev/sluice/schemas"
)

func TestFixtureRequirementsChecksum(t *testing.T) {
	raw := reqtest.ReadFixture(t, reqtest.FixtureVersion)
	v, err := requirements.ParseVersion(raw)
	if err != nil {
		t.Fatal(err)
	}
	if v.VersionID != 1757213987664 || v.Author != "test_admin" || v.Timestamp != "2025-09-06T21:59:47.664330" {
		t.Errorf("metadata = %d %q %q", v.VersionID, v.Author, v.Timestamp)
	}
	ok, sum, err := v.VerifyChecksum()
	if err != nil {
		t.Fatal(err)
	}
	if !ok || sum != "ac320456e74ff8cde0d41188d15a728f5217cf943753b084ce786b571174bb08" {
		t.Errorf("checksum %s does not verify against stored %s", sum, v.Checksum)
	}
	// Byte-exact: the encoder reproduces the whole file, and the text hashed is the file
	// without its checksum line (SOURCE.md's recipe).
	if got := v.JSON(); !bytes.Equal(got, raw) {
		t.Errorf("JSON() differs from the file:\n%s", got)
	}
	doc := v.Document.Clone()
	md, _ := doc.Get("metadata")
	md.(*requirements.Object).Delete("checksum")
	hashed, err := requirements.Dumps(doc, requirements.DumpOptions{Indent: 2})
	if err != nil {
		t.Fatal(err)
	}
	line := ",\n    \"checksum\": \"" + v.Checksum + "\""
	if want := strings.Replace(string(raw), line, "", 1); string(hashed) != want {
		t.Errorf("hashed text is not the file without its checksum line:\n%s", hashed)
	}
	// One changed character breaks the checksum.
	v.Document.Set("title", "Test Requirements Document.")
	if ok, _, _ := v.VerifyChecksum(); ok {
		t.Error("edited document still verifies")
	}
}

func TestFixtureFeatureRequests(t *testing.T) {
	tests := []struct {
		name       string
		file       string
		status     requirements.Status
		updated    bool
		approvedBy string
		reason     string
	}{
		{name: "pending", file: reqtest.FixturePending, status: requirements.StatusPending},
		{name: "rejected", file: reqtest.FixtureRejected, status: requirements.StatusRejected, updated: true, approvedBy: "test_admin", reason: "Does not align with current priorities"},
		{name: "approved with reason in rejection_reason", file: reqtest.FixtureApproved, status: requirements.StatusApproved, updated: true, approvedBy: "product_owner", reason: "Aligns with requirement FR-001 from version 1757214104136"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := reqtest.ReadFixture(t, tt.file)
			f, err := requirements.ParseLegacyFeatureRequest(raw)
			if err != nil {
				t.Fatal(err)
			}
			if f.RequestID+".json" != tt.file || f.Status != tt.status || (f.UpdatedAt != nil) != tt.updated || f.Version != 1 || f.Key != f.RequestID {
				t.Errorf("parsed %+v", f)
			}
			if reqtest.Deref(f.ApprovedBy) != tt.approvedBy || reqtest.Deref(f.RejectionReason) != tt.reason {
				t.Errorf("approved_by %q reason %q", reqtest.Deref(f.ApprovedBy), reqtest.Deref(f.RejectionReason))
			}
			if got := f.LegacyJSON(); !bytes.Equal(got, raw) {
				t.Errorf("LegacyJSON differs from the file:\n%s", got)
			}
		})
	}
}

// TestFixturesAgainstOurSchemas: the legacy records (naive timestamps, the top-level author)
// validate against Sluice's stored-record schemas.
func TestFixturesAgainstOurSchemas(t *testing.T) {
	v, err := requirements.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range reqtest.FixtureNames() {
		t.Run(name, func(t *testing.T) {
			raw := reqtest.ReadFixture(t, name)
			schema := schemas.FeatureRequest
			if name == reqtest.FixtureVersion {
				schema = schemas.Requirements
			}
			if err := v.Schemas().Validate(schema, raw); err != nil {
				t.Errorf("legacy record rejected: %v", err)
			}
		})
	}
}
