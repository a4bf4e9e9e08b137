package sqlite

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wgkeeper/wgkeeper/internal/tmpfs"
	"github.com/wgkeeper/wgkeeper/store"
)

// Without Create a missing database is an error and nothing is created:
// neither the file nor its directory.
func TestOpenMissingCreatesNothing(t *testing.T) {
	ctx := context.Background()
	base := t.TempDir()
	for _, path := range []string{
		filepath.Join(base, "wgkeeper.db"),           // directory exists
		filepath.Join(base, "typo", "sub", "wgk.db"), // it does not
	} {
		s, err := Open(ctx, path, Options{})
		if !errors.Is(err, store.ErrNoDatabase) {
			if s != nil {
				s.Close()
			}
			t.Fatalf("Open(%s) without Create: %v, want ErrNoDatabase", path, err)
		}
	}
	ents, err := os.ReadDir(base)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		t.Fatalf("Open without Create left %d entries behind (first: %s)", len(ents), ents[0].Name())
	}
	// With Create, it exists; then Open without Create works.
	path := filepath.Join(base, "wgkeeper.db")
	s, err := Open(ctx, path, Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(ctx, path, Options{})
	if err != nil {
		t.Fatalf("Open of an existing database without Create: %v", err)
	}
	s.Close()
}

// A database file deleted under an open Store is never re-created (a new
// pooled connection would otherwise make a fresh empty database at the
// path), and the Store stops: writes and the lifecycle's reads fail with
// the fault, which says what happened.
func TestDeletedUnderStore(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	mustCreate(t, s, staffPeer(1, "alice"))
	if err := s.Check(ctx); err != nil {
		t.Fatalf("Check on an intact file: %v", err)
	}
	for _, suffix := range []string{"", "-wal", "-shm"} {
		os.Remove(s.Path() + suffix)
	}
	_, _, err := s.InsertPending(ctx, staffPeer(2, "bob"))
	var ue *store.UnavailableError
	if !errors.Is(err, store.ErrUnavailable) || !errors.As(err, &ue) || ue.Cause != store.CauseReplaced || !ue.Fatal {
		t.Fatalf("insert into a deleted database: %v, want ErrUnavailable %q", err, store.CauseReplaced)
	}
	if !strings.Contains(err.Error(), "the database file was deleted or replaced") {
		t.Errorf("message %q does not say what happened", err)
	}
	if _, err := s.Version(ctx); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Version after the delete: %v, want ErrUnavailable", err)
	}
	if _, err := s.ListPeers(ctx, store.PeerFilter{}); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("ListPeers after the delete: %v, want ErrUnavailable", err)
	}
	// Many fresh connections: none may create the file.
	for range 20 {
		s.ListEvents(ctx, store.EventFilter{})
	}
	conn, err := s.db.Conn(ctx)
	if err == nil {
		conn.PingContext(ctx)
		conn.Close()
	}
	if _, err := os.Stat(s.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the deleted database file was re-created: %v", err)
	}
}

// A file renamed over the database (same path, another inode) is noticed
// by Check and before every write; nothing is written into either file.
func TestReplacedUnderStore(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	mustCreate(t, s, staffPeer(1, "alice"))
	other := openAt(t, filepath.Join(t.TempDir(), "other.db"), nil)
	mustCreate(t, other, staffPeer(7, "mallory"))
	other.Close()
	if err := os.Rename(other.Path(), s.Path()); err != nil {
		t.Fatal(err)
	}
	err := s.Check(ctx)
	var ue *store.UnavailableError
	if !errors.As(err, &ue) || ue.Cause != store.CauseReplaced {
		t.Fatalf("Check after a rename over the file: %v, want %q", err, store.CauseReplaced)
	}
	if _, _, err := s.InsertPending(ctx, staffPeer(2, "bob")); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("insert after the replacement: %v, want ErrUnavailable", err)
	}
	if err := s.Fault(); err == nil {
		t.Fatal("no fault recorded")
	}
	s.Close()
	// The file now at the path is the other database, untouched.
	s2, err := Open(ctx, s.Path(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	ps, err := s2.ListPeers(ctx, store.PeerFilter{})
	if err != nil || len(ps) != 1 || ps[0].UserID != "mallory" {
		t.Fatalf("the replacing file changed: %v %v", ps, err)
	}
}

// damage overwrites the first page of table's b-tree in the database file
// with garbage, behind SQLite's back, after a checkpoint has moved every
// page into the main file.
func damage(t *testing.T, s *Store, table string) {
	t.Helper()
	var root, pageSize int64
	if err := s.db.QueryRow(`SELECT rootpage FROM sqlite_master WHERE name = ?`, table).Scan(&root); err != nil {
		t.Fatal(err)
	}
	if err := s.db.QueryRow(`PRAGMA page_size`).Scan(&pageSize); err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(s.Path(), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	garbage := []byte(strings.Repeat("\xde\xad\xbe\xef garbage ", int(pageSize)/14+1))[:pageSize]
	if _, err := f.WriteAt(garbage, (root-1)*pageSize); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// A damaged file (a page overwritten) is refused by Open with QuickCheck,
// with quick_check's report; the file is left as it was.
func TestQuickCheckRefusesDamagedFile(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	for i := range 50 {
		mustCreate(t, s, staffPeer(i+1, "alice"))
	}
	path := s.Path()
	damage(t, s, "peers")
	s.Close()
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(ctx, path, Options{QuickCheck: true})
	var de *DamagedError
	if !errors.As(err, &de) || !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Open with QuickCheck of a damaged file: %v, want a *DamagedError", err)
	}
	if len(de.Report) == 0 || de.Report[0] == "ok" || len(de.Report) > quickCheckLines+1 {
		t.Fatalf("report %q: want the first lines of quick_check's complaints", de.Report)
	}
	t.Logf("refused: %v", err)
	after, _ := os.ReadFile(path)
	if string(before) != string(after) {
		t.Fatal("Open changed the damaged file")
	}
	// An intact file passes.
	s2, _ := newStore(t)
	p2 := s2.Path()
	s2.Close()
	s3, err := Open(ctx, p2, Options{QuickCheck: true})
	if err != nil {
		t.Fatalf("quick_check of an intact file: %v", err)
	}
	s3.Close()
}

// SQLITE_CORRUPT at run time faults the Store: that write and every later
// one fail with ErrUnavailable ("damaged"), even writes that would not
// touch the damaged page.
func TestCorruptAtRunTime(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	for i := range 50 {
		mustCreate(t, s, staffPeer(i+1, "alice"))
	}
	damage(t, s, "peers")
	// Another connection commits: every connection's page cache is
	// dropped, so the damaged page is read from the file.
	other, err := Open(ctx, s.Path(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.db.Exec(`PRAGMA user_version = 7`); err != nil {
		t.Fatal(err)
	}
	other.Close()

	_, err = s.ListPeers(ctx, store.PeerFilter{})
	var ue *store.UnavailableError
	if !errors.As(err, &ue) || ue.Cause != store.CauseDamaged {
		t.Fatalf("reading the damaged table: %v, want %q", err, store.CauseDamaged)
	}
	if err := s.Fault(); err == nil {
		t.Fatal("SQLITE_CORRUPT did not fault the store")
	}
	if _, err := s.RetryFailed(ctx); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("a write after corruption: %v, want ErrUnavailable", err)
	}
	if _, err := s.Version(ctx); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Version after corruption: %v, want ErrUnavailable", err)
	}
}

// A full file system: the write fails with ErrUnavailable "disk full",
// not a bare driver error; freeing space makes writes work again (a full
// disk is not fatal).
func TestDiskFull(t *testing.T) {
	ctx := context.Background()
	dir := tmpfs.Mount(t, 2<<20)
	s := openAt(t, filepath.Join(dir, "wgkeeper.db"), nil)
	mustCreate(t, s, staffPeer(1, "alice"))
	if _, err := s.db.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		t.Fatal(err)
	}
	fill := tmpfs.Fill(t, dir)
	var err error
	for i := 2; i < 200 && err == nil; i++ {
		_, _, err = s.InsertPending(ctx, staffPeer(i, "bob"))
	}
	var ue *store.UnavailableError
	if !errors.As(err, &ue) || ue.Cause != store.CauseDiskFull {
		t.Fatalf("insert on a full disk: %v, want ErrUnavailable %q", err, store.CauseDiskFull)
	}
	t.Logf("full: %v", err)
	if s.Fault() != nil {
		t.Fatal("a full disk faulted the store for good")
	}
	os.Remove(fill)
	if _, _, err := s.InsertPending(ctx, staffPeer(500, "carol")); err != nil {
		t.Fatalf("insert after freeing space: %v", err)
	}
}

// A database on a file system remounted read-only after a crash (its -wal
// and -shm still there, so SQLite can open it read-only): reads work,
// writes fail with ErrUnavailable "read-only database". Without the -wal
// and -shm SQLite cannot open it at all, and Open names the directory.
func TestReadOnlyFileSystem(t *testing.T) {
	ctx := context.Background()
	dir := tmpfs.Mount(t, 4<<20)
	path := filepath.Join(dir, "wgkeeper.db")
	live := openAt(t, filepath.Join(t.TempDir(), "wgkeeper.db"), nil)
	mustCreate(t, live, staffPeer(1, "alice"))
	for _, suffix := range []string{"", "-wal", "-shm"} {
		data, err := os.ReadFile(live.Path() + suffix)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path+suffix, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tmpfs.ReadOnly(t, dir)
	s, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatalf("open on a read-only file system: %v", err)
	}
	defer s.Close()
	if ps, err := s.ListPeers(ctx, store.PeerFilter{}); err != nil || len(ps) != 1 {
		t.Fatalf("read on a read-only file system: %v %v", ps, err)
	}
	_, _, err = s.InsertPending(ctx, staffPeer(2, "bob"))
	var ue *store.UnavailableError
	if !errors.As(err, &ue) || ue.Cause != store.CauseReadOnly {
		t.Fatalf("insert on a read-only file system: %v, want ErrUnavailable %q", err, store.CauseReadOnly)
	}
	t.Logf("read-only: %v", err)
}

// Creating a database in a read-only directory names the directory and
// what is wrong with it, not "no such file".
func TestCreateInReadOnlyDirectory(t *testing.T) {
	dir := tmpfs.Mount(t, 1<<20)
	tmpfs.ReadOnly(t, dir)
	for _, path := range []string{filepath.Join(dir, "wgkeeper.db"), filepath.Join(dir, "state", "wgkeeper.db")} {
		_, err := Open(context.Background(), path, Options{Create: true})
		if err == nil {
			t.Fatalf("created a database on a read-only file system at %s", path)
		}
		msg := err.Error()
		if !strings.Contains(msg, "directory "+dir+" ") || !strings.Contains(msg, "read-only file system") || strings.Contains(msg, "no such file") {
			t.Errorf("message %q: want the directory %s and \"read-only file system\"", msg, dir)
		}
	}
}
