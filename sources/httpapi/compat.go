package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-dev/sluice/pipeline/requirements"
	"github.com/sluice-dev/sluice/schemas"
)

// compatRoutes registers the Python requirements service's routes (reference §2.3) with its
// request and response shapes, so its UI and scripts keep working. Differences, on purpose:
//   - Every route needs a bearer token (reads ScopeRead, feature submission ScopeWrite,
//     admin actions ScopeAdmin). The X-Admin-User header grants nothing, and the recorded
//     actor is the token's name: the body's "admin" field is ignored.
//   - Writes go through the command pipeline and wait (up to compatWait) for the outcome, so
//     answers stay synchronous; a refused decision answers 409 {"detail": …}.
//   - Errors are {"detail": …} like FastAPI's, except authentication failures, which are the
//     API's problem+json (which has a "detail" too).
func (s *Server) compatRoutes() {
	rq := func(scope Scope, h http.HandlerFunc) http.HandlerFunc { return s.require(scope, s.withRequirements(h)) }
	s.handle("GET /api/requirements/versions", rq(ScopeRead, s.compatVersions))
	s.handle("GET /api/requirements/latest", rq(ScopeRead, s.compatLatest))
	s.handle("GET /api/requirements/{version_id}", rq(ScopeRead, s.compatVersion))
	s.handle("POST /api/requirements/submit", rq(ScopeAdmin, s.compatSubmitRequirements))
	s.handle("GET /api/features", rq(ScopeRead, s.compatFeatures))
	s.handle("GET /api/features/{request_id}", rq(ScopeRead, s.compatFeature))
	s.handle("POST /api/features/submit", rq(ScopeWrite, s.compatSubmitFeature))
	s.handle("POST /api/features/{request_id}/approve", rq(ScopeAdmin, s.compatApprove))
	s.handle("GET /api/audit/features", rq(ScopeRead, s.compatAudit))
	s.handle("GET /api/audit/integrity", rq(ScopeAdmin, s.compatIntegrity))
	s.handle("POST /api/validate/schema", rq(ScopeRead, s.compatValidate))
	s.handle("GET /api/schemas", rq(ScopeRead, s.compatSchemas))
}

// detail answers status with FastAPI's error shape {"detail": msg}.
func (s *Server) detail(w http.ResponseWriter, r *http.Request, status int, msg string) {
	s.writeJSON(w, r, status, map[string]string{"detail": msg})
}

// compatReadError maps a failed read to FastAPI-style answers.
func (s *Server) compatReadError(w http.ResponseWriter, r *http.Request, notFound string, err error) {
	if errors.Is(err, requirements.ErrNotFound) {
		s.detail(w, r, http.StatusNotFound, notFound)
		return
	}
	s.internalError(w, r, "read requirements", err)
}

type compatVersionInfo struct {
	requirements.VersionInfo
	FilePath string `json:"file_path"`
}

// compatVersions handles GET /api/requirements/versions.
func (s *Server) compatVersions(w http.ResponseWriter, r *http.Request) {
	vs, err := s.cfg.Requirements.ListVersions(r.Context())
	if err != nil {
		s.internalError(w, r, "list versions", err)
		return
	}
	out := make([]compatVersionInfo, 0, len(vs))
	for _, v := range vs {
		out = append(out, compatVersionInfo{VersionInfo: v, FilePath: "requirements/" + strconv.FormatInt(v.VersionID, 10) + ".json"})
	}
	s.writeJSON(w, r, http.StatusOK, map[string]any{"versions": out, "total": len(out)})
}

// compatLatest handles GET /api/requirements/latest: the stored document as the Python
// service wrote it.
func (s *Server) compatLatest(w http.ResponseWriter, r *http.Request) {
	v, err := s.cfg.Requirements.LatestVersion(r.Context())
	if err != nil {
		s.compatReadError(w, r, "No requirements found", err)
		return
	}
	writeRawJSON(w, http.StatusOK, append(v.JSON(), '\n'))
}

// compatVersion handles GET /api/requirements/{version_id}.
func (s *Server) compatVersion(w http.ResponseWriter, r *http.Request) {
	id, ok := versionID(r.PathValue("version_id"))
	if !ok {
		s.detail(w, r, http.StatusUnprocessableEntity, "version_id must be an integer")
		return
	}
	v, err := s.cfg.Requirements.GetVersion(r.Context(), id)
	if err != nil {
		s.compatReadError(w, r, fmt.Sprintf("Requirements version %d not found", id), err)
		return
	}
	writeRawJSON(w, http.StatusOK, append(v.JSON(), '\n'))
}

// commandReply is how a family of routes words the answers compatCommand gives itself: a
// command refused as invalid, and a wait that ran out.
type commandReply struct {
	invalidCode   int    // the status of a command refused as invalid
	invalidPrefix string // put before the refusal's message
	accepted      func(commandID string) map[string]any
}

// compatReply is the Python service's wording: 400 "Schema validation failed: …", and a 202
// with success and message.
var compatReply = commandReply{
	invalidCode: http.StatusBadRequest, invalidPrefix: "Schema validation failed: ",
	accepted: func(id string) map[string]any {
		return map[string]any{"success": true, "command_id": id, "message": "Accepted; not applied yet. Follow it on GET /v1/events."}
	},
}

// compatCommand publishes cmd and waits for its outcome. It answers the client itself, worded
// by reply, for anything but an applied command, which it returns with true: 404 notFound for
// a command whose subject does not exist, 409 for another refusal, and 202 with the command id
// for a wait that runs out.
func (s *Server) compatCommand(w http.ResponseWriter, r *http.Request, cmd requirements.Command, notFound string, reply commandReply) (requirements.Outcome, bool) {
	cmd.Actor = actor(r)
	id, err := s.cfg.Requirements.Submit(r.Context(), cmd)
	var ref *requirements.Refusal
	switch {
	case errors.As(err, &ref):
		s.detail(w, r, reply.invalidCode, reply.invalidPrefix+ref.Message)
		return requirements.Outcome{}, false
	case err != nil:
		s.internalError(w, r, "submit command", err)
		return requirements.Outcome{}, false
	}
	out, ok, err := s.cfg.Requirements.Await(r.Context(), id, compatWait)
	switch {
	case err != nil && r.Context().Err() != nil:
		w.WriteHeader(statusClientClosed)
	case err != nil:
		s.internalError(w, r, "await command outcome", err)
	case !ok:
		s.writeJSON(w, r, http.StatusAccepted, reply.accepted(id))
	case out.Refusal != nil && out.Refusal.Code == requirements.RefusalNotFound:
		s.detail(w, r, http.StatusNotFound, notFound)
	case out.Refusal != nil && out.Refusal.Code == requirements.RefusalInvalid:
		s.detail(w, r, reply.invalidCode, reply.invalidPrefix+out.Refusal.Message)
	case out.Refusal != nil:
		s.detail(w, r, http.StatusConflict, out.Refusal.Message)
	default:
		return out, true
	}
	return requirements.Outcome{}, false
}

// fillSubmissionLists gives a submission without stakeholders or acceptance criteria empty
// lists, as the Python service stored them.
func fillSubmissionLists(body *requirements.SubmitRequirements) {
	if body.Stakeholders == nil {
		body.Stakeholders = []*requirements.Object{}
	}
	if body.AcceptanceCriteria == nil {
		body.AcceptanceCriteria = []*requirements.Object{}
	}
}

// compatSubmitRequirements handles POST /api/requirements/submit.
func (s *Server) compatSubmitRequirements(w http.ResponseWriter, r *http.Request) {
	var body requirements.SubmitRequirements
	if code, err := decodeJSON(w, r, maxCommandBodyBytes, false, &body); err != nil {
		s.detail(w, r, code, err.Error())
		return
	}
	fillSubmissionLists(&body)
	out, ok := s.compatCommand(w, r, requirements.Command{Type: requirements.TypeSubmitRequirements, SubmitRequirements: &body}, "", compatReply)
	if !ok {
		return
	}
	id := out.Version.VersionID
	s.writeJSON(w, r, http.StatusOK, map[string]any{"success": true, "version_id": id,
		"message": fmt.Sprintf("Requirements version %d saved successfully", id)})
}

// compatFeatureSummary drops rejection_reason, as the Python list did.
func compatFeatureSummary(f requirements.FeatureRequest) *requirements.Object {
	o := f.LegacyObject()
	o.Delete("rejection_reason")
	return o
}

// compatFeatures handles GET /api/features?status=&limit= (1–100, default 50), newest first.
func (s *Server) compatFeatures(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	status := requirements.Status(q.Get("status"))
	if status != "" && !status.Valid() {
		s.detail(w, r, http.StatusUnprocessableEntity, fmt.Sprintf("status %q is not one of pending, approved, rejected, in_progress, completed, cancelled", status))
		return
	}
	limit := 50
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			s.detail(w, r, http.StatusUnprocessableEntity, "limit must be an integer from 1 to 100")
			return
		}
		limit = n
	}
	page, err := s.cfg.Requirements.ListFeatures(r.Context(), requirements.FeatureQuery{Status: status, Limit: limit})
	if err != nil {
		s.internalError(w, r, "list features", err)
		return
	}
	out := make([]*requirements.Object, 0, len(page.Features))
	for _, f := range page.Features {
		out = append(out, compatFeatureSummary(f))
	}
	var filtered any
	if status != "" {
		filtered = string(status)
	}
	s.writeJSON(w, r, http.StatusOK, map[string]any{"features": out, "total": len(out), "filtered_by_status": filtered})
}

// compatFeature handles GET /api/features/{request_id}: the ten stored keys.
func (s *Server) compatFeature(w http.ResponseWriter, r *http.Request) {
	f, err := s.cfg.Requirements.GetFeature(r.Context(), r.PathValue("request_id"))
	if err != nil {
		s.compatReadError(w, r, "Feature request not found", err)
		return
	}
	s.writeJSON(w, r, http.StatusOK, f.LegacyObject())
}

// compatSubmitFeature handles POST /api/features/submit. Extra body fields are ignored, as
// pydantic did.
func (s *Server) compatSubmitFeature(w http.ResponseWriter, r *http.Request) {
	var body featureBody
	if code, err := decodeJSON(w, r, maxCommandBodyBytes, false, &body); err != nil {
		s.detail(w, r, code, err.Error())
		return
	}
	if body.Category == "" {
		body.Category = "other"
	}
	if body.BusinessValue == "" {
		body.BusinessValue = "medium"
	}
	out, ok := s.compatCommand(w, r, body.command(&s.featureIDs), "", compatReply)
	if !ok {
		return
	}
	s.writeJSON(w, r, http.StatusOK, map[string]any{"success": true, "request_id": out.Feature.RequestID,
		"message": "Feature request submitted successfully"})
}

// compatApprove handles POST /api/features/{request_id}/approve: {action, admin, reason?}.
// admin is ignored: the actor is the token's name.
func (s *Server) compatApprove(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Action string  `json:"action"`
		Reason *string `json:"reason"`
	}
	if code, err := decodeJSON(w, r, maxCommandBodyBytes, false, &body); err != nil {
		s.detail(w, r, code, err.Error())
		return
	}
	if body.Action != requirements.ActionApprove && body.Action != requirements.ActionReject {
		s.detail(w, r, http.StatusUnprocessableEntity, "action must match ^(approve|reject)$")
		return
	}
	_, ok := s.compatCommand(w, r, requirements.Command{Type: requirements.TypeDecideFeatureRequest, Decide: &requirements.DecideFeatureRequest{
		RequestID: r.PathValue("request_id"), Action: body.Action, Reason: optReason(body.Reason),
	}}, "Feature request not found", compatReply)
	if !ok {
		return
	}
	s.writeJSON(w, r, http.StatusOK, map[string]any{"success": true,
		"message": "Feature request " + map[string]string{requirements.ActionApprove: "approved", requirements.ActionReject: "rejected"}[body.Action] + " successfully"})
}

// compatAudit handles GET /api/audit/features?request_id=&limit= (1–500, default 100).
// Entries carry the Python fields plus Sluice's seq and prev_checksum.
func (s *Server) compatAudit(w http.ResponseWriter, r *http.Request) {
	limit, err := auditLimit(r, 500)
	if err != nil {
		s.detail(w, r, http.StatusUnprocessableEntity, err.Error())
		return
	}
	rid := r.URL.Query().Get("request_id")
	entries, err := s.cfg.Requirements.ListAudit(r.Context(), rid, limit)
	if err != nil {
		s.internalError(w, r, "list audit", err)
		return
	}
	if entries == nil {
		entries = []requirements.AuditEntry{}
	}
	var filtered any
	if rid != "" {
		filtered = rid
	}
	s.writeJSON(w, r, http.StatusOK, map[string]any{"audit_entries": entries, "total": len(entries), "filtered_by_request": filtered})
}

// compatIntegrity handles GET /api/audit/integrity.
func (s *Server) compatIntegrity(w http.ResponseWriter, r *http.Request) {
	rep, err := s.integrity(r)
	if err != nil {
		s.internalError(w, r, "verify audit", err)
		return
	}
	s.writeJSON(w, r, http.StatusOK, rep)
}

// compatSchemaNames maps the Python schema_type to Sluice's record schemas.
var compatSchemaNames = map[string]schemas.Name{
	"requirements":    schemas.Requirements,
	"feature_request": schemas.FeatureRequest,
}

type compatSchemaError struct {
	FieldPath    string `json:"field_path"`
	Message      string `json:"message"`
	InvalidValue any    `json:"invalid_value"`
	SchemaPath   string `json:"schema_path"`
}

// compatValidate handles POST /api/validate/schema {schema_type, data}: validates a stored
// record (Sluice's record schemas, which accept the Python records).
func (s *Server) compatValidate(w http.ResponseWriter, r *http.Request) {
	var body struct {
		SchemaType string          `json:"schema_type"`
		Data       json.RawMessage `json:"data"`
	}
	if code, err := decodeJSON(w, r, maxCommandBodyBytes, false, &body); err != nil {
		s.detail(w, r, code, err.Error())
		return
	}
	name, ok := compatSchemaNames[body.SchemaType]
	if !ok {
		s.detail(w, r, http.StatusBadRequest, "Invalid schema type")
		return
	}
	if len(body.Data) == 0 {
		body.Data = json.RawMessage(`{}`)
	}
	start := time.Now()
	verr := s.cfg.Requirements.Validator().Schemas().Validate(name, body.Data)
	elapsed := time.Since(start)
	errs := []compatSchemaError{}
	var ve *schemas.ValidationError
	switch {
	case errors.As(verr, &ve):
		var doc any
		_ = json.Unmarshal(body.Data, &doc)
		for _, p := range ve.Problems {
			errs = append(errs, compatProblem(p, doc))
		}
	case verr != nil:
		errs = append(errs, compatSchemaError{FieldPath: "root", Message: verr.Error()})
	}
	s.writeJSON(w, r, http.StatusOK, map[string]any{"is_valid": len(errs) == 0, "errors": errs,
		"schema_name": body.SchemaType, "validation_time_ms": float64(elapsed.Microseconds()) / 1000})
}

// compatProblem turns a `"<json pointer>": message` problem into the Python error shape.
func compatProblem(p string, doc any) compatSchemaError {
	ptr, err := strconv.QuotedPrefix(p)
	if err != nil {
		return compatSchemaError{FieldPath: "root", Message: p}
	}
	msg := strings.TrimPrefix(p[len(ptr):], ": ")
	ptr, _ = strconv.Unquote(ptr)
	e := compatSchemaError{FieldPath: "root", Message: msg, InvalidValue: doc}
	if ptr == "" {
		return e
	}
	tokens := strings.Split(strings.TrimPrefix(ptr, "/"), "/")
	cur := doc
	for i, t := range tokens {
		t = strings.ReplaceAll(strings.ReplaceAll(t, "~1", "/"), "~0", "~")
		tokens[i] = t
		switch c := cur.(type) {
		case map[string]any:
			cur = c[t]
		case []any:
			n, err := strconv.Atoi(t)
			if err != nil || n < 0 || n >= len(c) {
				cur = nil
			} else {
				cur = c[n]
			}
		default:
			cur = nil
		}
	}
	e.FieldPath, e.InvalidValue = strings.Join(tokens, "."), cur
	return e
}

// compatSchemas handles GET /api/schemas.
func (s *Server) compatSchemas(w http.ResponseWriter, r *http.Request) {
	type info struct {
		Name        string `json:"name"`
		Title       string `json:"title"`
		Description string `json:"description"`
		Version     string `json:"version"`
	}
	out := []info{}
	for _, name := range []string{"requirements", "feature_request"} {
		raw, _ := schemas.Schema(compatSchemaNames[name])
		var head struct{ Title, Description string }
		_ = json.Unmarshal(raw, &head)
		out = append(out, info{Name: name, Title: head.Title, Description: head.Description, Version: "1"})
	}
	s.writeJSON(w, r, http.StatusOK, map[string]any{"schemas": out, "total": len(out)})
}
