package enginetest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/wgkeeper/wgkeeper/hooks"
)

// Script stands in for the hook script: it gets the run's environment
// (PATH and the VPN_* variables, as hooks.Runner passes them) and a
// context that ends at the run's timeout, and returns how the run ended.
type Script func(ctx context.Context, env map[string]string) Exit

// Exit is how a run of a Script ended.
type Exit struct {
	Code   int    // exit status; 0 = accepted
	Stderr string // what the script wrote on stderr
}

// Run is one run of the Script, as recorded in the transcript.
type Run struct {
	Env    map[string]string // PATH and the VPN_* variables
	Result hooks.Result
}

// RunnerConfig configures a Runner; zero values take hooks' defaults.
type RunnerConfig struct {
	// Script is called for every run; nil means no script is configured
	// (RunWith then reports Ran false and records nothing).
	Script      Script
	Timeout     time.Duration
	Concurrency int
}

// Runner runs a Script in place of the hook script, with hooks.Runner's
// contract: Concurrency slots shared by every caller, RunOptions.QueueTimeout
// (then an error matching hooks.ErrBusy), RunOptions.Starting, the timeout
// (the Script's context ends; a Script that returns after it counts as timed
// out), stderr kept up to hooks.OutputLimit. It records every run that started. It is safe for concurrent use.
type Runner struct {
	script  Script
	timeout time.Duration
	sem     chan struct{}

	mu   sync.Mutex // guards runs
	runs []Run
}

// NewRunner returns a Runner.
func NewRunner(c RunnerConfig) *Runner {
	if c.Timeout <= 0 {
		c.Timeout = hooks.DefaultTimeout
	}
	if c.Concurrency <= 0 {
		c.Concurrency = hooks.DefaultConcurrency
	}
	return &Runner{script: c.Script, timeout: c.Timeout, sem: make(chan struct{}, c.Concurrency)}
}

// Runs returns the transcript: every run that started, in the order they
// ended.
func (r *Runner) Runs() []Run {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Run, len(r.runs))
	for i, run := range r.runs {
		out[i] = Run{Env: maps.Clone(run.Env), Result: run.Result}
	}
	return out
}

// RunWith runs the Script once for the event v, as hooks.Runner.RunWith.
func (r *Runner) RunWith(ctx context.Context, v hooks.Vars, o hooks.RunOptions) hooks.Result {
	if r.script == nil {
		return hooks.Result{}
	}
	vpn, err := v.Env()
	if err != nil {
		return hooks.Result{Ran: true, ExitCode: -1, Err: err}
	}
	env := map[string]string{"PATH": os.Getenv("PATH")}
	if env["PATH"] == "" {
		env["PATH"] = hooks.DefaultPath
	}
	for _, kv := range vpn {
		k, val, _ := strings.Cut(kv, "=")
		env[k] = val
	}
	if err := hooks.AcquireSlot(ctx, r.sem, o.QueueTimeout); err != nil {
		return hooks.Result{Ran: true, ExitCode: -1, TimedOut: errors.Is(err, context.DeadlineExceeded),
			Err: fmt.Errorf("wait for a hook slot for event %d: %w", v.EventID, err)}
	}
	defer func() { <-r.sem }()
	if o.Starting != nil {
		if err := o.Starting(); err != nil {
			return hooks.Result{Ran: true, ExitCode: -1, Err: fmt.Errorf("start hook script for event %d: %w", v.EventID, err)}
		}
	}
	if err := ctx.Err(); err != nil {
		return hooks.Result{Ran: true, ExitCode: -1, Err: fmt.Errorf("start hook script for event %d: %w", v.EventID, err)}
	}
	rctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	start := time.Now()
	exit := r.script(rctx, maps.Clone(env))
	res := hooks.Result{Ran: true, Started: true, ExitCode: exit.Code, Duration: time.Since(start), Stderr: []byte(exit.Stderr)}
	if n := len(res.Stderr); n > hooks.OutputLimit { // kept as hooks.Runner keeps it
		res.Stderr, res.StderrDropped = res.Stderr[:hooks.OutputLimit], int64(n-hooks.OutputLimit)
	}
	if rctx.Err() != nil {
		res.ExitCode, res.TimedOut = -1, true
		if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			res.TimedOut, res.Err = false, fmt.Errorf("hook script for event %d: %w", v.EventID, ctx.Err())
		}
	}
	r.mu.Lock()
	r.runs = append(r.runs, Run{Env: env, Result: res})
	r.mu.Unlock()
	return res
}

// Sleep waits d or until ctx ends; a Script uses it to take time the way
// a script's `sleep` would, and reports whether the whole d passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
