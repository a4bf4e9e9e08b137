package store

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors, checked with errors.Is. The wrapping error says what and
// which.
var (
	// ErrNotFound: the peer or event does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the key or address is already taken, or the row is not in
	// the state the operation needs (an event leased by another owner, a
	// peer that is already active, …).
	ErrConflict = errors.New("conflict")
	// ErrLimitReached: the user already has the profile's maximum number of
	// configs.
	ErrLimitReached = errors.New("per-user limit reached")
	// ErrPoolExhausted: every address of the profile is in use.
	ErrPoolExhausted = errors.New("address pool exhausted")
	// ErrSchemaTooNew: the database was migrated by a newer wgkeeper.
	ErrSchemaTooNew = errors.New("database schema is newer than this wgkeeper")
	// ErrCorrupt: a stored value cannot be read back (edited by hand, or
	// damaged); the error names the row and the column.
	ErrCorrupt = errors.New("corrupt row")
	// ErrUnavailable: the database cannot be used for a reason outside
	// wgkeeper — disk full, read-only, damaged, deleted or replaced. The
	// error is an *UnavailableError (or, from a backend's open, an error of
	// its own such as sqlite.DamagedError) that names the cause.
	ErrUnavailable = errors.New("database unavailable")
	// ErrNoDatabase: a backend asked to open, not create, a database found
	// none (for SQLite: no file at the path). Nothing was created.
	ErrNoDatabase = errors.New("no database")
)

// SchemaTooNewError is returned by a backend's open (wrapped, and matching
// ErrSchemaTooNew) when the database records a schema version this binary
// does not know. The open changes nothing in that case.
type SchemaTooNewError struct {
	Version int // recorded in the database
	Known   int // the newest this binary knows
}

func (e *SchemaTooNewError) Error() string {
	return fmt.Sprintf("database schema version %d is newer than this wgkeeper (knows up to %d); upgrade wgkeeper", e.Version, e.Known)
}

// Unwrap makes errors.Is(err, ErrSchemaTooNew) true.
func (e *SchemaTooNewError) Unwrap() error { return ErrSchemaTooNew }

// Causes an *UnavailableError names. They are stable: the API and the CLI
// show them to operators.
const (
	CauseDiskFull   = "disk full"
	CauseReadOnly   = "read-only database"
	CausePermission = "permission denied"
	CauseIO         = "I/O error"
	CauseDamaged    = "the database file is damaged"
	CauseCantOpen   = "the database file cannot be opened"
	CauseReplaced   = "the database file was deleted or replaced"
	// CauseUnreachable: a database server (PostgreSQL) cannot be reached,
	// is shutting down or starting up. It goes away when the server is
	// back.
	CauseUnreachable = "the database server cannot be reached"
)

// UnavailableError is returned (wrapped, and matching ErrUnavailable) when
// the database cannot do what was asked for a reason outside wgkeeper: the
// disk is full, the file or its file system is read-only, the file is
// damaged, or it was deleted or replaced under the running process.
type UnavailableError struct {
	Cause string // one of the Cause constants
	// Detail is the database's or the system's own message; may be empty.
	Detail string
	// Fatal is set for causes that do not go away by themselves (a damaged,
	// deleted or replaced file): the handle refuses every later write.
	Fatal bool
}

func (e *UnavailableError) Error() string {
	msg := "database unavailable: " + e.Cause
	if e.Detail != "" && !strings.Contains(e.Cause, e.Detail) {
		msg += " (" + e.Detail + ")"
	}
	return msg
}

// Unwrap makes errors.Is(err, ErrUnavailable) true.
func (e *UnavailableError) Unwrap() error { return ErrUnavailable }
