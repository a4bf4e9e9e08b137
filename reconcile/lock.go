package reconcile

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// ErrBusy reports that another run holds a lock that was asked for without
// waiting.
var ErrBusy = errors.New("another run is in progress")

// fileLock is an exclusive flock(2) on a file. Locks are per open file
// description, so two fileLocks on one path exclude each other within one
// process as well as across processes, and the kernel drops a lock when its
// holder dies.
type fileLock struct{ f *os.File }

// lockFile takes the lock at path. With wait it polls until ctx ends;
// without, it returns ErrBusy at once when the lock is held.
func lockFile(ctx context.Context, path string, wait bool) (*fileLock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	delay := 2 * time.Millisecond
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return &fileLock{f: f}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if !wait {
			f.Close()
			return nil, ErrBusy
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("wait for lock %s: %w", path, ctx.Err())
		case <-time.After(delay):
		}
		if delay < 50*time.Millisecond {
			delay *= 2
		}
	}
}

func (l *fileLock) unlock() {
	if l == nil || l.f == nil {
		return
	}
	_ = syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	l.f.Close()
	l.f = nil
}

func dirOf(path string) string {
	if path == "" {
		return os.TempDir()
	}
	return filepath.Dir(path)
}

// deviceLock serialises read-plan-write sequences on one interface across
// every wgkeeper process using the same database, so a reconcile can never
// re-add a peer that a concurrent delete has just removed, nor remove one a
// concurrent create has just added.
//
// Within the process, waiters queue on a channel first, so they are woken
// at once instead of polling the file lock; only contention with another
// process polls.
func (e *Engine) deviceLock(ctx context.Context, iface string) (*devLock, error) {
	e.mu.Lock()
	sem, ok := e.devSems[iface]
	if !ok {
		sem = make(chan struct{}, 1)
		e.devSems[iface] = sem
	}
	e.mu.Unlock()
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for device lock of %s: %w", iface, ctx.Err())
	}
	fl, err := lockFile(ctx, filepath.Join(e.lockDir, ".wgkeeper-"+iface+".lock"), true)
	if err != nil {
		<-sem
		return nil, err
	}
	return &devLock{fl: fl, sem: sem}, nil
}

// devLock holds an interface's in-process and file locks.
type devLock struct {
	fl  *fileLock
	sem chan struct{}
}

func (l *devLock) unlock() {
	l.fl.unlock()
	<-l.sem
}

// housekeepingLock makes two housekeeping runs never overlap.
func (e *Engine) housekeepingLock(ctx context.Context, wait bool) (*fileLock, error) {
	return lockFile(ctx, filepath.Join(e.lockDir, ".wgkeeper-housekeeping.lock"), wait)
}
