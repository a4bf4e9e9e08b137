package store

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// maxIndex bounds host indexes so that index arithmetic never overflows; an
// IPv6 range of /66 or larger is treated as holding this many clients.
const maxIndex = int64(1) << 62

// Capacity returns how many clients a profile with these ranges can hold.
// Host index i is net+2+i in each family: +0 (the network) and +1 (the
// server) are never handed out, nor the IPv4 broadcast address. With both
// families the smaller range rules. A zero prefix means "no such family"; at
// least one must be given, v4 must be IPv4 and v6 IPv6.
func Capacity(v4, v6 netip.Prefix) (int64, error) {
	if err := checkRanges(v4, v6); err != nil {
		return 0, err
	}
	capacity := maxIndex
	if v4.IsValid() {
		c := int64(1)<<(32-v4.Bits()) - 3
		capacity = min(capacity, max(c, 0))
	}
	if v6.IsValid() {
		if hostBits := 128 - v6.Bits(); hostBits < 62 {
			capacity = min(capacity, int64(1)<<hostBits-2)
		}
	}
	return capacity, nil
}

func checkRanges(v4, v6 netip.Prefix) error {
	if !v4.IsValid() && !v6.IsValid() {
		return errors.New("profile has neither an IPv4 nor an IPv6 range")
	}
	if v4.IsValid() && !v4.Addr().Is4() {
		return fmt.Errorf("IPv4 range %s is not IPv4", v4)
	}
	if v6.IsValid() && (!v6.Addr().Is6() || v6.Addr().Is4In6()) {
		return fmt.Errorf("IPv6 range %s is not IPv6", v6)
	}
	return nil
}

// HostAddr returns the address of host index i in prefix: network + 2 + i.
// The caller keeps i below Capacity; the zero prefix gives the zero address.
func HostAddr(prefix netip.Prefix, i int64) netip.Addr {
	if !prefix.IsValid() || i < 0 {
		return netip.Addr{}
	}
	base := prefix.Masked().Addr()
	off := uint64(i) + 2
	if base.Is4() {
		b := base.As4()
		n := binary.BigEndian.Uint32(b[:]) + uint32(off)
		binary.BigEndian.PutUint32(b[:], n)
		return netip.AddrFrom4(b)
	}
	b := base.As16()
	hi := binary.BigEndian.Uint64(b[:8])
	lo := binary.BigEndian.Uint64(b[8:])
	sum := lo + off
	if sum < lo {
		hi++
	}
	binary.BigEndian.PutUint64(b[:8], hi)
	binary.BigEndian.PutUint64(b[8:], sum)
	return netip.AddrFrom16(b)
}

// IndexSpan is an inclusive range of host indexes.
type IndexSpan struct{ Lo, Hi int64 }

// AvoidSpans returns the host indexes (below capacity) whose IPv4 or IPv6
// address lies in one of avoid, as sorted, merged spans. Prefixes outside
// both ranges are ignored. Its cost grows with len(avoid), never with the
// size of the ranges.
func AvoidSpans(v4, v6 netip.Prefix, avoid []netip.Prefix, capacity int64) []IndexSpan {
	var out []IndexSpan
	for _, a := range avoid {
		if !a.IsValid() {
			continue
		}
		a = a.Masked()
		r := v4
		if a.Addr().Is6() {
			r = v6
		}
		if !r.IsValid() || !r.Overlaps(a) {
			continue
		}
		// Of two overlapping prefixes one contains the other.
		first, last := a, a
		if r.Bits() > a.Bits() {
			first, last = r, r
		}
		lo, hi := offsetIn(r, first.Masked().Addr()), offsetIn(r, lastAddr(last))
		if lo >= maxIndex {
			continue // beyond every index
		}
		lo, hi = max(lo-2, 0), min(hi-2, capacity-1)
		if lo <= hi {
			out = append(out, IndexSpan{lo, hi})
		}
	}
	slices.SortFunc(out, func(a, b IndexSpan) int { return cmp.Compare(a.Lo, b.Lo) })
	merged := out[:0]
	for _, s := range out {
		if n := len(merged); n > 0 && s.Lo <= merged[n-1].Hi+1 {
			merged[n-1].Hi = max(merged[n-1].Hi, s.Hi)
			continue
		}
		merged = append(merged, s)
	}
	return merged
}

// offsetIn returns a's distance from r's first address, at most maxIndex
// (a lies in r).
func offsetIn(r netip.Prefix, a netip.Addr) int64 {
	base := r.Masked().Addr().As16()
	b := a.As16()
	hi := binary.BigEndian.Uint64(b[:8]) - binary.BigEndian.Uint64(base[:8])
	lo := binary.BigEndian.Uint64(b[8:]) - binary.BigEndian.Uint64(base[8:])
	if binary.BigEndian.Uint64(b[8:]) < binary.BigEndian.Uint64(base[8:]) {
		hi--
	}
	if hi != 0 || lo >= uint64(maxIndex) {
		return maxIndex
	}
	return int64(lo)
}

// lastAddr returns the last address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As16()
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	for i := bits; i < 128; i++ {
		b[i/8] |= 1 << (7 - i%8)
	}
	a := netip.AddrFrom16(b)
	if p.Addr().Is4() {
		a = a.Unmap()
	}
	return a
}

// SpanOf returns the span of spans (sorted and merged, as AvoidSpans
// returns them) that holds idx, if any.
func SpanOf(spans []IndexSpan, idx int64) (IndexSpan, bool) {
	i, found := slices.BinarySearchFunc(spans, idx, func(s IndexSpan, x int64) int {
		switch {
		case s.Hi < x:
			return -1
		case s.Lo > x:
			return 1
		}
		return 0
	})
	if !found {
		return IndexSpan{}, false
	}
	return spans[i], true
}
