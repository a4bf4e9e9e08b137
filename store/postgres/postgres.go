// Package postgres is wgkeeper's PostgreSQL backend of the store contract
// (store.Store), for many nodes sharing one database: the desired state of
// every peer, the address allocator, the event outbox and connection log,
// and the nodes with the interfaces each declares.
//
// It is one of the two packages that speak SQL (store/sqlite is the
// other); no pgx type leaves it. It holds the same values as the SQLite
// backend (times as nanoseconds, keys and addresses as canonical text) and
// passes the same conformance suite (store/storetest).
//
// Concurrency across nodes: an allocation locks its profile's pool row
// (SELECT … FOR UPDATE) for the per-user count and the lowest free index,
// the unique indexes are the last guard, and a transaction that fails
// with a serialization failure or a deadlock is retried a few times.
// The steps of a create (insert, start of the connect script, activation)
// are server-side functions (migrations 0003 and 0004), each one
// statement and one round trip, taking the same locks in the same order
// as a transaction of separate statements would: the lock of the pool row
// is held for one round trip instead of eight.
// Events are claimed with FOR UPDATE SKIP LOCKED. Changes are announced
// with NOTIFY by triggers, so every writer announces them, and handles
// learn of them through LISTEN on a dedicated connection. The cluster-wide
// jobs run on the one handle that holds a session advisory lock, on
// another dedicated connection of its own (LeadCluster).
//
// Transaction-mode connection poolers (PgBouncer's pool_mode=transaction)
// break LISTEN and session advisory locks: connect directly, or through a
// session-mode pooler.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/wgkeeper/wgkeeper/migrations"
	"github.com/wgkeeper/wgkeeper/store"
)

// migrationFS holds the PostgreSQL schema, NNNN_name.sql files applied in
// order, each in its own transaction (the same rules as the SQLite ones).
//
//go:embed migrations/*.sql
var migrationFS embed.FS

// Migrations returns the PostgreSQL schema's migrations in order.
func Migrations() ([]migrations.Migration, error) {
	sub, err := fs.Sub(migrationFS, "migrations")
	if err != nil {
		return nil, err
	}
	return migrations.List(sub)
}

// IsURL reports whether a `database` value names a PostgreSQL database: a
// postgres:// or postgresql:// URL. Anything else is a SQLite path.
func IsURL(database string) bool {
	l := strings.ToLower(database)
	return strings.HasPrefix(l, "postgres://") || strings.HasPrefix(l, "postgresql://")
}

// Redact returns the URL with its password replaced by "xxxxx", for logs
// and messages.
func Redact(database string) string {
	u, err := url.Parse(database)
	if err != nil {
		return "(an unparsable URL)"
	}
	return u.Redacted()
}

// Options configure a Store. The zero value is valid.
type Options struct {
	// Now is the clock for created_at, done_at and friends; nil means
	// time.Now. Its result is converted to UTC.
	Now func() time.Time
	// Logger receives migration and connection notices; nil discards.
	Logger *slog.Logger
	// Create applies the schema to a database that has none yet (the
	// database itself must exist: PostgreSQL's administrator creates it).
	// Without it Open fails with ErrNoDatabase on a database without
	// wgkeeper's schema and changes nothing.
	Create bool
	// Node is the node this handle works for; "" for none. A handle with
	// a node claims (ClaimDue, NextDue) only the events of that node and
	// those no node owns (recorded for an interface no node declares)
	// of the interfaces in Interfaces, looks (NextExpiry) only at the
	// configs of Interfaces, and hears, through Changes, of the changes
	// that concern its node's interfaces (LISTEN on its node's channel);
	// without one it claims every event, looks at every config and hears
	// of every change.
	Node string
	// Interfaces are the interfaces the node's configuration declares
	// (with Node only): the node delivers no event and expires no config
	// of any other interface, so that a script never runs on a node whose
	// firewall is not the event's.
	Interfaces []string
	// MaxConns bounds the connection pool; 0 means 16.
	MaxConns int32

	// tracer, when set, sees every statement the pool's connections send
	// (the round-trip count tests).
	tracer pgx.QueryTracer
	// upTo, when set, stops the migrations at that version (the upgrade
	// tests build a database of an older version with it).
	upTo int
}

// Store is an open PostgreSQL database. It is safe for concurrent use, and
// any number of Stores, on any number of hosts, may share one database.
type Store struct {
	pool *pgxpool.Pool
	cfg  *pgxpool.Config
	now  func() time.Time
	log  *slog.Logger
	node string
	// ifaces are Options.Interfaces (never nil, for the queries).
	ifaces []string
	name   string // the URL without its password, for messages
	// noConnectHold: the schema lacks nodes.connect_hold (migration
	// 0005). Only a Store the upgrade tests stop at an older version
	// (Options.upTo), acting as a node of that version, runs so: it
	// neither records nor reads the nodes' connect holds.
	noConnectHold bool

	lmu     sync.Mutex // guards the listener fields below
	started bool       // the listener goroutine runs
	subs    map[chan struct{}]struct{}
	// resyncSubs are the Resyncs channels.
	resyncSubs map[chan struct{}]struct{}
	notified   uint64 // notifications the listener received

	// cmu guards cluster, and is held across its connection's round
	// trips (one LeadCluster at a time). Taken after closed is closed in
	// Close; never held with lmu.
	cmu     sync.Mutex
	cluster clusterConn // the cluster-job lock's dedicated connection

	closed    chan struct{} // closed by Close
	closeOnce sync.Once
	wg        sync.WaitGroup // the listener goroutine
}

var _ store.Store = (*Store)(nil)

// Open connects to the database at the URL and applies the embedded
// migrations it lacks (with opts.Create, or when it already has wgkeeper's
// schema). A database without the schema and without opts.Create fails
// with ErrNoDatabase and is left untouched; a schema newer than this
// binary knows fails with a *SchemaTooNewError (matching ErrSchemaTooNew).
// A server that cannot be reached fails with an *UnavailableError
// (CauseUnreachable). Open is safe to run concurrently on many nodes: each
// migration is applied once, under an advisory lock.
func Open(ctx context.Context, database string, opts Options) (*Store, error) {
	name := Redact(database)
	if !IsURL(database) {
		return nil, fmt.Errorf("open database %s: not a postgres:// or postgresql:// URL", name)
	}
	cfg, err := pgxpool.ParseConfig(database)
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", name, err)
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		cfg.ConnConfig.RuntimeParams["application_name"] = "wgkeeper"
	}
	cfg.MaxConns = 16
	if opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	}
	if opts.tracer != nil {
		cfg.ConnConfig.Tracer = opts.tracer
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = 10 * time.Second
	}
	s := &Store{cfg: cfg, now: opts.Now, log: opts.Logger, node: opts.Node, ifaces: append([]string{}, opts.Interfaces...), name: name,
		subs: map[chan struct{}]struct{}{}, resyncSubs: map[chan struct{}]struct{}{}, closed: make(chan struct{})}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s.pool, err = pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", name, err)
	}
	s.noConnectHold = opts.upTo > 0 && opts.upTo < connectHoldVersion
	if err := s.migrate(ctx, opts.Create, opts.upTo); err != nil {
		s.pool.Close()
		var tooNew *store.SchemaTooNewError
		if errors.As(err, &tooNew) || errors.Is(err, store.ErrNoDatabase) {
			return nil, fmt.Errorf("open database %s: %w", name, err)
		}
		return nil, fmt.Errorf("open database %s: %w", name, err)
	}
	return s, nil
}

// Close closes the pool, the listener and the cluster-job lock's
// connection (releasing the lock). Calling it again returns nil.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.lmu.Lock() // Changes adds to wg only under lmu, before closed is closed
		close(s.closed)
		s.lmu.Unlock()
		s.wg.Wait()
		s.cmu.Lock() // a LeadCluster in progress ends within its timeouts
		s.cluster.drop()
		s.cmu.Unlock()
		s.pool.Close()
	})
	return nil
}

// connectHoldVersion is the schema version that adds nodes.connect_hold.
const connectHoldVersion = 5

// migrationLock is the advisory lock key under which migrations run.
const migrationLock = 0x776b6d6967726174 // "wkmigrat"

// migrate applies the migrations the database lacks, each in its own
// transaction holding migrationLock, recording them in schema_migrations;
// with upTo > 0, only those up to version upTo.
func (s *Store) migrate(ctx context.Context, create bool, upTo int) error {
	all, err := Migrations()
	if err != nil {
		return err
	}
	known := len(all)
	current, err := schemaVersion(ctx, s.pool)
	if err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if current > known {
		return &store.SchemaTooNewError{Version: current, Known: known}
	}
	if current == 0 && !create {
		return fmt.Errorf("the database has no wgkeeper schema: %w", store.ErrNoDatabase)
	}
	todo := all[current:]
	if upTo > 0 {
		todo = all[min(current, upTo):upTo]
	}
	for _, m := range todo {
		applied := false
		err := s.write(ctx, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrationLock)); err != nil {
				return convErr(err)
			}
			// Another node may have applied it since we looked. (Creating
			// the table first, rather than asking the catalog whether it
			// exists, also makes this session see another's new tables:
			// an advisory lock does not refresh its view of the catalog.)
			if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
				version    integer NOT NULL PRIMARY KEY,
				name       text    NOT NULL,
				applied_at bigint  NOT NULL
			)`); err != nil {
				return convErr(err)
			}
			var v int
			if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&v); err != nil {
				return convErr(err)
			}
			if v > known {
				return &store.SchemaTooNewError{Version: v, Known: known}
			}
			if v >= m.Version {
				return nil
			}
			if v != m.Version-1 {
				return fmt.Errorf("database is at version %d, cannot apply %d", v, m.Version)
			}
			// Simple protocol: a file holds many statements.
			if _, err := tx.Exec(ctx, m.SQL, pgx.QueryExecModeSimpleProtocol); err != nil {
				return convErr(err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)`,
				m.Version, m.Name, s.clock().UnixNano()); err != nil {
				return convErr(err)
			}
			applied = true
			return nil
		})
		if err != nil {
			var tooNew *store.SchemaTooNewError
			if errors.As(err, &tooNew) {
				return err
			}
			return fmt.Errorf("apply migration %04d_%s: %w", m.Version, m.Name, err)
		}
		if applied {
			s.log.Info("applied database migration", "version", m.Version, "name", m.Name)
		}
	}
	return nil
}

// querier is what both a pool and a transaction offer.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// schemaVersion reads the highest recorded migration; 0 on a database
// without the schema.
func schemaVersion(ctx context.Context, q querier) (int, error) {
	var exists bool
	if err := q.QueryRow(ctx, `SELECT to_regclass('schema_migrations') IS NOT NULL`).Scan(&exists); err != nil {
		return 0, convErr(err)
	}
	if !exists {
		return 0, nil
	}
	var v int
	if err := q.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, convErr(err)
	}
	return v, nil
}

// SchemaVersion returns the highest migration applied to the database.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	v, err := schemaVersion(ctx, s.pool)
	if err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return v, nil
}

// clock returns the injected time in UTC.
func (s *Store) clock() time.Time { return s.now().UTC() }

// maxTries bounds how often write runs a transaction that failed with a
// serialization failure, a deadlock, or errRetry (a unique violation of a
// host index, which the pool lock makes impossible; retried all the same).
const maxTries = 5

// write runs fn in one read-committed transaction, committing when fn
// returns nil. A transaction that fails transiently (see maxTries) is run
// again, from the start, after a short randomised pause.
func (s *Store) write(ctx context.Context, fn func(tx pgx.Tx) error) error {
	return s.retry(ctx, func() error { return s.writeOnce(ctx, fn) })
}

// retry runs fn, a transaction or a single statement (which is one
// transaction of its own), again while it fails transiently (see
// maxTries), after a short randomised pause each time.
func (s *Store) retry(ctx context.Context, fn func() error) error {
	var err error
	for try := 1; ; try++ {
		err = fn()
		if err == nil || try == maxTries || !retryable(err) || ctx.Err() != nil {
			return err
		}
		s.log.Debug("retrying a database transaction", "try", try, "err", err)
		select {
		case <-time.After(time.Duration(try*try) * 5 * time.Millisecond):
		case <-ctx.Done():
			return err
		}
	}
}

// call runs fn, one statement on the pool (a transaction of its own), as
// write runs a transaction: again while it fails transiently, and again
// on a fresh connection when the pooled one it got had died before the
// statement was sent (a server restart).
func (s *Store) call(ctx context.Context, fn func() error) error {
	return s.retry(ctx, func() error {
		err := fn()
		if err != nil && pgconn.SafeToRetry(err) && ctx.Err() == nil {
			s.pool.Reset()
			return fmt.Errorf("%w: %w", convErr(err), errRetry)
		}
		return err
	})
}

func (s *Store) writeOnce(ctx context.Context, fn func(tx pgx.Tx) error) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		err = convErr(err)
		var ue *store.UnavailableError
		if errors.As(err, &ue) && ue.Cause == store.CauseUnreachable && ctx.Err() == nil {
			// A pooled connection that died (a server restart): nothing
			// was sent, so drop the pool's connections and try again.
			s.pool.Reset()
			return fmt.Errorf("%w: %w", err, errRetry)
		}
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback(context.WithoutCancel(ctx))
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return convErr(err)
	}
	return nil
}

// errRetry marks an error write may retry.
var errRetry = errors.New("transient conflict")

// retryable reports an error after which the whole transaction may be run
// again.
func retryable(err error) bool {
	if errors.Is(err, errRetry) {
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "40001", "40P01": // serialization_failure, deadlock_detected
			return true
		}
	}
	return false
}

// pgError carries a server error's text (and keeps it for retryable) but
// no pgx type into the message callers see.
type pgError struct {
	msg string
	pe  *pgconn.PgError
}

func (e *pgError) Error() string { return e.msg }
func (e *pgError) Unwrap() error { return e.pe }

// convErr maps driver errors to the contract's: no rows is ErrNotFound, a
// unique violation ErrConflict, a server that is gone, shutting down,
// starting, out of space or read-only an *UnavailableError, any other
// server error an error with its text. Context errors pass unchanged.
func convErr(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return store.ErrNotFound
	}
	var ue *store.UnavailableError
	if errors.As(err, &ue) {
		return err // converted already
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		var pe *pgconn.PgError
		if !errors.As(err, &pe) {
			return err
		}
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		msg := pe.Message
		if pe.Detail != "" {
			msg += ": " + pe.Detail
		}
		wrapped := &pgError{msg: msg, pe: pe}
		switch {
		case pe.Code == "23505":
			return fmt.Errorf("%w: %w", wrapped, store.ErrConflict)
		case pe.Code == "53100": // disk_full
			return &store.UnavailableError{Cause: store.CauseDiskFull, Detail: msg}
		case pe.Code == "25006": // read_only_sql_transaction: a standby
			return &store.UnavailableError{Cause: store.CauseReadOnly, Detail: msg + " (is this a standby server?)"}
		case pe.Code == "42501": // insufficient_privilege
			return &store.UnavailableError{Cause: store.CausePermission, Detail: msg}
		case strings.HasPrefix(pe.Code, "08"), // connection exception
			pe.Code == "57P01", pe.Code == "57P02", pe.Code == "57P03", // shutdown, crash, starting up
			pe.Code == "53300": // too_many_connections
			return &store.UnavailableError{Cause: store.CauseUnreachable, Detail: msg}
		case strings.HasPrefix(pe.Code, "58"): // system error (I/O)
			return &store.UnavailableError{Cause: store.CauseIO, Detail: msg}
		}
		return wrapped
	}
	// Anything else from the driver is the connection: refused, reset,
	// closed, timed out.
	return &store.UnavailableError{Cause: store.CauseUnreachable, Detail: err.Error()}
}

// Check pings the server: nil when it answers, else an *UnavailableError.
func (s *Store) Check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := s.pool.Ping(ctx); err != nil {
		if ctx.Err() != nil {
			return &store.UnavailableError{Cause: store.CauseUnreachable, Detail: "no answer within 5s"}
		}
		return convErr(err)
	}
	return nil
}
