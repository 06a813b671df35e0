package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/sourcegraph/conc/pool"

	"github.com/sluice-dev/sluice/pipeline/requirements"
)

// readError answers a failed read: 404 for requirements.ErrNotFound, 400 for a bad cursor,
// 500 otherwise.
func (s *Server) readError(w http.ResponseWriter, r *http.Request, what string, err error) {
	switch {
	case errors.Is(err, requirements.ErrNotFound):
		s.problem(w, r, http.StatusNotFound, "No "+what+".")
	case errors.Is(err, requirements.ErrBadCursor):
		s.problem(w, r, http.StatusBadRequest, "cursor is not a next_cursor this server returned")
	default:
		s.internalError(w, r, "read "+what, err)
	}
}

type versionList struct {
	Versions []requirements.VersionInfo `json:"versions"`
	Total    int                        `json:"total"`
}

// listVersions handles GET /v1/requirements.
func (s *Server) listVersions(w http.ResponseWriter, r *http.Request) {
	vs, err := s.cfg.Requirements.ListVersions(r.Context())
	if err != nil {
		s.readError(w, r, "requirements versions", err)
		return
	}
	if vs == nil {
		vs = []requirements.VersionInfo{}
	}
	s.writeJSON(w, r, http.StatusOK, versionList{Versions: vs, Total: len(vs)})
}

// latestVersion handles GET /v1/requirements/latest.
func (s *Server) latestVersion(w http.ResponseWriter, r *http.Request) {
	v, err := s.cfg.Requirements.LatestVersion(r.Context())
	if err != nil {
		s.readError(w, r, "requirements version", err)
		return
	}
	s.writeJSON(w, r, http.StatusOK, v)
}

// versionID parses the {id} (or {version_id}) path value.
func versionID(v string) (int64, bool) {
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil && n > 0
}

// getVersion handles GET /v1/requirements/{id}.
func (s *Server) getVersion(w http.ResponseWriter, r *http.Request) {
	id, ok := versionID(r.PathValue("id"))
	if !ok {
		s.problem(w, r, http.StatusBadRequest, "the version id must be a positive integer")
		return
	}
	v, err := s.cfg.Requirements.GetVersion(r.Context(), id)
	if err != nil {
		s.readError(w, r, fmt.Sprintf("requirements version %d", id), err)
		return
	}
	s.writeJSON(w, r, http.StatusOK, v)
}

// listFeatures handles GET /v1/features?status=&cursor=&limit=.
func (s *Server) listFeatures(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	fq := requirements.FeatureQuery{Status: requirements.Status(q.Get("status")), Cursor: q.Get("cursor")}
	if fq.Status != "" && !fq.Status.Valid() {
		s.problem(w, r, http.StatusBadRequest, fmt.Sprintf("status %q is not a feature-request status", fq.Status))
		return
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > requirements.MaxListLimit {
			s.problem(w, r, http.StatusBadRequest, fmt.Sprintf("limit must be a number from 1 to %d", requirements.MaxListLimit))
			return
		}
		fq.Limit = n
	}
	page, err := s.cfg.Requirements.ListFeatures(r.Context(), fq)
	if err != nil {
		s.readError(w, r, "feature requests", err)
		return
	}
	if page.Features == nil {
		page.Features = []requirements.FeatureRequest{}
	}
	s.writeJSON(w, r, http.StatusOK, page)
}

// featureWithAudit is GET /v1/features/{id}: the request and its audit trail, newest first.
type featureWithAudit struct {
	Feature requirements.FeatureRequest `json:"feature"`
	Audit   []requirements.AuditEntry   `json:"audit"`
}

// getFeature handles GET /v1/features/{id}: the request and its audit trail, read
// concurrently.
func (s *Server) getFeature(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var out featureWithAudit
	p := pool.New().WithErrors().WithContext(r.Context())
	p.Go(func(ctx context.Context) error {
		f, err := s.cfg.Requirements.GetFeature(ctx, id)
		out.Feature = f
		return err
	})
	p.Go(func(ctx context.Context) error {
		a, err := s.cfg.Requirements.ListAudit(ctx, id, requirements.MaxListLimit)
		out.Audit = a
		return err
	})
	if err := p.Wait(); err != nil {
		s.readError(w, r, "feature request "+id, err)
		return
	}
	if out.Audit == nil {
		out.Audit = []requirements.AuditEntry{}
	}
	s.writeJSON(w, r, http.StatusOK, out)
}

// auditLimit reads ?limit= (1..max; default requirements.DefaultAuditLimit).
func auditLimit(r *http.Request, most int) (int, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return requirements.DefaultAuditLimit, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > most {
		return 0, fmt.Errorf("limit must be a number from 1 to %d", most)
	}
	return n, nil
}

// listAudit handles GET /v1/audit/features?request_id=&limit=: newest first.
func (s *Server) listAudit(w http.ResponseWriter, r *http.Request) {
	limit, err := auditLimit(r, requirements.MaxListLimit)
	if err != nil {
		s.problem(w, r, http.StatusBadRequest, err.Error())
		return
	}
	entries, err := s.cfg.Requirements.ListAudit(r.Context(), r.URL.Query().Get("request_id"), limit)
	if err != nil {
		s.readError(w, r, "audit entries", err)
		return
	}
	if entries == nil {
		entries = []requirements.AuditEntry{}
	}
	s.writeJSON(w, r, http.StatusOK, map[string]any{"audit_entries": entries, "total": len(entries)})
}

// integrityReport is GET /v1/audit/integrity.
type integrityReport struct {
	requirements.Integrity
	TotalCompromised int    `json:"total_compromised"`
	CheckedAt        string `json:"validation_timestamp"`
}

func (s *Server) integrity(r *http.Request) (integrityReport, error) {
	in, err := s.cfg.Requirements.VerifyAudit(r.Context())
	if err != nil {
		return integrityReport{}, err
	}
	if in.Problems == nil {
		in.Problems = []string{}
	}
	return integrityReport{Integrity: in, TotalCompromised: len(in.Problems), CheckedAt: requirements.FormatTimestamp(time.Now())}, nil
}

// auditIntegrity handles GET /v1/audit/integrity: the chain check, 200 whatever it found.
func (s *Server) auditIntegrity(w http.ResponseWriter, r *http.Request) {
	rep, err := s.integrity(r)
	if err != nil {
		s.internalError(w, r, "verify audit", err)
		return
	}
	s.writeJSON(w, r, http.StatusOK, rep)
}
