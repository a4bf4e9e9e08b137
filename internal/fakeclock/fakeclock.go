// Package fakeclock is a settable clock for tests of code that takes a
// `Now func() time.Time`, so expiry, backoff and leases are tested without
// sleeping. It is safe for concurrent use.
package fakeclock

import (
	"sync"
	"time"
)

// Clock is a fake clock; its zero value reads as the zero time.
type Clock struct {
	mu sync.Mutex // guards t
	t  time.Time
}

// New returns a clock reading t.
func New(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Set moves the clock to t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// Advance moves the clock forward by d and returns the new time.
func (c *Clock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}
