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
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/api"
	"github.com/wgkeeper/wgkeeper/config"
	"github.com/wgkeeper/wgkeeper/hooks"
	"github.com/wgkeeper/wgkeeper/internal/ratelog"
	"github.com/wgkeeper/wgkeeper/reconcile"
	"github.com/wgkeeper/wgkeeper/reconcile/sched"
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
	nodes, _ := p.store.(store.Nodes)          // many nodes on one database (PostgreSQL)
	leader, _ := p.store.(store.ClusterLeader) // the cluster-wide jobs run on one of them
	p.engine, err = reconcile.New(reconcile.Options{Config: cfg, Store: p.store, Device: p.dev, Runner: p.runner,
		SessionRunner: sessRunner, Logger: log, Observer: observer, Nodes: nodes, Leader: leader})
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
	sched   *sched.Scheduler
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
		if err := nodes.RegisterNode(ctx, nodeDecl(p.cfg, p.engine.ConnectHold(p.cfg))); err != nil {
			return err
		}
		// Take the cluster-job lock now if it is free (logged), rather
		// than at the first cluster job.
		p.engine.Lead(ctx)
	}
	if err := d.upInterfaces(ctx, p.cfg); err != nil {
		d.downInterfaces()
		return err
	}
	// Runs last, after the API and the scheduler have stopped.
	defer d.downInterfaces()
	p.engine.SetLinks(ownedLinks(d.links))

	jobs := []sched.Job{d.sessionPoll(p.cfg)}
	if nodes, ok := p.store.(store.Nodes); ok {
		jobs = append(jobs, d.heartbeat(nodes), d.clusterJobs())
	}
	d.sched, err = sched.New(sched.Options{
		Engine: p.engine, Store: p.store, Config: schedConfig(p.cfg), Logger: d.log,
		WatchLinks: d.watchLinks(),
		Jobs:       jobs,
	})
	if err != nil {
		return err
	}
	apiErr := make(chan error, 1)
	if p.cfg.API.Listen != "" {
		if d.api, err = d.startAPI(p.cfg, apiErr); err != nil {
			return err
		}
	}
	// Shutdown order: no new API requests and the ones in progress
	// answered, then the scheduler drained (a running step finishes),
	// then (deferred above) the owned interfaces removed.
	defer d.stop()

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	d.log.Info("wgkeeper started", "version", Version, "config", d.env.configPath, "database", p.cfg.DatabaseName(), "interfaces", len(p.cfg.Interfaces))
	// The scheduler ends when stop says so, not at the signal: requests
	// in progress may still need it.
	if err := d.sched.Start(context.WithoutCancel(ctx)); err != nil {
		return err
	}
	sdNotify("READY=1")

	// PostgreSQL: notifications sent while the listening connection was
	// down are lost; each time it is back, reconcile every interface in
	// full (the periodic reconcile stays the safety net).
	var resyncs <-chan struct{}
	if r, ok := p.store.(store.Resyncer); ok {
		resyncs = r.Resyncs(ctx)
	}
	var resyncing sync.WaitGroup
	defer resyncing.Wait() // before the interfaces go down (deferred earlier)

	for {
		select {
		case _, ok := <-resyncs:
			if !ok {
				resyncs = nil
				continue
			}
			d.log.Info("database change listener reconnected; reconciling every interface")
			resyncing.Go(func() { p.engine.ReconcileAll(ctx, false) })
		case <-ctx.Done():
			sdNotify("STOPPING=1")
			d.log.Info("stopping", "reason", context.Cause(ctx))
			return nil
		case err := <-apiErr:
			return fmt.Errorf("API: %w", err)
		case <-hup:
			sdNotify("RELOADING=1")
			d.reload()
			sdNotify("READY=1")
		case <-d.sched.Done():
			// The database file was deleted or replaced (the scheduler
			// logged it): everything written from now on would go to a
			// file nobody reads. The store refuses writes already; exit,
			// so that the service manager starts wgkeeper on the file now
			// at the path.
			sdNotify("STOPPING=1")
			if d.api != nil {
				// Keep answering (503, /healthz failing) until the
				// requests in progress are done; then stop closes the
				// listener.
				wctx, cancel := context.WithTimeout(ctx, p.cfg.Hooks.Timeout+5*time.Second)
				if err := d.api.WaitIdle(wctx); err != nil {
					d.log.Warn("requests still in progress; stopping anyway", "err", err)
				}
				cancel()
			}
			return fmt.Errorf("database %s: %w", p.cfg.DatabaseName(), d.sched.Err())
		}
	}
}

// stop stops the API (requests in progress are answered) and then the
// scheduler (a running step finishes).
func (d *daemon) stop() {
	if d.api != nil {
		// Requests in progress may wait for a connect script.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(d.env.ctx), d.p.cfg.Hooks.Timeout+5*time.Second)
		if err := d.api.Shutdown(sctx); err != nil {
			d.log.Error("stop API", "err", err)
		}
		cancel()
	}
	if err := d.sched.Stop(); err != nil {
		d.log.Debug("scheduler stopped", "err", err) // reported when it stopped by itself
	}
}

// sessionPoll is the job that reads every interface's sessions every
// sessions.poll_interval (0 = never).
func (d *daemon) sessionPoll(cfg *config.Config) sched.Job {
	return sched.Job{Name: "session poll", Every: cfg.Sessions.PollInterval, Run: func(ctx context.Context) error {
		for _, ifc := range d.p.engine.Config().Interfaces {
			if _, err := d.p.engine.PollSessions(ctx, ifc.Name); err != nil && ctx.Err() == nil {
				d.log.Warn("session poll; the next poll takes up from the stored state", "iface", ifc.Name, "err", err)
			}
		}
		return nil // each interface's error is logged above
	}}
}

// schedConfig is the part of cfg the scheduler follows.
func schedConfig(cfg *config.Config) sched.Config {
	return sched.Config{Schedule: cfg.Housekeeping.Schedule, ReconcileInterval: cfg.Housekeeping.ReconcileInterval}
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

// reload re-reads the config on SIGHUP. A bad file, or one whose
// [[interface]] list differs from the running one (interfaces are set up at
// start; a change needs a restart), keeps the running config whole.
func (d *daemon) reload() {
	cfg, err := d.env.loadConfig()
	if err != nil {
		d.log.Error("reload: keeping the running config", "err", err)
		return
	}
	if diff := interfacesChanged(d.p.cfg, cfg); diff != "" {
		d.log.Error("reload: keeping the running config: the [[interface]] list changed ("+diff+"); restart wgkeeper to apply it", "config", d.env.configPath)
		return
	}
	runner, err := hooks.New(hooks.Config{Script: cfg.Hooks.Script, Timeout: cfg.Hooks.Timeout, Concurrency: cfg.Hooks.Concurrency, PassEnv: cfg.Hooks.PassEnv, Logger: d.log})
	if err != nil {
		d.log.Error("reload: keeping the running config", "err", err)
		return
	}
	sessRunner, err := sessionRunner(cfg, d.log)
	if err != nil {
		d.log.Error("reload: keeping the running config", "err", err)
		return
	}
	if err := sched.Validate(schedConfig(cfg)); err != nil {
		d.log.Error("reload: keeping the running config", "err", err)
		return
	}
	if nodes, ok := d.p.store.(store.Nodes); ok {
		if cfg.Node != d.p.cfg.Node {
			d.log.Error("reload: keeping the running config; node changed, restart wgkeeper to become another node", "node", d.p.cfg.Node, "new_node", cfg.Node)
			return
		}
		// The last step that can refuse: it records the new declaration.
		if err := nodes.RegisterNode(d.env.ctx, nodeDecl(cfg, d.p.engine.ConnectHold(cfg))); err != nil {
			d.log.Error("reload: keeping the running config", "err", err)
			return
		}
	}
	if err := d.sched.Reload(schedConfig(cfg)); err != nil {
		d.log.Error("reload: schedule", "err", err) // validated above: not reached
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
	d.p.engine.SetConfig(cfg, runner)
	d.p.engine.SetSessionRunner(sessRunner)
	d.sched.SetJob(d.sessionPoll(cfg))
	d.p.cfg = cfg
	d.p.runner = runner
	d.log.Info("config reloaded", "config", d.env.configPath)
}

// interfacesChanged says what differs between the interfaces of the
// running config and of a new one, in what the daemon set up at start:
// names, modes, key files, listen ports and, for the interfaces it owns,
// addresses (from the profiles); "" when nothing does.
func interfacesChanged(old, cur *config.Config) string {
	var diffs []string
	byName := map[string]config.Interface{}
	for _, ifc := range cur.Interfaces {
		byName[ifc.Name] = ifc
	}
	seen := map[string]bool{}
	for _, o := range old.Interfaces {
		seen[o.Name] = true
		n, ok := byName[o.Name]
		if !ok {
			diffs = append(diffs, fmt.Sprintf("interface %s removed", o.Name))
			continue
		}
		if o.Mode != n.Mode {
			diffs = append(diffs, fmt.Sprintf("interface %s: mode %s -> %s", o.Name, o.Mode, n.Mode))
		}
		if o.PrivateKeyFile != n.PrivateKeyFile {
			diffs = append(diffs, fmt.Sprintf("interface %s: private_key_file %q -> %q", o.Name, o.PrivateKeyFile, n.PrivateKeyFile))
		}
		if o.ListenPort != n.ListenPort {
			diffs = append(diffs, fmt.Sprintf("interface %s: listen_port %d -> %d", o.Name, o.ListenPort, n.ListenPort))
		}
		if o.Owned() && n.Owned() {
			if a, b := serverAddrs(old, o.Name), serverAddrs(cur, n.Name); !slices.Equal(a, b) {
				diffs = append(diffs, fmt.Sprintf("interface %s: addresses %v -> %v", o.Name, a, b))
			}
		}
	}
	for _, n := range cur.Interfaces {
		if !seen[n.Name] {
			diffs = append(diffs, fmt.Sprintf("interface %s added", n.Name))
		}
	}
	return strings.Join(diffs, "; ")
}

// serverAddrs are the addresses the daemon puts on an interface it owns:
// those of the profiles on it, in config order.
func serverAddrs(cfg *config.Config, iface string) []netip.Prefix {
	var addrs []netip.Prefix
	for _, prof := range cfg.ProfilesOn(iface) {
		addrs = append(addrs, prof.ServerAddrs()...)
	}
	return addrs
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
			addrs := serverAddrs(cfg, ifc.Name)
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

// watchLinks returns how the scheduler watches the owned interfaces: the
// names of those the kernel reports deleted or down; nil when the daemon
// owns none.
func (d *daemon) watchLinks() func(ctx context.Context) (<-chan string, error) {
	if len(d.links) == 0 {
		return nil
	}
	names := make([]string, len(d.links))
	for i, l := range d.links {
		names[i] = l.Name()
	}
	return func(ctx context.Context) (<-chan string, error) {
		return wg.WatchLinks(ctx, names, func(err error) {
			d.log.Warn("watch interfaces", "err", err)
		})
	}
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

// nodeDecl is what cfg declares to the other nodes sharing the database,
// with hold, the engine's connect hold under cfg (Engine.ConnectHold).
func nodeDecl(cfg *config.Config, hold time.Duration) store.NodeDecl {
	d := store.NodeDecl{Name: cfg.Node, Version: Version, ConnectHold: hold}
	for _, ifc := range cfg.Interfaces {
		ni := store.NodeInterface{Name: ifc.Name}
		for _, p := range cfg.ProfilesOn(ifc.Name) {
			ni.Profiles = append(ni.Profiles, store.NodeProfile{ID: p.ID, IPv4Range: p.IPv4Range, IPv6Range: p.IPv6Range})
		}
		d.Interfaces = append(d.Interfaces, ni)
	}
	return d
}

// heartbeatEvery is how often a node records that it is alive.
const heartbeatEvery = 10 * time.Second

// heartbeat is the job that records the node's liveness.
func (d *daemon) heartbeat(nodes store.Nodes) sched.Job {
	return sched.Job{Name: "node heartbeat", Every: heartbeatEvery, Run: func(ctx context.Context) error {
		cfg := d.p.engine.Config() // d.p.cfg belongs to the main loop
		err := nodes.Heartbeat(ctx, cfg.Node)
		if errors.Is(err, store.ErrNotFound) {
			// Removed by hand: declare this node again.
			err = nodes.RegisterNode(ctx, nodeDecl(cfg, d.p.engine.ConnectHold(cfg)))
		}
		if err != nil && ctx.Err() == nil {
			d.log.Warn("node heartbeat", "node", cfg.Node, "err", err)
		}
		return nil // logged above, as a warning: the next beat tries again
	}}
}

// clusterJobs is the job that, every heartbeat, confirms or tries to take
// the cluster-job lock (so a node learns within one heartbeat that it
// lost it, or that it is free) and, on the leader, marks dead the nodes
// silent for longer than api.NodeAliveWindow (three heartbeats). Pruning,
// the other cluster-wide job, follows housekeeping.schedule and asks for
// the lock itself.
func (d *daemon) clusterJobs() sched.Job {
	return sched.Job{Name: "cluster jobs", Every: heartbeatEvery, Run: func(ctx context.Context) error {
		if _, err := d.p.engine.MarkDeadNodes(ctx, api.NodeAliveWindow); err != nil && ctx.Err() == nil {
			d.log.Warn("mark dead nodes; the next cluster job tries again", "err", err)
		}
		return nil // logged above, as a warning
	}}
}
