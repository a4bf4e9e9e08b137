// Package humanfmt renders values for people, the same way in the CLI's
// tables and on the admin page: relative times ("3m ago", "in 29d"),
// byte counts in binary units, and shortened keys. Machine output (JSON,
// the API) never uses it.
package humanfmt

import (
	"fmt"
	"time"
)

// Ago renders a past time t relative to now: "3m ago", "never" for the
// zero time, "in 2m" for a time after now.
func Ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	if d < 0 {
		return "in " + Duration(-d)
	}
	return Duration(d) + " ago"
}

// Until renders a future time t relative to now: "in 29d", "never" for
// the zero time, "expired 1m ago" for a time not after now.
func Until(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := t.Sub(now)
	if d <= 0 {
		return "expired " + Duration(-d) + " ago"
	}
	return "in " + Duration(d)
}

// Duration renders d coarsely: "42s", "5m", "3h07m", "12d".
func Duration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	default:
		return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
	}
}

// Bytes renders a byte count in binary units: "1023 B", "117.7 MiB".
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// ShortKey shortens a base64 key to its first 10 characters and "…".
func ShortKey(k string) string {
	if len(k) > 10 {
		return k[:10] + "…"
	}
	return k
}
