package reconcile

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/wg"
)

// A delete issued between the activation and the device add (which run
// under the interface's device lock) waits for the add, then takes the
// peer off the device: it ends off the device, with one D, after the C.
func TestDeleteBetweenActivateAndDeviceAdd(t *testing.T) {
	h := newHarness(t, harnessOpts{orphans: "keep"})
	deleted := make(chan error, 1)
	eng := h.newEngine(func(p string) {
		if p == "create:activated" {
			ps, err := h.st.ListPeers(h.ctx, store.PeerFilter{})
			if err != nil || len(ps) != 1 {
				t.Errorf("list: %v %d", err, len(ps))
				deleted <- nil
				return
			}
			go func() {
				_, err := h.eng.Delete(h.ctx, ps[0].PublicKey)
				deleted <- err
			}()
		}
	})
	c, err := eng.Create(h.ctx, CreateRequest{UserID: "u", ProfileID: "staff"})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-deleted; err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, ok := h.onDevice(c.Peer.PublicKey); ok {
		t.Fatal("a config deleted right after its activation stayed on the device")
	}
	runs := h.scriptRuns()
	if len(runs) != 2 || runs[0]["VPN_EVENT"] != "C" || runs[1]["VPN_EVENT"] != "D" || runs[1]["VPN_CONNECTION_ID"] != c.Peer.PublicKey.String() {
		t.Fatalf("script runs: %v, want C then D", runs)
	}
}

// A delete or revoke while the connect script runs: the create fails with
// ErrRemoved, nothing reaches the device, and the D event waits until the
// connect script must have ended: a script never sees D before C.
func TestRevokeWhileConnectRuns(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	var key wgtypes.Key
	eng := h.newEngine(func(p string) {
		if p == "create:started" {
			ps, _ := h.st.ListPeers(h.ctx, store.PeerFilter{State: store.StatePending})
			key = ps[0].PublicKey
			r, err := h.eng.RevokeUser(h.ctx, "u")
			if err != nil || len(r.Events) != 1 || r.Delivery.Done != 0 {
				t.Fatalf("revoke during connect: %+v, %v", r, err)
			}
		}
	})
	_, err := eng.Create(h.ctx, CreateRequest{UserID: "u", ProfileID: "staff"})
	if !errors.Is(err, ErrRemoved) {
		t.Fatalf("create: %v, want ErrRemoved", err)
	}
	if len(h.read().Peers) != 0 {
		t.Fatal("peer on the device")
	}
	if n := len(h.runsOf("D", key)); n != 0 {
		t.Fatalf("D ran %d times before the connect script's deadline", n)
	}
	h.clock.Advance(h.eng.leaseFor())
	if d, err := h.eng.Deliver(h.ctx); err != nil || d.Done != 1 {
		t.Fatalf("deliver: %+v %v", d, err)
	}
	runs := h.scriptRuns()
	if len(runs) != 2 || runs[0]["VPN_EVENT"] != "C" || runs[1]["VPN_EVENT"] != "D" || runs[1]["VPN_REASON"] != "revoked" {
		t.Fatalf("script runs: %v", runs)
	}
}

// A batch whose lease ran out never runs an event another claim took.
func TestLostLeaseIsNotRun(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	a := h.create("alice")
	h.touch("fail_D", "1")
	if _, err := h.eng.Delete(h.ctx, a.Peer.PublicKey); err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(time.Minute) // due again
	owner := h.eng.claimOwner()
	now := h.clock.Now()
	evs, err := h.st.ClaimDue(h.ctx, owner, now, now.Add(time.Second), 10)
	if err != nil || len(evs) != 1 {
		t.Fatalf("claim: %v %d", err, len(evs))
	}
	// The first claim's lease runs out before its script starts; another
	// engine claims and delivers the event.
	h.clock.Advance(2 * time.Second)
	if d, err := h.newEngine(nil).Deliver(h.ctx); err != nil || d.Done != 1 {
		t.Fatalf("second engine: %+v %v", d, err)
	}
	// The first claim now wants to run it: it must not.
	if got := h.eng.deliverBatch(h.ctx, evs, owner); got != (Delivery{}) {
		t.Fatalf("stale claim delivered: %+v", got)
	}
	if n := len(h.runsOf("D", a.Peer.PublicKey)); n != 2 {
		t.Fatalf("D ran %d times, want 2 (one failure, one success)", n)
	}
}

// With orphans = "keep", a device peer that was a config of ours (the
// store has events for it) is still removed; a foreign one is kept.
func TestKeepOrphansRemovesOurFormerConfigs(t *testing.T) {
	h := newHarness(t, harnessOpts{orphans: "keep"})
	a := h.create("alice")
	if _, err := h.eng.Delete(h.ctx, a.Peer.PublicKey); err != nil {
		t.Fatal(err)
	}
	fk, _ := wgtypes.GeneratePrivateKey()
	foreign := fk.PublicKey()
	// As if the delete's device write had failed: alice's peer is back.
	if _, err := h.dev.Apply(h.ctx, h.srv.Name, wg.Plan{Add: []wg.Wanted{
		wanted(a.Peer),
		{PublicKey: foreign, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.99.8.8/32")}},
	}}); err != nil {
		t.Fatal(err)
	}
	rep := h.eng.Reconcile(h.ctx, h.srv.Name, false)
	if rep.Err != nil || rep.Counts.Removed != 1 || len(rep.Plan.KeptOrphans) != 1 || rep.Plan.KeptOrphans[0] != foreign {
		t.Fatalf("reconcile: %+v", rep)
	}
	if _, ok := h.onDevice(a.Peer.PublicKey); ok {
		t.Fatal("former config kept on the device")
	}
	if _, ok := h.onDevice(foreign); !ok {
		t.Fatal("foreign peer removed despite orphans = keep")
	}
}

// A reload that lowers hooks.timeout does not shorten the stale age below
// what connect scripts started under the old timeout may still take.
func TestStaleAgeSurvivesLowerTimeout(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	eng := h.newEngine(func(p string) {
		if p == "create:script-ran" {
			panic(p) // leave the row pending, as a crash would
		}
	})
	func() {
		defer func() { recover() }()
		eng.Create(h.ctx, CreateRequest{UserID: "alice", ProfileID: "staff"})
	}()
	lower := *h.cfg
	lower.Hooks.Timeout = time.Second
	h.eng.SetConfig(&lower, nil)
	age := h.eng.staleAge()
	if age < 2*5*time.Second {
		t.Fatalf("stale age %s after lowering the timeout to 1s, want at least 2×5s", age)
	}
	h.clock.Advance(3 * time.Second) // past 2×1s, not past 2×5s
	if r, _ := h.eng.CleanStale(h.ctx); len(r.Events) != 0 {
		t.Fatal("stale age shrank with the reload")
	}
	h.clock.Advance(age - 3*time.Second + time.Second)
	if r, _ := h.eng.CleanStale(h.ctx); len(r.Events) != 1 {
		t.Fatalf("stale row not cleaned after 2× the old timeout: %d", len(r.Events))
	}
}

// A reload that lowers hooks.timeout does not shorten the hold of a D event
// whose connect started under the old timeout.
func TestHeldDisconnectCountsOldTimeout(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	lower := *h.cfg
	lower.Hooks.Timeout = time.Second
	eng := h.newEngine(func(p string) {
		if p == "create:started" {
			h.eng.SetConfig(&lower, nil)
			if _, err := h.eng.RevokeUser(h.ctx, "u"); err != nil {
				t.Fatal(err)
			}
		}
	})
	eng.Create(h.ctx, CreateRequest{UserID: "u", ProfileID: "staff"})
	h.clock.Advance(2*time.Second + 5*time.Second + time.Minute + time.Second) // the new timeout's hold
	if d, _ := h.eng.Deliver(h.ctx); d.Done != 0 {
		t.Fatal("held D delivered by the lowered timeout's clock")
	}
	h.clock.Advance(10 * time.Second) // 2×5s + 5s + 1m in all
	if d, _ := h.eng.Deliver(h.ctx); d.Done != 1 {
		t.Fatalf("held D not delivered after the old timeout's hold: %+v", d)
	}
}

// A connect refused after its config was removed meanwhile: no D event.
func TestRefusedConnectAfterRemovalHasNoDisconnect(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.touch("always_fail_C", "")
	eng := h.newEngine(func(p string) {
		if p == "create:started" {
			if _, err := h.eng.RevokeUser(h.ctx, "u"); err != nil {
				t.Fatal(err)
			}
		}
	})
	_, err := eng.Create(h.ctx, CreateRequest{UserID: "u", ProfileID: "staff"})
	var rej *RejectedError
	if !errors.As(err, &rej) {
		t.Fatalf("create: %v, want a rejection", err)
	}
	h.clock.Advance(time.Hour)
	if d, _ := h.eng.Deliver(h.ctx); d != (Delivery{}) {
		t.Fatalf("a disconnect was delivered for a refused connect: %+v", d)
	}
	evs, _ := h.st.ListEvents(h.ctx, store.EventFilter{Kind: store.KindDisconnect})
	if len(evs) != 0 {
		t.Fatalf("D events left: %+v", evs)
	}
}

// orphans = "keep": a foreign peer whose key a running create uses (only a
// C event so far) is not removed.
func TestKeepOrphansIgnoresRunningConnect(t *testing.T) {
	h := newHarness(t, harnessOpts{orphans: "keep"})
	fk, _ := wgtypes.GeneratePrivateKey()
	foreign := fk.PublicKey()
	if _, err := h.dev.Apply(h.ctx, h.srv.Name, wg.Plan{Add: []wg.Wanted{{PublicKey: foreign, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.99.8.8/32")}}}}); err != nil {
		t.Fatal(err)
	}
	eng := h.newEngine(func(p string) {
		if p == "create:inserted" {
			if rep := h.eng.Reconcile(h.ctx, h.srv.Name, false); rep.Err != nil || rep.Counts.Removed != 0 {
				t.Errorf("reconcile during the connect: %+v", rep)
			}
		}
	})
	h.touch("always_fail_C", "")
	eng.Create(h.ctx, CreateRequest{UserID: "u", ProfileID: "staff", PublicKey: &foreign})
	if _, ok := h.onDevice(foreign); !ok {
		t.Fatal("foreign peer removed")
	}
}

// A revoke while the create still waits to start its connect script: the
// script never runs, the create fails with ErrRemoved, and no D event is
// ever delivered (the script never saw a C).
func TestRevokeBeforeConnectStarts(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	eng := h.newEngine(func(p string) {
		if p == "create:inserted" {
			if _, err := h.eng.RevokeUser(h.ctx, "u"); err != nil {
				t.Fatal(err)
			}
		}
	})
	if _, err := eng.Create(h.ctx, CreateRequest{UserID: "u", ProfileID: "staff"}); !errors.Is(err, ErrRemoved) {
		t.Fatalf("create: %v, want ErrRemoved", err)
	}
	h.clock.Advance(time.Hour)
	if d, _ := h.eng.Deliver(h.ctx); d != (Delivery{}) {
		t.Fatalf("delivered: %+v", d)
	}
	if runs := h.scriptRuns(); len(runs) != 0 {
		t.Fatalf("script runs: %v, want none", runs)
	}
	evs, _ := h.st.ListEvents(h.ctx, store.EventFilter{})
	if len(evs) != 0 {
		t.Fatalf("events left: %+v", evs)
	}
}

// A create's device write counts as a change of the device's peers, so
// that the session poll does not reuse what it read before the add.
func TestCreateCountsAsPeerChange(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	before := h.eng.peerGen.Load()
	if _, err := h.eng.Create(h.ctx, CreateRequest{UserID: "u", ProfileID: "staff"}); err != nil {
		t.Fatal(err)
	}
	if after := h.eng.peerGen.Load(); after <= before {
		t.Fatalf("peer generation %d after a create, %d before: the add was not counted", after, before)
	}
}
