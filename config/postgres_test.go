package config

import (
	"strings"
	"testing"
)

// A postgres:// or postgresql:// database is kept as written (not a path),
// with lock files in lock_dir; a SQLite path keeps them beside the file
// and refuses lock_dir.
func TestPostgresDatabase(t *testing.T) {
	for _, db := range []string{
		"postgres://wgk:s3cret@db.example.org:5432/wgkeeper?sslmode=verify-full",
		"postgresql://wgk@/wgkeeper?host=/run/postgresql",
	} {
		c, err := Parse([]byte("database = \""+db+"\"\n"+iface+profile), testDir)
		if err != nil {
			t.Fatalf("%s: %v", db, err)
		}
		if c.Database != db || !c.PostgreSQL() || c.LockDir != DefaultLockDir {
			t.Errorf("%s: Database %q, PostgreSQL %v, LockDir %q", db, c.Database, c.PostgreSQL(), c.LockDir)
		}
		if strings.Contains(c.DatabaseName(), "s3cret") {
			t.Errorf("DatabaseName shows the password: %s", c.DatabaseName())
		}
	}
	c, err := Parse([]byte("database = \"postgres://h/db\"\nlock_dir = \"run\"\n"+iface+profile), testDir)
	if err != nil {
		t.Fatal(err)
	}
	if c.LockDir != testDir+"/run" {
		t.Errorf("relative lock_dir = %q, want it resolved against the file's directory", c.LockDir)
	}
	c, err = Parse([]byte("database = \"db/wgk.db\"\n"+iface+profile), testDir)
	if err != nil {
		t.Fatal(err)
	}
	if c.PostgreSQL() || c.LockDir != testDir+"/db" || c.DatabaseName() != testDir+"/db/wgk.db" {
		t.Errorf("SQLite: PostgreSQL %v, LockDir %q, DatabaseName %q", c.PostgreSQL(), c.LockDir, c.DatabaseName())
	}
	ps := problemsOf(t, "database = \"x.db\"\nlock_dir = \"/run/x\"\n"+iface+profile)
	if len(ps) != 1 || !strings.Contains(ps[0], "lock_dir") || !strings.Contains(ps[0], "only for a PostgreSQL database") {
		t.Errorf("lock_dir with SQLite: %q", ps)
	}
	ps = problemsOf(t, "database = \"postgres://u:s3cret@h:99999999999/db%zz\"\n"+iface+profile)
	if len(ps) != 1 || !strings.Contains(ps[0], "not a valid URL") || strings.Contains(ps[0], "s3cret") {
		t.Errorf("bad URL: %q", ps)
	}
}

// node defaults to the host name; a bad one is refused, naming the rule.
func TestNodeKey(t *testing.T) {
	c, err := Parse([]byte(iface+profile), testDir)
	if err != nil {
		t.Fatal(err)
	}
	if c.Node != defaultNode() {
		t.Errorf("default node %q, want the host name %q", c.Node, defaultNode())
	}
	c, err = Parse([]byte("node = \"vpn-a.example\"\n"+iface+profile), testDir)
	if err != nil || c.Node != "vpn-a.example" {
		t.Fatalf("node = %q, %v", c.Node, err)
	}
	for _, bad := range []string{"", "a b", strings.Repeat("x", 49), "nöde", "a/b"} {
		ps := problemsOf(t, "node = \""+bad+"\"\n"+iface+profile)
		if len(ps) != 1 || !strings.HasPrefix(ps[0], "node = ") {
			t.Errorf("node %q: %q", bad, ps)
		}
	}
}
