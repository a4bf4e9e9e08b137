package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/robfig/cron/v3"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/api"
	"github.com/wgkeeper/wgkeeper/config"
	"github.com/wgkeeper/wgkeeper/hooks"
	"github.com/wgkeeper/wgkeeper/internal/ratelog"
	"github.com/wgkeeper/wgkeeper/reconcile"
	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/wg"
)

// newLogger builds the slog logger of a command: text for a terminal or
// journald, JSON for log pipelines.
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, usagef("-log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usagef("-log-format %q: want text or json", format)
}

// parts are the pieces a command that changes things needs.
type parts struct {
	cfg    *config.Config
	store  store.Store
	dev    *wg.Client
	runner *hooks.Runner
	engine *reconcile.Engine
}

func (p *parts) close() {
	if p.engine != nil {
		// Every operation has returned: its owner file can go. A file
		// that cannot be removed is swept as a dead owner's later.
		_ = p.engine.Close()
	}
	if p.store != nil {
		p.store.Close()
	}
	if p.dev != nil {
		p.dev.Close()
	}
}

// openParts loads the config and opens store, device client, script runner
// and engine. obs, when given, receives the engine's measurements (the
// daemon's metrics).
func (e *env) openParts(log *slog.Logger, obs ...reconcile.Observer) (*parts, error) {
	cfg, err := e.loadConfig()
	if err != nil {
		return nil, err
	}
	return e.openPartsWith(cfg, log, obs...)
}

func (e *env) openPartsWith(cfg *config.Config, log *slog.Logger, obs ...reconcile.Observer) (*parts, error) {
	p := &parts{cfg: cfg}
	var observer reconcile.Observer
	if len(obs) > 0 {
		observer = obs[0]
	}
	var err error
	p.runner, err = hooks.New(hooks.Config{
		Script:      cfg.Hooks.Script,
		Timeout:     cfg.Hooks.Timeout,
		Concurrency: cfg.Hooks.Concurrency,
		PassEnv:     cfg.Hooks.PassEnv,
		Logger:      log,
	})
	if err != nil {
		return nil, err
	}
	if p.store, err = e.openStore(cfg, log); err != nil {
		return nil, err
	}
	if p.dev, err = wg.NewClient(wg.WithLogger(log)); err != nil {
		p.close()
		return nil, fmt.Errorf("open WireGuard control: %w", err)
	}
	sessRunner, err := sessionRunner(cfg, log)
	if err != nil {
		p.close()
		return nil, err
	}
	nodes, _ := p.store.(store.Nodes) // many nodes on one database (PostgreSQL)
	p.engine, err = reconcile.New(reconcile.Options{Config: cfg, Store: p.store, Device: p.dev, Runner: p.runner,
		SessionRunner: sessRunner, Logger: log, Observer: observer, Nodes: nodes})
	if err != nil {
		p.close()
		return nil, err
	}
	return p, nil
}

// sessionRunner returns the runner of sessions.script, or nil when none is
// configured.
func sessionRunner(cfg *config.Config, log *slog.Logger) (reconcile.Runner, error) {
	if cfg.Sessions.Script == "" {
		return nil, nil
	}
	r, err := hooks.New(hooks.Config{
		Script:      cfg.Sessions.Script,
		Timeout:     cfg.Hooks.Timeout,
		Concurrency: cfg.Hooks.Concurrency,
		PassEnv:     cfg.Hooks.PassEnv,
		Logger:      log,
	})
	if err != nil {
		return nil, fmt.Errorf("sessions.script: %w", err)
	}
	return r, nil
}

func cmdDaemon(e *env, args []string) error {
	fs := flag.NewFlagSet("daemon", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	if err := parseFlags(e, fs, args, "daemon",
		"Run until SIGINT or SIGTERM: bring up the interfaces wgkeeper owns, run\nhousekeeping on housekeeping.schedule, reconcile every\nhousekeeping.reconcile_interval, expire configs at their expiry, deliver\nevents as soon as they are due. SIGHUP reloads the config.",
		"wgkeeper -config examples/wgkeeper.toml daemon"); err != nil {
		return err
	}
	log, err := newLogger(e.stderr, *logFormat, *logLevel)
	if err != nil {
		return err
	}
	// A loop failing again and again (a full disk, a device gone) logs
	// each distinct error once a minute, not once per try.
	log = slog.New(ratelog.New(log.Handler(), time.Minute, nil))
	e.createDB = true
	d := &daemon{env: e, log: log}
	return d.run()
}

type daemon struct {
	env     *env
	log     *slog.Logger
	p       *parts
	links   []*wg.Link
	metrics *api.Metrics
	api     *api.Server // nil when api.listen is empty

	wake chan struct{} // something changed: recompute timers

	// Used by the run loop's goroutine only: the back-off of the timed
	// step (expire and deliver) and of the timer's own store reads.
	failures int       // consecutive failures
	retryAt  time.Time // while failures > 0, no step before this
}

// Back-off of a daemon loop that failed: from backoffBase, doubling per
// consecutive failure, capped at housekeeping.reconcile_interval (the
// periodic repair runs that often anyway), or at backoffCapOff when the
// interval is 0, and never below backoffBase.
const (
	backoffBase   = time.Second
	backoffCapOff = 30 * time.Second
)

// backoffCap is the longest wait between two tries of a failing loop.
func backoffCap(reconcileInterval time.Duration) time.Duration {
	if reconcileInterval <= 0 {
		return backoffCapOff
	}
	return max(reconcileInterval, backoffBase)
}

// failed records a failure of the timed step or of its timer: the next try
// waits out the back-off.
func (d *daemon) failed() {
	d.failures++
	d.retryAt = time.Now().Add(reconcile.Backoff(d.failures, backoffBase, backoffCap(d.p.cfg.Housekeeping.ReconcileInterval)))
}

func (d *daemon) run() error {
	// The daemon's own work (expiry, housekeeping, reconcile, stale
	// cleanup) is done by "daemon"; API requests name their own actor.
	ctx := reconcile.WithActor(d.env.ctx, reconcile.ActorDaemon)
	d.metrics = api.NewMetrics()
	p, err := d.env.openParts(d.log, d.metrics)
	if err != nil {
		return err
	}
	d.p = p
	defer p.close()
	// After everything that runs scripts has stopped (the defers below).
	defer func() {
		if err := hooks.Close(); err != nil {
			d.log.Error("stop the hook supervisor", "err", err)
		}
	}()
	if nodes, ok := p.store.(store.Nodes); ok {
		// Before any device is touched: another node declaring one of
		// these interfaces or an overlapping range refuses the start.
		if err := nodes.RegisterNode(ctx, nodeDecl(p.cfg)); err != nil {
			return err
		}
		go d.heartbeat(ctx, nodes)
	}
	if err := d.upInterfaces(ctx, p.cfg); err != nil {
		d.downInterfaces()
		return err
	}
	defer d.downInterfaces()
	p.engine.SetLinks(ownedLinks(d.links))
	linkEvents := d.watchLinks(ctx)

	apiErr := make(chan error, 1)
	if p.cfg.API.Listen != "" {
		srv, err := d.startAPI(p.cfg, apiErr)
		if err != nil {
			return err
		}
		d.api = srv
		defer func() {
			// Requests in progress may wait for a connect script.
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.Hooks.Timeout+5*time.Second)
			defer cancel()
			if err := srv.Shutdown(sctx); err != nil {
				d.log.Error("stop API", "err", err)
			}
		}()
	}

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	d.wake = make(chan struct{}, 1)
	var running sync.WaitGroup
	defer running.Wait()
	stepping := false
	stepDone := make(chan error, 1)

	housekeep := func() {
		if _, err := p.engine.Housekeeping(ctx, false); err != nil && !errors.Is(err, reconcile.ErrBusy) && ctx.Err() == nil {
			d.log.Error("housekeeping", "err", err)
		}
		d.poke()
	}
	sched, err := d.startCron(p.cfg.Housekeeping.Schedule, housekeep)
	if err != nil {
		return err
	}
	defer func() { <-sched.Stop().Done() }()

	d.log.Info("wgkeeper started", "version", Version, "config", d.env.configPath, "database", p.cfg.DatabaseName(), "interfaces", len(p.cfg.Interfaces))
	housekeep()
	sdNotify("READY=1")

	recon := newTicker(p.cfg.Housekeeping.ReconcileInterval)
	defer recon.stop()
	// Session tracking: every interface read every sessions.poll_interval,
	// beside the loop.
	polls := newTicker(p.cfg.Sessions.PollInterval)
	defer polls.stop()
	polling := false
	pollDone := make(chan struct{}, 1)
	// Another process (a CLI command, the API of another node) may write:
	// the store says so, and the timers are recomputed.
	changes := p.store.Changes(ctx)
	// Every 500 ms: is the database still usable (for SQLite: is the file
	// at its path still the one opened)?
	watch := time.NewTicker(500 * time.Millisecond)
	defer watch.Stop()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	d.arm(ctx, timer)

	for {
		select {
		case <-ctx.Done():
			sdNotify("STOPPING=1")
			d.log.Info("stopping", "reason", context.Cause(ctx))
			return nil
		case err := <-apiErr:
			return fmt.Errorf("API: %w", err)
		case <-hup:
			sdNotify("RELOADING=1")
			d.reload(sched, recon, housekeep)
			polls.reset(d.p.cfg.Sessions.PollInterval)
			sdNotify("READY=1")
			d.arm(ctx, timer)
		case <-recon.c():
			p.engine.ReconcileAll(ctx, false)
		case <-polls.c():
			if polling {
				continue // the previous poll is still running
			}
			polling = true
			running.Add(1)
			go func() {
				defer running.Done()
				for _, ifc := range p.engine.Config().Interfaces {
					if _, err := p.engine.PollSessions(ctx, ifc.Name); err != nil && ctx.Err() == nil {
						d.log.Warn("session poll; the next poll takes up from the stored state", "iface", ifc.Name, "err", err)
					}
				}
				pollDone <- struct{}{}
			}()
		case <-pollDone:
			polling = false
		case name, ok := <-linkEvents:
			if !ok {
				linkEvents = nil // repairs wait for the reconcile interval
				continue
			}
			// An owned interface was deleted or set down: repair it now,
			// not at the next interval.
			p.engine.Reconcile(ctx, name, false)
		case <-watch.C:
			if err := p.store.Check(ctx); err != nil {
				if ue := (*store.UnavailableError)(nil); errors.As(err, &ue) && ue.Cause == store.CauseReplaced {
					// Everything written from now on would go to a file
					// nobody reads. The store refuses writes already; stop,
					// after the requests in progress (deferred), so that
					// the service manager starts wgkeeper on the file now
					// at the path.
					d.log.Error("the database file was deleted or replaced; stopping all writes and exiting to be restarted",
						"database", p.cfg.DatabaseName(), "err", err)
					sdNotify("STOPPING=1")
					if d.api != nil {
						// Keep answering (503, /healthz failing) until the
						// requests in progress are done; then the deferred
						// Shutdown closes the listener.
						wctx, cancel := context.WithTimeout(ctx, p.cfg.Hooks.Timeout+5*time.Second)
						if err := d.api.WaitIdle(wctx); err != nil {
							d.log.Warn("requests still in progress; stopping anyway", "err", err)
						}
						cancel()
					}
					return fmt.Errorf("database %s: %w", p.cfg.DatabaseName(), err)
				}
			}
		case _, ok := <-changes:
			if !ok {
				changes = nil // ctx is done: the next turn returns
				continue
			}
			d.arm(ctx, timer)
		case <-d.wake:
			d.arm(ctx, timer)
		case <-timer.C:
			// An expiry or a retry is due now. The step runs beside the
			// loop, so signals are answered while scripts run; a stop
			// waits for it (running.Wait).
			if stepping {
				continue // stepDone re-arms
			}
			stepping = true
			running.Add(1)
			go func() {
				defer running.Done()
				var failed error
				if _, err := p.engine.Expire(ctx); err != nil && ctx.Err() == nil {
					d.log.Error("expire", "err", err)
					failed = err
				}
				if _, err := p.engine.Deliver(ctx); err != nil && ctx.Err() == nil {
					d.log.Error("deliver", "err", err)
					failed = err
				}
				stepDone <- failed
			}()
		case err := <-stepDone:
			stepping = false
			if err != nil {
				// An expiry the store could not record stays due: without
				// the back-off the step would run again at once, forever.
				d.failed()
			} else {
				d.failures = 0
			}
			d.arm(ctx, timer)
		}
	}
}

// startAPI reads (or, when missing, creates) the bearer token, opens the
// listener and serves the API in the background; a serving error is sent
// on errc.
func (d *daemon) startAPI(cfg *config.Config, errc chan<- error) (*api.Server, error) {
	tok, err := api.LoadToken(cfg.API.TokenFile, d.log)
	if err != nil {
		return nil, err
	}
	readTok, err := api.LoadReadToken(cfg.API.ReadTokenFile, d.log)
	if err != nil {
		return nil, err
	}
	srv, err := api.New(api.Options{Engine: d.p.engine, Token: tok, ReadToken: readTok,
		MetricsPublic: cfg.API.MetricsPublic, Metrics: d.metrics, Version: Version, Logger: d.log})
	if err != nil {
		return nil, err
	}
	l, err := api.Listen(cfg.API)
	if err != nil {
		return nil, err
	}
	go func() {
		if err := srv.Serve(l); err != nil {
			errc <- err
		}
	}()
	d.log.Info("API listening", "listen", cfg.API.Listen, "tls", cfg.API.TLSCert != "", "token_file", cfg.API.TokenFile, "read_token_file", cfg.API.ReadTokenFile)
	return srv, nil
}

func (d *daemon) poke() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// arm sets the timer to the earliest expiry or event retry, or, after
// failures, to the end of the back-off if that is later. When the store
// cannot say, the timer retries after the back-off.
func (d *daemon) arm(ctx context.Context, t *time.Timer) {
	next := time.Now().Add(time.Hour)
	var errs []error
	if at, ok, err := d.p.store.NextExpiry(ctx); err != nil {
		errs = append(errs, err)
	} else if ok && at.Before(next) {
		next = at
	}
	if at, ok, err := d.p.store.NextDue(ctx); err != nil {
		errs = append(errs, err)
	} else if ok && at.Before(next) {
		next = at
	}
	if len(errs) > 0 && ctx.Err() == nil {
		d.log.Error("schedule expiry and delivery", "err", errors.Join(errs...))
		d.failed()
		next = d.retryAt
	}
	if d.failures > 0 && next.Before(d.retryAt) {
		next = d.retryAt
	}
	wait := time.Until(next)
	if wait < 0 {
		wait = 0
	}
	if !t.Stop() {
		select {
		case <-t.C:
		default:
		}
	}
	t.Reset(wait)
}

// startCron runs job on the housekeeping schedule (UTC), never two at once,
// recovering from panics. An empty schedule runs nothing.
func (d *daemon) startCron(spec string, job func()) (*cron.Cron, error) {
	cl := cronLogger{d.log}
	c := cron.New(cron.WithLocation(time.UTC), cron.WithChain(cron.Recover(cl), cron.SkipIfStillRunning(cl)))
	if err := schedule(c, spec, job); err != nil {
		return nil, err
	}
	c.Start()
	return c, nil
}

func schedule(c *cron.Cron, spec string, job func()) error {
	if spec == "" {
		return nil
	}
	sch, err := config.ParseSchedule(spec)
	if err != nil {
		return fmt.Errorf("housekeeping.schedule %q: %w", spec, err)
	}
	c.Schedule(sch, cron.FuncJob(job))
	return nil
}

// ticker is a time.Ticker that may be off (interval 0).
type ticker struct{ t *time.Ticker }

func newTicker(d time.Duration) *ticker {
	tk := &ticker{}
	tk.reset(d)
	return tk
}

func (t *ticker) reset(d time.Duration) {
	switch {
	case d <= 0 && t.t != nil:
		t.t.Stop()
		t.t = nil
	case d > 0 && t.t == nil:
		t.t = time.NewTicker(d)
	case d > 0:
		t.t.Reset(d)
	}
}

// c is the tick channel; nil (never ready) when off.
func (t *ticker) c() <-chan time.Time {
	if t.t == nil {
		return nil
	}
	return t.t.C
}

func (t *ticker) stop() { t.reset(0) }

// reload re-reads the config on SIGHUP. A bad file keeps the old config.
// Interfaces are not re-created: a change of interfaces needs a restart.
func (d *daemon) reload(sched *cron.Cron, recon *ticker, job func()) {
	cfg, err := d.env.loadConfig()
	if err != nil {
		d.log.Error("reload: keeping the running config", "err", err)
		return
	}
	runner, err := hooks.New(hooks.Config{Script: cfg.Hooks.Script, Timeout: cfg.Hooks.Timeout, Concurrency: cfg.Hooks.Concurrency, PassEnv: cfg.Hooks.PassEnv, Logger: d.log})
	if err != nil {
		d.log.Error("reload: keeping the running config", "err", err)
		return
	}
	if _, err := config.ParseSchedule(cfg.Housekeeping.Schedule); cfg.Housekeeping.Schedule != "" && err != nil {
		d.log.Error("reload: keeping the running config", "err", err)
		return
	}
	if cfg.API != d.p.cfg.API {
		d.log.Warn("reload: the [api] settings changed; restart wgkeeper to apply them")
	} else if d.api != nil {
		// The token files may have been rotated.
		tok, err := api.LoadToken(cfg.API.TokenFile, d.log)
		var readTok string
		if err == nil {
			readTok, err = api.LoadReadToken(cfg.API.ReadTokenFile, d.log)
		}
		if err == nil {
			err = d.api.SetTokens(tok, readTok)
		}
		if err != nil {
			d.log.Error("reload: keeping the API tokens in use", "err", err)
		}
	}
	sessRunner, err := sessionRunner(cfg, d.log)
	if err != nil {
		d.log.Error("reload: keeping the running config", "err", err)
		return
	}
	if nodes, ok := d.p.store.(store.Nodes); ok {
		if cfg.Node != d.p.cfg.Node {
			d.log.Error("reload: keeping the running config; node changed, restart wgkeeper to become another node", "node", d.p.cfg.Node, "new_node", cfg.Node)
			return
		}
		if err := nodes.RegisterNode(d.env.ctx, nodeDecl(cfg)); err != nil {
			d.log.Error("reload: keeping the running config", "err", err)
			return
		}
	}
	d.p.engine.SetConfig(cfg, runner)
	d.p.engine.SetSessionRunner(sessRunner)
	d.p.cfg = cfg
	d.p.runner = runner
	recon.reset(cfg.Housekeeping.ReconcileInterval)
	for _, en := range sched.Entries() {
		sched.Remove(en.ID)
	}
	if err := schedule(sched, cfg.Housekeeping.Schedule, job); err != nil {
		d.log.Error("reload: schedule", "err", err)
	}
	d.log.Info("config reloaded", "config", d.env.configPath)
}

// upInterfaces creates the interfaces wgkeeper owns and sets key and port
// of existing ones when the config names them.
func (d *daemon) upInterfaces(ctx context.Context, cfg *config.Config) error {
	for _, ifc := range cfg.Interfaces {
		var key *wgtypes.Key
		if ifc.PrivateKeyFile != "" {
			k, err := wg.LoadOrCreateKey(ifc.PrivateKeyFile)
			if err != nil {
				return fmt.Errorf("interface %s: %w", ifc.Name, err)
			}
			key = &k
		}
		switch ifc.Mode {
		case "kernel", "userspace":
			if key == nil {
				return fmt.Errorf("interface %s: mode %s needs private_key_file", ifc.Name, ifc.Mode)
			}
			var addrs []netip.Prefix
			for _, prof := range cfg.Profiles {
				if prof.Interface == ifc.Name {
					addrs = append(addrs, prof.ServerAddrs()...)
				}
			}
			l, err := wg.Up(ctx, wg.Spec{Name: ifc.Name, Mode: ifc.Mode, PrivateKey: *key, ListenPort: ifc.ListenPort, Addresses: addrs, Logger: d.log})
			if err != nil {
				return fmt.Errorf("interface %s: %w", ifc.Name, err)
			}
			d.links = append(d.links, l) // wg.Up logged "interface up"
		default:
			var port *int
			if ifc.ListenPort != 0 {
				port = &ifc.ListenPort
			}
			if key != nil || port != nil {
				if err := d.p.dev.SetDevice(ctx, ifc.Name, key, port); err != nil {
					return fmt.Errorf("interface %s: %w", ifc.Name, err)
				}
			}
		}
	}
	return nil
}

// watchLinks returns the names of owned interfaces as the kernel reports
// them deleted or down; nil (never ready) when the daemon owns none or the
// kernel cannot be watched, and then the reconcile interval repairs them.
func (d *daemon) watchLinks(ctx context.Context) <-chan string {
	if len(d.links) == 0 {
		return nil
	}
	names := make([]string, len(d.links))
	for i, l := range d.links {
		names[i] = l.Name()
	}
	ch, err := wg.WatchLinks(ctx, names, func(err error) {
		d.log.Warn("watch interfaces", "err", err)
	})
	if err != nil {
		d.log.Warn("watch interfaces; repairs wait for the reconcile interval", "err", err)
		return nil
	}
	return ch
}

// ownedLinks are the interfaces the daemon created, by name: the engine
// repairs them before each reconcile.
type ownedLinks []*wg.Link

// Ensure implements reconcile.Links.
func (o ownedLinks) Ensure(ctx context.Context, iface string) ([]string, error) {
	for _, l := range o {
		if l.Name() == iface {
			return l.Ensure(ctx)
		}
	}
	return nil, nil
}

func (d *daemon) downInterfaces() {
	for i := len(d.links) - 1; i >= 0; i-- {
		if err := d.links[i].Close(); err != nil {
			d.log.Error("remove interface", "err", err)
		}
	}
	d.links = nil
}

type cronLogger struct{ l *slog.Logger }

func (c cronLogger) Info(msg string, kv ...any) { c.l.Debug("cron: "+msg, kv...) }
func (c cronLogger) Error(err error, msg string, kv ...any) {
	c.l.Error("cron: "+msg, append(kv, "err", err)...)
}

// nodeDecl is what cfg declares to the other nodes sharing the database.
func nodeDecl(cfg *config.Config) store.NodeDecl {
	d := store.NodeDecl{Name: cfg.Node, Version: Version}
	for _, ifc := range cfg.Interfaces {
		ni := store.NodeInterface{Name: ifc.Name}
		for _, p := range cfg.Profiles {
			if p.Interface == ifc.Name {
				ni.Profiles = append(ni.Profiles, store.NodeProfile{ID: p.ID, IPv4Range: p.IPv4Range, IPv6Range: p.IPv6Range})
			}
		}
		d.Interfaces = append(d.Interfaces, ni)
	}
	return d
}

// heartbeatEvery is how often a node records that it is alive.
const heartbeatEvery = 10 * time.Second

// heartbeat records the node's liveness until ctx ends.
func (d *daemon) heartbeat(ctx context.Context, nodes store.Nodes) {
	t := time.NewTicker(heartbeatEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cfg := d.p.engine.Config() // d.p.cfg belongs to the main loop
		err := nodes.Heartbeat(ctx, cfg.Node)
		if errors.Is(err, store.ErrNotFound) {
			// Removed by hand: declare this node again.
			err = nodes.RegisterNode(ctx, nodeDecl(cfg))
		}
		if err != nil && ctx.Err() == nil {
			d.log.Warn("node heartbeat", "node", cfg.Node, "err", err)
		}
	}
}
