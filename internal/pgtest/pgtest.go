// Package pgtest gives tests a PostgreSQL database of their own on the
// throw-away server that .ci/run starts (.ci/postgres; the README's
// Development section shows how to start the same server by hand).
//
// The server is named by the environment: WGKEEPER_TEST_POSTGRES, a
// postgres:// URL of a superuser's connection to an existing database.
// Without it a test that needs PostgreSQL is skipped with a message that
// says how to run it, unless CI is set: CI never skips these tests. A test
// that stops or restarts the server gets a private one (NewServer).
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvURL names the environment variable holding the test server's URL.
const EnvURL = "WGKEEPER_TEST_POSTGRES"

// inCI reports whether the CI variable is set (CI=true on CI services).
func inCI() bool {
	v := os.Getenv("CI")
	return v != "" && v != "false" && v != "0"
}

// ServerURL returns the URL of the test server (WGKEEPER_TEST_POSTGRES).
// Without it the test is skipped, or fails when CI is set.
func ServerURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv(EnvURL)
	if u != "" {
		return u
	}
	const how = "start a throw-away server with `eval \"$(sudo .ci/postgres start /tmp/wgkeeper-pg)\"` (see README, Development)"
	if inCI() {
		t.Fatalf("CI is set but %s is not: the PostgreSQL tests must run in CI (.ci/run starts the server); %s", EnvURL, how)
	}
	t.Skipf("skipped: needs PostgreSQL; set %s to a server's URL, or %s", EnvURL, how)
	return ""
}

// NewDatabase creates an empty database with a unique name on the test
// server and returns its URL; the database is dropped, with any connection
// still open to it, when the test ends. It skips like ServerURL.
func NewDatabase(t testing.TB) string {
	t.Helper()
	return CreateDatabase(t, ServerURL(t))
}

// CreateDatabase is NewDatabase on the server at the URL server (the test
// server, or a private one from NewServer).
func CreateDatabase(t testing.TB, server string) string {
	t.Helper()
	name := dbName(t.Name())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := admin(ctx, server, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" TEMPLATE template0 ENCODING 'UTF8' STRATEGY FILE_COPY"); err != nil {
		t.Fatalf("create test database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := admin(ctx, server, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("drop test database %s: %v", name, err)
		}
	})
	u, err := WithDatabase(server, name)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// WithDatabase returns the server URL with its database replaced by name.
func WithDatabase(server, name string) (string, error) {
	u, err := url.Parse(server)
	if err != nil {
		return "", fmt.Errorf("parse %s: %w", EnvURL, err)
	}
	u.Path = "/" + name
	u.RawPath = ""
	return u.String(), nil
}

// dbName is a unique database name that says which test made it:
// "wgkt_" and the test's name cut to fit, then random hex.
func dbName(test string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(test) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	s := b.String()
	if len(s) > 40 {
		s = s[:40]
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	return "wgkt_" + s + "_" + hex.EncodeToString(rnd[:])
}

// admin runs one statement on the server's own database.
func admin(ctx context.Context, server, stmt string) error {
	conn, err := pgx.Connect(ctx, server)
	if err != nil {
		return fmt.Errorf("connect to the test server: %w", err)
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, stmt)
	return err
}

// Server is a private throw-away PostgreSQL server, for a test that stops
// or restarts it: restarting the shared server would break the tests that
// run beside it.
type Server struct {
	dir string // data in dir/data, the socket in dir
	bin string // directory of initdb and pg_ctl
	url string
}

// NewServer starts a private server (initdb into a new directory, unix
// socket only, no TCP) for this test and stops and removes it when the test
// ends. It runs the server as the postgres user when the test runs as root.
// It skips like ServerURL, and fails when initdb or pg_ctl is missing.
func NewServer(t testing.TB) *Server {
	t.Helper()
	ServerURL(t)
	bin, err := pgBin()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "wgkeeper-pgtest-")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{dir: dir, bin: bin}
	t.Cleanup(func() {
		if _, err := os.Stat(filepath.Join(dir, "data", "postmaster.pid")); err == nil {
			if out, err := s.pgCtl(context.Background(), "-m", "immediate", "-w", "stop"); err != nil {
				t.Errorf("stop the private test server: %v\n%s", err, out)
			}
		}
		os.RemoveAll(dir)
	})
	if os.Geteuid() == 0 {
		if err := exec.Command("chown", "postgres:", dir).Run(); err != nil {
			t.Fatalf("chown %s to postgres: %v", dir, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := s.run(ctx, filepath.Join(bin, "initdb"), "-D", filepath.Join(dir, "data"),
		"-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C.UTF-8"); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	if out, err := s.pgCtl(ctx, "-l", filepath.Join(dir, "server.log"), "-w",
		"-o", "-k "+dir+" -p 5432 -c listen_addresses='' -c fsync=off -c full_page_writes=off", "start"); err != nil {
		t.Fatalf("start the private test server: %v\n%s", err, out)
	}
	s.url = "postgres://postgres@/postgres?host=" + url.QueryEscape(dir) + "&port=5432"
	return s
}

// URL is the server's URL (its database "postgres").
func (s *Server) URL() string { return s.url }

// Restart restarts the server with a fast shutdown (pg_ctl restart -m
// fast), the way an operator's restart looks to clients: every connection
// is closed, and new ones are refused until the server is back.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := s.pgCtl(ctx, "-m", "fast", "-w", "restart"); err != nil {
		t.Fatalf("restart the private test server: %v\n%s", err, out)
	}
}

// Stop stops the server with a fast shutdown; Start brings it back.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := s.pgCtl(ctx, "-m", "fast", "-w", "stop"); err != nil {
		t.Fatalf("stop the private test server: %v\n%s", err, out)
	}
}

// Start starts a server that Stop stopped, with the same options.
func (s *Server) Start(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := s.pgCtl(ctx, "-l", filepath.Join(s.dir, "server.log"), "-w",
		"-o", "-k "+s.dir+" -p 5432 -c listen_addresses='' -c fsync=off -c full_page_writes=off", "start"); err != nil {
		t.Fatalf("start the private test server: %v\n%s", err, out)
	}
}

func (s *Server) pgCtl(ctx context.Context, args ...string) ([]byte, error) {
	return s.run(ctx, filepath.Join(s.bin, "pg_ctl"), append([]string{"-D", filepath.Join(s.dir, "data")}, args...)...)
}

// run runs a server program, as the postgres user when this is root
// (initdb and postgres refuse to run as root).
func (s *Server) run(ctx context.Context, prog string, args ...string) ([]byte, error) {
	var cmd *exec.Cmd
	if os.Geteuid() == 0 {
		cmd = exec.CommandContext(ctx, "runuser", append([]string{"-u", "postgres", "--", prog}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, prog, args...)
	}
	cmd.Dir = "/"
	// Output goes to a file, not a pipe: the server that pg_ctl starts
	// keeps the descriptors it inherited, and a pipe would not end.
	out, err := os.CreateTemp("", "wgkeeper-pgtest-out-")
	if err != nil {
		return nil, err
	}
	defer os.Remove(out.Name())
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	runErr := cmd.Run()
	data, _ := os.ReadFile(out.Name())
	return data, runErr
}

// pgBin finds the directory holding initdb and pg_ctl: PATH first, then
// Debian's /usr/lib/postgresql/*/bin (the newest version).
func pgBin() (string, error) {
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		if _, err := exec.LookPath("initdb"); err == nil {
			return filepath.Dir(p), nil
		}
	}
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl")
	if len(found) == 0 {
		return "", errors.New("pg_ctl and initdb not found in PATH nor under /usr/lib/postgresql/*/bin; install Debian's postgresql package")
	}
	return filepath.Dir(found[len(found)-1]), nil
}
