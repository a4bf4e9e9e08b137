// Package enginetest holds in-memory parts that let the lifecycle engine
// and the API be tested without root: a Device that keeps WireGuard
// interfaces in maps and applies plans as a real device would, and a Runner
// that calls a Go function in place of the hook script and keeps a
// transcript of every run.
//
// They satisfy reconcile.Device and reconcile.Runner (checked at compile
// time by this package's tests, which may import reconcile; this package
// may not, so that reconcile's own tests can use it). The real-device and
// real-script tests stay the proof; these parts stand in where a test is
// about the engine, not about WireGuard or processes.
package enginetest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/wg"
)

// maxKeepalive is the largest persistent keepalive WireGuard accepts.
const maxKeepalive = 65535 * time.Second

// Device is a set of in-memory WireGuard interfaces. Its methods behave
// like wg.Client's: Apply removes, then updates only the flagged fields of
// peers still present, then adds with their full state; an allowed IP given
// to one peer leaves whichever peer had it (as WireGuard's routing table
// does); a missing interface gives errors matching os.ErrNotExist; a
// rejected write wraps wg.ErrUnknownState. FailReads and FailWrites make
// reads or writes fail on demand. It is safe for concurrent use.
type Device struct {
	mu        sync.Mutex        // guards the fields below
	ifaces    map[string]*iface // interface name -> state
	readErr   map[string]error  // interface name ("" = every one) -> error of Read, Link and SetDevice
	writeErr  map[string]error  // interface name ("" = every one) -> error of writes
	nextIndex int               // ifindex and socket inode of the next link
	reads     uint64
	writes    uint64
}

// iface is one interface's state.
type iface struct {
	priv  wgtypes.Key // zero = none
	port  int
	peers map[wgtypes.Key]*wg.Peer
	link  wg.LinkState
}

// NewDevice returns a Device without interfaces.
func NewDevice() *Device {
	return &Device{ifaces: map[string]*iface{}, readErr: map[string]error{}, writeErr: map[string]error{}, nextIndex: 100}
}

// Interface configures an interface for AddInterface.
type Interface struct {
	PrivateKey wgtypes.Key
	ListenPort int
	Peers      []wg.Wanted
	// Link, when true, gives the interface a kernel link (up, kind
	// "wireguard") beside its UAPI socket; false makes it a userspace
	// device on a netstack: a socket and no link, like wgtest.Server.
	Link bool
}

// AddInterface creates (or replaces) the interface name with a fresh
// socket identity.
func (d *Device) AddInterface(name string, c Interface) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ifc := &iface{priv: c.PrivateKey, port: c.ListenPort, peers: map[wgtypes.Key]*wg.Peer{}}
	d.newLife(ifc, c.Link)
	d.ifaces[name] = ifc
	for _, w := range c.Peers {
		ifc.add(w)
	}
}

// newLife gives ifc a new link index and socket identity. d.mu is held.
func (d *Device) newLife(ifc *iface, link bool) {
	d.nextIndex++
	ifc.link = wg.LinkState{Socket: wg.SocketID{Dev: 1, Ino: uint64(d.nextIndex), Mtime: time.Now().UnixNano()}}
	if link {
		ifc.link.Exists, ifc.link.Index, ifc.link.Kind, ifc.link.Up, ifc.link.MTU = true, d.nextIndex, "wireguard", true, wg.MTU
	}
}

// DeleteInterface removes the interface, as `ip link del` would: reads
// then fail with os.ErrNotExist and Link reports nothing present.
func (d *Device) DeleteInterface(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.ifaces, name)
}

// Restart gives the interface a new life, as a restart of a userspace
// implementation would: same key and port, no peers, a new socket (and
// link index).
func (d *Device) Restart(name string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	ifc, ok := d.ifaces[name]
	if !ok {
		return fmt.Errorf("restart %s: %w", name, notFound(name))
	}
	ifc.peers = map[wgtypes.Key]*wg.Peer{}
	d.newLife(ifc, ifc.link.Exists)
	return nil
}

// SetLink changes the interface's link state with f (up or down,
// addresses, MTU...). It fails when the interface does not exist.
func (d *Device) SetLink(name string, f func(*wg.LinkState)) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	ifc, ok := d.ifaces[name]
	if !ok {
		return fmt.Errorf("set link %s: %w", name, notFound(name))
	}
	f(&ifc.link)
	return nil
}

// Traffic is what a client's activity leaves on a device peer.
type Traffic struct {
	LastHandshake time.Time
	RxBytes       int64
	TxBytes       int64
	Endpoint      netip.AddrPort
}

// SetTraffic sets the counters, last handshake and endpoint of a peer, as
// a client talking to the interface would. It fails when the interface or
// the peer does not exist.
func (d *Device) SetTraffic(name string, key wgtypes.Key, t Traffic) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	ifc, ok := d.ifaces[name]
	if !ok {
		return fmt.Errorf("set traffic on %s: %w", name, notFound(name))
	}
	p, ok := ifc.peers[key]
	if !ok {
		return fmt.Errorf("set traffic on %s: no peer %s", name, key)
	}
	p.LastHandshake, p.RxBytes, p.TxBytes, p.Endpoint = t.LastHandshake.UTC(), t.RxBytes, t.TxBytes, t.Endpoint
	if t.LastHandshake.IsZero() {
		p.LastHandshake = time.Time{}
	}
	return nil
}

// FailReads makes Read, Link and the read of SetDevice on the interface
// name ("" = every interface) fail with err until called again with nil.
func (d *Device) FailReads(name string, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err == nil {
		delete(d.readErr, name)
	} else {
		d.readErr[name] = err
	}
}

// FailWrites makes Apply, RemovePeers and the write of SetDevice on the
// interface name ("" = every interface) fail with err (wrapped with
// wg.ErrUnknownState; nothing is written) until called again with nil.
func (d *Device) FailWrites(name string, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err == nil {
		delete(d.writeErr, name)
	} else {
		d.writeErr[name] = err
	}
}

// Stats returns the number of reads and writes issued so far (reads that
// failed on demand included, as wg.Client counts them).
func (d *Device) Stats() wg.Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return wg.Stats{Reads: d.reads, Writes: d.writes}
}

// notFound is the error of a missing interface; it matches os.ErrNotExist.
func notFound(name string) error {
	return fmt.Errorf("no WireGuard interface named %q: %w", name, os.ErrNotExist)
}

// get returns the interface for a read. d.mu is held.
func (d *Device) get(ctx context.Context, name string) (*iface, error) {
	if err := wg.CheckName(name); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	d.reads++
	if err := d.failure(d.readErr, name); err != nil {
		return nil, err
	}
	ifc, ok := d.ifaces[name]
	if !ok {
		return nil, notFound(name)
	}
	return ifc, nil
}

// writable returns the interface for a write. d.mu is held.
func (d *Device) writable(ctx context.Context, name string) (*iface, error) {
	if err := wg.CheckName(name); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	d.writes++
	if err := d.failure(d.writeErr, name); err != nil {
		return nil, fmt.Errorf("%w: %w", wg.ErrUnknownState, err)
	}
	ifc, ok := d.ifaces[name]
	if !ok {
		return nil, fmt.Errorf("%w: %w", wg.ErrUnknownState, notFound(name))
	}
	return ifc, nil
}

func (d *Device) failure(m map[string]error, name string) error {
	if err, ok := m[name]; ok {
		return err
	}
	return m[""]
}

// Read returns the interface's public key, listen port and peers sorted by
// public key, as wg.Client.Read.
func (d *Device) Read(ctx context.Context, name string) (*wg.Device, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ifc, err := d.get(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	out := &wg.Device{Name: name, Type: "userspace", ListenPort: ifc.port, Peers: make([]wg.Peer, 0, len(ifc.peers))}
	if ifc.priv != (wgtypes.Key{}) {
		out.PublicKey = ifc.priv.PublicKey()
	}
	for _, p := range ifc.peers {
		q := *p
		q.AllowedIPs = slices.Clone(p.AllowedIPs)
		out.Peers = append(out.Peers, q)
	}
	slices.SortFunc(out.Peers, func(a, b wg.Peer) int { return compareKeys(a.PublicKey, b.PublicKey) })
	return out, nil
}

// Link returns the interface's link state; a missing interface is not an
// error (Present reports false).
func (d *Device) Link(ctx context.Context, name string) (wg.LinkState, error) {
	if err := wg.CheckName(name); err != nil {
		return wg.LinkState{}, err
	}
	if err := ctx.Err(); err != nil {
		return wg.LinkState{}, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.failure(d.readErr, name); err != nil {
		return wg.LinkState{}, fmt.Errorf("inspect %s: %w", name, err)
	}
	ifc, ok := d.ifaces[name]
	if !ok {
		return wg.LinkState{}, nil
	}
	ls := ifc.link
	ls.Addresses = slices.Clone(ls.Addresses)
	return ls, nil
}

// Apply writes the plan as wg.Client.Apply does, after the same checks of
// the plan; it returns the counts of the plan's lists.
func (d *Device) Apply(ctx context.Context, name string, p wg.Plan) (wg.Counts, error) {
	if p.Empty() {
		return wg.Counts{}, nil
	}
	if err := checkPlan(p); err != nil {
		return wg.Counts{}, fmt.Errorf("apply to %s: %w", name, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	ifc, err := d.writable(ctx, name)
	if err != nil {
		return wg.Counts{}, fmt.Errorf("apply to %s: %w", name, err)
	}
	for _, k := range p.Remove {
		delete(ifc.peers, k)
	}
	for _, ch := range p.Update {
		q, ok := ifc.peers[ch.PublicKey]
		if !ok {
			continue // UpdateOnly: a peer that vanished is not re-created
		}
		if ch.PresharedKey {
			q.PresharedKey = ch.Wanted.PresharedKey
		}
		if ch.Keepalive {
			q.Keepalive = ch.Wanted.Keepalive
		}
		if ch.AllowedIPs {
			ifc.setAllowed(q, ch.Wanted.AllowedIPs)
		}
	}
	for _, w := range p.Add {
		ifc.add(w)
	}
	return wg.Counts{Added: len(p.Add), Updated: len(p.Update), Removed: len(p.Remove)}, nil
}

// add creates the peer or merges w into it: allowed IPs replaced, the
// preshared key and keepalive set when not zero.
func (ifc *iface) add(w wg.Wanted) {
	q, ok := ifc.peers[w.PublicKey]
	if !ok {
		q = &wg.Peer{PublicKey: w.PublicKey}
		ifc.peers[w.PublicKey] = q
	}
	if w.PresharedKey != (wgtypes.Key{}) {
		q.PresharedKey = w.PresharedKey
	}
	if w.Keepalive != 0 {
		q.Keepalive = w.Keepalive
	}
	ifc.setAllowed(q, w.AllowedIPs)
}

// setAllowed replaces q's allowed IPs with ps (masked, without
// duplicates) and takes each of them from any other peer that had it.
func (ifc *iface) setAllowed(q *wg.Peer, ps []netip.Prefix) {
	var set []netip.Prefix
	for _, p := range ps {
		if m := p.Masked(); !slices.Contains(set, m) {
			set = append(set, m)
		}
	}
	for _, o := range ifc.peers {
		if o != q {
			o.AllowedIPs = slices.DeleteFunc(o.AllowedIPs, func(p netip.Prefix) bool { return slices.Contains(set, p) })
		}
	}
	q.AllowedIPs = set
}

// RemovePeers removes the peers with the given keys in one write, as
// wg.Client.RemovePeers.
func (d *Device) RemovePeers(ctx context.Context, name string, keys []wgtypes.Key) error {
	if len(keys) == 0 {
		return nil
	}
	for _, k := range keys {
		if k == (wgtypes.Key{}) {
			return fmt.Errorf("remove peers from %s: zero public key", name)
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	ifc, err := d.writable(ctx, name)
	if err != nil {
		return fmt.Errorf("remove peers from %s: %w", name, err)
	}
	for _, k := range keys {
		delete(ifc.peers, k)
	}
	return nil
}

// SetDevice sets the private key and listen port, each only when given
// and different, as wg.Client.SetDevice: nothing differs, nothing is
// written.
func (d *Device) SetDevice(ctx context.Context, name string, key *wgtypes.Key, port *int) error {
	if key != nil && *key == (wgtypes.Key{}) {
		return fmt.Errorf("set device %s: zero private key", name)
	}
	if port != nil && (*port < 0 || *port > 65535) {
		return fmt.Errorf("set device %s: listen port %d out of range 0-65535", name, *port)
	}
	if key == nil && port == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	ifc, err := d.get(ctx, name)
	if err != nil {
		return fmt.Errorf("set device %s: %w", name, err)
	}
	setKey := key != nil && ifc.priv != *key
	setPort := port != nil && *port != 0 && ifc.port != *port
	if !setKey && !setPort {
		return nil
	}
	if _, err := d.writable(ctx, name); err != nil {
		return fmt.Errorf("set device %s: %w", name, err)
	}
	if setKey {
		ifc.priv = *key
	}
	if setPort {
		ifc.port = *port
	}
	return nil
}

// checkPlan rejects what wg.Client.Apply rejects before writing: a zero
// key, a key in two places, a bad keepalive or prefix.
func checkPlan(p wg.Plan) error {
	seen := map[wgtypes.Key]bool{}
	check := func(k wgtypes.Key) error {
		if k == (wgtypes.Key{}) {
			return errors.New("invalid plan: zero public key")
		}
		if seen[k] {
			return fmt.Errorf("invalid plan: peer %s appears twice", k)
		}
		seen[k] = true
		return nil
	}
	checkWanted := func(w wg.Wanted) error {
		if err := check(w.PublicKey); err != nil {
			return err
		}
		if w.Keepalive < 0 || w.Keepalive > maxKeepalive || w.Keepalive%time.Second != 0 {
			return fmt.Errorf("invalid plan: peer %s: invalid keepalive %v: want whole seconds from 0 to 65535s", w.PublicKey, w.Keepalive)
		}
		for _, pfx := range w.AllowedIPs {
			if !pfx.IsValid() {
				return fmt.Errorf("invalid plan: peer %s: invalid allowed ip %q", w.PublicKey, pfx)
			}
		}
		return nil
	}
	for _, k := range p.Remove {
		if err := check(k); err != nil {
			return err
		}
	}
	for _, ch := range p.Update {
		if err := checkWanted(ch.Wanted); err != nil {
			return err
		}
	}
	for _, w := range p.Add {
		if err := checkWanted(w); err != nil {
			return err
		}
	}
	return nil
}

func compareKeys(a, b wgtypes.Key) int {
	for i := range a {
		if a[i] != b[i] {
			return int(a[i]) - int(b[i])
		}
	}
	return 0
}
