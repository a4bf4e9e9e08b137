package sched

import (
	"context"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/store/sqlite"
)

// A config written by another process (a second handle on the same file)
// is expired at its expiry: the store's change notification re-arms the
// timer, and a shortened expiry re-arms it again.
func TestExpiryWrittenByAnotherProcess(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "wgkeeper.db")
	h := newHarness()
	open := func() *sqlite.Store {
		s, err := sqlite.Open(ctx, path, sqlite.Options{Create: true, Now: h.clk.Now, ChangePoll: 5 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	mine, other := open(), open()

	h.eng.st = nil // the real store decides what is due
	h.start(t, Options{Store: mine})

	key, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	at := t0.Add(10 * time.Minute)
	p, c, err := other.InsertPending(ctx, store.NewPeer{PublicKey: key.PublicKey(), Interface: "wg0", ProfileID: "staff",
		UserID: "alice", ExpiresAt: at, IPv4Range: netip.MustParsePrefix("10.9.0.0/24")})
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Activate(ctx, p.PublicKey, c.ID); err != nil {
		t.Fatal(err)
	}
	h.waitArmed(t, at)

	sooner := t0.Add(2 * time.Minute)
	if _, err := other.SetExpiry(ctx, []wgtypes.Key{p.PublicKey}, sooner); err != nil {
		t.Fatal(err)
	}
	h.waitArmed(t, sooner)
	h.clk.Set(sooner)
	if got := h.waitCalls(t, "expire", 1); !got[0].Equal(sooner) {
		t.Fatalf("expire ran at %v, want %v", got[0], sooner)
	}
}
