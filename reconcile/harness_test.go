package reconcile

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/config"
	"github.com/wgkeeper/wgkeeper/hooks"
	"github.com/wgkeeper/wgkeeper/internal/enginetest"
	"github.com/wgkeeper/wgkeeper/internal/fakeclock"
	"github.com/wgkeeper/wgkeeper/internal/testenv"
	"github.com/wgkeeper/wgkeeper/store/sqlite"
	"github.com/wgkeeper/wgkeeper/wg"
	"github.com/wgkeeper/wgkeeper/wg/wgtest"
)

// hookScript appends the environment it sees to events.log beside itself.
// A file fail_C / fail_D holding N makes the next N runs of that event fail
// (exit 3); a file always_fail_C / always_fail_D makes every run fail
// (exit 4); a file sleep_D holding seconds makes D runs sleep first; a file
// stderr_C / stderr_D is copied to stderr; a file linkdel_C makes the next
// C run delete the interface (ip link del) and wait until its UAPI socket
// is gone.
const hookScript = `#!/bin/sh
d=$(dirname "$(readlink -f "$0")")
rec=$(printf -- '---\n'; env | LC_ALL=C sort)
printf '%s\n' "$rec" >> "$d/events.log"
if [ -f "$d/linkdel_$VPN_EVENT" ]; then
	rm "$d/linkdel_$VPN_EVENT"
	ip link del "$VPN_INTERFACE"
	i=0
	while [ -e "/var/run/wireguard/$VPN_INTERFACE.sock" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
fi
if [ -f "$d/sleep_$VPN_EVENT" ]; then sleep "$(cat "$d/sleep_$VPN_EVENT")"; fi
if [ -f "$d/stderr_$VPN_EVENT" ]; then cat "$d/stderr_$VPN_EVENT" >&2; fi
n=$(cat "$d/fail_$VPN_EVENT" 2>/dev/null || echo 0)
if [ "$n" -gt 0 ]; then
	echo $((n - 1)) > "$d/fail_$VPN_EVENT"
	echo "failing on purpose" >&2
	exit 3
fi
if [ -f "$d/always_fail_$VPN_EVENT" ]; then exit 4; fi
exit 0
`

// testConfig is the harness's configuration for the interface name.
func testConfig(name string, port int, orphans, ifaceExtra string, maxPerUser int, psk bool) string {
	return testenv.Config{
		Interface: name,
		Port:      port,
		Hooks: `timeout = "5s"
concurrency = 4
max_attempts = 3
retry_base = "10s"
retry_max = "1m"`,
		InterfaceLines: fmt.Sprintf("orphans = %q\n%s", orphans, ifaceExtra),
		ProfileLines: fmt.Sprintf(`dns = ["10.99.0.1"]
expiry = "0"
max_expiry = "0"
max_configs_per_user = %d
persistent_keepalive = "25s"
preshared_keys = %t`, maxPerUser, psk),
		Extra: "\n[housekeeping]\nlog_retention = \"90d\"\n",
	}.TOML()
}

type harnessOpts struct {
	orphans    string
	maxPerUser int
	psk        bool
	peers      []wg.Wanted // preset on the server
	ifaceExtra string      // more lines of the [[interface]] section
	real       bool        // a real device and the real script (needs root)
}

type harness struct {
	t      testing.TB
	dir    string
	srv    *testenv.Server
	cfg    *config.Config
	st     *sqlite.Store
	dev    testenv.Device
	fake   *enginetest.Device // the in-memory device; nil on a real one
	runner Runner
	eng    *Engine
	clock  *fakeclock.Clock
	ctx    context.Context
}

// newHarness opens a store on a temporary file and an engine on it, with
// the in-memory device and runner when testenv.Fakes says so, else on a
// real userspace device and the real hook script. Tests that are about
// the real device or script set harnessOpts.real and skip without root.
func newHarness(t testing.TB, o harnessOpts) *harness {
	t.Helper()
	if o.orphans == "" {
		o.orphans = "remove"
	}
	if o.maxPerUser == 0 {
		o.maxPerUser = 3
	}
	h := &harness{t: t, dir: t.TempDir(), ctx: context.Background()}
	h.srv = testenv.NewServer(t, o.real, o.peers...)
	h.dev, h.fake = h.srv.Device, h.srv.Fake
	h.open(testConfig(h.srv.Name, h.srv.Port, o.orphans, o.ifaceExtra, o.maxPerUser, o.psk))
	return h
}

// open writes the hook script and the config text into h.dir and opens
// store, device, runner and engine on them: the in-memory device and
// runner when h.fake is set, else (when h.dev is not set yet) a device
// client, and the real script.
func (h *harness) open(toml string) {
	t := h.t
	t.Helper()
	cfg := testenv.Load(t, h.dir, toml, hookScript)
	h.cfg = cfg
	h.clock = fakeclock.New(time.Now().UTC().Truncate(time.Second))
	var err error
	h.st, err = sqlite.Open(h.ctx, cfg.Database, sqlite.Options{Create: true, Now: h.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.st.Close() })
	switch {
	case h.dev != nil:
	case h.fake != nil:
		h.dev = h.fake
	default:
		dev, err := wg.NewClient()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { dev.Close() })
		h.dev = dev
	}
	if h.fake != nil {
		h.runner = enginetest.NewRunner(enginetest.RunnerConfig{Script: h.hook, Timeout: cfg.Hooks.Timeout, Concurrency: cfg.Hooks.Concurrency})
	} else {
		h.runner, err = hooks.New(hooks.Config{Script: cfg.Hooks.Script, Timeout: cfg.Hooks.Timeout, Concurrency: cfg.Hooks.Concurrency})
		if err != nil {
			t.Fatal(err)
		}
	}
	h.eng = h.newEngine(nil)
}

// hook is hookScript in Go, for the in-memory runner: it logs the same
// record and obeys the same files (linkdel_C deletes the in-memory
// interface).
func (h *harness) hook(ctx context.Context, env map[string]string) enginetest.Exit {
	file := func(name string) string { return filepath.Join(h.dir, name+"_"+env["VPN_EVENT"]) }
	if err := testenv.Append(filepath.Join(h.dir, "events.log"), testenv.FormatEnv(env)); err != nil {
		return enginetest.Exit{Code: 1, Stderr: err.Error()}
	}
	if err := os.Remove(file("linkdel")); err == nil {
		h.fake.DeleteInterface(env["VPN_INTERFACE"])
	}
	if b, err := os.ReadFile(file("sleep")); err == nil {
		secs, _ := strconv.ParseFloat(strings.TrimSpace(string(b)), 64)
		if !enginetest.Sleep(ctx, time.Duration(secs*float64(time.Second))) {
			return enginetest.Exit{Code: -1}
		}
	}
	stderr, _ := os.ReadFile(file("stderr"))
	b, _ := os.ReadFile(file("fail"))
	if n, _ := strconv.Atoi(strings.TrimSpace(string(b))); n > 0 {
		if err := os.WriteFile(file("fail"), []byte(strconv.Itoa(n-1)+"\n"), 0o644); err != nil {
			return enginetest.Exit{Code: 1, Stderr: err.Error()}
		}
		return enginetest.Exit{Code: 3, Stderr: string(stderr) + "failing on purpose\n"}
	}
	if _, err := os.Stat(file("always_fail")); err == nil {
		return enginetest.Exit{Code: 4, Stderr: string(stderr)}
	}
	return enginetest.Exit{Stderr: string(stderr)}
}

func (h *harness) newEngine(crash func(string)) *Engine {
	h.t.Helper()
	e, err := New(Options{Config: h.cfg, Store: h.st, Device: h.dev, Runner: h.runner, Now: h.clock.Now, crash: crash})
	if err != nil {
		h.t.Fatal(err)
	}
	return e
}

func (h *harness) touch(name, content string) {
	h.t.Helper()
	if err := os.WriteFile(filepath.Join(h.dir, name), []byte(content), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) rm(name string) {
	h.t.Helper()
	if err := os.Remove(filepath.Join(h.dir, name)); err != nil {
		h.t.Fatal(err)
	}
}

// scriptRuns parses events.log: one map per script run, in order.
func (h *harness) scriptRuns() []map[string]string {
	h.t.Helper()
	return testenv.EnvRuns(h.t, filepath.Join(h.dir, "events.log"))
}

// runsOf returns the script runs of one event kind for one key.
func (h *harness) runsOf(kind string, key wgtypes.Key) []map[string]string {
	var out []map[string]string
	for _, r := range h.scriptRuns() {
		if r["VPN_EVENT"] == kind && r["VPN_CONNECTION_ID"] == key.String() {
			out = append(out, r)
		}
	}
	return out
}

func (h *harness) read() *wg.Device {
	h.t.Helper()
	d, err := h.dev.Read(h.ctx, h.srv.Name)
	if err != nil {
		h.t.Fatal(err)
	}
	return d
}

func (h *harness) onDevice(k wgtypes.Key) (wg.Peer, bool) {
	return h.read().Peer(k)
}

func (h *harness) create(user string, mod ...func(*CreateRequest)) *Created {
	h.t.Helper()
	req := CreateRequest{UserID: user, ProfileID: "staff"}
	for _, m := range mod {
		m(&req)
	}
	c, err := h.eng.Create(h.ctx, req)
	if err != nil {
		h.t.Fatalf("create for %s: %v", user, err)
	}
	return c
}

// connect starts a real client with the created config and handshakes.
// It needs a real device (harnessOpts.real).
func (h *harness) connect(c *Created) *wgtest.ClientDev {
	h.t.Helper()
	opts := []wgtest.ClientOption{wgtest.WithClientKey(*c.PrivateKey), wgtest.WithClientAddrs(c.Peer.IPv4, c.Peer.IPv6)}
	if c.Peer.PresharedKey != nil {
		opts = append(opts, wgtest.WithPresharedKey(*c.Peer.PresharedKey))
	}
	cl := h.srv.NewClient(h.t, opts...)
	ctx, cancel := context.WithTimeout(h.ctx, 15*time.Second)
	defer cancel()
	if err := cl.Handshake(ctx); err != nil {
		h.t.Fatalf("client %s: %v", c.Peer.PublicKey, err)
	}
	return cl
}

// assertInSync checks device peers == active store peers, exactly.
func (h *harness) assertInSync() {
	h.t.Helper()
	testenv.AssertInSync(h.t, h.st, h.dev, h.srv.Name)
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
