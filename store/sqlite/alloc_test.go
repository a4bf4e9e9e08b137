package sqlite

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/store"
)

func TestAllocatePairedIndexes(t *testing.T) {
	s, _ := newStore(t)
	for i := range 4 {
		p, ev := mustInsert(t, s, staffPeer(i, "alice"))
		want4 := fmt.Sprintf("10.42.0.%d", i+2)
		want6 := fmt.Sprintf("fd42::%d", i+2)
		if p.IPv4.String() != want4 || p.IPv6.String() != want6 {
			t.Fatalf("peer %d got %s / %s, want %s / %s", i, p.IPv4, p.IPv6, want4, want6)
		}
		if ev.IPv4 != p.IPv4 || ev.IPv6 != p.IPv6 {
			t.Fatalf("C event addresses %s / %s differ from the peer's", ev.IPv4, ev.IPv6)
		}
	}
}

func TestAllocateExhaustionWritesNothing(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	small := func(i int) store.NewPeer {
		np := staffPeer(i, fmt.Sprintf("user%d", i))
		np.ProfileID = "small"
		np.IPv4Range = netip.MustParsePrefix("10.9.0.0/29")
		np.IPv6Range = netip.MustParsePrefix("fd09::/64")
		return np
	}
	var got []string
	for i := range 5 {
		p, _ := mustInsert(t, s, small(i))
		got = append(got, p.IPv4.String())
	}
	if want := "10.9.0.2 10.9.0.3 10.9.0.4 10.9.0.5 10.9.0.6"; strings.Join(got, " ") != want {
		t.Fatalf("a /29 handed out %v, want %s", got, want)
	}
	peers, events := countRows(t, s, "peers"), countRows(t, s, "events")
	dv, _ := s.Version(ctx)
	_, _, err := s.InsertPending(ctx, small(5))
	if !errors.Is(err, store.ErrPoolExhausted) {
		t.Fatalf("sixth peer in a /29: err = %v, want ErrPoolExhausted", err)
	}
	if !strings.Contains(err.Error(), `all 5 addresses of profile "small" are in use`) {
		t.Errorf("message %q does not say what is full", err)
	}
	if countRows(t, s, "peers") != peers || countRows(t, s, "events") != events {
		t.Error("a refused insert wrote rows")
	}
	if v, _ := s.Version(ctx); v != dv {
		t.Error("a refused insert committed something (data version moved)")
	}
	if _, err := s.GetPeer(ctx, testKey(5)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetPeer after refused insert = %v, want ErrNotFound", err)
	}
	if used, err := s.PoolUsage(ctx, "wg0", "small"); err != nil || used != 5 {
		t.Errorf("PoolUsage = %d, %v; want 5", used, err)
	}
}

func TestAllocateReusesLowestFreed(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	var peers []store.Peer
	for i := range 6 {
		peers = append(peers, mustCreate(t, s, staffPeer(i, "alice")))
	}
	// Free .5 and .3 (indexes 3 and 1), in that order.
	if _, err := s.DeletePeers(ctx, []wgtypes.Key{peers[3].PublicKey, peers[1].PublicKey}, store.ReasonDeleted, "", testClockFuture()); err != nil {
		t.Fatal(err)
	}
	p, _ := mustInsert(t, s, staffPeer(10, "bob"))
	if p.IPv4.String() != "10.42.0.3" || p.IPv6.String() != "fd42::3" {
		t.Fatalf("first reuse got %s / %s, want the lowest freed 10.42.0.3 / fd42::3", p.IPv4, p.IPv6)
	}
	// A rejected pending peer frees its address as well.
	p2, ev2 := mustInsert(t, s, staffPeer(11, "bob"))
	if p2.IPv4.String() != "10.42.0.5" {
		t.Fatalf("second reuse got %s, want 10.42.0.5", p2.IPv4)
	}
	if err := s.RejectPending(ctx, p2.PublicKey, ev2.ID); err != nil {
		t.Fatal(err)
	}
	p3, _ := mustInsert(t, s, staffPeer(12, "bob"))
	if p3.IPv4.String() != "10.42.0.5" {
		t.Fatalf("after reject got %s, want 10.42.0.5 again", p3.IPv4)
	}
	p4, _ := mustInsert(t, s, staffPeer(13, "bob"))
	if p4.IPv4.String() != "10.42.0.8" {
		t.Fatalf("with no gap left got %s, want 10.42.0.8", p4.IPv4)
	}
}

func TestAllocateSingleFamily(t *testing.T) {
	s, _ := newStore(t)
	v4only := staffPeer(1, "alice")
	v4only.ProfileID = "v4"
	v4only.IPv6Range = netip.Prefix{}
	p, ev := mustInsert(t, s, v4only)
	if p.IPv4.String() != "10.42.0.2" || p.IPv6.IsValid() || ev.IPv6.IsValid() {
		t.Fatalf("v4-only profile: %s / %v", p.IPv4, p.IPv6)
	}
	got, err := s.GetPeer(context.Background(), p.PublicKey)
	if err != nil || got.IPv6.IsValid() || got.IPv4 != p.IPv4 {
		t.Fatalf("GetPeer v4-only = %+v, %v", got, err)
	}

	v6only := staffPeer(2, "alice")
	v6only.Interface = "wg1"
	v6only.ProfileID = "v6"
	v6only.IPv4Range = netip.Prefix{}
	p, _ = mustInsert(t, s, v6only)
	if p.IPv4.IsValid() || p.IPv6.String() != "fd42::2" {
		t.Fatalf("v6-only profile: %v / %s", p.IPv4, p.IPv6)
	}
	got, err = s.GetPeer(context.Background(), p.PublicKey)
	if err != nil || got.IPv4.IsValid() || got.IPv6 != p.IPv6 {
		t.Fatalf("GetPeer v6-only = %+v, %v", got, err)
	}
}

func TestAllocateProfilesIndependent(t *testing.T) {
	s, _ := newStore(t)
	a := staffPeer(1, "alice")
	b := staffPeer(2, "alice")
	b.ProfileID = "guest"
	b.IPv4Range = netip.MustParsePrefix("10.43.0.0/24")
	b.IPv6Range = netip.MustParsePrefix("fd43::/64")
	pa, _ := mustInsert(t, s, a)
	pb, _ := mustInsert(t, s, b)
	if pa.IPv4.String() != "10.42.0.2" || pb.IPv4.String() != "10.43.0.2" {
		t.Fatalf("got %s and %s, want each profile to start at its own .2", pa.IPv4, pb.IPv4)
	}
	// Overlapping profiles (config validation forbids them) collide on the
	// address and are refused as a conflict rather than double-allocated.
	c := staffPeer(3, "carol")
	c.ProfileID = "overlap"
	_, _, err := s.InsertPending(context.Background(), c)
	if !errors.Is(err, store.ErrConflict) || !strings.Contains(err.Error(), `address fd42::2 is already in use on interface "wg0"`) && !strings.Contains(err.Error(), `address 10.42.0.2 is already in use on interface "wg0"`) {
		t.Fatalf("overlapping profile: err = %v, want ErrConflict naming the address", err)
	}
}

func TestInsertPendingValidation(t *testing.T) {
	zero := wgtypes.Key{}
	tests := []struct {
		name string
		edit func(*store.NewPeer)
		want string
	}{
		{"zero key", func(np *store.NewPeer) { np.PublicKey = wgtypes.Key{} }, "public key is all zeros"},
		{"no interface", func(np *store.NewPeer) { np.Interface = "" }, "interface is empty"},
		{"no profile", func(np *store.NewPeer) { np.ProfileID = "" }, "profile id is empty"},
		{"no user", func(np *store.NewPeer) { np.UserID = "" }, "user id is empty"},
		{"negative limit", func(np *store.NewPeer) { np.MaxPerUser = -1 }, "per-user maximum -1 is negative"},
		{"zero psk", func(np *store.NewPeer) { np.PresharedKey = &zero }, "preshared key is all zeros"},
		{"no ranges", func(np *store.NewPeer) { np.IPv4Range, np.IPv6Range = netip.Prefix{}, netip.Prefix{} }, "neither an IPv4 nor an IPv6 range"},
		{"swapped ranges", func(np *store.NewPeer) { np.IPv4Range, np.IPv6Range = staff6, staff4 }, "is not IPv4"},
	}
	s, _ := newStore(t)
	for _, tt := range tests {
		np := staffPeer(1, "alice")
		tt.edit(&np)
		_, _, err := s.InsertPending(context.Background(), np)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want %q", tt.name, err, tt.want)
		}
	}
	if n := countRows(t, s, "peers"); n != 0 {
		t.Errorf("invalid inserts wrote %d rows", n)
	}
}

func TestInsertPendingConflictAndLimit(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	np := staffPeer(1, "alice")
	np.MaxPerUser = 2
	mustInsert(t, s, np)

	// Same key again, for anyone: conflict, nothing written.
	for _, user := range []string{"alice", "mallory"} {
		dup := np
		dup.UserID = user
		_, _, err := s.InsertPending(ctx, dup)
		if !errors.Is(err, store.ErrConflict) || !strings.Contains(err.Error(), "public key already in use") {
			t.Fatalf("duplicate key for %s: err = %v, want ErrConflict", user, err)
		}
	}
	second := staffPeer(2, "alice")
	second.MaxPerUser = 2
	mustCreate(t, s, second)
	third := staffPeer(3, "alice")
	third.MaxPerUser = 2
	_, _, err := s.InsertPending(ctx, third)
	if !errors.Is(err, store.ErrLimitReached) {
		t.Fatalf("third config: err = %v, want ErrLimitReached", err)
	}
	if want := `user "alice" already has 2 of at most 2 configs in profile "staff"`; !strings.Contains(err.Error(), want) {
		t.Errorf("message %q, want %q", err, want)
	}
	// Other users and other profiles are unaffected.
	other := staffPeer(4, "bob")
	other.MaxPerUser = 2
	mustInsert(t, s, other)
	guest := staffPeer(5, "alice")
	guest.ProfileID = "guest"
	guest.IPv4Range = netip.MustParsePrefix("10.43.0.0/24")
	guest.IPv6Range = netip.Prefix{}
	guest.MaxPerUser = 2
	mustInsert(t, s, guest)
	if n := countRows(t, s, "peers"); n != 4 {
		t.Errorf("%d peers, want 4", n)
	}
	if n := countRows(t, s, "events"); n != 4 {
		t.Errorf("%d events, want 4 (one C per peer)", n)
	}
}

// TestAllocateConcurrent runs 8 goroutines × 250 creates on one profile with
// a per-user limit, through three Stores on one file (as separate processes
// would): no duplicate address, no limit overrun, no "database is locked".
func TestAllocateConcurrent(t *testing.T) {
	const (
		workers  = 8
		each     = 250
		users    = 10
		perUser  = 150 // demand is 200 per user: 50 each must be refused
		wantMade = users * perUser
	)
	ctx := context.Background()
	path := dbPath(t)
	stores := []*Store{openAt(t, path, nil), openAt(t, path, nil), openAt(t, path, nil)}
	v4 := netip.MustParsePrefix("10.50.0.0/20")
	v6 := netip.MustParsePrefix("fd50::/64")

	var (
		mu      sync.Mutex
		made    = map[netip.Addr]wgtypes.Key{}
		limited int
		errs    []error
	)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			s := stores[w%len(stores)]
			for j := range each {
				n := w*each + j
				np := store.NewPeer{
					PublicKey:  testKey(n + 1),
					Interface:  "wg0",
					ProfileID:  "busy",
					UserID:     fmt.Sprintf("user%d", n%users),
					IPv4Range:  v4,
					IPv6Range:  v6,
					MaxPerUser: perUser,
				}
				p, ev, err := s.InsertPending(ctx, np)
				if err == nil && j%2 == 0 {
					err = s.Activate(ctx, p.PublicKey, ev.ID)
				}
				mu.Lock()
				switch {
				case err == nil:
					if prev, dup := made[p.IPv4]; dup {
						errs = append(errs, fmt.Errorf("address %s given to %s and %s", p.IPv4, prev, p.PublicKey))
					}
					made[p.IPv4] = p.PublicKey
				case errors.Is(err, store.ErrLimitReached):
					limited++
				default:
					errs = append(errs, err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	if len(made) != wantMade || limited != workers*each-wantMade {
		t.Fatalf("created %d and refused %d, want %d and %d", len(made), limited, wantMade, workers*each-wantMade)
	}
	peers, err := stores[0].ListPeers(ctx, store.PeerFilter{ProfileID: "busy"})
	if err != nil {
		t.Fatal(err)
	}
	perUserCount := map[string]int{}
	seen6 := map[netip.Addr]bool{}
	for i, p := range peers {
		perUserCount[p.UserID]++
		// Dense from the bottom, in listing order, v4 and v6 paired.
		if want := store.HostAddr(v4, int64(i)); p.IPv4 != want {
			t.Fatalf("peer %d has %s, want %s (lowest free first)", i, p.IPv4, want)
		}
		if want := store.HostAddr(v6, int64(i)); p.IPv6 != want {
			t.Fatalf("peer %d has %s, want %s (paired with %s)", i, p.IPv6, want, p.IPv4)
		}
		if seen6[p.IPv6] {
			t.Fatalf("duplicate IPv6 %s", p.IPv6)
		}
		seen6[p.IPv6] = true
	}
	for u, n := range perUserCount {
		if n != perUser {
			t.Errorf("%s has %d configs, want exactly %d", u, n, perUser)
		}
	}
	checkPoolInvariant(t, stores[0])
}

// testClockFuture is a lease end far after any test clock.
func testClockFuture() time.Time { return newClock().Now().AddDate(1, 0, 0) }

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
