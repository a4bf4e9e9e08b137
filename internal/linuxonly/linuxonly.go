//go:build linux

// Package linuxonly declares that wgkeeper is built for Linux only. It
// has no API: the packages that use Linux's interfaces (netlink and
// wireguard-go's TUN in wg; O_PATH, pipe2 and Pdeathsig in hooks; the
// SQLite driver's cgo build and the file-system errno mapping in
// store/sqlite; flock(2) through them in reconcile; mount(2) in
// internal/tmpfs) import it for its effect, so that a build for any other
// system stops at one clear error here instead of at the first missing
// system call somewhere else. There are no fallbacks for other systems.
package linuxonly
