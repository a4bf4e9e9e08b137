package sqlrow

import (
	"fmt"
	"net/netip"
	"strings"
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

// EventMismatch says why an update of event id, found with kind, status,
// key and lease owner, matched no row although it exists, given what the
// update wanted (an empty want is not checked): an error matching
// store.ErrConflict.
func EventMismatch(id int64, kind, status, key, owner, wantKind, wantStatus, wantKey, wantOwner string) error {
	switch {
	case wantKind != "" && kind != wantKind:
		return fmt.Errorf("event %d is a %s event, not %s: %w", id, kind, wantKind, store.ErrConflict)
	case wantKey != "" && key != wantKey:
		return fmt.Errorf("event %d belongs to peer %s: %w", id, key, store.ErrConflict)
	case wantStatus != "" && status != wantStatus:
		return fmt.Errorf("event %d is %s, not %s: %w", id, status, wantStatus, store.ErrConflict)
	case wantOwner != "" && owner != wantOwner:
		if owner == "" {
			return fmt.Errorf("event %d is not leased to %q (its lease was released): %w", id, wantOwner, store.ErrConflict)
		}
		return fmt.Errorf("event %d is leased to %q, not %q: %w", id, owner, wantOwner, store.ErrConflict)
	}
	return fmt.Errorf("event %d changed concurrently: %w", id, store.ErrConflict)
}

// SessionEndEvent is the session D event of p's session id ending for
// reason with totals in and out: its originating address is that of the
// last of the session's recorded endpoints (space-separated), if any parses.
func SessionEndEvent(p store.Peer, reason string, id, in, out int64, endpoints string, now time.Time) store.Event {
	ev := EventOf(p, store.KindDisconnect, reason, store.StatusPending, now)
	ev.Scope, ev.SessionID = store.ScopeSession, id
	ev.BytesIn, ev.BytesOut = in, out
	if f := strings.Fields(endpoints); len(f) > 0 {
		if ap, err := netip.ParseAddrPort(f[len(f)-1]); err == nil {
			ev.OriginatingIP = ap.Addr().Unmap()
		}
	}
	return ev
}
