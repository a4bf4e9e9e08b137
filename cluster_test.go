package main

import (
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wgkeeper/wgkeeper/internal/pgtest"
	"github.com/wgkeeper/wgkeeper/wg/wgtest"
)

// leaderGauge is the node's wgkeeper_cluster_leader sample ("0" or "1").
func (n *node) leaderGauge() string {
	n.t.Helper()
	code, body := n.call("GET", "/metrics", "")
	if code != http.StatusOK {
		n.t.Fatalf("GET /metrics on %s: %d", n.name, code)
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, "wgkeeper_cluster_leader "); ok {
			return v
		}
	}
	n.t.Fatalf("GET /metrics on %s: no wgkeeper_cluster_leader", n.name)
	return ""
}

// Two daemons on one database: the first one started leads (log and
// metric), the other does not; killed (SIGKILL), it loses the lock with
// its connection and the other daemon takes over at its next cluster job
// (every heartbeat, 10 s).
func TestClusterLeaderFailover(t *testing.T) {
	wgtest.RequireRoot(t)
	db := pgtest.NewDatabase(t)
	a := newNode(t, db, "node-a", "staff-a", "10.63.0.0/24")
	b := newNode(t, db, "node-b", "staff-b", "10.64.0.0/24")
	runSelf(t, "-config", a.cfgPath, "migrate")
	a.start()
	b.start()
	const leads = "this node is now the cluster leader"
	if !strings.Contains(a.proc.log(), leads) {
		t.Fatalf("node-a, started first, does not lead:\n%s", a.proc.log())
	}
	if strings.Contains(b.proc.log(), leads) {
		t.Fatalf("node-b leads beside node-a:\n%s", b.proc.log())
	}
	if ga, gb := a.leaderGauge(), b.leaderGauge(); ga != "1" || gb != "0" {
		t.Fatalf("wgkeeper_cluster_leader: node-a %s, node-b %s; want 1 and 0", ga, gb)
	}

	a.proc.cmd.Process.Signal(syscall.SIGKILL)
	<-a.proc.exited
	start := time.Now()
	b.proc.waitLog(t, leads, 25*time.Second)
	t.Logf("node-b leads %v after node-a was killed", time.Since(start).Round(time.Millisecond))
	if g := b.leaderGauge(); g != "1" {
		t.Fatalf("node-b leads, but its wgkeeper_cluster_leader is %s", g)
	}
}
