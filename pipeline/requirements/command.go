package requirements

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/schemas"
)

// CommandType names a command; it is the "type" field of a sluice.command.v1 message.
type CommandType string

// The four command types.
const (
	// TypeSubmitRequirements stores a new immutable requirements version.
	TypeSubmitRequirements CommandType = "submit_requirements"
	// TypeSubmitFeatureRequest stores a new pending feature request.
	TypeSubmitFeatureRequest CommandType = "submit_feature_request"
	// TypeDecideFeatureRequest approves or rejects a pending feature request.
	TypeDecideFeatureRequest CommandType = "decide_feature_request"
	// TypeTransitionFeatureRequest moves a feature request to in_progress, completed or
	// cancelled.
	TypeTransitionFeatureRequest CommandType = "transition_feature_request"
)

// Decision actions.
const (
	ActionApprove = "approve"
	ActionReject  = "reject"
)

// RequirementsKey is the subject key of every SubmitRequirements command: versions are few,
// and one key keeps their version ids strictly increasing in publish order.
const RequirementsKey = "requirements"

var requestIDPattern = regexp.MustCompile(`^FR-[0-9]{3,20}$`)

// RequestIDs makes feature-request ids in the Python service's format: "FR-", 13 digits of
// Unix milliseconds and 4 more digits. The Python service draws those 4 at random, so two
// submissions in one millisecond collide once in 10,000: under 1,000 clients (≈250
// submissions a second) about one in 15,000 was refused as "already exists" (issue 12). Here
// they count up within the millisecond from a random start below 5,000, and a millisecond
// whose ids are used up borrows the next: the ids of one RequestIDs never repeat and keep
// increasing. (Several API processes still draw their starting points at random.) The zero
// value is ready to use; safe for concurrent use.
type RequestIDs struct {
	mu sync.Mutex // guards ms and n, the last id made
	ms int64
	n  int
}

// Next returns a new id for a request made at now.
func (g *RequestIDs) Next(now time.Time) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	ms := max(now.UnixMilli(), g.ms)
	switch {
	case ms != g.ms:
		g.ms, g.n = ms, rand.IntN(5000)
	case g.n < 9999:
		g.n++
	default:
		g.ms, g.n = ms+1, 0
	}
	return fmt.Sprintf("FR-%013d%04d", g.ms, g.n)
}

// Command is one mutation. On the wire it is one flat JSON object (schema sluice.command.v1):
// the header fields type, command_id, actor and issued_at beside the fields of the body that
// Type selects. Exactly the body matching Type is non-nil.
type Command struct {
	Type CommandType
	// CommandID identifies the command (1-128 of A-Z a-z 0-9 _ -), chosen by the API. Apply
	// markers are keyed by it as well as by the message id.
	CommandID string
	// Actor is the name of the API token that issued the command; never taken from a request
	// body. It becomes approved_by, metadata.author and the audit entry's admin, so it
	// matches ^[a-zA-Z0-9._-]{1,100}$.
	Actor string
	// IssuedAt is when the API accepted the command. Apply uses it for every timestamp it
	// writes, so applying a command twice gives the same result.
	IssuedAt time.Time

	SubmitRequirements   *SubmitRequirements
	SubmitFeatureRequest *SubmitFeatureRequest
	Decide               *DecideFeatureRequest
	Transition           *TransitionFeatureRequest
}

// SubmitRequirements is the body of a TypeSubmitRequirements command: the Python submission
// body. Requirements, stakeholders and acceptance criteria keep their key order, which the
// stored document's checksum depends on.
type SubmitRequirements struct {
	Title       string `json:"title"`
	Version     string `json:"version"`
	Description string `json:"description"`
	// Requirements is {functional:[…], non_functional:[…], constraints?, assumptions?}.
	Requirements       *Object   `json:"requirements"`
	Stakeholders       []*Object `json:"stakeholders,omitempty"`
	AcceptanceCriteria []*Object `json:"acceptance_criteria,omitempty"`
	// Author is the body's free-text author, stored as the document's top-level "author".
	Author string `json:"author"`
}

// SubmitFeatureRequest is the body of a TypeSubmitFeatureRequest command. RequestID is
// assigned by the API (RequestIDs). Category … Tags are validated and, as in Python, not
// stored.
type SubmitFeatureRequest struct {
	RequestID          string   `json:"request_id"`
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

// DecideFeatureRequest is the body of a TypeDecideFeatureRequest command.
type DecideFeatureRequest struct {
	RequestID string `json:"request_id"`
	// Action is ActionApprove or ActionReject.
	Action string  `json:"action"`
	Reason *string `json:"reason,omitempty"`
	// ExpectedVersion, when set, must equal the request's Version or the command is refused
	// as stale.
	ExpectedVersion *int64 `json:"expected_version,omitempty"`
}

// TransitionFeatureRequest is the body of a TypeTransitionFeatureRequest command.
type TransitionFeatureRequest struct {
	RequestID string `json:"request_id"`
	// To is StatusInProgress, StatusCompleted or StatusCancelled.
	To              Status  `json:"to"`
	Reason          *string `json:"reason,omitempty"`
	ExpectedVersion *int64  `json:"expected_version,omitempty"`
}

// Key returns the aggregate key the command is published and ordered under: the request id
// of a feature-request command, RequirementsKey for a requirements submission, "" when the
// body is missing.
func (c Command) Key() string {
	switch {
	case c.Type == TypeSubmitRequirements && c.SubmitRequirements != nil:
		return RequirementsKey
	case c.Type == TypeSubmitFeatureRequest && c.SubmitFeatureRequest != nil:
		return c.SubmitFeatureRequest.RequestID
	case c.Type == TypeDecideFeatureRequest && c.Decide != nil:
		return c.Decide.RequestID
	case c.Type == TypeTransitionFeatureRequest && c.Transition != nil:
		return c.Transition.RequestID
	}
	return ""
}

// Subject returns the JetStream subject of the command: sluice.v1.requirements.requirements
// or sluice.v1.features.{request_id}.
func (c Command) Subject() string {
	if c.Type == TypeSubmitRequirements {
		return schemas.RequirementSubject(RequirementsKey)
	}
	return schemas.FeatureSubject(c.Key())
}

type commandHeader struct {
	Type      CommandType `json:"type"`
	CommandID string      `json:"command_id"`
	Actor     string      `json:"actor"`
	IssuedAt  string      `json:"issued_at"`
}

func (c Command) body() (any, error) {
	var body any
	switch c.Type {
	case TypeSubmitRequirements:
		if c.SubmitRequirements != nil {
			body = c.SubmitRequirements
		}
	case TypeSubmitFeatureRequest:
		if c.SubmitFeatureRequest != nil {
			body = c.SubmitFeatureRequest
		}
	case TypeDecideFeatureRequest:
		if c.Decide != nil {
			body = c.Decide
		}
	case TypeTransitionFeatureRequest:
		if c.Transition != nil {
			body = c.Transition
		}
	default:
		return nil, fmt.Errorf("unknown command type %q", c.Type)
	}
	if body == nil {
		return nil, fmt.Errorf("command type %q without its body", c.Type)
	}
	return body, nil
}

// MarshalJSON encodes c as one flat sluice.command.v1 object. It fails for an unknown Type or
// a missing body.
func (c Command) MarshalJSON() ([]byte, error) {
	body, err := c.body()
	if err != nil {
		return nil, fmt.Errorf("encode command %s: %w", c.CommandID, err)
	}
	h, err := json.Marshal(commandHeader{c.Type, c.CommandID, c.Actor, c.IssuedAt.UTC().Format(time.RFC3339Nano)})
	if err != nil {
		return nil, fmt.Errorf("encode command %s: %w", c.CommandID, err)
	}
	b, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encode command %s: %w", c.CommandID, err)
	}
	if len(b) <= 2 { // "{}"
		return h, nil
	}
	out := make([]byte, 0, len(h)+len(b))
	out = append(out, h[:len(h)-1]...)
	out = append(out, ',')
	return append(out, b[1:]...), nil
}

// UnmarshalJSON decodes a flat sluice.command.v1 object. It checks only the shape Go needs
// (a known type, an RFC 3339 issued_at); Validator.DecodeCommand validates everything.
func (c *Command) UnmarshalJSON(b []byte) error {
	var h commandHeader
	if err := json.Unmarshal(b, &h); err != nil {
		return fmt.Errorf("decode command: %w", err)
	}
	at, err := time.Parse(time.RFC3339Nano, h.IssuedAt)
	if err != nil {
		return fmt.Errorf("decode command %s: issued_at: %w", h.CommandID, err)
	}
	out := Command{Type: h.Type, CommandID: h.CommandID, Actor: h.Actor, IssuedAt: at}
	var target any
	switch h.Type {
	case TypeSubmitRequirements:
		out.SubmitRequirements = &SubmitRequirements{}
		target = out.SubmitRequirements
	case TypeSubmitFeatureRequest:
		out.SubmitFeatureRequest = &SubmitFeatureRequest{}
		target = out.SubmitFeatureRequest
	case TypeDecideFeatureRequest:
		out.Decide = &DecideFeatureRequest{}
		target = out.Decide
	case TypeTransitionFeatureRequest:
		out.Transition = &TransitionFeatureRequest{}
		target = out.Transition
	default:
		return fmt.Errorf("decode command %s: unknown type %q", h.CommandID, h.Type)
	}
	if err := json.Unmarshal(b, target); err != nil {
		return fmt.Errorf("decode command %s: %w", h.CommandID, err)
	}
	*c = out
	return nil
}

// Validator validates commands against schema sluice.command.v1 and the rules JSON Schema
// cannot express. It is immutable after NewValidator and safe for concurrent use.
type Validator struct {
	schemas *schemas.Validator
}

// NewValidator compiles the embedded schemas. An error means a schema file is broken.
func NewValidator() (*Validator, error) {
	v, err := schemas.NewValidator()
	if err != nil {
		return nil, fmt.Errorf("requirements: compile schemas: %w", err)
	}
	return &Validator{schemas: v}, nil
}

// Schemas returns the underlying schema validator, for validating stored records
// (schemas.Requirements, schemas.FeatureRequest), as /api/validate/schema does.
func (v *Validator) Schemas() *schemas.Validator { return v.schemas }

// DecodeCommand validates raw, one message payload, and decodes it. An invalid payload gives
// an error marked fault.Permanent with class fault.Validation that wraps a
// *schemas.ValidationError (schema problems) or a *Refusal with code RefusalInvalid (rules
// checked in Go); the same bytes can never become valid. It does not block.
func (v *Validator) DecodeCommand(raw []byte) (Command, error) {
	if err := v.schemas.Validate(schemas.Command, raw); err != nil {
		return Command{}, fault.Permanent(fault.Validation, fmt.Errorf("decode command: %w", err))
	}
	var c Command
	if err := json.Unmarshal(raw, &c); err != nil {
		// The schema accepted it: a drift between schema and Go types.
		return Command{}, fault.Permanent(fault.Validation, err)
	}
	if err := checkRules(c); err != nil {
		return Command{}, fault.Permanent(fault.Validation, fmt.Errorf("decode command %s: %w", c.CommandID, err))
	}
	return c, nil
}

// Check validates c as DecodeCommand would validate its encoding. It returns nil or a
// *Refusal with code RefusalInvalid whose message lists the problems. It does not block.
func (v *Validator) Check(c Command) error {
	raw, err := json.Marshal(c)
	if err != nil {
		return &Refusal{Code: RefusalInvalid, Message: err.Error()}
	}
	if err := v.schemas.Validate(schemas.Command, raw); err != nil {
		var ve *schemas.ValidationError
		if errors.As(err, &ve) {
			return &Refusal{Code: RefusalInvalid, Message: strings.Join(ve.Problems, "; ")}
		}
		return &Refusal{Code: RefusalInvalid, Message: err.Error()}
	}
	return checkRules(c)
}

// checkRules checks what sluice.command.v1 cannot express: requirement ids are unique within
// one version (dependencies and graph nodes refer to them).
func checkRules(c Command) error {
	if c.Type != TypeSubmitRequirements || c.SubmitRequirements == nil {
		return nil
	}
	seen := map[string]bool{}
	var problems []string
	for _, list := range []string{"functional", "non_functional"} {
		items, _ := c.SubmitRequirements.Requirements.Get(list)
		arr, _ := items.([]any)
		for i, it := range arr {
			o, _ := it.(*Object)
			id, _ := o.GetString("id")
			if seen[id] {
				problems = append(problems, fmt.Sprintf("%q: requirement id %q is not unique", fmt.Sprintf("/requirements/%s/%d/id", list, i), id))
			}
			seen[id] = true
		}
	}
	if len(problems) > 0 {
		return &Refusal{Code: RefusalInvalid, Message: strings.Join(problems, "; ")}
	}
	return nil
}
