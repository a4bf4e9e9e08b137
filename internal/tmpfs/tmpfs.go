// Package tmpfs gives tests small real file systems to break: a tmpfs of a
// given size that can be filled up or remounted read-only. Mounting needs
// root; the helpers skip the test without it. Every mount is undone in
// t.Cleanup.
package tmpfs

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// Mount mounts a tmpfs of size bytes on a new directory and returns it.
func Mount(tb testing.TB, size int) string {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("skipped: mounting a tmpfs needs root")
	}
	dir := filepath.Join(tb.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o700); err != nil {
		tb.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "size="+strconv.Itoa(size)+",mode=0700"); err != nil {
		tb.Skipf("skipped: cannot mount a tmpfs: %v", err)
	}
	tb.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			tb.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// Fill writes a file into dir until the file system is full and returns
// its path. Removing it frees the space again.
func Fill(tb testing.TB, dir string) string {
	tb.Helper()
	f, err := os.CreateTemp(dir, "fill-")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return f.Name()
			}
			tb.Fatalf("fill %s: %v", dir, err)
		}
	}
}

// ReadOnly remounts the tmpfs at dir read-only (root ignores file modes;
// a read-only mount it cannot ignore). It fails while a file on it is open
// for writing.
func ReadOnly(tb testing.TB, dir string) {
	tb.Helper()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_REMOUNT|syscall.MS_RDONLY|syscall.MS_NOSUID|syscall.MS_NODEV, ""); err != nil {
		tb.Fatalf("remount %s read-only: %v", dir, err)
	}
}
