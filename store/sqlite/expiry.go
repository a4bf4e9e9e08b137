package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/store/internal/sqlrow"
)

// SetExpiry sets expires_at to at (zero: never) on those of keys that are
// active and not expired at the store's clock, in one transaction, and
// returns them as updated, each once, in the order of keys. No event is
// recorded: the config did not change hands.
//
// Keys that are missing, pending (their connect script still runs) or
// already expired (about to be removed by the next expiry run, which may
// already have listed them) are skipped and absent from the result; the
// caller tells them apart with GetPeer. Skipping expired rows is what keeps
// a change from racing an expiry run: a row that run may remove is never
// given a new expiry. Errors: at outside the storable range, or a database
// error (nothing changed then).
func (s *Store) SetExpiry(ctx context.Context, keys []wgtypes.Key, at time.Time) ([]store.Peer, error) {
	atV, err := sqlrow.EncTime(at)
	if err != nil {
		return nil, fmt.Errorf("set expiry: %w", err)
	}
	nowV, err := sqlrow.EncTime(s.clock())
	if err != nil {
		return nil, fmt.Errorf("set expiry: %w", err)
	}
	var out []store.Peer
	err = s.write(ctx, func(tx *sql.Tx) error {
		upd, err := tx.PrepareContext(ctx, `UPDATE peers SET expires_at = ?
			WHERE public_key = ? AND state = 'active' AND (expires_at IS NULL OR expires_at > ?)
			RETURNING `+sqlrow.PeerColumns)
		if err != nil {
			return convErr(err)
		}
		defer upd.Close()
		seen := make(map[wgtypes.Key]bool, len(keys))
		for _, key := range keys {
			if seen[key] {
				continue
			}
			seen[key] = true
			var r sqlrow.PeerRow
			if err := upd.QueryRowContext(ctx, atV, key.String(), nowV).Scan(r.Dest()...); err != nil {
				if errors.Is(err, sql.ErrNoRows) {
					continue
				}
				return fmt.Errorf("peer %s: %w", key, convErr(err))
			}
			p, err := r.Decode()
			if err != nil {
				return fmt.Errorf("peer %s: %w", key, err)
			}
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("set expiry: %w", err)
	}
	return out, nil
}
