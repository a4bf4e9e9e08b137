package config

import (
	"strings"
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	valid := map[string]time.Duration{
		"0":                     0,
		"+0":                    0,
		"0s":                    0,
		"0d":                    0,
		"30s":                   30 * time.Second,
		"1h30m":                 90 * time.Minute,
		"90d":                   90 * Day,
		"1d12h":                 36 * time.Hour,
		"1.5d":                  36 * time.Hour,
		".5d":                   12 * time.Hour,
		"1d1d":                  2 * Day,
		"250ms":                 250 * time.Millisecond,
		"1us":                   time.Microsecond,
		"1µs":                   time.Microsecond,
		"1μs":                   time.Microsecond,
		"7ns":                   7,
		"106751d":               106751 * Day,
		"2562047h":              2562047 * time.Hour,
		"1d23h59m":              Day + 23*time.Hour + 59*time.Minute,
		"9223372036854775807ns": 1<<63 - 1,
	}
	for s, want := range valid {
		got, err := ParseDuration(s)
		if err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	invalid := map[string]string{
		"":                      `invalid duration "": must not be empty`,
		"-1s":                   `invalid duration "-1s": must not be negative`,
		"-0":                    `invalid duration "-0": must not be negative`,
		"5":                     `invalid duration "5": missing unit (use ns, us, ms, s, m, h or d)`,
		"00":                    `invalid duration "00": missing unit (use ns, us, ms, s, m, h or d)`,
		"1w":                    `invalid duration "1w": unknown unit "w" (use ns, us, ms, s, m, h or d)`,
		"1 d":                   `invalid duration "1 d": unknown unit " d" (use ns, us, ms, s, m, h or d)`,
		"1D":                    `invalid duration "1D": unknown unit "D" (use ns, us, ms, s, m, h or d)`,
		"d":                     `invalid duration "d": not a duration (examples: "30s", "1h30m", "90d", "0")`,
		".d":                    `invalid duration ".d": not a duration (examples: "30s", "1h30m", "90d", "0")`,
		"+":                     `invalid duration "+": not a duration (examples: "30s", "1h30m", "90d", "0")`,
		"1h-5m":                 `invalid duration "1h-5m": unknown unit "h-" (use ns, us, ms, s, m, h or d)`,
		"106752d":               `invalid duration "106752d": too large (the maximum is about 106751d)`,
		"9223372036854775808ns": `invalid duration "9223372036854775808ns": too large (the maximum is about 106751d)`,
		"99999999999999999999s": `invalid duration "99999999999999999999s": too large (the maximum is about 106751d)`,
		"106751d23h47m17s":      `invalid duration "106751d23h47m17s": too large (the maximum is about 106751d)`,
	}
	for s, want := range invalid {
		got, err := ParseDuration(s)
		if err == nil || err.Error() != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want error %q", s, got, err, want)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	tests := map[time.Duration]string{
		0:                             "0",
		90 * Day:                      "90d",
		36 * time.Hour:                "1d12h",
		Day + 90*time.Second:          "1d1m30s",
		Day + time.Hour + time.Second: "1d1h0m1s",
		30 * time.Second:              "30s",
		90 * time.Minute:              "1h30m",
		time.Hour:                     "1h",
		1500 * time.Millisecond:       "1.5s",
		250 * time.Millisecond:        "250ms",
		-time.Second:                  "-1s",
		time.Duration(1<<63 - 1):      "106751d23h47m16.854775807s",
	}
	for d, want := range tests {
		if got := FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", d, got, want)
		}
		if d < 0 {
			continue
		}
		if back, err := ParseDuration(want); err != nil || back != d {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", want, back, err, d)
		}
	}
}

func TestDurationText(t *testing.T) {
	var d Duration
	if err := d.UnmarshalText([]byte("1d12h")); err != nil || time.Duration(d) != 36*time.Hour {
		t.Fatalf("UnmarshalText: %v, %v", d, err)
	}
	text, err := d.MarshalText()
	if err != nil || string(text) != "1d12h" || d.String() != "1d12h" {
		t.Errorf("MarshalText = %q, %v; String = %q", text, err, d.String())
	}
	if err := d.UnmarshalText([]byte("-1d")); err == nil || !strings.Contains(err.Error(), "negative") {
		t.Errorf("UnmarshalText(-1d) = %v", err)
	}
	if _, err := Duration(-1).MarshalText(); err == nil {
		t.Error("MarshalText of a negative duration succeeded")
	}
}

func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"0", "90d", "1d12h", "1.5h", ".5d", "-1s", "+5m", "1µs", "9223372036854775807ns",
		"106751d23h47m16.854775807s", "106752d", "1.00000000000000000001s", "5", "1x", "", "1h-2m"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s)
		if err != nil {
			if d != 0 {
				t.Fatalf("ParseDuration(%q) = %v with error %v", s, d, err)
			}
		} else if d < 0 {
			t.Fatalf("ParseDuration(%q) = %v, negative", s, d)
		}
		// Without "d" and "-", it agrees with time.ParseDuration.
		if !strings.ContainsAny(s, "d-") {
			want, werr := time.ParseDuration(s)
			if (err == nil) != (werr == nil) || (err == nil && d != want) {
				t.Fatalf("ParseDuration(%q) = %v, %v; time.ParseDuration = %v, %v", s, d, err, want, werr)
			}
		}
		// What it accepts it can write back.
		if err == nil {
			back, err := ParseDuration(FormatDuration(d))
			if err != nil || back != d {
				t.Fatalf("round trip of %q (%v): %q -> %v, %v", s, d, FormatDuration(d), back, err)
			}
		}
	})
}
