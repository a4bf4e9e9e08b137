package store

import (
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Event scopes: which script an event is for.
const (
	// ScopeConfig: a config's lifecycle (C at creation, D at removal), for
	// hooks.script.
	ScopeConfig = "config"
	// ScopeSession: a session of a config (C when its client starts
	// talking, D when it stops), for sessions.script.
	ScopeSession = "session"
)

// Session reasons (the VPN_REASON of session events).
const (
	ReasonHandshake = "handshake" // session C: the client started talking
	ReasonOffline   = "offline"   // session D: silent for offline_after
)

// Activity is what session tracking keeps of one config between polls of
// its interface. The zero value (but its ProfileID) is a config never seen
// active.
type Activity struct {
	// ProfileID is the config's profile, as ListActivity read it;
	// SaveActivity does not write it.
	ProfileID string
	// LastHandshake is the latest handshake seen for the config, kept across
	// counter resets and restarts (zero = never).
	LastHandshake time.Time
	// LastActive is the time of the last activity seen (zero = never); an
	// open session ends here.
	LastActive time.Time
	// RxBase and TxBase are the device's counters as of the last read that
	// found the peer: the base of the next deltas (>= 0).
	RxBase, TxBase int64
	// BytesIn and BytesOut are the config's cumulative traffic received from
	// and sent to the client, across counter resets and restarts (>= 0).
	BytesIn, BytesOut int64
	// Endpoint is the last endpoint the device reported (zero = none yet).
	Endpoint netip.AddrPort
	// Session is the open session; its zero value means none.
	Session OpenSession
}

// SessionOpen reports whether a session is open. Whether the config counts
// as online is reconcile.Online's to say (an open session can be stale).
func (a Activity) SessionOpen() bool { return !a.Session.Started.IsZero() }

// OpenSession is the part of Activity that belongs to an open session.
type OpenSession struct {
	// ID is the session's id in the store (0 until it is stored).
	ID int64
	// Started is when the session started; zero = no session is open.
	Started time.Time
	// BytesIn and BytesOut are the session's traffic so far.
	BytesIn, BytesOut int64
}

// SessionKind is what happened to a session at a poll.
type SessionKind int

// The session changes.
const (
	SessionStart SessionKind = iota + 1
	SessionRoam
	SessionEnd
)

// String returns "start", "roam" or "end".
func (k SessionKind) String() string {
	switch k {
	case SessionStart:
		return "start"
	case SessionRoam:
		return "roam"
	case SessionEnd:
		return "end"
	}
	return "SessionKind(?)"
}

// SessionChange is one change of one config's session.
type SessionChange struct {
	Key  wgtypes.Key
	Kind SessionKind
	// At is the session's start (start), the poll that saw the new endpoint
	// (roam), or the last activity of the session (end: its end time).
	At time.Time
	// Endpoint is the first endpoint (start), the new one (roam), or the
	// last one (end). It may be zero when the device reported none.
	Endpoint netip.AddrPort
	// Session is the session after the change; for an end, the session
	// that ended, with its final bytes.
	Session OpenSession
}

// ConfigActivity is one config's activity to persist.
type ConfigActivity struct {
	Key      wgtypes.Key
	Activity Activity
}

// ActivityUpdate is what one poll of one interface writes.
type ActivityUpdate struct {
	Interface string
	// Configs are the configs whose activity changed.
	Configs []ConfigActivity
	// Changes are the session changes of the poll, in order per config.
	Changes []SessionChange
	// Events records a session C event (reason handshake) at every start
	// and a session D event (reason offline) at every end of a session
	// whose start was recorded, in the outbox, for sessions.script.
	Events bool
}

// ClientSession is one recorded session of a config.
type ClientSession struct {
	ID        int64
	PublicKey wgtypes.Key
	Interface string
	ProfileID string
	UserID    string
	IPv4      netip.Addr
	IPv6      netip.Addr
	Started   time.Time
	Ended     time.Time // zero: still open
	// EndReason is offline, or the reason the config went away.
	EndReason string
	// Endpoints are every endpoint seen, in order; the first is where the
	// session started from.
	Endpoints         []netip.AddrPort
	BytesIn, BytesOut int64
}

// Endpoint returns the endpoint the session started from (zero: none).
func (s ClientSession) Endpoint() netip.AddrPort {
	if len(s.Endpoints) == 0 {
		return netip.AddrPort{}
	}
	return s.Endpoints[0]
}

// LastEndpoint returns the last endpoint seen (zero: none).
func (s ClientSession) LastEndpoint() netip.AddrPort {
	if len(s.Endpoints) == 0 {
		return netip.AddrPort{}
	}
	return s.Endpoints[len(s.Endpoints)-1]
}

// ClientSessionFilter selects sessions; zero fields match everything.
type ClientSessionFilter struct {
	PublicKey *wgtypes.Key
	UserID    string
	// At, when set, keeps the sessions open at that instant: started at or
	// before it, and not ended or ended at or after it.
	At    time.Time
	Limit int // 0 = no limit
}
