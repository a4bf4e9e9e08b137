package reconcile

import (
	"context"
	"fmt"
	"net/netip"
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
	"github.com/wgkeeper/wgkeeper/store"
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

const testConfig = `
database = "wgkeeper.db"

[hooks]
script = "hook.sh"
timeout = "5s"
concurrency = 4
max_attempts = 3
retry_base = "10s"
retry_max = "1m"

[housekeeping]
log_retention = "90d"

[api]
listen = ""

[[interface]]
name = "%s"
endpoint = "127.0.0.1:%d"
orphans = "%s"
%s
[[profile]]
id = "staff"
interface = "%s"
ipv4_range = "10.99.0.0/16"
ipv6_range = "fd00:99::/64"
dns = ["10.99.0.1"]
expiry = "0"
max_expiry = "0"
max_configs_per_user = %d
persistent_keepalive = "25s"
preshared_keys = %t
`

type harnessOpts struct {
	orphans    string
	maxPerUser int
	psk        bool
	peers      []wg.Wanted // preset on the server
	ifaceExtra string      // more lines of the [[interface]] section
}

type harness struct {
	t      testing.TB
	dir    string
	srv    *wgtest.Server
	cfg    *config.Config
	st     *sqlite.Store
	dev    *wg.Client
	runner *hooks.Runner
	eng    *Engine
	clock  *fakeclock.Clock
	ctx    context.Context
}

func newHarness(t testing.TB, o harnessOpts) *harness {
	t.Helper()
	wgtest.RequireRoot(t)
	if o.orphans == "" {
		o.orphans = "remove"
	}
	if o.maxPerUser == 0 {
		o.maxPerUser = 3
	}
	h := &harness{t: t, dir: t.TempDir(), ctx: context.Background()}
	h.srv = wgtest.NewServer(t, wgtest.WithPeers(o.peers...))
	h.open(fmt.Sprintf(testConfig, h.srv.Name, h.srv.Port, o.orphans, o.ifaceExtra, h.srv.Name, o.maxPerUser, o.psk))
	return h
}

// open writes the hook script and the config text into h.dir and opens
// store, device client, runner and engine on them.
func (h *harness) open(toml string) {
	t := h.t
	t.Helper()
	if err := os.WriteFile(filepath.Join(h.dir, "hook.sh"), []byte(hookScript), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(h.dir, "hook.sh"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(h.dir, "wgkeeper.toml"), []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(filepath.Join(h.dir, "wgkeeper.toml"))
	if err != nil {
		t.Fatalf("test config: %v", err)
	}
	h.cfg = cfg
	h.clock = fakeclock.New(time.Now().UTC().Truncate(time.Second))
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
	h.runner, err = hooks.New(hooks.Config{Script: cfg.Hooks.Script, Timeout: cfg.Hooks.Timeout, Concurrency: cfg.Hooks.Concurrency})
	if err != nil {
		t.Fatal(err)
	}
	h.eng = h.newEngine(nil)
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

// shellVars are set by /bin/sh itself, not by wgkeeper.
var shellVars = map[string]bool{"PWD": true, "SHLVL": true, "_": true, "OLDPWD": true}

// scriptRuns parses events.log: one map per script run, in order.
func (h *harness) scriptRuns() []map[string]string {
	h.t.Helper()
	data, err := os.ReadFile(filepath.Join(h.dir, "events.log"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		h.t.Fatal(err)
	}
	var out []map[string]string
	for _, rec := range strings.Split(string(data), "---\n") {
		if strings.TrimSpace(rec) == "" {
			continue
		}
		m := map[string]string{}
		for _, line := range strings.Split(strings.TrimRight(rec, "\n"), "\n") {
			k, v, _ := strings.Cut(line, "=")
			if !shellVars[k] {
				m[k] = v
			}
		}
		out = append(out, m)
	}
	return out
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
	peers, err := h.st.ListPeers(h.ctx, store.PeerFilter{Interface: h.srv.Name, State: store.StateActive})
	if err != nil {
		h.t.Fatal(err)
	}
	var want []string
	for _, p := range peers {
		want = append(want, p.PublicKey.String())
	}
	var got []string
	for _, p := range h.read().Peers {
		got = append(got, p.PublicKey.String())
	}
	sort.Strings(want)
	sort.Strings(got)
	if strings.Join(want, ",") != strings.Join(got, ",") {
		h.t.Fatalf("store and device disagree:\nstore active: %v\ndevice:       %v", want, got)
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
