package hooks

// A script must never outlive the wgkeeper process that started it: after
// a crash nobody would bound its run any more, and a connect script still
// running after the stale-pending cleanup announced its disconnect would
// open the firewall for a config that is gone.
//
// The kernel's tool for this, PR_SET_PDEATHSIG, has two limits, and this
// file works around both:
//
//   - It fires when the *thread* that forked the child exits, not the
//     process. Go forks on whatever thread the calling goroutine runs on,
//     and retires idle threads. So every run is started from one
//     goroutine locked to its OS thread for the life of the process
//     (startLocked): that thread exits only when the process does.
//   - It reaches only the direct child, not the rest of its process group:
//     a script's background children would live on. So the direct child
//     is not the script but a supervisor: this program re-executed
//     (/proc/self/exe) with argv[0] supervisorArg0, caught in this
//     package's init before anything else runs. The supervisor leads the
//     process group, starts the script in it, waits for it, and reports
//     how it ended through a pipe. When wgkeeper dies it gets deathSignal,
//     kills its whole group with SIGKILL (itself included) and is gone.
//
// Other ways were weighed: a cgroup per run (cgroup.kill) needs a
// delegated cgroup tree that plain installs do not have; a shell as the
// supervisor depends on its trap and wait semantics and loses exact wait
// statuses; making the script itself the direct child leaves its
// children behind. A re-executed wgkeeper costs a few milliseconds per run
// (the Go runtime's start), well below any script's own cost.
//
// The supervisor also executes the script by descriptor: it inherits the
// descriptor of the file the runner checked as fd 4 (without close-on-exec)
// and executes /proc/self/fd/4, so what runs is the inode that passed the
// check, whatever has been renamed over the path since. For a "#!" script
// the kernel hands the interpreter the path /proc/self/fd/4, which the
// interpreter opens again: that is why fd 4 stays open in the script (and
// is inherited by its children). execveat(AT_EMPTY_PATH) would do the same
// and give the process a nicer name, but Go's fork-and-exec offers no way
// to call it in the child. One visible consequence: a script's $0 is
// /proc/self/fd/4; `readlink -f "$0"` gives its real path. Descriptor 3
// is Vars.Hold (when set), passed through to the script unchanged.

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// supervisorArg0 is argv[0] of a process started as a script's supervisor;
// argv[1] is the configured script path (the script's argv[0]) and
// argv[2] the process ID of the wgkeeper that started it.
const supervisorArg0 = "wgkeeper-hook-supervisor"

// Descriptors of the supervisor, inherited from the runner.
const (
	holdFD   = 3 // Vars.Hold, or closed; the script inherits it
	scriptFD = 4 // the checked script (O_PATH); the script inherits it
	reportFD = 5 // write end of the report pipe; close-on-exec in the supervisor
)

// deathSignal is what the kernel sends the supervisor when wgkeeper dies
// (Pdeathsig). A signal nothing else sends the group: the runner's timeout
// sends SIGTERM, which the supervisor must survive to report the script's
// end.
const deathSignal = syscall.SIGUSR1

// The supervisor's reports: kind and value, 4 bytes each, little endian.
// A run reports reportStarted then reportWaitStatus, or reportExecError
// alone.
const (
	reportWaitStatus = 1 // value: the script's wait status
	reportExecError  = 2 // value: the errno of executing the script
	reportStarted    = 3 // value: the script's process ID
	reportSize       = 8
)

// StartLimit bounds how long a supervisor may take to start the script,
// before the script's own timeout begins: the start of a process is not
// the script's time, but it cannot take forever either. A run that does
// not start within it is stopped as timed out.
const StartLimit = 5 * time.Second

func init() {
	if len(os.Args) == 3 && os.Args[0] == supervisorArg0 {
		// syscall.Exit, not os.Exit: nothing is left to flush, and a
		// binary built with the race detector would otherwise linger in
		// its exit handler, holding up the end of every run.
		syscall.Exit(supervise(os.Args[1], os.Args[2]))
	}
}

// supervise is the whole life of a supervisor process: start the script
// from scriptFD, wait for it, report how it ended on reportFD, and kill the
// group if wgkeeper dies meanwhile. It returns the supervisor's exit status.
func supervise(script, parent string) int {
	ppid, err := strconv.Atoi(parent)
	var st syscall.Stat_t
	if err != nil || syscall.Fstat(reportFD, &st) != nil || st.Mode&syscall.S_IFMT != syscall.S_IFIFO {
		fmt.Fprintln(os.Stderr, "wgkeeper: the hook supervisor is started only by wgkeeper itself")
		return 125
	}
	syscall.CloseOnExec(reportFD)
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, deathSignal, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	// wgkeeper may have died before the handler existed: its signal was
	// then lost, but this process has been re-parented.
	if os.Getppid() != ppid {
		return 125
	}
	go func() {
		for s := range sigs {
			// Pdeathsig also fires when the forking thread alone exits,
			// which startLocked prevents; a re-parented process is
			// certain. SIGTERM and the like reached the whole group (a
			// timeout): the script got them too; stay to report.
			if s == deathSignal && os.Getppid() != ppid {
				_ = syscall.Kill(0, syscall.SIGKILL)
			}
		}
	}()

	pid, err := startScript(script)
	if err != nil {
		errno, ok := err.(syscall.Errno)
		if !ok {
			errno = syscall.EINVAL
		}
		writeReport(reportExecError, uint32(errno))
		return 0
	}
	writeReport(reportStarted, uint32(pid))
	var ws syscall.WaitStatus
	for {
		_, err = syscall.Wait4(pid, &ws, 0, nil)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "wgkeeper: hook supervisor: wait for the script: %v\n", err)
		return 125
	}
	writeReport(reportWaitStatus, uint32(ws))
	return 0
}

// startScript executes the checked script (scriptFD) in this process
// group, with this process's environment and working directory, the hold
// descriptor when there is one, retrying briefly on ETXTBSY (a script
// still open for writing: being deployed, or inherited across a concurrent
// fork).
func startScript(script string) (int, error) {
	hold := uintptr(holdFD)
	var st syscall.Stat_t
	if syscall.Fstat(holdFD, &st) != nil {
		hold = ^uintptr(0) // closed in the script too
	}
	attr := &syscall.ProcAttr{Env: os.Environ(), Files: []uintptr{0, 1, 2, hold, scriptFD}}
	delay := 5 * time.Millisecond
	for attempt := 0; ; attempt++ {
		pid, err := syscall.ForkExec("/proc/self/fd/"+strconv.Itoa(scriptFD), []string{script}, attr)
		if err != syscall.ETXTBSY || attempt == 5 {
			return pid, err
		}
		time.Sleep(delay)
		delay *= 2
	}
}

func writeReport(kind, value uint32) {
	var b [reportSize]byte
	binary.LittleEndian.PutUint32(b[0:], kind)
	binary.LittleEndian.PutUint32(b[4:], value)
	for {
		_, err := syscall.Write(reportFD, b[:])
		if err != syscall.EINTR {
			return
		}
	}
}

// report is what a supervisor said about its script.
type report struct {
	kind, value uint32
}

// reportPipe returns the runner's end of a report pipe (served by the
// runtime's poller) and the supervisor's end (an ordinary blocking
// descriptor the poller never sees). Both are close-on-exec.
func reportPipe() (r, w *os.File, err error) {
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC); err != nil {
		return nil, nil, err
	}
	if err := syscall.SetNonblock(p[0], true); err != nil {
		syscall.Close(p[0])
		syscall.Close(p[1])
		return nil, nil, err
	}
	return os.NewFile(uintptr(p[0]), "|report"), os.NewFile(uintptr(p[1]), "|report-w"), nil
}

// reports reads a supervisor's reports from r until EOF (or until r is
// closed): started is closed at reportStarted, and the final report (wait
// status or exec error), if any, is in final once done is closed.
type reports struct {
	started chan struct{}
	done    chan struct{}
	final   report
	ok      bool // a final report was read
}

func readReports(r io.Reader) *reports {
	rs := &reports{started: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(rs.done)
		startedClosed := false
		var b [reportSize]byte
		for {
			if _, err := io.ReadFull(r, b[:]); err != nil {
				return
			}
			rep := report{kind: binary.LittleEndian.Uint32(b[0:]), value: binary.LittleEndian.Uint32(b[4:])}
			switch rep.kind {
			case reportStarted:
				if !startedClosed {
					startedClosed = true
					close(rs.started)
				}
			case reportWaitStatus, reportExecError:
				rs.final, rs.ok = rep, true
			}
		}
	}()
	return rs
}

// supervisorCmd is the command that starts a supervisor for one run of the
// script (the checked descriptor) with the script's environment, output
// pipes and hold descriptor (nil: none). It leads a new process group and
// gets deathSignal when wgkeeper dies.
func supervisorCmd(scriptPath string, hold, script, report *os.File, env []string, stdout, stderr *os.File) *exec.Cmd {
	return &exec.Cmd{
		Path:       "/proc/self/exe",
		Args:       []string{supervisorArg0, scriptPath, strconv.Itoa(os.Getpid())},
		Env:        env,
		Dir:        "/",
		Stdout:     stdout,
		Stderr:     stderr,
		ExtraFiles: []*os.File{hold, script, report}, // fds 3, 4 and 5
		SysProcAttr: &syscall.SysProcAttr{
			Setpgid:   true,
			Pdeathsig: deathSignal,
		},
	}
}

// starter is the goroutine that starts every supervisor, locked to one OS
// thread for the life of the process (see the top of this file).
var starter struct {
	once sync.Once
	reqs chan startRequest
}

type startRequest struct {
	cmd  *exec.Cmd
	done chan error
}

// startLocked starts cmd from the locked starter thread and returns
// cmd.Start's error. Starts are serialised; each costs a fork and exec
// (well under a millisecond of this thread's time).
func startLocked(cmd *exec.Cmd) error {
	starter.once.Do(func() {
		starter.reqs = make(chan startRequest)
		go func() {
			// Never unlocked: the goroutine never returns, so its thread
			// lives until the process ends, and with it every child's
			// parent thread.
			runtime.LockOSThread()
			for req := range starter.reqs {
				req.done <- req.cmd.Start()
			}
		}()
	})
	done := make(chan error, 1)
	starter.reqs <- startRequest{cmd: cmd, done: done}
	return <-done
}
