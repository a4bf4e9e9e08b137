package api

import (
	"bytes"
	"database/sql"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wgkeeper/wgkeeper/hooks"
	"github.com/wgkeeper/wgkeeper/internal/tmpfs"
	"github.com/wgkeeper/wgkeeper/reconcile"
	"github.com/wgkeeper/wgkeeper/store/sqlite"
)

// useStore points the harness at another database file: a new store,
// engine, API server and HTTP server on it.
func (h *harness) useStore(path string, create bool) {
	h.t.Helper()
	st, err := sqlite.Open(h.ctx, path, sqlite.Options{Create: create, Now: h.clock.Now})
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { st.Close() })
	runner, err := hooks.New(hooks.Config{Script: h.cfg.Hooks.Script, Timeout: h.cfg.Hooks.Timeout})
	if err != nil {
		h.t.Fatal(err)
	}
	h.st = st
	h.eng, err = reconcile.New(reconcile.Options{Config: h.cfg, Store: st, Device: h.dev, Runner: runner, Now: h.clock.Now, LockDir: h.t.TempDir()})
	if err != nil {
		h.t.Fatal(err)
	}
	h.api, err = New(Options{Engine: h.eng, Token: testToken, Version: "test", Now: h.clock.Now})
	if err != nil {
		h.t.Fatal(err)
	}
	h.http = httptest.NewServer(h.api)
	h.t.Cleanup(h.http.Close)
}

// wantUnavailable checks a 503 unavailable whose message names cause.
func wantUnavailable(t *testing.T, what string, r response, cause string) {
	t.Helper()
	if r.status != http.StatusServiceUnavailable || r.errCode() != CodeUnavailable || !strings.Contains(string(r.body), cause) {
		t.Fatalf("%s: %d %s; want 503 unavailable naming %q", what, r.status, r.body, cause)
	}
}

// A page of the peers table overwritten while the daemon runs: the create
// that meets it is answered 503 unavailable, not 500 and not 201 into a
// damaged file; so is every later write, even one SQLite could do, and
// /healthz fails.
func TestDamagedAtRunTime(t *testing.T) {
	h := newHarness(t, harnessOpts{maxPerUser: 100})
	for range 30 {
		h.create(map[string]any{"user_id": "alice", "profile_id": "staff"}, http.StatusCreated)
	}
	db, err := sql.Open("sqlite3", h.cfg.Database)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var root, size int64
	if err := db.QueryRow(`SELECT rootpage FROM sqlite_master WHERE name = 'peers'`).Scan(&root); err != nil {
		t.Fatal(err)
	}
	db.QueryRow(`PRAGMA page_size`).Scan(&size)
	if _, err := db.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(h.cfg.Database, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte("garbage!"), int(size)/8), (root-1)*size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	// A commit elsewhere makes every connection drop its cached pages.
	if _, err := db.Exec(`PRAGMA user_version = 1`); err != nil {
		t.Fatal(err)
	}

	r := h.do("POST", "/v1/peers", map[string]any{"user_id": "bob", "profile_id": "staff"})
	wantUnavailable(t, "create on a damaged file", r, "damaged")
	wantUnavailable(t, "/healthz on a damaged file", h.do("GET", "/healthz", nil), "damaged")
	wantUnavailable(t, "retry of failed events", h.do("POST", "/v1/events/1/retry", nil), "damaged")
	wantUnavailable(t, "a second create", h.do("POST", "/v1/peers", map[string]any{"user_id": "carol", "profile_id": "staff"}), "damaged")
}

// A full disk: writes answer 503 unavailable "disk full", never 500
// internal; the health check still passes (the file is intact, space may
// come back), and writes work again once space is freed.
func TestDiskFullIsUnavailable(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	dir := tmpfs.Mount(t, 4<<20)
	h.useStore(filepath.Join(dir, "wgkeeper.db"), true)
	h.create(map[string]any{"user_id": "alice", "profile_id": "staff"}, http.StatusCreated)
	db, err := sql.Open("sqlite3", filepath.Join(dir, "wgkeeper.db"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	fill := tmpfs.Fill(t, dir)
	r := h.do("POST", "/v1/peers", map[string]any{"user_id": "bob", "profile_id": "staff"})
	wantUnavailable(t, "create on a full disk", r, "disk full")
	if r := h.do("GET", "/healthz", nil); r.status != http.StatusOK {
		t.Errorf("/healthz on a full disk: %d %s", r.status, r.body)
	}
	os.Remove(fill)
	h.create(map[string]any{"user_id": "bob", "profile_id": "staff"}, http.StatusCreated)
}

// A database on a file system that went read-only: writes answer 503
// unavailable "read-only database"; reads still work.
func TestReadOnlyIsUnavailable(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.create(map[string]any{"user_id": "alice", "profile_id": "staff"}, http.StatusCreated)
	// A copy of the live database, -wal and -shm included (as after a
	// crash), on a tmpfs then remounted read-only.
	dir := tmpfs.Mount(t, 4<<20)
	for _, suffix := range []string{"", "-wal", "-shm"} {
		data, err := os.ReadFile(h.cfg.Database + suffix)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "wgkeeper.db"+suffix), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tmpfs.ReadOnly(t, dir)
	h.useStore(filepath.Join(dir, "wgkeeper.db"), false)
	if r := h.do("GET", "/v1/peers", nil); r.status != http.StatusOK {
		t.Fatalf("list on a read-only database: %d %s", r.status, r.body)
	}
	r := h.do("POST", "/v1/peers", map[string]any{"user_id": "bob", "profile_id": "staff"})
	wantUnavailable(t, "create on a read-only database", r, "read-only database")
}
