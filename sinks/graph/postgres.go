package graph

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/pipeline/telemetry"
)

// migrationLockKey is the pg_advisory_xact_lock key that serialises schema migrations
// between workers ("sluicegr" in ASCII).
const migrationLockKey int64 = 0x736c75696365_6772

// PostgresConfig configures OpenPostgres. The pool defaults are the seed's ASYNC_DB_CONFIG.
// The zero value of each optional field means its default.
type PostgresConfig struct {
	// DSN is a "postgres://" or "postgresql://" URL (or a libpq key=value string). Required.
	// It is never included in errors, since it may hold a password.
	DSN string
	// MinConns is the number of connections kept open. Optional; 0 means 5; negative is invalid.
	MinConns int32
	// MaxConns bounds the pool. Optional; 0 means 20; negative is invalid.
	MaxConns int32
	// MaxConnLifetime recycles a connection after this long. Optional; 0 means 3600s;
	// negative is invalid.
	MaxConnLifetime time.Duration
	// AcquireTimeout bounds the wait for a free pool connection; running out is a
	// transient error. Optional; 0 means 30s; negative is invalid.
	AcquireTimeout time.Duration
	// HealthCheckPeriod is how often idle connections are checked. Optional; 0 means 30s;
	// negative is invalid.
	HealthCheckPeriod time.Duration
	// MaxRetries is how many times ApplyBatch retries a transaction that failed with a
	// serialization failure (40001) or deadlock (40P01) before returning a transient error.
	// Optional; 0 means 5; negative means no retries.
	MaxRetries int
	// Options are the property rules. Optional; the zero value is the Python behaviour.
	Options Options
}

func (c *PostgresConfig) setDefaults() {
	if c.MinConns == 0 {
		c.MinConns = 5
	}
	if c.MaxConns == 0 {
		c.MaxConns = 20
	}
	if c.MaxConnLifetime == 0 {
		c.MaxConnLifetime = 3600 * time.Second
	}
	if c.AcquireTimeout == 0 {
		c.AcquireTimeout = 30 * time.Second
	}
	if c.HealthCheckPeriod == 0 {
		c.HealthCheckPeriod = 30 * time.Second
	}
	if c.MaxRetries == 0 {
		c.MaxRetries = 5
	}
	if c.MaxRetries < 0 {
		c.MaxRetries = 0
	}
}

// Validate reports every problem with c at once.
func (c PostgresConfig) Validate() error {
	var errs []error
	if c.DSN == "" {
		errs = append(errs, errors.New("graph: PostgresConfig.DSN is required"))
	}
	if c.MinConns < 0 || c.MaxConns < 0 {
		errs = append(errs, fmt.Errorf("graph: PostgresConfig.MinConns %d / MaxConns %d must not be negative", c.MinConns, c.MaxConns))
	}
	if c.MaxConns > 0 && c.MinConns > c.MaxConns {
		errs = append(errs, fmt.Errorf("graph: PostgresConfig.MinConns %d is over MaxConns %d", c.MinConns, c.MaxConns))
	}
	if c.MaxConnLifetime < 0 || c.AcquireTimeout < 0 || c.HealthCheckPeriod < 0 {
		errs = append(errs, errors.New("graph: PostgresConfig durations must not be negative"))
	}
	errs = append(errs, c.Options.Validate())
	return errors.Join(errs...)
}

// Postgres is the PostgreSQL graph store on a pgx connection pool. Transactions run at READ
// COMMITTED; rows are locked in id order (nodes, then edges) so overlapping batches do not
// deadlock, and serialization failures and deadlocks are retried inside ApplyBatch. Safe
// for concurrent use.
type Postgres struct {
	pool    *pgxpool.Pool
	acquire time.Duration
	retries int
	opts    Options
	closed  atomic.Bool
}

// OpenPostgres connects a pool to cfg.DSN and applies pending schema migrations under a
// transaction-scoped advisory lock, so several workers may open at once. It blocks until
// the migration is done; the caller must Close the store.
func OpenPostgres(ctx context.Context, cfg PostgresConfig) (*Postgres, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	pc, err := pgxpool.ParseConfig(cfg.DSN)
	if err != nil {
		// The parse error may quote the DSN; do not wrap it.
		return nil, errors.New("graph: parse PostgreSQL DSN: invalid connection string")
	}
	pc.MinConns = cfg.MinConns
	pc.MaxConns = cfg.MaxConns
	pc.MaxConnLifetime = cfg.MaxConnLifetime
	pc.MaxConnLifetimeJitter = cfg.MaxConnLifetime / 20
	pc.HealthCheckPeriod = cfg.HealthCheckPeriod
	// JIT compilation costs ~20 ms per query and kicks in on cost estimates alone: the
	// traversal's estimate is large whenever the walk's size is unknown (stale statistics
	// after bulk loads), which made a 1 ms depth-3 query take 25 ms. Nothing here is OLAP.
	if pc.ConnConfig.RuntimeParams == nil {
		pc.ConnConfig.RuntimeParams = map[string]string{}
	}
	if _, set := pc.ConnConfig.RuntimeParams["jit"]; !set {
		pc.ConnConfig.RuntimeParams["jit"] = "off"
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("graph: create PostgreSQL pool: %w", err)
	}
	s := &Postgres{pool: pool, acquire: cfg.AcquireTimeout, retries: cfg.MaxRetries, opts: cfg.Options}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// conn acquires a pool connection, waiting at most the acquire timeout.
func (s *Postgres) conn(ctx context.Context) (*pgxpool.Conn, error) {
	if s.closed.Load() {
		return nil, fault.Retry(fault.Transient, ErrClosed)
	}
	actx, cancel := context.WithTimeout(ctx, s.acquire)
	defer cancel()
	c, err := s.pool.Acquire(actx)
	if err != nil {
		if ctx.Err() == nil && actx.Err() != nil {
			return nil, fault.Retry(fault.Transient, fmt.Errorf("graph: no PostgreSQL connection free within %s: %w", s.acquire, err))
		}
		return nil, fmt.Errorf("graph: acquire PostgreSQL connection: %w", err)
	}
	return c, nil
}

func (s *Postgres) migrate(ctx context.Context) error {
	c, err := s.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	tx, err := c.Begin(ctx)
	if err != nil {
		return fmt.Errorf("graph: begin migration: %w", classifyPG(err))
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLockKey); err != nil {
		return fmt.Errorf("graph: take migration lock: %w", classifyPG(err))
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    integer PRIMARY KEY,
		name       text NOT NULL,
		applied_at bigint NOT NULL)`); err != nil {
		return fmt.Errorf("graph: create schema_migrations: %w", classifyPG(err))
	}
	var cur int
	if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&cur); err != nil {
		return fmt.Errorf("graph: read schema version: %w", classifyPG(err))
	}
	if cur > SchemaVersion() {
		return fmt.Errorf("graph: database has schema version %d, this build knows %d", cur, SchemaVersion())
	}
	for _, m := range migrations {
		if m.version <= cur {
			continue
		}
		for _, stmt := range m.postgres {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("graph: migration %d (%s): %w", m.version, m.name, classifyPG(err))
			}
		}
		if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)`,
			m.version, m.name, now().UnixMicro()); err != nil {
			return fmt.Errorf("graph: record migration %d: %w", m.version, classifyPG(err))
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("graph: commit migration: %w", classifyPG(err))
	}
	return nil
}

// SQLSTATEs that ApplyBatch retries itself.
const (
	sqlstateSerialization = "40001"
	sqlstateDeadlock      = "40P01"
)

func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// classifyPG marks integrity-constraint (class 23) and data (class 22) errors permanent,
// wrapping ErrInvalid; every other error stays transient. By SQLSTATE only.
func classifyPG(err error) error {
	if err == nil || fault.ClassOf(err) != fault.Transient {
		return err
	}
	code := pgCode(err)
	switch {
	case strings.HasPrefix(code, "23"), strings.HasPrefix(code, "22"):
		return fault.Permanent(fault.Validation, fmt.Errorf("%w: %w", ErrInvalid, err))
	case code != "":
		return fault.Retry(fault.Transient, err)
	}
	return err
}

// ApplyBatch implements Store.ApplyBatch. Serialization failures and deadlocks are retried
// up to MaxRetries times with a short jittered backoff; it blocks for those retries.
func (s *Postgres) ApplyBatch(ctx context.Context, env string, b Batch, msgID string) (res Result, err error) {
	// The transaction is a span: its env's graph and the nodes and edges it upserts.
	ctx, span := telemetry.StartSink(ctx, telemetry.ScopeGraph, "postgresql", "upsert", "graph_"+env, len(b.Nodes)+len(b.Edges))
	defer func() { telemetry.End(span, err) }()
	return s.applyBatch(ctx, env, b, msgID)
}

// applyBatch is ApplyBatch under its span.
func (s *Postgres) applyBatch(ctx context.Context, env string, b Batch, msgID string) (Result, error) {
	p, err := prepare(env, b, s.opts)
	if err != nil {
		return Result{}, err
	}
	props, err := encodeAll(p)
	if err != nil {
		return Result{}, err
	}
	for attempt := 0; ; attempt++ {
		res, err := s.applyOnce(ctx, p, props, msgID)
		if err == nil {
			return res, nil
		}
		code := pgCode(err)
		if (code != sqlstateSerialization && code != sqlstateDeadlock) || attempt >= s.retries {
			return Result{}, classifyPG(err)
		}
		backoff := time.Duration(rand.Int64N(int64(5*time.Millisecond<<attempt))) + time.Millisecond
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return Result{}, fmt.Errorf("graph: retry batch after %s: %w", code, ctx.Err())
		case <-t.C:
		}
	}
}

// encoded holds the JSON text of each prepared node's and edge's properties.
type encoded struct{ nodes, edges []string }

func encodeAll(p prepared) (encoded, error) {
	e := encoded{nodes: make([]string, len(p.nodes)), edges: make([]string, len(p.edges))}
	for i, n := range p.nodes {
		s, err := encodeProps(n.Properties)
		if err != nil {
			return e, fmt.Errorf("node %s: %w", n.ID, err)
		}
		e.nodes[i] = s
	}
	for i, x := range p.edges {
		s, err := encodeProps(x.Properties)
		if err != nil {
			return e, fmt.Errorf("edge %s: %w", x.ID, err)
		}
		e.edges[i] = s
	}
	return e, nil
}

// Node and edge upserts insert new rows and lock existing ones in one statement, in id
// order; the RETURNING list gives each existing row's stored properties to merge in Go.
// Every statement names the env ($env's position is given per statement).
const (
	pgUpsertNodes = `INSERT INTO graph_nodes AS g (env, id, type, properties, created_at, updated_at, version)
		SELECT $5, u.id, u.type, u.props::json, $4, $4, 1 FROM unnest($1::text[], $2::text[], $3::text[]) AS u(id, type, props) ORDER BY u.id
		ON CONFLICT (env, id) DO UPDATE SET updated_at = EXCLUDED.updated_at
		RETURNING g.id, (g.xmax = 0) AS inserted, g.properties::text`
	pgUpdateNodes = `UPDATE graph_nodes AS g SET properties = u.props::json, version = g.version + 1
		FROM unnest($1::text[], $2::text[]) AS u(id, props) WHERE g.env = $3 AND g.id = u.id`
	pgUpsertEdges = `INSERT INTO graph_edges AS g (env, id, source, type, target, properties, created_at, updated_at, version)
		SELECT $7, u.id, u.source, u.type, u.target, u.props::json, $6, $6, 1
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) AS u(id, source, type, target, props) ORDER BY u.id
		ON CONFLICT (env, id) DO UPDATE SET updated_at = EXCLUDED.updated_at
		RETURNING g.id, (g.xmax = 0) AS inserted, g.properties::text`
	pgUpdateEdges = `UPDATE graph_edges AS g SET properties = u.props::json, version = g.version + 1
		FROM unnest($1::text[], $2::text[]) AS u(id, props) WHERE g.env = $3 AND g.id = u.id`
	pgMissing = `SELECT x FROM unnest($1::text[]) AS x WHERE NOT EXISTS (SELECT 1 FROM graph_nodes n WHERE n.env = $2 AND n.id = x) ORDER BY x`
)

func (s *Postgres) applyOnce(ctx context.Context, p prepared, enc encoded, msgID string) (Result, error) {
	c, err := s.conn(ctx)
	if err != nil {
		return Result{}, err
	}
	defer c.Release()
	tx, err := c.Begin(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("graph: begin batch: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	res, err := applyIn(ctx, tx, p, enc, msgID)
	if err != nil {
		return res, err
	}
	if err := tx.Commit(ctx); err != nil {
		return Result{}, fmt.Errorf("graph: commit batch: %w", err)
	}
	return res, nil
}

// ApplyBatches implements Store.ApplyBatches. Each batch runs in a savepoint; a
// serialization failure or deadlock in any of them retries the whole transaction (its
// earlier savepoints' row locks are part of the conflict), up to MaxRetries times with a
// short jittered backoff, as ApplyBatch does; it blocks for those retries.
func (s *Postgres) ApplyBatches(ctx context.Context, bs []MarkedBatch) []BatchResult {
	ctx, span := startBatchesSpan(ctx, "postgresql", bs)
	defer span.End()
	return s.applyBatches(ctx, bs)
}

// applyBatches is ApplyBatches under its span.
func (s *Postgres) applyBatches(ctx context.Context, bs []MarkedBatch) []BatchResult {
	res := make([]BatchResult, len(bs))
	refused := make([]bool, len(bs))
	ps, pending := prepareBatches(bs, s.opts, res, refused)
	encs := make([]encoded, len(bs))
	for i := range bs {
		if refused[i] {
			continue
		}
		var err error
		if encs[i], err = encodeAll(ps[i]); err != nil {
			res[i].Err, refused[i] = err, true
			pending--
		}
	}
	if pending == 0 {
		return res
	}
	for attempt := 0; ; attempt++ {
		err := s.applyBatchesOnce(ctx, bs, ps, encs, refused, res)
		if err == nil {
			return res
		}
		code := pgCode(err)
		if (code != sqlstateSerialization && code != sqlstateDeadlock) || attempt >= s.retries {
			return failPending(res, refused, classifyPG(err))
		}
		backoff := time.Duration(rand.Int64N(int64(5*time.Millisecond<<attempt))) + time.Millisecond
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return failPending(res, refused, fmt.Errorf("graph: retry %d batches after %s: %w", pending, code, ctx.Err()))
		case <-t.C:
		}
	}
}

// applyBatchesOnce is one attempt of ApplyBatches: it fills res for every batch not refused
// and returns nil once the transaction committed, or the error that failed the whole
// transaction (res is then meaningless).
func (s *Postgres) applyBatchesOnce(ctx context.Context, bs []MarkedBatch, ps []prepared, encs []encoded, refused []bool, res []BatchResult) error {
	c, err := s.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	tx, err := c.Begin(ctx)
	if err != nil {
		return fmt.Errorf("graph: begin batches: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	for i := range bs {
		if refused[i] {
			continue
		}
		res[i] = BatchResult{}
		sp, err := tx.Begin(ctx) // SAVEPOINT
		if err != nil {
			return fmt.Errorf("graph: savepoint for batch %q: %w", bs[i].MsgID, err)
		}
		r, err := applyIn(ctx, sp, ps[i], encs[i], bs[i].MsgID)
		if err != nil {
			if code := pgCode(err); code == sqlstateSerialization || code == sqlstateDeadlock {
				return err
			}
			// The batch's own error is only quoted: it may be permanent, the loss is not.
			if rerr := sp.Rollback(ctx); rerr != nil {
				return fmt.Errorf("graph: roll back batch %q (it failed: %v): %w", bs[i].MsgID, err, rerr)
			}
			res[i].Err = classifyPG(err)
			continue
		}
		if err := sp.Commit(ctx); err != nil { // RELEASE SAVEPOINT
			return fmt.Errorf("graph: release savepoint of batch %q: %w", bs[i].MsgID, err)
		}
		res[i].Result = r
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("graph: commit batches: %w", err)
	}
	return nil
}

// applyIn writes one prepared batch and its apply marker inside tx (a transaction or a
// savepoint), which the caller commits or rolls back.
func applyIn(ctx context.Context, tx pgx.Tx, p prepared, enc encoded, msgID string) (Result, error) {
	var res Result
	ts := now().UnixMicro()
	if msgID != "" {
		tag, err := tx.Exec(ctx, `INSERT INTO graph_applied (env, msg_id, applied_at) VALUES ($1, $2, $3) ON CONFLICT (env, msg_id) DO NOTHING`, p.env, msgID, ts)
		if err != nil {
			return res, fmt.Errorf("graph: record apply marker %q: %w", msgID, err)
		}
		if tag.RowsAffected() == 0 {
			return Result{AlreadyApplied: true}, nil
		}
	}
	if len(p.nodes) > 0 {
		ids, types := make([]string, len(p.nodes)), make([]string, len(p.nodes))
		for i, n := range p.nodes {
			ids[i], types[i] = n.ID, n.Type
		}
		upd := make(map[string]map[string]any, len(p.nodes))
		for _, n := range p.nodes {
			upd[n.ID] = n.Properties
		}
		created, updIDs, updProps, err := upsertReturning(ctx, tx, "node", pgUpsertNodes, upd, ids, types, enc.nodes, ts, p.env)
		if err != nil {
			return res, err
		}
		res.NodesCreated, res.NodesUpdated = created, len(updIDs)
		if len(updIDs) > 0 {
			if _, err := tx.Exec(ctx, pgUpdateNodes, updIDs, updProps, p.env); err != nil {
				return res, fmt.Errorf("graph: update %d nodes: %w", len(updIDs), err)
			}
		}
	}
	if len(p.external) > 0 {
		rows, err := tx.Query(ctx, pgMissing, p.external, p.env)
		if err != nil {
			return res, fmt.Errorf("graph: check edge endpoints: %w", err)
		}
		missing, err := scanStrings(rows, func(err error) error { return err })
		rows.Close()
		if err != nil {
			return res, fmt.Errorf("graph: check edge endpoints: %w", err)
		}
		if err := missingEndpoints(p.edges, missing); err != nil {
			return res, err
		}
	}
	if len(p.edges) > 0 {
		n := len(p.edges)
		ids, srcs, types, tgts := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		upd := make(map[string]map[string]any, n)
		for i, e := range p.edges {
			ids[i], srcs[i], types[i], tgts[i] = e.ID, e.Source, e.Type, e.Target
			upd[e.ID] = e.Properties
		}
		created, updIDs, updProps, err := upsertReturning(ctx, tx, "edge", pgUpsertEdges, upd, ids, srcs, types, tgts, enc.edges, ts, p.env)
		if err != nil {
			return res, err
		}
		res.EdgesCreated, res.EdgesUpdated = created, len(updIDs)
		if len(updIDs) > 0 {
			if _, err := tx.Exec(ctx, pgUpdateEdges, updIDs, updProps, p.env); err != nil {
				return res, fmt.Errorf("graph: update %d edges: %w", len(updIDs), err)
			}
		}
	}
	return res, nil
}

// upsertReturning runs an upsert statement and, for each row that already existed, merges
// upd[id] into the returned stored properties. It returns the count of inserted rows and
// the ids and merged JSON of the existing ones.
func upsertReturning(ctx context.Context, tx pgx.Tx, what, query string, upd map[string]map[string]any, args ...any) (int, []string, []string, error) {
	rows, err := tx.Query(ctx, query, args...)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("graph: upsert %ss: %w", what, err)
	}
	defer rows.Close()
	created := 0
	var ids, props []string
	for rows.Next() {
		var id, old string
		var inserted bool
		if err := rows.Scan(&id, &inserted, &old); err != nil {
			return 0, nil, nil, fmt.Errorf("graph: upsert %ss: %w", what, err)
		}
		if inserted {
			created++
			continue
		}
		merged, err := mergeEncoded(old, upd[id])
		if err != nil {
			return 0, nil, nil, fmt.Errorf("%s %s: %w", what, id, err)
		}
		ids, props = append(ids, id), append(props, merged)
	}
	if err := rows.Err(); err != nil {
		return 0, nil, nil, fmt.Errorf("graph: upsert %ss: %w", what, err)
	}
	return created, ids, props, nil
}

// GetNode implements Store.GetNode.
func (s *Postgres) GetNode(ctx context.Context, env, id string) (Node, error) {
	if err := checkEnv(env); err != nil {
		return Node{}, fmt.Errorf("graph: get node %q: %w", id, err)
	}
	c, err := s.conn(ctx)
	if err != nil {
		return Node{}, err
	}
	defer c.Release()
	row := c.QueryRow(ctx, `SELECT id, type, properties::text, created_at, updated_at, version FROM graph_nodes WHERE env = $1 AND id = $2`, env, id)
	return readOne("node", env, id, row.Scan, scanNode, pgx.ErrNoRows, classifyPG)
}

// GetEdge implements Store.GetEdge.
func (s *Postgres) GetEdge(ctx context.Context, env, id string) (Edge, error) {
	if err := checkEnv(env); err != nil {
		return Edge{}, fmt.Errorf("graph: get edge %q: %w", id, err)
	}
	c, err := s.conn(ctx)
	if err != nil {
		return Edge{}, err
	}
	defer c.Release()
	row := c.QueryRow(ctx, `SELECT id, source, type, target, properties::text, created_at, updated_at, version FROM graph_edges WHERE env = $1 AND id = $2`, env, id)
	return readOne("edge", env, id, row.Scan, scanEdge, pgx.ErrNoRows, classifyPG)
}

// pgWalk walks both directions through a LATERAL union (PostgreSQL allows only one
// reference to the recursive table); UNION drops repeated (id, depth) pairs so cycles end.
// PostgreSQL evaluates a WITH query only as far as its reader fetches, so the outer LIMIT
// stops the walk itself once it passes the visit budget.
const pgWalk = `WITH RECURSIVE walk(id, depth) AS (
	SELECT $1::text, 0
	UNION
	SELECT nb.id, w.depth + 1 FROM walk w CROSS JOIN LATERAL (
		SELECT e.target AS id FROM graph_edges e WHERE e.env = $5 AND e.source = w.id AND ($3::text[] IS NULL OR e.type = ANY($3))
		UNION ALL
		SELECT e.source FROM graph_edges e WHERE e.env = $5 AND e.target = w.id AND ($3::text[] IS NULL OR e.type = ANY($3))
	) nb WHERE w.depth < $2
)
SELECT id, depth FROM walk LIMIT $4`

// pgWalkInto runs pgWalk into agg.
func pgWalkInto(ctx context.Context, c *pgxpool.Conn, agg *walkAgg, env string, depth int, types []string) error {
	rows, err := c.Query(ctx, pgWalk, agg.start, depth, types, agg.budget+1, env)
	if err != nil {
		return fmt.Errorf("graph: neighbors of %q: %w", agg.start, classifyPG(err))
	}
	defer rows.Close()
	return scanWalk(ctx, rows, classifyPG, agg)
}

// Neighbors implements Store.Neighbors: a recursive walk bounded by Options.MaxVisits and
// ctx, then one lookup of the nearest MaxNeighbors nodes.
func (s *Postgres) Neighbors(ctx context.Context, env, id string, depth int, edgeTypes []string) ([]Node, error) {
	if err := checkEnv(env); err != nil {
		return nil, fmt.Errorf("graph: neighbors of %q: %w", id, err)
	}
	c, err := s.conn(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Release()
	return neighbors(env, id, depth, s.opts.maxVisits(), neighborReads{
		walk: func(agg *walkAgg, depth int) error {
			var types []string // nil encodes as SQL NULL: no filter
			if len(edgeTypes) > 0 {
				types = edgeTypes
			}
			return pgWalkInto(ctx, c, agg, env, depth, types)
		},
		nodes: func(ids []string) ([]Node, error) {
			rows, err := c.Query(ctx, `SELECT id, type, properties::text, created_at, updated_at, version FROM graph_nodes WHERE env = $2 AND id = ANY($1)`, ids, env)
			if err != nil {
				return nil, classifyPG(err)
			}
			defer rows.Close()
			return scanNodes(rows, classifyPG)
		},
		exists: func() (bool, error) {
			var one int
			err := c.QueryRow(ctx, `SELECT 1 FROM graph_nodes WHERE env = $1 AND id = $2`, env, id).Scan(&one)
			return found(err, pgx.ErrNoRows, classifyPG)
		},
	})
}

// Stats implements Store.Stats.
func (s *Postgres) Stats(ctx context.Context, env string) (Stats, error) {
	if err := checkEnv(env); err != nil {
		return Stats{}, fmt.Errorf("graph: stats: %w", err)
	}
	c, err := s.conn(ctx)
	if err != nil {
		return Stats{}, err
	}
	defer c.Release()
	st := Stats{Nodes: map[string]int{}, Edges: map[string]int{}}
	for _, q := range []struct {
		table string
		into  map[string]int
	}{{"graph_nodes", st.Nodes}, {"graph_edges", st.Edges}} {
		if err := pgCount(ctx, c, q.table, env, q.into); err != nil {
			return Stats{}, fmt.Errorf("graph: count %s: %w", q.table, err)
		}
	}
	return st, nil
}

// pgCount reads the row count of each type of table in env into into.
func pgCount(ctx context.Context, c *pgxpool.Conn, table, env string, into map[string]int) error {
	rows, err := c.Query(ctx, `SELECT type, COUNT(*) FROM `+table+` WHERE env = $1 GROUP BY type`, env)
	if err != nil {
		return classifyPG(err)
	}
	defer rows.Close()
	return scanCounts(rows, classifyPG, into)
}

// Ping implements Store.Ping.
func (s *Postgres) Ping(ctx context.Context) error {
	c, err := s.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	if err := c.Ping(ctx); err != nil {
		return fmt.Errorf("graph: ping PostgreSQL: %w", err)
	}
	return nil
}

// pgPruneApplied deletes one chunk of old markers. SKIP LOCKED lets several workers prune
// at once without queueing behind each other's chunks.
const pgPruneApplied = `DELETE FROM graph_applied WHERE msg_id IN (
	SELECT msg_id FROM graph_applied WHERE env = $5 AND applied_at < $1 AND substr(msg_id, 1, $2) = $3
	LIMIT $4 FOR UPDATE SKIP LOCKED) AND env = $5`

// PruneApplied implements Store.PruneApplied. Each chunk is one autocommit statement on a
// connection acquired for that chunk only, so Close waits for one chunk at most.
func (s *Postgres) PruneApplied(ctx context.Context, env, prefix string, before time.Time) (int64, error) {
	if err := checkEnv(env); err != nil {
		return 0, fmt.Errorf("graph: prune apply markers: %w", err)
	}
	var total int64
	for {
		n, err := s.pruneOnce(ctx, env, prefix, before.UnixMicro())
		total += n
		if err != nil {
			return total, err
		}
		if n < pruneChunk {
			return total, nil
		}
	}
}

func (s *Postgres) pruneOnce(ctx context.Context, env, prefix string, before int64) (int64, error) {
	c, err := s.conn(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Release()
	tag, err := c.Exec(ctx, pgPruneApplied, before, utf8.RuneCountInString(prefix), prefix, pruneChunk, env)
	if err != nil {
		return 0, fmt.Errorf("graph: prune apply markers: %w", classifyPG(err))
	}
	return tag.RowsAffected(), nil
}

// Close implements Store.Close: it waits until every acquired connection is released, then
// closes the pool. Idempotent.
func (s *Postgres) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.pool.Close()
	return nil
}

// PoolStats is a snapshot of the connection pool, for metrics.
type PoolStats struct {
	TotalConns, IdleConns, AcquiredConns, ConstructingConns, MaxConns    int32
	AcquireCount, EmptyAcquireCount, CanceledAcquireCount, NewConnsCount int64
	MaxLifetimeDestroyCount, MaxIdleDestroyCount                         int64
	AcquireDuration, EmptyAcquireWaitTime                                time.Duration
}

// PoolStats returns a snapshot of the pool's counters. Safe for concurrent use; never blocks.
func (s *Postgres) PoolStats() PoolStats {
	st := s.pool.Stat()
	return PoolStats{
		TotalConns: st.TotalConns(), IdleConns: st.IdleConns(), AcquiredConns: st.AcquiredConns(),
		ConstructingConns: st.ConstructingConns(), MaxConns: st.MaxConns(),
		AcquireCount: st.AcquireCount(), EmptyAcquireCount: st.EmptyAcquireCount(),
		CanceledAcquireCount: st.CanceledAcquireCount(), NewConnsCount: st.NewConnsCount(),
		MaxLifetimeDestroyCount: st.MaxLifetimeDestroyCount(), MaxIdleDestroyCount: st.MaxIdleDestroyCount(),
		AcquireDuration: st.AcquireDuration(), EmptyAcquireWaitTime: st.EmptyAcquireWaitTime(),
	}
}
