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
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/config"
	"github.com/wgkeeper/wgkeeper/hooks"
	"github.com/wgkeeper/wgkeeper/internal/fakeclock"
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

const testConfig = `
database = "wgkeeper.db"

[hooks]
%s
concurrency = 4
max_attempts = 1
retry_base = "10s"
retry_max = "1m"

[api]
listen = ""

[[interface]]
name = "%s"
endpoint = "127.0.0.1:%d"
%s

[[profile]]
id = "staff"
interface = "%s"
ipv4_range = "10.99.0.0/16"
ipv6_range = "fd00:99::/64"
dns = ["10.99.0.1"]
expiry = "30d"
max_expiry = "365d"
max_configs_per_user = %d
preshared_keys = true

[[profile]]
id = "tiny"
interface = "%s"
ipv4_range = "10.98.0.0/30"
expiry = "0"
max_expiry = "0"
%s
`

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
}

type harness struct {
	t       testing.TB
	dir     string
	srv     *wgtest.Server
	cfg     *config.Config
	st      *sqlite.Store
	dev     *wg.Client
	eng     *reconcile.Engine
	metrics *Metrics
	api     *Server
	http    *httptest.Server
	clock   *fakeclock.Clock
	ctx     context.Context
}

func newHarness(t testing.TB, o harnessOpts) *harness {
	t.Helper()
	wgtest.RequireRoot(t)
	if o.maxPerUser == 0 {
		o.maxPerUser = 3
	}
	h := &harness{t: t, dir: t.TempDir(), ctx: context.Background()}
	h.srv = wgtest.NewServer(t)
	script := `script = "hook.sh"`
	if o.noScript {
		script = ""
	}
	if o.hooks == "" {
		o.hooks = `timeout = "5s"`
	}
	script += "\n" + o.hooks
	if err := os.WriteFile(filepath.Join(h.dir, "hook.sh"), []byte(hookScript), 0o755); err != nil {
		t.Fatal(err)
	}
	ghost := ""
	if o.ghost {
		ghost = ghostConfig
	}
	toml := fmt.Sprintf(testConfig, script, h.srv.Name, h.srv.Port, o.ifaceExtra, h.srv.Name, o.maxPerUser, h.srv.Name, ghost)
	if err := os.WriteFile(filepath.Join(h.dir, "wgkeeper.toml"), []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(filepath.Join(h.dir, "wgkeeper.toml"))
	if err != nil {
		t.Fatalf("test config: %v", err)
	}
	h.cfg = cfg
	h.clock = fakeclock.New(time.Now().UTC())
	h.st, err = sqlite.Open(h.ctx, cfg.Database, sqlite.Options{Create: true, Now: h.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.st.Close() })
	h.dev, err = wg.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.dev.Close() })
	runner, err := hooks.New(hooks.Config{Script: cfg.Hooks.Script, Timeout: cfg.Hooks.Timeout, Concurrency: cfg.Hooks.Concurrency})
	if err != nil {
		t.Fatal(err)
	}
	h.metrics = NewMetrics()
	h.eng, err = reconcile.New(reconcile.Options{Config: cfg, Store: h.st, Device: h.dev, Runner: runner, Now: h.clock.Now, Observer: h.metrics})
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{Engine: h.eng, Store: h.st, Device: h.dev, Token: testToken, Metrics: h.metrics, Version: "test", Now: h.clock.Now}
	if o.logger {
		opts.Logger = testLogger(t)
	}
	h.api, err = New(opts)
	if err != nil {
		t.Fatal(err)
	}
	h.http = httptest.NewServer(h.api)
	t.Cleanup(h.http.Close)
	return h
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
	resp, err := h.http.Client().Do(req)
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
	data, err := os.ReadFile(filepath.Join(h.dir, "events.log"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		h.t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(data)), "\n")
}

// assertInSync checks device peers == active store peers, with their
// allowed IPs.
func (h *harness) assertInSync() {
	h.t.Helper()
	peers, err := h.st.ListPeers(h.ctx, store.PeerFilter{Interface: h.srv.Name, State: store.StateActive})
	if err != nil {
		h.t.Fatal(err)
	}
	var want, got []string
	for _, p := range peers {
		w := reconcile.WantedPeer(p)
		want = append(want, fmt.Sprintf("%s=%v", w.PublicKey, w.AllowedIPs))
	}
	for _, p := range h.read().Peers {
		got = append(got, fmt.Sprintf("%s=%v", p.PublicKey, p.AllowedIPs))
	}
	sort.Strings(want)
	sort.Strings(got)
	if strings.Join(want, ",") != strings.Join(got, ",") {
		h.t.Fatalf("store and device disagree:\nstore active: %v\ndevice:       %v", want, got)
	}
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
