//go:build linux

package wg

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// checkAbsent fails when a link named name exists.
func checkAbsent(name string) error {
	_, err := netlink.LinkByName(name)
	if err == nil {
		return fmt.Errorf("%w: %s is owned by something else; remove it (ip link del %s) or use mode %q", errLinkExists, name, name, ModeExisting)
	}
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return nil
	}
	return fmt.Errorf("look up link: %w", err)
}

func upKernel(spec Spec, log *slog.Logger) (*Link, error) {
	if err := checkAbsent(spec.Name); err != nil {
		return nil, err
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = spec.Name
	attrs.MTU = MTU
	if err := netlink.LinkAdd(&netlink.Wireguard{LinkAttrs: attrs}); err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("create kernel link: the wireguard kernel module is missing (%v): load it with `modprobe wireguard`, or use mode %q", err, ModeUserspace)
		}
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
			return nil, fmt.Errorf("create kernel link: %w (needs root or CAP_NET_ADMIN)", err)
		}
		return nil, fmt.Errorf("create kernel link: %w", err)
	}
	remove := func() error {
		link, err := netlink.LinkByName(spec.Name)
		if err != nil {
			var nf netlink.LinkNotFoundError
			if errors.As(err, &nf) {
				return nil
			}
			return fmt.Errorf("remove %s: %w", spec.Name, err)
		}
		if err := netlink.LinkDel(link); err != nil {
			return fmt.Errorf("remove %s: %w", spec.Name, err)
		}
		return nil
	}
	if err := configureKernel(spec); err != nil {
		remove()
		return nil, err
	}
	done := make(chan struct{})
	return &Link{
		name: spec.Name, mode: ModeKernel, log: log, done: done,
		close: func() error { defer close(done); return remove() },
	}, nil
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
	return addrsAndUp(spec.Name, spec.Addresses)
}

func upUserspace(spec Spec, log *slog.Logger) (*Link, error) {
	if err := checkAbsent(spec.Name); err != nil {
		return nil, err
	}
	tdev, err := tun.CreateTUN(spec.Name, MTU)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("create tun: %w (is /dev/net/tun present? modprobe tun)", err)
		}
		return nil, fmt.Errorf("create tun: %w (needs root or CAP_NET_ADMIN and /dev/net/tun)", err)
	}
	dev := device.NewDevice(tdev, conn.NewDefaultBind(), deviceLogger(log, spec.Name))
	fail := func(err error) (*Link, error) {
		dev.Close() // closes the TUN, which removes the interface
		return nil, err
	}
	if err := dev.IpcSet(fmt.Sprintf("private_key=%x\nlisten_port=%d\n", spec.PrivateKey[:], spec.ListenPort)); err != nil {
		return fail(fmt.Errorf("set private key and listen port: %w", err))
	}
	uapi, err := ServeUAPI(spec.Name, dev, log)
	if err != nil {
		return fail(err)
	}
	if err := addrsAndUp(spec.Name, spec.Addresses); err != nil {
		uapi.Close()
		return fail(err)
	}
	return &Link{
		name: spec.Name, mode: ModeUserspace, log: log, done: dev.Wait(),
		close: func() error {
			err := uapi.Close()
			dev.Close()
			return err
		},
	}, nil
}

// addrsAndUp adds the addresses to the link and sets it up.
func addrsAndUp(name string, addrs []netip.Prefix) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("look up link: %w", err)
	}
	for _, a := range addrs {
		ip := a.Addr()
		nlAddr := &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(a.Bits(), ip.BitLen())}}
		if err := netlink.AddrAdd(link, nlAddr); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add address %s: %w", a, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("set link up: %w", err)
	}
	return nil
}
