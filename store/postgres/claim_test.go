package postgres

import (
	"context"
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
