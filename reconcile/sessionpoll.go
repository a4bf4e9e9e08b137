package reconcile

import (
	"context"
	"fmt"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/wg"
)

// SessionStore is what session tracking needs from the store.
type SessionStore interface {
	ListActivity(ctx context.Context, iface string) (map[wgtypes.Key]store.Activity, error)
	SaveActivity(ctx context.Context, u store.ActivityUpdate) ([]store.Event, error)
}

// timedRead is a full device read and when it was taken.
type timedRead struct {
	dev *wg.Device
	at  time.Time
}

// noteFullRead keeps a reconcile's device read for the session poll.
func (e *Engine) noteFullRead(iface string, d *wg.Device, at time.Time) {
	e.mu.Lock()
	e.reads[iface] = timedRead{dev: d, at: at}
	e.mu.Unlock()
}

// SessionPoll is what one poll of an interface found.
type SessionPoll struct {
	// Changes are the session changes, sorted by config.
	Changes []store.SessionChange
	// Events are the session events recorded (empty without
	// sessions.script).
	Events []store.Event
	// Online counts the configs of the interface online after the poll
	// (Online.Config at the poll's time: their session is open).
	Online int
	// OnlineByProfile counts them by profile; every profile configured on
	// the interface is present, at 0 when none of its configs is online.
	OnlineByProfile map[string]int
	// Written counts the configs whose activity was written.
	Written int
	// Shared is set when the poll used the reconcile's device read.
	Shared bool
	// Reloaded is set when the configs' activity was read from the store
	// (not taken from what this engine last read and wrote).
	Reloaded bool
}

// activityCacheAge bounds how long an interface's activity is taken from
// memory: a safety net, since any change of the configs on the interface
// shows as a change of the device's peers first.
const activityCacheAge = 5 * time.Minute

// activityCache is the activity of an interface's configs as this engine
// last read and wrote it, and the device's peers at that read. The engine is the only writer of activity; configs come and go
// through the device (a create adds its peer, a removal takes it off), so
// the cache holds while the device shows the same peers: the configs, the
// device peers that were no config (orphans), and no config missing that
// was there; while this engine added or removed no peer (a config deleted
// and created again with the same key between two polls keeps its device
// peer, but not its activity); and while no config's counters went down
// (its peer was taken off and added again, by another process perhaps;
// the read after it sets the new base, so this costs one store read).
type activityCache struct {
	acts    map[wgtypes.Key]store.Activity
	others  map[wgtypes.Key]bool // on the device at the read, not a config
	missing map[wgtypes.Key]bool // a config not on the device at the read
	at      time.Time
	gen     uint64 // Engine.peerGen before the read
}

func newActivityCache(acts map[wgtypes.Key]store.Activity, d *wg.Device, now time.Time, gen uint64) *activityCache {
	c := &activityCache{acts: acts, others: map[wgtypes.Key]bool{}, missing: map[wgtypes.Key]bool{}, at: now, gen: gen}
	on := make(map[wgtypes.Key]bool, len(d.Peers))
	for _, p := range d.Peers {
		on[p.PublicKey] = true
		if _, ok := acts[p.PublicKey]; !ok {
			c.others[p.PublicKey] = true
		}
	}
	for k := range acts {
		if !on[k] {
			c.missing[k] = true
		}
	}
	return c
}

// fits reports whether the cache still describes the interface whose
// device read is d, with gen the engine's peerGen now.
func (c *activityCache) fits(d *wg.Device, now time.Time, gen uint64) bool {
	if c == nil || now.Sub(c.at) >= activityCacheAge || now.Before(c.at) || gen != c.gen {
		return false
	}
	n := 0
	for _, p := range d.Peers {
		if a, ok := c.acts[p.PublicKey]; ok {
			if p.RxBytes < a.RxBase || p.TxBytes < a.TxBase {
				return false // the peer is new on the device: its config may be too
			}
			n++
		} else if !c.others[p.PublicKey] {
			return false // a new peer: a new config, perhaps
		}
	}
	// every config is on the device but those that were missing
	return n+len(c.missing) == len(c.acts) && n+len(c.others) == len(d.Peers)
}

// PollSessions tracks the sessions of one interface: one device read (a
// reconcile's read of less than half a poll interval ago is used instead),
// the configs' activity from the store, TrackSessions, and one store
// transaction for the configs that changed and their session changes.
// Session events recorded are left to Deliver.
//
// A device that cannot be read is an error matching ErrDeviceUnavailable;
// nothing is written then, and the next poll takes up from the state
// stored.
func (e *Engine) PollSessions(ctx context.Context, iface string) (SessionPoll, error) {
	cfg := e.Config()
	sc := cfg.Sessions
	if sc.OfflineAfter <= 0 {
		return SessionPoll{}, fmt.Errorf("poll sessions on %s: sessions.offline_after is not set", iface)
	}
	now := e.clock()
	e.mu.Lock()
	last := e.polls[iface]
	shared, ok := e.reads[iface]
	e.mu.Unlock()
	var out SessionPoll
	var d *wg.Device
	if ok && shared.at.After(last) && !now.Before(shared.at) && now.Sub(shared.at) < sc.PollInterval/2 {
		d, now, out.Shared = shared.dev, shared.at, true
	} else {
		var err error
		if d, err = e.dev.Read(ctx, iface); err != nil {
			e.mu.Lock()
			delete(e.watched, iface) // what happens now is not seen
			e.mu.Unlock()
			e.obs.DeviceReadError(iface)
			return out, fmt.Errorf("poll sessions on %s: %w", iface, unavailable(err))
		}
	}
	e.pollMu.Lock()
	defer e.pollMu.Unlock()
	if e.actCache == nil {
		e.actCache = map[string]*activityCache{}
	}
	cache := e.actCache[iface]
	if gen := e.peerGen.Load(); !cache.fits(d, now, gen) {
		acts, err := e.store.ListActivity(ctx, iface)
		if err != nil {
			return out, fmt.Errorf("poll sessions on %s: %w", iface, err)
		}
		cache = newActivityCache(acts, d, now, gen)
		e.actCache[iface] = cache
		out.Reloaded = true
	}
	prev := cache.acts
	changed, changes := TrackSessions(prev, d, Poll{Prev: last, Now: now, OfflineAfter: sc.OfflineAfter})
	evs, err := e.store.SaveActivity(ctx, store.ActivityUpdate{
		Interface: iface, Configs: changed, Changes: changes, Events: sc.Script != "",
	})
	if err != nil {
		delete(e.actCache, iface) // what was written is unknown: read it again
		return out, fmt.Errorf("poll sessions on %s: %w", iface, err)
	}
	for _, c := range changed {
		prev[c.Key] = c.Activity
	}
	rule := OnlineRule(sc)
	online, byProfile := 0, map[string]int{}
	for _, p := range cfg.ProfilesOn(iface) {
		byProfile[p.ID] = 0
	}
	for _, a := range prev {
		if rule.Config(a, now) {
			online++
			byProfile[a.ProfileID]++
		}
	}
	e.mu.Lock()
	e.polls[iface] = now
	if _, ok := e.watched[iface]; !ok {
		e.watched[iface] = now
	}
	e.mu.Unlock()
	for _, c := range changes {
		switch c.Kind {
		case store.SessionStart:
			e.log.Info("session started", "iface", iface, "peer", c.Key.String(), "endpoint", c.Endpoint.String())
		case store.SessionEnd:
			e.log.Info("session ended", "iface", iface, "peer", c.Key.String(), "bytes_in", c.Session.BytesIn, "bytes_out", c.Session.BytesOut)
		case store.SessionRoam:
			e.log.Info("session roamed", "iface", iface, "peer", c.Key.String(), "endpoint", c.Endpoint.String())
		}
	}
	out.Changes, out.Events, out.Online, out.OnlineByProfile, out.Written = changes, evs, online, byProfile, len(changed)
	e.obs.SessionsPolled(iface, byProfile, changes)
	return out, nil
}

// ReclaimIdle removes, with reason "idle", every active config of a
// profile with idle_expiry whose last handshake (or creation, when it never
// had one) is at least idle_expiry ago and that has no open session. It
// only judges what this engine saw: an interface is considered once its
// sessions have been polled without a failed read for idle_expiry (a
// restart, or an interface that could not be read, starts that wait
// again); handshake times persisted by earlier processes count.
func (e *Engine) ReclaimIdle(ctx context.Context) (Removed, error) {
	cfg := e.Config()
	now := e.clock()
	var all Removed
	for _, ifc := range cfg.Interfaces {
		e.mu.Lock()
		since, ok := e.watched[ifc.Name]
		e.mu.Unlock()
		if !ok {
			continue
		}
		idle := map[string]time.Duration{}
		for _, p := range cfg.ProfilesOn(ifc.Name) {
			if p.IdleExpiry > 0 && now.Sub(since) >= p.IdleExpiry {
				idle[p.ID] = p.IdleExpiry
			}
		}
		if len(idle) == 0 {
			continue
		}
		acts, err := e.store.ListActivity(ctx, ifc.Name)
		if err != nil {
			return all, fmt.Errorf("reclaim idle configs on %s: %w", ifc.Name, err)
		}
		peers, err := e.store.ListPeers(ctx, store.PeerFilter{Interface: ifc.Name, State: store.StateActive})
		if err != nil {
			return all, fmt.Errorf("reclaim idle configs on %s: %w", ifc.Name, err)
		}
		var victims []store.Peer
		for _, p := range peers {
			limit, ok := idle[p.ProfileID]
			a, tracked := acts[p.PublicKey]
			if !ok || !tracked || a.SessionOpen() {
				continue
			}
			last := a.LastHandshake
			if last.IsZero() {
				last = p.CreatedAt
			}
			if now.Sub(last) >= limit {
				victims = append(victims, p)
			}
		}
		for len(victims) > 0 {
			n := min(len(victims), batchSize)
			r, err := e.remove(ctx, victims[:n], store.ReasonIdle)
			all.merge(r)
			if err != nil {
				return all, fmt.Errorf("reclaim idle configs on %s: %w", ifc.Name, err)
			}
			victims = victims[n:]
		}
	}
	return all, nil
}

// apply writes plan to the interface's device. A plan that adds or removes
// peers first counts in peerGen, so the session poll reads the configs'
// activity from the store again: a config deleted and created again with
// the same key between two polls shows the same device peers, but its
// activity starts from zero.
func (e *Engine) apply(ctx context.Context, iface string, plan wg.Plan) (wg.Counts, error) {
	if len(plan.Add) > 0 || len(plan.Remove) > 0 {
		e.peerGen.Add(1)
	}
	return e.dev.Apply(ctx, iface, plan)
}
