package wg

import (
	"fmt"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Peer is one peer as read from a device.
type Peer struct {
	PublicKey     wgtypes.Key
	PresharedKey  wgtypes.Key // zero = none
	AllowedIPs    []netip.Prefix
	Keepalive     time.Duration // persistent keepalive interval; 0 = off
	Endpoint      netip.AddrPort
	LastHandshake time.Time // UTC; zero = never
	RxBytes       int64     // bytes received from the peer
	TxBytes       int64     // bytes sent to the peer
}

// Device is one WireGuard interface as read from the system.
type Device struct {
	Name       string
	Type       string      // "Linux kernel" or "userspace"
	PublicKey  wgtypes.Key // zero when the device has no private key
	ListenPort int
	Peers      []Peer // sorted by public key
}

// Peer returns the device's peer with the given public key.
func (d *Device) Peer(key wgtypes.Key) (Peer, bool) {
	for _, p := range d.Peers {
		if p.PublicKey == key {
			return p, true
		}
	}
	return Peer{}, false
}

// Wanted is the state one peer should have on a device.
type Wanted struct {
	PublicKey    wgtypes.Key
	PresharedKey wgtypes.Key // zero = none
	AllowedIPs   []netip.Prefix
	Keepalive    time.Duration // whole seconds, 0..65535 s; 0 = off
}

// Orphans is the policy for device peers that are not wanted.
// The zero value is invalid so that a forgotten policy is an error, not a
// silent removal.
type Orphans int

const (
	// OrphansRemove removes device peers that are not wanted.
	OrphansRemove Orphans = iota + 1
	// OrphansKeep leaves them on the device and reports them in
	// Plan.KeptOrphans.
	OrphansKeep
)

// String returns "remove", "keep", or "Orphans(N)" for an invalid value.
func (o Orphans) String() string {
	switch o {
	case OrphansRemove:
		return "remove"
	case OrphansKeep:
		return "keep"
	}
	return fmt.Sprintf("Orphans(%d)", int(o))
}

// Change is an update of a peer that is on the device with drifted fields.
// Wanted holds the full wanted state; the flags say which fields drifted and
// are the only ones Apply writes.
type Change struct {
	Wanted
	AllowedIPs   bool
	PresharedKey bool
	Keepalive    bool
}

// Plan is the set of changes that brings a device in line with the wanted
// peers. Every list is sorted by public key.
type Plan struct {
	Add         []Wanted
	Update      []Change
	Remove      []wgtypes.Key
	KeptOrphans []wgtypes.Key // not wanted, left on the device (OrphansKeep)
}

// Empty reports whether the plan writes nothing. Kept orphans are a report,
// not a write.
func (p Plan) Empty() bool {
	return len(p.Add) == 0 && len(p.Update) == 0 && len(p.Remove) == 0
}

// Counts is the number of peers a write added, updated and removed.
type Counts struct {
	Added, Updated, Removed int
}

// InSync reports whether the device peer has exactly the wanted allowed
// IPs, preshared key and keepalive: MakePlan would leave it alone.
func InSync(w Wanted, p Peer) bool {
	plan, err := MakePlan([]Wanted{w}, []Peer{p}, OrphansKeep)
	return err == nil && plan.Empty()
}
