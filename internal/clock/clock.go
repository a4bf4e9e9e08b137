// Package clock is the seam between code that waits and the time it waits
// on: the real clock in production, internal/fakeclock in tests, so that a
// scheduler's timers fire when a test moves the time, not when the machine
// gets round to it.
package clock

import "time"

// Clock tells the time and makes timers.
type Clock interface {
	Now() time.Time
	// NewTimer returns a timer that fires once, d from now.
	NewTimer(d time.Duration) Timer
}

// Timer is a one-shot timer. As with time.Timer since Go 1.23, no stale
// value is received after Reset or Stop returns.
type Timer interface {
	// C receives the time when the timer fires.
	C() <-chan time.Time
	// Reset makes the timer fire d from now (at once when d <= 0), whether
	// or not it was armed.
	Reset(d time.Duration)
	// Stop disarms the timer.
	Stop()
}

// Real is the system clock.
type Real struct{}

// Now returns time.Now().
func (Real) Now() time.Time { return time.Now() }

// NewTimer wraps time.NewTimer.
func (Real) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time   { return r.t.C }
func (r realTimer) Reset(d time.Duration) { r.t.Reset(d) }
func (r realTimer) Stop()                 { r.t.Stop() }
