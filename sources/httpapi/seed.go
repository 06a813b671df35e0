package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"
	"github.com/sourcegraph/conc/pool"

	"github.com/sluice-dev/sluice/pipeline/requirements"
)

// The seed's own routes (FR-PERF-405, TR-405.3): POST /requirements/, GET /requirements/ and
// the WebSocket /ws/requirements. A seed "requirement" is a Sluice requirements version: the
// body of POST /requirements/ is the Python submission body (RequirementCreate), created through
// the same command as POST /v1/requirements (ScopeAdmin), and a requirement as answered is the
// stored document with "id" (its version_id) and "archived" (always false: versions are
// immutable and Sluice has no archive mutation) added in front.
const (
	// seedDefaultLimit and seedMaxLimit bound GET /requirements/?limit=.
	seedDefaultLimit = 50
	seedMaxLimit     = requirements.MaxListLimit
	// seedReadConcurrency bounds the version reads one list or socket request runs at once.
	seedReadConcurrency = 8
	// maxSeedWSMessage bounds one message a /ws/requirements client sends; a larger one closes
	// the socket with 1009 (message too big).
	maxSeedWSMessage = 64 << 10
	// maxSeedWSResults bounds the requirements one get_requirements answers.
	maxSeedWSResults = requirements.MaxListLimit
	// seedWSWriteTimeout bounds writing one answer to a slow client.
	seedWSWriteTimeout = 30 * time.Second
	// WSBearerSubprotocol is the WebSocket subprotocol that carries a bearer token where a
	// client cannot set headers (browsers): Sec-WebSocket-Protocol: bearer, <token>. The
	// server selects "bearer".
	WSBearerSubprotocol = "bearer"
	// TotalCountHeader carries GET /requirements/'s total (non-archived) count.
	TotalCountHeader = "X-Total-Count"
)

// seedRoutes registers the seed's routes. Errors are FastAPI's {"detail": …}; authentication
// failures are the API's problem+json, as on the compatibility routes.
func (s *Server) seedRoutes() {
	rq := func(scope Scope, h http.HandlerFunc) http.HandlerFunc { return s.require(scope, s.withRequirements(h)) }
	s.handle("POST /requirements/", s.seedExact(rq(ScopeAdmin, s.seedCreate)))
	s.handle("GET /requirements/", s.seedExact(rq(ScopeRead, s.seedList)))
	s.handle("GET /ws/requirements", rq(ScopeRead, s.seedWS))
}

// seedExact answers 404 {"detail":"Not Found"}, as FastAPI does, for a path below
// /requirements/ (which the mux pattern "/requirements/" also matches).
func (s *Server) seedExact(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/requirements/" {
			s.detail(w, r, http.StatusNotFound, "Not Found")
			return
		}
		h(w, r)
	}
}

// seedRequirement is a requirement as the seed's routes answer it: "id" and "archived", then
// the stored document's members in their order.
func seedRequirement(v requirements.Version) *requirements.Object {
	o := requirements.NewObject(
		requirements.Member{Key: "id", Value: json.Number(strconv.FormatInt(v.VersionID, 10))},
		requirements.Member{Key: "archived", Value: false},
	)
	if v.Document != nil {
		for _, m := range v.Document.Members() {
			if m.Key != "id" && m.Key != "archived" {
				o.Set(m.Key, m.Value)
			}
		}
	}
	return o
}

// seedCreate handles POST /requirements/: the Python submission body; 200 with the stored
// requirement once applied, 422 {"detail"} for a bad body or a refused submission, 202 with
// the command id when the outcome did not come within compatWait.
func (s *Server) seedCreate(w http.ResponseWriter, r *http.Request) {
	var body requirements.SubmitRequirements
	if code, err := decodeJSON(w, r, maxCommandBodyBytes, false, &body); err != nil {
		if code != http.StatusRequestEntityTooLarge {
			code = http.StatusUnprocessableEntity // FastAPI answers a malformed body 422
		}
		s.detail(w, r, code, err.Error())
		return
	}
	fillSubmissionLists(&body)
	out, ok := s.compatCommand(w, r, requirements.Command{Type: requirements.TypeSubmitRequirements, SubmitRequirements: &body}, "", seedReply)
	switch {
	case !ok:
	case out.Version == nil:
		s.internalError(w, r, "submit requirements", errors.New("outcome without a version"))
	default:
		s.writeJSON(w, r, http.StatusOK, seedRequirement(*out.Version))
	}
}

// seedReply is FastAPI's wording: 422 {"detail"} for invalid input, and a 202 with the
// command id.
var seedReply = commandReply{
	invalidCode: http.StatusUnprocessableEntity,
	accepted: func(id string) map[string]any {
		return map[string]any{"command_id": id, "detail": "Accepted; not applied yet. Follow it on GET /v1/events."}
	},
}

// seedPage reads ?limit= (1..seedMaxLimit, default seedDefaultLimit) and ?offset= (≥ 0,
// default 0); the error is the 422 answer's text.
func seedPage(r *http.Request) (limit, offset int, err error) {
	q := r.URL.Query()
	limit = seedDefaultLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > seedMaxLimit {
			return 0, 0, fmt.Errorf("limit must be an integer from 1 to %d", seedMaxLimit)
		}
		limit = n
	}
	if v := q.Get("offset"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return 0, 0, errors.New("offset must be an integer of 0 or more")
		}
		offset = n
	}
	return limit, offset, nil
}

// loadVersions reads the full versions of infos, at most seedReadConcurrency at once, in
// infos' order.
func (s *Server) loadVersions(ctx context.Context, infos []requirements.VersionInfo) ([]requirements.Version, error) {
	out := make([]requirements.Version, len(infos))
	p := pool.New().WithErrors().WithContext(ctx).WithMaxGoroutines(seedReadConcurrency).WithCancelOnError()
	for i, in := range infos {
		p.Go(func(ctx context.Context) error {
			v, err := s.cfg.Requirements.GetVersion(ctx, in.VersionID)
			out[i] = v
			return err
		})
	}
	return out, p.Wait()
}

// seedList handles GET /requirements/?limit=&offset=: a bare JSON list of requirements, newest
// first, archived ones excluded (none are: see seedRequirement); the page and the total count
// are read concurrently, the count answered in X-Total-Count.
func (s *Server) seedList(w http.ResponseWriter, r *http.Request) {
	limit, offset, err := seedPage(r)
	if err != nil {
		s.detail(w, r, http.StatusUnprocessableEntity, err.Error())
		return
	}
	var page []requirements.Version
	var total int
	p := pool.New().WithErrors().WithContext(r.Context())
	p.Go(func(ctx context.Context) error {
		vs, err := s.cfg.Requirements.ListVersions(ctx)
		if err != nil {
			return err
		}
		vs = vs[min(offset, len(vs)):]
		page, err = s.loadVersions(ctx, vs[:min(limit, len(vs))])
		return err
	})
	p.Go(func(ctx context.Context) error {
		vs, err := s.cfg.Requirements.ListVersions(ctx)
		total = len(vs) // no version is archived
		return err
	})
	if err := p.Wait(); err != nil {
		s.internalError(w, r, "list requirements", err)
		return
	}
	out := make([]*requirements.Object, 0, len(page))
	for _, v := range page {
		out = append(out, seedRequirement(v))
	}
	w.Header().Set(TotalCountHeader, strconv.Itoa(total))
	s.writeJSON(w, r, http.StatusOK, out)
}

// seedWSRequest is one message a /ws/requirements client sends.
type seedWSRequest struct {
	Type   string                     `json:"type"`
	Filter map[string]json.RawMessage `json:"filter"`
}

// seedWSAnswer is one message the server sends: requirements_data with Data, or error with
// Detail. Data is a pointer so that requirements_data always carries "data" — [] when nothing
// matched, as the seed sends (a client reads msg["data"]) — and an error carries none.
type seedWSAnswer struct {
	Type   string                  `json:"type"`
	Data   *[]*requirements.Object `json:"data,omitempty"`
	Detail string                  `json:"detail,omitempty"`
}

// seedWS handles the WebSocket /ws/requirements: for every {"type":"get_requirements",
// "filter":{…}} the client sends, it answers {"type":"requirements_data","data":[…]}, for as
// long as the socket is open. A bad message answers {"type":"error","detail":…} and the socket
// stays open; so does a request over the token's feeds rate. A message over maxSeedWSMessage
// closes it (1009); the server closes with 1001 when it shuts down. The socket holds one of
// the token's feed slots (the feeds limit), and its opening counts against the feeds rate.
func (s *Server) seedWS(w http.ResponseWriter, r *http.Request) {
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{WSBearerSubprotocol}})
	if err != nil {
		return // Accept answered the client
	}
	defer conn.CloseNow()
	conn.SetReadLimit(maxSeedWSMessage)
	name, _ := Principal(r.Context())
	ctx, cancel := s.streamContext(r)
	defer cancel()
	// Reads use their own context: cancelling a read closes the connection without a close
	// frame, so shutdown is signalled by closing the connection instead.
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			select {
			case <-s.stopStreams:
				_ = conn.Close(websocket.StatusGoingAway, "server shutting down")
			default:
				_ = conn.CloseNow()
			}
		case <-done:
		}
	}()
	for {
		typ, msg, err := conn.Read(context.Background())
		if err != nil {
			return // closed by the client, by a too-large message or at shutdown
		}
		ans := s.seedAnswer(ctx, name, typ, msg)
		// Not under ctx: the library closes the connection, with no close frame, when a write's
		// context ends, and a shutdown that ended ctx just as a write finished could do that
		// before the goroutine above sends 1001. The write waits at most seedWSWriteTimeout.
		wctx, wcancel := context.WithTimeout(context.Background(), seedWSWriteTimeout)
		b, err := json.Marshal(ans)
		if err == nil {
			err = conn.Write(wctx, websocket.MessageText, b)
		}
		wcancel()
		if err != nil {
			return
		}
	}
}

// seedAnswer answers one client message.
func (s *Server) seedAnswer(ctx context.Context, principal string, typ websocket.MessageType, msg []byte) seedWSAnswer {
	fail := func(format string, args ...any) seedWSAnswer {
		return seedWSAnswer{Type: "error", Detail: fmt.Sprintf(format, args...)}
	}
	if ok, wait := s.limits.allow(principal, classFeeds); !ok {
		s.metrics.rejected.WithLabelValues("rate").Inc()
		return fail("too many requests on this token; retry after %s seconds", retryAfter(wait))
	}
	if typ != websocket.MessageText {
		return fail("messages must be JSON text")
	}
	var req seedWSRequest
	if err := json.Unmarshal(msg, &req); err != nil {
		return fail("the message is not a JSON object: %v", err)
	}
	if req.Type != "get_requirements" {
		return fail("unknown message type %q; the only type is get_requirements", req.Type)
	}
	f, err := parseSeedFilter(req.Filter)
	if err != nil {
		return fail("%v", err)
	}
	data, err := s.seedQuery(ctx, f)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("get_requirements failed", "err", err)
		}
		return fail("reading requirements failed")
	}
	if data == nil {
		data = []*requirements.Object{}
	}
	return seedWSAnswer{Type: "requirements_data", Data: &data}
}

// seedFilterFields are the fields get_requirements can filter on, and whether each is
// numeric (id, version_id) or a boolean (archived); the rest are strings.
var seedFilterFields = map[string]string{
	"id": "int", "version_id": "int", "archived": "bool",
	"author": "string", "timestamp": "string", "checksum": "string",
	"title": "string", "version": "string", "description": "string",
}

// seedCond is one filter condition: field equals (or with ne, differs from) value.
type seedCond struct {
	field string
	ne    bool
	value any // int64, bool or string
}

// parseSeedFilter reads a get_requirements filter: {"field": value} (equality) or
// {"field": {"$ne": value}} on the fields of seedFilterFields; every other operator or field
// is an error meant for the client.
func parseSeedFilter(raw map[string]json.RawMessage) ([]seedCond, error) {
	fields := make([]string, 0, len(raw))
	for k := range raw {
		fields = append(fields, k)
	}
	slices.Sort(fields)
	var out []seedCond
	for _, field := range fields {
		kind, ok := seedFilterFields[field]
		if !ok {
			names := make([]string, 0, len(seedFilterFields))
			for k := range seedFilterFields {
				names = append(names, k)
			}
			slices.Sort(names)
			return nil, fmt.Errorf("filter: field %q cannot be filtered (fields: %s)", field, strings.Join(names, ", "))
		}
		c := seedCond{field: field}
		val := raw[field]
		var op map[string]json.RawMessage
		if json.Unmarshal(val, &op) == nil && op != nil {
			if len(op) != 1 || op["$ne"] == nil {
				for k := range op {
					if k != "$ne" {
						return nil, fmt.Errorf("filter: operator %q on %q is not supported (only equality and $ne)", k, field)
					}
				}
				return nil, fmt.Errorf("filter: %q needs exactly one operator", field)
			}
			c.ne, val = true, op["$ne"]
		}
		var err error
		switch kind {
		case "int":
			var n int64
			err = json.Unmarshal(val, &n)
			c.value = n
		case "bool":
			var b bool
			err = json.Unmarshal(val, &b)
			c.value = b
		default:
			var s string
			err = json.Unmarshal(val, &s)
			c.value = s
		}
		if err != nil {
			return nil, fmt.Errorf("filter: %q needs a %s value", field, kind)
		}
		out = append(out, c)
	}
	return out, nil
}

// seedField is the value of field in v, as parseSeedFilter types it.
func seedField(v requirements.Version, field string) any {
	switch field {
	case "id", "version_id":
		return v.VersionID
	case "archived":
		return false
	case "author":
		return v.Author
	case "timestamp":
		return v.Timestamp
	case "checksum":
		return v.Checksum
	}
	if v.Document == nil {
		return ""
	}
	s, _ := v.Document.GetString(field)
	return s
}

// seedInfoField is field's value in a versions-list row, or false for a field the row lacks.
func seedInfoField(in requirements.VersionInfo, field string) (any, bool) {
	switch field {
	case "id", "version_id", "archived", "author", "timestamp", "checksum":
		return seedField(requirements.Version{VersionID: in.VersionID, Author: in.Author, Timestamp: in.Timestamp, Checksum: in.Checksum}, field), true
	}
	return nil, false
}

func (c seedCond) match(got any) bool { return (got == c.value) != c.ne }

// seedQuery returns the requirements matching every condition, newest first, at most
// maxSeedWSResults. Conditions on the versions list's fields are applied before any document
// is read; an id equality reads that one version only.
func (s *Server) seedQuery(ctx context.Context, conds []seedCond) ([]*requirements.Object, error) {
	var infos []requirements.VersionInfo
	for _, c := range conds {
		if (c.field == "id" || c.field == "version_id") && !c.ne {
			v, err := s.cfg.Requirements.GetVersion(ctx, c.value.(int64))
			if errors.Is(err, requirements.ErrNotFound) {
				return []*requirements.Object{}, nil
			}
			if err != nil {
				return nil, err
			}
			infos = []requirements.VersionInfo{{VersionID: v.VersionID, Author: v.Author, Timestamp: v.Timestamp, Checksum: v.Checksum}}
			break
		}
	}
	if infos == nil {
		var err error
		if infos, err = s.cfg.Requirements.ListVersions(ctx); err != nil {
			return nil, err
		}
	}
	var docConds []seedCond
	for _, c := range conds {
		if _, ok := seedInfoField(requirements.VersionInfo{}, c.field); !ok {
			docConds = append(docConds, c)
		}
	}
	kept := infos[:0:0]
	for _, in := range infos {
		ok := true
		for _, c := range conds {
			if got, known := seedInfoField(in, c.field); known && !c.match(got) {
				ok = false
				break
			}
		}
		if ok {
			kept = append(kept, in)
		}
	}
	out := []*requirements.Object{}
	// Documents are read a page at a time so a filter that matches few of many versions stops
	// reading once it has maxSeedWSResults.
	for len(kept) > 0 && len(out) < maxSeedWSResults {
		n := min(len(kept), maxSeedWSResults)
		vs, err := s.loadVersions(ctx, kept[:n])
		if err != nil {
			return nil, err
		}
		kept = kept[n:]
		for _, v := range vs {
			ok := true
			for _, c := range docConds {
				if !c.match(seedField(v, c.field)) {
					ok = false
					break
				}
			}
			if ok && len(out) < maxSeedWSResults {
				out = append(out, seedRequirement(v))
			}
		}
	}
	return out, nil
}
