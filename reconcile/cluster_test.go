package reconcile

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/internal/enginetest"
	"github.com/wgkeeper/wgkeeper/internal/fakeclock"
	"github.com/wgkeeper/wgkeeper/internal/pgtest"
	"github.com/wgkeeper/wgkeeper/internal/testenv"
	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/store/postgres"
)

// clusterConfig is one node of a database shared by many: its own
// interface and profile, a 90-day log retention.
const clusterConfig = `database = %q
node = %q
lock_dir = %q

[hooks]
script = "hook.sh"

[housekeeping]
log_retention = "90d"

[api]
listen = ""

[[interface]]
name = %q
endpoint = "127.0.0.1:51820"

[[profile]]
id = %q
interface = %q
ipv4_range = %q
expiry = "0"
max_expiry = "0"
`

// leaderLog records the engine's ClusterLeader calls.
type leaderLog struct {
	nopObserver
	mu    sync.Mutex // guards calls
	calls []bool
}

func (l *leaderLog) ClusterLeader(lead bool) {
	l.mu.Lock()
	l.calls = append(l.calls, lead)
	l.mu.Unlock()
}

func (l *leaderLog) got() []bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.calls)
}

// syncBuffer is a log destination safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// clusterNode is one node's engine on a shared PostgreSQL database, with
// an in-memory device and a script that accepts everything.
type clusterNode struct {
	name  string
	iface string
	st    *postgres.Store
	eng   *Engine
	obs   *leaderLog
	log   *syncBuffer
}

func newClusterNode(t *testing.T, url, name, iface, v4 string, clk *fakeclock.Clock) *clusterNode {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	cfg := testenv.Load(t, dir, fmt.Sprintf(clusterConfig, url, name, dir, iface, "p-"+name, iface, v4), "#!/bin/sh\nexit 0\n")
	st, err := postgres.Open(ctx, url, postgres.Options{Create: true, Now: clk.Now, Node: name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	dev := enginetest.NewDevice()
	priv, _ := wgtypes.GeneratePrivateKey()
	dev.AddInterface(iface, enginetest.Interface{PrivateKey: priv, ListenPort: 51820})
	run := enginetest.NewRunner(enginetest.RunnerConfig{Script: func(context.Context, map[string]string) enginetest.Exit {
		return enginetest.Exit{}
	}})
	n := &clusterNode{name: name, iface: iface, st: st, obs: &leaderLog{}, log: &syncBuffer{}}
	n.eng, err = New(Options{Config: cfg, Store: st, Device: dev, Runner: run, Now: clk.Now, Nodes: st, Leader: st,
		Observer: n.obs, Logger: slog.New(slog.NewTextHandler(n.log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.eng.Close() })
	if err := st.RegisterNode(ctx, store.NodeDecl{Name: name, Interfaces: []store.NodeInterface{{Name: iface,
		Profiles: []store.NodeProfile{{ID: "p-" + name, IPv4Range: cfg.Profiles[0].IPv4Range}}}}}); err != nil {
		t.Fatal(err)
	}
	return n
}

// killLockConn ends, on the server, the session holding the cluster-job
// lock (as an operator or a network failure would). Other tests' databases
// on the same server have leaders of their own.
func killLockConn(t *testing.T, url string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity
		WHERE datname = current_database() AND application_name LIKE 'wgkeeper cluster lock %' AND pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted)`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("terminate the lock holder's connection: %d sessions, %v", n, err)
	}
}

// Two engines on one database: one leads at a time, the Observer and the
// log say when a node becomes or stops being the leader, and when the
// leader's lock connection dies the other takes over within a bounded
// time while the first learns that it lost the lock.
func TestClusterLeadership(t *testing.T) {
	url := pgtest.NewDatabase(t)
	clk := fakeclock.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	a := newClusterNode(t, url, "node-a", "wg-a", "10.1.0.0/24", clk)
	b := newClusterNode(t, url, "node-b", "wg-b", "10.2.0.0/24", clk)
	ctx := context.Background()
	if !a.eng.Lead(ctx) || b.eng.Lead(ctx) || !a.eng.Lead(ctx) {
		t.Fatal("node-a should lead, node-b not")
	}
	if got := a.obs.got(); !slices.Equal(got, []bool{true}) {
		t.Fatalf("node-a's ClusterLeader calls = %v, want [true]", got)
	}
	if got := b.obs.got(); len(got) != 0 {
		t.Fatalf("node-b's ClusterLeader calls = %v, want none", got)
	}
	if l := a.log.String(); strings.Count(l, "this node is now the cluster leader") != 1 || !strings.Contains(l, "node=node-a") {
		t.Fatalf("node-a's log:\n%s", l)
	}

	killLockConn(t, url)
	start := time.Now()
	for !b.eng.Lead(ctx) {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("node-b did not lead within 10s of node-a's lock connection dying; its log:\n%s", b.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if a.eng.Lead(ctx) {
		t.Fatal("node-a still leads after its lock connection died")
	}
	if got := a.obs.got(); !slices.Equal(got, []bool{true, false}) {
		t.Fatalf("node-a's ClusterLeader calls = %v, want [true false]", got)
	}
	if got := b.obs.got(); !slices.Equal(got, []bool{true}) {
		t.Fatalf("node-b's ClusterLeader calls = %v, want [true]", got)
	}
	if l := a.log.String(); !strings.Contains(l, "this node is no longer the cluster leader") || !strings.Contains(l, "connection was lost") {
		t.Fatalf("node-a's log lacks the loss:\n%s", l)
	}
	// node-a keeps trying on a new connection, but node-b holds the lock.
	if a.eng.Lead(ctx) || !b.eng.Lead(ctx) {
		t.Fatal("node-a took the lock node-b holds")
	}
}

// Pruning old events is a cluster-wide job: only the leader's
// housekeeping deletes them, and the other node's prunes nothing.
// Marking silent nodes dead likewise.
func TestClusterJobsOnLeaderOnly(t *testing.T) {
	url := pgtest.NewDatabase(t)
	clk := fakeclock.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	a := newClusterNode(t, url, "node-a", "wg-a", "10.1.0.0/24", clk)
	b := newClusterNode(t, url, "node-b", "wg-b", "10.2.0.0/24", clk)
	ctx := context.Background()
	// Three closed configs: a C and a D each, done.
	for i := range 3 {
		c, err := a.eng.Create(ctx, CreateRequest{UserID: fmt.Sprintf("u%d", i), ProfileID: "p-node-a"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.eng.Delete(ctx, c.Peer.PublicKey); err != nil {
			t.Fatal(err)
		}
	}
	done := func() int {
		t.Helper()
		evs, err := a.st.ListEvents(ctx, store.EventFilter{Status: store.StatusDone})
		if err != nil {
			t.Fatal(err)
		}
		return len(evs)
	}
	if n := done(); n != 6 {
		t.Fatalf("%d done events, want 6", n)
	}
	if !b.eng.Lead(ctx) || a.eng.Lead(ctx) {
		t.Fatal("node-b should lead, node-a not")
	}
	clk.Advance(91 * 24 * time.Hour)
	// Both nodes heartbeat now; node-c, registered long ago, is silent.
	if err := a.st.RegisterNode(ctx, store.NodeDecl{Name: "node-c"}); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Minute)
	for _, n := range []*clusterNode{a, b} {
		if err := n.st.Heartbeat(ctx, n.name); err != nil {
			t.Fatal(err)
		}
	}

	s, err := a.eng.Housekeeping(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if s.Pruned != 0 || !s.PruneSkipped || done() != 6 {
		t.Fatalf("non-leader housekeeping: pruned %d, skipped %v, %d done events left; want nothing pruned", s.Pruned, s.PruneSkipped, done())
	}
	if l := a.log.String(); !strings.Contains(l, "level=DEBUG msg=\"housekeeping: not pruning old events; the cluster leader does\"") {
		t.Errorf("node-a's log lacks the skipped prune at debug level:\n%s", l)
	}
	if dead, err := a.eng.MarkDeadNodes(ctx, 30*time.Second); err != nil || len(dead) != 0 {
		t.Fatalf("non-leader MarkDeadNodes = %v, %v; want nothing", dead, err)
	}
	s, err = b.eng.Housekeeping(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if s.Pruned != 6 || s.PruneSkipped || done() != 0 {
		t.Fatalf("leader housekeeping: pruned %d, skipped %v, %d done events left; want all 6 pruned", s.Pruned, s.PruneSkipped, done())
	}
	dead, err := b.eng.MarkDeadNodes(ctx, 30*time.Second)
	if err != nil || !slices.Equal(dead, []string{"node-c"}) {
		t.Fatalf("leader MarkDeadNodes = %v, %v; want node-c", dead, err)
	}
	ns, err := a.st.ListNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range ns {
		if (n.Name == "node-c") != !n.DeadSince.IsZero() {
			t.Errorf("node %s: DeadSince %v", n.Name, n.DeadSince)
		}
	}
	if l := b.log.String(); !strings.Contains(l, "node marked dead") || !strings.Contains(l, "node=node-c") {
		t.Errorf("node-b's log lacks the dead node:\n%s", l)
	}
}
