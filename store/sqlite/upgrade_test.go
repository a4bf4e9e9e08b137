package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/wgkeeper/wgkeeper/migrations"
	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/store/storetest"
)

// TestUpgradeFromEachVersion: a database file of each older schema
// version, holding what that version's code wrote (configs with their
// addresses, C and D events with a pending and a leased D, and sessions
// from version 4 on), migrates to the newest and works on through the
// current Store (storetest.Upgrade says what is checked).
func TestUpgradeFromEachVersion(t *testing.T) {
	all, err := migrations.List(migrations.FS)
	if err != nil || len(all) < 2 {
		t.Fatalf("migrations: %d, %v", len(all), err)
	}
	for v := 1; v < len(all); v++ {
		t.Run(fmt.Sprintf("from%d", v), func(t *testing.T) {
			ctx := context.Background()
			path := dbPath(t)
			old, err := Open(ctx, path, Options{Create: true, upTo: v})
			if err != nil {
				t.Fatalf("open at version %d: %v", v, err)
			}
			got, err := old.SchemaVersion(ctx)
			old.Close()
			if err != nil || got != v {
				t.Fatalf("SchemaVersion of the old database = %d, %v; want %d", got, err, v)
			}
			// 0002 adds events.started_at, 0003 events.actor, 0004 sessions.
			schema := storetest.OldSchema{StartedAt: v >= 2, Actor: v >= 3, Sessions: v >= 4}
			db, err := sql.Open("sqlite3", "file:"+path)
			if err != nil {
				t.Fatal(err)
			}
			for _, q := range storetest.OldDataSQL(schema) {
				if _, err := db.Exec(q); err != nil {
					db.Close()
					t.Fatalf("write version-%d data: %s: %v", v, q, err)
				}
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}

			storetest.Upgrade(t, schema, func(now func() time.Time) store.Store {
				s, err := Open(ctx, path, Options{Now: now})
				if err != nil {
					t.Fatalf("open the version-%d database with this version: %v", v, err)
				}
				if got, err := s.SchemaVersion(ctx); err != nil || got != len(all) {
					t.Fatalf("SchemaVersion after the upgrade = %d, %v; want %d", got, err, len(all))
				}
				return s
			})
		})
	}
}
