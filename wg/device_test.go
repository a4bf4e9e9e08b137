package wg_test

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wgkeeper/wgkeeper/wg"
	"github.com/wgkeeper/wgkeeper/wg/wgtest"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/netstack"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func newClient(tb testing.TB) *wg.Client {
	tb.Helper()
	c, err := wg.NewClient()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

func genKey(tb testing.TB) wgtypes.Key {
	tb.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// peerN is a wanted peer with a fresh key and address number n in
// 10.100.0.0/16 and fd00:100::/64.
func peerN(tb testing.TB, n int) wg.Wanted {
	return wg.Wanted{
		PublicKey: genKey(tb).PublicKey(),
		AllowedIPs: []netip.Prefix{
			netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 100, byte(n >> 8), byte(n)}), 32),
			netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0, 1, 0, 14: byte(n >> 8), 15: byte(n)}), 128),
		},
	}
}

// converge makes a plan from a fresh read and applies it.
func converge(tb testing.TB, c *wg.Client, name string, wanted []wg.Wanted, o wg.Orphans) (wg.Plan, wg.Counts) {
	tb.Helper()
	ctx := context.Background()
	d, err := c.Read(ctx, name)
	if err != nil {
		tb.Fatal(err)
	}
	p, err := wg.MakePlan(wanted, d.Peers, o)
	if err != nil {
		tb.Fatal(err)
	}
	n, err := c.Apply(ctx, name, p)
	if err != nil {
		tb.Fatal(err)
	}
	return p, n
}

// assertState reads the device and checks that its peers are exactly wanted.
func assertState(tb testing.TB, c *wg.Client, name string, wanted []wg.Wanted) {
	tb.Helper()
	d, err := c.Read(context.Background(), name)
	if err != nil {
		tb.Fatal(err)
	}
	if len(d.Peers) != len(wanted) {
		tb.Fatalf("device has %d peers, want %d", len(d.Peers), len(wanted))
	}
	for _, w := range wanted {
		p, ok := d.Peer(w.PublicKey)
		if !ok {
			tb.Fatalf("peer %s missing from device", w.PublicKey)
		}
		want := slices.Clone(w.AllowedIPs)
		slices.SortFunc(want, func(a, b netip.Prefix) int { return strings.Compare(a.String(), b.String()) })
		got := slices.Clone(p.AllowedIPs)
		slices.SortFunc(got, func(a, b netip.Prefix) int { return strings.Compare(a.String(), b.String()) })
		if !slices.Equal(got, want) || p.PresharedKey != w.PresharedKey || p.Keepalive != w.Keepalive {
			tb.Fatalf("peer %s on device: ips %v psk %s keepalive %v; want ips %v psk %s keepalive %v",
				w.PublicKey, got, p.PresharedKey, p.Keepalive, want, w.PresharedKey, w.Keepalive)
		}
	}
	p, err := wg.MakePlan(wanted, d.Peers, wg.OrphansRemove)
	if err != nil {
		tb.Fatal(err)
	}
	if !p.Empty() {
		tb.Fatalf("plan after convergence not empty: %s", fmtPlan(p))
	}
}

func TestReadMissingDevice(t *testing.T) {
	wgtest.RequireRoot(t)
	c := newClient(t)
	_, err := c.Read(context.Background(), "wgnosuch0")
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Read of a missing device = %v, want os.ErrNotExist", err)
	}
	for _, want := range []string{"wgnosuch0", "wg show interfaces", "/var/run/wireguard/wgnosuch0.sock"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if _, err := c.Read(context.Background(), "bad/name"); err == nil || !strings.Contains(err.Error(), "contains '/'") {
		t.Fatalf("Read of a bad name = %v", err)
	}
	if _, err := c.Read(context.Background(), "much-too-long-name0"); err == nil || !strings.Contains(err.Error(), "longer than 15 bytes") {
		t.Fatalf("Read of a long name = %v", err)
	}
}

func TestApplyAddUpdateRemove(t *testing.T) {
	s := wgtest.NewServer(t)
	c := newClient(t)
	ctx := context.Background()

	d, err := c.Read(ctx, s.Name)
	if err != nil {
		t.Fatal(err)
	}
	if d.Name != s.Name || d.Type != "userspace" || d.PublicKey != s.PublicKey || d.ListenPort != s.Port || len(d.Peers) != 0 {
		t.Fatalf("Read = %+v, want empty userspace device %s key %s port %d", d, s.Name, s.PublicKey, s.Port)
	}

	var wanted []wg.Wanted
	for i := range 6 {
		w := peerN(t, i+2)
		if i%2 == 0 {
			w.PresharedKey = genKey(t)
		}
		if i%3 == 0 {
			w.Keepalive = 25 * time.Second
		}
		wanted = append(wanted, w)
	}
	wanted[5].AllowedIPs = append(wanted[5].AllowedIPs, netip.MustParsePrefix("192.168.50.0/24"))
	p, n := converge(t, c, s.Name, wanted, wg.OrphansRemove)
	if n != (wg.Counts{Added: 6}) || len(p.Add) != 6 {
		t.Fatalf("first apply counts %+v, want 6 added", n)
	}
	assertState(t, c, s.Name, wanted)

	// Drift every field kind, drop one, add one.
	wanted[0].PresharedKey = wgtypes.Key{}                             // psk removed
	wanted[1].PresharedKey = genKey(t)                                 // psk added
	wanted[2].Keepalive = 0                                            // keepalive off
	wanted[3].Keepalive = time.Minute                                  // keepalive changed
	wanted[4].AllowedIPs = wanted[4].AllowedIPs[:1]                    // fewer ips
	wanted[5].AllowedIPs[2] = netip.MustParsePrefix("192.168.51.0/24") // ip changed
	removed := peerN(t, 50)
	_, _ = converge(t, c, s.Name, append(slices.Clone(wanted), removed), wg.OrphansRemove)
	wanted = append(wanted, peerN(t, 60))
	p, n = converge(t, c, s.Name, wanted, wg.OrphansRemove)
	if n != (wg.Counts{Added: 1, Removed: 1}) {
		t.Fatalf("counts %+v plan %s, want 1 added 1 removed", n, fmtPlan(p))
	}
	assertState(t, c, s.Name, wanted)

	// Orphans kept: an unknown peer stays and is reported.
	stray := peerN(t, 70)
	if _, err := c.Apply(ctx, s.Name, wg.Plan{Add: []wg.Wanted{stray}}); err != nil {
		t.Fatal(err)
	}
	p, n = converge(t, c, s.Name, wanted, wg.OrphansKeep)
	if n != (wg.Counts{}) || !slices.Equal(p.KeptOrphans, []wgtypes.Key{stray.PublicKey}) {
		t.Fatalf("keep: counts %+v plan %s", n, fmtPlan(p))
	}
	assertState(t, c, s.Name, append(slices.Clone(wanted), stray))
	p, n = converge(t, c, s.Name, wanted, wg.OrphansRemove)
	if n != (wg.Counts{Removed: 1}) {
		t.Fatalf("remove: counts %+v plan %s", n, fmtPlan(p))
	}
	assertState(t, c, s.Name, wanted)

	// An empty plan writes nothing.
	before := c.Stats()
	p, n = converge(t, c, s.Name, wanted, wg.OrphansRemove)
	if !p.Empty() || n != (wg.Counts{}) || c.Stats().Writes != before.Writes {
		t.Fatalf("no-op apply: plan %s counts %+v writes %d -> %d", fmtPlan(p), n, before.Writes, c.Stats().Writes)
	}

	// RemovePeers: one write, duplicates and absent keys fine.
	if err := c.RemovePeers(ctx, s.Name, []wgtypes.Key{wanted[0].PublicKey, wanted[0].PublicKey, removed.PublicKey}); err != nil {
		t.Fatal(err)
	}
	assertState(t, c, s.Name, wanted[1:])
	if err := c.RemovePeers(ctx, s.Name, []wgtypes.Key{{}}); err == nil {
		t.Fatal("RemovePeers accepted a zero key")
	}
}

func TestApplyUpdateDoesNotRecreateVanishedPeer(t *testing.T) {
	s := wgtest.NewServer(t)
	c := newClient(t)
	w := peerN(t, 5)
	converge(t, c, s.Name, []wg.Wanted{w}, wg.OrphansRemove)
	w2 := w
	w2.Keepalive = 30 * time.Second
	d, _ := c.Read(context.Background(), s.Name)
	p, err := wg.MakePlan([]wg.Wanted{w2}, d.Peers, wg.OrphansRemove)
	if err != nil || len(p.Update) != 1 {
		t.Fatalf("plan %s err %v, want one update", fmtPlan(p), err)
	}
	// The peer vanishes between read and apply (device restarted).
	s.Restart(t)
	if _, err := c.Apply(context.Background(), s.Name, p); err != nil {
		t.Fatal(err)
	}
	assertState(t, c, s.Name, nil)
}

func TestApplyInvalidPlanWritesNothing(t *testing.T) {
	s := wgtest.NewServer(t)
	c := newClient(t)
	w := peerN(t, 2)
	bad := []wg.Plan{
		{Add: []wg.Wanted{w, w}},
		{Add: []wg.Wanted{w}, Remove: []wgtypes.Key{w.PublicKey}},
		{Remove: []wgtypes.Key{{}}},
		{Update: []wg.Change{{Wanted: wg.Wanted{PublicKey: w.PublicKey, Keepalive: 70000 * time.Second}, Keepalive: true}}},
		{Add: []wg.Wanted{{PublicKey: w.PublicKey, AllowedIPs: []netip.Prefix{{}}}}},
	}
	for i, p := range bad {
		_, err := c.Apply(context.Background(), s.Name, p)
		if err == nil || !strings.Contains(err.Error(), "invalid plan") || errors.Is(err, wg.ErrUnknownState) {
			t.Errorf("plan %d: Apply error = %v, want an invalid plan error without ErrUnknownState", i, err)
		}
	}
	if w := c.Stats().Writes; w != 0 {
		t.Fatalf("%d writes for invalid plans, want 0", w)
	}
	assertState(t, c, s.Name, nil)
}

func TestApplyMissingDevice(t *testing.T) {
	wgtest.RequireRoot(t)
	c := newClient(t)
	_, err := c.Apply(context.Background(), "wgnosuch1", wg.Plan{Add: []wg.Wanted{peerN(t, 1)}})
	if !errors.Is(err, os.ErrNotExist) || !errors.Is(err, wg.ErrUnknownState) || !strings.Contains(err.Error(), "wgnosuch1") {
		t.Fatalf("Apply to a missing device = %v, want os.ErrNotExist and ErrUnknownState naming the device", err)
	}
}

// TestApplyRejectedWrite makes a real wireguard-go device reject a write:
// the device is closed underneath its UAPI socket, so creating a peer fails.
func TestApplyRejectedWrite(t *testing.T) {
	wgtest.RequireRoot(t)
	tdev, _, err := netstack.CreateNetTUN([]netip.Addr{netip.MustParseAddr("10.98.0.1")}, nil, wg.MTU)
	if err != nil {
		t.Fatal(err)
	}
	dev := device.NewDevice(tdev, conn.NewDefaultBind(), device.NewLogger(device.LogLevelSilent, ""))
	name := wgtest.UniqueName("wgr")
	srv, err := wg.ServeUAPI(name, dev, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	dev.Close()

	c := newClient(t)
	_, err = c.Apply(context.Background(), name, wg.Plan{Add: []wg.Wanted{peerN(t, 1)}})
	if !errors.Is(err, wg.ErrUnknownState) {
		t.Fatalf("Apply to a device that rejects the write = %v, want ErrUnknownState", err)
	}
	if !strings.Contains(err.Error(), "re-read before the next step") || !strings.Contains(err.Error(), name) {
		t.Fatalf("error %q should name the device and say to re-read", err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	if _, err := os.Stat(wg.SocketDir + "/" + name + ".sock"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket after Close: %v", err)
	}
}

func TestUnchangedPeerKeepsSession(t *testing.T) {
	s := wgtest.NewServer(t)
	c := newClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	cl := s.NewClient(t)
	other, gone := peerN(t, 200), peerN(t, 201)
	wanted := []wg.Wanted{cl.Wanted(), other, gone}
	converge(t, c, s.Name, wanted, wg.OrphansRemove)
	if err := cl.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	hsClient := cl.LastHandshake()
	d, err := c.Read(ctx, s.Name)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := d.Peer(cl.PublicKey)
	if hsClient.IsZero() || before.LastHandshake.IsZero() {
		t.Fatalf("no handshake after ping: client %v server %v", hsClient, before.LastHandshake)
	}

	// Change every other kind of thing around the connected client.
	other.Keepalive = 15 * time.Second
	other.AllowedIPs = other.AllowedIPs[:1]
	wanted = []wg.Wanted{other, peerN(t, 202), cl.Wanted(), peerN(t, 203)}
	writes := c.Stats().Writes
	p, n := converge(t, c, s.Name, wanted, wg.OrphansRemove)
	if n != (wg.Counts{Added: 2, Updated: 1, Removed: 1}) || c.Stats().Writes != writes+1 {
		t.Fatalf("counts %+v in %d writes, want 2 added 1 updated 1 removed in one write", n, c.Stats().Writes-writes)
	}
	if slices.Contains(planKeys(p), cl.PublicKey) {
		t.Fatalf("plan touches the unchanged connected peer: %s", fmtPlan(p))
	}

	if err := cl.Ping(ctx); err != nil {
		t.Fatalf("traffic after apply: %v", err)
	}
	if got := cl.LastHandshake(); !got.Equal(hsClient) {
		t.Fatalf("client handshake %v -> %v: the apply reset the session", hsClient, got)
	}
	// wireguard-go counts a sent packet after handing it to the socket, so
	// the echo can reach the client a moment before the server's tx
	// counter moves: read until both counters have moved, briefly.
	var after wg.Peer
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		d, err = c.Read(ctx, s.Name)
		if err != nil {
			t.Fatal(err)
		}
		after, _ = d.Peer(cl.PublicKey)
		if after.RxBytes > before.RxBytes && after.TxBytes > before.TxBytes || time.Now().After(deadline) {
			break
		}
	}
	if !after.LastHandshake.Equal(before.LastHandshake) {
		t.Fatalf("server handshake %v -> %v: the apply reset the session", before.LastHandshake, after.LastHandshake)
	}
	if after.RxBytes <= before.RxBytes || after.TxBytes <= before.TxBytes {
		t.Fatalf("byte counters rx %d->%d tx %d->%d: traffic did not flow on the kept session", before.RxBytes, after.RxBytes, before.TxBytes, after.TxBytes)
	}
}

func TestRemovedPeerTrafficStops(t *testing.T) {
	s := wgtest.NewServer(t)
	c := newClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	keep, drop := s.NewClient(t), s.NewClient(t)
	converge(t, c, s.Name, []wg.Wanted{keep.Wanted(), drop.Wanted()}, wg.OrphansRemove)
	for _, cl := range []*wgtest.ClientDev{keep, drop} {
		if err := cl.Ping(ctx); err != nil {
			t.Fatal(err)
		}
	}
	_, n := converge(t, c, s.Name, []wg.Wanted{keep.Wanted()}, wg.OrphansRemove)
	if n != (wg.Counts{Removed: 1}) {
		t.Fatalf("counts %+v, want 1 removed", n)
	}
	short, cancelShort := context.WithTimeout(ctx, time.Second)
	defer cancelShort()
	if err := drop.Ping(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ping from the removed peer = %v, want no echo", err)
	}
	if err := keep.Ping(ctx); err != nil {
		t.Fatalf("ping from the kept peer: %v", err)
	}
}

func TestThousandPeersRoundTrip(t *testing.T) {
	s := wgtest.NewServer(t)
	c := newClient(t)
	wanted := make([]wg.Wanted, 1000)
	for i := range wanted {
		wanted[i] = peerN(t, i+2)
		if i%7 == 0 {
			wanted[i].PresharedKey = genKey(t)
			wanted[i].Keepalive = 25 * time.Second
		}
	}
	start := time.Now()
	_, n := converge(t, c, s.Name, wanted, wg.OrphansRemove)
	t.Logf("added 1000 peers in %v", time.Since(start))
	if n != (wg.Counts{Added: 1000}) {
		t.Fatalf("counts %+v", n)
	}
	assertState(t, c, s.Name, wanted)
	// Churn 1%: remove 5, add 5, update 5.
	next := slices.Clone(wanted[5:])
	for i := range 5 {
		next[i].Keepalive = time.Duration(i+1) * time.Second
		next = append(next, peerN(t, 2000+i))
	}
	_, n = converge(t, c, s.Name, next, wg.OrphansRemove)
	if n != (wg.Counts{Added: 5, Updated: 5, Removed: 5}) {
		t.Fatalf("churn counts %+v", n)
	}
	assertState(t, c, s.Name, next)
}

func TestSetDevice(t *testing.T) {
	s := wgtest.NewServer(t)
	c := newClient(t)
	ctx := context.Background()
	w := peerN(t, 9)
	converge(t, c, s.Name, []wg.Wanted{w}, wg.OrphansRemove)

	k := genKey(t)
	port := freeUDPPort(t)
	writes := c.Stats().Writes
	if err := c.SetDevice(ctx, s.Name, &k, &port); err != nil {
		t.Fatal(err)
	}
	d, err := c.Read(ctx, s.Name)
	if err != nil {
		t.Fatal(err)
	}
	if d.PublicKey != k.PublicKey() || d.ListenPort != port || c.Stats().Writes != writes+1 {
		t.Fatalf("after SetDevice: key %s port %d writes +%d; want %s %d +1", d.PublicKey, d.ListenPort, c.Stats().Writes-writes, k.PublicKey(), port)
	}
	assertState(t, c, s.Name, []wg.Wanted{w}) // peers untouched
	if err := c.SetDevice(ctx, s.Name, &k, &port); err != nil {
		t.Fatal(err)
	}
	if err := c.SetDevice(ctx, s.Name, nil, nil); err != nil {
		t.Fatal(err)
	}
	if c.Stats().Writes != writes+1 {
		t.Fatal("SetDevice with unchanged fields wrote to the device")
	}
	bad := -1
	if err := c.SetDevice(ctx, s.Name, nil, &bad); err == nil || !strings.Contains(err.Error(), "out of range") {
		t.Fatalf("SetDevice(port -1) = %v", err)
	}
	if err := c.SetDevice(ctx, s.Name, &wgtypes.Key{}, nil); err == nil || !strings.Contains(err.Error(), "zero private key") {
		t.Fatalf("SetDevice(zero key) = %v", err)
	}
	if err := c.SetDevice(ctx, "wgnosuch2", &k, nil); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("SetDevice on a missing device = %v", err)
	}
}

// wgDump runs `wg show NAME dump` and returns the peers it lists as
// "key allowed-ips" lines, sorted; it skips the test when wg is missing.
func wgDump(t *testing.T, name string) []string {
	t.Helper()
	bin, err := exec.LookPath("wg")
	if err != nil {
		t.Skip("skipped: wg (wireguard-tools) is not installed (apt-get install wireguard-tools)")
	}
	out, err := exec.Command(bin, "show", name, "dump").CombinedOutput()
	if err != nil {
		t.Fatalf("wg show %s dump: %v\n%s", name, err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var peers []string
	for _, l := range lines[1:] {
		f := strings.Split(l, "\t")
		if len(f) != 8 {
			t.Fatalf("wg dump line %q: want 8 fields", l)
		}
		ips := strings.Split(f[3], ",")
		slices.Sort(ips)
		peers = append(peers, f[0]+" "+strings.Join(ips, ","))
	}
	slices.Sort(peers)
	return peers
}

func dumpLines(ws []wg.Wanted) []string {
	var out []string
	for _, w := range ws {
		var ips []string
		for _, p := range w.AllowedIPs {
			ips = append(ips, p.String())
		}
		slices.Sort(ips)
		if len(ips) == 0 {
			ips = []string{"(none)"}
		}
		out = append(out, w.PublicKey.String()+" "+strings.Join(ips, ","))
	}
	slices.Sort(out)
	return out
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	// The kernel picks a free port; it is released at once for the device.
	s := wgtest.NewServer(t)
	port := s.Port
	s.Close()
	return port
}
