package reconcile

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Owner files make the liveness of a lease holder explicit. Every engine
// that takes leases holds an exclusive flock(2) on its own file in the lock
// directory, .wgkeeper-owner-TOKEN.lock, holding its owner name, for as
// long as it lives; the kernel drops the lock when the process dies. The
// scripts it starts inherit the locked descriptor, so the lock is held
// until they are gone too.
//
// A housekeeping (every Deliver) tries each other owner file's lock without
// waiting: a lock it can take belongs to a dead owner, whose leases are
// released in the store at once and whose file is then removed. A lock it
// cannot take belongs to a live owner, whose leases keep their time. A
// lease whose owner has no file here (a process on another node, or one
// whose file was removed by hand) is left to run out as before.
//
// TOKEN is 16 random bytes, so a name is never used twice, whatever the
// process ids do. A file is created under a temporary name (.new), locked
// and only then renamed into place, so no sweeper ever finds an owner file
// that is not yet locked.
const (
	ownerPrefix  = ".wgkeeper-owner-"
	ownerSuffix  = ".lock"
	ownerPending = ".new"
)

// ownerLock is this engine's owner file, created on first use.
type ownerLock struct {
	f    *os.File // locked LOCK_EX while the engine lives
	path string
}

// holdOwner makes sure this engine holds its owner file, creating and
// locking it on first use. Every path that takes a lease calls it first.
func (e *Engine) holdOwner() (*os.File, error) {
	e.ownerMu.Lock()
	defer e.ownerMu.Unlock()
	if e.ownerF.f != nil {
		return e.ownerF.f, nil
	}
	if e.closed {
		return nil, errors.New("hold owner file: the engine is closed")
	}
	var lastErr error
	for range 5 {
		ol, err := createOwnerFile(e.lockDir, e.owner, e.ownerToken)
		if err == nil {
			e.ownerF = ol
			return ol.f, nil
		}
		lastErr = err
		if !errors.Is(err, errOwnerRace) {
			break
		}
		// A sweeper took the new file for a dead one's leftover: pick a
		// fresh token (and with it a fresh owner name) and try again.
		e.owner, e.ownerToken = newOwnerName()
	}
	return nil, fmt.Errorf("hold owner file in %s: %w", e.lockDir, lastErr)
}

// ownerFile returns the locked owner file, or nil before the first lease.
func (e *Engine) ownerFile() *os.File {
	e.ownerMu.Lock()
	defer e.ownerMu.Unlock()
	return e.ownerF.f
}

// ownerName returns the name this engine's leases carry (before "/claim").
func (e *Engine) ownerName() string {
	e.ownerMu.Lock()
	defer e.ownerMu.Unlock()
	return e.owner
}

var errOwnerRace = errors.New("owner file removed while being created")

func createOwnerFile(dir, owner, token string) (ownerLock, error) {
	final := filepath.Join(dir, ownerPrefix+token+ownerSuffix)
	tmp := filepath.Join(dir, ownerPrefix+token+ownerPending)
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return ownerLock{}, err
	}
	fail := func(err error) (ownerLock, error) {
		f.Close()
		os.Remove(tmp)
		return ownerLock{}, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			// A sweeper holds it and will remove it.
			f.Close()
			return ownerLock{}, errOwnerRace
		}
		return fail(fmt.Errorf("lock %s: %w", tmp, err))
	}
	if _, err := io.WriteString(f, owner+"\n"); err != nil {
		return fail(fmt.Errorf("write %s: %w", tmp, err))
	}
	if err := os.Rename(tmp, final); err != nil {
		f.Close()
		if errors.Is(err, os.ErrNotExist) {
			return ownerLock{}, errOwnerRace
		}
		os.Remove(tmp)
		return ownerLock{}, fmt.Errorf("rename %s: %w", tmp, err)
	}
	return ownerLock{f: f, path: final}, nil
}

// newOwnerName returns a fresh owner name, host:pid:token, and its token.
// The name never contains "/" (the store's separator of claim tokens).
func newOwnerName() (name, token string) {
	host, _ := os.Hostname()
	host = strings.Map(func(r rune) rune {
		if r == '/' || r < ' ' || r == 0x7f {
			return '_'
		}
		return r
	}, host)
	var b [16]byte
	_, _ = rand.Read(b[:])
	token = hex.EncodeToString(b[:])
	return fmt.Sprintf("%s:%d:%s", host, os.Getpid(), token), token
}

// Close releases this engine's owner file: it is unlocked and removed. Call
// it only once every operation of the engine has returned (a delivery that
// still ran would lose its lease to the next housekeeping). Using the
// engine for anything that takes a lease after Close is an error; closing
// twice is harmless.
func (e *Engine) Close() error {
	e.ownerMu.Lock()
	defer e.ownerMu.Unlock()
	e.closed = true
	if e.ownerF.f == nil {
		return nil
	}
	err := os.Remove(e.ownerF.path)
	if errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	e.ownerF.f.Close()
	e.ownerF = ownerLock{}
	if err != nil {
		return fmt.Errorf("remove owner file: %w", err)
	}
	return nil
}

// ReclaimDead releases the leases of every owner whose owner file in the
// lock directory is no longer locked (its process and every script it
// started are gone), so their events are delivered at once, and removes
// those files. It never waits for a lock: a held lock is a live owner,
// whose leases keep their time. It returns how many leases were released.
// On error, the files whose leases could not be released are kept for the
// next run; nothing of a live owner is touched.
func (e *Engine) ReclaimDead(ctx context.Context) (int, error) {
	ents, err := os.ReadDir(e.lockDir)
	if err != nil {
		return 0, fmt.Errorf("reclaim leases of dead owners: %w", err)
	}
	mine := e.ownerFile()
	total := 0
	var errs []error
	for _, ent := range ents {
		name := ent.Name()
		if !strings.HasPrefix(name, ownerPrefix) || !ent.Type().IsRegular() {
			continue
		}
		pending := strings.HasSuffix(name, ownerPending)
		if !pending && !strings.HasSuffix(name, ownerSuffix) {
			continue
		}
		n, err := e.reclaimOne(ctx, filepath.Join(e.lockDir, name), pending, mine)
		total += n
		if err != nil {
			errs = append(errs, err)
		}
	}
	if total > 0 {
		e.log.Info("released the leases of dead owners", "leases", total)
	}
	return total, errors.Join(errs...)
}

func (e *Engine) reclaimOne(ctx context.Context, path string, pending bool, mine *os.File) (int, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil // another sweeper was first
	}
	if err != nil {
		return 0, fmt.Errorf("open owner file %s: %w", path, err)
	}
	defer f.Close()
	if mine != nil && sameFile(f, mine) {
		return 0, nil
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) || errors.Is(err, syscall.EINTR) {
			return 0, nil // alive
		}
		return 0, fmt.Errorf("try owner file %s: %w", path, err)
	}
	// Dead, and ours to clean: while we hold its lock nobody else decides
	// on it. Another sweeper may have cleaned it between our open and our
	// lock; then the name is gone or names another file.
	if st, err := os.Lstat(path); err != nil || !sameStat(f, st) {
		return 0, nil
	}
	n := 0
	if !pending {
		b, err := io.ReadAll(io.LimitReader(f, 4096))
		if err != nil {
			return 0, fmt.Errorf("read owner file %s: %w", path, err)
		}
		if holder := strings.TrimSpace(string(b)); holder != "" && !strings.Contains(holder, "/") {
			n, err = e.store.ReleaseLeases(ctx, holder)
			if err != nil {
				return 0, err // keep the file: next time
			}
			if n > 0 {
				e.log.Info("released the leases of a dead owner", "owner", holder, "leases", n)
			}
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return n, fmt.Errorf("remove owner file %s: %w", path, err)
	}
	return n, nil
}

func sameFile(a, b *os.File) bool {
	sa, err := a.Stat()
	if err != nil {
		return false
	}
	return sameStat(b, sa)
}

func sameStat(f *os.File, st os.FileInfo) bool {
	fs, err := f.Stat()
	return err == nil && os.SameFile(fs, st)
}
