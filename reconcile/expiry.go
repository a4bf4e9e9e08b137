package reconcile

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/config"
	"github.com/wgkeeper/wgkeeper/store"
)

// ErrExpired is an expiry change for a config whose expiry has passed: it
// is being removed (with its D event) and cannot be extended any more.
var ErrExpired = errors.New("the config has expired and is being removed")

// ExpiryChange asks for a config's new expiry: ExpiresAt, or ExpiresIn from
// now, or Never. Exactly one is set.
type ExpiryChange struct {
	ExpiresAt time.Time
	ExpiresIn time.Duration
	Never     bool
}

// target returns the new expiry (zero: never) for a config of prof at now,
// bounded like a create by the profile's max_expiry from now. Errors are
// *InvalidError naming expires_at or expires_in.
func (c ExpiryChange) target(prof config.Profile, now time.Time) (time.Time, error) {
	field := "expires_in"
	var at time.Time
	switch {
	case c.Never:
		if prof.MaxExpiry > 0 {
			return time.Time{}, invalid(field, "never (\"0\") is beyond profile %q's maximum lifetime of %s", prof.ID, config.FormatDuration(prof.MaxExpiry))
		}
		return time.Time{}, nil
	case !c.ExpiresAt.IsZero():
		field = "expires_at"
		at = c.ExpiresAt.UTC()
		if !at.After(now) {
			return time.Time{}, invalid(field, "%s is not in the future", at.Format(time.RFC3339))
		}
	case c.ExpiresIn > 0:
		at = now.Add(c.ExpiresIn)
	default:
		return time.Time{}, invalid(field, "give a new expiry: expires_at (RFC 3339) or expires_in (such as 30d; \"0\" = never)")
	}
	if prof.MaxExpiry > 0 && at.After(now.Add(prof.MaxExpiry)) {
		return time.Time{}, invalid(field, "%s is beyond profile %q's maximum lifetime of %s from now (%s)",
			at.Format(time.RFC3339), prof.ID, config.FormatDuration(prof.MaxExpiry), now.Add(prof.MaxExpiry).Format(time.RFC3339))
	}
	return at, nil
}

// SetExpiry gives the active config with this key a new expiry, within its
// profile's max_expiry from now, and returns it as stored. No script runs
// and no event is recorded (the config did not change hands); the peer on
// the device is untouched. A daemon re-arms its expiry timer on the change
// (it follows the store's Changes), so a shortened expiry is acted on
// at its new time. Errors: *InvalidError for a change outside the bounds;
// store.ErrNotFound when no config has the key; ErrInProgress while its
// connect script runs; ErrExpired when its expiry has passed already.
func (e *Engine) SetExpiry(ctx context.Context, key wgtypes.Key, c ExpiryChange) (store.Peer, error) {
	p, err := e.store.GetPeer(ctx, key)
	if err != nil {
		return store.Peer{}, err
	}
	if p.State != store.StateActive {
		return store.Peer{}, fmt.Errorf("change expiry of %s: its connect script still runs: %w", key, ErrInProgress)
	}
	got, err := e.setExpiry(ctx, []store.Peer{p}, c)
	if err != nil {
		return store.Peer{}, err
	}
	if len(got) == 1 {
		return got[0], nil
	}
	// Skipped by the store: removed meanwhile, or expired.
	if _, gerr := e.store.GetPeer(ctx, key); errors.Is(gerr, store.ErrNotFound) {
		return store.Peer{}, gerr
	}
	return store.Peer{}, fmt.Errorf("change expiry of %s (expired %s): %w", key, p.ExpiresAt.Format(time.RFC3339), ErrExpired)
}

// SetUserExpiry gives every active, unexpired config of user the same new
// expiry, in one transaction, and returns the configs changed (none when
// the user has none). The change must fit the max_expiry of every profile
// involved, or nothing changes. Otherwise as SetExpiry.
func (e *Engine) SetUserExpiry(ctx context.Context, user string, c ExpiryChange) ([]store.Peer, error) {
	if err := ValidateUserID(user); err != nil {
		return nil, err
	}
	peers, err := e.store.ListPeers(ctx, store.PeerFilter{UserID: user, State: store.StateActive})
	if err != nil {
		return nil, fmt.Errorf("change expiry of %s's configs: %w", user, err)
	}
	return e.setExpiry(ctx, peers, c)
}

func (e *Engine) setExpiry(ctx context.Context, peers []store.Peer, c ExpiryChange) ([]store.Peer, error) {
	if len(peers) == 0 {
		return nil, nil
	}
	cfg := e.Config()
	now := e.clock()
	var at time.Time
	for i, p := range peers {
		prof, ok := cfg.Profile(p.ProfileID)
		if !ok {
			return nil, fmt.Errorf("change expiry of %s: profile %q is not in the config any more", p.PublicKey, p.ProfileID)
		}
		t, err := c.target(prof, now)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			at = t // the same for every profile; only the bounds differ
		}
	}
	was := make(map[wgtypes.Key]time.Time, len(peers))
	for _, p := range peers {
		was[p.PublicKey] = p.ExpiresAt
	}
	got, err := e.store.SetExpiry(ctx, keysOf(peers), at)
	if err != nil {
		return nil, err
	}
	for _, p := range got {
		e.log.Info("expiry changed", "iface", p.Interface, "peer", p.PublicKey.String(), "user", p.UserID,
			"expires_at", timeString(p.ExpiresAt), "was", timeString(was[p.PublicKey]), "actor", ActorFrom(ctx))
	}
	return got, nil
}
