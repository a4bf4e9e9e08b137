package hooks

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkRun measures throughput and latency of a trivial script run by
// the Runner at concurrency 1, 4 and 8, beside a baseline of the same script
// started by a minimal exec.Command loop at the same concurrency, measured in
// the same run (in alternating chunks, to cancel drift). ratio is the Runner's rate
// over the baseline's.
func BenchmarkRun(b *testing.B) {
	script := writeScript(b, b.TempDir(), "true.sh", "#!/bin/sh\nexit 0\n")
	for _, c := range []int{1, 4, 8} {
		b.Run(fmt.Sprintf("concurrency=%d", c), func(b *testing.B) {
			r := newRunner(b, Config{Script: script, Concurrency: c})
			v := connectVars()
			runner := func() error {
				if res := r.Run(context.Background(), v); !res.OK() {
					return res.Failure()
				}
				return nil
			}
			baseline := func() error { return exec.Command(script).Run() }

			// Alternate short chunks of both, so that both see the same
			// load from anything else running on the machine.
			n := max(1, b.N)
			chunk := max(c, min(100, n/10))
			var run, base loadResult
			for done := 0; done < n; done += chunk {
				k := min(chunk, n-done)
				base.add(load(b, k, c, baseline))
				run.add(load(b, k, c, runner))
			}

			ratio := run.rate() / base.rate()
			b.ReportMetric(run.rate(), "runs/s")
			b.ReportMetric(run.pct(50), "p50-ms")
			b.ReportMetric(run.pct(99), "p99-ms")
			b.ReportMetric(base.rate(), "base-runs/s")
			b.ReportMetric(base.pct(50), "base-p50-ms")
			b.ReportMetric(base.pct(99), "base-p99-ms")
			b.ReportMetric(ratio, "ratio")
			b.Logf("concurrency %d, %d runs each: runner %.0f/s p50 %.2fms p99 %.2fms | exec.Command %.0f/s p50 %.2fms p99 %.2fms | ratio %.2f",
				c, len(run.lat), run.rate(), run.pct(50), run.pct(99), base.rate(), base.pct(50), base.pct(99), ratio)
		})
	}
}

type loadResult struct {
	elapsed time.Duration
	lat     []time.Duration
}

func (l *loadResult) add(o loadResult) {
	l.elapsed += o.elapsed
	l.lat = append(l.lat, o.lat...)
}

func (l *loadResult) rate() float64 { return float64(len(l.lat)) / l.elapsed.Seconds() }

// pct returns the p-th percentile latency in milliseconds.
func (l *loadResult) pct(p int) float64 {
	s := slices.Clone(l.lat)
	slices.Sort(s)
	i := min(len(s)-1, (len(s)*p+99)/100-1)
	return float64(s[max(0, i)].Microseconds()) / 1000
}

// load runs fn n times from c goroutines and records each call's latency.
func load(b *testing.B, n, c int, fn func() error) loadResult {
	var next atomic.Int64
	lat := make([]time.Duration, n)
	var wg sync.WaitGroup
	var once sync.Once
	var firstErr error
	start := time.Now()
	for range c {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				t0 := time.Now()
				if err := fn(); err != nil {
					once.Do(func() { firstErr = err })
				}
				lat[i] = time.Since(t0)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	return loadResult{elapsed: elapsed, lat: lat}
}
