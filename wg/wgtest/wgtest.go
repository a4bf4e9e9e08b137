// Package wgtest provides real WireGuard devices for tests across wgkeeper:
// an in-process server device (wireguard-go on a gVisor netstack, so no
// kernel interface is needed) served on a unique UAPI socket that wgctrl and
// wg(8) see like any interface, and client devices that really handshake
// with it over loopback UDP and send traffic through the tunnel, so
// handshake times and byte counters are real. It also runs Debian's
// wireguard-go as an independently owned interface.
//
// Everything is removed by tb.Cleanup. The UAPI socket directory needs root:
// helpers skip the test with a clear message when not root.
package wgtest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wgkeeper/wgkeeper/wg"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/netstack"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// EchoPort is the UDP port on which a Server echoes every datagram it
// receives through the tunnel, on each of its addresses.
const EchoPort = 7

// RequireRoot skips the test unless it runs as root.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("skipped: needs root (WireGuard UAPI sockets live in /var/run/wireguard, TUN and netlink need CAP_NET_ADMIN); run the tests as root")
	}
}

// Server is an in-process WireGuard device on a netstack, visible to wgctrl
// as interface Name. It starts with no peers unless WithPeers is given.
type Server struct {
	Name       string
	PrivateKey wgtypes.Key
	PublicKey  wgtypes.Key
	Port       int          // UDP listen port (all addresses; clients use 127.0.0.1)
	Addr4      netip.Prefix // the server's own IPv4 address and client range, e.g. 10.99.0.1/16; zero = none
	Addr6      netip.Prefix // same for IPv6, e.g. fd00:99::1/64; zero = none

	mu       sync.Mutex // guards the fields below
	peers    []wg.Wanted
	inst     *instance
	nextHost uint32
	closed   bool
}

// instance is one life of the server's device.
type instance struct {
	dev  *device.Device
	tnet *netstack.Net
	uapi *wg.UAPIServer
	echo []interface{ Close() error }
	wg   sync.WaitGroup
}

// ServerOption configures NewServer.
type ServerOption func(*Server)

// WithPeers presets the server's peers.
func WithPeers(peers ...wg.Wanted) ServerOption {
	return func(s *Server) { s.peers = append(s.peers, peers...) }
}

// WithAddrs sets the server's own addresses (with the client range's prefix
// length). A zero prefix leaves that family out; at least one is needed.
func WithAddrs(addr4, addr6 netip.Prefix) ServerOption {
	return func(s *Server) { s.Addr4, s.Addr6 = addr4, addr6 }
}

// WithServerKey sets the server's private key.
func WithServerKey(k wgtypes.Key) ServerOption {
	return func(s *Server) { s.PrivateKey = k }
}

// NewServer starts a server device named "wgt" plus random hex, listening on
// a free UDP port, with addresses 10.99.0.1/16 and fd00:99::1/64 unless
// WithAddrs says otherwise. tb.Cleanup closes it: device, UAPI socket, echo
// service and their goroutines.
func NewServer(tb testing.TB, opts ...ServerOption) *Server {
	tb.Helper()
	RequireRoot(tb)
	s := &Server{
		Name:  UniqueName("wgt"),
		Addr4: netip.MustParsePrefix("10.99.0.1/16"),
		Addr6: netip.MustParsePrefix("fd00:99::1/64"),
	}
	for _, o := range opts {
		o(s)
	}
	if !s.Addr4.IsValid() && !s.Addr6.IsValid() {
		tb.Fatal("wgtest: server needs an IPv4 or IPv6 address")
	}
	if s.PrivateKey == (wgtypes.Key{}) {
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			tb.Fatal(err)
		}
		s.PrivateKey = k
	}
	s.PublicKey = s.PrivateKey.PublicKey()
	inst, port, err := s.start(0, s.peers)
	if err != nil {
		tb.Fatalf("wgtest: start server %s: %v", s.Name, err)
	}
	s.inst, s.Port = inst, port
	tb.Cleanup(s.Close)
	return s
}

// UniqueName returns prefix followed by 8 random hex digits; prefix must be
// at most 7 bytes so the result fits an interface name.
func UniqueName(prefix string) string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return prefix + hex.EncodeToString(b[:])
}

// Endpoint is the address clients send to: 127.0.0.1:Port.
func (s *Server) Endpoint() netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(s.Port))
}

func (s *Server) start(port int, peers []wg.Wanted) (*instance, int, error) {
	var addrs []netip.Addr
	for _, p := range []netip.Prefix{s.Addr4, s.Addr6} {
		if p.IsValid() {
			addrs = append(addrs, p.Addr())
		}
	}
	tdev, tnet, err := netstack.CreateNetTUN(addrs, nil, wg.MTU)
	if err != nil {
		return nil, 0, err
	}
	inst := &instance{
		dev:  device.NewDevice(tdev, conn.NewDefaultBind(), device.NewLogger(device.LogLevelSilent, "")),
		tnet: tnet,
	}
	var b strings.Builder
	fmt.Fprintf(&b, "private_key=%x\nlisten_port=%d\n", s.PrivateKey[:], port)
	writePeers(&b, peers)
	if err := inst.dev.IpcSet(b.String()); err != nil {
		inst.close()
		return nil, 0, fmt.Errorf("configure: %w", err)
	}
	if err := inst.dev.Up(); err != nil {
		inst.close()
		return nil, 0, fmt.Errorf("up: %w", err)
	}
	got, err := ipcGet(inst.dev)
	if err != nil {
		inst.close()
		return nil, 0, err
	}
	port, _ = strconv.Atoi(got["listen_port"])
	for _, a := range addrs {
		c, err := tnet.ListenUDPAddrPort(netip.AddrPortFrom(a, EchoPort))
		if err != nil {
			inst.close()
			return nil, 0, fmt.Errorf("echo service on %s: %w", a, err)
		}
		inst.echo = append(inst.echo, c)
		inst.wg.Add(1)
		go func() {
			defer inst.wg.Done()
			buf := make([]byte, 2048)
			for {
				n, from, err := c.ReadFrom(buf)
				if err != nil {
					return
				}
				c.WriteTo(buf[:n], from)
			}
		}()
	}
	inst.uapi, err = wg.ServeUAPI(s.Name, inst.dev, nil)
	if err != nil {
		inst.close()
		return nil, 0, err
	}
	return inst, port, nil
}

func writePeers(b *strings.Builder, peers []wg.Wanted) {
	for _, p := range peers {
		fmt.Fprintf(b, "public_key=%x\n", p.PublicKey[:])
		if p.PresharedKey != (wgtypes.Key{}) {
			fmt.Fprintf(b, "preshared_key=%x\n", p.PresharedKey[:])
		}
		if p.Keepalive != 0 {
			fmt.Fprintf(b, "persistent_keepalive_interval=%d\n", int(p.Keepalive/time.Second))
		}
		b.WriteString("replace_allowed_ips=true\n")
		for _, a := range p.AllowedIPs {
			fmt.Fprintf(b, "allowed_ip=%s\n", a)
		}
	}
}

func (inst *instance) close() {
	if inst.uapi != nil {
		inst.uapi.Close()
	}
	for _, c := range inst.echo {
		c.Close()
	}
	inst.dev.Close() // also closes the netstack
	inst.wg.Wait()
}

// Restart closes the server's device and starts an empty one with the same
// name, key and port, as after a crash or reboot of the VPN node: all peers
// and sessions are gone, clients keep theirs.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		tb.Fatal("wgtest: restart of a closed server")
	}
	s.inst.close()
	s.inst = nil
	var err error
	for try := 0; try < 50; try++ { // the port is normally free at once
		var inst *instance
		if inst, _, err = s.start(s.Port, nil); err == nil {
			s.inst = inst
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	tb.Fatalf("wgtest: restart server %s: %v", s.Name, err)
}

// Close stops the server and removes its UAPI socket. It is idempotent and
// registered with tb.Cleanup by NewServer.
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	if s.inst != nil {
		s.inst.close()
		s.inst = nil
	}
}

// ClientDev is a WireGuard device (on its own netstack) whose only peer is the
// server. The server learns about it only when the test adds c.Wanted() to
// the server.
type ClientDev struct {
	PrivateKey   wgtypes.Key
	PublicKey    wgtypes.Key
	PresharedKey wgtypes.Key // zero = none
	Addr4        netip.Addr  // tunnel addresses; zero when the server has no such family
	Addr6        netip.Addr
	Keepalive    time.Duration

	server *Server
	dev    *device.Device
	tnet   *netstack.Net
	once   sync.Once
}

// ClientOption configures NewClient.
type ClientOption func(*ClientDev)

// WithClientKey sets the client's private key.
func WithClientKey(k wgtypes.Key) ClientOption { return func(c *ClientDev) { c.PrivateKey = k } }

// WithPresharedKey makes the client use psk with the server.
func WithPresharedKey(psk wgtypes.Key) ClientOption {
	return func(c *ClientDev) { c.PresharedKey = psk }
}

// WithClientAddrs sets the client's tunnel addresses (default: the next free
// host addresses in the server's ranges, from .2 on).
func WithClientAddrs(a4, a6 netip.Addr) ClientOption {
	return func(c *ClientDev) { c.Addr4, c.Addr6 = a4, a6 }
}

// WithKeepalive sets the keepalive the server should use for the client
// (reported by Wanted).
func WithKeepalive(d time.Duration) ClientOption { return func(c *ClientDev) { c.Keepalive = d } }

// NewClient starts a client device whose peer is the server, at
// s.Endpoint(), allowed to reach the server's addresses. tb.Cleanup closes
// it.
func (s *Server) NewClient(tb testing.TB, opts ...ClientOption) *ClientDev {
	tb.Helper()
	c := &ClientDev{server: s}
	for _, o := range opts {
		o(c)
	}
	if c.PrivateKey == (wgtypes.Key{}) {
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			tb.Fatal(err)
		}
		c.PrivateKey = k
	}
	c.PublicKey = c.PrivateKey.PublicKey()
	if !c.Addr4.IsValid() && !c.Addr6.IsValid() {
		s.mu.Lock()
		s.nextHost++
		host := s.nextHost + 1 // .1 is the server
		s.mu.Unlock()
		if s.Addr4.IsValid() {
			c.Addr4 = addHost(s.Addr4.Masked().Addr(), host)
		}
		if s.Addr6.IsValid() {
			c.Addr6 = addHost(s.Addr6.Masked().Addr(), host)
		}
	}
	var addrs []netip.Addr
	if c.Addr4.IsValid() && s.Addr4.IsValid() {
		addrs = append(addrs, c.Addr4)
	}
	if c.Addr6.IsValid() && s.Addr6.IsValid() {
		addrs = append(addrs, c.Addr6)
	}
	tdev, tnet, err := netstack.CreateNetTUN(addrs, nil, wg.MTU)
	if err != nil {
		tb.Fatalf("wgtest: client netstack: %v", err)
	}
	c.tnet = tnet
	c.dev = device.NewDevice(tdev, conn.NewDefaultBind(), device.NewLogger(device.LogLevelSilent, ""))
	tb.Cleanup(c.Close)
	if err := c.dev.IpcSet(fmt.Sprintf("private_key=%x\nlisten_port=0\n", c.PrivateKey[:]) + c.serverPeer()); err != nil {
		tb.Fatalf("wgtest: configure client: %v", err)
	}
	if err := c.dev.Up(); err != nil {
		tb.Fatalf("wgtest: client up: %v", err)
	}
	return c
}

// serverPeer is the UAPI text of the client's only peer, the server.
func (c *ClientDev) serverPeer() string {
	s := c.server
	var b strings.Builder
	fmt.Fprintf(&b, "public_key=%x\nendpoint=%s\n", s.PublicKey[:], s.Endpoint())
	if c.PresharedKey != (wgtypes.Key{}) {
		fmt.Fprintf(&b, "preshared_key=%x\n", c.PresharedKey[:])
	}
	if c.Addr4.IsValid() && s.Addr4.IsValid() {
		fmt.Fprintf(&b, "allowed_ip=%s\n", netip.PrefixFrom(s.Addr4.Addr(), 32))
	}
	if c.Addr6.IsValid() && s.Addr6.IsValid() {
		fmt.Fprintf(&b, "allowed_ip=%s\n", netip.PrefixFrom(s.Addr6.Addr(), 128))
	}
	return b.String()
}

// Reconnect drops the client's session and handshake state, as a client
// does when it reconnects, so the next Ping starts a fresh handshake at
// once. Without it, a client whose handshake the server ignored retries
// only after 5 s, and one whose session the server lost (Restart) notices
// only after 15 s.
func (c *ClientDev) Reconnect(tb testing.TB) {
	tb.Helper()
	remove := fmt.Sprintf("public_key=%x\nremove=true\n", c.server.PublicKey[:])
	if err := c.dev.IpcSet(remove + c.serverPeer()); err != nil {
		tb.Fatalf("wgtest: reconnect client: %v", err)
	}
}

func addHost(base netip.Addr, n uint32) netip.Addr {
	b := base.AsSlice()
	for i := len(b) - 1; i >= 0 && n > 0; i-- {
		sum := uint32(b[i]) + n&0xff
		b[i] = byte(sum)
		n = n>>8 + sum>>8
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// Wanted is the server-side peer entry for this client: its public key,
// preshared key, keepalive and its addresses as /32 and /128.
func (c *ClientDev) Wanted() wg.Wanted {
	w := wg.Wanted{PublicKey: c.PublicKey, PresharedKey: c.PresharedKey, Keepalive: c.Keepalive}
	if c.Addr4.IsValid() {
		w.AllowedIPs = append(w.AllowedIPs, netip.PrefixFrom(c.Addr4, 32))
	}
	if c.Addr6.IsValid() {
		w.AllowedIPs = append(w.AllowedIPs, netip.PrefixFrom(c.Addr6, 128))
	}
	return w
}

// Ping sends a UDP datagram through the tunnel to the server's echo service
// and waits for it to come back, re-sending every 200 ms until ctx is done.
// The first datagram triggers a handshake if there is no session. It uses
// IPv4 when both client and server have it, else IPv6.
func (c *ClientDev) Ping(ctx context.Context) error {
	local, remote := c.Addr4, c.server.Addr4.Addr()
	if !local.IsValid() || !c.server.Addr4.IsValid() {
		local, remote = c.Addr6, c.server.Addr6.Addr()
	}
	uc, err := c.tnet.DialUDPAddrPort(netip.AddrPortFrom(local, 0), netip.AddrPortFrom(remote, EchoPort))
	if err != nil {
		return fmt.Errorf("ping %s from %s: %w", remote, local, err)
	}
	defer uc.Close()
	payload := make([]byte, 32)
	rand.Read(payload)
	buf := make([]byte, 64)
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("ping %s from %s: no echo: %w", remote, local, err)
		}
		if _, err := uc.Write(payload); err != nil {
			return fmt.Errorf("ping %s from %s: %w", remote, local, err)
		}
		deadline := time.Now().Add(200 * time.Millisecond)
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		uc.SetReadDeadline(deadline)
		for {
			n, err := uc.Read(buf)
			if err != nil {
				break
			}
			if bytes.Equal(buf[:n], payload) {
				return nil
			}
		}
	}
}

// Handshake pings until the client has completed a handshake with the
// server (see Ping).
func (c *ClientDev) Handshake(ctx context.Context) error {
	if err := c.Ping(ctx); err != nil {
		return err
	}
	if c.LastHandshake().IsZero() {
		return errors.New("traffic passed but the client reports no handshake")
	}
	return nil
}

// LastHandshake is the time of the client's latest handshake with the
// server, in UTC; zero if none.
func (c *ClientDev) LastHandshake() time.Time {
	m, err := ipcGet(c.dev)
	if err != nil {
		return time.Time{}
	}
	sec, _ := strconv.ParseInt(m["last_handshake_time_sec"], 10, 64)
	nsec, _ := strconv.ParseInt(m["last_handshake_time_nsec"], 10, 64)
	if sec == 0 && nsec == 0 {
		return time.Time{}
	}
	return time.Unix(sec, nsec).UTC()
}

// Bytes returns the bytes the client received from and sent to the server.
func (c *ClientDev) Bytes() (rx, tx int64) {
	m, err := ipcGet(c.dev)
	if err != nil {
		return 0, 0
	}
	rx, _ = strconv.ParseInt(m["rx_bytes"], 10, 64)
	tx, _ = strconv.ParseInt(m["tx_bytes"], 10, 64)
	return rx, tx
}

// Close stops the client device. It is idempotent and registered with
// tb.Cleanup by NewClient.
func (c *ClientDev) Close() {
	c.once.Do(func() { c.dev.Close() })
}

// ipcGet returns the device's UAPI get output as key=value pairs (the last
// value wins, which is fine for a device with at most one peer and for
// device-level keys).
func ipcGet(dev *device.Device) (map[string]string, error) {
	s, err := dev.IpcGet()
	if err != nil {
		return nil, fmt.Errorf("uapi get: %w", err)
	}
	m := make(map[string]string)
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			m[k] = v
		}
	}
	return m, nil
}
