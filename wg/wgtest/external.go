package wgtest

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// External is an interface run by the system's wireguard-go program: a real
// TUN and a UAPI socket owned by another process, as in mode "existing".
type External struct {
	Name       string
	PrivateKey wgtypes.Key
	PublicKey  wgtypes.Key
	Port       int

	bin  string
	cmd  *exec.Cmd
	out  *lockedBuffer
	once sync.Once
}

// start runs wireguard-go on e.Name and waits until wgctrl sees it.
func (e *External) start(tb testing.TB) {
	tb.Helper()
	e.out = &lockedBuffer{}
	e.once = sync.Once{}
	e.cmd = exec.Command(e.bin, e.Name)
	e.cmd.Env = append(os.Environ(), "WG_PROCESS_FOREGROUND=1")
	e.cmd.Stdout, e.cmd.Stderr = e.out, e.out
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := e.cmd.Start(); err != nil {
		tb.Fatalf("wgtest: start wireguard-go: %v", err)
	}
	wc, err := wgctrl.New()
	if err != nil {
		tb.Fatal(err)
	}
	defer wc.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err = wc.Device(e.Name); err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("wgtest: wireguard-go %s did not come up: %v; output:\n%s", e.Name, err, e.out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Recreate stops wireguard-go, which removes the interface, and starts a
// new one under the same name with no private key, no listen port and no
// peers, as when wg-quick or an admin recreates an interface before (or
// without) configuring it. PrivateKey, PublicKey and Port become zero.
func (e *External) Recreate(tb testing.TB) {
	tb.Helper()
	e.Stop()
	e.PrivateKey, e.PublicKey, e.Port = wgtypes.Key{}, wgtypes.Key{}, 0
	e.start(tb)
}

type lockedBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// StartWireguardGo runs `wireguard-go` in the foreground on a new interface
// named "wgx" plus random hex, sets a generated private key and a free
// listen port, and waits until wgctrl sees it. It skips the test when not
// root, when /dev/net/tun is missing, or when wireguard-go is not installed
// (CI installs it). tb.Cleanup stops the process, which removes the
// interface and its socket.
func StartWireguardGo(tb testing.TB) *External {
	tb.Helper()
	RequireRoot(tb)
	bin, err := exec.LookPath("wireguard-go")
	if err != nil {
		tb.Skip("skipped: the wireguard-go program is not installed (apt-get install wireguard-go)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		tb.Skipf("skipped: /dev/net/tun is not available: %v", err)
	}
	e := &External{Name: UniqueName("wgx"), bin: bin}
	e.start(tb)
	tb.Cleanup(e.Stop)

	wc, err := wgctrl.New()
	if err != nil {
		tb.Fatal(err)
	}
	defer wc.Close()
	if e.PrivateKey, err = wgtypes.GeneratePrivateKey(); err != nil {
		tb.Fatal(err)
	}
	e.PublicKey = e.PrivateKey.PublicKey()
	port := 0
	if err := wc.ConfigureDevice(e.Name, wgtypes.Config{PrivateKey: &e.PrivateKey, ListenPort: &port}); err != nil {
		tb.Fatalf("wgtest: configure %s: %v", e.Name, err)
	}
	d, err := wc.Device(e.Name)
	if err != nil {
		tb.Fatalf("wgtest: read %s: %v", e.Name, err)
	}
	e.Port = d.ListenPort
	return e
}

// Stop terminates wireguard-go and waits for it; the interface and the
// socket go with it (they are removed here if it left them). Idempotent;
// registered with tb.Cleanup.
func (e *External) Stop() {
	e.once.Do(func() {
		e.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { e.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			e.cmd.Process.Kill()
			<-done
		}
		if link, err := netlink.LinkByName(e.Name); err == nil {
			netlink.LinkDel(link)
		}
		sock := filepath.Join("/var/run/wireguard", e.Name+".sock")
		if err := os.Remove(sock); err != nil && !errors.Is(err, os.ErrNotExist) {
			return
		}
	})
}

// Output returns what wireguard-go printed so far.
func (e *External) Output() string { return e.out.String() }
