package hooks

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// envDeathScript makes TestDeathHelper, run in a child process, run that
// script through a Runner.
const envDeathScript = "WGKEEPER_TEST_DEATH_SCRIPT"

// TestDeathHelper is the process TestScriptDiesWithParent kills: it runs
// one script with an hour's timeout and waits for it.
func TestDeathHelper(t *testing.T) {
	script := os.Getenv(envDeathScript)
	if script == "" {
		t.Skip("helper process of TestScriptDiesWithParent")
	}
	r, err := New(Config{Script: script, Timeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	res := r.Run(context.Background(), connectVars())
	t.Fatalf("the script ended while its parent lived: %+v", res)
}

// TestScriptDiesWithParent: a wgkeeper process killed with SIGKILL while its
// script runs takes the script and everything in its process group along
// (here a child the script started and that child's own child), within
// seconds.
func TestScriptDiesWithParent(t *testing.T) {
	dir := realTempDir(t)
	pids := filepath.Join(dir, "pids")
	script := familyScript(t, dir, pids)

	helper := exec.Command(os.Args[0], "-test.run=^TestDeathHelper$", "-test.count=1")
	helper.Env = append(os.Environ(), envDeathScript+"="+script)
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = helper.Process.Kill(); _ = helper.Wait() })

	p := waitPIDs(t, pids, 3)
	pgid, err := syscall.Getpgid(p[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, pid := range p[1:] {
		if pg, err := syscall.Getpgid(pid); err != nil || pg != pgid || pgid == helper.Process.Pid {
			t.Fatalf("script group %d, %d's %d (%v), helper %d", pgid, pid, pg, err, helper.Process.Pid)
		}
	}
	t.Cleanup(func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) })

	if err := helper.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = helper.Wait()
	requireGone(t, 5*time.Second, pgid, p...)

	// The helper's supervisor is gone too.
	want := supervisorArg0 + "\x00" + strconv.Itoa(helper.Process.Pid) + "\x00"
	deadline := time.Now().Add(5 * time.Second)
	for {
		var left []string
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			if err == nil && string(b) == want {
				if st, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); !strings.Contains(string(st), ") Z ") {
					left = append(left, e.Name())
				}
			}
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the dead helper's supervisor lives on: %v", left)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
