package reconcile

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/wgkeeper/wgkeeper/config"
	"github.com/wgkeeper/wgkeeper/hooks"
)

// graceRunner is a Runner that reports its kill grace, as *hooks.Runner does.
type graceRunner struct{ grace time.Duration }

func (graceRunner) RunWith(context.Context, hooks.Vars, hooks.RunOptions) hooks.Result {
	return hooks.Result{}
}
func (r graceRunner) KillGrace() time.Duration { return r.grace }

// silentRunner does not say its kill grace.
type silentRunner struct{}

func (silentRunner) RunWith(context.Context, hooks.Vars, hooks.RunOptions) hooks.Result {
	return hooks.Result{}
}

// The bounds a script run must fit in (the stale age, the delivery's slot
// wait) use the grace of the runner in force, and never shrink below the
// longest grace a runner of this engine ever had.
func TestKillGraceComesFromTheRunner(t *testing.T) {
	cfg := &config.Config{Database: filepath.Join(t.TempDir(), "wgkeeper.db")}
	newEngine := func(r Runner) *Engine {
		e, err := New(Options{Config: cfg, Store: struct{ Store }{}, Device: struct{ Device }{}, Runner: r})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	if g := newEngine(silentRunner{}).killGrace(); g != hooks.DefaultKillGrace {
		t.Errorf("runner without KillGrace: grace %s, want hooks' default %s", g, hooks.DefaultKillGrace)
	}
	hr, err := hooks.New(hooks.Config{Script: "/bin/true", KillGrace: 7 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if g := newEngine(hr).killGrace(); g != 7*time.Second {
		t.Errorf("hooks.Runner with a 7s grace: grace %s", g)
	}

	e := newEngine(graceRunner{grace: 40 * time.Second})
	timeout, queue := hookTimeout(cfg), queueTimeout(cfg)
	want := startBudget(queue) + hooks.StartLimit + timeout + 2*40*time.Second + 2*time.Second
	if got := e.staleAge(); got != want {
		t.Errorf("stale age with a 40s grace = %s, want %s", got, want)
	}
	e.SetConfig(cfg, graceRunner{grace: time.Second})
	if got := e.staleAge(); got != want {
		t.Errorf("stale age after a reload to a 1s grace = %s, want %s (a run of the old runner may still be going)", got, want)
	}
}
