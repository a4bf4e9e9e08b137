package config

import (
	"errors"
	"strconv"
	"strings"
)

// MinOrphanLimit is the least a percentage orphan_removal_limit allows: a
// small device may always lose this many orphans in one reconcile.
const MinOrphanLimit = 10

// MaxOrphanCount bounds an absolute orphan_removal_limit (the most peers a
// kernel WireGuard device holds).
const MaxOrphanCount = 1 << 20

// DefaultOrphanLimit is [[interface]] orphan_removal_limit: 10% of the
// device's peers, at least MinOrphanLimit.
var DefaultOrphanLimit = OrphanLimit{Percent: 10}

// OrphanLimit is how many orphans (device peers the store does not know)
// one reconcile may remove from an interface. Above it, reconcile removes
// none and reports the interface blocked: an empty or wrong database facing
// a full device must not wipe it.
type OrphanLimit struct {
	// Percent, when not 0, is a share (1..100) of the peers on the device,
	// never fewer than MinOrphanLimit.
	Percent int
	// Count is the absolute limit (0..MaxOrphanCount) when Percent is 0.
	Count int
}

// For returns the limit for a device holding devicePeers peers.
func (l OrphanLimit) For(devicePeers int) int {
	if l.Percent == 0 {
		return l.Count
	}
	return max(devicePeers*l.Percent/100, MinOrphanLimit)
}

// String is the limit as written in the file: "10%" or "25".
func (l OrphanLimit) String() string {
	if l.Percent != 0 {
		return strconv.Itoa(l.Percent) + "%"
	}
	return strconv.Itoa(l.Count)
}

// errOrphanLimit is the one problem a bad orphan_removal_limit has.
var errOrphanLimit = errors.New(`must be a share of the device's peers such as "10%" (1% to 100%) or a number of peers from 0 to 1048576`)

// ParseOrphanLimit parses orphan_removal_limit written as a string: "N%"
// (N a whole number from 1 to 100) or "N" (a whole number of peers from 0
// to MaxOrphanCount), without signs or spaces. Any other value gives one
// error saying what is accepted.
func ParseOrphanLimit(s string) (OrphanLimit, error) {
	if num, ok := strings.CutSuffix(s, "%"); ok {
		n, ok := wholeNumber(num)
		if !ok || n < 1 || n > 100 {
			return OrphanLimit{}, errOrphanLimit
		}
		return OrphanLimit{Percent: n}, nil
	}
	n, ok := wholeNumber(s)
	if !ok {
		return OrphanLimit{}, errOrphanLimit
	}
	return CountLimit(int64(n))
}

// CountLimit is an absolute orphan_removal_limit (an integer in the file).
func CountLimit(n int64) (OrphanLimit, error) {
	if n < 0 || n > MaxOrphanCount {
		return OrphanLimit{}, errOrphanLimit
	}
	return OrphanLimit{Count: int(n)}, nil
}

// wholeNumber parses decimal digits only: no sign, no spaces, at most 9
// digits, so the value fits any int.
func wholeNumber(s string) (int, bool) {
	if s == "" || len(s) > 9 {
		return 0, false
	}
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}
