package store

import (
	"context"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Store is the database as the lifecycle uses it: the desired state of
// every peer, the address allocator, and the event outbox that doubles as
// the connection log. A backend is safe for concurrent use, and several
// handles (in one or several processes) may share one database; every
// guarantee below holds across them.
//
// Errors are wrapped with the operation and its subject and match the
// sentinels of this package with errors.Is. Any method may also fail with
// an error matching ErrUnavailable (an *UnavailableError naming the cause)
// when the database cannot be used for a reason outside wgkeeper; a Fatal
// one is never cleared, and the handle then refuses every write and the
// reads the lifecycle relies on.
//
// Times are UTC; a zero time means "none" (never expires, not scheduled,
// not done). The store's own clock (set when a backend is opened) stamps
// created_at, done_at and decides what "now" means where no time is
// passed in.
type Store interface {
	// InsertPending creates a peer in state pending together with its C
	// event (reason created, status running: the outbox never delivers
	// it; the caller runs the connect script and then calls Activate or
	// RejectPending). It checks the per-user limit, allocates the lowest
	// free host index of the profile (IPv4 and IPv6 paired: index i is
	// HostAddr(range, i) in both) skipping the indexes of np.Avoid, and
	// inserts both rows, atomically: concurrent inserts, in any process,
	// never exceed the limit nor share an address. On error nothing is
	// written.
	//
	// Errors: ErrConflict if the key is already stored (for any user: the
	// caller inspects GetPeer to tell an idempotent retry from a conflict)
	// or an allocated address is taken on the interface (overlapping
	// profiles); ErrLimitReached when the user already holds MaxPerUser
	// peers in the interface and profile; ErrPoolExhausted when no index
	// is free; a plain error when np does not pass NewPeer.Validate.
	InsertPending(ctx context.Context, np NewPeer) (Peer, Event, error)
	// Activate marks a pending peer active and its C event (cEventID,
	// status running) done, atomically, after the connect script accepted
	// it. Calling it again for an active peer whose C event is done is a
	// no-op. Errors: ErrNotFound if the peer or event does not exist;
	// ErrConflict if the event is not this peer's running C event.
	Activate(ctx context.Context, key wgtypes.Key, cEventID int64) error
	// RejectPending removes a pending peer and its running C event
	// (cEventID) atomically, after the connect script refused it; its
	// addresses become free. Errors: ErrNotFound if the peer or event does
	// not exist; ErrConflict if the peer is active or the event is not its
	// running C event. Nothing is changed on error.
	RejectPending(ctx context.Context, key wgtypes.Key, cEventID int64) error
	// MarkConnectStarted records, in the running C event cEventID of a
	// pending peer, that its connect script is about to start; the engine
	// calls it right before starting the script. Calling it again changes
	// nothing. Errors: ErrNotFound when the peer or the event no longer
	// exists (the script must then not run); ErrConflict when the peer is
	// not pending or the event is not its running C event.
	MarkConnectStarted(ctx context.Context, key wgtypes.Key, cEventID int64) error
	// CancelHeldDisconnect deletes the D events of key that DeletePeers
	// held back (unleased, never attempted) because the config was
	// removed while its connect script ran or waited to start; the engine
	// calls it when that script then refused the config or never started.
	// A C event of key whose script never started goes too. It returns
	// how many D events were deleted.
	CancelHeldDisconnect(ctx context.Context, key wgtypes.Key) (int, error)
	// GetPeer returns the peer with this key. Errors: ErrNotFound.
	GetPeer(ctx context.Context, key wgtypes.Key) (Peer, error)
	// ListPeers returns the peers matching f, ordered by interface,
	// profile and host index (by address within a profile). An unknown
	// f.State is an error.
	ListPeers(ctx context.Context, f PeerFilter) ([]Peer, error)
	// CountPeers counts peers per interface, profile and state, ordered by
	// those three; combinations without peers are absent.
	CountPeers(ctx context.Context) ([]PeerCount, error)
	// PoolUsage returns how many host indexes of the profile are taken
	// (pending and active peers); Capacity gives the size of the pool.
	PoolUsage(ctx context.Context, iface, profile string) (int, error)
	// SetExpiry sets the expiry to at (zero: never) on those of keys that
	// are active and not expired at the store's clock, atomically, and
	// returns them as updated, each once, in the order of keys. No event
	// is recorded. Missing, pending and already expired keys are skipped
	// and absent from the result: a row an expiry run may remove is never
	// given a new expiry. Errors: at outside the storable range.
	SetExpiry(ctx context.Context, keys []wgtypes.Key, at time.Time) ([]Peer, error)
	// DeletePeers deletes the peers with these keys (any state) and
	// inserts one D event each (status pending, due now) carrying the
	// peer's identity at that moment, atomically. Missing and repeated
	// keys are skipped, so a retry is harmless; the events of the rows
	// deleted are returned in the order of keys. reason is one of
	// ReasonDeleted, ReasonExpired, ReasonRevoked, ReasonStale,
	// ReasonFailed, ReasonIdle.
	//
	// A deleted peer's open session ends now with the same reason; when
	// its start had a session C event, a session D event (scope
	// ScopeSession, the session's bytes) is recorded and returned right
	// before the config's D, leased alike. The config's D carries the
	// peer's persisted traffic totals (SaveActivity); SetEventsBytes adds
	// the device's last counters to them.
	//
	// With a non-empty owner the D events are born leased to owner until
	// leaseUntil (which must be after now); with an empty owner they are
	// claimable at once. A pending peer removed as stale whose connect
	// script never started (no MarkConnectStarted) gets no D event: its C
	// event is deleted and it is absent from the result. Any other
	// deleted pending peer's running C event is closed (status done,
	// last_error NoteStaleConnect for reason stale, else
	// NotePendingDeleted); in the latter case, when leaseUntil is set
	// (with an owner or without: a delete made for another node, whose
	// connect script may run there), its D event is not leased but due
	// only at leaseUntil, when its connect script must have ended: a
	// script never sees D before C. On a backend many nodes share
	// (Nodes), such a D is due no earlier than now plus the ConnectHold
	// the node owning the peer's interface registered, either, whether
	// leaseUntil is set or not: the script runs there, under that node's
	// hooks settings. A non-zero leaseUntil must be after now.
	DeletePeers(ctx context.Context, keys []wgtypes.Key, reason, owner string, leaseUntil time.Time) ([]Event, error)
	// DeletePeersBy is DeletePeers recording actor on every D event it
	// inserts (see Event.Actor); DeletePeers records none.
	DeletePeersBy(ctx context.Context, actor string, keys []wgtypes.Key, reason, owner string, leaseUntil time.Time) ([]Event, error)

	// SetEventsBytes adds the byte counters read from the device to
	// pending config D events, as deltas against the counter bases
	// persisted with the config (a counter below its base was reset and
	// counts whole), all or none. Call it once per event. Errors: ErrNotFound if an event does
	// not exist; ErrConflict if one is not a pending D event; a plain
	// error for a negative counter.
	SetEventsBytes(ctx context.Context, bs []EventBytes) error
	// ClaimDue leases to owner until leaseUntil up to limit D events that
	// are pending, due (next attempt at or before now) and not under a
	// live lease, in id order, atomically: two claimers, in one process or
	// two, never get the same event while its lease lives; an expired
	// lease is claimed again. The events are returned in id order with
	// their new lease. An empty owner, a limit below 1 or a lease end not
	// after now is an error.
	ClaimDue(ctx context.Context, owner string, now, leaseUntil time.Time, limit int) ([]Event, error)
	// RenewLease extends owner's live lease on the pending D event id to
	// until. Errors: ErrConflict when owner no longer holds a live lease
	// (the caller must then not run the script).
	RenewLease(ctx context.Context, id int64, owner string, until time.Time) error
	// MarkDone records a successful delivery by the lease holder owner
	// (even of an expired lease nobody claimed since): status done,
	// attempts incremented, lease released. Errors: ErrNotFound if there
	// is no such event; ErrConflict if it is not a pending D event or
	// another owner holds it.
	MarkDone(ctx context.Context, id int64, owner string) error
	// MarkAttemptFailed records a failed delivery by the lease holder
	// owner: attempts incremented, last_error set (cut to MaxErrorLen),
	// lease released, and either pending again at next or, when final,
	// status failed. Errors as MarkDone.
	MarkAttemptFailed(ctx context.Context, id int64, owner, errMsg string, next time.Time, final bool) error
	// ReleaseLeases ends every lease held by the dead process holder (a
	// lease owner is the process name, optionally followed by "/" and a
	// claim token): its D events become claimable at their own next
	// attempt time. It returns how many leases were released; holder must
	// be non-empty and contain no "/".
	ReleaseLeases(ctx context.Context, holder string) (int, error)
	// RetryEvent puts a failed event back: pending, due now, attempts 0.
	// Errors: ErrNotFound if there is no such event; ErrConflict if it is
	// not failed.
	RetryEvent(ctx context.Context, id int64) error
	// RetryFailed puts every failed event back as RetryEvent does and
	// returns how many there were.
	RetryFailed(ctx context.Context) (int, error)
	// ListEvents returns the events matching f, newest (highest id)
	// first. An unknown f.Status or f.Kind is an error.
	ListEvents(ctx context.Context, f EventFilter) ([]Event, error)
	// CountEvents counts events by status; every status is present.
	CountEvents(ctx context.Context) (map[string]int, error)
	// Disconnected returns which of keys have at least one D event, on any
	// interface: former configs of this store.
	Disconnected(ctx context.Context, keys []wgtypes.Key) (map[wgtypes.Key]bool, error)
	// PruneEvents deletes done events done before the given time and
	// returns how many. A C event is kept while its config exists (no D
	// event for the key after it), so WhoHad still answers for long-lived
	// configs.
	PruneEvents(ctx context.Context, before time.Time) (int, error)
	// NextDue returns when ClaimDue can next return something: the
	// earliest next attempt of pending D events or, for one under a lease
	// that ends later, the end of that lease; ok is false when nothing is
	// pending.
	NextDue(ctx context.Context) (at time.Time, ok bool, err error)
	// NextExpiry returns the earliest expiry among active peers; ok is
	// false when no active peer expires.
	NextExpiry(ctx context.Context) (at time.Time, ok bool, err error)
	// WhoHad returns the sessions that held ip at the instant at: C
	// recorded at or before at, and no D yet or D recorded after at; at
	// most one per interface, ordered by C event id. An invalid ip is an
	// error.
	WhoHad(ctx context.Context, ip netip.Addr, at time.Time) ([]Session, error)
	// UserSessions returns every recorded session of the user's configs,
	// oldest first.
	UserSessions(ctx context.Context, user string) ([]Session, error)

	// ListActivity returns the session-tracking activity (Activity) of
	// every active config on iface, by key, with its profile and its open
	// session.
	ListActivity(ctx context.Context, iface string) (map[wgtypes.Key]Activity, error)
	// SaveActivity writes one poll of one interface atomically: the
	// activity of u.Configs; for each change in u.Changes, a session
	// started (recorded with its first endpoint and, when u.Events, a
	// session C event: reason ReasonHandshake, OriginatingIP the
	// endpoint's address), roamed (the endpoint appended) or ended at its
	// last activity (reason ReasonOffline, its final bytes, and a session
	// D event when its start had a C). Configs no longer active on
	// u.Interface are skipped with their changes. It returns the session
	// events recorded (status pending, due now, scope ScopeSession), in id
	// order. Errors: a negative counter (nothing is written).
	SaveActivity(ctx context.Context, u ActivityUpdate) ([]Event, error)
	// ListClientSessions returns the recorded sessions matching f, newest
	// first.
	ListClientSessions(ctx context.Context, f ClientSessionFilter) ([]ClientSession, error)

	// SchemaVersion returns the version of the schema the database is at.
	SchemaVersion(ctx context.Context) (int, error)
	// Version returns a number that changes whenever anything is
	// committed to the database, by this handle or any other, in any
	// process. It is cheap: compare successive values to skip re-reading
	// unchanged state. Only equality is meaningful.
	Version(ctx context.Context) (uint64, error)
	// Changes returns a channel that receives a value soon after anything
	// is committed to the database, by this handle or any other, in any
	// process, from the moment Changes returns; notifications are
	// coalesced (the channel holds at most one). It is closed when ctx is done or the handle is closed. A
	// failure to look is not sent: Version and every read report it.
	Changes(ctx context.Context) <-chan struct{}
	// Check reports whether the handle can still be used: nil when all is
	// well, else an error matching ErrUnavailable (an *UnavailableError
	// with Fatal set when it never will be again, such as a database file
	// deleted or replaced under the process: a new handle must be opened).
	// It is cheap enough to call every few hundred milliseconds.
	Check(ctx context.Context) error
	// Close releases the handle. Calling it again returns the first
	// result.
	Close() error
}
