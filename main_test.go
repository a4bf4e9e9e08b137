package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wgkeeper/wgkeeper/cli"
	"github.com/wgkeeper/wgkeeper/config"
	"github.com/wgkeeper/wgkeeper/hooks"
	"github.com/wgkeeper/wgkeeper/reconcile"
	"github.com/wgkeeper/wgkeeper/store/sqlite"
	"github.com/wgkeeper/wgkeeper/wg"
	"github.com/wgkeeper/wgkeeper/wg/wgtest"
)

// TestMain lets the tests run this binary as wgkeeper itself: with
// WGKEEPER_TEST_AS_MAIN=1 it is the real program.
func TestMain(m *testing.M) {
	if os.Getenv("WGKEEPER_TEST_AS_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// daemonProc is a wgkeeper daemon running as a child process.
type daemonProc struct {
	cmd    *exec.Cmd
	mu     sync.Mutex // guards logs
	logs   strings.Builder
	done   chan error
	exited chan struct{} // closed once the process is reaped
}

func startDaemon(t testing.TB, cfgPath string) *daemonProc {
	t.Helper()
	return startDaemonIn(t, "", os.Args[0], append(os.Environ(), "WGKEEPER_TEST_AS_MAIN=1"),
		"-config", cfgPath, "daemon", "-log-level", "debug")
}

func (d *daemonProc) log() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.logs.String()
}

func (d *daemonProc) waitLog(t testing.TB, what string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if strings.Contains(d.log(), what) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("daemon never logged %q", what)
}

const daemonConfig = `
database = "wgkeeper.db"

[hooks]
script = "hook.sh"
timeout = "5s"

[housekeeping]
schedule = "@every 1h"
reconcile_interval = "1h"

[api]
listen = ""

[[interface]]
name = "%s"
mode = "userspace"
private_key_file = "server.key"
listen_port = %d
endpoint = "127.0.0.1:%d"

[[profile]]
id = "staff"
interface = "%s"
ipv4_range = "10.98.0.0/24"
ipv6_range = "fd00:98::/64"
expiry = "1d"
`

// hook records "EVENT KEY unixnanos" for every run.
const daemonHook = `#!/bin/sh
echo "$VPN_EVENT $VPN_CONNECTION_ID $(date +%s%N)" >> "$(dirname "$(readlink -f "$0")")/events.log"
`

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// TestDaemon runs the real daemon on a userspace interface: a config
// written by another process with a 2-second lifetime is removed from the
// device and its D script run within a second of its expiry; SIGHUP with a
// broken config keeps it running; SIGTERM removes the interface and leaves
// no process behind.
func TestDaemon(t *testing.T) {
	wgtest.RequireRoot(t)
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("skipped: needs /dev/net/tun for a userspace interface")
	}
	dir := t.TempDir()
	name := wgtest.UniqueName("wgd")
	port := freeUDPPort(t)
	cfgPath := filepath.Join(dir, "wgkeeper.toml")
	good := fmt.Sprintf(daemonConfig, name, port, port, name)
	if err := os.WriteFile(cfgPath, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "hook.sh"), []byte(daemonHook), 0o755); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, cfgPath)
	d.waitLog(t, "wgkeeper started", 20*time.Second)
	if _, err := net.InterfaceByName(name); err != nil {
		t.Fatalf("interface %s not up: %v", name, err)
	}
	// One line says so, with the port and the key.
	if n := strings.Count(d.log(), `msg="interface up"`); n != 1 || !strings.Contains(d.log(), "public_key=") {
		t.Fatalf("%d \"interface up\" lines, want 1 with the public key:\n%s", n, d.log())
	}

	// Another process (this test) creates a config expiring in 2 s.
	ctx := context.Background()
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(ctx, cfg.Database, sqlite.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	dev, err := wg.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	run, err := hooks.New(hooks.Config{Script: cfg.Hooks.Script, Timeout: cfg.Hooks.Timeout})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := reconcile.New(reconcile.Options{Config: cfg, Store: st, Device: dev, Runner: run})
	if err != nil {
		t.Fatal(err)
	}
	c, err := eng.Create(ctx, reconcile.CreateRequest{UserID: "alice", ProfileID: "staff", ExpiresIn: 2 * time.Second})
	if err != nil {
		t.Fatalf("create: %v %v", err, c)
	}
	key := c.Peer.PublicKey.String()
	if dv, err := dev.Read(ctx, name); err != nil {
		t.Fatal(err)
	} else if _, ok := dv.Peer(c.Peer.PublicKey); !ok {
		t.Fatal("created peer not on the daemon's device")
	}

	// The D script runs at the expiry. How soon is a benchmark figure
	// (reconcile/sched BenchmarkExpiryLatency: a few ms); this end-to-end
	// check keeps a bound a loaded CI machine cannot overrun by accident,
	// while still failing when the daemon waits for a housekeeping run
	// (housekeeping.schedule is an hour here) instead of the expiry.
	expires := c.Peer.ExpiresAt
	var dAt time.Time
	for time.Now().Before(expires.Add(20 * time.Second)) {
		if at, ok := eventTime(t, dir, "D", key); ok {
			dAt = at
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if dAt.IsZero() {
		t.Fatalf("no D event within 20 s of expiry %s", expires)
	}
	late := dAt.Sub(expires)
	t.Logf("D script ran %v after expiry", late)
	if late < 0 || late > 10*time.Second {
		t.Fatalf("D script ran %v after expiry, want within 10s", late)
	}
	if dv, err := dev.Read(ctx, name); err != nil {
		t.Fatal(err)
	} else if _, ok := dv.Peer(c.Peer.PublicKey); ok {
		t.Fatal("expired peer still on the device")
	}

	// SIGHUP with a broken config: logged, still running.
	if err := os.WriteFile(cfgPath, []byte("[hooks]\ntimeout = \"soon\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d.cmd.Process.Signal(syscall.SIGHUP)
	d.waitLog(t, "keeping the running config", 5*time.Second)
	if err := d.cmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("daemon died on a bad reload: %v", err)
	}
	// SIGHUP with another listen port, other addresses and another
	// script: refused whole, naming what changed; the interface keeps its
	// port and nothing of the file is applied.
	port2 := freeUDPPort(t)
	changed := fmt.Sprintf(daemonConfig, name, port2, port2, name)
	changed = strings.Replace(changed, "10.98.0.0/24", "10.97.0.0/24", 1)
	changed = strings.Replace(changed, `script = "hook.sh"`, `script = "hook2.sh"`, 1)
	if err := os.WriteFile(filepath.Join(dir, "hook2.sh"), []byte(strings.ReplaceAll(daemonHook, "events.log", "events2.log")), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, []byte(changed), 0o600); err != nil {
		t.Fatal(err)
	}
	d.cmd.Process.Signal(syscall.SIGHUP)
	d.waitLog(t, "the [[interface]] list changed", 5*time.Second)
	for _, want := range []string{fmt.Sprintf("listen_port %d -> %d", port, port2), "addresses", "restart wgkeeper"} {
		if !strings.Contains(d.log(), want) {
			t.Errorf("the refusal does not say %q:\n%s", want, d.log())
		}
	}
	if strings.Contains(d.log(), "config reloaded") {
		t.Fatal("a config with a changed [[interface]] list was applied")
	}
	if dv, err := dev.Read(ctx, name); err != nil {
		t.Fatal(err)
	} else if dv.ListenPort != port {
		t.Fatalf("listen port %d after a refused reload, want %d", dv.ListenPort, port)
	}
	if err := d.cmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("daemon died on a refused reload: %v", err)
	}
	// SIGHUP with a good config naming another script: reloaded, and the
	// next event runs the new script.
	hook2 := strings.ReplaceAll(daemonHook, "events.log", "events2.log")
	if err := os.WriteFile(filepath.Join(dir, "hook2.sh"), []byte(hook2), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(cfgPath, []byte(strings.Replace(good, `script = "hook.sh"`, `script = "hook2.sh"`, 1)), 0o600)
	d.cmd.Process.Signal(syscall.SIGHUP)
	d.waitLog(t, "config reloaded", 5*time.Second)
	c2, err := eng.Create(ctx, reconcile.CreateRequest{UserID: "bob", ProfileID: "staff", ExpiresIn: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		data, _ := os.ReadFile(filepath.Join(dir, "events2.log"))
		if strings.Contains(string(data), "D "+c2.Peer.PublicKey.String()) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("after reload, the new script did not get the D event")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// SIGTERM: clean exit, interface and socket gone, no process left in
	// the daemon's process group.
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.done:
		if err != nil {
			t.Fatalf("daemon exit: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("daemon did not stop within 15 s of SIGTERM")
	}
	if _, err := net.InterfaceByName(name); err == nil {
		t.Fatal("interface left behind")
	}
	if _, err := os.Stat(filepath.Join(wg.SocketDir, name+".sock")); !os.IsNotExist(err) {
		t.Fatalf("UAPI socket left behind: %v", err)
	}
	if err := syscall.Kill(-d.cmd.Process.Pid, 0); err == nil {
		t.Fatal("a process of the daemon's group survived")
	}
}

// eventTime finds the time the hook logged an event for a key.
func eventTime(t *testing.T, dir, event, key string) (time.Time, bool) {
	data, err := os.ReadFile(filepath.Join(dir, "events.log"))
	if err != nil {
		return time.Time{}, false
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == event && f[1] == key {
			var ns int64
			fmt.Sscan(f[2], &ns)
			return time.Unix(0, ns), true
		}
	}
	return time.Time{}, false
}

// The process exit code maps errors: usage 2, failure 1.
func TestMainExitCodes(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"version"}, 0},
		{[]string{"nope"}, 2},
		{[]string{"-config", "/nonexistent/wgkeeper.toml", "migrate"}, 1},
	} {
		cmd := exec.Command(os.Args[0], tc.args...)
		cmd.Env = append(os.Environ(), "WGKEEPER_TEST_AS_MAIN=1")
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		if code != tc.code {
			t.Errorf("wgkeeper %v: exit %d, want %d", tc.args, code, tc.code)
		}
	}
	_ = cli.ExitOK
}

// readmeBlocks returns the indented code blocks of README.md, each as one
// shell script.
func readmeBlocks(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	var cur []string
	flush := func() {
		if len(cur) > 0 {
			blocks = append(blocks, strings.Join(cur, "\n")+"\n")
			cur = nil
		}
	}
	for _, line := range strings.Split(string(data), "\n") {
		switch {
		case strings.HasPrefix(line, "    "):
			cur = append(cur, strings.TrimPrefix(line, "    "))
		case strings.TrimSpace(line) == "" && len(cur) > 0:
			cur = append(cur, "")
		default:
			flush()
		}
	}
	flush()
	return blocks
}

// TestReadmeCommands runs every command of README.md as a newcomer would,
// in a copy of the examples directory: the daemon on the example config,
// then the walk-through and the API call. `go run .` is this test binary.
func TestReadmeCommands(t *testing.T) {
	wgtest.RequireRoot(t)
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("skipped: needs /dev/net/tun for the example's userspace interface")
	}
	if _, err := net.InterfaceByName("wgk0"); err == nil {
		t.Skip("skipped: an interface wgk0 exists already (is the example daemon running?)")
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("skipped: the README's API example needs curl")
	}
	dir := t.TempDir()
	if err := os.CopyFS(filepath.Join(dir, "examples"), os.DirFS("examples")); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"wgkeeper.db", "wgkeeper.db-wal", "wgkeeper.db-shm", "wgk0.key", "api.token", "hooks/events.log"} {
		os.Remove(filepath.Join(dir, "examples", f))
	}
	// The copy keeps the modes the checkout has; the hook script must be
	// 0755 for the startup check whatever the umask of the checkout.
	os.Chmod(filepath.Join(dir, "examples", "hooks"), 0o755)
	os.Chmod(filepath.Join(dir, "examples", "hooks", "log-event.sh"), 0o755)
	self, _ := filepath.Abs(os.Args[0])
	env := append(os.Environ(), "WGKEEPER_TEST_AS_MAIN=1")

	blocks := readmeBlocks(t)
	ran := 0
	var d *daemonProc
	for _, b := range blocks {
		script := strings.TrimSpace(b)
		switch {
		case strings.HasPrefix(script, "go test"):
			continue // this very suite
		case script == "go run . -config examples/wgkeeper.toml daemon":
			d = startDaemonIn(t, dir, self, env, "-config", "examples/wgkeeper.toml", "daemon")
			d.waitLog(t, "wgkeeper started", 20*time.Second)
			ran++
			continue
		}
		if d == nil {
			t.Fatalf("README runs %q before starting the daemon", script)
		}
		sh := strings.ReplaceAll(b, "go run . ", self+" ")
		cmd := exec.Command("/bin/sh", "-ec", sh)
		cmd.Dir = dir
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("README block failed: %v\n%s\noutput:\n%s", err, script, out)
		}
		t.Logf("README block:\n%s\noutput:\n%s", script, out)
		ran++
		switch {
		case strings.Contains(script, "peer revoke -user alice"):
			for _, want := range []string{`VPN_EVENT="C"`, `VPN_REASON="expired"`, `VPN_REASON="revoked"`, "revoked 1 config(s) of alice", "expired"} {
				if !strings.Contains(string(out), want) {
					t.Errorf("walk-through output lacks %q", want)
				}
			}
		case strings.Contains(script, "curl"):
			if !strings.Contains(string(out), `"config":"[Interface]`) {
				t.Errorf("API example did not return a config")
			}
		}
	}
	if ran < 3 {
		t.Fatalf("only %d README blocks ran", ran)
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.done:
		if err != nil {
			t.Fatalf("daemon exit: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("daemon did not stop")
	}
}

// startDaemonIn runs the program self with args in dir, collecting its
// log; cleanup kills its whole process group.
func startDaemonIn(t testing.TB, dir, self string, env []string, args ...string) *daemonProc {
	t.Helper()
	d := &daemonProc{done: make(chan error, 1), exited: make(chan struct{})}
	d.cmd = exec.Command(self, args...)
	d.cmd.Dir = dir
	d.cmd.Env = env
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			d.mu.Lock()
			d.logs.WriteString(sc.Text() + "\n")
			d.mu.Unlock()
		}
		err := d.cmd.Wait()
		close(d.exited)
		d.done <- err
	}()
	t.Cleanup(func() {
		select {
		case <-d.exited:
		default:
			syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
			<-d.exited
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", d.log())
		}
	})
	return d
}
