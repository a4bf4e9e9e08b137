package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/config"
	"github.com/wgkeeper/wgkeeper/hooks"
	"github.com/wgkeeper/wgkeeper/internal/pgtest"
	"github.com/wgkeeper/wgkeeper/internal/testenv"
	"github.com/wgkeeper/wgkeeper/reconcile"
	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/store/postgres"
	"github.com/wgkeeper/wgkeeper/store/sqlite"
	"github.com/wgkeeper/wgkeeper/wg"
)

// seed puts n active configs in the store and on the device without
// running scripts.
func (h *harness) seed(tb testing.TB, n int) {
	tb.Helper()
	seedConfigs(tb, h.ctx, h.cfg, h.st, h.dev, h.srv.Name, n)
}

// seedConfigs puts n active configs of the "staff" profile in st and on
// the interface iface of dev, without running scripts.
func seedConfigs(tb testing.TB, ctx context.Context, cfg *config.Config, st store.Store, dev testenv.Device, iface string, n int) {
	tb.Helper()
	prof, _ := cfg.Profile("staff")
	add := make([]wg.Wanted, 0, n)
	for i := 0; i < n; i++ {
		k := newKey(tb).PublicKey()
		p, ev, err := st.InsertPending(ctx, store.NewPeer{
			PublicKey: k, Interface: iface, ProfileID: "staff", UserID: fmt.Sprintf("seed%d", i),
			IPv4Range: prof.IPv4Range, IPv6Range: prof.IPv6Range,
		})
		if err != nil {
			tb.Fatal(err)
		}
		if err := st.Activate(ctx, k, ev.ID); err != nil {
			tb.Fatal(err)
		}
		add = append(add, reconcile.WantedPeer(p))
	}
	if _, err := dev.Apply(ctx, iface, wg.Plan{Add: add}); err != nil {
		tb.Fatal(err)
	}
}

// serverWith serves the harness's store and device through an engine whose
// script is script ("" = none).
func (h *harness) serverWith(tb testing.TB, script string) *httptest.Server {
	tb.Helper()
	return serveEngine(tb, h.cfg, h.st, h.dev, script)
}

// serveEngine serves st and dev through an engine of cfg whose script is
// script ("" = none).
func serveEngine(tb testing.TB, cfg *config.Config, st store.Store, dev testenv.Device, script string) *httptest.Server {
	tb.Helper()
	run, err := hooks.New(hooks.Config{Script: script, Timeout: 5 * time.Second, Concurrency: cfg.Hooks.Concurrency})
	if err != nil {
		tb.Fatal(err)
	}
	eng, err := reconcile.New(reconcile.Options{Config: cfg, Store: st, Device: dev, Runner: run})
	if err != nil {
		tb.Fatal(err)
	}
	s, err := New(Options{Engine: eng, Token: testToken})
	if err != nil {
		tb.Fatal(err)
	}
	hs := httptest.NewServer(s)
	tb.Cleanup(hs.Close)
	return hs
}

type loadResult struct {
	n        int
	elapsed  time.Duration
	p50, p99 time.Duration
	lat      []time.Duration // every create's, sorted
}

// add is the result of r's creates and o's together (run one after the
// other).
func (r loadResult) add(o loadResult) loadResult {
	lat := slices.Concat(r.lat, o.lat)
	slices.Sort(lat)
	n := len(lat)
	return loadResult{n: r.n + o.n, elapsed: r.elapsed + o.elapsed, lat: lat, p50: lat[n/2], p99: lat[min(n-1, n*99/100)]}
}

func (r loadResult) perSecond() float64 { return float64(r.n) / r.elapsed.Seconds() }

// createLoad sends n creates (client-supplied keys, one user each) from
// `clients` concurrent HTTP clients over loopback and measures each.
func createLoad(tb testing.TB, url string, n, clients int, tag string) loadResult {
	tb.Helper()
	bodies := make([][]byte, n)
	for i := range bodies {
		k, _ := wgtypes.GeneratePrivateKey()
		bodies[i], _ = json.Marshal(map[string]string{"user_id": fmt.Sprintf("%s-%d", tag, i), "profile_id": "staff", "public_key": k.PublicKey().String()})
	}
	cl := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	defer cl.CloseIdleConnections()
	lat := make([]time.Duration, n)
	next := make(chan int, n)
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	var wg sync.WaitGroup
	var mu sync.Mutex // guards firstErr
	var firstErr error
	start := time.Now()
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				req, _ := http.NewRequest("POST", url+"/v1/peers", bytes.NewReader(bodies[i]))
				req.Header.Set("Authorization", "Bearer "+testToken)
				req.Header.Set("Content-Type", "application/json")
				t0 := time.Now()
				resp, err := cl.Do(req)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 201 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				lat[i] = time.Since(t0)
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	r := loadResult{n: n, elapsed: time.Since(start)}
	if firstErr != nil {
		tb.Fatalf("create: %v", firstErr)
	}
	slices.Sort(lat)
	r.p50, r.p99, r.lat = lat[n/2], lat[min(n-1, n*99/100)], lat
	return r
}

// BenchmarkCreateAPI measures creates through the HTTP API over loopback
// (8 concurrent clients, real store, real device, the script a trivial
// "exit 0" or none) on an empty interface and on one with 10k configs,
// and prints the four results with the p99 ratios 10k/0. Each iteration
// sends 1000 creates per case. Targets: >= 300 creates/s with the script on
// 2 cores; p99 at 10k within 1.5x of the p99 at 0.
func BenchmarkCreateAPI(b *testing.B) {
	const perIter, clients, existing = 1000, 8, 10000
	n := perIter * b.N
	trivial := filepath.Join(b.TempDir(), "true.sh")
	if err := os.WriteFile(trivial, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		b.Fatal(err)
	}
	results := map[string]loadResult{}
	b.ResetTimer()
	for _, tc := range []struct{ name, script string }{{"none", ""}, {"script", trivial}} {
		b.StopTimer()
		h := newHarness(b, harnessOpts{real: true})
		url := h.serverWith(b, tc.script).URL
		createLoad(b, url, 50, clients, "warm-"+tc.name) // warm caches and connections
		b.StartTimer()
		results[tc.name+"@0"] = createLoad(b, url, n, clients, "at0-"+tc.name)
	}
	b.StopTimer()
	h := newHarness(b, harnessOpts{real: true})
	t0 := time.Now()
	h.seed(b, existing)
	b.Logf("seeded %d configs in %s", existing, time.Since(t0).Round(time.Millisecond))
	for _, tc := range []struct{ name, script string }{{"none", ""}, {"script", trivial}} {
		url := h.serverWith(b, tc.script).URL
		createLoad(b, url, 50, clients, "warm10k-"+tc.name)
		b.StartTimer()
		results[tc.name+"@10k"] = createLoad(b, url, n, clients, "at10k-"+tc.name)
		b.StopTimer()
	}
	var out bytes.Buffer
	fmt.Fprintf(&out, "%-12s %8s %10s %10s %10s\n", "case", "creates", "creates/s", "p50", "p99")
	for _, k := range []string{"none@0", "script@0", "none@10k", "script@10k"} {
		r := results[k]
		fmt.Fprintf(&out, "%-12s %8d %10.0f %10s %10s\n", k, r.n, r.perSecond(), r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond))
		b.ReportMetric(r.perSecond(), "creates/s-"+k)
		b.ReportMetric(float64(r.p99.Microseconds())/1000, "p99-ms-"+k)
	}
	for _, s := range []string{"none", "script"} {
		ratio := float64(results[s+"@10k"].p99) / float64(results[s+"@0"].p99)
		fmt.Fprintf(&out, "p99 ratio 10k/0 (%s): %.2f\n", s, ratio)
		b.ReportMetric(ratio, "p99-ratio-"+s)
	}
	b.Logf("\n%s", out.String())
}

// BenchmarkCreateAPIBackends runs BenchmarkCreateAPI's workload through
// the HTTP API on both backends in one run: SQLite (a file) and
// PostgreSQL (a fresh database on the server WGKEEPER_TEST_POSTGRES
// names; skipped without it), each with a real userspace device, 8
// concurrent clients, the trivial "exit 0" script and no script, on an
// empty interface and on one with 10k configs. Each iteration sends 1000
// creates per case and backend, in four rounds in which the backends take
// turns, so that a change of the machine's load during the run touches
// both alike. It prints creates/s and p99 per backend and case, the ratio
// PostgreSQL/SQLite of creates/s, and each backend's p99 at 10k against
// at 0. Targets (many nodes): PostgreSQL >= 0.5x SQLite's creates/s, and
// its p99 at 10k <= 1.5x its p99 at 0.
// Run: go test -run XXX -bench CreateAPIBackends -benchtime 1x ./api/
func BenchmarkCreateAPIBackends(b *testing.B) {
	pgURL := pgtest.NewDatabase(b) // skips, with how to run it, when no server is named
	const perIter, clients, existing = 1000, 8, 10000
	n := perIter * b.N
	trivial := filepath.Join(b.TempDir(), "true.sh")
	if err := os.WriteFile(trivial, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	pgUsed := false
	open := func(backend string, cfg *config.Config) store.Store {
		if backend == "sqlite" {
			st, err := sqlite.Open(ctx, cfg.Database, sqlite.Options{Create: true})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { st.Close() })
			return st
		}
		url := pgURL
		if pgUsed {
			url = pgtest.NewDatabase(b)
		}
		pgUsed = true
		st, err := postgres.Open(ctx, url, postgres.Options{Create: true})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { st.Close() })
		return st
	}
	// env is a real interface, its configuration and a store of a backend.
	type env struct {
		cfg *config.Config
		st  store.Store
		srv *testenv.Server
	}
	newEnv := func(backend string) env {
		srv := testenv.NewServer(b, true)
		cfg := testenv.Load(b, b.TempDir(), testConfig(srv.Name, srv.Port, `timeout = "5s"`, "", true, 3, ""), "")
		return env{cfg: cfg, st: open(backend, cfg), srv: srv}
	}
	backends := []string{"sqlite", "postgres"}
	cases := []string{"none@0", "script@0", "none@10k", "script@10k"}
	scriptOf := map[string]string{"none": "", "script": trivial}
	results := map[string]loadResult{} // backend/case
	// Each case runs in rounds, the backends taking turns (in alternating
	// order) within each, so that both see the same load of the machine
	// however it changes during the run.
	const rounds = 4
	runCase := func(c string, urls map[string]string) {
		for _, be := range backends {
			createLoad(b, urls[be], 50, clients, "warm-"+be+c) // warm caches and connections
		}
		for r := range rounds {
			order := backends
			if r%2 == 1 {
				order = []string{backends[1], backends[0]}
			}
			for _, be := range order {
				b.StartTimer()
				res := createLoad(b, urls[be], n/rounds, clients, fmt.Sprintf("%s%s-%d", be, c, r))
				b.StopTimer()
				if r == 0 {
					results[be+"/"+c] = res
				} else {
					results[be+"/"+c] = results[be+"/"+c].add(res)
				}
			}
		}
	}
	// Each "@0" case has an interface and a store of its own; the
	// "script@0" ones are then seeded for both "@10k" cases.
	b.ResetTimer()
	b.StopTimer()
	big := map[string]env{}
	for _, mode := range []string{"none", "script"} {
		urls := map[string]string{}
		for _, be := range backends {
			e := newEnv(be)
			urls[be] = serveEngine(b, e.cfg, e.st, e.srv.Device, scriptOf[mode]).URL
			big[be] = e
		}
		runCase(mode+"@0", urls)
	}
	for _, be := range backends {
		e := big[be]
		t0 := time.Now()
		seedConfigs(b, ctx, e.cfg, e.st, e.srv.Device, e.srv.Name, existing)
		b.Logf("%s: seeded %d configs in %s", be, existing, time.Since(t0).Round(time.Millisecond))
	}
	for _, mode := range []string{"none", "script"} {
		urls := map[string]string{}
		for _, be := range backends {
			e := big[be]
			urls[be] = serveEngine(b, e.cfg, e.st, e.srv.Device, scriptOf[mode]).URL
		}
		runCase(mode+"@10k", urls)
	}
	var out bytes.Buffer
	fmt.Fprintf(&out, "%-22s", "creates/s, p99")
	for _, c := range cases {
		fmt.Fprintf(&out, " %20s", c)
	}
	out.WriteString("\n")
	for _, be := range backends {
		fmt.Fprintf(&out, "%-22s", be)
		for _, c := range cases {
			r := results[be+"/"+c]
			fmt.Fprintf(&out, " %20s", fmt.Sprintf("%.0f/s %s", r.perSecond(), r.p99.Round(100*time.Microsecond)))
			b.ReportMetric(r.perSecond(), "creates/s-"+be+"-"+c)
			b.ReportMetric(float64(r.p99.Microseconds())/1000, "p99-ms-"+be+"-"+c)
		}
		out.WriteString("\n")
	}
	fmt.Fprintf(&out, "%-22s", "PostgreSQL/SQLite rate")
	for _, c := range cases {
		ratio := results["postgres/"+c].perSecond() / results["sqlite/"+c].perSecond()
		fmt.Fprintf(&out, " %20.2f", ratio)
		b.ReportMetric(ratio, "pg/sqlite-"+c)
	}
	out.WriteString("   (target >= 0.5)\n")
	out.WriteString("p99 10k/0 (target <= 1.5):")
	for _, be := range backends {
		for _, mode := range []string{"none", "script"} {
			ratio := float64(results[be+"/"+mode+"@10k"].p99) / float64(results[be+"/"+mode+"@0"].p99)
			fmt.Fprintf(&out, " %s %s %.2f;", be, mode, ratio)
			b.ReportMetric(ratio, "p99-10k/0-"+be+"-"+mode)
		}
	}
	b.Logf("\n%s", out.String())
}
