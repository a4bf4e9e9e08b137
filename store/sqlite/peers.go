package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/store/internal/sqlrow"
)

// poolQuery finds the lowest free host index of a profile at or above ?3
// in O(log n): the smallest such index on the free list, else the
// high-water mark or ?3, whichever is higher (every index below the
// high-water mark is held or on the free list; see the ip_pools/ip_free
// tables and their triggers in the schema).
const poolQuery = `SELECT coalesce(
	(SELECT min(ip_index) FROM ip_free WHERE interface = ?1 AND profile_id = ?2 AND ip_index >= ?3),
	max(coalesce((SELECT next_index FROM ip_pools WHERE interface = ?1 AND profile_id = ?2), 0), ?3))`

// InsertPending creates a peer in state pending together with its C event
// (reason "created", status "running": the outbox never delivers it; the
// caller runs the connect script and then calls Activate or RejectPending).
// One immediate transaction checks the per-user limit, allocates the lowest
// free host index of the profile (IPv4 and IPv6 paired: index i is net+2+i in
// both), and inserts both rows; on any error nothing is written.
//
// Errors: ErrConflict if the key is already stored (for any user: the caller
// inspects GetPeer to tell an idempotent retry from a conflict) or an
// allocated address is taken on the interface (overlapping profiles);
// ErrLimitReached when the user already holds MaxPerUser peers in the
// profile; ErrPoolExhausted when no index is free. Indexes whose addresses
// lie in np.Avoid are skipped; the cost grows with len(np.Avoid), not with
// the number of peers.
func (s *Store) InsertPending(ctx context.Context, np store.NewPeer) (store.Peer, store.Event, error) {
	if err := np.Validate(); err != nil {
		return store.Peer{}, store.Event{}, fmt.Errorf("insert peer %s: %w", np.PublicKey, err)
	}
	v4 := np.IPv4Range.Masked()
	v6 := np.IPv6Range.Masked()
	capacity, err := store.Capacity(v4, v6)
	if err != nil {
		return store.Peer{}, store.Event{}, fmt.Errorf("insert peer %s: %w", np.PublicKey, err)
	}
	now := s.clock()
	pi, err := sqlrow.NewPendingInsert(np, now)
	if err != nil {
		return store.Peer{}, store.Event{}, fmt.Errorf("insert peer %s: %w", np.PublicKey, err)
	}
	p, createdAt, expiresAt, psk := pi.Peer, pi.CreatedAt, pi.ExpiresAt, pi.PSK
	key := np.PublicKey.String()
	avoid := store.AvoidSpans(v4, v6, np.Avoid, capacity)

	var ev store.Event
	err = s.write(ctx, func(tx *sql.Tx) error {
		var one int
		switch err := tx.QueryRowContext(ctx, `SELECT 1 FROM peers WHERE public_key = ?`, key).Scan(&one); {
		case err == nil:
			return fmt.Errorf("public key already in use: %w", store.ErrConflict)
		case !errors.Is(err, sql.ErrNoRows):
			return s.note(convErr(err))
		}
		if np.MaxPerUser > 0 {
			var n int
			if err := tx.QueryRowContext(ctx,
				`SELECT count(*) FROM peers WHERE user_id = ? AND interface = ? AND profile_id = ?`,
				np.UserID, np.Interface, np.ProfileID).Scan(&n); err != nil {
				return s.note(convErr(err))
			}
			if n >= np.MaxPerUser {
				return fmt.Errorf("user %q already has %d of at most %d configs in profile %q: %w",
					np.UserID, n, np.MaxPerUser, np.ProfileID, store.ErrLimitReached)
			}
		}
		var idx int64
		for from := int64(0); ; {
			if err := tx.QueryRowContext(ctx, poolQuery, np.Interface, np.ProfileID, from).Scan(&idx); err != nil {
				return s.note(convErr(err))
			}
			sp, skip := store.SpanOf(avoid, idx)
			if !skip {
				break
			}
			from = sp.Hi + 1
		}
		if idx >= capacity {
			if len(avoid) > 0 {
				return fmt.Errorf("all %d addresses of profile %q are in use or held by peers on the device that the store does not know: %w",
					capacity, np.ProfileID, store.ErrPoolExhausted)
			}
			return fmt.Errorf("all %d addresses of profile %q are in use: %w", capacity, np.ProfileID, store.ErrPoolExhausted)
		}
		p.IPv4 = store.HostAddr(v4, idx)
		p.IPv6 = store.HostAddr(v6, idx)
		if _, err := tx.ExecContext(ctx, `INSERT INTO peers (`+sqlrow.PeerColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			key, p.Interface, p.ProfileID, p.UserID, p.DisplayName, idx,
			sqlrow.EncAddr(p.IPv4), sqlrow.EncAddr(p.IPv6), psk, sqlrow.EncAddr(p.OriginatingIP),
			string(store.StatePending), createdAt, expiresAt); err != nil {
			err = s.note(convErr(err))
			if errors.Is(err, store.ErrConflict) {
				// The key was checked above: an address is taken, which only
				// overlapping profiles on one interface can cause.
				addr := p.IPv6
				if strings.Contains(err.Error(), "ip_four") {
					addr = p.IPv4
				}
				return fmt.Errorf("address %s is already in use on interface %q (do profiles overlap?): %w",
					addr, p.Interface, store.ErrConflict)
			}
			return err
		}
		ev = sqlrow.EventOf(p, store.KindConnect, store.ReasonCreated, store.StatusRunning, now)
		ev.Actor = np.Actor
		id, err := insertEvent(ctx, tx, &ev)
		ev.ID = id
		return err
	})
	if err != nil {
		return store.Peer{}, store.Event{}, fmt.Errorf("insert peer %s: %w", np.PublicKey, err)
	}
	return p, ev, nil
}

// insertEvent inserts ev (its ID is ignored) and returns the new id.
func insertEvent(ctx context.Context, tx *sql.Tx, ev *store.Event) (int64, error) {
	if ev.Scope == "" {
		ev.Scope = store.ScopeConfig
	}
	scope, sessionID := ev.Scope, sql.NullInt64{Int64: ev.SessionID, Valid: ev.SessionID != 0}
	vals := make([]any, 0, len(sqlrow.EventColumnNames)-1)
	for _, t := range []time.Time{ev.ExpiresAt, ev.CreatedAt, ev.NextAttemptAt, ev.DoneAt, ev.LeaseUntil, ev.StartedAt} {
		v, err := sqlrow.EncTime(t)
		if err != nil {
			return 0, err
		}
		vals = append(vals, v)
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO events (event, reason, public_key, interface, profile_id, user_id,
		ip_four, ip_six, originating_ip, expires_at, bytes_in, bytes_out, created_at,
		status, attempts, next_attempt_at, last_error, done_at, lease_owner, lease_until, started_at,
		actor, scope, session_id, rx_base, tx_base)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		ev.Kind, ev.Reason, ev.PublicKey.String(), ev.Interface, ev.ProfileID, ev.UserID,
		sqlrow.EncAddr(ev.IPv4), sqlrow.EncAddr(ev.IPv6), sqlrow.EncAddr(ev.OriginatingIP), vals[0], ev.BytesIn, ev.BytesOut, vals[1],
		ev.Status, ev.Attempts, vals[2], ev.LastError, vals[3], ev.LeaseOwner, vals[4], vals[5],
		sqlrow.EncActor(ev.Actor), scope, sessionID, ev.RxBase, ev.TxBase)
	if err != nil {
		return 0, convErr(err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return 0, convErr(err)
	}
	return id, nil
}

// peerState reads a peer's state inside tx; ErrNotFound if it has no row.
func peerState(ctx context.Context, tx *sql.Tx, key string) (store.State, error) {
	var st string
	if err := tx.QueryRowContext(ctx, `SELECT state FROM peers WHERE public_key = ?`, key).Scan(&st); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return "", fmt.Errorf("no such peer: %w", store.ErrNotFound)
		}
		return "", convErr(err)
	}
	return store.State(st), nil
}

// explainEvent says why an event update matched no row, as an error matching
// ErrNotFound or ErrConflict.
func explainEvent(ctx context.Context, q queryer, id int64, wantKind, wantStatus, wantKey, wantOwner string) error {
	var kind, status, key, owner string
	err := q.QueryRowContext(ctx, `SELECT event, status, public_key, lease_owner FROM events WHERE id = ?`, id).
		Scan(&kind, &status, &key, &owner)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("event %d: %w", id, store.ErrNotFound)
	case err != nil:
		return convErr(err)
	}
	return sqlrow.EventMismatch(id, kind, status, key, owner, wantKind, wantStatus, wantKey, wantOwner)
}

// Activate marks a pending peer active and its C event (cEventID, status
// running) done, in one transaction, after the connect script accepted it.
// Calling it again for an already active peer whose C event is done is a
// no-op. Errors: ErrNotFound if the peer or event does not exist (a stale
// cleanup may have removed it meanwhile); ErrConflict if the event is not
// this peer's running C event.
func (s *Store) Activate(ctx context.Context, key wgtypes.Key, cEventID int64) error {
	k := key.String()
	doneAt, err := sqlrow.EncTime(s.clock())
	if err != nil {
		return fmt.Errorf("activate peer %s: %w", key, err)
	}
	err = s.write(ctx, func(tx *sql.Tx) error {
		st, err := peerState(ctx, tx, k)
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE events SET status = 'done', done_at = ?, attempts = attempts + 1
			WHERE id = ? AND event = 'C' AND public_key = ? AND status = 'running'`, doneAt, cEventID, k)
		if err != nil {
			return s.note(convErr(err))
		}
		if n, _ := res.RowsAffected(); n == 0 {
			if st == store.StateActive {
				var status string
				err := tx.QueryRowContext(ctx, `SELECT status FROM events WHERE id = ? AND event = 'C' AND public_key = ?`,
					cEventID, k).Scan(&status)
				if err == nil && status == store.StatusDone {
					return nil // already activated
				}
			}
			return explainEvent(ctx, tx, cEventID, store.KindConnect, store.StatusRunning, k, "")
		}
		if _, err := tx.ExecContext(ctx, `UPDATE peers SET state = 'active' WHERE public_key = ?`, k); err != nil {
			return s.note(convErr(err))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("activate peer %s: %w", key, err)
	}
	return nil
}

// MarkConnectStarted records, in the running C event cEventID of a pending
// peer, that its connect script is about to start; the engine calls it right
// before starting the script. Calling it again changes nothing. Errors:
// ErrNotFound when the peer or the event no longer exists (the config was
// removed while its create waited: the script must then not run);
// ErrConflict when the peer is not pending or the event is not its running
// C event.
func (s *Store) MarkConnectStarted(ctx context.Context, key wgtypes.Key, cEventID int64) error {
	k := key.String()
	now, err := sqlrow.EncTime(s.clock())
	if err != nil {
		return fmt.Errorf("mark connect of %s started: %w", key, err)
	}
	err = s.write(ctx, func(tx *sql.Tx) error {
		st, err := peerState(ctx, tx, k)
		if err != nil {
			return err
		}
		if st != store.StatePending {
			return fmt.Errorf("peer is %s, only a pending peer's connect can start: %w", st, store.ErrConflict)
		}
		res, err := tx.ExecContext(ctx, `UPDATE events SET started_at = coalesce(started_at, ?)
			WHERE id = ? AND event = 'C' AND public_key = ? AND status = 'running'`, now, cEventID, k)
		if err != nil {
			return convErr(err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return explainEvent(ctx, tx, cEventID, store.KindConnect, store.StatusRunning, k, "")
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("mark connect of %s started: %w", key, err)
	}
	return nil
}

// RejectPending removes a pending peer and its running C event (cEventID) in
// one transaction, after the connect script refused it; its addresses become
// free. Errors: ErrNotFound if the peer or event does not exist; ErrConflict
// if the peer is active or the event is not its running C event. Nothing is
// changed on error.
func (s *Store) RejectPending(ctx context.Context, key wgtypes.Key, cEventID int64) error {
	k := key.String()
	err := s.write(ctx, func(tx *sql.Tx) error {
		st, err := peerState(ctx, tx, k)
		if err != nil {
			return err
		}
		if st != store.StatePending {
			return fmt.Errorf("peer is %s, only a pending peer can be rejected: %w", st, store.ErrConflict)
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM events WHERE id = ? AND event = 'C' AND public_key = ? AND status = 'running'`,
			cEventID, k)
		if err != nil {
			return s.note(convErr(err))
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return explainEvent(ctx, tx, cEventID, store.KindConnect, store.StatusRunning, k, "")
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM peers WHERE public_key = ?`, k); err != nil {
			return s.note(convErr(err))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("reject peer %s: %w", key, err)
	}
	return nil
}

// GetPeer returns the peer with this key, or an error matching ErrNotFound.
func (s *Store) GetPeer(ctx context.Context, key wgtypes.Key) (store.Peer, error) {
	if err := s.Fault(); err != nil {
		return store.Peer{}, err
	}
	var r sqlrow.PeerRow
	err := s.db.QueryRowContext(ctx, `SELECT `+sqlrow.PeerColumns+` FROM peers WHERE public_key = ?`, key.String()).Scan(r.Dest()...)
	if err != nil {
		return store.Peer{}, fmt.Errorf("get peer %s: %w", key, s.note(convErr(err)))
	}
	p, err := r.Decode()
	if err != nil {
		return store.Peer{}, fmt.Errorf("get peer %s: %w", key, err)
	}
	return p, nil
}

// ListPeers returns the peers matching f, ordered by interface, profile and
// host index (that is, by address within a profile).
func (s *Store) ListPeers(ctx context.Context, f store.PeerFilter) ([]store.Peer, error) {
	if err := s.Fault(); err != nil {
		return nil, err
	}
	var where []string
	var args []any
	add := func(cond string, arg any) {
		where = append(where, cond)
		args = append(args, arg)
	}
	if f.Interface != "" {
		add("interface = ?", f.Interface)
	}
	if f.ProfileID != "" {
		add("profile_id = ?", f.ProfileID)
	}
	if f.UserID != "" {
		add("user_id = ?", f.UserID)
	}
	if f.State != "" {
		if f.State != store.StatePending && f.State != store.StateActive {
			return nil, fmt.Errorf("list peers: unknown state %q (want pending or active)", f.State)
		}
		add("state = ?", string(f.State))
	}
	if !f.ExpiresBefore.IsZero() {
		v, err := sqlrow.EncTime(f.ExpiresBefore)
		if err != nil {
			return nil, fmt.Errorf("list peers: expires before: %w", err)
		}
		add("expires_at <= ?", v)
	}
	if !f.CreatedBefore.IsZero() {
		v, err := sqlrow.EncTime(f.CreatedBefore)
		if err != nil {
			return nil, fmt.Errorf("list peers: created before: %w", err)
		}
		add("created_at < ?", v)
	}
	q := `SELECT ` + sqlrow.PeerColumns + ` FROM peers`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY interface, profile_id, ip_index"
	if f.Limit > 0 {
		q += " LIMIT ?"
		args = append(args, f.Limit)
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list peers: %w", s.note(convErr(err)))
	}
	defer rows.Close()
	var out []store.Peer
	for rows.Next() {
		var r sqlrow.PeerRow
		if err := rows.Scan(r.Dest()...); err != nil {
			return nil, fmt.Errorf("list peers: %w", s.note(convErr(err)))
		}
		p, err := r.Decode()
		if err != nil {
			return nil, fmt.Errorf("list peers: %w", err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list peers: %w", s.note(convErr(err)))
	}
	return out, nil
}

// CountPeers counts peers per interface, profile and state (for metrics),
// ordered by those three; combinations without peers are absent.
func (s *Store) CountPeers(ctx context.Context) ([]store.PeerCount, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT interface, profile_id, state, count(*) FROM peers
		GROUP BY interface, profile_id, state ORDER BY interface, profile_id, state`)
	if err != nil {
		return nil, fmt.Errorf("count peers: %w", s.note(convErr(err)))
	}
	defer rows.Close()
	var out []store.PeerCount
	for rows.Next() {
		var c store.PeerCount
		var st string
		if err := rows.Scan(&c.Interface, &c.ProfileID, &st, &c.Count); err != nil {
			return nil, fmt.Errorf("count peers: %w", s.note(convErr(err)))
		}
		c.State = store.State(st)
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count peers: %w", s.note(convErr(err)))
	}
	return out, nil
}

// PoolUsage returns how many host indexes of the profile are taken (pending
// and active peers). See Capacity for the size of the pool.
func (s *Store) PoolUsage(ctx context.Context, iface, profile string) (int, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM peers WHERE interface = ? AND profile_id = ?`,
		iface, profile).Scan(&n); err != nil {
		return 0, fmt.Errorf("pool usage of %s/%s: %w", iface, profile, s.note(convErr(err)))
	}
	return n, nil
}

// CancelHeldDisconnect deletes the D events of key that DeletePeers held
// back, unleased and never attempted, because the config was removed while
// its connect script ran or waited to start; the engine calls it when that
// script then refused the config or never started, so no disconnect is
// announced for a connect that never happened. A C event of key whose
// script never started goes too, as for a rejected create. It returns how
// many D events were deleted.
func (s *Store) CancelHeldDisconnect(ctx context.Context, key wgtypes.Key) (int, error) {
	var n int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM events WHERE public_key = ? AND event = 'D' AND scope = 'config'
			AND status = 'pending' AND attempts = 0 AND lease_owner = ''`, key.String())
		if err != nil {
			return s.note(convErr(err))
		}
		n, _ = res.RowsAffected()
		if _, err := tx.ExecContext(ctx, `DELETE FROM events WHERE public_key = ? AND event = 'C' AND scope = 'config'
			AND status = 'done' AND started_at IS NULL AND last_error = ?`, key.String(), store.NotePendingDeleted); err != nil {
			return convErr(err)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("cancel held disconnect of %s: %w", key, err)
	}
	return int(n), nil
}

// DeletePeers implements store.Store.DeletePeers (its contract is
// written there); it records no actor.
func (s *Store) DeletePeers(ctx context.Context, keys []wgtypes.Key, reason, owner string, leaseUntil time.Time) ([]store.Event, error) {
	return s.DeletePeersBy(ctx, "", keys, reason, owner, leaseUntil)
}

// DeletePeersBy is DeletePeers recording actor (see store.Event.Actor) on
// every D event it inserts; an empty actor is not recorded.
func (s *Store) DeletePeersBy(ctx context.Context, actor string, keys []wgtypes.Key, reason, owner string, leaseUntil time.Time) ([]store.Event, error) {
	now := s.clock()
	leaseUntil, hold, note, err := store.DeleteTerms(reason, owner, now, leaseUntil)
	if err != nil {
		return nil, err
	}
	nowV, err := sqlrow.EncTime(now)
	if err != nil {
		return nil, fmt.Errorf("delete peers: %w", err)
	}
	var out []store.Event
	err = s.write(ctx, func(tx *sql.Tx) error {
		sel, err := tx.PrepareContext(ctx, `SELECT `+sqlrow.PeerColumns+` FROM peers WHERE public_key = ?`)
		if err != nil {
			return s.note(convErr(err))
		}
		defer sel.Close()
		del, err := tx.PrepareContext(ctx, `DELETE FROM peers WHERE public_key = ?`)
		if err != nil {
			return s.note(convErr(err))
		}
		defer del.Close()
		seen := make(map[wgtypes.Key]bool, len(keys))
		for _, key := range keys {
			if seen[key] {
				continue
			}
			seen[key] = true
			var r sqlrow.PeerRow
			if err := sel.QueryRowContext(ctx, key.String()).Scan(r.Dest()...); err != nil {
				if errors.Is(err, sql.ErrNoRows) {
					continue
				}
				return fmt.Errorf("peer %s: %w", key, s.note(convErr(err)))
			}
			p, err := r.Decode()
			if err != nil {
				return err
			}
			var tot struct{ in, out, rxBase, txBase int64 }
			if err := tx.QueryRowContext(ctx, `SELECT bytes_in, bytes_out, rx_base, tx_base FROM peers WHERE public_key = ?`,
				r.PublicKey).Scan(&tot.in, &tot.out, &tot.rxBase, &tot.txBase); err != nil {
				return fmt.Errorf("peer %s: %w", key, s.note(convErr(err)))
			}
			sessD, err := endOpenSession(ctx, tx, p, reason, now)
			if err != nil {
				return fmt.Errorf("peer %s: end its session: %w", key, s.note(err))
			}
			if _, err := del.ExecContext(ctx, r.PublicKey); err != nil {
				return fmt.Errorf("peer %s: %w", key, s.note(convErr(err)))
			}
			if p.State == store.StatePending && reason == store.ReasonStale {
				var started sql.NullInt64
				err := tx.QueryRowContext(ctx, `SELECT started_at FROM events
					WHERE event = 'C' AND public_key = ? AND status = 'running' ORDER BY id DESC LIMIT 1`, r.PublicKey).Scan(&started)
				if err != nil && !errors.Is(err, sql.ErrNoRows) {
					return fmt.Errorf("peer %s: %w", key, convErr(err))
				}
				if err == nil && !started.Valid {
					// Its connect script never started, and never will
					// (starting needs this row, gone now): the script
					// never saw a C, so there is no D either, and the C
					// event goes as for a rejected create.
					if _, err := tx.ExecContext(ctx, `DELETE FROM events WHERE event = 'C' AND public_key = ? AND status = 'running'`,
						r.PublicKey); err != nil {
						return fmt.Errorf("peer %s: %w", key, convErr(err))
					}
					continue
				}
			}
			if p.State == store.StatePending {
				if _, err := tx.ExecContext(ctx, `UPDATE events SET status = 'done', done_at = ?, last_error = ?
					WHERE event = 'C' AND public_key = ? AND status = 'running'`, nowV, note, r.PublicKey); err != nil {
					return fmt.Errorf("peer %s: %w", key, s.note(convErr(err)))
				}
			}
			if sessD != nil {
				// The session ends before the config does: its D comes
				// first, leased like the config's.
				sessD.NextAttemptAt, sessD.Actor = now, actor
				sessD.LeaseOwner, sessD.LeaseUntil = owner, leaseUntil.UTC()
				if leaseUntil.IsZero() {
					sessD.LeaseUntil = time.Time{}
				}
				id, err := insertEvent(ctx, tx, sessD)
				if err != nil {
					return fmt.Errorf("peer %s: %w", key, err)
				}
				sessD.ID = id
				out = append(out, *sessD)
			}
			ev := sqlrow.EventOf(p, store.KindDisconnect, reason, store.StatusPending, now)
			ev.Actor = actor
			ev.BytesIn, ev.BytesOut = tot.in, tot.out // the totals; SetEventsBytes adds the last counters
			ev.RxBase, ev.TxBase = tot.rxBase, tot.txBase
			ev.NextAttemptAt = now
			ev.LeaseOwner, ev.LeaseUntil = owner, leaseUntil.UTC()
			if leaseUntil.IsZero() {
				ev.LeaseUntil = time.Time{}
			}
			if p.State == store.StatePending && reason != store.ReasonStale && !hold.IsZero() {
				// Its connect script may still be running: the D event
				// is not handed to the caller but waits, unleased, until
				// that script must have ended, so a script never sees D
				// before C.
				ev.NextAttemptAt = hold.UTC()
				ev.LeaseOwner, ev.LeaseUntil = "", time.Time{}
			}
			id, err := insertEvent(ctx, tx, &ev)
			if err != nil {
				return fmt.Errorf("peer %s: %w", key, err)
			}
			ev.ID = id
			out = append(out, ev)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("delete peers: %w", err)
	}
	return out, nil
}
