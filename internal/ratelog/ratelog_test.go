package ratelog

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wgkeeper/wgkeeper/internal/fakeclock"
)

func newLogger(t *testing.T) (*slog.Logger, *bytes.Buffer, *fakeclock.Clock) {
	t.Helper()
	var buf bytes.Buffer
	clock := fakeclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	h := New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}), time.Minute, clock.Now)
	return slog.New(h), &buf, clock
}

func lines(buf *bytes.Buffer) []string {
	s := strings.TrimSpace(buf.String())
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// A loop failing with the same error 10 000 times in a minute logs one
// line; the next line after the minute says how many were held back.
func TestRepeatsOncePerPeriod(t *testing.T) {
	log, buf, clock := newLogger(t)
	err := errors.New("database unavailable: disk full")
	for range 10000 {
		log.Error("expire", "err", err)
	}
	if got := lines(buf); len(got) != 1 {
		t.Fatalf("%d lines for one repeated error, want 1:\n%s", len(got), buf)
	}
	clock.Advance(59 * time.Second)
	log.Error("expire", "err", err)
	if got := lines(buf); len(got) != 1 {
		t.Fatalf("logged again within the minute:\n%s", buf)
	}
	clock.Advance(time.Second)
	log.Error("expire", "err", err)
	got := lines(buf)
	if len(got) != 2 || !strings.Contains(got[1], "suppressed=10000") {
		t.Fatalf("after a minute want a second line with suppressed=10000:\n%s", buf)
	}
	clock.Advance(time.Minute)
	log.Error("expire", "err", err)
	if got := lines(buf); len(got) != 3 || strings.Contains(got[2], "suppressed") {
		t.Fatalf("nothing held back since; want a plain line:\n%s", buf)
	}
}

// Distinct errors, messages, attributes and derived loggers are counted
// apart; info and debug lines are never held back.
func TestDistinct(t *testing.T) {
	log, buf, _ := newLogger(t)
	log.Error("expire", "err", errors.New("disk full"))
	log.Error("expire", "err", errors.New("read-only database"))
	log.Error("deliver", "err", errors.New("disk full"))
	log.Warn("expire", "err", errors.New("disk full")) // another level
	log.Error("reconcile", "iface", "wg0", "err", "no such device")
	log.Error("reconcile", "iface", "wg1", "err", "no such device")
	log.With("iface", "wg2").Error("reconcile", "err", "no such device")
	log.WithGroup("g").Error("reconcile", "iface", "wg0", "err", "no such device")
	for range 3 {
		log.Info("api request", "status", 201)
		log.Debug("tick")
	}
	if got := lines(buf); len(got) != 14 {
		t.Fatalf("%d lines, want 8 distinct errors + 6 info/debug:\n%s", len(got), buf)
	}
	// And each is now held back.
	log.With("iface", "wg2").Error("reconcile", "err", "no such device")
	log.Error("expire", "err", errors.New("read-only database"))
	if got := lines(buf); len(got) != 14 {
		t.Fatalf("repeats got through:\n%s", buf)
	}
}

// Concurrent loggers agree: one line per distinct error.
func TestConcurrent(t *testing.T) {
	log, buf, _ := newLogger(t)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := log.With("worker", i%2)
			for range 500 {
				l.Error("step", "err", "disk full")
			}
		}()
	}
	wg.Wait()
	if got := lines(buf); len(got) != 2 {
		t.Fatalf("%d lines, want 2 (one per distinct worker attr):\n%s", len(got), buf)
	}
}

// Memory stays bounded by recent errors: old quiet entries are forgotten.
func TestForgets(t *testing.T) {
	log, _, clock := newLogger(t)
	h := log.Handler().(*Handler)
	for i := range 1000 {
		log.Error("step", "n", i)
		clock.Advance(time.Second)
	}
	h.st.mu.Lock()
	n := len(h.st.seen)
	h.st.mu.Unlock()
	if n > 200 {
		t.Fatalf("%d entries kept for 1000 errors spread over 1000 s, want about a minute's worth", n)
	}
}
