package cli

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wgkeeper/wgkeeper/internal/pgtest"
	"github.com/wgkeeper/wgkeeper/store/postgres"
)

// A postgres:// database: commands other than migrate refuse a database
// without the schema, migrate applies it (again: nothing to do), and no
// message shows the URL's password.
func TestMigratePostgres(t *testing.T) {
	db := pgtest.NewDatabase(t)
	u, err := url.Parse(db)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword("postgres", "s3cret-pw") // trust authentication ignores it
	db = u.String()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "wgkeeper.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("database = %q\nlock_dir = %q\n[api]\nlisten = \"\"\n", db, dir)), 0o600)

	code, out, errOut := runCLI(t, "-config", cfg, "peer", "list")
	if code != 1 || !strings.Contains(errOut, "has no wgkeeper schema (create it with: wgkeeper migrate)") {
		t.Fatalf("peer list before migrate: exit %d, %q %q", code, out, errOut)
	}
	all, err := postgres.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		code, out, errOut = runCLI(t, "-config", cfg, "migrate")
		if code != 0 || !strings.HasSuffix(out, fmt.Sprintf(" is at schema version %d\n", len(all))) {
			t.Fatalf("migrate: exit %d, %q %q", code, out, errOut)
		}
		if strings.Contains(out+errOut, "s3cret-pw") {
			t.Fatalf("migrate shows the password: %q %q", out, errOut)
		}
	}
	if code, out, errOut := runCLI(t, "-config", cfg, "peer", "list", "-json"); code != 0 || !strings.Contains(out, `"peers"`) {
		t.Fatalf("peer list after migrate: exit %d, %q %q", code, out, errOut)
	}
}
