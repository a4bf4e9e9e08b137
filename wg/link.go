package wg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Interface modes, as spelled in the config.
const (
	// ModeExisting: someone else owns the interface; wgkeeper manages its
	// peers, and its private key and listen port when configured.
	ModeExisting = "existing"
	// ModeKernel: wgkeeper creates a kernel WireGuard link over netlink.
	ModeKernel = "kernel"
	// ModeUserspace: wgkeeper runs an embedded wireguard-go device on a real
	// TUN and serves the standard UAPI socket.
	ModeUserspace = "userspace"
)

// MTU is the MTU of the interfaces wgkeeper creates (WireGuard's default).
const MTU = 1420

// Spec describes an interface to bring up.
type Spec struct {
	Name string
	Mode string // ModeExisting ("" means existing), ModeKernel or ModeUserspace
	// PrivateKey is required for kernel and userspace; for existing it is
	// written only when non-zero and different.
	PrivateKey wgtypes.Key
	// ListenPort: 0 lets the system choose (kernel, userspace) or leaves the
	// port alone (existing).
	ListenPort int
	// Addresses are the interface's own addresses with their prefix length
	// (10.42.0.1/24); kernel and userspace only, ignored for existing.
	Addresses []netip.Prefix
	Logger    *slog.Logger // nil = discard
}

// Link is an interface brought up by Up.
//
// For ModeKernel and ModeUserspace the Link owns the interface and keeps it
// as the spec says: Ensure recreates it when it was deleted (same key, port,
// addresses, MTU), brings it up when it was set down and adds addresses that
// went missing. A userspace Link notices that its TUN is gone (the embedded
// device stops by itself then) and replaces the stopped device and its UAPI
// socket with new ones.
type Link struct {
	name string
	mode string
	spec Spec
	log  *slog.Logger
	done chan struct{} // closed by Close

	// mu guards the fields below. It is held through a whole repair, so
	// Ensure and Close never run at once.
	mu     sync.Mutex
	index  int       // kernel and userspace: ifindex of the link this Link created; 0 = none now
	user   *userInst // userspace: the running device; nil when none runs
	closed bool
}

// Name returns the interface name.
func (l *Link) Name() string { return l.name }

// Mode returns the interface mode.
func (l *Link) Mode() string { return l.mode }

// Done is closed by Close. A userspace device that stops by itself (its
// TUN was deleted) does not close it: Ensure brings the device back.
func (l *Link) Done() <-chan struct{} { return l.done }

// Close removes an interface wgkeeper owns (kernel: deletes the link;
// userspace: closes the UAPI socket and the device, which removes the TUN).
// For ModeExisting it does nothing: wgkeeper never removes what it does not
// own. Close is idempotent; later calls return nil.
func (l *Link) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	defer close(l.done)
	if l.mode == ModeExisting {
		return nil
	}
	err := l.removeLocked()
	if err == nil {
		l.log.Info("interface removed", "iface", l.name, "mode", l.mode)
	}
	return err
}

// ErrLinkClosed is returned by Ensure after Close.
var ErrLinkClosed = errors.New("interface closed")

// Ensure checks an owned interface against its spec and repairs what
// differs: an interface that is gone (deleted, or a userspace device that
// stopped) is created again with the spec's key, port, addresses and MTU; a
// link that is down is set up; missing addresses are added. It returns what
// it repaired, in words for the log ("recreated", "set up", "added address
// fd77::1/64"); nothing when all was in order. Peers are not its business:
// a recreated interface has none until the caller writes them.
//
// It never takes over a link it did not create: when another link now has
// the name, the error wraps an "already exists" error and nothing changes.
// For ModeExisting it does nothing. After Close it returns ErrLinkClosed.
// Safe for concurrent use.
func (l *Link) Ensure(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, fmt.Errorf("ensure %s: %w", l.name, ErrLinkClosed)
	}
	if l.mode == ModeExisting {
		return nil, nil
	}
	repairs, err := l.ensureLocked()
	if len(repairs) > 0 {
		l.log.Warn("interface repaired", "iface", l.name, "mode", l.mode, "repairs", strings.Join(repairs, ", "))
	}
	if err != nil {
		return repairs, fmt.Errorf("ensure %s: %w", l.name, err)
	}
	return repairs, nil
}

// Up makes the interface of spec ready.
//
// ModeExisting checks that the interface exists (an error matching
// os.ErrNotExist if not) and sets its private key and listen port when the
// spec names them and they differ.
//
// ModeKernel and ModeUserspace create the interface, set the private key and
// listen port, add the addresses and bring the link up; they need root (or
// CAP_NET_ADMIN). Kernel mode needs the wireguard kernel module; userspace
// mode needs /dev/net/tun. Both refuse an interface name that already
// exists, so nothing someone else owns is ever taken over; on any error,
// whatever Up created is removed again.
func Up(ctx context.Context, spec Spec) (*Link, error) {
	if spec.Mode == "" {
		spec.Mode = ModeExisting
	}
	if err := checkSpec(spec); err != nil {
		return nil, fmt.Errorf("bring up %s: %w", spec.Name, err)
	}
	log := spec.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("bring up %s: %w", spec.Name, err)
	}
	var (
		l   *Link
		err error
	)
	switch spec.Mode {
	case ModeExisting:
		l, err = upExisting(ctx, spec, log)
	case ModeKernel:
		l, err = upKernel(spec, log)
	case ModeUserspace:
		l, err = upUserspace(spec, log)
	}
	if err != nil {
		return nil, fmt.Errorf("bring up %s (mode %s): %w", spec.Name, spec.Mode, err)
	}
	if spec.Mode != ModeExisting {
		log.Info("interface up", "iface", spec.Name, "mode", spec.Mode, "port", spec.ListenPort,
			"public_key", spec.PrivateKey.PublicKey().String(), "addresses", len(spec.Addresses))
	}
	return l, nil
}

func checkSpec(spec Spec) error {
	if err := CheckName(spec.Name); err != nil {
		return err
	}
	switch spec.Mode {
	case ModeExisting, ModeKernel, ModeUserspace:
	default:
		return fmt.Errorf("unknown mode %q: want %q, %q or %q", spec.Mode, ModeExisting, ModeKernel, ModeUserspace)
	}
	if spec.ListenPort < 0 || spec.ListenPort > 65535 {
		return fmt.Errorf("listen port %d out of range 0-65535", spec.ListenPort)
	}
	if spec.Mode == ModeExisting {
		return nil
	}
	if spec.PrivateKey == (wgtypes.Key{}) {
		return fmt.Errorf("mode %s needs a private key", spec.Mode)
	}
	for _, a := range spec.Addresses {
		if !a.IsValid() {
			return fmt.Errorf("invalid address %q", a)
		}
	}
	return nil
}

func upExisting(ctx context.Context, spec Spec, log *slog.Logger) (*Link, error) {
	c, err := NewClient(WithLogger(log))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if _, err := c.read(ctx, spec.Name); err != nil {
		return nil, err
	}
	var key *wgtypes.Key
	if spec.PrivateKey != (wgtypes.Key{}) {
		key = &spec.PrivateKey
	}
	var port *int
	if spec.ListenPort != 0 {
		port = &spec.ListenPort
	}
	if err := c.SetDevice(ctx, spec.Name, key, port); err != nil {
		return nil, err
	}
	return &Link{name: spec.Name, mode: ModeExisting, spec: spec, log: log, done: make(chan struct{})}, nil
}

// errLinkExists is wrapped when Up finds the name taken.
var errLinkExists = errors.New("interface already exists")
