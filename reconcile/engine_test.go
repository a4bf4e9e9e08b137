package reconcile

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/hooks"
	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/wg"
)

func TestCreateEndToEnd(t *testing.T) {
	h := newHarness(t, harnessOpts{real: true, psk: true})
	c := h.create("alice", func(r *CreateRequest) {
		r.OriginatingIP = mustAddr("192.0.2.7")
		r.DisplayName = "laptop"
	})
	if c.PrivateKey == nil || c.PrivateKey.PublicKey() != c.Peer.PublicKey {
		t.Fatal("generated key pair missing or inconsistent")
	}
	if c.Peer.IPv4 != mustAddr("10.99.0.2") || c.Peer.IPv6 != mustAddr("fd00:99::2") || c.Peer.State != store.StateActive {
		t.Fatalf("peer = %+v", c.Peer)
	}
	runs := h.scriptRuns()
	if len(runs) != 1 {
		t.Fatalf("script ran %d times, want 1", len(runs))
	}
	evs, err := h.st.ListEvents(h.ctx, store.EventFilter{})
	if err != nil || len(evs) != 1 || evs[0].Kind != "C" || evs[0].Status != "done" {
		t.Fatalf("events = %+v, %v; want one done C", evs, err)
	}
	want := map[string]string{
		"PATH":               runs[0]["PATH"],
		"VPN_EVENT":          "C",
		"VPN_USER_ID":        "alice",
		"VPN_PROFILE_ID":     "staff",
		"VPN_PROTO":          "wireguard",
		"VPN_CONNECTION_ID":  c.Peer.PublicKey.String(),
		"VPN_IP_FOUR":        "10.99.0.2",
		"VPN_IP_SIX":         "fd00:99::2",
		"VPN_ORIGINATING_IP": "192.0.2.7",
		"VPN_REASON":         "created",
		"VPN_INTERFACE":      h.srv.Name,
		"VPN_EXPIRES_AT":     "",
		"VPN_EVENT_ID":       strconv.FormatInt(evs[0].ID, 10),
		"VPN_NODE_NAME":      h.cfg.Node,
	}
	if runs[0]["PATH"] == "" {
		t.Error("script saw no PATH")
	}
	if got := fmt.Sprint(runs[0]); got != fmt.Sprint(want) {
		t.Errorf("script environment:\n got %v\nwant %v", got, want)
	}

	p, ok := h.onDevice(c.Peer.PublicKey)
	if !ok {
		t.Fatal("peer not on device")
	}
	if fmt.Sprint(p.AllowedIPs) != "[10.99.0.2/32 fd00:99::2/128]" || p.PresharedKey != *c.Peer.PresharedKey {
		t.Fatalf("device peer = %+v", p)
	}
	conf := c.Client.WGQuick()
	for _, line := range []string{
		"PrivateKey = " + c.PrivateKey.String(),
		"Address = 10.99.0.2/16, fd00:99::2/64",
		"DNS = 10.99.0.1",
		"PublicKey = " + h.srv.PublicKey.String(),
		"PresharedKey = " + c.Peer.PresharedKey.String(),
		"AllowedIPs = 0.0.0.0/0, ::/0",
		fmt.Sprintf("Endpoint = 127.0.0.1:%d", h.srv.Port),
		"PersistentKeepalive = 25",
	} {
		if !strings.Contains(conf, line+"\n") {
			t.Errorf("client config lacks %q:\n%s", line, conf)
		}
	}
	// A real client with the returned config handshakes.
	h.connect(c)
	if p, _ := h.onDevice(c.Peer.PublicKey); p.LastHandshake.IsZero() || p.RxBytes == 0 {
		t.Fatalf("server sees no handshake/traffic: %+v", p)
	}
}

func TestCreateIdempotentAndConflicts(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	k, _ := wgtypes.GeneratePrivateKey()
	pub := k.PublicKey()
	first := h.create("bob", func(r *CreateRequest) { r.PublicKey = &pub })
	if first.Existing || first.PrivateKey != nil {
		t.Fatalf("first create: %+v", first)
	}
	again := h.create("bob", func(r *CreateRequest) { r.PublicKey = &pub })
	if !again.Existing || again.Peer.IPv4 != first.Peer.IPv4 {
		t.Fatalf("retry: %+v", again)
	}
	if n := len(h.runsOf("C", pub)); n != 1 {
		t.Fatalf("C script ran %d times for a retried create, want 1", n)
	}
	if !strings.Contains(again.Client.WGQuick(), "# PrivateKey = ") {
		t.Error("config for a client-supplied key should leave the private key to the user")
	}
	_, err := h.eng.Create(h.ctx, CreateRequest{UserID: "carol", ProfileID: "staff", PublicKey: &pub})
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("same key for another user: %v, want ErrConflict", err)
	}
	srvKey := h.srv.PublicKey
	_, err = h.eng.Create(h.ctx, CreateRequest{UserID: "carol", ProfileID: "staff", PublicKey: &srvKey})
	var inv *InvalidError
	if !errors.As(err, &inv) || inv.Field != "public_key" {
		t.Fatalf("server's own key: %v", err)
	}
	// Per-user limit: bob has 1 of 3.
	h.create("bob")
	h.create("bob")
	_, err = h.eng.Create(h.ctx, CreateRequest{UserID: "bob", ProfileID: "staff"})
	if !errors.Is(err, store.ErrLimitReached) {
		t.Fatalf("4th config: %v, want ErrLimitReached", err)
	}
	for _, tc := range []struct {
		req   CreateRequest
		field string
	}{
		{CreateRequest{UserID: "", ProfileID: "staff"}, "user_id"},
		{CreateRequest{UserID: "a\x00b", ProfileID: "staff"}, "user_id"},
		{CreateRequest{UserID: "a\nb", ProfileID: "staff"}, "user_id"},
		{CreateRequest{UserID: strings.Repeat("x", 257), ProfileID: "staff"}, "user_id"},
		{CreateRequest{UserID: "\xff", ProfileID: "staff"}, "user_id"},
		{CreateRequest{UserID: "u", ProfileID: "nope"}, "profile_id"},
		{CreateRequest{UserID: "u", ProfileID: "staff", ExpiresAt: h.clock.Now().Add(-time.Second)}, "expires_at"},
		{CreateRequest{UserID: "u", ProfileID: "staff", ExpiresIn: -time.Hour}, "expires_in"},
		{CreateRequest{UserID: "u", ProfileID: "staff", PublicKey: &wgtypes.Key{}}, "public_key"},
	} {
		_, err := h.eng.Create(h.ctx, tc.req)
		if !errors.As(err, &inv) || inv.Field != tc.field {
			t.Errorf("create %+v: err %v, want invalid %s", tc.req, err, tc.field)
		}
	}
	h.assertInSync()
}

func TestCreateRejectedByScript(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.touch("always_fail_C", "")
	_, err := h.eng.Create(h.ctx, CreateRequest{UserID: "alice", ProfileID: "staff"})
	var rej *RejectedError
	if !errors.As(err, &rej) || rej.ExitCode != 4 {
		t.Fatalf("create: %v, want rejection with exit status 4", err)
	}
	if !strings.Contains(err.Error(), "rejected by connect script: exit status 4") {
		t.Errorf("message: %v", err)
	}
	peers, _ := h.st.ListPeers(h.ctx, store.PeerFilter{})
	evs, _ := h.st.ListEvents(h.ctx, store.EventFilter{})
	if len(peers) != 0 || len(evs) != 0 || len(h.read().Peers) != 0 {
		t.Fatalf("after rejection: %d rows, %d events, %d device peers; want none", len(peers), len(evs), len(h.read().Peers))
	}
	h.rm("always_fail_C")
	c := h.create("alice")
	if c.Peer.IPv4 != mustAddr("10.99.0.2") {
		t.Fatalf("address of the rejected config not reused: got %s", c.Peer.IPv4)
	}
}

func TestDeleteRevokeExpire(t *testing.T) {
	h := newHarness(t, harnessOpts{real: true})
	a1 := h.create("alice")
	a2 := h.create("alice")
	a3 := h.create("alice")
	b1 := h.create("bob", func(r *CreateRequest) { r.ExpiresIn = time.Hour })
	b2 := h.create("bob", func(r *CreateRequest) { r.ExpiresIn = 30 * time.Minute })
	b3 := h.create("bob", func(r *CreateRequest) { r.ExpiresIn = 3 * time.Hour })

	cl := h.connect(a1)
	rx, tx := cl.Bytes()

	// Delete: D with the device's byte counters, peer gone, traffic stops.
	r, err := h.eng.Delete(h.ctx, a1.Peer.PublicKey)
	if err != nil || len(r.Events) != 1 || r.Delivery.Done != 1 {
		t.Fatalf("delete: %+v, %v", r, err)
	}
	ds := h.runsOf("D", a1.Peer.PublicKey)
	if len(ds) != 1 || ds[0]["VPN_REASON"] != "deleted" {
		t.Fatalf("D runs: %v", ds)
	}
	in, _ := strconv.ParseInt(ds[0]["VPN_BYTES_IN"], 10, 64)
	out, _ := strconv.ParseInt(ds[0]["VPN_BYTES_OUT"], 10, 64)
	// The server received what the client sent, and sent what it received.
	if in < tx-200 || in == 0 || out < rx-200 || out == 0 {
		t.Fatalf("D bytes in=%d out=%d; client sent %d received %d", in, out, tx, rx)
	}
	if _, ok := h.onDevice(a1.Peer.PublicKey); ok {
		t.Fatal("deleted peer still on device")
	}
	ctx, cancel := context.WithTimeout(h.ctx, time.Second)
	if err := cl.Ping(ctx); err == nil {
		t.Fatal("traffic still passes after delete")
	}
	cancel()
	if _, err := h.eng.Delete(h.ctx, a1.Peer.PublicKey); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second delete: %v, want ErrNotFound", err)
	}

	// Revoke: every remaining config of alice, reason revoked.
	r, err = h.eng.RevokeUser(h.ctx, "alice")
	if err != nil || len(r.Events) != 2 {
		t.Fatalf("revoke: %+v, %v", r, err)
	}
	for _, c := range []*Created{a2, a3} {
		ds := h.runsOf("D", c.Peer.PublicKey)
		if len(ds) != 1 || ds[0]["VPN_REASON"] != "revoked" {
			t.Fatalf("revoke D runs for %s: %v", c.Peer.PublicKey, ds)
		}
	}

	// Expire: b1 (on device) and b2 (removed from the device by hand)
	// expire; b3 does not yet.
	if err := h.dev.RemovePeers(h.ctx, h.srv.Name, []wgtypes.Key{b2.Peer.PublicKey}); err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(time.Hour)
	r, err = h.eng.Expire(h.ctx)
	if err != nil || len(r.Events) != 2 || r.Delivery.Done != 2 {
		t.Fatalf("expire: %+v, %v", r, err)
	}
	for _, c := range []*Created{b1, b2} {
		ds := h.runsOf("D", c.Peer.PublicKey)
		if len(ds) != 1 || ds[0]["VPN_REASON"] != "expired" {
			t.Fatalf("expire D runs for %s: %v", c.Peer.PublicKey, ds)
		}
		if ds[0]["VPN_EXPIRES_AT"] == "" {
			t.Fatalf("expired config's D has no VPN_EXPIRES_AT")
		}
	}
	if r, _ := h.eng.Expire(h.ctx); len(r.Events) != 0 {
		t.Fatalf("second expire removed %d more", len(r.Events))
	}
	if _, err := h.st.GetPeer(h.ctx, b3.Peer.PublicKey); err != nil {
		t.Fatalf("b3 must not expire yet: %v", err)
	}
	h.assertInSync()
	// Exactly one D per removed config, across everything above.
	for _, c := range []*Created{a1, a2, a3, b1, b2} {
		if n := len(h.runsOf("D", c.Peer.PublicKey)); n != 1 {
			t.Errorf("%s: %d D runs, want 1", c.Peer.PublicKey, n)
		}
	}
}

func TestReconcileRestoresWithoutResettingSessions(t *testing.T) {
	h := newHarness(t, harnessOpts{real: true})
	a := h.create("alice")
	b := h.create("bob")
	c := h.create("carol")
	ca := h.connect(a)
	runsBefore := len(h.scriptRuns())

	// One peer lost from the device: only it is restored; a's session
	// is untouched.
	if err := h.dev.RemovePeers(h.ctx, h.srv.Name, []wgtypes.Key{b.Peer.PublicKey}); err != nil {
		t.Fatal(err)
	}
	hsBefore, _ := h.onDevice(a.Peer.PublicKey)
	clientHS := ca.LastHandshake()
	rep := h.eng.Reconcile(h.ctx, h.srv.Name, false)
	if rep.Err != nil || rep.Counts != (wg.Counts{Added: 1}) {
		t.Fatalf("reconcile: %+v", rep)
	}
	if len(rep.Plan.Add) != 1 || rep.Plan.Add[0].PublicKey != b.Peer.PublicKey {
		t.Fatalf("plan adds %v, want only %s", rep.Plan.Add, b.Peer.PublicKey)
	}
	hsAfter, _ := h.onDevice(a.Peer.PublicKey)
	if !hsAfter.LastHandshake.Equal(hsBefore.LastHandshake) || !ca.LastHandshake().Equal(clientHS) {
		t.Fatal("untouched peer's session was reset by reconcile")
	}
	ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
	defer cancel()
	if err := ca.Ping(ctx); err != nil {
		t.Fatalf("untouched peer lost traffic: %v", err)
	}
	// Nothing to do now.
	if rep := h.eng.Reconcile(h.ctx, h.srv.Name, false); rep.Err != nil || !rep.Plan.Empty() {
		t.Fatalf("second reconcile: %+v", rep)
	}

	// Device restarted empty: everything comes back, no C events.
	h.srv.Restart(t)
	if n := len(h.read().Peers); n != 0 {
		t.Fatalf("restarted device has %d peers", n)
	}
	rep = h.eng.Reconcile(h.ctx, h.srv.Name, false)
	if rep.Err != nil || rep.Counts.Added != 3 {
		t.Fatalf("reconcile after restart: %+v", rep)
	}
	if len(h.scriptRuns()) != runsBefore {
		t.Fatalf("reconcile ran the script (%d runs, had %d)", len(h.scriptRuns()), runsBefore)
	}
	h.assertInSync()
	ca.Reconnect(t)
	if err := ca.Ping(ctx); err != nil {
		t.Fatalf("client cannot reconnect after restore: %v", err)
	}
	_ = c
}

func TestReconcileOrphansAndDrift(t *testing.T) {
	for _, policy := range []string{"remove", "keep"} {
		t.Run(policy, func(t *testing.T) {
			h := newHarness(t, harnessOpts{orphans: policy})
			a := h.create("alice")
			ok, _ := wgtypes.GeneratePrivateKey()
			orphan := wg.Wanted{PublicKey: ok.PublicKey(), AllowedIPs: []netip.Prefix{pfx("10.99.9.9/32")}}
			// Drift: a's allowed IPs changed by hand.
			drift := wg.Wanted{PublicKey: a.Peer.PublicKey, AllowedIPs: []netip.Prefix{pfx("10.99.7.7/32")}}
			if _, err := h.dev.Apply(h.ctx, h.srv.Name, wg.Plan{Add: []wg.Wanted{orphan}, Update: []wg.Change{{Wanted: drift, AllowedIPs: true}}}); err != nil {
				t.Fatal(err)
			}
			dry := h.eng.Reconcile(h.ctx, h.srv.Name, true)
			if dry.Err != nil || len(dry.Plan.Update) != 1 {
				t.Fatalf("dry run: %+v", dry)
			}
			if p, _ := h.onDevice(a.Peer.PublicKey); fmt.Sprint(p.AllowedIPs) != "[10.99.7.7/32]" {
				t.Fatal("dry run changed the device")
			}
			rep := h.eng.Reconcile(h.ctx, h.srv.Name, false)
			if rep.Err != nil || rep.Counts.Updated != 1 {
				t.Fatalf("reconcile: %+v", rep)
			}
			if p, _ := h.onDevice(a.Peer.PublicKey); fmt.Sprint(p.AllowedIPs) != "[10.99.0.2/32 fd00:99::2/128]" {
				t.Fatalf("drift not repaired: %v", p.AllowedIPs)
			}
			_, there := h.onDevice(orphan.PublicKey)
			if policy == "remove" {
				if there || rep.Counts.Removed != 1 {
					t.Fatalf("orphan not removed: %+v", rep)
				}
				h.assertInSync()
			} else {
				if !there || len(rep.Plan.KeptOrphans) != 1 || rep.Plan.KeptOrphans[0] != orphan.PublicKey {
					t.Fatalf("orphan not kept and reported: %+v", rep)
				}
			}
		})
	}
}

func TestDeliveryRetriesThenFails(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	a := h.create("alice")
	b := h.create("bob")
	h.touch("fail_D", "2")
	r, err := h.eng.Delete(h.ctx, a.Peer.PublicKey)
	if err != nil || r.Delivery.Done != 0 {
		t.Fatalf("delete: %+v, %v", r, err)
	}
	ev := h.event(r.Events[0].ID)
	if ev.Status != "pending" || ev.Attempts != 1 || !ev.NextAttemptAt.Equal(h.clock.Now().Add(10*time.Second)) || ev.LastError != "hook script exited with status 3: failing on purpose" {
		t.Fatalf("after first failure: %+v", ev)
	}
	// Not due yet.
	if d, _ := h.eng.Deliver(h.ctx); d != (Delivery{}) {
		t.Fatalf("delivered before due: %+v", d)
	}
	h.clock.Advance(10 * time.Second)
	if d, _ := h.eng.Deliver(h.ctx); d != (Delivery{Retried: 1}) {
		t.Fatalf("second attempt: %+v", d)
	}
	ev = h.event(ev.ID)
	if ev.Attempts != 2 || !ev.NextAttemptAt.Equal(h.clock.Now().Add(20*time.Second)) {
		t.Fatalf("backoff not doubled: %+v", ev)
	}
	h.clock.Advance(20 * time.Second)
	if d, _ := h.eng.Deliver(h.ctx); d != (Delivery{Done: 1}) {
		t.Fatalf("third attempt: %+v", d)
	}
	if ev = h.event(ev.ID); ev.Status != "done" || ev.Attempts != 3 {
		t.Fatalf("after success: %+v", ev)
	}
	if n := len(h.runsOf("D", a.Peer.PublicKey)); n != 3 {
		t.Fatalf("D ran %d times, want 3", n)
	}

	// Always failing: failed after max_attempts (3), then Retry.
	h.touch("always_fail_D", "")
	r, _ = h.eng.Delete(h.ctx, b.Peer.PublicKey)
	id := r.Events[0].ID
	for i := 0; i < 5; i++ {
		h.clock.Advance(time.Minute)
		h.eng.Deliver(h.ctx)
	}
	if ev = h.event(id); ev.Status != "failed" || ev.Attempts != 3 {
		t.Fatalf("always failing: %+v", ev)
	}
	if n := len(h.runsOf("D", b.Peer.PublicKey)); n != 3 {
		t.Fatalf("D ran %d times, want max_attempts=3", n)
	}
	h.rm("always_fail_D")
	if err := h.eng.Retry(h.ctx, id); err != nil {
		t.Fatal(err)
	}
	if d, _ := h.eng.Deliver(h.ctx); d != (Delivery{Done: 1}) {
		t.Fatalf("after Retry: %+v", d)
	}
	if ev = h.event(id); ev.Status != "done" {
		t.Fatalf("after Retry: %+v", ev)
	}
}

func (h *harness) event(id int64) store.Event {
	h.t.Helper()
	evs, err := h.st.ListEvents(h.ctx, store.EventFilter{})
	if err != nil {
		h.t.Fatal(err)
	}
	for _, e := range evs {
		if e.ID == id {
			return e
		}
	}
	h.t.Fatalf("event %d not found", id)
	return store.Event{}
}

func TestStalePending(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	// A create whose process dies while the connect script runs leaves a
	// pending row; simulate it by stopping at the named point.
	e := h.newEngine(func(p string) {
		if p == "create:script-ran" {
			panic(p)
		}
	})
	func() {
		defer func() { recover() }()
		e.Create(h.ctx, CreateRequest{UserID: "alice", ProfileID: "staff"})
	}()
	peers, _ := h.st.ListPeers(h.ctx, store.PeerFilter{State: store.StatePending})
	if len(peers) != 1 {
		t.Fatalf("%d pending rows, want 1", len(peers))
	}
	key := peers[0].PublicKey
	// Younger than the stale age: left alone.
	if r, _ := h.eng.CleanStale(h.ctx); len(r.Events) != 0 {
		t.Fatal("young pending row cleaned")
	}
	h.clock.Advance(h.eng.staleAge() + time.Second)
	r, err := h.eng.CleanStale(h.ctx)
	if err != nil || len(r.Events) != 1 {
		t.Fatalf("stale: %+v, %v", r, err)
	}
	ds := h.runsOf("D", key)
	if len(ds) != 1 || ds[0]["VPN_REASON"] != "stale" {
		t.Fatalf("stale D runs: %v", ds)
	}
	if _, ok := h.onDevice(key); ok {
		t.Fatal("stale config on device")
	}
}

// The summary counts the D events run while removing expired and stale
// configs, not only those of the delivery step.
func TestHousekeepingSummaryCountsRemovals(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	e := h.newEngine(func(p string) {
		if p == "create:script-ran" {
			panic(p)
		}
	})
	func() {
		defer func() { recover() }()
		e.Create(h.ctx, CreateRequest{UserID: "alice", ProfileID: "staff"})
	}()
	h.create("bob", func(r *CreateRequest) { r.ExpiresIn = time.Minute })
	h.clock.Advance(2 * time.Minute)
	h.touch("fail_D", "1") // the first D (bob's, expired first) fails once
	s, err := h.eng.Housekeeping(h.ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if s.Expired != 1 || s.Stale != 1 || s.Delivery != (Delivery{Done: 1, Retried: 1}) {
		t.Fatalf("summary: expired %d, stale %d, delivery %+v; want 1, 1, {Done:1 Retried:1}", s.Expired, s.Stale, s.Delivery)
	}
	if n := len(h.scriptRuns()); n != 4 { // two C, bob's D (failed), alice's stale D
		t.Fatalf("%d script runs, want 4", n)
	}
}

// A failing disconnect script that writes 320 KB on one line: the event's
// last error carries that line cut at 1 KiB, marked, valid UTF-8.
func TestLongStderrLineInLastError(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	a := h.create("alice")
	h.touch("stderr_D", "nft: "+strings.Repeat("é", 160_000)+"\n")
	h.touch("fail_D", "1")
	r, err := h.eng.Delete(h.ctx, a.Peer.PublicKey)
	if err != nil || r.Delivery.Retried != 1 {
		t.Fatalf("delete: %+v %v", r.Delivery, err)
	}
	ev := h.event(r.Events[0].ID)
	msg := ev.LastError
	head, _, cut := strings.Cut(msg, " …[cut: ")
	if !cut || !utf8.ValidString(msg) || len(msg) > hooks.MaxLineLen+100 ||
		!strings.Contains(head, ": nft: éé") || len(head) > hooks.MaxLineLen+len("hook script exited with status 3: ") {
		t.Fatalf("last error of %d bytes: %.80q…", len(msg), msg)
	}
}

func TestHousekeepingNeverOverlaps(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	held, err := h.eng.housekeepingLock(h.ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.eng.Housekeeping(h.ctx, false); !errors.Is(err, ErrBusy) {
		t.Fatalf("while held: %v, want ErrBusy", err)
	}
	ctx, cancel := context.WithTimeout(h.ctx, 200*time.Millisecond)
	_, err = h.eng.Housekeeping(ctx, true)
	cancel()
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting run: %v, want deadline", err)
	}
	held.unlock()

	// Two runs started together, one with slow deliveries: the other
	// skips.
	a := h.create("alice")
	h.touch("sleep_D", "1")
	h.touch("fail_D", "1")
	if _, err := h.eng.Delete(h.ctx, a.Peer.PublicKey); err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(time.Minute)
	errs := make(chan error, 2)
	for i := 0; i < 2; i++ {
		go func() {
			_, err := h.newEngine(nil).Housekeeping(h.ctx, false)
			errs <- err
		}()
	}
	e1, e2 := <-errs, <-errs
	busy := 0
	for _, err := range []error{e1, e2} {
		if errors.Is(err, ErrBusy) {
			busy++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if busy != 1 {
		t.Fatalf("%d of 2 concurrent runs skipped, want 1", busy)
	}
	if n := len(h.runsOf("D", a.Peer.PublicKey)); n != 2 {
		t.Fatalf("D ran %d times, want 2 (first failure, then one retry)", n)
	}
}

func TestHousekeepingSummary(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.create("alice", func(r *CreateRequest) { r.ExpiresIn = time.Minute })
	keep := h.create("bob")
	if err := h.dev.RemovePeers(h.ctx, h.srv.Name, []wgtypes.Key{keep.Peer.PublicKey}); err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(2 * time.Minute)
	s, err := h.eng.Housekeeping(h.ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if s.Expired != 1 || len(s.Reports) != 1 || s.Reports[0].Counts.Added != 1 || s.Delivery != (Delivery{Done: 1}) {
		t.Fatalf("summary: %+v", s)
	}
	h.assertInSync()
	// Prune: done events older than log_retention (90d) go, except the C
	// of a config that still exists (the log must still say who holds its
	// address): alice's C and D go, bob's C stays.
	h.clock.Advance(91 * 24 * time.Hour)
	s, err = h.eng.Housekeeping(h.ctx, true)
	if err != nil || s.Pruned != 2 {
		t.Fatalf("prune: %+v, %v (want alice's C and D pruned)", s, err)
	}
	left, _ := h.st.ListEvents(h.ctx, store.EventFilter{})
	if len(left) != 1 || left[0].PublicKey != keep.Peer.PublicKey || left[0].Kind != "C" {
		t.Fatalf("after prune: %+v", left)
	}
}

func TestDeviceUnreadable(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	a := h.create("alice")
	h.srv.Close()
	rep := h.eng.Reconcile(h.ctx, h.srv.Name, false)
	if rep.Err == nil || !strings.Contains(rep.Err.Error(), "skipped") {
		t.Fatalf("reconcile of a missing device: %+v", rep)
	}
	// Delete still records and delivers the D event.
	r, err := h.eng.Delete(h.ctx, a.Peer.PublicKey)
	if err != nil || len(r.Events) != 1 || r.Delivery.Done != 1 || r.DeviceErrs[h.srv.Name] == nil {
		t.Fatalf("delete with device gone: %+v, %v", r, err)
	}
	// A create is refused before anything is stored or any script runs,
	// though the server key is remembered from earlier reads.
	before := len(h.scriptRuns())
	c, err := h.eng.Create(h.ctx, CreateRequest{UserID: "bob", ProfileID: "staff"})
	if !errors.Is(err, ErrDeviceUnavailable) || c != nil {
		t.Fatalf("create with device gone: %+v, %v; want ErrDeviceUnavailable", c, err)
	}
	if ps, _ := h.st.ListPeers(h.ctx, store.PeerFilter{UserID: "bob"}); len(ps) != 0 {
		t.Fatalf("a refused create left rows: %+v", ps)
	}
	if after := len(h.scriptRuns()); after != before {
		t.Fatalf("a refused create ran the script: %d script runs before, %d after", before, after)
	}
}

func TestBackoff(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want time.Duration
	}{{1, 10 * time.Second}, {2, 20 * time.Second}, {3, 40 * time.Second}, {4, time.Minute}, {100, time.Minute}} {
		if got := Backoff(tc.n, 10*time.Second, time.Minute); got != tc.want {
			t.Errorf("Backoff(%d) = %v, want %v", tc.n, got, tc.want)
		}
	}
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func TestValidateUserID(t *testing.T) {
	for _, u := range []string{"alice", "alice smith", "ü@example.org", "😀", " x ", "a\u200bb", "\u200e\u05d0"} {
		if err := ValidateUserID(u); err != nil {
			t.Errorf("%q refused: %v", u, err)
		}
	}
	for u, want := range map[string]string{
		"":                       "must not be empty",
		strings.Repeat("u", 257): "257 bytes",
		"a\xffb":                 "not valid UTF-8",
		"a\x00b":                 "control character U+0000",
		"a\u0085b":               "control character U+0085",
		" ":                      "only white space",
		"\t":                     "control character",
		"\u00a0\u2003\u3000":     "only white space",
		"\u200b\ufeff\u2060":     "only white space",
		"\u202a":                 "U+202A", "\u202b": "U+202B", "\u202c": "U+202C", "\u202d": "U+202D", "\u202e": "U+202E",
		"x\u2066": "U+2066", "x\u2067": "U+2067", "x\u2068": "U+2068", "x\u2069": "U+2069",
		"a\u2028b": "line or paragraph separator U+2028",
		"a\u2029b": "line or paragraph separator U+2029",
	} {
		err := ValidateUserID(u)
		var inv *InvalidError
		if !errors.As(err, &inv) || inv.Field != "user_id" || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an invalid user_id saying %q", u, err, want)
		}
	}
}
