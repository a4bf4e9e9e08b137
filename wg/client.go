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
	"strings"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// ErrUnknownState is wrapped by every error of a device write the device did
// not accept. A write is not transactional (the kernel splits large writes
// into acknowledged parts, wireguard-go stops at the first bad line), so part
// of it may have been applied: read the device again before the next step.
var ErrUnknownState = errors.New("device state unknown after a rejected write; re-read before the next step")

// backend is the part of *wgctrl.Client this package uses.
type backend interface {
	Device(name string) (*wgtypes.Device, error)
	ConfigureDevice(name string, cfg wgtypes.Config) error
	Close() error
}

var _ backend = (*wgctrl.Client)(nil)

// Client reads and writes WireGuard interfaces, kernel and userspace alike,
// through wgctrl. It is safe for concurrent use; it does not serialize
// writes to one interface, which is the caller's job.
type Client struct {
	wg     backend
	log    *slog.Logger
	reads  atomic.Uint64
	writes atomic.Uint64
}

// ClientOption configures a Client.
type ClientOption func(*Client)

// WithLogger sets the logger (nil = discard).
func WithLogger(l *slog.Logger) ClientOption {
	return func(c *Client) { c.log = l }
}

// NewClient opens a wgctrl client. Close it when done.
func NewClient(opts ...ClientOption) (*Client, error) {
	wc, err := wgctrl.New()
	if err != nil {
		return nil, fmt.Errorf("open wireguard control client: %w", err)
	}
	return newClient(wc, opts...), nil
}

func newClient(b backend, opts ...ClientOption) *Client {
	c := &Client{wg: b}
	for _, o := range opts {
		o(c)
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	return c
}

// Close releases the client's netlink socket. It is safe to call once.
func (c *Client) Close() error {
	if err := c.wg.Close(); err != nil {
		return fmt.Errorf("close wireguard control client: %w", err)
	}
	return nil
}

// Stats counts the device operations a Client has issued.
type Stats struct {
	Reads  uint64 // device reads (one per Read, SetDevice)
	Writes uint64 // device writes (at most one per Apply, RemovePeers, SetDevice)
}

// Stats returns the number of reads and writes issued so far.
func (c *Client) Stats() Stats {
	return Stats{Reads: c.reads.Load(), Writes: c.writes.Load()}
}

// Read returns the interface's public key, listen port and every peer, with
// one wgctrl read. Peers are sorted by public key. A missing interface gives
// an error matching os.ErrNotExist whose message names the interface; any
// failure is an error, never an empty peer list.
func (c *Client) Read(ctx context.Context, name string) (*Device, error) {
	d, err := c.read(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return convertDevice(d), nil
}

func (c *Client) read(ctx context.Context, name string) (*wgtypes.Device, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c.reads.Add(1)
	d, err := c.wg.Device(name)
	if err != nil {
		return nil, explain(name, err)
	}
	return d, nil
}

// notFoundError says which interface is missing and what to check.
type notFoundError struct{ name string }

func (e notFoundError) Error() string {
	return fmt.Sprintf("no WireGuard interface named %q: check the name, that it is up (`wg show interfaces`), and for a userspace implementation that /var/run/wireguard/%s.sock exists", e.name, e.name)
}

func (e notFoundError) Is(target error) bool { return target == os.ErrNotExist }

// explain turns a wgctrl error into one that says what to do.
func explain(name string, err error) error {
	switch {
	case errors.Is(err, os.ErrNotExist):
		return notFoundError{name}
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("permission denied (WireGuard interfaces are read and written as root or with CAP_NET_ADMIN): %w", err)
	}
	return err
}

func convertDevice(d *wgtypes.Device) *Device {
	out := &Device{
		Name:       d.Name,
		Type:       d.Type.String(),
		PublicKey:  d.PublicKey,
		ListenPort: d.ListenPort,
		Peers:      make([]Peer, len(d.Peers)),
	}
	if d.PrivateKey == (wgtypes.Key{}) {
		// wgctrl derives a public key from the all-zero private key of a
		// device that has none; no client can use it.
		out.PublicKey = wgtypes.Key{}
	}
	for i, p := range d.Peers {
		q := Peer{
			PublicKey:    p.PublicKey,
			PresharedKey: p.PresharedKey,
			AllowedIPs:   make([]netip.Prefix, 0, len(p.AllowedIPs)),
			Keepalive:    p.PersistentKeepaliveInterval,
			RxBytes:      p.ReceiveBytes,
			TxBytes:      p.TransmitBytes,
		}
		for _, n := range p.AllowedIPs {
			if pfx, ok := prefixFromIPNet(n); ok {
				q.AllowedIPs = append(q.AllowedIPs, pfx)
			}
		}
		if p.Endpoint != nil {
			q.Endpoint = p.Endpoint.AddrPort()
			q.Endpoint = netip.AddrPortFrom(q.Endpoint.Addr().Unmap(), q.Endpoint.Port())
		}
		if hs := p.LastHandshakeTime; !hs.IsZero() && hs.UnixNano() != 0 {
			q.LastHandshake = hs.UTC()
		}
		out.Peers[i] = q
	}
	slices.SortFunc(out.Peers, func(a, b Peer) int { return compareKeys(a.PublicKey, b.PublicKey) })
	return out
}

func prefixFromIPNet(n net.IPNet) (netip.Prefix, bool) {
	addr, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := n.Mask.Size()
	if bits == 32 {
		addr = addr.Unmap()
	}
	if bits != addr.BitLen() {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(addr, ones), true
}

func ipNetFromPrefix(p netip.Prefix) net.IPNet {
	a := p.Addr()
	return net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(p.Bits(), a.BitLen())}
}

// Apply writes plan to the interface in one incremental wgctrl write: removals,
// then updates of only the drifted fields (UpdateOnly, so a peer that
// vanished meanwhile is not re-created half-configured), then additions with
// their full state. Allowed IPs are always written with ReplaceAllowedIPs.
// Device fields are never written and ReplacePeers is never used, so peers
// outside the plan keep their sessions.
//
// An empty plan writes nothing and returns zero Counts. An invalid plan (a
// zero key, a key in two places, a bad keepalive or prefix) is rejected
// before anything is written. If the device rejects the write, the error
// wraps ErrUnknownState (and the cause, so os.ErrNotExist still matches for a
// missing interface) and Counts is zero.
func (c *Client) Apply(ctx context.Context, name string, p Plan) (Counts, error) {
	if p.Empty() {
		return Counts{}, nil
	}
	cfg, err := planConfig(p)
	if err != nil {
		return Counts{}, fmt.Errorf("apply to %s: %w", name, err)
	}
	if err := c.write(ctx, name, cfg); err != nil {
		return Counts{}, fmt.Errorf("apply to %s: %w", name, err)
	}
	n := Counts{Added: len(p.Add), Updated: len(p.Update), Removed: len(p.Remove)}
	c.log.Debug("applied plan", "iface", name, "added", n.Added, "updated", n.Updated, "removed", n.Removed)
	return n, nil
}

// write issues one ConfigureDevice. A failed write wraps ErrUnknownState.
func (c *Client) write(ctx context.Context, name string, cfg wgtypes.Config) error {
	if err := CheckName(name); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	c.writes.Add(1)
	if err := c.wg.ConfigureDevice(name, cfg); err != nil {
		return fmt.Errorf("%w: %w", ErrUnknownState, explain(name, err))
	}
	return nil
}

// planConfig validates p and turns it into one peers-only wgctrl Config.
func planConfig(p Plan) (wgtypes.Config, error) {
	n := len(p.Remove) + len(p.Update) + len(p.Add)
	seen := make(map[wgtypes.Key]struct{}, n)
	check := func(k wgtypes.Key) error {
		if k == (wgtypes.Key{}) {
			return errors.New("invalid plan: zero public key")
		}
		if _, dup := seen[k]; dup {
			return fmt.Errorf("invalid plan: peer %s appears twice", k)
		}
		seen[k] = struct{}{}
		return nil
	}
	checkWanted := func(w Wanted) error {
		if err := check(w.PublicKey); err != nil {
			return err
		}
		if err := checkKeepalive(w.Keepalive); err != nil {
			return fmt.Errorf("invalid plan: peer %s: %w", w.PublicKey, err)
		}
		for _, pfx := range w.AllowedIPs {
			if !pfx.IsValid() {
				return fmt.Errorf("invalid plan: peer %s: invalid allowed ip %q", w.PublicKey, pfx)
			}
		}
		return nil
	}

	peers := make([]wgtypes.PeerConfig, 0, n)
	for _, k := range p.Remove {
		if err := check(k); err != nil {
			return wgtypes.Config{}, err
		}
		peers = append(peers, wgtypes.PeerConfig{PublicKey: k, Remove: true})
	}
	for _, ch := range p.Update {
		if err := checkWanted(ch.Wanted); err != nil {
			return wgtypes.Config{}, err
		}
		pc := wgtypes.PeerConfig{PublicKey: ch.PublicKey, UpdateOnly: true}
		if ch.PresharedKey {
			psk := ch.Wanted.PresharedKey
			pc.PresharedKey = &psk
		}
		if ch.Keepalive {
			ka := ch.Wanted.Keepalive
			pc.PersistentKeepaliveInterval = &ka
		}
		if ch.AllowedIPs {
			pc.ReplaceAllowedIPs = true
			pc.AllowedIPs = ipNets(ch.Wanted.AllowedIPs)
		}
		peers = append(peers, pc)
	}
	for _, w := range p.Add {
		if err := checkWanted(w); err != nil {
			return wgtypes.Config{}, err
		}
		pc := wgtypes.PeerConfig{PublicKey: w.PublicKey, ReplaceAllowedIPs: true, AllowedIPs: ipNets(w.AllowedIPs)}
		if w.PresharedKey != (wgtypes.Key{}) {
			psk := w.PresharedKey
			pc.PresharedKey = &psk
		}
		if w.Keepalive != 0 {
			ka := w.Keepalive
			pc.PersistentKeepaliveInterval = &ka
		}
		peers = append(peers, pc)
	}
	return wgtypes.Config{Peers: peers}, nil
}

func ipNets(ps []netip.Prefix) []net.IPNet {
	out := make([]net.IPNet, len(ps))
	for i, p := range ps {
		out[i] = ipNetFromPrefix(p)
	}
	return out
}

// RemovePeers removes the peers with the given keys in one write. Keys not on
// the device are ignored by WireGuard; duplicates are written once. No keys
// means no write. A rejected write wraps ErrUnknownState.
func (c *Client) RemovePeers(ctx context.Context, name string, keys []wgtypes.Key) error {
	if len(keys) == 0 {
		return nil
	}
	seen := make(map[wgtypes.Key]struct{}, len(keys))
	peers := make([]wgtypes.PeerConfig, 0, len(keys))
	for _, k := range keys {
		if k == (wgtypes.Key{}) {
			return fmt.Errorf("remove peers from %s: zero public key", name)
		}
		if _, dup := seen[k]; dup {
			continue
		}
		seen[k] = struct{}{}
		peers = append(peers, wgtypes.PeerConfig{PublicKey: k, Remove: true})
	}
	if err := c.write(ctx, name, wgtypes.Config{Peers: peers}); err != nil {
		return fmt.Errorf("remove peers from %s: %w", name, err)
	}
	c.log.Debug("removed peers", "iface", name, "removed", len(peers))
	return nil
}

// SetDevice sets the interface's private key and listen port, each only when
// given (non-nil; a port of 0 counts as not given) and different from what the device has, in a write of its
// own that carries no peers. When nothing differs it reads and does not
// write, so it is idempotent. A rejected write wraps ErrUnknownState.
func (c *Client) SetDevice(ctx context.Context, name string, key *wgtypes.Key, port *int) error {
	if key != nil && *key == (wgtypes.Key{}) {
		return fmt.Errorf("set device %s: zero private key", name)
	}
	if port != nil && (*port < 0 || *port > 65535) {
		return fmt.Errorf("set device %s: listen port %d out of range 0-65535", name, *port)
	}
	if key == nil && port == nil {
		return nil
	}
	d, err := c.read(ctx, name)
	if err != nil {
		return fmt.Errorf("set device %s: %w", name, err)
	}
	var cfg wgtypes.Config
	if key != nil && d.PrivateKey != *key {
		k := *key
		cfg.PrivateKey = &k
	}
	if port != nil && *port != 0 && d.ListenPort != *port {
		p := *port
		cfg.ListenPort = &p
	}
	if cfg.PrivateKey == nil && cfg.ListenPort == nil {
		return nil
	}
	if err := c.write(ctx, name, cfg); err != nil {
		return fmt.Errorf("set device %s: %w", name, err)
	}
	c.log.Info("set device fields", "iface", name, "private_key_changed", cfg.PrivateKey != nil, "listen_port_changed", cfg.ListenPort != nil)
	return nil
}

// CheckName reports whether name can be a Linux network interface name:
// 1 to 15 bytes, not "." or "..", without '/', ':', whitespace or NUL.
func CheckName(name string) error {
	switch {
	case name == "":
		return errors.New("empty interface name")
	case len(name) > 15:
		return fmt.Errorf("interface name %q longer than 15 bytes", name)
	case name == "." || name == "..":
		return fmt.Errorf("invalid interface name %q", name)
	case strings.ContainsAny(name, "/: \t\n\r\v\f\x00"):
		return fmt.Errorf("interface name %q contains '/', ':', whitespace or NUL", name)
	}
	return nil
}
