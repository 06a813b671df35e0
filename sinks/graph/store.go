package graph

import (
	"context"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-dev/sluice/pipeline/telemetry"
	"github.com/sluice-dev/sluice/schemas"
)

// Store is what both backends (*SQLite, *Postgres) offer. All methods are safe for
// concurrent use and block until the database answers or ctx ends.
//
// Every read and write names an environment (env: "dev", "test" or "prod"; see Envs): each
// env holds a graph of its own, so the same node id in two envs is two independent nodes,
// an edge joins nodes of its own env only, and stats, traversals and apply markers never
// cross envs. An env that is not one of Envs is a permanent validation error (wrapping
// ErrInvalid); there is no implicit default at this level (callers default to "dev").
type Store interface {
	// ApplyBatch applies b to env's graph in one transaction (nodes before edges, all or
	// nothing). msgID is the apply marker (for example "SLUICE_GRAPH:123"), kept per env:
	// when a batch with the same msgID was already committed in env, nothing is written and
	// Result.AlreadyApplied is true (the same msgID in another env is another batch). An
	// empty msgID records no marker, so every call applies. Errors are permanent
	// (fault.Validation, wrapping ErrInvalid) or transient.
	ApplyBatch(ctx context.Context, env string, b Batch, msgID string) (Result, error)
	// ApplyBatches applies bs in one transaction (one synced commit for all), in order, each
	// batch inside its own savepoint with its own apply marker in its own env
	// (MarkedBatch.Env), as if ApplyBatch were called for each one after the other: a batch
	// whose marker was recorded before in its env — by an earlier call or by an earlier
	// batch of bs — is skipped (AlreadyApplied), later batches see the nodes of earlier ones
	// of the same env, and a batch that fails is rolled back alone while the others commit.
	// It returns one BatchResult per batch, in order. When the transaction itself fails
	// (begin, commit, a lost connection, a rollback to a savepoint that fails), every batch
	// not already refused on its own gets that error and nothing is written. Errors are
	// classified as ApplyBatch's. It blocks like ApplyBatch; nil or empty bs returns at once.
	ApplyBatches(ctx context.Context, bs []MarkedBatch) []BatchResult
	// GetNode returns the node with id in env, or an error wrapping ErrNotFound.
	GetNode(ctx context.Context, env, id string) (Node, error)
	// GetEdge returns the edge with id in env, or an error wrapping ErrNotFound.
	GetEdge(ctx context.Context, env, id string) (Edge, error)
	// Neighbors returns the nodes of env within depth hops of id over env's edges in both
	// directions, restricted to edgeTypes when it is non-empty. depth is clamped to
	// 0..MaxDepth (0 returns none); the start node is excluded; at most MaxNeighbors nodes
	// come back, the nearest first (ties by id). One recursive SQL query. An id with no node
	// in env gives an error wrapping ErrNotFound.
	Neighbors(ctx context.Context, env, id string, depth int, edgeTypes []string) ([]Node, error)
	// Stats counts env's nodes and edges by type.
	Stats(ctx context.Context, env string) (Stats, error)
	// Ping checks that the database answers.
	Ping(ctx context.Context) error
	// PruneApplied deletes env's apply markers whose id starts with prefix and whose
	// applied_at < before, and returns how many it deleted; other envs' markers are left
	// alone. A message whose marker is gone is applied again if it is redelivered, so before
	// must be older than any redelivery (see DefaultMarkerRetention), and prefix must select
	// markers keyed by stream position ("SLUICE_GRAPH:"), not by something a client may send
	// again (the command worker's "command:<id>", kept for good). An empty prefix selects
	// every marker of env. It deletes in statements of at most 10,000 rows, each its own
	// short transaction, until one deletes fewer, so batches being applied meanwhile wait
	// for one chunk at most. It blocks until done or ctx ends; on error it returns the
	// number deleted before the error, and the error is transient (an invalid env is
	// permanent).
	PruneApplied(ctx context.Context, env, prefix string, before time.Time) (int64, error)
	// Close releases the database. It is idempotent; later calls on the store fail with
	// ErrClosed.
	Close() error
}

// DefaultEnv is the environment callers use when none is named (the HTTP API without
// ?env=, the command worker's projections by default). A graph stored before graphs were
// kept per env (schema version 3) belongs to it.
const DefaultEnv = schemas.Dev

// Envs returns the environments a graph is kept for: dev, test and prod. The slice is new
// on every call.
func Envs() []string { return []string{schemas.Dev, schemas.Test, schemas.Prod} }

// checkEnv returns a permanent validation error (wrapping ErrInvalid) unless env is one of
// Envs.
func checkEnv(env string) error {
	if !schemas.ValidEnv(env) {
		return invalidf("env %q is not dev, test or prod", env)
	}
	return nil
}

// Result reports what ApplyBatch did. Counts are after deduplication of repeated ids in the
// batch.
type Result struct {
	// AlreadyApplied is true when the message id had been applied before; nothing changed.
	AlreadyApplied bool
	NodesCreated   int
	NodesUpdated   int
	EdgesCreated   int
	EdgesUpdated   int
}

// MarkedBatch is one batch of Store.ApplyBatches with its env and apply marker.
type MarkedBatch struct {
	// Env is the graph the batch goes to, as ApplyBatch's env. Required.
	Env   string
	Batch Batch
	// MsgID is the batch's apply marker, as ApplyBatch's msgID; empty records none.
	MsgID string
}

// BatchResult is what Store.ApplyBatches did with one batch: Err is nil and Result says
// what was written, or Err says why nothing of the batch was.
type BatchResult struct {
	Result Result
	Err    error
}

// startBatchesSpan starts the span of ApplyBatches' transaction on a system ("sqlite",
// "postgresql"): the nodes and edges it upserts, across envs.
func startBatchesSpan(ctx context.Context, system string, bs []MarkedBatch) (context.Context, trace.Span) {
	n := 0
	for _, b := range bs {
		n += len(b.Batch.Nodes) + len(b.Batch.Edges)
	}
	return telemetry.StartSink(ctx, telemetry.ScopeGraph, system, "upsert", "graph", n)
}

// prepareBatches prepares each of bs, recording a batch that cannot be prepared as refused
// with its error in res, and returns the prepared batches and how many are pending.
func prepareBatches(bs []MarkedBatch, opts Options, res []BatchResult, refused []bool) ([]prepared, int) {
	ps := make([]prepared, len(bs))
	pending := 0
	for i, b := range bs {
		p, err := prepare(b.Env, b.Batch, opts)
		if err != nil {
			res[i].Err, refused[i] = err, true
			continue
		}
		ps[i] = p
		pending++
	}
	return ps, pending
}

// failPending sets err on every result of res that has none yet (the batches a failed
// transaction took down with it) and clears their Result.
func failPending(res []BatchResult, skip []bool, err error) []BatchResult {
	for i := range res {
		if !skip[i] {
			res[i] = BatchResult{Err: err}
		}
	}
	return res
}

// Stats counts stored nodes and edges by type; types with no rows are absent.
type Stats struct {
	Nodes map[string]int `json:"node_types"`
	Edges map[string]int `json:"edge_types"`
}

// TotalNodes returns the sum of s.Nodes.
func (s Stats) TotalNodes() int { return sum(s.Nodes) }

// TotalEdges returns the sum of s.Edges.
func (s Stats) TotalEdges() int { return sum(s.Edges) }

func sum(m map[string]int) int {
	t := 0
	for _, v := range m {
		t += v
	}
	return t
}

// IsPostgresDSN reports whether dsn names a PostgreSQL server ("postgres://" or
// "postgresql://"); anything else is a SQLite path.
func IsPostgresDSN(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// Open opens the store dsn names: a "postgres://…" or "postgresql://…" URL opens a
// *Postgres with the default pool settings, anything else is a SQLite file path. Schema
// migrations run before it returns. The caller closes the store.
func Open(ctx context.Context, dsn string, opts Options) (Store, error) {
	if IsPostgresDSN(dsn) {
		return OpenPostgres(ctx, PostgresConfig{DSN: dsn, Options: opts})
	}
	return OpenSQLite(ctx, SQLiteConfig{Path: dsn, Options: opts})
}

// now is the store clock, in microseconds (the stored resolution).
func now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

func clampDepth(d int) int {
	return max(0, min(d, MaxDepth))
}

// migration is one schema step; steps run in version order, each in the migration
// transaction, and are recorded in schema_migrations.
type migration struct {
	version  int
	name     string
	sqlite   []string
	postgres []string
}

// migrations is the schema history. Append only; never edit a released step.
//
// Timestamps are Unix microseconds. Properties are JSON text (PostgreSQL type json, which
// keeps the text exactly and, unlike jsonb, accepts \u0000), merged in Go, so both backends
// store the same bytes.
var migrations = []migration{{
	version: 1,
	name:    "graph nodes, edges and apply markers",
	sqlite: []string{
		`CREATE TABLE graph_nodes (
			id         TEXT PRIMARY KEY,
			type       TEXT NOT NULL CHECK (type IN ('Rule','Concept','Procedure','Step','Entity','SourceDoc','Artifact','Decision')),
			properties TEXT NOT NULL CHECK (json_valid(properties)),
			created_at INTEGER NOT NULL,
			updated_at INTEGER NOT NULL,
			version    INTEGER NOT NULL CHECK (version > 0)
		)`,
		`CREATE INDEX graph_nodes_type ON graph_nodes (type)`,
		`CREATE TABLE graph_edges (
			id         TEXT PRIMARY KEY,
			source     TEXT NOT NULL REFERENCES graph_nodes (id),
			type       TEXT NOT NULL CHECK (type IN ('depends_on','part_of','implements','cites','produces','variant_of','prereq')),
			target     TEXT NOT NULL REFERENCES graph_nodes (id),
			properties TEXT NOT NULL CHECK (json_valid(properties)),
			created_at INTEGER NOT NULL,
			updated_at INTEGER NOT NULL,
			version    INTEGER NOT NULL CHECK (version > 0),
			UNIQUE (source, type, target)
		)`,
		`CREATE INDEX graph_edges_target ON graph_edges (target, type, source)`,
		`CREATE INDEX graph_edges_type ON graph_edges (type)`,
		`CREATE TABLE graph_applied (
			msg_id     TEXT PRIMARY KEY,
			applied_at INTEGER NOT NULL
		)`,
	},
	postgres: []string{
		`CREATE TABLE graph_nodes (
			id         text PRIMARY KEY,
			type       text NOT NULL CHECK (type IN ('Rule','Concept','Procedure','Step','Entity','SourceDoc','Artifact','Decision')),
			properties json NOT NULL,
			created_at bigint NOT NULL,
			updated_at bigint NOT NULL,
			version    bigint NOT NULL CHECK (version > 0)
		)`,
		`CREATE INDEX graph_nodes_type ON graph_nodes (type)`,
		`CREATE TABLE graph_edges (
			id         text PRIMARY KEY,
			source     text NOT NULL REFERENCES graph_nodes (id),
			type       text NOT NULL CHECK (type IN ('depends_on','part_of','implements','cites','produces','variant_of','prereq')),
			target     text NOT NULL REFERENCES graph_nodes (id),
			properties json NOT NULL,
			created_at bigint NOT NULL,
			updated_at bigint NOT NULL,
			version    bigint NOT NULL CHECK (version > 0),
			UNIQUE (source, type, target)
		)`,
		`CREATE INDEX graph_edges_target ON graph_edges (target, type, source)`,
		`CREATE INDEX graph_edges_type ON graph_edges (type)`,
		`CREATE TABLE graph_applied (
			msg_id     text PRIMARY KEY,
			applied_at bigint NOT NULL
		)`,
	},
}, {
	// PruneApplied deletes by age; without the index every chunk scans the whole table.
	// The build holds the migration transaction's write lock on graph_applied (PostgreSQL
	// cannot build CONCURRENTLY inside a transaction), so a store opened on a large table
	// blocks batches for the length of the build once.
	version:  2,
	name:     "apply marker age index",
	sqlite:   []string{`CREATE INDEX graph_applied_applied_at ON graph_applied (applied_at)`},
	postgres: []string{`CREATE INDEX graph_applied_applied_at ON graph_applied (applied_at)`},
}, {
	// Graphs per environment (issue 13: a test load landed in the production graph). Every
	// table is keyed by (env, …); an edge references nodes of its own env; the apply markers
	// are per env. Rows written before belong to dev, the default env. The env column keeps
	// DEFAULT 'dev' only so that this step moves existing rows: the code names env in every
	// statement. SQLite cannot change a primary key in place, so its tables are rebuilt
	// (create, copy, drop, rename; edges are dropped before the nodes they reference, and
	// the rename rewrites the new edges' REFERENCES to the final name); PostgreSQL adds the
	// column (no table rewrite: the default is a constant) and rebuilds the keys and indexes.
	// Both copy or re-index every row inside the migration transaction: opening a large old
	// graph blocks batches once, for about as long as loading it took.
	version: 3,
	name:    "graphs per environment",
	sqlite: []string{
		`CREATE TABLE graph_nodes_v3 (
			env        TEXT NOT NULL DEFAULT 'dev' CHECK (env IN ('dev','test','prod')),
			id         TEXT NOT NULL,
			type       TEXT NOT NULL CHECK (type IN ('Rule','Concept','Procedure','Step','Entity','SourceDoc','Artifact','Decision')),
			properties TEXT NOT NULL CHECK (json_valid(properties)),
			created_at INTEGER NOT NULL,
			updated_at INTEGER NOT NULL,
			version    INTEGER NOT NULL CHECK (version > 0),
			PRIMARY KEY (env, id)
		)`,
		`INSERT INTO graph_nodes_v3 (env, id, type, properties, created_at, updated_at, version)
			SELECT 'dev', id, type, properties, created_at, updated_at, version FROM graph_nodes`,
		`CREATE TABLE graph_edges_v3 (
			env        TEXT NOT NULL DEFAULT 'dev' CHECK (env IN ('dev','test','prod')),
			id         TEXT NOT NULL,
			source     TEXT NOT NULL,
			type       TEXT NOT NULL CHECK (type IN ('depends_on','part_of','implements','cites','produces','variant_of','prereq')),
			target     TEXT NOT NULL,
			properties TEXT NOT NULL CHECK (json_valid(properties)),
			created_at INTEGER NOT NULL,
			updated_at INTEGER NOT NULL,
			version    INTEGER NOT NULL CHECK (version > 0),
			PRIMARY KEY (env, id),
			UNIQUE (env, source, type, target),
			FOREIGN KEY (env, source) REFERENCES graph_nodes_v3 (env, id),
			FOREIGN KEY (env, target) REFERENCES graph_nodes_v3 (env, id)
		)`,
		`INSERT INTO graph_edges_v3 (env, id, source, type, target, properties, created_at, updated_at, version)
			SELECT 'dev', id, source, type, target, properties, created_at, updated_at, version FROM graph_edges`,
		`DROP TABLE graph_edges`,
		`DROP TABLE graph_nodes`,
		`ALTER TABLE graph_nodes_v3 RENAME TO graph_nodes`,
		`ALTER TABLE graph_edges_v3 RENAME TO graph_edges`,
		`CREATE INDEX graph_nodes_type ON graph_nodes (env, type)`,
		`CREATE INDEX graph_edges_target ON graph_edges (env, target, type, source)`,
		`CREATE INDEX graph_edges_type ON graph_edges (env, type)`,
		`CREATE TABLE graph_applied_v3 (
			env        TEXT NOT NULL DEFAULT 'dev' CHECK (env IN ('dev','test','prod')),
			msg_id     TEXT NOT NULL,
			applied_at INTEGER NOT NULL,
			PRIMARY KEY (env, msg_id)
		)`,
		`INSERT INTO graph_applied_v3 (env, msg_id, applied_at) SELECT 'dev', msg_id, applied_at FROM graph_applied`,
		`DROP TABLE graph_applied`,
		`ALTER TABLE graph_applied_v3 RENAME TO graph_applied`,
		`CREATE INDEX graph_applied_applied_at ON graph_applied (env, applied_at)`,
	},
	postgres: []string{
		`ALTER TABLE graph_edges DROP CONSTRAINT graph_edges_source_fkey, DROP CONSTRAINT graph_edges_target_fkey,
			DROP CONSTRAINT graph_edges_source_type_target_key, DROP CONSTRAINT graph_edges_pkey`,
		`ALTER TABLE graph_nodes DROP CONSTRAINT graph_nodes_pkey,
			ADD COLUMN env text NOT NULL DEFAULT 'dev' CHECK (env IN ('dev','test','prod')),
			ADD PRIMARY KEY (env, id)`,
		`ALTER TABLE graph_edges ADD COLUMN env text NOT NULL DEFAULT 'dev' CHECK (env IN ('dev','test','prod')),
			ADD PRIMARY KEY (env, id),
			ADD UNIQUE (env, source, type, target),
			ADD FOREIGN KEY (env, source) REFERENCES graph_nodes (env, id),
			ADD FOREIGN KEY (env, target) REFERENCES graph_nodes (env, id)`,
		`DROP INDEX graph_nodes_type`,
		`CREATE INDEX graph_nodes_type ON graph_nodes (env, type)`,
		`DROP INDEX graph_edges_target`,
		`CREATE INDEX graph_edges_target ON graph_edges (env, target, type, source)`,
		`DROP INDEX graph_edges_type`,
		`CREATE INDEX graph_edges_type ON graph_edges (env, type)`,
		`ALTER TABLE graph_applied DROP CONSTRAINT graph_applied_pkey,
			ADD COLUMN env text NOT NULL DEFAULT 'dev' CHECK (env IN ('dev','test','prod')),
			ADD PRIMARY KEY (env, msg_id)`,
		`DROP INDEX graph_applied_applied_at`,
		`CREATE INDEX graph_applied_applied_at ON graph_applied (env, applied_at)`,
	},
}}

// SchemaVersion is the newest schema version this build knows.
func SchemaVersion() int { return migrations[len(migrations)-1].version }
