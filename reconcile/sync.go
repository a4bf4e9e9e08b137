package reconcile

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/wg"
)

// Report is the outcome of reconciling one interface.
type Report struct {
	Interface string
	// Plan is what was (or, in a dry run, would be) written.
	Plan wg.Plan
	// Counts is what was written; zero in a dry run.
	Counts wg.Counts
	// Orphans is what the device read showed of the orphans: with
	// Orphans.Blocked and no Force, Plan removes none of Orphans.Held;
	// with Force, Orphans.Blocked says the limit was exceeded and lifted.
	Orphans OrphanState
	// Repairs lists what was done to the interface itself before its
	// peers: recreated, set up, addresses added (interfaces this process
	// owns), private key or listen port set again (any mode, when the
	// config names them).
	Repairs []string
	// Expiring lists, in a dry run, the active configs that housekeeping
	// would expire now.
	Expiring []store.Peer
	DryRun   bool
	// Force lifted the orphan removal limit for this run.
	Force    bool
	Duration time.Duration
	// Err is set when the interface was skipped (device unreadable) or the
	// write failed; nothing is assumed about the device then.
	Err error
}

// ReconcileOptions change what one reconcile does.
type ReconcileOptions struct {
	// DryRun plans and changes nothing.
	DryRun bool
	// Force removes every orphan even above orphan_removal_limit: the
	// operator confirms the store is right (`reconcile -force IFACE`).
	Force bool
}

// Reconcile makes one interface match the store: one device read, one pure
// plan, one incremental write. Missing peers are restored without a C event,
// drift is repaired, orphans are removed or kept per the interface's
// orphans setting; more orphans to remove than orphan_removal_limit allows
// blocks their removal (see OrphanState). A device that cannot be read is
// skipped with an error and nothing is touched. With dryRun nothing
// changes.
func (e *Engine) Reconcile(ctx context.Context, iface string, dryRun bool) Report {
	return e.ReconcileWith(ctx, iface, ReconcileOptions{DryRun: dryRun})
}

// ReconcileWith is Reconcile with options.
func (e *Engine) ReconcileWith(ctx context.Context, iface string, o ReconcileOptions) Report {
	dryRun := o.DryRun
	start := time.Now()
	r := Report{Interface: iface, DryRun: dryRun, Force: o.Force}
	r.Err = e.reconcile(ctx, iface, o, &r)
	r.Duration = time.Since(start)
	if !dryRun {
		e.obs.Reconciled(iface, r.Counts, r.Duration, r.Err)
		if r.Err != nil {
			e.log.Error("reconcile", "iface", iface, "actor", ActorFrom(ctx), "err", r.Err)
		} else if !r.Plan.Empty() || len(r.Repairs) > 0 {
			e.log.Info("reconciled", "iface", iface, "added", r.Counts.Added, "updated", r.Counts.Updated,
				"removed", r.Counts.Removed, "orphans_kept", len(r.Plan.KeptOrphans), "forced", o.Force, "repairs", strings.Join(r.Repairs, ", "),
				"duration", r.Duration.Round(time.Microsecond), "actor", ActorFrom(ctx))
		}
	}
	return r
}

func (e *Engine) reconcile(ctx context.Context, iface string, o ReconcileOptions, r *Report) error {
	cfg := e.Config()
	ifc, ok := cfg.Interface(iface)
	if !ok {
		return fmt.Errorf("interface %q is not configured", iface)
	}
	if !o.DryRun {
		l, err := e.deviceLock(ctx, iface)
		if err != nil {
			return err
		}
		defer l.unlock()
		// An interface this process owns is repaired first (recreated,
		// set up, addresses restored); its peers follow below.
		rep, err := e.ensureLink(ctx, iface)
		r.Repairs = append(r.Repairs, rep...)
		if err != nil {
			return fmt.Errorf("skipped, interface not restored: %w", unavailable(err))
		}
	}
	// Device first, then store: a peer a concurrent create put on the
	// device was activated in the store before, so it is in the store read
	// and can never be mistaken for an orphan.
	ls, lerr := e.dev.Link(ctx, iface)
	readAt := e.clock()
	d, err := e.dev.Read(ctx, iface)
	if err != nil {
		e.obs.DeviceReadError(iface)
		return fmt.Errorf("skipped, device not read: %w", unavailable(err))
	}
	e.noteFullRead(iface, d, readAt)
	if lerr == nil {
		e.noteRead(iface, &ls, d)
	} else {
		e.noteRead(iface, nil, d)
	}
	var fieldErr error
	if !o.DryRun {
		// Key and port the config names, re-applied in a write of their
		// own; the peers are reconciled all the same.
		rep, err := e.keepDevice(ctx, ifc, d, e.log)
		r.Repairs = append(r.Repairs, rep...)
		if err != nil {
			fieldErr = fmt.Errorf("device fields: %w", err)
		}
	}
	plan, st, err := e.assess(ctx, ifc, d, o.Force)
	if err != nil {
		return err
	}
	r.Orphans = st
	if o.DryRun {
		// What the device looks like is news even in a dry run; a
		// forced dry run does not lift the block.
		e.rememberOrphans(st)
		r.Plan = plan
		exp, err := e.store.ListPeers(ctx, store.PeerFilter{Interface: iface, State: store.StateActive, ExpiresBefore: e.clock()})
		if err != nil {
			return err
		}
		r.Expiring = exp
		return nil
	}
	if o.Force && st.Blocked {
		// The report still says the limit was exceeded; the engine's
		// state is cleared, since the orphans are going.
		e.log.Warn("orphan removal forced above orphan_removal_limit", "iface", iface, "orphans", st.Orphans, "limit", st.Limit, "actor", ActorFrom(ctx))
		st.Blocked = false
	}
	e.rememberOrphans(st)
	if len(plan.Remove) > 0 {
		// A read that raced a write can show peers that are not really
		// there; remove only what a second read confirms.
		plan.Remove, err = e.confirmOnDevice(ctx, iface, plan.Remove)
		if err != nil {
			return err
		}
	}
	r.Plan = plan
	if plan.Empty() {
		return fieldErr
	}
	c, err := e.apply(ctx, iface, plan)
	r.Counts = c
	if err != nil {
		return errors.Join(fieldErr, fmt.Errorf("write plan: %w", err))
	}
	return fieldErr
}

// desired returns the interface's active configs in device form. It reads
// the store only when something was committed since the last read, so a
// reconcile with nothing to do costs one device read and a comparison.
func (e *Engine) desired(ctx context.Context, iface string) ([]wg.Wanted, error) {
	v, err := e.store.Version(ctx)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	c, ok := e.wantCache[iface]
	e.mu.Unlock()
	if ok && c.version == v {
		return c.wanted, nil
	}
	peers, err := e.store.ListPeers(ctx, store.PeerFilter{Interface: iface, State: store.StateActive})
	if err != nil {
		return nil, err
	}
	want := make([]wg.Wanted, len(peers))
	for i, p := range peers {
		want[i] = wanted(p)
	}
	e.mu.Lock()
	e.wantCache[iface] = wantedState{version: v, wanted: want}
	e.mu.Unlock()
	return want, nil
}

func (e *Engine) confirmOnDevice(ctx context.Context, iface string, keys []wgtypes.Key) ([]wgtypes.Key, error) {
	d, err := e.dev.Read(ctx, iface)
	if err != nil {
		e.obs.DeviceReadError(iface)
		return nil, fmt.Errorf("skipped, second device read: %w", unavailable(err))
	}
	there := make(map[wgtypes.Key]bool, len(d.Peers))
	for _, p := range d.Peers {
		there[p.PublicKey] = true
	}
	out := keys[:0]
	for _, k := range keys {
		if there[k] {
			out = append(out, k)
		}
	}
	return out, nil
}

// ReconcileAll reconciles every configured interface, in config order.
func (e *Engine) ReconcileAll(ctx context.Context, dryRun bool) []Report {
	cfg := e.Config()
	out := make([]Report, 0, len(cfg.Interfaces))
	for _, ifc := range cfg.Interfaces {
		out = append(out, e.Reconcile(ctx, ifc.Name, dryRun))
	}
	return out
}

// Summary is what one housekeeping run did.
type Summary struct {
	Expired int
	// Idle counts configs reclaimed for want of a handshake (idle_expiry).
	Idle    int
	Stale   int
	Reports []Report
	// Delivery counts every D event delivered in the run: those of the
	// configs it expired or cleaned as stale, run as they were removed,
	// and the due ones the delivery step ran.
	Delivery Delivery
	Pruned   int
	// PruneSkipped: another node is the cluster leader and prunes (see
	// Engine.Lead).
	PruneSkipped bool
	Duration     time.Duration
	Errors       []string
	StartedAt    time.Time
}

// Housekeeping runs, in order: expire, reclaim idle configs, clean stale
// pending, reconcile every
// interface, deliver due events, prune done events older than
// log_retention (on the cluster leader only, see Lead). Two runs never overlap, across processes too: with wait the
// call waits for a running one to end; without, it returns ErrBusy.
// Failures of one step are recorded in Summary.Errors and the later steps
// still run; the error returned joins them all (errors.Join), each wrapped
// with its step ("expire: ...", "reconcile wg0: ..."). A run that could not
// take the lock returns ErrBusy (without wait) or the lock's error, with a
// zero Summary.
func (e *Engine) Housekeeping(ctx context.Context, wait bool) (Summary, error) {
	l, err := e.housekeepingLock(ctx, wait)
	if err != nil {
		return Summary{}, err
	}
	defer l.unlock()
	start := time.Now()
	s := Summary{StartedAt: e.clock()}
	var errs []error
	note := func(step string, err error) {
		if err != nil {
			err = fmt.Errorf("%s: %w", step, err)
			errs = append(errs, err)
			s.Errors = append(s.Errors, err.Error())
		}
	}

	r, err := e.Expire(ctx)
	s.Expired = len(r.Events)
	s.Delivery.add(r.Delivery)
	note("expire", err)
	noteDevice(note, "expire", r)

	r, err = e.ReclaimIdle(ctx)
	s.Idle = len(r.Events)
	s.Delivery.add(r.Delivery)
	note("idle", err)
	noteDevice(note, "idle", r)

	r, err = e.CleanStale(ctx)
	s.Stale = len(r.Events)
	s.Delivery.add(r.Delivery)
	note("stale", err)
	noteDevice(note, "stale", r)

	s.Reports = e.ReconcileAll(ctx, false)
	for _, rep := range s.Reports {
		note("reconcile "+rep.Interface, rep.Err)
	}

	d, err := e.Deliver(ctx)
	s.Delivery.add(d)
	note("deliver", err)

	if ret := e.Config().Housekeeping.LogRetention; ret > 0 {
		// A cluster-wide job: with many nodes, the leader's alone.
		if e.Lead(ctx) {
			s.Pruned, err = e.store.PruneEvents(ctx, e.clock().Add(-ret))
			note("prune", err)
		} else {
			s.PruneSkipped = true
			e.log.Debug("housekeeping: not pruning old events; the cluster leader does", "node", e.Config().Node)
		}
	}
	s.Duration = time.Since(start)
	e.obs.HousekeepingRun(s.Duration, errors.Join(errs...))
	e.log.Info("housekeeping", "expired", s.Expired, "idle", s.Idle, "stale", s.Stale, "delivered", s.Delivery.Done,
		"retried", s.Delivery.Retried, "failed", s.Delivery.Failed, "pruned", s.Pruned,
		"errors", len(s.Errors), "duration", s.Duration.Round(time.Microsecond), "actor", ActorFrom(ctx))
	return s, errors.Join(errs...)
}

func noteDevice(note func(string, error), step string, r Removed) {
	for iface, err := range r.DeviceErrs {
		note(step+" on "+iface, err)
	}
}
