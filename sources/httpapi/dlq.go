package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/sluice-dev/sluice/pipeline/dlq"
	"github.com/sluice-dev/sluice/schemas"
)

// DeadLetterService reads and acts on dead letters; *dlq.Store implements it. Implementations
// must be safe for concurrent use; every method may block on I/O and honours ctx.
type DeadLetterService interface {
	// List returns a page of entries matching f, oldest first, after cursor. Input errors wrap
	// dlq.ErrInvalid (400).
	List(ctx context.Context, f dlq.Filter, cursor string, limit int) (dlq.Page, error)
	// Get returns one entry by id, or an error wrapping dlq.ErrNotFound or ErrNotFound (404).
	Get(ctx context.Context, id string) (dlq.Entry, error)
	// Payload returns the original payload of one entry, byte for byte, whether it is inline
	// or stored by reference; errors wrap dlq.ErrNotFound or ErrNotFound (404), or
	// dlq.ErrPayloadMissing (the referenced original is gone: 404 too).
	Payload(ctx context.Context, id string) ([]byte, error)
	// Delete removes one entry by id, or returns an error wrapping dlq.ErrNotFound or
	// ErrNotFound (404).
	Delete(ctx context.Context, id string) error
	// Purge removes every entry matching f and returns how many.
	Purge(ctx context.Context, f dlq.Filter) (int, error)
	// Replay republishes entries; input errors wrap dlq.ErrInvalid (400).
	Replay(ctx context.Context, req dlq.ReplayRequest) (dlq.ReplayResult, error)
}

// maxDLQBodyBytes bounds a replay request body.
const maxDLQBodyBytes = 1 << 20

// dlqRoutes registers the dead-letter routes: reads need ScopeRead, replay, delete and purge
// need ScopeAdmin.
func (s *Server) dlqRoutes() {
	s.handle("GET /v1/dlq", s.require(ScopeRead, s.withDLQ(s.listDLQ)))
	s.handle("GET /v1/dlq/{id}", s.require(ScopeRead, s.withDLQ(s.getDLQ)))
	s.handle("GET /v1/dlq/{id}/payload", s.require(ScopeRead, s.withDLQ(s.getDLQPayload)))
	s.handle("POST /v1/dlq/replay", s.require(ScopeAdmin, s.withDLQ(s.replayDLQ)))
	s.handle("DELETE /v1/dlq/{id}", s.require(ScopeAdmin, s.withDLQ(s.deleteDLQ)))
	s.handle("DELETE /v1/dlq", s.require(ScopeAdmin, s.withDLQ(s.purgeDLQ)))
}

// withDLQ answers 501 when the server has no DeadLetterService.
func (s *Server) withDLQ(h http.HandlerFunc) http.HandlerFunc {
	return s.ifEnabled(s.cfg.DeadLetters != nil, "Dead-letter inspection and replay are not enabled on this server.", h)
}

// DeadLetter is a dead letter as GET /v1/dlq and GET /v1/dlq/{id} serve it (schema
// DeadLetter plus three fields): the envelope, its payload as standard base64 or empty with
// payload_ref when the original was stored by reference, and the fields below. GET
// /v1/dlq/{id}/payload serves the payload either way. Clients decode it with encoding/json.
type DeadLetter struct {
	schemas.DeadLetterEnvelope
	// DLQSeq is the entry's sequence in the DLQ stream.
	DLQSeq uint64 `json:"dlq_seq"`
	// StoredAt is when the DLQ stream stored the entry.
	StoredAt time.Time `json:"stored_at"`
	// PayloadJSON is the inline payload itself when it is JSON; nil otherwise.
	PayloadJSON json.RawMessage `json:"payload_json,omitempty"`
}

// NewDeadLetter is the wire shape of e.
func NewDeadLetter(e dlq.Entry) DeadLetter {
	d := DeadLetter{DeadLetterEnvelope: e.Envelope, DLQSeq: e.Seq, StoredAt: e.StoredAt}
	if len(e.Envelope.Payload) > 0 && json.Valid(e.Envelope.Payload) {
		d.PayloadJSON = json.RawMessage(e.Envelope.Payload)
	}
	return d
}

// MarshalJSON encodes d as the envelope's own encoding (schemas.DeadLetterEnvelope.MarshalJSON,
// which the embedding would otherwise promote over the whole) with the three fields added.
func (d DeadLetter) MarshalJSON() ([]byte, error) {
	env, err := json.Marshal(d.DeadLetterEnvelope)
	if err != nil {
		return nil, fmt.Errorf("encode dead letter %s: %w", d.ID, err)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(env, &fields); err != nil {
		return nil, fmt.Errorf("encode dead letter %s: %w", d.ID, err)
	}
	fields["dlq_seq"] = json.RawMessage(strconv.FormatUint(d.DLQSeq, 10))
	at, _ := json.Marshal(d.StoredAt)
	fields["stored_at"] = at
	if d.PayloadJSON != nil {
		fields["payload_json"] = d.PayloadJSON
	}
	return json.Marshal(fields)
}

// encodeEntry is the wire shape of a dead letter (DeadLetter), encoded.
func encodeEntry(e dlq.Entry) (json.RawMessage, error) {
	return json.Marshal(NewDeadLetter(e))
}

// dlqFilter reads job, subject, error_class, since and until from the query. Times are
// RFC 3339.
func dlqFilter(q url.Values) (dlq.Filter, error) {
	f := dlq.Filter{Job: q.Get("job"), Subject: q.Get("subject"), ErrorClass: q.Get("error_class")}
	var errs []error
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		v := q.Get(p.name)
		if v == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %q is not an RFC 3339 time (e.g. 2025-01-02T15:04:05Z)", p.name, v))
			continue
		}
		*p.dst = t
	}
	if err := errors.Join(errs...); err != nil {
		return f, err
	}
	if err := f.Validate(); err != nil {
		return f, err
	}
	return f, nil
}

// listDLQ handles GET /v1/dlq?job=&subject=&error_class=&since=&until=&limit=&cursor=.
func (s *Server) listDLQ(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f, err := dlqFilter(q)
	if err != nil {
		s.problem(w, r, http.StatusBadRequest, err.Error())
		return
	}
	limit := 0
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > dlq.MaxLimit {
			s.problem(w, r, http.StatusBadRequest, fmt.Sprintf("limit %q is not a number from 1 to %d", v, dlq.MaxLimit))
			return
		}
	}
	page, err := s.cfg.DeadLetters.List(r.Context(), f, q.Get("cursor"), limit)
	if err != nil {
		s.dlqError(w, r, "list dead letters", err)
		return
	}
	out := struct {
		Entries    []json.RawMessage `json:"entries"`
		NextCursor *string           `json:"next_cursor"`
	}{Entries: make([]json.RawMessage, 0, len(page.Entries))}
	for _, e := range page.Entries {
		b, err := encodeEntry(e)
		if err != nil {
			s.internalError(w, r, "list dead letters", err)
			return
		}
		out.Entries = append(out.Entries, b)
	}
	if page.NextCursor != "" {
		out.NextCursor = &page.NextCursor
	}
	s.writeJSON(w, r, http.StatusOK, out)
}

// getDLQ handles GET /v1/dlq/{id}.
func (s *Server) getDLQ(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	e, err := s.cfg.DeadLetters.Get(r.Context(), id)
	if err != nil {
		s.dlqError(w, r, "get dead letter", err)
		return
	}
	b, err := encodeEntry(e)
	if err != nil {
		s.internalError(w, r, "get dead letter", err)
		return
	}
	writeRawJSON(w, http.StatusOK, append(b, '\n'))
}

// getDLQPayload handles GET /v1/dlq/{id}/payload: the original payload as
// application/octet-stream, byte for byte, read back from the payload bucket when the dead
// letter stored it by reference. It is at most the broker's max payload.
func (s *Server) getDLQPayload(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	b, err := s.cfg.DeadLetters.Payload(r.Context(), id)
	if errors.Is(err, dlq.ErrPayloadMissing) {
		s.problem(w, r, http.StatusNotFound, fmt.Sprintf("The original payload of dead letter %q is no longer stored (deleted or expired).", id))
		return
	}
	if err != nil {
		s.dlqError(w, r, "get dead-letter payload", err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// deleteDLQ handles DELETE /v1/dlq/{id}.
func (s *Server) deleteDLQ(w http.ResponseWriter, r *http.Request) {
	if err := s.cfg.DeadLetters.Delete(r.Context(), r.PathValue("id")); err != nil {
		s.dlqError(w, r, "delete dead letter", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// purgeDLQ handles DELETE /v1/dlq?job=&subject=&error_class=&since=&until=; at least one
// filter is required so that a bare DELETE cannot empty the DLQ.
func (s *Server) purgeDLQ(w http.ResponseWriter, r *http.Request) {
	f, err := dlqFilter(r.URL.Query())
	if err != nil {
		s.problem(w, r, http.StatusBadRequest, err.Error())
		return
	}
	if f.IsZero() {
		s.problem(w, r, http.StatusBadRequest, "Purging needs at least one filter: job, subject, error_class, since or until.")
		return
	}
	n, err := s.cfg.DeadLetters.Purge(r.Context(), f)
	if err != nil {
		s.dlqError(w, r, "purge dead letters", err)
		return
	}
	s.writeJSON(w, r, http.StatusOK, map[string]int{"purged": n})
}

// replayBody is the body of POST /v1/dlq/replay.
type replayBody struct {
	IDs    []string `json:"ids"`
	Filter *struct {
		Job        string `json:"job"`
		Subject    string `json:"subject"`
		ErrorClass string `json:"error_class"`
		Since      string `json:"since"`
		Until      string `json:"until"`
	} `json:"filter"`
	DryRun     bool    `json:"dry_run"`
	Rate       float64 `json:"rate"`
	MaxReplays int     `json:"max_replays"`
	Limit      int     `json:"limit"`
}

// replayDLQ handles POST /v1/dlq/replay.
func (s *Server) replayDLQ(w http.ResponseWriter, r *http.Request) {
	dec := json.NewDecoder(http.MaxBytesReader(innermost(w), r.Body, maxDLQBodyBytes))
	dec.DisallowUnknownFields()
	var body replayBody
	if err := dec.Decode(&body); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			s.problem(w, r, http.StatusRequestEntityTooLarge, fmt.Sprintf("The request body is larger than %d bytes.", maxDLQBodyBytes))
			return
		}
		s.problem(w, r, http.StatusBadRequest, "The body must be a JSON object {\"ids\":[…]} or {\"filter\":{…}}, with optional dry_run, rate, max_replays, limit: "+jsonProblem(err))
		return
	}
	if dec.More() {
		s.problem(w, r, http.StatusBadRequest, "The body must hold one JSON object.")
		return
	}
	req := dlq.ReplayRequest{IDs: body.IDs, DryRun: body.DryRun, Rate: body.Rate, MaxReplays: body.MaxReplays, Limit: body.Limit}
	if body.Filter != nil {
		q := url.Values{}
		for k, v := range map[string]string{"job": body.Filter.Job, "subject": body.Filter.Subject, "error_class": body.Filter.ErrorClass, "since": body.Filter.Since, "until": body.Filter.Until} {
			if v != "" {
				q.Set(k, v)
			}
		}
		f, err := dlqFilter(q)
		if err != nil {
			s.problem(w, r, http.StatusBadRequest, "filter: "+err.Error())
			return
		}
		req.Filter = &f
	}
	res, err := s.cfg.DeadLetters.Replay(r.Context(), req)
	if err != nil {
		s.dlqError(w, r, "replay dead letters", err)
		return
	}
	s.writeJSON(w, r, http.StatusOK, res)
}

// jsonProblem describes a JSON decoding error without echoing the body.
func jsonProblem(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("invalid JSON at byte offset %d.", se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("field %q has the wrong type.", te.Field)
	case errors.Is(err, io.EOF):
		return "the body is empty."
	}
	// DisallowUnknownFields: `json: unknown field "x"` names only the field.
	return err.Error() + "."
}

// dlqError maps a DeadLetterService error to an answer.
func (s *Server) dlqError(w http.ResponseWriter, r *http.Request, what string, err error) {
	switch {
	case errors.Is(err, dlq.ErrNotFound), errors.Is(err, ErrNotFound):
		s.problem(w, r, http.StatusNotFound, fmt.Sprintf("No dead letter with id %q.", r.PathValue("id")))
	case errors.Is(err, dlq.ErrInvalid):
		s.problem(w, r, http.StatusBadRequest, err.Error())
	case r.Context().Err() != nil:
		s.writeProblem(w, r, problemDoc{Status: statusClientClosed, Title: "Client Closed Request", Detail: "The client closed the request."})
	default:
		s.internalError(w, r, what, err)
	}
}
