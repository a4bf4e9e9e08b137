package reconcile

import (
	"fmt"
	"net/netip"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/config"
	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/wg"
)

// clientsAt returns n device peers holding host indexes from..from+n-1 of
// the harness profile, as a store that was lost had put them there.
func clientsAt(t testing.TB, from, n int) []wg.Wanted {
	t.Helper()
	out := make([]wg.Wanted, n)
	for i := range out {
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		idx := int64(from + i)
		out[i] = wg.Wanted{PublicKey: k.PublicKey(), AllowedIPs: []netip.Prefix{
			netip.PrefixFrom(store.HostAddr(netip.MustParsePrefix("10.99.0.0/16"), idx), 32),
			netip.PrefixFrom(store.HostAddr(netip.MustParsePrefix("fd00:99::/64"), idx), 128),
		}}
	}
	return out
}

// storeConfigs writes n active configs straight into the store (no
// script, not on the device yet).
func (h *harness) storeConfigs(n int) []store.Peer {
	h.t.Helper()
	prof, _ := h.cfg.Profile("staff")
	out := make([]store.Peer, n)
	for i := range out {
		k, _ := wgtypes.GeneratePrivateKey()
		p, ev, err := h.st.InsertPending(h.ctx, store.NewPeer{PublicKey: k.PublicKey(), Interface: h.srv.Name, ProfileID: "staff",
			UserID: fmt.Sprintf("u%d", i), IPv4Range: prof.IPv4Range, IPv6Range: prof.IPv6Range})
		if err != nil {
			h.t.Fatal(err)
		}
		if err := h.st.Activate(h.ctx, p.PublicKey, ev.ID); err != nil {
			h.t.Fatal(err)
		}
		out[i] = p
	}
	return out
}

func (h *harness) addForeign(ps []wg.Wanted) {
	h.t.Helper()
	if _, err := h.dev.Apply(h.ctx, h.srv.Name, wg.Plan{Add: ps}); err != nil {
		h.t.Fatal(err)
	}
}

// A fresh, empty database facing a device with 50 peers (the database was
// lost or the config points at the wrong file): reconcile removes nothing,
// reports the interface blocked, and only a forced reconcile removes them.
func TestOrphanGuardEmptyStoreFullDevice(t *testing.T) {
	clients := clientsAt(t, 0, 50)
	h := newHarness(t, harnessOpts{peers: clients})

	dry := h.eng.Reconcile(h.ctx, h.srv.Name, true)
	if dry.Err != nil || len(dry.Plan.Remove) != 0 || !dry.Orphans.Blocked || len(dry.Orphans.Held) != 50 {
		t.Fatalf("dry run: err %v, remove %d, orphans %+v", dry.Err, len(dry.Plan.Remove), dry.Orphans)
	}
	rep := h.eng.Reconcile(h.ctx, h.srv.Name, false)
	if rep.Err != nil || rep.Counts.Removed != 0 || len(rep.Plan.Remove) != 0 {
		t.Fatalf("reconcile: err %v, counts %+v, plan removes %d", rep.Err, rep.Counts, len(rep.Plan.Remove))
	}
	if n := len(h.read().Peers); n != 50 {
		t.Fatalf("device has %d peers after a blocked reconcile, want all 50", n)
	}
	if st := rep.Orphans; !st.Blocked || st.Orphans != 50 || st.Limit != 10 {
		t.Fatalf("state %+v, want blocked, 50 orphans, limit 10", st)
	}
	if b := h.eng.Blocked(); len(b) != 1 || b[0].Interface != h.srv.Name {
		t.Fatalf("Blocked() = %+v", b)
	}
	// Housekeeping reports it too and still does nothing to the device.
	sum, _ := h.eng.Housekeeping(h.ctx, true)
	if len(sum.Reports) != 1 || !sum.Reports[0].Orphans.Blocked || len(h.read().Peers) != 50 {
		t.Fatalf("housekeeping: %+v", sum.Reports)
	}
	// A new config does not take an address a blocked orphan holds: the
	// 50 held .2-.51, so it gets .52.
	c := h.create("alice")
	if c.Peer.IPv4 != mustAddr("10.99.0.52") {
		t.Fatalf("new config got %s, an address a peer on the device holds", c.Peer.IPv4)
	}
	// A dry run with force shows the removals but lifts nothing.
	fdry := h.eng.ReconcileWith(h.ctx, h.srv.Name, ReconcileOptions{DryRun: true, Force: true})
	if fdry.Err != nil || len(fdry.Plan.Remove) != 50 || len(h.eng.Blocked()) != 1 {
		t.Fatalf("forced dry run: err %v, remove %d, blocked %v", fdry.Err, len(fdry.Plan.Remove), h.eng.Blocked())
	}
	// The operator confirms: forced, they go.
	f := h.eng.ReconcileWith(h.ctx, h.srv.Name, ReconcileOptions{Force: true})
	if f.Err != nil || f.Counts.Removed != 50 {
		t.Fatalf("forced reconcile: err %v, counts %+v", f.Err, f.Counts)
	}
	h.assertInSync()
	if b := h.eng.Blocked(); len(b) != 0 {
		t.Fatalf("still blocked after force: %+v", b)
	}
}

// 5 orphans beside 100 configs are under the default limit (10% of 105
// device peers, at least 10): removed as before. 15 are over it.
func TestOrphanGuardPercentage(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.storeConfigs(100)
	if rep := h.eng.Reconcile(h.ctx, h.srv.Name, false); rep.Err != nil || rep.Counts.Added != 100 {
		t.Fatalf("restore: %+v", rep.Err)
	}
	h.addForeign(clientsAt(t, 1000, 5))
	rep := h.eng.Reconcile(h.ctx, h.srv.Name, false)
	if rep.Err != nil || rep.Counts.Removed != 5 || rep.Orphans.Blocked || rep.Orphans.Limit != 10 {
		t.Fatalf("5 orphans: err %v, counts %+v, state %+v", rep.Err, rep.Counts, rep.Orphans)
	}
	h.assertInSync()

	// 11 orphans with 100 configs: 10% of 111 is 11, removed; 13 of 113
	// is over 11: blocked.
	h.addForeign(clientsAt(t, 1000, 11))
	if rep := h.eng.Reconcile(h.ctx, h.srv.Name, false); rep.Err != nil || rep.Counts.Removed != 11 || rep.Orphans.Limit != 11 {
		t.Fatalf("11 orphans: err %v, counts %+v, state %+v", rep.Err, rep.Counts, rep.Orphans)
	}
	h.addForeign(clientsAt(t, 1000, 13))
	rep = h.eng.Reconcile(h.ctx, h.srv.Name, false)
	if rep.Err != nil || rep.Counts.Removed != 0 || !rep.Orphans.Blocked || rep.Orphans.Orphans != 13 || rep.Orphans.Limit != 11 {
		t.Fatalf("13 orphans: err %v, counts %+v, state %+v", rep.Err, rep.Counts, rep.Orphans)
	}
	if n := len(h.read().Peers); n != 113 {
		t.Fatalf("device has %d peers, want 113", n)
	}

	// Raising the limit (a reload) lifts the block at the next reconcile.
	cfg := *h.cfg
	cfg.Interfaces = append([]config.Interface{}, cfg.Interfaces...)
	cfg.Interfaces[0].OrphanRemovalLimit = config.OrphanLimit{Percent: 20}
	h.eng.SetConfig(&cfg, nil)
	rep = h.eng.Reconcile(h.ctx, h.srv.Name, false)
	if rep.Err != nil || rep.Counts.Removed != 13 || rep.Orphans.Blocked || len(h.eng.Blocked()) != 0 {
		t.Fatalf("after raising the limit: err %v, counts %+v, state %+v", rep.Err, rep.Counts, rep.Orphans)
	}
	h.assertInSync()
}

// An absolute orphan_removal_limit counts peers, whatever the device holds;
// 0 makes every orphan wait for the operator.
func TestOrphanGuardAbsolute(t *testing.T) {
	h := newHarness(t, harnessOpts{ifaceExtra: "orphan_removal_limit = 3"})
	h.storeConfigs(2)
	h.addForeign(clientsAt(t, 100, 3))
	rep := h.eng.Reconcile(h.ctx, h.srv.Name, false)
	if rep.Err != nil || rep.Counts.Removed != 3 || rep.Counts.Added != 2 || rep.Orphans.Limit != 3 {
		t.Fatalf("3 orphans, limit 3: err %v, counts %+v, state %+v", rep.Err, rep.Counts, rep.Orphans)
	}
	h.addForeign(clientsAt(t, 100, 4))
	rep = h.eng.Reconcile(h.ctx, h.srv.Name, false)
	if rep.Err != nil || rep.Counts.Removed != 0 || !rep.Orphans.Blocked || rep.Orphans.Orphans != 4 {
		t.Fatalf("4 orphans, limit 3: err %v, counts %+v, state %+v", rep.Err, rep.Counts, rep.Orphans)
	}

	h0 := newHarness(t, harnessOpts{ifaceExtra: `orphan_removal_limit = "0"`})
	h0.addForeign(clientsAt(t, 100, 1))
	if rep := h0.eng.Reconcile(h0.ctx, h0.srv.Name, false); rep.Err != nil || rep.Counts.Removed != 0 || !rep.Orphans.Blocked {
		t.Fatalf("limit 0: err %v, counts %+v, state %+v", rep.Err, rep.Counts, rep.Orphans)
	}
}

// Peers the store has D events for (former configs whose removal from the
// device failed) do not count toward the limit, and are removed even while
// the interface is blocked.
func TestOrphanGuardFormerConfigsNotCounted(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	var former []store.Peer
	for i := range 12 {
		c := h.create(fmt.Sprintf("user%d", i))
		former = append(former, c.Peer)
	}
	for _, p := range former {
		if _, err := h.eng.Delete(h.ctx, p.PublicKey); err != nil {
			t.Fatal(err)
		}
	}
	// As if every removal's device write had failed: all 12 are back.
	back := make([]wg.Wanted, len(former))
	for i, p := range former {
		back[i] = wanted(p)
	}
	h.addForeign(back)
	// 12 former configs > limit 10, but none counts: all removed.
	rep := h.eng.Reconcile(h.ctx, h.srv.Name, false)
	if rep.Err != nil || rep.Counts.Removed != 12 || rep.Orphans.Blocked || rep.Orphans.Orphans != 0 {
		t.Fatalf("12 former configs: err %v, counts %+v, state %+v", rep.Err, rep.Counts, rep.Orphans)
	}
	// Again, next to 11 foreign peers: blocked by those 11 alone, and
	// the former configs still go.
	h.addForeign(back)
	h.addForeign(clientsAt(t, 500, 11))
	rep = h.eng.Reconcile(h.ctx, h.srv.Name, false)
	if rep.Err != nil || rep.Counts.Removed != 12 || !rep.Orphans.Blocked || rep.Orphans.Orphans != 11 || len(rep.Orphans.Held) != 11 {
		t.Fatalf("12 former + 11 foreign: err %v, counts %+v, state %+v", rep.Err, rep.Counts, rep.Orphans)
	}
	for _, p := range former {
		if _, ok := h.onDevice(p.PublicKey); ok {
			t.Fatalf("former config %s left on the device", p.PublicKey)
		}
	}
	if n := len(h.read().Peers); n != 11 {
		t.Fatalf("device has %d peers, want the 11 foreign ones", n)
	}
}

// orphans = "keep": an address a kept orphan holds is never handed to a
// new config, whether the engine learnt of the orphan from a reconcile or
// from its first look at the device.
func TestKeepOrphansAddressNotAllocated(t *testing.T) {
	fk, _ := wgtypes.GeneratePrivateKey()
	foreign := wg.Wanted{PublicKey: fk.PublicKey(), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.99.0.2/32")}}
	h := newHarness(t, harnessOpts{orphans: "keep", peers: []wg.Wanted{foreign}})
	// A fresh engine, no reconcile yet.
	c := h.create("alice")
	if c.Peer.IPv4 != mustAddr("10.99.0.3") || c.Peer.IPv6 != mustAddr("fd00:99::3") {
		t.Fatalf("create got %s / %s, want 10.99.0.3 / fd00:99::3 (.2 is the kept orphan's)", c.Peer.IPv4, c.Peer.IPv6)
	}
	p, ok := h.onDevice(foreign.PublicKey)
	if !ok || fmt.Sprint(p.AllowedIPs) != "[10.99.0.2/32]" {
		t.Fatalf("kept orphan lost its address: %v, %v", ok, p.AllowedIPs)
	}
	st, ok := h.eng.Orphans(h.srv.Name)
	if !ok || st.Blocked || len(st.Held) != 1 || st.Held[0].PublicKey != foreign.PublicKey {
		t.Fatalf("orphan state %+v", st)
	}

	// A second orphan appears; the reconcile that reports it also makes
	// the next create skip its address.
	gk, _ := wgtypes.GeneratePrivateKey()
	second := wg.Wanted{PublicKey: gk.PublicKey(), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("fd00:99::4/128")}}
	h.addForeign([]wg.Wanted{second})
	if rep := h.eng.Reconcile(h.ctx, h.srv.Name, false); rep.Err != nil || len(rep.Plan.KeptOrphans) != 2 {
		t.Fatalf("reconcile: %+v", rep)
	}
	c2 := h.create("bob")
	if c2.Peer.IPv4 != mustAddr("10.99.0.5") {
		t.Fatalf("second create got %s, want 10.99.0.5 (index 2 is held through its IPv6 address)", c2.Peer.IPv4)
	}
	h.assertKept(foreign, second)
}

func (h *harness) assertKept(ps ...wg.Wanted) {
	h.t.Helper()
	for _, w := range ps {
		p, ok := h.onDevice(w.PublicKey)
		if !ok || fmt.Sprint(p.AllowedIPs) != fmt.Sprint(w.AllowedIPs) {
			h.t.Fatalf("orphan %s: on device %v, allowed IPs %v, want %v", w.PublicKey, ok, p.AllowedIPs, w.AllowedIPs)
		}
	}
}
