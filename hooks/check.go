package hooks

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// CheckScript reports whether path is acceptable as the hook script. It
// returns nil when all of these hold, and otherwise an error naming the first
// rule broken and how to fix it:
//
//   - path is absolute;
//   - it exists and, after resolving symbolic links, is a regular file;
//   - it is owned by root or by the effective user of this process;
//   - it is writable by neither group nor others;
//   - it is executable by its owner and by this process;
//   - the directory holding it, and the directory holding the configured
//     path when that is a symbolic link, is not writable by others (a sticky
//     directory such as /tmp counts as writable by others);
//   - when readable, it starts with a "#!" line naming an existing
//     interpreter, or is an ELF binary.
//
// CheckScript only reads; calling it again gives the same answer until the
// file system changes.
func CheckScript(path string) error {
	if path == "" {
		return errors.New("hook script path is empty")
	}
	if !filepath.IsAbs(path) {
		return fmt.Errorf("hook script %q is not an absolute path; give the full path, e.g. /usr/local/bin/vpn-hook", path)
	}
	target, err := filepath.EvalSymlinks(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("hook script %s does not exist", path)
		}
		return fmt.Errorf("hook script %s: %w", path, err)
	}
	fi, err := os.Stat(target)
	if err != nil {
		return fmt.Errorf("hook script %s: %w", path, err)
	}
	subject := path
	if target != path {
		subject = fmt.Sprintf("%s (resolved to %s)", path, target)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("hook script %s is not a regular file (it is %s)", subject, kindOf(fi.Mode()))
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("hook script %s: no ownership information", subject)
	}
	euid := os.Geteuid()
	if st.Uid != 0 && int(st.Uid) != euid {
		return fmt.Errorf("hook script %s is owned by uid %d; it must be owned by root or by the user wgkeeper runs as (uid %d); run chown root %s", subject, st.Uid, euid, target)
	}
	perm := fi.Mode().Perm()
	switch w := perm & 0o022; w {
	case 0o022:
		return fmt.Errorf("hook script %s is writable by group and others (mode %04o); run chmod go-w %s", subject, perm, target)
	case 0o020:
		return fmt.Errorf("hook script %s is writable by group (mode %04o); run chmod g-w %s", subject, perm, target)
	case 0o002:
		return fmt.Errorf("hook script %s is writable by others (mode %04o); run chmod go-w %s", subject, perm, target)
	}
	if perm&0o100 == 0 {
		return fmt.Errorf("hook script %s is not executable by its owner (mode %04o); run chmod u+x %s", subject, perm, target)
	}
	if err := syscall.Access(target, 1 /* X_OK */); err != nil {
		return fmt.Errorf("hook script %s is not executable by uid %d (mode %04o, owner uid %d): %w", subject, euid, perm, st.Uid, err)
	}
	dirs := []string{filepath.Dir(target)}
	if target != path {
		// The link itself can be replaced by whoever may write its directory.
		if d, err := filepath.EvalSymlinks(filepath.Dir(path)); err == nil && d != dirs[0] {
			dirs = append(dirs, d)
		}
	}
	for _, dir := range dirs {
		di, err := os.Stat(dir)
		if err != nil {
			return fmt.Errorf("hook script %s: directory %s: %w", subject, dir, err)
		}
		if di.Mode().Perm()&0o002 != 0 {
			return fmt.Errorf("hook script %s is in directory %s, which is writable by others (mode %04o); move the script to a directory only root can write, e.g. /usr/local/bin or /etc/wgkeeper", subject, dir, unixMode(di.Mode()))
		}
	}
	return checkFormat(subject, target)
}

// checkFormat verifies that the kernel can execute the file: an ELF binary or
// a "#!" line naming an interpreter that exists. A file this process may not
// read (an execute-only binary) is left to the kernel.
func checkFormat(subject, target string) error {
	f, err := os.Open(target)
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return nil
		}
		return fmt.Errorf("hook script %s: %w", subject, err)
	}
	defer f.Close()
	head := make([]byte, 256)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return fmt.Errorf("hook script %s: %w", subject, err)
	}
	head = head[:n]
	if bytes.HasPrefix(head, []byte("\x7fELF")) {
		return nil
	}
	interp, ok := shebang(head)
	if !ok {
		return fmt.Errorf("hook script %s has no #! line and is not a binary, so it cannot be executed directly; add a first line such as #!/bin/sh", subject)
	}
	if _, err := os.Stat(interp); err != nil {
		return fmt.Errorf("hook script %s names interpreter %s on its #! line, which does not exist", subject, interp)
	}
	return nil
}

// shebang returns the interpreter named on the "#!" line at the start of
// head, if any.
func shebang(head []byte) (string, bool) {
	rest, ok := bytes.CutPrefix(head, []byte("#!"))
	if !ok {
		return "", false
	}
	line, _, _ := bytes.Cut(rest, []byte("\n"))
	fields := strings.Fields(string(line))
	if len(fields) == 0 {
		return "", false
	}
	return fields[0], true
}

func kindOf(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	default:
		return "not a regular file"
	}
}

// unixMode returns the permission bits as ls and chmod show them, with the
// sticky, setuid and setgid bits.
func unixMode(m fs.FileMode) uint32 {
	u := uint32(m.Perm())
	if m&fs.ModeSticky != 0 {
		u |= 0o1000
	}
	if m&fs.ModeSetgid != 0 {
		u |= 0o2000
	}
	if m&fs.ModeSetuid != 0 {
		u |= 0o4000
	}
	return u
}
