package api

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/reconcile"
	"github.com/wgkeeper/wgkeeper/wg"
)

// foreignPeers puts n peers the store does not know on the device, at
// 10.99.1.x.
func (h *harness) foreignPeers(n int) []wgtypes.Key {
	h.t.Helper()
	var add []wg.Wanted
	var keys []wgtypes.Key
	for i := range n {
		k := newKey(h.t)
		keys = append(keys, k)
		add = append(add, wg.Wanted{PublicKey: k, AllowedIPs: []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("10.99.1.%d/32", i+2))}})
	}
	if _, err := h.dev.Apply(h.ctx, h.srv.Name, wg.Plan{Add: add}); err != nil {
		h.t.Fatal(err)
	}
	return keys
}

// An empty store facing a device with 50 peers: every surface says the
// interface is blocked, and nothing is removed until a forced reconcile.
func TestBlockedEverywhere(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	iface := h.srv.Name
	h.foreignPeers(50)

	if r := h.doWith("GET", "/healthz", nil, nil); r.status != 200 {
		t.Fatalf("healthz before any look at the device: %d %s", r.status, r.body)
	}
	// /v1/status reads the device and reaches the reconcile's verdict.
	var st StatusResponse
	h.do("GET", "/v1/status", nil).json(t, &st)
	is := st.Interfaces[0]
	if !is.Blocked || is.Orphans == nil || *is.Orphans != 50 || *is.OrphanRemovalLimit != 10 {
		t.Fatalf("status: %+v", is)
	}
	r := h.doWith("GET", "/healthz", nil, nil)
	var body struct {
		Error Error `json:"error"`
	}
	r.json(t, &body)
	if r.status != 503 || body.Error.Code != CodeBlocked || len(body.Error.Blocked) != 1 ||
		body.Error.Blocked[0] != (BlockedInterface{Interface: iface, Orphans: 50, OrphanRemovalLimit: 10}) ||
		!strings.Contains(body.Error.Message, "interface "+iface+" is blocked") || !strings.Contains(body.Error.Message, "reconcile -force "+iface) {
		t.Fatalf("healthz: %d %s", r.status, r.body)
	}
	var plan PlanResponse
	h.do("GET", "/v1/plan", nil).json(t, &plan)
	if p := plan.Interfaces[0]; !p.Blocked || len(p.Remove) != 0 || len(p.BlockedOrphans) != 50 || p.Orphans != 50 {
		t.Fatalf("plan: blocked %v, remove %d, blocked orphans %d", p.Blocked, len(p.Remove), len(p.BlockedOrphans))
	}
	var hk HousekeepingResponse
	h.do("POST", "/v1/housekeeping", map[string]any{"wait": true}).json(t, &hk)
	if len(hk.Interfaces) != 1 || !hk.Interfaces[0].Blocked || hk.Interfaces[0].Removed != 0 {
		t.Fatalf("housekeeping: %+v", hk.Interfaces)
	}
	if n := len(h.read().Peers); n != 50 {
		t.Fatalf("device has %d peers, want 50", n)
	}
	mfs := h.scrape()
	if v, ok := metricValue(mfs, "wgkeeper_interface_blocked", map[string]string{"interface": iface}); !ok || v != 1 {
		t.Fatalf("wgkeeper_interface_blocked = %v (%v)", v, ok)
	}
	if v, ok := metricValue(mfs, "wgkeeper_interface_orphans", map[string]string{"interface": iface}); !ok || v != 50 {
		t.Fatalf("wgkeeper_interface_orphans = %v (%v)", v, ok)
	}

	// The operator confirms: every surface clears.
	if rep := h.eng.ReconcileWith(h.ctx, iface, reconcile.ReconcileOptions{Force: true}); rep.Err != nil || rep.Counts.Removed != 50 {
		t.Fatalf("forced: %v %+v", rep.Err, rep.Counts)
	}
	if r := h.doWith("GET", "/healthz", nil, nil); r.status != 200 {
		t.Fatalf("healthz after force: %d %s", r.status, r.body)
	}
	if v, _ := metricValue(h.scrape(), "wgkeeper_interface_blocked", map[string]string{"interface": iface}); v != 0 {
		t.Fatalf("still blocked in metrics")
	}
	h.do("GET", "/v1/status", nil).json(t, &st)
	if is := st.Interfaces[0]; is.Blocked || *is.Orphans != 0 {
		t.Fatalf("status after force: %+v", is)
	}
}

// orphans = "keep": /v1/status lists kept orphans with the addresses they
// hold, and a create does not get them.
func TestKeptOrphansInStatus(t *testing.T) {
	h := newHarness(t, harnessOpts{ifaceExtra: `orphans = "keep"`})
	k := newKey(t)
	if _, err := h.dev.Apply(h.ctx, h.srv.Name, wg.Plan{Add: []wg.Wanted{{PublicKey: k,
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.99.0.2/32"), netip.MustParsePrefix("192.168.7.0/24")}}}}); err != nil {
		t.Fatal(err)
	}
	c := h.create(map[string]any{"user_id": "alice", "profile_id": "staff"}, 201)
	if *c.Peer.IPFour != "10.99.0.3" {
		t.Fatalf("create got %s, the kept orphan's address is 10.99.0.2", *c.Peer.IPFour)
	}
	var st StatusResponse
	h.do("GET", "/v1/status", nil).json(t, &st)
	is := st.Interfaces[0]
	if is.Blocked || len(is.KeptOrphans) != 1 || is.KeptOrphans[0].PublicKey != k.String() ||
		fmt.Sprint(is.KeptOrphans[0].Keeps) != "[10.99.0.2]" || fmt.Sprint(is.KeptOrphans[0].AllowedIPs) != "[10.99.0.2/32 192.168.7.0/24]" {
		t.Fatalf("status: %+v", is)
	}
}
