package sqlite

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/mattn/go-sqlite3"

	"github.com/wgkeeper/wgkeeper/store"
)

// DamagedError is returned by Open (wrapped, matching ErrUnavailable) when
// PRAGMA quick_check finds the file damaged. Open changes nothing then.
type DamagedError struct {
	// Report is the first lines of quick_check's report.
	Report []string
}

func (e *DamagedError) Error() string {
	return "the database file is damaged; PRAGMA quick_check reports:\n  " + strings.Join(e.Report, "\n  ") +
		"\nrestore it from a backup (or recover it with: sqlite3 FILE .recover)"
}

// Unwrap makes errors.Is(err, ErrUnavailable) true.
func (e *DamagedError) Unwrap() error { return store.ErrUnavailable }

// quickCheckLines is how much of a failed quick_check's report is kept.
const quickCheckLines = 5

// quickCheck runs PRAGMA quick_check and fails with a *DamagedError when it
// reports anything but "ok".
func (s *Store) quickCheck(ctx context.Context) error {
	rows, err := s.db.QueryContext(ctx, "PRAGMA quick_check")
	if err != nil {
		return quickCheckFailed(convErr(err))
	}
	defer rows.Close()
	var report []string
	more := false
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return quickCheckFailed(convErr(err))
		}
		if len(report) == quickCheckLines {
			more = true
			break
		}
		report = append(report, line)
	}
	if err := rows.Err(); err != nil {
		return quickCheckFailed(convErr(err))
	}
	if len(report) == 1 && report[0] == "ok" {
		return nil
	}
	if more {
		report = append(report, "…")
	}
	return &DamagedError{Report: report}
}

// quickCheckFailed turns an error that stopped quick_check itself (SQLite
// could not even walk the file) into a *DamagedError when it is one.
func quickCheckFailed(err error) error {
	var ue *store.UnavailableError
	if errors.As(err, &ue) && ue.Cause == store.CauseDamaged {
		return &DamagedError{Report: []string{ue.Detail}}
	}
	return fmt.Errorf("quick check: %w", err)
}

// unavailableOf classifies a SQLite error by its code (and the system errno
// behind it); nil when it is not one of the environment's faults.
func unavailableOf(se sqlite3.Error) *store.UnavailableError {
	msg := se.Error()
	switch se.SystemErrno {
	case syscall.ENOSPC, syscall.EDQUOT:
		return &store.UnavailableError{Cause: store.CauseDiskFull, Detail: msg}
	case syscall.EROFS:
		return &store.UnavailableError{Cause: store.CauseReadOnly, Detail: msg}
	}
	switch se.Code {
	case sqlite3.ErrFull:
		return &store.UnavailableError{Cause: store.CauseDiskFull, Detail: msg}
	case sqlite3.ErrReadonly:
		return &store.UnavailableError{Cause: store.CauseReadOnly, Detail: msg}
	case sqlite3.ErrPerm, sqlite3.ErrAuth:
		return &store.UnavailableError{Cause: store.CausePermission, Detail: msg}
	case sqlite3.ErrIoErr:
		return &store.UnavailableError{Cause: store.CauseIO, Detail: msg}
	case sqlite3.ErrCorrupt, sqlite3.ErrNotADB:
		return &store.UnavailableError{Cause: store.CauseDamaged, Detail: msg, Fatal: true}
	case sqlite3.ErrCantOpen:
		return &store.UnavailableError{Cause: store.CauseCantOpen, Detail: msg}
	}
	return nil
}

// fileID is a file's identity: device and inode.
type fileID struct{ dev, ino uint64 }

func statID(path string) (fileID, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileID{}, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, errors.New("no device and inode on this system")
	}
	return fileID{dev: uint64(st.Dev), ino: st.Ino}, nil
}

// Fault returns the fault that made the Store stop for good — the file
// was deleted or replaced (seen by Check or before a write), or SQLite
// found it damaged — as an *UnavailableError with Fatal set; nil while
// there is none. A faulted Store refuses every write and the reads the
// lifecycle relies on (Version, ListPeers, GetPeer, Disconnected,
// NextDue, NextExpiry) with that error; a new Store must be opened (the daemon
// exits so that it is restarted).
func (s *Store) Fault() error {
	if f := s.fault.Load(); f != nil {
		return f
	}
	return nil
}

// Check compares the file at the Store's path with the file it opened
// (device and inode). When the path is gone or names another file, the
// Store is faulted (see Fault) and the fault returned. It returns an
// earlier fault too, and nil when all is well. It costs one stat.
func (s *Store) Check(context.Context) error { return s.checkFile() }

func (s *Store) checkFile() error {
	if err := s.Fault(); err != nil {
		return err
	}
	if s.ident == (fileID{}) {
		return nil
	}
	id, err := statID(s.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return s.setFault(&store.UnavailableError{Cause: store.CauseReplaced, Detail: "no file at " + s.path, Fatal: true})
	case err != nil:
		// Cannot tell (a directory became unreadable): not proof of a swap.
		return nil
	case id != s.ident:
		return s.setFault(&store.UnavailableError{Cause: store.CauseReplaced, Detail: s.path + " is another file now", Fatal: true})
	}
	return nil
}

// setFault records the first fatal fault and returns the recorded one.
func (s *Store) setFault(f *store.UnavailableError) error {
	if s.fault.CompareAndSwap(nil, f) {
		s.log.Error("database unusable; refusing every write", "path", s.path, "err", f)
	}
	return s.fault.Load()
}

// note records a fatal fault carried by err and returns err unchanged.
func (s *Store) note(err error) error {
	var ue *store.UnavailableError
	if errors.As(err, &ue) && ue.Fatal {
		s.setFault(ue)
	}
	return err
}

// dropStaleLog takes this Store's write-ahead log away from a path that now
// names another file (or none). SQLite finds the -wal file by name: left
// there, whoever opens the path next would read the new file through this
// database's log, and a recovery would copy this database's pages into
// it. The log is first checkpointed into this Store's own file (unlinked
// or moved, still open here), on a connection already open on it; then the
// -wal file, when it is still the one this Store opened, is removed, or
// moved aside with a ".replaced" suffix when the checkpoint was not
// complete.
func (s *Store) dropStaleLog() {
	if s.dvConn == nil || s.walID == (fileID{}) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var busy, logged, done int
	err := s.dvConn.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &logged, &done)
	complete := err == nil && busy == 0 && logged == done
	wal := s.path + "-wal"
	if id, serr := statID(wal); serr != nil || id != s.walID {
		return // gone, or the new file's own log
	}
	if complete {
		if err := os.Remove(wal); err != nil {
			s.log.Error("remove the write-ahead log of the replaced database file; remove it before starting wgkeeper", "path", wal, "err", err)
		}
		return
	}
	aside := wal + ".replaced"
	if rerr := os.Rename(wal, aside); rerr != nil {
		s.log.Error("move the write-ahead log of the replaced database file aside; move it before starting wgkeeper", "path", wal, "err", rerr)
		return
	}
	s.log.Warn("moved the write-ahead log of the replaced database file aside", "path", aside, "err", err)
}
