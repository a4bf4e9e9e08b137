package reconcile

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/hooks"
	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/wg"
	"github.com/wgkeeper/wgkeeper/wg/wgtest"
)

// seed puts n active configs (expiring at exp; zero = never) in the store
// and on the device, without running scripts.
func (h *harness) seed(tb testing.TB, n int, exp time.Time) []store.Peer {
	tb.Helper()
	prof, _ := h.cfg.Profile("staff")
	iface := prof.Interface
	var add []wg.Wanted
	var out []store.Peer
	for i := 0; i < n; i++ {
		k, _ := wgtypes.GeneratePrivateKey()
		p, ev, err := h.st.InsertPending(h.ctx, store.NewPeer{
			PublicKey: k.PublicKey(), Interface: iface, ProfileID: "staff", UserID: "bench",
			ExpiresAt: exp, IPv4Range: prof.IPv4Range, IPv6Range: prof.IPv6Range,
		})
		if err != nil {
			tb.Fatal(err)
		}
		if err := h.st.Activate(h.ctx, p.PublicKey, ev.ID); err != nil {
			tb.Fatal(err)
		}
		add = append(add, wanted(p))
		out = append(out, p)
	}
	if _, err := h.dev.Apply(h.ctx, iface, wg.Plan{Add: add}); err != nil {
		tb.Fatal(err)
	}
	return out
}

// BenchmarkHousekeepingNoop10k: a housekeeping run on a 10k-peer interface
// with nothing to do, against one raw wgctrl Device() read of the same
// device, measured alternately in the same run. Target ratio <= 1.5.
func BenchmarkHousekeepingNoop10k(b *testing.B) {
	h := newHarness(b, harnessOpts{real: true, maxPerUser: 100000})
	h.seed(b, 10000, time.Time{})
	raw, err := wgctrl.New()
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Close()
	if s, err := h.eng.Housekeeping(h.ctx, true); err != nil || !s.Reports[0].Plan.Empty() {
		b.Fatalf("warm-up: %+v %v", s, err)
	}
	var rawNs, hkNs time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		d, err := raw.Device(h.srv.Name)
		rawNs += time.Since(t0)
		if err != nil || len(d.Peers) != 10000 {
			b.Fatal(err)
		}
		t0 = time.Now()
		s, err := h.eng.Housekeeping(h.ctx, true)
		hkNs += time.Since(t0)
		if err != nil || !s.Reports[0].Plan.Empty() {
			b.Fatalf("%+v %v", s, err)
		}
	}
	b.ReportMetric(float64(rawNs.Milliseconds())/float64(b.N), "raw-read-ms")
	b.ReportMetric(float64(hkNs.Milliseconds())/float64(b.N), "housekeeping-ms")
	b.ReportMetric(float64(hkNs)/float64(rawNs), "ratio")
}

// timedDevice measures the time spent in device writes.
type timedDevice struct {
	Device
	apply atomic.Int64
}

func (d *timedDevice) Apply(ctx context.Context, name string, p wg.Plan) (wg.Counts, error) {
	t0 := time.Now()
	c, err := d.Device.Apply(ctx, name, p)
	d.apply.Add(int64(time.Since(t0)))
	return c, err
}

// BenchmarkExpire10pctOf10k: expire 1000 of 10k configs with a trivial
// script at concurrency 4; reports total time, D events/s and the share of
// the time spent writing the device.
func BenchmarkExpire10pctOf10k(b *testing.B) {
	h := newHarness(b, harnessOpts{real: true, maxPerUser: 100000})
	trivial := filepath.Join(h.dir, "true.sh")
	if err := os.WriteFile(trivial, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		b.Fatal(err)
	}
	run, err := hooks.New(hooks.Config{Script: trivial, Timeout: 5 * time.Second, Concurrency: 4})
	if err != nil {
		b.Fatal(err)
	}
	td := &timedDevice{Device: h.dev}
	e, err := New(Options{Config: h.cfg, Store: h.st, Device: td, Runner: run, Now: h.clock.Now})
	if err != nil {
		b.Fatal(err)
	}
	h.seed(b, 9000, time.Time{})
	var total time.Duration
	var events int
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		h.seed(b, 1000, h.clock.Now().Add(time.Minute))
		h.clock.Advance(2 * time.Minute)
		b.StartTimer()
		t0 := time.Now()
		r, err := e.Expire(h.ctx)
		total += time.Since(t0)
		if err != nil || len(r.Events) != 1000 || r.Delivery.Done != 1000 {
			b.Fatalf("expire: %d events, %d delivered, %v", len(r.Events), r.Delivery.Done, err)
		}
		events += len(r.Events)
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "s/expire-1000")
	b.ReportMetric(float64(events)/total.Seconds(), "D-events/s")
	b.ReportMetric(float64(td.apply.Load())/float64(total), "device-write-share")
}

// BenchmarkCreateCheck10k: the check a create makes before its connect
// script (link lookup over netlink, a stat of the UAPI socket, the last
// read's key and port) on a 10k-peer interface on a real TUN, against one
// raw wgctrl Device() read of the same device, measured alternately in the
// same run.
func BenchmarkCreateCheck10k(b *testing.B) {
	wgtest.RequireRoot(b)
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		b.Skip("skipped: needs /dev/net/tun")
	}
	name := wgtest.UniqueName("wgb")
	key, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		b.Fatal(err)
	}
	l, err := wg.Up(context.Background(), wg.Spec{Name: name, Mode: wg.ModeUserspace, PrivateKey: key,
		Addresses: []netip.Prefix{netip.MustParsePrefix("10.99.0.1/16"), netip.MustParsePrefix("fd00:99::1/64")}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	h := &harness{t: b, dir: b.TempDir(), ctx: context.Background()}
	h.open(testConfig(name, 51820, "remove", "", 100000, false))
	h.seed(b, 10000, time.Time{})
	ifc, _ := h.cfg.Interface(name)
	raw, err := wgctrl.New()
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Close()
	if _, err := h.eng.checkDevice(h.ctx, ifc); err != nil {
		b.Fatal(err)
	}
	var rawNs, checkNs time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		d, err := raw.Device(name)
		rawNs += time.Since(t0)
		if err != nil || len(d.Peers) != 10000 {
			b.Fatal(err)
		}
		t0 = time.Now()
		k, err := h.eng.checkDevice(h.ctx, ifc)
		checkNs += time.Since(t0)
		if err != nil || k != key.PublicKey() {
			b.Fatal(k, err)
		}
	}
	b.ReportMetric(float64(rawNs.Microseconds())/float64(b.N), "raw-read-µs")
	b.ReportMetric(float64(checkNs.Microseconds())/float64(b.N), "check-µs")
	b.ReportMetric(float64(rawNs)/float64(checkNs), "raw/check")
}

// cpuTime is the CPU time (user + system) this process used so far.
func cpuTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSessionPoll10k: one session poll of a 10k-config interface
// (device read, store read, compare, one write transaction) while 20 of the
// configs' clients talk, against one raw wgctrl Device() read of the same
// device, measured alternately in the same run. Both are CPU time of the
// process (the in-process device answering the read counts in both).
// Target ratio <= 1.5; only the configs whose counters moved are written.
func BenchmarkSessionPoll10k(b *testing.B) {
	h := newHarness(b, harnessOpts{maxPerUser: 100000, real: true})
	h.seed(b, 10000-20, time.Time{})
	var clients []*wgtest.ClientDev
	for i := 0; i < 20; i++ {
		clients = append(clients, h.connect(h.create(fmt.Sprintf("talker%d", i))))
	}
	raw, err := wgctrl.New()
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Close()
	talk := func() {
		for _, c := range clients {
			ctx, cancel := context.WithTimeout(h.ctx, 10*time.Second)
			err := c.Ping(ctx)
			cancel()
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	talk()
	h.clock.Advance(10 * time.Second)
	if sp, err := h.eng.PollSessions(h.ctx, h.srv.Name); err != nil || sp.Online != 20 {
		b.Fatalf("warm-up poll: %+v %v", sp, err)
	}
	var rawCPU, pollCPU time.Duration
	written := 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		talk()
		h.clock.Advance(10 * time.Second)
		b.StartTimer()
		c0 := cpuTime(b)
		d, err := raw.Device(h.srv.Name)
		rawCPU += cpuTime(b) - c0
		if err != nil || len(d.Peers) != 10000 {
			b.Fatal(err)
		}
		c0 = cpuTime(b)
		sp, err := h.eng.PollSessions(h.ctx, h.srv.Name)
		pollCPU += cpuTime(b) - c0
		if err != nil || sp.Online != 20 || len(sp.Changes) != 0 {
			b.Fatalf("%+v %v", sp, err)
		}
		written += sp.Written
	}
	b.ReportMetric(float64(rawCPU.Microseconds())/1000/float64(b.N), "raw-read-cpu-ms")
	b.ReportMetric(float64(pollCPU.Microseconds())/1000/float64(b.N), "poll-cpu-ms")
	b.ReportMetric(float64(pollCPU)/float64(rawCPU), "ratio")
	b.ReportMetric(float64(written)/float64(b.N), "configs-written/poll")
}

// BenchmarkSessionPollReload10k: a session poll of a 10k-config interface
// that reads the configs' activity (with their profiles) from the store
// again, as after a create or a delete by this engine, against one raw
// wgctrl Device() read of the same device in the same run; the store read
// (ListActivity) is also reported alone, as its share of the poll.
func BenchmarkSessionPollReload10k(b *testing.B) {
	h := newHarness(b, harnessOpts{maxPerUser: 100000, real: true})
	h.seed(b, 10000, time.Time{})
	raw, err := wgctrl.New()
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Close()
	h.clock.Advance(10 * time.Second)
	if _, err := h.eng.PollSessions(h.ctx, h.srv.Name); err != nil {
		b.Fatal(err)
	}
	var rawCPU, pollCPU, actsCPU time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		h.clock.Advance(10 * time.Second)
		h.eng.peerGen.Add(1) // as a create or delete by this engine does
		b.StartTimer()
		c0 := cpuTime(b)
		d, err := raw.Device(h.srv.Name)
		rawCPU += cpuTime(b) - c0
		if err != nil || len(d.Peers) != 10000 {
			b.Fatal(err)
		}
		c0 = cpuTime(b)
		sp, err := h.eng.PollSessions(h.ctx, h.srv.Name)
		pollCPU += cpuTime(b) - c0
		if err != nil || !sp.Reloaded {
			b.Fatalf("%+v %v", sp, err)
		}
		c0 = cpuTime(b)
		acts, err := h.st.ListActivity(h.ctx, h.srv.Name)
		actsCPU += cpuTime(b) - c0
		if err != nil || len(acts) != 10000 {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(rawCPU.Microseconds())/1000/float64(b.N), "raw-read-cpu-ms")
	b.ReportMetric(float64(pollCPU.Microseconds())/1000/float64(b.N), "poll-cpu-ms")
	b.ReportMetric(float64(actsCPU.Microseconds())/1000/float64(b.N), "list-activity-cpu-ms")
	b.ReportMetric(float64(pollCPU)/float64(rawCPU), "ratio")
}
