package postgres

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

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

// TestRollingUpgradeFrom3: the code of schema version 3 is this code's
// create path (the server-side create functions), so a daemon of that
// version is a Store opened at version 3. It creates configs, another node
// migrates the database to the newest (0004 replaces the helpers its
// sessions have already used), and both keep creating and deleting in the
// same pool: addresses stay the lowest free ones, written in one text form
// (an IPv6 range inside ::/96 is where wgk_addr_text differs from host()),
// and never collide.
func TestRollingUpgradeFrom3(t *testing.T) {
	all, err := Migrations()
	if err != nil || len(all) < 4 {
		t.Fatalf("Migrations = %d, %v", len(all), err)
	}
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	old := open(t, url, Options{Create: true, upTo: 3})
	v4, v6 := netip.MustParsePrefix("10.44.0.0/24"), netip.MustParsePrefix("::1:0/112")
	create := func(s *Store, i int) store.Peer {
		t.Helper()
		p, c, err := s.InsertPending(ctx, store.NewPeer{PublicKey: testKey(i), Interface: "wg0", ProfileID: "staff", UserID: "u",
			IPv4Range: v4, IPv6Range: v6, MaxPerUser: 6})
		if err != nil {
			t.Fatalf("create %d: %v", i, err)
		}
		if err := s.Activate(ctx, p.PublicKey, c.ID); err != nil {
			t.Fatalf("activate %d: %v", i, err)
		}
		return p
	}
	index := func(p store.Peer) int64 {
		t.Helper()
		for i := range int64(250) {
			if store.HostAddr(v4, i) == p.IPv4 {
				if store.HostAddr(v6, i) != p.IPv6 {
					t.Fatalf("config %s: %v and %v are not one index's", p.PublicKey, p.IPv4, p.IPv6)
				}
				return i
			}
		}
		t.Fatalf("config %s: %v is not in %v", p.PublicKey, p.IPv4, v4)
		return 0
	}
	var got []int64
	for i := 1; i <= 3; i++ {
		got = append(got, index(create(old, i)))
	}
	if _, err := old.DeletePeers(ctx, []wgtypes.Key{testKey(2)}, store.ReasonDeleted, "", time.Time{}); err != nil {
		t.Fatal(err)
	}

	cur := open(t, url, Options{})
	if v, err := cur.SchemaVersion(ctx); err != nil || v != len(all) {
		t.Fatalf("SchemaVersion after the second node's Open = %d, %v; want %d", v, err, len(all))
	}
	got = append(got, index(create(old, 4)), index(create(cur, 5)), index(create(old, 6)), index(create(cur, 7)))
	if want := []int64{0, 1, 2, 1, 3, 4, 5}; !slices.Equal(got, want) {
		t.Errorf("host indexes across the upgrade = %v, want %v", got, want)
	}
	if _, _, err := old.InsertPending(ctx, store.NewPeer{PublicKey: testKey(8), Interface: "wg0", ProfileID: "staff", UserID: "u",
		IPv4Range: v4, IPv6Range: v6, MaxPerUser: 6}); !errors.Is(err, store.ErrLimitReached) {
		t.Errorf("seventh config of the user on the old node = %v, want ErrLimitReached", err)
	}
	evs, err := old.DeletePeers(ctx, []wgtypes.Key{testKey(5), testKey(1)}, store.ReasonDeleted, "", time.Time{})
	if err != nil || len(evs) != 2 {
		t.Fatalf("old node deletes = %+v, %v", evs, err)
	}

	// Every address is stored in Go's form, in peers and in events alike.
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, table := range []string{"peers", "events"} {
		rows, err := conn.Query(ctx, `SELECT ip_four, ip_six FROM `+table)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for rows.Next() {
			var a, b string
			if err := rows.Scan(&a, &b); err != nil {
				t.Fatal(err)
			}
			if pa, err := netip.ParseAddr(a); err != nil || pa.String() != a {
				t.Errorf("%s: ip_four %q is not in Go's form", table, a)
			}
			if pb, err := netip.ParseAddr(b); err != nil || pb.String() != b || !v6.Contains(pb) {
				t.Errorf("%s: ip_six %q is not in Go's form (or not in %v)", table, b, v6)
			}
			n++
		}
		if err := rows.Err(); err != nil || n == 0 {
			t.Fatalf("%s: %d rows, %v", table, n, err)
		}
	}
}
