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

func (su *suite) testDeletePeersLeasedEvents(t *testing.T) {
	ctx := context.Background()
	s, clock := su.newStore(t)
	a := mustCreate(t, s, staffPeer(1, "alice"))
	b := mustCreate(t, s, staffPeer(2, "bob"))
	lease := clock.Now().Add(time.Minute)

	if _, err := s.DeletePeers(ctx, []wgtypes.Key{a.PublicKey}, "bored", "", time.Time{}); err == nil ||
		!strings.Contains(err.Error(), `reason "bored"`) {
		t.Errorf("unknown reason: err = %v", err)
	}
	if _, err := s.DeletePeers(ctx, []wgtypes.Key{a.PublicKey}, store.ReasonDeleted, "me", clock.Now()); err == nil {
		t.Error("a lease ending now was accepted")
	}

	evs, err := s.DeletePeers(ctx, []wgtypes.Key{b.PublicKey, testKey(99), a.PublicKey, b.PublicKey}, store.ReasonExpired, "daemon", lease)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[0].PublicKey != b.PublicKey || evs[1].PublicKey != a.PublicKey || evs[0].ID >= evs[1].ID {
		t.Fatalf("DeletePeers events = %+v, want b then a (missing and duplicate keys skipped)", evs)
	}
	for _, ev := range evs {
		if ev.Kind != store.KindDisconnect || ev.Reason != store.ReasonExpired || ev.Status != store.StatusPending ||
			ev.LeaseOwner != "daemon" || !ev.LeaseUntil.Equal(lease) || !ev.NextAttemptAt.Equal(clock.Now()) {
			t.Errorf("D event = %+v", ev)
		}
	}
	if evs[1].IPv4 != a.IPv4 || evs[1].IPv6 != a.IPv6 || evs[1].UserID != "alice" {
		t.Errorf("D event does not carry the peer's identity: %+v", evs[1])
	}
	if got, _ := s.ListPeers(ctx, store.PeerFilter{}); len(got) != 0 {
		t.Fatalf("peers left after delete: %v", got)
	}
	// Stored as returned.
	stored, _ := s.ListEvents(ctx, store.EventFilter{Kind: store.KindDisconnect})
	if len(stored) != 2 || stored[1] != evs[0] || stored[0] != evs[1] {
		t.Fatalf("stored D events differ from the returned ones:\n%+v\n%+v", stored, evs)
	}
	// Deleting again is harmless.
	again, err := s.DeletePeers(ctx, []wgtypes.Key{a.PublicKey}, store.ReasonDeleted, "daemon", lease)
	if err != nil || len(again) != 0 {
		t.Fatalf("second DeletePeers = %v, %v", again, err)
	}

	// Bytes go into the pending D event only.
	if err := setEventBytes(ctx, s, evs[0].ID, 1234, 5678); err != nil {
		t.Fatal(err)
	}
	if err := setEventBytes(ctx, s, evs[0].ID, -1, 0); err == nil {
		t.Error("negative byte counter accepted")
	}
	if err := setEventBytes(ctx, s, 9999, 1, 1); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("SetEventBytes unknown = %v, want ErrNotFound", err)
	}
	cEvents, _ := s.ListEvents(ctx, store.EventFilter{Kind: store.KindConnect})
	if err := setEventBytes(ctx, s, cEvents[0].ID, 1, 1); !errors.Is(err, store.ErrConflict) {
		t.Errorf("SetEventBytes on a C event = %v, want ErrConflict", err)
	}

	// The lease holds: nobody else claims them until it runs out.
	if got, err := s.ClaimDue(ctx, "cli", clock.Now(), clock.Now().Add(time.Minute), 10); err != nil || len(got) != 0 {
		t.Fatalf("ClaimDue under a live lease = %v, %v", got, err)
	}
	if at, ok, err := s.NextDue(ctx); err != nil || !ok || !at.Equal(lease) {
		t.Errorf("NextDue = %s, %v, %v; want the lease end %s", at, ok, err, lease)
	}
	if err := s.MarkDone(ctx, evs[0].ID, "daemon"); err != nil {
		t.Fatal(err)
	}
	// The holder crashed before delivering the other one: after the lease
	// it is claimable, and the former holder can no longer finish it.
	now := clock.Advance(2 * time.Minute)
	got, err := s.ClaimDue(ctx, "cli", now, now.Add(time.Minute), 10)
	if err != nil || len(got) != 1 || got[0].ID != evs[1].ID || got[0].LeaseOwner != "cli" {
		t.Fatalf("ClaimDue after the lease expired = %+v, %v", got, err)
	}
	err = s.MarkDone(ctx, evs[1].ID, "daemon")
	if !errors.Is(err, store.ErrConflict) || !strings.Contains(err.Error(), `leased to "cli", not "daemon"`) {
		t.Fatalf("MarkDone by the former holder = %v, want ErrConflict", err)
	}
	if err := s.MarkDone(ctx, evs[1].ID, "cli"); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkDone(ctx, evs[1].ID, "cli"); !errors.Is(err, store.ErrConflict) {
		t.Errorf("MarkDone twice = %v, want ErrConflict", err)
	}
	if err := s.MarkDone(ctx, 9999, "cli"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("MarkDone unknown = %v, want ErrNotFound", err)
	}
	final, _ := s.ListEvents(ctx, store.EventFilter{Kind: store.KindDisconnect})
	for _, ev := range final {
		if ev.Status != store.StatusDone || ev.Attempts != 1 || ev.LeaseOwner != "" || !ev.LeaseUntil.IsZero() || ev.DoneAt.IsZero() {
			t.Errorf("delivered event = %+v", ev)
		}
	}
	if final[1].BytesIn != 1234 || final[1].BytesOut != 5678 {
		t.Errorf("bytes = %d/%d, want 1234/5678", final[1].BytesIn, final[1].BytesOut)
	}
	if err := setEventBytes(ctx, s, evs[0].ID, 1, 1); !errors.Is(err, store.ErrConflict) {
		t.Errorf("SetEventBytes on a done event = %v, want ErrConflict", err)
	}
	if _, ok, _ := s.NextDue(ctx); ok {
		t.Error("NextDue reports something with nothing pending")
	}
}

func (su *suite) testStalePendingDelete(t *testing.T) {
	ctx := context.Background()
	s, clock := su.newStore(t)
	p, c := mustInsert(t, s, staffPeer(1, "alice"))
	if err := s.MarkConnectStarted(ctx, p.PublicKey, c.ID); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Minute)
	evs, err := s.DeletePeers(ctx, []wgtypes.Key{p.PublicKey}, store.ReasonStale, "", time.Time{})
	if err != nil || len(evs) != 1 {
		t.Fatalf("DeletePeers = %v, %v", evs, err)
	}
	if evs[0].LeaseOwner != "" || !evs[0].LeaseUntil.IsZero() || evs[0].Reason != store.ReasonStale {
		t.Errorf("unleased D event = %+v", evs[0])
	}
	all, _ := s.ListEvents(ctx, store.EventFilter{Kind: store.KindConnect})
	if len(all) != 1 || all[0].ID != c.ID || all[0].Status != store.StatusDone || all[0].LastError != store.NoteStaleConnect ||
		!all[0].DoneAt.Equal(clock.Now()) {
		t.Fatalf("C event of the stale peer = %+v", all)
	}
	if err := s.Activate(ctx, p.PublicKey, c.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Activate after stale cleanup = %v, want ErrNotFound", err)
	}
	// Immediately claimable without a lease.
	got, err := s.ClaimDue(ctx, "x", clock.Now(), clock.Now().Add(time.Minute), 5)
	if err != nil || len(got) != 1 || got[0].ID != evs[0].ID {
		t.Fatalf("ClaimDue = %v, %v", got, err)
	}
	// A pending peer deleted for another reason gets the other note.
	p2, _ := mustInsert(t, s, staffPeer(2, "bob"))
	if _, err := s.DeletePeers(ctx, []wgtypes.Key{p2.PublicKey}, store.ReasonDeleted, "", time.Time{}); err != nil {
		t.Fatal(err)
	}
	cs, _ := s.ListEvents(ctx, store.EventFilter{Kind: store.KindConnect, UserID: "bob"})
	if len(cs) != 1 || cs[0].LastError != store.NotePendingDeleted || cs[0].Status != store.StatusDone {
		t.Errorf("C event of a deleted pending peer = %+v", cs)
	}
}

// A delete without an owner (made for another node, which delivers the
// events) but with a hold: the D of a peer whose connect script may still
// run is unleased and due only at the hold; that of an active peer is due
// at once. The held D can be cancelled (the connect was then refused).
func (su *suite) testPendingDeleteHeldWithoutOwner(t *testing.T) {
	ctx := context.Background()
	s, clock := su.newStore(t)
	pending, c := mustInsert(t, s, staffPeer(1, "alice"))
	if err := s.MarkConnectStarted(ctx, pending.PublicKey, c.ID); err != nil {
		t.Fatal(err)
	}
	active := mustCreate(t, s, staffPeer(2, "bob"))
	now := clock.Now()
	if _, err := s.DeletePeers(ctx, []wgtypes.Key{pending.PublicKey}, store.ReasonDeleted, "", now); err == nil {
		t.Fatal("a hold that is not after now accepted")
	}
	hold := now.Add(time.Minute)
	evs, err := s.DeletePeers(ctx, []wgtypes.Key{pending.PublicKey, active.PublicKey}, store.ReasonDeleted, "", hold)
	if err != nil || len(evs) != 2 {
		t.Fatalf("DeletePeers = %v, %v", evs, err)
	}
	for _, ev := range evs {
		if ev.LeaseOwner != "" || !ev.LeaseUntil.IsZero() {
			t.Errorf("D event of a delete without an owner is leased: %+v", ev)
		}
	}
	if !evs[0].NextAttemptAt.Equal(hold) || !evs[1].NextAttemptAt.Equal(now) {
		t.Errorf("D events due at %v (pending peer) and %v (active peer); want %v and %v", evs[0].NextAttemptAt, evs[1].NextAttemptAt, hold, now)
	}
	got, err := s.ClaimDue(ctx, "x", now, now.Add(time.Second), 5)
	if err != nil || len(got) != 1 || got[0].ID != evs[1].ID {
		t.Fatalf("ClaimDue now = %+v, %v; want the active peer's D only", got, err)
	}
	if at, ok, err := s.NextDue(ctx); err != nil || !ok || !at.Equal(now.Add(time.Second)) {
		t.Errorf("NextDue = %v, %v, %v; want the claim's lease end", at, ok, err)
	}
	if got, err := s.ClaimDue(ctx, "x", hold.Add(-time.Nanosecond), hold, 5); err != nil || len(got) != 1 || got[0].ID != evs[1].ID {
		t.Fatalf("ClaimDue before the hold = %+v, %v; want the active peer's D again (its lease ran out)", got, err)
	}
	if n, err := s.CancelHeldDisconnect(ctx, pending.PublicKey); err != nil || n != 1 {
		t.Fatalf("CancelHeldDisconnect of the held D = %d, %v; want 1", n, err)
	}
}

func (su *suite) testRetryAndBackoff(t *testing.T) {
	ctx := context.Background()
	s, clock := su.newStore(t)
	p := mustCreate(t, s, staffPeer(1, "alice"))
	evs, err := s.DeletePeers(ctx, []wgtypes.Key{p.PublicKey}, store.ReasonDeleted, "d", clock.Now().Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	id := evs[0].ID
	if err := s.MarkAttemptFailed(ctx, id, "other", "boom", clock.Now().Add(time.Second), false); !errors.Is(err, store.ErrConflict) {
		t.Errorf("MarkAttemptFailed by a non-holder = %v, want ErrConflict", err)
	}
	if err := s.MarkAttemptFailed(ctx, id, "d", "boom", time.Time{}, false); err == nil {
		t.Error("non-final failure without a next attempt time accepted")
	}
	next := clock.Now().Add(10 * time.Second)
	if err := s.MarkAttemptFailed(ctx, id, "d", "exit status 3", next, false); err != nil {
		t.Fatal(err)
	}
	got, _ := s.ListEvents(ctx, store.EventFilter{Status: store.StatusPending})
	if len(got) != 1 || got[0].Attempts != 1 || got[0].LastError != "exit status 3" || !got[0].NextAttemptAt.Equal(next) ||
		got[0].LeaseOwner != "" || !got[0].LeaseUntil.IsZero() {
		t.Fatalf("after one failure: %+v", got)
	}
	if at, ok, _ := s.NextDue(ctx); !ok || !at.Equal(next) {
		t.Errorf("NextDue = %s, %v; want %s", at, ok, next)
	}
	// Not due before next_attempt_at.
	if c, _ := s.ClaimDue(ctx, "d", next.Add(-time.Nanosecond), next.Add(time.Minute), 5); len(c) != 0 {
		t.Fatalf("claimed before it was due: %+v", c)
	}
	c, err := s.ClaimDue(ctx, "d", next, next.Add(time.Minute), 5)
	if err != nil || len(c) != 1 {
		t.Fatalf("ClaimDue when due = %v, %v", c, err)
	}
	long := strings.Repeat("é", store.MaxErrorLen)
	if err := s.MarkAttemptFailed(ctx, id, "d", long, time.Time{}, true); err != nil {
		t.Fatal(err)
	}
	failed, _ := s.ListEvents(ctx, store.EventFilter{Status: store.StatusFailed})
	if len(failed) != 1 || failed[0].Attempts != 2 || !failed[0].NextAttemptAt.IsZero() ||
		len(failed[0].LastError) > store.MaxErrorLen || !strings.HasSuffix(failed[0].LastError, "(truncated)") {
		t.Fatalf("after the final failure: attempts %d, next %s, error length %d", failed[0].Attempts, failed[0].NextAttemptAt, len(failed[0].LastError))
	}
	if !strings.HasPrefix(failed[0].LastError, "éé") || strings.ContainsRune(failed[0].LastError, '\uFFFD') {
		t.Error("truncation split a character")
	}
	if c, _ := s.ClaimDue(ctx, "d", next.Add(time.Hour), next.Add(2*time.Hour), 5); len(c) != 0 {
		t.Fatalf("claimed a failed event: %+v", c)
	}
	counts, err := s.CountEvents(ctx)
	if err != nil || counts[store.StatusFailed] != 1 || counts[store.StatusDone] != 1 || counts[store.StatusPending] != 0 || counts[store.StatusRunning] != 0 {
		t.Fatalf("CountEvents = %v, %v", counts, err)
	}

	if err := s.RetryEvent(ctx, 9999); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("RetryEvent unknown = %v, want ErrNotFound", err)
	}
	clock.Advance(time.Hour)
	if err := s.RetryEvent(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := s.RetryEvent(ctx, id); !errors.Is(err, store.ErrConflict) || !strings.Contains(err.Error(), "is pending, not failed") {
		t.Errorf("RetryEvent of a pending event = %v, want ErrConflict", err)
	}
	got, _ = s.ListEvents(ctx, store.EventFilter{Status: store.StatusPending})
	if len(got) != 1 || got[0].Attempts != 0 || !got[0].NextAttemptAt.Equal(clock.Now()) {
		t.Fatalf("after RetryEvent: %+v", got)
	}

	// RetryFailed puts back every failed event.
	for i := 2; i <= 4; i++ {
		p := mustCreate(t, s, staffPeer(i, "bob"))
		evs, err := s.DeletePeers(ctx, []wgtypes.Key{p.PublicKey}, store.ReasonRevoked, "d", clock.Now().Add(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.MarkAttemptFailed(ctx, evs[0].ID, "d", "no", time.Time{}, true); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.RetryFailed(ctx)
	if err != nil || n != 3 {
		t.Fatalf("RetryFailed = %d, %v; want 3", n, err)
	}
	if n, _ := s.RetryFailed(ctx); n != 0 {
		t.Errorf("second RetryFailed = %d, want 0", n)
	}
}

func (su *suite) testClaimDueValidation(t *testing.T) {
	s, clock := su.newStore(t)
	now := clock.Now()
	for _, tt := range []struct {
		owner string
		until time.Time
		limit int
		want  string
	}{
		{"", now.Add(time.Minute), 1, "owner is empty"},
		{"a", now.Add(time.Minute), 0, "limit 0 is not positive"},
		{"a", now, 1, "is not after now"},
	} {
		if _, err := s.ClaimDue(context.Background(), tt.owner, now, tt.until, tt.limit); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ClaimDue(%q, %d) = %v, want %q", tt.owner, tt.limit, err, tt.want)
		}
	}
}

// testClaimDueConcurrent: two Stores on one file (two processes) claim the
// same backlog concurrently; every event is handed out exactly once.
func (su *suite) testClaimDueConcurrent(t *testing.T) {
	const n = 300
	ctx := context.Background()
	open := su.newDB(t)
	clock := newClock()
	a := su.handle(t, open, clock)
	b := su.handle(t, open, clock)
	np := staffPeer(0, "u")
	np.IPv4Range = netip.MustParsePrefix("10.60.0.0/22")
	var keys []wgtypes.Key
	for i := range n {
		np.PublicKey = testKey(i + 1)
		keys = append(keys, mustCreate(t, a, np).PublicKey)
	}
	if _, err := a.DeletePeers(ctx, keys, store.ReasonExpired, "", time.Time{}); err != nil {
		t.Fatal(err)
	}
	now := clock.Now()
	var mu sync.Mutex // guards owner
	owner := map[int64]string{}
	var wg sync.WaitGroup
	for w := range 4 {
		s := []store.Store{a, b}[w%2]
		name := fmt.Sprintf("worker%d", w)
		wg.Go(func() {
			for {
				evs, err := s.ClaimDue(ctx, name, now, now.Add(time.Minute), 7)
				if err != nil {
					t.Error(err)
					return
				}
				if len(evs) == 0 {
					return
				}
				for i, ev := range evs {
					if i > 0 && evs[i-1].ID >= ev.ID {
						t.Errorf("claim not in id order: %d then %d", evs[i-1].ID, ev.ID)
					}
					if ev.LeaseOwner != name {
						t.Errorf("event %d returned with owner %q, want %q", ev.ID, ev.LeaseOwner, name)
					}
					mu.Lock()
					if prev, dup := owner[ev.ID]; dup {
						t.Errorf("event %d claimed by %s and %s", ev.ID, prev, name)
					}
					owner[ev.ID] = name
					mu.Unlock()
					if err := s.MarkDone(ctx, ev.ID, name); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}
	wg.Wait()
	if len(owner) != n {
		t.Fatalf("%d events claimed, want %d", len(owner), n)
	}
	counts, _ := a.CountEvents(ctx)
	if counts[store.StatusDone] != 2*n {
		t.Errorf("done events = %d, want %d (C and D of each peer)", counts[store.StatusDone], 2*n)
	}
}

func (su *suite) testListEventsFilters(t *testing.T) {
	ctx := context.Background()
	s, _ := su.newStore(t)
	a := mustCreate(t, s, staffPeer(1, "alice"))                                                                    // C1
	mustCreate(t, s, staffPeer(2, "bob"))                                                                           // C2
	if _, err := s.DeletePeers(ctx, []wgtypes.Key{a.PublicKey}, store.ReasonDeleted, "", time.Time{}); err != nil { // D3
		t.Fatal(err)
	}
	mustInsert(t, s, staffPeer(3, "alice")) // C4 running
	ids := func(evs []store.Event) string {
		var out []string
		for _, e := range evs {
			out = append(out, fmt.Sprint(e.ID))
		}
		return strings.Join(out, ",")
	}
	key := a.PublicKey
	tests := []struct {
		f    store.EventFilter
		want string
	}{
		{store.EventFilter{}, "4,3,2,1"},
		{store.EventFilter{Kind: store.KindConnect}, "4,2,1"},
		{store.EventFilter{Status: store.StatusPending}, "3"},
		{store.EventFilter{Status: store.StatusRunning}, "4"},
		{store.EventFilter{UserID: "alice"}, "4,3,1"},
		{store.EventFilter{PublicKey: &key}, "3,1"},
		{store.EventFilter{AfterID: 2}, "4,3"},
		{store.EventFilter{BeforeID: 3}, "2,1"},
		{store.EventFilter{Limit: 2}, "4,3"},
		{store.EventFilter{BeforeID: 4, Limit: 2}, "3,2"},
	}
	for _, tt := range tests {
		got, err := s.ListEvents(ctx, tt.f)
		if err != nil {
			t.Fatal(err)
		}
		if ids(got) != tt.want {
			t.Errorf("ListEvents(%+v) = %s, want %s", tt.f, ids(got), tt.want)
		}
	}
	if _, err := s.ListEvents(ctx, store.EventFilter{Status: "lost"}); err == nil || !strings.Contains(err.Error(), `unknown status "lost"`) {
		t.Errorf("bad status filter: %v", err)
	}
	if _, err := s.ListEvents(ctx, store.EventFilter{Kind: "X"}); err == nil || !strings.Contains(err.Error(), `unknown kind "X"`) {
		t.Errorf("bad kind filter: %v", err)
	}
}

func (su *suite) testPruneEvents(t *testing.T) {
	ctx := context.Background()
	s, clock := su.newStore(t)
	day := 24 * time.Hour
	// Closed session, long ago: C and D both go.
	old := mustCreate(t, s, staffPeer(1, "alice"))
	evs, _ := s.DeletePeers(ctx, []wgtypes.Key{old.PublicKey}, store.ReasonDeleted, "x", clock.Now().Add(time.Minute))
	if err := s.MarkDone(ctx, evs[0].ID, "x"); err != nil {
		t.Fatal(err)
	}
	// Long-lived config created long ago: its C stays while it lives.
	live := mustCreate(t, s, staffPeer(2, "bob"))
	// A failed and a pending D long ago: kept (not done).
	f := mustCreate(t, s, staffPeer(3, "carol"))
	p := mustCreate(t, s, staffPeer(4, "dave"))
	fe, _ := s.DeletePeers(ctx, []wgtypes.Key{f.PublicKey}, store.ReasonDeleted, "x", clock.Now().Add(time.Minute))
	if err := s.MarkAttemptFailed(ctx, fe[0].ID, "x", "no", time.Time{}, true); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeletePeers(ctx, []wgtypes.Key{p.PublicKey}, store.ReasonDeleted, "", time.Time{}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(100 * day)
	recent := mustCreate(t, s, staffPeer(5, "erin"))
	evs, _ = s.DeletePeers(ctx, []wgtypes.Key{recent.PublicKey}, store.ReasonDeleted, "x", clock.Now().Add(time.Minute))
	if err := s.MarkDone(ctx, evs[0].ID, "x"); err != nil {
		t.Fatal(err)
	}

	n, err := s.PruneEvents(ctx, clock.Now().Add(-90*day))
	if err != nil {
		t.Fatal(err)
	}
	// Pruned: alice's C and D, and the C events of carol and dave (their
	// sessions are closed; their D events are not done).
	if n != 4 {
		t.Fatalf("PruneEvents = %d, want 4", n)
	}
	left, _ := s.ListEvents(ctx, store.EventFilter{})
	var desc []string
	for _, e := range left {
		desc = append(desc, e.UserID+":"+e.Kind+":"+e.Status)
	}
	want := "erin:D:done,erin:C:done,dave:D:pending,carol:D:failed,bob:C:done"
	if strings.Join(desc, ",") != want {
		t.Errorf("left after prune: %s, want %s", strings.Join(desc, ","), want)
	}
	sess, _ := s.WhoHad(ctx, live.IPv4, clock.Now())
	if len(sess) != 1 || sess[0].C.UserID != "bob" {
		t.Errorf("WhoHad for a long-lived config after prune = %+v", sess)
	}
	if n, _ := s.PruneEvents(ctx, clock.Now().Add(-90*day)); n != 0 {
		t.Errorf("second prune = %d, want 0", n)
	}
	// An id is never reused after pruning.
	_, c6 := mustInsert(t, s, staffPeer(6, "frank"))
	if c6.ID <= left[0].ID {
		t.Errorf("new event id %d reuses or precedes %d", c6.ID, left[0].ID)
	}
}

// testWhoHad: "who had 10.42.0.7 at time T" across several sessions with
// address reuse.
func (su *suite) testWhoHad(t *testing.T) {
	ctx := context.Background()
	s, clock := su.newStore(t)
	// Indexes 0..4 taken for good, so .7 is the next address.
	for i := range 5 {
		mustCreate(t, s, staffPeer(100+i, "filler"))
	}
	ip := netip.MustParseAddr("10.42.0.7")

	t0 := clock.Advance(time.Hour)
	alice := mustCreate(t, s, staffPeer(1, "alice"))
	if alice.IPv4 != ip {
		t.Fatalf("alice got %s, want %s", alice.IPv4, ip)
	}
	t1 := clock.Advance(time.Hour)
	if _, err := s.DeletePeers(ctx, []wgtypes.Key{alice.PublicKey}, store.ReasonExpired, "", time.Time{}); err != nil {
		t.Fatal(err)
	}
	t2 := clock.Advance(time.Hour)
	bob := mustCreate(t, s, staffPeer(2, "bob"))
	t3 := clock.Advance(time.Hour)
	if _, err := s.DeletePeers(ctx, []wgtypes.Key{bob.PublicKey}, store.ReasonRevoked, "", time.Time{}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour)
	// alice's key comes back later and gets the address again.
	t4 := clock.Advance(time.Hour)
	again := mustCreate(t, s, staffPeer(1, "alice"))
	if bob.IPv4 != ip || again.IPv4 != ip {
		t.Fatalf("reuse: bob %s, alice again %s, want %s", bob.IPv4, again.IPv4, ip)
	}
	// Same address on another interface belongs to someone else.
	t5 := clock.Advance(time.Minute)
	other := staffPeer(3, "carol")
	other.Interface = "wg9"
	for i := range 6 {
		o := other
		o.PublicKey = testKey(200 + i)
		if i == 5 {
			o.PublicKey = testKey(3)
		}
		mustCreate(t, s, o)
	}

	type result struct{ user, end string }
	query := func(addr netip.Addr, at time.Time) []result {
		t.Helper()
		sess, err := s.WhoHad(ctx, addr, at)
		if err != nil {
			t.Fatal(err)
		}
		var out []result
		for _, x := range sess {
			end := "open"
			if x.D != nil {
				end = x.D.Reason
				if x.D.PublicKey != x.C.PublicKey || x.D.ID <= x.C.ID {
					t.Errorf("mismatched pair C %d / D %d", x.C.ID, x.D.ID)
				}
			}
			if x.C.Interface == "wg9" {
				end += "@wg9"
			}
			out = append(out, result{x.C.UserID, end})
		}
		return out
	}
	tests := []struct {
		at   time.Time
		want string
	}{
		{t0.Add(-time.Second), "[]"},
		{t0, "[{alice expired}]"},
		{t0.Add(30 * time.Minute), "[{alice expired}]"},
		{t1, "[]"}, // D recorded at t1: not held at t1
		{t2.Add(time.Minute), "[{bob revoked}]"},
		{t3.Add(30 * time.Minute), "[]"},
		{t4, "[{alice open}]"},
		{t5.Add(-time.Nanosecond), "[{alice open}]"},
		{t5, "[{alice open} {carol open@wg9}]"},
		{t5.Add(24 * time.Hour), "[{alice open} {carol open@wg9}]"},
	}
	for _, tt := range tests {
		if got := fmt.Sprint(query(ip, tt.at)); got != tt.want {
			t.Errorf("WhoHad(%s, %s) = %s, want %s", ip, tt.at.Format(time.TimeOnly), got, tt.want)
		}
	}
	// IPv6 and the IPv4-mapped form find the same sessions.
	if got := fmt.Sprint(query(netip.MustParseAddr("fd42::7"), t2.Add(time.Minute))); got != "[{bob revoked}]" {
		t.Errorf("WhoHad(fd42::7) = %s", got)
	}
	if got := fmt.Sprint(query(netip.MustParseAddr("::ffff:10.42.0.7"), t2.Add(time.Minute))); got != "[{bob revoked}]" {
		t.Errorf("WhoHad(::ffff:10.42.0.7) = %s", got)
	}
	if _, err := s.WhoHad(ctx, netip.Addr{}, t0); err == nil {
		t.Error("WhoHad without an address accepted")
	}

	sess, err := s.UserSessions(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if len(sess) != 2 || sess[0].D == nil || sess[0].D.Reason != store.ReasonExpired || sess[1].D != nil ||
		!sess[0].C.CreatedAt.Equal(t0) || !sess[0].D.CreatedAt.Equal(t1) || !sess[1].C.CreatedAt.Equal(t4) {
		t.Errorf("UserSessions(alice) = %+v", sess)
	}
	if sess, _ := s.UserSessions(ctx, "nobody"); len(sess) != 0 {
		t.Errorf("UserSessions(nobody) = %+v", sess)
	}
}

// ReleaseLeases frees exactly the leases of one holder (bare or with a
// claim token), keeps everything else of the events, and leaves other
// holders alone, including one whose name starts the same.
func (su *suite) testReleaseLeases(t *testing.T) {
	ctx := context.Background()
	s, clock := su.newStore(t)
	lease := clock.Now().Add(time.Hour)
	owners := []string{"h:1:ab/1", "h:1:ab/2", "h:1:ab", "h:1:abc/1", "h:1:a/1"}
	for i, o := range owners {
		p := mustCreate(t, s, staffPeer(i+1, "u"))
		if _, err := s.DeletePeers(ctx, []wgtypes.Key{p.PublicKey}, store.ReasonDeleted, o, lease); err != nil {
			t.Fatal(err)
		}
	}
	before, _ := s.ListEvents(ctx, store.EventFilter{Kind: store.KindDisconnect})
	for _, bad := range []string{"", "h:1:ab/1"} {
		if _, err := s.ReleaseLeases(ctx, bad); err == nil {
			t.Errorf("holder %q accepted", bad)
		}
	}
	n, err := s.ReleaseLeases(ctx, "h:1:ab")
	if err != nil || n != 3 {
		t.Fatalf("released %d, %v; want 3", n, err)
	}
	after, _ := s.ListEvents(ctx, store.EventFilter{Kind: store.KindDisconnect})
	for i, ev := range after {
		want := before[i]
		if strings.HasPrefix(want.LeaseOwner, "h:1:ab/") || want.LeaseOwner == "h:1:ab" {
			want.LeaseOwner, want.LeaseUntil = "", time.Time{}
		}
		if ev != want {
			t.Errorf("event %d: %+v, want %+v", ev.ID, ev, want)
		}
	}
	// Now claimable at once; the others are not.
	got, err := s.ClaimDue(ctx, "next", clock.Now(), lease, 10)
	if err != nil || len(got) != 3 {
		t.Fatalf("claimed %d after release, want 3: %v", len(got), err)
	}
	if n, err := s.ReleaseLeases(ctx, "nobody"); n != 0 || err != nil {
		t.Fatalf("release of a holder without leases: %d %v", n, err)
	}
}

// testStaleNeverStarted: a config left pending whose connect script never
// started is cleaned without a D event (its script never saw a C), its C
// event goes, and a late start is refused.
func (su *suite) testStaleNeverStarted(t *testing.T) {
	ctx := context.Background()
	s, clock := su.newStore(t)
	p, c := mustInsert(t, s, staffPeer(1, "alice"))
	started, cs := mustInsert(t, s, staffPeer(2, "bob"))
	if err := s.MarkConnectStarted(ctx, started.PublicKey, cs.ID); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Minute)
	evs, err := s.DeletePeers(ctx, []wgtypes.Key{p.PublicKey, started.PublicKey}, store.ReasonStale, "", time.Time{})
	if err != nil || len(evs) != 1 || evs[0].PublicKey != started.PublicKey || evs[0].Kind != store.KindDisconnect {
		t.Fatalf("DeletePeers = %+v, %v; want one D, for the started one", evs, err)
	}
	if _, err := s.GetPeer(ctx, p.PublicKey); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("never-started row kept: %v", err)
	}
	all, _ := s.ListEvents(ctx, store.EventFilter{PublicKey: &p.PublicKey})
	if len(all) != 0 {
		t.Errorf("events of the never-started config: %+v, want none", all)
	}
	if err := s.MarkConnectStarted(ctx, p.PublicKey, c.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("MarkConnectStarted after the cleanup = %v, want ErrNotFound", err)
	}
	// Its address is free again.
	if n, _ := s.PoolUsage(ctx, p.Interface, p.ProfileID); n != 0 {
		t.Errorf("pool usage %d, want 0", n)
	}
}

func (su *suite) testMarkConnectStarted(t *testing.T) {
	ctx := context.Background()
	s, clock := su.newStore(t)
	p, c := mustInsert(t, s, staffPeer(1, "alice"))
	if err := s.MarkConnectStarted(ctx, p.PublicKey, c.ID); err != nil {
		t.Fatal(err)
	}
	at := clock.Now()
	clock.Advance(time.Second)
	if err := s.MarkConnectStarted(ctx, p.PublicKey, c.ID); err != nil {
		t.Fatalf("again: %v", err)
	}
	evs, _ := s.ListEvents(ctx, store.EventFilter{Kind: store.KindConnect})
	if len(evs) != 1 || !evs[0].StartedAt.Equal(at) {
		t.Fatalf("C event = %+v, want started at %s (the first call)", evs, at)
	}
	other, oc := mustInsert(t, s, staffPeer(2, "bob"))
	if err := s.MarkConnectStarted(ctx, p.PublicKey, oc.ID); !errors.Is(err, store.ErrConflict) {
		t.Errorf("another peer's event: %v, want ErrConflict", err)
	}
	if err := s.Activate(ctx, other.PublicKey, oc.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkConnectStarted(ctx, other.PublicKey, oc.ID); !errors.Is(err, store.ErrConflict) {
		t.Errorf("active peer: %v, want ErrConflict", err)
	}
}

// testDocumentedErrors: the errors written on the contract that the
// lifecycle tests above do not meet.
func (su *suite) testDocumentedErrors(t *testing.T) {
	ctx := context.Background()
	s, clock := su.newStore(t)
	a, ca := mustInsert(t, s, staffPeer(1, "alice"))
	_, cb := mustInsert(t, s, staffPeer(2, "bob"))
	// Another peer's running C event.
	if err := s.Activate(ctx, a.PublicKey, cb.ID); !errors.Is(err, store.ErrConflict) {
		t.Errorf("Activate with another peer's C event = %v, want ErrConflict", err)
	}
	if err := s.Activate(ctx, testKey(99), ca.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Activate of an unknown peer = %v, want ErrNotFound", err)
	}
	if err := s.Activate(ctx, a.PublicKey, ca.ID); err != nil {
		t.Fatal(err)
	}
	// A D event, then failures by someone without the lease.
	evs, err := s.DeletePeers(ctx, []wgtypes.Key{a.PublicKey}, store.ReasonDeleted, "x", clock.Now().Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	d := evs[0]
	if err := s.MarkAttemptFailed(ctx, 9999, "x", "no", time.Time{}, true); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("MarkAttemptFailed of an unknown event = %v, want ErrNotFound", err)
	}
	if err := s.MarkAttemptFailed(ctx, ca.ID, "x", "no", time.Time{}, true); !errors.Is(err, store.ErrConflict) {
		t.Errorf("MarkAttemptFailed of a C event = %v, want ErrConflict", err)
	}
	if err := s.RetryEvent(ctx, d.ID); !errors.Is(err, store.ErrConflict) {
		t.Errorf("RetryEvent of a pending event = %v, want ErrConflict", err)
	}
	// SetEventsBytes writes all or none.
	err = s.SetEventsBytes(ctx, []store.EventBytes{{ID: d.ID, In: 7, Out: 8}, {ID: 9999, In: 1, Out: 1}})
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("SetEventsBytes with an unknown event = %v, want ErrNotFound", err)
	}
	got, _ := s.ListEvents(ctx, store.EventFilter{Kind: store.KindDisconnect})
	if len(got) != 1 || got[0].BytesIn != 0 || got[0].BytesOut != 0 {
		t.Errorf("a refused SetEventsBytes wrote counters: %+v", got)
	}
	if err := s.SetEventsBytes(ctx, nil); err != nil {
		t.Errorf("SetEventsBytes of nothing = %v", err)
	}
	// Every error matched a sentinel without any store state changing
	// but what succeeded: alice's D is still pending and leased.
	if got[0].Status != store.StatusPending || got[0].LeaseOwner != "x" {
		t.Errorf("D event after refused calls = %+v", got[0])
	}
}
