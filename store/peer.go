package store

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// State is a peer's lifecycle state.
type State string

// Peer states.
const (
	// StatePending: the row exists (its addresses are taken) while the
	// connect script runs; the peer is not on any device.
	StatePending State = "pending"
	// StateActive: the connect script accepted it; it belongs on the device.
	StateActive State = "active"
)

// Peer is one client configuration as stored.
type Peer struct {
	PublicKey     wgtypes.Key
	Interface     string
	ProfileID     string
	UserID        string
	DisplayName   string
	IPv4          netip.Addr   // zero: the profile has no IPv4 range
	IPv6          netip.Addr   // zero: the profile has no IPv6 range
	PresharedKey  *wgtypes.Key // nil: none
	OriginatingIP netip.Addr   // zero: not given
	State         State
	CreatedAt     time.Time
	ExpiresAt     time.Time // zero: never
}

// NewPeer is what InsertPending needs to create a peer.
type NewPeer struct {
	PublicKey     wgtypes.Key
	Interface     string
	ProfileID     string
	UserID        string
	DisplayName   string
	PresharedKey  *wgtypes.Key
	OriginatingIP netip.Addr
	ExpiresAt     time.Time // zero: never
	// The profile's ranges (zero: no such family); at least one.
	IPv4Range, IPv6Range netip.Prefix
	// MaxPerUser limits the user's peers (pending and active) in this
	// interface and profile; 0 = unlimited.
	MaxPerUser int
	// Actor is recorded on the C event: who asked for the config (see
	// Event.Actor); empty = not recorded.
	Actor string
	// Avoid lists prefixes whose addresses must not be allocated: those
	// that peers the store does not know hold on the device. Only their
	// parts inside the profile's ranges matter; an index is skipped when
	// its IPv4 or its IPv6 address is in one of them.
	Avoid []netip.Prefix
}

// Validate checks what a backend's InsertPending checks before touching
// the database: a key that is not all zeros, an interface, profile and
// user, a non-negative limit, and at least one range of the right family.
func (np *NewPeer) Validate() error {
	switch {
	case np.PublicKey == wgtypes.Key{}:
		return errors.New("public key is all zeros")
	case np.Interface == "":
		return errors.New("interface is empty")
	case np.ProfileID == "":
		return errors.New("profile id is empty")
	case np.UserID == "":
		return errors.New("user id is empty")
	case np.MaxPerUser < 0:
		return fmt.Errorf("per-user maximum %d is negative", np.MaxPerUser)
	case np.PresharedKey != nil && *np.PresharedKey == wgtypes.Key{}:
		return errors.New("preshared key is all zeros")
	}
	return checkRanges(np.IPv4Range, np.IPv6Range)
}

// PeerFilter selects peers; zero fields match everything.
type PeerFilter struct {
	Interface     string
	ProfileID     string
	UserID        string
	State         State
	ExpiresBefore time.Time // expires_at <= this (peers that never expire never match)
	CreatedBefore time.Time // created_at < this
	Limit         int       // 0 = no limit
}

// PeerCount is the number of peers in one interface, profile and state.
type PeerCount struct {
	Interface string
	ProfileID string
	State     State
	Count     int
}

// Notes put on a pending peer's C event when the peer is deleted before its
// connect script finished.
const (
	NoteStaleConnect   = "outcome unknown: connect script interrupted"
	NotePendingDeleted = "outcome unknown: peer deleted while its connect script ran"
)

// DeleteTerms checks the arguments of Store.DeletePeers the same way for
// every backend and derives what they imply: the lease end to record (zero
// when owner is empty: the D events are claimable at once), the hold (when
// the D event of a deleted pending peer is due, unleased: leaseUntil,
// whether or not owner is empty; zero for none; a backend many nodes
// share holds it at least until now plus the owning node's
// NodeDecl.ConnectHold, see Store.DeletePeers) and the last_error note
// that closes the running C event of a deleted pending peer
// (NoteStaleConnect for reason stale, else NotePendingDeleted). Errors: a
// reason that is not one of the removal reasons, or a non-zero leaseUntil
// that does not end after now (with an owner, a zero one too).
func DeleteTerms(reason, owner string, now, leaseUntil time.Time) (lease, hold time.Time, note string, err error) {
	switch reason {
	case ReasonDeleted, ReasonExpired, ReasonRevoked, ReasonStale, ReasonFailed, ReasonIdle:
	default:
		return time.Time{}, time.Time{}, "", fmt.Errorf("delete peers: reason %q is not one of deleted, expired, revoked, stale, failed, idle", reason)
	}
	if (owner != "" || !leaseUntil.IsZero()) && !leaseUntil.After(now) {
		what := "hold"
		if owner != "" {
			what = fmt.Sprintf("lease for %q", owner)
		}
		return time.Time{}, time.Time{}, "", fmt.Errorf("delete peers: %s must end after now (%s), got %s",
			what, now.Format(time.RFC3339Nano), leaseUntil.UTC().Format(time.RFC3339Nano))
	}
	hold = leaseUntil
	if owner != "" {
		lease = leaseUntil
	}
	note = NotePendingDeleted
	if reason == ReasonStale {
		note = NoteStaleConnect
	}
	return lease, hold, note, nil
}
