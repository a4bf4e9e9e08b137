package storetest

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/store"
)

var (
	ep1 = netip.MustParseAddrPort("127.0.0.1:40001")
	ep2 = netip.MustParseAddrPort("[2001:db8::7]:5555")
)

// testSessionLifecycle: a session starts (C event for sessions.script),
// roams, ends at its last activity (D event with its bytes); activity is
// read back as written.
func (su *suite) testSessionLifecycle(t *testing.T) {
	ctx := context.Background()
	s, clk := su.newStore(t)
	p := mustCreate(t, s, staffPeer(1, "alice"))
	other := mustCreate(t, s, staffPeer(2, "bob"))
	labPeer := staffPeer(3, "carol")
	labPeer.ProfileID, labPeer.IPv4Range, labPeer.IPv6Range = "lab", netip.MustParsePrefix("10.77.0.0/24"), netip.Prefix{}
	lab := mustCreate(t, s, labPeer)
	acts, err := s.ListActivity(ctx, "wg0")
	if err != nil || len(acts) != 3 || acts[p.PublicKey] != (store.Activity{ProfileID: "staff"}) || acts[lab.PublicKey] != (store.Activity{ProfileID: "lab"}) {
		t.Fatalf("ListActivity of new configs = %+v, %v; want three zero activities with their profiles", acts, err)
	}
	t0 := clk.Now()
	hs := t0.Add(-3 * time.Second)
	a := store.Activity{LastHandshake: hs, LastActive: t0, RxBase: 500, TxBase: 700, BytesIn: 500, BytesOut: 700,
		Endpoint: ep1, Session: store.OpenSession{Started: hs, BytesIn: 500, BytesOut: 700}}
	evs, err := s.SaveActivity(ctx, store.ActivityUpdate{
		Interface: "wg0",
		Configs:   []store.ConfigActivity{{Key: p.PublicKey, Activity: a}},
		Changes:   []store.SessionChange{{Key: p.PublicKey, Kind: store.SessionStart, At: hs, Endpoint: ep1, Session: a.Session}},
		Events:    true,
	})
	if err != nil || len(evs) != 1 {
		t.Fatalf("SaveActivity start = %+v, %v; want one event", evs, err)
	}
	c := evs[0]
	if c.Kind != store.KindConnect || c.Scope != store.ScopeSession || c.Reason != store.ReasonHandshake ||
		c.OriginatingIP != ep1.Addr() || c.Status != store.StatusPending || c.PublicKey != p.PublicKey ||
		c.UserID != "alice" || c.IPv4 != p.IPv4 || c.SessionID == 0 {
		t.Fatalf("session C = %+v", c)
	}
	acts, err = s.ListActivity(ctx, "wg0")
	if err != nil {
		t.Fatal(err)
	}
	got := acts[p.PublicKey]
	if got.Session.ID != c.SessionID {
		t.Fatalf("open session id %d, event's %d", got.Session.ID, c.SessionID)
	}
	got.Session.ID = 0
	a.ProfileID = "staff" // read, not written
	if got != a || acts[other.PublicKey] != (store.Activity{ProfileID: "staff"}) {
		t.Fatalf("ListActivity = %+v\nwant %+v", got, a)
	}
	claimed, err := s.ClaimDue(ctx, "node/1", clk.Now(), testClockFuture(), 10)
	if err != nil || len(claimed) != 1 || claimed[0].ID != c.ID {
		t.Fatalf("ClaimDue = %+v, %v; want the session C", claimed, err)
	}
	if err := s.MarkDone(ctx, c.ID, "node/1"); err != nil {
		t.Fatal(err)
	}

	// roaming, then the end at the last activity
	clk.Advance(time.Minute)
	a.Endpoint, a.LastActive, a.BytesIn, a.Session.BytesIn = ep2, clk.Now(), 900, 900
	if _, err := s.SaveActivity(ctx, store.ActivityUpdate{Interface: "wg0",
		Configs: []store.ConfigActivity{{Key: p.PublicKey, Activity: a}},
		Changes: []store.SessionChange{{Key: p.PublicKey, Kind: store.SessionRoam, At: clk.Now(), Endpoint: ep2}},
		Events:  true,
	}); err != nil {
		t.Fatal(err)
	}
	last := clk.Now()
	clk.Advance(4 * time.Minute)
	ended := a.Session
	a.Session = store.OpenSession{}
	evs, err = s.SaveActivity(ctx, store.ActivityUpdate{Interface: "wg0",
		Configs: []store.ConfigActivity{{Key: p.PublicKey, Activity: a}},
		Changes: []store.SessionChange{{Key: p.PublicKey, Kind: store.SessionEnd, At: last, Endpoint: ep2, Session: ended}},
		Events:  true,
	})
	if err != nil || len(evs) != 1 {
		t.Fatalf("SaveActivity end = %+v, %v", evs, err)
	}
	d := evs[0]
	if d.Kind != store.KindDisconnect || d.Scope != store.ScopeSession || d.Reason != store.ReasonOffline ||
		d.BytesIn != 900 || d.BytesOut != 700 || d.OriginatingIP != ep2.Addr() || d.SessionID != c.SessionID {
		t.Fatalf("session D = %+v", d)
	}
	sess, err := s.ListClientSessions(ctx, store.ClientSessionFilter{PublicKey: &p.PublicKey})
	if err != nil || len(sess) != 1 {
		t.Fatalf("ListClientSessions = %+v, %v", sess, err)
	}
	cs := sess[0]
	if !cs.Started.Equal(hs) || !cs.Ended.Equal(last) || cs.EndReason != store.ReasonOffline || cs.UserID != "alice" ||
		len(cs.Endpoints) != 2 || cs.Endpoint() != ep1 || cs.LastEndpoint() != ep2 || cs.BytesIn != 900 || cs.BytesOut != 700 {
		t.Fatalf("session = %+v", cs)
	}
	for _, tc := range []struct {
		at   time.Time
		want int
	}{{hs.Add(-time.Second), 0}, {hs, 1}, {last, 1}, {last.Add(time.Second), 0}} {
		got, err := s.ListClientSessions(ctx, store.ClientSessionFilter{At: tc.at})
		if err != nil || len(got) != tc.want {
			t.Fatalf("sessions at %s = %d, %v; want %d", tc.at, len(got), err, tc.want)
		}
	}
	if got, err := s.ListClientSessions(ctx, store.ClientSessionFilter{UserID: "bob"}); err != nil || len(got) != 0 {
		t.Fatalf("bob's sessions = %+v, %v", got, err)
	}
	// session events are no part of the config's connection log
	if who, err := s.WhoHad(ctx, p.IPv4, clk.Now()); err != nil || len(who) != 1 || who[0].C.Scope != store.ScopeConfig || who[0].D != nil {
		t.Fatalf("WhoHad = %+v, %v; want the config's C only", who, err)
	}
	if dis, err := s.Disconnected(ctx, []wgtypes.Key{p.PublicKey}); err != nil || dis[p.PublicKey] {
		t.Fatalf("Disconnected = %v, %v: a session D is no config removal", dis, err)
	}
}

// testSessionWithoutEvents: with no session script, sessions are recorded
// and no event is.
func (su *suite) testSessionWithoutEvents(t *testing.T) {
	ctx := context.Background()
	s, clk := su.newStore(t)
	p := mustCreate(t, s, staffPeer(1, "alice"))
	before := countEvents(t, s)
	a := store.Activity{LastActive: clk.Now(), Session: store.OpenSession{Started: clk.Now()}}
	evs, err := s.SaveActivity(ctx, store.ActivityUpdate{Interface: "wg0",
		Configs: []store.ConfigActivity{{Key: p.PublicKey, Activity: a}},
		Changes: []store.SessionChange{{Key: p.PublicKey, Kind: store.SessionStart, At: clk.Now()}},
	})
	if err != nil || len(evs) != 0 {
		t.Fatalf("SaveActivity = %+v, %v", evs, err)
	}
	// ended while events are on: its start had none, so no D either
	evs, err = s.SaveActivity(ctx, store.ActivityUpdate{Interface: "wg0",
		Changes: []store.SessionChange{{Key: p.PublicKey, Kind: store.SessionEnd, At: clk.Now()}},
		Events:  true,
	})
	if err != nil || len(evs) != 0 || countEvents(t, s) != before {
		t.Fatalf("end = %+v, %v; want no event", evs, err)
	}
	if sess, err := s.ListClientSessions(ctx, store.ClientSessionFilter{}); err != nil || len(sess) != 1 || sess[0].Ended.IsZero() {
		t.Fatalf("sessions = %+v, %v", sess, err)
	}
}

// testSessionSkipsGoneConfigs: a config removed (or on another interface)
// between the poll's read and its write is skipped; a negative counter
// writes nothing.
func (su *suite) testSessionSkipsGoneConfigs(t *testing.T) {
	ctx := context.Background()
	s, clk := su.newStore(t)
	p := mustCreate(t, s, staffPeer(1, "alice"))
	q := mustCreate(t, s, staffPeer(2, "bob"))
	if _, err := s.DeletePeers(ctx, []wgtypes.Key{p.PublicKey}, store.ReasonDeleted, "", time.Time{}); err != nil {
		t.Fatal(err)
	}
	a := store.Activity{LastActive: clk.Now(), BytesIn: 5, Session: store.OpenSession{Started: clk.Now()}}
	start := func(k wgtypes.Key) store.SessionChange {
		return store.SessionChange{Key: k, Kind: store.SessionStart, At: clk.Now(), Endpoint: ep1}
	}
	evs, err := s.SaveActivity(ctx, store.ActivityUpdate{Interface: "wg0",
		Configs: []store.ConfigActivity{{Key: p.PublicKey, Activity: a}},
		Changes: []store.SessionChange{start(p.PublicKey)},
		Events:  true,
	})
	if err != nil || len(evs) != 0 {
		t.Fatalf("SaveActivity of a deleted config = %+v, %v", evs, err)
	}
	evs, err = s.SaveActivity(ctx, store.ActivityUpdate{Interface: "wg1",
		Configs: []store.ConfigActivity{{Key: q.PublicKey, Activity: a}},
		Changes: []store.SessionChange{start(q.PublicKey)},
		Events:  true,
	})
	if err != nil || len(evs) != 0 {
		t.Fatalf("SaveActivity on the wrong interface = %+v, %v", evs, err)
	}
	bad := a
	bad.RxBase = -1
	if _, err := s.SaveActivity(ctx, store.ActivityUpdate{Interface: "wg0",
		Configs: []store.ConfigActivity{{Key: q.PublicKey, Activity: a}, {Key: q.PublicKey, Activity: bad}},
		Changes: []store.SessionChange{start(q.PublicKey)},
	}); err == nil {
		t.Fatal("SaveActivity with a negative counter succeeded")
	}
	acts, err := s.ListActivity(ctx, "wg0")
	if err != nil || len(acts) != 1 || acts[q.PublicKey] != (store.Activity{ProfileID: q.ProfileID}) {
		t.Fatalf("activity after refused writes = %+v, %v", acts, err)
	}
	if sess, err := s.ListClientSessions(ctx, store.ClientSessionFilter{}); err != nil || len(sess) != 0 {
		t.Fatalf("sessions = %+v, %v", sess, err)
	}
}

// testSessionEndsWithConfig: a config removed mid-session ends the session
// with the removal's reason; its session D comes right before the config's
// D, which carries the persisted totals plus the device's last counters.
func (su *suite) testSessionEndsWithConfig(t *testing.T) {
	ctx := context.Background()
	s, clk := su.newStore(t)
	p := mustCreate(t, s, staffPeer(1, "alice"))
	a := store.Activity{LastActive: clk.Now(), RxBase: 300, TxBase: 400, BytesIn: 10300, BytesOut: 20400, Endpoint: ep1,
		Session: store.OpenSession{Started: clk.Now(), BytesIn: 300, BytesOut: 400}}
	if _, err := s.SaveActivity(ctx, store.ActivityUpdate{Interface: "wg0",
		Configs: []store.ConfigActivity{{Key: p.PublicKey, Activity: a}},
		Changes: []store.SessionChange{{Key: p.PublicKey, Kind: store.SessionStart, At: clk.Now(), Endpoint: ep1, Session: a.Session}},
		Events:  true,
	}); err != nil {
		t.Fatal(err)
	}
	at := clk.Advance(time.Minute)
	evs, err := s.DeletePeers(ctx, []wgtypes.Key{p.PublicKey}, store.ReasonRevoked, "node/1", testClockFuture())
	if err != nil || len(evs) != 2 {
		t.Fatalf("DeletePeers = %+v, %v; want the session D and the config D", evs, err)
	}
	sd, cd := evs[0], evs[1]
	if sd.Scope != store.ScopeSession || sd.Kind != store.KindDisconnect || sd.Reason != store.ReasonRevoked ||
		sd.BytesIn != 300 || sd.BytesOut != 400 || sd.LeaseOwner != "node/1" || sd.ID > cd.ID {
		t.Fatalf("session D = %+v (config D %d)", sd, cd.ID)
	}
	if cd.Scope != store.ScopeConfig || cd.BytesIn != 10300 || cd.BytesOut != 20400 {
		t.Fatalf("config D = %+v; want the totals", cd)
	}
	// the device's counters: rx grew by 50 since the poll, tx was reset
	if err := setEventBytes(ctx, s, cd.ID, 350, 7); err != nil {
		t.Fatal(err)
	}
	got, err := s.ListEvents(ctx, store.EventFilter{PublicKey: &p.PublicKey, Kind: store.KindDisconnect})
	if err != nil || len(got) != 2 || got[0].ID != cd.ID || got[0].BytesIn != 10350 || got[0].BytesOut != 20407 {
		t.Fatalf("config D after SetEventsBytes = %+v, %v; want 10350/20407", got, err)
	}
	if err := setEventBytes(ctx, s, sd.ID, 1, 1); err == nil {
		t.Fatal("SetEventsBytes accepted a session D")
	}
	sess, err := s.ListClientSessions(ctx, store.ClientSessionFilter{})
	if err != nil || len(sess) != 1 || !sess[0].Ended.Equal(at) || sess[0].EndReason != store.ReasonRevoked {
		t.Fatalf("session after the removal = %+v, %v", sess, err)
	}
	// the config's log still pairs its own C and D
	if who, err := s.WhoHad(ctx, p.IPv4, at.Add(-time.Second)); err != nil || len(who) != 1 || who[0].D == nil || who[0].D.ID != cd.ID {
		t.Fatalf("WhoHad = %+v, %v", who, err)
	}
	// done session events are pruned like D events
	sc, err := s.ClaimDue(ctx, "node/1", clk.Now(), testClockFuture(), 10)
	if err != nil || len(sc) != 1 || sc[0].Scope != store.ScopeSession || sc[0].Kind != store.KindConnect {
		t.Fatalf("ClaimDue = %+v, %v; want the session C", sc, err)
	}
	for _, ev := range []store.Event{sc[0], sd, cd} {
		if err := s.MarkDone(ctx, ev.ID, "node/1"); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := s.PruneEvents(ctx, clk.Advance(time.Hour)); err != nil || n != 4 {
		t.Fatalf("PruneEvents = %d, %v; want all four events", n, err)
	}
}
