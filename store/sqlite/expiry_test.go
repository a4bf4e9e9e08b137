package sqlite

import (
	"context"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/store"
)

func TestSetExpiry(t *testing.T) {
	ctx := context.Background()
	s, clock := newStore(t)
	now := clock.Now()

	long := staffPeer(1, "alice")
	long.ExpiresAt = now.Add(30 * 24 * time.Hour)
	a := mustCreate(t, s, long)
	never := mustCreate(t, s, staffPeer(2, "alice"))
	soon := staffPeer(3, "bob")
	soon.ExpiresAt = now.Add(time.Minute)
	b := mustCreate(t, s, soon)
	pending, _ := mustInsert(t, s, staffPeer(4, "carol"))
	events := countRows(t, s, "events")

	// Shorten one, give another an expiry, skip the pending and the missing
	// ones, count a repeated key once.
	at := now.Add(time.Hour).Truncate(time.Second)
	got, err := s.SetExpiry(ctx, []wgtypes.Key{a.PublicKey, never.PublicKey, pending.PublicKey, testKey(99), a.PublicKey}, at)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].PublicKey != a.PublicKey || got[1].PublicKey != never.PublicKey {
		t.Fatalf("updated %v, want the two active peers in order", keysOfPeers(got))
	}
	for _, p := range got {
		if !p.ExpiresAt.Equal(at) || p.State != store.StateActive || p.UserID != "alice" || !p.IPv4.IsValid() {
			t.Errorf("returned %+v, want the whole row with expires_at %s", p, at)
		}
		stored, err := s.GetPeer(ctx, p.PublicKey)
		if err != nil || !stored.ExpiresAt.Equal(at) {
			t.Errorf("stored expiry of %s: %v, %v; want %s", p.PublicKey, stored.ExpiresAt, err, at)
		}
	}
	if p, _ := s.GetPeer(ctx, pending.PublicKey); !p.ExpiresAt.IsZero() {
		t.Errorf("pending peer got expiry %s", p.ExpiresAt)
	}
	if n := countRows(t, s, "events"); n != events {
		t.Errorf("events: %d, want %d (no event for an expiry change)", n, events)
	}

	// The earliest expiry follows a shortened one.
	if next, ok, err := s.NextExpiry(ctx); err != nil || !ok || !next.Equal(b.ExpiresAt) {
		t.Fatalf("NextExpiry = %s, %v, %v; want bob's %s", next, ok, err, b.ExpiresAt)
	}
	if _, err := s.SetExpiry(ctx, []wgtypes.Key{a.PublicKey}, now.Add(30*time.Second)); err != nil {
		t.Fatal(err)
	}
	if next, _, _ := s.NextExpiry(ctx); !next.Equal(now.Add(30 * time.Second)) {
		t.Errorf("NextExpiry = %s after shortening to 30s", next)
	}
	expiring, err := s.ListPeers(ctx, store.PeerFilter{State: store.StateActive, ExpiresBefore: now.Add(45 * time.Second)})
	if err != nil || len(expiring) != 1 || expiring[0].PublicKey != a.PublicKey {
		t.Errorf("expiring within 45s: %v, %v; want alice's shortened one", keysOfPeers(expiring), err)
	}

	// Zero means never: expires_at is NULL again.
	got, err = s.SetExpiry(ctx, []wgtypes.Key{never.PublicKey}, time.Time{})
	if err != nil || len(got) != 1 || !got[0].ExpiresAt.IsZero() {
		t.Fatalf("never: %+v, %v", got, err)
	}
	var nulls int
	if err := s.db.QueryRow(`SELECT count(*) FROM peers WHERE expires_at IS NULL`).Scan(&nulls); err != nil || nulls != 2 {
		t.Errorf("rows without expiry: %d, %v; want 2 (the pending one and the one set to never)", nulls, err)
	}

	// Once its expiry has passed a row is left to the expiry run.
	clock.Add(2 * time.Minute)
	got, err = s.SetExpiry(ctx, []wgtypes.Key{b.PublicKey, a.PublicKey}, clock.Now().Add(time.Hour))
	if err != nil || len(got) != 0 {
		t.Errorf("expired rows: updated %v, %v; want none", keysOfPeers(got), err)
	}
	if p, _ := s.GetPeer(ctx, b.PublicKey); !p.ExpiresAt.Equal(b.ExpiresAt) {
		t.Errorf("expired row changed to %s", p.ExpiresAt)
	}
}

func TestSetExpiryOutOfRange(t *testing.T) {
	ctx := context.Background()
	s, clock := newStore(t)
	p := mustCreate(t, s, staffPeer(1, "alice"))
	_, err := s.SetExpiry(ctx, []wgtypes.Key{p.PublicKey}, clock.Now().AddDate(500, 0, 0))
	if err == nil || !strings.Contains(err.Error(), "storable range") {
		t.Fatalf("err = %v, want the storable range named", err)
	}
	if got, _ := s.GetPeer(ctx, p.PublicKey); !got.ExpiresAt.IsZero() {
		t.Errorf("row changed to %s", got.ExpiresAt)
	}
}

func keysOfPeers(ps []store.Peer) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.PublicKey.String()[:8]
	}
	return out
}
