package sqlrow

import (
	"fmt"
	"time"

	"github.com/wgkeeper/wgkeeper/store"
)

// PendingInsert is what both backends write for a new pending config: the
// peer as InsertPending returns it (addresses still unset) and the column
// values of its times and preshared key.
type PendingInsert struct {
	Peer      store.Peer
	CreatedAt any // created_at: now
	ExpiresAt any // expires_at: nil for never
	PSK       any // preshared_key: nil for none
}

// NewPendingInsert builds the PendingInsert of np created at now. np must
// have passed Validate. Errors: now or np.ExpiresAt outside the storable
// range (see EncTime), naming the column.
func NewPendingInsert(np store.NewPeer, now time.Time) (PendingInsert, error) {
	p := store.Peer{
		PublicKey:     np.PublicKey,
		Interface:     np.Interface,
		ProfileID:     np.ProfileID,
		UserID:        np.UserID,
		DisplayName:   np.DisplayName,
		OriginatingIP: np.OriginatingIP.Unmap().WithZone(""),
		State:         store.StatePending,
		CreatedAt:     now,
		ExpiresAt:     np.ExpiresAt.UTC(),
	}
	if np.ExpiresAt.IsZero() {
		p.ExpiresAt = time.Time{}
	}
	pi := PendingInsert{Peer: p}
	if np.PresharedKey != nil {
		psk := *np.PresharedKey
		pi.Peer.PresharedKey = &psk
		pi.PSK = psk.String()
	}
	var err error
	if pi.CreatedAt, err = EncTime(now); err != nil {
		return PendingInsert{}, fmt.Errorf("created at: %w", err)
	}
	if pi.ExpiresAt, err = EncTime(p.ExpiresAt); err != nil {
		return PendingInsert{}, fmt.Errorf("expires at: %w", err)
	}
	return pi, nil
}
