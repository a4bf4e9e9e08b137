package reconcile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/config"
	"github.com/wgkeeper/wgkeeper/wg"
)

// OrphanState is what the engine last saw of one interface's orphans:
// device peers that are not active configs in the store.
type OrphanState struct {
	Interface string
	// Orphans counts them. When there are more than Limit, former configs
	// (peers the store has D events for, whose removal from the device
	// failed) are left out of the count: they are removed whatever the
	// limit.
	Orphans int
	// Limit is the interface's orphan_removal_limit for the device as read.
	Limit int
	// Blocked is set when orphans = "remove" and Orphans > Limit: reconcile
	// removes none of them (an empty or wrong store must not wipe a full
	// device) until `reconcile -force` or a higher limit. A later look
	// under the limit clears it.
	Blocked bool
	// Held are the orphans left on the device, kept (orphans = "keep") or
	// blocked, sorted by key, with their allowed IPs. A create never
	// hands out an address they hold.
	Held []HeldOrphan
	// SeenAt is when the device was read.
	SeenAt time.Time
}

// HeldOrphan is a device peer the store does not know that stays on the
// device.
type HeldOrphan struct {
	PublicKey  wgtypes.Key
	AllowedIPs []netip.Prefix
	// Keeps are the allowed IPs that overlap a profile range of the
	// interface: addresses no config gets while the orphan holds them.
	Keeps []netip.Prefix
}

// KeepsText is Keeps for people: host prefixes as bare addresses, joined
// with ", "; "" when the orphan holds no pool address.
func (h HeldOrphan) KeepsText() string {
	var b []byte
	for i, p := range h.Keeps {
		if i > 0 {
			b = append(b, ", "...)
		}
		if p.IsSingleIP() {
			b = p.Addr().AppendTo(b)
		} else {
			b = p.AppendTo(b)
		}
	}
	return string(b)
}

// HeldKeys returns the keys of s.Held.
func (s OrphanState) HeldKeys() []wgtypes.Key {
	out := make([]wgtypes.Key, len(s.Held))
	for i, h := range s.Held {
		out[i] = h.PublicKey
	}
	return out
}

// ErrBlocked matches (errors.Is) the error OrphanState.Err returns for a
// blocked interface.
var ErrBlocked = errors.New("orphan removal blocked")

// Err is nil unless the state is blocked; then it says so, with the
// numbers and what to do.
func (s OrphanState) Err() error {
	if !s.Blocked {
		return nil
	}
	return fmt.Errorf("%w: %d device peers are not in the store, more than orphan_removal_limit (%d) allows to remove at once; none removed; %s",
		ErrBlocked, s.Orphans, s.Limit, ForceHint(s.Interface))
}

// ForceHint is what an operator runs to lift the block of an interface.
func ForceHint(iface string) string {
	return fmt.Sprintf("if the store is right, run `wgkeeper reconcile -force %s`; otherwise restore the database, or raise orphan_removal_limit", iface)
}

// assess turns one device read into the plan reconcile would write, with
// the orphan policy and the orphan removal limit applied, and what it
// found about the orphans. With force, the limit does not hold back the
// removals (the state still says whether it would have).
//
// Errors come from the store (reading the desired state or the events)
// or from an invalid plan; the device is not read again.
func (e *Engine) assess(ctx context.Context, ifc config.Interface, d *wg.Device, force bool) (wg.Plan, OrphanState, error) {
	st := OrphanState{Interface: ifc.Name, Limit: ifc.OrphanRemovalLimit.For(len(d.Peers)), SeenAt: e.clock()}
	policy := wg.OrphansRemove
	if ifc.Orphans == config.OrphansKeep {
		policy = wg.OrphansKeep
	}
	want, err := e.desired(ctx, ifc.Name)
	if err != nil {
		return wg.Plan{}, st, fmt.Errorf("skipped, store not read: %w", err)
	}
	plan, err := wg.MakePlan(want, d.Peers, policy)
	if err != nil {
		return wg.Plan{}, st, err
	}
	var held []wgtypes.Key
	switch {
	case len(plan.KeptOrphans) > 0:
		// "keep" is for peers someone else put there. A peer this store
		// has D events for was a config of ours that is gone (its
		// removal from the device failed or was interrupted): it goes.
		ours, err := e.store.Disconnected(ctx, plan.KeptOrphans)
		if err != nil {
			return wg.Plan{}, st, err
		}
		kept := plan.KeptOrphans[:0:0]
		for _, k := range plan.KeptOrphans {
			if ours[k] {
				plan.Remove = append(plan.Remove, k)
			} else {
				kept = append(kept, k)
			}
		}
		plan.KeptOrphans = kept
		st.Orphans = len(kept)
		held = kept
	case len(plan.Remove) > st.Limit:
		// Only above the limit is it worth telling former configs
		// (removed whatever the limit) from peers the store never had.
		ours, err := e.store.Disconnected(ctx, plan.Remove)
		if err != nil {
			return wg.Plan{}, st, err
		}
		var foreign, former []wgtypes.Key
		for _, k := range plan.Remove {
			if ours[k] {
				former = append(former, k)
			} else {
				foreign = append(foreign, k)
			}
		}
		st.Orphans = len(foreign)
		if len(foreign) > st.Limit {
			st.Blocked = true
			if !force {
				plan.Remove = former
				held = foreign
			}
		}
	default:
		st.Orphans = len(plan.Remove)
	}
	if len(held) > 0 {
		ips := make(map[wgtypes.Key][]netip.Prefix, len(held))
		for _, k := range held {
			ips[k] = nil
		}
		for _, p := range d.Peers {
			if _, ok := ips[p.PublicKey]; ok {
				ips[p.PublicKey] = p.AllowedIPs
			}
		}
		var ranges []netip.Prefix
		for _, p := range e.Config().ProfilesOn(ifc.Name) {
			for _, r := range []netip.Prefix{p.IPv4Range, p.IPv6Range} {
				if r.IsValid() {
					ranges = append(ranges, r)
				}
			}
		}
		st.Held = make([]HeldOrphan, len(held))
		for i, k := range held { // sorted by key, as the plan is
			h := HeldOrphan{PublicKey: k, AllowedIPs: ips[k]}
			for _, a := range h.AllowedIPs {
				if slices.ContainsFunc(ranges, a.Overlaps) {
					h.Keeps = append(h.Keeps, a)
				}
			}
			st.Held[i] = h
		}
	}
	slices.SortFunc(plan.Remove, func(a, b wgtypes.Key) int { return bytes.Compare(a[:], b[:]) })
	return plan, st, nil
}

// rememberOrphans stores the latest look at an interface's orphans, and
// logs a change of its blocked state.
func (e *Engine) rememberOrphans(st OrphanState) {
	e.mu.Lock()
	prev, had := e.orphans[st.Interface]
	e.orphans[st.Interface] = st
	e.mu.Unlock()
	switch {
	case st.Blocked && (!prev.Blocked || prev.Orphans != st.Orphans || prev.Limit != st.Limit):
		e.log.Error("orphan removal blocked: more device peers are missing from the store than orphan_removal_limit allows to remove; none removed",
			"iface", st.Interface, "orphans", st.Orphans, "limit", st.Limit, "hint", ForceHint(st.Interface))
	case had && prev.Blocked && !st.Blocked:
		e.log.Info("orphan removal no longer blocked", "iface", st.Interface, "orphans", st.Orphans, "limit", st.Limit)
	}
}

// Orphans returns the engine's latest look at an interface's orphans (by
// a reconcile, dry run included, a create, or Inspect); ok is false when
// this engine has not read that device successfully yet.
func (e *Engine) Orphans(iface string) (OrphanState, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	st, ok := e.orphans[iface]
	return st, ok
}

// Blocked returns the configured interfaces whose orphan removal the
// latest look found blocked, in config order.
func (e *Engine) Blocked() []OrphanState {
	var out []OrphanState
	for _, ifc := range e.Config().Interfaces {
		if st, ok := e.Orphans(ifc.Name); ok && st.Blocked {
			out = append(out, st)
		}
	}
	return out
}

// Inspect assesses a device read the caller made (status pages), exactly
// as a reconcile would, and remembers the result: blocked state and held
// orphans are then as fresh as that read. It writes nothing.
//
// Errors: the interface is not configured, or the store could not be
// read (the remembered state is left as it was).
func (e *Engine) Inspect(ctx context.Context, iface string, d *wg.Device) (OrphanState, error) {
	ifc, ok := e.Config().Interface(iface)
	if !ok {
		return OrphanState{}, fmt.Errorf("interface %q is not configured", iface)
	}
	e.rememberKey(iface, d.PublicKey)
	_, st, err := e.assess(ctx, ifc, d, false)
	if err != nil {
		return OrphanState{}, fmt.Errorf("inspect %s: %w", iface, err)
	}
	e.rememberOrphans(st)
	return st, nil
}

// look reads an interface once and remembers its public key and its
// orphans; create uses it when this engine has not seen the device yet.
// err is a device read error (ErrDeviceUnavailable); lookErr says why the
// orphans could not be assessed (the key is remembered all the same).
func (e *Engine) look(ctx context.Context, ifc config.Interface) (d *wg.Device, lookErr, err error) {
	d, err = e.dev.Read(ctx, ifc.Name)
	if err != nil {
		e.obs.DeviceReadError(ifc.Name)
		return nil, nil, fmt.Errorf("read %s for its public key and orphans: %w", ifc.Name, unavailable(err))
	}
	e.rememberKey(ifc.Name, d.PublicKey)
	_, st, lookErr := e.assess(ctx, ifc, d, false)
	if lookErr == nil {
		e.rememberOrphans(st)
	}
	return d, lookErr, nil
}

// heldAddrs returns the allowed IPs of the orphans that stay on an
// interface, for the allocator to skip. It uses the engine's latest look
// (every reconcile refreshes it); an engine that has not seen the device
// yet reads it once. An orphan that appeared after the latest look is not
// known: see the README ("orphans = keep").
func (e *Engine) heldAddrs(ctx context.Context, ifc config.Interface) ([]netip.Prefix, error) {
	st, ok := e.Orphans(ifc.Name)
	if !ok {
		_, lookErr, err := e.look(ctx, ifc)
		if err != nil {
			return nil, err
		}
		if lookErr != nil {
			return nil, fmt.Errorf("look at the orphans of %s: %w", ifc.Name, lookErr)
		}
		st, _ = e.Orphans(ifc.Name)
	}
	var out []netip.Prefix
	for _, h := range st.Held {
		out = append(out, h.Keeps...)
	}
	return out, nil
}
