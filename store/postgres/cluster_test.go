package postgres

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wgkeeper/wgkeeper/internal/fakeclock"
	"github.com/wgkeeper/wgkeeper/internal/pgtest"
)

// lockHolders returns the server processes holding the cluster-job lock,
// as another client sees them in pg_locks, with their application_name.
// Advisory locks belong to a database: other tests' databases on the same
// server hold their own.
func lockHolders(t *testing.T, url string) map[int32]string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT l.pid, a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid)
		WHERE l.locktype = 'advisory' AND l.granted
		AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) AND l.classid = $1::bigint::oid AND l.objid = $2::bigint::oid AND l.objsubid = 1`,
		int64(uint64(clusterLock)>>32), int64(uint64(clusterLock)&0xffffffff))
	if err != nil {
		t.Fatal(err)
	}
	out := map[int32]string{}
	for rows.Next() {
		var pid int32
		var app string
		if err := rows.Scan(&pid, &app); err != nil {
			t.Fatal(err)
		}
		out[pid] = app
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func lead(t *testing.T, s *Store) bool {
	t.Helper()
	ok, err := s.LeadCluster(context.Background())
	if err != nil {
		t.Fatalf("LeadCluster of %s: %v", s.node, err)
	}
	return ok
}

// waitLead polls LeadCluster until s leads, for at most 10 s (a closed
// connection's session ends on the server a moment after the client has
// gone), and returns how long it took.
func waitLead(t *testing.T, s *Store, why string) time.Duration {
	t.Helper()
	start := time.Now()
	for !lead(t, s) {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("%s did not take the lock within 10s %s", s.node, why)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// One handle at a time holds the cluster-job lock, on a connection of its
// own that pg_locks shows, taken once however often it is confirmed; when
// its handle closes, another takes it.
func TestClusterLockOneLeader(t *testing.T) {
	url := pgtest.NewDatabase(t)
	a := open(t, url, Options{Create: true, Node: "node-a"})
	b := open(t, url, Options{Node: "node-b"})
	if !lead(t, a) {
		t.Fatal("node-a: the free lock was not taken")
	}
	for i := 0; i < 3; i++ {
		if lead(t, b) {
			t.Fatal("node-b leads while node-a holds the lock")
		}
		if !lead(t, a) {
			t.Fatal("node-a lost the lock it holds")
		}
	}
	h := lockHolders(t, url)
	if len(h) != 1 {
		t.Fatalf("lock holders = %v, want one", h)
	}
	for _, app := range h {
		if app != "wgkeeper cluster lock node-a" {
			t.Fatalf("lock held by %q, want node-a's lock connection", app)
		}
	}
	// Confirming does not take it again: one unlock releases it.
	var locks int
	if err := a.cluster.conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_locks
		WHERE locktype = 'advisory' AND pid = pg_backend_pid()`).Scan(&locks); err != nil || locks != 1 {
		t.Fatalf("node-a's session holds %d advisory locks (%v), want 1", locks, err)
	}
	// The pool never holds it: its connections come and go.
	var poolHeld bool
	if err := a.pool.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_locks
		WHERE locktype = 'advisory' AND pid = pg_backend_pid())`).Scan(&poolHeld); err != nil || poolHeld {
		t.Fatalf("a pool connection holds an advisory lock (%v)", err)
	}

	a.Close()
	if _, err := a.LeadCluster(context.Background()); err == nil {
		t.Fatal("LeadCluster on a closed handle: no error")
	}
	waitLead(t, b, "of node-a's Close")
}

// The leader's connection killed on the server (pg_terminate_backend):
// the lock is gone with it, the other node takes it within a bounded
// time, and the first one learns at its next call that it lost it, and
// does not lead again while the other holds it.
func TestClusterLockConnectionKilled(t *testing.T) {
	url := pgtest.NewDatabase(t)
	a := open(t, url, Options{Create: true, Node: "node-a"})
	b := open(t, url, Options{Node: "node-b"})
	if !lead(t, a) || lead(t, b) {
		t.Fatal("node-a should lead, node-b not")
	}
	h := lockHolders(t, url)
	if len(h) != 1 {
		t.Fatalf("lock holders = %v, want one", h)
	}
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	for pid := range h {
		var ok bool
		if err := admin.QueryRow(ctx, `SELECT pg_terminate_backend($1, 5000)`, pid).Scan(&ok); err != nil || !ok {
			t.Fatalf("terminate node-a's lock connection %d: %v, %v", pid, ok, err)
		}
	}
	took := waitLead(t, b, "of node-a's connection dying")
	t.Logf("node-b leads %v after node-a's connection was terminated", took.Round(time.Millisecond))
	ok, err := a.LeadCluster(ctx)
	if ok || err == nil {
		t.Fatalf("node-a after its connection died: LeadCluster = %v, %v; want false and the loss", ok, err)
	}
	t.Logf("node-a: %v", err)
	for i := 0; i < 3; i++ {
		if lead(t, a) {
			t.Fatal("node-a leads again on a new connection while node-b holds the lock")
		}
		if !lead(t, b) {
			t.Fatal("node-b lost the lock")
		}
	}
	// node-b's handle closes: node-a, on its new connection, takes over.
	b.Close()
	waitLead(t, a, "of node-b's Close")
}

// MarkDead marks the nodes whose heartbeat is older than the threshold,
// once (the first time stays), and a heartbeat or a new registration
// clears the mark.
func TestMarkDead(t *testing.T) {
	ctx := context.Background()
	clk := fakeclock.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	s := open(t, pgtest.NewDatabase(t), Options{Create: true, Now: clk.Now})
	for _, d := range []struct{ node, iface, v4 string }{{"node-a", "wg-a", "10.1.0.0/24"}, {"node-b", "wg-b", "10.2.0.0/24"}} {
		if err := s.RegisterNode(ctx, decl(d.node, d.iface, "p-"+d.node, d.v4, "")); err != nil {
			t.Fatal(err)
		}
	}
	clk.Advance(20 * time.Second)
	if err := s.Heartbeat(ctx, "node-b"); err != nil {
		t.Fatal(err)
	}
	if got, err := s.MarkDead(ctx, clk.Now().Add(-30*time.Second)); err != nil || len(got) != 0 {
		t.Fatalf("MarkDead with every heartbeat recent = %v, %v", got, err)
	}
	clk.Advance(15 * time.Second) // node-a silent for 35 s, node-b for 15 s
	marked := clk.Now()
	if got, err := s.MarkDead(ctx, clk.Now().Add(-30*time.Second)); err != nil || !slices.Equal(got, []string{"node-a"}) {
		t.Fatalf("MarkDead = %v, %v; want node-a", got, err)
	}
	deadSince := func() map[string]time.Time {
		t.Helper()
		ns, err := s.ListNodes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]time.Time{}
		for _, n := range ns {
			out[n.Name] = n.DeadSince
		}
		return out
	}
	if d := deadSince(); !d["node-a"].Equal(marked) || !d["node-b"].IsZero() {
		t.Fatalf("DeadSince = %v; want node-a at %v, node-b zero", d, marked)
	}
	clk.Advance(time.Minute) // both silent now; node-a keeps its first mark
	if got, err := s.MarkDead(ctx, clk.Now().Add(-30*time.Second)); err != nil || !slices.Equal(got, []string{"node-b"}) {
		t.Fatalf("MarkDead = %v, %v; want node-b only", got, err)
	}
	if d := deadSince(); !d["node-a"].Equal(marked) || !d["node-b"].Equal(clk.Now()) {
		t.Fatalf("DeadSince = %v; want node-a still at %v, node-b at %v", d, marked, clk.Now())
	}
	if err := s.Heartbeat(ctx, "node-a"); err != nil {
		t.Fatal(err)
	}
	if err := s.RegisterNode(ctx, decl("node-b", "wg-b", "p-node-b", "10.2.0.0/24", "")); err != nil {
		t.Fatal(err)
	}
	if d := deadSince(); !d["node-a"].IsZero() || !d["node-b"].IsZero() {
		t.Fatalf("DeadSince after a heartbeat and a registration = %v; want both cleared", d)
	}
}
