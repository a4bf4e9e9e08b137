package sched

import (
	"context"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/reconcile"
	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/store/sqlite"
)

// A config written by another process (a second handle on the same file)
// is expired at its expiry: the store's change notification re-arms the
// timer, and a shortened expiry re-arms it again.
func TestExpiryWrittenByAnotherProcess(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "wgkeeper.db")
	h := newHarness()
	open := func() *sqlite.Store {
		s, err := sqlite.Open(ctx, path, sqlite.Options{Create: true, Now: h.clk.Now, ChangePoll: 5 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	mine, other := open(), open()

	h.eng.st = nil // the real store decides what is due
	h.start(t, Options{Store: mine})

	key, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	at := t0.Add(10 * time.Minute)
	p, c, err := other.InsertPending(ctx, store.NewPeer{PublicKey: key.PublicKey(), Interface: "wg0", ProfileID: "staff",
		UserID: "alice", ExpiresAt: at, IPv4Range: netip.MustParsePrefix("10.9.0.0/24")})
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Activate(ctx, p.PublicKey, c.ID); err != nil {
		t.Fatal(err)
	}
	h.waitArmed(t, at)

	sooner := t0.Add(2 * time.Minute)
	if _, err := other.SetExpiry(ctx, []wgtypes.Key{p.PublicKey}, sooner); err != nil {
		t.Fatal(err)
	}
	h.waitArmed(t, sooner)
	h.clk.Set(sooner)
	if got := h.waitCalls(t, "expire", 1); !got[0].Equal(sooner) {
		t.Fatalf("expire ran at %v, want %v", got[0], sooner)
	}
}

// BenchmarkExpiryLatency measures, on the system clock and with the
// daemon's change poll (500 ms), how late the step starts after an expiry
// that another handle wrote 700 ms before it (the daemon's "D within N ms
// of expiry", without the script): reported as late-ms, the mean over b.N
// expiries, and max-late-ms.
func BenchmarkExpiryLatency(b *testing.B) {
	ctx := context.Background()
	path := filepath.Join(b.TempDir(), "wgkeeper.db")
	open := func() *sqlite.Store {
		s, err := sqlite.Open(ctx, path, sqlite.Options{Create: true})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		return s
	}
	mine, other := open(), open()
	fired := make(chan time.Time, 1)
	eng := &latencyEngine{st: mine, fired: fired}
	s, err := New(Options{Engine: eng, Store: mine})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Stop() })
	var late, worst time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		key, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			b.Fatal(err)
		}
		at := time.Now().Add(700 * time.Millisecond)
		p, c, err := other.InsertPending(ctx, store.NewPeer{PublicKey: key.PublicKey(), Interface: "wg0", ProfileID: "staff",
			UserID: "alice", ExpiresAt: at, IPv4Range: netip.MustParsePrefix("10.0.0.0/8")})
		if err != nil {
			b.Fatal(err)
		}
		if err := other.Activate(ctx, p.PublicKey, c.ID); err != nil {
			b.Fatal(err)
		}
		eng.arm(at)
		got := <-fired
		late += got.Sub(at)
		worst = max(worst, got.Sub(at))
		// Expired for real, so that the next expiry is the next one.
		if _, err := other.DeletePeers(ctx, []wgtypes.Key{p.PublicKey}, store.ReasonExpired, "", time.Time{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(late.Microseconds())/1000/float64(b.N), "late-ms")
	b.ReportMetric(float64(worst.Microseconds())/1000, "max-late-ms")
}

// latencyEngine reports the first Expire at or after the armed expiry.
type latencyEngine struct {
	st    *sqlite.Store
	mu    sync.Mutex // guards at
	at    time.Time
	fired chan time.Time
}

func (e *latencyEngine) arm(at time.Time) {
	e.mu.Lock()
	e.at = at
	e.mu.Unlock()
}

func (e *latencyEngine) Expire(context.Context) (reconcile.Removed, error) {
	now := time.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.at.IsZero() && !now.Before(e.at) {
		e.at = time.Time{}
		e.fired <- now
	}
	return reconcile.Removed{}, nil
}

// Deliver marks the due events done, as a script that exits 0 would.
func (e *latencyEngine) Deliver(ctx context.Context) (reconcile.Delivery, error) {
	now := time.Now()
	evs, err := e.st.ClaimDue(ctx, "bench", now, now.Add(time.Minute), 100)
	if err != nil {
		return reconcile.Delivery{}, err
	}
	for _, ev := range evs {
		if err := e.st.MarkDone(ctx, ev.ID, "bench"); err != nil {
			return reconcile.Delivery{}, err
		}
	}
	return reconcile.Delivery{Done: len(evs)}, nil
}

func (e *latencyEngine) Reconcile(context.Context, string, bool) reconcile.Report {
	return reconcile.Report{}
}
func (e *latencyEngine) ReconcileAll(context.Context, bool) []reconcile.Report { return nil }
func (e *latencyEngine) Housekeeping(context.Context, bool) (reconcile.Summary, error) {
	return reconcile.Summary{}, nil
}
