package cli

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// FuzzParseExpiry checks that -expires never panics, that every refusal is a
// one-line usage error naming the input, and that an accepted value is either
// empty, a positive duration or an absolute time, never both.
func FuzzParseExpiry(f *testing.F) {
	for _, s := range []string{"", "90d", "12h", "1h30m", "0s", "-5d", "soon", "2031-01-02T03:04:05Z", "2031-01-02T03:04:05+02:00", "9999999999d", "d", "1.5d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		at, in, err := parseExpiry(s)
		if err != nil {
			var ue usageError
			if !errors.As(err, &ue) {
				t.Fatalf("parseExpiry(%q): %v is not a usage error", s, err)
			}
			if !strings.HasPrefix(err.Error(), "-expires ") {
				t.Fatalf("parseExpiry(%q): message %q does not name the flag", s, err)
			}
			if !at.IsZero() || in != 0 {
				t.Fatalf("parseExpiry(%q): error %v with a value (%v, %v)", s, err, at, in)
			}
			return
		}
		switch {
		case s == "":
			if !at.IsZero() || in != 0 {
				t.Fatalf("parseExpiry(\"\") = (%v, %v), want no expiry", at, in)
			}
		case at.IsZero() == (in == 0):
			t.Fatalf("parseExpiry(%q) = (%v, %v): want exactly one of a time or a duration", s, at, in)
		case in < 0:
			t.Fatalf("parseExpiry(%q) = %v: a negative lifetime was accepted", s, in)
		}
	})
}

// FuzzParseAt checks that -at never panics, that a refusal is a usage
// error naming the flag, and two properties of an accepted time: it
// survives a round trip through RFC 3339 unchanged, and a time written
// without an offset is UTC whatever the machine's zone: the same wall
// clock read in the local zone, set 5 h east of UTC here, names the
// instant 5 h earlier.
func FuzzParseAt(f *testing.F) {
	for _, s := range []string{"2026-11-28 17:05", "2026-11-28 17:05:09", "2026-11-28T17:05:09Z", "2026-11-28T17:05:09.5+01:00", "2026-11-28T17:05", "yesterday", "", "2026-13-01 00:00"} {
		f.Add(s)
	}
	local := time.Local
	time.Local = time.FixedZone("UTC+5", 5*60*60)
	f.Cleanup(func() { time.Local = local })
	zoneless := []string{"2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02T15:04:05", "2006-01-02T15:04"}
	f.Fuzz(func(t *testing.T, s string) {
		at, err := parseAt(s)
		if err != nil {
			var ue usageError
			if !errors.As(err, &ue) || !strings.HasPrefix(err.Error(), "-at ") {
				t.Fatalf("parseAt(%q): %v is not a usage error naming -at", s, err)
			}
			return
		}
		// RFC 3339 writes four-digit years; an offset can push year 0 or
		// 9999 out of them.
		if y := at.Year(); y >= 1 && y <= 9999 {
			if back, err := parseAt(at.Format(time.RFC3339Nano)); err != nil || !back.Equal(at) || back.Location() != time.UTC {
				t.Fatalf("parseAt(%q) = %v, but its RFC 3339 form %s reads back as %v, %v", s, at, at.Format(time.RFC3339Nano), back, err)
			}
		}
		if _, err := time.Parse(time.RFC3339Nano, s); err == nil {
			return // it carries its own offset
		}
		for _, layout := range zoneless {
			if east, err := time.ParseInLocation(layout, s, time.Local); err == nil {
				if !east.Add(5 * time.Hour).Equal(at) {
					t.Fatalf("parseAt(%q) = %v, want the wall clock read as UTC: %v", s, at, east.Add(5*time.Hour).UTC())
				}
				return
			}
		}
		t.Fatalf("parseAt(%q) = %v: accepted a form none of the documented layouts reads", s, at)
	})
}

// TestParseAtLayouts pins the accepted forms of -at to the instant they name.
func TestParseAtLayouts(t *testing.T) {
	want := time.Date(2026, 11, 28, 17, 5, 0, 0, time.UTC)
	for _, s := range []string{"2026-11-28 17:05", "2026-11-28 17:05:00", "2026-11-28T17:05:00Z", "2026-11-28T18:05:00+01:00", "2026-11-28T17:05"} {
		got, err := parseAt(s)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseAt(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
}
