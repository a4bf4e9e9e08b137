package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/store"
)

var (
	bench4 = netip.MustParsePrefix("10.64.0.0/14")
	bench6 = netip.MustParsePrefix("fd64::/64")
)

// fillPool stores n active peers of profile "bench" with their done C events
// in one transaction, at indexes 0..n-1 except those where hole(i) is true.
// The allocator's triggers see them as they would see InsertPending's rows.
func fillPool(tb testing.TB, s *Store, n int, hole func(int) bool) {
	tb.Helper()
	ctx := context.Background()
	err := s.write(ctx, func(tx *sql.Tx) error {
		ins, err := tx.PrepareContext(ctx, `INSERT INTO peers (public_key, interface, profile_id, user_id, ip_index,
			ip_four, ip_six, state, created_at) VALUES (?, 'wg0', 'bench', ?, ?, ?, ?, 'active', 1)`)
		if err != nil {
			return err
		}
		defer ins.Close()
		ev, err := tx.PrepareContext(ctx, `INSERT INTO events (event, reason, public_key, interface, profile_id, user_id,
			ip_four, ip_six, created_at, status, attempts, done_at) VALUES ('C', 'created', ?, 'wg0', 'bench', ?, ?, ?, 1, 'done', 1, 1)`)
		if err != nil {
			return err
		}
		defer ev.Close()
		for i := range n {
			if hole != nil && hole(i) {
				continue
			}
			key := testKey(1_000_000 + i).String()
			user := fmt.Sprintf("filler%d", i%5000)
			v4, v6 := store.HostAddr(bench4, int64(i)).String(), store.HostAddr(bench6, int64(i)).String()
			if _, err := ins.ExecContext(ctx, key, user, i, v4, v6); err != nil {
				return err
			}
			if _, err := ev.ExecContext(ctx, key, user, v4, v6); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("fill pool: %v", err)
	}
}

// BenchmarkAllocate measures InsertPending (limit check, lowest-free-index
// allocation, peer and C event rows, one immediate transaction) against an
// empty profile and against one holding 50k peers, and reports the ratio:
// allocation must not grow with the number of peers. Each timed insert is
// undone untimed, so the pool keeps its size; the index comes from the
// high-water mark on the first round and from the free list afterwards.
func BenchmarkAllocate(b *testing.B) {
	const big = 50_000
	ctx := context.Background()
	cases := []struct {
		name  string
		peers int
		hole  func(int) bool
	}{
		{"peers=0", 0, nil},
		{fmt.Sprintf("peers=%d", big), big, nil},
		// Every 97th index free: allocation takes the lowest of ~500 holes.
		{fmt.Sprintf("peers=%d-holes", big), big + big/96, func(i int) bool { return i%97 == 50 }},
	}
	nsPerOp := map[string]float64{}
	for _, c := range cases {
		// Built once per case (every b.N round reuses it), owned by the
		// parent benchmark so that it outlives the rounds.
		s := openAt(b, dbPath(b), nil)
		fillPool(b, s, c.peers, c.hole)
		b.Run(c.name, func(b *testing.B) {
			var free []int64
			if c.hole != nil {
				for i := range c.peers {
					if c.hole(i) {
						free = append(free, int64(i))
					}
				}
			}
			b.ResetTimer()
			for i := range b.N {
				np := store.NewPeer{
					PublicKey:  testKey(i + 1),
					Interface:  "wg0",
					ProfileID:  "bench",
					UserID:     fmt.Sprintf("user%d", i%100),
					IPv4Range:  bench4,
					IPv6Range:  bench6,
					MaxPerUser: 3,
				}
				p, _, err := s.InsertPending(ctx, np)
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				want := store.HostAddr(bench4, int64(c.peers))
				if len(free) > 0 {
					want = store.HostAddr(bench4, free[0])
				}
				if p.IPv4 != want {
					b.Fatalf("allocated %s, want the lowest free %s", p.IPv4, want)
				}
				if _, err := s.DeletePeers(ctx, []wgtypes.Key{p.PublicKey}, store.ReasonDeleted, "", time.Time{}); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.StopTimer()
			nsPerOp[c.name] = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
			if base := nsPerOp["peers=0"]; c.peers > 0 && base > 0 {
				b.ReportMetric(nsPerOp[c.name]/base, "x-vs-empty")
			}
		})
	}
	base := nsPerOp["peers=0"]
	for _, c := range cases[1:] {
		if base > 0 && nsPerOp[c.name] > 0 {
			b.Logf("allocate: %.0f ns/op with 0 peers, %.0f ns/op with %s: ratio %.2f",
				base, nsPerOp[c.name], c.name, nsPerOp[c.name]/base)
		}
	}
}

// gapScanQuery is the free-list-less way to find the lowest free index: scan
// the profile's indexes for the first one whose successor is missing. It is
// kept here only as the reference BenchmarkLowestFreeIndex compares the free
// list with; it is O(n) in the profile's peers.
const gapScanQuery = `SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM peers WHERE interface = ?1 AND profile_id = ?2 AND ip_index = 0)
	UNION ALL
	SELECT p.ip_index + 1 FROM peers p
	 WHERE p.interface = ?1 AND p.profile_id = ?2
	   AND NOT EXISTS (SELECT 1 FROM peers q WHERE q.interface = ?1 AND q.profile_id = ?2 AND q.ip_index = p.ip_index + 1)
	ORDER BY 1 LIMIT 1`

// BenchmarkLowestFreeIndex times the allocation step alone — the store's
// free-list lookup and, for reference, a gap scan over the peers — at 0 and
// 50k peers, and logs each one's growth ratio.
func BenchmarkLowestFreeIndex(b *testing.B) {
	const big = 50_000
	ctx := context.Background()
	stores := map[int]*Store{}
	for _, n := range []int{0, big} {
		stores[n] = openAt(b, dbPath(b), nil)
		fillPool(b, stores[n], n, nil)
	}
	nsPerOp := map[string]float64{}
	for _, q := range []struct {
		name, sql string
		args      []any
	}{{"freelist", poolQuery, []any{"wg0", "bench", 0}}, {"gapscan", gapScanQuery, []any{"wg0", "bench"}}} {
		for _, n := range []int{0, big} {
			name := fmt.Sprintf("%s/peers=%d", q.name, n)
			b.Run(name, func(b *testing.B) {
				s := stores[n]
				for b.Loop() {
					var idx int64
					if err := s.db.QueryRowContext(ctx, q.sql, q.args...).Scan(&idx); err != nil {
						b.Fatal(err)
					}
					if idx != int64(n) {
						b.Fatalf("lowest free index %d, want %d", idx, n)
					}
				}
				nsPerOp[name] = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
				if base := nsPerOp[q.name+"/peers=0"]; n > 0 && base > 0 {
					b.ReportMetric(nsPerOp[name]/base, "x-vs-empty")
				}
			})
		}
		if base, at := nsPerOp[q.name+"/peers=0"], nsPerOp[fmt.Sprintf("%s/peers=%d", q.name, big)]; base > 0 {
			b.Logf("%s: %.0f ns/op with 0 peers, %.0f ns/op with %d: ratio %.2f", q.name, base, at, big, at/base)
		}
	}
}

// BenchmarkOpenQuickCheck measures what PRAGMA quick_check adds to the
// daemon's start on a database of 100k configs with their C events,
// against a plain Open of the same file in the same run.
func BenchmarkOpenQuickCheck(b *testing.B) {
	ctx := context.Background()
	path := filepath.Join(b.TempDir(), "wgkeeper.db")
	s, err := Open(ctx, path, Options{Create: true})
	if err != nil {
		b.Fatal(err)
	}
	fillPool(b, s, 100_000, nil)
	s.Close()
	open := func(check bool) time.Duration {
		start := time.Now()
		s, err := Open(ctx, path, Options{QuickCheck: check})
		if err != nil {
			b.Fatal(err)
		}
		d := time.Since(start)
		s.Close()
		return d
	}
	open(true) // warm the page cache
	var plain, checked time.Duration
	b.ResetTimer()
	for range b.N {
		plain += open(false)
		checked += open(true)
	}
	b.ReportMetric(float64(checked.Microseconds())/float64(b.N)/1000, "ms/open-checked")
	b.ReportMetric(float64(plain.Microseconds())/float64(b.N)/1000, "ms/open-plain")
	b.ReportMetric(float64(checked)/float64(plain), "x-plain")
}
