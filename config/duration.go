package config

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Day is the unit of the "d" suffix: exactly 24 hours (no calendar or
// daylight-saving arithmetic).
const Day = 24 * time.Hour

// Duration is a time.Duration written in TOML as a string in Go syntax plus
// a "d" (24 hour) unit: "30s", "1h30m", "90d", "1d12h", "0". Negative values
// are rejected.
type Duration time.Duration

// UnmarshalText parses the text with ParseDuration.
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := ParseDuration(string(text))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes the duration in the form FormatDuration gives, which
// ParseDuration reads back to the same value.
func (d Duration) MarshalText() ([]byte, error) {
	if d < 0 {
		return nil, fmt.Errorf("marshal duration %s: negative", time.Duration(d))
	}
	return []byte(FormatDuration(time.Duration(d))), nil
}

// String returns FormatDuration of the value.
func (d Duration) String() string { return FormatDuration(time.Duration(d)) }

// durationUnits maps every accepted unit to its length.
var durationUnits = map[string]uint64{
	"ns": uint64(time.Nanosecond),
	"us": uint64(time.Microsecond),
	"µs": uint64(time.Microsecond), // U+00B5 micro sign
	"μs": uint64(time.Microsecond), // U+03BC Greek small letter mu
	"ms": uint64(time.Millisecond),
	"s":  uint64(time.Second),
	"m":  uint64(time.Minute),
	"h":  uint64(time.Hour),
	"d":  uint64(Day),
}

const unitList = "ns, us, ms, s, m, h or d"

// Reasons a duration is rejected; parseDuration returns them bare so that the
// config validation can name the key in front of them.
var (
	errDurEmpty    = errors.New("must not be empty")
	errDurNegative = errors.New("must not be negative")
	errDurSyntax   = errors.New(`not a duration (examples: "30s", "1h30m", "90d", "0")`)
	errDurNoUnit   = errors.New("missing unit (use " + unitList + ")")
	errDurOverflow = errors.New("too large (the maximum is about 106751d)")
)

// ParseDuration parses a duration in Go syntax (a sequence of decimal numbers,
// each with an optional fraction and a unit: "1.5h", "2h45m") extended with
// the unit "d" for 24 hours ("90d", "1d12h"). "0" alone needs no unit and a
// leading "+" is allowed; negative values, unknown units and values beyond
// the range of time.Duration are errors. For inputs without "d" it accepts exactly what
// time.ParseDuration accepts, minus negative values, and returns the same
// value.
func ParseDuration(s string) (time.Duration, error) {
	d, err := parseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q: %w", s, err)
	}
	return d, nil
}

func parseDuration(orig string) (time.Duration, error) {
	s := orig
	if s == "" {
		return 0, errDurEmpty
	}
	switch s[0] {
	case '-':
		return 0, errDurNegative
	case '+':
		s = s[1:]
	}
	if s == "0" {
		return 0, nil
	}
	if s == "" {
		return 0, errDurSyntax
	}
	const limit = 1 << 63 // one past the largest time.Duration
	var total uint64
	for s != "" {
		if s[0] != '.' && !isDigit(s[0]) {
			return 0, errDurSyntax
		}
		// Integer part.
		start := len(s)
		intPart, rest, overflow := leadingInt(s)
		intDigits := start - len(rest)
		s = rest
		if overflow {
			return 0, errDurOverflow
		}
		// Fraction.
		var frac uint64
		scale := 1.0
		fracDigits := 0
		if s != "" && s[0] == '.' {
			s = s[1:]
			before := len(s)
			frac, scale, s = leadingFraction(s)
			fracDigits = before - len(s)
		}
		if intDigits == 0 && fracDigits == 0 {
			return 0, errDurSyntax // "." or ".s"
		}
		// Unit.
		i := 0
		for i < len(s) && s[i] != '.' && !isDigit(s[i]) {
			i++
		}
		if i == 0 {
			return 0, errDurNoUnit
		}
		u := s[:i]
		s = s[i:]
		unit, ok := durationUnits[u]
		if !ok {
			return 0, fmt.Errorf("unknown unit %q (use %s)", u, unitList)
		}
		if intPart > limit/unit {
			return 0, errDurOverflow
		}
		v := intPart * unit
		if frac > 0 {
			// float64 is enough here: the fraction adds less than one unit,
			// and the result is truncated towards zero like time.ParseDuration.
			v += uint64(float64(frac) * (float64(unit) / scale))
			if v > limit {
				return 0, errDurOverflow
			}
		}
		total += v
		if total > limit {
			return 0, errDurOverflow
		}
	}
	if total > limit-1 {
		return 0, errDurOverflow
	}
	return time.Duration(total), nil
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// leadingInt consumes the leading decimal digits of s.
func leadingInt(s string) (v uint64, rest string, overflow bool) {
	i := 0
	for ; i < len(s) && isDigit(s[i]); i++ {
		if v > (1<<63)/10 {
			return 0, "", true
		}
		v = v*10 + uint64(s[i]-'0')
		if v > 1<<63 {
			return 0, "", true
		}
	}
	return v, s[i:], false
}

// leadingFraction consumes the leading digits of a fraction. Digits beyond
// what fits in 63 bits are consumed but ignored: they are below a nanosecond
// of any unit.
func leadingFraction(s string) (v uint64, scale float64, rest string) {
	i := 0
	scale = 1
	full := false
	for ; i < len(s) && isDigit(s[i]); i++ {
		if full {
			continue
		}
		if v > (1<<63-1)/10 {
			full = true
			continue
		}
		y := v*10 + uint64(s[i]-'0')
		if y > 1<<63 {
			full = true
			continue
		}
		v = y
		scale *= 10
	}
	return v, scale, s[i:]
}

// FormatDuration writes d compactly with whole days as "d": 0 → "0",
// 90*Day → "90d", 36h → "1d12h", 90s → "1m30s", 1500ms → "1.5s".
// ParseDuration(FormatDuration(d)) == d for every d >= 0. Negative values
// are written in time.Duration's own format.
func FormatDuration(d time.Duration) string {
	if d <= 0 {
		if d == 0 {
			return "0"
		}
		return d.String()
	}
	days := d / Day
	rest := d % Day
	var b strings.Builder
	if days > 0 {
		fmt.Fprintf(&b, "%dd", int64(days))
	}
	if rest > 0 {
		s := rest.String()
		if strings.HasSuffix(s, "m0s") {
			s = s[:len(s)-2]
		}
		if strings.HasSuffix(s, "h0m") {
			s = s[:len(s)-2]
		}
		b.WriteString(s)
	}
	return b.String()
}
