package reconcile

import (
	"fmt"
	"math"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/wg"
)

var sessT0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// at is sessT0 plus s seconds.
func at(s float64) time.Time { return sessT0.Add(time.Duration(s * float64(time.Second))) }

var (
	ep1 = netip.MustParseAddrPort("127.0.0.1:40001")
	ep2 = netip.MustParseAddrPort("192.0.2.7:5555")
)

// client models one WireGuard client as the server's device sees it.
type client struct {
	peer    wg.Peer
	present bool
}

func (c *client) handshake(t time.Time, ep netip.AddrPort) {
	c.peer.LastHandshake, c.peer.Endpoint = t, ep
	c.peer.RxBytes += 148 // the initiation
	c.peer.TxBytes += 92  // the response
}
func (c *client) send(n int64)  { c.peer.RxBytes += n }
func (c *client) recv(n int64)  { c.peer.TxBytes += n }
func (c *client) recreate()     { c.peer = wg.Peer{PublicKey: c.peer.PublicKey} } // interface recreated: counters and handshake zero
func (c *client) obs() *wg.Peer { p := c.peer; return ternary(c.present, &p, nil) }

func ternary[T any](c bool, a, b T) T {
	if c {
		return a
	}
	return b
}

// tracker runs TrackPeer poll after poll, like the daemon's loop, and keeps
// a transcript of the changes.
type tracker struct {
	a     Activity
	prev  time.Time
	off   time.Duration
	log   []string
	total []SessionChange
}

func newTracker() *tracker { return &tracker{off: 3 * time.Minute} }

func (tr *tracker) poll(t *testing.T, now time.Time, obs *wg.Peer) []SessionChange {
	t.Helper()
	next, cs := TrackPeer(tr.a, obs, Poll{Prev: tr.prev, Now: now, OfflineAfter: tr.off})
	checkStep(t, tr.a, next, cs, now)
	for _, c := range cs {
		tr.log = append(tr.log, describe(c))
	}
	tr.total = append(tr.total, cs...)
	tr.a, tr.prev = next, now
	return cs
}

// restart is a new daemon process: the activity as persisted, no previous
// poll.
func (tr *tracker) restart() { tr.prev = time.Time{} }

func describe(c SessionChange) string {
	s := fmt.Sprintf("%s@%s", c.Kind, c.At.Sub(sessT0))
	if c.Endpoint.IsValid() {
		s += " " + c.Endpoint.String()
	}
	if c.Kind == SessionEnd {
		s += fmt.Sprintf(" in=%d out=%d", c.Session.BytesIn, c.Session.BytesOut)
	}
	return s
}

// checkStep asserts what holds for every poll.
func checkStep(t *testing.T, prev, next Activity, cs []SessionChange, now time.Time) {
	t.Helper()
	if next.BytesIn < prev.BytesIn || next.BytesOut < prev.BytesOut {
		t.Fatalf("totals went down: %+v -> %+v", prev, next)
	}
	online := prev.SessionOpen()
	for _, c := range cs {
		switch c.Kind {
		case SessionStart:
			if online {
				t.Fatalf("start of an open session: %v", cs)
			}
			online = true
		case SessionRoam:
			if !online {
				t.Fatalf("roam without a session: %v", cs)
			}
		case SessionEnd:
			if !online {
				t.Fatalf("end without a start: %v", cs)
			}
			if c.At.Before(prev.Session.Started) {
				t.Fatalf("session ends at %v before its start %v", c.At, prev.Session.Started)
			}
			online = false
		}
		if c.At.After(now) {
			t.Fatalf("change %v after the poll %v", describe(c), now)
		}
	}
	if online != next.SessionOpen() {
		t.Fatalf("changes %v leave online=%v, activity says %v", cs, online, next.SessionOpen())
	}
	if next.SessionOpen() {
		if now.Sub(next.LastActive) >= 3*time.Minute && next.LastActive.After(prev.LastActive) {
			t.Fatalf("session open on activity older than offline_after: %+v", next)
		}
		if next.Session.BytesIn > next.BytesIn || next.Session.BytesOut > next.BytesOut {
			t.Fatalf("session bytes beyond the totals: %+v", next)
		}
	}
}

func joined(l []string) string { return strings.Join(l, "; ") }

func TestTrackConnectTrafficDisconnect(t *testing.T) {
	tr := newTracker()
	c := &client{peer: wg.Peer{}, present: true}
	tr.poll(t, at(0), c.obs()) // config added, client not there yet
	c.handshake(at(4), ep1)
	c.send(1000)
	c.recv(5000)
	tr.poll(t, at(10), c.obs())
	for s := 20.0; s <= 100; s += 10 {
		c.send(100)
		tr.poll(t, at(s), c.obs())
	}
	// the client stops after the poll at 100: silence from then on
	for s := 110.0; s < 280; s += 10 {
		tr.poll(t, at(s), c.obs())
	}
	if got, want := joined(tr.log), "start@4s 127.0.0.1:40001"; got != want {
		t.Fatalf("before offline_after: %s, want %s", got, want)
	}
	tr.poll(t, at(280), c.obs())
	want := "start@4s 127.0.0.1:40001; end@1m40s 127.0.0.1:40001 in=2048 out=5092"
	if got := joined(tr.log); got != want {
		t.Fatalf("got %s\nwant %s", got, want)
	}
	if tr.a.BytesIn != 2048 || tr.a.BytesOut != 5092 || tr.a.SessionOpen() {
		t.Fatalf("activity after the end: %+v", tr.a)
	}
	if !tr.a.LastHandshake.Equal(at(4)) || !tr.a.LastActive.Equal(at(100)) {
		t.Fatalf("last handshake %v, last active %v", tr.a.LastHandshake, tr.a.LastActive)
	}
	// nothing more while nothing happens
	for s := 290.0; s < 1000; s += 10 {
		if cs := tr.poll(t, at(s), c.obs()); len(cs) > 0 {
			t.Fatalf("changes while idle: %v", tr.log)
		}
	}
	// the client comes back: a new session
	c.handshake(at(1003), ep2)
	tr.poll(t, at(1010), c.obs())
	if got := tr.log[len(tr.log)-1]; got != "start@16m43s 192.0.2.7:5555" {
		t.Fatalf("second session: %s", got)
	}
}

// WireGuard re-handshakes every 2 minutes while traffic flows and not at all
// while idle; keepalives move the receive counter. None of that may flap.
func TestTrackNoFlapping(t *testing.T) {
	for _, tc := range []struct {
		name      string
		keepalive float64 // seconds between keepalives (0 = none)
		talk      float64 // seconds between bursts of data (0 = none)
		poll      float64
	}{
		{"keepalive 25s, poll 10s", 25, 0, 10},
		{"keepalive 25s, poll 1s", 25, 0, 1},
		{"keepalive 25s, poll 90s", 25, 0, 90},
		{"keepalive 120s, poll 10s", 120, 0, 10},
		{"data every 170s, no keepalive, poll 10s", 0, 170, 10},
		{"data every 2s, poll 10s", 0, 2, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTracker()
			c := &client{present: true}
			c.handshake(at(0.5), ep1)
			nextHS, nextKA, nextTalk := 120.5, tc.keepalive, tc.talk
			for now := tc.poll; now <= 2*3600; now += tc.poll {
				// the client's life up to this poll
				for {
					ev := math.Min(nextHS, math.Min(ternary(tc.keepalive > 0, nextKA, math.Inf(1)), ternary(tc.talk > 0, nextTalk, math.Inf(1))))
					if ev > now {
						break
					}
					switch ev {
					case nextHS:
						c.handshake(at(ev), ep1) // rekey while the session is used
						nextHS += 120
					case nextKA:
						c.send(32)
						nextKA += tc.keepalive
					case nextTalk:
						c.send(1400)
						c.recv(1400)
						nextTalk += tc.talk
					}
				}
				tr.poll(t, at(now), c.obs())
			}
			if got, want := joined(tr.log), "start@500ms 127.0.0.1:40001"; got != want {
				t.Fatalf("got %s, want one start and nothing else", got)
			}
		})
	}
}

func TestTrackRoaming(t *testing.T) {
	tr := newTracker()
	c := &client{present: true}
	c.handshake(at(1), ep1)
	tr.poll(t, at(10), c.obs())
	c.send(10)
	c.peer.Endpoint = ep2 // NAT rebinding: the same session from elsewhere
	tr.poll(t, at(20), c.obs())
	c.send(10)
	tr.poll(t, at(30), c.obs())
	want := "start@1s 127.0.0.1:40001; roam@20s 192.0.2.7:5555"
	if got := joined(tr.log); got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	if tr.a.Endpoint != ep2 || !tr.a.SessionOpen() {
		t.Fatalf("activity %+v", tr.a)
	}
	// a device that loses the endpoint (recreated) is no roam
	c.recreate()
	tr.poll(t, at(40), c.obs())
	if len(tr.log) != 2 || tr.a.Endpoint != ep2 {
		t.Fatalf("after a reset: %s, endpoint %v", joined(tr.log), tr.a.Endpoint)
	}
	for s := 50.0; s <= 230; s += 10 {
		tr.poll(t, at(s), c.obs())
	}
	if got := tr.log[len(tr.log)-1]; got != "end@30s 192.0.2.7:5555 in=168 out=92" {
		t.Fatalf("end: %s", got)
	}
}

// The interface is recreated (counters and handshake back to zero) while
// the client keeps talking: one session, totals keep growing from a new
// base.
func TestTrackCounterReset(t *testing.T) {
	tr := newTracker()
	c := &client{present: true}
	c.handshake(at(1), ep1)
	c.send(5000)
	c.recv(7000)
	tr.poll(t, at(10), c.obs())
	c.send(100)
	tr.poll(t, at(20), c.obs())
	c.recreate()
	tr.poll(t, at(30), c.obs()) // zero counters, no handshake yet
	c.handshake(at(33), ep1)
	c.send(300)
	tr.poll(t, at(40), c.obs())
	c.send(1)
	tr.poll(t, at(50), c.obs())
	if got, want := joined(tr.log), "start@1s 127.0.0.1:40001"; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	wantIn, wantOut := int64(148+5000+100+148+300+1), int64(92+7000+92)
	if tr.a.BytesIn != wantIn || tr.a.BytesOut != wantOut {
		t.Fatalf("totals %d/%d, want %d/%d", tr.a.BytesIn, tr.a.BytesOut, wantIn, wantOut)
	}
	if tr.a.Session.BytesIn != wantIn || tr.a.Session.BytesOut != wantOut {
		t.Fatalf("session bytes %+v, want %d/%d", tr.a.Session, wantIn, wantOut)
	}
	if tr.a.RxBase != 449 || tr.a.TxBase != 92 {
		t.Fatalf("bases %d/%d", tr.a.RxBase, tr.a.TxBase)
	}
	if !tr.a.LastHandshake.Equal(at(33)) {
		t.Fatalf("last handshake %v", tr.a.LastHandshake)
	}
	// a counter that is reset and at once higher than the old base cannot
	// be told from growth; lower is always a reset.
	n, _ := TrackPeer(Activity{RxBase: 10, TxBase: 10}, &wg.Peer{RxBytes: 3, TxBytes: 10}, Poll{Prev: at(0), Now: at(10), OfflineAfter: time.Minute})
	if n.BytesIn != 3 || n.BytesOut != 0 || n.RxBase != 3 {
		t.Fatalf("reset to 3: %+v", n)
	}
}

// A restarted daemon starts from the persisted activity with no previous
// poll.
func TestTrackDaemonRestart(t *testing.T) {
	// before: a session that is going on
	run := func(t *testing.T) (*tracker, *client) {
		tr := newTracker()
		c := &client{present: true}
		c.handshake(at(1), ep1)
		for s := 10.0; s <= 60; s += 10 {
			c.send(64)
			tr.poll(t, at(s), c.obs())
		}
		return tr, c
	}
	t.Run("interface recreated, client keeps talking", func(t *testing.T) {
		tr, c := run(t)
		in := tr.a.BytesIn
		tr.restart()
		c.recreate()
		c.handshake(at(66), ep1)
		c.send(10)
		tr.poll(t, at(70), c.obs())
		for s := 80.0; s <= 600; s += 10 {
			c.send(64)
			tr.poll(t, at(s), c.obs())
		}
		if got, want := joined(tr.log), "start@1s 127.0.0.1:40001"; got != want {
			t.Fatalf("got %s, want no second start", got)
		}
		if want := in + 148 + 10 + 53*64; tr.a.BytesIn != want {
			t.Fatalf("total in %d, want %d (pre-restart traffic kept)", tr.a.BytesIn, want)
		}
	})
	t.Run("interface kept, keepalive only", func(t *testing.T) {
		tr, c := run(t)
		tr.restart()
		for s := 75.0; s <= 600; s += 10 {
			c.send(32)
			tr.poll(t, at(s), c.obs())
		}
		if got, want := joined(tr.log), "start@1s 127.0.0.1:40001"; got != want {
			t.Fatalf("got %s, want no second start", got)
		}
	})
	t.Run("client left during the downtime", func(t *testing.T) {
		tr, c := run(t)
		tr.restart()
		c.recreate()
		tr.poll(t, at(3600), c.obs())
		if got, want := joined(tr.log), "start@1s 127.0.0.1:40001; end@1m0s 127.0.0.1:40001 in=532 out=92"; got != want {
			t.Fatalf("got %s, want %s", got, want)
		}
	})
	t.Run("client came back late in the downtime", func(t *testing.T) {
		tr, c := run(t)
		tr.restart()
		c.recreate()
		c.handshake(at(3550), ep2)
		c.send(10)
		tr.poll(t, at(3600), c.obs())
		want := "start@1s 127.0.0.1:40001; end@1m0s 127.0.0.1:40001 in=532 out=92; start@59m10s 192.0.2.7:5555"
		if got := joined(tr.log); got != want {
			t.Fatalf("got %s\nwant %s", got, want)
		}
	})
	t.Run("receive growth across the downtime has no known time", func(t *testing.T) {
		tr, c := run(t)
		tr.poll(t, at(300), c.obs()) // the session ends at 60
		tr.restart()
		c.send(1000) // sometime in the downtime
		tr.poll(t, at(3600), c.obs())
		if got, want := joined(tr.log), "start@1s 127.0.0.1:40001; end@1m0s 127.0.0.1:40001 in=532 out=92"; got != want {
			t.Fatalf("got %s, want %s", got, want)
		}
		if tr.a.BytesIn != 532+1000 {
			t.Fatalf("total in %d: the traffic still counts", tr.a.BytesIn)
		}
	})
	t.Run("handshake time read back in whole seconds", func(t *testing.T) {
		tr, c := run(t)
		tr.poll(t, at(300), c.obs()) // ended
		tr.a.LastHandshake = tr.a.LastHandshake.Truncate(time.Second)
		c.peer.LastHandshake = at(1.75)
		tr.restart()
		tr.poll(t, at(310), c.obs())
		if len(tr.log) != 2 {
			t.Fatalf("a handshake seen before the restart starts a session: %s", joined(tr.log))
		}
	})
}

// The first poll ever of an interface (an upgrade, a new node) finds peers
// with old handshakes and large counters: no session without recent
// evidence.
func TestTrackFirstPollEver(t *testing.T) {
	tr := newTracker()
	c := &client{present: true}
	c.handshake(at(0), ep1)
	c.send(1 << 20)
	tr.poll(t, at(3600), c.obs())
	if len(tr.log) != 0 {
		t.Fatalf("stale evidence started a session: %s", joined(tr.log))
	}
	if tr.a.BytesIn != 148+1<<20 {
		t.Fatalf("total in %d", tr.a.BytesIn)
	}
	// a recent handshake is evidence
	tr2 := newTracker()
	c.handshake(at(3590), ep1)
	tr2.poll(t, at(3600), c.obs())
	if got, want := joined(tr2.log), "start@59m50s 127.0.0.1:40001"; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func TestTrackPeerMissingFromDevice(t *testing.T) {
	tr := newTracker()
	c := &client{present: true}
	c.handshake(at(1), ep1)
	tr.poll(t, at(10), c.obs())
	c.present = false // removed by hand
	for s := 20.0; s <= 200; s += 10 {
		tr.poll(t, at(s), c.obs())
	}
	if got, want := joined(tr.log), "start@1s 127.0.0.1:40001; end@1s 127.0.0.1:40001 in=148 out=92"; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	// re-added by reconcile: zero counters, a fresh base
	c.present = true
	c.peer.RxBytes, c.peer.TxBytes = 0, 0
	tr.poll(t, at(210), c.obs())
	if len(tr.log) != 2 || tr.a.RxBase != 0 || tr.a.BytesIn != 148 {
		t.Fatalf("after re-add: %s, %+v", joined(tr.log), tr.a)
	}
}

// A poll gap (the daemon was stopped or starved) of offline_after or more
// with a handshake late in it: the old session ended before the gap was
// over, whatever the receive counter did meanwhile.
func TestTrackPollGap(t *testing.T) {
	tr := newTracker()
	c := &client{present: true}
	c.handshake(at(1), ep1)
	tr.poll(t, at(10), c.obs())
	c.send(10)
	tr.poll(t, at(20), c.obs())
	c.send(10)
	c.handshake(at(250), ep1)
	tr.poll(t, at(260), c.obs())
	want := "start@1s 127.0.0.1:40001; end@20s 127.0.0.1:40001 in=158 out=92; start@4m10s 127.0.0.1:40001"
	if got := joined(tr.log); got != want {
		t.Fatalf("got %s\nwant %s", got, want)
	}
	// a shorter gap: the growth may have come right after the last poll,
	// within offline_after of the last activity: one session
	tr = newTracker()
	c = &client{present: true}
	c.handshake(at(1), ep1)
	tr.poll(t, at(10), c.obs())
	tr.poll(t, at(100), c.obs())
	c.send(10)
	c.handshake(at(250), ep1)
	tr.poll(t, at(260), c.obs())
	if got, want := joined(tr.log), "start@1s 127.0.0.1:40001"; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func TestTrackClockStepsBack(t *testing.T) {
	tr := newTracker()
	c := &client{present: true}
	c.handshake(at(1), ep1)
	tr.poll(t, at(100), c.obs())
	c.send(5)
	tr.poll(t, at(50), c.obs())
	if tr.a.LastActive.Before(at(100)) || len(tr.log) != 1 {
		t.Fatalf("%s, %+v", joined(tr.log), tr.a)
	}
}

func TestEndSession(t *testing.T) {
	a := Activity{LastActive: at(50), Endpoint: ep1, Session: OpenSession{Started: at(1), BytesIn: 10, BytesOut: 20}}
	n, c, ok := EndSession(a, at(60))
	if !ok || n.SessionOpen() || c.Kind != SessionEnd || !c.At.Equal(at(60)) || c.Session != a.Session || c.Endpoint != ep1 {
		t.Fatalf("EndSession = %+v, %+v, %v", n, c, ok)
	}
	if _, _, ok := EndSession(n, at(70)); ok {
		t.Fatal("ended a session that is not open")
	}
}

func TestTrackSessions(t *testing.T) {
	keys := make([]wgtypes.Key, 4)
	for i := range keys {
		keys[i][0] = byte(4 - i) // device order differs from creation order
	}
	dev := &wg.Device{Peers: []wg.Peer{
		{PublicKey: keys[3], LastHandshake: at(5), Endpoint: ep1, RxBytes: 100},
		{PublicKey: keys[2]}, // never connected
		{PublicKey: keys[0], LastHandshake: at(6), Endpoint: ep2, RxBytes: 5}, // connected
		{PublicKey: wgtypes.Key{9}, LastHandshake: at(9), RxBytes: 1},         // not tracked: an orphan
	}}
	slicesSortPeers(dev.Peers)
	prev := map[wgtypes.Key]Activity{
		keys[0]: {},
		keys[1]: {LastActive: at(-100), Session: OpenSession{Started: at(-200)}}, // not on the device, ran out
		keys[2]: {},
		keys[3]: {RxBase: 100, LastHandshake: at(5), LastActive: at(5), Endpoint: ep1, Session: OpenSession{Started: at(5)}}, // unchanged
	}
	changed, cs := TrackSessions(prev, dev, Poll{Prev: at(0), Now: at(10), OfflineAfter: time.Minute})
	var got []string
	for _, c := range cs {
		got = append(got, fmt.Sprintf("%d:%s", c.Key[0], describe(c)))
	}
	want := "3:end@-1m40s in=0 out=0; 4:start@6s 192.0.2.7:5555"
	if g := joined(got); g != want {
		t.Fatalf("changes %s, want %s", g, want)
	}
	if len(changed) != 2 || changed[0].Key != keys[1] || changed[1].Key != keys[0] {
		t.Fatalf("changed %+v: want the two configs whose activity moved, by key", changed)
	}
	if _, cs := TrackSessions(map[wgtypes.Key]Activity{keys[0]: {}}, nil, Poll{Prev: at(0), Now: at(10), OfflineAfter: time.Minute}); len(cs) != 0 {
		t.Fatal("changes without a device")
	}
}

func slicesSortPeers(ps []wg.Peer) {
	for i := range ps {
		for j := i + 1; j < len(ps); j++ {
			if compareKeys(ps[j].PublicKey, ps[i].PublicKey) < 0 {
				ps[i], ps[j] = ps[j], ps[i]
			}
		}
	}
}

// FuzzTrackPeer drives one config through arbitrary device readings and
// polls: a session never ends without a start, never starts twice, the
// totals never decrease, session bytes never exceed them, and no change is
// dated after its poll or before the session's start.
func FuzzTrackPeer(f *testing.F) {
	f.Add([]byte{0, 10, 1, 10, 2, 200, 3, 5, 4, 10})
	f.Add([]byte{1, 1, 2, 255, 2, 255, 5, 0, 1, 3, 6, 6})
	f.Add([]byte("restart-roam-reset-gap"))
	f.Fuzz(func(t *testing.T, ops []byte) {
		tr := newTracker()
		tr.off = time.Duration(30+int(len(ops)%5)*30) * time.Second
		c := &client{present: true}
		now := sessT0
		var started []SessionChange
		for i := 0; i+1 < len(ops); i += 2 {
			arg := int(ops[i+1])
			switch ops[i] % 8 {
			case 0: // time passes, then a poll
				now = now.Add(time.Duration(arg) * time.Second)
				tr.poll(t, now, c.obs())
			case 1: // a handshake some seconds ago
				c.handshake(now.Add(-time.Duration(arg%64)*time.Second), ternary(arg%2 == 0, ep1, ep2))
			case 2: // data
				c.send(int64(arg) * 1000)
				c.recv(int64(arg))
			case 3: // interface recreated
				c.recreate()
			case 4: // daemon restart
				tr.restart()
			case 5: // peer missing / back
				c.present = !c.present
			case 6: // roaming
				c.peer.Endpoint = netip.AddrPortFrom(ep2.Addr(), uint16(arg))
			case 7: // huge counters
				c.peer.RxBytes, c.peer.TxBytes = math.MaxInt64-int64(arg), math.MaxInt64
			}
		}
		for _, ch := range tr.total {
			switch ch.Kind {
			case SessionStart:
				if n := len(started); n > 0 && started[n-1].Kind == SessionEnd && ch.At.Before(started[n-1].At) {
					t.Fatalf("a session starts at %v before the previous one ended at %v", ch.At, started[n-1].At)
				}
				started = append(started, ch)
			case SessionEnd:
				started = append(started, ch)
			}
		}
	})
}
