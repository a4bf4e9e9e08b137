package hooks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// familyScript writes a script that starts a child, which starts a
// grandchild, all in the script's process group, records "script child
// grandchild" in the file pids once all run, and sleeps.
func familyScript(t *testing.T, dir, pids string) string {
	t.Helper()
	gc := filepath.Join(dir, "grandchild")
	return writeScript(t, dir, "family.sh", "#!/bin/sh\n"+
		"/bin/sh -c '/bin/sleep 300 & echo $! > "+quote(gc+".tmp")+"; /bin/mv "+quote(gc+".tmp")+" "+quote(gc)+"; wait' &\n"+
		"child=$!\n"+
		"while [ ! -s "+quote(gc)+" ]; do /bin/sleep 0.01; done\n"+
		"echo \"$$ $child $(/bin/cat "+quote(gc)+")\" > "+quote(pids+".tmp")+"\n"+
		"/bin/mv "+quote(pids+".tmp")+" "+quote(pids)+"\n"+
		"/bin/sleep 300\n")
}

// waitPIDs polls the file pids for n process IDs.
func waitPIDs(t *testing.T, pids string, n int) []int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b, err := os.ReadFile(pids); err == nil {
			f := strings.Fields(string(b))
			if len(f) == n {
				out := make([]int, n)
				for i, s := range f {
					out[i], _ = strconv.Atoi(s)
				}
				return out
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the script never recorded its processes")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// requireGone waits until no live process is left in group pgid and none
// of pids lives (zombies aside).
func requireGone(t *testing.T, within time.Duration, pgid int, pids ...int) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		left := groupMembers(t, pgid)
		for _, pid := range pids {
			b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
			if err == nil && !strings.Contains(string(b), ") Z ") {
				left = append(left, fmt.Sprintf("%d outside the group: %s", pid, b))
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s later, processes live on: %v", within, left)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSupervisorKilled: when the supervisor itself is killed with SIGKILL
// while a script runs, the run ends at once with an error, the script, its
// child and its grandchild all die, and the next run starts a new
// supervisor and succeeds.
func TestSupervisorKilled(t *testing.T) {
	dir := realTempDir(t)
	pids := filepath.Join(dir, "pids")
	r := newRunner(t, Config{Script: familyScript(t, dir, pids), Timeout: time.Hour})

	results := make(chan Result, 1)
	go func() { results <- r.Run(context.Background(), connectVars()) }()
	p := waitPIDs(t, pids, 3)
	pgid, err := syscall.Getpgid(p[0])
	if err != nil || pgid != p[0] {
		t.Fatalf("script %d leads group %d (%v), want its own", p[0], pgid, err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) })
	sup := supervisorPID()
	if sup == 0 || sup == pgid {
		t.Fatalf("supervisor %d, script group %d", sup, pgid)
	}
	if err := syscall.Kill(sup, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case res := <-results:
		if !errors.Is(res.Err, errSupervisorLost) || res.OK() || !res.Started || res.PID != pgid {
			t.Fatalf("got %+v, want the run ended by the supervisor's loss", res)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the run did not end when its supervisor was killed")
	}
	requireGone(t, 5*time.Second, pgid, p...)

	trivial := newRunner(t, Config{Script: writeScript(t, dir, "true.sh", "#!/bin/sh\nexit 3\n")})
	if res := trivial.Run(context.Background(), connectVars()); res.Err != nil || res.ExitCode != 3 {
		t.Fatalf("run after the supervisor died: %+v", res)
	}
	if now := supervisorPID(); now == 0 || now == sup {
		t.Fatalf("supervisor %d after the loss of %d, want a new one", now, sup)
	}
}

// TestSupervisorSurvivesTerm: a SIGTERM sent to the supervisor (as a
// service manager sends it to every process of the service) does not end
// the run wgkeeper still waits for.
func TestSupervisorSurvivesTerm(t *testing.T) {
	dir := realTempDir(t)
	started := filepath.Join(dir, "started")
	release := filepath.Join(dir, "release")
	r := newRunner(t, Config{Script: writeScript(t, dir, "hook.sh", "#!/bin/sh\n: > "+quote(started)+
		"\nwhile [ ! -e "+quote(release)+" ]; do /bin/sleep 0.01; done\necho done\n"), Timeout: time.Minute})
	results := make(chan Result, 1)
	go func() { results <- r.Run(context.Background(), connectVars()) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(started); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the script never started")
		}
		time.Sleep(10 * time.Millisecond)
	}
	sup := supervisorPID()
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGHUP, syscall.SIGINT} {
		if err := syscall.Kill(sup, sig); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(100 * time.Millisecond) // give a wrong handler time to act
	if err := os.WriteFile(release, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	res := <-results
	if !res.OK() || string(res.Stdout) != "done\n" {
		t.Fatalf("got %+v, want the script's run completed", res)
	}
	if now := supervisorPID(); now != sup {
		t.Fatalf("supervisor %d replaced by %d", sup, now)
	}
}

// TestCloseStopsRuns: Close ends the runs in flight with an error, kills
// their process groups, waits for the supervisor, and a later run starts a
// new one.
func TestCloseStopsRuns(t *testing.T) {
	dir := realTempDir(t)
	pids := filepath.Join(dir, "pids")
	r := newRunner(t, Config{Script: familyScript(t, dir, pids), Timeout: time.Hour})
	results := make(chan Result, 1)
	go func() { results <- r.Run(context.Background(), connectVars()) }()
	p := waitPIDs(t, pids, 3)
	t.Cleanup(func() { _ = syscall.Kill(-p[0], syscall.SIGKILL) })
	sup := supervisorPID()
	if err := Close(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(sup, 0); err == nil {
		t.Errorf("supervisor %d still exists after Close", sup)
	}
	select {
	case res := <-results:
		if !errors.Is(res.Err, errSupervisorLost) {
			t.Fatalf("got %+v, want the run ended by Close", res)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the run did not end at Close")
	}
	requireGone(t, 5*time.Second, p[0], p...)
	if err := Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	trivial := newRunner(t, Config{Script: writeScript(t, dir, "true.sh", "#!/bin/sh\nexit 0\n")})
	if res := trivial.Run(context.Background(), connectVars()); !res.OK() {
		t.Fatalf("run after Close: %+v", res)
	}
}

// TestConcurrentRunsKeepTheirOwn: many runs in flight at once through the
// one supervisor each get their own script's exit status and output.
func TestConcurrentRunsKeepTheirOwn(t *testing.T) {
	dir := t.TempDir()
	script := writeScript(t, dir, "hook.sh", "#!/bin/sh\n"+
		"/bin/sleep 0.0$((VPN_EVENT_ID % 7))\necho \"out $VPN_EVENT_ID\"\necho \"err $VPN_EVENT_ID\" >&2\nexit $((VPN_EVENT_ID % 100))\n")
	r := newRunner(t, Config{Script: script, Concurrency: 8})
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 64 {
		wg.Go(func() {
			v := connectVars()
			v.EventID = int64(1000 + i)
			res := r.Run(context.Background(), v)
			want := fmt.Sprintf("out %d\n", v.EventID)
			if res.Err != nil || res.ExitCode != int(v.EventID%100) || string(res.Stdout) != want ||
				!bytes.Equal(res.Stderr, []byte(fmt.Sprintf("err %d\n", v.EventID))) {
				errs <- fmt.Errorf("event %d: got %+v", v.EventID, res)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestSupervisorRefusesManualStart: the supervisor's argv[0] alone does not
// make a process serve: without wgkeeper's control socket it exits 125.
func TestSupervisorRefusesManualStart(t *testing.T) {
	cmd := &exec.Cmd{Path: "/proc/self/exe", Args: []string{supervisorArg0, strconv.Itoa(os.Getpid())}}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 125 || !strings.Contains(string(out), "started only by wgkeeper") {
		t.Fatalf("got %v: %s", err, out)
	}
}

func FuzzDecodeStart(f *testing.F) {
	b, _ := encodeStart(1, true, "/usr/local/bin/hook", []string{"PATH=/bin", "VPN_EVENT=C"})
	f.Add(b[headerSize:])
	f.Add([]byte{})
	f.Add([]byte{5, 0, 0, 0, 'a'})
	f.Fuzz(func(t *testing.T, body []byte) {
		argv0, env, err := decodeStart(body)
		if err != nil {
			return
		}
		again, err := encodeStart(1, false, argv0, env)
		if err != nil {
			t.Fatalf("decoded %q %q, encoding fails: %v", argv0, env, err)
		}
		if !bytes.Equal(again[headerSize:], body) {
			t.Fatalf("round trip of %q gave %q", body, again[headerSize:])
		}
		for _, s := range append([]string{argv0}, env...) {
			if strings.IndexByte(s, 0) >= 0 {
				t.Fatalf("NUL byte in %q", s)
			}
		}
	})
}
