package reconcile

import (
	"context"
	"fmt"
	"sort"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/wg"
)

// Reasons recorded with disconnect events.
const (
	ReasonCreated = "created"
	ReasonDeleted = "deleted"
	ReasonExpired = "expired"
	ReasonRevoked = "revoked"
	ReasonStale   = "stale"
)

// batchSize bounds how many configs one expire or revoke step handles in one
// store transaction and one device write.
const batchSize = 1000

// Removed is the outcome of a delete, revoke, expire or stale cleanup.
type Removed struct {
	// Events are the disconnect events recorded, one per config removed.
	Events []store.Event
	// Delivered counts the events whose script ran successfully (or that
	// needed no script); the rest are retried by delivery.
	Delivered int
	// DeviceErrs are interfaces whose device could not be updated; the next
	// reconcile removes the peers from them.
	DeviceErrs map[string]error
}

func (r *Removed) merge(o Removed) {
	r.Events = append(r.Events, o.Events...)
	r.Delivered += o.Delivered
	for k, v := range o.DeviceErrs {
		if r.DeviceErrs == nil {
			r.DeviceErrs = map[string]error{}
		}
		r.DeviceErrs[k] = v
	}
}

// Delete removes one config: the row goes and a D event is recorded in one
// transaction, the peer leaves the device (its byte counters read first,
// into the event), then the event is delivered. store.ErrNotFound when no
// config has that key.
func (e *Engine) Delete(ctx context.Context, key wgtypes.Key) (Removed, error) {
	r, err := e.remove(ctx, []wgtypes.Key{key}, ReasonDeleted)
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
		r, err := e.remove(ctx, keysOf(peers), ReasonRevoked)
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
	return e.removeWhere(ctx, store.PeerFilter{State: store.StateActive, ExpiresBefore: e.clock()}, ReasonExpired)
}

// CleanStale removes configs left pending (a process died while the connect
// script ran) for longer than twice the script timeout, each with a D event
// of reason "stale": the connect may have reached the script.
func (e *Engine) CleanStale(ctx context.Context) (Removed, error) {
	age := 2 * e.Config().Hooks.Timeout
	return e.removeWhere(ctx, store.PeerFilter{State: store.StatePending, CreatedBefore: e.clock().Add(-age)}, ReasonStale)
}

func (e *Engine) removeWhere(ctx context.Context, f store.PeerFilter, reason string) (Removed, error) {
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
		r, err := e.remove(ctx, keysOf(peers), reason)
		all.merge(r)
		if reason == ReasonExpired {
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

// remove is the one way configs leave: store first (row gone, D event in
// the same transaction, leased to this engine), then device, then script.
func (e *Engine) remove(ctx context.Context, keys []wgtypes.Key, reason string) (Removed, error) {
	cfg := e.Config()
	lease := e.leaseFor()
	evs, err := e.store.DeletePeers(ctx, keys, reason, e.owner, e.clock().Add(lease))
	if err != nil {
		return Removed{}, fmt.Errorf("remove configs: %w", err)
	}
	if len(evs) == 0 {
		return Removed{}, nil
	}
	e.point("delete:stored")
	ctx = context.WithoutCancel(ctx)

	byIface := map[string][]int{}
	for i, ev := range evs {
		byIface[ev.Interface] = append(byIface[ev.Interface], i)
	}
	ifaces := make([]string, 0, len(byIface))
	for n := range byIface {
		ifaces = append(ifaces, n)
	}
	sort.Strings(ifaces)

	out := Removed{Events: evs}
	for _, name := range ifaces {
		if _, ok := cfg.Interface(name); !ok {
			continue // interface no longer configured: nothing to touch
		}
		if err := e.removeFromDevice(ctx, name, evs, byIface[name]); err != nil {
			if out.DeviceErrs == nil {
				out.DeviceErrs = map[string]error{}
			}
			out.DeviceErrs[name] = err
			e.log.Error("remove configs from device; the next reconcile removes them", "iface", name, "err", err)
		}
	}
	e.point("delete:device")
	for _, ev := range evs {
		e.log.Info("config removed", "iface", ev.Interface, "peer", ev.PublicKey.String(), "user", ev.UserID, "reason", reason, "event_id", ev.ID)
	}
	out.Delivered = e.deliverClaimed(ctx, evs)
	return out, nil
}

// removeFromDevice reads byte counters of the peers being removed, writes
// them into their events, and removes the peers in one device write.
func (e *Engine) removeFromDevice(ctx context.Context, iface string, evs []store.Event, idx []int) error {
	l, err := e.deviceLock(ctx, iface)
	if err != nil {
		return err
	}
	defer l.unlock()
	d, err := e.dev.Read(ctx, iface)
	if err != nil {
		e.obs.DeviceReadError(iface)
		return unavailable(err)
	}
	e.rememberKey(iface, d.PublicKey)
	onDev := make(map[wgtypes.Key]wg.Peer, len(d.Peers))
	for _, p := range d.Peers {
		onDev[p.PublicKey] = p
	}
	var plan wg.Plan
	for _, i := range idx {
		p, ok := onDev[evs[i].PublicKey]
		if !ok {
			continue
		}
		evs[i].BytesIn, evs[i].BytesOut = p.RxBytes, p.TxBytes
		if evs[i].Kind == "D" && (p.RxBytes != 0 || p.TxBytes != 0) {
			if err := e.store.SetEventBytes(ctx, evs[i].ID, p.RxBytes, p.TxBytes); err != nil {
				e.log.Error("record byte counters", "event_id", evs[i].ID, "err", err)
			}
		}
		plan.Remove = append(plan.Remove, p.PublicKey)
	}
	if len(plan.Remove) == 0 {
		return nil
	}
	_, err = e.dev.Apply(ctx, iface, plan)
	return err
}

// leaseFor is how long an engine holds an event it is about to deliver: the
// device step, the script's timeout, and a margin.
func (e *Engine) leaseFor() time.Duration {
	t := e.Config().Hooks.Timeout
	if t <= 0 {
		t = 30 * time.Second
	}
	return 2*t + time.Minute
}
