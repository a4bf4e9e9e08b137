package storetest

import (
	"context"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/store"
)

// testEventActor: the actor given to InsertPending (NewPeer.Actor) and
// DeletePeersBy is on the events they insert and read back the same;
// DeletePeers records none.
func (su *suite) testEventActor(t *testing.T) {
	ctx := context.Background()
	s, _ := su.newStore(t)
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
	bd, err := s.DeletePeers(ctx, []wgtypes.Key{q.PublicKey}, store.ReasonExpired, "", time.Time{})
	if err != nil || len(bd) != 1 || bd[0].Actor != "" {
		t.Fatalf("DeletePeers = %+v, %v; want one D without an actor", bd, err)
	}
	evs, err := s.ListEvents(ctx, store.EventFilter{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[int64]string{}
	for _, e := range evs {
		got[e.ID] = e.Actor
	}
	want := map[int64]string{c.ID: np.Actor, ds[0].ID: "cli:0", bd[0].ID: ""}
	if len(evs) != 4 {
		t.Fatalf("%d events, want 4", len(evs))
	}
	for id, a := range want {
		if got[id] != a {
			t.Errorf("event %d read back with actor %q, want %q", id, got[id], a)
		}
	}
}
