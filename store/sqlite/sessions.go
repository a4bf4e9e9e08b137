package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/store/internal/sqlrow"
)

// ListActivity returns the session-tracking activity of every active config
// on iface, by key, with its open session. It runs every poll over every
// config of the interface, so it reads few columns and decodes lazily.
func (s *Store) ListActivity(ctx context.Context, iface string) (map[wgtypes.Key]store.Activity, error) {
	if err := s.Fault(); err != nil {
		return nil, err
	}
	open := map[string]store.OpenSession{}
	srows, err := s.db.QueryContext(ctx, `SELECT public_key, id, started_at, bytes_in, bytes_out FROM sessions
		WHERE ended_at IS NULL AND interface = ?`, iface)
	if err != nil {
		return nil, fmt.Errorf("list activity on %s: %w", iface, s.note(convErr(err)))
	}
	for srows.Next() {
		var k string
		var o store.OpenSession
		var started int64
		if err := srows.Scan(&k, &o.ID, &started, &o.BytesIn, &o.BytesOut); err != nil {
			srows.Close()
			return nil, fmt.Errorf("list activity on %s: %w", iface, s.note(convErr(err)))
		}
		o.Started = time.Unix(0, started).UTC()
		open[k] = o
	}
	if err := srows.Close(); err != nil {
		return nil, fmt.Errorf("list activity on %s: %w", iface, s.note(convErr(err)))
	}
	rows, err := s.db.QueryContext(ctx, `SELECT public_key, profile_id, ifnull(last_handshake, 0), ifnull(last_active, 0),
		rx_base, tx_base, bytes_in, bytes_out, ifnull(endpoint, '')
		FROM peers WHERE interface = ? AND state = 'active'`, iface)
	if err != nil {
		return nil, fmt.Errorf("list activity on %s: %w", iface, s.note(convErr(err)))
	}
	defer rows.Close()
	out := map[wgtypes.Key]store.Activity{}
	for rows.Next() {
		var (
			key, ep    string
			hs, active int64
			a          store.Activity
		)
		if err := rows.Scan(&key, &a.ProfileID, &hs, &active, &a.RxBase, &a.TxBase, &a.BytesIn, &a.BytesOut, &ep); err != nil {
			return nil, fmt.Errorf("list activity on %s: %w", iface, s.note(convErr(err)))
		}
		k, err := sqlrow.ParseStoredKey(key)
		if err != nil {
			d := sqlrow.RowDecoder{Row: "peer " + sqlrow.QuoteValue(key)}
			d.Fail("public_key", key, err)
			return nil, fmt.Errorf("list activity on %s: %w", iface, d.Err)
		}
		if hs != 0 {
			a.LastHandshake = time.Unix(0, hs).UTC()
		}
		if active != 0 {
			a.LastActive = time.Unix(0, active).UTC()
		}
		if ep != "" {
			if a.Endpoint, err = netip.ParseAddrPort(ep); err != nil {
				d := sqlrow.RowDecoder{Row: "peer " + sqlrow.QuoteValue(key)}
				d.Fail("endpoint", ep, err)
				return nil, fmt.Errorf("list activity on %s: %w", iface, d.Err)
			}
		}
		if o, ok := open[key]; ok {
			a.Session = o
		}
		out[k] = a
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list activity on %s: %w", iface, s.note(convErr(err)))
	}
	return out, nil
}

// SaveActivity writes one poll of one interface in one transaction: the
// activity of the configs that changed, sessions started (with a session C
// event when u.Events), roamed (the endpoint appended) and ended at their
// last activity (reason offline, with a session D event when the start had
// one). Configs that are no longer active on u.Interface are skipped with
// their changes. It returns the session events recorded (pending, due now),
// in id order.
func (s *Store) SaveActivity(ctx context.Context, u store.ActivityUpdate) ([]store.Event, error) {
	for _, c := range u.Configs {
		a := c.Activity
		if a.RxBase < 0 || a.TxBase < 0 || a.BytesIn < 0 || a.BytesOut < 0 || a.Session.BytesIn < 0 || a.Session.BytesOut < 0 {
			return nil, fmt.Errorf("save activity of %s: negative counter", c.Key)
		}
	}
	if len(u.Configs) == 0 && len(u.Changes) == 0 {
		return nil, nil
	}
	now := s.clock()
	var out []store.Event
	err := s.write(ctx, func(tx *sql.Tx) error {
		up, err := tx.PrepareContext(ctx, `UPDATE peers SET last_handshake = ?, last_active = ?, rx_base = ?, tx_base = ?,
			bytes_in = ?, bytes_out = ?, endpoint = ? WHERE public_key = ? AND interface = ? AND state = 'active'`)
		if err != nil {
			return convErr(err)
		}
		defer up.Close()
		upSess, err := tx.PrepareContext(ctx, `UPDATE sessions SET bytes_in = ?, bytes_out = ? WHERE public_key = ? AND ended_at IS NULL`)
		if err != nil {
			return convErr(err)
		}
		defer upSess.Close()
		gone := map[wgtypes.Key]bool{}
		online := map[wgtypes.Key]store.OpenSession{}
		for _, c := range u.Configs {
			a := c.Activity
			hs, err := sqlrow.EncTime(a.LastHandshake)
			if err != nil {
				return fmt.Errorf("config %s: last handshake: %w", c.Key, err)
			}
			la, err := sqlrow.EncTime(a.LastActive)
			if err != nil {
				return fmt.Errorf("config %s: last activity: %w", c.Key, err)
			}
			var ep any
			if a.Endpoint.IsValid() {
				ep = a.Endpoint.String()
			}
			res, err := up.ExecContext(ctx, hs, la, a.RxBase, a.TxBase, a.BytesIn, a.BytesOut, ep, c.Key.String(), u.Interface)
			if err != nil {
				return fmt.Errorf("config %s: %w", c.Key, convErr(err))
			}
			if n, _ := res.RowsAffected(); n == 0 {
				gone[c.Key] = true
				continue
			}
			if a.SessionOpen() {
				online[c.Key] = a.Session
			}
		}
		for _, c := range u.Changes {
			if gone[c.Key] {
				continue
			}
			var evs []store.Event
			var err error
			switch c.Kind {
			case store.SessionStart:
				evs, err = startSession(ctx, tx, u.Interface, c, u.Events, now)
			case store.SessionRoam:
				_, err = tx.ExecContext(ctx, `UPDATE sessions SET endpoints = endpoints || ' ' || ?
					WHERE public_key = ? AND ended_at IS NULL`, c.Endpoint.String(), c.Key.String())
				err = convErr(err)
			case store.SessionEnd:
				var p store.Peer
				p, err = peerIdentity(ctx, tx, c.Key)
				if err == nil {
					var ev *store.Event
					ev, err = closeSession(ctx, tx, p, store.ReasonOffline, c.At, &c.Session, now)
					if ev != nil && err == nil {
						ev.NextAttemptAt = now
						var id int64
						if id, err = insertEvent(ctx, tx, ev); err == nil {
							ev.ID = id
							evs = append(evs, *ev)
						}
					}
				}
			default:
				err = fmt.Errorf("unknown session change %d", c.Kind)
			}
			if err != nil {
				if errors.Is(err, store.ErrNotFound) {
					continue // removed meanwhile: its removal ended the session
				}
				return fmt.Errorf("config %s: session %s: %w", c.Key, c.Kind, err)
			}
			out = append(out, evs...)
		}
		for k, sess := range online {
			if _, err := upSess.ExecContext(ctx, sess.BytesIn, sess.BytesOut, k.String()); err != nil {
				return fmt.Errorf("config %s: %w", k, convErr(err))
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("save activity on %s: %w", u.Interface, err)
	}
	return out, nil
}

// peerIdentity reads the stored identity of a config; ErrNotFound when it
// has no row.
func peerIdentity(ctx context.Context, tx *sql.Tx, key wgtypes.Key) (store.Peer, error) {
	var r sqlrow.PeerRow
	if err := tx.QueryRowContext(ctx, `SELECT `+sqlrow.PeerColumns+` FROM peers WHERE public_key = ?`, key.String()).Scan(r.Dest()...); err != nil {
		return store.Peer{}, convErr(err)
	}
	return r.Decode()
}

// startSession records a session of an active config, and its session C
// event when events is set.
func startSession(ctx context.Context, tx *sql.Tx, iface string, c store.SessionChange, events bool, now time.Time) ([]store.Event, error) {
	p, err := peerIdentity(ctx, tx, c.Key)
	if err != nil {
		return nil, err
	}
	if p.State != store.StateActive || p.Interface != iface {
		return nil, store.ErrNotFound
	}
	started, err := sqlrow.EncTime(c.At)
	if err != nil {
		return nil, err
	}
	ep := ""
	if c.Endpoint.IsValid() {
		ep = c.Endpoint.String()
	}
	// A session left open (a crash between two writes cannot do it, but a
	// second daemon on one interface could) ends where the new one starts.
	if _, err := tx.ExecContext(ctx, `UPDATE sessions SET ended_at = max(started_at, ?), end_reason = ?
		WHERE public_key = ? AND ended_at IS NULL`, started, store.ReasonOffline, c.Key.String()); err != nil {
		return nil, convErr(err)
	}
	notify := 0
	if events {
		notify = 1
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO sessions (public_key, interface, profile_id, user_id, ip_four, ip_six,
		started_at, endpoint, endpoints, bytes_in, bytes_out, notify) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		c.Key.String(), p.Interface, p.ProfileID, p.UserID, sqlrow.EncAddr(p.IPv4), sqlrow.EncAddr(p.IPv6), started, ep, ep,
		c.Session.BytesIn, c.Session.BytesOut, notify)
	if err != nil {
		return nil, convErr(err)
	}
	sid, err := res.LastInsertId()
	if err != nil {
		return nil, convErr(err)
	}
	if !events {
		return nil, nil
	}
	ev := sqlrow.EventOf(p, store.KindConnect, store.ReasonHandshake, store.StatusPending, now)
	ev.Scope, ev.SessionID = store.ScopeSession, sid
	ev.OriginatingIP = c.Endpoint.Addr().Unmap()
	ev.NextAttemptAt = now
	id, err := insertEvent(ctx, tx, &ev)
	if err != nil {
		return nil, err
	}
	ev.ID = id
	return []store.Event{ev}, nil
}

// closeSession ends the open session of p at `at` with reason, taking its
// bytes from final when given. It returns the session D event to record
// (not inserted; nil when no session was open or its start had no event).
func closeSession(ctx context.Context, tx *sql.Tx, p store.Peer, reason string, at time.Time, final *store.OpenSession, now time.Time) (*store.Event, error) {
	atV, err := sqlrow.EncTime(at)
	if err != nil {
		return nil, err
	}
	var (
		id, notify, in, out int64
		endpoints           string
	)
	err = tx.QueryRowContext(ctx, `SELECT id, notify, bytes_in, bytes_out, endpoints FROM sessions
		WHERE public_key = ? AND ended_at IS NULL`, p.PublicKey.String()).Scan(&id, &notify, &in, &out, &endpoints)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, convErr(err)
	}
	if final != nil {
		in, out = final.BytesIn, final.BytesOut
	}
	if _, err := tx.ExecContext(ctx, `UPDATE sessions SET ended_at = max(started_at, ?), end_reason = ?, bytes_in = ?, bytes_out = ?
		WHERE id = ?`, atV, reason, in, out, id); err != nil {
		return nil, convErr(err)
	}
	if notify == 0 {
		return nil, nil
	}
	ev := sqlrow.SessionEndEvent(p, reason, id, in, out, endpoints, now)
	return &ev, nil
}

// endOpenSession ends p's open session because the config goes away
// (reason: the config's D reason) and returns its session D event to
// record, if any.
func endOpenSession(ctx context.Context, tx *sql.Tx, p store.Peer, reason string, now time.Time) (*store.Event, error) {
	return closeSession(ctx, tx, p, reason, now, nil, now)
}

// ListClientSessions returns the recorded sessions matching f, newest
// first.
func (s *Store) ListClientSessions(ctx context.Context, f store.ClientSessionFilter) ([]store.ClientSession, error) {
	if err := s.Fault(); err != nil {
		return nil, err
	}
	var where []string
	var args []any
	if f.PublicKey != nil {
		where, args = append(where, "public_key = ?"), append(args, f.PublicKey.String())
	}
	if f.UserID != "" {
		where, args = append(where, "user_id = ?"), append(args, f.UserID)
	}
	if !f.At.IsZero() {
		v, err := sqlrow.EncTime(f.At)
		if err != nil {
			return nil, fmt.Errorf("list sessions: at: %w", err)
		}
		where, args = append(where, "started_at <= ? AND (ended_at IS NULL OR ended_at >= ?)"), append(args, v, v)
	}
	q := `SELECT id, public_key, interface, profile_id, user_id, ip_four, ip_six, started_at, ended_at, end_reason,
		endpoints, bytes_in, bytes_out FROM sessions`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY started_at DESC, id DESC"
	if f.Limit > 0 {
		q += " LIMIT ?"
		args = append(args, f.Limit)
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", s.note(convErr(err)))
	}
	defer rows.Close()
	var out []store.ClientSession
	for rows.Next() {
		var (
			cs             store.ClientSession
			key, endpoints string
			ip4, ip6       sql.NullString
			started        int64
			ended          sql.NullInt64
		)
		if err := rows.Scan(&cs.ID, &key, &cs.Interface, &cs.ProfileID, &cs.UserID, &ip4, &ip6, &started, &ended,
			&cs.EndReason, &endpoints, &cs.BytesIn, &cs.BytesOut); err != nil {
			return nil, fmt.Errorf("list sessions: %w", s.note(convErr(err)))
		}
		d := sqlrow.RowDecoder{Row: fmt.Sprintf("session %d", cs.ID)}
		cs.PublicKey = d.Key("public_key", key)
		cs.IPv4, cs.IPv6 = d.Addr("ip_four", ip4), d.Addr("ip_six", ip6)
		cs.Started, cs.Ended = time.Unix(0, started).UTC(), sqlrow.DecTime(ended)
		for _, e := range strings.Fields(endpoints) {
			ap, err := netip.ParseAddrPort(e)
			if err != nil {
				d.Fail("endpoints", endpoints, err)
				break
			}
			cs.Endpoints = append(cs.Endpoints, ap)
		}
		if d.Err != nil {
			return nil, fmt.Errorf("list sessions: %w", d.Err)
		}
		out = append(out, cs)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list sessions: %w", s.note(convErr(err)))
	}
	return out, nil
}
