package reconcile

import (
	"slices"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/wg"
)

// Session tracking, the pure part: from one config's activity as of the
// previous poll and one device read, the activity after this poll and the
// session changes it implies. Nothing here reads a clock, a device or the
// store; the daemon's poll loop feeds it and persists what it returns.
//
// The rules, for one config on one interface:
//
//   - Activity at a poll is a latest handshake newer than the one seen
//     before (compared in whole seconds, the precision every store keeps),
//     or a receive counter that grew. A handshake is activity at its own
//     time; receive growth is activity somewhere between the previous poll
//     and this one. Receive growth seen at the first poll of a process (no
//     previous poll) or over a gap between polls of offline_after or more
//     has no known time and only counts as traffic; so does a handshake
//     older than offline_after.
//   - A session starts at the first poll with activity, at the handshake's
//     time when the poll saw one (the client's real connect moment), else at
//     the poll, with the endpoint the device reports.
//   - It ends at the first poll that finds no activity for offline_after,
//     at the time of its last activity. Activity that cannot have followed
//     the last one within offline_after (polls were missed: the daemon was
//     down) ends the session at its last activity and starts a new one.
//   - A different endpoint during a session is roaming: recorded, the
//     session goes on.
//   - Traffic is taken as deltas of the device's counters against the
//     previous poll's; a counter lower than the last one seen (the
//     interface or the peer was recreated) starts a new base and counts
//     from zero. Totals therefore never decrease.

// The tracker's types are the store's: what it returns is what is
// persisted.
type (
	Activity      = store.Activity
	OpenSession   = store.OpenSession
	SessionKind   = store.SessionKind
	SessionChange = store.SessionChange
)

// The session changes.
const (
	SessionStart = store.SessionStart
	SessionRoam  = store.SessionRoam
	SessionEnd   = store.SessionEnd
)

// Poll is the time frame of one poll of an interface.
type Poll struct {
	// Prev is the previous poll of the interface by this process; zero for
	// the first one (then receive growth has no known time).
	Prev time.Time
	// Now is this poll's time.
	Now time.Time
	// OfflineAfter is sessions.offline_after (> 0).
	OfflineAfter time.Duration
}

// TrackPeer applies one poll to one config: prev is its activity as of the
// previous poll, obs the device's view of its peer (nil when the device has
// no such peer). It returns the new activity and the session changes, in
// order (an end comes before a start in the same poll). It is deterministic
// and never fails; times are returned in UTC.
func TrackPeer(prev Activity, obs *wg.Peer, p Poll) (Activity, []SessionChange) {
	now := p.Now.UTC()
	prevPoll := p.Prev.UTC()
	if p.Prev.IsZero() {
		prevPoll = time.Time{}
	}
	if !prevPoll.IsZero() && now.Before(prevPoll) {
		now = prevPoll // a clock stepped back: never go back in time
	}
	next := prev
	var dIn, dOut int64
	var hs time.Time // the new handshake's time, when there is one
	rxGrew := false
	if obs != nil {
		rx, tx := max(obs.RxBytes, 0), max(obs.TxBytes, 0)
		dIn, dOut = store.CounterDelta(prev.RxBase, rx), store.CounterDelta(prev.TxBase, tx)
		next.RxBase, next.TxBase = rx, tx
		next.BytesIn, next.BytesOut = store.SatAdd(prev.BytesIn, dIn), store.SatAdd(prev.BytesOut, dOut)
		rxGrew = dIn > 0
		if newerHandshake(obs.LastHandshake, prev.LastHandshake) {
			next.LastHandshake = obs.LastHandshake.UTC()
			hs = minTime(next.LastHandshake, now)
		}
		if obs.Endpoint.IsValid() {
			next.Endpoint = obs.Endpoint
		}
	}

	// last is the open session's last activity.
	last := maxTime(prev.LastActive, prev.Session.Started)
	// floor: no activity is placed before what was already seen.
	floor := maxTime(prevPoll, prev.LastActive)
	if !hs.IsZero() {
		hs = maxTime(hs, floor)
	}
	// earliest and latest bound this poll's activity; active says whether
	// there is activity with a known time.
	var earliest, latest time.Time
	active := false
	if rxGrew && !prevPoll.IsZero() && now.Sub(prevPoll) < p.OfflineAfter {
		earliest, latest, active = prevPoll, now, true
	}
	if !hs.IsZero() && now.Sub(hs) < p.OfflineAfter && !active {
		earliest, latest, active = hs, hs, true
	}

	var out []SessionChange
	if prev.SessionOpen() {
		switch {
		case active && earliest.Sub(last) < p.OfflineAfter:
			// the session goes on
		case active || now.Sub(last) >= p.OfflineAfter:
			out = append(out, SessionChange{Kind: SessionEnd, At: last, Endpoint: prev.Endpoint, Session: prev.Session})
			next.Session = OpenSession{}
		}
	}
	started := false
	if active {
		next.LastActive = maxTime(latest, prev.LastActive)
		if !next.SessionOpen() {
			start := now
			if !hs.IsZero() {
				start = hs // the client's connect moment
			}
			next.Session = OpenSession{Started: start} // the store numbers it
			out = append(out, SessionChange{Kind: SessionStart, At: start, Endpoint: next.Endpoint})
			started = true
		}
	}
	if next.SessionOpen() {
		if !started && next.Endpoint != prev.Endpoint && prev.Endpoint.IsValid() {
			out = append(out, SessionChange{Kind: SessionRoam, At: now, Endpoint: next.Endpoint})
		}
		next.Session.BytesIn = store.SatAdd(next.Session.BytesIn, dIn)
		next.Session.BytesOut = store.SatAdd(next.Session.BytesOut, dOut)
		// a start or roam reports the session as it stands after the poll
		for i := range out {
			if out[i].Kind != SessionEnd {
				out[i].Session = next.Session
			}
		}
	}
	return next, out
}

// EndSession ends the config's open session at at (the config went away:
// deleted, expired, revoked…), or at its last activity when that is later.
// ok is false when no session was open; then a is returned unchanged.
func EndSession(a Activity, at time.Time) (Activity, SessionChange, bool) {
	if !a.SessionOpen() {
		return a, SessionChange{}, false
	}
	end := maxTime(at.UTC(), a.LastActive)
	c := SessionChange{Kind: SessionEnd, At: end, Endpoint: a.Endpoint, Session: a.Session}
	a.Session = OpenSession{}
	return a, c, true
}

// Tracked is one config's activity after a poll.
type Tracked = store.ConfigActivity

// TrackSessions applies one poll to the configs of one interface: prev
// holds the activity of every config tracked on it (the zero Activity for
// a config not seen yet), dev is the device read of this poll. It returns
// the activity of the configs whose activity changed (sorted by key: only
// these need a store write) and every session change (sorted by key, in
// order per key). Device peers that are not in prev are not tracked.
func TrackSessions(prev map[wgtypes.Key]Activity, dev *wg.Device, p Poll) ([]Tracked, []SessionChange) {
	var changed []Tracked
	var changes []SessionChange
	seen := 0
	step := func(k wgtypes.Key, a Activity, obs *wg.Peer) {
		n, cs := TrackPeer(a, obs, p)
		if n != a {
			changed = append(changed, Tracked{Key: k, Activity: n})
		}
		for _, c := range cs {
			c.Key = k
			changes = append(changes, c)
		}
	}
	if dev != nil {
		for i := range dev.Peers {
			obs := &dev.Peers[i]
			if a, ok := prev[obs.PublicKey]; ok {
				seen++
				step(obs.PublicKey, a, obs)
			}
		}
	}
	if seen < len(prev) {
		for k, a := range prev {
			if dev == nil || !onDevice(dev, k) {
				step(k, a, nil)
			}
		}
	}
	slices.SortFunc(changed, func(a, b Tracked) int { return compareKeys(a.Key, b.Key) })
	slices.SortStableFunc(changes, func(a, b SessionChange) int { return compareKeys(a.Key, b.Key) })
	return changed, changes
}

// onDevice reports whether dev (peers sorted by key) has a peer with key k.
func onDevice(dev *wg.Device, k wgtypes.Key) bool {
	_, found := slices.BinarySearchFunc(dev.Peers, k, func(p wg.Peer, k wgtypes.Key) int { return compareKeys(p.PublicKey, k) })
	return found
}

func compareKeys(a, b wgtypes.Key) int {
	for i := range a {
		if a[i] != b[i] {
			if a[i] < b[i] {
				return -1
			}
			return 1
		}
	}
	return 0
}

// newerHandshake reports whether cur is a later handshake than last, in
// whole seconds: what every store keeps, so a value read back after a
// restart compares equal to the device's.
func newerHandshake(cur, last time.Time) bool {
	if cur.IsZero() {
		return false
	}
	return last.IsZero() || cur.Unix() > last.Unix()
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
