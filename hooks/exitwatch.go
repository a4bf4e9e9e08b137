package hooks

import (
	"context"
	"syscall"
	"time"
	"unsafe"
)

// exitWatch waits for a child process to exit without reaping it: while the
// child is an unreaped zombie its PID, and so its process group ID, cannot
// be reused, which makes signalling the group safe until cmd.Wait.
//
// A goroutine blocks in waitid(2) with WNOWAIT. (Waiting on a pidfd through
// the runtime's poller was measured too: it holds no thread while waiting,
// but cost about 60µs more CPU per run than this.)
type exitWatch struct {
	ch     chan error
	exited bool
	err    error // waitid failed: the child's state is unknown
}

const (
	pPID        = 1   // P_PID
	siginfoSize = 128 // sizeof(siginfo_t)
)

func watchExit(pid int) *exitWatch {
	w := &exitWatch{ch: make(chan error, 1)}
	go func() { w.ch <- waitid(pPID, pid, syscall.WEXITED|syscall.WNOWAIT) }()
	return w
}

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

// wait blocks until the child has exited (true), d has passed or ctx has
// ended (false). Once it returned true it returns true at once.
func (w *exitWatch) wait(ctx context.Context, d time.Duration) bool {
	return w.waitOr(ctx, d, nil)
}

// waitOr is wait that also returns (false, unless the child exited) when
// other is closed.
func (w *exitWatch) waitOr(ctx context.Context, d time.Duration, other <-chan struct{}) bool {
	if w.exited {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case w.err = <-w.ch:
		w.exited = true
	case <-t.C:
	case <-ctx.Done():
	case <-other:
	}
	return w.exited
}
