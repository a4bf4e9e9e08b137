package api

import (
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/store"
)

// A DELETE answers its D event as delivery left it: done (with done_at)
// when the disconnect script ran, failed with the script's error when it
// did not (max_attempts = 1 here), and never leased any more.
func TestDeleteReportsDelivery(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	for _, tc := range []struct{ user, status string }{{"alice", store.StatusDone}, {"faildan", store.StatusFailed}} {
		c := h.create(map[string]any{"user_id": tc.user, "profile_id": "staff"}, 201)
		r := h.do("DELETE", "/v1/peers/"+escKey(c.Peer.PublicKey), nil)
		var rm RemovedResponse
		r.json(t, &rm)
		if r.status != 200 || len(rm.Events) != 1 {
			t.Fatalf("DELETE %s: %d %s", tc.user, r.status, r.body)
		}
		ev := rm.Events[0]
		if ev.Status != tc.status || ev.Attempts != 1 || ev.LeaseOwner != nil || ev.LeaseUntil != nil {
			t.Errorf("DELETE %s: event %+v, want status %s after one attempt, no lease", tc.user, ev, tc.status)
		}
		if tc.status == store.StatusDone && (ev.DoneAt == nil || rm.Delivered != 1) {
			t.Errorf("DELETE %s: done_at %v, delivered %d", tc.user, ev.DoneAt, rm.Delivered)
		}
		if tc.status == store.StatusFailed && (!strings.Contains(ev.LastError, "status 5") || rm.Delivered != 0) {
			t.Errorf("DELETE %s: last_error %q, delivered %d", tc.user, ev.LastError, rm.Delivered)
		}
		// The same as GET /v1/events says now.
		var evs EventsResponse
		h.do("GET", "/v1/events?event=D&limit=1", nil).json(t, &evs)
		if len(evs.Events) != 1 || evs.Events[0].Status != ev.Status || evs.Events[0].Attempts != ev.Attempts {
			t.Errorf("GET /v1/events after DELETE %s: %+v", tc.user, evs.Events)
		}
	}
}

// GET /v1/events names a leased event's holder and lease end.
func TestEventsShowLease(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	c := h.create(map[string]any{"user_id": "alice", "profile_id": "staff"}, 201)
	k, err := wgtypes.ParseKey(c.Peer.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	until := h.clock.Now().Add(10 * time.Minute).UTC().Truncate(time.Second)
	const owner = "otherhost:4242:0123456789abcdef/1"
	if _, err := h.st.DeletePeers(h.ctx, []wgtypes.Key{k}, "deleted", owner, until); err != nil {
		t.Fatal(err)
	}
	var evs EventsResponse
	h.do("GET", "/v1/events?event=D", nil).json(t, &evs)
	if len(evs.Events) != 1 {
		t.Fatalf("events: %+v", evs)
	}
	ev := evs.Events[0]
	if ev.Status != store.StatusPending || ev.LeaseOwner == nil || *ev.LeaseOwner != owner || ev.LeaseUntil == nil || !ev.LeaseUntil.Equal(until) {
		t.Fatalf("leased event: status %s, lease %v until %v; want %s until %s", ev.Status, ev.LeaseOwner, ev.LeaseUntil, owner, until)
	}
	// A done event has no lease.
	h.do("GET", "/v1/events?event=C", nil).json(t, &evs)
	if len(evs.Events) != 1 || evs.Events[0].LeaseOwner != nil || evs.Events[0].LeaseUntil != nil {
		t.Fatalf("C event: %+v", evs.Events)
	}
}

// A 400 names the profile's limit as the config writes it: "365d", not
// "8760h0m0s".
func TestExpiryLimitMessage(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	in := time.Now().Add(400 * 24 * time.Hour).UTC().Format(time.RFC3339)
	for _, body := range []map[string]any{
		{"user_id": "alice", "profile_id": "staff", "expires_in": "400d"},
		{"user_id": "alice", "profile_id": "staff", "expires_at": in},
	} {
		r := h.do("POST", "/v1/peers", body)
		if r.status != 400 || !strings.Contains(string(r.body), "maximum lifetime of 365d") || strings.Contains(string(r.body), "8760h") {
			t.Errorf("%v: %d %s", body, r.status, r.body)
		}
	}
}
