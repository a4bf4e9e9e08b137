package wg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
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
type Link struct {
	name string
	mode string
	log  *slog.Logger
	done <-chan struct{}

	closeOnce sync.Once
	closeErr  error
	close     func() error
}

// Name returns the interface name.
func (l *Link) Name() string { return l.name }

// Mode returns the interface mode.
func (l *Link) Mode() string { return l.mode }

// Done is closed when a userspace device stops by itself (for example its
// TUN was deleted) or after Close. For the other modes it is closed only by
// Close.
func (l *Link) Done() <-chan struct{} { return l.done }

// Close removes an interface wgkeeper owns (kernel: deletes the link;
// userspace: closes the UAPI socket and the device, which removes the TUN).
// For ModeExisting it does nothing: wgkeeper never removes what it does not
// own. Close is idempotent; later calls return the first call's result.
func (l *Link) Close() error {
	l.closeOnce.Do(func() {
		l.closeErr = l.close()
		if l.closeErr == nil && l.mode != ModeExisting {
			l.log.Info("interface removed", "iface", l.name, "mode", l.mode)
		}
	})
	return l.closeErr
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
		log.Info("interface up", "iface", spec.Name, "mode", spec.Mode, "addresses", len(spec.Addresses))
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
	done := make(chan struct{})
	return &Link{
		name: spec.Name, mode: ModeExisting, log: log, done: done,
		close: func() error { close(done); return nil },
	}, nil
}

// errLinkExists is wrapped when Up finds the name taken.
var errLinkExists = errors.New("interface already exists")
