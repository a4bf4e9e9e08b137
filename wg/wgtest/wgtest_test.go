package wgtest_test

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/wgkeeper/wgkeeper/wg"
	"github.com/wgkeeper/wgkeeper/wg/wgtest"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func newWG(t *testing.T) *wg.Client {
	t.Helper()
	c, err := wg.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func addPeers(t *testing.T, c *wg.Client, name string, ws ...wg.Wanted) {
	t.Helper()
	p, err := wg.MakePlan(ws, nil, wg.OrphansKeep)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Apply(context.Background(), name, p); err != nil {
		t.Fatal(err)
	}
}

func TestServerClientTraffic(t *testing.T) {
	s := wgtest.NewServer(t)
	wc := newWG(t)
	d, err := wc.Read(context.Background(), s.Name)
	if err != nil {
		t.Fatalf("wgctrl does not see the server: %v", err)
	}
	if d.PublicKey != s.PublicKey || d.ListenPort != s.Port || len(d.Peers) != 0 {
		t.Fatalf("server device = key %s port %d peers %d, want key %s port %d no peers", d.PublicKey, d.ListenPort, len(d.Peers), s.PublicKey, s.Port)
	}

	c := s.NewClient(t)
	if !c.LastHandshake().IsZero() {
		t.Fatal("handshake before any traffic")
	}
	// Not yet a peer of the server: no traffic passes.
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	err = c.Ping(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ping before the server knows the client = %v, want a timeout", err)
	}

	addPeers(t, wc, s.Name, c.Wanted())
	c.Reconnect(t) // skip the 5 s handshake retry
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Handshake(ctx); err != nil {
		t.Fatal(err)
	}
	rx, tx := c.Bytes()
	if rx == 0 || tx == 0 {
		t.Fatalf("client bytes rx=%d tx=%d after a ping, want both > 0", rx, tx)
	}
	d, err = wc.Read(ctx, s.Name)
	if err != nil {
		t.Fatal(err)
	}
	p, ok := d.Peer(c.PublicKey)
	if !ok || p.LastHandshake.IsZero() || p.RxBytes == 0 || p.TxBytes == 0 {
		t.Fatalf("server view of client = %+v, want a handshake and bytes both ways", p)
	}
	if p.Endpoint.Addr().String() != "127.0.0.1" {
		t.Fatalf("client endpoint = %s, want 127.0.0.1", p.Endpoint)
	}

	// IPv6 through the tunnel too.
	c6 := s.NewClient(t, wgtest.WithClientAddrs(netip.Addr{}, netip.MustParseAddr("fd00:99::77")))
	addPeers(t, wc, s.Name, c6.Wanted())
	if err := c6.Ping(ctx); err != nil {
		t.Fatalf("ipv6 ping: %v", err)
	}
}

func TestServerRestartIsEmpty(t *testing.T) {
	s := wgtest.NewServer(t)
	wc := newWG(t)
	c := s.NewClient(t)
	addPeers(t, wc, s.Name, c.Wanted())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	port, key := s.Port, s.PublicKey
	s.Restart(t)
	d, err := wc.Read(ctx, s.Name)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Peers) != 0 || d.ListenPort != port || d.PublicKey != key {
		t.Fatalf("after restart: %d peers, port %d, key %s; want 0 peers, port %d, key %s", len(d.Peers), d.ListenPort, d.PublicKey, port, key)
	}
	short, cancelShort := context.WithTimeout(ctx, 700*time.Millisecond)
	err = c.Ping(short)
	cancelShort()
	if err == nil {
		t.Fatal("ping passed through a restarted server that has no peers")
	}
	addPeers(t, wc, s.Name, c.Wanted())
	c.Reconnect(t)
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("ping after re-adding the client to the restarted server: %v", err)
	}
}

func TestServerPresetPeersAndCleanup(t *testing.T) {
	wgtest.RequireRoot(t)
	// Warm up once: the netstack starts a few process-wide goroutines on
	// first use.
	t.Run("warmup", func(t *testing.T) { wgtest.NewServer(t).NewClient(t) })
	before := runtime.NumGoroutine()

	var name string
	t.Run("server", func(t *testing.T) {
		k, _ := wgtypes.GeneratePrivateKey()
		want := wg.Wanted{PublicKey: k.PublicKey(), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.99.3.3/32")}}
		s := wgtest.NewServer(t, wgtest.WithPeers(want))
		name = s.Name
		c := s.NewClient(t)
		wc := newWG(t)
		d, err := wc.Read(context.Background(), s.Name)
		if err != nil {
			t.Fatal(err)
		}
		if len(d.Peers) != 1 || d.Peers[0].PublicKey != want.PublicKey {
			t.Fatalf("preset peers = %+v, want just %s", d.Peers, want.PublicKey)
		}
		addPeers(t, wc, s.Name, c.Wanted())
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.Ping(ctx); err != nil {
			t.Fatal(err)
		}
	})
	if _, err := os.Stat(filepath.Join(wg.SocketDir, name+".sock")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket of %s after cleanup: %v, want it removed", name, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: %d before, %d after cleanup:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestWireguardGo(t *testing.T) {
	e := wgtest.StartWireguardGo(t)
	wc := newWG(t)
	d, err := wc.Read(context.Background(), e.Name)
	if err != nil {
		t.Fatal(err)
	}
	if d.PublicKey != e.PublicKey || d.ListenPort != e.Port || d.ListenPort == 0 {
		t.Fatalf("wireguard-go device key %s port %d, want %s %d", d.PublicKey, d.ListenPort, e.PublicKey, e.Port)
	}
	e.Stop()
	if _, err := wc.Read(context.Background(), e.Name); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("read after Stop = %v, want not exist", err)
	}
}
