package postgres

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wgkeeper/wgkeeper/internal/pgtest"
	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/store/storetest"
)

// TestUpgradeFromEachVersion: a database of each older schema version,
// holding what that version's code wrote (a node's registration, configs
// with their addresses, C and D events with a pending and a leased D, and
// sessions from version 2 on), migrates to the newest and works on through
// the current Store (storetest.Upgrade says what is checked); the node's
// registration survives and a second node registers beside it.
func TestUpgradeFromEachVersion(t *testing.T) {
	all, err := Migrations()
	if err != nil || len(all) < 2 {
		t.Fatalf("Migrations = %d, %v", len(all), err)
	}
	for v := 1; v < len(all); v++ {
		t.Run(fmt.Sprintf("from%d", v), func(t *testing.T) {
			ctx := context.Background()
			url := pgtest.NewDatabase(t)
			old, err := Open(ctx, url, Options{Create: true, upTo: v})
			if err != nil {
				t.Fatalf("open at version %d: %v", v, err)
			}
			got, err := old.SchemaVersion(ctx)
			old.Close()
			if err != nil || got != v {
				t.Fatalf("SchemaVersion of the old database = %d, %v; want %d", got, err, v)
			}
			schema := storetest.OldSchema{StartedAt: true, Actor: true, Sessions: v >= 2, Node: "node-a"}
			conn, err := pgx.Connect(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			for _, q := range storetest.OldDataSQL(schema) {
				if _, err := conn.Exec(ctx, q); err != nil {
					conn.Close(ctx)
					t.Fatalf("write version-%d data: %s: %v", v, q, err)
				}
			}
			conn.Close(ctx)

			var s *Store
			storetest.Upgrade(t, schema, func(now func() time.Time) store.Store {
				s, err = Open(ctx, url, Options{Now: now, Node: "node-a", Interfaces: []string{"wg0"}})
				if err != nil {
					t.Fatalf("open the version-%d database with this version: %v", v, err)
				}
				if got, err := s.SchemaVersion(ctx); err != nil || got != len(all) {
					t.Fatalf("SchemaVersion after the upgrade = %d, %v; want %d", got, err, len(all))
				}
				return s
			})
			if t.Failed() {
				return
			}
			nodes, err := s.ListNodes(ctx)
			if err != nil || len(nodes) != 1 || nodes[0].Name != "node-a" || nodes[0].Version != "old" ||
				!slices.Equal(nodes[0].Interfaces, []string{"wg0"}) {
				t.Fatalf("nodes after the upgrade: %+v, %v", nodes, err)
			}
			if err := s.RegisterNode(ctx, decl("node-b", "wg0", "staff", "10.43.0.0/24", "")); err == nil {
				t.Errorf("node-b declaring node-a's old interface was accepted")
			}
			if err := s.RegisterNode(ctx, decl("node-b", "wg1", "staff", "10.42.0.128/25", "")); err == nil {
				t.Errorf("node-b declaring a range overlapping node-a's old one was accepted")
			}
			if err := s.RegisterNode(ctx, decl("node-b", "wg1", "staff", "10.43.0.0/24", "")); err != nil {
				t.Errorf("node-b beside the old node-a: %v", err)
			}
		})
	}
}
