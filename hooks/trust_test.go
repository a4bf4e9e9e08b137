package hooks

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestRunRefusesUntrustedPath: a grandparent directory that became
// writable by others after startup lets any local user replace the script;
// the next run is refused before anything runs, naming the directory and
// its mode, and runs again once the directory is fixed.
func TestRunRefusesUntrustedPath(t *testing.T) {
	dir := realTempDir(t)
	top := filepath.Join(dir, "top")
	sub := filepath.Join(top, "sub")
	mkdir(t, top, 0o755)
	mkdir(t, sub, 0o755)
	marker := filepath.Join(dir, "ran")
	path := writeScript(t, sub, "hook.sh", "#!/bin/sh\n: > "+quote(marker)+"\n")
	var buf syncBuffer
	r := newRunner(t, Config{Script: path, Logger: textLogger(&buf)})

	chmod(t, top, 0o777)
	res := r.Run(context.Background(), connectVars())
	var ue *UnsafeError
	if !errors.As(res.Err, &ue) || res.OK() || res.Started || res.PID != 0 {
		t.Fatalf("got %+v, want a refused run with an UnsafeError", res)
	}
	if ue.Path != top || ue.Mode != 0o777 || ue.Script != path {
		t.Errorf("UnsafeError = %+v, want path %s mode 0777", ue, top)
	}
	for _, want := range []string{top, "mode 0777", "writable by group and others"} {
		if !strings.Contains(res.Err.Error(), want) {
			t.Errorf("error %q lacks %q", res.Err, want)
		}
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the script ran below a directory anyone may write")
	}
	log := buf.String()
	if !strings.Contains(log, "level=WARN") || !strings.Contains(log, "path="+top) || !strings.Contains(log, "mode=0777") {
		t.Errorf("log does not say which path and why:\n%s", log)
	}
	if !strings.Contains(log, " err=") || strings.Contains(log, " error=") {
		t.Errorf("log does not carry the error under the key err:\n%s", log)
	}

	chmod(t, top, 0o755)
	if res := r.Run(context.Background(), connectVars()); !res.OK() {
		t.Fatalf("after the fix: %v", res.Failure())
	}
	if _, err := os.Stat(marker); err != nil {
		t.Fatal("the script did not run after the fix")
	}
}

// TestRunOwnershipAndModeChecked: the file itself turned writable by others,
// or handed to another user, is refused at the next run.
func TestRunOwnershipAndModeChecked(t *testing.T) {
	dir := realTempDir(t)
	path := writeScript(t, dir, "hook.sh", "#!/bin/sh\nexit 0\n")
	r := newRunner(t, Config{Script: path})
	chmod(t, path, 0o757)
	var ue *UnsafeError
	if res := r.Run(context.Background(), connectVars()); !errors.As(res.Err, &ue) || ue.Path != path || ue.Mode != 0o757 {
		t.Fatalf("writable by others: %+v", res)
	}
	chmod(t, path, 0o755)
	if os.Geteuid() == 0 {
		if err := os.Chown(path, 12345, 12345); err != nil {
			t.Fatal(err)
		}
		if res := r.Run(context.Background(), connectVars()); !errors.As(res.Err, &ue) || ue.UID != 12345 {
			t.Fatalf("owned by another user: %+v", res)
		}
	}
}

// TestRunAcceptsStickyDirectory: a script in a /tmp-style directory (sticky,
// writable by all), owned by root or wgkeeper's user, runs.
func TestRunAcceptsStickyDirectory(t *testing.T) {
	dir := realTempDir(t)
	tmp := filepath.Join(dir, "tmp")
	mkdir(t, tmp, 0o1777)
	path := writeScript(t, tmp, "hook.sh", "#!/bin/sh\necho ok\n")
	r := newRunner(t, Config{Script: path})
	if res := r.Run(context.Background(), connectVars()); !res.OK() || string(res.Stdout) != "ok\n" {
		t.Fatalf("got %+v (%v)", res, res.Failure())
	}
}

// TestRunExecutesCheckedFile: a different file renamed over the script's
// path between the check and the start does not run; the checked one does,
// for an interpreted script (whose interpreter opens the path it is given
// again) and for a binary.
func TestRunExecutesCheckedFile(t *testing.T) {
	for _, tt := range []struct {
		name     string
		original func(t *testing.T, path string)
		wantOut  string
	}{
		{"script", func(t *testing.T, path string) {
			writeScript(t, filepath.Dir(path), filepath.Base(path), "#!/bin/sh\necho checked\nexit 0\n")
		}, "checked\n"},
		{"binary", func(t *testing.T, path string) {
			copyFile(t, "/bin/true", path, 0o755)
		}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := realTempDir(t)
			path := filepath.Join(dir, "hook")
			tt.original(t, path)
			r := newRunner(t, Config{Script: path})
			evil := writeScript(t, dir, "evil.sh", "#!/bin/sh\necho swapped\nexit 9\n")
			swapped := false
			r.afterCheck = func() {
				if !swapped {
					swapped = true
					if err := os.Rename(evil, path); err != nil {
						t.Error(err)
					}
				}
			}
			res := r.Run(context.Background(), connectVars())
			if !swapped {
				t.Fatal("the test hook did not run")
			}
			if !res.OK() || string(res.Stdout) != tt.wantOut {
				t.Fatalf("got exit %d, stdout %q (%v): the file renamed over the path ran, not the checked one", res.ExitCode, res.Stdout, res.Failure())
			}
			// The next run checks and runs what the path names now.
			if res := r.Run(context.Background(), connectVars()); res.ExitCode != 9 || string(res.Stdout) != "swapped\n" {
				t.Fatalf("next run: exit %d stdout %q", res.ExitCode, res.Stdout)
			}
		})
	}
}

// TestScriptSeesItsPath: $0 of an interpreted script names the descriptor
// it runs from, and readlink -f "$0" its real path.
func TestScriptSeesItsPath(t *testing.T) {
	dir := realTempDir(t)
	path := writeScript(t, dir, "hook.sh", "#!/bin/sh\nreadlink -f \"$0\"\n")
	r := newRunner(t, Config{Script: path})
	if res := r.Run(context.Background(), connectVars()); !res.OK() || string(res.Stdout) != path+"\n" {
		t.Fatalf("got %q (%v), want %s", res.Stdout, res.Failure(), path)
	}
}

// TestQueueTimeout: with every slot busy, a run waits at most QueueTimeout
// and is then refused with ErrBusy, running nothing; the time a run waited
// for its slot does not count against its timeout.
func TestQueueTimeout(t *testing.T) {
	dir := realTempDir(t)
	slow := writeScript(t, dir, "slow.sh", "#!/bin/sh\nsleep 1\n")
	r := newRunner(t, Config{Script: slow, Concurrency: 1, Timeout: 2 * time.Second})

	first := make(chan Result)
	go func() { first <- r.Run(context.Background(), connectVars()) }()
	waitBusy(t, r)
	begin := time.Now()
	res := r.RunWith(context.Background(), connectVars(), RunOptions{QueueTimeout: 100 * time.Millisecond})
	if waited := time.Since(begin); waited < 100*time.Millisecond || waited > 2*time.Second {
		t.Errorf("refused after %s, want about 100ms", waited)
	}
	if !errors.Is(res.Err, ErrBusy) || res.TimedOut || res.Started || res.PID != 0 || res.OK() {
		t.Fatalf("got %+v, want a refused run matching ErrBusy", res)
	}
	if !strings.Contains(res.Err.Error(), "all 1 slots stayed busy for 100ms") {
		t.Errorf("error %q", res.Err)
	}
	if r := <-first; !r.OK() {
		t.Fatal(r.Failure())
	}

	// Four runs of 1s through one slot: the last waits 3s, longer than
	// the 2s timeout, and still runs to its end.
	var wg sync.WaitGroup
	results := make([]Result, 4)
	for i := range results {
		wg.Go(func() {
			results[i] = r.RunWith(context.Background(), connectVars(), RunOptions{QueueTimeout: 10 * time.Second})
		})
	}
	wg.Wait()
	for i, res := range results {
		if !res.OK() || res.TimedOut {
			t.Errorf("run %d: %+v (%v): killed for time spent waiting", i, res, res.Failure())
		}
	}
}

// waitBusy waits until every slot of r is taken.
func waitBusy(t *testing.T, r *Runner) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(r.sem) < cap(r.sem) {
		if time.Now().After(deadline) {
			t.Fatal("slots never became busy")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestStartingCallback: Starting runs once, after the check and before the
// script starts; an error from it refuses the run.
func TestStartingCallback(t *testing.T) {
	dir := realTempDir(t)
	flag := filepath.Join(dir, "started")
	marker := filepath.Join(dir, "ran")
	path := writeScript(t, dir, "hook.sh", "#!/bin/sh\n: > "+quote(marker)+"\n[ -f "+quote(flag)+" ] || exit 9\n")
	r := newRunner(t, Config{Script: path})
	calls := 0
	res := r.RunWith(context.Background(), connectVars(), RunOptions{Starting: func() error {
		calls++
		if _, err := os.Stat(marker); err == nil {
			t.Error("Starting called after the script started")
		}
		return os.WriteFile(flag, nil, 0o600)
	}})
	if !res.OK() || !res.Started || calls != 1 {
		t.Fatalf("got %+v (%v), %d calls", res, res.Failure(), calls)
	}
	os.Remove(marker)

	refused := errors.New("config gone")
	res = r.RunWith(context.Background(), connectVars(), RunOptions{Starting: func() error { return refused }})
	if !errors.Is(res.Err, refused) || res.Started || res.PID != 0 {
		t.Fatalf("got %+v, want a refused run wrapping the callback's error", res)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the script ran although Starting refused")
	}

	// A refused check never reaches Starting.
	chmod(t, path, 0o777)
	res = r.RunWith(context.Background(), connectVars(), RunOptions{Starting: func() error {
		t.Error("Starting called for an unsafe script")
		return nil
	}})
	var ue *UnsafeError
	if !errors.As(res.Err, &ue) {
		t.Fatalf("got %+v", res)
	}
}

// realTempDir is t.TempDir with symbolic links resolved.
func realTempDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return dir
}
