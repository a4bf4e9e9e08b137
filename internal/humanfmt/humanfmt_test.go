package humanfmt

import (
	"testing"
	"time"
)

func TestBytes(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{{0, "0 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {123456789, "117.7 MiB"}, {1 << 40, "1.0 TiB"}} {
		if got := Bytes(tc.n); got != tc.want {
			t.Errorf("Bytes(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}

func TestRelativeTimes(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct{ got, want string }{
		{Until(t0, time.Time{}), "never"},
		{Until(t0, t0.Add(-90*time.Second)), "expired 1m ago"},
		{Until(t0, t0.Add(3*time.Hour+7*time.Minute)), "in 3h07m"},
		{Ago(t0, t0.Add(-50*time.Hour)), "2d ago"},
		{Ago(t0, t0.Add(42*time.Second)), "in 42s"},
		{Ago(t0, time.Time{}), "never"},
		{ShortKey("abcdefghijklmnop"), "abcdefghij…"},
		{ShortKey("abc"), "abc"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}
