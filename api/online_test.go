package api

import (
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"
)

// Online is an open session (reconcile.Online): a real client
// handshaking over loopback is online in GET /v1/status, GET /v1/peers,
// the admin page and the metrics while its session is open; offline when
// its session is still open in the store but no poll came for
// offline_after + poll_interval (no daemon polls); offline once a poll
// ended the session. wgkeeper_sessions_online counts by profile, every
// configured profile present, and drops a profile the configuration no
// longer has.
func TestOnlineFollowsSessions(t *testing.T) {
	h := newHarness(t, harnessOpts{real: true})
	iface := h.srv.Name
	h.clock.Set(time.Now().UTC()) // handshakes are stamped with real time
	alice := h.create(map[string]any{"user_id": "alice", "profile_id": "staff"}, 201)
	h.create(map[string]any{"user_id": "bob", "profile_id": "tiny"}, 201) // never talks
	a4, a6 := netip.MustParseAddr(*alice.Peer.IPFour), netip.MustParseAddr(*alice.Peer.IPSix)
	h.handshake(t, mustKey(t, alice.PrivateKey), a4, a6, mustKey(t, configLine(t, alice.Config, "PresharedKey"))) // and a poll

	srv, err := New(Options{Engine: h.eng, Token: testToken, Version: "test", Now: h.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	page := browser(t, hs)
	postForm(t, page, hs.URL+"/ui/login", url.Values{"token": {testToken}})

	// check asserts what every surface says of alice and bob.
	check := func(when string, aliceOnline bool, aliceStatus string, staffSessions float64) {
		t.Helper()
		var st StatusResponse
		h.do("GET", "/v1/status", nil).json(t, &st)
		status := map[string]string{}
		for _, c := range st.Interfaces[0].Configs {
			status[c.UserID] = c.Status
		}
		if status["alice"] != aliceStatus || status["bob"] != ConfigNever {
			t.Errorf("%s: /v1/status: alice %q, bob %q; want %q, %q", when, status["alice"], status["bob"], aliceStatus, ConfigNever)
		}
		if n := st.Interfaces[0].PeersOnline; n == nil || (*n == 1) != aliceOnline || *n > 1 {
			t.Errorf("%s: /v1/status peers_online %v", when, n)
		}
		var pl PeersResponse
		h.do("GET", "/v1/peers", nil).json(t, &pl)
		for _, p := range pl.Peers {
			want := p.UserID == "alice" && aliceOnline
			if p.Live == nil || p.Live.Online != want {
				t.Errorf("%s: /v1/peers: %s live %+v, want online %v", when, p.UserID, p.Live, want)
			}
		}
		_, body := get(t, page, hs.URL+"/ui/")
		i := strings.Index(body, `title="`+esc(alice.Peer.PublicKey)+`"`)
		if i < 0 {
			t.Fatalf("%s: the page has no row for alice", when)
		}
		row := body[strings.LastIndex(body[:i], `<tr class="config"`):]
		if !strings.HasPrefix(row, `<tr class="config" data-state="`+aliceStatus+`"`) {
			t.Errorf("%s: the page's row of alice: %.120s; want state %s", when, row, aliceStatus)
		}
		mfs := h.scrape()
		online := 0.0
		if aliceOnline {
			online = 1
		}
		for name, want := range map[string]map[string]float64{
			"wgkeeper_peers_online":    {"": online},
			"wgkeeper_sessions_online": {"staff": staffSessions, "tiny": 0},
		} {
			for profile, v := range want {
				labels := map[string]string{"interface": iface}
				if profile != "" {
					labels["profile"] = profile
				}
				if got, ok := metricValue(mfs, name, labels); !ok || got != v {
					t.Errorf("%s: %s%v = %v (present %v), want %v", when, name, labels, got, ok, v)
				}
			}
		}
	}
	check("session open", true, ConfigOnline, 1)
	off := h.cfg.Sessions.OfflineAfter + h.cfg.Sessions.PollInterval
	h.clock.Advance(off - time.Second)
	check("no poll, just inside offline_after + poll_interval", true, ConfigOnline, 1)

	// No poll for offline_after + poll_interval: the session is still open
	// in the store, but stale.
	h.clock.Advance(time.Second)
	acts, err := h.st.ListActivity(h.ctx, iface)
	if err != nil || !acts[mustKey(t, alice.Peer.PublicKey)].SessionOpen() {
		t.Fatalf("alice's session is not open in the store: %+v, %v", acts, err)
	}
	// sessions_online is the latest poll's count: still 1
	check("session open in the store, no poll since", false, ConfigOffline, 1)

	// A poll ends the session.
	sp, err := h.eng.PollSessions(h.ctx, iface)
	if err != nil || len(sp.Changes) != 1 || sp.Changes[0].Kind.String() != "end" {
		t.Fatalf("poll = %+v, %v; want alice's session end", sp, err)
	}
	check("session ended", false, ConfigOffline, 0)

	// A reload without the tiny profile: its series goes.
	cfg := *h.cfg
	cfg.Profiles = nil
	for _, p := range h.cfg.Profiles {
		if p.ID != "tiny" {
			cfg.Profiles = append(cfg.Profiles, p)
		}
	}
	h.eng.SetConfig(&cfg, nil)
	if _, err := h.eng.PollSessions(h.ctx, iface); err != nil {
		t.Fatal(err)
	}
	mfs := h.scrape()
	if _, ok := metricValue(mfs, "wgkeeper_sessions_online", map[string]string{"interface": iface, "profile": "tiny"}); ok {
		t.Error("wgkeeper_sessions_online of the removed profile tiny is still exported")
	}
	if v, ok := metricValue(mfs, "wgkeeper_sessions_online", map[string]string{"interface": iface, "profile": "staff"}); !ok || v != 0 {
		t.Errorf("wgkeeper_sessions_online{staff} = %v (present %v), want 0", v, ok)
	}
}
