package api

import (
	"encoding/base64"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/wg"
)

func escKey(k string) string { return url.PathEscape(k) }

func urlKey(k wgtypes.Key) string { return base64.URLEncoding.EncodeToString(k[:]) }

// configLine returns the value of "Name = value" in a wg-quick file.
func configLine(t testing.TB, cfg, name string) string {
	t.Helper()
	for _, l := range strings.Split(cfg, "\n") {
		if v, ok := strings.CutPrefix(l, name+" = "); ok {
			return v
		}
	}
	t.Fatalf("no %s in config:\n%s", name, cfg)
	return ""
}

func mustKey(t testing.TB, s string) wgtypes.Key {
	t.Helper()
	k, err := wgtypes.ParseKey(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestEndpoints(t *testing.T) {
	h := newHarness(t, harnessOpts{logger: true})

	// healthz needs no token.
	if r := h.doWith("GET", "/healthz", nil, nil); r.status != 200 || !strings.Contains(string(r.body), `"ok"`) {
		t.Fatalf("healthz: %d %s", r.status, r.body)
	}

	// Create with a generated key pair.
	alice := h.create(map[string]any{"user_id": "alice", "profile_id": "staff", "display_name": "Alice's laptop", "originating_ip": "192.0.2.7"}, 201)
	if alice.PrivateKey == "" || alice.Peer.State != "active" || alice.Peer.IPFour == nil || *alice.Peer.IPFour != "10.99.0.2" || !alice.Peer.PresharedKey {
		t.Fatalf("create alice: %+v", alice)
	}
	if *alice.Peer.OriginatingIP != "192.0.2.7" || alice.Peer.ExpiresAt == nil {
		t.Fatalf("create alice: %+v", alice.Peer)
	}
	priv := mustKey(t, alice.PrivateKey)
	if configLine(t, alice.Config, "PrivateKey") != alice.PrivateKey || configLine(t, alice.Config, "PublicKey") != h.srv.PublicKey.String() {
		t.Fatalf("config: %s", alice.Config)
	}
	aliceKey := priv.PublicKey()
	if alice.Peer.PublicKey != aliceKey.String() {
		t.Fatalf("public key %s, want %s", alice.Peer.PublicKey, aliceKey)
	}
	dp, ok := h.read().Peer(aliceKey)
	if !ok || fmt.Sprint(dp.AllowedIPs) != "[10.99.0.2/32 fd00:99::2/128]" || dp.PresharedKey == (wgtypes.Key{}) {
		t.Fatalf("alice on device: %v %+v", ok, dp)
	}

	// Create with the client's key, and an idempotent retry.
	bobKey := newKey(t).PublicKey()
	body := map[string]any{"user_id": "bob", "profile_id": "staff", "public_key": bobKey.String(), "expires_in": "7d"}
	bob := h.create(body, 201)
	if bob.PrivateKey != "" || !strings.Contains(bob.Config, "# PrivateKey") {
		t.Fatalf("bob: %+v", bob)
	}
	again := h.create(body, 200)
	if again.Peer.PublicKey != bobKey.String() || again.Peer.IPFour == nil || *again.Peer.IPFour != *bob.Peer.IPFour {
		t.Fatalf("retry: %+v", again)
	}
	cRuns := 0
	for _, l := range h.scriptRuns() {
		if strings.HasPrefix(l, "C bob "+bobKey.String()) {
			cRuns++
		}
	}
	if cRuns != 1 {
		t.Fatalf("bob's connect script ran %d times, want 1", cRuns)
	}
	if _, ok := h.read().Peer(bobKey); !ok {
		t.Fatal("bob not on device")
	}

	// A real client handshakes with alice's config: live fields follow.
	a4, a6 := netip.MustParseAddr(*alice.Peer.IPFour), netip.MustParseAddr(*alice.Peer.IPSix)
	h.handshake(t, priv, a4, a6, mustKey(t, configLine(t, alice.Config, "PresharedKey")))
	h.clock.Advance(time.Second)
	for _, path := range []string{"/v1/peers/" + escKey(aliceKey.String()), "/v1/peers/" + urlKey(aliceKey)} {
		r := h.do("GET", path, nil)
		if r.status != 200 {
			t.Fatalf("GET %s: %d %s", path, r.status, r.body)
		}
		var pr PeerResponse
		r.json(t, &pr)
		l := pr.Peer.Live
		if l == nil || !l.OnDevice || !l.InSync || !l.Online || l.LastHandshake == nil || l.RxBytes == 0 || l.TxBytes == 0 || l.Endpoint == nil {
			t.Fatalf("GET %s live: %+v", path, l)
		}
	}

	// Lists and filters.
	listLen := func(q string) int {
		r := h.do("GET", "/v1/peers"+q, nil)
		if r.status != 200 {
			t.Fatalf("GET /v1/peers%s: %d %s", q, r.status, r.body)
		}
		var pr PeersResponse
		r.json(t, &pr)
		for _, p := range pr.Peers {
			if p.Live == nil {
				t.Fatalf("GET /v1/peers%s: no live fields: %s", q, r.body)
			}
		}
		return len(pr.Peers)
	}
	for q, want := range map[string]int{"": 2, "?user_id=alice": 1, "?profile_id=staff&state=active": 2, "?state=pending": 0, "?profile_id=tiny": 0, "?limit=1": 1} {
		if n := listLen(q); n != want {
			t.Errorf("GET /v1/peers%s: %d peers, want %d", q, n, want)
		}
	}

	// Drift on the device shows as not in sync and in the plan; a
	// housekeeping run repairs it.
	if _, err := h.dev.Apply(h.ctx, h.srv.Name, wg.Plan{Update: []wg.Change{{Wanted: wg.Wanted{PublicKey: bobKey,
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.99.9.9/32")}}, AllowedIPs: true}}}); err != nil {
		t.Fatal(err)
	}
	var pr PeerResponse
	h.do("GET", "/v1/peers/"+urlKey(bobKey), nil).json(t, &pr)
	if pr.Peer.Live == nil || pr.Peer.Live.InSync || !pr.Peer.Live.OnDevice {
		t.Fatalf("drifted bob: %+v", pr.Peer.Live)
	}
	r := h.do("GET", "/v1/plan", nil)
	var plan PlanResponse
	r.json(t, &plan)
	if r.status != 200 || len(plan.Interfaces) != 1 || len(plan.Interfaces[0].Update) != 1 ||
		plan.Interfaces[0].Update[0].PublicKey != bobKey.String() || fmt.Sprint(plan.Interfaces[0].Update[0].Fields) != "[allowed_ips]" {
		t.Fatalf("plan: %d %s", r.status, r.body)
	}
	if dp, _ := h.read().Peer(bobKey); fmt.Sprint(dp.AllowedIPs) != "[10.99.9.9/32]" {
		t.Fatalf("the plan changed the device: %v", dp.AllowedIPs)
	}
	r = h.do("POST", "/v1/housekeeping", map[string]any{"wait": true})
	var hk HousekeepingResponse
	r.json(t, &hk)
	if r.status != 200 || len(hk.Interfaces) != 1 || hk.Interfaces[0].Updated != 1 || len(hk.Errors) != 0 {
		t.Fatalf("housekeeping: %d %s", r.status, r.body)
	}
	h.assertInSync()

	// Status.
	r = h.do("GET", "/v1/status", nil)
	var st StatusResponse
	r.json(t, &st)
	if r.status != 200 || st.Version != "test" || len(st.Interfaces) != 1 || *st.Interfaces[0].PeersOnDevice != 2 ||
		*st.Interfaces[0].PeersOnline != 1 || st.Interfaces[0].ConfigsActive != 2 || *st.Interfaces[0].PublicKey != h.srv.PublicKey.String() {
		t.Fatalf("status: %d %s", r.status, r.body)
	}
	if len(st.Profiles) != 2 || st.Profiles[0].PoolUsed != 2 || st.Profiles[1].PoolSize != 1 || st.Profiles[1].PoolFree != 1 || st.Events["done"] != 2 {
		t.Fatalf("status profiles/events: %s", r.body)
	}

	// Delete one config by its escaped standard key.
	r = h.do("DELETE", "/v1/peers/"+escKey(bobKey.String()), nil)
	var rm RemovedResponse
	r.json(t, &rm)
	if r.status != 200 || len(rm.Events) != 1 || rm.Events[0].Event != "D" || rm.Events[0].Reason != "deleted" ||
		rm.Events[0].PublicKey != bobKey.String() || rm.Delivered != 1 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	if _, ok := h.read().Peer(bobKey); ok {
		t.Fatal("bob still on device")
	}
	if r := h.do("GET", "/v1/peers/"+urlKey(bobKey), nil); r.status != 404 || r.errCode() != CodeNotFound {
		t.Fatalf("GET deleted: %d %s", r.status, r.body)
	}

	// Revoke a user: the D event carries the byte counters.
	r = h.do("DELETE", "/v1/users/alice/peers", nil)
	rm = RemovedResponse{}
	r.json(t, &rm)
	if r.status != 200 || len(rm.Events) != 1 || rm.Events[0].Reason != "revoked" || rm.Events[0].BytesIn == 0 {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	if n := len(h.read().Peers); n != 0 {
		t.Fatalf("%d peers left on device", n)
	}
	if r := h.do("DELETE", "/v1/users/nobody/peers", nil); r.status != 200 || !strings.Contains(string(r.body), `"events":[]`) {
		t.Fatalf("revoke nobody: %d %s", r.status, r.body)
	}

	// A failed D event, listed and retried.
	fk := newKey(t).PublicKey()
	h.create(map[string]any{"user_id": "faild1", "profile_id": "staff", "public_key": urlKey(fk)}, 201)
	if r := h.do("DELETE", "/v1/peers/"+urlKey(fk), nil); r.status != 200 {
		t.Fatalf("delete faild1: %d %s", r.status, r.body)
	}
	var evs EventsResponse
	h.do("GET", "/v1/events?status=failed", nil).json(t, &evs)
	if len(evs.Events) != 1 || evs.Events[0].PublicKey != fk.String() || evs.Events[0].LastError == "" {
		t.Fatalf("failed events: %+v", evs)
	}
	id := evs.Events[0].ID
	r = h.do("POST", fmt.Sprintf("/v1/events/%d/retry", id), nil)
	var er EventResponse
	r.json(t, &er)
	if r.status != 200 || er.Event.ID != id || er.Event.Status != "pending" || er.Event.Attempts != 0 {
		t.Fatalf("retry: %d %s", r.status, r.body)
	}
	if r := h.do("POST", fmt.Sprintf("/v1/events/%d/retry", id), nil); r.status != 409 || r.errCode() != CodeConflict {
		t.Fatalf("retry of a pending event: %d %s", r.status, r.body)
	}

	// Expiry through housekeeping, announced by the plan first.
	ek := h.create(map[string]any{"user_id": "carol", "profile_id": "staff", "expires_in": "1h"}, 201)
	h.clock.Advance(2 * time.Hour)
	plan = PlanResponse{}
	h.do("GET", "/v1/plan", nil).json(t, &plan)
	if len(plan.Interfaces[0].Expiring) != 1 || plan.Interfaces[0].Expiring[0].PublicKey != ek.Peer.PublicKey {
		t.Fatalf("plan expiring: %+v", plan)
	}
	r = h.do("POST", "/v1/housekeeping", nil)
	hk = HousekeepingResponse{}
	r.json(t, &hk)
	if r.status != 200 || hk.Expired != 1 || hk.Failed != 1 {
		t.Fatalf("housekeeping: %d %s", r.status, r.body)
	}
	if n := len(h.read().Peers); n != 0 {
		t.Fatalf("expired config still on device (%d peers)", n)
	}
	evs = EventsResponse{}
	h.do("GET", "/v1/events?event=D&limit=2", nil).json(t, &evs)
	if len(evs.Events) != 2 || evs.Events[0].Reason != "expired" || evs.NextBeforeID == nil {
		t.Fatalf("events page: %+v", evs)
	}
	next := EventsResponse{}
	h.do("GET", fmt.Sprintf("/v1/events?event=D&before_id=%d", *evs.NextBeforeID), nil).json(t, &next)
	if len(next.Events) != 2 || next.Events[0].ID >= evs.Events[1].ID {
		t.Fatalf("next page: %+v", next)
	}
	h.assertInSync()

	// Metrics need the token.
	if r := h.doWith("GET", "/metrics", nil, nil); r.status != 401 {
		t.Fatalf("metrics without token: %d", r.status)
	}
	if r := h.do("GET", "/metrics", nil); r.status != 200 || !strings.Contains(string(r.body), "wgkeeper_configs") {
		t.Fatalf("metrics: %d", r.status)
	}
	if all, _ := h.st.ListPeers(h.ctx, store.PeerFilter{}); len(all) != 0 {
		t.Fatalf("%d configs left", len(all))
	}
}

// TestInProgress: a retry while the first create's script still runs is
// 409 in_progress; the first create then succeeds.
func TestInProgress(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	k := newKey(t).PublicKey()
	body := map[string]any{"user_id": "slow1", "profile_id": "staff", "public_key": k.String()}
	done := make(chan response)
	go func() { done <- h.do("POST", "/v1/peers", body) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		p, err := h.st.GetPeer(h.ctx, k)
		if err == nil && p.State == store.StatePending {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first create never became pending")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if r := h.do("POST", "/v1/peers", body); r.status != 409 || r.errCode() != CodeInProgress {
		t.Fatalf("retry during the script: %d %s", r.status, r.body)
	}
	if r := <-done; r.status != 201 {
		t.Fatalf("first create: %d %s", r.status, r.body)
	}
	h.assertInSync()
}

// TestMetricsPublic: /metrics without the token when metrics_public.
func TestMetricsPublic(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	s, err := New(Options{Engine: h.eng, Token: testToken, MetricsPublic: true})
	if err != nil {
		t.Fatal(err)
	}
	h.http.Config.Handler = s
	if r := h.doWith("GET", "/metrics", nil, nil); r.status != 200 {
		t.Fatalf("public metrics: %d %s", r.status, r.body)
	}
	if r := h.doWith("GET", "/v1/status", nil, nil); r.status != 401 {
		t.Fatalf("status without token: %d", r.status)
	}
}
