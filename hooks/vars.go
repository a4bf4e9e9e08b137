package hooks

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"
)

// Event kinds, the values of VPN_EVENT.
const (
	EventConnect    = "C"
	EventDisconnect = "D"
)

// Vars are the values of one event, as the script sees them in its
// environment. Zero addresses and a zero ExpiresAt mean "none" and "never".
type Vars struct {
	Event         string // "C" or "D"
	UserID        string
	ProfileID     string
	ConnectionID  string // the peer's public key, base64
	IPFour        netip.Addr
	IPSix         netip.Addr
	OriginatingIP netip.Addr
	BytesIn       int64 // D only: bytes received from the peer
	BytesOut      int64 // D only: bytes sent to the peer
	Reason        string
	Interface     string
	ExpiresAt     time.Time
	EventID       int64
	// NodeName is the node running the script (the config's node key,
	// by default the host name).
	NodeName string
	// Test marks a sample event of `wgkeeper hooks test`: VPN_TEST=1 is
	// added, so a script can tell it from a real one.
	Test bool

	// Hold, when set, is inherited by the script as file descriptor 3 and
	// stays open in it, and in whatever it starts, until they exit. It is
	// not part of the environment. wgkeeper passes its owner lock, so a
	// process that dies is taken for dead only once its scripts are gone.
	Hold *os.File
}

// Env returns exactly the VPN_* variables of the event as "NAME=value"
// strings, in a fixed order:
//
//	VPN_EVENT, VPN_USER_ID, VPN_PROFILE_ID, VPN_PROTO (always "wireguard"),
//	VPN_CONNECTION_ID, VPN_IP_FOUR, VPN_IP_SIX (empty when none),
//	VPN_ORIGINATING_IP (only when known), VPN_BYTES_IN and VPN_BYTES_OUT
//	(only for D), VPN_REASON, VPN_INTERFACE, VPN_EXPIRES_AT (RFC 3339 in
//	UTC, empty when the config never expires), VPN_EVENT_ID,
//	VPN_NODE_NAME (the node that runs the script), and VPN_TEST=1 only
//	when Test is set.
//
// Byte counters of a C event are ignored. It returns an error, and nothing
// must be run, when Event is not "C" or "D", when IPFour is not an IPv4
// address or IPSix not an IPv6 address, when a byte counter is negative, or
// when any value contains a NUL byte (which the environment cannot carry).
// Env is a pure function of v.
func (v Vars) Env() ([]string, error) {
	if v.Event != EventConnect && v.Event != EventDisconnect {
		return nil, fmt.Errorf("hook event %q: VPN_EVENT must be %q or %q", v.Event, EventConnect, EventDisconnect)
	}
	four := ""
	if v.IPFour.IsValid() {
		a := v.IPFour.Unmap()
		if !a.Is4() {
			return nil, fmt.Errorf("hook event %d: VPN_IP_FOUR %s is not an IPv4 address", v.EventID, v.IPFour)
		}
		four = a.String()
	}
	six := ""
	if v.IPSix.IsValid() {
		if !v.IPSix.Is6() {
			return nil, fmt.Errorf("hook event %d: VPN_IP_SIX %s is not an IPv6 address", v.EventID, v.IPSix)
		}
		six = v.IPSix.String()
	}
	expires := ""
	if !v.ExpiresAt.IsZero() {
		expires = v.ExpiresAt.UTC().Format(time.RFC3339)
	}

	env := make([]string, 0, 15)
	add := func(name, value string) {
		env = append(env, name+"="+value)
	}
	add("VPN_EVENT", v.Event)
	add("VPN_USER_ID", v.UserID)
	add("VPN_PROFILE_ID", v.ProfileID)
	add("VPN_PROTO", "wireguard")
	add("VPN_CONNECTION_ID", v.ConnectionID)
	add("VPN_IP_FOUR", four)
	add("VPN_IP_SIX", six)
	if v.OriginatingIP.IsValid() {
		add("VPN_ORIGINATING_IP", v.OriginatingIP.String())
	}
	if v.Event == EventDisconnect {
		if v.BytesIn < 0 || v.BytesOut < 0 {
			return nil, fmt.Errorf("hook event %d: negative byte counter (in %d, out %d)", v.EventID, v.BytesIn, v.BytesOut)
		}
		add("VPN_BYTES_IN", strconv.FormatInt(v.BytesIn, 10))
		add("VPN_BYTES_OUT", strconv.FormatInt(v.BytesOut, 10))
	}
	add("VPN_REASON", v.Reason)
	add("VPN_INTERFACE", v.Interface)
	add("VPN_EXPIRES_AT", expires)
	add("VPN_EVENT_ID", strconv.FormatInt(v.EventID, 10))
	add("VPN_NODE_NAME", v.NodeName)
	if v.Test {
		add("VPN_TEST", "1")
	}

	for _, kv := range env {
		if strings.IndexByte(kv, 0) >= 0 {
			name, _, _ := strings.Cut(kv, "=")
			return nil, fmt.Errorf("hook event %d: %s contains a NUL byte", v.EventID, name)
		}
	}
	return env, nil
}
