package wg_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/wgkeeper/wgkeeper/wg"
	"github.com/wgkeeper/wgkeeper/wg/wgtest"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Benchmarks of Apply against a raw wgctrl ConfigureDevice of the same
// peers, measured in the same run on the same in-process wireguard-go
// device. Each reports:
//
//	ratio     Apply time / raw ConfigureDevice time (target <= 1.10)
//	raw-ms    the raw ConfigureDevice time
//	plan-ms   MakePlan time (not in ratio; see ratio+plan)
//
// Times are medians over the iterations (run with -benchtime Nx), so a
// burst of other load on the machine does not decide the ratio.
//
// 1k and 10k peers always; 50k when WGKEEPER_BENCH_50K=1 (slow, ~1.3 GB).
func BenchmarkApply(b *testing.B) {
	sizes := []int{1000, 10000}
	if os.Getenv("WGKEEPER_BENCH_50K") != "" {
		sizes = append(sizes, 50000)
	}
	for _, n := range sizes {
		b.Run(fmt.Sprintf("peers=%d/full-add", n), func(b *testing.B) { benchFullAdd(b, n) })
		b.Run(fmt.Sprintf("peers=%d/churn-1pct", n), func(b *testing.B) { benchChurn(b, n) })
		b.Run(fmt.Sprintf("peers=%d/no-op", n), func(b *testing.B) { benchNoop(b, n) })
	}
}

type benchEnv struct {
	name string
	c    *wg.Client
	raw  *wgctrl.Client
}

func newBenchEnv(b *testing.B) *benchEnv {
	s := wgtest.NewServer(b)
	raw, err := wgctrl.New()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { raw.Close() })
	return &benchEnv{name: s.Name, c: newClient(b), raw: raw}
}

// benchPeers returns n peers with random keys (any 32 bytes are a valid
// public key) and one IPv4 /32 and IPv6 /128 each, like wgkeeper's peers.
func benchPeers(b *testing.B, n, offset int) []wg.Wanted {
	out := make([]wg.Wanted, n)
	for i := range out {
		var k wgtypes.Key
		rand.Read(k[:])
		out[i] = benchPeer(k, i+offset)
	}
	return out
}

func benchPeer(k wgtypes.Key, i int) wg.Wanted {
	return wg.Wanted{PublicKey: k, AllowedIPs: []netip.Prefix{
		netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32),
		netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0, 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)}), 128),
	}}
}

// rawConfig is what one would write by hand with wgctrl for these changes.
func rawConfig(add []wg.Wanted, remove []wgtypes.Key, update []wg.Wanted) wgtypes.Config {
	var cfg wgtypes.Config
	for _, k := range remove {
		cfg.Peers = append(cfg.Peers, wgtypes.PeerConfig{PublicKey: k, Remove: true})
	}
	for _, w := range update {
		ka := w.Keepalive
		cfg.Peers = append(cfg.Peers, wgtypes.PeerConfig{PublicKey: w.PublicKey, UpdateOnly: true, PersistentKeepaliveInterval: &ka})
	}
	for _, w := range add {
		pc := wgtypes.PeerConfig{PublicKey: w.PublicKey, ReplaceAllowedIPs: true}
		for _, p := range w.AllowedIPs {
			pc.AllowedIPs = append(pc.AllowedIPs, net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())})
		}
		cfg.Peers = append(cfg.Peers, pc)
	}
	return cfg
}

func asPeers(ws []wg.Wanted) []wg.Peer {
	out := make([]wg.Peer, len(ws))
	for i, w := range ws {
		out[i] = wg.Peer{PublicKey: w.PublicKey, AllowedIPs: w.AllowedIPs, Keepalive: w.Keepalive}
	}
	return out
}

func keysOf(ws []wg.Wanted) []wgtypes.Key {
	out := make([]wgtypes.Key, len(ws))
	for i, w := range ws {
		out[i] = w.PublicKey
	}
	return out
}

// timed runs f after a GC, so garbage from one side does not bill the other.
func timed(f func()) time.Duration {
	runtime.GC()
	start := time.Now()
	f()
	return time.Since(start)
}

// timedB is timed with the benchmark timer running only around f.
func timedB(b *testing.B, f func()) time.Duration {
	runtime.GC()
	b.StartTimer()
	start := time.Now()
	f()
	d := time.Since(start)
	b.StopTimer()
	return d
}

// durations collects one measurement per iteration.
type durations []time.Duration

func (d *durations) add(x time.Duration) { *d = append(*d, x) }

// median is robust against the odd iteration slowed by other load.
func (d durations) median() time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// report prints medians: ratio = Apply / raw ConfigureDevice.
func report(b *testing.B, ours, raw, plan durations) {
	b.ReportMetric(float64(ours.median())/float64(raw.median()), "ratio")
	b.ReportMetric(float64(ours.median()+plan.median())/float64(raw.median()), "ratio+plan")
	b.ReportMetric(ms(raw.median()), "raw-ms")
	b.ReportMetric(ms(plan.median()), "plan-ms")
	b.ReportMetric(ms(ours.median()), "apply-ms")
}

func benchFullAdd(b *testing.B, n int) {
	e := newBenchEnv(b)
	ctx := context.Background()
	wanted := benchPeers(b, n, 2)
	cfg := rawConfig(wanted, nil, nil)
	keys := keysOf(wanted)
	var ours, raw, plan durations
	b.ResetTimer()
	b.StopTimer()
	for i := 0; i < b.N; i++ {
		runRaw := func() {
			raw.add(timed(func() {
				if err := e.raw.ConfigureDevice(e.name, cfg); err != nil {
					b.Fatal(err)
				}
			}))
			if err := e.c.RemovePeers(ctx, e.name, keys); err != nil {
				b.Fatal(err)
			}
		}
		if i%2 == 0 {
			runRaw()
		}
		var p wg.Plan
		plan.add(timed(func() {
			var err error
			if p, err = wg.MakePlan(wanted, nil, wg.OrphansRemove); err != nil {
				b.Fatal(err)
			}
		}))
		ours.add(timedB(b, func() {
			if cnt, err := e.c.Apply(ctx, e.name, p); err != nil || cnt.Added != n {
				b.Fatal(cnt, err)
			}
		}))
		if err := e.c.RemovePeers(ctx, e.name, keys); err != nil {
			b.Fatal(err)
		}
		if i%2 == 1 {
			runRaw()
		}
	}
	report(b, ours, raw, plan)
}

func benchChurn(b *testing.B, n int) {
	e := newBenchEnv(b)
	ctx := context.Background()
	state := benchPeers(b, n, 2)
	if err := e.raw.ConfigureDevice(e.name, rawConfig(state, nil, nil)); err != nil {
		b.Fatal(err)
	}
	half := max(n/200, 1) // 0.5% removed and 0.5% added
	upd := max(n/1000, 1) // and 0.1% updated (keepalive)
	var ours, raw, plan durations
	b.ResetTimer()
	b.StopTimer()
	for i := 0; i < b.N; i++ {
		// next: drop the first half, update the next upd, add half new.
		// Both sides make exactly this change from state; each is undone
		// (untimed) before the other runs.
		removed := state[:half]
		next := append([]wg.Wanted(nil), state[half:]...)
		var updated []wg.Wanted
		for j := 0; j < upd; j++ {
			next[j].Keepalive = time.Duration(i%60+1) * time.Second
			updated = append(updated, next[j])
		}
		added := benchPeers(b, half, n+2+i*half)
		next = append(next, added...)
		undo := rawConfig(removed, keysOf(added), state[half:half+upd])
		forward := rawConfig(added, keysOf(removed), updated)

		runRaw := func() {
			raw.add(timed(func() {
				if err := e.raw.ConfigureDevice(e.name, forward); err != nil {
					b.Fatal(err)
				}
			}))
			if err := e.raw.ConfigureDevice(e.name, undo); err != nil {
				b.Fatal(err)
			}
		}
		if i%2 == 0 {
			runRaw()
		}
		var p wg.Plan
		plan.add(timed(func() {
			var err error
			if p, err = wg.MakePlan(next, asPeers(state), wg.OrphansRemove); err != nil {
				b.Fatal(err)
			}
		}))
		ours.add(timedB(b, func() {
			cnt, err := e.c.Apply(ctx, e.name, p)
			if err != nil || cnt != (wg.Counts{Added: half, Updated: upd, Removed: half}) {
				b.Fatal(cnt, err)
			}
		}))
		if i%2 == 1 {
			if err := e.raw.ConfigureDevice(e.name, undo); err != nil {
				b.Fatal(err)
			}
			runRaw()
			if err := e.raw.ConfigureDevice(e.name, forward); err != nil {
				b.Fatal(err)
			}
		}
		state = next
	}
	report(b, ours, raw, plan)
}

func benchNoop(b *testing.B, n int) {
	e := newBenchEnv(b)
	ctx := context.Background()
	state := benchPeers(b, n, 2)
	cfg := rawConfig(state, nil, nil)
	if err := e.raw.ConfigureDevice(e.name, cfg); err != nil {
		b.Fatal(err)
	}
	var ours, raw, read durations
	var noopWrites uint64
	b.ResetTimer()
	b.StopTimer()
	for i := 0; i < b.N; i++ {
		var d *wg.Device
		read.add(timed(func() {
			var err error
			if d, err = e.c.Read(ctx, e.name); err != nil {
				b.Fatal(err)
			}
		}))
		writes := e.c.Stats().Writes
		ours.add(timedB(b, func() {
			p, err := wg.MakePlan(state, d.Peers, wg.OrphansRemove)
			if err != nil {
				b.Fatal(err)
			}
			if cnt, err := e.c.Apply(ctx, e.name, p); err != nil || cnt != (wg.Counts{}) {
				b.Fatal(cnt, err)
			}
		}))
		noopWrites += e.c.Stats().Writes - writes
		if noopWrites != 0 {
			b.Fatalf("no-op plan wrote to the device %d times", noopWrites)
		}
		// Raw: re-send every unchanged peer, as `wg syncconf` does.
		raw.add(timed(func() {
			if err := e.raw.ConfigureDevice(e.name, cfg); err != nil {
				b.Fatal(err)
			}
		}))
	}
	b.ReportMetric(float64(ours.median())/float64(raw.median()), "ratio")
	b.ReportMetric(float64(ours.median()+read.median())/float64(raw.median()), "ratio+read")
	b.ReportMetric(ms(raw.median()), "raw-ms")
	b.ReportMetric(ms(read.median()), "read-ms")
	b.ReportMetric(ms(ours.median()), "plan+apply-ms")
	b.ReportMetric(float64(noopWrites)/float64(b.N), "writes/op")
}
