// Package sqlite is wgkeeper's SQLite backend of store.Store: the desired
// state of every peer (table peers), the address allocator, and the event
// outbox that doubles as the connection log (table events), in one SQLite
// file whose schema is the top-level migrations package.
//
// It is the only package that speaks SQL to SQLite or imports its driver.
// Callers see the domain types of package store and its sentinel errors,
// checked with errors.Is; no driver type leaves the package. It knows
// nothing of devices, scripts or configuration files: the lifecycle engine
// decides what to do, the store makes each step atomic.
//
// Every write is one immediate transaction (BEGIN IMMEDIATE, via the DSN), so
// concurrent writers in this and other processes queue on SQLite's busy
// timeout instead of failing, and the per-user limit and address allocation
// cannot race.
//
// Beside store.Store, a *Store offers what only the wiring needs: Open's
// file options (create, quick_check), Path and Fault.
package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mattn/go-sqlite3"

	"github.com/wgkeeper/wgkeeper/migrations"
	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/store/internal/sqlrow"
)

// Options configure a Store. The zero value is valid.
type Options struct {
	// Now is the clock for created_at, done_at and friends; nil means
	// time.Now. Its result is converted to UTC.
	Now func() time.Time
	// Logger receives migration and file-mode notices; nil discards.
	Logger *slog.Logger
	// Create creates the database file (and its directory) when it is
	// missing. Without it Open fails with ErrNoDatabase and creates nothing:
	// a mistyped path must never become a new, empty database that a
	// reconcile then makes the devices match.
	Create bool
	// QuickCheck runs PRAGMA quick_check before anything else touches the
	// file; a damaged file fails Open with a *DamagedError.
	QuickCheck bool
	// ChangePoll is how often a Changes channel looks at data_version; 0
	// means 500 ms.
	ChangePoll time.Duration

	// upTo, when set, stops the migrations at that version (the upgrade
	// tests build a database of an older version with it).
	upTo int
}

// defaultChangePoll is Options.ChangePoll's default.
const defaultChangePoll = 500 * time.Millisecond

// Store is an open database. It is safe for concurrent use, and several
// Stores (in one or several processes) may share one file.
type Store struct {
	db     *sql.DB
	path   string
	now    func() time.Time
	log    *slog.Logger
	wmu    sync.Mutex    // held through each write transaction: one at a time in this process
	poll   time.Duration // Options.ChangePoll
	upTo   int           // Options.upTo
	dvMu   sync.Mutex    // guards the use of dvConn
	dvConn *sql.Conn     // dedicated connection: PRAGMA data_version is per connection

	ident fileID                                 // device and inode of the file opened
	walID fileID                                 // and of its -wal file, once Open is done
	fault atomic.Pointer[store.UnavailableError] // first fatal fault; never cleared

	ready     bool          // Open succeeded
	closed    chan struct{} // closed by Close: ends the Changes goroutines
	closeOnce sync.Once
	closeErr  error
}

var _ store.Store = (*Store)(nil)

const (
	// maxOpenConns bounds the pool, one connection of which Version and
	// the Changes channels keep (dvConn). Writers queue on SQLite's lock anyway; readers rarely need more.
	maxOpenConns = 16
	maxIdleConns = 4
)

// dsnParams are set on every pooled connection as it is opened. The page
// cache (up to 32 MiB, allocated as used) keeps large transactions — a batch
// expiry, an import — from spilling pages to the WAL again and again (measured:
// 50k inserts in one transaction 9.8 s with the 2 MiB default, 1.4 s with
// it); the statement cache spares re-preparing the trigger-laden inserts.
const dsnParams = "_journal_mode=WAL&_busy_timeout=5000&_foreign_keys=on&_txlock=immediate&_synchronous=NORMAL&_cache_size=-32768&_stmt_cache_size=64"

// Open opens the database at path and applies the embedded migrations.
// With opts.Create a missing file is created mode 0600, and its parent
// directory mode 0700 when missing; without it a missing file fails with
// ErrNoDatabase and nothing is created. Connections open the file
// read-write without SQLite's create flag, so a file deleted later is never
// silently re-created by a new pooled connection. Every pooled connection runs in WAL mode
// with a 5 s busy timeout, foreign keys on, synchronous=NORMAL, and immediate
// write transactions; the pool holds at most 16 connections.
//
// Opening an up-to-date database changes nothing. A database whose schema is
// newer than this binary knows fails with a *SchemaTooNewError (matching
// ErrSchemaTooNew) and is left untouched. Open is safe to run concurrently
// with other processes opening the same file: each migration is applied once.
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	if path == "" {
		return nil, errors.New("open database: no path given")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	if strings.ContainsRune(abs, '?') {
		return nil, fmt.Errorf("open database %s: path must not contain '?'", path)
	}
	s := &Store{path: abs, now: opts.Now, log: opts.Logger, poll: opts.ChangePoll, upTo: opts.upTo, closed: make(chan struct{})}
	if s.poll <= 0 {
		s.poll = defaultChangePoll
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if err := s.prepareFile(opts.Create); err != nil {
		return nil, fmt.Errorf("open database %s: %w", abs, err)
	}
	ident, err := statID(abs)
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", abs, err)
	}
	// Switching a fresh file to WAL takes a lock that SQLite's busy handler
	// does not wait for: two processes opening a new database at the same
	// moment (the daemon and a CLI command) can get "database is locked".
	// That is transient; try again briefly.
	delay := 5 * time.Millisecond
	for try := 0; ; try++ {
		s.ident = ident
		err := s.open(ctx, opts.QuickCheck)
		if err == nil {
			break
		}
		if s.db != nil {
			s.Close()
		}
		if !isBusy(err) || try == 20 || ctx.Err() != nil {
			if derr := dirProblem(filepath.Dir(abs)); derr != nil && errors.Is(err, store.ErrUnavailable) {
				err = fmt.Errorf("%w; %w", derr, err)
			}
			return nil, fmt.Errorf("open database %s: %w", abs, err)
		}
		time.Sleep(delay)
		delay = min(2*delay, 100*time.Millisecond)
		s = &Store{path: abs, now: s.now, log: s.log, poll: s.poll, closed: make(chan struct{})}
	}
	s.ready = true
	s.walID, _ = statID(abs + "-wal")
	return s, nil
}

// prepareFile, with create, makes the parent directory (0700) and the file
// (0600) if missing, so the database never exists with looser permissions.
// It checks that the path is a regular file.
func (s *Store) prepareFile(create bool) error {
	dir := filepath.Dir(s.path)
	if !create {
		fi, err := os.Stat(s.path)
		if errors.Is(err, fs.ErrNotExist) {
			return store.ErrNoDatabase
		}
		if err != nil {
			return err
		}
		return s.checkMode(fi)
	}
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			if derr := dirProblem(filepath.Dir(dir)); derr != nil {
				return fmt.Errorf("create directory %s: %w", dir, derr)
			}
			return fmt.Errorf("create directory: %w", err)
		}
	}
	f, err := os.OpenFile(s.path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	switch {
	case err == nil:
		// The umask may have removed bits; it never adds any, but be exact.
		if err := f.Chmod(0o600); err != nil {
			f.Close()
			return fmt.Errorf("set file mode: %w", err)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("create file: %w", err)
		}
		return nil
	case errors.Is(err, fs.ErrExist):
		fi, err := os.Stat(s.path)
		if err != nil {
			return err
		}
		return s.checkMode(fi)
	default:
		if derr := dirProblem(dir); derr != nil {
			return fmt.Errorf("create the database file: %w", derr)
		}
		return fmt.Errorf("create file: %w", err)
	}
}

// checkMode refuses what is not a regular file and warns about a file
// others may read.
func (s *Store) checkMode(fi os.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return errors.New("not a regular file")
	}
	if fi.Mode().Perm()&0o077 != 0 {
		s.log.Warn("database file is readable by group or others; it holds preshared keys, consider chmod 0600",
			"path", s.path, "mode", fmt.Sprintf("%04o", fi.Mode().Perm()))
	}
	return nil
}

// dirProblem says why this process cannot create files in dir (SQLite
// creates the -wal and -shm files beside the database): a read-only file
// system, or the directory's permissions. nil when it can, or when dir
// does not exist (the caller's own error says so).
func dirProblem(dir string) error {
	err := syscall.Access(dir, 2 /* W_OK */)
	switch {
	case err == nil, errors.Is(err, syscall.ENOENT):
		return nil
	case errors.Is(err, syscall.EROFS):
		return fmt.Errorf("directory %s is on a read-only file system; wgkeeper needs to write there (the database and its -wal and -shm files)", dir)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		perm := ""
		if fi, serr := os.Stat(dir); serr == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				perm = fmt.Sprintf(" (mode %04o, owner uid %d gid %d; wgkeeper runs as uid %d)", fi.Mode().Perm(), st.Uid, st.Gid, os.Geteuid())
			}
		}
		return fmt.Errorf("permission denied: directory %s is not writable by wgkeeper%s; wgkeeper needs to write there (the database and its -wal and -shm files)", dir, perm)
	}
	return fmt.Errorf("directory %s: %w", dir, err)
}

// sqliteURI is path as a SQLite URI filename that opens an existing file
// read-write and never creates one, with the DSN settings.
func sqliteURI(path string) string {
	esc := strings.NewReplacer("%", "%25", "#", "%23", "?", "%3f").Replace(path)
	return "file:" + esc + "?mode=rw&" + dsnParams
}

// connector opens the Store's pooled connections. Before each it checks
// that the file at the path is still the one opened: a connection opened
// on a file that replaced it would read the new file through the old
// file's -wal and -shm, and its last close would checkpoint the old
// database's pages into the new file.
type connector struct {
	s   *Store
	dsn string
	drv *sqlite3.SQLiteDriver
}

func (c *connector) Connect(ctx context.Context) (driver.Conn, error) {
	if err := c.s.checkFile(); err != nil {
		return nil, err
	}
	return c.drv.Open(c.dsn)
}

func (c *connector) Driver() driver.Driver { return c.drv }

func (s *Store) open(ctx context.Context, quickCheck bool) error {
	db := sql.OpenDB(&connector{s: s, dsn: sqliteURI(s.path), drv: &sqlite3.SQLiteDriver{}})
	s.db = db
	db.SetMaxOpenConns(maxOpenConns)
	db.SetMaxIdleConns(maxIdleConns)
	conn, err := db.Conn(ctx)
	if err != nil {
		return convErr(err)
	}
	s.dvConn = conn
	var mode string
	if err := conn.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return convErr(err)
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("journal mode is %q, not WAL (is the file on a filesystem without shared memory support?)", mode)
	}
	if quickCheck {
		if err := s.quickCheck(ctx); err != nil {
			return err
		}
	}
	if err := s.migrate(ctx); err != nil {
		return err
	}
	// SQLite gives -wal and -shm the main file's mode; tighten them anyway in
	// case they predate this process.
	for _, suffix := range []string{"-wal", "-shm"} {
		name := s.path + suffix
		if fi, err := os.Stat(name); err == nil && fi.Mode().Perm()&0o077 != 0 {
			if err := os.Chmod(name, 0o600); err != nil {
				return fmt.Errorf("set mode of %s: %w", filepath.Base(name), err)
			}
		}
	}
	return nil
}

// optimize lets SQLite refresh the statistics its query planner uses
// (PRAGMA optimize; cheap when nothing changed). Close runs it.
func (s *Store) optimize(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, "PRAGMA optimize"); err != nil {
		return fmt.Errorf("optimize database: %w", convErr(err))
	}
	return nil
}

// Close closes the database and ends its Changes channels. Calling it
// again returns the first result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		close(s.closed)
		// Never on a database Open refused (it must stay untouched), nor
		// on one deleted, replaced or damaged.
		if s.ready && s.Fault() == nil {
			if err := s.optimize(context.Background()); errors.Is(err, store.ErrUnavailable) {
				s.log.Debug("optimize before close", "err", err) // said already, by whoever met it
			} else if err != nil {
				s.log.Warn("optimize before close", "err", err)
			}
		}
		var errs []error
		var ue *store.UnavailableError
		if errors.As(s.Fault(), &ue) && ue.Cause == store.CauseReplaced {
			s.dropStaleLog()
		}
		if s.dvConn != nil {
			errs = append(errs, s.dvConn.Close())
		}
		errs = append(errs, s.db.Close())
		if err := errors.Join(errs...); err != nil {
			s.closeErr = fmt.Errorf("close database %s: %w", s.path, convErr(err))
		}
	})
	return s.closeErr
}

// Path returns the absolute path of the database file.
func (s *Store) Path() string { return s.path }

// migrate applies the embedded migrations the database lacks, each in its own
// immediate transaction, recording them in schema_migrations (with
// Options.upTo, only those up to that version).
func (s *Store) migrate(ctx context.Context) error {
	all, err := migrations.List(migrations.FS)
	if err != nil {
		return err
	}
	known := len(all)
	current, err := schemaVersion(ctx, s.db)
	if err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if current > known {
		return &store.SchemaTooNewError{Version: current, Known: known}
	}
	todo := all[current:]
	if s.upTo > 0 {
		todo = all[min(current, s.upTo):s.upTo]
	}
	for _, m := range todo {
		applied := false
		err := s.write(ctx, func(tx *sql.Tx) error {
			// Another process may have applied it since we looked.
			v, err := schemaVersion(ctx, tx)
			if err != nil {
				return err
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
			if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
				version    INTEGER NOT NULL PRIMARY KEY,
				name       TEXT    NOT NULL,
				applied_at INTEGER NOT NULL
			) STRICT`); err != nil {
				return convErr(err)
			}
			if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
				return convErr(err)
			}
			at, err := sqlrow.EncTime(s.clock())
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
				m.Version, m.Name, at); err != nil {
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

type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// schemaVersion reads the highest recorded migration; 0 on a fresh database.
func schemaVersion(ctx context.Context, q queryer) (int, error) {
	var n int
	if err := q.QueryRowContext(ctx,
		`SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'`).Scan(&n); err != nil {
		return 0, convErr(err)
	}
	if n == 0 {
		return 0, nil
	}
	var v int
	if err := q.QueryRowContext(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, convErr(err)
	}
	return v, nil
}

// SchemaVersion returns the highest migration applied to the database.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	v, err := schemaVersion(ctx, s.db)
	if err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return v, nil
}

// Version returns SQLite's data_version as seen by a connection that the
// Store holds for its lifetime and never writes with: the value changes
// whenever any other connection — this Store's pool or another process —
// commits.
//
// A faulted Store (see Fault) answers with its fault: a caller polling it
// (the daemon, the health check) learns of the fault from it.
func (s *Store) Version(ctx context.Context) (uint64, error) {
	if err := s.Fault(); err != nil {
		return 0, err
	}
	s.dvMu.Lock()
	defer s.dvMu.Unlock()
	var v int64
	if err := s.dvConn.QueryRowContext(ctx, "PRAGMA data_version").Scan(&v); err != nil {
		return 0, fmt.Errorf("read data version: %w", s.note(convErr(err)))
	}
	return uint64(v), nil
}

// Changes reads Version once before it returns, then polls it every
// Options.ChangePoll (500 ms by default) in a goroutine of its own and
// sends on the channel when the value changed since the last successful
// look (a first look that fails counts as unknown: the first value read
// after it is a change). It ends, closing
// the channel, when ctx is done or the Store is closed.
func (s *Store) Changes(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{}, 1)
	last, err := s.Version(ctx)
	known := err == nil
	go func() {
		defer close(ch)
		t := time.NewTicker(s.poll)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-s.closed:
				return
			case <-t.C:
			}
			v, err := s.Version(ctx)
			if err != nil || (known && v == last) {
				continue
			}
			last, known = v, true
			select {
			case ch <- struct{}{}:
			default: // one is pending already
			}
		}
	}()
	return ch
}

// clock returns the injected time in UTC.
func (s *Store) clock() time.Time { return s.now().UTC() }

// write runs fn in one immediate transaction, committing when fn returns nil.
// Writers of this process queue on a mutex first: SQLite admits one writer
// at a time anyway, and a waiter on the mutex is woken the moment the
// previous transaction ends, where SQLite's busy handler would sleep in
// growing steps. Other processes still meet the busy timeout.
//
// Before each transaction the file at the path is compared with the one
// opened (Check): nothing is written into a deleted or replaced file,
// nor into one found damaged.
func (s *Store) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	if err := s.checkFile(); err != nil {
		return err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return s.note(convErr(err))
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return s.note(err)
	}
	if err := tx.Commit(); err != nil {
		return s.note(convErr(err))
	}
	return nil
}

// dbError carries a driver error's text without its type.
type dbError struct{ msg string }

func (e *dbError) Error() string { return e.msg }

// errBusy marks SQLITE_BUSY / SQLITE_LOCKED after convErr.
var errBusy = errors.New("database busy")

// isBusy reports a transient lock conflict with another connection.
func isBusy(err error) bool {
	if errors.Is(err, errBusy) {
		return true
	}
	var se sqlite3.Error
	if errors.As(err, &se) && (se.Code == sqlite3.ErrBusy || se.Code == sqlite3.ErrLocked) {
		return true
	}
	var sp *sqlite3.Error
	if errors.As(err, &sp) && sp != nil && (sp.Code == sqlite3.ErrBusy || sp.Code == sqlite3.ErrLocked) {
		return true
	}
	return strings.Contains(err.Error(), "database is locked")
}

// convErr maps driver errors to the store contract's: unique and
// primary-key violations wrap store.ErrConflict, sql.ErrNoRows becomes
// store.ErrNotFound, busy and locked wrap errBusy (Open retries
// those), the environment's faults (full, read-only, permission, I/O,
// damaged, cannot open) become a *store.UnavailableError, and any other
// SQLite error a plain error with the same text, so no driver type leaves
// the package. Errors that are not SQLite's pass unchanged.
func convErr(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, sql.ErrNoRows) {
		return store.ErrNotFound
	}
	var se sqlite3.Error
	if !errors.As(err, &se) {
		var sp *sqlite3.Error
		if !errors.As(err, &sp) || sp == nil {
			return err
		}
		se = *sp
	}
	if se.Code == sqlite3.ErrConstraint &&
		(se.ExtendedCode == sqlite3.ErrConstraintUnique || se.ExtendedCode == sqlite3.ErrConstraintPrimaryKey) {
		return fmt.Errorf("%s: %w", se.Error(), store.ErrConflict)
	}
	if se.Code == sqlite3.ErrBusy || se.Code == sqlite3.ErrLocked {
		return fmt.Errorf("%s: %w", se.Error(), errBusy)
	}
	if ue := unavailableOf(se); ue != nil {
		return ue
	}
	return &dbError{msg: se.Error()}
}
