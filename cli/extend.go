package cli

import (
	"errors"
	"fmt"

	"github.com/wgkeeper/wgkeeper/internal/humanfmt"
	"github.com/wgkeeper/wgkeeper/reconcile"
	"github.com/wgkeeper/wgkeeper/store"
)

// cmdPeerExtend changes the expiry of one config (-key) or of every active
// config of a user (-user). No script runs.
func cmdPeerExtend(e *env, args []string) error {
	fs := newFlags("peer extend")
	key := fs.String("key", "", "the config's public key")
	user := fs.String("user", "", "every active config of this user")
	expires := fs.String("expires", "", "the new lifetime from now (30d, 12h), an RFC 3339 time, or 0 for never (required)")
	if err := parseFlags(e, fs, args, "peer extend",
		"Give a config (-key) or every active config of a user (-user) a new expiry,\nwithin the profile's max_expiry from now. It may be shorter than the old\none: the daemon expires it at the new time. No script runs and no event is\nrecorded; the peer on the device is untouched.",
		"wgkeeper peer extend -user alice -expires 30d"); err != nil {
		return err
	}
	if (*key == "") == (*user == "") {
		return usagef("peer extend needs -key or -user (one of them)")
	}
	var c reconcile.ExpiryChange
	switch *expires {
	case "":
		return usagef("peer extend needs -expires (30d, an RFC 3339 time, or 0 for never)")
	case "0":
		c.Never = true
	default:
		var err error
		if c.ExpiresAt, c.ExpiresIn, err = parseExpiry(*expires); err != nil {
			return usagef("-expires %q: want a duration such as 30d or 12h, an RFC 3339 time, or 0 for never", *expires)
		}
	}
	if *user != "" {
		if err := reconcile.ValidateUserID(*user); err != nil {
			return usagef("-user: %v", err)
		}
	}
	return e.withParts(func(p *parts) error {
		if *key != "" {
			k, err := reconcile.ParseKey(*key)
			if err != nil {
				return usagef("-key: %v", err)
			}
			peer, err := p.engine.SetExpiry(e.ctx, k, c)
			switch {
			case errors.Is(err, store.ErrNotFound):
				return fmt.Errorf("no config has the public key %s", k)
			case errors.Is(err, reconcile.ErrInProgress):
				return fmt.Errorf("the config %s is still being created (its connect script runs); try again when it is done", k)
			case errors.Is(err, reconcile.ErrExpired):
				return fmt.Errorf("the config %s has expired and is being removed; create a new one", k)
			case err != nil:
				return extendErr(err)
			}
			printExtended(e, []store.Peer{peer})
			return nil
		}
		peers, err := p.engine.SetUserExpiry(e.ctx, *user, c)
		if err != nil {
			return extendErr(err)
		}
		if len(peers) == 0 {
			return fmt.Errorf("user %s has no active config that has not expired", *user)
		}
		printExtended(e, peers)
		return nil
	})
}

// extendErr makes a bound violation a usage error (exit 2), naming -expires.
func extendErr(err error) error {
	var inv *reconcile.InvalidError
	if errors.As(err, &inv) {
		return usagef("-expires: %s", inv.Message)
	}
	return err
}

func printExtended(e *env, peers []store.Peer) {
	t := now()
	for _, p := range peers {
		if p.ExpiresAt.IsZero() {
			fmt.Fprintf(e.stdout, "%s (user %s, %s): never expires\n", p.PublicKey, p.UserID, p.ProfileID)
			continue
		}
		fmt.Fprintf(e.stdout, "%s (user %s, %s): expires %s (%s)\n", p.PublicKey, p.UserID, p.ProfileID,
			p.ExpiresAt.UTC().Format("2006-01-02 15:04:05 UTC"), humanfmt.Until(t, p.ExpiresAt))
	}
}
