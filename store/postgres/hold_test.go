package postgres

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/internal/pgtest"
	"github.com/wgkeeper/wgkeeper/store"
)

// A config deleted on one node while its connect script still runs on
// the node that owns it: the D event is held until the later of the
// deleting handle's hold and the hold the owning node registered, so a
// node whose scripts may run longer still sees its C before its D; a
// node registering again replaces the hold it recorded.
func TestPendingDeleteHeldForOwnerNode(t *testing.T) {
	if all, err := Migrations(); err != nil || len(all) < connectHoldVersion || all[connectHoldVersion-1].Name != "connect_hold" {
		t.Fatalf("migration %d is not connect_hold (connectHoldVersion): %v", connectHoldVersion, err)
	}
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	all := open(t, url, Options{Create: true})
	a := open(t, url, Options{Node: "node-a", Interfaces: []string{"wg-a"}})
	b := open(t, url, Options{Node: "node-b", Interfaces: []string{"wg-b"}})
	register := func(s *Store, d store.NodeDecl, hold time.Duration) {
		t.Helper()
		d.ConnectHold = hold
		if err := s.RegisterNode(ctx, d); err != nil {
			t.Fatal(err)
		}
		ns, err := all.ListNodes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range ns {
			if n.Name == d.Name && n.ConnectHold != hold {
				t.Fatalf("ListNodes: %s has connect hold %s, want %s as registered", n.Name, n.ConnectHold, hold)
			}
		}
	}
	neg := decl("node-a", "wg-a", "p-wg-a", "10.9.0.0/24", "")
	neg.ConnectHold = -time.Second
	if err := a.RegisterNode(ctx, neg); err == nil {
		t.Fatal("a negative connect hold registered")
	}
	register(a, decl("node-a", "wg-a", "p-wg-a", "10.9.0.0/24", ""), 3*time.Minute)
	register(b, decl("node-b", "wg-b", "p-wg-b", "10.8.0.0/24", ""), 2*time.Hour)

	// deleteOnA deletes, as node-a's handle does for a config of another
	// node (no owner, its own hold), a pending config of wg-b whose
	// connect script started, and returns its D event.
	deleteOnA := func(i int, aHold time.Duration) (store.Event, time.Time) {
		t.Helper()
		p, c, err := all.InsertPending(ctx, store.NewPeer{PublicKey: testKey(i), Interface: "wg-b", ProfileID: "p-wg-b", UserID: "u",
			IPv4Range: netip.MustParsePrefix("10.8.0.0/24")})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.MarkConnectStarted(ctx, p.PublicKey, c.ID); err != nil {
			t.Fatal(err)
		}
		before := time.Now()
		evs, err := a.DeletePeers(ctx, []wgtypes.Key{p.PublicKey}, store.ReasonDeleted, "", before.Add(aHold))
		if err != nil || len(evs) != 1 || evs[0].Kind != store.KindDisconnect {
			t.Fatalf("DeletePeers = %+v, %v; want one D event", evs, err)
		}
		if evs[0].LeaseOwner != "" || !evs[0].LeaseUntil.IsZero() {
			t.Errorf("held D event = %+v; want it unleased", evs[0])
		}
		return evs[0], before
	}

	// node-b's hold (2h) is longer than node-a's (3 min): node-b's applies.
	ev, before := deleteOnA(1, 3*time.Minute)
	if lo := before.Add(2 * time.Hour); ev.NextAttemptAt.Before(lo) {
		t.Fatalf("D due at %v, want at least %v (node-b's registered hold of 2h): node-b's connect script may still run",
			ev.NextAttemptAt, lo)
	}
	if hi := time.Now().Add(2*time.Hour + time.Minute); ev.NextAttemptAt.After(hi) {
		t.Errorf("D due at %v, want about 2h from now (before %v)", ev.NextAttemptAt, hi)
	}
	listed, err := all.ListEvents(ctx, store.EventFilter{Kind: store.KindDisconnect})
	if err != nil || len(listed) != 1 || !listed[0].NextAttemptAt.Equal(ev.NextAttemptAt) {
		t.Fatalf("recorded D events = %+v, %v; want one due at %v", listed, err, ev.NextAttemptAt)
	}
	if got, err := b.ClaimDue(ctx, "b1", time.Now().Add(time.Hour), time.Now().Add(time.Hour+time.Minute), 10); err != nil || len(got) != 0 {
		t.Fatalf("node-b claimed %+v, %v an hour later; want nothing before its hold ends", got, err)
	}

	// node-b registers again (a reload) with a hold shorter than node-a's:
	// node-a's own hold applies.
	register(b, decl("node-b", "wg-b", "p-wg-b", "10.8.0.0/24", ""), time.Minute)
	ev, before = deleteOnA(2, 30*time.Minute)
	if want := before.Add(30 * time.Minute); !ev.NextAttemptAt.Equal(want) {
		t.Fatalf("D due at %v, want node-a's own hold %v (longer than node-b's 1 min)", ev.NextAttemptAt, want)
	}

	// Raised again: the new value is the one used.
	register(b, decl("node-b", "wg-b", "p-wg-b", "10.8.0.0/24", ""), 5*time.Hour)
	ev, before = deleteOnA(3, 30*time.Minute)
	if lo := before.Add(5 * time.Hour); ev.NextAttemptAt.Before(lo) {
		t.Fatalf("D due at %v, want at least %v (node-b's hold of 5h, registered again)", ev.NextAttemptAt, lo)
	}
}
