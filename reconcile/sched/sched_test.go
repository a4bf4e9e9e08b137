package sched

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wgkeeper/wgkeeper/internal/fakeclock"
	"github.com/wgkeeper/wgkeeper/reconcile"
	"github.com/wgkeeper/wgkeeper/store"
)

var t0 = time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)

// fakeStore answers the scheduler's reads from fields a test sets; notify
// stands for a commit by any process.
type fakeStore struct {
	mu        sync.Mutex // guards the following
	expiry    time.Time  // zero: none
	due       time.Time  // zero: none
	readErr   error
	checkErr  error
	changes   chan struct{}
	nextReads int
}

func newFakeStore() *fakeStore { return &fakeStore{changes: make(chan struct{}, 1)} }

func (f *fakeStore) NextExpiry(context.Context) (time.Time, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextReads++
	return f.expiry, !f.expiry.IsZero(), f.readErr
}

func (f *fakeStore) NextDue(context.Context) (time.Time, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.due, !f.due.IsZero(), f.readErr
}

func (f *fakeStore) Changes(ctx context.Context) <-chan struct{} {
	out := make(chan struct{}, 1)
	go func() {
		defer close(out)
		for {
			select {
			case <-ctx.Done():
				return
			case <-f.changes:
				select {
				case out <- struct{}{}:
				default:
				}
			}
		}
	}()
	return out
}

func (f *fakeStore) Check(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.checkErr
}

// set changes the store's state and notifies, as a commit would.
func (f *fakeStore) set(fn func(f *fakeStore)) {
	f.mu.Lock()
	fn(f)
	f.mu.Unlock()
	select {
	case f.changes <- struct{}{}:
	default:
	}
}

// fakeEngine records what the scheduler runs, at which clock time.
type fakeEngine struct {
	clk *fakeclock.Clock
	st  *fakeStore

	mu        sync.Mutex // guards the following
	calls     []call
	expireErr error
	block     chan struct{} // when set, Expire waits for it to close
	started   chan struct{} // when set, Expire closes it on entry
}

type call struct {
	what string // expire, deliver, reconcile IFACE, reconcile-all, housekeeping
	at   time.Time
}

func (e *fakeEngine) note(what string) {
	e.mu.Lock()
	e.calls = append(e.calls, call{what, e.clk.Now()})
	e.mu.Unlock()
}

func (e *fakeEngine) Expire(ctx context.Context) (reconcile.Removed, error) {
	e.note("expire")
	e.mu.Lock()
	block, started, err := e.block, e.started, e.expireErr
	e.mu.Unlock()
	if started != nil {
		close(started)
	}
	if block != nil {
		<-block
	}
	if err == nil && e.st != nil {
		// What expired is gone: the store's next expiry moves on.
		e.st.mu.Lock()
		if !e.st.expiry.After(e.clk.Now()) {
			e.st.expiry = time.Time{}
		}
		e.st.mu.Unlock()
	}
	return reconcile.Removed{}, err
}

func (e *fakeEngine) Deliver(context.Context) (reconcile.Delivery, error) {
	e.note("deliver")
	if e.st != nil {
		e.st.mu.Lock()
		if !e.st.due.After(e.clk.Now()) {
			e.st.due = time.Time{}
		}
		e.st.mu.Unlock()
	}
	return reconcile.Delivery{}, nil
}

func (e *fakeEngine) Reconcile(_ context.Context, iface string, _ bool) reconcile.Report {
	e.note("reconcile " + iface)
	return reconcile.Report{Interface: iface}
}

func (e *fakeEngine) ReconcileAll(context.Context, bool) []reconcile.Report {
	e.note("reconcile-all")
	return nil
}

func (e *fakeEngine) Housekeeping(context.Context, bool) (reconcile.Summary, error) {
	e.note("housekeeping")
	return reconcile.Summary{}, nil
}

// times returns when what was called, in order.
func (e *fakeEngine) times(what string) []time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []time.Time
	for _, c := range e.calls {
		if c.what == what {
			out = append(out, c.at)
		}
	}
	return out
}

// logBuf is a concurrency-safe log sink.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type harness struct {
	clk *fakeclock.Clock
	st  *fakeStore
	eng *fakeEngine
	log *logBuf
	s   *Scheduler
}

func newHarness() *harness {
	h := &harness{clk: fakeclock.New(t0), st: newFakeStore(), log: &logBuf{}}
	h.eng = &fakeEngine{clk: h.clk, st: h.st}
	return h
}

func start(t *testing.T, o Options) *harness {
	t.Helper()
	return newHarness().start(t, o)
}

func (h *harness) start(t *testing.T, o Options) *harness {
	t.Helper()
	o.Engine, o.Clock = h.eng, h.clk
	if o.Store == nil {
		o.Store = h.st
	}
	o.Logger = slog.New(slog.NewTextHandler(h.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if o.CheckEvery == 0 {
		o.CheckEvery = 24 * time.Hour // out of the way unless a test wants it
	}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	h.s = s
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop() })
	return h
}

// waitFor polls cond until it holds, failing after a generous bound.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// waitArmed waits until the scheduler has armed its timer at exactly at.
func (h *harness) waitArmed(t *testing.T, at time.Time) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !slices.ContainsFunc(h.clk.Timers(), at.Equal) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for a timer at %v; armed: %v; log:\n%s", at, h.clk.Timers(), h.log)
		}
		time.Sleep(time.Millisecond)
	}
}

// waitCalls waits until what was called n times and returns the times.
func (h *harness) waitCalls(t *testing.T, what string, n int) []time.Time {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d × %s (have %v)", n, what, h.eng.times(what)), func() bool {
		return len(h.eng.times(what)) >= n
	})
	return h.eng.times(what)
}

func TestExpiryFiresAtItsTime(t *testing.T) {
	h := start(t, Options{})
	at := t0.Add(90 * time.Second)
	h.st.set(func(f *fakeStore) { f.expiry = at })
	h.waitArmed(t, at)
	h.clk.Set(at.Add(-time.Nanosecond))
	h.waitArmed(t, at) // re-armed after the wake-up, still not due
	if got := h.eng.times("expire"); len(got) != 0 {
		t.Fatalf("expire ran at %v, before the expiry %v", got, at)
	}
	h.clk.Set(at)
	got := h.waitCalls(t, "expire", 1)
	if !got[0].Equal(at) {
		t.Fatalf("expire ran at %v, want %v", got[0], at)
	}
	h.waitCalls(t, "deliver", 1) // the step delivers what expiring made due
}

func TestShortenedExpiryRearms(t *testing.T) {
	h := start(t, Options{})
	h.st.set(func(f *fakeStore) { f.expiry = t0.Add(time.Hour) })
	h.waitArmed(t, t0.Add(time.Hour))
	// Another process shortens the expiry: the store notifies.
	sooner := t0.Add(5 * time.Second)
	h.st.set(func(f *fakeStore) { f.expiry = sooner })
	h.waitArmed(t, sooner)
	h.clk.Set(sooner)
	if got := h.waitCalls(t, "expire", 1); !got[0].Equal(sooner) {
		t.Fatalf("expire ran at %v, want %v", got[0], sooner)
	}
}

func TestRetryDueFires(t *testing.T) {
	h := start(t, Options{})
	due := t0.Add(17 * time.Second)
	h.st.set(func(f *fakeStore) { f.due = due })
	h.waitArmed(t, due)
	h.clk.Set(due)
	if got := h.waitCalls(t, "deliver", 1); !got[0].Equal(due) {
		t.Fatalf("deliver ran at %v, want %v", got[0], due)
	}
}

// A step that fails is retried after 1 s, 2 s, 4 s... capped (at 30 s
// without a reconcile interval); one success resets the back-off.
func TestBackoffDoublesAndCaps(t *testing.T) {
	h := start(t, Options{})
	h.eng.mu.Lock()
	h.eng.expireErr = errors.New("database or disk is full")
	h.eng.mu.Unlock()
	h.st.set(func(f *fakeStore) { f.expiry = t0.Add(time.Second) })

	want := []time.Duration{1, 2, 4, 8, 16, 30, 30} // seconds after the previous try
	at := t0.Add(time.Second)
	for i := 0; i <= len(want); i++ {
		h.waitArmed(t, at)
		h.clk.Set(at)
		got := h.waitCalls(t, "expire", i+1)
		if !got[i].Equal(at) {
			t.Fatalf("try %d at %v, want %v", i, got[i], at)
		}
		if i < len(want) {
			at = at.Add(want[i] * time.Second)
		}
	}
	if !strings.Contains(h.log.String(), "disk is full") {
		t.Errorf("the failures were not logged:\n%s", h.log)
	}
	// Space again: the next try succeeds and the back-off is reset.
	h.eng.mu.Lock()
	h.eng.expireErr = nil
	h.eng.mu.Unlock()
	at = at.Add(30 * time.Second)
	h.waitArmed(t, at)
	h.clk.Set(at)
	n := len(want) + 2
	h.waitCalls(t, "expire", n)
	next := at.Add(3 * time.Second)
	h.st.set(func(f *fakeStore) { f.expiry = next })
	h.waitArmed(t, next)
	h.clk.Set(next)
	if got := h.waitCalls(t, "expire", n+1); !got[n].Equal(next) {
		t.Fatalf("after a success the next expiry ran at %v, want %v", got[n], next)
	}
}

func TestBackoffCap(t *testing.T) {
	for _, c := range []struct{ interval, want time.Duration }{
		{0, BackoffCapOff},
		{10 * time.Second, 10 * time.Second},
		{100 * time.Millisecond, time.Second}, // never below the base
	} {
		if got := backoffCap(c.interval, time.Second); got != c.want {
			t.Errorf("cap with reconcile interval %v: %v, want %v", c.interval, got, c.want)
		}
	}
}

// A store that cannot say when the next expiry is: the error is logged
// and the step is tried after the back-off (each failed read counts), not
// at the hour the old loop fell back to.
func TestStoreErrorReported(t *testing.T) {
	h := start(t, Options{})
	h.st.set(func(f *fakeStore) {
		f.expiry = t0.Add(30 * time.Minute)
		f.readErr = errors.New("disk I/O error")
	})
	waitFor(t, "the error in the log", func() bool {
		l := h.log.String()
		return strings.Contains(l, "schedule expiry and delivery") && strings.Contains(l, "disk I/O error")
	})
	// Follow the armed timers (each failed read may push the retry out
	// by one back-off step, and the database check has its own timer)
	// until the step is tried: it must be within the back-off cap, never
	// at the expiry half an hour away.
	deadline := time.Now().Add(10 * time.Second)
	for len(h.eng.times("expire")) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the step was never tried; timers %v; log:\n%s", h.clk.Timers(), h.log)
		}
		if ts := h.clk.Timers(); len(ts) > 0 {
			at := slices.MinFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
			if at.After(t0.Add(BackoffCapOff)) {
				t.Fatalf("timer at %v, beyond the back-off cap %v", at, BackoffCapOff)
			}
			if h.clk.Now().Before(at) {
				h.clk.Set(at)
			}
		}
		time.Sleep(time.Millisecond)
	}
	if got := h.eng.times("expire")[0]; !got.After(t0) || got.After(t0.Add(BackoffCapOff)) {
		t.Fatalf("expire tried at %v, want within %v of %v", got, BackoffCapOff, t0)
	}
}

func TestStopWaitsForRunningStep(t *testing.T) {
	h := start(t, Options{})
	block, started := make(chan struct{}), make(chan struct{})
	h.eng.mu.Lock()
	h.eng.block, h.eng.started = block, started
	h.eng.mu.Unlock()
	h.st.set(func(f *fakeStore) { f.expiry = t0.Add(time.Second) })
	h.waitArmed(t, t0.Add(time.Second))
	h.clk.Set(t0.Add(time.Second))
	<-started
	stopped := make(chan error, 1)
	go func() { stopped <- h.s.Stop() }()
	select {
	case err := <-stopped:
		t.Fatalf("Stop returned (%v) while the step was running", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(block)
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatalf("Stop: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Stop did not return after the step ended")
	}
	if got := h.eng.times("deliver"); len(got) != 1 {
		t.Errorf("the running step did not finish its delivery: %v", got)
	}
}

func TestReconcileTickerAndJobs(t *testing.T) {
	var mu sync.Mutex
	var polls []time.Time
	h := newHarness()
	poll := Job{Name: "poll", Every: 3 * time.Second, Run: func(context.Context) error {
		mu.Lock()
		polls = append(polls, h.clk.Now())
		mu.Unlock()
		return errors.New("device busy")
	}}
	h.start(t, Options{Config: Config{ReconcileInterval: 5 * time.Second}, Jobs: []Job{poll}})
	for _, at := range []time.Duration{3, 5, 6, 9, 10} {
		h.waitArmed(t, t0.Add(at*time.Second))
		h.clk.Set(t0.Add(at * time.Second))
		waitFor(t, fmt.Sprintf("the runs due at +%ds", at), func() bool {
			mu.Lock()
			np := len(polls)
			mu.Unlock()
			return np == int(at/3) && len(h.eng.times("reconcile-all")) == int(at/5) &&
				h.s.jobIdle("poll") && h.s.jobIdle(JobReconcile)
		})
	}
	if !strings.Contains(h.log.String(), "msg=poll") || !strings.Contains(h.log.String(), "device busy") {
		t.Errorf("the job's error was not logged:\n%s", h.log)
	}
	// Reload switches the ticker off; SetJob changes the poll interval.
	if err := h.s.Reload(Config{}); err != nil {
		t.Fatal(err)
	}
	poll.Every = time.Minute
	h.s.SetJob(poll)
	h.waitArmed(t, t0.Add(10*time.Second+time.Minute))
	h.clk.Set(t0.Add(10*time.Second + time.Minute))
	waitFor(t, "the poll at its new interval", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(polls) == 4
	})
	if got := h.eng.times("reconcile-all"); len(got) != 2 {
		t.Errorf("the reconcile ticker ran after being switched off: %v", got)
	}
}

func TestHousekeepingCronUTC(t *testing.T) {
	h := start(t, Options{Config: Config{Schedule: "30 10 * * *"}})
	h.waitCalls(t, "housekeeping", 1) // Start runs it once
	at := time.Date(2026, 3, 1, 10, 30, 0, 0, time.UTC)
	h.waitArmed(t, at)
	h.clk.Set(at)
	if got := h.waitCalls(t, "housekeeping", 2); !got[1].Equal(at) {
		t.Fatalf("housekeeping ran at %v, want %v", got[1], at)
	}
	// The next run is tomorrow (the step's hourly look comes first).
	h.s.mu.Lock()
	next := h.s.jobs[JobHousekeeping].next
	h.s.mu.Unlock()
	if !next.Equal(at.Add(24 * time.Hour)) {
		t.Fatalf("next housekeeping at %v, want %v", next, at.Add(24*time.Hour))
	}

	if err := h.s.Reload(Config{Schedule: "every tuesday"}); err == nil {
		t.Fatal("Reload took an invalid schedule")
	}
	h.s.mu.Lock()
	next = h.s.jobs[JobHousekeeping].next
	h.s.mu.Unlock()
	if !next.Equal(at.Add(24 * time.Hour)) {
		t.Fatalf("a refused reload changed the schedule: next run at %v", next)
	}
}

// A job run still going when its next run is due is skipped, and a panic
// is recovered.
func TestJobSkipsAndRecovers(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	runs := 0
	job := Job{Name: "slow", Every: time.Second, Run: func(context.Context) error {
		mu.Lock()
		runs++
		n := runs
		mu.Unlock()
		if n == 1 {
			<-release
		}
		if n == 2 {
			panic("boom")
		}
		return nil
	}}
	h := start(t, Options{Jobs: []Job{job}})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock) // before Stop, which waits for the run
	count := func() int { mu.Lock(); defer mu.Unlock(); return runs }
	h.waitArmed(t, t0.Add(time.Second))
	h.clk.Set(t0.Add(time.Second))
	waitFor(t, "the first run", func() bool { return count() == 1 })
	h.waitArmed(t, t0.Add(2*time.Second))
	h.clk.Set(t0.Add(2 * time.Second))
	waitFor(t, "the skip logged", func() bool { return strings.Contains(h.log.String(), "skip") })
	unblock()
	// The first run hands its skip token back on its own goroutine just
	// after it returns, so the tick right after unblock may still be
	// skipped: tick until the second run (the panic) happens, each tick
	// either running it or logging one more skip.
	sec := 3
	for ; !strings.Contains(h.log.String(), "boom"); sec++ {
		if sec > 13 {
			t.Fatalf("no run in 10 ticks after the blocked run ended; log:\n%s", h.log)
		}
		skips := strings.Count(h.log.String(), "skip")
		at := t0.Add(time.Duration(sec) * time.Second)
		h.waitArmed(t, at)
		if n := count(); n != 1 {
			t.Fatalf("%d runs, want the second skipped", n)
		}
		h.clk.Set(at)
		waitFor(t, "the tick's run or skip", func() bool {
			l := h.log.String()
			return strings.Contains(l, "boom") || strings.Count(l, "skip") > skips
		})
	}
	if n := count(); n != 2 {
		t.Fatalf("%d runs when the panic was logged, want 2", n)
	}
	next := t0.Add(time.Duration(sec) * time.Second)
	h.waitArmed(t, next)
	h.clk.Set(next)
	waitFor(t, "a run after the panic", func() bool { return count() == 3 })
}

func TestLinkEventRepairs(t *testing.T) {
	links := make(chan string)
	h := start(t, Options{WatchLinks: func(context.Context) (<-chan string, error) { return links, nil }})
	links <- "wg-a"
	h.waitCalls(t, "reconcile wg-a", 1)
	close(links)
	waitFor(t, "the end of the watch logged", func() bool {
		return strings.Contains(h.log.String(), "repairs wait for the reconcile interval")
	})
}

func TestDatabaseGoneStops(t *testing.T) {
	h := start(t, Options{CheckEvery: 500 * time.Millisecond})
	h.st.mu.Lock()
	h.st.checkErr = fmt.Errorf("check: %w", &store.UnavailableError{Cause: store.CauseReplaced, Fatal: true})
	h.st.mu.Unlock()
	h.waitArmed(t, t0.Add(500*time.Millisecond))
	h.clk.Set(t0.Add(500 * time.Millisecond))
	select {
	case <-h.s.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the scheduler did not stop")
	}
	if err := h.s.Err(); !errors.Is(err, ErrDatabaseGone) || !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Err = %v, want ErrDatabaseGone and store.ErrUnavailable", err)
	}
	if !strings.Contains(h.log.String(), "deleted or replaced") {
		t.Errorf("not logged:\n%s", h.log)
	}
}
