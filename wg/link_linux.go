//go:build linux

package wg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// lookupLink returns the link named name, or nil when there is none.
func lookupLink(name string) (netlink.Link, error) {
	link, err := netlink.LinkByName(name)
	if err == nil {
		return link, nil
	}
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return nil, nil
	}
	return nil, fmt.Errorf("look up link: %w", err)
}

// checkAbsent fails when a link named name exists.
func checkAbsent(name string) error {
	link, err := lookupLink(name)
	if err != nil {
		return err
	}
	if link != nil {
		return fmt.Errorf("%w: %s is owned by something else; remove it (ip link del %s) or use mode %q", errLinkExists, name, name, ModeExisting)
	}
	return nil
}

func upKernel(spec Spec, log *slog.Logger) (*Link, error) {
	l := &Link{name: spec.Name, mode: ModeKernel, spec: spec, log: log, done: make(chan struct{})}
	if err := l.startKernel(); err != nil {
		return nil, err
	}
	return l, nil
}

// startKernel creates and configures the kernel link; on failure nothing
// is left behind. The caller holds l.mu (or owns l alone).
func (l *Link) startKernel() error {
	spec := l.spec
	if err := checkAbsent(spec.Name); err != nil {
		return err
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = spec.Name
	attrs.MTU = MTU
	if err := netlink.LinkAdd(&netlink.Wireguard{LinkAttrs: attrs}); err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("create kernel link: the wireguard kernel module is missing (%v): load it with `modprobe wireguard`, or use mode %q", err, ModeUserspace)
		}
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
			return fmt.Errorf("create kernel link: %w (needs root or CAP_NET_ADMIN)", err)
		}
		return fmt.Errorf("create kernel link: %w", err)
	}
	link, err := lookupLink(spec.Name)
	if err == nil && link == nil {
		err = errors.New("link vanished right after its creation")
	}
	if err != nil {
		return err
	}
	l.index = link.Attrs().Index
	if err := configureKernel(spec); err != nil {
		l.removeLocked()
		return err
	}
	return nil
}

func configureKernel(spec Spec) error {
	wc, err := wgctrl.New()
	if err != nil {
		return fmt.Errorf("open wireguard control client: %w", err)
	}
	defer wc.Close()
	cfg := wgtypes.Config{PrivateKey: &spec.PrivateKey}
	if spec.ListenPort != 0 {
		cfg.ListenPort = &spec.ListenPort
	}
	if err := wc.ConfigureDevice(spec.Name, cfg); err != nil {
		return fmt.Errorf("set private key and listen port: %w", err)
	}
	_, err = addrsAndUp(spec.Name, spec.Addresses)
	return err
}

// userInst is one life of a userspace interface: the embedded device on
// its TUN, and the UAPI socket serving it.
type userInst struct {
	dev  *device.Device
	uapi *UAPIServer
}

// stopped reports whether the device stopped by itself (its TUN went away).
func (u *userInst) stopped() bool {
	select {
	case <-u.dev.Wait():
		return true
	default:
		return false
	}
}

func (u *userInst) close() error {
	err := u.uapi.Close()
	u.dev.Close() // closes the TUN, which removes the interface
	return err
}

func upUserspace(spec Spec, log *slog.Logger) (*Link, error) {
	l := &Link{name: spec.Name, mode: ModeUserspace, spec: spec, log: log, done: make(chan struct{})}
	if err := l.startUserspace(); err != nil {
		return nil, err
	}
	if l.spec.ListenPort == 0 {
		// The system chooses a port when the device opens its socket: a
		// recreated device takes the same.
		err := l.user.dev.Up()
		port := 0
		if err == nil {
			port, err = devicePort(l.user.dev)
		}
		if err != nil {
			l.removeLocked()
			return nil, err
		}
		l.spec.ListenPort = port
	}
	return l, nil
}

// startUserspace creates the TUN, the device and its UAPI socket, and
// configures them; on failure nothing is left behind. The caller holds l.mu
// (or owns l alone).
func (l *Link) startUserspace() error {
	spec := l.spec
	if err := checkAbsent(spec.Name); err != nil {
		return err
	}
	tdev, err := tun.CreateTUN(spec.Name, MTU)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("create tun: %w (is /dev/net/tun present? modprobe tun)", err)
		}
		return fmt.Errorf("create tun: %w (needs root or CAP_NET_ADMIN and /dev/net/tun)", err)
	}
	dev := device.NewDevice(tdev, conn.NewDefaultBind(), deviceLogger(l.log, spec.Name))
	if err := dev.IpcSet(fmt.Sprintf("private_key=%x\nlisten_port=%d\n", spec.PrivateKey[:], spec.ListenPort)); err != nil {
		dev.Close()
		return fmt.Errorf("set private key and listen port: %w", err)
	}
	uapi, err := ServeUAPI(spec.Name, dev, l.log)
	if err != nil {
		dev.Close()
		return err
	}
	u := &userInst{dev: dev, uapi: uapi}
	index, err := addrsAndUp(spec.Name, spec.Addresses)
	if err != nil {
		u.close()
		return err
	}
	l.user, l.index = u, index
	return nil
}

// devicePort reads the listen port the device uses.
func devicePort(dev *device.Device) (int, error) {
	s, err := dev.IpcGet()
	if err != nil {
		return 0, fmt.Errorf("read listen port: %w", err)
	}
	for line := range strings.Lines(s) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "listen_port="); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, errors.New("read listen port: the device reports none")
}

// removeLocked removes what the Link created. The caller holds l.mu.
func (l *Link) removeLocked() error {
	defer func() { l.index = 0 }()
	switch l.mode {
	case ModeUserspace:
		if l.user == nil {
			return nil
		}
		err := l.user.close()
		l.user = nil
		return err
	case ModeKernel:
		link, err := lookupLink(l.name)
		if err != nil {
			return fmt.Errorf("remove %s: %w", l.name, err)
		}
		if link == nil || link.Attrs().Index != l.index {
			return nil // gone already, or someone else's now
		}
		if err := netlink.LinkDel(link); err != nil {
			return fmt.Errorf("remove %s: %w", l.name, err)
		}
	}
	return nil
}

// ensureLocked is Ensure for the owned modes. The caller holds l.mu.
func (l *Link) ensureLocked() ([]string, error) {
	link, err := lookupLink(l.name)
	if err != nil {
		return nil, err
	}
	ours := link != nil && l.index != 0 && link.Attrs().Index == l.index
	if l.mode == ModeUserspace && ours && (l.user == nil || l.user.stopped()) {
		ours = false // a TUN whose device is gone: replace both
	}
	if ours {
		return linkUpAndAddrs(link, l.spec.Addresses)
	}
	if link != nil && (l.index == 0 || link.Attrs().Index != l.index) {
		return nil, fmt.Errorf("%w: %s was replaced by a link wgkeeper did not create (type %s); remove it (ip link del %s) and wgkeeper brings its own back, or use mode %q",
			errLinkExists, l.name, link.Type(), l.name, ModeExisting)
	}
	// Gone: drop what is left of the old life (a stopped device, its UAPI
	// socket) and start a new one.
	if err := l.removeLocked(); err != nil {
		l.log.Warn("clean up the lost interface", "iface", l.name, "err", err)
	}
	if l.mode == ModeUserspace {
		err = l.startUserspace()
	} else {
		err = l.startKernel()
	}
	if err != nil {
		return nil, fmt.Errorf("recreate: %w", err)
	}
	return []string{"recreated"}, nil
}

// addrsAndUp adds the addresses to the new link and sets it up; it returns
// the link's index.
func addrsAndUp(name string, addrs []netip.Prefix) (int, error) {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return 0, fmt.Errorf("look up link: %w", err)
	}
	for _, a := range addrs {
		if err := netlink.AddrAdd(link, nlAddr(a)); err != nil && !errors.Is(err, unix.EEXIST) {
			return 0, fmt.Errorf("add address %s: %w", a, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return 0, fmt.Errorf("set link up: %w", err)
	}
	return link.Attrs().Index, nil
}

func nlAddr(a netip.Prefix) *netlink.Addr {
	ip := a.Addr()
	return &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(a.Bits(), ip.BitLen())}}
}

// linkUpAndAddrs sets an existing link up when it is down and adds the
// addresses it lacks (Linux drops IPv6 addresses when a link goes down). It
// returns what it changed.
func linkUpAndAddrs(link netlink.Link, addrs []netip.Prefix) ([]string, error) {
	var repairs []string
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(link); err != nil {
			return repairs, fmt.Errorf("set link up: %w", err)
		}
		repairs = append(repairs, "set up")
	}
	have, err := linkAddrs(link)
	if err != nil {
		return repairs, err
	}
	for _, a := range addrs {
		if have[a] {
			continue
		}
		if err := netlink.AddrAdd(link, nlAddr(a)); err != nil && !errors.Is(err, unix.EEXIST) {
			return repairs, fmt.Errorf("add address %s: %w", a, err)
		}
		repairs = append(repairs, "added address "+a.String())
	}
	return repairs, nil
}

// linkAddrs returns the addresses on a link (with their prefix length).
func linkAddrs(link netlink.Link) (map[netip.Prefix]bool, error) {
	list, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	out := make(map[netip.Prefix]bool, len(list))
	for _, a := range list {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || a.IPNet == nil {
			continue
		}
		ones, _ := a.Mask.Size()
		out[netip.PrefixFrom(ip.Unmap(), ones)] = true
	}
	return out, nil
}

// inspectLink fills the link part of a LinkState.
func inspectLink(name string) (LinkState, error) {
	link, err := lookupLink(name)
	if err != nil || link == nil {
		return LinkState{}, err
	}
	a := link.Attrs()
	st := LinkState{Exists: true, Index: a.Index, Kind: link.Type(), Up: a.Flags&net.FlagUp != 0, MTU: a.MTU}
	have, err := linkAddrs(link)
	if err != nil {
		return LinkState{}, err
	}
	for p := range have {
		if !p.Addr().IsLinkLocalUnicast() {
			st.Addresses = append(st.Addresses, p)
		}
	}
	slices.SortFunc(st.Addresses, func(x, y netip.Prefix) int { return x.Addr().Compare(y.Addr()) })
	return st, nil
}

// WatchLinks sends on the returned channel the name of each of names whose
// link the kernel reports deleted or down (netlink link notifications),
// so an owner can repair it at once instead of at its next scheduled
// check. Notifications for one name are coalesced while the receiver is
// busy. The channel is closed when ctx ends or the subscription fails
// (onErr, if not nil, gets the reason). The kernel's socket is released
// when the process exits: watch once per process.
func WatchLinks(ctx context.Context, names []string, onErr func(error)) (<-chan string, error) {
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	updates := make(chan netlink.LinkUpdate, 64)
	done := make(chan struct{})
	// stopped is set before done closes: the subscription's receive fails
	// once its socket is closed, which is the end asked for, not an error.
	var stopped atomic.Bool
	report := func(err error) {
		if onErr != nil && !stopped.Load() && ctx.Err() == nil {
			onErr(err)
		}
	}
	if err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{ErrorCallback: report}); err != nil {
		return nil, fmt.Errorf("watch links: %w", err)
	}
	out := make(chan string, len(names))
	go func() {
		defer close(out)
		defer close(done)
		defer stopped.Store(true)
		for {
			select {
			case <-ctx.Done():
				return
			case u, ok := <-updates:
				if !ok {
					return
				}
				a := u.Attrs()
				if a == nil || !want[a.Name] {
					continue
				}
				if u.Header.Type == unix.RTM_DELLINK || a.Flags&net.FlagUp == 0 {
					select {
					case out <- a.Name:
					default: // one is queued already
					}
				}
			}
		}
	}()
	return out, nil
}
