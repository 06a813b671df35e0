package main

// Provisioning: `sluice provision` and the --provision / --stream-* flags of the commands that
// open the broker (issue 15). What Sluice needs of its streams is set by sources/jetstream; what
// the operator owns comes from here: flags, their environment variables, and a JSON file.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/sluice-dev/sluice/schemas"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// provisionFlags are the provisioning flags as given. settings turns them into the operator's
// settings; fs tells a flag given (or set from its variable) from its default.
type provisionFlags struct {
	fs       *pflag.FlagSet
	mode     string
	replicas int
	maxBytes int64
	maxAge   time.Duration
	cluster  string
	tags     string
	// file is --provision-file (sluice provision only).
	file string
}

// workStreams are the streams --stream-max-age sets: those whose messages wait to be
// processed (all 168 h by default). --stream-max-bytes sets only SLUICE_CHUNKS's, the one
// stream with a size limit by default: NATS reserves a stream's max bytes on the disk, so one
// flag for four streams would reserve four times the size given. The DLQ, change feed and
// advisory streams keep their own (set them per stream in --provision-file).
var workStreams = []string{schemas.StreamChunks, schemas.StreamJobs, sjs.StreamGraph, sjs.StreamCommands}

// bindStreamFlags registers the --stream-* flags, each mirrored by its environment variable.
func bindStreamFlags(fs *pflag.FlagSet, f *provisionFlags) {
	f.fs = fs
	fs.IntVar(&f.replicas, "stream-replicas", 0, "replicas of every stream and bucket, 1 to 5 (not given: 1 when creating, kept when it exists)")
	bindEnv(fs, "stream-replicas", "SLUICE_STREAM_REPLICAS")
	fs.Int64Var(&f.maxBytes, "stream-max-bytes", 0, "max bytes of the chunk stream (SLUICE_CHUNKS); -1 for no limit (not given: 8 GiB when creating)")
	bindEnv(fs, "stream-max-bytes", "SLUICE_STREAM_MAX_BYTES")
	fs.DurationVar(&f.maxAge, "stream-max-age", 0, "max age of the chunk, job, graph and command streams; 0 for no limit (not given: 168h when creating)")
	bindEnv(fs, "stream-max-age", "SLUICE_STREAM_MAX_AGE")
	bindStrings(fs, []stringFlag{
		{&f.cluster, "stream-placement-cluster", "SLUICE_STREAM_PLACEMENT_CLUSTER", "", "JetStream cluster every stream and bucket is placed in"},
		{&f.tags, "stream-placement-tags", "SLUICE_STREAM_PLACEMENT_TAGS", "", "comma-separated server tags every stream and bucket is placed on"},
	})
}

// bindProvision registers --provision and the --stream-* flags of the commands that open the
// broker (serve, worker, api, load).
func bindProvision(fs *pflag.FlagSet, f *provisionFlags) {
	fs.StringVar(&f.mode, "provision", "missing", "missing: create what is missing (with the --stream-* settings), change nothing that exists; off: create nothing (needs no stream-admin permission)")
	bindEnv(fs, "provision", "SLUICE_PROVISION")
	bindStreamFlags(fs, f)
}

// config returns the provisioning configuration the flags give, in mode, or a usageError.
// The zero provisionFlags (no flags bound) is the default mode without settings.
func (f *provisionFlags) config() (sjs.ProvisionConfig, error) {
	if f.fs == nil {
		return sjs.ProvisionConfig{}, nil
	}
	var pc sjs.ProvisionConfig
	if f.fs.Lookup("provision") != nil {
		m, err := sjs.ParseMode(f.mode)
		if err != nil || m == sjs.ModeProvision {
			return pc, usageError{fmt.Sprintf("--provision %q: want missing or off (to provision, run sluice provision)", f.mode)}
		}
		pc.Mode = m
	}
	s, err := f.settings()
	if err != nil {
		return pc, usageError{err.Error()}
	}
	pc.Settings = s
	return pc, nil
}

// settings returns the operator's settings: the file's, then the flags given over them.
func (f *provisionFlags) settings() (sjs.Settings, error) {
	var s sjs.Settings
	if f.file != "" {
		var err error
		if s, err = readProvisionFile(f.file); err != nil {
			return s, err
		}
	}
	var errs []error
	if f.fs.Changed("stream-replicas") {
		if f.replicas < 1 || f.replicas > sjs.MaxReplicas {
			errs = append(errs, fmt.Errorf("--stream-replicas %d: want 1 to %d", f.replicas, sjs.MaxReplicas))
		}
		s.Replicas = f.replicas
		// The flag wins over the file's per-stream replicas too.
		for name, ss := range s.Streams {
			ss.Replicas = 0
			s.Streams[name] = ss
		}
	}
	if f.fs.Changed("stream-max-bytes") && (f.maxBytes == 0 || f.maxBytes < -1) {
		errs = append(errs, fmt.Errorf("--stream-max-bytes %d: want -1 (no limit) or a positive size", f.maxBytes))
	}
	if f.fs.Changed("stream-max-age") && f.maxAge < 0 {
		errs = append(errs, fmt.Errorf("--stream-max-age %s: want 0 (no limit) or a positive duration", f.maxAge))
	}
	if err := errors.Join(errs...); err != nil {
		return s, err
	}
	for _, name := range workStreams {
		ss := s.Streams[name]
		if f.fs.Changed("stream-max-bytes") && name == schemas.StreamChunks {
			ss.MaxBytes = &f.maxBytes
		}
		if f.fs.Changed("stream-max-age") {
			ss.MaxAge = &f.maxAge
		}
		if ss != (sjs.StreamSettings{}) {
			if s.Streams == nil {
				s.Streams = map[string]sjs.StreamSettings{}
			}
			s.Streams[name] = ss
		}
	}
	if f.cluster != "" || f.tags != "" {
		p := &jetstream.Placement{Cluster: f.cluster}
		for _, t := range strings.Split(f.tags, ",") {
			if t = strings.TrimSpace(t); t != "" {
				p.Tags = append(p.Tags, t)
			}
		}
		s.Placement = p
		for name, ss := range s.Streams {
			ss.Placement = nil
			s.Streams[name] = ss
		}
	}
	return s, s.Validate()
}

// provisionFile is the JSON of --provision-file. Unknown fields are refused.
type provisionFile struct {
	Replicas  int                             `json:"replicas"`
	Placement *filePlacement                  `json:"placement"`
	MaxBytes  *int64                          `json:"max_bytes"`
	MaxAge    *fileDuration                   `json:"max_age"`
	Streams   map[string]fileStream           `json:"streams"`
	Consumers map[string]fileConsumerSettings `json:"consumers"`
}

type filePlacement struct {
	Cluster string   `json:"cluster"`
	Tags    []string `json:"tags"`
}

type fileStream struct {
	Replicas  int            `json:"replicas"`
	MaxBytes  *int64         `json:"max_bytes"`
	MaxAge    *fileDuration  `json:"max_age"`
	Placement *filePlacement `json:"placement"`
}

type fileConsumerSettings struct {
	AckWait       *fileDuration `json:"ack_wait"`
	MaxDeliver    *int          `json:"max_deliver"`
	MaxAckPending *int          `json:"max_ack_pending"`
}

// fileDuration is a duration written as Go writes one ("168h", "30s", "0s").
type fileDuration time.Duration

func (d *fileDuration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a duration is a string such as \"168h\" or \"0s\", not %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = fileDuration(v)
	return nil
}

func (d *fileDuration) ptr() *time.Duration {
	if d == nil {
		return nil
	}
	v := time.Duration(*d)
	return &v
}

func (p *filePlacement) placement() *jetstream.Placement {
	if p == nil {
		return nil
	}
	return &jetstream.Placement{Cluster: p.Cluster, Tags: p.Tags}
}

// maxProvisionFile bounds the file read: a settings file is a few hundred bytes.
const maxProvisionFile = 1 << 20

// readProvisionFile decodes path strictly into settings: unknown fields, trailing data and
// values out of range are refused, naming the file.
func readProvisionFile(path string) (sjs.Settings, error) {
	f, err := os.Open(path)
	if err != nil {
		return sjs.Settings{}, fmt.Errorf("provision file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxProvisionFile+1))
	if err != nil {
		return sjs.Settings{}, fmt.Errorf("provision file %s: %w", path, err)
	}
	if len(b) > maxProvisionFile {
		return sjs.Settings{}, fmt.Errorf("provision file %s: larger than %d bytes", path, maxProvisionFile)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var pf provisionFile
	if err := dec.Decode(&pf); err != nil {
		return sjs.Settings{}, fmt.Errorf("provision file %s: %w", path, err)
	}
	if dec.More() {
		return sjs.Settings{}, fmt.Errorf("provision file %s: data after the JSON object", path)
	}
	s := sjs.Settings{Replicas: pf.Replicas, Placement: pf.Placement.placement()}
	if pf.Replicas < 0 || pf.Replicas > sjs.MaxReplicas {
		return s, fmt.Errorf("provision file %s: replicas %d: want 1 to %d", path, pf.Replicas, sjs.MaxReplicas)
	}
	if len(pf.Streams) > 0 || pf.MaxBytes != nil || pf.MaxAge != nil {
		s.Streams = map[string]sjs.StreamSettings{}
	}
	// The top-level sizes are --stream-max-bytes's (the chunk stream) and --stream-max-age's
	// (the work streams).
	for _, name := range workStreams {
		ss := sjs.StreamSettings{MaxAge: pf.MaxAge.ptr()}
		if name == schemas.StreamChunks {
			ss.MaxBytes = pf.MaxBytes
		}
		if ss != (sjs.StreamSettings{}) {
			s.Streams[name] = ss
		}
	}
	for name, fs := range pf.Streams {
		ss := s.Streams[name]
		ss.Replicas, ss.Placement = fs.Replicas, fs.Placement.placement()
		if fs.MaxBytes != nil {
			ss.MaxBytes = fs.MaxBytes
		}
		if fs.MaxAge != nil {
			ss.MaxAge = fs.MaxAge.ptr()
		}
		s.Streams[name] = ss
	}
	for name, fc := range pf.Consumers {
		if s.Consumers == nil {
			s.Consumers = map[string]sjs.ConsumerSettings{}
		}
		s.Consumers[name] = sjs.ConsumerSettings{AckWait: fc.AckWait.ptr(), MaxDeliver: fc.MaxDeliver, MaxAckPending: fc.MaxAckPending}
	}
	if err := s.Validate(); err != nil {
		return s, fmt.Errorf("provision file %s: %w", path, err)
	}
	return s, nil
}

// provisionExample is the provision command's examples; the docs test runs them.
const provisionExample = `  sluice provision --nats-url nats://nats:4222 --stream-replicas 3
  sluice provision --stream-max-bytes 21474836480 --stream-max-age 0s   # 20 GiB, no max age
  sluice provision --provision-file provision.json --json`

func newProvisionCmd(cl *cli) *cobra.Command {
	var (
		c      config
		pf     provisionFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "provision [flags]",
		Short: "Create or update Sluice's streams, consumers and buckets with the operator's settings",
		Long: `Creates every stream, durable consumer and bucket Sluice uses that is missing, and updates
those that exist: what Sluice needs is set (subjects, retention, discard policy, duplicate
window, atomic publish, direct gets, ack policy, filters, the graph and command consumers'
order), and of the operator's settings only those given (replicas, max bytes, max age,
placement, consumer sizes); every other setting is kept. It prints what it created, updated
and kept, and each conflicting setting it fixed. A setting NATS cannot change in place
(retention, storage, ack policy) fails with what to do.

It needs stream-admin permission (the sluice-operator role of deployments/nats/permissions.conf);
the other commands then run with --provision off and need none. Settings come from flags,
their environment variables, and --provision-file (JSON; flags win):

  {"replicas": 3, "placement": {"cluster": "c1", "tags": ["ssd"]},
   "max_bytes": 21474836480, "max_age": "0s",
   "streams": {"SLUICE_DLQ": {"max_age": "2160h"}},
   "consumers": {"sluice-chunks": {"ack_wait": "30s", "max_deliver": 10, "max_ack_pending": 20000}}}

--stream-max-bytes (the file's top-level max_bytes) sizes the chunk stream, SLUICE_CHUNKS (NATS
reserves max bytes on disk, so it is not repeated on every stream); --stream-max-age (max_age)
the chunk, job, graph and command streams; "streams" sizes any stream by name, buckets' streams
(KV_sluice_jobs, OBJ_sluice_dlq_payloads) included.`,
		Example: provisionExample,
		Args:    noArgs("provision takes no arguments"),
		RunE: func(*cobra.Command, []string) error {
			s, err := pf.settings()
			if err != nil {
				return usageError{err.Error()}
			}
			return cmdProvision(cl, c, sjs.ProvisionConfig{Mode: sjs.ModeProvision, Settings: s}, asJSON)
		},
	}
	fs := cmd.Flags()
	bindCommon(fs, &c)
	bindStreamFlags(fs, &pf)
	bindStrings(fs, []stringFlag{{&pf.file, "provision-file", "SLUICE_PROVISION_FILE", "", "JSON file of settings per stream and consumer (flags win)"}})
	fs.BoolVar(&asJSON, "json", false, "print what was done as one JSON object")
	return cmd
}

// cmdProvision provisions with pc on the broker c names and prints the report.
func cmdProvision(cl *cli, c config, pc sjs.ProvisionConfig, asJSON bool) error {
	b, err := dialBroker(cl.ctx, c, cl.log, true)
	if err != nil {
		return err
	}
	defer b.close()
	rep, err := sjs.ProvisionAll(cl.ctx, b.js, pc)
	if asJSON {
		enc := json.NewEncoder(cl.stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false) // "a -> b" as written
		if perr := enc.Encode(rep); perr != nil {
			return perr
		}
	} else {
		printReport(cl.stdout, rep)
	}
	if err != nil {
		return fmt.Errorf("provision: %w", err)
	}
	return nil
}

// printReport prints what provisioning did, one object a line, then the conflicts.
func printReport(w io.Writer, rep sjs.Report) {
	for _, a := range rep.Actions {
		line := string(a.Verb) + "\t" + a.Object
		if len(a.Changes) > 0 {
			line += "\t" + strings.Join(a.Changes, ", ")
		}
		fmt.Fprintln(w, line)
	}
	for _, c := range rep.Conflicts {
		fmt.Fprintln(w, "conflict\t"+c.String())
	}
}

// logReport logs what provisioning did at start-up: each object created or updated, and each
// setting that conflicts with what Sluice needs as a warning.
func logReport(log *slog.Logger, rep sjs.Report) {
	for _, a := range rep.Actions {
		switch {
		case a.Verb == sjs.Kept:
		case len(a.Changes) == 0: // created: no "changes":null in a JSON line
			log.Info("provisioned", "object", a.Object, "did", a.Verb)
		default:
			log.Info("provisioned", "object", a.Object, "did", a.Verb, "changes", a.Changes)
		}
	}
	for _, c := range rep.Conflicts {
		log.Warn("existing setting conflicts with what Sluice needs; run `sluice provision` to fix it",
			"object", c.Object, "setting", c.Setting, "have", c.Have, "want", c.Want, "why", c.Why, "fatal", c.Fatal)
	}
}
