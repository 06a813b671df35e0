package jetstream

// Reconciling what exists with what Sluice needs and what the operator owns (issue 15).
//
// Every stream, consumer and bucket has two kinds of settings. Sluice NEEDS some to work at all
// or to keep its guarantees (subjects, Limits retention, DiscardNew where nothing unprocessed
// may be dropped, a long enough duplicate window, atomic publish, direct gets, explicit acks,
// filter subjects, one graph batch at a time, the command consumers' pinned priority group).
// The OPERATOR owns the rest: replicas, placement, max bytes, max age, and the consumers'
// AckWait, MaxDeliver and MaxAckPending where Sluice does not fix them. Mode says what may
// change on the broker: ModeProvision (`sluice provision`) sets both; ModeMissing (every other
// command, by default) creates what is missing and changes nothing that exists, reporting a
// conflict with a need; ModeOff only looks up.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Mode says what Provision, ProvisionCommands and ProvisionAdvisories may create or change.
type Mode string

const (
	// ModeMissing creates what is missing, with the configured settings, and never changes
	// what exists: an existing setting that conflicts with what Sluice needs is reported
	// (Conflict), and fails the call when Sluice cannot work with it (Conflict.Fatal). One
	// exception keeps per-key command order: a command consumer of an earlier version (one
	// command at a time, no priority group) is upgraded in place. The zero Mode means
	// ModeMissing.
	ModeMissing Mode = "missing"
	// ModeOff creates and changes nothing; it only looks up, so it needs no stream or
	// consumer create, update or delete permission. Anything missing fails with a
	// *MissingError naming each one.
	ModeOff Mode = "off"
	// ModeProvision creates what is missing and updates what exists: what Sluice needs is
	// set, and of the operator's Settings only those given; every other setting is kept.
	// A need NATS cannot change in place (retention, storage, ack policy) fails with an error
	// saying so.
	ModeProvision Mode = "provision"
)

// ParseMode returns the Mode named s ("missing", "off" or "provision"; "" is "missing").
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case "", ModeMissing:
		return ModeMissing, nil
	case ModeOff, ModeProvision:
		return m, nil
	}
	return "", fmt.Errorf("provision mode %q: want missing or off (sluice provision provisions)", s)
}

// Conflict is an existing setting that differs from what Sluice needs.
type Conflict struct {
	// Object is what holds the setting: "stream SLUICE_CHUNKS", "consumer SLUICE_GRAPH/sluice-graph".
	Object string `json:"object"`
	// Setting is the setting's name as in NATS's configuration: "retention", "duplicate_window"...
	Setting string `json:"setting"`
	// Have is the existing value, Want what Sluice needs.
	Have string `json:"have"`
	Want string `json:"want"`
	// Why says what goes wrong with Have.
	Why string `json:"why"`
	// Fatal is set when Sluice cannot work with Have: ModeMissing and ModeOff fail.
	Fatal bool `json:"fatal"`
	// Fixed is set when ModeProvision changed the setting to Want.
	Fixed bool `json:"fixed"`
}

func (c Conflict) String() string {
	s := fmt.Sprintf("%s: %s is %s, Sluice needs %s: %s", c.Object, c.Setting, c.Have, c.Want, c.Why)
	switch {
	case c.Fixed:
		s += " (fixed)"
	case c.Fatal:
		s += " (cannot run; run `sluice provision`)"
	}
	return s
}

// Verb is what provisioning did with one stream, consumer or bucket.
type Verb string

// What provisioning did with one object.
const (
	Created Verb = "created"
	Updated Verb = "updated"
	// Kept is an object that existed and was not changed.
	Kept Verb = "kept"
)

// Action is what provisioning did with one object.
type Action struct {
	// Object is "stream NAME", "consumer STREAM/NAME" or "bucket NAME".
	Object string `json:"object"`
	Verb   Verb   `json:"verb"`
	// Changes lists an update's changed settings ("max_bytes: 8589934592 -> 21474836480").
	Changes []string `json:"changes,omitempty"`
}

// Report is what one provisioning call did, and the conflicts it found. Callers log it.
type Report struct {
	Actions   []Action   `json:"actions"`
	Conflicts []Conflict `json:"conflicts"`
}

func (r *Report) add(o Report) {
	r.Actions = append(r.Actions, o.Actions...)
	r.Conflicts = append(r.Conflicts, o.Conflicts...)
}

// MissingError is returned in ModeOff when streams, consumers or buckets do not exist.
type MissingError struct {
	// Missing names each one ("stream SLUICE_CHUNKS").
	Missing []string
}

func (e *MissingError) Error() string {
	return "not provisioned on the broker (--provision off creates nothing): " + strings.Join(e.Missing, ", ") +
		"; run `sluice provision` with stream-admin permission (the sluice-operator role) first"
}

// ConflictError is returned when existing settings conflict with what Sluice needs in a way it
// cannot work with (Conflict.Fatal).
type ConflictError struct {
	Conflicts []Conflict
}

func (e *ConflictError) Error() string {
	parts := make([]string, len(e.Conflicts))
	for i, c := range e.Conflicts {
		parts[i] = c.String()
	}
	return "existing settings Sluice cannot work with: " + strings.Join(parts, "; ")
}

// Settings are what the operator owns. The settings given are used for what provisioning
// creates and, in ModeProvision, set on what exists; a setting not given keeps its value.
type Settings struct {
	// Replicas of every stream and bucket. Optional; 0 means not given (1 when creating).
	Replicas int
	// Placement of every stream and bucket. Optional.
	Placement *jetstream.Placement
	// Streams holds settings of one stream or bucket stream (KV_sluice_jobs,
	// OBJ_sluice_dlq_payloads) by name, over Replicas and Placement. Optional.
	Streams map[string]StreamSettings
	// Consumers holds consumer sizes by durable name; ConsumerCommandsPrefix+"*" names every
	// command partition. Optional.
	Consumers map[string]ConsumerSettings
}

// StreamSettings are the settings of one stream the operator owns. Nil or zero means not given.
type StreamSettings struct {
	// Replicas: 1 to 5.
	Replicas int
	// MaxBytes: -1 for no limit, else positive.
	MaxBytes *int64
	// MaxAge: 0 for no limit, else positive.
	MaxAge    *time.Duration
	Placement *jetstream.Placement
}

// ConsumerSettings are the sizes of one durable consumer the operator owns. Nil means not given.
type ConsumerSettings struct {
	AckWait    *time.Duration
	MaxDeliver *int
	// MaxAckPending: not for ConsumerGraph (1: graph batches in order) nor the command
	// partitions (CommandBatch), whose values Sluice needs.
	MaxAckPending *int
}

// MaxReplicas is the most replicas NATS allows a stream.
const MaxReplicas = 5

// ConsumerCommandsAll is the Settings.Consumers key of every command partition consumer.
const ConsumerCommandsAll = ConsumerCommandsPrefix + "*"

// Validate reports every problem in s at once: an unknown stream or consumer name, a value out
// of range, a size Sluice needs set.
func (s Settings) Validate() error {
	var errs []error
	checkStream := func(where string, ss StreamSettings) {
		if ss.Replicas < 0 || ss.Replicas > MaxReplicas {
			errs = append(errs, fmt.Errorf("%sreplicas %d: want 1 to %d", where, ss.Replicas, MaxReplicas))
		}
		if ss.MaxBytes != nil && (*ss.MaxBytes == 0 || *ss.MaxBytes < -1) {
			errs = append(errs, fmt.Errorf("%smax bytes %d: want -1 (no limit) or a positive size", where, *ss.MaxBytes))
		}
		if ss.MaxAge != nil && *ss.MaxAge < 0 {
			errs = append(errs, fmt.Errorf("%smax age %s: want 0 (no limit) or a positive duration", where, *ss.MaxAge))
		}
		if ss.Placement != nil && ss.Placement.Cluster == "" && len(ss.Placement.Tags) == 0 {
			errs = append(errs, fmt.Errorf("%splacement names neither a cluster nor tags", where))
		}
	}
	checkStream("", StreamSettings{Replicas: s.Replicas, Placement: s.Placement})
	for name, ss := range s.Streams {
		if !slices.Contains(KnownStreams(), name) {
			errs = append(errs, fmt.Errorf("stream %q: not one of Sluice's (%s)", name, strings.Join(KnownStreams(), ", ")))
		}
		checkStream("stream "+name+": ", ss)
	}
	for name, cs := range s.Consumers {
		switch name {
		case ConsumerChunks, ConsumerJobs, ConsumerGraph, ConsumerCommandsAll, ConsumerAdvisories:
		default:
			errs = append(errs, fmt.Errorf("consumer %q: not one of Sluice's (%s, %s, %s, %s, %s)", name,
				ConsumerChunks, ConsumerJobs, ConsumerGraph, ConsumerCommandsAll, ConsumerAdvisories))
		}
		if cs.AckWait != nil && *cs.AckWait < time.Second {
			errs = append(errs, fmt.Errorf("consumer %s: ack wait %s: want at least 1s (workers extend it every third)", name, *cs.AckWait))
		}
		if cs.MaxDeliver != nil && *cs.MaxDeliver < 1 {
			errs = append(errs, fmt.Errorf("consumer %s: max deliver %d: want at least 1 (the pipeline dead-letters at it)", name, *cs.MaxDeliver))
		}
		if cs.MaxAckPending != nil {
			switch {
			case name == ConsumerGraph || name == ConsumerCommandsAll:
				errs = append(errs, fmt.Errorf("consumer %s: max ack pending is Sluice's, not settable (it keeps their order)", name))
			case *cs.MaxAckPending < 1:
				errs = append(errs, fmt.Errorf("consumer %s: max ack pending %d: want at least 1", name, *cs.MaxAckPending))
			}
		}
	}
	return errors.Join(errs...)
}

// KnownStreams lists the streams provisioning owns, buckets' streams included: the names
// Settings.Streams accepts.
func KnownStreams() []string {
	return []string{"SLUICE_CHUNKS", "SLUICE_JOBS", StreamGraph, "SLUICE_DLQ", StreamCommands, StreamEvents,
		StreamAdvisories, "KV_" + BucketJobs, "OBJ_sluice_dlq_payloads"}
}

// stream returns the settings of stream name: its own over the shared ones.
func (s Settings) stream(name string) StreamSettings {
	ss := s.Streams[name]
	if ss.Replicas == 0 {
		ss.Replicas = s.Replicas
	}
	if ss.Placement == nil {
		ss.Placement = s.Placement
	}
	return ss
}

// consumer returns the settings of durable consumer name.
func (s Settings) consumer(name string) ConsumerSettings {
	if strings.HasPrefix(name, ConsumerCommandsPrefix) {
		return s.Consumers[ConsumerCommandsAll]
	}
	return s.Consumers[name]
}

// changes records setting changes as "name: old -> new".
type changes []string

func set[T comparable](ch *changes, name string, field *T, v T) {
	if *field != v {
		*ch = append(*ch, fmt.Sprintf("%s: %v -> %v", name, *field, v))
		*field = v
	}
}

func (s StreamSettings) apply(cfg *jetstream.StreamConfig) changes {
	var ch changes
	if s.Replicas > 0 {
		set(&ch, "replicas", &cfg.Replicas, s.Replicas)
	}
	if s.MaxBytes != nil {
		set(&ch, "max_bytes", &cfg.MaxBytes, *s.MaxBytes)
	}
	if s.MaxAge != nil {
		set(&ch, "max_age", &cfg.MaxAge, *s.MaxAge)
	}
	if s.Placement != nil && !samePlacement(cfg.Placement, s.Placement) {
		ch = append(ch, fmt.Sprintf("placement: %s -> %s", placementString(cfg.Placement), placementString(s.Placement)))
		p := *s.Placement
		cfg.Placement = &p
	}
	return ch
}

func (s ConsumerSettings) apply(cfg *jetstream.ConsumerConfig) changes {
	var ch changes
	if s.AckWait != nil {
		set(&ch, "ack_wait", &cfg.AckWait, *s.AckWait)
	}
	if s.MaxDeliver != nil {
		set(&ch, "max_deliver", &cfg.MaxDeliver, *s.MaxDeliver)
	}
	if s.MaxAckPending != nil {
		set(&ch, "max_ack_pending", &cfg.MaxAckPending, *s.MaxAckPending)
	}
	return ch
}

func samePlacement(a, b *jetstream.Placement) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Cluster == b.Cluster && slices.Equal(a.Tags, b.Tags)
}

func placementString(p *jetstream.Placement) string {
	if p == nil {
		return "none"
	}
	return fmt.Sprintf("cluster=%q tags=%q", p.Cluster, p.Tags)
}

// streamNeeds is what Sluice needs of one stream.
type streamNeeds struct {
	// subjects must all be among the stream's subjects.
	subjects []string
	// transform, when set, must be the stream's subject transform.
	transform *jetstream.SubjectTransformConfig
	retention jetstream.RetentionPolicy
	// discardNew: at its limits the stream must refuse new messages rather than drop old,
	// possibly unprocessed ones.
	discardNew bool
	// minDuplicates is the shortest duplicate window Sluice works with.
	minDuplicates time.Duration
	// atomic: Sluice publishes atomic batches to it. direct: Sluice reads it with direct gets.
	atomic, direct bool
}

// check reports the conflicts of cfg with n and fixes them in cfg, recording the changes.
func (n streamNeeds) check(cfg *jetstream.StreamConfig) ([]Conflict, changes) {
	var cs []Conflict
	var ch changes
	obj := "stream " + cfg.Name
	var missing []string
	for _, s := range n.subjects {
		if !slices.Contains(cfg.Subjects, s) {
			missing = append(missing, s)
		}
	}
	if len(missing) > 0 {
		cs = append(cs, Conflict{Object: obj, Setting: "subjects", Have: fmt.Sprintf("%q", cfg.Subjects), Want: fmt.Sprintf("%q", n.subjects),
			Why: fmt.Sprintf("messages on %q are not stored (or not where Sluice reads them)", missing), Fatal: true})
		ch = append(ch, fmt.Sprintf("subjects: %q -> %q", cfg.Subjects, append(slices.Clone(cfg.Subjects), missing...)))
		cfg.Subjects = append(cfg.Subjects, missing...)
	}
	if n.transform != nil && (cfg.SubjectTransform == nil || *cfg.SubjectTransform != *n.transform) {
		have := "none"
		if cfg.SubjectTransform != nil {
			have = fmt.Sprintf("%s -> %s", cfg.SubjectTransform.Source, cfg.SubjectTransform.Destination)
		}
		cs = append(cs, Conflict{Object: obj, Setting: "subject_transform", Have: have,
			Want: n.transform.Source + " -> " + n.transform.Destination,
			Why:  "commands are not stored under the partition their consumers read", Fatal: true})
		ch = append(ch, "subject_transform: "+have+" -> "+n.transform.Destination)
		t := *n.transform
		cfg.SubjectTransform = &t
	}
	if cfg.Retention != n.retention {
		why := "every ack is its own synced delete (throughput falls to the disk's fsync rate), and a message's original may be gone before its dead letter is captured"
		if n.retention == jetstream.WorkQueuePolicy {
			why = "captured advisories are never deleted, and the stream fills up to its limits"
		}
		cs = append(cs, Conflict{Object: obj, Setting: "retention", Have: cfg.Retention.String(), Want: n.retention.String(), Why: why})
		ch = append(ch, fmt.Sprintf("retention: %s -> %s", cfg.Retention, n.retention))
		cfg.Retention = n.retention
	}
	if n.discardNew && cfg.Discard != jetstream.DiscardNew {
		cs = append(cs, Conflict{Object: obj, Setting: "discard", Have: cfg.Discard.String(), Want: jetstream.DiscardNew.String(),
			Why: "at its size limit the stream drops its oldest messages, unprocessed ones too, instead of refusing publishers"})
		set(&ch, "discard", &cfg.Discard, jetstream.DiscardNew)
	}
	if cfg.Duplicates < n.minDuplicates {
		cs = append(cs, Conflict{Object: obj, Setting: "duplicate_window", Have: cfg.Duplicates.String(), Want: "at least " + n.minDuplicates.String(),
			Why: "a message published again after a lost answer is stored twice (and written twice: harmless, not free)"})
		set(&ch, "duplicate_window", &cfg.Duplicates, n.minDuplicates)
	}
	if n.atomic && !cfg.AllowAtomicPublish {
		cs = append(cs, Conflict{Object: obj, Setting: "allow_atomic", Have: "false", Want: "true",
			Why: "Sluice publishes atomic batches to it: every one is refused", Fatal: true})
		set(&ch, "allow_atomic", &cfg.AllowAtomicPublish, true)
	}
	if n.direct && !cfg.AllowDirect {
		cs = append(cs, Conflict{Object: obj, Setting: "allow_direct", Have: "false", Want: "true",
			Why: "Sluice reads it with direct gets: listing and fetching fail", Fatal: true})
		set(&ch, "allow_direct", &cfg.AllowDirect, true)
	}
	if cfg.Storage != jetstream.FileStorage {
		cs = append(cs, Conflict{Object: obj, Setting: "storage", Have: cfg.Storage.String(), Want: jetstream.FileStorage.String(),
			Why: "acknowledged messages are lost when the server restarts"})
		ch = append(ch, fmt.Sprintf("storage: %s -> %s", cfg.Storage, jetstream.FileStorage))
		cfg.Storage = jetstream.FileStorage
	}
	return cs, ch
}

// consumerNeeds is what Sluice needs of one durable consumer.
type consumerNeeds struct {
	filter string
	// maxAckPending, when not 0, is the only value Sluice works with.
	maxAckPending int
	// pinned: the consumer pins to one client in CommandPriorityGroup.
	pinned bool
}

// check reports the conflicts of cfg with n and fixes them in cfg. upgrade is set when every
// conflict is one an earlier version of Sluice left on a command consumer (ModeMissing
// updates those in place).
func (n consumerNeeds) check(stream string, cfg *jetstream.ConsumerConfig) (cs []Conflict, ch changes, upgrade bool) {
	obj := "consumer " + stream + "/" + cfg.Durable
	if cfg.AckPolicy != jetstream.AckExplicitPolicy {
		cs = append(cs, Conflict{Object: obj, Setting: "ack_policy", Have: cfg.AckPolicy.String(), Want: jetstream.AckExplicitPolicy.String(),
			Why: "each message is acknowledged after its write, on its own", Fatal: true})
		ch = append(ch, fmt.Sprintf("ack_policy: %s -> %s", cfg.AckPolicy, jetstream.AckExplicitPolicy))
		cfg.AckPolicy = jetstream.AckExplicitPolicy
	}
	if cfg.DeliverSubject != "" {
		cs = append(cs, Conflict{Object: obj, Setting: "deliver_subject", Have: cfg.DeliverSubject, Want: "none (a pull consumer)",
			Why: "workers pull from it", Fatal: true})
	}
	filters := cfg.FilterSubjects
	if cfg.FilterSubject != "" {
		filters = append([]string{cfg.FilterSubject}, filters...)
	}
	want := []string{}
	if n.filter != "" {
		want = []string{n.filter}
	}
	if !slices.Equal(filters, want) && !(len(filters) == 0 && len(want) == 0) {
		cs = append(cs, Conflict{Object: obj, Setting: "filter_subjects", Have: fmt.Sprintf("%q", filters), Want: fmt.Sprintf("%q", want),
			Why: "the consumer delivers other messages than the ones it is for", Fatal: true})
		ch = append(ch, fmt.Sprintf("filter_subjects: %q -> %q", filters, want))
		cfg.FilterSubject, cfg.FilterSubjects = n.filter, nil
	}
	fatal := len(cs) > 0
	upgradable := 0
	if n.maxAckPending > 0 && cfg.MaxAckPending != n.maxAckPending {
		why := "graph batches are applied one at a time, in publish order (nodes before the edges that need them)"
		if n.pinned {
			why = "a worker holds a partition's pending commands and applies them in order"
		}
		cs = append(cs, Conflict{Object: obj, Setting: "max_ack_pending", Have: fmt.Sprint(cfg.MaxAckPending), Want: fmt.Sprint(n.maxAckPending), Why: why, Fatal: true})
		set(&ch, "max_ack_pending", &cfg.MaxAckPending, n.maxAckPending)
		upgradable++
	}
	if n.pinned && (!slices.Equal(cfg.PriorityGroups, []string{CommandPriorityGroup}) || cfg.PriorityPolicy != jetstream.PriorityPolicyPinned || cfg.PinnedTTL != CommandPinnedTTL) {
		cs = append(cs, Conflict{Object: obj, Setting: "priority_groups", Have: fmt.Sprintf("%q %s %s", cfg.PriorityGroups, priorityPolicy(cfg.PriorityPolicy), cfg.PinnedTTL),
			Want: fmt.Sprintf("[%q] pinned %s", CommandPriorityGroup, CommandPinnedTTL),
			Why:  "each partition must be pinned to one worker at a time for per-key order", Fatal: true})
		ch = append(ch, fmt.Sprintf("priority_groups: %q -> [%q] pinned %s", cfg.PriorityGroups, CommandPriorityGroup, CommandPinnedTTL))
		cfg.PriorityGroups, cfg.PriorityPolicy, cfg.PinnedTTL = []string{CommandPriorityGroup}, jetstream.PriorityPolicyPinned, CommandPinnedTTL
		upgradable++
	}
	return cs, ch, n.pinned && !fatal && upgradable > 0
}

func priorityPolicy(p jetstream.PriorityPolicy) string {
	if p == jetstream.PriorityPolicyPinned {
		return "pinned"
	}
	b, _ := p.MarshalJSON()
	return strings.Trim(string(b), `"`)
}

// provisioner carries one provisioning call's mode, report and missing objects.
type provisioner struct {
	js       jetstream.JetStream
	mode     Mode
	settings Settings
	rep      Report
	missing  []string
	errs     []error
}

func newProvisioner(js jetstream.JetStream, cfg ProvisionConfig) *provisioner {
	m := cfg.Mode
	if m == "" {
		m = ModeMissing
	}
	return &provisioner{js: js, mode: m, settings: cfg.Settings}
}

// stalled reports whether a request of this run failed in a way a retry may cure (a timeout,
// no meta leader): the requests after it would most likely wait out their timeouts too, 5 s
// each, so the run stops there and retryTransient starts it again.
func (p *provisioner) stalled() bool {
	return slices.ContainsFunc(p.errs, transient)
}

// err is the call's outcome: the missing objects (ModeOff), the fatal conflicts (ModeMissing,
// ModeOff) and any other failure, joined.
func (p *provisioner) err() error {
	errs := slices.Clone(p.errs)
	if len(p.missing) > 0 {
		errs = append(errs, &MissingError{Missing: p.missing})
	}
	if p.mode != ModeProvision {
		var fatal []Conflict
		for _, c := range p.rep.Conflicts {
			if c.Fatal && !c.Fixed {
				fatal = append(fatal, c)
			}
		}
		if len(fatal) > 0 {
			errs = append(errs, &ConflictError{Conflicts: fatal})
		}
	}
	return errors.Join(errs...)
}

// stream makes sure stream create.Name exists: created from create (with the operator's
// settings) when missing, checked against needs when it exists, and in ModeProvision updated
// to needs and the operator's settings. It returns nil when the stream is missing in ModeOff
// or on failure (recorded in p).
func (p *provisioner) stream(ctx context.Context, create jetstream.StreamConfig, needs *streamNeeds) jetstream.Stream {
	if p.stalled() {
		return nil
	}
	name := create.Name
	obj := "stream " + name
	s, err := p.js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if p.mode == ModeOff {
			p.missing = append(p.missing, obj)
			return nil
		}
		ss := p.settings.stream(name)
		ss.apply(&create)
		s, err = p.js.CreateStream(ctx, create)
		if err == nil {
			p.rep.Actions = append(p.rep.Actions, Action{Object: obj, Verb: Created})
			return s
		}
		if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			p.errs = append(p.errs, fmt.Errorf("create stream %s: %w%s", name, err, replicasHint(create.Replicas)))
			return nil
		}
		// Another process created it meanwhile: check it as one that existed.
		s, err = p.js.Stream(ctx, name)
	}
	if err != nil {
		p.errs = append(p.errs, fmt.Errorf("look up stream %s: %w", name, err))
		return nil
	}
	have := s.CachedInfo().Config
	cfg := have
	cfg.Subjects = slices.Clone(have.Subjects)
	var cs []Conflict
	var ch changes
	if needs != nil {
		cs, ch = needs.check(&cfg)
	}
	if p.mode != ModeProvision {
		p.rep.Conflicts = append(p.rep.Conflicts, cs...)
		p.rep.Actions = append(p.rep.Actions, Action{Object: obj, Verb: Kept})
		return s
	}
	ch = append(ch, p.settings.stream(name).apply(&cfg)...)
	for i := range cs {
		cs[i].Fixed = true
	}
	p.rep.Conflicts = append(p.rep.Conflicts, cs...)
	if len(ch) == 0 {
		p.rep.Actions = append(p.rep.Actions, Action{Object: obj, Verb: Kept})
		return s
	}
	s, err = p.js.UpdateStream(ctx, cfg)
	if err != nil {
		p.errs = append(p.errs, fmt.Errorf("update stream %s (%s): %w%s%s", name, strings.Join(ch, ", "), err,
			immutableHint(have, cfg), replicasHint(cfg.Replicas)))
		return nil
	}
	p.rep.Actions = append(p.rep.Actions, Action{Object: obj, Verb: Updated, Changes: ch})
	return s
}

// immutableHint explains an update NATS refuses because it changes what cannot change in place.
func immutableHint(have, want jetstream.StreamConfig) string {
	var what []string
	if have.Retention != want.Retention {
		what = append(what, "retention "+have.Retention.String()+" to "+want.Retention.String())
	}
	if have.Storage != want.Storage {
		what = append(what, "storage "+have.Storage.String()+" to "+want.Storage.String())
	}
	if len(what) == 0 {
		return ""
	}
	return fmt.Sprintf(" — NATS cannot change %s on an existing stream: drain it (every job finished, no dead letter to keep), "+
		"delete it with the nats CLI (`nats stream rm %s`) and run `sluice provision` again", strings.Join(what, " and "), have.Name)
}

// replicasHint explains NATS's refusal of more replicas than the cluster has servers.
func replicasHint(replicas int) string {
	if replicas <= 1 {
		return ""
	}
	return fmt.Sprintf(" (with %d replicas: the JetStream cluster needs at least %d servers, matching the placement)", replicas, replicas)
}

// consumer makes sure durable consumer create.Durable of s exists, as stream does for streams.
// In ModeMissing a command consumer of an earlier version is upgraded in place (needs.pinned).
func (p *provisioner) consumer(ctx context.Context, s jetstream.Stream, create jetstream.ConsumerConfig, needs consumerNeeds) jetstream.Consumer {
	if p.stalled() {
		return nil
	}
	stream := s.CachedInfo().Config.Name
	obj := "consumer " + stream + "/" + create.Durable
	c, err := s.Consumer(ctx, create.Durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		if p.mode == ModeOff {
			p.missing = append(p.missing, obj)
			return nil
		}
		p.settings.consumer(create.Durable).apply(&create)
		c, err = s.CreateConsumer(ctx, create)
		if err == nil {
			p.rep.Actions = append(p.rep.Actions, Action{Object: obj, Verb: Created})
			return c
		}
		if !errors.Is(err, jetstream.ErrConsumerExists) {
			p.errs = append(p.errs, fmt.Errorf("create consumer %s: %w", obj, err))
			return nil
		}
		c, err = s.Consumer(ctx, create.Durable)
	}
	if err != nil {
		p.errs = append(p.errs, fmt.Errorf("look up %s: %w", obj, err))
		return nil
	}
	have := c.CachedInfo().Config
	cfg := have
	cs, ch, upgrade := needs.check(stream, &cfg)
	switch {
	case p.mode == ModeProvision:
		ch = append(ch, p.settings.consumer(create.Durable).apply(&cfg)...)
	case p.mode == ModeMissing && upgrade:
		// A consumer of an earlier version cannot keep per-key order with this one's
		// workers: upgrading it is a need, and it changes nothing the operator owns.
	default:
		p.rep.Conflicts = append(p.rep.Conflicts, cs...)
		p.rep.Actions = append(p.rep.Actions, Action{Object: obj, Verb: Kept})
		return c
	}
	for i := range cs {
		cs[i].Fixed = true
	}
	p.rep.Conflicts = append(p.rep.Conflicts, cs...)
	if len(ch) == 0 {
		p.rep.Actions = append(p.rep.Actions, Action{Object: obj, Verb: Kept})
		return c
	}
	c, err = s.UpdateConsumer(ctx, cfg)
	if err != nil {
		hint := ""
		if have.AckPolicy != cfg.AckPolicy || have.DeliverSubject != "" {
			hint = fmt.Sprintf(" — NATS cannot change a consumer's ack policy or make a push consumer a pull one: delete it with the nats CLI (`nats consumer rm %s %s`) and run `sluice provision` again", stream, create.Durable)
		}
		p.errs = append(p.errs, fmt.Errorf("update %s (%s): %w%s", obj, strings.Join(ch, ", "), err, hint))
		return nil
	}
	p.rep.Actions = append(p.rep.Actions, Action{Object: obj, Verb: Updated, Changes: ch})
	return c
}

// bucket makes sure the bucket whose stream is stream exists: create creates it when missing;
// in ModeProvision its stream gets the operator's replicas and placement (its other settings
// are the bucket's own). It reports whether the bucket exists now.
func (p *provisioner) bucket(ctx context.Context, obj, stream string, create func(context.Context) error) bool {
	if p.stalled() {
		return false
	}
	s, err := p.js.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if p.mode == ModeOff {
			p.missing = append(p.missing, obj)
			return false
		}
		err = create(ctx)
		if err == nil {
			p.rep.Actions = append(p.rep.Actions, Action{Object: obj, Verb: Created})
			return true
		}
		if !errors.Is(err, jetstream.ErrBucketExists) && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			p.errs = append(p.errs, fmt.Errorf("create %s: %w%s", obj, err, replicasHint(p.settings.stream(stream).Replicas)))
			return false
		}
		s, err = p.js.Stream(ctx, stream)
	}
	if err != nil {
		p.errs = append(p.errs, fmt.Errorf("look up %s: %w", obj, err))
		return false
	}
	if p.mode != ModeProvision {
		p.rep.Actions = append(p.rep.Actions, Action{Object: obj, Verb: Kept})
		return true
	}
	cfg := s.CachedInfo().Config
	ss := p.settings.stream(stream)
	ch := ss.apply(&cfg)
	if len(ch) == 0 {
		p.rep.Actions = append(p.rep.Actions, Action{Object: obj, Verb: Kept})
		return true
	}
	if _, err := p.js.UpdateStream(ctx, cfg); err != nil {
		p.errs = append(p.errs, fmt.Errorf("update %s (%s): %w%s", obj, strings.Join(ch, ", "), err, replicasHint(cfg.Replicas)))
		return false
	}
	p.rep.Actions = append(p.rep.Actions, Action{Object: obj, Verb: Updated, Changes: ch})
	return true
}
