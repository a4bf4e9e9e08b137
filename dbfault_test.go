package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/config"
	"github.com/wgkeeper/wgkeeper/internal/tmpfs"
	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/store/sqlite"
	"github.com/wgkeeper/wgkeeper/wg/wgtest"
)

// faultConfig is a daemon with the API on loopback; the database path is
// absolute (it may live on a tmpfs).
const faultConfig = `
database = %q

[hooks]
script = "hook.sh"
timeout = "10s"

[housekeeping]
schedule = "@every 1h"
reconcile_interval = "5s"

[api]
listen = "127.0.0.1:%d"
token_file = "api.token"

[[interface]]
name = "%s"
mode = "userspace"
private_key_file = "server.key"
listen_port = %d
endpoint = "127.0.0.1:%d"

[[profile]]
id = "staff"
interface = "%s"
ipv4_range = "10.97.0.0/24"
expiry = "1d"
`

// faultHook logs the start and end of every run; connects of users named
// slow* take 3 s.
const faultHook = `#!/bin/sh
d=$(dirname "$(readlink -f "$0")")
echo "$VPN_EVENT $VPN_USER_ID start" >> "$d/events.log"
case "$VPN_EVENT:$VPN_USER_ID" in C:slow*) sleep 3;; esac
echo "$VPN_EVENT $VPN_USER_ID end" >> "$d/events.log"
`

type faultEnv struct {
	t       *testing.T
	dir     string
	cfgPath string
	db      string
	iface   string
	apiPort int
}

// newFaultEnv writes a config whose database is db (a path in
// t.TempDir() when empty).
func newFaultEnv(t *testing.T, db string) *faultEnv {
	t.Helper()
	wgtest.RequireRoot(t)
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("skipped: needs /dev/net/tun for a userspace interface")
	}
	f := &faultEnv{t: t, dir: t.TempDir(), iface: wgtest.UniqueName("wgf"), apiPort: freeTCPPort(t)}
	if db == "" {
		db = filepath.Join(f.dir, "wgkeeper.db")
	}
	f.db = db
	f.cfgPath = filepath.Join(f.dir, "wgkeeper.toml")
	port := freeUDPPort(t)
	cfg := fmt.Sprintf(faultConfig, db, f.apiPort, f.iface, port, port, f.iface)
	if err := os.WriteFile(f.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.dir, "hook.sh"), []byte(faultHook), 0o755); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *faultEnv) start(level string) *daemonProc {
	f.t.Helper()
	d := startDaemonIn(f.t, "", os.Args[0], append(os.Environ(), "WGKEEPER_TEST_AS_MAIN=1"),
		"-config", f.cfgPath, "daemon", "-log-level", level)
	d.waitLog(f.t, "wgkeeper started", 20*time.Second)
	return d
}

// cli runs a wgkeeper command to its end.
func (f *faultEnv) cli(args ...string) (int, string) {
	f.t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"-config", f.cfgPath}, args...)...)
	cmd.Env = append(os.Environ(), "WGKEEPER_TEST_AS_MAIN=1")
	out, err := cmd.CombinedOutput()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		f.t.Fatal(err)
	}
	return code, string(out)
}

// apiReply is an API answer: status, error code and message.
type apiReply struct {
	status  int
	code    string
	message string
}

func (f *faultEnv) call(method, path, body string) apiReply {
	f.t.Helper()
	tok, err := os.ReadFile(filepath.Join(f.dir, "api.token"))
	if err != nil {
		f.t.Fatal(err)
	}
	req, err := http.NewRequest(method, fmt.Sprintf("http://127.0.0.1:%d%s", f.apiPort, path), strings.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := specClient(f.t, &http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return apiReply{status: -1, message: err.Error()}
	}
	defer resp.Body.Close()
	var e struct {
		Error struct{ Code, Message string }
	}
	json.NewDecoder(resp.Body).Decode(&e)
	return apiReply{status: resp.StatusCode, code: e.Error.Code, message: e.Error.Message}
}

func (f *faultEnv) create(user string) apiReply {
	return f.call("POST", "/v1/peers", `{"user_id":"`+user+`","profile_id":"staff"}`)
}

// waitExit waits for the daemon to end and returns its exit code.
func waitExit(t *testing.T, d *daemonProc, within time.Duration) int {
	t.Helper()
	select {
	case err := <-d.done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(within):
		t.Fatalf("daemon still running %v later", within)
	}
	return -1
}

// waitFile polls until the file contains what.
func waitFile(t *testing.T, path, what string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if data, _ := os.ReadFile(path); strings.Contains(string(data), what) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s never contained %q", filepath.Base(path), what)
}

// unhealthyWithin polls /healthz until it answers 503 (or, with gone, until
// the daemon has exited) and returns how long that took.
func (f *faultEnv) unhealthyWithin(limit time.Duration, d *daemonProc, gone bool) time.Duration {
	f.t.Helper()
	start := time.Now()
	for time.Since(start) < limit+5*time.Second {
		if gone {
			select {
			case <-d.exited:
				return time.Since(start)
			default:
			}
		}
		r := f.call("GET", "/healthz", "")
		if r.status == http.StatusServiceUnavailable {
			if r.code != "unavailable" {
				f.t.Fatalf("/healthz: %+v, want 503 unavailable", r)
			}
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	f.t.Fatalf("/healthz never failed")
	return 0
}

// The database file deleted under a running daemon: within 2 s /healthz
// fails and writes answer 503 unavailable; a create whose connect script
// was running when the file went is not answered 201; once that request is
// answered the daemon exits non-zero (systemd's Restart=on-failure starts
// it again), without re-creating the file.
func TestDaemonDatabaseDeleted(t *testing.T) {
	f := newFaultEnv(t, "")
	d := f.start("info")
	if r := f.create("alice"); r.status != http.StatusCreated {
		t.Fatalf("create: %+v", r)
	}
	slow := make(chan apiReply, 1)
	go func() { slow <- f.create("slow") }()
	waitFile(t, filepath.Join(f.dir, "events.log"), "C slow start", 10*time.Second)

	if err := os.Remove(f.db); err != nil {
		t.Fatal(err)
	}
	took := f.unhealthyWithin(2*time.Second, d, false)
	t.Logf("noticed the deleted file after %v", took)
	if took > 2*time.Second {
		t.Errorf("noticed the deleted file after %v, want within 2 s", took)
	}
	r := f.create("bob")
	if r.status != http.StatusServiceUnavailable || r.code != "unavailable" || !strings.Contains(r.message, "the database file was deleted or replaced") {
		t.Errorf("create after the delete: %+v, want 503 unavailable naming the cause", r)
	}
	if r := <-slow; r.status != http.StatusServiceUnavailable || r.code != "unavailable" {
		t.Errorf("create in flight during the delete: %+v, want 503 unavailable", r)
	}
	if code := waitExit(t, d, 20*time.Second); code == 0 {
		t.Fatal("daemon exited 0 after its database was deleted; systemd would not restart it")
	}
	if !strings.Contains(d.log(), "the database file was deleted or replaced") {
		t.Errorf("the log does not say why:\n%s", d.log())
	}
	if _, err := os.Stat(f.db); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the deleted database was re-created: %v", err)
	}
	unit, err := os.ReadFile("deploy/systemd/wgkeeper.service")
	if err != nil || !strings.Contains(string(unit), "\nRestart=on-failure\n") {
		t.Errorf("wgkeeper.service lacks Restart=on-failure: %v", err)
	}
}

// Another database renamed over the daemon's: the daemon stops writing
// and exits non-zero; the new file is left exactly as it came (not read
// through the old file's write-ahead log), and a restarted daemon serves
// it.
func TestDaemonDatabaseReplaced(t *testing.T) {
	f := newFaultEnv(t, "")
	// The replacement: a database with one config of mallory's.
	other := filepath.Join(t.TempDir(), "restored.db")
	cfg, err := config.Load(f.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := sqlite.Open(ctx, other, sqlite.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	k, _ := wgtypes.GeneratePrivateKey()
	p, ev, err := st.InsertPending(ctx, store.NewPeer{PublicKey: k.PublicKey(), Interface: f.iface, ProfileID: "staff", UserID: "mallory", IPv4Range: cfg.Profiles[0].IPv4Range})
	if err == nil {
		err = st.Activate(ctx, p.PublicKey, ev.ID)
	}
	if err != nil {
		t.Fatal(err)
	}
	st.Close()

	d := f.start("info")
	for _, u := range []string{"alice", "bob"} {
		if r := f.create(u); r.status != http.StatusCreated {
			t.Fatalf("create: %+v", r)
		}
	}
	if err := os.Rename(other, f.db); err != nil {
		t.Fatal(err)
	}
	// Nothing is in progress: the daemon may be gone before /healthz is
	// asked.
	took := f.unhealthyWithin(2*time.Second, d, true)
	t.Logf("noticed the replaced file after %v", took)
	if took > 2*time.Second {
		t.Errorf("noticed the replaced file after %v, want within 2 s", took)
	}
	if code := waitExit(t, d, 20*time.Second); code == 0 {
		t.Fatal("daemon exited 0 after its database was replaced")
	}
	if !strings.Contains(d.log(), "the database file was deleted or replaced") {
		t.Errorf("the log does not say why:\n%s", d.log())
	}

	// The file at the path is the replacement, untouched.
	st, err = sqlite.Open(ctx, f.db, sqlite.Options{QuickCheck: true})
	if err != nil {
		t.Fatal(err)
	}
	peers, err := st.ListPeers(ctx, store.PeerFilter{})
	st.Close()
	if err != nil || len(peers) != 1 || peers[0].UserID != "mallory" {
		t.Fatalf("the replacement database changed: %d peers %v, %v", len(peers), peers, err)
	}

	// The restart serves it.
	f.start("info")
	if r := f.call("GET", "/healthz", ""); r.status != http.StatusOK {
		t.Fatalf("/healthz after the restart: %+v", r)
	}
	if r := f.create("carol"); r.status != http.StatusCreated {
		t.Fatalf("create after the restart: %+v", r)
	}
}

// damagePage overwrites the first page of the peers table of a closed
// database file with garbage.
func damagePage(t *testing.T, path string) {
	t.Helper()
	db, err := sql.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	var root, size int64
	err = db.QueryRow(`SELECT rootpage FROM sqlite_master WHERE name = 'peers'`).Scan(&root)
	if err == nil {
		err = db.QueryRow(`PRAGMA page_size`).Scan(&size)
	}
	if err == nil {
		_, err = db.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`)
	}
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	fh, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if _, err := fh.WriteAt(bytes.Repeat([]byte{0xa5, 0x00, 0xff, 0x13}, int(size)/4), (root-1)*size); err != nil {
		t.Fatal(err)
	}
}

// A database with a page overwritten: migrate and daemon run quick_check
// first and refuse, printing its report; the file stays as it is and no
// interface is left behind.
func TestDamagedDatabaseRefused(t *testing.T) {
	f := newFaultEnv(t, "")
	if code, out := f.cli("migrate"); code != 0 {
		t.Fatalf("migrate: %d %s", code, out)
	}
	cfg, err := config.Load(f.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := sqlite.Open(ctx, f.db, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		k, _ := wgtypes.GeneratePrivateKey()
		if _, _, err := st.InsertPending(ctx, store.NewPeer{PublicKey: k.PublicKey(), Interface: f.iface, ProfileID: "staff",
			UserID: "user" + strconv.Itoa(i), IPv4Range: cfg.Profiles[0].IPv4Range}); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()
	damagePage(t, f.db)
	sum := func() [32]byte {
		data, err := os.ReadFile(f.db)
		if err != nil {
			t.Fatal(err)
		}
		return sha256.Sum256(data)
	}
	before := sum()

	for _, args := range [][]string{{"migrate"}, {"daemon"}} {
		code, out := f.cli(args...)
		if code != 1 || !strings.Contains(out, "PRAGMA quick_check reports:") {
			t.Fatalf("wgkeeper %v on a damaged file: exit %d\n%s\nwant exit 1 with quick_check's report", args, code, out)
		}
		t.Logf("wgkeeper %v:\n%s", args, out)
		lines := strings.Split(out[strings.Index(out, "reports:"):], "\n")
		if len(lines) < 2 || strings.TrimSpace(lines[1]) == "" {
			t.Errorf("no report lines after the header:\n%s", out)
		}
	}
	if sum() != before {
		t.Fatal("the damaged file was changed")
	}
	if _, err := net.InterfaceByName(f.iface); err == nil {
		t.Fatal("the refused daemon left its interface behind")
	}
}

// cpuTicks is the process's user+system CPU time in clock ticks (1/100 s).
func cpuTicks(t *testing.T, pid int) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The fields after the command name, which is in parentheses.
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return ut + st
}

// A full disk under a running daemon: writes answer 503 unavailable "disk
// full"; an expiry that cannot be recorded is retried with back-off, not
// at once (CPU under 10%, the log under 100 lines a minute); once space is
// freed the expiry goes through and its D script runs.
func TestDaemonDiskFullBacksOff(t *testing.T) {
	dbDir := tmpfs.Mount(t, 8<<20)
	f := newFaultEnv(t, filepath.Join(dbDir, "wgkeeper.db"))
	d := f.start("info")
	r := f.call("POST", "/v1/peers", `{"user_id":"alice","profile_id":"staff","expires_in":"4s"}`)
	if r.status != http.StatusCreated {
		t.Fatalf("create: %+v", r)
	}
	expires := time.Now().Add(4 * time.Second)
	// Empty the write-ahead log, so that the next write needs new space.
	db, err := sql.Open("sqlite3", f.db)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	fill := tmpfs.Fill(t, dbDir)

	r = f.create("bob")
	if r.status != http.StatusServiceUnavailable || r.code != "unavailable" || !strings.Contains(r.message, "disk full") {
		t.Fatalf("create on a full disk: %+v, want 503 unavailable \"disk full\"", r)
	}
	time.Sleep(time.Until(expires.Add(time.Second)))
	pid := d.cmd.Process.Pid
	const window = 6 * time.Second
	lines0 := strings.Count(d.log(), "\n")
	cpu0, t0 := cpuTicks(t, pid), time.Now()
	time.Sleep(window)
	cpu1, t1 := cpuTicks(t, pid), time.Now()
	lines1 := strings.Count(d.log(), "\n")
	share := float64(cpu1-cpu0) / 100 / t1.Sub(t0).Seconds()
	perMinute := float64(lines1-lines0) * float64(time.Minute) / float64(t1.Sub(t0))
	t.Logf("on a full disk: CPU %.1f%%, %.0f log lines a minute", share*100, perMinute)
	if share > 0.10 {
		t.Errorf("daemon used %.0f%% CPU on a full disk, want under 10%%", share*100)
	}
	if perMinute >= 100 {
		t.Errorf("daemon logged %.0f lines a minute on a full disk, want under 100", perMinute)
	}
	if !strings.Contains(d.log(), "disk full") {
		t.Errorf("the log never says the disk is full")
	}
	if data, _ := os.ReadFile(filepath.Join(f.dir, "events.log")); strings.Contains(string(data), "D alice") {
		t.Fatal("the D script ran although the expiry could not be recorded")
	}

	// Space again: the expiry is recorded within the back-off's cap (the
	// reconcile interval, 5 s) and the D script runs.
	os.Remove(fill)
	waitFile(t, filepath.Join(f.dir, "events.log"), "D alice end", 20*time.Second)
	if r := f.create("carol"); r.status != http.StatusCreated {
		t.Fatalf("create after freeing space: %+v", r)
	}
}
