// Package sched runs the lifecycle engine in time, for the daemon: it
// expires configs at their expiry and delivers disconnect events when they
// are due (re-reading both from the store whenever any process commits to
// it), runs the periodic jobs (the reconcile ticker, cron housekeeping and
// any job a caller adds, such as a poll), repairs owned interfaces as soon
// as the kernel reports them deleted or down, backs off after store or
// device errors, and stops when the store says the database is gone for
// good.
//
// It owns when things run, not what they do: that is the engine's. It does
// not listen for signals, serve the API or create interfaces; the daemon
// wires those. Time comes from an injected clock (internal/clock), so its
// tests move a fake clock instead of sleeping.
//
// Every error is either returned (Start, Reload, Stop) or logged once per
// occurrence with key "err" on the logger given; a caller that wants fewer
// lines wraps that logger in internal/ratelog.
package sched

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/wgkeeper/wgkeeper/config"
	"github.com/wgkeeper/wgkeeper/internal/clock"
	"github.com/wgkeeper/wgkeeper/reconcile"
	"github.com/wgkeeper/wgkeeper/store"
)

// Engine is what the scheduler runs; *reconcile.Engine satisfies it.
type Engine interface {
	Expire(ctx context.Context) (reconcile.Removed, error)
	Deliver(ctx context.Context) (reconcile.Delivery, error)
	// Reconcile and ReconcileAll log their own errors.
	Reconcile(ctx context.Context, iface string, dryRun bool) reconcile.Report
	ReconcileAll(ctx context.Context, dryRun bool) []reconcile.Report
	Housekeeping(ctx context.Context, wait bool) (reconcile.Summary, error)
}

// Store is what the scheduler reads to know when to wake; every backend of
// store.Store satisfies it.
type Store interface {
	NextExpiry(ctx context.Context) (at time.Time, ok bool, err error)
	NextDue(ctx context.Context) (at time.Time, ok bool, err error)
	Changes(ctx context.Context) <-chan struct{}
	Check(ctx context.Context) error
}

var (
	_ Engine = (*reconcile.Engine)(nil)
	_ Store  = store.Store(nil)
)

// Job is work run periodically beside the expiry and delivery step. Two
// runs of one job never overlap: a run due while the previous one is still
// going is skipped. A panic is recovered and logged.
type Job struct {
	// Name identifies the job (SetJob replaces the job of that name) and
	// is the message its errors are logged under.
	Name string
	// Every runs the job at this interval, the first time one interval
	// after it is added; 0 means never. Ignored when Schedule is set.
	Every time.Duration
	// Schedule, when set, says when the job runs (cron schedules are read
	// in UTC).
	Schedule cron.Schedule
	// Run does the work; an error is logged (unless the scheduler is
	// stopping) and the job runs again at its next time.
	Run func(ctx context.Context) error
}

// Config is the part of the daemon's config the scheduler follows; Reload
// changes it.
type Config struct {
	// Schedule is the cron schedule of housekeeping ("" = none).
	Schedule string
	// ReconcileInterval is how often every interface is reconciled (0 =
	// never). It also caps the back-off.
	ReconcileInterval time.Duration
}

// Options configure a Scheduler. Engine and Store are required.
type Options struct {
	Engine Engine
	Store  Store
	Config Config
	// Clock is the time; nil means the system clock.
	Clock clock.Clock
	// Logger receives errors and notes; nil means discard.
	Logger *slog.Logger
	// WatchLinks, when set, returns the names of owned interfaces as the
	// kernel reports them deleted or down; each is repaired at once (one
	// Reconcile). It is called by Start with a context that ends at Stop.
	// An error or a channel closed early is logged, and repairs then wait
	// for the reconcile interval.
	WatchLinks func(ctx context.Context) (<-chan string, error)
	// Jobs are further periodic jobs.
	Jobs []Job
	// CheckEvery is how often Store.Check runs; 0 means 500 ms.
	CheckEvery time.Duration
	// BackoffBase is the first wait after a failure; 0 means 1 s.
	BackoffBase time.Duration
}

// Names of the built-in jobs.
const (
	JobHousekeeping = "housekeeping"
	JobReconcile    = "reconcile"
)

// BackoffCapOff caps the back-off when the reconcile interval is 0.
const BackoffCapOff = 30 * time.Second

// ErrDatabaseGone is matched (errors.Is) by the error Stop and Err return
// when the scheduler stopped by itself because the store can never be used
// again (the database file was deleted or replaced under the process). The
// store's own *store.UnavailableError is in the chain too.
var ErrDatabaseGone = errors.New("database gone")

// Scheduler runs the engine in time. Create it with New, then Start it;
// Stop it before closing the engine or the store.
type Scheduler struct {
	eng        Engine
	st         Store
	clk        clock.Clock
	log        *slog.Logger
	watchLinks func(ctx context.Context) (<-chan string, error)
	checkEvery time.Duration
	base       time.Duration

	wake   chan struct{} // buffered 1: re-read the store and the jobs
	done   chan struct{} // closed when the loop and everything it started have ended
	cancel context.CancelFunc
	tasks  sync.WaitGroup // step, job runs and repairs in progress

	mu      sync.Mutex // guards the following
	cfg     Config
	jobs    map[string]*jobState
	jobCtx  context.Context // what job runs get; set by Start
	err     error
	started bool

	// Used by the loop's goroutine only.
	stepAt   time.Time // when the expiry and delivery step is next due
	stepping bool      // a step is running
	failures int       // consecutive failures of the step or of its store reads
	retryAt  time.Time // while failures > 0, no step before this
}

type jobState struct {
	job  Job
	next time.Time // zero: never
	run  cron.Job  // job.Run wrapped: recover, log its error
	// running is set by the loop when it starts a run and cleared by the
	// run's goroutine before it pokes the loop, so a tick that comes
	// after that poke never finds the job still running. A tick while it
	// runs is skipped (and logged), as cron's SkipIfStillRunning does.
	running atomic.Bool
}

// New checks o and returns a scheduler that does nothing until Start.
// An invalid Config.Schedule is an error.
func New(o Options) (*Scheduler, error) {
	if o.Engine == nil || o.Store == nil {
		return nil, errors.New("sched: Engine and Store are required")
	}
	s := &Scheduler{
		eng: o.Engine, st: o.Store, clk: o.Clock, log: o.Logger, watchLinks: o.WatchLinks,
		checkEvery: o.CheckEvery, base: o.BackoffBase,
		wake: make(chan struct{}, 1), done: make(chan struct{}),
		jobs: map[string]*jobState{},
	}
	if s.clk == nil {
		s.clk = clock.Real{}
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.checkEvery <= 0 {
		s.checkEvery = 500 * time.Millisecond
	}
	if s.base <= 0 {
		s.base = time.Second
	}
	builtin, err := s.builtinJobs(o.Config)
	if err != nil {
		return nil, err
	}
	s.cfg = o.Config
	for _, j := range append(builtin, o.Jobs...) {
		s.setJobLocked(j)
	}
	return s, nil
}

// Validate reports what Reload would refuse in c: an invalid schedule.
func Validate(c Config) error {
	if c.Schedule == "" {
		return nil
	}
	if _, err := config.ParseSchedule(c.Schedule); err != nil {
		return fmt.Errorf("housekeeping.schedule %q: %w", c.Schedule, err)
	}
	return nil
}

// builtinJobs returns housekeeping and the reconcile ticker for c.
func (s *Scheduler) builtinJobs(c Config) ([]Job, error) {
	if err := Validate(c); err != nil {
		return nil, err
	}
	var hk cron.Schedule
	if c.Schedule != "" {
		hk, _ = config.ParseSchedule(c.Schedule) // valid: checked above
	}
	jobs := []Job{
		{Name: JobReconcile, Every: c.ReconcileInterval, Run: func(ctx context.Context) error {
			s.eng.ReconcileAll(ctx, false) // each report's error is logged by the engine
			return nil
		}},
		{Name: JobHousekeeping, Schedule: hk, Run: s.housekeep},
	}
	if hk == nil {
		jobs[1].Schedule = never{}
	}
	return jobs, nil
}

// housekeep runs housekeeping unless another process is running it.
func (s *Scheduler) housekeep(ctx context.Context) error {
	_, err := s.eng.Housekeeping(ctx, false)
	if errors.Is(err, reconcile.ErrBusy) {
		return nil // that run does the work
	}
	return err
}

// never is the schedule of a job that does not run.
type never struct{}

func (never) Next(time.Time) time.Time { return time.Time{} }

// setJobLocked adds or replaces j, its first run computed from now. The
// caller holds s.mu (or is New).
func (s *Scheduler) setJobLocked(j Job) {
	cl := cronLogger{s.log}
	run := j.Run
	name := j.Name
	js := &jobState{job: j}
	// Recover only: skipping a tick while a run is in progress is the
	// loop's (jobState.running), which clears the flag before the loop
	// hears of the run's end, and a panic cannot leave it set.
	js.run = cron.NewChain(cron.Recover(cl)).Then(cron.FuncJob(func() {
		ctx := s.ctxForJobs()
		if err := run(ctx); err != nil && ctx.Err() == nil {
			s.log.Error(name, "err", err)
		}
	}))
	js.next = nextRun(j, s.clk.Now())
	s.jobs[name] = js
}

// jobIdle reports whether no run of the named job is in progress.
func (s *Scheduler) jobIdle(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	js := s.jobs[name]
	return js == nil || !js.running.Load()
}

// nextRun returns when j next runs after now; zero for never.
func nextRun(j Job, now time.Time) time.Time {
	if j.Schedule != nil {
		return j.Schedule.Next(now.UTC())
	}
	if j.Every <= 0 {
		return time.Time{}
	}
	return now.Add(j.Every)
}

// ctxForJobs is the context job runs get.
func (s *Scheduler) ctxForJobs() context.Context {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.jobCtx
}

// SetJob adds j, or replaces the job of the same name (its next run is
// then counted from now). A run of the replaced job in progress finishes.
// A Job with neither Every nor Schedule never runs: that is how a job is
// switched off.
func (s *Scheduler) SetJob(j Job) {
	s.mu.Lock()
	s.setJobLocked(j)
	s.mu.Unlock()
	s.Poke()
}

// Reload applies a new Config: the housekeeping schedule and the reconcile
// interval count from now. An invalid schedule is an error and changes
// nothing.
func (s *Scheduler) Reload(c Config) error {
	jobs, err := s.builtinJobs(c)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.cfg = c
	for _, j := range jobs {
		s.setJobLocked(j)
	}
	s.mu.Unlock()
	s.Poke()
	return nil
}

// Poke makes the scheduler re-read when the next expiry and delivery are
// due. Writes through any handle of the store do that already (Changes);
// Poke is for callers that know sooner.
func (s *Scheduler) Poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Start runs housekeeping once (an error is logged: the daemon starts
// anyway, and the next step or run tries again), then starts the loop in
// the background and returns. ctx ends the scheduler like Stop (without
// waiting). Start may be called once.
func (s *Scheduler) Start(ctx context.Context) error {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return errors.New("sched: started twice")
	}
	s.started = true
	ctx, s.cancel = context.WithCancel(ctx)
	s.jobCtx = ctx
	s.mu.Unlock()

	if err := s.housekeep(ctx); err != nil && ctx.Err() == nil {
		s.log.Error(JobHousekeeping, "err", err)
	}
	var links <-chan string
	if s.watchLinks != nil {
		var err error
		if links, err = s.watchLinks(ctx); err != nil {
			s.log.Warn("watch interfaces; repairs wait for the reconcile interval", "err", err)
			links = nil
		}
	}
	go s.loop(ctx, links)
	return nil
}

// Done is closed when the scheduler has stopped, by Stop, by the end of
// Start's context or by itself (see Err), and everything it started has
// returned.
func (s *Scheduler) Done() <-chan struct{} { return s.done }

// Err returns, once Done is closed, why the scheduler stopped by itself:
// an error matching ErrDatabaseGone; nil when it was stopped.
func (s *Scheduler) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Stop stops starting anything and waits for what runs to finish: a step
// in progress completes its expiries and deliveries (the engine finishes
// them even when their context ends), a job run or a repair returns. It
// returns Err. Stop before Start returns nil at once; calling it again is
// harmless.
func (s *Scheduler) Stop() error {
	s.mu.Lock()
	started, cancel := s.started, s.cancel
	s.mu.Unlock()
	if !started {
		return nil
	}
	cancel()
	<-s.done
	return s.Err()
}

// failed records a failure of the step or of its store reads: the next
// step waits out the back-off.
func (s *Scheduler) failed(now time.Time) {
	s.failures++
	s.mu.Lock()
	limit := backoffCap(s.cfg.ReconcileInterval, s.base)
	s.mu.Unlock()
	s.retryAt = now.Add(reconcile.Backoff(s.failures, s.base, limit))
}

// backoffCap is the longest wait between two tries of a failing step: the
// reconcile interval (the periodic repair runs that often anyway), or
// BackoffCapOff when it is 0, and never below base.
func backoffCap(reconcileInterval, base time.Duration) time.Duration {
	if reconcileInterval <= 0 {
		return BackoffCapOff
	}
	return max(reconcileInterval, base)
}

// plan reads from the store when the step is next due: the earliest expiry
// or event retry, an hour from now when nothing is, and never before the
// back-off ends. When the store cannot say, that is a failure: logged, and
// the step is tried after the back-off (it reads the store again).
func (s *Scheduler) plan(ctx context.Context) {
	now := s.clk.Now()
	next := now.Add(time.Hour)
	var errs []error
	if at, ok, err := s.st.NextExpiry(ctx); err != nil {
		errs = append(errs, fmt.Errorf("next expiry: %w", err))
	} else if ok && at.Before(next) {
		next = at
	}
	if at, ok, err := s.st.NextDue(ctx); err != nil {
		errs = append(errs, fmt.Errorf("next event due: %w", err))
	} else if ok && at.Before(next) {
		next = at
	}
	if len(errs) > 0 && ctx.Err() == nil {
		s.log.Error("schedule expiry and delivery", "err", errors.Join(errs...))
		s.failed(now)
		next = s.retryAt
	}
	if s.failures > 0 && next.Before(s.retryAt) {
		next = s.retryAt
	}
	s.stepAt = next
}

// loop owns the timers. Everything it starts runs beside it and is waited
// for before done is closed.
func (s *Scheduler) loop(ctx context.Context, links <-chan string) {
	defer close(s.done)
	defer s.tasks.Wait()

	changes := s.st.Changes(ctx)
	stepDone := make(chan error, 1)
	repairDone := make(chan string)
	repairing := map[string]bool{} // iface -> another repair asked for while running
	timer := s.clk.NewTimer(time.Hour)
	defer timer.Stop()
	checkAt := s.clk.Now().Add(s.checkEvery)
	s.plan(ctx)

	for {
		now := s.clk.Now()
		if !now.Before(checkAt) {
			checkAt = now.Add(s.checkEvery)
			if s.check(ctx) {
				s.cancel() // end the link watch and the repairs
				return
			}
		}
		if !s.stepping && !now.Before(s.stepAt) {
			s.stepping = true
			s.tasks.Add(1)
			go func() {
				defer s.tasks.Done()
				stepDone <- s.step(ctx)
			}()
		}
		next := checkAt
		if !s.stepping && s.stepAt.Before(next) {
			next = s.stepAt
		}
		s.mu.Lock()
		for _, js := range s.jobs {
			if js.next.IsZero() {
				continue
			}
			if !now.Before(js.next) {
				if js.running.CompareAndSwap(false, true) {
					s.tasks.Add(1)
					go func(js *jobState) {
						defer s.tasks.Done()
						js.run.Run()
						js.running.Store(false)
						s.Poke() // a job may have changed what is due
					}(js)
				} else {
					s.log.Debug("cron: skip", "job", js.job.Name)
				}
				js.next = nextRun(js.job, now)
				if js.next.IsZero() {
					continue
				}
			}
			if js.next.Before(next) {
				next = js.next
			}
		}
		s.mu.Unlock()
		timer.Reset(next.Sub(now))

		select {
		case <-ctx.Done():
			return
		case <-timer.C():
		case _, ok := <-changes:
			if !ok {
				changes = nil // ctx is done: the next turn returns
				continue
			}
			s.plan(ctx)
		case <-s.wake:
			s.plan(ctx)
		case err := <-stepDone:
			s.stepping = false
			if err != nil {
				// An expiry the store could not record stays due:
				// without the back-off the step would run again at once,
				// forever.
				s.failed(s.clk.Now())
			} else {
				s.failures = 0
			}
			s.plan(ctx)
		case name, ok := <-links:
			if !ok {
				links = nil
				if ctx.Err() == nil {
					s.log.Warn("watching interfaces stopped; repairs wait for the reconcile interval")
				}
				continue
			}
			// An owned interface was deleted or set down: repair it now,
			// not at the next interval; one repair per interface at a
			// time, and one more if it was reported again meanwhile.
			if _, running := repairing[name]; running {
				repairing[name] = true
				continue
			}
			repairing[name] = false
			s.repair(ctx, name, repairDone)
		case name := <-repairDone:
			if again := repairing[name]; again && ctx.Err() == nil {
				repairing[name] = false
				s.repair(ctx, name, repairDone)
				continue
			}
			delete(repairing, name)
		}
	}
}

// repair reconciles one interface beside the loop and reports on done.
func (s *Scheduler) repair(ctx context.Context, name string, done chan<- string) {
	s.tasks.Add(1)
	go func() {
		defer s.tasks.Done()
		s.eng.Reconcile(ctx, name, false) // its error is logged by the engine
		select {
		case done <- name:
		case <-ctx.Done():
		}
	}()
}

// step expires what is due and delivers the due events; it returns the
// first error, after logging each.
func (s *Scheduler) step(ctx context.Context) error {
	var failed error
	if _, err := s.eng.Expire(ctx); err != nil && ctx.Err() == nil {
		s.log.Error("expire", "err", err)
		failed = err
	}
	if _, err := s.eng.Deliver(ctx); err != nil && ctx.Err() == nil {
		s.log.Error("deliver", "err", err)
		failed = cmpErr(failed, err)
	}
	return failed
}

func cmpErr(first, next error) error {
	if first != nil {
		return first
	}
	return next
}

// check asks the store whether it can still be used. When it never will
// again (the database file deleted or replaced under the process) it
// records why and returns true: the scheduler stops, so that the daemon
// exits and is started again on the file now at the path. Other errors
// are logged; the store reports them on every use as well.
func (s *Scheduler) check(ctx context.Context) (stop bool) {
	err := s.st.Check(ctx)
	if err == nil || ctx.Err() != nil {
		return false
	}
	if ue := (*store.UnavailableError)(nil); errors.As(err, &ue) && ue.Cause == store.CauseReplaced {
		s.log.Error("the database file was deleted or replaced; stopping all writes and exiting to be restarted", "err", err)
		s.mu.Lock()
		s.err = fmt.Errorf("%w: %w", ErrDatabaseGone, err)
		s.mu.Unlock()
		return true
	}
	s.log.Warn("check the database", "err", err)
	return false
}

// cronLogger routes robfig/cron's messages (a recovered panic, a skipped
// run) to slog.
type cronLogger struct{ l *slog.Logger }

func (c cronLogger) Info(msg string, kv ...any) { c.l.Debug("cron: "+msg, kv...) }
func (c cronLogger) Error(err error, msg string, kv ...any) {
	c.l.Error("cron: "+msg, append(kv, "err", err)...)
}
