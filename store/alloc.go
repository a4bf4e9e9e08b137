package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
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

// poolQuery finds the lowest free host index of a profile in O(log n): the
// smallest index on the free list, else the high-water mark (see the
// ip_pools/ip_free tables and their triggers in the schema).
const poolQuery = `SELECT coalesce(
	(SELECT min(ip_index) FROM ip_free WHERE interface = ?1 AND profile_id = ?2),
	(SELECT next_index FROM ip_pools WHERE interface = ?1 AND profile_id = ?2),
	0)`
