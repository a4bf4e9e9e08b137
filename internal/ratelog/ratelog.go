// Package ratelog keeps a failing loop from flooding the log: a slog
// handler that lets each distinct warning or error through once per
// period, and says how many repeats it held back when it lets the next one
// through. Records below slog.LevelWarn pass untouched.
//
// It does not decide when a loop retries (that is the loop's back-off); it
// only bounds what repeated failures cost in log lines.
package ratelog

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// Handler wraps another slog.Handler. Two records are the same when their
// level, message and attributes (those of the record and those added with
// WithAttrs/WithGroup) are equal; the time is not compared. It is safe for
// concurrent use; handlers derived with WithAttrs and WithGroup share one
// memory.
type Handler struct {
	next   slog.Handler
	prefix string // attributes and groups added by WithAttrs/WithGroup, as text
	st     *state
}

// state is what every handler derived from one New shares.
type state struct {
	period time.Duration
	now    func() time.Time
	mu     sync.Mutex        // guards seen
	seen   map[string]*entry // record key -> when last let through
}

type entry struct {
	last       time.Time
	suppressed int // repeats held back since last
}

// New returns a Handler that passes each distinct warning or error to next
// at most once per period (a minute when period <= 0). now is the clock;
// nil means time.Now.
func New(next slog.Handler, period time.Duration, now func() time.Time) *Handler {
	if period <= 0 {
		period = time.Minute
	}
	if now == nil {
		now = time.Now
	}
	return &Handler{next: next, st: &state{period: period, now: now, seen: map[string]*entry{}}}
}

// Enabled reports whether next handles the level.
func (h *Handler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

// Handle passes r on unless the same record went through less than a
// period ago. The first record let through after repeats were held back
// carries "suppressed": how many.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn {
		return h.next.Handle(ctx, r)
	}
	key := h.key(r)
	now := h.st.now()
	h.st.mu.Lock()
	e := h.st.seen[key]
	if e != nil && now.Sub(e.last) < h.st.period {
		e.suppressed++
		h.st.mu.Unlock()
		return nil
	}
	suppressed := 0
	if e == nil {
		e = &entry{}
		h.st.seen[key] = e
		h.st.forget(now)
	} else {
		suppressed = e.suppressed
	}
	e.last, e.suppressed = now, 0
	h.st.mu.Unlock()
	if suppressed > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int("suppressed", suppressed))
	}
	return h.next.Handle(ctx, r)
}

// forget drops entries quiet for a period, which then say nothing about
// repeats; it keeps the map as small as the set of recent errors. Caller
// holds mu.
func (st *state) forget(now time.Time) {
	if len(st.seen) < 64 {
		return
	}
	for k, e := range st.seen {
		if now.Sub(e.last) >= st.period && e.suppressed == 0 {
			delete(st.seen, k)
		}
	}
}

func (h *Handler) key(r slog.Record) string {
	var b strings.Builder
	b.WriteString(r.Level.String())
	b.WriteByte(0)
	b.WriteString(r.Message)
	b.WriteByte(0)
	b.WriteString(h.prefix)
	r.Attrs(func(a slog.Attr) bool {
		b.WriteString(a.String())
		b.WriteByte(0)
		return true
	})
	return b.String()
}

// WithAttrs returns a Handler sharing this one's memory.
func (h *Handler) WithAttrs(as []slog.Attr) slog.Handler {
	var b strings.Builder
	b.WriteString(h.prefix)
	for _, a := range as {
		b.WriteString(a.String())
		b.WriteByte(0)
	}
	return &Handler{next: h.next.WithAttrs(as), prefix: b.String(), st: h.st}
}

// WithGroup returns a Handler sharing this one's memory.
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{next: h.next.WithGroup(name), prefix: h.prefix + "[" + name + "]", st: h.st}
}
