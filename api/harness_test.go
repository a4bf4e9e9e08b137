package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/api/apitest"
	"github.com/wgkeeper/wgkeeper/config"
	"github.com/wgkeeper/wgkeeper/internal/enginetest"
	"github.com/wgkeeper/wgkeeper/internal/fakeclock"
	"github.com/wgkeeper/wgkeeper/internal/testenv"
	"github.com/wgkeeper/wgkeeper/reconcile"
	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/store/sqlite"
	"github.com/wgkeeper/wgkeeper/wg"
	"github.com/wgkeeper/wgkeeper/wg/wgtest"
)

// hookScript logs every run to events.log beside itself; users named
// reject* are refused (exit 7, with a line on stderr), loud* too (with a
// last line of 320 KB), users named slow* take two seconds, queue* one and
// a half, and D events of users named faild* fail (exit 5).
const hookScript = `#!/bin/sh
d=$(dirname "$(readlink -f "$0")")
printf '%s %s %s %s\n' "$VPN_EVENT" "$VPN_USER_ID" "$VPN_CONNECTION_ID" "$VPN_REASON" >> "$d/events.log"
case "$VPN_EVENT:$VPN_USER_ID" in
C:reject*) echo "user is blocked" >&2; exit 7;;
C:loud*) echo "user is blocked" >&2; head -c 320000 /dev/zero | tr '\0' x >&2; exit 7;;
C:slow*) sleep 2;;
C:queue*) sleep 1.5;;
D:faild*) exit 5;;
esac
exit 0
`

const testToken = "s3cret-token-for-tests"

// testConfig is the harness's configuration: the "staff" profile and a
// "tiny" one of two addresses on the interface name.
func testConfig(name string, port int, hooks, ifaceExtra string, noScript bool, maxPerUser int, extra string) string {
	return testenv.Config{
		Interface: name,
		Port:      port,
		NoScript:  noScript,
		Hooks: hooks + `
concurrency = 4
max_attempts = 1
retry_base = "10s"
retry_max = "1m"`,
		InterfaceLines: ifaceExtra,
		ProfileLines: fmt.Sprintf(`dns = ["10.99.0.1"]
expiry = "30d"
max_expiry = "365d"
max_configs_per_user = %d
preshared_keys = true`, maxPerUser),
		Extra: fmt.Sprintf(`
[[profile]]
id = "tiny"
interface = %q
ipv4_range = "10.98.0.0/30"
expiry = "0"
max_expiry = "0"
%s`, name, extra),
	}.TOML()
}

// ghostConfig adds an interface that does not exist, for 503 answers.
const ghostConfig = `
[[interface]]
name = "wgghost0"

[[profile]]
id = "ghost"
interface = "wgghost0"
ipv4_range = "10.97.0.0/24"
`

type harnessOpts struct {
	// hooks replaces the default [hooks] timeout line (timeout = "5s").
	hooks      string
	maxPerUser int
	noScript   bool
	ghost      bool
	logger     bool
	ifaceExtra string // more lines of the [[interface]] section
	real       bool   // a real device and the real script (needs root)
}

type harness struct {
	t       testing.TB
	dir     string
	srv     *testenv.Server
	cfg     *config.Config
	st      *sqlite.Store
	dev     testenv.Device
	fake    *enginetest.Device // the in-memory device; nil on a real one
	eng     *reconcile.Engine
	metrics *Metrics
	api     *Server
	http    *httptest.Server
	// client sends requests to http, each checked against openapi.yaml.
	client *http.Client
	clock  *fakeclock.Clock
	ctx    context.Context
}

// handshake makes the config of key (with its addresses and preshared
// key) online: a real client handshakes and pings on a real device; on the
// in-memory one the peer gets what such a client leaves there (a handshake
// now, bytes both ways, an endpoint on loopback). Then the engine polls the
// interface's sessions, as the daemon does every sessions.poll_interval:
// online is an open session (reconcile.Online).
func (h *harness) handshake(t testing.TB, priv wgtypes.Key, a4, a6 netip.Addr, psk wgtypes.Key) {
	t.Helper()
	if h.fake != nil {
		if err := h.fake.SetTraffic(h.srv.Name, priv.PublicKey(), enginetest.Traffic{LastHandshake: time.Now(), RxBytes: 212, TxBytes: 92,
			Endpoint: netip.MustParseAddrPort("127.0.0.1:40000")}); err != nil {
			t.Fatal(err)
		}
	} else {
		cl := h.srv.NewClient(t, wgtest.WithClientKey(priv), wgtest.WithClientAddrs(a4, a6), wgtest.WithPresharedKey(psk))
		ctx, cancel := context.WithTimeout(h.ctx, 15*time.Second)
		defer cancel()
		if err := cl.Handshake(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := h.eng.PollSessions(h.ctx, h.srv.Name); err != nil {
		t.Fatal(err)
	}
}

// newHarness serves the API of an engine on a store in a temporary file,
// with the in-memory device and runner when testenv.Fakes says so, else
// on a real userspace device and the real hook script. Tests that are
// about the real device or script set harnessOpts.real and skip without
// root.
func newHarness(t testing.TB, o harnessOpts) *harness {
	t.Helper()
	if o.maxPerUser == 0 {
		o.maxPerUser = 3
	}
	h := &harness{t: t, dir: t.TempDir(), ctx: context.Background()}
	h.srv = testenv.NewServer(t, o.real)
	h.dev, h.fake = h.srv.Device, h.srv.Fake
	if o.hooks == "" {
		o.hooks = `timeout = "5s"`
	}
	ghost := ""
	if o.ghost {
		ghost = ghostConfig
	}
	cfg := testenv.Load(t, h.dir, testConfig(h.srv.Name, h.srv.Port, o.hooks, o.ifaceExtra, o.noScript, o.maxPerUser, ghost), hookScript)
	h.cfg = cfg
	h.clock = fakeclock.New(time.Now().UTC())
	var err error
	h.st, err = sqlite.Open(h.ctx, cfg.Database, sqlite.Options{Create: true, Now: h.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.st.Close() })
	var script enginetest.Script
	if !o.noScript {
		script = h.hook
	}
	runner := h.srv.Runner(t, cfg, script)
	h.metrics = NewMetrics()
	h.eng, err = reconcile.New(reconcile.Options{Config: cfg, Store: h.st, Device: h.dev, Runner: runner, Now: h.clock.Now, Observer: h.metrics})
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{Engine: h.eng, Token: testToken, Metrics: h.metrics, Version: "test", Now: h.clock.Now}
	if o.logger {
		opts.Logger = testLogger(t)
	}
	h.api, err = New(opts)
	if err != nil {
		t.Fatal(err)
	}
	h.http = httptest.NewServer(h.api)
	t.Cleanup(h.http.Close)
	h.client = specClient(t, h.http.Client())
	return h
}

// hook is hookScript in Go, for the in-memory runner: the same log line,
// the same answers per user.
func (h *harness) hook(ctx context.Context, env map[string]string) enginetest.Exit {
	ev, user := env["VPN_EVENT"], env["VPN_USER_ID"]
	line := fmt.Sprintf("%s %s %s %s\n", ev, user, env["VPN_CONNECTION_ID"], env["VPN_REASON"])
	if err := testenv.Append(filepath.Join(h.dir, "events.log"), line); err != nil {
		return enginetest.Exit{Code: 1, Stderr: err.Error()}
	}
	sleep := func(d time.Duration) enginetest.Exit {
		if !enginetest.Sleep(ctx, d) {
			return enginetest.Exit{Code: -1}
		}
		return enginetest.Exit{}
	}
	switch {
	case ev == "C" && strings.HasPrefix(user, "reject"):
		return enginetest.Exit{Code: 7, Stderr: "user is blocked\n"}
	case ev == "C" && strings.HasPrefix(user, "loud"):
		return enginetest.Exit{Code: 7, Stderr: "user is blocked\n" + strings.Repeat("x", 320000)}
	case ev == "C" && strings.HasPrefix(user, "slow"):
		return sleep(2 * time.Second)
	case ev == "C" && strings.HasPrefix(user, "queue"):
		return sleep(1500 * time.Millisecond)
	case ev == "D" && strings.HasPrefix(user, "faild"):
		return enginetest.Exit{Code: 5}
	}
	return enginetest.Exit{}
}

// specClient returns a copy of c whose every request and answer is checked
// against openapi.yaml (see apitest.Spec.Check); a mismatch fails t.
func specClient(t testing.TB, c *http.Client) *http.Client {
	t.Helper()
	cc := *c
	cc.Transport = apitest.File(t, "openapi.yaml").Transport(t, c.Transport)
	return &cc
}

// response is a decoded answer.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

// errCode returns the code of an error body ("" if it is not one).
func (r response) errCode() string {
	var e errorBody
	if json.Unmarshal(r.body, &e) != nil || e.Error == nil {
		return ""
	}
	return e.Error.Code
}

// do sends a request with the token; body may be nil, a string or a value
// to encode as JSON.
func (h *harness) do(method, path string, body any) response {
	h.t.Helper()
	return h.doWith(method, path, body, map[string]string{"Authorization": "Bearer " + testToken})
}

func (h *harness) doWith(method, path string, body any, headers map[string]string) response {
	h.t.Helper()
	var rd io.Reader
	ct := ""
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
		ct = "application/json"
	case []byte:
		rd = bytes.NewReader(b)
		ct = "application/json"
	default:
		data, err := json.Marshal(b)
		if err != nil {
			h.t.Fatal(err)
		}
		rd = bytes.NewReader(data)
		ct = "application/json"
	}
	req, err := http.NewRequest(method, h.http.URL+path, rd)
	if err != nil {
		h.t.Fatal(err)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	for k, v := range headers {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := h.client.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: data}
}

// create posts a create and fails the test unless it answers want.
func (h *harness) create(body map[string]any, want int) CreateResponse {
	h.t.Helper()
	r := h.do("POST", "/v1/peers", body)
	if r.status != want {
		h.t.Fatalf("create %v: status %d, want %d: %s", body, r.status, want, r.body)
	}
	var c CreateResponse
	r.json(h.t, &c)
	return c
}

func (h *harness) read() *wg.Device {
	h.t.Helper()
	d, err := h.dev.Read(h.ctx, h.srv.Name)
	if err != nil {
		h.t.Fatal(err)
	}
	return d
}

// snapshot is what must not change after a bad request.
type snapshot struct {
	peers  string
	events map[string]int
	device string
	runs   int
}

func (h *harness) snapshot() snapshot {
	h.t.Helper()
	peers, err := h.st.ListPeers(h.ctx, store.PeerFilter{})
	if err != nil {
		h.t.Fatal(err)
	}
	var ps []string
	for _, p := range peers {
		ps = append(ps, fmt.Sprintf("%s/%s/%s/%s/%v", p.PublicKey, p.UserID, p.State, p.IPv4, p.ExpiresAt))
	}
	evs, err := h.st.CountEvents(h.ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	var ds []string
	for _, p := range h.read().Peers {
		ds = append(ds, fmt.Sprintf("%s/%v", p.PublicKey, p.AllowedIPs))
	}
	return snapshot{peers: strings.Join(ps, ","), events: evs, device: strings.Join(ds, ","), runs: len(h.scriptRuns())}
}

func (a snapshot) equal(b snapshot) bool {
	if a.peers != b.peers || a.device != b.device || a.runs != b.runs || len(a.events) != len(b.events) {
		return false
	}
	for k, v := range a.events {
		if b.events[k] != v {
			return false
		}
	}
	return true
}

// scriptRuns returns the lines of events.log: "EVENT USER KEY REASON".
func (h *harness) scriptRuns() []string {
	h.t.Helper()
	return testenv.Lines(h.t, filepath.Join(h.dir, "events.log"))
}

// assertInSync checks device peers == active store peers, with their
// allowed IPs.
func (h *harness) assertInSync() {
	h.t.Helper()
	testenv.AssertInSync(h.t, h.st, h.dev, h.srv.Name)
}

func newKey(t testing.TB) wgtypes.Key {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// testLogger writes log lines into the test's output.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
