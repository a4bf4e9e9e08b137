// Package reconcile is wgkeeper's lifecycle engine. It creates, deletes,
// expires and revokes peer configurations, repairs the devices so they match
// the store, and delivers the disconnect events to the operator's script with
// at-least-once semantics.
//
// It owns the order of the steps — store, script, device — that makes the
// guarantees hold: a peer is never on a device without a successful connect
// script, and every config whose connect succeeded gets a disconnect event
// once it is removed, whichever process removes it and whenever a process
// dies. It does not speak SQL, wgctrl or os/exec itself: it consumes the
// small interfaces below, satisfied by every backend of store.Store, by
// *wg.Client and by *hooks.Runner.
//
// Lock order. Locks are taken in this order and released in reverse; none
// is waited for while a later one is held. The lock files live in the lock
// directory (Options.LockDir):
//
//  1. The housekeeping lock: flock(2) on .wgkeeper-housekeeping.lock, held
//     for a whole Housekeeping run, its scripts included, so two runs never
//     overlap, across processes too.
//  2. The device locks, one per interface: first the in-process channel
//     semaphore (Engine.devSems), then flock(2) on .wgkeeper-IFACE.lock.
//     Held across one read-plan-write sequence: the store reads and writes
//     it needs, the device read and write, the repair of an owned link
//     (wg.Link's mutex). Several are taken in interface-name order (remove).
//     Never held while a script runs: a connect script runs before its
//     device lock is taken, disconnect scripts after the locks are released.
//  3. Engine.ownerMu, and under it, on first use, this engine's owner file
//     (flock(2) on .wgkeeper-owner-TOKEN.lock, held for the engine's life
//     and inherited by its scripts). The owner files of others are only
//     tried, never waited for (ReclaimDead).
//  4. A script slot of the runner (a channel semaphore in hooks), held by
//     one run; a run may write to the store (its start is recorded).
//  5. The store's own locks, inside one of its calls: SQLite's write mutex
//     (one write transaction of this process at a time), then its file
//     lock (BEGIN IMMEDIATE, waited for with the busy timeout);
//     PostgreSQL's row locks (FOR UPDATE) within one transaction. The store
//     calls nothing back.
//
// Engine.mu guards the engine's maps only; it is a leaf, never held across
// I/O or while waiting. Event leases in the database are not waited for:
// a claim skips leased events, a delivery runs a script holding only its
// event's lease (renewed just before), and a lease lost is left to its new
// holder. A lease is taken in the same store write as the delete that makes
// the event, under the device locks of 2.
package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/config"
	"github.com/wgkeeper/wgkeeper/hooks"
	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/wg"
)

// PeerStore creates configs and changes their expiry.
type PeerStore interface {
	InsertPending(ctx context.Context, p store.NewPeer) (store.Peer, store.Event, error)
	Activate(ctx context.Context, key wgtypes.Key, cEventID int64) error
	RejectPending(ctx context.Context, key wgtypes.Key, cEventID int64) error
	CancelHeldDisconnect(ctx context.Context, key wgtypes.Key) (int, error)
	MarkConnectStarted(ctx context.Context, key wgtypes.Key, cEventID int64) error
	GetPeer(ctx context.Context, key wgtypes.Key) (store.Peer, error)
	SetExpiry(ctx context.Context, keys []wgtypes.Key, at time.Time) ([]store.Peer, error)
}

// PeerLister reads the desired state. Version changes whenever any handle
// or process commits to the store; the engine uses it to skip re-reading
// unchanged state.
type PeerLister interface {
	ListPeers(ctx context.Context, f store.PeerFilter) ([]store.Peer, error)
	Version(ctx context.Context) (uint64, error)
}

// Outbox removes configs with their disconnect events and tracks delivery.
type Outbox interface {
	DeletePeersBy(ctx context.Context, actor string, keys []wgtypes.Key, reason, owner string, leaseUntil time.Time) ([]store.Event, error)
	SetEventsBytes(ctx context.Context, bs []store.EventBytes) error
	ClaimDue(ctx context.Context, owner string, now, leaseUntil time.Time, limit int) ([]store.Event, error)
	RenewLease(ctx context.Context, id int64, owner string, until time.Time) error
	MarkDone(ctx context.Context, id int64, owner string) error
	ReleaseLeases(ctx context.Context, holder string) (int, error)
}

// Retrier records failed deliveries and lets an operator try again.
type Retrier interface {
	MarkAttemptFailed(ctx context.Context, id int64, owner, errMsg string, next time.Time, final bool) error
	RetryEvent(ctx context.Context, id int64) error
	RetryFailed(ctx context.Context) (int, error)
	PruneEvents(ctx context.Context, before time.Time) (int, error)
	ListEvents(ctx context.Context, f store.EventFilter) ([]store.Event, error)
	// Disconnected returns which of keys have a D event: former configs.
	Disconnected(ctx context.Context, keys []wgtypes.Key) (map[wgtypes.Key]bool, error)
}

// Store is everything the engine needs from the database.
type Store interface {
	PeerStore
	PeerLister
	Outbox
	Retrier
	SessionStore
	Counter
	LogReader
}

// LogReader answers the connection log; the engine passes it on to the
// API (see reads.go).
type LogReader interface {
	WhoHad(ctx context.Context, ip netip.Addr, at time.Time) ([]store.Session, error)
	UserSessions(ctx context.Context, user string) ([]store.Session, error)
	ListClientSessions(ctx context.Context, f store.ClientSessionFilter) ([]store.ClientSession, error)
}

// Counter counts configs and events; the engine passes the counts on to
// the API's status (see reads.go).
type Counter interface {
	CountPeers(ctx context.Context) ([]store.PeerCount, error)
	CountEvents(ctx context.Context) (map[string]int, error)
}

// Device reads and writes live WireGuard interfaces. Link is the cheap
// look at an interface (netlink and the UAPI socket, no peers); SetDevice
// writes the private key and listen port when they differ.
type Device interface {
	Read(ctx context.Context, name string) (*wg.Device, error)
	Apply(ctx context.Context, name string, p wg.Plan) (wg.Counts, error)
	Link(ctx context.Context, name string) (wg.LinkState, error)
	SetDevice(ctx context.Context, name string, key *wgtypes.Key, port *int) error
}

// Runner runs the connect/disconnect script.
type Runner interface {
	RunWith(ctx context.Context, v hooks.Vars, o hooks.RunOptions) hooks.Result
}

// Compile-time checks that the real parts fit: every backend of the
// store contract serves the engine.
var (
	_ Store  = store.Store(nil)
	_ Device = (*wg.Client)(nil)
	_ Runner = (*hooks.Runner)(nil)
)

// Options configure an Engine. Store, Device and Runner are required.
type Options struct {
	Config *config.Config
	Store  Store
	Device Device
	Runner Runner
	// SessionRunner runs sessions.script; nil: no session script (session
	// events are then done without a run).
	SessionRunner Runner
	Logger        *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// LockDir holds the lock files that serialise housekeeping and device
	// writes across processes. Empty means the database's directory.
	LockDir string
	// Observer receives measurements; nil means none.
	Observer Observer
	// Nodes, when the database is shared by many nodes (PostgreSQL), is
	// where the engine learns which node declares a profile; nil means
	// this is the only node. With it the engine writes devices and runs
	// scripts only for the interfaces its configuration declares: a
	// config of another node's interface is deleted with an unleased D
	// event that its node's engine delivers (removing the peer from its
	// device first), a create for another node's profile is a
	// *WrongNodeError, and expiry and stale cleanup touch only this node's
	// interfaces.
	Nodes store.Nodes
	// Leader, when the database is shared by many nodes (PostgreSQL),
	// elects the node that runs the cluster-wide jobs (see Lead); nil
	// means this is the only node, and it runs them.
	Leader store.ClusterLeader
	// crash is called at named points of the lifecycle; tests use it to
	// simulate a process dying there.
	crash func(point string)
}

// Observer receives what the engine measures (metrics). Every method must be
// safe for concurrent use and fast.
type Observer interface {
	ScriptRun(event string, ok bool, d time.Duration)
	Reconciled(iface string, c wg.Counts, d time.Duration, err error)
	Expired(n int)
	DeviceReadError(iface string)
	// HousekeepingRun is called at the end of every housekeeping run that
	// took the lock; err is the run's error (nil when every step succeeded).
	HousekeepingRun(d time.Duration, err error)
	// SessionsPolled is called after every session poll that was written:
	// the configs online on the interface by profile (every profile
	// configured on it present, 0 when none is online; see Online) and the
	// poll's changes. The engine does not use online after the call.
	SessionsPolled(iface string, online map[string]int, changes []store.SessionChange)
	// SessionScriptRun is called after every run of sessions.script.
	SessionScriptRun(event string, ok bool, d time.Duration)
	// ClusterLeader is called when the node becomes (true) or stops
	// being (false) the one that runs the cluster-wide jobs, and once
	// with true at New when it is the only node (no Options.Leader).
	ClusterLeader(lead bool)
}

// Engine runs the lifecycle. It is safe for concurrent use.
type Engine struct {
	cfg     atomic.Pointer[config.Config]
	store   Store
	dev     Device
	run     atomic.Pointer[runnerBox]
	srun    atomic.Pointer[runnerBox] // sessions.script; nil Runner = none
	log     *slog.Logger
	now     func() time.Time
	lockDir string
	nodes   store.Nodes         // Options.Nodes; nil: the only node
	leader  store.ClusterLeader // Options.Leader; nil: the only node
	obs     Observer
	crash   func(string)

	links atomic.Pointer[linksBox] // interfaces this process owns; nil = none

	mu          sync.Mutex               // guards the seven maps below (firstKeys to orphans); a leaf, never held across I/O
	firstKeys   map[string]wgtypes.Key   // interface -> first public key seen (since start or reload)
	snaps       map[string]devSnap       // interface -> last full read, with the link it was read through
	keyFiles    map[string]wgtypes.Key   // private_key_file -> its key, read once per config
	driftLogged map[string]wgtypes.Key   // interface -> changed public key already logged
	wantCache   map[string]wantedState   // interface -> desired peers at a store version
	devSems     map[string]chan struct{} // interface -> in-process device lock
	orphans     map[string]OrphanState   // interface -> latest look at its orphans
	polls       map[string]time.Time     // interface -> last session poll written
	reads       map[string]timedRead     // interface -> last reconcile's device read
	watched     map[string]time.Time     // interface -> polled without a failed read since
	claims      atomic.Int64             // numbers the lease tokens of this engine
	maxTimeout  atomic.Int64             // longest hooks.timeout configured so far (ns)
	maxQueue    atomic.Int64             // longest hooks.queue_timeout configured so far (ns)
	maxGrace    atomic.Int64             // longest kill grace of the runners so far (ns)

	pollMu   sync.Mutex                // serialises PollSessions; guards actCache
	actCache map[string]*activityCache // interface -> activity as this engine last read and wrote it
	peerGen  atomic.Uint64             // counts this engine's device writes that add or remove peers (see apply)

	leadMu  sync.Mutex // guards leading; held across Lead's round trip to the store, so Leads run one at a time
	leading bool       // the last Lead's answer

	ownerMu    sync.Mutex // guards the four fields below
	owner      string     // host:pid:token, the name leases carry before "/claim"
	ownerToken string     // names the owner file
	ownerF     ownerLock  // the locked owner file; zero until the first lease
	closed     bool       // Close was called
}

// claimOwner returns a fresh lease token: this engine's owner name and a
// sequence number. Every claim gets its own, so a batch whose lease ran out
// can never renew a lease that a later claim of this same engine took.
func (e *Engine) claimOwner() string {
	return fmt.Sprintf("%s/%d", e.ownerName(), e.claims.Add(1))
}

// wantedState is an interface's desired peers as of a store version (Store.Version).
type wantedState struct {
	version uint64
	wanted  []wg.Wanted
}

// New returns an Engine.
func New(o Options) (*Engine, error) {
	if o.Config == nil || o.Store == nil || o.Device == nil || o.Runner == nil {
		return nil, fmt.Errorf("reconcile: config, store, device and runner are required")
	}
	e := &Engine{
		store:       o.Store,
		dev:         o.Device,
		log:         o.Logger,
		now:         o.Now,
		lockDir:     o.LockDir,
		nodes:       o.Nodes,
		leader:      o.Leader,
		obs:         o.Observer,
		crash:       o.crash,
		firstKeys:   map[string]wgtypes.Key{},
		snaps:       map[string]devSnap{},
		keyFiles:    map[string]wgtypes.Key{},
		driftLogged: map[string]wgtypes.Key{},
		wantCache:   map[string]wantedState{},
		devSems:     map[string]chan struct{}{},
		orphans:     map[string]OrphanState{},
		polls:       map[string]time.Time{},
		reads:       map[string]timedRead{},
		watched:     map[string]time.Time{},
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.now == nil {
		e.now = time.Now
	}
	if e.obs == nil {
		e.obs = nopObserver{}
	}
	if e.leader == nil {
		e.leading = true
		e.obs.ClusterLeader(true)
	}
	e.owner, e.ownerToken = newOwnerName()
	if e.lockDir == "" {
		e.lockDir = o.Config.LockDir
	}
	if e.lockDir == "" {
		e.lockDir = dirOf(o.Config.Database)
	}
	e.noteTimeout(o.Config)
	raise(&e.maxGrace, graceOf(o.Runner))
	e.cfg.Store(o.Config)
	e.run.Store(&runnerBox{o.Runner})
	e.srun.Store(&runnerBox{o.SessionRunner})
	return e, nil
}

// SetConfig swaps the configuration and, when r is not nil, the script
// runner (a reload). Steps already running finish with what they started
// with. Private key files are read again, and the public key each
// interface has now is accepted as its expected one.
func (e *Engine) SetConfig(c *config.Config, r Runner) {
	if r != nil {
		raise(&e.maxGrace, graceOf(r))
		e.run.Store(&runnerBox{r})
	}
	e.mu.Lock()
	clear(e.firstKeys)
	clear(e.keyFiles)
	clear(e.driftLogged)
	e.mu.Unlock()
	e.noteTimeout(c)
	e.cfg.Store(c)
}

func (e *Engine) noteTimeout(c *config.Config) {
	raise(&e.maxTimeout, hookTimeout(c))
	raise(&e.maxQueue, queueTimeout(c))
}

// raise sets v to t when t is larger.
func raise(v *atomic.Int64, t time.Duration) {
	for {
		cur := v.Load()
		if int64(t) <= cur || v.CompareAndSwap(cur, int64(t)) {
			return
		}
	}
}

// hookTimeout is c's hooks.timeout, or its default when unset.
func hookTimeout(c *config.Config) time.Duration {
	if c.Hooks.Timeout <= 0 {
		return config.DefaultHookTimeout
	}
	return c.Hooks.Timeout
}

// queueTimeout is c's hooks.queue_timeout, or its default when unset.
func queueTimeout(c *config.Config) time.Duration {
	if c.Hooks.QueueTimeout <= 0 {
		return config.DefaultHookQueueTimeout
	}
	return c.Hooks.QueueTimeout
}

// SetSessionRunner swaps the runner of sessions.script (nil: none), as
// on a reload.
func (e *Engine) SetSessionRunner(r Runner) { e.srun.Store(&runnerBox{r}) }

// runnerBox lets the runner be swapped atomically.
type runnerBox struct{ Runner }

// graceOf is r's SIGTERM-to-SIGKILL grace, as the runner reports it
// (*hooks.Runner does); hooks.DefaultKillGrace for a runner that does not.
func graceOf(r Runner) time.Duration {
	if g, ok := r.(interface{ KillGrace() time.Duration }); ok {
		return g.KillGrace()
	}
	return hooks.DefaultKillGrace
}

// Config returns the configuration in force.
func (e *Engine) Config() *config.Config { return e.cfg.Load() }

// Nodes returns Options.Nodes: where the nodes sharing the database are
// registered; nil when this is the only node.
func (e *Engine) Nodes() store.Nodes { return e.nodes }

// Owner is the name this engine uses in event leases (followed by "/" and
// a claim number).
func (e *Engine) Owner() string { return e.ownerName() }

func (e *Engine) clock() time.Time { return e.now().UTC() }

func (e *Engine) point(name string) {
	if e.crash != nil {
		e.crash(name)
	}
}

type nopObserver struct{}

func (nopObserver) ScriptRun(string, bool, time.Duration)                        {}
func (nopObserver) Reconciled(string, wg.Counts, time.Duration, error)           {}
func (nopObserver) Expired(int)                                                  {}
func (nopObserver) DeviceReadError(string)                                       {}
func (nopObserver) HousekeepingRun(time.Duration, error)                         {}
func (nopObserver) SessionsPolled(string, map[string]int, []store.SessionChange) {}
func (nopObserver) SessionScriptRun(string, bool, time.Duration)                 {}
func (nopObserver) ClusterLeader(bool)                                           {}

// ErrDeviceUnavailable matches (errors.Is) every error the engine returns
// because a WireGuard device could not be read: the interface is missing,
// not permitted, or not answering. The operation changed nothing on that
// device. The error's message is the underlying read error.
var ErrDeviceUnavailable = errors.New("device unavailable")

// deviceError wraps a failed device read so it matches both
// ErrDeviceUnavailable and the read error itself.
type deviceError struct{ err error }

func (e *deviceError) Error() string   { return e.err.Error() }
func (e *deviceError) Unwrap() []error { return []error{ErrDeviceUnavailable, e.err} }

func unavailable(err error) error { return &deviceError{err: err} }

// WantedPeer is the device state a stored peer must have: its addresses as
// /32 and /128 allowed IPs and its preshared key, no keepalive. Reconcile
// compares devices against exactly this, so callers can tell whether a
// device peer is in sync.
func WantedPeer(p store.Peer) wg.Wanted { return wanted(p) }
