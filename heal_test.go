package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wgkeeper/wgkeeper/wg"
	"github.com/wgkeeper/wgkeeper/wg/wgtest"
)

// runSelf runs this binary as wgkeeper with args and returns its stdout.
func runSelf(t testing.TB, args ...string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "WGKEEPER_TEST_AS_MAIN=1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("wgkeeper %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestDaemonHealsInterface runs the real daemon on a userspace interface
// with three configs, deletes the interface with `ip link del` and sets it
// down with `ip link set down`: the interface is back with the same key,
// port, addresses (IPv6 too, which Linux drops on link down), MTU and every
// peer, and the script saw no C or D event for it. `status -json` then
// reports the link up and nothing drifted. With a reconcile interval of
// 1 s, and of 1 h, where the kernel's link notifications alone make the
// daemon repair it.
func TestDaemonHealsInterface(t *testing.T) {
	for _, interval := range []string{"1s", "1h"} {
		t.Run("reconcile_interval="+interval, func(t *testing.T) { testDaemonHeals(t, interval) })
	}
}

func testDaemonHeals(t *testing.T, interval string) {
	wgtest.RequireRoot(t)
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("skipped: needs /dev/net/tun for a userspace interface")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("skipped: needs ip(8)")
	}
	dir := t.TempDir()
	name := wgtest.UniqueName("wgh")
	port := freeUDPPort(t)
	cfgPath := filepath.Join(dir, "wgkeeper.toml")
	conf := strings.Replace(fmt.Sprintf(daemonConfig, name, port, port, name), `reconcile_interval = "1h"`, `reconcile_interval = "`+interval+`"`, 1)
	if err := os.WriteFile(cfgPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "hook.sh"), []byte(daemonHook), 0o755); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, cfgPath)
	d.waitLog(t, "wgkeeper started", 20*time.Second)
	for _, u := range []string{"alice", "bob", "carol"} {
		runSelf(t, "-config", cfgPath, "peer", "add", "-user", u, "-profile", "staff")
	}
	events, _ := os.ReadFile(filepath.Join(dir, "events.log"))
	if n := strings.Count(string(events), "C "); n != 3 {
		t.Fatalf("events.log after 3 creates:\n%s", events)
	}

	ctx := context.Background()
	c, err := wg.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	want, err := c.Read(ctx, name)
	if err != nil || len(want.Peers) != 3 {
		t.Fatalf("device before: %+v, %v", want, err)
	}
	addrs := []netip.Prefix{netip.MustParsePrefix("10.98.0.1/24"), netip.MustParsePrefix("fd00:98::1/64")}
	// healed waits until the interface is as configured again, with the
	// same peers; it returns how long that took.
	healed := func(t *testing.T, what string) time.Duration {
		t.Helper()
		start := time.Now()
		var last string
	poll:
		for time.Since(start) < 10*time.Second {
			time.Sleep(20 * time.Millisecond)
			ls, err := c.Link(ctx, name)
			if err != nil || !ls.Exists || !ls.Up || ls.MTU != wg.MTU || !ls.HasAddr(addrs[0]) || !ls.HasAddr(addrs[1]) {
				last = fmt.Sprintf("link %+v, %v", ls, err)
				continue
			}
			got, err := c.Read(ctx, name)
			if err != nil || got.PublicKey != want.PublicKey || got.ListenPort != port || len(got.Peers) != 3 {
				last = fmt.Sprintf("device %+v, %v", got, err)
				continue
			}
			for _, p := range want.Peers {
				if q, ok := got.Peer(p.PublicKey); !ok || fmt.Sprint(q.AllowedIPs) != fmt.Sprint(p.AllowedIPs) {
					last = fmt.Sprintf("peer %s: %+v", p.PublicKey, q)
					continue poll
				}
			}
			return time.Since(start)
		}
		t.Fatalf("%s: the interface was not restored within 10 s; last: %s", what, last)
		return 0
	}

	ipCmd(t, "link", "del", name)
	took := healed(t, "after ip link del")
	t.Logf("recreated with its peers %v after ip link del", took)
	d.waitLog(t, "recreated", 5*time.Second)

	ipCmd(t, "link", "set", "down", "dev", name)
	took = healed(t, "after ip link set down")
	t.Logf("up with its addresses %v after ip link set down", took)

	if interval == "1s" {
		// A listen port changed behind the daemon's back (no link event)
		// is set again by the periodic reconcile; the device client logs
		// it through the daemon's logger.
		other := freeUDPPort(t)
		if err := c.SetDevice(ctx, name, nil, &other); err != nil {
			t.Fatal(err)
		}
		took = healed(t, "after a listen port change")
		t.Logf("listen port set again %v after a change", took)
		d.waitLog(t, "set device fields", 5*time.Second)
	}

	if after, _ := os.ReadFile(filepath.Join(dir, "events.log")); string(after) != string(events) {
		t.Fatalf("the script ran while the interface was repaired:\nbefore:\n%s\nafter:\n%s", events, after)
	}

	var st struct {
		Interfaces []struct {
			Name             string   `json:"name"`
			Link             string   `json:"link"`
			AddressesPresent []string `json:"addresses_present"`
			AddressesMissing []string `json:"addresses_missing"`
			PublicKeyOK      *bool    `json:"public_key_ok"`
			ListenPortOK     *bool    `json:"listen_port_ok"`
			Drift            []string `json:"drift"`
		} `json:"interfaces"`
	}
	out := runSelf(t, "-config", cfgPath, "status", "-json")
	if err := json.Unmarshal([]byte(out), &st); err != nil || len(st.Interfaces) != 1 {
		t.Fatalf("status -json: %v\n%s", err, out)
	}
	si := st.Interfaces[0]
	if si.Link != "up" || len(si.AddressesPresent) != 2 || len(si.AddressesMissing) != 0 || si.PublicKeyOK == nil || !*si.PublicKeyOK ||
		si.ListenPortOK == nil || !*si.ListenPortOK || len(si.Drift) != 0 {
		t.Fatalf("status after the repairs: %s", out)
	}
	// Down again, status before the daemon repairs it would say so; stop
	// the daemon first so nothing repairs it.
	stopDaemon(t, d)
	ipCmd(t, "tuntap", "add", "dev", name, "mode", "tun")
	t.Cleanup(func() { exec.Command("ip", "link", "del", name).Run() })
	// status prints it all and exits 1: the interface drifts.
	cmd := exec.Command(os.Args[0], "-config", cfgPath, "status")
	cmd.Env = append(os.Environ(), "WGKEEPER_TEST_AS_MAIN=1")
	raw, err := cmd.Output()
	if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("status of a down interface: %v, want exit status 1", err)
	}
	out = string(raw)
	for _, w := range []string{"link down", "addresses 0/2", "drift: link down", "drift: address fd00:98::1/64 missing"} {
		if !strings.Contains(out, w) {
			t.Errorf("status of a down interface lacks %q:\n%s", w, out)
		}
	}
}

func stopDaemon(t testing.TB, d *daemonProc) {
	t.Helper()
	d.cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-d.done:
		if err != nil {
			t.Fatalf("daemon exit: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("daemon did not stop within 15 s")
	}
}
