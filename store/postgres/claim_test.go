package postgres

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/internal/pgtest"
	"github.com/wgkeeper/wgkeeper/store"
)

// Eight handles of one node, as eight daemons' deliveries, claim due D
// events at once in small batches until none is left: every event is
// claimed exactly once. Without the row locks of the claim (FOR UPDATE
// SKIP LOCKED) two claimers whose statements overlap both take the same
// events, and both would run their scripts.
func TestConcurrentClaimsNeverShare(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	all := open(t, url, Options{Create: true})
	const n = 120
	for i := 0; i < n; i++ {
		p, ev, err := all.InsertPending(ctx, store.NewPeer{PublicKey: testKey(100 + i), Interface: "wg-x", ProfileID: "p", UserID: "u",
			IPv4Range: netip.MustParsePrefix("10.9.0.0/24")})
		if err != nil {
			t.Fatal(err)
		}
		if err := all.Activate(ctx, p.PublicKey, ev.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := all.DeletePeers(ctx, []wgtypes.Key{p.PublicKey}, store.ReasonDeleted, "", time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	got := map[int64]string{}
	var wg sync.WaitGroup
	for c := 0; c < 8; c++ {
		s := open(t, url, Options{Node: "node-b", Interfaces: []string{"wg-x"}})
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; ; k++ {
				owner := fmt.Sprintf("o%d/%d", c, k)
				now := time.Now()
				evs, err := s.ClaimDue(ctx, owner, now, now.Add(time.Minute), 3)
				if err != nil {
					t.Error(err)
					return
				}
				if len(evs) == 0 {
					return
				}
				mu.Lock()
				for _, ev := range evs {
					if o, ok := got[ev.ID]; ok {
						t.Errorf("event %d claimed by %s and %s", ev.ID, o, owner)
					}
					got[ev.ID] = owner
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(got) != n {
		t.Errorf("claimed %d events, want %d", len(got), n)
	}
}

// The events of one key commit in id order even when two nodes delete and
// re-create it at once: each C comes after the D of the config before it,
// so the C/D pairing of the connection log (WhoHad, UserSessions), the
// pruning of closed C events and the delivery order of one config never
// meet a D that belongs to a later C. (Across keys ids need not follow
// commit order; see store.Event.ID.)
func TestKeyEventsCommitInIDOrder(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	a := open(t, url, Options{Create: true})
	b := open(t, url, Options{})
	key := testKey(7)
	np := store.NewPeer{PublicKey: key, Interface: "wg-x", ProfileID: "p", UserID: "u", IPv4Range: netip.MustParsePrefix("10.9.0.0/24")}
	create := func(s *Store) error {
		for {
			p, ev, err := s.InsertPending(ctx, np)
			if errors.Is(err, store.ErrConflict) {
				continue // the previous config is not deleted yet
			}
			if err != nil {
				return err
			}
			return s.Activate(ctx, p.PublicKey, ev.ID)
		}
	}
	if err := create(a); err != nil {
		t.Fatal(err)
	}
	const rounds = 40
	for i := 0; i < rounds; i++ {
		var wg sync.WaitGroup
		errs := make(chan error, 2)
		wg.Add(2)
		go func() {
			defer wg.Done()
			_, err := b.DeletePeers(ctx, []wgtypes.Key{key}, store.ReasonDeleted, "", time.Time{})
			errs <- err
		}()
		go func() {
			defer wg.Done()
			errs <- create(a)
		}()
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	evs, err := a.ListEvents(ctx, store.EventFilter{PublicKey: &key})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2*rounds+1 {
		t.Fatalf("%d events of the key, want %d", len(evs), 2*rounds+1)
	}
	// Newest first: C D C D … C, the oldest a C.
	for i, ev := range evs {
		want := store.KindConnect
		if i%2 == 1 {
			want = store.KindDisconnect
		}
		if ev.Kind != want {
			t.Fatalf("event %d of the key (id %d) is %s, want %s: the events of one key are not in the order their configs lived", i, ev.ID, ev.Kind, want)
		}
	}
	sess, err := a.UserSessions(ctx, "u")
	if err != nil || len(sess) != rounds+1 {
		t.Fatalf("UserSessions = %d sessions, %v; want %d", len(sess), err, rounds+1)
	}
	for i, s := range sess[:rounds] {
		if s.D == nil || s.D.ID <= s.C.ID || (i+1 < len(sess) && s.D.ID >= sess[i+1].C.ID) {
			t.Fatalf("session %d: C %d, D %+v, next C %d: a D paired with the wrong C", i, s.C.ID, s.D, sess[i+1].C.ID)
		}
	}
	if sess[rounds].D != nil {
		t.Fatalf("the live config's session has a D: %+v", sess[rounds].D)
	}
}
