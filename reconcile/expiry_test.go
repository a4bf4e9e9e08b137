package reconcile

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/wg"
)

// An expiry change runs no script and leaves the device alone; the expiry
// run then follows the new time, and the D event carries it.
func TestSetExpiryShortensAndExtends(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	a := h.create("alice", func(r *CreateRequest) { r.ExpiresIn = 10 * time.Hour })
	b := h.create("alice")
	c := h.create("bob", func(r *CreateRequest) { r.ExpiresIn = 30 * time.Minute })
	runs := len(h.scriptRuns())
	before, _ := h.onDevice(a.Peer.PublicKey)

	now := h.clock.Now()
	p, err := h.eng.SetExpiry(h.ctx, a.Peer.PublicKey, ExpiryChange{ExpiresIn: time.Hour})
	if err != nil || !p.ExpiresAt.Equal(now.Add(time.Hour)) || p.UserID != "alice" {
		t.Fatalf("shorten: %+v, %v; want expiry %s", p, err, now.Add(time.Hour))
	}
	// Extend bob's past alice's new time.
	if _, err := h.eng.SetExpiry(h.ctx, c.Peer.PublicKey, ExpiryChange{ExpiresAt: now.Add(2 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if n := len(h.scriptRuns()); n != runs {
		t.Fatalf("%d script runs after expiry changes, want none", n-runs)
	}
	after, ok := h.onDevice(a.Peer.PublicKey)
	if !ok || !wg.InSync(WantedPeer(a.Peer), after) || fmt.Sprint(after.AllowedIPs) != fmt.Sprint(before.AllowedIPs) {
		t.Fatalf("device peer changed by an expiry change: %+v -> %+v", before, after)
	}

	// At bob's old expiry nothing happens; at alice's new one she goes.
	h.clock.Advance(31 * time.Minute)
	if r, err := h.eng.Expire(h.ctx); err != nil || len(r.Events) != 0 {
		t.Fatalf("expire at bob's old time: %+v, %v; want nothing", r, err)
	}
	h.clock.Advance(30 * time.Minute)
	r, err := h.eng.Expire(h.ctx)
	if err != nil || len(r.Events) != 1 || r.Events[0].PublicKey != a.Peer.PublicKey {
		t.Fatalf("expire at alice's new time: %+v, %v", r, err)
	}
	ds := h.runsOf("D", a.Peer.PublicKey)
	if len(ds) != 1 || ds[0]["VPN_REASON"] != "expired" || ds[0]["VPN_EXPIRES_AT"] != now.Add(time.Hour).Format(time.RFC3339) {
		t.Fatalf("D of alice: %v", ds)
	}
	h.assertInSync()

	// The user form changes every active config of the user at once.
	got, err := h.eng.SetUserExpiry(h.ctx, "bob", ExpiryChange{Never: true})
	if err != nil || len(got) != 1 || got[0].PublicKey != c.Peer.PublicKey || !got[0].ExpiresAt.IsZero() {
		t.Fatalf("user form, never: %+v, %v", got, err)
	}
	if got, err := h.eng.SetUserExpiry(h.ctx, "nobody", ExpiryChange{ExpiresIn: time.Hour}); err != nil || len(got) != 0 {
		t.Fatalf("user without configs: %+v, %v", got, err)
	}
	if _, err := h.eng.SetUserExpiry(h.ctx, "", ExpiryChange{ExpiresIn: time.Hour}); err == nil {
		t.Fatal("empty user id accepted")
	}
	_ = b
}

func TestSetExpiryRefusals(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.cfg.Profiles[0].MaxExpiry = 48 * time.Hour // the engine shares h.cfg
	a := h.create("alice", func(r *CreateRequest) { r.ExpiresIn = time.Hour })
	now := h.clock.Now()

	var inv *InvalidError
	for _, tt := range []struct {
		name  string
		c     ExpiryChange
		field string
	}{
		{"beyond max_expiry", ExpiryChange{ExpiresIn: 49 * time.Hour}, "expires_in"},
		{"beyond max_expiry (at)", ExpiryChange{ExpiresAt: now.Add(48*time.Hour + time.Second)}, "expires_at"},
		{"never with a maximum", ExpiryChange{Never: true}, "expires_in"},
		{"in the past", ExpiryChange{ExpiresAt: now.Add(-time.Second)}, "expires_at"},
		{"now", ExpiryChange{ExpiresAt: now}, "expires_at"},
		{"nothing asked", ExpiryChange{}, "expires_in"},
	} {
		_, err := h.eng.SetExpiry(h.ctx, a.Peer.PublicKey, tt.c)
		if !errors.As(err, &inv) || inv.Field != tt.field {
			t.Errorf("%s: err = %v, want an InvalidError on %s", tt.name, err, tt.field)
		}
	}
	if p, _ := h.st.GetPeer(h.ctx, a.Peer.PublicKey); !p.ExpiresAt.Equal(now.Add(time.Hour)) {
		t.Fatalf("refused changes changed the expiry to %s", p.ExpiresAt)
	}
	// Exactly the maximum is allowed, as for a create.
	if p, err := h.eng.SetExpiry(h.ctx, a.Peer.PublicKey, ExpiryChange{ExpiresIn: 48 * time.Hour}); err != nil || !p.ExpiresAt.Equal(now.Add(48*time.Hour)) {
		t.Fatalf("at the maximum: %+v, %v", p, err)
	}

	// No such config.
	if _, err := h.eng.SetExpiry(h.ctx, mustKey(t, 7), ExpiryChange{ExpiresIn: time.Hour}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("missing config: %v, want ErrNotFound", err)
	}
	// A config whose connect script still runs.
	pending, _, err := h.st.InsertPending(h.ctx, store.NewPeer{PublicKey: mustKey(t, 8), Interface: h.srv.Name, ProfileID: "staff",
		UserID: "carol", IPv4Range: netip.MustParsePrefix("10.99.0.0/16")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.eng.SetExpiry(h.ctx, pending.PublicKey, ExpiryChange{ExpiresIn: time.Hour}); !errors.Is(err, ErrInProgress) {
		t.Errorf("pending config: %v, want ErrInProgress", err)
	}
	// A config past its expiry is the expiry run's: not extended, removed
	// as expired all the same.
	h.clock.Advance(49 * time.Hour)
	if _, err := h.eng.SetExpiry(h.ctx, a.Peer.PublicKey, ExpiryChange{ExpiresIn: time.Hour}); !errors.Is(err, ErrExpired) {
		t.Errorf("expired config: %v, want ErrExpired", err)
	}
	if r, err := h.eng.Expire(h.ctx); err != nil || len(r.Events) != 1 || r.Events[0].Reason != store.ReasonExpired {
		t.Errorf("expire after the refused extension: %+v, %v", r, err)
	}
}

// mustKey returns a distinct public key for each i.
func mustKey(t *testing.T, i int) wgtypes.Key {
	t.Helper()
	var k wgtypes.Key
	k[0], k[31] = 0x42, byte(i)
	return k
}
