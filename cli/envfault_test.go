package cli

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/wgkeeper/wgkeeper/internal/tmpfs"
	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/store/sqlite"
)

// dirTree lists every path under dir.
func dirTree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
		out = append(out, p)
		return nil
	})
	sort.Strings(out)
	return out
}

// A mistyped database path must never wipe a device. Every command but
// migrate and daemon refuses a missing database with exit 1 and the same
// message, creates neither the file nor its directory, and leaves the
// device's peers alone (and runs no script).
func TestMissingDatabaseTouchesNothing(t *testing.T) {
	c := newCLIEnv(t, "remove")
	for _, u := range []string{"alice", "bob", "carol"} {
		c.ok("peer", "add", "-user", u, "-profile", "staff")
	}
	ctx := context.Background()
	before, err := c.dev.Read(ctx, c.srv.Name)
	if err != nil {
		t.Fatal(err)
	}
	if len(before.Peers) != 3 {
		t.Fatalf("device has %d peers, want 3", len(before.Peers))
	}
	key := before.Peers[0].PublicKey.String()
	cfgText, err := os.ReadFile(c.cfg)
	if err != nil {
		t.Fatal(err)
	}
	hookLog, _ := os.ReadFile(filepath.Join(c.dir, "events.log"))

	for _, typo := range []string{"wgkeeper.sqlite", "var/lib/wgkeeper/wgkeeper.db"} {
		bad := strings.Replace(string(cfgText), `database = "wgkeeper.db"`, `database = "`+typo+`"`, 1)
		if err := os.WriteFile(c.cfg, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		tree := dirTree(t, c.dir)
		want := "no database at " + filepath.Join(c.dir, typo) + " (create it with: wgkeeper migrate)"
		for _, args := range [][]string{
			{"reconcile"},
			{"reconcile", "-dry-run"},
			{"housekeeping"},
			{"status"},
			{"status", "-json"},
			{"events"},
			{"events", "retry", "-failed"},
			{"events", "retry", "1"},
			{"log", "-user", "alice"},
			{"log", "-ip", "10.99.0.2"},
			{"peer", "list"},
			{"peer", "add", "-user", "dave", "-profile", "staff"},
			{"peer", "remove", key},
			{"peer", "revoke", "-user", "alice"},
		} {
			code, _, errOut := c.run(args...)
			if code != ExitFailure || !strings.Contains(errOut, want) {
				t.Errorf("database %q, wgkeeper %v: exit %d, stderr %q; want exit 1 and %q", typo, args, code, errOut, want)
			}
			if got := dirTree(t, c.dir); strings.Join(got, "\n") != strings.Join(tree, "\n") {
				t.Fatalf("database %q, wgkeeper %v created files:\nbefore %v\nafter  %v", typo, args, tree, got)
			}
		}
	}
	after, err := c.dev.Read(ctx, c.srv.Name)
	if err != nil {
		t.Fatal(err)
	}
	if len(after.Peers) != len(before.Peers) {
		t.Fatalf("device went from %d to %d peers", len(before.Peers), len(after.Peers))
	}
	for i := range before.Peers {
		if after.Peers[i].PublicKey != before.Peers[i].PublicKey {
			t.Fatalf("device peers changed: %v -> %v", before.Peers, after.Peers)
		}
	}
	if got, _ := os.ReadFile(filepath.Join(c.dir, "events.log")); string(got) != string(hookLog) {
		t.Fatalf("a script ran:\n%s", strings.TrimPrefix(string(got), string(hookLog)))
	}

	// migrate creates it (and then the commands work on the empty store).
	c.ok("migrate")
	if _, err := os.Stat(filepath.Join(c.dir, "var/lib/wgkeeper/wgkeeper.db")); err != nil {
		t.Fatalf("migrate did not create the database: %v", err)
	}
}

// What the CLI says when the environment broke the database: a read-only
// directory is named with what is wrong with it (not "no such file"), and
// a write to a read-only database names the cause and what to do.
func TestCLIDatabaseUnavailableMessages(t *testing.T) {
	c := newCLIEnv(t, "remove")
	cfgText, err := os.ReadFile(c.cfg)
	if err != nil {
		t.Fatal(err)
	}
	setDB := func(path string) {
		bad := strings.Replace(string(cfgText), `database = "wgkeeper.db"`, `database = "`+path+`"`, 1)
		if err := os.WriteFile(c.cfg, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ro := tmpfs.Mount(t, 1<<20)
	// A copy of a database, -wal and -shm included, on a file system
	// then remounted read-only.
	c.ok("peer", "add", "-user", "alice", "-profile", "staff")
	st, err := sqlite.Open(context.Background(), filepath.Join(c.dir, "wgkeeper.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.ListPeers(context.Background(), store.PeerFilter{}); err != nil {
		t.Fatal(err)
	}
	for _, suffix := range []string{"", "-wal", "-shm"} {
		data, err := os.ReadFile(filepath.Join(c.dir, "wgkeeper.db"+suffix))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(ro, "copy.db"+suffix), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tmpfs.ReadOnly(t, ro)

	setDB(filepath.Join(ro, "new", "wgkeeper.db"))
	code, _, errOut := c.run("migrate")
	if code != 1 || !strings.Contains(errOut, "directory "+ro+" is on a read-only file system") || strings.Contains(errOut, "no such file") {
		t.Errorf("migrate in a read-only directory: exit %d %q; want the directory and \"read-only file system\"", code, errOut)
	}
	setDB(filepath.Join(ro, "copy.db"))
	c.ok("peer", "list") // reads work
	code, _, errOut = c.run("events", "retry", "-failed")
	if code != 1 || !strings.Contains(errOut, "database unavailable: read-only database") || !strings.Contains(errOut, "make the database file and its directory writable") {
		t.Errorf("events retry on a read-only database: exit %d %q; want the cause and what to do", code, errOut)
	}
	t.Logf("%s", errOut)
}
