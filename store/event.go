package store

import (
	"math"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Event kinds.
const (
	KindConnect    = "C"
	KindDisconnect = "D"
)

// Event reasons.
const (
	ReasonCreated = "created" // C
	ReasonDeleted = "deleted" // D: removed through the API or CLI
	ReasonExpired = "expired" // D: expires_at passed
	ReasonRevoked = "revoked" // D: all of a user's configs removed
	ReasonStale   = "stale"   // D: a pending row outlived its connect script
	ReasonFailed  = "failed"  // D: the device refused the peer after a successful connect script
	ReasonIdle    = "idle"    // D: no handshake for the profile's idle_expiry
)

// Event delivery statuses.
const (
	// StatusRunning: a C event while its connect script runs; the outbox
	// never claims it.
	StatusRunning = "running"
	// StatusPending: a D event waiting for (another) delivery attempt.
	StatusPending = "pending"
	StatusDone    = "done"
	// StatusFailed: delivery gave up after the maximum attempts; RetryEvent
	// and RetryFailed put it back.
	StatusFailed = "failed"
)

// MaxErrorLen bounds the stored last_error; longer messages are cut.
const MaxErrorLen = 4096

// Event is one C or D event: an outbox entry and a line of the connection
// log. The peer's identity is a copy taken when the event was recorded.
type Event struct {
	// ID is unique and never reused; ids increase in the order events are
	// recorded, but with many writers (PostgreSQL) not in the order they
	// commit: a transaction may commit after one that took a higher id.
	// The events of one config are the exception: they are recorded under
	// its row's lock, so its C, session and D events commit in id order.
	// A reader that remembers the highest id it saw may later find a
	// lower one it did not see (see EventFilter.AfterID).
	ID            int64
	Kind          string // KindConnect or KindDisconnect
	Reason        string // created, deleted, expired, revoked, stale, failed
	PublicKey     wgtypes.Key
	Interface     string
	ProfileID     string
	UserID        string
	IPv4          netip.Addr
	IPv6          netip.Addr
	OriginatingIP netip.Addr
	ExpiresAt     time.Time // the peer's expiry; zero = never
	BytesIn       int64     // D only: received from the peer
	BytesOut      int64     // D only: sent to the peer
	CreatedAt     time.Time
	Status        string // running, pending, done, failed
	Attempts      int
	NextAttemptAt time.Time // zero: not scheduled
	LastError     string
	DoneAt        time.Time // zero: not done
	LeaseOwner    string    // empty: not leased
	LeaseUntil    time.Time
	// StartedAt is when the connect script of a C event was started; zero
	// when it never was (D events: always zero).
	StartedAt time.Time
	// Actor is who made the change: "api:admin@ADDRESS", "api:read@ADDRESS",
	// "cli:UID" or "daemon"; empty when not recorded (events written
	// before schema version 3, or by a caller that named no actor).
	Actor string
	// Scope is ScopeConfig (the config's lifecycle, for hooks.script) or
	// ScopeSession (a session of the config, for sessions.script).
	Scope string
	// SessionID is the session of a session event (0 for config events).
	SessionID int64
	// RxBase and TxBase are, in a config's D, the device counters its
	// traffic totals (BytesIn, BytesOut as recorded) were last brought up
	// to: SetEventsBytes adds counters as deltas against them.
	RxBase, TxBase int64
}

// AddCounters returns the event's traffic with the device's counters in
// and out added as deltas against RxBase and TxBase (a counter below its
// base was reset and counts whole), saturating: what SetEventsBytes
// stores.
func (e Event) AddCounters(in, out int64) (int64, int64) {
	return SatAdd(e.BytesIn, CounterDelta(e.RxBase, in)), SatAdd(e.BytesOut, CounterDelta(e.TxBase, out))
}

// CounterDelta is how much a device byte counter grew from base to cur; a
// counter below its base was reset (the peer was re-added), and everything
// it holds is new.
func CounterDelta(base, cur int64) int64 {
	if cur < base {
		return cur
	}
	return cur - base
}

// SatAdd adds two non-negative byte counts, saturating at math.MaxInt64.
func SatAdd(a, b int64) int64 {
	if b > math.MaxInt64-a {
		return math.MaxInt64
	}
	return a + b
}

// EventBytes are the byte counters of one D event.
type EventBytes struct {
	ID      int64
	In, Out int64
}

// EventFilter selects events; zero fields match everything.
type EventFilter struct {
	Status    string // running, pending, done, failed
	Kind      string // C or D
	UserID    string
	PublicKey *wgtypes.Key
	Limit     int // 0 = no limit
	// AfterID selects only id > AfterID. It bounds a range of known ids;
	// it is no cursor for following new events (Event.ID: an event with
	// a lower id may commit later).
	AfterID int64
	// BeforeID selects only id < BeforeID (page back through older
	// events). A page walk does not show an event that commits after it
	// passed that event's id; a walk started later does.
	BeforeID int64
}

// Session is one holding of an address by a config: its C event, and its D
// event once it ended (nil while the config still exists).
type Session struct {
	C Event
	D *Event
}
