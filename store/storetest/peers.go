package storetest

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

func (su *suite) testAllocatePairedIndexes(t *testing.T) {
	s, _ := su.newStore(t)
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

func (su *suite) testAllocateExhaustionWritesNothing(t *testing.T) {
	ctx := context.Background()
	s, _ := su.newStore(t)
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
	peers, events := countPeers(t, s), countEvents(t, s)
	dv, _ := s.Version(ctx)
	_, _, err := s.InsertPending(ctx, small(5))
	if !errors.Is(err, store.ErrPoolExhausted) {
		t.Fatalf("sixth peer in a /29: err = %v, want ErrPoolExhausted", err)
	}
	if !strings.Contains(err.Error(), `all 5 addresses of profile "small" are in use`) {
		t.Errorf("message %q does not say what is full", err)
	}
	if countPeers(t, s) != peers || countEvents(t, s) != events {
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

func (su *suite) testAllocateReusesLowestFreed(t *testing.T) {
	ctx := context.Background()
	s, _ := su.newStore(t)
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

func (su *suite) testAllocateSingleFamily(t *testing.T) {
	s, _ := su.newStore(t)
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

func (su *suite) testAllocateProfilesIndependent(t *testing.T) {
	s, _ := su.newStore(t)
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

func (su *suite) testInsertPendingValidation(t *testing.T) {
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
	s, _ := su.newStore(t)
	for _, tt := range tests {
		np := staffPeer(1, "alice")
		tt.edit(&np)
		_, _, err := s.InsertPending(context.Background(), np)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want %q", tt.name, err, tt.want)
		}
	}
	if n := countPeers(t, s); n != 0 {
		t.Errorf("invalid inserts wrote %d rows", n)
	}
}

func (su *suite) testInsertPendingConflictAndLimit(t *testing.T) {
	ctx := context.Background()
	s, _ := su.newStore(t)
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
	if n := countPeers(t, s); n != 4 {
		t.Errorf("%d peers, want 4", n)
	}
	if n := countEvents(t, s); n != 4 {
		t.Errorf("%d events, want 4 (one C per peer)", n)
	}
}

// testAllocateConcurrent runs 8 goroutines × 250 creates on one profile with
// a per-user limit, through three Stores on one file (as separate processes
// would): no duplicate address, no limit overrun, no "database is locked".
func (su *suite) testAllocateConcurrent(t *testing.T) {
	const (
		workers  = 8
		each     = 250
		users    = 10
		perUser  = 150 // demand is 200 per user: 50 each must be refused
		wantMade = users * perUser
	)
	ctx := context.Background()
	open := su.newDB(t)
	stores := []store.Store{su.handle(t, open, nil), su.handle(t, open, nil), su.handle(t, open, nil)}
	v4 := netip.MustParsePrefix("10.50.0.0/20")
	v6 := netip.MustParsePrefix("fd50::/64")

	var (
		mu      sync.Mutex // guards made, limited and errs
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
}

// Addresses held on the device by peers the store does not know (kept
// orphans) are never allocated; the next free index is taken instead.
func (su *suite) testAllocateSkipsAvoided(t *testing.T) {
	ctx := context.Background()
	s, _ := su.newStore(t)
	pfx := netip.MustParsePrefix
	avoid := func(np store.NewPeer, ps ...string) store.NewPeer {
		for _, p := range ps {
			np.Avoid = append(np.Avoid, pfx(p))
		}
		return np
	}
	// .2 held by an orphan: the first config gets .3.
	p := mustCreate(t, s, avoid(staffPeer(0, "a"), "10.42.0.2/32"))
	if p.IPv4.String() != "10.42.0.3" || p.IPv6.String() != "fd42::3" {
		t.Fatalf("got %s / %s, want 10.42.0.3 / fd42::3", p.IPv4, p.IPv6)
	}
	// The skipped index stays free for a later create without the orphan.
	p = mustCreate(t, s, staffPeer(1, "a"))
	if p.IPv4.String() != "10.42.0.2" {
		t.Fatalf("got %s, want the skipped 10.42.0.2", p.IPv4)
	}
	// An IPv6 orphan address blocks its paired index too; a /30 of v4
	// orphans (.4-.7) and a foreign range are skipped or ignored.
	p = mustCreate(t, s, avoid(staffPeer(2, "a"), "fd42::4/128", "10.42.0.5/32", "10.42.0.6/31", "192.168.0.0/16", "fd99::/64"))
	if p.IPv4.String() != "10.42.0.8" || p.IPv6.String() != "fd42::8" {
		t.Fatalf("got %s / %s, want 10.42.0.8 / fd42::8", p.IPv4, p.IPv6)
	}
	// From the free list: .4 was skipped, so it is free and lowest.
	p = mustCreate(t, s, avoid(staffPeer(3, "a"), "10.42.0.4/32"))
	if p.IPv4.String() != "10.42.0.5" {
		t.Fatalf("got %s, want 10.42.0.5 (.4 avoided, on the free list)", p.IPv4)
	}
	// A prefix covering the whole range: pool exhausted, with a message
	// that names the cause, and nothing written.
	rows := countPeers(t, s)
	_, _, err := s.InsertPending(ctx, avoid(staffPeer(4, "a"), "10.0.0.0/8"))
	if !errors.Is(err, store.ErrPoolExhausted) || !strings.Contains(err.Error(), "held by peers on the device that the store does not know") {
		t.Fatalf("err = %v, want ErrPoolExhausted naming the held addresses", err)
	}
	if countPeers(t, s) != rows {
		t.Fatal("a refused insert wrote a row")
	}
	// Everything but the last index avoided in a /29 (indexes 0..4).
	small := staffPeer(5, "b")
	small.ProfileID, small.IPv4Range, small.IPv6Range = "small", pfx("10.9.0.0/29"), netip.Prefix{}
	p = mustCreate(t, s, avoid(small, "10.9.0.0/30", "10.9.0.4/31"))
	if p.IPv4.String() != "10.9.0.6" {
		t.Fatalf("got %s, want 10.9.0.6", p.IPv4)
	}
}

func (su *suite) testDisconnected(t *testing.T) {
	ctx := context.Background()
	s, _ := su.newStore(t)
	var keys []wgtypes.Key
	for i := range 3 {
		keys = append(keys, mustCreate(t, s, staffPeer(i, "a")).PublicKey)
	}
	if _, err := s.DeletePeers(ctx, keys[1:2], store.ReasonDeleted, "", testClockFuture()); err != nil {
		t.Fatal(err)
	}
	// More keys than one query takes, most of them unknown.
	ask := append([]wgtypes.Key{}, keys...)
	for i := range 1200 {
		ask = append(ask, testKey(1000+i))
	}
	got, err := s.Disconnected(ctx, ask)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !got[keys[1]] {
		t.Fatalf("Disconnected = %v, want only %s", got, keys[1])
	}
	if got, err := s.Disconnected(ctx, nil); err != nil || len(got) != 0 {
		t.Fatalf("no keys: %v, %v", got, err)
	}
}

func (su *suite) testCreateActivateReject(t *testing.T) {
	ctx := context.Background()
	s, clock := su.newStore(t)
	psk := testKey(900)
	np := staffPeer(1, "alice")
	np.DisplayName = "laptop"
	np.PresharedKey = &psk
	np.OriginatingIP = netip.MustParseAddr("::ffff:192.0.2.9")
	np.ExpiresAt = clock.Now().Add(90 * 24 * time.Hour)
	created := clock.Now()

	p, ev := mustInsert(t, s, np)
	psk[0] = 0 // the store keeps its own copy
	if p.State != store.StatePending || !p.CreatedAt.Equal(created) || p.PresharedKey == nil || *p.PresharedKey != testKey(900) {
		t.Fatalf("inserted peer = %+v", p)
	}
	if ev.Kind != store.KindConnect || ev.Reason != store.ReasonCreated || ev.Status != store.StatusRunning || ev.ID == 0 ||
		ev.UserID != "alice" || ev.OriginatingIP.String() != "192.0.2.9" || !ev.ExpiresAt.Equal(np.ExpiresAt) {
		t.Fatalf("C event = %+v", ev)
	}
	got, err := s.GetPeer(ctx, p.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if got.DisplayName != "laptop" || got.OriginatingIP.String() != "192.0.2.9" || *got.PresharedKey != testKey(900) ||
		!got.ExpiresAt.Equal(np.ExpiresAt) || got.ExpiresAt.Location() != time.UTC || got.State != store.StatePending {
		t.Fatalf("GetPeer = %+v", got)
	}
	// The outbox never claims a running C event.
	if evs, err := s.ClaimDue(ctx, "a", clock.Now().Add(time.Hour), clock.Now().Add(2*time.Hour), 10); err != nil || len(evs) != 0 {
		t.Fatalf("ClaimDue with only a running C = %v, %v", evs, err)
	}

	if err := s.Activate(ctx, p.PublicKey, ev.ID+1); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Activate with an unknown event = %v, want ErrNotFound", err)
	}
	clock.Advance(time.Second)
	if err := s.Activate(ctx, p.PublicKey, ev.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.Activate(ctx, p.PublicKey, ev.ID); err != nil {
		t.Fatalf("second Activate = %v, want nil (idempotent)", err)
	}
	got, _ = s.GetPeer(ctx, p.PublicKey)
	if got.State != store.StateActive {
		t.Fatalf("state after Activate = %s", got.State)
	}
	evs, _ := s.ListEvents(ctx, store.EventFilter{})
	if len(evs) != 1 || evs[0].Status != store.StatusDone || evs[0].Attempts != 1 || !evs[0].DoneAt.Equal(clock.Now()) {
		t.Fatalf("C event after Activate = %+v", evs)
	}
	if err := s.RejectPending(ctx, p.PublicKey, ev.ID); !errors.Is(err, store.ErrConflict) || !strings.Contains(err.Error(), "peer is active") {
		t.Errorf("RejectPending of an active peer = %v, want ErrConflict", err)
	}

	// Reject: the row and its C event vanish.
	p2, ev2 := mustInsert(t, s, staffPeer(2, "bob"))
	if err := s.RejectPending(ctx, p2.PublicKey, ev.ID); !errors.Is(err, store.ErrConflict) {
		t.Errorf("RejectPending with another peer's event = %v, want ErrConflict", err)
	}
	if err := s.RejectPending(ctx, p2.PublicKey, ev2.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetPeer(ctx, p2.PublicKey); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetPeer after reject = %v", err)
	}
	if err := s.RejectPending(ctx, p2.PublicKey, ev2.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second RejectPending = %v, want ErrNotFound", err)
	}
	if err := s.Activate(ctx, p2.PublicKey, ev2.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Activate after reject = %v, want ErrNotFound", err)
	}
	if n := countEvents(t, s); n != 1 {
		t.Errorf("%d events after reject, want 1", n)
	}
}

func (su *suite) testListPeersFilters(t *testing.T) {
	ctx := context.Background()
	s, clock := su.newStore(t)
	start := clock.Now()
	exp := func(np store.NewPeer, d time.Duration) store.NewPeer { np.ExpiresAt = start.Add(d); return np }
	mustCreate(t, s, exp(staffPeer(1, "alice"), time.Hour))
	clock.Advance(time.Minute)
	mustCreate(t, s, exp(staffPeer(2, "bob"), 2*time.Hour))
	clock.Advance(time.Minute)
	mustInsert(t, s, exp(staffPeer(3, "alice"), time.Hour)) // pending
	guest := staffPeer(4, "alice")
	guest.Interface = "wg1"
	guest.ProfileID = "guest"
	mustCreate(t, s, guest) // never expires

	keys := func(ps []store.Peer) string {
		var out []string
		for _, p := range ps {
			out = append(out, fmt.Sprint(p.PublicKey[31]))
		}
		return strings.Join(out, ",")
	}
	tests := []struct {
		f    store.PeerFilter
		want string
	}{
		{store.PeerFilter{}, "1,2,3,4"},
		{store.PeerFilter{UserID: "alice"}, "1,3,4"},
		{store.PeerFilter{Interface: "wg1"}, "4"},
		{store.PeerFilter{ProfileID: "staff", State: store.StatePending}, "3"},
		{store.PeerFilter{State: store.StateActive, ExpiresBefore: start.Add(time.Hour)}, "1"}, // inclusive
		{store.PeerFilter{State: store.StateActive, ExpiresBefore: start.Add(time.Hour - 1)}, ""},
		{store.PeerFilter{ExpiresBefore: start.Add(24 * time.Hour)}, "1,2,3"},
		{store.PeerFilter{CreatedBefore: start.Add(time.Minute)}, "1"}, // exclusive
		{store.PeerFilter{CreatedBefore: start.Add(time.Minute + 1)}, "1,2"},
		{store.PeerFilter{Limit: 2}, "1,2"},
	}
	for _, tt := range tests {
		got, err := s.ListPeers(ctx, tt.f)
		if err != nil {
			t.Fatalf("ListPeers(%+v): %v", tt.f, err)
		}
		if keys(got) != tt.want {
			t.Errorf("ListPeers(%+v) = %s, want %s", tt.f, keys(got), tt.want)
		}
	}
	if _, err := s.ListPeers(ctx, store.PeerFilter{State: "gone"}); err == nil || !strings.Contains(err.Error(), `unknown state "gone"`) {
		t.Errorf("bad state filter: %v", err)
	}
	if at, ok, err := s.NextExpiry(ctx); err != nil || !ok || !at.Equal(start.Add(time.Hour)) {
		t.Errorf("NextExpiry = %s, %v, %v; want %s (pending peers do not count)", at, ok, err, start.Add(time.Hour))
	}
	counts, err := s.CountPeers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []store.PeerCount{
		{Interface: "wg0", ProfileID: "staff", State: store.StateActive, Count: 2},
		{Interface: "wg0", ProfileID: "staff", State: store.StatePending, Count: 1},
		{Interface: "wg1", ProfileID: "guest", State: store.StateActive, Count: 1},
	}
	if fmt.Sprint(counts) != fmt.Sprint(want) {
		t.Errorf("CountPeers = %v, want %v", counts, want)
	}
	if used, _ := s.PoolUsage(ctx, "wg0", "staff"); used != 3 {
		t.Errorf("PoolUsage = %d, want 3", used)
	}
}

func (su *suite) testNextExpiryNone(t *testing.T) {
	s, _ := su.newStore(t)
	mustCreate(t, s, staffPeer(1, "alice"))
	if _, ok, err := s.NextExpiry(context.Background()); ok || err != nil {
		t.Errorf("NextExpiry with no expiring peer: ok=%v err=%v", ok, err)
	}
}

func (su *suite) testSetExpiry(t *testing.T) {
	ctx := context.Background()
	s, clock := su.newStore(t)
	now := clock.Now()

	long := staffPeer(1, "alice")
	long.ExpiresAt = now.Add(30 * 24 * time.Hour)
	a := mustCreate(t, s, long)
	never := mustCreate(t, s, staffPeer(2, "alice"))
	soon := staffPeer(3, "bob")
	soon.ExpiresAt = now.Add(time.Minute)
	b := mustCreate(t, s, soon)
	pending, _ := mustInsert(t, s, staffPeer(4, "carol"))
	events := countEvents(t, s)

	// Shorten one, give another an expiry, skip the pending and the missing
	// ones, count a repeated key once.
	at := now.Add(time.Hour).Truncate(time.Second)
	got, err := s.SetExpiry(ctx, []wgtypes.Key{a.PublicKey, never.PublicKey, pending.PublicKey, testKey(99), a.PublicKey}, at)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].PublicKey != a.PublicKey || got[1].PublicKey != never.PublicKey {
		t.Fatalf("updated %v, want the two active peers in order", keysOfPeers(got))
	}
	for _, p := range got {
		if !p.ExpiresAt.Equal(at) || p.State != store.StateActive || p.UserID != "alice" || !p.IPv4.IsValid() {
			t.Errorf("returned %+v, want the whole row with expires_at %s", p, at)
		}
		stored, err := s.GetPeer(ctx, p.PublicKey)
		if err != nil || !stored.ExpiresAt.Equal(at) {
			t.Errorf("stored expiry of %s: %v, %v; want %s", p.PublicKey, stored.ExpiresAt, err, at)
		}
	}
	if p, _ := s.GetPeer(ctx, pending.PublicKey); !p.ExpiresAt.IsZero() {
		t.Errorf("pending peer got expiry %s", p.ExpiresAt)
	}
	if n := countEvents(t, s); n != events {
		t.Errorf("events: %d, want %d (no event for an expiry change)", n, events)
	}

	// The earliest expiry follows a shortened one.
	if next, ok, err := s.NextExpiry(ctx); err != nil || !ok || !next.Equal(b.ExpiresAt) {
		t.Fatalf("NextExpiry = %s, %v, %v; want bob's %s", next, ok, err, b.ExpiresAt)
	}
	if _, err := s.SetExpiry(ctx, []wgtypes.Key{a.PublicKey}, now.Add(30*time.Second)); err != nil {
		t.Fatal(err)
	}
	if next, _, _ := s.NextExpiry(ctx); !next.Equal(now.Add(30 * time.Second)) {
		t.Errorf("NextExpiry = %s after shortening to 30s", next)
	}
	expiring, err := s.ListPeers(ctx, store.PeerFilter{State: store.StateActive, ExpiresBefore: now.Add(45 * time.Second)})
	if err != nil || len(expiring) != 1 || expiring[0].PublicKey != a.PublicKey {
		t.Errorf("expiring within 45s: %v, %v; want alice's shortened one", keysOfPeers(expiring), err)
	}

	// Zero means never again.
	got, err = s.SetExpiry(ctx, []wgtypes.Key{never.PublicKey}, time.Time{})
	if err != nil || len(got) != 1 || !got[0].ExpiresAt.IsZero() {
		t.Fatalf("never: %+v, %v", got, err)
	}
	all, err := s.ListPeers(ctx, store.PeerFilter{})
	nevers := 0
	for _, p := range all {
		if p.ExpiresAt.IsZero() {
			nevers++
		}
	}
	if err != nil || nevers != 2 {
		t.Errorf("peers without expiry: %d, %v; want 2 (the pending one and the one set to never)", nevers, err)
	}

	// Once its expiry has passed a row is left to the expiry run.
	clock.Advance(2 * time.Minute)
	got, err = s.SetExpiry(ctx, []wgtypes.Key{b.PublicKey, a.PublicKey}, clock.Now().Add(time.Hour))
	if err != nil || len(got) != 0 {
		t.Errorf("expired rows: updated %v, %v; want none", keysOfPeers(got), err)
	}
	if p, _ := s.GetPeer(ctx, b.PublicKey); !p.ExpiresAt.Equal(b.ExpiresAt) {
		t.Errorf("expired row changed to %s", p.ExpiresAt)
	}
}

func (su *suite) testSetExpiryOutOfRange(t *testing.T) {
	ctx := context.Background()
	s, clock := su.newStore(t)
	p := mustCreate(t, s, staffPeer(1, "alice"))
	_, err := s.SetExpiry(ctx, []wgtypes.Key{p.PublicKey}, clock.Now().AddDate(500, 0, 0))
	if err == nil || !strings.Contains(err.Error(), "storable range") {
		t.Fatalf("err = %v, want the storable range named", err)
	}
	if got, _ := s.GetPeer(ctx, p.PublicKey); !got.ExpiresAt.IsZero() {
		t.Errorf("row changed to %s", got.ExpiresAt)
	}
}
