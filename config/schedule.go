package config

import (
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// scheduleParser parses housekeeping.schedule exactly as the daemon does:
// five standard fields or a descriptor ("@hourly", "@every 1m"), with an
// optional "CRON_TZ=Zone " prefix.
var scheduleParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ParseSchedule parses a housekeeping schedule as the daemon runs it (five
// standard fields or a descriptor, optional "CRON_TZ=Zone " prefix), after
// the checks the cron package lacks: a time zone prefix must be followed by
// a schedule, and "@every" needs an interval of at least one second (cron
// silently rounds shorter or negative intervals up to 1s). The error names
// the spec and the reason. Use it in the daemon so that what the config
// accepts and what runs are the same.
func ParseSchedule(spec string) (cron.Schedule, error) {
	if reason := scheduleProblem(spec); reason != "" {
		return nil, fmt.Errorf("invalid schedule %s: %s", quote(spec), reason)
	}
	return scheduleParser.Parse(spec)
}

func quote(s string) string { return render(s) }

// scheduleProblem returns why spec is not a valid schedule, or "".
func scheduleProblem(spec string) (reason string) {
	defer func() {
		// The cron parser is not written for hostile input; a panic there
		// is a bad schedule, not a crash.
		if recover() != nil {
			reason = "not a valid schedule"
		}
	}()
	rest := spec
	if strings.HasPrefix(rest, "TZ=") || strings.HasPrefix(rest, "CRON_TZ=") {
		i := strings.IndexByte(rest, ' ')
		if i < 0 {
			return "a time zone must be followed by a space and a schedule"
		}
		rest = strings.TrimSpace(rest[i:])
	}
	if iv, ok := strings.CutPrefix(rest, "@every "); ok {
		d, err := time.ParseDuration(iv)
		if err != nil {
			return "interval " + quote(iv) + ` is not a duration such as "1m" or "1h30m"`
		}
		if d < time.Second {
			return "interval must be at least 1s"
		}
	}
	if _, err := scheduleParser.Parse(spec); err != nil {
		return err.Error()
	}
	return ""
}
