package reconcile

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wgkeeper/wgkeeper/config"
	"github.com/wgkeeper/wgkeeper/hooks"
	"github.com/wgkeeper/wgkeeper/store"
)

// leaseScript records every D run in runs (start and end, with the time)
// and holds a lock per event while it runs: a second run of an event that
// starts while the first still runs records "overlap". With block_first
// present, the first D run blocks, in a process of its own session (which
// outlives the script's death; it records "blocking" when it runs), until
// release appears.
const leaseScript = `#!/bin/sh
d=$(dirname "$(readlink -f "$0")")
[ "$VPN_EVENT" = D ] || exit 0
exec 9>>"$d/ev-$VPN_EVENT_ID.lock"
if ! flock -n 9; then
	echo "overlap $VPN_EVENT_ID" >> "$d/runs"
	exit 1
fi
echo "start $VPN_EVENT_ID $(date +%s.%N)" >> "$d/runs"
if [ -f "$d/block_first" ] && mkdir "$d/blocked" 2>/dev/null; then
	setsid -w sh -c 'echo "blocking $2" >> "$1/runs"; while [ ! -e "$1/release" ]; do sleep 0.02; done; echo "end $2 blocker" >> "$1/runs"' sh "$d" "$VPN_EVENT_ID"
fi
sleep 0.05
echo "end $VPN_EVENT_ID $(date +%s.%N)" >> "$d/runs"
`

// leaseSetup is a harness whose D events go to leaseScript, one at a time,
// and n configs of user "batch" to revoke.
func leaseSetup(t *testing.T, n int) (*harness, *config.Config) {
	t.Helper()
	if _, err := exec.LookPath("flock"); err != nil {
		t.Skip("flock(1) from util-linux is needed")
	}
	if _, err := exec.LookPath("setsid"); err != nil {
		t.Skip("setsid(1) from util-linux is needed")
	}
	h := newHarness(t, harnessOpts{real: true, maxPerUser: n})
	for range n {
		h.create("batch")
	}
	if err := os.WriteFile(filepath.Join(h.dir, "lease.sh"), []byte(leaseScript), 0o755); err != nil {
		t.Fatal(err)
	}
	text, err := os.ReadFile(h.cfg.Path)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(text), `script = "hook.sh"`, `script = "lease.sh"`, 1)
	s = strings.Replace(s, "concurrency = 4", "concurrency = 1", 1)
	path := filepath.Join(h.dir, "lease.toml")
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return h, cfg
}

// startRevoker starts a child process that revokes user "batch" with cfg
// and SIGKILLs itself at the crash point at ("" = never).
func startRevoker(t *testing.T, cfg *config.Config, at string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envCrashOp+"=revoke", envCrashAt+"="+at,
		envCrashConfig+"="+cfg.Path, envCrashUser+"=batch")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

func waitKilled(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die of SIGKILL: %v (%v)", err, cmd.Stdout)
	}
}

// leaseRuns reads runs: per event, the number of completed runs; and every
// overlap recorded.
func leaseRuns(t *testing.T, h *harness) (started, ended map[int64]int, overlaps []string) {
	t.Helper()
	started, ended = map[int64]int{}, map[int64]int{}
	data, err := os.ReadFile(filepath.Join(h.dir, "runs"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		id, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "start":
			started[id]++
		case "end":
			if len(f) == 3 && f[2] != "blocker" {
				ended[id]++
			}
		case "overlap":
			overlaps = append(overlaps, line)
		}
	}
	return started, ended, overlaps
}

func pendingD(t *testing.T, h *harness) []store.Event {
	t.Helper()
	evs, err := h.st.ListEvents(h.ctx, store.EventFilter{Kind: store.KindDisconnect, Status: store.StatusPending})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// A process SIGKILLed in the middle of a delivery batch: the next
// housekeeping, in a fresh engine, delivers every one of its D events at
// once — long before their leases would have run out — and no event runs
// twice at the same time.
func TestDeadOwnerLeasesReclaimedAtOnce(t *testing.T) {
	const n = 4
	h, cfg := leaseSetup(t, n)
	child := startRevoker(t, cfg, "deliver:script-ran")
	waitKilled(t, child)

	// The child recorded every D, leased to itself, and ran the first
	// script (not yet marked done) before it died.
	evs := pendingD(t, h)
	if len(evs) != n {
		t.Fatalf("%d pending D events after the crash, want %d", len(evs), n)
	}
	var leaseEnd time.Time
	for _, ev := range evs {
		if ev.LeaseOwner == "" || ev.LeaseUntil.IsZero() {
			t.Fatalf("event %d is not leased: %+v", ev.ID, ev)
		}
		leaseEnd = ev.LeaseUntil
	}
	if started, _, _ := leaseRuns(t, h); len(started) != 1 {
		t.Fatalf("the child ran %d events before dying, want 1", len(started))
	}

	// A fresh engine, on the real clock: the leases have a minute to run.
	now := time.Now().UTC()
	h.clock.Set(now)
	if !leaseEnd.After(now.Add(30 * time.Second)) {
		t.Fatalf("lease ends %s, too soon to tell reclaim from expiry", leaseEnd)
	}
	fresh, err := New(Options{Config: cfg, Store: h.st, Device: h.dev, Runner: newRunner(t, cfg), Now: h.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fresh.Close() })
	start := time.Now()
	s, err := fresh.Housekeeping(h.ctx, true)
	if err != nil {
		t.Fatalf("housekeeping: %v", err)
	}
	took := time.Since(start)
	if s.Delivery.Done != n {
		t.Fatalf("housekeeping delivered %d of the dead process's %d events: %+v", s.Delivery.Done, n, s)
	}
	if left := pendingD(t, h); len(left) != 0 {
		t.Fatalf("still pending: %+v", left)
	}
	started, ended, overlaps := leaseRuns(t, h)
	if len(overlaps) > 0 {
		t.Fatalf("events ran twice at once: %v", overlaps)
	}
	for _, ev := range evs {
		if ended[ev.ID] == 0 || started[ev.ID] != ended[ev.ID] {
			t.Errorf("event %d: %d runs started, %d ended", ev.ID, started[ev.ID], ended[ev.ID])
		}
	}
	// No owner file of the dead process is left; ours is the only one.
	files, _ := filepath.Glob(filepath.Join(h.dir, ownerPrefix+"*"))
	if len(files) != 1 || fresh.ownerFile() == nil {
		t.Errorf("owner files left: %v", files)
	}
	t.Logf("delivered %d events of a dead process in %s (their leases ran %s longer)", n, took.Round(time.Millisecond), leaseEnd.Sub(now).Round(time.Second))
}

// A process dies while a script it started still runs: its leases are not
// taken over while that script lives (it holds the owner lock), and are the
// moment it ends.
func TestDeadOwnerScriptStillRunning(t *testing.T) {
	const n = 2
	h, cfg := leaseSetup(t, n)
	h.touch("block_first", "")
	child := startRevoker(t, cfg, "")
	// Kill the child only once the helper that outlives it (its own
	// session) runs: the script itself dies with the child.
	deadline := time.Now().Add(20 * time.Second)
	for {
		if b, _ := os.ReadFile(filepath.Join(h.dir, "runs")); strings.Contains(string(b), "blocking ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the child's first script never started its helper")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	waitKilled(t, child)

	h.clock.Set(time.Now().UTC())
	fresh, err := New(Options{Config: cfg, Store: h.st, Device: h.dev, Runner: newRunner(t, cfg), Now: h.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fresh.Close() })
	s, err := fresh.Housekeeping(h.ctx, true)
	if err != nil {
		t.Fatalf("housekeeping: %v", err)
	}
	if s.Delivery.Done != 0 || len(pendingD(t, h)) != n {
		t.Fatalf("took over the leases of a process whose script still runs: %+v", s.Delivery)
	}

	h.touch("release", "")
	deadline = time.Now().Add(20 * time.Second)
	for {
		k, err := fresh.ReclaimDead(h.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if k == n {
			break
		}
		if k != 0 || time.Now().After(deadline) {
			t.Fatalf("released %d leases, want %d once the script ended", k, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	s, err = fresh.Housekeeping(h.ctx, true)
	if err != nil || s.Delivery.Done != n {
		t.Fatalf("housekeeping after the script ended: %+v %v", s.Delivery, err)
	}
	if _, _, overlaps := leaseRuns(t, h); len(overlaps) > 0 {
		t.Fatalf("events ran twice at once: %v", overlaps)
	}
}

// Owner files: a live engine's lock is seen as alive, from this process
// and from another engine; one that closed leaves nothing; a leftover of a
// creation cut short is swept; names are never reused.
func TestOwnerFiles(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	a, b := h.newEngine(nil), h.newEngine(nil)
	if _, err := a.holdOwner(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.holdOwner(); err != nil {
		t.Fatal(err)
	}
	if a.Owner() == b.Owner() || strings.Contains(a.Owner(), "/") {
		t.Fatalf("owner names %q %q", a.Owner(), b.Owner())
	}
	// a holds a lease; b must not take it.
	r, err := h.st.DeletePeers(h.ctx, keysOf([]store.Peer{h.create("u").Peer}), store.ReasonDeleted, a.claimOwner(), h.clock.Now().Add(time.Hour))
	if err != nil || len(r) != 1 {
		t.Fatal(r, err)
	}
	if k, err := b.ReclaimDead(h.ctx); k != 0 || err != nil {
		t.Fatalf("reclaimed %d leases of a live owner: %v", k, err)
	}
	if got := pendingD(t, h); len(got) != 1 || got[0].LeaseOwner == "" {
		t.Fatalf("lease of a live owner lost: %+v", got)
	}
	leftover := filepath.Join(h.dir, ownerPrefix+"deadbeef"+ownerPending)
	if err := os.WriteFile(leftover, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// a dies (its descriptor closes, its file stays): b releases its lease
	// and sweeps its file and the leftover.
	a.ownerMu.Lock()
	a.ownerF.f.Close()
	aPath := a.ownerF.path
	a.ownerF = ownerLock{}
	a.closed = true
	a.ownerMu.Unlock()
	if k, err := b.ReclaimDead(h.ctx); k != 1 || err != nil {
		t.Fatalf("reclaimed %d leases of a dead owner, want 1: %v", k, err)
	}
	if got := pendingD(t, h); len(got) != 1 || got[0].LeaseOwner != "" {
		t.Fatalf("lease of a dead owner kept: %+v", got)
	}
	for _, p := range []string{aPath, leftover} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s not swept: %v", p, err)
		}
	}
	if _, err := a.holdOwner(); err == nil {
		t.Fatal("a closed engine took an owner file")
	}
	// A file left by a dead owner with no content is swept too.
	empty := filepath.Join(h.dir, ownerPrefix+"0123"+ownerSuffix)
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if k, err := b.ReclaimDead(h.ctx); k != 0 || err != nil {
		t.Fatal(k, err)
	}
	if _, err := os.Stat(empty); !os.IsNotExist(err) {
		t.Fatalf("empty owner file not swept: %v", err)
	}
	// Close removes the engine's own file; closing twice is harmless.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if files, _ := filepath.Glob(filepath.Join(h.dir, ownerPrefix+"*")); len(files) != 0 {
		t.Fatalf("owner files left after Close: %v", files)
	}
}

func newRunner(t *testing.T, cfg *config.Config) *hooks.Runner {
	t.Helper()
	r, err := hooks.New(hooks.Config{Script: cfg.Hooks.Script, Timeout: cfg.Hooks.Timeout, Concurrency: cfg.Hooks.Concurrency})
	if err != nil {
		t.Fatal(err)
	}
	return r
}
