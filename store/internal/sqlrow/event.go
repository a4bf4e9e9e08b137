package sqlrow

import (
	"time"

	"github.com/wgkeeper/wgkeeper/store"
)

// EventOf is an event carrying the peer's identity at this moment.
func EventOf(p store.Peer, kind, reason, status string, now time.Time) store.Event {
	return store.Event{
		Kind:          kind,
		Reason:        reason,
		PublicKey:     p.PublicKey,
		Interface:     p.Interface,
		ProfileID:     p.ProfileID,
		UserID:        p.UserID,
		IPv4:          p.IPv4,
		IPv6:          p.IPv6,
		OriginatingIP: p.OriginatingIP,
		ExpiresAt:     p.ExpiresAt,
		CreatedAt:     now,
		Status:        status,
	}
}

// EncActor is the actor column value: NULL (not recorded) for an empty
// actor.
func EncActor(a string) any {
	if a == "" {
		return nil
	}
	return a
}
