package wg

import (
	"bytes"
	"cmp"
	"encoding/binary"
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
	order := sortedOrder(len(actual), func(i int) *wgtypes.Key { return &actual[i].PublicKey })
	for j := 1; j < len(order); j++ {
		if actual[order[j].i].PublicKey == actual[order[j-1].i].PublicKey {
			return Plan{}, fmt.Errorf("make plan: device lists peer %s twice", actual[order[j].i].PublicKey)
		}
	}

	var p Plan
	var scratch []netip.Prefix
	i, j := 0, 0
	for i < len(ws) || j < len(order) {
		var c int
		switch {
		case i == len(ws):
			c = 1
		case j == len(order):
			c = -1
		default:
			c = compareKeys(ws[i].PublicKey, actual[order[j].i].PublicKey)
		}
		switch {
		case c < 0:
			p.Add = append(p.Add, ws[i])
			i++
		case c > 0:
			k := actual[order[j].i].PublicKey
			if o == OrphansKeep {
				p.KeptOrphans = append(p.KeptOrphans, k)
			} else {
				p.Remove = append(p.Remove, k)
			}
			j++
		default:
			w, a := &ws[i], &actual[order[j].i]
			ips := slices.Equal(w.AllowedIPs, a.AllowedIPs)
			if !ips {
				scratch = appendNormalized(scratch[:0], a.AllowedIPs)
				ips = slices.Equal(w.AllowedIPs, scratch)
			}
			ch := Change{
				Wanted:       *w,
				AllowedIPs:   !ips,
				PresharedKey: w.PresharedKey != a.PresharedKey,
				Keepalive:    w.Keepalive != a.Keepalive,
			}
			if ch.AllowedIPs || ch.PresharedKey || ch.Keepalive {
				p.Update = append(p.Update, ch)
			}
			i++
			j++
		}
	}
	return p, nil
}

// keyPos is a key's first 8 bytes (big-endian) and its index: sorting these
// moves no pointers and almost always decides on the first word.
type keyPos struct {
	k0 uint64
	i  int32
}

// sortedOrder returns the indices 0..n-1 ordered by the keys keyAt returns.
func sortedOrder(n int, keyAt func(int) *wgtypes.Key) []keyPos {
	order := make([]keyPos, n)
	for i := range order {
		order[i] = keyPos{k0: binary.BigEndian.Uint64(keyAt(i)[:8]), i: int32(i)}
	}
	slices.SortFunc(order, func(a, b keyPos) int {
		if a.k0 != b.k0 {
			return cmp.Compare(a.k0, b.k0)
		}
		return compareKeys(*keyAt(int(a.i)), *keyAt(int(b.i)))
	})
	return order
}

// normalizeWanted validates wanted and returns it sorted by key with every
// allowed-IP list masked, sorted and deduplicated. The input is not modified;
// lists already in normal form are shared, not copied.
func normalizeWanted(wanted []Wanted) ([]Wanted, error) {
	owner := make(map[prefixKey]int32, len(wanted)*2)
	for i := range wanted {
		w := &wanted[i]
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
			pk := keyOfPrefix(pfx.Masked())
			if other, dup := owner[pk]; dup && wanted[other].PublicKey != w.PublicKey {
				return nil, fmt.Errorf("allowed ip %s wanted for two peers, %s and %s", pfx.Masked(), wanted[other].PublicKey, w.PublicKey)
			}
			owner[pk] = int32(i)
		}
	}
	order := sortedOrder(len(wanted), func(i int) *wgtypes.Key { return &wanted[i].PublicKey })
	ws := make([]Wanted, len(wanted))
	for j, o := range order {
		w := wanted[o.i]
		if j > 0 && w.PublicKey == ws[j-1].PublicKey {
			return nil, fmt.Errorf("duplicate wanted peer %s", w.PublicKey)
		}
		if !isNormalized(w.AllowedIPs) {
			w.AllowedIPs = appendNormalized(make([]netip.Prefix, 0, len(w.AllowedIPs)), w.AllowedIPs)
		}
		ws[j] = w
	}
	return ws, nil
}

// prefixKey is a prefix as plain bytes, cheap to hash.
type prefixKey struct {
	addr [16]byte
	bits int16
}

func keyOfPrefix(p netip.Prefix) prefixKey {
	return prefixKey{addr: p.Addr().As16(), bits: int16(p.Bits() + p.Addr().BitLen())}
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
