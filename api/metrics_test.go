package api

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/store"
)

// scrape fetches /metrics and parses it with the Prometheus text parser.
func (h *harness) scrape() map[string]*dto.MetricFamily {
	h.t.Helper()
	r := h.doWith("GET", "/metrics", nil, map[string]string{"Authorization": "Bearer " + testToken, "Accept": "text/plain"})
	if r.status != 200 {
		h.t.Fatalf("metrics: %d %s", r.status, r.body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(r.body))
	if err != nil {
		h.t.Fatalf("parse metrics: %v\n%s", err, r.body)
	}
	return mfs
}

// metricValue returns the value of the sample of family name whose labels
// include want; ok is false when there is none.
func metricValue(mfs map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	mf, ok := mfs[name]
	if !ok {
		return 0, false
	}
	for _, m := range mf.GetMetric() {
		labels := map[string]string{}
		for _, lp := range m.GetLabel() {
			labels[lp.GetName()] = lp.GetValue()
		}
		match := true
		for k, v := range want {
			if labels[k] != v {
				match = false
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

func TestMetrics(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	iface := h.srv.Name

	alice := h.create(map[string]any{"user_id": "alice", "profile_id": "staff"}, 201)
	bob := h.create(map[string]any{"user_id": "bob", "profile_id": "staff"}, 201)
	h.create(map[string]any{"user_id": "carol", "profile_id": "staff"}, 201)
	h.create(map[string]any{"user_id": "tinyuser", "profile_id": "tiny"}, 201)
	if r := h.do("POST", "/v1/peers", map[string]any{"user_id": "reject1", "profile_id": "staff"}); r.status != 403 {
		t.Fatalf("reject: %d", r.status)
	}
	fd := h.create(map[string]any{"user_id": "faild1", "profile_id": "staff"}, 201)
	for _, k := range []string{fd.Peer.PublicKey, bob.Peer.PublicKey} {
		if r := h.do("DELETE", "/v1/peers/"+escKey(k), nil); r.status != 200 {
			t.Fatalf("delete: %d %s", r.status, r.body)
		}
	}
	h.create(map[string]any{"user_id": "dave", "profile_id": "staff", "expires_in": "1h"}, 201)
	h.clock.Advance(2 * time.Hour)
	if r := h.do("POST", "/v1/housekeeping", map[string]any{"wait": true}); r.status != 200 {
		t.Fatalf("housekeeping: %d %s", r.status, r.body)
	}
	// Back to real time: handshakes are stamped with it.
	h.clock.Set(time.Now().UTC())

	// A real client makes alice online.
	a4, a6 := netip.MustParseAddr(*alice.Peer.IPFour), netip.MustParseAddr(*alice.Peer.IPSix)
	h.handshake(t, mustKey(t, alice.PrivateKey), a4, a6, mustKey(t, configLine(t, alice.Config, "PresharedKey")))
	h.clock.Set(time.Now().UTC())

	mfs := h.scrape()
	check := func(name string, labels map[string]string, want float64) {
		t.Helper()
		got, ok := metricValue(mfs, name, labels)
		if !ok || got != want {
			t.Errorf("%s%v = %v (present %v), want %v", name, labels, got, ok, want)
		}
	}

	// Gauges against the store.
	counts, err := h.st.CountPeers(h.ctx)
	if err != nil {
		t.Fatal(err)
	}
	byProfile := map[string]int{}
	for _, c := range counts {
		check("wgkeeper_configs", map[string]string{"interface": c.Interface, "profile": c.ProfileID, "state": string(c.State)}, float64(c.Count))
		byProfile[c.ProfileID] += c.Count
	}
	check("wgkeeper_configs", map[string]string{"interface": iface, "profile": "staff", "state": "active"}, 2)
	check("wgkeeper_configs", map[string]string{"interface": iface, "profile": "staff", "state": "pending"}, 0)
	check("wgkeeper_configs", map[string]string{"interface": iface, "profile": "tiny", "state": "active"}, 1)
	for _, p := range h.cfg.Profiles {
		check("wgkeeper_pool_addresses", map[string]string{"profile": p.ID, "kind": "used"}, float64(byProfile[p.ID]))
		check("wgkeeper_pool_addresses", map[string]string{"profile": p.ID, "kind": "free"}, float64(p.Capacity()-byProfile[p.ID]))
	}
	check("wgkeeper_pool_addresses", map[string]string{"profile": "tiny", "kind": "free"}, 0)
	evs, err := h.st.CountEvents(h.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for st, n := range evs {
		check("wgkeeper_events", map[string]string{"status": st}, float64(n))
	}
	check("wgkeeper_events", map[string]string{"status": store.StatusFailed}, 1)
	check("wgkeeper_peers_online", map[string]string{"interface": iface}, 1)
	check("wgkeeper_device_peers", map[string]string{"interface": iface}, 3)

	// Counters from the engine.
	check("wgkeeper_script_runs_total", map[string]string{"event": "C", "result": "ok"}, 6)
	check("wgkeeper_script_runs_total", map[string]string{"event": "C", "result": "failed"}, 1)
	check("wgkeeper_script_runs_total", map[string]string{"event": "D", "result": "ok"}, 2)
	check("wgkeeper_script_runs_total", map[string]string{"event": "D", "result": "failed"}, 1)
	check("wgkeeper_script_duration_seconds", map[string]string{"event": "C"}, 7)
	check("wgkeeper_script_duration_seconds", map[string]string{"event": "D"}, 3)
	check("wgkeeper_expired_total", nil, 1)
	check("wgkeeper_housekeeping_runs_total", map[string]string{"result": "ok"}, 1)
	check("wgkeeper_reconcile_runs_total", map[string]string{"interface": iface, "result": "ok"}, 1)
	check("wgkeeper_reconcile_runs_total", map[string]string{"interface": iface, "result": "error"}, 0)
	check("wgkeeper_reconcile_duration_seconds", map[string]string{"interface": iface}, 1)
	check("wgkeeper_reconcile_changes_total", map[string]string{"interface": iface, "kind": "added"}, 0)
	check("wgkeeper_device_read_errors_total", map[string]string{"interface": iface}, 0)

	// A drifted peer repaired by reconcile is counted as an update.
	if err := h.dev.RemovePeers(h.ctx, iface, []wgtypes.Key{mustKey(t, alice.Peer.PublicKey)}); err != nil {
		t.Fatal(err)
	}
	h.eng.ReconcileAll(h.ctx, false)
	mfs = h.scrape()
	check("wgkeeper_reconcile_changes_total", map[string]string{"interface": iface, "kind": "added"}, 1)
	check("wgkeeper_reconcile_runs_total", map[string]string{"interface": iface, "result": "ok"}, 2)

	// Standard collectors.
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if _, ok := mfs[name]; !ok {
			t.Errorf("%s missing", name)
		}
	}
}
