package cli

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wgkeeper/wgkeeper/migrations"
)

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = Run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// The example config, copied with its relative paths into a temporary
// directory, creates a 0600 database where it says.
func TestMigrateExampleConfig(t *testing.T) {
	dir := t.TempDir()
	data, err := os.ReadFile(filepath.Join("..", "examples", "wgkeeper.toml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "wgkeeper.toml")
	if err := os.WriteFile(cfg, data, 0o644); err != nil {
		t.Fatal(err)
	}
	// From another working directory, too: paths follow the file.
	t.Chdir(t.TempDir())
	code, out, errOut := runCLI(t, "-config", cfg, "migrate")
	if code != 0 {
		t.Fatalf("migrate: exit %d: %s", code, errOut)
	}
	db := filepath.Join(dir, "wgkeeper.db")
	latest, err := migrations.Latest()
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("database %s is at schema version %d\n", db, latest); out != want {
		t.Fatalf("output %q, want %q", out, want)
	}
	st, err := os.Stat(db)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("database mode %v, want 0600", st.Mode().Perm())
	}
	// Again: idempotent.
	if code, out2, _ := runCLI(t, "-config", cfg, "migrate"); code != 0 || out2 != out {
		t.Fatalf("second migrate: exit %d, %q", code, out2)
	}
}

func TestMigrateBadConfig(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "bad.toml")
	os.WriteFile(cfg, []byte("database = \"x.db\"\n[hooks]\ntimeoutt = \"3s\"\nconcurrency = 0\n"), 0o644)
	code, _, errOut := runCLI(t, "-config", cfg, "migrate")
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	for _, want := range []string{`unknown key "hooks.timeoutt"`, "hooks.concurrency"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("message lacks %q:\n%s", want, errOut)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "x.db")); !os.IsNotExist(err) {
		t.Fatal("a bad config still created the database")
	}
	code, _, errOut = runCLI(t, "-config", filepath.Join(dir, "missing.toml"), "migrate")
	if code != 1 || !strings.Contains(errOut, "missing.toml") {
		t.Fatalf("missing config: exit %d, %q", code, errOut)
	}
}

func TestUsageExitCodes(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{nil, 2, "no command given"},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"-bogus", "version"}, 2, "flag provided but not defined: -bogus"},
		{[]string{"version", "extra"}, 2, "version takes no arguments"},
		{[]string{"migrate", "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"migrate", "-x"}, 2, "flag provided but not defined: -x"},
	} {
		code, _, errOut := runCLI(t, tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.msg) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, code, errOut, tc.code, tc.msg)
		}
	}
	if code, out, _ := runCLI(t, "version"); code != 0 || !strings.HasPrefix(out, "wgkeeper ") {
		t.Errorf("version: %d %q", code, out)
	}
	if code, out, _ := runCLI(t, "migrate", "-h"); code != 0 || !strings.Contains(out, "example:") {
		t.Errorf("migrate -h: %d %q", code, out)
	}
}
