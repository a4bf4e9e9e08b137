package wg

import (
	"bytes"
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// maxKeepalive is the largest persistent keepalive WireGuard accepts
// (a 16-bit number of seconds).
const maxKeepalive = 65535 * time.Second

// MakePlan returns the changes that bring a device whose peers are actual in
// line with wanted. It is pure and deterministic: every list in the plan is
// sorted by public key, and the same input always gives the same plan.
//
// Allowed IPs are compared as sets of masked prefixes (order, duplicates and
// host bits do not matter); the preshared key and the keepalive are compared
// by value. A peer whose state matches is never in the plan. Device peers that
// are not wanted are removed (OrphansRemove) or listed in KeptOrphans
// (OrphansKeep).
//
// MakePlan rejects, naming the peer: a duplicate or zero public key, an
// invalid allowed IP, one prefix wanted for two peers, a keepalive that is
// negative, above 65535 s or not whole seconds, duplicate keys in actual, and
// an unknown orphan policy.
func MakePlan(wanted []Wanted, actual []Peer, o Orphans) (Plan, error) {
	if o != OrphansRemove && o != OrphansKeep {
		return Plan{}, fmt.Errorf("make plan: invalid orphan policy %v", o)
	}
	ws, err := normalizeWanted(wanted)
	if err != nil {
		return Plan{}, fmt.Errorf("make plan: %w", err)
	}
	as := actual
	if !slices.IsSortedFunc(as, func(a, b Peer) int { return compareKeys(a.PublicKey, b.PublicKey) }) {
		as = slices.Clone(actual)
		slices.SortFunc(as, func(a, b Peer) int { return compareKeys(a.PublicKey, b.PublicKey) })
	}
	for j := 1; j < len(as); j++ {
		if as[j].PublicKey == as[j-1].PublicKey {
			return Plan{}, fmt.Errorf("make plan: device lists peer %s twice", as[j].PublicKey)
		}
	}

	var p Plan
	var scratch []netip.Prefix
	i, j := 0, 0
	for i < len(ws) || j < len(as) {
		var c int
		switch {
		case i == len(ws):
			c = 1
		case j == len(as):
			c = -1
		default:
			c = compareKeys(ws[i].PublicKey, as[j].PublicKey)
		}
		switch {
		case c < 0:
			p.Add = append(p.Add, ws[i])
			i++
		case c > 0:
			if o == OrphansKeep {
				p.KeptOrphans = append(p.KeptOrphans, as[j].PublicKey)
			} else {
				p.Remove = append(p.Remove, as[j].PublicKey)
			}
			j++
		default:
			w, a := ws[i], as[j]
			ch := Change{Wanted: w}
			scratch = appendNormalized(scratch[:0], a.AllowedIPs)
			ch.AllowedIPs = !slices.Equal(w.AllowedIPs, scratch)
			ch.PresharedKey = w.PresharedKey != a.PresharedKey
			ch.Keepalive = w.Keepalive != a.Keepalive
			if ch.AllowedIPs || ch.PresharedKey || ch.Keepalive {
				p.Update = append(p.Update, ch)
			}
			i++
			j++
		}
	}
	return p, nil
}

// normalizeWanted validates wanted and returns it sorted by key with every
// allowed-IP list masked, sorted and deduplicated. The input is not modified;
// lists already in normal form are shared, not copied.
func normalizeWanted(wanted []Wanted) ([]Wanted, error) {
	ws := make([]Wanted, len(wanted))
	owner := make(map[netip.Prefix]wgtypes.Key, len(wanted)*2)
	for i, w := range wanted {
		if w.PublicKey == (wgtypes.Key{}) {
			return nil, fmt.Errorf("wanted peer %d: zero public key", i)
		}
		if err := checkKeepalive(w.Keepalive); err != nil {
			return nil, fmt.Errorf("wanted peer %s: %w", w.PublicKey, err)
		}
		for _, pfx := range w.AllowedIPs {
			if !pfx.IsValid() {
				return nil, fmt.Errorf("wanted peer %s: invalid allowed ip %q", w.PublicKey, pfx)
			}
		}
		if !isNormalized(w.AllowedIPs) {
			w.AllowedIPs = appendNormalized(make([]netip.Prefix, 0, len(w.AllowedIPs)), w.AllowedIPs)
		}
		for _, pfx := range w.AllowedIPs {
			if other, dup := owner[pfx]; dup && other != w.PublicKey {
				return nil, fmt.Errorf("allowed ip %s wanted for two peers, %s and %s", pfx, other, w.PublicKey)
			}
			owner[pfx] = w.PublicKey
		}
		ws[i] = w
	}
	slices.SortFunc(ws, func(a, b Wanted) int { return compareKeys(a.PublicKey, b.PublicKey) })
	for i := 1; i < len(ws); i++ {
		if ws[i].PublicKey == ws[i-1].PublicKey {
			return nil, fmt.Errorf("duplicate wanted peer %s", ws[i].PublicKey)
		}
	}
	return ws, nil
}

func checkKeepalive(d time.Duration) error {
	if d < 0 || d > maxKeepalive || d%time.Second != 0 {
		return fmt.Errorf("invalid keepalive %v: want whole seconds from 0 to 65535s", d)
	}
	return nil
}

// appendNormalized appends to dst the set of prefixes in src, masked, sorted
// and without duplicates.
func appendNormalized(dst, src []netip.Prefix) []netip.Prefix {
	start := len(dst)
	for _, p := range src {
		dst = append(dst, p.Masked())
	}
	out := dst[start:]
	slices.SortFunc(out, comparePrefixes)
	out = slices.Compact(out)
	return dst[:start+len(out)]
}

// isNormalized reports whether ps is already masked, sorted and free of
// duplicates.
func isNormalized(ps []netip.Prefix) bool {
	for i, p := range ps {
		if p.Masked() != p {
			return false
		}
		if i > 0 && comparePrefixes(ps[i-1], p) >= 0 {
			return false
		}
	}
	return true
}

func comparePrefixes(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}

func compareKeys(a, b wgtypes.Key) int {
	return bytes.Compare(a[:], b[:])
}
