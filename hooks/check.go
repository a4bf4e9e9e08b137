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

	"golang.org/x/sys/unix"
)

// UnsafeError is a hook script that must not be run because a user other
// than root and the user wgkeeper runs as could replace it or change what
// it does: Path, the script itself or a directory on the way to it, is
// owned by another user or writable by group or others. The message names
// Path, its mode and what to do.
type UnsafeError struct {
	// Script is the configured path of the script.
	Script string
	// Path is the file or directory that breaks the rule.
	Path string
	// Mode is Path's mode as chmod and ls show it (with the sticky,
	// setuid and setgid bits).
	Mode uint32
	// UID owns Path.
	UID int

	msg string
}

func (e *UnsafeError) Error() string { return e.msg }

// maxLinks bounds the symbolic links followed while resolving a script path,
// as the kernel's limit does.
const maxLinks = 40

// CheckScript reports whether path is acceptable as the hook script. It
// returns nil when all of these hold, and otherwise an error naming the first
// rule broken and how to fix it:
//
//   - path is absolute;
//   - it exists and, after resolving symbolic links, is a regular file;
//   - every directory a name is looked up in on the way to it (every
//     directory above the configured path, above each symbolic link's
//     target, and above the file itself) is owned by root or by the
//     effective user of this process, and is writable by neither group nor
//     others, except a sticky directory (such as /tmp) whose entry on the
//     way is owned by root or by that user, since nobody else may rename or
//     remove it; a violation is an *UnsafeError;
//   - the file is owned by root or by that user and writable by neither
//     group nor others (else an *UnsafeError);
//   - it is executable by its owner and by this process;
//   - when readable, it starts with a "#!" line naming an existing
//     interpreter, or is an ELF binary.
//
// This is sshd's StrictModes rule applied to the whole path: whoever can
// replace the script or a directory above it can run code as wgkeeper's
// user. CheckScript only reads; calling it again gives the same answer
// until the file system changes.
func CheckScript(path string) error {
	if path == "" {
		return errors.New("hook script path is empty")
	}
	if !filepath.IsAbs(path) {
		return fmt.Errorf("hook script %q is not an absolute path; give the full path, e.g. /usr/local/bin/vpn-hook", path)
	}
	target, fi, err := resolveTrusted(path)
	if err != nil {
		return describeResolveError(path, err)
	}
	subject := subjectOf(path, target)
	if err := checkFile(path, subject, target, fi); err != nil {
		return err
	}
	perm := fi.Mode().Perm()
	if perm&0o100 == 0 {
		return fmt.Errorf("hook script %s is not executable by its owner (mode %04o); run chmod u+x %s", subject, perm, target)
	}
	if err := syscall.Access(target, 1 /* X_OK */); err != nil {
		st := fi.Sys().(*syscall.Stat_t)
		return fmt.Errorf("hook script %s is not executable by uid %d (mode %04o, owner uid %d): %w", subject, os.Geteuid(), perm, st.Uid, err)
	}
	return checkFormat(subject, target)
}

// describeResolveError turns an error of resolveTrusted into CheckScript's
// message: an *UnsafeError as it is, a missing file or directory as "does
// not exist", anything else with the path.
func describeResolveError(path string, err error) error {
	var ue *UnsafeError
	switch {
	case errors.As(err, &ue):
		return err
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("hook script %s does not exist", path)
	}
	return fmt.Errorf("hook script %s: %w", path, err)
}

// subjectOf names the script in messages: the configured path, and where
// it leads when that differs.
func subjectOf(path, target string) string {
	if target == path || target == "" {
		return path
	}
	return fmt.Sprintf("%s (resolved to %s)", path, target)
}

// checkFile applies the rules for the script file itself, given its lstat
// (never a symbolic link): a regular file, owned by root or this process's
// effective user (else *UnsafeError), not writable by group or others (else
// *UnsafeError).
func checkFile(path, subject, target string, fi fs.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("hook script %s is not a regular file (it is %s)", subject, kindOf(fi.Mode()))
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("hook script %s: no ownership information", subject)
	}
	euid := os.Geteuid()
	perm := fi.Mode().Perm()
	unsafe := func(format string, a ...any) error {
		return &UnsafeError{Script: path, Path: target, Mode: unixMode(fi.Mode()), UID: int(st.Uid), msg: fmt.Sprintf(format, a...)}
	}
	if !trustedOwner(st.Uid) {
		return unsafe("hook script %s is owned by uid %d; it must be owned by root or by the user wgkeeper runs as (uid %d); run chown root %s", subject, st.Uid, euid, target)
	}
	switch perm & 0o022 {
	case 0o022:
		return unsafe("hook script %s is writable by group and others (mode %04o); run chmod go-w %s", subject, perm, target)
	case 0o020:
		return unsafe("hook script %s is writable by group (mode %04o); run chmod g-w %s", subject, perm, target)
	case 0o002:
		return unsafe("hook script %s is writable by others (mode %04o); run chmod go-w %s", subject, perm, target)
	}
	return nil
}

// trustedOwner reports whether uid is root or this process's effective user.
func trustedOwner(uid uint32) bool {
	return uid == 0 || int(uid) == os.Geteuid()
}

// resolveTrusted resolves the absolute path one name at a time, as the
// kernel does, and checks every directory a name is looked up in: owned by
// root or this process's effective user, and writable by neither group nor
// others unless it is sticky and the entry looked up is owned by root or
// that user. It returns the real path of the file (no symbolic link left)
// and the file's lstat.
//
// Errors: *UnsafeError naming the first directory that breaks the rule;
// an error matching fs.ErrNotExist, syscall.ENOTDIR, syscall.EACCES or
// syscall.ELOOP when the path cannot be resolved. It costs one lstat per
// name on the way, plus a readlink per symbolic link.
func resolveTrusted(path string) (string, fs.FileInfo, error) {
	// Each name to resolve, and whether it is the last name of the
	// configured path (not of a link target): the directory it is looked
	// up in holds the script as the operator sees it.
	type name struct {
		s    string
		last bool
	}
	names := func(p string, last bool) []name {
		parts := splitPath(p)
		out := make([]name, len(parts))
		for i, s := range parts {
			out[i] = name{s: s, last: last && i == len(parts)-1}
		}
		return out
	}
	pending := names(filepath.Clean(path), true)
	cur := "/"
	curInfo, err := os.Lstat(cur)
	if err != nil {
		return "", nil, err
	}
	links := 0
	for len(pending) > 0 {
		n := pending[0]
		pending = pending[1:]
		if n.s == ".." {
			cur = filepath.Dir(cur)
			if curInfo, err = os.Lstat(cur); err != nil {
				return "", nil, err
			}
			continue
		}
		next := filepath.Join(cur, n.s)
		ni, err := os.Lstat(next)
		if err != nil {
			return "", nil, err
		}
		isLink := ni.Mode()&fs.ModeSymlink != 0
		holds := n.last || len(pending) == 0 && !isLink
		if err := trustDir(path, cur, curInfo, next, ni, holds); err != nil {
			return "", nil, err
		}
		if isLink {
			links++
			if links > maxLinks {
				return "", nil, &fs.PathError{Op: "resolve", Path: path, Err: syscall.ELOOP}
			}
			target, err := os.Readlink(next)
			if err != nil {
				return "", nil, err
			}
			if filepath.IsAbs(target) {
				cur = "/"
				if curInfo, err = os.Lstat(cur); err != nil {
					return "", nil, err
				}
			}
			pending = append(names(filepath.Clean(target), false), pending...)
			continue
		}
		if len(pending) > 0 && !ni.IsDir() {
			return "", nil, &fs.PathError{Op: "resolve", Path: next, Err: syscall.ENOTDIR}
		}
		cur, curInfo = next, ni
	}
	return cur, curInfo, nil
}

// splitPath returns the names of a cleaned path, without empty ones.
func splitPath(p string) []string {
	var out []string
	for _, n := range strings.Split(p, "/") {
		if n != "" && n != "." {
			out = append(out, n)
		}
	}
	return out
}

// trustDir checks directory dir (lstat di) in which the entry next (lstat
// ni) is looked up on the way to the script. holds says whether dir holds
// the script itself (or the configured name of it), which only changes the
// wording.
func trustDir(path, dir string, di fs.FileInfo, next string, ni fs.FileInfo, holds bool) error {
	st, ok := di.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("hook script %s: directory %s: no ownership information", path, dir)
	}
	where := "below"
	if holds {
		where = "in"
	}
	unsafe := func(format string, a ...any) error {
		return &UnsafeError{Script: path, Path: dir, Mode: unixMode(di.Mode()), UID: int(st.Uid),
			msg: fmt.Sprintf("hook script %s is %s directory %s, which ", subjectFor(path), where, dir) + fmt.Sprintf(format, a...)}
	}
	if !trustedOwner(st.Uid) {
		return unsafe("is owned by uid %d (mode %04o); every directory above the script must be owned by root or by the user wgkeeper runs as (uid %d); run chown root %s or move the script to a directory only root can write, e.g. /usr/local/bin or /etc/wgkeeper",
			st.Uid, unixMode(di.Mode()), os.Geteuid(), dir)
	}
	perm := di.Mode().Perm()
	w := perm & 0o022
	if w == 0 {
		return nil
	}
	if di.Mode()&fs.ModeSticky != 0 {
		// Only the owner of an entry (or of the directory, or root) may
		// rename or remove it in a sticky directory.
		if nst, ok := ni.Sys().(*syscall.Stat_t); ok && trustedOwner(nst.Uid) {
			return nil
		}
		nuid := -1
		if nst, ok := ni.Sys().(*syscall.Stat_t); ok {
			nuid = int(nst.Uid)
		}
		return unsafe("is writable by %s (mode %04o) and sticky, but its entry %s is owned by uid %d, who may replace it; it must be owned by root or by the user wgkeeper runs as (uid %d)",
			writers(w), unixMode(di.Mode()), next, nuid, os.Geteuid())
	}
	if holds {
		return unsafe("is writable by %s (mode %04o); move the script to a directory only root can write, e.g. /usr/local/bin or /etc/wgkeeper",
			writers(w), unixMode(di.Mode()))
	}
	return unsafe("is writable by %s (mode %04o), so they could replace the script; run chmod %s %s, or move the script to a directory only root can write, e.g. /usr/local/bin or /etc/wgkeeper",
		writers(w), unixMode(di.Mode()), chmodFix(w), dir)
}

// subjectFor names the configured script path with where it resolves to, as
// far as that can be known.
func subjectFor(path string) string {
	target, err := filepath.EvalSymlinks(path)
	if err != nil {
		return path
	}
	return subjectOf(path, target)
}

func writers(w fs.FileMode) string {
	switch w {
	case 0o022:
		return "group and others"
	case 0o020:
		return "group"
	}
	return "others"
}

func chmodFix(w fs.FileMode) string {
	switch w {
	case 0o022:
		return "go-w"
	case 0o020:
		return "g-w"
	}
	return "o-w"
}

// openChecked checks path as resolveTrusted and checkFile do and opens the
// file it resolves to, returning a descriptor (O_PATH, close-on-exec) of
// exactly the inode that was checked: the file is opened by its real path
// without following a link and must be the inode the check saw, else the
// check is repeated (twice at most: a deployment renaming a new version
// into place is not a fault). Executing this descriptor runs what was
// checked, whatever is renamed over the path afterwards.
//
// Errors: *UnsafeError; otherwise an error matching the errno that running
// the script by its path would have given (ENOENT, EACCES, ENOTDIR, ELOOP),
// or saying the file is not a regular file.
func openChecked(path string) (*os.File, error) {
	for attempt := 1; ; attempt++ {
		target, fi, err := resolveTrusted(path)
		if err != nil {
			return nil, err
		}
		if err := checkFile(path, subjectOf(path, target), target, fi); err != nil {
			return nil, err
		}
		fd, err := unix.Open(target, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: target, Err: err}
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return nil, &fs.PathError{Op: "fstat", Path: target, Err: err}
		}
		want := fi.Sys().(*syscall.Stat_t)
		if st.Dev == want.Dev && st.Ino == want.Ino {
			return os.NewFile(uintptr(fd), target), nil
		}
		unix.Close(fd)
		if attempt == 3 {
			return nil, fmt.Errorf("hook script %s keeps changing while it is checked; try again once it is deployed", path)
		}
	}
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
	case m&fs.ModeSymlink != 0:
		return "a symbolic link"
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
