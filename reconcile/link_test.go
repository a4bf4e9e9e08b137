package reconcile

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/internal/enginetest"
	"github.com/wgkeeper/wgkeeper/internal/testenv"
	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/wg"
	"github.com/wgkeeper/wgkeeper/wg/wgtest"
)

// extIface is an interface the engine does not own (mode existing): one
// run by Debian's wireguard-go on a real TUN, or an in-memory interface
// with a link.
type extIface struct {
	Name      string
	PublicKey wgtypes.Key
	Port      int
	real      *wgtest.External
	fake      *enginetest.Device
}

// Recreate removes the interface and creates it again with no private
// key, no listen port and no peers (link down until SetUp).
func (e *extIface) Recreate(t *testing.T) {
	t.Helper()
	if e.real != nil {
		e.real.Recreate(t)
	} else {
		e.fake.AddInterface(e.Name, enginetest.Interface{Link: true})
		if err := e.fake.SetLink(e.Name, func(ls *wg.LinkState) { ls.Up = false }); err != nil {
			t.Fatal(err)
		}
	}
	e.PublicKey, e.Port = wgtypes.Key{}, 0
}

// SetUp sets the link up or down, as `ip link set up|down` does.
func (e *extIface) SetUp(t *testing.T, up bool) {
	t.Helper()
	if e.real != nil {
		state := "down"
		if up {
			state = "up"
		}
		run(t, "ip", "link", "set", state, "dev", e.Name)
		return
	}
	if err := e.fake.SetLink(e.Name, func(ls *wg.LinkState) { ls.Up = up }); err != nil {
		t.Fatal(err)
	}
}

// SetKey sets the private key by hand, as `wg set NAME private-key` does.
func (e *extIface) SetKey(t *testing.T, k wgtypes.Key) {
	t.Helper()
	if e.real != nil {
		kf := filepath.Join(t.TempDir(), "new.key")
		if err := os.WriteFile(kf, []byte(k.String()+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		run(t, "wg", "set", e.Name, "private-key", kf)
		return
	}
	if err := e.fake.SetDevice(context.Background(), e.Name, &k, nil); err != nil {
		t.Fatal(err)
	}
}

// SetPort sets the listen port by hand, as `wg set NAME listen-port` does.
func (e *extIface) SetPort(t *testing.T, port int) {
	t.Helper()
	if e.real != nil {
		run(t, "wg", "set", e.Name, "listen-port", fmt.Sprint(port))
		return
	}
	if err := e.fake.SetDevice(context.Background(), e.Name, nil, &port); err != nil {
		t.Fatal(err)
	}
}

// newExternalHarness is a harness on an interface the engine does not
// own, up, with a generated key and a free port: Debian's wireguard-go on
// a real TUN, or an in-memory interface with a link when testenv.Fakes
// says so. extra is added to the [[interface]] block.
func newExternalHarness(t *testing.T, extra string) (*harness, *extIface) {
	t.Helper()
	h := &harness{t: t, dir: t.TempDir(), ctx: context.Background()}
	var ext *extIface
	if testenv.Fakes() {
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		h.fake = enginetest.NewDevice()
		ext = &extIface{Name: wgtest.UniqueName("wgx"), PublicKey: k.PublicKey(), Port: freePort(t), fake: h.fake}
		h.fake.AddInterface(ext.Name, enginetest.Interface{PrivateKey: k, ListenPort: ext.Port, Link: true})
	} else {
		if _, err := exec.LookPath("ip"); err != nil {
			t.Skip("skipped: needs ip(8)")
		}
		real := wgtest.StartWireguardGo(t)
		ext = &extIface{Name: real.Name, PublicKey: real.PublicKey, Port: real.Port, real: real}
		ext.SetUp(t, true) // as wg-quick does
	}
	h.open(testConfig(ext.Name, ext.Port, "remove", extra, 10, false))
	return h, ext
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// refused checks that a create failed with ErrDeviceUnavailable naming
// why, and that it stored nothing and ran no script.
func (h *harness) refused(user, why string) {
	h.t.Helper()
	runs := len(h.scriptRuns())
	c, err := h.eng.Create(h.ctx, CreateRequest{UserID: user, ProfileID: "staff"})
	if !errors.Is(err, ErrDeviceUnavailable) || c != nil || !strings.Contains(err.Error(), why) {
		h.t.Fatalf("create for %s = %+v, %v; want ErrDeviceUnavailable saying %q", user, c, err, why)
	}
	if ps, _ := h.st.ListPeers(h.ctx, store.PeerFilter{UserID: user}); len(ps) != 0 {
		h.t.Fatalf("a refused create stored %+v", ps)
	}
	if n := len(h.scriptRuns()); n != runs {
		h.t.Fatalf("a refused create ran the script (%d runs before, %d after)", runs, n)
	}
}

// TestCreateChecksInterface: before its connect script, a create checks
// that the interface is up, readable and has the key it had; a link set
// down, an interface recreated without a private key (which used to give
// configs with the all-zero key's public key) and one re-keyed by hand are
// refused with ErrDeviceUnavailable, no row and no script run. A reload
// accepts the new key; reconcile restores the configs without events.
func TestCreateChecksInterface(t *testing.T) {
	h, ext := newExternalHarness(t, "")
	alice := h.create("alice")
	if alice.Client.ServerKey != ext.PublicKey {
		t.Fatalf("server key in the config %s, want %s", alice.Client.ServerKey, ext.PublicKey)
	}

	ext.SetUp(t, false)
	h.refused("bob", "the link is down")
	health := h.eng.Health(h.ctx, ext.Name, nil)
	if health.Link != "down" || !slices.Contains(health.Drift, "link down") {
		t.Fatalf("health of a down link: %+v", health)
	}
	ext.SetUp(t, true)
	h.create("bob")

	// Recreated (as by wg-quick down/up before its key is set).
	ext.Recreate(t)
	ext.SetUp(t, true)
	h.refused("carol", "no private key")

	// Re-keyed: the key differs from the one first seen.
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	ext.SetKey(t, k)
	h.refused("carol", "public key changed")
	d, err := h.dev.Read(h.ctx, ext.Name)
	if err != nil {
		t.Fatal(err)
	}
	health = h.eng.Health(h.ctx, ext.Name, d)
	if health.PublicKeyOK == nil || *health.PublicKeyOK || len(health.Drift) != 1 || !strings.HasPrefix(health.Drift[0], "public key changed") {
		t.Fatalf("health of a re-keyed interface: %+v", health)
	}

	// Reconcile restores alice and bob (no events); a reload accepts the
	// new key.
	runs := len(h.scriptRuns())
	rep := h.eng.Reconcile(h.ctx, ext.Name, false)
	if rep.Err != nil || rep.Counts.Added != 2 {
		t.Fatalf("reconcile of the recreated interface: %+v", rep)
	}
	h.eng.SetConfig(h.cfg, nil)
	carol := h.create("carol")
	if carol.Client.ServerKey != k.PublicKey() {
		t.Fatalf("after the reload the config carries %s, want the new key %s", carol.Client.ServerKey, k.PublicKey())
	}
	if n := len(h.scriptRuns()); n != runs+1 {
		t.Fatalf("script runs: %d, want %d (carol's C only)", n, runs+1)
	}
	if d, _ := h.dev.Read(h.ctx, ext.Name); len(d.Peers) != 3 {
		t.Fatalf("device peers %d, want 3", len(d.Peers))
	}
}

// TestCreateRollsBackWhenDeviceRefuses: the connect script accepts, but
// the interface is gone by the time the peer is added (the script itself
// deletes it). The create answers ErrDeviceUnavailable, the row is gone,
// and the script, which saw C, gets a D with VPN_REASON=failed.
func TestCreateRollsBackWhenDeviceRefuses(t *testing.T) {
	h, _ := newExternalHarness(t, "")
	h.create("alice")
	h.touch("linkdel_C", "")
	c, err := h.eng.Create(h.ctx, CreateRequest{UserID: "bob", ProfileID: "staff"})
	if !errors.Is(err, ErrDeviceUnavailable) || c != nil || !strings.Contains(err.Error(), "rolled back") {
		t.Fatalf("create whose peer the device refused = %+v, %v; want ErrDeviceUnavailable, rolled back", c, err)
	}
	if ps, _ := h.st.ListPeers(h.ctx, store.PeerFilter{UserID: "bob"}); len(ps) != 0 {
		t.Fatalf("rolled-back config still stored: %+v", ps)
	}
	runs := h.scriptRuns()
	var bob []string
	for _, r := range runs {
		if r["VPN_USER_ID"] == "bob" {
			bob = append(bob, r["VPN_EVENT"]+" "+r["VPN_REASON"])
		}
	}
	if !slices.Equal(bob, []string{"C created", "D failed"}) {
		t.Fatalf("bob's script runs %v, want [C created, D failed]", bob)
	}
	evs, err := h.st.ListEvents(h.ctx, store.EventFilter{UserID: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range evs {
		got = append(got, ev.Kind+" "+ev.Reason+" "+ev.Status)
	}
	slices.Sort(got)
	if !slices.Equal(got, []string{"C created done", "D failed done"}) {
		t.Fatalf("bob's events %v", got)
	}
}

// TestExistingReappliesKeyAndPort: an existing interface whose config
// names private_key_file and listen_port gets them back when it is
// recreated without them or changed by hand, at the next reconcile, with
// its peers and without events.
func TestExistingReappliesKeyAndPort(t *testing.T) {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	kf := filepath.Join(dir, "wg.key")
	if err := os.WriteFile(kf, []byte(k.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	h, ext := newExternalHarness(t, fmt.Sprintf("private_key_file = %q\nlisten_port = %d\n", kf, port))
	device := func() *wg.Device {
		d, err := h.dev.Read(h.ctx, ext.Name)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	// The interface starts with another key and port: the check before
	// the first create fails, and the reconcile it runs then sets them.
	rep := h.eng.Reconcile(h.ctx, ext.Name, true)
	if rep.Err != nil {
		t.Fatal(rep.Err)
	}
	if d := device(); d.PublicKey == k.PublicKey() || d.ListenPort == port {
		t.Fatal("the interface already has the configured key or port: the test proves nothing")
	}
	alice := h.create("alice")
	if d := device(); d.PublicKey != k.PublicKey() || d.ListenPort != port || alice.Client.ServerKey != k.PublicKey() {
		t.Fatalf("device key %s port %d, config's server key %s; want %s %d", d.PublicKey, d.ListenPort, alice.Client.ServerKey, k.PublicKey(), port)
	}
	h.create("bob")
	runs := len(h.scriptRuns())

	ext.Recreate(t)
	ext.SetUp(t, true)
	rep = h.eng.Reconcile(h.ctx, ext.Name, false)
	if rep.Err != nil || !slices.Equal(rep.Repairs, []string{"set private key", fmt.Sprintf("set listen port %d", port)}) || rep.Counts.Added != 2 {
		t.Fatalf("reconcile of the recreated interface: %+v", rep)
	}
	if d := device(); d.PublicKey != k.PublicKey() || d.ListenPort != port || len(d.Peers) != 2 {
		t.Fatalf("after reconcile: key %s port %d peers %d", d.PublicKey, d.ListenPort, len(d.Peers))
	}

	// Changed by hand: status says so, reconcile sets it back.
	other := freePort(t)
	ext.SetPort(t, other)
	health := h.eng.Health(h.ctx, ext.Name, device())
	if health.ListenPortOK == nil || *health.ListenPortOK || health.PublicKeyOK == nil || !*health.PublicKeyOK ||
		!slices.Contains(health.Drift, fmt.Sprintf("listen port %d, config says %d", other, port)) {
		t.Fatalf("health with the port changed by hand: %+v", health)
	}
	rep = h.eng.Reconcile(h.ctx, ext.Name, false)
	if rep.Err != nil || !slices.Equal(rep.Repairs, []string{fmt.Sprintf("set listen port %d", port)}) || !rep.Plan.Empty() {
		t.Fatalf("reconcile after wg set listen-port: %+v", rep)
	}
	if d := device(); d.ListenPort != port {
		t.Fatalf("port %d after reconcile, want %d", d.ListenPort, port)
	}
	h.create("carol")
	if n := len(h.scriptRuns()); n != runs+1 {
		t.Fatalf("script runs %d, want %d (carol's C only)", n, runs+1)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// ownLinks is the daemon's map of owned interfaces, for tests.
type ownLinks map[string]*wg.Link

func (o ownLinks) Ensure(ctx context.Context, iface string) ([]string, error) {
	if l, ok := o[iface]; ok {
		return l.Ensure(ctx)
	}
	return nil, nil
}

// TestCreateHealsOwnedInterface: in a process that owns a userspace
// interface, a create right after `ip link del` does not wait for the
// next scheduled reconcile: the failed check runs one, which recreates the
// interface and restores its configs without events, and the create
// succeeds with the peer on the device.
func TestCreateHealsOwnedInterface(t *testing.T) {
	wgtest.RequireRoot(t)
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("skipped: needs /dev/net/tun")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("skipped: needs ip(8)")
	}
	h := &harness{t: t, dir: t.TempDir(), ctx: context.Background()}
	name := wgtest.UniqueName("wgo")
	kf := filepath.Join(h.dir, "server.key")
	key, err := wg.LoadOrCreateKey(kf)
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	h.open(testConfig(name, port, "remove", fmt.Sprintf("mode = \"userspace\"\nprivate_key_file = %q\nlisten_port = %d\n", kf, port), 10, false))
	prof, _ := h.cfg.Profile("staff")
	l, err := wg.Up(h.ctx, wg.Spec{Name: name, Mode: wg.ModeUserspace, PrivateKey: key, ListenPort: port, Addresses: prof.ServerAddrs()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	h.eng.SetLinks(ownLinks{name: l})

	alice := h.create("alice")
	runs := len(h.scriptRuns())
	run(t, "ip", "link", "del", name)
	bob := h.create("bob")
	d, err := h.dev.Read(h.ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := d.Peer(alice.Peer.PublicKey); !ok || len(d.Peers) != 2 || d.PublicKey != key.PublicKey() || d.ListenPort != port {
		t.Fatalf("after the create: %d peers, key %s port %d", len(d.Peers), d.PublicKey, d.ListenPort)
	}
	if _, ok := d.Peer(bob.Peer.PublicKey); !ok {
		t.Fatal("bob's peer is not on the device")
	}
	if n := len(h.scriptRuns()); n != runs+1 {
		t.Fatalf("script runs %d, want %d (bob's C only)", n, runs+1)
	}
}
