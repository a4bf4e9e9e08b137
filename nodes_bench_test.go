package main

import (
	"context"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/internal/pgtest"
	"github.com/wgkeeper/wgkeeper/wg"
	"github.com/wgkeeper/wgkeeper/wg/wgtest"
)

// propagationDeletes is how many deletes of each kind one run measures.
const propagationDeletes = 200

// BenchmarkDeletePropagation measures how long a config deleted on one node
// stays on the device of the node that owns it. Two daemons run as two nodes
// on one PostgreSQL database, each with its own userspace device; node B
// owns 2×200 configs. Each delete goes through an API, as a portal's
// would: half on node A (the row goes at once; node B hears of it through
// LISTEN/NOTIFY and takes the peer off its device), half on node B itself,
// the reference, alternating so both meet the same load. The time counted
// runs from the request until B's device, polled through wgctrl, lacks the
// peer; after each delete the run waits for B's disconnect script, so one
// delete's script does not weigh on the next delete.
//
// It reports the median and 99th percentile of both, and the ratio of the
// 99th percentiles (remote over local). Needs root and PostgreSQL
// (WGKEEPER_TEST_POSTGRES); skipped without either.
//
//	go test -run XXX -bench DeletePropagation .
func BenchmarkDeletePropagation(b *testing.B) {
	wgtest.RequireRoot(b)
	db := pgtest.NewDatabase(b)
	a := newNode(b, db, "node-a", "staff-a", "10.71.0.0/24")
	nb := newNode(b, db, "node-b", "staff-b", "10.72.0.0/22")
	runSelf(b, "-config", a.cfgPath, "migrate")
	a.start()
	nb.start()
	dev, err := wg.NewClient()
	if err != nil {
		b.Fatal(err)
	}
	defer dev.Close()

	var remote, local []time.Duration
	for range b.N {
		b.StopTimer()
		keys := make([]wgtypes.Key, 2*propagationDeletes)
		for i := range keys {
			keys[i] = newKey(b).PublicKey()
			nb.mustCreate(fmt.Sprintf("user-%d", i), "staff-b", keys[i])
		}
		b.StartTimer()
		for i := 0; i < len(keys); i += 2 {
			remote = append(remote, goneAfter(b, dev, nb, keys[i], func() { a.mustDelete(keys[i]) }))
			local = append(local, goneAfter(b, dev, nb, keys[i+1], func() { nb.mustDelete(keys[i+1]) }))
		}
	}
	b.StopTimer()
	rp50, rp99 := percentile(remote, 50), percentile(remote, 99)
	lp50, lp99 := percentile(local, 50), percentile(local, 99)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(rp50), "remote-p50-ms")
	b.ReportMetric(ms(rp99), "remote-p99-ms")
	b.ReportMetric(ms(lp50), "local-p50-ms")
	b.ReportMetric(ms(lp99), "local-p99-ms")
	b.ReportMetric(ms(rp99)/math.Max(ms(lp99), 0.001), "p99-remote/local")
	b.Logf("delete on node A -> gone from node B's device: median %v, p99 %v, max %v over %d deletes",
		rp50.Round(10*time.Microsecond), rp99.Round(10*time.Microsecond), slices.Max(remote).Round(10*time.Microsecond), len(remote))
	b.Logf("delete on node B (reference) -> gone from its device: median %v, p99 %v, max %v over %d deletes",
		lp50.Round(10*time.Microsecond), lp99.Round(10*time.Microsecond), slices.Max(local).Round(10*time.Microsecond), len(local))
	b.Logf("remote/local: median %.1f×, p99 %.1f×", ms(rp50)/math.Max(ms(lp50), 0.001), ms(rp99)/math.Max(ms(lp99), 0.001))
	stopDaemon(b, a.proc)
	stopDaemon(b, nb.proc)
}

// goneAfter runs del and returns how long after its start key is no longer
// on n's device; then it waits for n's disconnect script to have run for
// key.
func goneAfter(b *testing.B, dev *wg.Client, n *node, key wgtypes.Key, del func()) time.Duration {
	b.Helper()
	type result struct {
		d   time.Duration
		err error
	}
	res := make(chan result, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	go func() {
		for {
			d, err := dev.Read(ctx, n.srv.Name)
			if err != nil {
				res <- result{err: fmt.Errorf("read %s's device: %w", n.name, err)}
				return
			}
			if _, ok := d.Peer(key); !ok {
				res <- result{d: time.Since(start)}
				return
			}
			select {
			case <-ctx.Done():
				res <- result{err: fmt.Errorf("%s still on %s's device after %v", key, n.name, time.Since(start))}
				return
			case <-time.After(200 * time.Microsecond):
			}
		}
	}()
	del()
	r := <-res
	if r.err != nil {
		b.Fatal(r.err)
	}
	for {
		if c, _, _ := n.runs("D", key); c > 0 {
			break
		}
		if ctx.Err() != nil {
			b.Fatalf("%s's disconnect script never ran for %s", n.name, key)
		}
		time.Sleep(time.Millisecond)
	}
	return r.d
}

// percentile returns the nearest-rank p-th percentile of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(i, 0)]
}
