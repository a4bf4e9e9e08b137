package wg_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/wgkeeper/wgkeeper/wg"
	"github.com/wgkeeper/wgkeeper/wg/wgtest"
)

// ip runs ip(8), failing the test on an error.
func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func requireIP(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("skipped: needs ip(8) (iproute2)")
	}
}

// eventually polls cond every 20 ms until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestUserspaceLinkHeals deletes an owned userspace interface with
// `ip link del`, sets it down with `ip link set down` (which drops its
// IPv6 address) and checks that Ensure brings it back exactly as specified:
// same key, port, addresses, MTU, up, and a UAPI socket that answers.
func TestUserspaceLinkHeals(t *testing.T) {
	requireTUN(t)
	requireIP(t)
	ctx := context.Background()
	name := wgtest.UniqueName("wgh")
	key, port := genKey(t), freeUDPPort(t)
	addrs := []netip.Prefix{netip.MustParsePrefix("10.77.0.1/24"), netip.MustParsePrefix("fd77::1/64")}
	l, err := wg.Up(ctx, wg.Spec{Name: name, Mode: wg.ModeUserspace, PrivateKey: key, ListenPort: port, Addresses: addrs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	c := newClient(t)
	if rep, err := l.Ensure(ctx); err != nil || len(rep) != 0 {
		t.Fatalf("Ensure of a healthy interface = %v, %v; want nothing to do", rep, err)
	}
	converge(t, c, name, []wg.Wanted{peerN(t, 2)}, wg.OrphansRemove)
	before, err := c.Link(ctx, name)
	if err != nil || !before.Exists || !before.Up || before.Socket == (wg.SocketID{}) {
		t.Fatalf("link state %+v, %v", before, err)
	}

	check := func(t *testing.T) wg.LinkState {
		t.Helper()
		st, err := c.Link(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if !st.Exists || !st.Up || st.MTU != wg.MTU || st.Kind != "tuntap" {
			t.Fatalf("link after repair: %+v, want an up tuntap with mtu %d", st, wg.MTU)
		}
		for _, a := range addrs {
			if !st.HasAddr(a) {
				t.Fatalf("address %s missing after repair: %v", a, st.Addresses)
			}
		}
		d, err := c.Read(ctx, name)
		if err != nil {
			t.Fatalf("read after repair: %v", err)
		}
		if d.PublicKey != key.PublicKey() || d.ListenPort != port {
			t.Fatalf("device after repair: key %s port %d, want %s %d", d.PublicKey, d.ListenPort, key.PublicKey(), port)
		}
		return st
	}

	// Deleted: the embedded device notices its TUN is gone; Ensure
	// replaces device and socket, and the new device takes writes.
	ip(t, "link", "del", name)
	if rep, err := l.Ensure(ctx); err != nil || !slices.Equal(rep, []string{"recreated"}) {
		t.Fatalf("Ensure after ip link del = %v, %v; want [recreated]", rep, err)
	}
	after := check(t)
	if after.Same(before) {
		t.Fatalf("recreated interface reports the identity of the old one: %+v", after)
	}
	d, err := c.Read(ctx, name)
	if err != nil || len(d.Peers) != 0 {
		t.Fatalf("a recreated device starts empty: %+v, %v", d, err)
	}
	peers := []wg.Wanted{peerN(t, 2), peerN(t, 3)}
	converge(t, c, name, peers, wg.OrphansRemove)
	assertState(t, c, name, peers)

	// Down (and up again by hand): the IPv6 address is gone; Ensure adds
	// it back. Down and left down: Ensure sets it up too.
	ip(t, "link", "set", "down", "dev", name)
	ip(t, "link", "set", "up", "dev", name)
	st, err := c.Link(ctx, name)
	if err != nil || st.HasAddr(addrs[1]) {
		t.Fatalf("after down/up the kernel kept %s (%+v, %v): the test proves nothing", addrs[1], st, err)
	}
	if rep, err := l.Ensure(ctx); err != nil || !slices.Equal(rep, []string{"added address fd77::1/64"}) {
		t.Fatalf("Ensure after down/up = %v, %v", rep, err)
	}
	check(t)
	ip(t, "link", "set", "down", "dev", name)
	if rep, err := l.Ensure(ctx); err != nil || !slices.Equal(rep, []string{"set up", "added address fd77::1/64"}) {
		t.Fatalf("Ensure of a down link = %v, %v", rep, err)
	}
	check(t)
	assertState(t, c, name, peers) // peers survive a down/up

	// A link someone else created under the name is never taken over.
	ip(t, "link", "del", name)
	ip(t, "tuntap", "add", "dev", name, "mode", "tap")
	foreign, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if lk, err := netlink.LinkByName(name); err == nil && lk.Attrs().Index == foreign.Attrs().Index {
			netlink.LinkDel(lk)
		}
	})
	_, err = l.Ensure(ctx)
	if err == nil || !strings.Contains(err.Error(), "already exists") || !strings.Contains(err.Error(), "tuntap") {
		t.Fatalf("Ensure with a foreign link = %v, want an already-exists error naming its type", err)
	}
	if lk, err := netlink.LinkByName(name); err != nil || lk.Attrs().Index != foreign.Attrs().Index || lk.Attrs().Flags&net.FlagUp != 0 {
		t.Fatalf("the foreign link was touched: %v %v", lk, err)
	}
	ip(t, "link", "del", name)
	if rep, err := l.Ensure(ctx); err != nil || !slices.Equal(rep, []string{"recreated"}) {
		t.Fatalf("Ensure once the name is free = %v, %v", rep, err)
	}
	check(t)

	// Close removes it for good; Ensure then refuses.
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	linkGone(t, name)
	if _, err := l.Ensure(ctx); !errors.Is(err, wg.ErrLinkClosed) {
		t.Fatalf("Ensure after Close = %v", err)
	}
	eventually(t, 5*time.Second, "socket gone after Close", func() bool {
		st, err := c.Link(ctx, name)
		return err == nil && !st.Present()
	})
}
