package wg_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wgkeeper/wgkeeper/wg"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// key returns a deterministic public key whose first byte is b, so tests can
// reason about sort order.
func key(b byte) wgtypes.Key {
	var k wgtypes.Key
	k[0] = b
	k[31] = 0x42
	return k
}

func pfx(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func TestMakePlan(t *testing.T) {
	psk1, psk2 := key(0xf1), key(0xf2)
	a := wg.Wanted{PublicKey: key(1), AllowedIPs: pfx("10.0.0.2/32", "fd00::2/128")}
	b := wg.Wanted{PublicKey: key(2), AllowedIPs: pfx("10.0.0.3/32"), PresharedKey: psk1, Keepalive: 25 * time.Second}
	c := wg.Wanted{PublicKey: key(3), AllowedIPs: pfx("10.0.0.4/32")}
	onDevice := func(w wg.Wanted) wg.Peer {
		// What a device reports: same state plus live fields that the plan
		// must ignore.
		return wg.Peer{
			PublicKey: w.PublicKey, PresharedKey: w.PresharedKey, AllowedIPs: slices.Clone(w.AllowedIPs),
			Keepalive: w.Keepalive, Endpoint: netip.MustParseAddrPort("192.0.2.1:51820"),
			LastHandshake: time.Unix(1700000000, 0).UTC(), RxBytes: 100, TxBytes: 200,
		}
	}
	with := func(p wg.Peer, f func(*wg.Peer)) wg.Peer { f(&p); return p }
	withW := func(w wg.Wanted, f func(*wg.Wanted)) wg.Wanted { f(&w); return w }

	tests := []struct {
		name    string
		wanted  []wg.Wanted
		actual  []wg.Peer
		orphans wg.Orphans
		want    wg.Plan
		wantErr string
	}{
		{name: "nothing anywhere", orphans: wg.OrphansRemove},
		{
			name:    "identical state is a no-op",
			wanted:  []wg.Wanted{a, b, c},
			actual:  []wg.Peer{onDevice(c), onDevice(a), onDevice(b)},
			orphans: wg.OrphansRemove,
		},
		{
			name:    "add to empty device, sorted by key",
			wanted:  []wg.Wanted{c, a, b},
			orphans: wg.OrphansRemove,
			want:    wg.Plan{Add: []wg.Wanted{a, b, c}},
		},
		{
			name:    "add missing only",
			wanted:  []wg.Wanted{a, b, c},
			actual:  []wg.Peer{onDevice(b)},
			orphans: wg.OrphansRemove,
			want:    wg.Plan{Add: []wg.Wanted{a, c}},
		},
		{
			name:    "remove orphans, sorted",
			wanted:  []wg.Wanted{b},
			actual:  []wg.Peer{onDevice(c), onDevice(b), onDevice(a)},
			orphans: wg.OrphansRemove,
			want:    wg.Plan{Remove: []wgtypes.Key{a.PublicKey, c.PublicKey}},
		},
		{
			name:    "keep orphans",
			wanted:  []wg.Wanted{b},
			actual:  []wg.Peer{onDevice(c), onDevice(b), onDevice(a)},
			orphans: wg.OrphansKeep,
			want:    wg.Plan{KeptOrphans: []wgtypes.Key{a.PublicKey, c.PublicKey}},
		},
		{
			name:    "empty wanted removes everything",
			actual:  []wg.Peer{onDevice(a)},
			orphans: wg.OrphansRemove,
			want:    wg.Plan{Remove: []wgtypes.Key{a.PublicKey}},
		},
		{
			name:    "allowed ips differ",
			wanted:  []wg.Wanted{a},
			actual:  []wg.Peer{with(onDevice(a), func(p *wg.Peer) { p.AllowedIPs = pfx("10.0.0.2/32") })},
			orphans: wg.OrphansRemove,
			want:    wg.Plan{Update: []wg.Change{{Wanted: a, AllowedIPs: true}}},
		},
		{
			name:    "allowed ips extra on device",
			wanted:  []wg.Wanted{c},
			actual:  []wg.Peer{with(onDevice(c), func(p *wg.Peer) { p.AllowedIPs = pfx("10.0.0.4/32", "10.9.0.0/16") })},
			orphans: wg.OrphansRemove,
			want:    wg.Plan{Update: []wg.Change{{Wanted: c, AllowedIPs: true}}},
		},
		{
			name:    "allowed ips none wanted, some on device",
			wanted:  []wg.Wanted{withW(c, func(w *wg.Wanted) { w.AllowedIPs = nil })},
			actual:  []wg.Peer{onDevice(c)},
			orphans: wg.OrphansRemove,
			want:    wg.Plan{Update: []wg.Change{{Wanted: withW(c, func(w *wg.Wanted) { w.AllowedIPs = []netip.Prefix{} }), AllowedIPs: true}}},
		},
		{
			name:    "allowed ips compared as sets: order, host bits, duplicates",
			wanted:  []wg.Wanted{withW(a, func(w *wg.Wanted) { w.AllowedIPs = pfx("fd00::2/128", "10.0.0.2/32", "fd00::2/128") })},
			actual:  []wg.Peer{onDevice(a)},
			orphans: wg.OrphansRemove,
		},
		{
			name:    "masked prefixes equal",
			wanted:  []wg.Wanted{withW(c, func(w *wg.Wanted) { w.AllowedIPs = pfx("10.1.2.3/16") })},
			actual:  []wg.Peer{with(onDevice(c), func(p *wg.Peer) { p.AllowedIPs = pfx("10.1.0.0/16") })},
			orphans: wg.OrphansRemove,
		},
		{
			name:    "preshared key added",
			wanted:  []wg.Wanted{withW(a, func(w *wg.Wanted) { w.PresharedKey = psk2 })},
			actual:  []wg.Peer{onDevice(a)},
			orphans: wg.OrphansRemove,
			want:    wg.Plan{Update: []wg.Change{{Wanted: withW(a, func(w *wg.Wanted) { w.PresharedKey = psk2 }), PresharedKey: true}}},
		},
		{
			name:    "preshared key changed",
			wanted:  []wg.Wanted{withW(b, func(w *wg.Wanted) { w.PresharedKey = psk2 })},
			actual:  []wg.Peer{onDevice(b)},
			orphans: wg.OrphansRemove,
			want:    wg.Plan{Update: []wg.Change{{Wanted: withW(b, func(w *wg.Wanted) { w.PresharedKey = psk2 }), PresharedKey: true}}},
		},
		{
			name:    "preshared key removed",
			wanted:  []wg.Wanted{withW(b, func(w *wg.Wanted) { w.PresharedKey = wgtypes.Key{} })},
			actual:  []wg.Peer{onDevice(b)},
			orphans: wg.OrphansRemove,
			want:    wg.Plan{Update: []wg.Change{{Wanted: withW(b, func(w *wg.Wanted) { w.PresharedKey = wgtypes.Key{} }), PresharedKey: true}}},
		},
		{
			name:    "keepalive changed",
			wanted:  []wg.Wanted{withW(b, func(w *wg.Wanted) { w.Keepalive = 10 * time.Second })},
			actual:  []wg.Peer{onDevice(b)},
			orphans: wg.OrphansRemove,
			want:    wg.Plan{Update: []wg.Change{{Wanted: withW(b, func(w *wg.Wanted) { w.Keepalive = 10 * time.Second }), Keepalive: true}}},
		},
		{
			name:    "keepalive turned off",
			wanted:  []wg.Wanted{withW(b, func(w *wg.Wanted) { w.Keepalive = 0 })},
			actual:  []wg.Peer{onDevice(b)},
			orphans: wg.OrphansRemove,
			want:    wg.Plan{Update: []wg.Change{{Wanted: withW(b, func(w *wg.Wanted) { w.Keepalive = 0 }), Keepalive: true}}},
		},
		{
			name:    "every field drifted",
			wanted:  []wg.Wanted{b},
			actual:  []wg.Peer{{PublicKey: b.PublicKey, AllowedIPs: pfx("10.7.7.7/32")}},
			orphans: wg.OrphansRemove,
			want:    wg.Plan{Update: []wg.Change{{Wanted: b, AllowedIPs: true, PresharedKey: true, Keepalive: true}}},
		},
		{
			name:    "add, update, remove and keep together",
			wanted:  []wg.Wanted{c, withW(a, func(w *wg.Wanted) { w.Keepalive = time.Minute })},
			actual:  []wg.Peer{onDevice(b), onDevice(a)},
			orphans: wg.OrphansKeep,
			want: wg.Plan{
				Add:         []wg.Wanted{c},
				Update:      []wg.Change{{Wanted: withW(a, func(w *wg.Wanted) { w.Keepalive = time.Minute }), Keepalive: true}},
				KeptOrphans: []wgtypes.Key{b.PublicKey},
			},
		},
		{
			name:    "duplicate wanted key",
			wanted:  []wg.Wanted{a, c, withW(a, func(w *wg.Wanted) { w.AllowedIPs = pfx("10.5.5.5/32") })},
			orphans: wg.OrphansRemove,
			wantErr: "duplicate wanted peer " + a.PublicKey.String(),
		},
		{
			name:    "duplicate device key",
			wanted:  []wg.Wanted{a},
			actual:  []wg.Peer{onDevice(b), onDevice(b)},
			orphans: wg.OrphansRemove,
			wantErr: "device lists peer " + b.PublicKey.String() + " twice",
		},
		{
			name:    "zero key",
			wanted:  []wg.Wanted{a, {AllowedIPs: pfx("10.0.0.9/32")}},
			orphans: wg.OrphansRemove,
			wantErr: "wanted peer 1: zero public key",
		},
		{
			name:    "negative keepalive",
			wanted:  []wg.Wanted{withW(a, func(w *wg.Wanted) { w.Keepalive = -time.Second })},
			orphans: wg.OrphansRemove,
			wantErr: "invalid keepalive -1s",
		},
		{
			name:    "fractional keepalive",
			wanted:  []wg.Wanted{withW(a, func(w *wg.Wanted) { w.Keepalive = 1500 * time.Millisecond })},
			orphans: wg.OrphansRemove,
			wantErr: "invalid keepalive 1.5s: want whole seconds",
		},
		{
			name:    "keepalive too long",
			wanted:  []wg.Wanted{withW(a, func(w *wg.Wanted) { w.Keepalive = 65536 * time.Second })},
			orphans: wg.OrphansRemove,
			wantErr: "invalid keepalive 18h12m16s",
		},
		{
			name:    "invalid prefix",
			wanted:  []wg.Wanted{withW(a, func(w *wg.Wanted) { w.AllowedIPs = []netip.Prefix{{}} })},
			orphans: wg.OrphansRemove,
			wantErr: "invalid allowed ip",
		},
		{
			name:    "one prefix for two peers",
			wanted:  []wg.Wanted{a, withW(c, func(w *wg.Wanted) { w.AllowedIPs = pfx("10.0.0.4/32", "10.0.0.2/32") })},
			orphans: wg.OrphansRemove,
			wantErr: "allowed ip 10.0.0.2/32 wanted for two peers",
		},
		{
			name:    "orphan policy unset",
			wanted:  []wg.Wanted{a},
			wantErr: "invalid orphan policy Orphans(0)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantedBefore := fmt.Sprint(tt.wanted)
			actualBefore := fmt.Sprint(tt.actual)
			got, err := wg.MakePlan(tt.wanted, tt.actual, tt.orphans)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("MakePlan error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("MakePlan: %v", err)
			}
			if !planEqual(got, tt.want) {
				t.Fatalf("MakePlan:\n got %s\nwant %s", fmtPlan(got), fmtPlan(tt.want))
			}
			if got.Empty() != (len(tt.want.Add)+len(tt.want.Update)+len(tt.want.Remove) == 0) {
				t.Fatalf("Empty() = %v for %s", got.Empty(), fmtPlan(got))
			}
			if fmt.Sprint(tt.wanted) != wantedBefore || fmt.Sprint(tt.actual) != actualBefore {
				t.Fatal("MakePlan modified its input")
			}
			again, _ := wg.MakePlan(tt.wanted, tt.actual, tt.orphans)
			if fmtPlan(again) != fmtPlan(got) {
				t.Fatalf("MakePlan not deterministic:\n%s\n%s", fmtPlan(got), fmtPlan(again))
			}
		})
	}
}

// planEqual compares plans treating nil and empty lists alike.
func planEqual(a, b wg.Plan) bool { return fmtPlan(a) == fmtPlan(b) }

func fmtPlan(p wg.Plan) string {
	var b strings.Builder
	for _, w := range p.Add {
		fmt.Fprintf(&b, "add %s;", fmtWanted(w))
	}
	for _, c := range p.Update {
		fmt.Fprintf(&b, "update %s ips=%v psk=%v ka=%v;", fmtWanted(c.Wanted), c.AllowedIPs, c.PresharedKey, c.Keepalive)
	}
	for _, k := range p.Remove {
		fmt.Fprintf(&b, "remove %s;", k)
	}
	for _, k := range p.KeptOrphans {
		fmt.Fprintf(&b, "keep %s;", k)
	}
	return b.String()
}

func fmtWanted(w wg.Wanted) string {
	return fmt.Sprintf("%s psk=%s ka=%v ips=%v", w.PublicKey, w.PresharedKey, w.Keepalive, w.AllowedIPs)
}

func TestOrphansString(t *testing.T) {
	for o, want := range map[wg.Orphans]string{wg.OrphansRemove: "remove", wg.OrphansKeep: "keep", 0: "Orphans(0)"} {
		if got := o.String(); got != want {
			t.Errorf("Orphans(%d).String() = %q, want %q", int(o), got, want)
		}
	}
}

// simulate applies p to actual the way a device does and returns the
// resulting peers.
func simulate(actual []wg.Peer, p wg.Plan) []wg.Peer {
	m := make(map[wgtypes.Key]wg.Peer)
	for _, a := range actual {
		m[a.PublicKey] = a
	}
	for _, k := range p.Remove {
		delete(m, k)
	}
	for _, c := range p.Update {
		q := m[c.PublicKey]
		if c.AllowedIPs {
			q.AllowedIPs = c.Wanted.AllowedIPs
		}
		if c.PresharedKey {
			q.PresharedKey = c.Wanted.PresharedKey
		}
		if c.Keepalive {
			q.Keepalive = c.Wanted.Keepalive
		}
		m[c.PublicKey] = q
	}
	for _, w := range p.Add {
		m[w.PublicKey] = wg.Peer{PublicKey: w.PublicKey, PresharedKey: w.PresharedKey, AllowedIPs: w.AllowedIPs, Keepalive: w.Keepalive}
	}
	out := make([]wg.Peer, 0, len(m))
	for _, q := range m {
		out = append(out, q)
	}
	return out
}

// TestMakePlanConverges checks on random states that applying a plan gives
// exactly the wanted peers (plus kept orphans), after which the plan is
// empty, and that the plan names each key at most once.
func TestMakePlanConverges(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	randWanted := func(k byte) wg.Wanted {
		w := wg.Wanted{PublicKey: key(k)}
		n := rng.IntN(3)
		for i := 0; i < n; i++ {
			// Prefixes are unique per key so no two peers share one.
			w.AllowedIPs = append(w.AllowedIPs, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, k, byte(rng.IntN(3)), 1}), 24+rng.IntN(9)))
		}
		if rng.IntN(2) == 0 {
			w.PresharedKey = key(byte(rng.IntN(2) + 200))
		}
		w.Keepalive = time.Duration(rng.IntN(2)*25) * time.Second
		return w
	}
	for round := 0; round < 500; round++ {
		var wanted []wg.Wanted
		var actual []wg.Peer
		for k := byte(1); k < 30; k++ {
			if rng.IntN(2) == 0 {
				wanted = append(wanted, randWanted(k))
			}
			if rng.IntN(2) == 0 {
				w := randWanted(k)
				actual = append(actual, wg.Peer{PublicKey: w.PublicKey, PresharedKey: w.PresharedKey, AllowedIPs: w.AllowedIPs, Keepalive: w.Keepalive})
			}
		}
		rng.Shuffle(len(wanted), func(i, j int) { wanted[i], wanted[j] = wanted[j], wanted[i] })
		o := wg.Orphans(rng.IntN(2) + 1)
		p, err := wg.MakePlan(wanted, actual, o)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[wgtypes.Key]bool{}
		for _, k := range planKeys(p) {
			if seen[k] {
				t.Fatalf("round %d: key %s twice in %s", round, k, fmtPlan(p))
			}
			seen[k] = true
		}
		after := simulate(actual, p)
		p2, err := wg.MakePlan(wanted, after, o)
		if err != nil {
			t.Fatal(err)
		}
		if !p2.Empty() || len(p2.KeptOrphans) != len(p.KeptOrphans) {
			t.Fatalf("round %d: second plan %s, want empty with the same kept orphans", round, fmtPlan(p2))
		}
		if len(after) != len(wanted)+len(p.KeptOrphans) {
			t.Fatalf("round %d: %d peers after apply, want %d wanted + %d kept", round, len(after), len(wanted), len(p.KeptOrphans))
		}
	}
}

func planKeys(p wg.Plan) []wgtypes.Key {
	var ks []wgtypes.Key
	for _, w := range p.Add {
		ks = append(ks, w.PublicKey)
	}
	for _, c := range p.Update {
		ks = append(ks, c.PublicKey)
	}
	ks = append(ks, p.Remove...)
	return append(ks, p.KeptOrphans...)
}

// FuzzMakePlan feeds MakePlan arbitrary wanted and device peers (the device
// side is outside input) and checks that it never panics and that, when it
// accepts the input, applying its plan converges in one step.
func FuzzMakePlan(f *testing.F) {
	f.Add([]byte{1, 1, 32, 0, 0x81, 1, 32, 0, 2, 2, 24, 3, 0x83, 9, 16, 1}, false)
	f.Add([]byte{1, 1, 32, 0, 1, 2, 32, 0}, true)
	f.Add([]byte{0x81, 1, 32, 0, 0x81, 1, 32, 0}, false)
	f.Fuzz(func(t *testing.T, data []byte, keep bool) {
		var wanted []wg.Wanted
		var actual []wg.Peer
		for len(data) >= 4 {
			c := data[:4]
			data = data[4:]
			k := key(c[0]&0x1f + 1)
			ips := []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, c[0] & 0x1f, c[1], 1}), int(c[2]%40))}
			if c[2] >= 33 {
				ips = []netip.Prefix{netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 15: c[1]}), int(c[2]))}
			}
			var psk wgtypes.Key
			if c[3]&1 != 0 {
				psk = key(0xf0)
			}
			ka := time.Duration(c[3]>>1) * time.Second
			if c[0]&0x80 != 0 {
				actual = append(actual, wg.Peer{PublicKey: k, PresharedKey: psk, AllowedIPs: ips, Keepalive: ka})
			} else {
				wanted = append(wanted, wg.Wanted{PublicKey: k, PresharedKey: psk, AllowedIPs: ips, Keepalive: ka})
			}
		}
		o := wg.OrphansRemove
		if keep {
			o = wg.OrphansKeep
		}
		p, err := wg.MakePlan(wanted, actual, o)
		if err != nil {
			return
		}
		seen := map[wgtypes.Key]bool{}
		for _, k := range planKeys(p) {
			if seen[k] {
				t.Fatalf("key %s twice in %s", k, fmtPlan(p))
			}
			seen[k] = true
		}
		p2, err := wg.MakePlan(wanted, simulate(actual, p), o)
		if err != nil {
			t.Fatalf("plan after apply: %v", err)
		}
		if !p2.Empty() {
			t.Fatalf("plan after apply not empty: %s (first plan %s)", fmtPlan(p2), fmtPlan(p))
		}
	})
}

func TestInSync(t *testing.T) {
	k := wgtypes.Key{1}
	w := wg.Wanted{PublicKey: k, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.0.0.2/32"), netip.MustParsePrefix("fd00::2/128")}}
	same := wg.Peer{PublicKey: k, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("fd00::2/128"), netip.MustParsePrefix("10.0.0.2/32")}}
	if !wg.InSync(w, same) {
		t.Error("same allowed IPs in another order: not in sync")
	}
	drift := same
	drift.Keepalive = 25 * time.Second
	if wg.InSync(w, drift) {
		t.Error("keepalive drift reported in sync")
	}
	psk := same
	psk.PresharedKey = wgtypes.Key{9}
	if wg.InSync(w, psk) {
		t.Error("preshared key drift reported in sync")
	}
}
