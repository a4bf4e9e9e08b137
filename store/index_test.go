package store

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

func TestCapacity(t *testing.T) {
	p := netip.MustParsePrefix
	tests := []struct {
		v4, v6 string
		want   int64
		err    string
	}{
		{"10.0.0.0/29", "", 5, ""},
		{"10.0.0.0/24", "", 253, ""},
		{"10.0.0.0/30", "", 1, ""},
		{"10.0.0.0/31", "", 0, ""},
		{"10.0.0.0/32", "", 0, ""},
		{"", "fd00::/126", 2, ""},
		{"", "fd00::/120", 254, ""},
		{"", "fd00::/64", maxIndex, ""},
		{"", "fd00::/0", maxIndex, ""},
		{"10.0.0.0/24", "fd00::/64", 253, ""},
		{"10.0.0.0/16", "fd00::/120", 254, ""},
		{"", "", 0, "neither an IPv4 nor an IPv6 range"},
		{"fd00::/64", "", 0, "IPv4 range fd00::/64 is not IPv4"},
		{"", "10.0.0.0/24", 0, "IPv6 range 10.0.0.0/24 is not IPv6"},
		{"", "::ffff:10.0.0.0/120", 0, "is not IPv6"},
	}
	for _, tt := range tests {
		var v4, v6 netip.Prefix
		if tt.v4 != "" {
			v4 = p(tt.v4)
		}
		if tt.v6 != "" {
			v6 = p(tt.v6)
		}
		got, err := Capacity(v4, v6)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("Capacity(%s, %s) error = %v, want %q", tt.v4, tt.v6, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Capacity(%s, %s) = %d, %v; want %d", tt.v4, tt.v6, got, err, tt.want)
		}
	}
}

func TestHostAddr(t *testing.T) {
	tests := []struct {
		prefix string
		i      int64
		want   string
	}{
		{"10.42.0.0/24", 0, "10.42.0.2"},
		{"10.42.0.0/24", 5, "10.42.0.7"},
		{"10.42.0.0/24", 253, "10.42.0.255"}, // one past capacity: the broadcast
		{"10.42.0.77/24", 0, "10.42.0.2"},    // unmasked input
		{"10.42.0.0/16", 300, "10.42.1.46"},
		{"fd42::/64", 0, "fd42::2"},
		{"fd42::/64", 5, "fd42::7"},
		{"fd42::/64", 0xfffe, "fd42::1:0"},
		{"fd42:0:0:0:ffff:ffff:ffff:ffff/128", 0, "fd42:0:0:1::1"}, // carry into the high half
	}
	for _, tt := range tests {
		if got := HostAddr(netip.MustParsePrefix(tt.prefix), tt.i); got.String() != tt.want {
			t.Errorf("HostAddr(%s, %d) = %s, want %s", tt.prefix, tt.i, got, tt.want)
		}
	}
	if got := HostAddr(netip.Prefix{}, 3); got.IsValid() {
		t.Errorf("HostAddr(zero prefix) = %s, want the zero address", got)
	}
}

func TestAvoidSpans(t *testing.T) {
	pfx := netip.MustParsePrefix
	v4, v6 := pfx("10.42.0.0/24"), pfx("fd42::/64")
	for _, tc := range []struct {
		avoid []string
		want  string
	}{
		{nil, "[]"},
		{[]string{"10.42.0.2/32"}, "[{0 0}]"},
		{[]string{"10.42.0.0/32", "10.42.0.1/32", "10.42.0.255/32"}, "[]"},
		{[]string{"10.42.0.0/24"}, "[{0 252}]"},
		{[]string{"0.0.0.0/0"}, "[{0 252}]"},
		{[]string{"fd42::/120"}, "[{0 252}]"},
		{[]string{"fd42::ffff/128"}, "[]"},
		{[]string{"10.42.0.9/32", "fd42::5/128", "10.42.0.6/31", "10.42.0.8/32"}, "[{3 7}]"},
		{[]string{"10.43.0.0/16", "fd43::/64"}, "[]"},
	} {
		var ps []netip.Prefix
		for _, s := range tc.avoid {
			ps = append(ps, pfx(s))
		}
		if got := fmt.Sprint(AvoidSpans(v4, v6, ps, 253)); got != tc.want {
			t.Errorf("AvoidSpans(%v) = %s, want %s", tc.avoid, got, tc.want)
		}
	}
	// A large IPv6-only range: offsets beyond 2^62 are clamped, not wrapped.
	big := pfx("fd00::/8")
	if got := fmt.Sprint(AvoidSpans(netip.Prefix{}, big, []netip.Prefix{pfx("fd00::/120"), pfx("fd00::3fff:ffff:ffff:ff00/120"), pfx("fdff::/16")}, maxIndex)); got != fmt.Sprintf("[{0 253} {%d %d}]", maxIndex-258, maxIndex-3) {
		t.Errorf("large range: %s", got)
	}
}
