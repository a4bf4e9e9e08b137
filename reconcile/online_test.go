package reconcile

import (
	"context"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/config"
	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/wg"
)

func TestOnlineRule(t *testing.T) {
	o := Online{OfflineAfter: time.Minute, PollInterval: 10 * time.Second}
	open := func(started, lastActive float64) store.Activity {
		return store.Activity{LastActive: at(lastActive), Session: store.OpenSession{ID: 1, Started: at(started)}}
	}
	for _, tc := range []struct {
		name string
		a    store.Activity
		now  float64
		want bool
	}{
		{"never any activity", store.Activity{}, 0, false},
		{"activity, no session open", store.Activity{LastHandshake: at(-5), LastActive: at(-5)}, 0, false},
		{"session just opened", open(0, 0), 0, true},
		{"last activity recent", open(-600, -30), 0, true},
		{"last activity just inside offline_after + poll", open(-600, -69.999), 0, true},
		{"stale at offline_after + poll", open(-600, -70), 0, false},
		{"stale long after", open(-600, -3600), 0, false},
		{"no activity recorded but the start", store.Activity{Session: store.OpenSession{ID: 1, Started: at(-20)}}, 0, true},
		{"only the start, stale", store.Activity{Session: store.OpenSession{ID: 1, Started: at(-70)}}, 0, false},
		{"start counts when later than the activity", open(-20, -100), 0, true},
		{"both old", open(-100, -100), 0, false},
	} {
		if got := o.Config(tc.a, at(tc.now)); got != tc.want {
			t.Errorf("%s: Config = %v, want %v", tc.name, got, tc.want)
		}
	}
	for _, tc := range []struct {
		hs   time.Time
		want bool
	}{{time.Time{}, false}, {at(-59.999), true}, {at(-60), false}, {at(-1), true}} {
		if got := o.Orphan(wg.Peer{LastHandshake: tc.hs}, at(0)); got != tc.want {
			t.Errorf("orphan with handshake %v: Orphan = %v, want %v", tc.hs, got, tc.want)
		}
	}
	// the zero Online takes the configuration's defaults
	var zero Online
	window := config.DefaultOfflineAfter + config.DefaultPollInterval
	if !zero.Config(open(-600, 0), at(0).Add(window-time.Nanosecond)) || zero.Config(open(-600, 0), at(0).Add(window)) {
		t.Errorf("zero Online: not the default window %s", window)
	}
	if OnlineRule(config.Sessions{OfflineAfter: time.Minute, PollInterval: 10 * time.Second}) != o {
		t.Error("OnlineRule does not take the sessions configuration")
	}
	// CountDevice: configs by their session, other peers by handshake; a
	// config off the device does not count.
	k := func(b byte) wgtypes.Key { return wgtypes.Key{b} }
	d := &wg.Device{Peers: []wg.Peer{
		{PublicKey: k(1), LastHandshake: at(-500)}, // config online: its session is fresh
		{PublicKey: k(2), LastHandshake: at(-1)},   // config, no session: offline despite the handshake
		{PublicKey: k(3), LastHandshake: at(-1)},   // orphan, recent handshake
		{PublicKey: k(4), LastHandshake: at(-61)},  // orphan, old handshake
	}}
	acts := map[wgtypes.Key]store.Activity{k(1): open(-600, -5), k(2): {}, k(5): open(-10, -1)}
	if n := o.CountDevice(d, acts, at(0)); n != 2 {
		t.Errorf("CountDevice = %d, want 2", n)
	}
}

// Sessions online are counted by profile, every profile of the interface
// present: what wgkeeper_sessions_online exports.
func TestSessionsOnlineByProfile(t *testing.T) {
	h := newSessionHarness(t, `
[[profile]]
id = "guests"
interface = "$IFACE"
ipv4_range = "10.98.0.0/24"
`)
	alice := h.create("alice")
	gina := h.create("gina", func(r *CreateRequest) { r.ProfileID = "guests" })
	h.create("bob") // never talks
	if sp := h.poll(10 * time.Second); sp.Online != 0 || len(sp.OnlineByProfile) != 2 || sp.OnlineByProfile["staff"] != 0 || sp.OnlineByProfile["guests"] != 0 {
		t.Fatalf("poll before any client = %+v; want both profiles at 0", sp)
	}
	ca := h.connect(alice)
	defer ca.Close()
	cg := h.connect(gina)
	sp := h.poll(10 * time.Second)
	if sp.Online != 2 || sp.OnlineByProfile["staff"] != 1 || sp.OnlineByProfile["guests"] != 1 {
		t.Fatalf("poll with alice and gina talking = %+v", sp)
	}
	cg.Close()
	ctx, cancel := context.WithTimeout(h.ctx, 30*time.Second)
	defer cancel()
	for i := 0; sp.OnlineByProfile["guests"] != 0; i++ {
		if i == 20 {
			t.Fatalf("gina still online after %d polls: %+v", i, sp)
		}
		if err := ca.Ping(ctx); err != nil {
			t.Fatal(err)
		}
		sp = h.poll(10 * time.Second)
	}
	if sp.Online != 1 || len(sp.OnlineByProfile) != 2 || sp.OnlineByProfile["staff"] != 1 {
		t.Fatalf("poll after gina stopped = %+v; want staff 1, guests 0", sp)
	}
}

// A config deleted and created again with the same key between two polls
// starts from zero: the poll does not carry the old config's totals or
// session, kept in memory, into the new one. When the engine that polls
// made the changes, it knows; when another process did (a CLI command),
// the peer's counters on the device went back to zero and tell.
func TestSessionsCacheRecreatedConfig(t *testing.T) {
	for _, tc := range []struct {
		name  string
		other bool // another engine deletes and creates
		talks bool // the new config's client talks (more than the old one) before the poll
	}{{"same engine", false, true}, {"same engine, new client silent", false, false}, {"another engine", true, false}} {
		t.Run(tc.name, func(t *testing.T) {
			h := newSessionHarness(t, "")
			c := h.create("alice")
			cl := h.connect(c)
			ctx, cancel := context.WithTimeout(h.ctx, 30*time.Second)
			defer cancel()
			if err := cl.Ping(ctx); err != nil {
				t.Fatal(err)
			}
			if sp := h.poll(10 * time.Second); len(sp.Changes) != 1 || sp.Changes[0].Kind != store.SessionStart {
				t.Fatalf("first poll = %+v; want a start", sp)
			}
			if sp := h.poll(10 * time.Second); sp.Reloaded {
				t.Fatal("unchanged interface read from the store again")
			}
			key := c.Peer.PublicKey
			old, err := h.st.ListActivity(h.ctx, h.srv.Name)
			if err != nil || old[key].BytesIn == 0 || !old[key].SessionOpen() {
				t.Fatalf("activity before = %+v, %v", old[key], err)
			}
			cl.Close()
			eng := h.eng
			if tc.other {
				eng = h.newEngine(nil)
			}
			if _, err := eng.Delete(h.ctx, key); err != nil {
				t.Fatal(err)
			}
			again, err := eng.Create(h.ctx, CreateRequest{UserID: "alice", ProfileID: "staff", PublicKey: &key})
			if err != nil {
				t.Fatal(err)
			}
			if tc.talks {
				again.PrivateKey = c.PrivateKey
				cl2 := h.connect(again)
				defer cl2.Close()
				for range 10 {
					if err := cl2.Ping(ctx); err != nil {
						t.Fatal(err)
					}
				}
			}
			sp := h.poll(10 * time.Second)
			defer func() {
				if !sp.Reloaded {
					t.Errorf("poll after the config was created again = %+v; want a store read", sp)
				}
			}()
			acts, err := h.st.ListActivity(h.ctx, h.srv.Name)
			if err != nil {
				t.Fatal(err)
			}
			a := acts[key]
			p, _ := h.onDevice(key)
			if a.BytesIn > p.RxBytes || a.BytesOut > p.TxBytes {
				t.Fatalf("new config's totals in %d out %d, more than its peer's counters %d/%d: the old config's carried over",
					a.BytesIn, a.BytesOut, p.RxBytes, p.TxBytes)
			}
			if !tc.talks {
				if a.BytesIn != 0 || a.SessionOpen() {
					t.Fatalf("new config, silent client: activity %+v; want zero", a)
				}
				return
			}
			if len(sp.Changes) != 1 || sp.Changes[0].Kind != store.SessionStart || !a.SessionOpen() || a.Session.ID == old[key].Session.ID {
				t.Fatalf("new config's client talks: changes %+v, activity %+v; want a new session", sp.Changes, a)
			}
		})
	}
}
