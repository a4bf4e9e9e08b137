// Package fakeclock is a settable clock for tests of code that takes a
// `Now func() time.Time` or an internal/clock.Clock, so expiry, backoff,
// leases and timers are tested without sleeping. It is safe for concurrent
// use.
package fakeclock

import (
	"slices"
	"sync"
	"time"

	"github.com/wgkeeper/wgkeeper/internal/clock"
)

// Clock is a fake clock; its zero value reads as the zero time. Its timers
// fire only when Set or Advance moves the time to or past their deadline.
type Clock struct {
	mu     sync.Mutex // guards the following
	t      time.Time
	timers []*Timer // armed timers
}

var _ clock.Clock = (*Clock)(nil)

// New returns a clock reading t.
func New(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Set moves the clock to t and fires the timers due at t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.fireLocked()
	c.mu.Unlock()
}

// Advance moves the clock forward by d, fires the timers due then and
// returns the new time.
func (c *Clock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	c.fireLocked()
	return c.t
}

// Timers returns the deadlines of the armed timers, earliest first: a test
// waits until the code under test has armed the timer it expects before
// moving the clock.
func (c *Clock) Timers() []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]time.Time, len(c.timers))
	for i, t := range c.timers {
		out[i] = t.at
	}
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	return out
}

// NewTimer returns a timer that fires d from the clock's time.
func (c *Clock) NewTimer(d time.Duration) clock.Timer {
	t := &Timer{c: c, ch: make(chan time.Time, 1)}
	t.Reset(d)
	return t
}

// fireLocked fires every armed timer due at c.t. The caller holds c.mu.
func (c *Clock) fireLocked() {
	kept := c.timers[:0]
	for _, t := range c.timers {
		if t.at.After(c.t) {
			kept = append(kept, t)
			continue
		}
		select {
		case t.ch <- c.t:
		default:
		}
	}
	clear(c.timers[len(kept):])
	c.timers = kept
}

// Timer is a timer of a fake Clock.
type Timer struct {
	c  *Clock
	ch chan time.Time
	at time.Time // deadline while armed; guarded by c.mu
}

// C receives the clock's time when the timer fires.
func (t *Timer) C() <-chan time.Time { return t.ch }

// Reset disarms the timer, drops a value it sent and nobody received, and
// arms it d from the clock's time; d <= 0 fires it at once.
func (t *Timer) Reset(d time.Duration) {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	t.stopLocked()
	t.at = t.c.t.Add(d)
	t.c.timers = append(t.c.timers, t)
	t.c.fireLocked()
}

// Stop disarms the timer and drops a value it sent and nobody received.
func (t *Timer) Stop() {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	t.stopLocked()
}

func (t *Timer) stopLocked() {
	t.c.timers = slices.DeleteFunc(t.c.timers, func(x *Timer) bool { return x == t })
	select {
	case <-t.ch:
	default:
	}
}
