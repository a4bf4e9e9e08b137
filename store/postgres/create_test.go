package postgres

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

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
// start, run it, activate and add to the device) costs three round trips
// to PostgreSQL: one per step that touches the database. The statements
// are logged, so that a change that adds one shows where.
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
	if len(got) > 3 {
		t.Errorf("a create sent %d statements, want at most 3 (insert, start, activate)", len(got))
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

// Activations and deletes of the same pending configs, from two handles
// (two nodes) at once, each end one way or the other and agree: a config
// whose activation succeeded has its C done without a note, one deleted
// first has its C done with the note and the activation answers
// ErrNotFound; every config has exactly one D; no lock-order deadlock or
// conflict reaches a caller.
func TestActivateRacesDelete(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	a, b := open(t, url, Options{Create: true}), open(t, url, Options{})
	const n = 40
	cev := make([]int64, n)
	for i := range n {
		_, ev, err := a.InsertPending(ctx, store.NewPeer{PublicKey: testKey(i + 1), Interface: "wg0", ProfileID: "staff",
			UserID: fmt.Sprintf("user%d", i), IPv4Range: netip.MustParsePrefix("10.42.0.0/24")})
		if err != nil {
			t.Fatal(err)
		}
		cev[i] = ev.ID
	}
	activated := make([]bool, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			err := a.Activate(ctx, testKey(i+1), cev[i])
			switch {
			case err == nil:
				activated[i] = true
			case !errors.Is(err, store.ErrNotFound):
				t.Errorf("activate %d: %v", i, err)
			}
		})
		wg.Go(func() {
			<-start
			if _, err := b.DeletePeers(ctx, []wgtypes.Key{testKey(i + 1)}, store.ReasonDeleted, "", time.Time{}); err != nil {
				t.Errorf("delete %d: %v", i, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if ps, err := a.ListPeers(ctx, store.PeerFilter{}); err != nil || len(ps) != 0 {
		t.Fatalf("%d peers left (%v), want none", len(ps), err)
	}
	won := 0
	for i := range n {
		k := testKey(i + 1)
		evs, err := a.ListEvents(ctx, store.EventFilter{PublicKey: &k})
		if err != nil {
			t.Fatal(err)
		}
		var cs, ds []store.Event
		for _, ev := range evs {
			if ev.Kind == store.KindConnect {
				cs = append(cs, ev)
			} else {
				ds = append(ds, ev)
			}
		}
		if len(cs) != 1 || len(ds) != 1 {
			t.Errorf("config %d: %d C and %d D events, want one each", i, len(cs), len(ds))
			continue
		}
		if cs[0].Status != store.StatusDone || (cs[0].LastError == "") != activated[i] {
			t.Errorf("config %d: activated %v, its C is %s with note %q", i, activated[i], cs[0].Status, cs[0].LastError)
		}
		if activated[i] {
			won++
		}
	}
	t.Logf("%d of %d activations came before their delete", won, n)
}
