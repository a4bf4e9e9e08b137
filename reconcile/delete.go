package reconcile

import (
	"context"
	"fmt"
	"sort"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/config"
	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/wg"
)

// batchSize bounds how many configs one expire or revoke step handles in one
// store transaction and one device write.
const batchSize = 1000

// Removed is the outcome of a delete, revoke, expire or stale cleanup.
type Removed struct {
	// Events are the disconnect events recorded, one per config removed.
	Events []store.Event
	// Delivery counts what became of the events delivered right away:
	// Done when the script ran successfully (or none was needed); the
	// rest are retried by delivery.
	Delivery Delivery
	// DeviceErrs are interfaces whose device could not be updated; the next
	// reconcile removes the peers from them.
	DeviceErrs map[string]error
}

func (r *Removed) merge(o Removed) {
	r.Events = append(r.Events, o.Events...)
	r.Delivery.add(o.Delivery)
	for k, v := range o.DeviceErrs {
		r.deviceErr(k, v)
	}
}

// deviceErr records that iface's device could not be updated.
func (r *Removed) deviceErr(iface string, err error) {
	if r.DeviceErrs == nil {
		r.DeviceErrs = map[string]error{}
	}
	r.DeviceErrs[iface] = err
}

// Delete removes one config: the row goes and a D event is recorded in one
// transaction, the peer leaves the device (its byte counters read first,
// into the event), then the event is delivered. store.ErrNotFound when no
// config has that key.
func (e *Engine) Delete(ctx context.Context, key wgtypes.Key) (Removed, error) {
	p, err := e.store.GetPeer(ctx, key)
	if err != nil {
		return Removed{}, fmt.Errorf("config %s: %w", key, err)
	}
	r, err := e.remove(ctx, []store.Peer{p}, store.ReasonDeleted)
	if err == nil && len(r.Events) == 0 {
		return r, fmt.Errorf("config %s: %w", key, store.ErrNotFound)
	}
	return r, err
}

// RevokeUser removes every config of a user, with reason "revoked". It is
// not an error when the user has none.
func (e *Engine) RevokeUser(ctx context.Context, user string) (Removed, error) {
	if err := ValidateUserID(user); err != nil {
		return Removed{}, err
	}
	var all Removed
	for {
		peers, err := e.store.ListPeers(ctx, store.PeerFilter{UserID: user, Limit: batchSize})
		if err != nil {
			return all, fmt.Errorf("list configs of %q: %w", user, err)
		}
		if len(peers) == 0 {
			return all, nil
		}
		r, err := e.remove(ctx, peers, store.ReasonRevoked)
		all.merge(r)
		if err != nil {
			return all, err
		}
		if len(r.Events) == 0 {
			// Nothing could be removed (raced away): avoid spinning.
			return all, nil
		}
	}
}

// Expire removes every active config whose expiry is at or before now, in
// batches with one device write per interface per batch. Configs missing
// from the device get their D event all the same.
func (e *Engine) Expire(ctx context.Context) (Removed, error) {
	return e.removeWhere(ctx, store.PeerFilter{State: store.StateActive, ExpiresBefore: e.clock()}, store.ReasonExpired)
}

// localFilters is f once per interface of this node's configuration when
// the database has many nodes (each expires and cleans its own), else f.
func (e *Engine) localFilters(f store.PeerFilter) []store.PeerFilter {
	if e.nodes == nil {
		return []store.PeerFilter{f}
	}
	var out []store.PeerFilter
	for _, ifc := range e.Config().Interfaces {
		g := f
		g.Interface = ifc.Name
		out = append(out, g)
	}
	return out
}

// CleanStale removes configs left pending (a process died while the connect
// script ran) for longer than twice the script timeout, each with a D event
// of reason "stale": the connect may have reached the script.
//
// The timeout counted is the longest this engine has run with, so lowering
// hooks.timeout in a reload never takes a row whose connect script still
// runs under the old, longer timeout.
func (e *Engine) CleanStale(ctx context.Context) (Removed, error) {
	age := e.staleAge()
	return e.removeWhere(ctx, store.PeerFilter{State: store.StatePending, CreatedBefore: e.clock().Add(-age)}, store.ReasonStale)
}

func (e *Engine) removeWhere(ctx context.Context, f store.PeerFilter, reason string) (Removed, error) {
	var all Removed
	for _, g := range e.localFilters(f) {
		r, err := e.removeWhere1(ctx, g, reason)
		all.merge(r)
		if err != nil {
			return all, err
		}
	}
	return all, nil
}

func (e *Engine) removeWhere1(ctx context.Context, f store.PeerFilter, reason string) (Removed, error) {
	var all Removed
	f.Limit = batchSize
	for {
		peers, err := e.store.ListPeers(ctx, f)
		if err != nil {
			return all, fmt.Errorf("list configs to remove (%s): %w", reason, err)
		}
		if len(peers) == 0 {
			return all, nil
		}
		r, err := e.remove(ctx, peers, reason)
		all.merge(r)
		if reason == store.ReasonExpired {
			e.obs.Expired(len(r.Events))
		}
		if err != nil || len(r.Events) == 0 {
			return all, err
		}
		if len(peers) < batchSize {
			return all, nil
		}
	}
}

func keysOf(peers []store.Peer) []wgtypes.Key {
	keys := make([]wgtypes.Key, len(peers))
	for i, p := range peers {
		keys[i] = p.PublicKey
	}
	return keys
}

// remove is the one way configs leave: under the device locks of their
// interfaces, the store first (rows gone, D events recorded in the same
// transaction, leased to this engine), then the device (byte counters read
// into the events, peers removed in one write per interface); then, with the
// locks released, the scripts. Holding the device locks across both steps
// means no reconcile or create can slip in between: a peer being removed is
// never taken for an orphan (losing its counters) nor added back.
//
// With many nodes (Options.Nodes), configs of interfaces this node does not
// declare are deleted first, in a transaction of their own, with unleased
// D events: their node's engine removes them from its device and runs the
// scripts (see Deliver). The D of such a config still pending (its connect
// script may be running on its node) is held as a local one is, until that
// script must have ended, counted with this node's hooks settings.
func (e *Engine) remove(ctx context.Context, peers []store.Peer, reason string) (Removed, error) {
	if e.nodes == nil {
		return e.removeLocal(ctx, peers, reason)
	}
	cfg := e.Config()
	var local, foreign []store.Peer
	for _, p := range peers {
		if _, ok := cfg.Interface(p.Interface); ok {
			local = append(local, p)
		} else {
			foreign = append(foreign, p)
		}
	}
	var out Removed
	if len(foreign) > 0 {
		evs, err := e.store.DeletePeersBy(ctx, ActorFrom(ctx), keysOf(foreign), reason, "", e.clock().Add(e.leaseFor()))
		if err != nil {
			return Removed{}, fmt.Errorf("remove configs: %w", err)
		}
		for _, ev := range evs {
			e.log.Info("config removed; the node of its interface takes it off the device and runs the script",
				"iface", ev.Interface, "peer", ev.PublicKey.String(), "user", ev.UserID, "reason", reason, "event_id", ev.ID, "actor", ev.Actor)
		}
		out.Events = evs
	}
	if len(local) == 0 {
		return out, nil
	}
	r, err := e.removeLocal(ctx, local, reason)
	out.merge(r)
	return out, err
}

func (e *Engine) removeLocal(ctx context.Context, peers []store.Peer, reason string) (Removed, error) {
	cfg := e.Config()
	var ifaces []string
	seen := map[string]bool{}
	for _, p := range peers {
		if _, ok := cfg.Interface(p.Interface); ok && !seen[p.Interface] {
			seen[p.Interface] = true
			ifaces = append(ifaces, p.Interface)
		}
	}
	sort.Strings(ifaces) // one lock order for every caller
	var locks []*devLock
	unlock := func() {
		for i := len(locks) - 1; i >= 0; i-- {
			locks[i].unlock()
		}
		locks = nil
	}
	defer unlock()
	for _, name := range ifaces {
		l, err := e.deviceLock(ctx, name)
		if err != nil {
			return Removed{}, err
		}
		locks = append(locks, l)
	}

	if _, err := e.holdOwner(); err != nil {
		return Removed{}, fmt.Errorf("remove configs: %w", err)
	}
	owner := e.claimOwner()
	evs, err := e.store.DeletePeersBy(ctx, ActorFrom(ctx), keysOf(peers), reason, owner, e.clock().Add(e.leaseFor()))
	if err != nil {
		return Removed{}, fmt.Errorf("remove configs: %w", err)
	}
	if len(evs) == 0 {
		return Removed{}, nil
	}
	e.point("delete:stored")
	ctx = context.WithoutCancel(ctx)

	// The session D events of configs removed mid-session come back
	// beside their configs' D: they are delivered first, to the session
	// script, and are no part of the removal's count.
	var sessEvs []store.Event
	cfgEvs := evs[:0:0]
	for _, ev := range evs {
		if ev.Scope == store.ScopeSession {
			sessEvs = append(sessEvs, ev)
		} else {
			cfgEvs = append(cfgEvs, ev)
		}
	}
	evs = cfgEvs
	byIface := map[string][]int{}
	for i, ev := range evs {
		byIface[ev.Interface] = append(byIface[ev.Interface], i)
	}
	out := Removed{Events: evs}
	for _, name := range ifaces {
		if err := e.removeFromDevice(ctx, name, evs, byIface[name]); err != nil {
			out.deviceErr(name, err)
			e.log.Error("remove configs from device; the next reconcile removes them", "iface", name, "err", err)
		}
	}
	unlock()
	// A row re-created under the same key on another interface between
	// the caller's snapshot and the delete: that interface was not locked
	// above; handle it now, under its own lock.
	for name, idx := range byIface {
		if _, ok := cfg.Interface(name); !ok || seen[name] {
			continue
		}
		l, err := e.deviceLock(ctx, name)
		if err == nil {
			err = e.removeFromDevice(ctx, name, evs, idx)
			l.unlock()
		}
		if err != nil {
			out.deviceErr(name, err)
			e.log.Error("remove configs from device; the next reconcile removes them", "iface", name, "err", err)
		}
	}
	e.point("delete:device")
	var mine []store.Event
	for _, ev := range evs {
		e.log.Info("config removed", "iface", ev.Interface, "peer", ev.PublicKey.String(), "user", ev.UserID, "reason", reason, "event_id", ev.ID, "actor", ev.Actor)
		// A config removed while its connect script ran gets its D
		// event later, unleased, once that script must have ended.
		if ev.LeaseOwner == owner {
			mine = append(mine, ev)
		}
	}
	var mineSess []store.Event
	for _, ev := range sessEvs {
		if ev.LeaseOwner == owner {
			mineSess = append(mineSess, ev)
		}
	}
	// A session ends before its config: session D first, then config D.
	e.deliverBatch(ctx, mineSess, owner)
	out.Delivery = e.deliverBatch(ctx, mine, owner)
	e.refreshEvents(ctx, out.Events)
	return out, nil
}

// refreshEvents brings the delivery state of evs (status, attempts, next
// attempt, last error, done time, lease) up to date from the store, so
// that a caller reports each event as its delivery left it: done when the
// script ran, pending with its error when it will be retried. The byte
// counters stay those read from the device. A store error leaves the
// events as recorded, and is logged.
func (e *Engine) refreshEvents(ctx context.Context, evs []store.Event) {
	if len(evs) == 0 {
		return
	}
	lo, hi := evs[0].ID, evs[0].ID
	for _, ev := range evs {
		lo, hi = min(lo, ev.ID), max(hi, ev.ID)
	}
	got, err := e.store.ListEvents(ctx, store.EventFilter{AfterID: lo - 1, BeforeID: hi + 1})
	if err != nil {
		e.log.Error("read removed configs' events after delivery; reporting them as recorded", "err", err)
		return
	}
	byID := make(map[int64]store.Event, len(got))
	for _, ev := range got {
		byID[ev.ID] = ev
	}
	for i, ev := range evs {
		now, ok := byID[ev.ID]
		if !ok {
			continue // pruned meanwhile: keep what was recorded
		}
		evs[i].Status, evs[i].Attempts, evs[i].NextAttemptAt, evs[i].LastError = now.Status, now.Attempts, now.NextAttemptAt, now.LastError
		evs[i].DoneAt, evs[i].LeaseOwner, evs[i].LeaseUntil = now.DoneAt, now.LeaseOwner, now.LeaseUntil
	}
}

// removeFromDevice reads byte counters of the peers being removed, writes
// them into their events, and removes the peers in one device write. The
// caller holds the interface's device lock.
func (e *Engine) removeFromDevice(ctx context.Context, iface string, evs []store.Event, idx []int) error {
	d, err := e.dev.Read(ctx, iface)
	if err != nil {
		e.obs.DeviceReadError(iface)
		return err
	}
	e.rememberKey(iface, d.PublicKey)
	onDev := make(map[wgtypes.Key]wg.Peer, len(d.Peers))
	for _, p := range d.Peers {
		onDev[p.PublicKey] = p
	}
	var plan wg.Plan
	var counters []store.EventBytes
	for _, i := range idx {
		p, ok := onDev[evs[i].PublicKey]
		if !ok {
			continue
		}
		evs[i].BytesIn, evs[i].BytesOut = evs[i].AddCounters(p.RxBytes, p.TxBytes)
		if p.RxBytes != 0 || p.TxBytes != 0 {
			counters = append(counters, store.EventBytes{ID: evs[i].ID, In: p.RxBytes, Out: p.TxBytes})
		}
		plan.Remove = append(plan.Remove, p.PublicKey)
	}
	if err := e.store.SetEventsBytes(ctx, counters); err != nil {
		// The events carry the counters in memory for this delivery; only
		// a later retry would lack them.
		e.log.Error("record byte counters", "iface", iface, "err", err)
	}
	if len(plan.Remove) == 0 {
		return nil
	}
	_, err = e.apply(ctx, iface, plan)
	return err
}

// leaseFor is how long an engine holds an event it is about to deliver: the
// device step, the script's timeout, and a margin.
//
// It counts the longest timeout configured so far, so a reload that lowers
// hooks.timeout never makes a lease (or the delay of a D event whose
// connect still runs) shorter than a script started before it may take.
func (e *Engine) leaseFor() time.Duration {
	return holdFor(e.maxT(), e.maxQ())
}

// holdFor is leaseFor for a longest hooks.timeout t and hooks.queue_timeout
// q.
func holdFor(t, q time.Duration) time.Duration {
	return 2*t + q + time.Minute
}

// ConnectHold is what leaseFor will be once c is in force (SetConfig), the
// hold this engine's deletes give the D event of a config whose connect
// script may still run: what its node registers as
// store.NodeDecl.ConnectHold, so that deletes made on other nodes hold such
// a D as long. Like leaseFor it never goes down on a reload.
func (e *Engine) ConnectHold(c *config.Config) time.Duration {
	return holdFor(max(e.maxT(), hookTimeout(c)), max(e.maxQ(), queueTimeout(c)))
}

// maxT is the longest hooks.timeout this engine has run with.
func (e *Engine) maxT() time.Duration { return time.Duration(e.maxTimeout.Load()) }

// maxQ is the longest hooks.queue_timeout this engine has run with.
func (e *Engine) maxQ() time.Duration { return time.Duration(e.maxQueue.Load()) }

// killGrace is the longest SIGTERM-to-SIGKILL grace of the script runners
// this engine has run with.
func (e *Engine) killGrace() time.Duration { return time.Duration(e.maxGrace.Load()) }

// staleAge is how old a pending row must be before the stale cleanup takes
// it: twice the script timeout, and at least long enough for a connect
// script to have started (startBudget) and, killed at its timeout, to be
// gone (runBound). With the defaults (30s, 5s) that is twice the timeout.
func (e *Engine) staleAge() time.Duration {
	t := e.maxT()
	return max(2*t, startBudget(e.maxQ())+runBound(t, e.killGrace())+time.Second)
}
