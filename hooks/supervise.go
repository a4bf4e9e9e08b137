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
//     and a thread ends when a goroutine exits while locked to it (code
//     anywhere in the program may do that). So every fork that sets it is
//     done from a goroutine locked to its OS thread for the life of the
//     process: startLocked here, the event loops in the supervisor. Those
//     threads exit only when their process does.
//   - It reaches only the direct child, not the rest of its process group:
//     a script's background children would live on. So scripts are not
//     wgkeeper's children but a supervisor's: this program re-executed
//     (/proc/self/exe) with argv[0] supervisorArg0, caught in this
//     package's init before anything else runs. One supervisor serves
//     every run of the process; the first run starts it. It starts each
//     script in a process group of its own, with Pdeathsig too, tracks
//     those groups, and kills every one of them with SIGKILL when
//     wgkeeper dies: it gets deathSignal (Pdeathsig), and its control
//     socket reaches end of file, whichever it sees first.
//
// wgkeeper talks to the supervisor over unix socketpairs of SOCK_SEQPACKET
// (one message per request, never split or merged, so runs in flight
// share them; one per event loop of the supervisor, taken in turn, so that
// concurrent runs are started concurrently). A start request carries the
// run's tag, the script's argv[0] and
// environment, and, as SCM_RIGHTS, the checked script, the write ends of
// the stdout and stderr pipes and of the run's report pipe, and the hold
// descriptor. On the report pipe, which only this run's goroutine reads
// (no hand-off between goroutines), the supervisor answers with the
// script's process ID (or the errno of executing it) and later its exact
// wait status. Right after the script exits, and before it is reaped, the
// supervisor kills what is left of its group: while the script is an
// unreaped zombie its process group ID cannot be reused, and only the
// supervisor knows when it reaps. That is also why wgkeeper does not
// signal a group itself at a timeout but asks the supervisor to (a signal
// request with the run's tag): the supervisor signals a group only while
// its leader is unreaped.
//
// When the supervisor dies (killed, say, by an operator's kill -9), its
// scripts get SIGKILL from their own Pdeathsig, and every run in flight
// sees its report pipe end: it kills the group it was told about and ends
// with an error. The next run starts a new supervisor. (A script that had
// started but not yet been reported has no known group: only its own
// Pdeathsig stops it, a window of moments between fork and report.)
//
// Other ways were weighed. A supervisor per run (this program re-executed
// for every run) gives the same guarantees but costs a Go program's start,
// several milliseconds, on every run: a sixth to an eighth of the rate of
// a plain exec. PR_SET_CHILD_SUBREAPER on wgkeeper would let it adopt and kill a
// script's orphans, but not when wgkeeper itself dies, which is the case
// that matters, and a subreaper must reap every orphan of the tree, which
// Go's os/exec does not. A cgroup per run (cgroup.kill) needs a delegated
// cgroup tree that plain installs do not have; a shell as the supervisor
// depends on its trap and wait semantics and loses exact wait statuses;
// making the script a direct child of wgkeeper leaves its children
// behind.
//
// The supervisor executes the script by descriptor: the script inherits
// the descriptor of the file the runner checked as fd 4 (without
// close-on-exec) and the supervisor executes /proc/self/fd/4, so what runs
// is the inode that passed the check, whatever has been renamed over the
// path since. For a "#!" script the kernel hands the interpreter the path
// /proc/self/fd/4, which the interpreter opens again: that is why fd 4
// stays open in the script (and is inherited by its children).
// execveat(AT_EMPTY_PATH) would do the same and give the process a nicer
// name, but Go's fork-and-exec offers no way to call it in the child. One
// visible consequence: a script's $0 is /proc/self/fd/4; `readlink -f "$0"`
// gives its real path. Descriptor 3 is Vars.Hold (when set), passed
// through to the script unchanged.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// supervisorArg0 is argv[0] of a process started as the supervisor;
// argv[1] is the process ID of the wgkeeper that started it.
const supervisorArg0 = "wgkeeper-hook-supervisor"

// controlFD is the supervisor's end of the first control socket; the
// others (one per event loop, servers in all) follow it.
const controlFD = 3

// Descriptors of a script.
const (
	holdFD   = 3 // Vars.Hold, or closed
	scriptFD = 4 // the checked script (O_PATH)
)

// deathSignal is what the kernel sends the supervisor when wgkeeper dies
// (Pdeathsig). The supervisor handles (and otherwise ignores) SIGTERM,
// SIGINT and SIGHUP too: it leads a process group of its own, and one sent
// to all of wgkeeper's processes must not end the runs wgkeeper may still
// be waiting for.
const deathSignal = syscall.SIGUSR1

// StartLimit bounds how long the script may take to start after a run
// asked the supervisor for it (the supervisor's own start included, when
// the run is the first), before the script's own timeout begins: the
// start of a process is not the script's time, but it cannot take forever
// either. A run that does not start within it is stopped as timed out.
const StartLimit = 5 * time.Second

// The control protocol. Every message starts with a header: op and arg,
// 4 bytes each, and the run's tag, 8 bytes, little endian. A start
// request follows it with strings (4-byte length, bytes): the script's
// argv[0], then its environment.
const (
	opStart   = 1 // arg: startHold when the hold descriptor is passed
	opSignal  = 2 // arg: the signal for the run's process group
	opStarted = 3 // arg: the script's process ID
	opExecErr = 4 // arg: the errno of executing the script; the run is over
	opExited  = 5 // arg: the script's wait status; the run is over

	startHold  = 1
	headerSize = 16
	// maxMessage bounds a start request; the default socket buffer holds
	// it whole.
	maxMessage = 128 << 10
)

// Descriptors of a start request, in this order.
const (
	rightScript = iota
	rightStdout
	rightStderr
	rightReport // the write end of the run's report pipe
	rightHold   // only with startHold
)

type header struct {
	op, arg uint32
	id      uint64
}

func appendHeader(b []byte, h header) []byte {
	b = binary.LittleEndian.AppendUint32(b, h.op)
	b = binary.LittleEndian.AppendUint32(b, h.arg)
	return binary.LittleEndian.AppendUint64(b, h.id)
}

func parseHeader(b []byte) (header, error) {
	if len(b) < headerSize {
		return header{}, fmt.Errorf("hook supervisor message of %d bytes is shorter than its header", len(b))
	}
	return header{
		op:  binary.LittleEndian.Uint32(b[0:]),
		arg: binary.LittleEndian.Uint32(b[4:]),
		id:  binary.LittleEndian.Uint64(b[8:]),
	}, nil
}

// encodeStart returns the start request of run id.
func encodeStart(id uint64, hold bool, argv0 string, env []string) ([]byte, error) {
	h := header{op: opStart, id: id}
	if hold {
		h.arg = startHold
	}
	size := headerSize + 4 + len(argv0)
	for _, e := range env {
		size += 4 + len(e)
	}
	if size > maxMessage {
		return nil, fmt.Errorf("environment of %d bytes is over the limit of %d", size, maxMessage)
	}
	b := appendHeader(make([]byte, 0, size), h)
	for _, s := range append([]string{argv0}, env...) {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	return b, nil
}

// decodeStart parses the body of a start request (after the header): the
// script's argv[0] and environment. No string may hold a NUL byte.
func decodeStart(b []byte) (argv0 string, env []string, err error) {
	var strs []string
	for len(b) > 0 {
		if len(b) < 4 {
			return "", nil, errors.New("hook supervisor start request: truncated length")
		}
		n := binary.LittleEndian.Uint32(b)
		b = b[4:]
		if uint64(n) > uint64(len(b)) {
			return "", nil, fmt.Errorf("hook supervisor start request: string of %d bytes in %d left", n, len(b))
		}
		s := string(b[:n])
		for i := 0; i < len(s); i++ {
			if s[i] == 0 {
				return "", nil, errors.New("hook supervisor start request: NUL byte in a string")
			}
		}
		strs = append(strs, s)
		b = b[n:]
	}
	if len(strs) == 0 {
		return "", nil, errors.New("hook supervisor start request: no argv[0]")
	}
	return strs[0], strs[1:], nil
}

func init() {
	if len(os.Args) == 2 && os.Args[0] == supervisorArg0 {
		// syscall.Exit, not os.Exit: nothing is left to flush, and a
		// binary built with the race detector would otherwise linger in
		// its exit handler.
		syscall.Exit(supervise(os.Args[1]))
	}
}

// server is the supervisor's state. A few threads, each locked for the
// life of the supervisor, do all the work, each in an event loop of its
// own (serve) with a control socket of its own: it takes the requests of
// its socket one at a time, forks the scripts, and reaps them when their
// pidfds become readable. Every event wakes the one thread it concerns
// directly, and nothing is handed from one thread to another on the way,
// so a run costs the supervisor about what a plain fork, exec and wait
// would; wgkeeper spreads runs over the sockets, so several threads fork
// at once, as concurrent exec.Commands would. A run's requests all go
// over one socket, so its signal requests are read after its start.
type server struct {
	ppid    int
	devnull int

	mu    sync.Mutex            // guards runs, dying and every serverRun's pid and sig
	runs  map[uint64]*serverRun // runs registered and not yet reaped
	dying bool                  // wgkeeper is gone: start nothing more
}

// servers is how many event loops (and control sockets) the supervisor
// has.
const servers = 4

// loop is one event loop's own state.
type loop struct {
	ctl     int // its control socket
	epfd    int
	byPidfd map[int32]*serverRun // scripts this loop started and reaps
}

// serverRun is one run in the supervisor.
type serverRun struct {
	id    uint64
	argv0 string
	env   []string
	fds   []int // in the order of the right* constants (report: -1); closed once started or failed
	// report is the write end of the run's report pipe, closed after the
	// last report.
	report int

	pid   int            // the script's, once started (its group's ID)
	pidfd int            // the script's pidfd, -1 when the kernel gives none
	sig   syscall.Signal // asked for before the script started
}

// supervise is the whole life of a supervisor process; it returns its exit
// status, after killing every script's group when wgkeeper is gone.
func supervise(parent string) int {
	ppid, err := strconv.Atoi(parent)
	for fd := controlFD; fd < controlFD+servers && err == nil; fd++ {
		var st syscall.Stat_t
		if syscall.Fstat(fd, &st) != nil || st.Mode&syscall.S_IFMT != syscall.S_IFSOCK {
			err = errors.New("not a socket")
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "wgkeeper: the hook supervisor is started only by wgkeeper itself")
		return 125
	}
	for fd := controlFD; fd < controlFD+servers; fd++ {
		syscall.CloseOnExec(fd)
	}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, deathSignal, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	// wgkeeper may have died before the handler existed: its signal was
	// then lost, but this process has been re-parented.
	if os.Getppid() != ppid {
		return 125
	}
	s := &server{ppid: ppid, runs: make(map[uint64]*serverRun)}
	s.devnull, err = syscall.Open(os.DevNull, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	loops := make([]*loop, servers)
	for i := range loops {
		if err != nil {
			break
		}
		l := &loop{ctl: controlFD + i, byPidfd: make(map[int32]*serverRun)}
		if l.epfd, err = syscall.EpollCreate1(syscall.EPOLL_CLOEXEC); err == nil {
			err = syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, l.ctl, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(l.ctl)})
		}
		loops[i] = l
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "wgkeeper: hook supervisor: %v\n", err)
		return 125
	}
	go func() {
		for sig := range sigs {
			// Pdeathsig also fires when the forking thread alone exits,
			// which startLocked prevents; a re-parented process is
			// certain.
			if sig == deathSignal && os.Getppid() != ppid {
				s.killAll()
				syscall.Exit(0)
			}
		}
	}()
	ended := make(chan error, servers)
	for _, l := range loops {
		go func() { ended <- s.serve(l) }()
	}
	err = <-ended
	s.killAll()
	if err != nil {
		fmt.Fprintf(os.Stderr, "wgkeeper: hook supervisor: %v\n", err)
		return 125
	}
	return 0
}

// serve is the event loop, until wgkeeper closes its end of the control
// socket (nil) or sends a malformed request. It runs locked to its OS
// thread for the life of the supervisor: the scripts it starts get SIGKILL
// when that thread exits (Pdeathsig), that is, when the supervisor does.
func (s *server) serve(l *loop) error {
	runtime.LockOSThread() // never unlocked
	buf := make([]byte, maxMessage)
	oob := make([]byte, syscall.CmsgSpace(4*(rightHold+1)))
	events := make([]syscall.EpollEvent, 16)
	for {
		n, err := syscall.EpollWait(l.epfd, events, -1)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("epoll: %w", err)
		}
		for _, ev := range events[:n] {
			if ev.Fd != int32(l.ctl) {
				s.reap(l, l.byPidfd[ev.Fd])
				continue
			}
			if done, err := s.request(l, buf, oob); done || err != nil {
				return err
			}
		}
	}
}

// request handles one request waiting on the loop's control socket, if
// any. It reports whether the socket has ended.
func (s *server) request(l *loop, buf, oob []byte) (bool, error) {
	n, oobn, flags, _, err := syscall.Recvmsg(l.ctl, buf, oob, syscall.MSG_CMSG_CLOEXEC|syscall.MSG_DONTWAIT)
	if err == syscall.EAGAIN || err == syscall.EINTR {
		return false, nil
	}
	if err != nil || n == 0 {
		return true, nil // wgkeeper is gone or closed the socket
	}
	fds, ferr := parseRights(oob[:oobn])
	if flags&(syscall.MSG_TRUNC|syscall.MSG_CTRUNC) != 0 && ferr == nil {
		ferr = errors.New("truncated request")
	}
	h, herr := parseHeader(buf[:n])
	if err := errors.Join(ferr, herr); err != nil {
		closeAll(fds)
		return true, err
	}
	switch h.op {
	case opStart:
		run, err := s.register(h, buf[headerSize:n], fds)
		if err != nil {
			closeAll(fds)
			return true, err
		}
		s.start(l, run)
	case opSignal:
		closeAll(fds)
		s.signal(h.id, syscall.Signal(h.arg))
	default:
		closeAll(fds)
		return true, fmt.Errorf("unknown request %d", h.op)
	}
	return false, nil
}

// register records the run a start request (after its header h: body and
// descriptors) asks for.
func (s *server) register(h header, body []byte, fds []int) (*serverRun, error) {
	want := rightReport + 1
	if h.arg&startHold != 0 {
		want = rightHold + 1
	}
	argv0, env, err := decodeStart(body)
	if err != nil {
		return nil, err
	}
	if len(fds) != want {
		return nil, fmt.Errorf("start request with %d descriptors, want %d", len(fds), want)
	}
	if len(fds) == rightHold {
		fds = append(fds, -1)
	}
	run := &serverRun{id: h.id, argv0: argv0, env: env, report: fds[rightReport], fds: fds, pidfd: -1}
	fds[rightReport] = -1
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.runs[h.id]; dup {
		return nil, fmt.Errorf("start request for run %d, already running", h.id)
	}
	s.runs[h.id] = run
	return run, nil
}

func parseRights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("control message: %w", err)
	}
	var fds []int
	for _, m := range msgs {
		r, err := syscall.ParseUnixRights(&m)
		if err != nil {
			closeAll(fds)
			return nil, fmt.Errorf("control message: %w", err)
		}
		fds = append(fds, r...)
	}
	return fds, nil
}

func closeAll(fds []int) {
	for _, fd := range fds {
		if fd >= 0 {
			syscall.Close(fd)
		}
	}
}

// start executes run's script in a new process group, or reports why it
// could not, retrying briefly on ETXTBSY (a script still open for writing:
// being deployed; the loop waits meanwhile, at most about 150ms).
func (s *server) start(l *loop, run *serverRun) {
	defer closeAll(run.fds)
	attr := &syscall.ProcAttr{
		Dir: "/",
		Env: run.env,
		Files: []uintptr{uintptr(s.devnull), uintptr(run.fds[rightStdout]), uintptr(run.fds[rightStderr]),
			uintptr(run.fds[rightHold]), uintptr(run.fds[rightScript])},
		Sys: &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, PidFD: &run.pidfd},
	}
	var pid int
	var err error
	delay := 5 * time.Millisecond
	for attempt := 0; ; attempt++ {
		pid, err = syscall.ForkExec("/proc/self/fd/"+strconv.Itoa(scriptFD), []string{run.argv0}, attr)
		if err != syscall.ETXTBSY || attempt == 5 {
			break
		}
		time.Sleep(delay)
		delay *= 2
	}
	if err != nil {
		errno, ok := err.(syscall.Errno)
		if !ok {
			errno = syscall.EINVAL
		}
		s.mu.Lock()
		delete(s.runs, run.id)
		s.mu.Unlock()
		s.report(run, opExecErr, uint32(errno))
		return
	}
	s.mu.Lock()
	run.pid = pid
	switch {
	case s.dying:
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	case run.sig != 0:
		_ = syscall.Kill(-pid, run.sig)
	}
	s.mu.Unlock()
	s.report(run, opStarted, uint32(pid))
	if run.pidfd >= 0 {
		err = syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, run.pidfd, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(run.pidfd)})
		if err == nil {
			l.byPidfd[int32(run.pidfd)] = run
			return
		}
		syscall.Close(run.pidfd)
		run.pidfd = -1
	}
	// No pidfd (an old kernel): a goroutine waits instead.
	go func() {
		_ = waitid(pPID, run.pid, syscall.WEXITED|syscall.WNOWAIT)
		s.reap(nil, run)
	}()
}

// reap is called once run's script has exited. While it is still an
// unreaped zombie (so its group ID cannot have been reused) it kills what
// is left of its group, then reaps it and reports its wait status.
func (s *server) reap(l *loop, run *serverRun) {
	if run == nil {
		return
	}
	if run.pidfd >= 0 {
		_ = syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, run.pidfd, nil)
		delete(l.byPidfd, int32(run.pidfd))
		syscall.Close(run.pidfd)
		run.pidfd = -1
	}
	s.mu.Lock()
	_ = syscall.Kill(-run.pid, syscall.SIGKILL)
	var ws syscall.WaitStatus
	var err error
	for {
		_, err = syscall.Wait4(run.pid, &ws, 0, nil)
		if err != syscall.EINTR {
			break
		}
	}
	delete(s.runs, run.id)
	s.mu.Unlock()
	if err != nil {
		fmt.Fprintf(os.Stderr, "wgkeeper: hook supervisor: wait for script %d: %v\n", run.pid, err)
		ws = syscall.WaitStatus(255 << 8)
	}
	s.report(run, opExited, uint32(ws))
}

// signal sends sig to run id's process group while its script is
// unreaped, or, before it started, right when it starts. A run already
// reaped is left alone: its group was killed then.
func (s *server) signal(id uint64, sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	run := s.runs[id]
	switch {
	case run == nil:
	case run.pid == 0:
		if run.sig != syscall.SIGKILL {
			run.sig = sig
		}
	default:
		_ = syscall.Kill(-run.pid, sig)
	}
}

// killAll kills the process group of every run and starts nothing more.
func (s *server) killAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dying = true
	for _, run := range s.runs {
		if run.pid != 0 {
			_ = syscall.Kill(-run.pid, syscall.SIGKILL)
		}
	}
}

// report writes one report to run's report pipe (16 bytes: one write,
// never split), and closes it after the last one. A failed write means
// wgkeeper stopped waiting for the run.
func (s *server) report(run *serverRun, op, arg uint32) {
	msg := appendHeader(make([]byte, 0, headerSize), header{op: op, arg: arg, id: run.id})
	for {
		_, err := syscall.Write(run.report, msg)
		if err != syscall.EINTR {
			break
		}
	}
	if op != opStarted {
		syscall.Close(run.report)
	}
}

const (
	pPID        = 1   // P_PID
	siginfoSize = 128 // sizeof(siginfo_t)
)

// waitid calls waitid(2) until it is not interrupted.
func waitid(idtype, id, options int) error {
	var info [siginfoSize]byte
	for {
		_, _, errno := syscall.Syscall6(syscall.SYS_WAITID, uintptr(idtype), uintptr(id),
			uintptr(unsafe.Pointer(&info[0])), uintptr(options), 0, 0)
		if errno == 0 {
			return nil
		}
		if errno != syscall.EINTR {
			return errno
		}
	}
}

// The client side, in wgkeeper.

// errSupervisorLost ends a run in flight when the supervisor dies or Close
// stops it.
var errSupervisorLost = errors.New("the hook supervisor exited while the script ran; its process group was killed")

// supervisor is this process's supervisor, started by the first run.
var supervisor struct {
	mu     sync.Mutex // guards cur and nextID
	cur    *supervisorConn
	nextID uint64
}

// supervisorConn is one supervisor process and its control sockets, one
// per event loop of the supervisor, taken in turn by the runs. The
// sockets carry requests only; each run gets its reports on a pipe of its
// own, read by the run's goroutine without a hand-off. One goroutine reads
// the first socket only to learn of the supervisor's end.
type supervisorConn struct {
	cmd   *exec.Cmd
	conns [servers]*net.UnixConn
	turn  atomic.Uint32 // the socket of the next run, modulo servers
	lost  atomic.Bool   // the sockets ended: start no run there
	gone  chan struct{} // closed once the supervisor has exited and been reaped
}

// currentSupervisor returns the running supervisor, starting one when there
// is none or the last one is gone.
func currentSupervisor() (*supervisorConn, error) {
	supervisor.mu.Lock()
	defer supervisor.mu.Unlock()
	if s := supervisor.cur; s != nil && !s.lost.Load() {
		return s, nil
	}
	s, err := startSupervisor()
	if err != nil {
		return nil, err
	}
	supervisor.cur = s
	return s, nil
}

func startSupervisor() (*supervisorConn, error) {
	s := &supervisorConn{gone: make(chan struct{})}
	var remotes []*os.File
	defer func() {
		for _, f := range remotes {
			f.Close()
		}
	}()
	dropConns := func() {
		for _, c := range s.conns {
			if c != nil {
				c.Close()
			}
		}
	}
	for i := range s.conns {
		fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			dropConns()
			return nil, fmt.Errorf("control socket: %w", err)
		}
		local := os.NewFile(uintptr(fds[0]), "hook-supervisor")
		remotes = append(remotes, os.NewFile(uintptr(fds[1]), "hook-supervisor-remote"))
		c, err := net.FileConn(local)
		local.Close()
		if err != nil {
			dropConns()
			return nil, fmt.Errorf("control socket: %w", err)
		}
		s.conns[i] = c.(*net.UnixConn)
	}
	cmd := &exec.Cmd{
		Path:       "/proc/self/exe",
		Args:       []string{supervisorArg0, strconv.Itoa(os.Getpid())},
		Env:        []string{},
		Dir:        "/",
		Stderr:     os.Stderr,
		ExtraFiles: remotes, // from controlFD on
		SysProcAttr: &syscall.SysProcAttr{
			Setpgid:   true,
			Pdeathsig: deathSignal,
		},
	}
	if err := startLocked(cmd); err != nil {
		dropConns()
		return nil, err
	}
	s.cmd = cmd
	go s.watch()
	return s, nil
}

// watch waits for the end of the control socket (the supervisor sends
// nothing on it), then reaps the supervisor.
func (s *supervisorConn) watch() {
	var b [headerSize]byte
	for {
		n, err := s.conns[0].Read(b[:])
		if err != nil || n == 0 {
			break
		}
	}
	s.lost.Store(true)
	s.closeConns()
	_ = s.cmd.Wait()
	close(s.gone)
}

// closeConns closes the control sockets: the supervisor reads their end.
func (s *supervisorConn) closeConns() {
	for _, c := range s.conns {
		c.Close()
	}
}

// supervisedRun is one run in flight.
type supervisedRun struct {
	sup    *supervisorConn
	conn   *net.UnixConn // the control socket its requests go over
	id     uint64
	report *os.File // read end of the run's report pipe, served by the poller
}

// start asks the supervisor to start the script checked as script, with
// argv[0] argv0, the environment env, stdout and stderr, and hold as fd 3
// when not nil. The caller may close those descriptors once it returned,
// and must call close on the run when done with it.
func (s *supervisorConn) start(argv0 string, env []string, script, stdout, stderr, hold *os.File) (*supervisedRun, error) {
	supervisor.mu.Lock()
	supervisor.nextID++
	id := supervisor.nextID
	supervisor.mu.Unlock()
	msg, err := encodeStart(id, hold != nil, argv0, env)
	if err != nil {
		return nil, err
	}
	repR, repW, err := reportPipe()
	if err != nil {
		return nil, fmt.Errorf("report pipe: %w", err)
	}
	defer repW.Close()
	files := []*os.File{script, stdout, stderr, repW}
	if hold != nil {
		files = append(files, hold)
	}
	fds := make([]int, len(files))
	for i, f := range files {
		fds[i] = int(f.Fd())
	}
	if s.lost.Load() {
		repR.Close()
		return nil, errSupervisorLost
	}
	conn := s.conns[s.turn.Add(1)%servers]
	_, _, err = conn.WriteMsgUnix(msg, syscall.UnixRights(fds...), nil)
	runtime.KeepAlive(files)
	if err != nil {
		// The socket is broken: the supervisor is gone or going.
		s.lost.Store(true)
		repR.Close()
		return nil, fmt.Errorf("send the start request: %w", err)
	}
	return &supervisedRun{sup: s, conn: conn, id: id, report: repR}, nil
}

// signal asks the supervisor to send sig to the run's process group. When
// the supervisor is gone the group was killed already.
func (r *supervisedRun) signal(sig syscall.Signal) {
	_, _ = r.conn.Write(appendHeader(make([]byte, 0, headerSize), header{op: opSignal, arg: uint32(sig), id: r.id}))
}

// next reads the run's next report. It returns an error wrapping
// os.ErrDeadlineExceeded when the report pipe's deadline passed first, and
// errSupervisorLost when the supervisor ended before reporting.
func (r *supervisedRun) next() (header, error) {
	var b [headerSize]byte
	if _, err := io.ReadFull(r.report, b[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			r.sup.lost.Store(true)
			return header{}, errSupervisorLost
		}
		return header{}, err
	}
	return parseHeader(b[:])
}

func (r *supervisedRun) close() { r.report.Close() }

// reportPipe returns a run's report pipe: the read end served by the
// runtime's poller (so reads take deadlines), the write end an ordinary
// blocking descriptor for the supervisor. Both are close-on-exec.
func reportPipe() (r, w *os.File, err error) {
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		return nil, nil, err
	}
	if err := syscall.SetNonblock(p[1], false); err != nil {
		syscall.Close(p[0])
		syscall.Close(p[1])
		return nil, nil, err
	}
	return os.NewFile(uintptr(p[0]), "|report"), os.NewFile(uintptr(p[1]), "|report-w"), nil
}

// Close stops this process's hook supervisor, if one runs, and returns
// once it has exited: the process groups of runs in flight are killed and
// those runs end with an error. A later run starts a new supervisor. Close
// is for an orderly end of the process (and tests); without it the
// supervisor ends with the process anyway.
func Close() error {
	supervisor.mu.Lock()
	s := supervisor.cur
	supervisor.cur = nil
	supervisor.mu.Unlock()
	if s == nil {
		return nil
	}
	s.lost.Store(true)
	s.closeConns()
	select {
	case <-s.gone:
		return nil
	case <-time.After(StartLimit):
		_ = s.cmd.Process.Kill()
		<-s.gone
		return fmt.Errorf("stop the hook supervisor (pid %d): it did not exit within %s of its socket closing; killed", s.cmd.Process.Pid, StartLimit)
	}
}

// supervisorPID returns the process ID of the running supervisor, 0 when
// none runs (for tests).
func supervisorPID() int {
	supervisor.mu.Lock()
	defer supervisor.mu.Unlock()
	if supervisor.cur == nil {
		return 0
	}
	return supervisor.cur.cmd.Process.Pid
}

// starter is the goroutine that starts the supervisor, locked to one OS
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
// cmd.Start's error.
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

// nextEnd is next after the run's start: a started report still unread
// (the start raced the timeout) is taken into res and skipped.
func (r *supervisedRun) nextEnd(res *Result) (header, error) {
	h, err := r.next()
	if err == nil && h.op == opStarted {
		res.Started = true
		res.PID = int(h.arg)
		h, err = r.next()
	}
	return h, err
}
