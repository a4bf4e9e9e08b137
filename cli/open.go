package cli

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/wgkeeper/wgkeeper/config"
	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/store/postgres"
	"github.com/wgkeeper/wgkeeper/store/sqlite"
)

// loadConfig reads and validates the config file named by -config.
func (e *env) loadConfig() (*config.Config, error) {
	cfg, err := config.Load(e.configPath)
	if err != nil {
		return nil, fmt.Errorf("config %s:\n%w", e.configPath, err)
	}
	return cfg, nil
}

// openStore opens and migrates the database. Only the commands that set
// e.createDB (migrate, daemon) create a missing one and run quick_check
// first; every other command fails on a missing database and creates
// nothing, so a mistyped path never turns into an empty store that a
// reconcile would make the devices match.
//
// The database value picks the backend: a postgres:// or postgresql://
// URL is PostgreSQL (where "create" applies the schema to an empty
// database the administrator made), anything else a SQLite file.
func (e *env) openStore(cfg *config.Config, log *slog.Logger) (store.Store, error) {
	if cfg.PostgreSQL() {
		// The node delivers the events and expires the configs of the
		// interfaces its config declares, and of no others.
		var ifaces []string
		for _, ifc := range cfg.Interfaces {
			ifaces = append(ifaces, ifc.Name)
		}
		st, err := postgres.Open(e.ctx, cfg.Database, postgres.Options{Logger: log, Create: e.createDB, Node: cfg.Node, Interfaces: ifaces})
		if errors.Is(err, store.ErrNoDatabase) {
			return nil, fmt.Errorf("database %s has no wgkeeper schema (create it with: wgkeeper migrate)", cfg.DatabaseName())
		}
		if err != nil {
			return nil, err // it names the database already
		}
		return st, nil
	}
	st, err := sqlite.Open(e.ctx, cfg.Database, sqlite.Options{Logger: log, Create: e.createDB, QuickCheck: e.createDB})
	if errors.Is(err, store.ErrNoDatabase) {
		return nil, fmt.Errorf("no database at %s (create it with: wgkeeper migrate)", cfg.Database)
	}
	if err != nil {
		return nil, fmt.Errorf("database %s: %w", cfg.Database, err)
	}
	return st, nil
}

// unavailableHint says what an operator can do about a database the
// environment made unusable; "" for other errors.
func unavailableHint(err error) string {
	var ue *store.UnavailableError
	var de *sqlite.DamagedError
	switch {
	case errors.As(err, &de):
		return "" // its message says what to do
	case !errors.As(err, &ue):
		return ""
	}
	switch ue.Cause {
	case store.CauseDiskFull:
		return "free space on the database's file system, then try again"
	case store.CauseReadOnly, store.CausePermission:
		return "make the database file and its directory writable by wgkeeper, then try again"
	case store.CauseDamaged:
		return "restore the database from a backup (or recover it with: sqlite3 FILE .recover)"
	case store.CauseReplaced:
		return "restart wgkeeper so that it opens the file now at that path"
	case store.CauseIO, store.CauseCantOpen:
		return "check the disk and the file system holding the database"
	case store.CauseUnreachable:
		return "check that the PostgreSQL server is running and reachable from this host"
	}
	return ""
}
