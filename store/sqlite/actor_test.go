package sqlite

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"testing"

	"github.com/wgkeeper/wgkeeper/migrations"
	"github.com/wgkeeper/wgkeeper/store"
)

// TestUpgradeFromVersion2KeepsEventsWithoutActor: a database at schema
// version 2, as the previous release left it, upgrades with its events
// intact and their actor null; new events record theirs.
func TestUpgradeFromVersion2KeepsEventsWithoutActor(t *testing.T) {
	ctx := context.Background()
	path := dbPath(t)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	all, err := migrations.List(migrations.FS)
	if err != nil || len(all) < 3 {
		t.Fatalf("migrations: %d, %v", len(all), err)
	}
	db, err := sql.Open("sqlite3", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	stmts := []string{`CREATE TABLE schema_migrations (version INTEGER NOT NULL PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL) STRICT`}
	for _, m := range all[:2] {
		stmts = append(stmts, m.SQL)
	}
	stmts = append(stmts,
		`INSERT INTO schema_migrations VALUES (1, 'init', 1), (2, '`+all[1].Name+`', 2)`,
		`INSERT INTO events (event, reason, public_key, interface, profile_id, user_id, ip_four, created_at, status, done_at)
		 VALUES ('C', 'created', '`+testKey(9).String()+`', 'wg0', 'staff', 'old', '10.42.0.2', 1000, 'done', 1000),
		        ('D', 'deleted', '`+testKey(9).String()+`', 'wg0', 'staff', 'old', '10.42.0.2', 2000, 'done', 2000)`)
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("build a version-2 database: %s: %v", q, err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}

	s := openAt(t, path, newClock())
	if v, err := s.SchemaVersion(ctx); err != nil || v != len(all) || v < 3 {
		t.Fatalf("SchemaVersion after the upgrade = %d, %v; want %d", v, err, len(all))
	}
	evs, err := s.ListEvents(ctx, store.EventFilter{UserID: "old"})
	if err != nil || len(evs) != 2 {
		t.Fatalf("old events after the upgrade: %+v, %v", evs, err)
	}
	for _, e := range evs {
		if e.Actor != "" || e.Status != store.StatusDone || e.UserID != "old" {
			t.Errorf("old event %d after the upgrade: %+v; want it unchanged with no actor", e.ID, e)
		}
	}
	var nulls int
	if err := s.db.QueryRow(`SELECT count(*) FROM events WHERE actor IS NULL`).Scan(&nulls); err != nil || nulls != 2 {
		t.Fatalf("old events with a NULL actor: %d, %v; want 2", nulls, err)
	}
	np := staffPeer(1, "new")
	np.Actor = "daemon"
	if _, c := mustInsert(t, s, np); c.Actor != "daemon" {
		t.Fatalf("new C event after the upgrade: actor %q", c.Actor)
	}
}
