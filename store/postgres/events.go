package postgres

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/store/internal/sqlrow"
)

// scanEvents reads rows of sqlrow.EventColumns.
func scanEvents(rows pgx.Rows) ([]store.Event, error) {
	defer rows.Close()
	var out []store.Event
	for rows.Next() {
		var r sqlrow.EventRow
		if err := rows.Scan(r.Dest()...); err != nil {
			return nil, convErr(err)
		}
		e, err := r.Decode()
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, convErr(err)
	}
	return out, nil
}

// SetEventBytes records the byte counters read from the device into a pending
// D event. Errors: ErrNotFound if there is no such event; ErrConflict if it
// is not a pending D event (already delivered, or a C event).
func (s *Store) SetEventBytes(ctx context.Context, id int64, in, out int64) error {
	return s.SetEventsBytes(ctx, []store.EventBytes{{ID: id, In: in, Out: out}})
}

// SetEventsBytes is SetEventBytes for many events in one transaction; it
// writes all or none.
func (s *Store) SetEventsBytes(ctx context.Context, bs []store.EventBytes) error {
	for _, b := range bs {
		if b.In < 0 || b.Out < 0 {
			return fmt.Errorf("set bytes of event %d: negative counter (in %d, out %d)", b.ID, b.In, b.Out)
		}
	}
	if len(bs) == 0 {
		return nil
	}
	err := s.write(ctx, func(tx pgx.Tx) error {
		for _, b := range bs {
			// The counters are added to the totals recorded with the
			// event as deltas against its bases; a counter below its base
			// was reset and counts whole.
			res, err := tx.Exec(ctx, `UPDATE events
				SET bytes_in = least(bytes_in::numeric + CASE WHEN $1::bigint >= rx_base THEN $1::bigint - rx_base ELSE $1::bigint END, 9223372036854775807)::bigint,
				    bytes_out = least(bytes_out::numeric + CASE WHEN $2::bigint >= tx_base THEN $2::bigint - tx_base ELSE $2::bigint END, 9223372036854775807)::bigint
				WHERE id = $3 AND event = 'D' AND scope = 'config' AND status = 'pending'`, b.In, b.Out, b.ID)
			if err != nil {
				return fmt.Errorf("event %d: %w", b.ID, convErr(err))
			}
			if n := res.RowsAffected(); n == 0 {
				return fmt.Errorf("event %d: %w", b.ID, explainEvent(ctx, tx, b.ID, store.KindDisconnect, store.StatusPending, "", ""))
			}
		}
		return nil
	})
	if err != nil {
		if len(bs) == 1 {
			return fmt.Errorf("set bytes of event %d: %w", bs[0].ID, errors.Unwrap(err))
		}
		return fmt.Errorf("set bytes of events: %w", err)
	}
	return nil
}

// ClaimDue leases up to limit D events that are pending, due
// (next_attempt_at <= now) and not under a live lease (none, or lease_until <
// now), in id order, to owner until leaseUntil, in one atomic update: two
// claimers, in one process or two, never get the same event while its lease
// lives. An expired lease (its holder crashed) is simply claimed again. The
// events are returned in id order with their new lease. With Options.Node
// only the events that node delivers are claimed: its own, and those no
// node owns of Options.Interfaces.
func (s *Store) ClaimDue(ctx context.Context, owner string, now, leaseUntil time.Time, limit int) ([]store.Event, error) {
	nowV, untilV, err := sqlrow.ClaimArgs(owner, now, leaseUntil, limit)
	if err != nil {
		return nil, err
	}
	var out []store.Event
	err = s.write(ctx, func(tx pgx.Tx) error {
		// SKIP LOCKED: an event another claimer is taking right now is
		// not waited for but left to it; one whose claim committed
		// meanwhile is re-checked against the lease condition.
		rows, err := tx.Query(ctx, `UPDATE events SET lease_owner = $1, lease_until = $2
			WHERE id IN (SELECT id FROM events
				WHERE status = 'pending' AND (event = 'D' OR scope = 'session') AND next_attempt_at <= $3
				  AND (lease_owner = '' OR lease_until IS NULL OR lease_until < $3)
				  AND `+mineEvents("$5", "$6")+`
				ORDER BY id LIMIT $4
				FOR UPDATE SKIP LOCKED)
			RETURNING `+sqlrow.EventColumns, owner, untilV, nowV, limit, s.node, s.ifaces)
		if err != nil {
			return convErr(err)
		}
		out, err = scanEvents(rows)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("claim due events for %q: %w", owner, err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// ReleaseLeases ends every lease held by the process named holder, whose
// holder has died: the leased D events become claimable at once, at their
// own next_attempt_at, instead of when the lease would run out. A lease
// owner names its process, optionally followed by "/" and a claim token
// (as the engine's per-claim owners do); holder is the process part, so it
// must be non-empty and contain no "/". Nothing else of the events changes
// (attempts, status). It returns how many leases were released; releasing
// the leases of a holder that has none is not an error.
//
// The caller must know the holder is gone: a live holder would go on
// running events someone else may now claim.
func (s *Store) ReleaseLeases(ctx context.Context, holder string) (int, error) {
	if holder == "" || strings.Contains(holder, "/") {
		return 0, fmt.Errorf("release leases of %q: the holder must be a non-empty process name without \"/\"", holder)
	}
	var n int64
	err := s.write(ctx, func(tx pgx.Tx) error {
		res, err := tx.Exec(ctx, `UPDATE events SET lease_owner = '', lease_until = NULL
			WHERE status = 'pending' AND (event = 'D' OR scope = 'session')
			  AND (lease_owner = $1 OR substr(lease_owner, 1, length($1) + 1) = $1 || '/')`, holder)
		if err != nil {
			return convErr(err)
		}
		n = res.RowsAffected()
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("release leases of %q: %w", holder, err)
	}
	return int(n), nil
}

// MarkDone records a successful delivery of event id: status done, attempts
// incremented, lease released. Only the lease holder may do so — owner must
// still hold the lease, even an expired one nobody else has claimed since.
// Errors: ErrNotFound if there is no such event; ErrConflict if it is not a
// pending D event or another owner holds it (then that owner delivers it).
func (s *Store) MarkDone(ctx context.Context, id int64, owner string) error {
	if owner == "" {
		return fmt.Errorf("mark event %d done: owner is empty", id)
	}
	doneAt, err := sqlrow.EncTime(s.clock())
	if err != nil {
		return fmt.Errorf("mark event %d done: %w", id, err)
	}
	err = s.write(ctx, func(tx pgx.Tx) error {
		res, err := tx.Exec(ctx, `UPDATE events SET status = 'done', done_at = $1, attempts = attempts + 1,
				last_error = '', next_attempt_at = NULL, lease_owner = '', lease_until = NULL
			WHERE id = $2 AND (event = 'D' OR scope = 'session') AND status = 'pending' AND lease_owner = $3`, doneAt, id, owner)
		if err != nil {
			return convErr(err)
		}
		if n := res.RowsAffected(); n == 0 {
			return explainEvent(ctx, tx, id, "", store.StatusPending, "", owner)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("mark event %d done: %w", id, err)
	}
	return nil
}

// RenewLease extends owner's lease on the pending D event id to until, just
// before its script runs. It fails with ErrConflict when owner no longer
// holds a live lease (it ran out and another claim may have taken the
// event): the caller must then not run the script.
func (s *Store) RenewLease(ctx context.Context, id int64, owner string, until time.Time) error {
	nowV, err := sqlrow.EncTime(s.clock())
	if err != nil {
		return fmt.Errorf("renew lease of event %d: %w", id, err)
	}
	untilV, err := sqlrow.EncTime(until)
	if err != nil || untilV == nil {
		return fmt.Errorf("renew lease of event %d: bad time %v", id, until)
	}
	err = s.write(ctx, func(tx pgx.Tx) error {
		res, err := tx.Exec(ctx, `UPDATE events SET lease_until = $1
			WHERE id = $2 AND (event = 'D' OR scope = 'session') AND status = 'pending' AND lease_owner = $3 AND lease_until >= $4`,
			untilV, id, owner, nowV)
		if err != nil {
			return convErr(err)
		}
		if n := res.RowsAffected(); n == 0 {
			return fmt.Errorf("lease not held by %q: %w", owner, store.ErrConflict)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("renew lease of event %d: %w", id, err)
	}
	return nil
}

// MarkAttemptFailed records a failed delivery of event id by its lease holder
// owner: attempts incremented, last_error set (cut to MaxErrorLen), lease
// released, and either status pending with next_attempt_at = next, or, when
// final, status failed. Errors as MarkDone.
func (s *Store) MarkAttemptFailed(ctx context.Context, id int64, owner, errMsg string, next time.Time, final bool) error {
	if owner == "" {
		return fmt.Errorf("mark event %d failed: owner is empty", id)
	}
	status := store.StatusPending
	var nextV any
	if final {
		status = store.StatusFailed
	} else {
		if next.IsZero() {
			return fmt.Errorf("mark event %d failed: no next attempt time for a non-final failure", id)
		}
		v, err := sqlrow.EncTime(next)
		if err != nil {
			return fmt.Errorf("mark event %d failed: next attempt: %w", id, err)
		}
		nextV = v
	}
	err := s.write(ctx, func(tx pgx.Tx) error {
		res, err := tx.Exec(ctx, `UPDATE events SET status = $1, attempts = attempts + 1, last_error = $2,
				next_attempt_at = $3, lease_owner = '', lease_until = NULL
			WHERE id = $4 AND (event = 'D' OR scope = 'session') AND status = 'pending' AND lease_owner = $5`,
			status, truncateError(errMsg), nextV, id, owner)
		if err != nil {
			return convErr(err)
		}
		if n := res.RowsAffected(); n == 0 {
			return explainEvent(ctx, tx, id, "", store.StatusPending, "", owner)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("mark event %d failed: %w", id, err)
	}
	return nil
}

// truncateError cuts msg to MaxErrorLen bytes on a rune boundary.
func truncateError(msg string) string {
	if len(msg) <= store.MaxErrorLen {
		return msg
	}
	const mark = " …(truncated)"
	cut := store.MaxErrorLen - len(mark)
	for cut > 0 && !utf8.RuneStart(msg[cut]) {
		cut--
	}
	return msg[:cut] + mark
}

// RetryEvent puts a failed event back: status pending, due now, attempts
// reset to 0 (last_error is kept until the next attempt). Errors: ErrNotFound
// if there is no such event; ErrConflict if it is not failed.
func (s *Store) RetryEvent(ctx context.Context, id int64) error {
	nowV, err := sqlrow.EncTime(s.clock())
	if err != nil {
		return fmt.Errorf("retry event %d: %w", id, err)
	}
	err = s.write(ctx, func(tx pgx.Tx) error {
		res, err := tx.Exec(ctx, `UPDATE events SET status = 'pending', attempts = 0, next_attempt_at = $1,
				lease_owner = '', lease_until = NULL
			WHERE id = $2 AND status = 'failed'`, nowV, id)
		if err != nil {
			return convErr(err)
		}
		if n := res.RowsAffected(); n == 0 {
			return explainEvent(ctx, tx, id, "", store.StatusFailed, "", "")
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("retry event %d: %w", id, err)
	}
	return nil
}

// RetryFailed puts every failed event back as RetryEvent does and returns how
// many there were.
func (s *Store) RetryFailed(ctx context.Context) (int, error) {
	nowV, err := sqlrow.EncTime(s.clock())
	if err != nil {
		return 0, fmt.Errorf("retry failed events: %w", err)
	}
	var n int64
	err = s.write(ctx, func(tx pgx.Tx) error {
		res, err := tx.Exec(ctx, `UPDATE events SET status = 'pending', attempts = 0, next_attempt_at = $1,
				lease_owner = '', lease_until = NULL
			WHERE status = 'failed'`, nowV)
		if err != nil {
			return convErr(err)
		}
		n = res.RowsAffected()
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("retry failed events: %w", err)
	}
	return int(n), nil
}

// ListEvents returns the events matching f, newest (highest id) first.
func (s *Store) ListEvents(ctx context.Context, f store.EventFilter) ([]store.Event, error) {
	var where []string
	var args []any
	add := func(cond string, arg any) { // cond holds one "?"
		args = append(args, arg)
		where = append(where, strings.Replace(cond, "?", fmt.Sprintf("$%d", len(args)), 1))
	}
	if f.Status != "" {
		switch f.Status {
		case store.StatusRunning, store.StatusPending, store.StatusDone, store.StatusFailed:
		default:
			return nil, fmt.Errorf("list events: unknown status %q (want running, pending, done or failed)", f.Status)
		}
		add("status = ?", f.Status)
	}
	if f.Kind != "" {
		if f.Kind != store.KindConnect && f.Kind != store.KindDisconnect {
			return nil, fmt.Errorf("list events: unknown kind %q (want C or D)", f.Kind)
		}
		add("event = ?", f.Kind)
	}
	if f.UserID != "" {
		add("user_id = ?", f.UserID)
	}
	if f.PublicKey != nil {
		add("public_key = ?", f.PublicKey.String())
	}
	if f.AfterID > 0 {
		add("id > ?", f.AfterID)
	}
	if f.BeforeID > 0 {
		add("id < ?", f.BeforeID)
	}
	q := `SELECT ` + sqlrow.EventColumns + ` FROM events`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY id DESC"
	if f.Limit > 0 {
		args = append(args, f.Limit)
		q += fmt.Sprintf(" LIMIT $%d", len(args))
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list events: %w", convErr(err))
	}
	out, err := scanEvents(rows)
	if err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	return out, nil
}

// Disconnected returns which of keys have at least one D event, on any
// interface: former configs of this store. It costs one indexed query.
func (s *Store) Disconnected(ctx context.Context, keys []wgtypes.Key) (map[wgtypes.Key]bool, error) {
	out := map[wgtypes.Key]bool{}
	if len(keys) == 0 {
		return out, nil
	}
	strs := make([]string, len(keys))
	for i, k := range keys {
		strs[i] = k.String()
	}
	rows, err := s.pool.Query(ctx, `SELECT DISTINCT public_key FROM events WHERE event = 'D' AND scope = 'config' AND public_key = ANY($1)`, strs)
	if err != nil {
		return nil, fmt.Errorf("find disconnected keys: %w", convErr(err))
	}
	defer rows.Close()
	for rows.Next() {
		var ks string
		if err := rows.Scan(&ks); err != nil {
			return nil, fmt.Errorf("find disconnected keys: %w", convErr(err))
		}
		k, err := wgtypes.ParseKey(ks)
		if err != nil {
			return nil, fmt.Errorf("find disconnected keys: stored key %q: %w", ks, err)
		}
		out[k] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("find disconnected keys: %w", convErr(err))
	}
	return out, nil
}

// mineEvents is the condition on events that a handle with a node (the
// parameter node; empty for none) delivers: that node's, and those no node
// owns of the interfaces it declares (the parameter ifaces, a text array).
func mineEvents(node, ifaces string) string {
	return "(" + node + " = '' OR node = " + node + " OR (node = '' AND interface = ANY(" + ifaces + ")))"
}

// NextDue returns when ClaimDue can next return something: the earliest
// next_attempt_at of pending D events, or, for an event under a lease that
// ends later, the end of that lease. ok is false when nothing is pending.
func (s *Store) NextDue(ctx context.Context) (at time.Time, ok bool, err error) {
	var v *int64
	err = s.pool.QueryRow(ctx, `SELECT min(CASE
			WHEN lease_owner != '' AND lease_until IS NOT NULL AND lease_until > next_attempt_at THEN lease_until
			ELSE next_attempt_at END)
		FROM events WHERE status = 'pending' AND (event = 'D' OR scope = 'session') AND `+mineEvents("$1", "$2"), s.node, s.ifaces).Scan(&v)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("next due event: %w", convErr(err))
	}
	if v == nil {
		return time.Time{}, false, nil
	}
	return time.Unix(0, *v).UTC(), true, nil
}

// NextExpiry returns the earliest expires_at among active peers (with
// Options.Node: those of Options.Interfaces, the only ones this node
// expires); ok is false when no such peer expires.
func (s *Store) NextExpiry(ctx context.Context) (at time.Time, ok bool, err error) {
	var v int64
	err = s.pool.QueryRow(ctx, `SELECT expires_at FROM peers
		WHERE state = 'active' AND expires_at IS NOT NULL AND ($1 = '' OR interface = ANY($2))
		ORDER BY expires_at LIMIT 1`, s.node, s.ifaces).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("next expiry: %w", convErr(err))
	}
	return time.Unix(0, v).UTC(), true, nil
}

// CountEvents counts events by status; every status is present, 0 when none.
func (s *Store) CountEvents(ctx context.Context) (map[string]int, error) {
	out := map[string]int{store.StatusRunning: 0, store.StatusPending: 0, store.StatusDone: 0, store.StatusFailed: 0}
	rows, err := s.pool.Query(ctx, `SELECT status, count(*) FROM events GROUP BY status`)
	if err != nil {
		return nil, fmt.Errorf("count events: %w", convErr(err))
	}
	defer rows.Close()
	for rows.Next() {
		var st string
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			return nil, fmt.Errorf("count events: %w", convErr(err))
		}
		out[st] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count events: %w", convErr(err))
	}
	return out, nil
}

// pruneBatch bounds how many rows one PruneEvents transaction deletes, so
// other writers are not held up for long.
const pruneBatch = 5000

// PruneEvents deletes done events with done_at before the given time and
// returns how many. A C event is kept while its session is open (no D event
// for the key after it), so WhoHad still answers for long-lived configs.
// It deletes in batches of separate transactions; on error the batches
// already committed stay deleted.
func (s *Store) PruneEvents(ctx context.Context, before time.Time) (int, error) {
	beforeV, err := sqlrow.EncTime(before)
	if err != nil {
		return 0, fmt.Errorf("prune events: %w", err)
	}
	if beforeV == nil {
		return 0, nil
	}
	total := 0
	for {
		var n int64
		err := s.write(ctx, func(tx pgx.Tx) error {
			res, err := tx.Exec(ctx, `DELETE FROM events WHERE id IN (
				SELECT e.id FROM events e
				 WHERE e.status = 'done' AND e.done_at < $1
				   AND (e.event = 'D' OR e.scope = 'session' OR EXISTS (SELECT 1 FROM events d
				         WHERE d.public_key = e.public_key AND d.event = 'D' AND d.scope = 'config' AND d.id > e.id))
				 LIMIT $2)`, beforeV, pruneBatch)
			if err != nil {
				return convErr(err)
			}
			n = res.RowsAffected()
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("prune events: %w", err)
		}
		total += int(n)
		if n < pruneBatch {
			return total, nil
		}
	}
}

// sessionQuery pairs each C event with the first D event of the same key
// after it (a key has at most one live peer, so its C and D events alternate).
var sessionQuery = `SELECT ` + sqlrow.EventColumnsOf("c") + `, ` + sqlrow.EventColumnsOf("d") + `
	FROM events c
	LEFT JOIN events d ON d.id = (SELECT min(x.id) FROM events x
		WHERE x.public_key = c.public_key AND x.event = 'D' AND x.scope = 'config' AND x.id > c.id)
	WHERE c.event = 'C' AND c.scope = 'config' AND `

func (s *Store) sessions(ctx context.Context, cond string, args ...any) ([]store.Session, error) {
	rows, err := s.pool.Query(ctx, sessionQuery+cond+` ORDER BY c.id`, args...)
	if err != nil {
		return nil, convErr(err)
	}
	defer rows.Close()
	var out []store.Session
	for rows.Next() {
		var c, d sqlrow.EventRow
		if err := rows.Scan(append(c.Dest(), d.Dest()...)...); err != nil {
			return nil, convErr(err)
		}
		ce, err := c.Decode()
		if err != nil {
			return nil, err
		}
		sess := store.Session{C: ce}
		if d.ID.Valid {
			de, err := d.Decode()
			if err != nil {
				return nil, err
			}
			sess.D = &de
		}
		out = append(out, sess)
	}
	if err := rows.Err(); err != nil {
		return nil, convErr(err)
	}
	return out, nil
}

// WhoHad returns the sessions that held ip at the instant at: C recorded at
// or before at, and no D yet or D recorded after at. Addresses are unique per
// interface, so there is at most one session per interface; the result is
// ordered by C event id.
func (s *Store) WhoHad(ctx context.Context, ip netip.Addr, at time.Time) ([]store.Session, error) {
	if !ip.IsValid() {
		return nil, errors.New("who had: no address given")
	}
	ip = ip.Unmap().WithZone("")
	atV, err := sqlrow.EncTime(at)
	if err != nil || atV == nil {
		return nil, fmt.Errorf("who had %s at %s: time out of range", ip, at.UTC().Format(time.RFC3339))
	}
	col := "c.ip_six"
	if ip.Is4() {
		col = "c.ip_four"
	}
	out, err := s.sessions(ctx, col+` = $1 AND c.created_at <= $2 AND (d.id IS NULL OR d.created_at > $3)`,
		ip.String(), atV, atV)
	if err != nil {
		return nil, fmt.Errorf("who had %s at %s: %w", ip, at.UTC().Format(time.RFC3339), err)
	}
	return out, nil
}

// UserSessions returns every recorded session of the user's configs, oldest
// first.
func (s *Store) UserSessions(ctx context.Context, user string) ([]store.Session, error) {
	out, err := s.sessions(ctx, `c.user_id = $1`, user)
	if err != nil {
		return nil, fmt.Errorf("sessions of user %q: %w", user, err)
	}
	return out, nil
}
