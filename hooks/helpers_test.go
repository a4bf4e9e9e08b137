package hooks

import (
	"bytes"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// writeScript writes an executable file (mode 0755, whatever the umask) and
// returns its path.
func writeScript(tb testing.TB, dir, name, body string) string {
	tb.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(body), 0o700); err != nil {
		tb.Fatal(err)
	}
	if err := os.Chmod(path, 0o755); err != nil {
		tb.Fatal(err)
	}
	return path
}

// quote returns s as a single-quoted sh word.
func quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// envDumpScript writes a script that copies the environment it was started
// with (as the kernel handed it over) to out.
func envDumpScript(tb testing.TB, dir, out string) string {
	return writeScript(tb, dir, "dump.sh", "#!/bin/sh\n/bin/cat /proc/$$/environ > "+quote(out)+"\n")
}

// readEnv parses a NUL-separated environment file.
func readEnv(tb testing.TB, path string) []string {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	b = bytes.TrimSuffix(b, []byte{0})
	if len(b) == 0 {
		return nil
	}
	return strings.Split(string(b), "\x00")
}

func newRunner(tb testing.TB, cfg Config) *Runner {
	tb.Helper()
	r, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

// groupMembers returns the live (non-zombie) processes whose process group
// is pgid.
func groupMembers(tb testing.TB, pgid int) []string {
	tb.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		tb.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // exited meanwhile
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		// After "comm)": state ppid pgrp ...
		f := strings.Fields(s[i+1:])
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		if f[2] == strconv.Itoa(pgid) {
			out = append(out, e.Name()+" "+s[:i+1])
		}
	}
	return out
}

// requireNoSurvivors fails when a process of group pgid is still alive a
// moment after the run returned (SIGKILL is delivered asynchronously).
func requireNoSurvivors(tb testing.TB, pgid int) {
	tb.Helper()
	if pgid <= 0 {
		tb.Fatalf("no process group to check (pid %d)", pgid)
	}
	deadline := time.Now().Add(time.Second)
	for {
		left := groupMembers(tb, pgid)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("processes of group %d survived the run: %v", pgid, left)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// syncBuffer is a bytes.Buffer safe for a slog handler used concurrently.
type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func textLogger(buf *syncBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

const testKey = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="

func connectVars() Vars {
	return Vars{
		Event:         EventConnect,
		UserID:        "alice@example.org",
		ProfileID:     "employees",
		ConnectionID:  testKey,
		IPFour:        netip.MustParseAddr("10.42.0.2"),
		IPSix:         netip.MustParseAddr("fd42::2"),
		OriginatingIP: netip.MustParseAddr("192.0.2.10"),
		Reason:        "created",
		Interface:     "wg0",
		ExpiresAt:     time.Date(2027, 2, 26, 16, 4, 5, 0, time.FixedZone("CET", 3600)),
		EventID:       41,
	}
}

func disconnectVars() Vars {
	return Vars{
		Event:        EventDisconnect,
		UserID:       "bob",
		ProfileID:    "guests",
		ConnectionID: testKey,
		IPFour:       netip.MustParseAddr("10.42.0.3"),
		BytesIn:      123456789,
		BytesOut:     42,
		Reason:       "expired",
		Interface:    "wg1",
		EventID:      42,
	}
}

func timeUnix(sec int64) time.Time { return time.Unix(sec, 0) }

// waitFile waits until path exists (a script's marker).
func waitFile(tb testing.TB, path string) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s never appeared", path)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
