package sqlite

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/store"
)

// Addresses held on the device by peers the store does not know (kept
// orphans) are never allocated; the next free index is taken instead.
func TestAllocateSkipsAvoided(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	pfx := netip.MustParsePrefix
	avoid := func(np store.NewPeer, ps ...string) store.NewPeer {
		for _, p := range ps {
			np.Avoid = append(np.Avoid, pfx(p))
		}
		return np
	}
	// .2 held by an orphan: the first config gets .3.
	p := mustCreate(t, s, avoid(staffPeer(0, "a"), "10.42.0.2/32"))
	if p.IPv4.String() != "10.42.0.3" || p.IPv6.String() != "fd42::3" {
		t.Fatalf("got %s / %s, want 10.42.0.3 / fd42::3", p.IPv4, p.IPv6)
	}
	// The skipped index stays free for a later create without the orphan.
	p = mustCreate(t, s, staffPeer(1, "a"))
	if p.IPv4.String() != "10.42.0.2" {
		t.Fatalf("got %s, want the skipped 10.42.0.2", p.IPv4)
	}
	// An IPv6 orphan address blocks its paired index too; a /30 of v4
	// orphans (.4-.7) and a foreign range are skipped or ignored.
	p = mustCreate(t, s, avoid(staffPeer(2, "a"), "fd42::4/128", "10.42.0.5/32", "10.42.0.6/31", "192.168.0.0/16", "fd99::/64"))
	if p.IPv4.String() != "10.42.0.8" || p.IPv6.String() != "fd42::8" {
		t.Fatalf("got %s / %s, want 10.42.0.8 / fd42::8", p.IPv4, p.IPv6)
	}
	// From the free list: .4 was skipped, so it is free and lowest.
	p = mustCreate(t, s, avoid(staffPeer(3, "a"), "10.42.0.4/32"))
	if p.IPv4.String() != "10.42.0.5" {
		t.Fatalf("got %s, want 10.42.0.5 (.4 avoided, on the free list)", p.IPv4)
	}
	// A prefix covering the whole range: pool exhausted, with a message
	// that names the cause, and nothing written.
	rows := countRows(t, s, "peers")
	_, _, err := s.InsertPending(ctx, avoid(staffPeer(4, "a"), "10.0.0.0/8"))
	if !errors.Is(err, store.ErrPoolExhausted) || !strings.Contains(err.Error(), "held by peers on the device that the store does not know") {
		t.Fatalf("err = %v, want ErrPoolExhausted naming the held addresses", err)
	}
	if countRows(t, s, "peers") != rows {
		t.Fatal("a refused insert wrote a row")
	}
	// Everything but the last index avoided in a /29 (indexes 0..4).
	small := staffPeer(5, "b")
	small.ProfileID, small.IPv4Range, small.IPv6Range = "small", pfx("10.9.0.0/29"), netip.Prefix{}
	p = mustCreate(t, s, avoid(small, "10.9.0.0/30", "10.9.0.4/31"))
	if p.IPv4.String() != "10.9.0.6" {
		t.Fatalf("got %s, want 10.9.0.6", p.IPv4)
	}
}

func TestDisconnected(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	var keys []wgtypes.Key
	for i := range 3 {
		keys = append(keys, mustCreate(t, s, staffPeer(i, "a")).PublicKey)
	}
	if _, err := s.DeletePeers(ctx, keys[1:2], store.ReasonDeleted, "", testClockFuture()); err != nil {
		t.Fatal(err)
	}
	// More keys than one query takes, most of them unknown.
	ask := append([]wgtypes.Key{}, keys...)
	for i := range 2 * disconnectedChunk {
		ask = append(ask, testKey(1000+i))
	}
	got, err := s.Disconnected(ctx, ask)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !got[keys[1]] {
		t.Fatalf("Disconnected = %v, want only %s", got, keys[1])
	}
	if got, err := s.Disconnected(ctx, nil); err != nil || len(got) != 0 {
		t.Fatalf("no keys: %v, %v", got, err)
	}
}
