package hooks

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestNoScriptConfigured(t *testing.T) {
	r := newRunner(t, Config{})
	if r.Configured() {
		t.Fatal("Configured() with no script")
	}
	res := r.Run(context.Background(), connectVars())
	if res.Ran || !res.OK() || res.Failure() != nil {
		t.Fatalf("got %+v, want a no-op success", res)
	}
}

func TestExitStatuses(t *testing.T) {
	tests := []struct {
		name     string
		body     string
		after    func(t *testing.T, path string) // breaks the script after startup
		code     int
		signal   syscall.Signal
		errWant  string
		failWant string
	}{
		{name: "exit 0", body: "#!/bin/sh\necho hello\nexit 0\n", code: 0},
		{name: "exit 1", body: "#!/bin/sh\necho 'no such user' >&2\nexit 1\n", code: 1,
			failWant: "hook script exited with status 1: no such user"},
		{name: "exit 2", body: "#!/bin/sh\nexit 2\n", code: 2, failWant: "hook script exited with status 2"},
		{name: "signal", body: "#!/bin/sh\nkill -KILL $$\n", code: -1, signal: syscall.SIGKILL,
			failWant: "hook script killed by signal 9 (killed)"},
		{name: "missing interpreter", body: "#!/bin/sh\nexit 0\n", code: 127,
			after: func(t *testing.T, p string) {
				if err := os.WriteFile(p, []byte("#!/nonexistent/sh\nexit 0\n"), 0o755); err != nil {
					t.Fatal(err)
				}
			},
			errWant: "interpreter /nonexistent/sh named on its #! line does not exist"},
		{name: "not executable", body: "#!/bin/sh\nexit 0\n", code: 126,
			after: func(t *testing.T, p string) {
				if err := os.Chmod(p, 0o644); err != nil {
					t.Fatal(err)
				}
			},
			errWant: "permission denied (mode 0644)"},
		{name: "no #! line", body: "#!/bin/sh\nexit 0\n", code: 126,
			after: func(t *testing.T, p string) {
				if err := os.WriteFile(p, []byte("exit 0\n"), 0o755); err != nil {
					t.Fatal(err)
				}
			},
			errWant: "not an executable format"},
		{name: "deleted after startup", body: "#!/bin/sh\nexit 0\n", code: 127,
			after: func(t *testing.T, p string) {
				if err := os.Remove(p); err != nil {
					t.Fatal(err)
				}
			},
			errWant: "does not exist (removed or renamed since startup?)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeScript(t, t.TempDir(), "hook.sh", tt.body)
			r := newRunner(t, Config{Script: path})
			if tt.after != nil {
				tt.after(t, path)
			}
			res := r.Run(context.Background(), connectVars())
			if !res.Ran || res.ExitCode != tt.code || res.Signal != tt.signal || res.TimedOut {
				t.Fatalf("got %+v, want exit code %d signal %d", res, tt.code, tt.signal)
			}
			if tt.errWant != "" {
				if res.Err == nil || !strings.Contains(res.Err.Error(), tt.errWant) || !strings.Contains(res.Err.Error(), path) {
					t.Fatalf("Err = %v, want it to name %s and contain %q", res.Err, path, tt.errWant)
				}
				if res.PID != 0 {
					t.Errorf("PID = %d for a script that never started", res.PID)
				}
			} else if res.Err != nil {
				t.Fatalf("unexpected Err %v", res.Err)
			}
			if ok := tt.code == 0 && tt.errWant == ""; res.OK() != ok {
				t.Errorf("OK() = %v, want %v", res.OK(), ok)
			}
			if tt.failWant != "" {
				if f := res.Failure(); f == nil || f.Error() != tt.failWant {
					t.Errorf("Failure() = %v, want %q", f, tt.failWant)
				}
			}
			if tt.code == 0 && string(res.Stdout) != "hello\n" {
				t.Errorf("stdout %q", res.Stdout)
			}
		})
	}
}

func TestWorkingDirectoryAndStdin(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	path := writeScript(t, dir, "hook.sh", "#!/bin/sh\n{ /bin/pwd; /bin/cat; echo end; } > "+quote(out)+"\n")
	r := newRunner(t, Config{Script: path})
	if res := r.Run(context.Background(), connectVars()); !res.OK() {
		t.Fatal(res.Failure())
	}
	b, _ := os.ReadFile(out)
	if string(b) != "/\nend\n" {
		t.Fatalf("got %q, want working directory / and empty stdin", b)
	}
}

func TestTimeoutKillsProcessGroup(t *testing.T) {
	const timeout, grace = 300 * time.Millisecond, 400 * time.Millisecond
	tests := []struct {
		name     string
		body     string
		timedOut bool
		max      time.Duration
		code     int
	}{
		// The script itself sleeps past the timeout.
		{"sleeps", "#!/bin/sh\necho started\nsleep 30\n", true, timeout + grace, -1},
		// A background child holds stdout while the script sleeps.
		{"grandchild holds stdout", "#!/bin/sh\nsleep 30 &\nsleep 30\n", true, timeout + grace, -1},
		// The script and its child ignore SIGTERM: SIGKILL after the grace.
		{"ignores SIGTERM", "#!/bin/sh\ntrap '' TERM\nsleep 30 &\nsleep 30\n", true, timeout + grace, -1},
		// The script exits at once but leaves a child holding stdout: the
		// run ends with the script, and the child is killed.
		{"exits leaving child", "#!/bin/sh\nsleep 30 &\necho done\nexit 0\n", false, timeout, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeScript(t, t.TempDir(), "hook.sh", tt.body)
			r := newRunner(t, Config{Script: path, Timeout: timeout, KillGrace: grace})
			begin := time.Now()
			res := r.Run(context.Background(), connectVars())
			elapsed := time.Since(begin)
			if res.TimedOut != tt.timedOut || res.ExitCode != tt.code || res.Err != nil {
				t.Fatalf("got %+v, want TimedOut %v exit code %d", res, tt.timedOut, tt.code)
			}
			if slack := time.Second; elapsed > tt.max+slack {
				t.Errorf("returned after %s, want within %s", elapsed, tt.max+slack)
			}
			if tt.timedOut {
				if elapsed < timeout {
					t.Errorf("returned after %s, before the timeout", elapsed)
				}
				if res.OK() || !strings.Contains(res.Failure().Error(), "timed out") {
					t.Errorf("Failure() = %v, want a timeout", res.Failure())
				}
			}
			requireNoSurvivors(t, res.PID)
		})
	}
}

func TestContextCancelStopsScript(t *testing.T) {
	path := writeScript(t, t.TempDir(), "hook.sh", "#!/bin/sh\nsleep 30 &\nsleep 30\n")
	r := newRunner(t, Config{Script: path, Timeout: time.Minute, KillGrace: 300 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	begin := time.Now()
	res := r.Run(ctx, connectVars())
	if elapsed := time.Since(begin); elapsed > 1500*time.Millisecond {
		t.Errorf("returned after %s", elapsed)
	}
	if !errors.Is(res.Err, context.Canceled) || res.TimedOut || res.OK() {
		t.Fatalf("got %+v, want Err wrapping context.Canceled", res)
	}
	requireNoSurvivors(t, res.PID)

	// A caller's deadline counts as a timeout.
	ctx, cancel = context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	res = r.Run(ctx, connectVars())
	if !errors.Is(res.Err, context.DeadlineExceeded) || !res.TimedOut {
		t.Fatalf("got %+v, want a timed-out run wrapping DeadlineExceeded", res)
	}
	requireNoSurvivors(t, res.PID)
}

func TestOutputBounded(t *testing.T) {
	const size = 10 << 20
	path := writeScript(t, t.TempDir(), "hook.sh",
		"#!/bin/sh\n/usr/bin/head -c "+strconv.Itoa(size)+" /dev/zero\n/usr/bin/head -c "+strconv.Itoa(size)+" /dev/zero >&2\necho tail >&2\n")
	r := newRunner(t, Config{Script: path})
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	res := r.Run(context.Background(), connectVars())
	runtime.ReadMemStats(&after)
	if !res.OK() {
		t.Fatal(res.Failure())
	}
	if len(res.Stdout) != OutputLimit || res.StdoutDropped != size-OutputLimit {
		t.Errorf("stdout: kept %d dropped %d, want %d and %d", len(res.Stdout), res.StdoutDropped, OutputLimit, size-OutputLimit)
	}
	if len(res.Stderr) != OutputLimit || res.StderrDropped != size+5-OutputLimit {
		t.Errorf("stderr: kept %d dropped %d, want %d and %d", len(res.Stderr), res.StderrDropped, OutputLimit, size+5-OutputLimit)
	}
	// 20 MiB went through; what was allocated must stay near the two
	// 64 KiB buffers.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 2<<20 {
		t.Errorf("allocated %d bytes for 20 MiB of output, want under 2 MiB", alloc)
	}
}

func TestConcurrencyBound(t *testing.T) {
	dir := t.TempDir()
	runs := filepath.Join(dir, "runs")
	if err := os.Mkdir(runs, 0o755); err != nil {
		t.Fatal(err)
	}
	counts := filepath.Join(dir, "counts")
	// Each run marks itself present, counts who is present, and leaves.
	path := writeScript(t, dir, "hook.sh", `#!/bin/sh
d=`+quote(runs)+`
: > "$d/$$"
n=$(/bin/ls "$d" | /usr/bin/wc -l)
echo "$n" >> `+quote(counts)+`
/bin/sleep 0.3
/bin/rm -f "$d/$$"
`)
	r := newRunner(t, Config{Script: path, Concurrency: 2})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if res := r.Run(context.Background(), connectVars()); !res.OK() {
				t.Error(res.Failure())
			}
		})
	}
	wg.Wait()
	b, err := os.ReadFile(counts)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Fields(string(b))
	most := 0
	for _, l := range lines {
		n, _ := strconv.Atoi(l)
		most = max(most, n)
	}
	if len(lines) != 8 || most != 2 {
		t.Fatalf("runs saw %v others present, want 8 runs and at most (and at some point) 2 at once", lines)
	}

	// Waiting for a slot ends with the caller's context. The first run
	// holds the only slot from its marker until it is released.
	started, release := filepath.Join(dir, "started"), filepath.Join(dir, "release")
	slow := writeScript(t, dir, "slow.sh", "#!/bin/sh\n: > "+quote(started)+
		"\nwhile [ ! -e "+quote(release)+" ]; do /bin/sleep 0.01; done\n")
	r = newRunner(t, Config{Script: slow, Concurrency: 1, Timeout: time.Minute})
	t.Cleanup(func() { os.WriteFile(release, nil, 0o600) })
	done := make(chan Result)
	go func() { done <- r.Run(context.Background(), connectVars()) }()
	waitFile(t, started)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	res := r.Run(ctx, connectVars())
	if err := os.WriteFile(release, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(res.Err, context.DeadlineExceeded) || res.PID != 0 || res.OK() {
		t.Fatalf("got %+v, want a refused wait for a slot", res)
	}
	if first := <-done; !first.OK() {
		t.Fatal(first.Failure())
	}
}

func TestRunIsLogged(t *testing.T) {
	var buf syncBuffer
	dir := t.TempDir()
	ok := writeScript(t, dir, "ok.sh", "#!/bin/sh\necho '  added 10.42.0.2  '\n")
	bad := writeScript(t, dir, "bad.sh", "#!/bin/sh\necho 'quota exceeded' >&2\nexit 3\n")

	newRunner(t, Config{Script: ok, Logger: textLogger(&buf)}).Run(context.Background(), connectVars())
	newRunner(t, Config{Script: bad, Logger: textLogger(&buf)}).Run(context.Background(), disconnectVars())
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d log lines, want one per run:\n%s", len(lines), buf.String())
	}
	for _, want := range []string{"level=INFO", "event_id=41", "event=C", "exit_code=0", `stdout="added 10.42.0.2"`, `peer="` + testKey + `"`, "iface=wg0"} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("success line lacks %q: %s", want, lines[0])
		}
	}
	for _, want := range []string{"level=WARN", "event_id=42", "event=D", "exit_code=3", `stderr="quota exceeded"`} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("failure line lacks %q: %s", want, lines[1])
		}
	}
	if strings.Contains(lines[0], "stderr=") || strings.Contains(lines[1], "stdout=") {
		t.Error("empty output logged")
	}
}

// A dash script with bash's == exits 0 after every test errs on stderr:
// the event is accepted, and the log says so at WARN with that stderr.
func TestStderrOnSuccessIsWarned(t *testing.T) {
	if _, err := os.Stat("/bin/dash"); err != nil {
		t.Skip("needs /bin/dash (Debian's /bin/sh)")
	}
	var buf syncBuffer
	dir := t.TempDir()
	script := writeScript(t, dir, "eduvpn.sh", "#!/bin/dash\nif [ \"$VPN_EVENT\" == \"C\" ]; then echo connect; else echo disconnect; fi\n")
	res := newRunner(t, Config{Script: script, Logger: textLogger(&buf)}).Run(context.Background(), connectVars())
	if !res.OK() {
		t.Fatalf("dash with == should still exit 0: %v", res.Failure())
	}
	if got := strings.TrimSpace(string(res.Stdout)); got != "disconnect" {
		t.Errorf("stdout %q: want the else branch taken, as dash does", got)
	}
	line := strings.TrimSpace(buf.String())
	for _, want := range []string{"level=WARN", "hook script succeeded but wrote to stderr", "exit_code=0", "unexpected operator", "event_id=41"} {
		if !strings.Contains(line, want) {
			t.Errorf("log line lacks %q: %s", want, line)
		}
	}
}

// TestWaitidLeavesZombie: the supervisor's wait for a script's exit
// (waitid with WNOWAIT) returns at the exit but leaves the script
// unreaped, so its group can still be killed safely.
func TestWaitidLeavesZombie(t *testing.T) {
	// It exits when its stdin is closed, not at a time.
	cmd := exec.Command("/bin/sh", "-c", "read x")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- waitid(pPID, cmd.Process.Pid, syscall.WEXITED|syscall.WNOWAIT) }()
	select {
	case err := <-done:
		t.Fatalf("reported an exit (%v) before the process ended", err)
	case <-time.After(50 * time.Millisecond):
	}
	stdin.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no exit reported")
	}
	// Not reaped yet: the process stays a zombie, holding its PID and
	// process group ID, until Wait.
	if b, err := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/stat"); err != nil || !strings.Contains(string(b), ") Z ") {
		t.Fatalf("process not left as a zombie: %q %v", b, err)
	}
	if err := cmd.Wait(); err != nil && !strings.Contains(err.Error(), "exit status 1") {
		t.Fatal(err)
	}
}

// TestOutputHeldOutsideGroup: a process that left the script's process group
// (setsid) and keeps stdout open cannot hold the run for longer than the
// short drain bound; what was written before is kept.
func TestOutputHeldOutsideGroup(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "escaped.pid")
	path := writeScript(t, dir, "hook.sh", "#!/bin/sh\necho before\n/usr/bin/setsid /bin/sh -c 'echo $$ > "+pidFile+"; exec /bin/sleep 30' &\n"+
		"while [ ! -s "+quote(pidFile)+" ]; do /bin/sleep 0.01; done\nexit 0\n")
	var buf syncBuffer
	r := newRunner(t, Config{Script: path, Timeout: 10 * time.Second, Logger: textLogger(&buf)})
	begin := time.Now()
	res := r.Run(context.Background(), connectVars())
	elapsed := time.Since(begin)
	if b, err := os.ReadFile(pidFile); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if !res.OK() || string(res.Stdout) != "before\n" {
		t.Fatalf("got %+v, want success with the output written before", res)
	}
	if elapsed > drainWait+2*time.Second {
		t.Errorf("returned after %s", elapsed)
	}
	if !strings.Contains(buf.String(), "held open by a process outside its process group") {
		t.Errorf("no warning logged:\n%s", buf.String())
	}
}

func TestCanceledContextRunsNothing(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "ran")
	r := newRunner(t, Config{Script: writeScript(t, dir, "s.sh", "#!/bin/sh\n: > "+quote(marker)+"\n")})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for range 20 { // a free slot must not win against the ended context
		if res := r.Run(ctx, connectVars()); !errors.Is(res.Err, context.Canceled) || res.PID != 0 {
			t.Fatalf("got %+v, want a refused run", res)
		}
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the script ran with an ended context")
	}
}
