package cli

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/config"
	"github.com/wgkeeper/wgkeeper/hooks"
	"github.com/wgkeeper/wgkeeper/internal/fakeclock"
	"github.com/wgkeeper/wgkeeper/reconcile"
	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/store/postgres"
	"github.com/wgkeeper/wgkeeper/store/sqlite"
	"github.com/wgkeeper/wgkeeper/wg/wgtest"
)

// `log -ip -at` names the config that held the address and, when a session
// covered that time, the endpoint its client talked from; `log -user`
// lists the sessions too.
func TestLogShowsSessionEndpoint(t *testing.T) {
	c := newCLIEnv(t, "remove")
	k, _ := wgtypes.GeneratePrivateKey()
	c.ok("peer", "add", "-user", "alice", "-profile", "staff", "-public-key", k.PublicKey().String())
	cl := c.srv.NewClient(t, wgtest.WithClientKey(k), wgtest.WithClientAddrs(netip.MustParseAddr("10.99.0.2"), netip.MustParseAddr("fd00:99::2")))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cl.Handshake(ctx); err != nil {
		t.Fatal(err)
	}
	before := c.ok("log", "-ip", "10.99.0.2")
	if !strings.Contains(before, "no session (client talking) covered") {
		t.Fatalf("log before any poll:\n%s", before)
	}

	// what the daemon's session poll does
	sp, err := c.poller(nil).PollSessions(ctx, c.srv.Name)
	if err != nil || len(sp.Changes) != 1 {
		t.Fatalf("poll = %+v, %v", sp, err)
	}
	ep := sp.Changes[0].Endpoint.String()
	if !strings.HasPrefix(ep, "127.0.0.1:") {
		t.Fatalf("endpoint %q", ep)
	}
	out := c.ok("log", "-ip", "10.99.0.2", "-at", time.Now().UTC().Format(time.RFC3339Nano))
	if !strings.Contains(out, k.PublicKey().String()) || !strings.Contains(out, ep) || !strings.Contains(out, " open ") {
		t.Fatalf("log -ip lacks the config or its endpoint %s:\n%s", ep, out)
	}
	var lg struct {
		ClientSessions []struct {
			Endpoints []string `json:"endpoints"`
			PublicKey string   `json:"public_key"`
		} `json:"client_sessions"`
	}
	c.json(&lg, "log", "-user", "alice")
	if len(lg.ClientSessions) != 1 || len(lg.ClientSessions[0].Endpoints) != 1 || lg.ClientSessions[0].Endpoints[0] != ep {
		t.Fatalf("log -user -json sessions = %+v", lg.ClientSessions)
	}
	// peer list and status show the recorded traffic and the open session
	var pl struct {
		Peers []struct {
			Traffic *struct {
				BytesIn int64 `json:"bytes_in"`
				Session *struct {
					Endpoint *string `json:"endpoint"`
				} `json:"session"`
			} `json:"traffic"`
		} `json:"peers"`
	}
	c.json(&pl, "peer", "list")
	if len(pl.Peers) != 1 || pl.Peers[0].Traffic == nil || pl.Peers[0].Traffic.BytesIn <= 0 ||
		pl.Peers[0].Traffic.Session == nil || pl.Peers[0].Traffic.Session.Endpoint == nil || *pl.Peers[0].Traffic.Session.Endpoint != ep {
		t.Fatalf("peer list -json traffic = %+v", pl.Peers)
	}
	if st := c.ok("status", "-json"); !strings.Contains(st, `"traffic": {`) {
		t.Fatalf("status -json without traffic:\n%s", st)
	}
	// the config script never saw the session
	runs, err := os.ReadFile(filepath.Join(c.dir, "events.log"))
	if err != nil || string(runs) != "C "+k.PublicKey().String()+" created\n" {
		t.Fatalf("config script runs %q, %v; want the config's C only", runs, err)
	}
}

// poller is an engine on the test's config, store and device, with the
// clock clk (nil: time.Now), to do what the daemon's session poll does.
func (c *cliEnv) poller(clk func() time.Time) *reconcile.Engine {
	c.t.Helper()
	cfg, err := config.Load(c.cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	var st store.Store
	if config.IsPostgresURL(c.db) {
		st, err = postgres.Open(context.Background(), c.db, postgres.Options{Now: clk})
	} else {
		st, err = sqlite.Open(context.Background(), filepath.Join(c.dir, c.db), sqlite.Options{Now: clk})
	}
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { st.Close() })
	r, err := hooks.New(hooks.Config{Script: cfg.Hooks.Script, Timeout: cfg.Hooks.Timeout, Concurrency: 1})
	if err != nil {
		c.t.Fatal(err)
	}
	eng, err := reconcile.New(reconcile.Options{Config: cfg, Store: st, Device: c.dev, Runner: r, Now: clk})
	if err != nil {
		c.t.Fatal(err)
	}
	return eng
}

// status (table and -json) and peer list -json say online from the session
// state the daemon's polls persist: online while the session is open;
// offline when no poll came for offline_after + poll_interval (the daemon
// is down: the session is still open in the store); offline once a poll
// ended it.
func TestStatusOnlineFromSessions(t *testing.T) {
	c := newCLIEnv(t, "remove")
	clk := fakeclock.New(time.Now().UTC())
	old := now
	now = clk.Now
	t.Cleanup(func() { now = old })
	k, _ := wgtypes.GeneratePrivateKey()
	key := k.PublicKey().String()
	c.ok("peer", "add", "-user", "alice", "-profile", "staff", "-public-key", key)
	cl := c.srv.NewClient(t, wgtest.WithClientKey(k), wgtest.WithClientAddrs(netip.MustParseAddr("10.99.0.2"), netip.MustParseAddr("fd00:99::2")))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cl.Handshake(ctx); err != nil {
		t.Fatal(err)
	}
	check := func(when, want string) {
		t.Helper()
		var st statusJSON
		c.json(&st, "status")
		if got := stateOf(st, key); got != want {
			t.Errorf("%s: status -json says %q, want %q", when, got, want)
		}
		if human := c.ok("status"); !strings.Contains(human, "1 "+want) {
			t.Errorf("%s: status does not count alice %s:\n%s", when, want, human)
		}
		var pl struct {
			Peers []struct {
				Live *struct {
					Online bool `json:"online"`
				} `json:"live"`
			} `json:"peers"`
		}
		c.json(&pl, "peer", "list")
		if len(pl.Peers) != 1 || pl.Peers[0].Live == nil || pl.Peers[0].Live.Online != (want == StateOnline) {
			t.Errorf("%s: peer list -json = %+v, want online %v", when, pl.Peers, want == StateOnline)
		}
	}
	check("before any poll", StateOffline)
	eng := c.poller(clk.Now)
	if sp, err := eng.PollSessions(ctx, c.srv.Name); err != nil || sp.Online != 1 {
		t.Fatalf("poll = %+v, %v; want alice's session open", sp, err)
	}
	check("session open", StateOnline)
	cfg, err := config.Load(c.cfg)
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(cfg.Sessions.OfflineAfter + cfg.Sessions.PollInterval)
	check("no poll for offline_after + poll_interval", StateOffline)
	if sp, err := eng.PollSessions(ctx, c.srv.Name); err != nil || len(sp.Changes) != 1 || sp.Changes[0].Kind != store.SessionEnd {
		t.Fatalf("poll = %+v, %v; want alice's session end", sp, err)
	}
	check("session ended", StateOffline)
}
