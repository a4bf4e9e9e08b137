package wg_test

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/wgkeeper/wgkeeper/wg"
	"github.com/wgkeeper/wgkeeper/wg/wgtest"
	"golang.org/x/sys/unix"
)

func requireTUN(t *testing.T) {
	t.Helper()
	wgtest.RequireRoot(t)
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("skipped: /dev/net/tun is not available: %v", err)
	}
}

func linkGone(t *testing.T, name string) {
	t.Helper()
	_, err := netlink.LinkByName(name)
	var nf netlink.LinkNotFoundError
	if !errors.As(err, &nf) {
		t.Fatalf("link %s still present after Close (lookup: %v)", name, err)
	}
}

func TestUpUserspace(t *testing.T) {
	requireTUN(t)
	name := wgtest.UniqueName("wgu")
	key := genKey(t)
	addrs := []netip.Prefix{netip.MustParsePrefix("10.77.0.1/24"), netip.MustParsePrefix("fd77::1/64")}
	ctx := context.Background()
	l, err := wg.Up(ctx, wg.Spec{Name: name, Mode: wg.ModeUserspace, PrivateKey: key, Addresses: addrs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	if l.Name() != name || l.Mode() != wg.ModeUserspace {
		t.Fatalf("link %s/%s", l.Name(), l.Mode())
	}

	link, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatalf("TUN %s not found: %v", name, err)
	}
	if link.Attrs().Flags&unix.IFF_UP == 0 || link.Attrs().MTU != wg.MTU || link.Type() != "tuntap" {
		t.Fatalf("link %s: type %s flags %v mtu %d, want an up tuntap with mtu %d", name, link.Type(), link.Attrs().Flags, link.Attrs().MTU, wg.MTU)
	}
	list, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var got []netip.Prefix
	for _, a := range list {
		ip, _ := netip.AddrFromSlice(a.IP)
		ones, _ := a.Mask.Size()
		if p := netip.PrefixFrom(ip.Unmap(), ones); !p.Addr().IsLinkLocalUnicast() {
			got = append(got, p)
		}
	}
	for _, want := range addrs {
		if !slices.Contains(got, want) {
			t.Fatalf("addresses on %s = %v, want %v", name, got, addrs)
		}
	}

	c := newClient(t)
	d, err := c.Read(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if d.PublicKey != key.PublicKey() || d.ListenPort == 0 {
		t.Fatalf("device key %s port %d, want key %s and a port", d.PublicKey, d.ListenPort, key.PublicKey())
	}
	wanted := []wg.Wanted{peerN(t, 2), peerN(t, 3)}
	converge(t, c, name, wanted, wg.OrphansRemove)
	if got, want := wgDump(t, name), dumpLines(wanted); !slices.Equal(got, want) {
		t.Fatalf("wg show %s dump peers:\n%v\nwant\n%v", name, got, want)
	}

	// The name is taken now: a second Up refuses instead of taking over.
	_, err = wg.Up(ctx, wg.Spec{Name: name, Mode: wg.ModeUserspace, PrivateKey: key})
	if err == nil || !strings.Contains(err.Error(), "already exists") || !strings.Contains(err.Error(), `"existing"`) {
		t.Fatalf("second Up = %v, want an already-exists error suggesting mode existing", err)
	}
	assertState(t, c, name, wanted)

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	select {
	case <-l.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed after Close")
	}
	linkGone(t, name)
	if _, err := os.Stat(wg.SocketDir + "/" + name + ".sock"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket after Close: %v", err)
	}
	if _, err := c.Read(ctx, name); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Read after Close = %v", err)
	}
}

func TestUpUserspaceFixedPort(t *testing.T) {
	requireTUN(t)
	port := freeUDPPort(t)
	name := wgtest.UniqueName("wgu")
	l, err := wg.Up(context.Background(), wg.Spec{Name: name, Mode: wg.ModeUserspace, PrivateKey: genKey(t), ListenPort: port})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	d, err := newClient(t).Read(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	if d.ListenPort != port {
		t.Fatalf("listen port %d, want %d", d.ListenPort, port)
	}
}

// TestUpKernel checks kernel mode: without the wireguard module (as on the
// CI machines) Up must say so and what to do, and leave nothing behind;
// with it, the link must work like the userspace one.
func TestUpKernel(t *testing.T) {
	wgtest.RequireRoot(t)
	name := wgtest.UniqueName("wgk")
	ctx := context.Background()
	addrs := []netip.Prefix{netip.MustParsePrefix("10.78.0.1/24")}
	l, err := wg.Up(ctx, wg.Spec{Name: name, Mode: wg.ModeKernel, PrivateKey: genKey(t), Addresses: addrs})
	if err != nil {
		for _, want := range []string{name, "wireguard kernel module is missing", "modprobe wireguard", `mode "userspace"`} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("kernel Up error %q does not mention %q", err, want)
			}
		}
		linkGone(t, name)
		return
	}
	t.Log("wireguard kernel module present: testing a real kernel link")
	defer l.Close()
	c := newClient(t)
	d, err := c.Read(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if d.Type != "Linux kernel" {
		t.Fatalf("device type %q", d.Type)
	}
	wanted := []wg.Wanted{peerN(t, 2)}
	converge(t, c, name, wanted, wg.OrphansRemove)
	assertState(t, c, name, wanted)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	linkGone(t, name)
}

func TestUpExistingWireguardGo(t *testing.T) {
	e := wgtest.StartWireguardGo(t)
	ctx := context.Background()
	c := newClient(t)

	// Existing mode with nothing configured changes nothing.
	l, err := wg.Up(ctx, wg.Spec{Name: e.Name})
	if err != nil {
		t.Fatal(err)
	}
	if l.Mode() != wg.ModeExisting || c.Stats().Writes != 0 {
		t.Fatalf("mode %s", l.Mode())
	}
	d, err := c.Read(ctx, e.Name)
	if err != nil {
		t.Fatal(err)
	}
	if d.PublicKey != e.PublicKey || d.ListenPort != e.Port {
		t.Fatal("existing Up without key or port changed the device")
	}
	l.Close()

	// With key and port configured, they are set.
	key, port := genKey(t), freeUDPPort(t)
	l, err = wg.Up(ctx, wg.Spec{Name: e.Name, Mode: wg.ModeExisting, PrivateKey: key, ListenPort: port})
	if err != nil {
		t.Fatal(err)
	}
	d, err = c.Read(ctx, e.Name)
	if err != nil {
		t.Fatal(err)
	}
	if d.PublicKey != key.PublicKey() || d.ListenPort != port {
		t.Fatalf("existing Up: key %s port %d, want %s %d", d.PublicKey, d.ListenPort, key.PublicKey(), port)
	}

	// Peers: add, drift, remove, checked by wgctrl and by wg(8).
	wanted := []wg.Wanted{peerN(t, 2), peerN(t, 3), peerN(t, 4)}
	wanted[0].PresharedKey = genKey(t)
	wanted[1].Keepalive = 25 * time.Second
	converge(t, c, e.Name, wanted, wg.OrphansRemove)
	assertState(t, c, e.Name, wanted)
	if got, want := wgDump(t, e.Name), dumpLines(wanted); !slices.Equal(got, want) {
		t.Fatalf("wg show dump peers:\n%v\nwant\n%v", got, want)
	}
	wanted = append(wanted[1:], peerN(t, 5))
	wanted[0].AllowedIPs = wanted[0].AllowedIPs[1:]
	_, n := converge(t, c, e.Name, wanted, wg.OrphansRemove)
	if n != (wg.Counts{Added: 1, Updated: 1, Removed: 1}) {
		t.Fatalf("counts %+v", n)
	}
	assertState(t, c, e.Name, wanted)
	if got, want := wgDump(t, e.Name), dumpLines(wanted); !slices.Equal(got, want) {
		t.Fatalf("wg show dump peers:\n%v\nwant\n%v", got, want)
	}

	// Close never removes an interface wgkeeper does not own.
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := netlink.LinkByName(e.Name); err != nil {
		t.Fatalf("existing interface gone after Close: %v", err)
	}
	assertState(t, c, e.Name, wanted)
}

func TestUpErrors(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		spec    wg.Spec
		wantErr string
	}{
		{wg.Spec{Name: "wg0", Mode: "tun"}, `unknown mode "tun"`},
		{wg.Spec{Name: "", Mode: wg.ModeUserspace}, "empty interface name"},
		{wg.Spec{Name: "wg0", Mode: wg.ModeUserspace}, "mode userspace needs a private key"},
		{wg.Spec{Name: "wg0", Mode: wg.ModeKernel}, "mode kernel needs a private key"},
		{wg.Spec{Name: "wg0", ListenPort: 70000}, "listen port 70000 out of range"},
		{wg.Spec{Name: "wg0", Mode: wg.ModeUserspace, PrivateKey: genKey(t), Addresses: []netip.Prefix{{}}}, "invalid address"},
	}
	for _, tt := range tests {
		_, err := wg.Up(ctx, tt.spec)
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("Up(%+v) = %v, want %q", tt.spec, err, tt.wantErr)
		}
	}
	wgtest.RequireRoot(t)
	_, err := wg.Up(ctx, wg.Spec{Name: "wgnosuch3"})
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "wgnosuch3") {
		t.Fatalf("existing Up of a missing interface = %v, want os.ErrNotExist naming it", err)
	}
}

// WatchLinks reports a watched link taken down, and its end (ctx
// cancelled) is not an error: the netlink socket closing under the
// subscription's receive used to be reported as "Receive failed" at every
// daemon stop.
func TestWatchLinksStopIsQuiet(t *testing.T) {
	requireTUN(t)
	name := wgtest.UniqueName("wgw")
	l, err := wg.Up(context.Background(), wg.Spec{Name: name, Mode: wg.ModeUserspace, PrivateKey: genKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	errs := make(chan error, 16)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := wg.WatchLinks(ctx, []string{name}, func(err error) { errs <- err })
	if err != nil {
		t.Fatal(err)
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetDown(link); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-ch:
		if got != name {
			t.Fatalf("watch reported %q, want %q", got, name)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no notification for a link taken down")
	}
	cancel()
	for range ch { // closed once the watch ended
	}
	select {
	case err := <-errs:
		t.Fatalf("the watch's end was reported as an error: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
}
