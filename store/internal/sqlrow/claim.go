package sqlrow

import (
	"errors"
	"fmt"
	"time"
)

// ClaimArgs checks the arguments of ClaimDue and returns the column values
// of now and leaseUntil. Errors name the operation and owner: owner empty,
// limit not positive, leaseUntil not after now, or a time outside the
// storable range.
func ClaimArgs(owner string, now, leaseUntil time.Time, limit int) (nowV, untilV any, err error) {
	switch {
	case owner == "":
		return nil, nil, errors.New("claim due events: owner is empty")
	case limit <= 0:
		return nil, nil, fmt.Errorf("claim due events for %q: limit %d is not positive", owner, limit)
	case !leaseUntil.After(now):
		return nil, nil, fmt.Errorf("claim due events for %q: lease end %s is not after now %s", owner,
			leaseUntil.UTC().Format(time.RFC3339Nano), now.UTC().Format(time.RFC3339Nano))
	}
	if nowV, err = EncTime(now); err != nil {
		return nil, nil, fmt.Errorf("claim due events for %q: %w", owner, err)
	}
	if untilV, err = EncTime(leaseUntil); err != nil {
		return nil, nil, fmt.Errorf("claim due events for %q: %w", owner, err)
	}
	return nowV, untilV, nil
}
