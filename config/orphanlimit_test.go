package config

import (
	"strconv"
	"strings"
	"testing"
)

func TestParseOrphanLimit(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want OrphanLimit
		// limits for devices of 0, 50, 100, 1000 peers
		for0, for50, for100, for1000 int
	}{
		{"10%", OrphanLimit{Percent: 10}, 10, 10, 10, 100},
		{"1%", OrphanLimit{Percent: 1}, 10, 10, 10, 10},
		{"100%", OrphanLimit{Percent: 100}, 10, 50, 100, 1000},
		{"25%", OrphanLimit{Percent: 25}, 10, 12, 25, 250},
		{"0", OrphanLimit{}, 0, 0, 0, 0},
		{"3", OrphanLimit{Count: 3}, 3, 3, 3, 3},
		{"1048576", OrphanLimit{Count: 1 << 20}, 1 << 20, 1 << 20, 1 << 20, 1 << 20},
		{"007", OrphanLimit{Count: 7}, 7, 7, 7, 7},
	} {
		got, err := ParseOrphanLimit(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseOrphanLimit(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			continue
		}
		for n, want := range map[int]int{0: tc.for0, 50: tc.for50, 100: tc.for100, 1000: tc.for1000} {
			if l := got.For(n); l != want {
				t.Errorf("%q.For(%d) = %d, want %d", tc.in, n, l, want)
			}
		}
	}
	for _, in := range []string{"", "%", "0%", "101%", "-1", "+5", " 5", "5 ", "5 %", "2.5%", "1e3", "1048577", "9999999999", "10%%", "ten", "0x10"} {
		if l, err := ParseOrphanLimit(in); err == nil {
			t.Errorf("ParseOrphanLimit(%q) = %+v, want an error", in, l)
		} else if err.Error() != `must be a share of the device's peers such as "10%" (1% to 100%) or a number of peers from 0 to 1048576` {
			t.Errorf("ParseOrphanLimit(%q): error %q", in, err)
		}
	}
	if s := DefaultOrphanLimit.String(); s != "10%" {
		t.Errorf("default %q", s)
	}
}

// FuzzParseOrphanLimit: any input is either rejected or gives a limit in
// range that prints back to an equivalent value.
func FuzzParseOrphanLimit(f *testing.F) {
	for _, s := range []string{"10%", "0", "100%", "101%", "-1", "1048576", "1048577", "2.5%", "", "%", "٣%"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseOrphanLimit(s)
		if err != nil {
			if err != errOrphanLimit {
				t.Fatalf("%q: unexpected error %v", s, err)
			}
			return
		}
		if l.Percent < 0 || l.Percent > 100 || l.Count < 0 || l.Count > MaxOrphanCount || (l.Percent != 0 && l.Count != 0) {
			t.Fatalf("%q gave %+v", s, l)
		}
		back, err := ParseOrphanLimit(l.String())
		if err != nil || back != l {
			t.Fatalf("%q -> %+v -> %q -> %+v, %v", s, l, l.String(), back, err)
		}
		if l.Percent > 0 && l.For(0) < MinOrphanLimit {
			t.Fatalf("%q: percentage limit below the floor", s)
		}
		if n, err := strconv.Atoi(strings.TrimSuffix(s, "%")); err != nil || n < 0 {
			t.Fatalf("%q accepted but is not a whole number", s)
		}
	})
}
