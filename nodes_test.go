package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/internal/pgtest"
	"github.com/wgkeeper/wgkeeper/store/postgres"
	"github.com/wgkeeper/wgkeeper/wg"
	"github.com/wgkeeper/wgkeeper/wg/wgtest"
)

// nodeConfig is one node of a two-node setup: its own interface (an
// in-process device of the test, mode existing) and profile, one database.
const nodeConfig = `
database = %q
lock_dir = "."
node = %q

[hooks]
script = "hook.sh"
timeout = "10s"

[housekeeping]
schedule = "@every 1h"
reconcile_interval = "1h"

[api]
listen = "127.0.0.1:%d"
token_file = "api.token"

[[interface]]
name = "%s"
endpoint = "127.0.0.1:%d"

[[profile]]
id = %q
interface = "%s"
ipv4_range = %q
expiry = "1d"
`

// nodeHook logs "EVENT KEY BYTES_IN BYTES_OUT NODE" for every run.
const nodeHook = `#!/bin/sh
echo "$VPN_EVENT $VPN_CONNECTION_ID ${VPN_BYTES_IN:-0} ${VPN_BYTES_OUT:-0} $VPN_NODE_NAME" >> "$(dirname "$(readlink -f "$0")")/events.log"
`

// node is one wgkeeper daemon of the two-node tests.
type node struct {
	t       testing.TB
	name    string
	dir     string
	cfgPath string
	apiPort int
	srv     *wgtest.Server
	proc    *daemonProc
}

func newNode(t testing.TB, db, name, profile, v4 string) *node {
	t.Helper()
	n := &node{t: t, name: name, dir: t.TempDir(), apiPort: freeTCPPort(t), srv: wgtest.NewServer(t)}
	n.cfgPath = filepath.Join(n.dir, "wgkeeper.toml")
	cfg := fmt.Sprintf(nodeConfig, db, name, n.apiPort, n.srv.Name, n.srv.Port, profile, n.srv.Name, v4)
	if err := os.WriteFile(n.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(n.dir, "hook.sh"), []byte(nodeHook), 0o755); err != nil {
		t.Fatal(err)
	}
	return n
}

func (n *node) start() {
	n.t.Helper()
	n.proc = startDaemon(n.t, n.cfgPath)
	n.proc.waitLog(n.t, "wgkeeper started", 30*time.Second)
}

// call makes an API request to this node; it returns the status and body.
func (n *node) call(method, path, body string) (int, string) {
	n.t.Helper()
	code, b, err := n.request(specClient(n.t, &http.Client{Timeout: 30 * time.Second}), method, path, body)
	if err != nil {
		n.t.Fatal(err)
	}
	return code, b
}

// request sends one API request to this node with its admin token through
// c; it does not fail the test, so any goroutine may call it.
func (n *node) request(c *http.Client, method, path, body string) (int, string, error) {
	tok, err := os.ReadFile(filepath.Join(n.dir, "api.token"))
	if err != nil {
		return 0, "", err
	}
	req, err := http.NewRequest(method, fmt.Sprintf("http://127.0.0.1:%d%s", n.apiPort, path), strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", fmt.Errorf("%s %s on %s: %w", method, path, n.name, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// create asks this node for a config; key may be empty (generated).
func (n *node) create(user, profile string, key wgtypes.Key) (int, string) {
	n.t.Helper()
	body := fmt.Sprintf(`{"user_id":%q,"profile_id":%q,"public_key":%q}`, user, profile, key.String())
	return n.call("POST", "/v1/peers", body)
}

func (n *node) mustCreate(user, profile string, key wgtypes.Key) netip.Addr {
	n.t.Helper()
	code, body := n.create(user, profile, key)
	if code != http.StatusCreated {
		n.t.Fatalf("create %s/%s on %s: %d %s", user, profile, n.name, code, body)
	}
	var r struct {
		Peer struct {
			IPv4 string `json:"ip_four"`
		} `json:"peer"`
	}
	json.Unmarshal([]byte(body), &r)
	a, err := netip.ParseAddr(r.Peer.IPv4)
	if err != nil {
		n.t.Fatalf("create on %s: no IPv4 address in %s", n.name, body)
	}
	return a
}

func (n *node) mustDelete(key wgtypes.Key) {
	n.t.Helper()
	if code, body := n.call("DELETE", "/v1/peers/"+url.PathEscape(key.String()), ""); code != http.StatusOK {
		n.t.Fatalf("delete %s on %s: %d %s", key, n.name, code, body)
	}
}

// events is the node's script log: one "EVENT KEY IN OUT" line per run.
func (n *node) events() []string {
	data, _ := os.ReadFile(filepath.Join(n.dir, "events.log"))
	return strings.Fields(strings.ReplaceAll(string(data), "\n", "|"))
}

// runs counts the script runs of kind ev ("C"/"D") for key, and returns
// the byte counters of the last one; a run whose VPN_NODE_NAME is not this
// node's name fails the test.
func (n *node) runs(ev string, key wgtypes.Key) (count int, in, out int64) {
	data, _ := os.ReadFile(filepath.Join(n.dir, "events.log"))
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == ev && f[1] == key.String() {
			count++
			if len(f) != 5 || f[4] != n.name {
				n.t.Errorf("script run on %s with VPN_NODE_NAME other than %s: %q", n.name, n.name, line)
			}
			if len(f) >= 4 {
				in, _ = strconv.ParseInt(f[2], 10, 64)
				out, _ = strconv.ParseInt(f[3], 10, 64)
			}
		}
	}
	return count, in, out
}

// onDevice reports whether key is a peer of the node's interface.
func (n *node) onDevice(dev *wg.Client, key wgtypes.Key) bool {
	n.t.Helper()
	d, err := dev.Read(context.Background(), n.srv.Name)
	if err != nil {
		n.t.Fatal(err)
	}
	_, ok := d.Peer(key)
	return ok
}

func newKey(t testing.TB) wgtypes.Key {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestTwoNodes runs two daemons as two nodes, each with its own interface,
// on one PostgreSQL database: each creates for its own profile; a create
// for the other node's profile is 421 wrong_node; a delete on node A of
// node B's config leaves B's device within 2 s and B's script runs the D
// with the byte counters; with B killed (SIGKILL) A keeps creating and
// deleting; B restarted restores its device and delivers the D events
// that waited for it, each once.
func TestTwoNodes(t *testing.T) {
	wgtest.RequireRoot(t)
	db := pgtest.NewDatabase(t)
	a := newNode(t, db, "node-a", "staff-a", "10.61.0.0/24")
	b := newNode(t, db, "node-b", "staff-b", "10.62.0.0/24")
	runSelf(t, "-config", a.cfgPath, "migrate")
	a.start()
	b.start()
	dev, err := wg.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()

	aliceKey, bobKey, carolKey, daveKey := newKey(t), newKey(t), newKey(t), newKey(t)
	a.mustCreate("alice", "staff-a", aliceKey.PublicKey())
	bobAddr := b.mustCreate("bob", "staff-b", bobKey.PublicKey())
	b.mustCreate("carol", "staff-b", carolKey.PublicKey())
	b.mustCreate("dave", "staff-b", daveKey.PublicKey())
	if !a.onDevice(dev, aliceKey.PublicKey()) || !b.onDevice(dev, bobKey.PublicKey()) || a.onDevice(dev, bobKey.PublicKey()) {
		t.Fatal("configs are not on their own node's device only")
	}

	// A create for the other node's profile.
	code, body := a.create("eve", "staff-b", newKey(t).PublicKey())
	if code != http.StatusMisdirectedRequest || !strings.Contains(body, `"wrong_node"`) || !strings.Contains(body, `node-b`) {
		t.Fatalf("create on node-a for node-b's profile: %d %s, want 421 wrong_node naming node-b", code, body)
	}

	// Node A's status lists both nodes with their interfaces; so does
	// the CLI's.
	code, body = a.call("GET", "/v1/status", "")
	var st struct {
		Nodes []struct {
			Name       string    `json:"name"`
			Self       bool      `json:"self"`
			Alive      bool      `json:"alive"`
			LastSeen   time.Time `json:"last_seen"`
			Interfaces []string  `json:"interfaces"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(body), &st); code != http.StatusOK || err != nil {
		t.Fatalf("status on node-a: %d %v %s", code, err, body)
	}
	if len(st.Nodes) != 2 || st.Nodes[0].Name != "node-a" || !st.Nodes[0].Self || st.Nodes[1].Name != "node-b" || st.Nodes[1].Self ||
		!st.Nodes[1].Alive || time.Since(st.Nodes[1].LastSeen) > time.Minute ||
		fmt.Sprint(st.Nodes[0].Interfaces) != fmt.Sprint([]string{a.srv.Name}) || fmt.Sprint(st.Nodes[1].Interfaces) != fmt.Sprint([]string{b.srv.Name}) {
		t.Fatalf("nodes in node-a's status: %+v", st.Nodes)
	}
	if out := runSelf(t, "-config", a.cfgPath, "status"); !strings.Contains(out, "node node-a (this node)  alive") ||
		!strings.Contains(out, "node node-b  alive") || !strings.Contains(out, b.srv.Name) {
		t.Fatalf("status on node-a does not list both nodes:\n%s", out)
	}

	// Bob's client talks to node B, so its peer has byte counters.
	cl := b.srv.NewClient(t, wgtest.WithClientKey(bobKey), wgtest.WithClientAddrs(bobAddr, netip.Addr{}))
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := cl.Handshake(ctx); err != nil {
		t.Fatalf("bob's client: %v", err)
	}

	// Delete on node A of node B's config.
	start := time.Now()
	a.mustDelete(bobKey.PublicKey())
	for b.onDevice(dev, bobKey.PublicKey()) {
		if time.Since(start) > 10*time.Second {
			t.Fatal("bob's peer still on node-b's device 10 s after the delete on node-a")
		}
		time.Sleep(10 * time.Millisecond)
	}
	gone := time.Since(start)
	t.Logf("deleted on node-a, gone from node-b's device after %v", gone)
	if gone > 2*time.Second {
		t.Errorf("the peer left node-b's device after %v, want within 2 s", gone)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if n, in, _ := b.runs("D", bobKey.PublicKey()); n == 1 {
			if in == 0 {
				t.Errorf("node-b's D script got no byte counters for bob (VPN_BYTES_IN 0): %v", b.events())
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node-b's script never ran the D for bob: %v", b.events())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n, _, _ := a.runs("D", bobKey.PublicKey()); n != 0 {
		t.Fatalf("node-a ran the D of node-b's config: %v", a.events())
	}

	// Delivery is at least once: a kill between the script and recording
	// it done runs it again. Kill node B only once bob's D is recorded.
	deadline = time.Now().Add(10 * time.Second)
	for {
		var evs struct {
			Events []struct {
				Event     string `json:"event"`
				PublicKey string `json:"public_key"`
				Status    string `json:"status"`
			} `json:"events"`
		}
		json.Unmarshal([]byte(runSelf(t, "-config", a.cfgPath, "events", "-json")), &evs)
		done := false
		for _, ev := range evs.Events {
			if ev.Event == "D" && ev.PublicKey == bobKey.PublicKey().String() && ev.Status == "done" {
				done = true
			}
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bob's D not recorded done: %+v", evs.Events)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Node B dies. Node A goes on creating and deleting.
	b.proc.cmd.Process.Signal(syscall.SIGKILL)
	<-b.proc.exited
	frank := newKey(t)
	a.mustCreate("frank", "staff-a", frank.PublicKey())
	a.mustDelete(frank.PublicKey())
	if n, _, _ := a.runs("D", frank.PublicKey()); n != 1 {
		t.Fatalf("node-a with node-b dead: D of frank ran %d times: %v", n, a.events())
	}
	// A delete of node B's config while B is down: the row goes now, the D
	// waits for node B.
	a.mustDelete(carolKey.PublicKey())
	// Node B's device loses dave while wgkeeper is down there.
	if _, err := dev.Apply(context.Background(), b.srv.Name, wg.Plan{Remove: []wgtypes.Key{daveKey.PublicKey()}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if n, _, _ := b.runs("D", carolKey.PublicKey()); n != 0 {
		t.Fatal("carol's D ran while node-b was down")
	}

	// Node B comes back: device restored, carol's D delivered, once.
	b.start()
	deadline = time.Now().Add(15 * time.Second)
	for {
		n, _, _ := b.runs("D", carolKey.PublicKey())
		if n >= 1 && b.onDevice(dev, daveKey.PublicKey()) && !b.onDevice(dev, carolKey.PublicKey()) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node-b after its restart: carol's D ran %d times, dave on device %v, carol on device %v; events %v",
				n, b.onDevice(dev, daveKey.PublicKey()), b.onDevice(dev, carolKey.PublicKey()), b.events())
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(time.Second)
	for _, c := range []struct {
		name string
		key  wgtypes.Key
	}{{"bob", bobKey.PublicKey()}, {"carol", carolKey.PublicKey()}} {
		if n, _, _ := b.runs("D", c.key); n != 1 {
			t.Errorf("node-b ran the D of %s (%s) %d times, want once: %v", c.name, c.key, n, b.events())
		}
	}
	for _, k := range []wgtypes.Key{bobKey.PublicKey(), carolKey.PublicKey(), daveKey.PublicKey()} {
		if n, _, _ := b.runs("C", k); n != 1 {
			t.Errorf("node-b ran the C of %s %d times, want once: %v", k, n, b.events())
		}
	}
	if n, _, _ := a.runs("D", carolKey.PublicKey()); n != 0 {
		t.Errorf("node-a ran carol's D: %v", a.events())
	}
	stopDaemon(t, a.proc)
	stopDaemon(t, b.proc)
}

// TestNodeSurvivesPostgresRestart stops and restarts PostgreSQL (fast
// shutdown) under two running daemons, two nodes: creates answer 503
// unavailable on both while it is down and nothing is half-written; once
// it is back each daemon reconnects, reconciles every interface in full,
// creates and deletes work again, and a delete on node A of node B's
// config reaches B's device and script (B listens again).
func TestNodeSurvivesPostgresRestart(t *testing.T) {
	wgtest.RequireRoot(t)
	srv := pgtest.NewServer(t)
	db := pgtest.CreateDatabase(t, srv.URL())
	a := newNode(t, db, "node-a", "staff-a", "10.63.0.0/24")
	b := newNode(t, db, "node-b", "staff-b", "10.66.0.0/24")
	runSelf(t, "-config", a.cfgPath, "migrate")
	a.start()
	b.start()
	dev, err := wg.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	k1 := newKey(t)
	a.mustCreate("alice", "staff-a", k1.PublicKey())
	kd := newKey(t)
	b.mustCreate("dave", "staff-b", kd.PublicKey())

	srv.Stop(t)
	for _, n := range []struct {
		n       *node
		profile string
	}{{a, "staff-a"}, {b, "staff-b"}} {
		code, body := n.n.create("bob", n.profile, newKey(t).PublicKey())
		if code != http.StatusServiceUnavailable || !strings.Contains(body, `"unavailable"`) || !strings.Contains(body, "cannot be reached") {
			t.Fatalf("create on %s with PostgreSQL down: %d %s, want 503 unavailable", n.n.name, code, body)
		}
	}
	// Peers removed by hand meanwhile come back with the full reconcile
	// that follows each daemon's reconnection.
	if _, err := dev.Apply(context.Background(), a.srv.Name, wg.Plan{Remove: []wgtypes.Key{k1.PublicKey()}}); err != nil {
		t.Fatal(err)
	}
	if _, err := dev.Apply(context.Background(), b.srv.Name, wg.Plan{Remove: []wgtypes.Key{kd.PublicKey()}}); err != nil {
		t.Fatal(err)
	}
	srv.Start(t)
	a.proc.waitLog(t, "reconnected; reconciling every interface", 30*time.Second)
	b.proc.waitLog(t, "reconnected; reconciling every interface", 30*time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for !a.onDevice(dev, k1.PublicKey()) || !b.onDevice(dev, kd.PublicKey()) {
		if time.Now().After(deadline) {
			t.Fatalf("peers not restored by the reconcile after the reconnection: alice on node-a %v, dave on node-b %v",
				a.onDevice(dev, k1.PublicKey()), b.onDevice(dev, kd.PublicKey()))
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Node B listens again: a delete on node A of B's config leaves B's
	// device and runs B's D, once.
	a.mustDelete(kd.PublicKey())
	deadline = time.Now().Add(10 * time.Second)
	for {
		n, _, _ := b.runs("D", kd.PublicKey())
		if n == 1 && !b.onDevice(dev, kd.PublicKey()) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dave's config deleted on node-a after the restart: D runs on node-b %d, still on its device %v",
				n, b.onDevice(dev, kd.PublicKey()))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n, _, _ := a.runs("D", kd.PublicKey()); n != 0 {
		t.Fatalf("node-a ran node-b's D %d times", n)
	}
	k2 := newKey(t)
	a.mustCreate("carol", "staff-a", k2.PublicKey())
	a.mustDelete(k2.PublicKey())
	if n, _, _ := a.runs("C", k2.PublicKey()); n != 1 {
		t.Fatalf("carol's C ran %d times", n)
	}
	// Bob's refused create left nothing behind.
	var list struct {
		Peers []struct {
			UserID string `json:"user_id"`
		} `json:"peers"`
	}
	json.Unmarshal([]byte(runSelf(t, "-config", a.cfgPath, "peer", "list", "-json")), &list)
	if len(list.Peers) != 1 || list.Peers[0].UserID != "alice" {
		t.Fatalf("configs after the restart: %+v, want alice's only", list.Peers)
	}
	if n, _, _ := b.runs("D", kd.PublicKey()); n != 1 {
		t.Fatalf("dave's D ran %d times on node-b", n)
	}
	stopDaemon(t, a.proc)
	stopDaemon(t, b.proc)
}

// slowConnectHook is nodeHook whose connect script, while the file "slow"
// exists beside it, logs "start KEY" and then takes 2 s.
const slowConnectHook = `#!/bin/sh
d="$(dirname "$(readlink -f "$0")")"
if [ "$VPN_EVENT" = C ] && [ -e "$d/slow" ]; then
	echo "start $VPN_CONNECTION_ID" >> "$d/events.log"
	sleep 2
fi
echo "$VPN_EVENT $VPN_CONNECTION_ID ${VPN_BYTES_IN:-0} ${VPN_BYTES_OUT:-0} $VPN_NODE_NAME" >> "$d/events.log"
`

// TestDeleteElsewhereWhileConnectRuns deletes, on node A, a config of node
// B whose connect script is still running on B: the create on B fails with
// 409 (removed while its connect script ran), and B's disconnect script
// does not run while the connect script does, nor right after it: the D
// event waits, unleased, until the connect script must have ended, as for
// a delete on B itself. A D reaching the firewall before its C would leave
// the firewall open for a config that is gone.
func TestDeleteElsewhereWhileConnectRuns(t *testing.T) {
	wgtest.RequireRoot(t)
	db := pgtest.NewDatabase(t)
	a := newNode(t, db, "node-a", "staff-a", "10.64.0.0/24")
	b := newNode(t, db, "node-b", "staff-b", "10.65.0.0/24")
	if err := os.WriteFile(filepath.Join(b.dir, "hook.sh"), []byte(slowConnectHook), 0o755); err != nil {
		t.Fatal(err)
	}
	// node-b's scripts may run far longer than node-a's (10s): the D
	// must wait for node-b's settings, not node-a's.
	setHookTimeout(t, b, "1h")
	runSelf(t, "-config", a.cfgPath, "migrate")
	a.start()
	b.start()
	if err := os.WriteFile(filepath.Join(b.dir, "slow"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	key := newKey(t).PublicKey()
	type answer struct {
		code int
		body string
	}
	created := make(chan answer, 1)
	go func() {
		// Not b.create: it may fail the test, which only this goroutine's
		// caller may do.
		code, body := b.createNoFatal("carol", "staff-b", key)
		created <- answer{code, body}
	}()
	deadline := time.Now().Add(15 * time.Second)
	for {
		data, _ := os.ReadFile(filepath.Join(b.dir, "events.log"))
		if strings.Contains(string(data), "start "+key.String()) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node-b's connect script never started: %v", b.events())
		}
		time.Sleep(10 * time.Millisecond)
	}
	a.mustDelete(key)
	ans := <-created
	if ans.code != http.StatusConflict || !strings.Contains(ans.body, "removed while its connect script ran") {
		t.Fatalf("create on node-b of a config deleted on node-a meanwhile: %d %s, want 409 removed while its connect script ran", ans.code, ans.body)
	}
	// The connect script has ended (the create answered). Its D must not
	// have come before it, nor come now.
	time.Sleep(1500 * time.Millisecond)
	log := strings.Split(strings.TrimSpace(mustRead(t, filepath.Join(b.dir, "events.log"))), "\n")
	for i, line := range log {
		if strings.HasPrefix(line, "D "+key.String()) {
			t.Fatalf("node-b ran the D of a config whose connect script ran when it was deleted on node-a (line %d): %q", i, log)
		}
	}
	if n, _, _ := b.runs("C", key); n != 1 {
		t.Fatalf("node-b's connect script ran %d times: %q", n, log)
	}
	// The D is recorded, pending, due when the connect script must have
	// ended.
	var evs struct {
		Events []struct {
			Event         string    `json:"event"`
			PublicKey     string    `json:"public_key"`
			Status        string    `json:"status"`
			NextAttemptAt time.Time `json:"next_attempt_at"`
		} `json:"events"`
	}
	json.Unmarshal([]byte(runSelf(t, "-config", b.cfgPath, "events", "-json")), &evs)
	found := false
	for _, ev := range evs.Events {
		if ev.Event == "D" && ev.PublicKey == key.String() {
			found = true
			// node-b's hold: 2 × 1h + 5s + 1min; node-a's would be 85s.
			if ev.Status != "pending" || time.Until(ev.NextAttemptAt) < 2*time.Hour {
				t.Errorf("D event of the config = %+v, want pending and held until node-b's connect script must have ended (2 × its hooks.timeout of 1h and more)", ev)
			}
		}
	}
	if !found {
		t.Errorf("no D event for the config deleted on node-a: %+v", evs.Events)
	}
	stopDaemon(t, a.proc)
	stopDaemon(t, b.proc)
}

// setHookTimeout sets hooks.timeout in n's config file.
func setHookTimeout(t *testing.T, n *node, timeout string) {
	t.Helper()
	cfg := mustRead(t, n.cfgPath)
	i := strings.Index(cfg, "\ntimeout = ")
	if i < 0 {
		t.Fatalf("no hooks.timeout in %s", n.cfgPath)
	}
	j := i + 1 + strings.Index(cfg[i+1:], "\n")
	cfg = cfg[:i] + fmt.Sprintf("\ntimeout = %q", timeout) + cfg[j:]
	if err := os.WriteFile(n.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

// createNoFatal is create for a goroutine other than the test's: a
// failed request is a code of 0 and the error as the body.
func (n *node) createNoFatal(user, profile string, key wgtypes.Key) (int, string) {
	body := fmt.Sprintf(`{"user_id":%q,"profile_id":%q,"public_key":%q}`, user, profile, key.String())
	code, b, err := n.request(&http.Client{Timeout: 30 * time.Second}, "POST", "/v1/peers", body)
	if err != nil {
		return 0, err.Error()
	}
	return code, b
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestNodeRegistersConnectHold: a node's daemon records in the database
// how long its connect scripts may run (2 × hooks.timeout +
// hooks.queue_timeout + 1 min, as its own deletes hold a D), so that
// deletes made on other nodes hold its D events as long; a SIGHUP with a
// longer hooks.timeout raises it, one with a shorter one keeps it (a
// script started before may still run that long).
func TestNodeRegistersConnectHold(t *testing.T) {
	wgtest.RequireRoot(t)
	db := pgtest.NewDatabase(t)
	b := newNode(t, db, "node-b", "staff-b", "10.65.0.0/24")
	runSelf(t, "-config", b.cfgPath, "migrate")
	b.start()
	s, err := postgres.Open(context.Background(), db, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	waitHold := func(want time.Duration) {
		t.Helper()
		var got time.Duration
		deadline := time.Now().Add(15 * time.Second)
		for time.Now().Before(deadline) {
			ns, err := s.ListNodes(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if len(ns) == 1 && ns[0].Name == "node-b" {
				if got = ns[0].ConnectHold; got == want {
					return
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("node-b's registered connect hold = %s, want %s:\n%s", got, want, b.proc.log())
	}
	waitHold(2*10*time.Second + 5*time.Second + time.Minute)
	setHookTimeout(t, b, "1h")
	b.proc.cmd.Process.Signal(syscall.SIGHUP)
	waitHold(2*time.Hour + 5*time.Second + time.Minute)
	setHookTimeout(t, b, "5s")
	b.proc.cmd.Process.Signal(syscall.SIGHUP)
	b.proc.waitLog(t, "config reloaded", 15*time.Second)
	// Reloaded twice by now (each SIGHUP logs once, the last one after
	// its registration).
	deadline := time.Now().Add(15 * time.Second)
	for strings.Count(b.proc.log(), "config reloaded") < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("second reload not logged:\n%s", b.proc.log())
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitHold(2*time.Hour + 5*time.Second + time.Minute)
	stopDaemon(t, b.proc)
}

// TestExpiryOnOwnerNode: a config of node B that expires while node B is
// down is not expired by node A (its housekeeping removes only its own
// configs: the D belongs to B's firewall, and B's device is not A's); B
// expires it when it returns and runs the D, once.
func TestExpiryOnOwnerNode(t *testing.T) {
	wgtest.RequireRoot(t)
	db := pgtest.NewDatabase(t)
	a := newNode(t, db, "node-a", "staff-a", "10.67.0.0/24")
	b := newNode(t, db, "node-b", "staff-b", "10.68.0.0/24")
	runSelf(t, "-config", a.cfgPath, "migrate")
	b.start()
	key := newKey(t).PublicKey()
	body := fmt.Sprintf(`{"user_id":"erin","profile_id":"staff-b","public_key":%q,"expires_in":"2s"}`, key.String())
	if code, out := b.call("POST", "/v1/peers", body); code != http.StatusCreated {
		t.Fatalf("create on node-b: %d %s", code, out)
	}
	expires := time.Now().Add(2 * time.Second)
	stopDaemon(t, b.proc)
	time.Sleep(time.Until(expires) + 500*time.Millisecond)

	// Node A's housekeeping, after the expiry: node B's config stays.
	runSelf(t, "-config", a.cfgPath, "housekeeping")
	state := func() string {
		var list struct {
			Peers []struct {
				PublicKey string `json:"public_key"`
				State     string `json:"state"`
			} `json:"peers"`
		}
		if err := json.Unmarshal([]byte(runSelf(t, "-config", a.cfgPath, "peer", "list", "-json")), &list); err != nil {
			t.Fatal(err)
		}
		for _, p := range list.Peers {
			if p.PublicKey == key.String() {
				return p.State
			}
		}
		return "gone"
	}
	if s := state(); s != "active" {
		t.Fatalf("node-b's expired config after node-a's housekeeping with node-b down: %s, want still active", s)
	}
	if n, _, _ := a.runs("D", key); n != 0 {
		t.Fatalf("node-a ran node-b's D %d times", n)
	}

	// Node B returns: it expires its config and runs the D, once.
	b.start()
	deadline := time.Now().Add(15 * time.Second)
	for {
		n, _, _ := b.runs("D", key)
		if n == 1 && state() == "gone" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node-b back: D runs %d, config %s; want its D once and the config gone", n, state())
		}
		time.Sleep(50 * time.Millisecond)
	}
	stopDaemon(t, b.proc)
	if n, _, _ := b.runs("D", key); n != 1 {
		t.Fatalf("node-b ran its D %d times", n)
	}
}
