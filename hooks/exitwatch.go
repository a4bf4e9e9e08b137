package hooks

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"syscall"
	"time"
	"unsafe"
)

// exitWatch waits for a child process to exit without reaping it: while the
// child is an unreaped zombie its PID, and so its process group ID, cannot
// be reused, which makes signalling the group safe until cmd.Wait.
//
// It waits on a pidfd through the runtime's poller, so a waiting run holds
// no OS thread; on kernels without pidfd_open it falls back to a goroutine
// blocked in waitid.
type exitWatch struct {
	pidfd  *os.File
	rc     syscall.RawConn
	ch     chan error // fallback
	exited bool
	err    error // waitid failed: the child's state is unknown
}

const (
	sysPidfdOpen  = 434   // pidfd_open(2), the same number on all Linux architectures
	pidfdNonblock = 0x800 // PIDFD_NONBLOCK == O_NONBLOCK
	pPID          = 1     // P_PID
	pPIDFD        = 3     // P_PIDFD
	wNOHANG       = 0x1   // WNOHANG
	siginfoSize   = 128   // sizeof(siginfo_t)
	siginfoPID    = 16    // offset of si_pid in siginfo_t on 64- and 32-bit
	siginfoPIDEnd = siginfoPID + 4
)

// usePidfd is cleared by tests to exercise the fallback.
var usePidfd = true

func watchExit(pid int) *exitWatch {
	w := &exitWatch{}
	fd, _, errno := syscall.Syscall(sysPidfdOpen, uintptr(pid), pidfdNonblock, 0)
	if !usePidfd && errno == 0 {
		syscall.Close(int(fd))
		errno = syscall.ENOSYS
	}
	if errno == 0 {
		// A non-blocking descriptor: NewFile registers it with the poller.
		f := os.NewFile(fd, "pidfd")
		// Deadlines work only when the poller took the descriptor.
		if rc, err := f.SyscallConn(); err == nil && f.SetReadDeadline(time.Time{}) == nil {
			w.pidfd, w.rc = f, rc
			return w
		}
		f.Close()
	}
	w.ch = make(chan error, 1)
	go func() { w.ch <- waitid(pPID, pid, syscall.WEXITED|syscall.WNOWAIT) }()
	return w
}

// waitidNohang polls with waitid(2), WNOHANG and WNOWAIT, and reports
// whether the child has exited.
func waitidNohang(idtype, id int) (bool, error) {
	var info [siginfoSize]byte
	for {
		_, _, errno := syscall.Syscall6(syscall.SYS_WAITID, uintptr(idtype), uintptr(id),
			uintptr(unsafe.Pointer(&info[0])), syscall.WEXITED|syscall.WNOWAIT|wNOHANG, 0, 0)
		switch errno {
		case syscall.EINTR:
			continue
		case 0:
			return binary.NativeEndian.Uint32(info[siginfoPID:siginfoPIDEnd]) != 0, nil
		default:
			return false, errno
		}
	}
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
	if w.exited {
		return true
	}
	if w.pidfd == nil {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case w.err = <-w.ch:
			w.exited = true
		case <-t.C:
		case <-ctx.Done():
		}
		return w.exited
	}
	if err := w.pidfd.SetReadDeadline(time.Now().Add(d)); err != nil {
		w.exited, w.err = true, err
		return true
	}
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		_ = w.pidfd.SetReadDeadline(time.Unix(1, 0))
		close(fired)
	})
	err := w.rc.Read(func(fd uintptr) bool {
		done, err := waitidNohang(pPIDFD, int(fd))
		if err != nil {
			w.exited, w.err = true, err
			return true
		}
		w.exited = done
		return done // false: wait until the pidfd is readable
	})
	if !stop() && ctx.Err() != nil {
		<-fired // the deadline it set must not cut the next wait short
	}
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) && !w.exited {
		w.exited, w.err = true, err
	}
	return w.exited
}

// close releases the pidfd; with the fallback, it must only be called after
// wait returned true.
func (w *exitWatch) close() {
	if w.pidfd != nil {
		w.pidfd.Close()
	}
}
