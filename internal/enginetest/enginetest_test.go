package enginetest_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/api"
	"github.com/wgkeeper/wgkeeper/hooks"
	"github.com/wgkeeper/wgkeeper/internal/enginetest"
	"github.com/wgkeeper/wgkeeper/reconcile"
	"github.com/wgkeeper/wgkeeper/wg"
	"github.com/wgkeeper/wgkeeper/wg/wgtest"
)

// The in-memory parts fit wherever the real ones do.
var (
	_ reconcile.Device = (*enginetest.Device)(nil)
	_ reconcile.Runner = (*enginetest.Runner)(nil)
	_ api.Device       = (*enginetest.Device)(nil)
)

func key(t testing.TB) wgtypes.Key {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pfx(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range s {
		out = append(out, netip.MustParsePrefix(p))
	}
	return out
}

// device is what both the real client and the fake offer.
type device interface {
	Read(ctx context.Context, name string) (*wg.Device, error)
	Apply(ctx context.Context, name string, p wg.Plan) (wg.Counts, error)
	SetDevice(ctx context.Context, name string, key *wgtypes.Key, port *int) error
	RemovePeers(ctx context.Context, name string, keys []wgtypes.Key) error
}

// steps applies the same writes to dev and returns what it read after each.
func steps(t *testing.T, dev device, name string, a, b, c wgtypes.Key, psk, k2 wgtypes.Key) []string {
	t.Helper()
	ctx := context.Background()
	var out []string
	read := func() {
		d, err := dev.Read(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		s := fmt.Sprintf("port=%d key=%s;", d.ListenPort, d.PublicKey)
		for _, p := range d.Peers {
			s += fmt.Sprintf(" %s psk=%v ka=%v ips=%v", p.PublicKey, p.PresharedKey != (wgtypes.Key{}), p.Keepalive, p.AllowedIPs)
		}
		out = append(out, s)
	}
	apply := func(p wg.Plan) {
		t.Helper()
		if _, err := dev.Apply(ctx, name, p); err != nil {
			t.Fatal(err)
		}
		read()
	}
	apply(wg.Plan{Add: []wg.Wanted{
		{PublicKey: a, AllowedIPs: pfx("10.0.0.1/32", "fd00::1/128"), PresharedKey: psk, Keepalive: 25 * time.Second},
		{PublicKey: b, AllowedIPs: pfx("10.0.0.2/32")},
	}})
	// An allowed IP moves to the peer it is given to.
	apply(wg.Plan{Update: []wg.Change{{Wanted: wg.Wanted{PublicKey: b, AllowedIPs: pfx("10.0.0.2/32", "10.0.0.1/32")}, AllowedIPs: true}}})
	// Only flagged fields are written; a vanished peer is not re-created.
	apply(wg.Plan{Update: []wg.Change{
		{Wanted: wg.Wanted{PublicKey: a, AllowedIPs: pfx("10.9.9.9/32")}, PresharedKey: true, Keepalive: true},
		{Wanted: wg.Wanted{PublicKey: c, AllowedIPs: pfx("10.0.0.3/32")}, AllowedIPs: true},
	}})
	// An add of a present peer merges; host bits are masked.
	apply(wg.Plan{Add: []wg.Wanted{{PublicKey: b, AllowedIPs: pfx("10.0.1.7/24")}}, Remove: []wgtypes.Key{a}})
	if err := dev.RemovePeers(ctx, name, []wgtypes.Key{b, c}); err != nil {
		t.Fatal(err)
	}
	read()
	port := 0
	if err := dev.SetDevice(ctx, name, &k2, &port); err != nil {
		t.Fatal(err)
	}
	read()
	if _, err := dev.Apply(ctx, name, wg.Plan{Add: []wg.Wanted{{PublicKey: a, Keepalive: 1500 * time.Millisecond}}}); err == nil {
		t.Error("a keepalive of 1.5s was accepted")
	}
	read()
	return out
}

// TestDeviceMatchesReal applies the same plans to a real userspace device
// and to the fake and compares what each reads back. It needs root.
func TestDeviceMatchesReal(t *testing.T) {
	wgtest.RequireRoot(t)
	a, b, c, psk, k2 := key(t).PublicKey(), key(t).PublicKey(), key(t).PublicKey(), key(t), key(t)
	srv := wgtest.NewServer(t)
	cl, err := wg.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	real := steps(t, cl, srv.Name, a, b, c, psk, k2)

	fake := enginetest.NewDevice()
	fake.AddInterface(srv.Name, enginetest.Interface{PrivateKey: srv.PrivateKey, ListenPort: srv.Port})
	got := steps(t, fake, srv.Name, a, b, c, psk, k2)
	for i := range real {
		if got[i] != real[i] {
			t.Errorf("step %d:\nreal %s\nfake %s", i, real[i], got[i])
		}
	}
}

func TestDeviceFailures(t *testing.T) {
	ctx := context.Background()
	d := enginetest.NewDevice()
	d.AddInterface("wgf0", enginetest.Interface{PrivateKey: key(t), ListenPort: 51820})
	if _, err := d.Read(ctx, "wgf1"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("read of a missing interface: %v", err)
	}
	if ls, err := d.Link(ctx, "wgf1"); err != nil || ls.Present() {
		t.Fatalf("link of a missing interface = %+v, %v", ls, err)
	}
	boom := errors.New("boom")
	d.FailReads("wgf0", boom)
	if _, err := d.Read(ctx, "wgf0"); !errors.Is(err, boom) {
		t.Fatalf("read with FailReads: %v", err)
	}
	d.FailReads("wgf0", nil)
	d.FailWrites("", boom)
	k := key(t).PublicKey()
	if _, err := d.Apply(ctx, "wgf0", wg.Plan{Add: []wg.Wanted{{PublicKey: k}}}); !errors.Is(err, boom) || !errors.Is(err, wg.ErrUnknownState) {
		t.Fatalf("apply with FailWrites: %v", err)
	}
	d.FailWrites("", nil)
	if dev, err := d.Read(ctx, "wgf0"); err != nil || len(dev.Peers) != 0 {
		t.Fatalf("a failed write wrote: %+v, %v", dev, err)
	}
	ls1, _ := d.Link(ctx, "wgf0")
	if err := d.Restart("wgf0"); err != nil {
		t.Fatal(err)
	}
	if ls2, _ := d.Link(ctx, "wgf0"); ls1.Same(ls2) || !ls2.Present() {
		t.Fatalf("restart kept the socket identity: %+v -> %+v", ls1, ls2)
	}
	if _, err := d.Apply(ctx, "wgf0", wg.Plan{Add: []wg.Wanted{{PublicKey: k}}}); err != nil {
		t.Fatal(err)
	}
	hs := time.Now()
	if err := d.SetTraffic("wgf0", k, enginetest.Traffic{LastHandshake: hs, RxBytes: 5, TxBytes: 7}); err != nil {
		t.Fatal(err)
	}
	if dev, _ := d.Read(ctx, "wgf0"); dev.Peers[0].RxBytes != 5 || dev.Peers[0].TxBytes != 7 || !dev.Peers[0].LastHandshake.Equal(hs) {
		t.Fatalf("traffic not set: %+v", dev.Peers[0])
	}
	d.DeleteInterface("wgf0")
	if _, err := d.Apply(ctx, "wgf0", wg.Plan{Remove: []wgtypes.Key{k}}); !errors.Is(err, os.ErrNotExist) || !errors.Is(err, wg.ErrUnknownState) {
		t.Fatalf("apply to a deleted interface: %v", err)
	}
}

func TestRunner(t *testing.T) {
	ctx := context.Background()
	release := make(chan struct{})
	r := enginetest.NewRunner(enginetest.RunnerConfig{Concurrency: 1, Timeout: 200 * time.Millisecond, Script: func(ctx context.Context, env map[string]string) enginetest.Exit {
		switch env["VPN_USER_ID"] {
		case "held":
			<-release
		case "slow":
			enginetest.Sleep(ctx, time.Minute)
		case "reject":
			return enginetest.Exit{Code: 7, Stderr: "no\nuser is blocked\n"}
		}
		return enginetest.Exit{}
	}})
	v := hooks.Vars{Event: "C", UserID: "alice", ProfileID: "p", ConnectionID: "k", EventID: 4, Interface: "wg0"}
	if res := r.RunWith(ctx, v, hooks.RunOptions{}); !res.OK() {
		t.Fatalf("run: %+v", res)
	}
	v.UserID = "reject"
	if res := r.RunWith(ctx, v, hooks.RunOptions{}); res.ExitCode != 7 || hooks.LastLine(res.Stderr) != "user is blocked" {
		t.Fatalf("rejected run: %+v", res)
	}
	v.UserID = "slow"
	if res := r.RunWith(ctx, v, hooks.RunOptions{}); !res.TimedOut || res.OK() {
		t.Fatalf("slow run: %+v", res)
	}
	v.UserID = "held"
	done := make(chan hooks.Result)
	go func() { done <- r.RunWith(ctx, v, hooks.RunOptions{}) }()
	for len(r.Runs()) == 3 { // wait until the held run has the slot
		v2 := v
		v2.UserID = "probe"
		res := r.RunWith(ctx, v2, hooks.RunOptions{QueueTimeout: 10 * time.Millisecond})
		if errors.Is(res.Err, hooks.ErrBusy) {
			break
		}
	}
	close(release)
	<-done
	refused := errors.New("refused")
	if res := r.RunWith(ctx, v, hooks.RunOptions{Starting: func() error { return refused }}); !errors.Is(res.Err, refused) || res.Started {
		t.Fatalf("refused start: %+v", res)
	}
	var users []string
	for _, run := range r.Runs() {
		users = append(users, run.Env["VPN_USER_ID"])
		if run.Env["PATH"] == "" || run.Env["VPN_EVENT_ID"] != "4" {
			t.Errorf("run env %v", run.Env)
		}
	}
	if fmt.Sprint(users[:3]) != "[alice reject slow]" || users[len(users)-1] != "held" {
		t.Fatalf("transcript users = %v", users)
	}
	if res := enginetest.NewRunner(enginetest.RunnerConfig{}).RunWith(ctx, v, hooks.RunOptions{}); res.Ran {
		t.Fatalf("runner without script ran: %+v", res)
	}
}
