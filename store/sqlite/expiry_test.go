package sqlite

import (
	"context"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// TestSetExpiryNeverStoresNull: an expiry set back to never is stored as
// NULL, as a peer created without one is (the suite checks what callers
// see; this is the column).
func TestSetExpiryNeverStoresNull(t *testing.T) {
	ctx := context.Background()
	s, clock := newStore(t)
	np := staffPeer(1, "alice")
	np.ExpiresAt = clock.Now().Add(time.Hour)
	p := mustCreate(t, s, np)
	mustCreate(t, s, staffPeer(2, "alice"))
	if got, err := s.SetExpiry(ctx, []wgtypes.Key{p.PublicKey}, time.Time{}); err != nil || len(got) != 1 {
		t.Fatalf("SetExpiry to never = %v, %v", got, err)
	}
	var nulls int
	if err := s.db.QueryRow(`SELECT count(*) FROM peers WHERE expires_at IS NULL`).Scan(&nulls); err != nil || nulls != 2 {
		t.Errorf("rows without expiry: %d, %v; want 2", nulls, err)
	}
}
