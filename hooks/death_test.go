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
// (here a background child the script started), within seconds.
func TestScriptDiesWithParent(t *testing.T) {
	dir := realTempDir(t)
	pids := filepath.Join(dir, "pids")
	script := writeScript(t, dir, "hook.sh", "#!/bin/sh\n/bin/sleep 300 &\necho \"$$ $!\" > "+quote(pids+".tmp")+
		"\n/bin/mv "+quote(pids+".tmp")+" "+quote(pids)+"\n/bin/sleep 300\n")

	helper := exec.Command(os.Args[0], "-test.run=^TestDeathHelper$", "-test.count=1")
	helper.Env = append(os.Environ(), envDeathScript+"="+script)
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = helper.Process.Kill(); _ = helper.Wait() })

	var scriptPID, childPID int
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, err := os.ReadFile(pids)
		if err == nil {
			f := strings.Fields(string(b))
			if len(f) == 2 {
				scriptPID, _ = strconv.Atoi(f[0])
				childPID, _ = strconv.Atoi(f[1])
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the script never started")
		}
		time.Sleep(10 * time.Millisecond)
	}
	pgid, err := syscall.Getpgid(scriptPID)
	if err != nil {
		t.Fatal(err)
	}
	if cpg, err := syscall.Getpgid(childPID); err != nil || cpg != pgid || pgid == helper.Process.Pid {
		t.Fatalf("script group %d, child's %d (%v), helper %d", pgid, cpg, err, helper.Process.Pid)
	}
	t.Cleanup(func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) })

	if err := helper.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = helper.Wait()

	deadline = time.Now().Add(5 * time.Second)
	for {
		left := groupMembers(t, pgid)
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("5s after its parent was killed, processes of the script's group live on: %v", left)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := syscall.Kill(childPID, 0); err == nil {
		if b, _ := os.ReadFile("/proc/" + strconv.Itoa(childPID) + "/stat"); !strings.Contains(string(b), ") Z ") {
			t.Fatalf("the script's background child %d lives on", childPID)
		}
	}
}
