package postgres

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/internal/enginetest"
	"github.com/wgkeeper/wgkeeper/internal/pgtest"
	"github.com/wgkeeper/wgkeeper/internal/testenv"
	"github.com/wgkeeper/wgkeeper/reconcile"
	"github.com/wgkeeper/wgkeeper/store"
)

// statements records the statements sent while it is on: each is one
// round trip to the server.
type statements struct {
	mu   sync.Mutex // guards on and sent
	on   bool
	sent []string
}

func (s *statements) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.on {
		s.sent = append(s.sent, strings.Join(strings.Fields(d.SQL), " "))
	}
	return ctx
}

func (s *statements) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// record turns recording on from now, forgetting what came before.
func (s *statements) record() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.on, s.sent = true, nil
}

// stop turns recording off and returns what was sent since record.
func (s *statements) stop() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.on = false
	return s.sent
}

// A create through the engine (validate, insert, record the script's
// start, run it, activate, re-read under the device lock, add to the
// device) costs four round trips to PostgreSQL: one per step that touches
// the database. The statements are logged, so that a change that adds
// one shows where.
func TestCreateRoundTrips(t *testing.T) {
	ctx := context.Background()
	sent := &statements{}
	s := open(t, pgtest.NewDatabase(t), Options{Create: true, tracer: sent})
	const iface, port = "wgrt0", 51820
	cfg := testenv.Load(t, t.TempDir(), testenv.Config{Interface: iface, Port: port, NoScript: true,
		ProfileLines: "max_configs_per_user = 3"}.TOML(), "")
	dev := enginetest.NewDevice()
	srvKey, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	dev.AddInterface(iface, enginetest.Interface{PrivateKey: srvKey, ListenPort: port})
	accept := func(context.Context, map[string]string) enginetest.Exit { return enginetest.Exit{} }
	eng, err := reconcile.New(reconcile.Options{Config: cfg, Store: s, Device: dev,
		Runner: enginetest.NewRunner(enginetest.RunnerConfig{Script: accept})})
	if err != nil {
		t.Fatal(err)
	}
	create := func(i int) *reconcile.Created {
		t.Helper()
		k := testKey(1000 + i)
		c, err := eng.Create(ctx, reconcile.CreateRequest{UserID: fmt.Sprintf("user%d", i), ProfileID: "staff", PublicKey: &k})
		if err != nil {
			t.Fatalf("create %d: %v", i, err)
		}
		return c
	}
	for i := range 3 { // the engine's first look at the device, prepared statements
		create(i)
	}
	sent.record()
	c := create(3)
	got := sent.stop()
	if c.Peer.State != store.StateActive || c.Peer.IPv4 != netip.MustParseAddr("10.99.0.5") {
		t.Errorf("created %+v, want an active peer at 10.99.0.5", c.Peer)
	}
	t.Logf("%d round trips per create:\n%s", len(got), strings.Join(got, "\n"))
	if len(got) > 4 {
		t.Errorf("a create sent %d statements, want at most 4 (insert, start, activate, re-read)", len(got))
	}
}

// wgk_addr_text writes an address as Go's netip does (the program's
// canonical text), also where PostgreSQL's own text differs (::/96).
func TestAddrText(t *testing.T) {
	ctx := context.Background()
	s := open(t, pgtest.NewDatabase(t), Options{Create: true})
	addrs := []string{"10.40.0.2", "10.40.255.254", "0.0.0.2", "fd42::2", "fd42::1:0:1:0:0", "1:0:2:0:3:0:4:5",
		"1:0:0:2:0:0:3:4", "1::", "::1", "::2", "::", "::1:2", "::ffff", "::1:0", "::ffff:0:1:2", "::1:0:0:0",
		"::ffff:1.2.3.4", "::0:1:0:0:2", "2001:db8::ff00:42:8329", "fe80::1:ffff:0:1", "fd00:99::ffff:ffff"}
	for i := range 64 { // and walks through ::/96 and around the ::/80 edge
		addrs = append(addrs, netip.AddrFrom16([16]byte{10: byte(i), 12: byte(i * 3), 15: byte(i)}).String(),
			netip.AddrFrom16([16]byte{11: byte(i), 13: byte(i * 7)}).String())
	}
	for _, a := range addrs {
		want := netip.MustParseAddr(a).String()
		var got string
		if err := s.pool.QueryRow(ctx, `SELECT wgk_addr_text($1::inet)`, a).Scan(&got); err != nil {
			t.Fatalf("%s: %v", a, err)
		}
		if got != want {
			t.Errorf("wgk_addr_text(%s) = %q, want %q", a, got, want)
		}
	}
}
