package sqlite

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/store"
)

// TestAllocatorFollowsHandEdits changes peers with plain SQL, as an import of
// existing configs or an operator might; the allocator's triggers keep the
// lowest free index right.
func TestAllocatorFollowsHandEdits(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	raw := func(q string, args ...any) {
		t.Helper()
		if _, err := s.db.Exec(q, args...); err != nil {
			t.Fatal(err)
		}
	}
	insertAt := func(i int, idx int64) {
		raw(`INSERT INTO peers (public_key, interface, profile_id, user_id, ip_index, ip_four, ip_six, state, created_at)
			VALUES (?, 'wg0', 'staff', 'imported', ?, ?, ?, 'active', 1)`,
			testKey(i).String(), idx, store.HostAddr(staff4, idx).String(), store.HostAddr(staff6, idx).String())
	}
	made := 1000
	next := func(want string) {
		t.Helper()
		made++
		p, _, err := s.InsertPending(ctx, staffPeer(made, "new"))
		if err != nil {
			t.Fatal(err)
		}
		if p.IPv4.String() != want {
			t.Fatalf("allocated %s, want %s", p.IPv4, want)
		}
	}
	// Imported out of order, with gaps: 5, 2, 9.
	insertAt(1, 5)
	insertAt(2, 2)
	insertAt(3, 9)
	next("10.42.0.2") // index 0
	next("10.42.0.3") // index 1
	next("10.42.0.5") // index 3
	// Moved by hand from index 9 to 20: 9 is free again, 10..19 too.
	raw(`UPDATE peers SET ip_index = 20, ip_four = ?, ip_six = ? WHERE public_key = ?`,
		store.HostAddr(staff4, 20).String(), store.HostAddr(staff6, 20).String(), testKey(3).String())
	for _, want := range []string{"10.42.0.6", "10.42.0.8", "10.42.0.9", "10.42.0.10", "10.42.0.11"} { // 4, 6, 7, 8, 9
		next(want)
	}
	// Deleted by hand: back on the free list.
	raw(`DELETE FROM peers WHERE public_key = ?`, testKey(2).String())
	next("10.42.0.4")
	checkPoolInvariant(t, s)
}

// checkPoolInvariant verifies the allocator's bookkeeping against the peers:
// below each profile's high-water mark every index is held by exactly one
// peer or listed free, never both, and no peer sits at or above the mark.
func checkPoolInvariant(t *testing.T, s *Store) {
	t.Helper()
	var bad int
	err := s.db.QueryRow(`SELECT
		(SELECT count(*) FROM peers p JOIN ip_free f USING (interface, profile_id, ip_index))
		+ (SELECT count(*) FROM peers p LEFT JOIN ip_pools o USING (interface, profile_id)
		    WHERE o.next_index IS NULL OR p.ip_index >= o.next_index)
		+ (SELECT count(*) FROM ip_pools o
		    WHERE o.next_index != (SELECT count(*) FROM peers p WHERE p.interface = o.interface AND p.profile_id = o.profile_id)
		                        + (SELECT count(*) FROM ip_free f WHERE f.interface = o.interface AND f.profile_id = o.profile_id AND f.ip_index < o.next_index))`).Scan(&bad)
	if err != nil {
		t.Fatal(err)
	}
	if bad != 0 {
		t.Fatalf("allocator bookkeeping disagrees with peers in %d places", bad)
	}
}

// TestAllocateConcurrentChurn creates and deletes at once from two Stores:
// freed indexes are reused without ever being handed out twice.
func TestAllocateConcurrentChurn(t *testing.T) {
	ctx := context.Background()
	path := dbPath(t)
	stores := []*Store{openAt(t, path, nil), openAt(t, path, nil)}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Go(func() {
			s := stores[w%2]
			var mine []wgtypes.Key
			for j := range 120 {
				np := staffPeer(10_000*(w+1)+j, fmt.Sprintf("w%d", w))
				p, _, err := s.InsertPending(ctx, np)
				if err != nil {
					errs <- err
					return
				}
				mine = append(mine, p.PublicKey)
				if j%3 == 2 { // delete two of the last three
					if _, err := s.DeletePeers(ctx, mine[len(mine)-3:len(mine)-1], store.ReasonDeleted, "", time.Time{}); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	peers, err := stores[0].ListPeers(ctx, store.PeerFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(peers) != 4*40 {
		t.Fatalf("%d peers left, want %d", len(peers), 4*40)
	}
	seen := map[netip.Addr]bool{}
	for _, p := range peers {
		if seen[p.IPv4] {
			t.Fatalf("address %s held twice", p.IPv4)
		}
		seen[p.IPv4] = true
	}
	checkPoolInvariant(t, stores[0])
	// Reuse kept the pool compact: the high-water mark stays well below the
	// 480 creates.
	var hw int
	if err := stores[0].db.QueryRow(`SELECT next_index FROM ip_pools WHERE profile_id = 'staff'`).Scan(&hw); err != nil {
		t.Fatal(err)
	}
	if hw > 240 {
		t.Errorf("high-water mark %d after 480 creates and 320 deletes; freed indexes are not reused", hw)
	}
}
