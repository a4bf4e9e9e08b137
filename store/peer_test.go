package store

import (
	"strings"
	"testing"
	"time"
)

func TestDeleteTerms(t *testing.T) {
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	later := now.Add(time.Minute)
	for _, c := range []struct {
		reason, owner string
		until         time.Time
		lease, hold   time.Time
		note, err     string
	}{
		{ReasonDeleted, "o", later, later, later, NotePendingDeleted, ""},
		{ReasonStale, "o", later, later, later, NoteStaleConnect, ""},
		{ReasonExpired, "", later, time.Time{}, later, NotePendingDeleted, ""}, // no owner: no lease, but the hold
		{ReasonIdle, "", time.Time{}, time.Time{}, time.Time{}, NotePendingDeleted, ""},
		{"bored", "", time.Time{}, time.Time{}, time.Time{}, "", `reason "bored" is not one of`},
		{ReasonFailed, "o", now, time.Time{}, time.Time{}, "", `lease for "o" must end after now`},
		{ReasonDeleted, "", now, time.Time{}, time.Time{}, "", `hold must end after now`},
	} {
		lease, hold, note, err := DeleteTerms(c.reason, c.owner, now, c.until)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s/%q: err %v, want %q", c.reason, c.owner, err, c.err)
			}
			continue
		}
		if err != nil || !lease.Equal(c.lease) || !hold.Equal(c.hold) || note != c.note {
			t.Errorf("%s/%q: %v %v %q %v, want %v %v %q", c.reason, c.owner, lease, hold, note, err, c.lease, c.hold, c.note)
		}
	}
}
