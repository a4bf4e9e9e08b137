package cli

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/wgkeeper/wgkeeper/api"
	"github.com/wgkeeper/wgkeeper/api/apitest"
	"github.com/wgkeeper/wgkeeper/config"
	"github.com/wgkeeper/wgkeeper/internal/pgtest"
	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/store/postgres"
)

// A node whose heartbeat stopped is marked dead by the daemon's cluster
// job on the leader; status, `status -json` and GET /v1/status (checked
// against the OpenAPI file) show it dead since then, and its next
// heartbeat makes it alive again.
func TestStatusDeadNode(t *testing.T) {
	db := pgtest.NewDatabase(t)
	c := newCLIEnvDB(t, "remove", db)
	cfg, err := config.Load(c.cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// node-gone registered an hour ago and has been silent since.
	gone, err := postgres.Open(ctx, db, postgres.Options{Now: func() time.Time { return time.Now().Add(-time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	defer gone.Close()
	if err := gone.RegisterNode(ctx, store.NodeDecl{Name: "node-gone", Version: "v0"}); err != nil {
		t.Fatal(err)
	}

	// This node, as its daemon runs: registered, leading, its API up.
	e := &env{ctx: ctx, stdout: io.Discard, stderr: io.Discard, configPath: c.cfg}
	p, err := e.openParts(slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.close)
	nodes := p.store.(store.Nodes)
	if err := nodes.RegisterNode(ctx, nodeDecl(cfg, p.engine.ConnectHold(cfg))); err != nil {
		t.Fatal(err)
	}
	srv, err := api.New(api.Options{Engine: p.engine, Token: "shape-token", Version: Version})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	s := &shapeEnv{cliEnv: c, url: hs.URL, client: &http.Client{Transport: apitest.File(t, "../api/openapi.yaml").Transport(t, nil)}}

	state := func() map[string]api.NodeStatus {
		t.Helper()
		var st api.StatusResponse
		c.json(&st, "status")
		out := map[string]api.NodeStatus{}
		for _, n := range st.Nodes {
			out[n.Name] = n
		}
		return out
	}
	if st := state(); st["node-gone"].State != api.NodeSilent || st["node-gone"].DeadSince != nil || st[cfg.Node].State != api.NodeAlive || !st[cfg.Node].Self {
		t.Fatalf("before the cluster job: %+v", st)
	}

	before := time.Now()
	d := &daemon{env: e, log: slog.New(slog.DiscardHandler), p: p}
	if err := d.clusterJobs().Run(ctx); err != nil {
		t.Fatal(err)
	}
	st := state()
	g := st["node-gone"]
	if g.State != api.NodeDead || g.Alive || g.DeadSince == nil || g.DeadSince.Before(before.Add(-time.Second)) || g.DeadSince.After(time.Now()) {
		t.Fatalf("node-gone after the cluster job: %+v", g)
	}
	if st[cfg.Node].State != api.NodeAlive || st[cfg.Node].DeadSince != nil {
		t.Fatalf("this node after the cluster job: %+v", st[cfg.Node])
	}
	if out := c.ok("status"); !strings.Contains(out, "node node-gone  dead since "+g.DeadSince.UTC().Format(time.RFC3339)) ||
		!strings.Contains(out, "node "+cfg.Node+" (this node)  alive") {
		t.Errorf("status:\n%s", out)
	}
	s.same([]string{"status", "-json"}, "GET", "/v1/status", "")
	// The admin page, logged in with the token.
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	resp, err := browser.PostForm(hs.URL+"/ui/login", url.Values{"token": {"shape-token"}})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	html := string(body)
	for _, want := range []string{`<tr class="node" data-state="dead">`, `<td>node-gone</td>`, `<span class="tag bad">dead</span>`,
		`<tr class="node" data-state="alive">`, cfg.Node + ` <span class="muted">(this node)</span>`} {
		if !strings.Contains(html, want) {
			t.Errorf("admin page (%d) lacks %s:\n%s", resp.StatusCode, want, html)
		}
	}

	// Marked once: a later run keeps the first time.
	first := *g.DeadSince
	if err := d.clusterJobs().Run(ctx); err != nil {
		t.Fatal(err)
	}
	if g := state()["node-gone"]; g.DeadSince == nil || !g.DeadSince.Equal(first) {
		t.Fatalf("node-gone after a second run: %+v, want dead since %v", g, first)
	}

	// Its next heartbeat (at the real time) clears it.
	back, err := postgres.Open(ctx, db, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	if err := back.Heartbeat(ctx, "node-gone"); err != nil {
		t.Fatal(err)
	}
	if g := state()["node-gone"]; g.State != api.NodeAlive || g.DeadSince != nil {
		t.Fatalf("node-gone after its heartbeat: %+v", g)
	}
	s.same([]string{"status", "-json"}, "GET", "/v1/status", "")
}
