package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/store"
)

// testVersionSeesOtherWriters: Version stays put without writes and moves
// on a write through this handle and through another one.
func (su *suite) testVersionSeesOtherWriters(t *testing.T) {
	ctx := context.Background()
	open := su.newDB(t)
	a := su.handle(t, open, nil)
	b := su.handle(t, open, nil)
	v0, err := a.Version(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := a.Version(ctx); v != v0 {
		t.Fatalf("version moved without a write: %d -> %d", v0, v)
	}
	mustCreate(t, a, staffPeer(1, "alice"))
	v1, _ := a.Version(ctx)
	if v1 == v0 {
		t.Fatal("version did not change after a write through the same handle")
	}
	mustCreate(t, b, staffPeer(2, "bob"))
	v2, _ := a.Version(ctx)
	if v2 == v1 {
		t.Fatal("version did not change after a write by another handle")
	}
}

func (su *suite) testCloseTwice(t *testing.T) {
	s, _ := su.newStore(t)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
}

// changeWait bounds how long a notification may take; the contract says
// "soon", backends poll or listen well within it.
const changeWait = 10 * time.Second

// testChangesSeenByAnotherHandle: a write through another handle on the
// same database, and one through the watching handle itself, reach a
// Changes channel; a cancelled context closes it.
func (su *suite) testChangesSeenByAnotherHandle(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	open := su.newDB(t)
	watcher := su.handle(t, open, nil)
	writer := su.handle(t, open, nil)
	ch := watcher.Changes(ctx)
	wait := func(what string) {
		t.Helper()
		select {
		case _, ok := <-ch:
			if !ok {
				t.Fatalf("%s: Changes channel closed", what)
			}
		case <-time.After(changeWait):
			t.Fatalf("%s: no change notified within %s", what, changeWait)
		}
	}
	drain := func() {
		for {
			select {
			case <-ch:
			default:
				return
			}
		}
	}
	before, err := watcher.Version(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, writer, staffPeer(1, "alice"))
	wait("a create through another handle")
	if v, err := watcher.Version(ctx); err != nil || v == before {
		t.Errorf("Version after the notified change = %d, %v; want a value other than %d", v, err, before)
	}
	drain()
	if _, err := writer.SetExpiry(ctx, []wgtypes.Key{testKey(1)}, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	wait("an expiry change through another handle")
	drain()
	mustCreate(t, watcher, staffPeer(2, "bob"))
	wait("a create through the watching handle")

	// A second subscriber sees changes too.
	ch2 := watcher.Changes(ctx)
	if _, err := writer.DeletePeers(ctx, []wgtypes.Key{testKey(2)}, store.ReasonDeleted, "", time.Time{}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch2:
	case <-time.After(changeWait):
		t.Fatalf("second subscriber: no change notified within %s", changeWait)
	}

	cancel()
	deadline := time.After(changeWait)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("Changes channel still open after its context was cancelled")
		}
	}
}

// testCheckAndSchemaVersion: a healthy handle checks out, and every handle
// on one database reports the same schema version.
func (su *suite) testCheckAndSchemaVersion(t *testing.T) {
	ctx := context.Background()
	open := su.newDB(t)
	a := su.handle(t, open, nil)
	b := su.handle(t, open, nil)
	if err := a.Check(ctx); err != nil {
		t.Fatalf("Check on a new database = %v", err)
	}
	va, err := a.SchemaVersion(ctx)
	if err != nil || va < 1 {
		t.Fatalf("SchemaVersion = %d, %v; want at least 1", va, err)
	}
	if vb, err := b.SchemaVersion(ctx); err != nil || vb != va {
		t.Errorf("second handle's SchemaVersion = %d, %v; want %d", vb, err, va)
	}
}

// testRenewLease: only the holder of a live lease renews it; once it ran
// out another claimer takes the event, and then the former holder can
// neither renew nor finish it.
func (su *suite) testRenewLease(t *testing.T) {
	ctx := context.Background()
	s, clock := su.newStore(t)
	p := mustCreate(t, s, staffPeer(1, "alice"))
	evs, err := s.DeletePeers(ctx, []wgtypes.Key{p.PublicKey}, store.ReasonDeleted, "", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	id := evs[0].ID
	now := clock.Now()
	got, err := s.ClaimDue(ctx, "a", now, now.Add(time.Minute), 1)
	if err != nil || len(got) != 1 || got[0].ID != id {
		t.Fatalf("ClaimDue = %+v, %v", got, err)
	}
	if err := s.RenewLease(ctx, id, "a", now.Add(5*time.Minute)); err != nil {
		t.Fatalf("holder's RenewLease = %v", err)
	}
	if err := s.RenewLease(ctx, id, "b", now.Add(5*time.Minute)); !errors.Is(err, store.ErrConflict) {
		t.Errorf("RenewLease by another owner = %v, want ErrConflict", err)
	}
	// The renewed lease holds past the first lease's end.
	later := clock.Advance(2 * time.Minute)
	if got, err := s.ClaimDue(ctx, "b", later, later.Add(time.Minute), 1); err != nil || len(got) != 0 {
		t.Fatalf("ClaimDue under the renewed lease = %+v, %v; want nothing", got, err)
	}
	if at, ok, err := s.NextDue(ctx); err != nil || !ok || !at.Equal(now.Add(5*time.Minute)) {
		t.Errorf("NextDue = %s, %v, %v; want the renewed lease end %s", at, ok, err, now.Add(5*time.Minute))
	}
	// It runs out: the holder cannot renew it any more, another claims it.
	after := clock.Advance(5 * time.Minute)
	if err := s.RenewLease(ctx, id, "a", after.Add(time.Minute)); !errors.Is(err, store.ErrConflict) {
		t.Errorf("RenewLease of a lease that ran out = %v, want ErrConflict", err)
	}
	got, err = s.ClaimDue(ctx, "b", after, after.Add(time.Minute), 1)
	if err != nil || len(got) != 1 || got[0].LeaseOwner != "b" {
		t.Fatalf("ClaimDue after the lease ran out = %+v, %v", got, err)
	}
	if err := s.RenewLease(ctx, id, "a", after.Add(time.Minute)); !errors.Is(err, store.ErrConflict) {
		t.Errorf("former holder's RenewLease = %v, want ErrConflict", err)
	}
	if err := s.MarkDone(ctx, id, "a"); !errors.Is(err, store.ErrConflict) {
		t.Errorf("former holder's MarkDone = %v, want ErrConflict", err)
	}
	if err := s.RenewLease(ctx, 9999, "b", after.Add(time.Minute)); err == nil {
		t.Error("RenewLease of an unknown event succeeded")
	}
	if err := s.MarkDone(ctx, id, "b"); err != nil {
		t.Fatal(err)
	}
	if err := s.RenewLease(ctx, id, "b", after.Add(time.Minute)); !errors.Is(err, store.ErrConflict) {
		t.Errorf("RenewLease of a delivered event = %v, want ErrConflict", err)
	}
}
