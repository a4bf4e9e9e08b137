package postgres

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/internal/pgtest"
	"github.com/wgkeeper/wgkeeper/store"
)

func decl(node, iface, profile, v4, v6 string) store.NodeDecl {
	p := store.NodeProfile{ID: profile}
	if v4 != "" {
		p.IPv4Range = netip.MustParsePrefix(v4)
	}
	if v6 != "" {
		p.IPv6Range = netip.MustParsePrefix(v6)
	}
	return store.NodeDecl{Name: node, Interfaces: []store.NodeInterface{{Name: iface, Profiles: []store.NodeProfile{p}}}}
}

// Two nodes declaring one interface, or overlapping ranges, are refused
// with a message naming both; a node registering again replaces what it
// declared.
func TestRegisterNodeConflicts(t *testing.T) {
	ctx := context.Background()
	s := open(t, pgtest.NewDatabase(t), Options{Create: true})
	if err := s.RegisterNode(ctx, decl("node-a", "wg-a", "staff", "10.1.0.0/24", "fd01::/64")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		d    store.NodeDecl
		want []string
	}{
		{decl("node-b", "wg-a", "other", "10.2.0.0/24", ""), []string{`interface "wg-a"`, `"node-a"`, `"node-b"`}},
		{decl("node-b", "wg-b", "other", "10.1.0.128/25", ""), []string{"10.1.0.128/25", "10.1.0.0/24", `"node-a"`, `"node-b"`}},
		{decl("node-b", "wg-b", "other", "", "fd01::/48"), []string{"fd01::/48", `"node-a"`, `"node-b"`}},
	} {
		err := s.RegisterNode(ctx, tc.d)
		if !errors.Is(err, store.ErrConflict) {
			t.Fatalf("%+v: %v, want ErrConflict", tc.d, err)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("message lacks %s: %v", w, err)
			}
		}
	}
	if err := s.RegisterNode(ctx, decl("node-b", "wg-b", "other", "10.2.0.0/24", "fd02::/64")); err != nil {
		t.Fatal(err)
	}
	// node-a moves to another range: its old one is free for others.
	if err := s.RegisterNode(ctx, decl("node-a", "wg-a", "staff", "10.3.0.0/24", "")); err != nil {
		t.Fatal(err)
	}
	if err := s.RegisterNode(ctx, decl("node-c", "wg-c", "x", "10.1.0.0/24", "")); err != nil {
		t.Fatalf("a range freed by its node's new declaration: %v", err)
	}
	ns, err := s.ListNodes(ctx)
	if err != nil || len(ns) != 3 || ns[0].Name != "node-a" || len(ns[0].Interfaces) != 1 || ns[0].Interfaces[0] != "wg-a" {
		t.Fatalf("ListNodes = %+v, %v", ns, err)
	}
	if got, err := s.ProfileNodes(ctx, "other"); err != nil || len(got) != 1 || got[0] != "node-b" {
		t.Fatalf("ProfileNodes = %v, %v", got, err)
	}
	if err := s.Heartbeat(ctx, "node-z"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Heartbeat of an unknown node = %v", err)
	}
}

// A handle working for a node claims only that node's events and those
// no node owns of the interfaces it declares; events recorded before a
// node declared their interface become its own when it registers.
func TestNodeClaimsOwnEvents(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	all := open(t, url, Options{Create: true})
	a := open(t, url, Options{Node: "node-a", Interfaces: []string{"wg-a"}})
	b := open(t, url, Options{Node: "node-b", Interfaces: []string{"wg-b"}})
	c := open(t, url, Options{Node: "node-c", Interfaces: []string{"wg-c"}})
	// A node that has not registered (a one-shot command of a node
	// whose daemon never ran) still delivers its own interface's events.
	d := open(t, url, Options{Node: "node-d", Interfaces: []string{"wg-free"}})
	for _, d := range []store.NodeDecl{
		decl("node-a", "wg-a", "p-wg-a", "10.9.0.0/24", ""),
		decl("node-b", "wg-b", "p-wg-b", "10.8.0.0/24", ""),
	} {
		if err := all.RegisterNode(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	deleted := func(i int, iface string) int64 {
		t.Helper()
		p, ev, err := all.InsertPending(ctx, store.NewPeer{PublicKey: testKey(i), Interface: iface, ProfileID: "p-" + iface, UserID: "u",
			IPv4Range: netip.MustParsePrefix("10.9.0.0/24")})
		if err != nil {
			t.Fatal(err)
		}
		if err := all.Activate(ctx, p.PublicKey, ev.ID); err != nil {
			t.Fatal(err)
		}
		evs, err := all.DeletePeers(ctx, []wgtypes.Key{p.PublicKey}, store.ReasonDeleted, "", time.Time{})
		if err != nil || len(evs) != 1 {
			t.Fatalf("DeletePeers = %v, %v", evs, err)
		}
		return evs[0].ID
	}
	idA := deleted(1, "wg-a")
	idB := deleted(2, "wg-b")
	idC := deleted(3, "wg-c") // no node declares wg-c yet
	if err := c.RegisterNode(ctx, decl("node-c", "wg-c", "p-wg-c", "10.7.0.0/24", "")); err != nil {
		t.Fatal(err)
	}
	idFree := deleted(4, "wg-free") // no node's: only a node declaring wg-free delivers it
	now := time.Now()
	claim := func(s *Store, owner string) []int64 {
		t.Helper()
		evs, err := s.ClaimDue(ctx, owner, now, now.Add(time.Minute), 10)
		if err != nil {
			t.Fatal(err)
		}
		var ids []int64
		for _, ev := range evs {
			ids = append(ids, ev.ID)
		}
		return ids
	}
	for _, s := range []*Store{a, b, c, d} {
		at, ok, err := s.NextDue(ctx)
		if err != nil || !ok || at.After(now) {
			t.Fatalf("NextDue of %s = %v, %v, %v; want an event due now", s.node, at, ok, err)
		}
	}
	if got := claim(a, "a1"); len(got) != 1 || got[0] != idA {
		t.Fatalf("node-a claimed %v, want its own event %d only (not the unowned %d of wg-free, which it does not declare)", got, idA, idFree)
	}
	if at, ok, err := a.NextDue(ctx); err != nil || !ok || at.Before(now.Add(time.Minute)) {
		t.Fatalf("NextDue of node-a with its event claimed = %v, %v, %v; want its lease's end %v (wg-free's event due now is not node-a's)",
			at, ok, err, now.Add(time.Minute))
	}
	if got := claim(b, "b1"); len(got) != 1 || got[0] != idB {
		t.Fatalf("node-b claimed %v, want its event %d", got, idB)
	}
	if got := claim(c, "c1"); len(got) != 1 || got[0] != idC {
		t.Fatalf("node-c claimed %v, want the event %d recorded before it declared wg-c", got, idC)
	}
	if got := claim(d, "d1"); len(got) != 1 || got[0] != idFree {
		t.Fatalf("node-d claimed %v, want the unowned event %d of its interface wg-free", got, idFree)
	}
}

// A node's next expiry is that of its own configs: another node's config
// that expired (its node down, say) must not wake this node's scheduler
// for an expiry it will never do (it would wake again at once, forever).
func TestNodeNextExpiryOwnConfigs(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	all := open(t, url, Options{Create: true})
	a := open(t, url, Options{Node: "node-a", Interfaces: []string{"wg-a"}})
	for _, d := range []store.NodeDecl{
		decl("node-a", "wg-a", "p-wg-a", "10.9.0.0/24", ""),
		decl("node-b", "wg-b", "p-wg-b", "10.8.0.0/24", ""),
	} {
		if err := all.RegisterNode(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now().UTC()
	active := func(i int, iface, v4 string, exp time.Time) {
		t.Helper()
		p, ev, err := all.InsertPending(ctx, store.NewPeer{PublicKey: testKey(i), Interface: iface, ProfileID: "p-" + iface, UserID: "u",
			IPv4Range: netip.MustParsePrefix(v4), ExpiresAt: exp})
		if err != nil {
			t.Fatal(err)
		}
		if err := all.Activate(ctx, p.PublicKey, ev.ID); err != nil {
			t.Fatal(err)
		}
	}
	active(1, "wg-b", "10.8.0.0/24", now.Add(-time.Hour)) // node-b's, overdue
	if at, ok, err := a.NextExpiry(ctx); err != nil || ok {
		t.Fatalf("NextExpiry of node-a with only node-b's config = %v, %v, %v; want none", at, ok, err)
	}
	mine := now.Add(time.Hour).Truncate(time.Microsecond)
	active(2, "wg-a", "10.9.0.0/24", mine)
	if at, ok, err := a.NextExpiry(ctx); err != nil || !ok || !at.Equal(mine) {
		t.Fatalf("NextExpiry of node-a = %v, %v, %v; want its own config's %v", at, ok, err, mine)
	}
	if at, ok, err := all.NextExpiry(ctx); err != nil || !ok || !at.Before(now) {
		t.Fatalf("NextExpiry of a handle without a node = %v, %v, %v; want node-b's overdue config", at, ok, err)
	}
}
