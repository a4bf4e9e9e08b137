package postgres

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/wgkeeper/wgkeeper/internal/pgtest"
	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/store/sqlite"
)

// createRun creates n configs (InsertPending then Activate, as a create
// does around its script) with 8 concurrent clients, each with a user of
// its own in one /16 pool, and returns the rate and the 99th percentile.
func createRun(b *testing.B, s store.Store, first, n int) (perSec float64, p99 time.Duration) {
	b.Helper()
	ctx := context.Background()
	const clients = 8
	lat := make([]time.Duration, n)
	var wg sync.WaitGroup
	start := time.Now()
	for c := range clients {
		wg.Go(func() {
			for i := c; i < n; i += clients {
				t0 := time.Now()
				p, ev, err := s.InsertPending(ctx, store.NewPeer{PublicKey: testKey(first + i + 1), Interface: "wg0", ProfileID: "staff",
					UserID: fmt.Sprintf("user%d", (first+i)%5000), IPv4Range: netip.MustParsePrefix("10.40.0.0/16"), MaxPerUser: 10})
				if err == nil {
					err = s.Activate(ctx, p.PublicKey, ev.ID)
				}
				if err != nil {
					b.Error(err)
					return
				}
				lat[i] = time.Since(t0)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(lat)
	return float64(n) / elapsed.Seconds(), lat[n*99/100]
}

// BenchmarkCreatesVsSQLite measures store creates (8 clients) on
// PostgreSQL and on SQLite in one run, with an empty store and with 10k
// configs, and prints the ratios the multi-node mode is held to:
// PostgreSQL's rate against SQLite's, and its p99 at 10k against at 0.
// The script a real create runs is not part of it (it costs the same on
// both). Run: go test -run XXX -bench CreatesVsSQLite ./store/postgres/
func BenchmarkCreatesVsSQLite(b *testing.B) {
	const batch, prefill = 2000, 10000
	type result struct {
		rate0, rate10k float64
		p990, p9910k   time.Duration
	}
	measure := func(s store.Store) result {
		var r result
		r.rate0, r.p990 = createRun(b, s, 0, batch)
		createRun(b, s, batch, prefill-batch)
		r.rate10k, r.p9910k = createRun(b, s, prefill, batch)
		return r
	}
	for range b.N {
		pg := open(b, pgtest.NewDatabase(b), Options{Create: true})
		rp := measure(pg)
		pg.Close()
		lite, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "bench.db"), sqlite.Options{Create: true})
		if err != nil {
			b.Fatal(err)
		}
		rs := measure(lite)
		lite.Close()
		b.Logf("creates/s at 0: PostgreSQL %.0f, SQLite %.0f (ratio %.2f); at 10k: PostgreSQL %.0f, SQLite %.0f (ratio %.2f)",
			rp.rate0, rs.rate0, rp.rate0/rs.rate0, rp.rate10k, rs.rate10k, rp.rate10k/rs.rate10k)
		b.Logf("p99 PostgreSQL: %v at 0, %v at 10k (ratio %.2f); SQLite: %v at 0, %v at 10k (ratio %.2f)",
			rp.p990, rp.p9910k, float64(rp.p9910k)/float64(rp.p990), rs.p990, rs.p9910k, float64(rs.p9910k)/float64(rs.p990))
		b.ReportMetric(rp.rate10k/rs.rate10k, "pg/sqlite-rate-10k")
		b.ReportMetric(float64(rp.p9910k)/float64(rp.p990), "pg-p99-10k/0")
	}
}
