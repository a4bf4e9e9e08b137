package postgres

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/store/internal/sqlrow"
)

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
	avoidLo, avoidHi := make([]int64, len(avoid)), make([]int64, len(avoid))
	for i, sp := range avoid {
		avoidLo[i], avoidHi[i] = sp.Lo, sp.Hi
	}
	var net4, net6 any
	if v4.IsValid() {
		net4 = v4.Addr().String()
	}
	if v6.IsValid() {
		net6 = v6.Addr().String()
	}

	// One call, one round trip: wgk_insert_pending (migration 0003) locks
	// the profile's pool row, then checks the key and the per-user limit,
	// takes the lowest free index and inserts the peer and its C event.
	var (
		outcome    string
		held       *int32
		idx, evID  *int64
		ip4s, ip6s *string
	)
	err = s.call(ctx, func() error {
		err := s.pool.QueryRow(ctx, `SELECT * FROM wgk_insert_pending($1, $2, $3, $4, $5, $6::inet, $7::inet, $8, $9, $10, $11,
			$12, $13, $14, $15, $16)`,
			key, p.Interface, p.ProfileID, p.UserID, p.DisplayName, net4, net6, psk, sqlrow.EncAddr(p.OriginatingIP),
			createdAt, expiresAt, sqlrow.EncActor(np.Actor), np.MaxPerUser, capacity, avoidLo, avoidHi).
			Scan(&outcome, &held, &idx, &ip4s, &ip6s, &evID)
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "23505" && pe.ConstraintName == "peers_pool" {
			return fmt.Errorf("%w: %w", err, errRetry) // the last guard: never expected under the pool lock
		}
		return err
	})
	if err == nil {
		switch outcome {
		case "created":
		case "key_in_use":
			err = fmt.Errorf("public key already in use: %w", store.ErrConflict)
		case "limit":
			err = fmt.Errorf("user %q already has %d of at most %d configs in profile %q: %w",
				np.UserID, deref(held), np.MaxPerUser, np.ProfileID, store.ErrLimitReached)
		case "exhausted":
			if len(avoid) > 0 {
				err = fmt.Errorf("all %d addresses of profile %q are in use or held by peers on the device that the store does not know: %w",
					capacity, np.ProfileID, store.ErrPoolExhausted)
			} else {
				err = fmt.Errorf("all %d addresses of profile %q are in use: %w", capacity, np.ProfileID, store.ErrPoolExhausted)
			}
		case "address_in_use":
			addr := derefStr(ip4s)
			if addr == "" {
				addr = derefStr(ip6s)
			}
			err = fmt.Errorf("address %s is already in use on interface %q (do profiles overlap?): %w", addr, p.Interface, store.ErrConflict)
		default:
			err = fmt.Errorf("the database answered %q", outcome)
		}
	} else {
		err = explainInsert(err, np.ProfileID, p.Interface)
	}
	if err != nil {
		return store.Peer{}, store.Event{}, fmt.Errorf("insert peer %s: %w", np.PublicKey, err)
	}
	p.IPv4 = store.HostAddr(v4, *idx)
	p.IPv6 = store.HostAddr(v6, *idx)
	if got, want := derefStr(ip4s)+" "+derefStr(ip6s), addrText(p.IPv4)+" "+addrText(p.IPv6); got != want {
		// The row holds other text than the program would have written:
		// never expected (TestAddrText compares the two forms).
		s.log.Error("stored addresses differ from the computed ones", "peer", key, "stored", got, "computed", want)
	}
	ev := sqlrow.EventOf(p, store.KindConnect, store.ReasonCreated, store.StatusRunning, now)
	ev.Actor = np.Actor
	ev.Scope = store.ScopeConfig
	ev.ID = *evID
	return p, ev, nil
}

// explainInsert gives a failed wgk_insert_pending call its meaning: a
// unique violation is a key stored since the check, a host index taken
// concurrently (never expected under the pool lock; retried) or an
// address another profile's peer holds on the interface.
func explainInsert(err error, profile, iface string) error {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "23505" {
		return convErr(err)
	}
	switch pe.ConstraintName {
	case "peers_pkey":
		return fmt.Errorf("public key already in use: %w", store.ErrConflict)
	case "peers_pool":
		return fmt.Errorf("a host index of profile %q was taken concurrently: %w", profile, store.ErrConflict)
	}
	return fmt.Errorf("an address allocated in profile %q is already in use on interface %q (do profiles overlap?): %s: %w",
		profile, iface, pe.Detail, store.ErrConflict)
}

func deref[T any](v *T) T {
	if v == nil {
		var zero T
		return zero
	}
	return *v
}

func derefStr(v *string) string { return deref(v) }

func addrText(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// insertEvent inserts ev (its ID is ignored) and returns the new id.
func insertEvent(ctx context.Context, tx pgx.Tx, ev *store.Event) (int64, error) {
	if ev.Scope == "" {
		ev.Scope = store.ScopeConfig
	}
	var sessionID any
	if ev.SessionID != 0 {
		sessionID = ev.SessionID
	}
	vals := make([]any, 0, len(sqlrow.EventColumnNames)-1)
	for _, t := range []time.Time{ev.ExpiresAt, ev.CreatedAt, ev.NextAttemptAt, ev.DoneAt, ev.LeaseUntil, ev.StartedAt} {
		v, err := sqlrow.EncTime(t)
		if err != nil {
			return 0, err
		}
		vals = append(vals, v)
	}
	var id int64
	err := tx.QueryRow(ctx, `INSERT INTO events (event, reason, public_key, interface, profile_id, user_id,
		ip_four, ip_six, originating_ip, expires_at, bytes_in, bytes_out, created_at,
		status, attempts, next_attempt_at, last_error, done_at, lease_owner, lease_until, started_at, actor,
		scope, session_id, rx_base, tx_base)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22,
		$23, $24, $25, $26)
		RETURNING id`,
		ev.Kind, ev.Reason, ev.PublicKey.String(), ev.Interface, ev.ProfileID, ev.UserID,
		sqlrow.EncAddr(ev.IPv4), sqlrow.EncAddr(ev.IPv6), sqlrow.EncAddr(ev.OriginatingIP), vals[0], ev.BytesIn, ev.BytesOut, vals[1],
		ev.Status, ev.Attempts, vals[2], ev.LastError, vals[3], ev.LeaseOwner, vals[4], vals[5], sqlrow.EncActor(ev.Actor),
		ev.Scope, sessionID, ev.RxBase, ev.TxBase).Scan(&id)
	if err != nil {
		return 0, convErr(err)
	}
	return id, nil
}

// peerState reads a peer's state inside tx; ErrNotFound if it has no row.
func peerState(ctx context.Context, tx pgx.Tx, key string) (store.State, error) {
	var st string
	if err := tx.QueryRow(ctx, `SELECT state FROM peers WHERE public_key = $1`, key).Scan(&st); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return "", fmt.Errorf("no such peer: %w", store.ErrNotFound)
		}
		return "", convErr(err)
	}
	return store.State(st), nil
}

// explainEvent says why an event update matched no row, as an error matching
// ErrNotFound or ErrConflict.
func explainEvent(ctx context.Context, q querier, id int64, wantKind, wantStatus, wantKey, wantOwner string) error {
	var kind, status, key, owner string
	err := q.QueryRow(ctx, `SELECT event, status, public_key, lease_owner FROM events WHERE id = $1`, id).
		Scan(&kind, &status, &key, &owner)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
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
	var outcome string
	err = s.call(ctx, func() error {
		return s.pool.QueryRow(ctx, `SELECT wgk_activate($1, $2, $3)`, k, cEventID, doneAt).Scan(&outcome)
	})
	switch {
	case err != nil:
		err = convErr(err)
	case outcome == "activated", outcome == "already":
	case outcome == "no_peer":
		err = fmt.Errorf("no such peer: %w", store.ErrNotFound)
	case outcome == "unmatched":
		err = explainEvent(ctx, s.pool, cEventID, store.KindConnect, store.StatusRunning, k, "")
	default:
		err = fmt.Errorf("the database answered %q", outcome)
	}
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
	var outcome string
	var state *string
	err = s.call(ctx, func() error {
		return s.pool.QueryRow(ctx, `SELECT * FROM wgk_connect_started($1, $2, $3)`, k, cEventID, now).Scan(&outcome, &state)
	})
	switch {
	case err != nil:
		err = convErr(err)
	case outcome == "started":
	case outcome == "no_peer":
		err = fmt.Errorf("no such peer: %w", store.ErrNotFound)
	case outcome == "not_pending":
		err = fmt.Errorf("peer is %s, only a pending peer's connect can start: %w", deref(state), store.ErrConflict)
	case outcome == "unmatched":
		err = explainEvent(ctx, s.pool, cEventID, store.KindConnect, store.StatusRunning, k, "")
	default:
		err = fmt.Errorf("the database answered %q", outcome)
	}
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
	err := s.write(ctx, func(tx pgx.Tx) error {
		st, err := peerState(ctx, tx, k)
		if err != nil {
			return err
		}
		if st != store.StatePending {
			return fmt.Errorf("peer is %s, only a pending peer can be rejected: %w", st, store.ErrConflict)
		}
		res, err := tx.Exec(ctx, `DELETE FROM events WHERE id = $1 AND event = 'C' AND public_key = $2 AND status = 'running'`,
			cEventID, k)
		if err != nil {
			return convErr(err)
		}
		if n := res.RowsAffected(); n == 0 {
			return explainEvent(ctx, tx, cEventID, store.KindConnect, store.StatusRunning, k, "")
		}
		if _, err := tx.Exec(ctx, `DELETE FROM peers WHERE public_key = $1`, k); err != nil {
			return convErr(err)
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
	var r sqlrow.PeerRow
	err := s.pool.QueryRow(ctx, `SELECT `+sqlrow.PeerColumns+` FROM peers WHERE public_key = $1`, key.String()).Scan(r.Dest()...)
	if err != nil {
		return store.Peer{}, fmt.Errorf("get peer %s: %w", key, convErr(err))
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
	var where []string
	var args []any
	add := func(cond string, arg any) { // cond holds one "?"
		args = append(args, arg)
		where = append(where, strings.Replace(cond, "?", fmt.Sprintf("$%d", len(args)), 1))
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
		args = append(args, f.Limit)
		q += fmt.Sprintf(" LIMIT $%d", len(args))
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list peers: %w", convErr(err))
	}
	defer rows.Close()
	var out []store.Peer
	for rows.Next() {
		var r sqlrow.PeerRow
		if err := rows.Scan(r.Dest()...); err != nil {
			return nil, fmt.Errorf("list peers: %w", convErr(err))
		}
		p, err := r.Decode()
		if err != nil {
			return nil, fmt.Errorf("list peers: %w", err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list peers: %w", convErr(err))
	}
	return out, nil
}

// CountPeers counts peers per interface, profile and state (for metrics),
// ordered by those three; combinations without peers are absent.
func (s *Store) CountPeers(ctx context.Context) ([]store.PeerCount, error) {
	rows, err := s.pool.Query(ctx, `SELECT interface, profile_id, state, count(*) FROM peers
		GROUP BY interface, profile_id, state ORDER BY interface, profile_id, state`)
	if err != nil {
		return nil, fmt.Errorf("count peers: %w", convErr(err))
	}
	defer rows.Close()
	var out []store.PeerCount
	for rows.Next() {
		var c store.PeerCount
		var st string
		if err := rows.Scan(&c.Interface, &c.ProfileID, &st, &c.Count); err != nil {
			return nil, fmt.Errorf("count peers: %w", convErr(err))
		}
		c.State = store.State(st)
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count peers: %w", convErr(err))
	}
	return out, nil
}

// PoolUsage returns how many host indexes of the profile are taken (pending
// and active peers). See Capacity for the size of the pool.
func (s *Store) PoolUsage(ctx context.Context, iface, profile string) (int, error) {
	var n int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM peers WHERE interface = $1 AND profile_id = $2`,
		iface, profile).Scan(&n); err != nil {
		return 0, fmt.Errorf("pool usage of %s/%s: %w", iface, profile, convErr(err))
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
	err := s.write(ctx, func(tx pgx.Tx) error {
		res, err := tx.Exec(ctx, `DELETE FROM events WHERE public_key = $1 AND event = 'D' AND scope = 'config'
			AND status = 'pending' AND attempts = 0 AND lease_owner = ''`, key.String())
		if err != nil {
			return convErr(err)
		}
		n = res.RowsAffected()
		if _, err := tx.Exec(ctx, `DELETE FROM events WHERE public_key = $1 AND event = 'C' AND scope = 'config'
			AND status = 'done' AND started_at IS NULL AND last_error = $2`, key.String(), store.NotePendingDeleted); err != nil {
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
	err = s.write(ctx, func(tx pgx.Tx) error {
		out = nil // a retried transaction starts over
		strs := make([]string, len(keys))
		for i, k := range keys {
			strs[i] = k.String()
		}
		// The traffic totals and counter bases go into the D events; the
		// rows are locked in key order, as the delete below locks them.
		type totals struct{ in, out, rxBase, txBase int64 }
		tots := map[string]totals{}
		trows, err := tx.Query(ctx, `SELECT public_key, bytes_in, bytes_out, rx_base, tx_base FROM peers
			WHERE public_key = ANY($1) ORDER BY public_key FOR UPDATE`, strs)
		if err != nil {
			return convErr(err)
		}
		for trows.Next() {
			var k string
			var t totals
			if err := trows.Scan(&k, &t.in, &t.out, &t.rxBase, &t.txBase); err != nil {
				trows.Close()
				return convErr(err)
			}
			tots[k] = t
		}
		trows.Close()
		if err := trows.Err(); err != nil {
			return convErr(err)
		}
		// One statement deletes them all (in key order, so that two
		// overlapping deletes lock their rows in one order), and returns
		// with each the connect hold its owning node registered (0 when
		// no node declares its interface).
		ownerHoldCol := `coalesce((SELECT n.connect_hold FROM node_interfaces ni
				JOIN nodes n ON n.name = ni.node WHERE ni.interface = peers.interface), 0)`
		if s.noConnectHold {
			ownerHoldCol = `0::bigint`
		}
		rows, err := tx.Query(ctx, `DELETE FROM peers WHERE public_key IN (
				SELECT public_key FROM peers WHERE public_key = ANY($1) ORDER BY public_key FOR UPDATE)
			RETURNING `+sqlrow.PeerColumns+`, `+ownerHoldCol, strs)
		if err != nil {
			return convErr(err)
		}
		deleted := make(map[string]sqlrow.PeerRow, len(keys))
		ownerHold := make(map[string]time.Duration, len(keys))
		for rows.Next() {
			var r sqlrow.PeerRow
			var oh int64
			if err := rows.Scan(append(r.Dest(), &oh)...); err != nil {
				rows.Close()
				return convErr(err)
			}
			deleted[r.PublicKey] = r
			ownerHold[r.PublicKey] = time.Duration(oh)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return convErr(err)
		}
		for _, key := range keys {
			r, ok := deleted[key.String()]
			if !ok {
				continue
			}
			delete(deleted, key.String()) // repeated keys count once
			p, err := r.Decode()
			if err != nil {
				return err
			}
			if p.State == store.StatePending && reason == store.ReasonStale {
				var started *int64
				err := tx.QueryRow(ctx, `SELECT started_at FROM events
					WHERE event = 'C' AND public_key = $1 AND status = 'running' ORDER BY id DESC LIMIT 1`, r.PublicKey).Scan(&started)
				if err != nil && !errors.Is(err, pgx.ErrNoRows) {
					return fmt.Errorf("peer %s: %w", key, convErr(err))
				}
				if err == nil && started == nil {
					// Its connect script never started, and never will
					// (starting needs this row, gone now): the script
					// never saw a C, so there is no D either, and the C
					// event goes as for a rejected create.
					if _, err := tx.Exec(ctx, `DELETE FROM events WHERE event = 'C' AND public_key = $1 AND status = 'running'`,
						r.PublicKey); err != nil {
						return fmt.Errorf("peer %s: %w", key, convErr(err))
					}
					continue
				}
			}
			if p.State == store.StatePending {
				if _, err := tx.Exec(ctx, `UPDATE events SET status = 'done', done_at = $1, last_error = $2
					WHERE event = 'C' AND public_key = $3 AND status = 'running'`, nowV, note, r.PublicKey); err != nil {
					return fmt.Errorf("peer %s: %w", key, convErr(err))
				}
			}
			sessD, err := closeSession(ctx, tx, p, reason, now, nil, now)
			if err != nil {
				return fmt.Errorf("peer %s: end its session: %w", key, err)
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
			t := tots[p.PublicKey.String()]
			ev.BytesIn, ev.BytesOut = t.in, t.out // the totals; SetEventsBytes adds the last counters
			ev.RxBase, ev.TxBase = t.rxBase, t.txBase
			ev.NextAttemptAt = now
			ev.LeaseOwner, ev.LeaseUntil = owner, leaseUntil.UTC()
			if leaseUntil.IsZero() {
				ev.LeaseUntil = time.Time{}
			}
			// Its connect script may be running on the node that owns
			// it, whose scripts may run longer than the caller's: the
			// later of the caller's hold and that node's.
			due := hold
			if oh := ownerHold[p.PublicKey.String()]; oh > 0 && now.Add(oh).After(due) {
				due = now.Add(oh)
			}
			if p.State == store.StatePending && reason != store.ReasonStale && !due.IsZero() {
				// Its connect script may still be running: the D event
				// is not handed to the caller but waits, unleased, until
				// that script must have ended, so a script never sees D
				// before C.
				ev.NextAttemptAt = due.UTC()
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
