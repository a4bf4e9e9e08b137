package fakeclock

import (
	"testing"
	"time"
)

func TestClock(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	c := New(t0)
	if !c.Now().Equal(t0) {
		t.Fatal(c.Now())
	}
	c.Advance(90 * time.Second)
	if want := t0.Add(90 * time.Second); !c.Now().Equal(want) {
		t.Fatalf("after Advance: %v, want %v", c.Now(), want)
	}
	c.Set(t0)
	if !c.Now().Equal(t0) {
		t.Fatalf("after Set: %v", c.Now())
	}
}

func TestTimer(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	c := New(t0)
	tm := c.NewTimer(10 * time.Second)
	if got := c.Timers(); len(got) != 1 || !got[0].Equal(t0.Add(10*time.Second)) {
		t.Fatalf("armed timers %v, want one at +10s", got)
	}
	c.Advance(10*time.Second - time.Nanosecond)
	select {
	case v := <-tm.C():
		t.Fatalf("fired 1ns early, at %v", v)
	default:
	}
	c.Advance(time.Nanosecond)
	select {
	case v := <-tm.C():
		if !v.Equal(t0.Add(10 * time.Second)) {
			t.Fatalf("fired with %v", v)
		}
	default:
		t.Fatal("did not fire at its deadline")
	}
	if got := c.Timers(); len(got) != 0 {
		t.Fatalf("a fired timer is still armed: %v", got)
	}

	// A fired value nobody received is dropped by Reset and Stop.
	tm.Reset(time.Second)
	c.Advance(time.Second)
	tm.Reset(time.Minute)
	select {
	case v := <-tm.C():
		t.Fatalf("stale value %v after Reset", v)
	default:
	}
	tm.Stop()
	c.Advance(time.Hour)
	select {
	case v := <-tm.C():
		t.Fatalf("a stopped timer fired at %v", v)
	default:
	}
	tm.Reset(0)
	select {
	case <-tm.C():
	default:
		t.Fatal("Reset(0) did not fire at once")
	}
}
