package sqlite

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/migrations"
	"github.com/wgkeeper/wgkeeper/store"
)

// TestEventActor: the actor given to InsertPending and DeletePeersBy is on
// the events they insert, as read back; DeletePeers records none (NULL).
func TestEventActor(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	np := staffPeer(1, "alice")
	np.Actor = "api:admin@127.0.0.1:53412"
	p, c := mustInsert(t, s, np)
	if c.Actor != np.Actor {
		t.Fatalf("C event actor %q, want %q", c.Actor, np.Actor)
	}
	if err := s.Activate(ctx, p.PublicKey, c.ID); err != nil {
		t.Fatal(err)
	}
	ds, err := s.DeletePeersBy(ctx, "cli:0", []wgtypes.Key{p.PublicKey}, store.ReasonDeleted, "", time.Time{})
	if err != nil || len(ds) != 1 || ds[0].Actor != "cli:0" {
		t.Fatalf("DeletePeersBy = %+v, %v; want one D by cli:0", ds, err)
	}
	q := mustCreate(t, s, staffPeer(2, "bob"))
	if _, err := s.DeletePeers(ctx, []wgtypes.Key{q.PublicKey}, store.ReasonExpired, "", time.Time{}); err != nil {
		t.Fatal(err)
	}
	evs, err := s.ListEvents(ctx, store.EventFilter{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[int64]string{}
	for _, e := range evs {
		got[e.ID] = e.Actor
	}
	if got[c.ID] != np.Actor || got[ds[0].ID] != "cli:0" || len(evs) != 4 {
		t.Fatalf("actors read back %v (events %d)", got, len(evs))
	}
	var nulls int
	if err := s.db.QueryRow(`SELECT count(*) FROM events WHERE actor IS NULL`).Scan(&nulls); err != nil || nulls != 2 {
		t.Fatalf("events without an actor stored as NULL: %d, %v; want 2 (bob's C and D)", nulls, err)
	}
}

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
