package hooks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/wgkeeper/wgkeeper/config"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultTimeout     = 30 * time.Second
	DefaultConcurrency = 4
	DefaultKillGrace   = 2 * time.Second
)

// DefaultPath is the PATH a script gets when wgkeeper itself runs without one.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// OutputLimit is how many bytes of stdout and of stderr are kept per run;
// the rest is read, counted and dropped, so a script can never block on a
// full pipe nor make wgkeeper hold more than this in memory.
const OutputLimit = 64 << 10

// drainWait bounds how long output is still read after every process of the
// script's group is gone; only a process that left the group (setsid) can
// keep the pipes open that long.
const drainWait = 500 * time.Millisecond

// Config configures a Runner. Zero values take the defaults above.
type Config struct {
	// Script is the absolute path of the executable; "" means no script:
	// Run then does nothing and reports Ran == false.
	Script string
	// Timeout bounds one run (default 30s). When it passes, the script's
	// whole process group gets SIGTERM, and SIGKILL KillGrace later.
	Timeout time.Duration
	// Concurrency bounds the runs in progress at once across all callers of
	// the Runner (default 4).
	Concurrency int
	// PassEnv names variables copied from wgkeeper's environment (as it is
	// at each run) to the script when set there. PATH is always passed;
	// VPN_* names are reserved.
	PassEnv []string
	// Logger receives one line per run (nil discards).
	Logger *slog.Logger
	// KillGrace is the time between SIGTERM and SIGKILL (default 2s).
	KillGrace time.Duration
}

// Runner runs the hook script. It is safe for concurrent use.
type Runner struct {
	script  string
	timeout time.Duration
	grace   time.Duration
	passEnv []string
	log     *slog.Logger
	sem     chan struct{}

	// afterCheck, when set (tests only), is called between the check of
	// the script's path and the start of the checked descriptor.
	afterCheck func()
}

// New validates cfg and returns a Runner. When cfg.Script is set it must
// pass CheckScript; the error then names the rule broken, and wgkeeper must
// refuse to start. Negative durations or concurrency and invalid or reserved
// PassEnv names are errors too.
func New(cfg Config) (*Runner, error) {
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("hooks timeout %s is negative", cfg.Timeout)
	}
	if cfg.KillGrace < 0 {
		return nil, fmt.Errorf("hooks kill grace %s is negative", cfg.KillGrace)
	}
	if cfg.Concurrency < 0 {
		return nil, fmt.Errorf("hooks concurrency %d is negative", cfg.Concurrency)
	}
	r := &Runner{
		script:  cfg.Script,
		timeout: cfg.Timeout,
		grace:   cfg.KillGrace,
		log:     cfg.Logger,
	}
	if r.timeout == 0 {
		r.timeout = DefaultTimeout
	}
	if r.grace == 0 {
		r.grace = DefaultKillGrace
	}
	n := cfg.Concurrency
	if n == 0 {
		n = DefaultConcurrency
	}
	r.sem = make(chan struct{}, n)
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	seen := map[string]bool{"PATH": true}
	for _, name := range cfg.PassEnv {
		if err := checkEnvName(name); err != nil {
			return nil, err
		}
		if !seen[name] {
			seen[name] = true
			r.passEnv = append(r.passEnv, name)
		}
	}
	if r.script != "" {
		if err := CheckScript(r.script); err != nil {
			return nil, err
		}
	}
	return r, nil
}

func checkEnvName(name string) error {
	if name == "" {
		return errors.New("hooks pass_env: empty variable name")
	}
	for i, c := range name {
		ok := c == '_' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || i > 0 && '0' <= c && c <= '9'
		if !ok {
			return fmt.Errorf("hooks pass_env: %q is not a valid variable name (letters, digits and _, not starting with a digit)", name)
		}
	}
	if strings.HasPrefix(name, "VPN_") {
		return fmt.Errorf("hooks pass_env: %q is reserved: wgkeeper sets the VPN_* variables itself", name)
	}
	return nil
}

// Configured reports whether a script is configured.
func (r *Runner) Configured() bool { return r.script != "" }

// Script returns the configured script path ("" when none).
func (r *Runner) Script() string { return r.script }

// Result is what happened in one Run.
type Result struct {
	// Ran is false only when no script is configured; nothing was run then.
	Ran bool
	// ExitCode is the script's exit status. It is 127 when the script or
	// the interpreter on its #! line does not exist, and 126 when it cannot
	// be executed (permission denied, not an executable format), as a shell
	// would report; Err then says which. It is -1 when the script was
	// killed by a signal (see Signal) or never started for another reason.
	ExitCode int
	// Signal is the signal that ended the script, 0 when it exited.
	Signal syscall.Signal
	// TimedOut is true when the run was stopped because the timeout, or the
	// deadline of the caller's context, passed.
	TimedOut bool
	// Duration is the wall time of the run, from start to the end of output.
	Duration time.Duration
	// PID is the script's process ID, which is also the ID of the run's
	// process group; 0 when the script never started.
	PID int
	// Stdout and Stderr hold at most OutputLimit bytes each; the numbers of
	// bytes read beyond that and dropped are in StdoutDropped/StderrDropped.
	Stdout, Stderr               []byte
	StdoutDropped, StderrDropped int64
	// Err is set when the script could not be started, the event's values
	// were refused, waiting for a free slot or the run itself was ended by
	// the caller's context, the script could not be reaped, or the hook
	// supervisor ended while the script ran (its process group is killed
	// then; see RunWith). It is an
	// *UnsafeError when the script's path failed the trust check before
	// the run (nothing ran), matches ErrBusy when no slot came free within
	// RunOptions.QueueTimeout (nothing ran), and wraps the error of
	// RunOptions.Starting when that refused the start (nothing ran).
	Err error
	// Started is true when the script was executed: false when the run was
	// refused before (busy, unsafe, RunOptions.Starting, the context) and
	// when executing it failed (ExitCode 126 or 127).
	Started bool
}

// ErrBusy is matched (errors.Is) by a Result's Err when every slot stayed
// busy for the RunOptions.QueueTimeout: the script did not run.
var ErrBusy = errors.New("hook script queue full")

// RunOptions refine one run.
type RunOptions struct {
	// QueueTimeout, when positive, bounds the wait for a free slot; when
	// it passes, nothing runs and the Result's Err matches ErrBusy. The
	// script's own timeout starts only when it starts, so time spent
	// waiting never shortens it. Zero: only the context bounds the wait.
	QueueTimeout time.Duration
	// Starting, when set, is called once the slot is taken and the path is
	// checked and opened, right before the script is started. An error
	// refuses the run: nothing is started, and the Result's Err wraps it.
	// Callers record there that the script is about to run.
	Starting func() error
}

// OK reports whether the event may be taken as accepted: no script is
// configured, or the script ran to completion and exited 0 in time.
func (r Result) OK() bool {
	return !r.Ran || (r.Err == nil && r.ExitCode == 0 && !r.TimedOut)
}

// Failure returns nil when OK, and otherwise an error that says what went
// wrong: Err, a timeout, a signal or the exit status, followed by the last
// line of stderr (LastLine) when there is one. It suits the "rejected by
// connect script" message and an event's last error.
func (r Result) Failure() error {
	if r.OK() {
		return nil
	}
	if r.Err != nil {
		return r.Err
	}
	var msg string
	switch {
	case r.TimedOut:
		msg = fmt.Sprintf("hook script timed out after %s", r.Duration.Round(time.Millisecond))
	case r.Signal != 0:
		msg = fmt.Sprintf("hook script killed by signal %d (%s)", int(r.Signal), r.Signal)
	default:
		msg = fmt.Sprintf("hook script exited with status %d", r.ExitCode)
	}
	if last := LastLine(r.Stderr); last != "" {
		msg += ": " + last
	}
	return errors.New(msg)
}

// MaxLineLen bounds the script output wgkeeper repeats: each of stdout and
// stderr in the log line of a run, and the last stderr line in an event's
// last error and the API's rejection message. Longer text is cut on a
// UTF-8 boundary and marked (CutText).
const MaxLineLen = 1 << 10

// LastLine returns the last non-blank line of out, trimmed, with invalid
// UTF-8 replaced, cut to MaxLineLen bytes by CutText; "" when there is none.
func LastLine(out []byte) string {
	b := bytes.TrimSpace(out)
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = bytes.TrimSpace(b[i+1:])
	}
	return CutText(b, MaxLineLen)
}

// CutText returns b as valid UTF-8 (invalid bytes replaced by U+FFFD) of at
// most limit bytes, followed, when it was longer, by a mark saying so and
// how long it was: " …[cut: N bytes]". The cut falls on a character
// boundary.
func CutText(b []byte, limit int) string {
	if len(b) <= limit && utf8.Valid(b) {
		return string(b)
	}
	s := strings.ToValidUTF8(string(b), "\uFFFD")
	if len(s) <= limit {
		return s
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + fmt.Sprintf(" …[cut: %d bytes]", len(b))
}

// Run is RunWith with no options.
func (r *Runner) Run(ctx context.Context, v Vars) Result {
	return r.RunWith(ctx, v, RunOptions{})
}

// RunWith runs the script once for the event v and waits for it, bounded
// by the timeout, the kill grace, and ctx. It first builds the environment
// (a value refused by Vars.Env returns at once with Err set and nothing
// run), then waits for one of the Concurrency slots shared by all callers
// (ctx, and o.QueueTimeout when set, end the wait), then checks the
// script's path again (see CheckScript: a broken trust rule refuses the run
// with an *UnsafeError) and opens the file it checked, calls o.Starting,
// and runs that very file, not whatever the path names by then: directly,
// with no arguments, stdin from /dev/null, working directory "/", in its
// own process group.
//
// The script dies with wgkeeper: it is started by the hook supervisor
// (this program re-executed, one per process, started by the first run)
// that the kernel signals when wgkeeper dies, even by SIGKILL, and that
// then kills every script's group; see supervise.go. When the supervisor
// itself dies, the runs in flight end with an error, their groups are
// killed, and the next run starts a new supervisor.
//
// The run ends when the script exits: whatever it left running in its
// process group is then killed with SIGKILL, so a script wanting a
// long-lived helper must start it in its own session (setsid). When the
// timeout passes or ctx ends first, the group gets SIGTERM and, KillGrace
// later, SIGKILL; RunWith returns within about timeout + KillGrace after
// the start even when a child keeps stdout open. Every run is logged once
// with its event_id. When no script is configured, RunWith returns a
// Result with Ran false and calls nothing.
func (r *Runner) RunWith(ctx context.Context, v Vars, o RunOptions) Result {
	if !r.Configured() {
		return Result{}
	}
	env, err := r.environ(v)
	if err != nil {
		res := Result{Ran: true, ExitCode: -1, Err: err}
		r.logResult(v, res)
		return res
	}
	if err := AcquireSlot(ctx, r.sem, o.QueueTimeout); err != nil {
		res := Result{Ran: true, ExitCode: -1, TimedOut: errors.Is(err, context.DeadlineExceeded),
			Err: fmt.Errorf("wait for a hook slot for event %d: %w", v.EventID, err)}
		r.logResult(v, res)
		return res
	}
	res := r.run(ctx, env, v.Hold, o.Starting)
	<-r.sem
	r.logResult(v, res)
	return res
}

// AcquireSlot takes one slot of sem (a buffered channel whose capacity is
// the number of slots; release with <-sem), unless ctx ends first (or has
// already ended: then no slot is taken even when one is free) or, with a
// positive queue, that long passes (an error matching ErrBusy). Runner uses
// it; so do test runners that must queue exactly as Runner does.
func AcquireSlot(ctx context.Context, sem chan struct{}, queue time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case sem <- struct{}{}:
		return nil
	default:
	}
	var expired <-chan time.Time
	if queue > 0 {
		t := time.NewTimer(queue)
		defer t.Stop()
		expired = t.C
	}
	select {
	case sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-expired:
		return fmt.Errorf("%w: all %d slots stayed busy for %s", ErrBusy, cap(sem), config.FormatDuration(queue))
	}
}

// environ returns the script's whole environment: PATH, the pass-through
// variables that are set, and the VPN_* variables of v.
func (r *Runner) environ(v Vars) ([]string, error) {
	vpn, err := v.Env()
	if err != nil {
		return nil, err
	}
	env := make([]string, 0, 1+len(r.passEnv)+len(vpn))
	path, ok := os.LookupEnv("PATH")
	if !ok || path == "" {
		path = DefaultPath
	}
	env = append(env, "PATH="+path)
	for _, name := range r.passEnv {
		if val, ok := os.LookupEnv(name); ok {
			env = append(env, name+"="+val)
		}
	}
	return append(env, vpn...), nil
}

func (r *Runner) run(ctx context.Context, env []string, hold *os.File, starting func() error) Result {
	res := Result{Ran: true, ExitCode: -1}
	start := time.Now()
	defer func() {
		if res.Duration == 0 {
			res.Duration = time.Since(start)
		}
	}()

	script, err := openChecked(r.script)
	if err != nil {
		res.ExitCode, res.Err = r.checkError(err)
		return res
	}
	defer script.Close()
	if r.afterCheck != nil {
		r.afterCheck()
	}
	outR, outW, err := outputPipe()
	if err != nil {
		res.Err = fmt.Errorf("run hook script %s: stdout pipe: %w", r.script, err)
		return res
	}
	errR, errW, err := outputPipe()
	if err != nil {
		outR.Close()
		outW.Close()
		res.Err = fmt.Errorf("run hook script %s: stderr pipe: %w", r.script, err)
		return res
	}
	if starting != nil {
		if err := starting(); err != nil {
			outR.Close()
			outW.Close()
			errR.Close()
			errW.Close()
			res.Err = fmt.Errorf("hook script %s not started: %w", r.script, err)
			return res
		}
	}
	var sup *supervisorConn
	var sr *supervisedRun
	for attempt := 0; ; attempt++ {
		if sup, err = currentSupervisor(); err != nil {
			err = fmt.Errorf("start the hook supervisor: %w", err)
			break
		}
		sr, err = sup.start(r.script, env, script, outW, errW, hold)
		// A supervisor found broken on the way (nothing started) is
		// replaced once.
		if err == nil || attempt == 1 || !sup.lost.Load() {
			break
		}
	}
	outW.Close()
	errW.Close()
	script.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		res.Err = fmt.Errorf("run hook script %s: %w", r.script, err)
		return res
	}
	defer sr.close()

	var stdout, stderr capture
	outDone := make(chan struct{})
	errDone := make(chan struct{})
	go stdout.readFrom(outR, outDone)
	go stderr.readFrom(errR, errDone)

	// The reports are read with deadlines: the timeout starts when the
	// script does (the time the supervisor takes to start it, bounded by
	// StartLimit, is not the script's time), and ctx ends a read at once.
	deadline := func(d time.Duration) {
		_ = sr.report.SetReadDeadline(time.Now().Add(d))
		if ctx.Err() != nil { // the AfterFunc below may have run before
			_ = sr.report.SetReadDeadline(time.Unix(1, 0))
		}
	}
	stopAfter := context.AfterFunc(ctx, func() { _ = sr.report.SetReadDeadline(time.Unix(1, 0)) })
	defer stopAfter()
	deadline(StartLimit)
	rep, err := sr.next()
	if err == nil && rep.op == opStarted {
		res.Started = true
		res.PID = int(rep.arg)
		deadline(r.timeout)
		rep, err = sr.next()
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		if err := ctx.Err(); err != nil {
			res.TimedOut = errors.Is(err, context.DeadlineExceeded)
			res.Err = fmt.Errorf("hook script %s stopped: %w", r.script, err)
		} else {
			res.TimedOut = true
		}
		// The supervisor signals the group while its leader is unreaped,
		// and kills whatever is left of it once the leader exits.
		stopAfter()
		sr.signal(syscall.SIGTERM)
		_ = sr.report.SetReadDeadline(time.Now().Add(r.grace))
		rep, err = sr.nextEnd(&res)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			sr.signal(syscall.SIGKILL)
			_ = sr.report.SetReadDeadline(time.Now().Add(r.grace))
			rep, err = sr.nextEnd(&res)
		}
	}
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		// Stuck in an uninterruptible sleep; the supervisor reaps it
		// whenever it ends.
		res.Err = errors.Join(res.Err, fmt.Errorf("hook script %s (process group %d) did not exit after SIGKILL", r.script, res.PID))
	case errors.Is(err, errSupervisorLost):
		// The script got SIGKILL from its Pdeathsig; the rest of its
		// group gets it here. The group keeps its ID while a member
		// lives, even with its leader reaped.
		if res.PID > 0 {
			_ = syscall.Kill(-res.PID, syscall.SIGKILL)
		}
		res.Err = errors.Join(res.Err, fmt.Errorf("run hook script %s: %w", r.script, err))
	case err != nil:
		res.Err = errors.Join(res.Err, fmt.Errorf("run hook script %s: %w", r.script, err))
	case rep.op == opExecErr:
		res.ExitCode, res.Err = r.startError(syscall.Errno(rep.arg))
	case rep.op == opExited:
		ws := syscall.WaitStatus(rep.arg)
		switch {
		case ws.Exited():
			res.ExitCode = ws.ExitStatus()
		case ws.Signaled():
			res.Signal = ws.Signal()
		}
	default:
		res.Err = errors.Join(res.Err, fmt.Errorf("run hook script %s: unexpected report %d from the hook supervisor", r.script, rep.op))
	}
	pid := res.PID

	// Every process of the group is gone now, so the pipes are closed unless
	// a process that left the group still holds them.
	drain := time.NewTimer(drainWait)
	held := false
	for _, done := range []chan struct{}{outDone, errDone} {
		select {
		case <-done:
		case <-drain.C:
			held = true
			outR.Close()
			errR.Close()
			<-done
		}
	}
	drain.Stop()
	outR.Close()
	errR.Close()
	if held {
		r.log.Warn("hook script output still held open by a process outside its process group; stopped reading",
			"script", r.script, "pid", pid)
	}
	res.Stdout, res.StdoutDropped = stdout.buf, stdout.dropped
	res.Stderr, res.StderrDropped = stderr.buf, stderr.dropped
	res.Duration = time.Since(start)
	return res
}

// checkError maps a failed check of the script's path to the Result: an
// *UnsafeError as it is (nothing runs), and a path that cannot be resolved
// to the shell-style status running it would have given.
func (r *Runner) checkError(err error) (int, error) {
	var ue *UnsafeError
	if errors.As(err, &ue) {
		return -1, err
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return r.startError(errno)
	}
	return 126, err
}

// outputPipe returns a pipe whose read end is non-blocking and served by
// the runtime's poller, and whose write end, meant only for the child, is
// an ordinary blocking descriptor the poller never sees. Both are
// close-on-exec, so no other child started meanwhile inherits them.
func outputPipe() (r, w *os.File, err error) {
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC); err != nil {
		return nil, nil, err
	}
	if err := syscall.SetNonblock(p[0], true); err != nil {
		syscall.Close(p[0])
		syscall.Close(p[1])
		return nil, nil, err
	}
	return os.NewFile(uintptr(p[0]), "|0"), os.NewFile(uintptr(p[1]), "|1"), nil
}

// startError maps a start failure to a shell-style exit status and a clear
// error.
func (r *Runner) startError(err error) (int, error) {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return -1, fmt.Errorf("run hook script %s: %w", r.script, err)
	}
	switch errno {
	case syscall.ENOENT:
		if _, serr := os.Stat(r.script); errors.Is(serr, fs.ErrNotExist) {
			return 127, fmt.Errorf("run hook script %s: it does not exist (removed or renamed since startup?)", r.script)
		}
		if interp, ok := readShebang(r.script); ok {
			if _, serr := os.Stat(interp); serr != nil {
				return 127, fmt.Errorf("run hook script %s: interpreter %s named on its #! line does not exist", r.script, interp)
			}
		}
		return 127, fmt.Errorf("run hook script %s: %w", r.script, errno)
	case syscall.EACCES, syscall.EPERM:
		mode := ""
		if fi, serr := os.Stat(r.script); serr == nil {
			mode = fmt.Sprintf(" (mode %04o)", fi.Mode().Perm())
		}
		return 126, fmt.Errorf("run hook script %s: permission denied%s; is it still executable?", r.script, mode)
	case syscall.ENOEXEC:
		return 126, fmt.Errorf("run hook script %s: not an executable format; add a first line such as #!/bin/sh", r.script)
	}
	return -1, fmt.Errorf("run hook script %s: %w", r.script, errno)
}

func readShebang(path string) (string, bool) {
	f, err := os.Open(path)
	if err != nil {
		return "", false
	}
	defer f.Close()
	head := make([]byte, 256)
	n, _ := io.ReadFull(f, head)
	return shebang(head[:n])
}

// capture keeps the first OutputLimit bytes written to it and counts the
// rest. Writes never fail, so the writer is drained to the end.
type capture struct {
	buf     []byte
	dropped int64
}

func (c *capture) Write(p []byte) (int, error) {
	room := OutputLimit - len(c.buf)
	room = max(0, min(room, len(p)))
	c.buf = append(c.buf, p[:room]...)
	c.dropped += int64(len(p) - room)
	return len(p), nil
}

var scratchPool = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

// readFrom reads r to its end (or until it is closed) into c, then closes
// done.
func (c *capture) readFrom(r io.Reader, done chan<- struct{}) {
	defer close(done)
	bp := scratchPool.Get().(*[]byte)
	defer scratchPool.Put(bp)
	buf := *bp
	for {
		n, err := r.Read(buf)
		if n > 0 {
			_, _ = c.Write(buf[:n])
		}
		if err != nil {
			return
		}
	}
}

func (r *Runner) logResult(v Vars, res Result) {
	attrs := make([]slog.Attr, 0, 16)
	attrs = append(attrs,
		slog.Int64("event_id", v.EventID),
		slog.String("event", v.Event),
		slog.String("reason", v.Reason),
		slog.String("iface", v.Interface),
		slog.String("peer", v.ConnectionID),
		slog.String("user", v.UserID),
		slog.Int("exit_code", res.ExitCode),
		slog.Duration("duration", res.Duration),
	)
	if res.Signal != 0 {
		attrs = append(attrs, slog.String("signal", res.Signal.String()))
	}
	if res.TimedOut {
		attrs = append(attrs, slog.Bool("timed_out", true))
	}
	// One run is one log line of bounded size, however much it wrote.
	if out := bytes.TrimSpace(res.Stdout); len(out) > 0 {
		attrs = append(attrs, slog.String("stdout", CutText(out, MaxLineLen)))
	}
	if res.StdoutDropped > 0 {
		attrs = append(attrs, slog.Int64("stdout_dropped", res.StdoutDropped))
	}
	if out := bytes.TrimSpace(res.Stderr); len(out) > 0 {
		attrs = append(attrs, slog.String("stderr", CutText(out, MaxLineLen)))
	}
	if res.StderrDropped > 0 {
		attrs = append(attrs, slog.Int64("stderr_dropped", res.StderrDropped))
	}
	if res.Err != nil {
		attrs = append(attrs, slog.String("err", res.Err.Error()))
	}
	level, msg := slog.LevelInfo, "hook script succeeded"
	var ue *UnsafeError
	switch {
	case errors.As(res.Err, &ue):
		// Which path broke the trust rule, and why: the message says it
		// in words, these say it for log queries.
		attrs = append(attrs, slog.String("path", ue.Path), slog.String("mode", fmt.Sprintf("%04o", ue.Mode)), slog.Int("owner_uid", ue.UID))
		level, msg = slog.LevelWarn, "hook script refused: its path is not trusted"
	case errors.Is(res.Err, ErrBusy):
		level, msg = slog.LevelWarn, "hook script not run: every slot stayed busy"
	case !res.OK():
		level, msg = slog.LevelWarn, "hook script failed"
	case len(bytes.TrimSpace(res.Stderr)) > 0 || res.StderrDropped > 0:
		// Exit 0 with complaints, such as dash's "[: unexpected operator"
		// for a bash-only test: the event counts as accepted, but the
		// script most likely did not do what it was meant to.
		level, msg = slog.LevelWarn, "hook script succeeded but wrote to stderr"
	}
	r.log.LogAttrs(context.Background(), level, msg, attrs...)
}

// KillGrace is the time this runner gives a script's process group between
// SIGTERM and SIGKILL (Config.KillGrace, or DefaultKillGrace).
func (r *Runner) KillGrace() time.Duration { return r.grace }
