package graph

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"modernc.org/sqlite"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/pipeline/telemetry"
	"github.com/sluice-dev/sluice/sinks/sqlitedb"
)

// SQLite result codes used for classification (primary codes; extended codes carry the
// primary code in their low byte).
const (
	sqliteBusy       = 5
	sqliteLocked     = 6
	sqliteTooBig     = 18
	sqliteConstraint = 19
	sqliteMismatch   = 20
)

// SQLiteConfig configures OpenSQLite. The zero value of each optional field means its default.
type SQLiteConfig struct {
	// Path is the database file; its parent directory is created if missing. Required;
	// must not contain '?'.
	Path string
	// MaxReadConns bounds the read pool (GetNode, Neighbors, Stats, Ping). Optional; 0
	// means 8; negative is invalid.
	MaxReadConns int
	// BusyTimeout is how long a connection waits for a lock held by another process before
	// failing with SQLITE_BUSY (a transient error). Optional; 0 means 5s; negative is invalid.
	BusyTimeout time.Duration
	// Options are the property rules. Optional; the zero value is the Python behaviour.
	Options Options
}

func (c *SQLiteConfig) setDefaults() {
	if c.MaxReadConns == 0 {
		c.MaxReadConns = 8
	}
	if c.BusyTimeout == 0 {
		c.BusyTimeout = 5 * time.Second
	}
}

// Validate reports every problem with c at once.
func (c SQLiteConfig) Validate() error {
	var errs []error
	if c.Path == "" {
		errs = append(errs, errors.New("graph: SQLiteConfig.Path is required"))
	}
	if strings.Contains(c.Path, "?") {
		errs = append(errs, fmt.Errorf("graph: SQLiteConfig.Path %q contains '?'", c.Path))
	}
	if c.MaxReadConns < 0 {
		errs = append(errs, fmt.Errorf("graph: SQLiteConfig.MaxReadConns %d is negative", c.MaxReadConns))
	}
	if c.BusyTimeout < 0 {
		errs = append(errs, fmt.Errorf("graph: SQLiteConfig.BusyTimeout %s is negative", c.BusyTimeout))
	}
	errs = append(errs, c.Options.Validate())
	return errors.Join(errs...)
}

// SQLite is the embedded graph store: one SQLite file in WAL mode with synchronous=FULL, so
// a committed batch is fsynced before ApplyBatch returns. Writes go through one writer
// connection (transactions start with BEGIN IMMEDIATE, so writers in other processes queue
// on the file lock); reads use a separate pool and never wait for writers. Safe for
// concurrent use.
type SQLite struct {
	w, r   *sql.DB
	path   string
	opts   Options
	closed atomic.Bool
}

// OpenSQLite opens (creating if needed) the graph database at cfg.Path and applies pending
// schema migrations. It blocks for the migration; the caller must Close the store.
func OpenSQLite(ctx context.Context, cfg SQLiteConfig) (*SQLite, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	path, err := filepath.Abs(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("graph: resolve path %q: %w", cfg.Path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("graph: create directory for %s: %w", path, err)
	}
	s := &SQLite{path: path, opts: cfg.Options}
	if err := s.open(ctx, cfg); err != nil {
		s.closeDBs()
		return nil, err
	}
	return s, nil
}

func (s *SQLite) open(ctx context.Context, cfg SQLiteConfig) error {
	db, err := sqlitedb.Open(ctx, sqlitedb.Config{Path: s.path, BusyTimeout: cfg.BusyTimeout, MaxReadConns: cfg.MaxReadConns, ForeignKeys: true})
	if err != nil {
		return fmt.Errorf("graph: %w", err)
	}
	s.w, s.r = db.W, db.R
	return s.migrate(ctx)
}

// PoolStats returns a snapshot of the writer and reader connection pools together, in the
// terms of the PostgreSQL pool's (Postgres.PoolStats): connections open, idle, in use and the
// limit, and the acquires that waited and for how long. Safe for concurrent use; never blocks.
func (s *SQLite) PoolStats() PoolStats {
	var st PoolStats
	for _, db := range []*sql.DB{s.w, s.r} {
		if db == nil {
			continue
		}
		d := db.Stats()
		st.TotalConns += int32(d.OpenConnections)
		st.IdleConns += int32(d.Idle)
		st.AcquiredConns += int32(d.InUse)
		st.MaxConns += int32(d.MaxOpenConnections)
		st.EmptyAcquireCount += d.WaitCount
		st.EmptyAcquireWaitTime += d.WaitDuration
	}
	return st
}

// migrate applies pending migrations in one BEGIN IMMEDIATE transaction, so several
// processes opening the same file at once apply each step exactly once.
func (s *SQLite) migrate(ctx context.Context) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return classifySQLite(fmt.Errorf("graph: begin migration on %s: %w", s.path, err))
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		name       TEXT NOT NULL,
		applied_at INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("graph: create schema_migrations: %w", err)
	}
	var cur int
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&cur); err != nil {
		return fmt.Errorf("graph: read schema version: %w", err)
	}
	if cur > SchemaVersion() {
		return fmt.Errorf("graph: %s has schema version %d, this build knows %d", s.path, cur, SchemaVersion())
	}
	for _, m := range migrations {
		if m.version <= cur {
			continue
		}
		for _, stmt := range m.sqlite {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("graph: migration %d (%s): %w", m.version, m.name, err)
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
			m.version, m.name, now().UnixMicro()); err != nil {
			return fmt.Errorf("graph: record migration %d: %w", m.version, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return classifySQLite(fmt.Errorf("graph: commit migration: %w", err))
	}
	return nil
}

// classifySQLite marks constraint, size and type errors permanent (wrapping ErrInvalid) and
// busy/locked errors transient, by result code. Other errors are returned unchanged
// (unmarked, hence transient).
func classifySQLite(err error) error {
	var se *sqlite.Error
	if err == nil || fault.ClassOf(err) != fault.Transient || !errors.As(err, &se) {
		return err
	}
	switch se.Code() & 0xff {
	case sqliteConstraint, sqliteTooBig, sqliteMismatch:
		return fault.Permanent(fault.Validation, fmt.Errorf("%w: %w", ErrInvalid, err))
	case sqliteBusy, sqliteLocked:
		return fault.Retry(fault.Transient, err)
	}
	return err
}

func (s *SQLite) checkOpen() error {
	if s.closed.Load() {
		return fault.Retry(fault.Transient, ErrClosed)
	}
	return nil
}

// ApplyBatch implements Store.ApplyBatch. It blocks while another batch of this store is
// being written (one writer connection) and while another process holds the file's write
// lock, up to the busy timeout.
func (s *SQLite) ApplyBatch(ctx context.Context, env string, b Batch, msgID string) (res Result, err error) {
	// The transaction is a span: its env's graph and the nodes and edges it upserts.
	ctx, span := telemetry.StartSink(ctx, telemetry.ScopeGraph, "sqlite", "upsert", "graph_"+env, len(b.Nodes)+len(b.Edges))
	defer func() { telemetry.End(span, err) }()
	return s.applyBatch(ctx, env, b, msgID)
}

// applyBatch is ApplyBatch under its span.
func (s *SQLite) applyBatch(ctx context.Context, env string, b Batch, msgID string) (Result, error) {
	if err := s.checkOpen(); err != nil {
		return Result{}, err
	}
	p, err := prepare(env, b, s.opts)
	if err != nil {
		return Result{}, err
	}
	res, err := s.apply(ctx, p, msgID)
	if err != nil {
		return Result{}, classifySQLite(err)
	}
	return res, nil
}

func (s *SQLite) apply(ctx context.Context, p prepared, msgID string) (Result, error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return Result{}, fmt.Errorf("graph: begin batch: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	res, err := s.applyIn(ctx, tx, p, msgID)
	if err != nil {
		return res, err
	}
	if err := tx.Commit(); err != nil {
		return Result{}, fmt.Errorf("graph: commit batch: %w", err)
	}
	return res, nil
}

// ApplyBatches implements Store.ApplyBatches. It blocks like ApplyBatch: one transaction on
// the writer connection for all of bs.
func (s *SQLite) ApplyBatches(ctx context.Context, bs []MarkedBatch) []BatchResult {
	ctx, span := startBatchesSpan(ctx, "sqlite", bs)
	defer span.End()
	return s.applyBatches(ctx, bs)
}

// applyBatches is ApplyBatches under its span.
func (s *SQLite) applyBatches(ctx context.Context, bs []MarkedBatch) []BatchResult {
	res := make([]BatchResult, len(bs))
	refused := make([]bool, len(bs))
	if len(bs) == 0 {
		return res
	}
	if err := s.checkOpen(); err != nil {
		return failPending(res, refused, err)
	}
	ps, pending := prepareBatches(bs, s.opts, res, refused)
	if pending == 0 {
		return res
	}
	fail := func(err error) []BatchResult { return failPending(res, refused, classifySQLite(err)) }
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fail(fmt.Errorf("graph: begin %d batches: %w", pending, err))
	}
	defer func() { _ = tx.Rollback() }()
	for i := range bs {
		if refused[i] {
			continue
		}
		if _, err := tx.ExecContext(ctx, `SAVEPOINT batch`); err != nil {
			return fail(fmt.Errorf("graph: savepoint for batch %q: %w", bs[i].MsgID, err))
		}
		r, err := s.applyIn(ctx, tx, ps[i], bs[i].MsgID)
		if err != nil {
			// SQLite may have rolled back the whole transaction by itself (SQLITE_FULL,
			// IOERR, NOMEM, an interrupt): then the savepoint is gone, this fails, and so
			// does every batch, including those applied before.
			if _, rerr := tx.ExecContext(ctx, `ROLLBACK TO batch`); rerr != nil {
				// The batch's own error is only quoted: it may be permanent, the loss is not.
				return fail(fmt.Errorf("graph: roll back batch %q (it failed: %v): %w", bs[i].MsgID, err, rerr))
			}
			res[i].Err = classifySQLite(err)
		} else {
			res[i].Result = r
		}
		if _, err := tx.ExecContext(ctx, `RELEASE batch`); err != nil {
			return fail(fmt.Errorf("graph: release savepoint of batch %q: %w", bs[i].MsgID, err))
		}
	}
	if err := tx.Commit(); err != nil {
		return fail(fmt.Errorf("graph: commit %d batches: %w", pending, err))
	}
	return res
}

// applyIn writes one prepared batch and its apply marker inside tx, which the caller commits
// or rolls back.
func (s *SQLite) applyIn(ctx context.Context, tx *sql.Tx, p prepared, msgID string) (Result, error) {
	var res Result
	ts := now().UnixMicro()
	if msgID != "" {
		r, err := tx.ExecContext(ctx, `INSERT INTO graph_applied (env, msg_id, applied_at) VALUES (?, ?, ?) ON CONFLICT (env, msg_id) DO NOTHING`, p.env, msgID, ts)
		if err != nil {
			return res, fmt.Errorf("graph: record apply marker %q: %w", msgID, err)
		}
		if n, err := r.RowsAffected(); err != nil {
			return res, fmt.Errorf("graph: record apply marker %q: %w", msgID, err)
		} else if n == 0 {
			return Result{AlreadyApplied: true}, nil
		}
	}
	if len(p.nodes) > 0 {
		if err := s.upsertNodes(ctx, tx, p.env, p.nodes, ts, &res); err != nil {
			return res, err
		}
	}
	if len(p.external) > 0 {
		if err := s.checkEndpoints(ctx, tx, p); err != nil {
			return res, err
		}
	}
	if len(p.edges) > 0 {
		if err := s.upsertEdges(ctx, tx, p.env, p.edges, ts, &res); err != nil {
			return res, err
		}
	}
	return res, nil
}

func (s *SQLite) upsertNodes(ctx context.Context, tx *sql.Tx, env string, nodes []Node, ts int64, res *Result) error {
	sel, err := tx.PrepareContext(ctx, `SELECT properties FROM graph_nodes WHERE env = ? AND id = ?`)
	if err != nil {
		return fmt.Errorf("graph: prepare node read: %w", err)
	}
	defer sel.Close()
	ins, err := tx.PrepareContext(ctx, `INSERT INTO graph_nodes (env, id, type, properties, created_at, updated_at, version) VALUES (?, ?, ?, ?, ?, ?, 1)`)
	if err != nil {
		return fmt.Errorf("graph: prepare node insert: %w", err)
	}
	defer ins.Close()
	upd, err := tx.PrepareContext(ctx, `UPDATE graph_nodes SET properties = ?, updated_at = ?, version = version + 1 WHERE env = ? AND id = ?`)
	if err != nil {
		return fmt.Errorf("graph: prepare node update: %w", err)
	}
	defer upd.Close()
	for _, n := range nodes {
		var old string
		switch err := sel.QueryRowContext(ctx, env, n.ID).Scan(&old); {
		case errors.Is(err, sql.ErrNoRows):
			props, err := encodeProps(n.Properties)
			if err != nil {
				return fmt.Errorf("node %s: %w", n.ID, err)
			}
			if _, err := ins.ExecContext(ctx, env, n.ID, n.Type, props, ts, ts); err != nil {
				return fmt.Errorf("graph: insert node %s: %w", n.ID, err)
			}
			res.NodesCreated++
		case err != nil:
			return fmt.Errorf("graph: read node %s: %w", n.ID, err)
		default:
			props, err := mergeEncoded(old, n.Properties)
			if err != nil {
				return fmt.Errorf("node %s: %w", n.ID, err)
			}
			if _, err := upd.ExecContext(ctx, props, ts, env, n.ID); err != nil {
				return fmt.Errorf("graph: update node %s: %w", n.ID, err)
			}
			res.NodesUpdated++
		}
	}
	return nil
}

func (s *SQLite) upsertEdges(ctx context.Context, tx *sql.Tx, env string, edges []Edge, ts int64, res *Result) error {
	sel, err := tx.PrepareContext(ctx, `SELECT properties FROM graph_edges WHERE env = ? AND id = ?`)
	if err != nil {
		return fmt.Errorf("graph: prepare edge read: %w", err)
	}
	defer sel.Close()
	ins, err := tx.PrepareContext(ctx, `INSERT INTO graph_edges (env, id, source, type, target, properties, created_at, updated_at, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)`)
	if err != nil {
		return fmt.Errorf("graph: prepare edge insert: %w", err)
	}
	defer ins.Close()
	upd, err := tx.PrepareContext(ctx, `UPDATE graph_edges SET properties = ?, updated_at = ?, version = version + 1 WHERE env = ? AND id = ?`)
	if err != nil {
		return fmt.Errorf("graph: prepare edge update: %w", err)
	}
	defer upd.Close()
	for _, e := range edges {
		var old string
		switch err := sel.QueryRowContext(ctx, env, e.ID).Scan(&old); {
		case errors.Is(err, sql.ErrNoRows):
			props, err := encodeProps(e.Properties)
			if err != nil {
				return fmt.Errorf("edge %s: %w", e.ID, err)
			}
			if _, err := ins.ExecContext(ctx, env, e.ID, e.Source, e.Type, e.Target, props, ts, ts); err != nil {
				return fmt.Errorf("graph: insert edge %s (%s -%s-> %s): %w", e.ID, e.Source, e.Type, e.Target, err)
			}
			res.EdgesCreated++
		case err != nil:
			return fmt.Errorf("graph: read edge %s: %w", e.ID, err)
		default:
			props, err := mergeEncoded(old, e.Properties)
			if err != nil {
				return fmt.Errorf("edge %s: %w", e.ID, err)
			}
			if _, err := upd.ExecContext(ctx, props, ts, env, e.ID); err != nil {
				return fmt.Errorf("graph: update edge %s: %w", e.ID, err)
			}
			res.EdgesUpdated++
		}
	}
	return nil
}

// checkEndpoints fails permanently when an edge endpoint that is not in the batch is not
// stored in the batch's env either, naming the first edge that needs it.
func (s *SQLite) checkEndpoints(ctx context.Context, tx *sql.Tx, p prepared) error {
	ids, err := encodeIDs(p.external)
	if err != nil {
		return err
	}
	rows, err := tx.QueryContext(ctx, `SELECT j.value FROM json_each(?) AS j
		WHERE NOT EXISTS (SELECT 1 FROM graph_nodes n WHERE n.env = ? AND n.id = j.value) ORDER BY j.value`, ids, p.env)
	if err != nil {
		return fmt.Errorf("graph: check edge endpoints: %w", err)
	}
	defer rows.Close()
	missing, err := scanStrings(rows, func(err error) error { return err })
	if err != nil {
		return fmt.Errorf("graph: check edge endpoints: %w", err)
	}
	return missingEndpoints(p.edges, missing)
}

// GetNode implements Store.GetNode. It reads from the reader pool and never waits for writers.
func (s *SQLite) GetNode(ctx context.Context, env, id string) (Node, error) {
	if err := s.checkOpen(); err != nil {
		return Node{}, err
	}
	if err := checkEnv(env); err != nil {
		return Node{}, fmt.Errorf("graph: get node %q: %w", id, err)
	}
	row := s.r.QueryRowContext(ctx, `SELECT id, type, properties, created_at, updated_at, version FROM graph_nodes WHERE env = ? AND id = ?`, env, id)
	return readOne("node", env, id, row.Scan, scanNode, sql.ErrNoRows, classifySQLite)
}

// GetEdge implements Store.GetEdge on the reader pool.
func (s *SQLite) GetEdge(ctx context.Context, env, id string) (Edge, error) {
	if err := s.checkOpen(); err != nil {
		return Edge{}, err
	}
	if err := checkEnv(env); err != nil {
		return Edge{}, fmt.Errorf("graph: get edge %q: %w", id, err)
	}
	row := s.r.QueryRowContext(ctx, `SELECT id, source, type, target, properties, created_at, updated_at, version FROM graph_edges WHERE env = ? AND id = ?`, env, id)
	return readOne("edge", env, id, row.Scan, scanEdge, sql.ErrNoRows, classifySQLite)
}

// walk runs a walk query (rows of id, depth) into agg.
func (s *SQLite) walk(ctx context.Context, agg *walkAgg, query string, args []any) error {
	classify := func(err error) error { return classifySQLite(ctxErr(ctx, err)) }
	rows, err := s.r.QueryContext(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("graph: neighbors of %q: %w", agg.start, classify(err))
	}
	defer rows.Close()
	return scanWalk(ctx, rows, classify, agg)
}

// ctxErr returns ctx's error when ctx has ended (the driver reports an interrupted query in
// its own terms), else err.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	return err
}

// sqliteWalk is the walk query of Neighbors: ?1 the start id, ?2 the depth, ?3 the env,
// then filter's edge types, and ?limitArg the visit budget plus one. Walks of length <=
// depth from the start, in both directions; UNION drops repeated (id, depth) pairs, so
// cycles terminate. The LIMIT stops the walk itself once it passes the visit budget; the
// smallest depth of each id (its BFS distance) is kept as the rows stream in.
//
// CROSS JOIN keeps the walk as the outer loop: with the env a constant, the planner would
// otherwise scan every edge of the env through an index led by env and probe the walk for
// each (a 300-step budget took 6 s instead of milliseconds).
func sqliteWalk(filter string, limitArg int) string {
	return `WITH RECURSIVE walk(id, depth) AS (
			SELECT ?1, 0
			UNION
			SELECT e.target, w.depth + 1 FROM walk w CROSS JOIN graph_edges e ON e.env = ?3 AND e.source = w.id WHERE w.depth < ?2` + filter + `
			UNION
			SELECT e.source, w.depth + 1 FROM walk w CROSS JOIN graph_edges e ON e.env = ?3 AND e.target = w.id WHERE w.depth < ?2` + filter + `
			LIMIT ?` + fmt.Sprint(limitArg) + `
		)
		SELECT id, depth FROM walk`
}

// Neighbors implements Store.Neighbors on the reader pool: a recursive walk bounded by
// Options.MaxVisits and ctx, then one lookup of the nearest MaxNeighbors nodes.
func (s *SQLite) Neighbors(ctx context.Context, env, id string, depth int, edgeTypes []string) ([]Node, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	if err := checkEnv(env); err != nil {
		return nil, fmt.Errorf("graph: neighbors of %q: %w", id, err)
	}
	return neighbors(env, id, depth, s.opts.maxVisits(), neighborReads{
		walk: func(agg *walkAgg, depth int) error {
			filter, args := "", []any{id, depth, env}
			if len(edgeTypes) > 0 {
				ph := make([]string, len(edgeTypes))
				for i, t := range edgeTypes {
					ph[i] = fmt.Sprintf("?%d", i+4)
					args = append(args, t)
				}
				// The unary + keeps the planner on the (source|target, type, …) indexes: without
				// statistics it may pick graph_edges_type and scan every edge of the type per step.
				filter = " AND +e.type IN (" + strings.Join(ph, ", ") + ")"
			}
			args = append(args, agg.budget+1)
			return s.walk(ctx, agg, sqliteWalk(filter, len(args)), args)
		},
		nodes: func(ids []string) ([]Node, error) {
			args := make([]any, 1, len(ids)+1)
			args[0] = env
			for _, v := range ids {
				args = append(args, v)
			}
			rows, err := s.r.QueryContext(ctx, `SELECT id, type, properties, created_at, updated_at, version
				FROM graph_nodes WHERE env = ? AND id IN (?`+strings.Repeat(",?", len(ids)-1)+`)`, args...)
			if err != nil {
				return nil, classifySQLite(err)
			}
			defer rows.Close()
			return scanNodes(rows, classifySQLite)
		},
		exists: func() (bool, error) {
			var one int
			err := s.r.QueryRowContext(ctx, `SELECT 1 FROM graph_nodes WHERE env = ? AND id = ?`, env, id).Scan(&one)
			return found(err, sql.ErrNoRows, classifySQLite)
		},
	})
}

// Stats implements Store.Stats.
func (s *SQLite) Stats(ctx context.Context, env string) (Stats, error) {
	if err := s.checkOpen(); err != nil {
		return Stats{}, err
	}
	if err := checkEnv(env); err != nil {
		return Stats{}, fmt.Errorf("graph: stats: %w", err)
	}
	st := Stats{Nodes: map[string]int{}, Edges: map[string]int{}}
	for _, q := range []struct {
		table string
		into  map[string]int
	}{{"graph_nodes", st.Nodes}, {"graph_edges", st.Edges}} {
		if err := s.count(ctx, q.table, env, q.into); err != nil {
			return Stats{}, fmt.Errorf("graph: count %s: %w", q.table, err)
		}
	}
	return st, nil
}

// count reads the row count of each type of table in env into into.
func (s *SQLite) count(ctx context.Context, table, env string, into map[string]int) error {
	rows, err := s.r.QueryContext(ctx, `SELECT type, COUNT(*) FROM `+table+` WHERE env = ? GROUP BY type`, env)
	if err != nil {
		return classifySQLite(err)
	}
	defer rows.Close()
	return scanCounts(rows, classifySQLite, into)
}

// Ping implements Store.Ping.
func (s *SQLite) Ping(ctx context.Context) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	if err := s.r.PingContext(ctx); err != nil {
		return fmt.Errorf("graph: ping %s: %w", s.path, err)
	}
	return nil
}

// PruneApplied implements Store.PruneApplied. Each chunk is one autocommit DELETE on the
// writer connection, so batches of this store queue behind one chunk at most, and writers
// in other processes wait for the file lock no longer than that either.
func (s *SQLite) PruneApplied(ctx context.Context, env, prefix string, before time.Time) (int64, error) {
	var total int64
	if err := checkEnv(env); err != nil {
		return 0, fmt.Errorf("graph: prune apply markers: %w", err)
	}
	for {
		if err := s.checkOpen(); err != nil {
			return total, err
		}
		if err := ctx.Err(); err != nil {
			return total, fmt.Errorf("graph: prune apply markers: %w", err)
		}
		r, err := s.w.ExecContext(ctx, `DELETE FROM graph_applied WHERE rowid IN (
			SELECT rowid FROM graph_applied WHERE env = ? AND applied_at < ? AND substr(msg_id, 1, ?) = ? LIMIT ?)`,
			env, before.UnixMicro(), utf8.RuneCountInString(prefix), prefix, pruneChunk)
		if err != nil {
			return total, fmt.Errorf("graph: prune apply markers: %w", classifySQLite(err))
		}
		n, err := r.RowsAffected()
		if err != nil {
			return total, fmt.Errorf("graph: prune apply markers: %w", classifySQLite(err))
		}
		total += n
		if n < pruneChunk {
			return total, nil
		}
	}
}

// Close implements Store.Close: it waits for running calls' connections to be returned and
// closes the file. Idempotent.
func (s *SQLite) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	return s.closeDBs()
}

func (s *SQLite) closeDBs() error {
	var errs []error
	if s.r != nil {
		errs = append(errs, s.r.Close())
	}
	if s.w != nil {
		errs = append(errs, s.w.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("graph: close %s: %w", s.path, err)
	}
	return nil
}
