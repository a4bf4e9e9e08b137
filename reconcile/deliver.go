package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/wgkeeper/wgkeeper/config"
	"github.com/wgkeeper/wgkeeper/hooks"
	"github.com/wgkeeper/wgkeeper/store"
)

// Delivery counts what one Deliver call did.
type Delivery struct {
	Done    int // script ran and exited 0 (or no script is configured)
	Retried int // failed, scheduled again
	Failed  int // failed for the last time: status failed
}

func (d *Delivery) add(o Delivery) {
	d.Done += o.Done
	d.Retried += o.Retried
	d.Failed += o.Failed
}

// Deliver runs every due disconnect event in id order, with the script
// runner's concurrency, until none is due. Each event is claimed with a
// lease first, so two processes never run one event at once; a lease left by
// a dead process is released at once when its owner file shows it dead, or
// else expires, and the event is run again (at-least-once).
//
// It first releases the leases of dead owners (ReclaimDead), so events a
// crashed process had taken are delivered now rather than when their
// leases would run out; a failure there is logged and delivery goes on.
func (e *Engine) Deliver(ctx context.Context) (Delivery, error) {
	var total Delivery
	if _, err := e.holdOwner(); err != nil {
		return total, fmt.Errorf("deliver events: %w", err)
	}
	if _, err := e.ReclaimDead(ctx); err != nil {
		e.log.Error("release the leases of dead owners; they run out in time instead", "err", err)
	}
	limit := 4 * max(e.Config().Hooks.Concurrency, 1)
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		now := e.clock()
		owner := e.claimOwner()
		evs, err := e.store.ClaimDue(ctx, owner, now, now.Add(e.leaseFor()), limit)
		if err != nil {
			return total, fmt.Errorf("claim due events: %w", err)
		}
		if len(evs) == 0 {
			return total, nil
		}
		if e.nodes != nil {
			e.takeOffDevices(context.WithoutCancel(ctx), evs)
		}
		total.add(e.deliverBatch(context.WithoutCancel(ctx), evs, owner))
	}
}

// deliverBatch runs the events with at most hooks.concurrency at once. Each
// event's lease is renewed just before its script starts, so a long batch
// never outlives its leases; an event whose lease was lost is left to
// whoever holds it now.
func (e *Engine) deliverBatch(ctx context.Context, evs []store.Event, owner string) Delivery {
	var (
		mu  sync.Mutex // guards out
		out Delivery
		wg  sync.WaitGroup
	)
	work := make(chan store.Event)
	for i := 0; i < min(max(e.Config().Hooks.Concurrency, 1), len(evs)); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ev := range work {
				r := e.deliverOne(ctx, ev, owner)
				mu.Lock()
				switch r {
				case outcomeDone:
					out.Done++
				case outcomeRetry:
					out.Retried++
				case outcomeFailed:
					out.Failed++
				}
				mu.Unlock()
			}
		}()
	}
	for _, ev := range evs {
		work <- ev
	}
	close(work)
	wg.Wait()
	return out
}

type outcome int

const (
	outcomeDone outcome = iota
	outcomeRetry
	outcomeFailed
	outcomeLost
)

func (e *Engine) deliverOne(ctx context.Context, ev store.Event, owner string) outcome {
	log := e.log.With("event_id", ev.ID, "peer", ev.PublicKey.String(), "iface", ev.Interface, "user", ev.UserID)
	if err := e.store.RenewLease(ctx, ev.ID, owner, e.clock().Add(e.leaseFor())); err != nil {
		log.Warn("event lease lost before its script ran; left to its current holder", "err", err)
		return outcomeLost
	}
	// Waiting for a free script slot must not outlive the lease: the run,
	// slot wait included, ends (a kill included) before the lease does.
	rctx, cancel := context.WithTimeout(ctx, e.leaseFor()-e.maxT()-e.killGrace()-5*time.Second)
	res := e.runScript(rctx, ev, hooks.RunOptions{})
	cancel()
	e.point("deliver:script-ran")
	if res.OK() {
		if err := e.store.MarkDone(ctx, ev.ID, owner); err != nil {
			log.Error("mark event done; it will be delivered again", "err", err)
			return outcomeLost
		}
		return outcomeDone
	}
	hc := e.Config().Hooks
	attempts := ev.Attempts + 1
	final := attempts >= max(hc.MaxAttempts, 1)
	if ev.Scope == store.ScopeSession && ev.Kind == store.KindConnect {
		// A session connect is an answer, not a delivery: its refusal is
		// recorded once, never retried, and acted on.
		return e.sessionRejected(ctx, ev, owner, failureText(res), log)
	}
	next := e.clock().Add(Backoff(attempts, hc.RetryBase, hc.RetryMax))
	msg := failureText(res)
	if err := e.store.MarkAttemptFailed(ctx, ev.ID, owner, msg, next, final); err != nil {
		log.Error("record failed delivery", "err", err)
		return outcomeLost
	}
	if final {
		log.Error("disconnect script failed for the last time; event marked failed", "scope", ev.Scope, "attempts", attempts, "err", msg)
		return outcomeFailed
	}
	log.Warn("disconnect script failed; will retry", "scope", ev.Scope, "attempts", attempts, "next_attempt_at", next.Format(time.RFC3339), "err", msg)
	return outcomeRetry
}

func failureText(r hooks.Result) string {
	if err := r.Failure(); err != nil {
		return err.Error()
	}
	return "failed"
}

// Backoff is the wait before attempt n+1 after n failed attempts: base
// doubled n-1 times, at most limit.
func Backoff(n int, base, limit time.Duration) time.Duration {
	if base <= 0 {
		base = time.Second
	}
	d := base
	for i := 1; i < n; i++ {
		d *= 2
		if limit > 0 && d >= limit {
			return limit
		}
		if d <= 0 { // overflow
			return limit
		}
	}
	if limit > 0 && d > limit {
		return limit
	}
	return d
}

// Retry makes one failed event due again. The event keeps the actor of
// the change it records; who retried it is logged.
func (e *Engine) Retry(ctx context.Context, id int64) error {
	if err := e.store.RetryEvent(ctx, id); err != nil {
		return err
	}
	e.log.Info("event retried", "event_id", id, "actor", ActorFrom(ctx))
	return nil
}

// RetryFailed makes every failed event due again and returns how many.
// Who retried them is logged, as for Retry.
func (e *Engine) RetryFailed(ctx context.Context) (int, error) {
	n, err := e.store.RetryFailed(ctx)
	if err != nil {
		return n, err
	}
	e.log.Info("failed events retried", "events", n, "actor", ActorFrom(ctx))
	return n, nil
}

// sessionRejected records that sessions.script refused a session connect
// (status failed at once) and, with sessions.on_reject = "revoke", revokes
// the config: its session ends and both D events follow.
func (e *Engine) sessionRejected(ctx context.Context, ev store.Event, owner, msg string, log *slog.Logger) outcome {
	if err := e.store.MarkAttemptFailed(ctx, ev.ID, owner, msg, e.clock(), true); err != nil {
		log.Error("record refused session connect", "err", err)
		return outcomeLost
	}
	if e.Config().Sessions.OnReject != config.OnRejectRevoke {
		log.Warn("session script refused a connect; recorded (sessions.on_reject = ignore)", "err", msg)
		return outcomeFailed
	}
	log.Warn("session script refused a connect; revoking the config (sessions.on_reject = revoke)", "err", msg)
	p, err := e.store.GetPeer(ctx, ev.PublicKey)
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			log.Error("revoke config refused by the session script; the next refusal tries again", "err", err)
		}
		return outcomeFailed
	}
	go func() {
		// Not in this delivery worker: the removal delivers its own
		// events, which may need this worker's script slot.
		if _, err := e.remove(context.WithoutCancel(ctx), []store.Peer{p}, store.ReasonRevoked); err != nil {
			log.Error("revoke config refused by the session script", "err", err)
		}
	}()
	return outcomeFailed
}

// takeOffDevices removes from this node's devices the peers of claimed D
// events that are still there, reading their byte counters into the
// events first: a config of this node deleted through another node (many
// nodes on one database) leaves its peer on the device until its D event
// reaches this node. A key that is a config again (created anew meanwhile)
// stays. Errors are logged; the scripts run all the same, and the next
// reconcile removes what is left.
func (e *Engine) takeOffDevices(ctx context.Context, evs []store.Event) {
	cfg := e.Config()
	byIface := map[string][]int{}
	for i, ev := range evs {
		if _, ok := cfg.Interface(ev.Interface); !ok || ev.Kind != store.KindDisconnect || ev.Scope == store.ScopeSession {
			continue
		}
		if _, err := e.store.GetPeer(ctx, ev.PublicKey); err == nil {
			continue
		} else if !errors.Is(err, store.ErrNotFound) {
			e.log.Error("look up a removed config before taking it off the device", "iface", ev.Interface, "peer", ev.PublicKey.String(), "err", err)
			continue
		}
		byIface[ev.Interface] = append(byIface[ev.Interface], i)
	}
	names := make([]string, 0, len(byIface))
	for name := range byIface {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		l, err := e.deviceLock(ctx, name)
		if err == nil {
			err = e.removeFromDevice(ctx, name, evs, byIface[name])
			l.unlock()
		}
		if err != nil {
			e.log.Error("take removed configs off the device; the next reconcile removes them", "iface", name, "err", err)
		}
	}
}
