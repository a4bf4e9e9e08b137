package api

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/wgkeeper/wgkeeper/config"
)

// SocketMode is the mode of the API's unix socket: owner and group may
// connect.
const SocketMode = 0o660

// Listen opens the API's listener for c.Listen:
//
//   - "unix:/path": a unix socket created mode 0660 (bound under a temporary
//     name, chmod-ed, then renamed into place, so it is never reachable with
//     wider permissions). An existing file at the path is replaced only when
//     it is a socket that nothing answers on (left by a process that died);
//     a live socket or any other kind of file is an error. The socket file
//     is removed when the listener is closed.
//   - "host:port": TCP, with TLS when c.TLSCert and c.TLSKey are set. A
//     plain-HTTP listener on an address that is not loopback is refused
//     unless c.Insecure is set, because the bearer token would cross the
//     network in clear text.
func Listen(c config.API) (net.Listener, error) {
	if c.Listen == "" {
		return nil, errors.New("api.listen is empty: the API is off")
	}
	if path, ok := c.UnixSocket(); ok {
		return listenUnix(path)
	}
	l, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return nil, fmt.Errorf("api.listen %q: %w", c.Listen, err)
	}
	if c.TLSCert != "" || c.TLSKey != "" {
		cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("api.tls_cert %s / api.tls_key %s: %w", c.TLSCert, c.TLSKey, err)
		}
		return tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}), nil
	}
	if !isLoopback(l.Addr()) && !c.Insecure {
		l.Close()
		return nil, fmt.Errorf("api.listen %q is not a loopback address and no TLS is configured: refusing to send the bearer token in clear text over the network; "+
			"set api.tls_cert and api.tls_key, listen on 127.0.0.1, [::1] or a unix socket, or set api.insecure = true (only behind a trusted network or a TLS proxy)", c.Listen)
	}
	return l, nil
}

func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

func listenUnix(path string) (net.Listener, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("api.listen unix:%s: the socket path must be absolute", path)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("api.listen unix:%s: create directory: %w", path, err)
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("api.listen unix:%s: %w", path, err)
	}
	tmp := filepath.Join(dir, "."+filepath.Base(path)+"."+hex.EncodeToString(b[:]))
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("api.listen unix:%s: %w", path, err)
	}
	l.SetUnlinkOnClose(false)
	fail := func(err error) (net.Listener, error) {
		l.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("api.listen unix:%s: %w", path, err)
	}
	if err := os.Chmod(tmp, SocketMode); err != nil {
		return fail(err)
	}
	// Another process may have bound path since the check: link(2) never
	// replaces, so a live socket is never taken over.
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fail(errors.New("another process created the socket meanwhile"))
		}
		return fail(err)
	}
	os.Remove(tmp)
	fi, err := os.Lstat(path)
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("api.listen unix:%s: %w", path, err)
	}
	return &unixListener{UnixListener: l, path: path, fi: fi}, nil
}

// removeStaleSocket removes path if it is a socket nothing answers on. It is
// not an error when path does not exist.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("api.listen unix:%s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("api.listen unix:%s: the path exists and is not a socket (%s); refusing to replace it", path, kindOf(fi.Mode()))
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("api.listen unix:%s: another process is serving on this socket (is wgkeeper already running?)", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("api.listen unix:%s: cannot tell whether the existing socket is in use: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("api.listen unix:%s: remove stale socket: %w", path, err)
	}
	return nil
}

// unixListener removes its socket file when closed, if the file is still
// the socket it bound.
type unixListener struct {
	*net.UnixListener
	path string
	fi   os.FileInfo // the socket file as bound
}

func (l *unixListener) Close() error {
	err := l.UnixListener.Close()
	if now, serr := os.Lstat(l.path); serr == nil && sameInode(l.fi, now) {
		os.Remove(l.path)
	}
	return err
}

func sameInode(a, b os.FileInfo) bool {
	sa, ok1 := a.Sys().(*syscall.Stat_t)
	sb, ok2 := b.Sys().(*syscall.Stat_t)
	return ok1 && ok2 && sa.Ino == sb.Ino && sa.Dev == sb.Dev
}

// LoadToken reads the bearer token from path: the file's content with
// surrounding white space removed. The file must not be readable or
// writable by group or others, and must not be empty. A missing file is
// created (mode 0600, 32 random bytes in hex), and its path — never the
// token — is logged, so a first run works without a manual step. The
// directory is not created.
func LoadToken(path string, log *slog.Logger) (string, error) {
	return loadToken("api.token_file", path, "created a new API bearer token; give it to the portal", log)
}

// LoadReadToken reads the read-only token (api.read_token_file) from path
// under the rules of LoadToken, creating it when missing. An empty path
// (the key is not set) is no read token: "" and no error.
func LoadReadToken(path string, log *slog.Logger) (string, error) {
	if path == "" {
		return "", nil
	}
	return loadToken("api.read_token_file", path, "created a new read-only API token; give it to those who may only read", log)
}

func loadToken(key, path, created string, log *slog.Logger) (string, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if path == "" {
		return "", fmt.Errorf("%s is not set", key)
	}
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := createToken(key, path); err != nil {
			return "", err
		}
		log.Warn(created, strings.TrimPrefix(key, "api."), path)
		fi, err = os.Stat(path)
	}
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", key, path, err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s %s: not a regular file", key, path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("%s %s: mode %04o lets group or others access the token; run chmod 600 %s", key, path, perm, path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", key, path, err)
	}
	tok := strings.TrimSpace(string(data))
	if tok == "" {
		return "", fmt.Errorf("%s %s: the file is empty; put a long random token in it (for example: openssl rand -hex 32)", key, path)
	}
	if strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("%s %s: the token must be one word without white space", key, path)
	}
	return tok, nil
}

func createToken(key, path string) error {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Errorf("%s %s: generate token: %w", key, path, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil // created meanwhile by another process: read that one
	}
	if err != nil {
		return fmt.Errorf("%s %s: create: %w", key, path, err)
	}
	if _, err := f.WriteString(hex.EncodeToString(b[:]) + "\n"); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("%s %s: write: %w", key, path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return fmt.Errorf("%s %s: write: %w", key, path, err)
	}
	return nil
}

func kindOf(m fs.FileMode) string {
	switch {
	case m.IsRegular():
		return "a regular file"
	case m.IsDir():
		return "a directory"
	case m&fs.ModeSymlink != 0:
		return "a symbolic link"
	}
	return "a special file"
}
