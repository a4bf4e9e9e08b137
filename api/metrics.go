package api

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wgkeeper/wgkeeper/config"
	"github.com/wgkeeper/wgkeeper/reconcile"
	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/wg"
)

// Metrics is wgkeeper's Prometheus registry: the engine's counters and
// histograms (it is the engine's reconcile.Observer), gauges computed from
// the store and the devices at scrape time, and the standard Go and process
// collectors. It is safe for concurrent use.
//
// A scrape costs two grouped store queries (configs per interface, profile
// and state; events per status) and, per configured interface, one device
// read and one read of its configs' session activity (for
// wgkeeper_peers_online, decided by reconcile.Online); a device that cannot
// be read is counted in wgkeeper_device_read_errors_total and its gauges
// are left out of that scrape.
//
// wgkeeper_sessions_online{interface,profile} is what the latest session
// poll of the interface counted (SessionsPolled), for the interfaces
// configured at the scrape: every profile configured on the interface (0
// when none of its configs is online) and any other profile with configs
// online.
type Metrics struct {
	reg *prometheus.Registry

	scriptRuns       *prometheus.CounterVec
	scriptDuration   *prometheus.HistogramVec
	reconcileRuns    *prometheus.CounterVec
	reconcileSeconds *prometheus.HistogramVec
	reconcileChanges *prometheus.CounterVec
	housekeepingRuns *prometheus.CounterVec
	expired          prometheus.Counter
	deviceReadErrors *prometheus.CounterVec
	sessionChanges   *prometheus.CounterVec
	sessionRuns      *prometheus.CounterVec
	clusterLeader    prometheus.Gauge

	mu  sync.Mutex // guards src and sessOnline
	src *source
	// sessOnline is interface -> profile -> configs online, as the latest
	// session poll of the interface counted them.
	sessOnline map[string]map[string]int
}

var _ reconcile.Observer = (*Metrics)(nil)

// source is where the scrape-time gauges come from.
type source struct {
	st  Store
	dev Device
	cfg func() *config.Config
	now func() time.Time
	log *slog.Logger
	// orphans is the engine's latest look at an interface's orphans.
	orphans func(iface string) (reconcile.OrphanState, bool)
}

var (
	descConfigs = prometheus.NewDesc("wgkeeper_configs",
		"Configs in the store by interface, profile and state (pending: connect script running).",
		[]string{"interface", "profile", "state"}, nil)
	descOnline = prometheus.NewDesc("wgkeeper_peers_online",
		"Device peers online: configs with a session open and not stale (see README, Sessions), other peers with a handshake within sessions.offline_after.",
		[]string{"interface"}, nil)
	descSessionsOnline = prometheus.NewDesc("wgkeeper_sessions_online",
		"Configs online (a session open: a client really talking) by interface and profile, as of the latest session poll.",
		[]string{"interface", "profile"}, nil)
	descDevicePeers = prometheus.NewDesc("wgkeeper_device_peers",
		"Peers on the device, whether or not the store has them.",
		[]string{"interface"}, nil)
	descPool = prometheus.NewDesc("wgkeeper_pool_addresses",
		"Client addresses of a profile's pool, used (pending and active configs) and free.",
		[]string{"profile", "kind"}, nil)
	descBlocked = prometheus.NewDesc("wgkeeper_interface_blocked",
		"1 while orphan removal is blocked on the interface (more orphans than orphan_removal_limit; none removed until `wgkeeper reconcile -force IFACE`), else 0.",
		[]string{"interface"}, nil)
	descOrphans = prometheus.NewDesc("wgkeeper_interface_orphans",
		"Device peers the store does not know, as the latest reconcile or status saw them (former configs left out above the limit).",
		[]string{"interface"}, nil)
	descEvents = prometheus.NewDesc("wgkeeper_events",
		"Events in the store by delivery status (running: a connect script in progress; failed: needs `events retry`).",
		[]string{"status"}, nil)
)

// scriptBuckets and reconcileBuckets span a fork of a trivial script up to
// the default 30 s hook timeout, and a no-op reconcile up to a large batch.
var (
	scriptBuckets    = []float64{.002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}
	reconcileBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
)

// NewMetrics returns a registry with every wgkeeper metric. Pass it to the
// engine as its Observer, and to New (which attaches the store and device
// gauges).
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		scriptRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wgkeeper_script_runs_total",
			Help: "Runs of the connect/disconnect script by event (C, D) and result (ok, failed).",
		}, []string{"event", "result"}),
		scriptDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "wgkeeper_script_duration_seconds",
			Help:    "Wall time of script runs by event.",
			Buckets: scriptBuckets,
		}, []string{"event"}),
		reconcileRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wgkeeper_reconcile_runs_total",
			Help: "Reconcile runs by interface and result (ok, error).",
		}, []string{"interface", "result"}),
		reconcileSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "wgkeeper_reconcile_duration_seconds",
			Help:    "Wall time of reconcile runs by interface.",
			Buckets: reconcileBuckets,
		}, []string{"interface"}),
		reconcileChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wgkeeper_reconcile_changes_total",
			Help: "Device peers written by reconcile by interface and kind (added, updated, removed).",
		}, []string{"interface", "kind"}),
		housekeepingRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wgkeeper_housekeeping_runs_total",
			Help: "Housekeeping runs by result (ok, error).",
		}, []string{"result"}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wgkeeper_expired_total",
			Help: "Configs removed because they expired.",
		}),
		deviceReadErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wgkeeper_device_read_errors_total",
			Help: "Failed reads of a WireGuard device by interface.",
		}, []string{"interface"}),
		sessionChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wgkeeper_session_changes_total",
			Help: "Session changes seen by the session polls by interface and kind (start, roam, end).",
		}, []string{"interface", "kind"}),
		sessionRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wgkeeper_session_script_runs_total",
			Help: "Runs of sessions.script by event (C, D) and result (ok, failed).",
		}, []string{"event", "result"}),
		clusterLeader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wgkeeper_cluster_leader",
			Help: "1 while this node runs the cluster-wide jobs (pruning old events, marking silent nodes dead): it holds the cluster-job lock (PostgreSQL), or it is the only node (SQLite); else 0.",
		}),
	}
	m.reg.MustRegister(m.scriptRuns, m.scriptDuration, m.reconcileRuns, m.reconcileSeconds,
		m.reconcileChanges, m.housekeepingRuns, m.expired, m.deviceReadErrors,
		m.sessionChanges, m.sessionRuns, m.clusterLeader,
		(*stateCollector)(m),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, ev := range []string{store.KindConnect, store.KindDisconnect} {
		for _, res := range []string{"ok", "failed"} {
			m.scriptRuns.WithLabelValues(ev, res)
		}
	}
	for _, res := range []string{"ok", "error"} {
		m.housekeepingRuns.WithLabelValues(res)
	}
	for _, ev := range []string{store.KindConnect, store.KindDisconnect} {
		for _, res := range []string{"ok", "failed"} {
			m.sessionRuns.WithLabelValues(ev, res)
		}
	}
	return m
}

// Attach sets where the scrape-time gauges come from, and makes every
// configured interface's counters present (at 0) from now on. cfg is called
// at every scrape, so a reloaded config is followed. now is the clock for
// "online"; log receives scrape errors (nil discards).
func (m *Metrics) Attach(st Store, dev Device, cfg func() *config.Config, now func() time.Time, log *slog.Logger) {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m.mu.Lock()
	m.src = &source{st: st, dev: dev, cfg: cfg, now: now, log: log}
	m.mu.Unlock()
	for _, ifc := range cfg().Interfaces {
		m.touchInterface(ifc.Name)
	}
}

func (m *Metrics) touchInterface(iface string) {
	m.reconcileRuns.WithLabelValues(iface, "ok")
	m.reconcileRuns.WithLabelValues(iface, "error")
	for _, k := range []string{"added", "updated", "removed"} {
		m.reconcileChanges.WithLabelValues(iface, k)
	}
	m.deviceReadErrors.WithLabelValues(iface)
}

// AttachOrphans sets where wgkeeper_interface_blocked and
// wgkeeper_interface_orphans come from (the engine's Orphans); without it
// they are not exported. Call it after Attach.
func (m *Metrics) AttachOrphans(f func(iface string) (reconcile.OrphanState, bool)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.src != nil {
		src := *m.src
		src.orphans = f
		m.src = &src
	}
}

// Registry returns the registry, for tests and for registering more
// collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus exposition formats. A
// collector error is logged and the rest of the metrics are still served.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// ScriptRun implements reconcile.Observer.
func (m *Metrics) ScriptRun(event string, ok bool, d time.Duration) {
	res := "ok"
	if !ok {
		res = "failed"
	}
	m.scriptRuns.WithLabelValues(event, res).Inc()
	m.scriptDuration.WithLabelValues(event).Observe(d.Seconds())
}

// Reconciled implements reconcile.Observer.
func (m *Metrics) Reconciled(iface string, c wg.Counts, d time.Duration, err error) {
	res := "ok"
	if err != nil {
		res = "error"
	}
	m.reconcileRuns.WithLabelValues(iface, res).Inc()
	m.reconcileSeconds.WithLabelValues(iface).Observe(d.Seconds())
	m.reconcileChanges.WithLabelValues(iface, "added").Add(float64(c.Added))
	m.reconcileChanges.WithLabelValues(iface, "updated").Add(float64(c.Updated))
	m.reconcileChanges.WithLabelValues(iface, "removed").Add(float64(c.Removed))
}

// Expired implements reconcile.Observer.
func (m *Metrics) Expired(n int) { m.expired.Add(float64(n)) }

// DeviceReadError implements reconcile.Observer.
func (m *Metrics) DeviceReadError(iface string) { m.deviceReadErrors.WithLabelValues(iface).Inc() }

// HousekeepingRun implements reconcile.Observer.
func (m *Metrics) HousekeepingRun(_ time.Duration, err error) {
	res := "ok"
	if err != nil {
		res = "error"
	}
	m.housekeepingRuns.WithLabelValues(res).Inc()
}

// SessionsPolled implements reconcile.Observer.
func (m *Metrics) SessionsPolled(iface string, online map[string]int, changes []store.SessionChange) {
	m.mu.Lock()
	if m.sessOnline == nil {
		m.sessOnline = map[string]map[string]int{}
	}
	m.sessOnline[iface] = online
	m.mu.Unlock()
	for _, k := range []store.SessionKind{store.SessionStart, store.SessionRoam, store.SessionEnd} {
		m.sessionChanges.WithLabelValues(iface, k.String())
	}
	for _, c := range changes {
		m.sessionChanges.WithLabelValues(iface, c.Kind.String()).Inc()
	}
}

// ClusterLeader implements reconcile.Observer.
func (m *Metrics) ClusterLeader(lead bool) {
	v := 0.0
	if lead {
		v = 1
	}
	m.clusterLeader.Set(v)
}

// SessionScriptRun implements reconcile.Observer.
func (m *Metrics) SessionScriptRun(event string, ok bool, _ time.Duration) {
	res := "ok"
	if !ok {
		res = "failed"
	}
	m.sessionRuns.WithLabelValues(event, res).Inc()
}

// stateCollector computes the store and device gauges at scrape time.
type stateCollector Metrics

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descConfigs, descOnline, descSessionsOnline, descDevicePeers, descPool, descEvents, descBlocked, descOrphans} {
		ch <- d
	}
}

// scrapeTimeout bounds the store queries and device reads of one scrape.
const scrapeTimeout = 10 * time.Second

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	m := (*Metrics)(c)
	m.mu.Lock()
	src := m.src
	polled := make(map[string]map[string]int, len(m.sessOnline))
	for iface, byProfile := range m.sessOnline {
		polled[iface] = byProfile // never written after SessionsPolled stored it
	}
	m.mu.Unlock()
	if src == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	cfg := src.cfg()

	for _, ifc := range cfg.Interfaces {
		byProfile, ok := polled[ifc.Name]
		if !ok {
			continue // not polled yet
		}
		configured := map[string]bool{}
		for _, p := range cfg.ProfilesOn(ifc.Name) {
			configured[p.ID] = true
			ch <- prometheus.MustNewConstMetric(descSessionsOnline, prometheus.GaugeValue, float64(byProfile[p.ID]), ifc.Name, p.ID)
		}
		for p, n := range byProfile {
			if !configured[p] && n > 0 {
				ch <- prometheus.MustNewConstMetric(descSessionsOnline, prometheus.GaugeValue, float64(n), ifc.Name, p)
			}
		}
	}

	counts, err := src.st.CountPeers(ctx)
	if err != nil {
		src.log.Error("metrics: count configs", "err", err)
		ch <- prometheus.NewInvalidMetric(descConfigs, err)
	} else {
		type key struct{ iface, profile string }
		byState := map[key]map[store.State]int{}
		used := map[string]int{}
		// Every configured profile appears, at 0 when it has no configs.
		for _, p := range cfg.Profiles {
			byState[key{p.Interface, p.ID}] = map[store.State]int{store.StatePending: 0, store.StateActive: 0}
		}
		for _, pc := range counts {
			k := key{pc.Interface, pc.ProfileID}
			if byState[k] == nil {
				byState[k] = map[store.State]int{}
			}
			byState[k][pc.State] += pc.Count
			used[pc.ProfileID] += pc.Count
		}
		for k, states := range byState {
			for st, n := range states {
				ch <- prometheus.MustNewConstMetric(descConfigs, prometheus.GaugeValue, float64(n), k.iface, k.profile, string(st))
			}
		}
		for _, p := range cfg.Profiles {
			u := used[p.ID]
			ch <- prometheus.MustNewConstMetric(descPool, prometheus.GaugeValue, float64(u), p.ID, "used")
			ch <- prometheus.MustNewConstMetric(descPool, prometheus.GaugeValue, float64(max(p.Capacity()-u, 0)), p.ID, "free")
		}
	}

	evs, err := src.st.CountEvents(ctx)
	if err != nil {
		src.log.Error("metrics: count events", "err", err)
		ch <- prometheus.NewInvalidMetric(descEvents, err)
	} else {
		for st, n := range evs {
			ch <- prometheus.MustNewConstMetric(descEvents, prometheus.GaugeValue, float64(n), st)
		}
	}

	now := src.now()
	rule := reconcile.OnlineRule(cfg.Sessions)
	for _, ifc := range cfg.Interfaces {
		if src.orphans != nil {
			// Known from the engine's latest look, even when this
			// scrape cannot read the device.
			if st, ok := src.orphans(ifc.Name); ok {
				b := 0.0
				if st.Blocked {
					b = 1
				}
				ch <- prometheus.MustNewConstMetric(descBlocked, prometheus.GaugeValue, b, ifc.Name)
				ch <- prometheus.MustNewConstMetric(descOrphans, prometheus.GaugeValue, float64(st.Orphans), ifc.Name)
			}
		}
		d, err := src.dev.Read(ctx, ifc.Name)
		if err != nil {
			m.DeviceReadError(ifc.Name)
			src.log.Warn("metrics: read device", "iface", ifc.Name, "err", err)
			continue
		}
		ch <- prometheus.MustNewConstMetric(descDevicePeers, prometheus.GaugeValue, float64(len(d.Peers)), ifc.Name)
		acts, err := src.st.ListActivity(ctx, ifc.Name)
		if err != nil {
			src.log.Error("metrics: list activity", "iface", ifc.Name, "err", err)
			ch <- prometheus.NewInvalidMetric(descOnline, err)
			continue
		}
		ch <- prometheus.MustNewConstMetric(descOnline, prometheus.GaugeValue, float64(rule.CountDevice(d, acts, now)), ifc.Name)
	}
}
