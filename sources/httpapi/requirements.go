package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/pipeline/requirements"
)

// RequirementsService publishes requirement and feature-request commands, waits for their
// outcomes and reads state; *commands.Client implements it. Implementations must be
// safe for concurrent use; every method may block on I/O and honours ctx.
type RequirementsService interface {
	// Submit validates and publishes cmd and returns its command id once it is durably
	// queued. A command that fails validation is not published: the error is a
	// *requirements.Refusal with code invalid (422).
	Submit(ctx context.Context, cmd requirements.Command) (string, error)
	// Await waits up to timeout for the command's outcome; false when none came in time.
	Await(ctx context.Context, commandID string, timeout time.Duration) (requirements.Outcome, bool, error)
	// ListVersions returns every requirements version, newest first.
	ListVersions(ctx context.Context) ([]requirements.VersionInfo, error)
	// LatestVersion and GetVersion return a version or an error wrapping
	// requirements.ErrNotFound (404).
	LatestVersion(ctx context.Context) (requirements.Version, error)
	GetVersion(ctx context.Context, id int64) (requirements.Version, error)
	// ListFeatures returns a page; a foreign cursor wraps requirements.ErrBadCursor (400).
	ListFeatures(ctx context.Context, q requirements.FeatureQuery) (requirements.FeaturePage, error)
	// GetFeature returns a feature request or an error wrapping requirements.ErrNotFound.
	GetFeature(ctx context.Context, id string) (requirements.FeatureRequest, error)
	// ListAudit returns audit entries of requestID ("" for all), newest first.
	ListAudit(ctx context.Context, requestID string, limit int) ([]requirements.AuditEntry, error)
	// VerifyAudit checks the whole audit chain.
	VerifyAudit(ctx context.Context) (requirements.Integrity, error)
	// Import stores files of the Python service; errors marked fault.Permanent are the
	// files' fault (validation: 400, conflict with stored content: 409).
	Import(ctx context.Context, files []requirements.LegacyFile) (requirements.ImportReport, error)
	// Validator checks records against their schemas (/api/validate/schema).
	Validator() *requirements.Validator
}

const (
	// maxCommandBodyBytes bounds a command request body.
	maxCommandBodyBytes = 4 << 20
	// maxImportBodyBytes bounds an import request body.
	maxImportBodyBytes = 64 << 20
	// maxWait bounds ?wait=.
	maxWait = time.Minute
	// compatWait is how long the Python-compatible routes wait for an outcome.
	compatWait = 10 * time.Second
)

// requirementsRoutes registers the requirement and feature-request routes: the /v1 API
// (this file), the Python service's /api routes (compat.go), the seed's /requirements/ and
// /ws/requirements routes (seed.go) and the change feed (events.go).
// Reads need ScopeRead, feature submissions ScopeWrite, everything an admin did in the Python
// service ScopeAdmin.
func (s *Server) requirementsRoutes() {
	rq := func(scope Scope, h http.HandlerFunc) http.HandlerFunc { return s.require(scope, s.withRequirements(h)) }
	s.handle("POST /v1/requirements", rq(ScopeAdmin, s.submitRequirements))
	s.handle("GET /v1/requirements", rq(ScopeRead, s.listVersions))
	s.handle("GET /v1/requirements/latest", rq(ScopeRead, s.latestVersion))
	s.handle("GET /v1/requirements/{id}", rq(ScopeRead, s.getVersion))
	s.handle("POST /v1/requirements/import", rq(ScopeAdmin, s.importLegacy))
	s.handle("POST /v1/features", rq(ScopeWrite, s.submitFeature))
	s.handle("GET /v1/features", rq(ScopeRead, s.listFeatures))
	s.handle("GET /v1/features/{id}", rq(ScopeRead, s.getFeature))
	s.handle("POST /v1/features/{id}/decision", rq(ScopeAdmin, s.decideFeature))
	s.handle("POST /v1/features/{id}/transition", rq(ScopeAdmin, s.transitionFeature))
	s.handle("GET /v1/audit/features", rq(ScopeRead, s.listAudit))
	s.handle("GET /v1/audit/integrity", rq(ScopeAdmin, s.auditIntegrity))
	s.compatRoutes() // compat.go
	s.seedRoutes()   // seed.go
	s.eventRoutes()  // events.go
}

// withRequirements answers 501 when the server has no RequirementsService.
func (s *Server) withRequirements(h http.HandlerFunc) http.HandlerFunc {
	return s.ifEnabled(s.cfg.Requirements != nil, "Requirements and feature requests are not enabled on this server.", h)
}

// actor is the recorded actor of a command: the authenticated token's name, never anything
// the client sent.
func actor(r *http.Request) string {
	name, _ := Principal(r.Context())
	return name
}

// waitParam reads ?wait= (a Go duration such as "5s", or whole seconds): 0 means do not wait.
func waitParam(r *http.Request) (time.Duration, error) {
	v := r.URL.Query().Get("wait")
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		n, nerr := strconv.Atoi(v)
		if nerr != nil {
			return 0, fmt.Errorf("wait %q is not a duration (e.g. 5s)", v)
		}
		d = time.Duration(n) * time.Second
	}
	if d < 0 || d > maxWait {
		return 0, fmt.Errorf("wait %q must be between 0 and %s", v, maxWait)
	}
	return d, nil
}

// decodeJSON reads r's body (at most limit bytes) into v. strict refuses unknown fields. The
// error is meant for the client.
func decodeJSON(w http.ResponseWriter, r *http.Request, limit int64, strict bool, v any) (int, error) {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	if strict {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return http.StatusRequestEntityTooLarge, fmt.Errorf("the body is larger than %d bytes", limit)
		}
		if errors.Is(err, io.EOF) {
			return http.StatusBadRequest, errors.New("the body is empty; a JSON object is required")
		}
		return http.StatusBadRequest, fmt.Errorf("the body is not the expected JSON: %v", err)
	}
	if dec.More() {
		return http.StatusBadRequest, errors.New("the body holds more than one JSON value")
	}
	return 0, nil
}

// refusalStatus maps a refusal to its HTTP status.
func refusalStatus(code requirements.RefusalCode) int {
	switch code {
	case requirements.RefusalNotFound:
		return http.StatusNotFound
	case requirements.RefusalInvalid:
		return http.StatusUnprocessableEntity
	}
	return http.StatusConflict
}

// refusalDoc is a problem document for a refused command, with the refusal's fields.
type refusalDoc struct {
	problemDoc
	Code           requirements.RefusalCode `json:"code"`
	CommandID      string                   `json:"command_id,omitempty"`
	CurrentStatus  requirements.Status      `json:"current_status,omitempty"`
	CurrentVersion int64                    `json:"current_version,omitempty"`
}

// writeRefusal answers a refused (or invalid) command with problem+json carrying its code.
func (s *Server) writeRefusal(w http.ResponseWriter, r *http.Request, commandID string, ref *requirements.Refusal) {
	status := refusalStatus(ref.Code)
	d := refusalDoc{
		problemDoc: problemDoc{Type: "about:blank", Title: http.StatusText(status), Status: status, Detail: ref.Message, Instance: r.URL.EscapedPath()},
		Code:       ref.Code, CommandID: commandID, CurrentStatus: ref.CurrentStatus, CurrentVersion: ref.CurrentVersion,
	}
	if info := reqInfoFrom(r.Context()); info != nil {
		d.RequestID = info.id
	}
	body, err := json.Marshal(d)
	if err != nil {
		s.internalError(w, r, "encode refusal", err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// accepted is the body of a 202: the command is queued (or its outcome did not come within
// ?wait=).
type accepted struct {
	CommandID string `json:"command_id"`
	Type      string `json:"type"`
	Key       string `json:"key"`
	// RequestID is the new feature request's id (submissions only).
	RequestID string `json:"request_id,omitempty"`
	// Status is "accepted": queued, not applied yet.
	Status string `json:"status"`
}

// sendCommand fills in the actor and publishes cmd. It answers the client itself when it
// returns false.
func (s *Server) sendCommand(w http.ResponseWriter, r *http.Request, cmd *requirements.Command) (string, bool) {
	cmd.Actor = actor(r)
	id, err := s.cfg.Requirements.Submit(r.Context(), *cmd)
	var ref *requirements.Refusal
	switch {
	case errors.As(err, &ref):
		s.writeRefusal(w, r, "", ref)
		return "", false
	case err != nil:
		s.internalError(w, r, "submit command", err)
		return "", false
	}
	cmd.CommandID = id
	return id, true
}

// runCommand publishes cmd and answers the /v1 way: 202 with the command id, or with
// ?wait= the outcome: 201 (created) or 200 with the new state, a refusal's status
// (409/404/422) with problem+json, or 202 when the wait ran out.
func (s *Server) runCommand(w http.ResponseWriter, r *http.Request, cmd requirements.Command, created bool) {
	wait, err := waitParam(r)
	if err != nil {
		s.problem(w, r, http.StatusBadRequest, err.Error())
		return
	}
	id, ok := s.sendCommand(w, r, &cmd)
	if !ok {
		return
	}
	acc := accepted{CommandID: id, Type: string(cmd.Type), Key: cmd.Key(), Status: "accepted"}
	if cmd.SubmitFeatureRequest != nil {
		acc.RequestID = cmd.SubmitFeatureRequest.RequestID
	}
	if wait == 0 {
		s.writeJSON(w, r, http.StatusAccepted, acc)
		return
	}
	out, ok, err := s.cfg.Requirements.Await(r.Context(), id, wait)
	switch {
	case err != nil && r.Context().Err() != nil:
		w.WriteHeader(statusClientClosed)
	case err != nil:
		s.internalError(w, r, "await command outcome", err)
	case !ok:
		s.writeJSON(w, r, http.StatusAccepted, acc)
	case out.Refusal != nil:
		s.writeRefusal(w, r, id, out.Refusal)
	case created:
		if out.Feature != nil {
			w.Header().Set("Location", "/v1/features/"+out.Feature.RequestID)
		} else if out.Version != nil {
			w.Header().Set("Location", "/v1/requirements/"+strconv.FormatInt(out.Version.VersionID, 10))
		}
		s.writeJSON(w, r, http.StatusCreated, out)
	default:
		s.writeJSON(w, r, http.StatusOK, out)
	}
}

// submitRequirements handles POST /v1/requirements: body = the Python submission body.
func (s *Server) submitRequirements(w http.ResponseWriter, r *http.Request) {
	var body requirements.SubmitRequirements
	if code, err := decodeJSON(w, r, maxCommandBodyBytes, true, &body); err != nil {
		s.problem(w, r, code, err.Error())
		return
	}
	s.runCommand(w, r, requirements.Command{Type: requirements.TypeSubmitRequirements, SubmitRequirements: &body}, true)
}

// featureBody is a feature-request submission: the Python body; the request id is assigned.
type featureBody struct {
	Title              string   `json:"title"`
	Description        string   `json:"description"`
	Priority           string   `json:"priority"`
	Requester          string   `json:"requester"`
	Category           string   `json:"category,omitempty"`
	BusinessValue      string   `json:"business_value,omitempty"`
	EffortEstimate     *int     `json:"effort_estimate,omitempty"`
	UserStory          string   `json:"user_story,omitempty"`
	AcceptanceCriteria []string `json:"acceptance_criteria,omitempty"`
	Tags               []string `json:"tags,omitempty"`
}

// command is the submission of b under a new request id from ids.
func (b featureBody) command(ids *requirements.RequestIDs) requirements.Command {
	return requirements.Command{Type: requirements.TypeSubmitFeatureRequest, SubmitFeatureRequest: &requirements.SubmitFeatureRequest{
		RequestID: ids.Next(time.Now()), Title: b.Title, Description: b.Description,
		Priority: b.Priority, Requester: b.Requester, Category: b.Category, BusinessValue: b.BusinessValue,
		EffortEstimate: b.EffortEstimate, UserStory: b.UserStory, AcceptanceCriteria: b.AcceptanceCriteria, Tags: b.Tags,
	}}
}

// submitFeature handles POST /v1/features.
func (s *Server) submitFeature(w http.ResponseWriter, r *http.Request) {
	var body featureBody
	if code, err := decodeJSON(w, r, maxCommandBodyBytes, true, &body); err != nil {
		s.problem(w, r, code, err.Error())
		return
	}
	s.runCommand(w, r, body.command(&s.featureIDs), true)
}

// optReason maps "" to absent, as the Python service treated an empty reason.
func optReason(s *string) *string {
	if s == nil || *s == "" {
		return nil
	}
	return s
}

// decideFeature handles POST /v1/features/{id}/decision.
func (s *Server) decideFeature(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Action          string  `json:"action"`
		Reason          *string `json:"reason"`
		ExpectedVersion *int64  `json:"expected_version"`
	}
	if code, err := decodeJSON(w, r, maxCommandBodyBytes, true, &body); err != nil {
		s.problem(w, r, code, err.Error())
		return
	}
	s.runCommand(w, r, requirements.Command{Type: requirements.TypeDecideFeatureRequest, Decide: &requirements.DecideFeatureRequest{
		RequestID: r.PathValue("id"), Action: body.Action, Reason: optReason(body.Reason), ExpectedVersion: body.ExpectedVersion,
	}}, false)
}

// transitionFeature handles POST /v1/features/{id}/transition.
func (s *Server) transitionFeature(w http.ResponseWriter, r *http.Request) {
	var body struct {
		To              requirements.Status `json:"to"`
		Reason          *string             `json:"reason"`
		ExpectedVersion *int64              `json:"expected_version"`
	}
	if code, err := decodeJSON(w, r, maxCommandBodyBytes, true, &body); err != nil {
		s.problem(w, r, code, err.Error())
		return
	}
	s.runCommand(w, r, requirements.Command{Type: requirements.TypeTransitionFeatureRequest, Transition: &requirements.TransitionFeatureRequest{
		RequestID: r.PathValue("id"), To: body.To, Reason: optReason(body.Reason), ExpectedVersion: body.ExpectedVersion,
	}}, false)
}

// importFile is one file of POST /v1/requirements/import: its name and content, either the
// JSON document itself or its text as a JSON string.
type importFile struct {
	Name string          `json:"name"`
	Data json.RawMessage `json:"data"`
}

// importLegacy handles POST /v1/requirements/import: files written by the Python service
// (requirements/{id}.json, features/FR-*.json), stored all or nothing.
func (s *Server) importLegacy(w http.ResponseWriter, r *http.Request) {
	var files []importFile
	if code, err := decodeJSON(w, r, maxImportBodyBytes, true, &files); err != nil {
		s.problem(w, r, code, err.Error())
		return
	}
	if len(files) == 0 {
		s.problem(w, r, http.StatusBadRequest, `the body must be a non-empty JSON array of {"name","data"}`)
		return
	}
	legacy := make([]requirements.LegacyFile, 0, len(files))
	for i, f := range files {
		data := []byte(f.Data)
		if strings.HasPrefix(strings.TrimSpace(string(data)), `"`) {
			var text string
			if err := json.Unmarshal(data, &text); err != nil {
				s.problem(w, r, http.StatusBadRequest, fmt.Sprintf("file %d: data is not a JSON string or object", i))
				return
			}
			data = []byte(text)
		}
		if len(data) == 0 {
			s.problem(w, r, http.StatusBadRequest, fmt.Sprintf("file %d (%q) has no data", i, f.Name))
			return
		}
		legacy = append(legacy, requirements.LegacyFile{Name: f.Name, Data: data})
	}
	rep, err := s.cfg.Requirements.Import(r.Context(), legacy)
	switch {
	case err == nil:
		s.writeJSON(w, r, http.StatusOK, rep)
	case fault.IsPermanent(err) && fault.ClassOf(err) == fault.Validation:
		s.problem(w, r, http.StatusBadRequest, err.Error())
	case fault.IsPermanent(err):
		s.problem(w, r, http.StatusConflict, err.Error())
	default:
		s.internalError(w, r, "import", err)
	}
}
