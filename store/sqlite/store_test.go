package sqlite

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mattn/go-sqlite3"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/migrations"
	"github.com/wgkeeper/wgkeeper/store"
)

func TestOpenCreatesPrivateFiles(t *testing.T) {
	path := dbPath(t)
	s := openAt(t, path, nil)
	mustCreate(t, s, staffPeer(1, "alice")) // make sure -wal and -shm exist

	fi, err := os.Stat(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o700 {
		t.Errorf("created directory mode = %04o, want 0700", got)
	}
	for _, name := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(name)
		if err != nil {
			t.Fatalf("stat %s: %v", filepath.Base(name), err)
		}
		if got := fi.Mode().Perm(); got != 0o600 {
			t.Errorf("%s mode = %04o, want 0600", filepath.Base(name), got)
		}
	}
	var mode string
	if err := s.db.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode = %q, %v; want wal", mode, err)
	}
	if s.Path() != path {
		t.Errorf("Path() = %q, want %q", s.Path(), path)
	}
}

// TestPragmasOnEveryConnection checks that pooled connections other than the
// first carry the DSN settings.
func TestPragmasOnEveryConnection(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	var conns []interface{ Close() error }
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range 4 {
		c, err := s.db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		var fk, busy, sync, cache int
		if err := c.QueryRowContext(ctx, "PRAGMA cache_size").Scan(&cache); err != nil || cache != -32768 {
			t.Errorf("connection %d: cache_size = %d, %v; want -32768", i, cache, err)
		}
		if err := c.QueryRowContext(ctx, "PRAGMA foreign_keys").Scan(&fk); err != nil {
			t.Fatal(err)
		}
		if err := c.QueryRowContext(ctx, "PRAGMA busy_timeout").Scan(&busy); err != nil {
			t.Fatal(err)
		}
		if err := c.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&sync); err != nil {
			t.Fatal(err)
		}
		if fk != 1 || busy != 5000 || sync != 1 {
			t.Errorf("connection %d: foreign_keys=%d busy_timeout=%d synchronous=%d, want 1, 5000, 1 (NORMAL)", i, fk, busy, sync)
		}
	}
}

func TestOpenWarnsAboutLooseMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "loose.db")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	s, err := Open(context.Background(), path, Options{Create: true, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !strings.Contains(logs.String(), "readable by group or others") || !strings.Contains(logs.String(), "mode=0644") {
		t.Errorf("no warning about mode 0644 in log:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "applied database migration") {
		t.Errorf("migration not logged:\n%s", logs.String())
	}
}

func TestOpenRejectsBadPaths(t *testing.T) {
	ctx := context.Background()
	if _, err := Open(ctx, "", Options{}); err == nil || !strings.Contains(err.Error(), "no path") {
		t.Errorf("empty path: err = %v", err)
	}
	dir := t.TempDir()
	if _, err := Open(ctx, dir, Options{}); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory: err = %v", err)
	}
	junk := filepath.Join(dir, "junk.db")
	if err := os.WriteFile(junk, bytes.Repeat([]byte("not a database "), 300), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(ctx, junk, Options{Create: true})
	if err == nil || !strings.Contains(err.Error(), junk) {
		t.Errorf("junk file: err = %v, want an error naming the file", err)
	}
}

func TestMigrationsFreshAndIdempotent(t *testing.T) {
	ctx := context.Background()
	path := dbPath(t)
	latest, err := migrations.Latest()
	if err != nil {
		t.Fatal(err)
	}
	s := openAt(t, path, newClock())
	v, err := s.SchemaVersion(ctx)
	if err != nil || v != latest {
		t.Fatalf("SchemaVersion = %d, %v; want %d", v, err, latest)
	}
	type rec struct {
		version   int
		name      string
		appliedAt int64
	}
	read := func(s *Store) []rec {
		rows, err := s.db.Query(`SELECT version, name, applied_at FROM schema_migrations ORDER BY version`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []rec
		for rows.Next() {
			var r rec
			if err := rows.Scan(&r.version, &r.name, &r.appliedAt); err != nil {
				t.Fatal(err)
			}
			out = append(out, r)
		}
		return out
	}
	first := read(s)
	if len(first) != latest || first[0].name != "init" || first[0].appliedAt != newClock().Now().UnixNano() {
		t.Fatalf("schema_migrations = %+v", first)
	}
	mustCreate(t, s, staffPeer(1, "alice"))
	s.Close()

	c2 := newClock()
	c2.Advance(1000)
	s2 := openAt(t, path, c2)
	if again := read(s2); len(again) != len(first) || again[0] != first[0] {
		t.Fatalf("reopen changed schema_migrations: %+v, was %+v", again, first)
	}
	if _, err := s2.GetPeer(ctx, testKey(1)); err != nil {
		t.Fatalf("data lost on reopen: %v", err)
	}
}

func TestMigrationsConcurrentOpen(t *testing.T) {
	path := dbPath(t)
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for range 6 {
		wg.Go(func() {
			s, err := Open(context.Background(), path, Options{Create: true})
			if err != nil {
				errs <- err
				return
			}
			errs <- s.Close()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	s := openAt(t, path, nil)
	latest, err := migrations.Latest()
	if err != nil {
		t.Fatal(err)
	}
	if n := countRows(t, s, "schema_migrations"); n != latest {
		t.Errorf("schema_migrations has %d rows after concurrent opens, want %d", n, latest)
	}
}

func TestMigrationsRefuseNewerSchema(t *testing.T) {
	ctx := context.Background()
	path := dbPath(t)
	s := openAt(t, path, nil)
	mustCreate(t, s, staffPeer(1, "alice"))
	if _, err := s.db.Exec(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (7, 'future', 1)`); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	_, err = Open(ctx, path, Options{Create: true})
	if !errors.Is(err, store.ErrSchemaTooNew) {
		t.Fatalf("Open = %v, want ErrSchemaTooNew", err)
	}
	latest, lerr := migrations.Latest()
	if lerr != nil {
		t.Fatal(lerr)
	}
	var tooNew *store.SchemaTooNewError
	if !errors.As(err, &tooNew) || tooNew.Version != 7 || tooNew.Known != latest {
		t.Fatalf("error %v: want *SchemaTooNewError{7, %d}", err, latest)
	}
	want := fmt.Sprintf("database schema version 7 is newer than this wgkeeper (knows up to %d); upgrade wgkeeper", latest)
	if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), path) {
		t.Errorf("message %q, want it to name %s and say %q", err, path, want)
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Error("refused open changed the database file")
	}
	if _, err := os.Stat(path + "-wal"); err == nil {
		if fi, _ := os.Stat(path + "-wal"); fi.Size() != 0 {
			t.Errorf("refused open left a %d-byte WAL", fi.Size())
		}
	}
}

func TestConvErrHidesDriverTypes(t *testing.T) {
	s, _ := newStore(t)
	mustInsert(t, s, staffPeer(1, "alice"))
	// A second row on the same address breaks a unique index.
	_, err := s.db.Exec(`INSERT INTO peers (public_key, interface, profile_id, user_id, ip_index, ip_four, state, created_at)
		VALUES ('x', 'wg0', 'other', 'bob', 0, '10.42.0.2', 'active', 0)`)
	if err == nil {
		t.Fatal("duplicate address accepted")
	}
	conv := convErr(err)
	if !errors.Is(conv, store.ErrConflict) || !strings.Contains(conv.Error(), "UNIQUE constraint failed") {
		t.Errorf("convErr = %v, want ErrConflict with the constraint text", conv)
	}
	var se sqlite3.Error
	if errors.As(conv, &se) {
		t.Error("driver error type leaked through convErr")
	}
	_, err = s.db.Exec(`SELECT * FROM no_such_table`)
	conv = convErr(err)
	if errors.As(conv, &se) || !strings.Contains(conv.Error(), "no such table") {
		t.Errorf("convErr(other) = %#v", conv)
	}
}

// TestUpgradeMarksOldConnectsStarted: a database written before connect
// starts were recorded (schema 1) keeps every C event as started, so a
// config a crash left pending then still gets its D ("outcome unknown").
func TestUpgradeMarksOldConnectsStarted(t *testing.T) {
	ctx := context.Background()
	path := dbPath(t)
	s := openAt(t, path, newClock())
	p, c := mustInsert(t, s, staffPeer(1, "alice"))
	// Back to schema 1, as the previous release left it.
	for _, q := range append(downFrom4, `ALTER TABLE events DROP COLUMN actor`, `ALTER TABLE events DROP COLUMN started_at`, `DELETE FROM schema_migrations WHERE version > 1`) {
		if _, err := s.db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openAt(t, path, newClock())
	if v, err := s2.SchemaVersion(ctx); err != nil || v < 2 {
		t.Fatalf("SchemaVersion = %d, %v", v, err)
	}
	evs, err := s2.ListEvents(ctx, store.EventFilter{Kind: store.KindConnect})
	if err != nil || len(evs) != 1 || evs[0].ID != c.ID || !evs[0].StartedAt.Equal(evs[0].CreatedAt) {
		t.Fatalf("C event after the upgrade = %+v, %v; want it started at its creation", evs, err)
	}
	got, err := s2.DeletePeers(ctx, []wgtypes.Key{p.PublicKey}, store.ReasonStale, "", time.Time{})
	if err != nil || len(got) != 1 || got[0].Kind != store.KindDisconnect {
		t.Fatalf("stale cleanup after the upgrade = %+v, %v; want a D", got, err)
	}
}

// downFrom4 undoes migration 0004 (sessions), for tests that rebuild an
// older schema.
var downFrom4 = []string{
	`DROP TABLE sessions`,
	`ALTER TABLE peers DROP COLUMN last_handshake`, `ALTER TABLE peers DROP COLUMN last_active`,
	`ALTER TABLE peers DROP COLUMN rx_base`, `ALTER TABLE peers DROP COLUMN tx_base`,
	`ALTER TABLE peers DROP COLUMN bytes_in`, `ALTER TABLE peers DROP COLUMN bytes_out`,
	`ALTER TABLE peers DROP COLUMN endpoint`,
	`ALTER TABLE events DROP COLUMN scope`, `ALTER TABLE events DROP COLUMN rx_base`,
	`ALTER TABLE events DROP COLUMN tx_base`, `ALTER TABLE events DROP COLUMN session_id`,
}
