package postgres

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wgkeeper/wgkeeper/store"
)

var _ store.Nodes = (*Store)(nil)

// nodesLock is the advisory lock key under which nodes register, so that
// two nodes starting at once cannot both claim one interface or range.
const nodesLock = 0x776b6e6f64657300 // "wknodes"

// RegisterNode records the node and its interfaces and profiles in one
// transaction under nodesLock; see store.Nodes.
func (s *Store) RegisterNode(ctx context.Context, d store.NodeDecl) error {
	if d.Name == "" {
		return errors.New("register node: no name given")
	}
	if d.ConnectHold < 0 {
		return fmt.Errorf("register node %q: connect hold %s is negative", d.Name, d.ConnectHold)
	}
	now := s.clock().UnixNano()
	var ifaces []string
	for _, ifc := range d.Interfaces {
		ifaces = append(ifaces, ifc.Name)
	}
	err := s.write(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(nodesLock)); err != nil {
			return convErr(err)
		}
		var iface, other string
		err := tx.QueryRow(ctx, `SELECT interface, node FROM node_interfaces
			WHERE interface = ANY($1) AND node <> $2 ORDER BY interface LIMIT 1`, ifaces, d.Name).Scan(&iface, &other)
		switch {
		case err == nil:
			return fmt.Errorf("interface %q is declared by node %q and by node %q (this one); an interface belongs to one node: %w",
				iface, other, d.Name, store.ErrConflict)
		case !errors.Is(err, pgx.ErrNoRows):
			return convErr(err)
		}
		for _, ifc := range d.Interfaces {
			for _, p := range ifc.Profiles {
				for _, r := range []netip.Prefix{p.IPv4Range, p.IPv6Range} {
					if !r.IsValid() {
						continue
					}
					col := "ipv6_range"
					if r.Addr().Is4() {
						col = "ipv4_range"
					}
					var oIface, oProfile, oNode, oRange string
					err := tx.QueryRow(ctx, `SELECT np.interface, np.profile_id, ni.node, np.`+col+`::text
						FROM node_profiles np JOIN node_interfaces ni USING (interface)
						WHERE ni.node <> $1 AND np.`+col+` && $2::cidr
						ORDER BY ni.node, np.interface, np.profile_id LIMIT 1`, d.Name, r.Masked().String()).
						Scan(&oIface, &oProfile, &oNode, &oRange)
					switch {
					case err == nil:
						return fmt.Errorf("range %s of profile %q (interface %q, node %q) overlaps range %s of profile %q (interface %q, node %q); ranges of different nodes must not overlap: %w",
							r.Masked(), p.ID, ifc.Name, d.Name, oRange, oProfile, oIface, oNode, store.ErrConflict)
					case !errors.Is(err, pgx.ErrNoRows):
						return convErr(err)
					}
				}
			}
		}
		upsert := `INSERT INTO nodes (name, started_at, last_seen, version, connect_hold) VALUES ($1, $2, $2, $3, $4)
			ON CONFLICT (name) DO UPDATE SET started_at = $2, last_seen = $2, version = $3, connect_hold = $4, dead_since = NULL`
		args := []any{d.Name, now, d.Version, int64(d.ConnectHold)}
		if s.noConnectHold {
			upsert = `INSERT INTO nodes (name, started_at, last_seen, version) VALUES ($1, $2, $2, $3)
			ON CONFLICT (name) DO UPDATE SET started_at = $2, last_seen = $2, version = $3, dead_since = NULL`
			args = args[:3]
		}
		if _, err := tx.Exec(ctx, upsert, args...); err != nil {
			return convErr(err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM node_interfaces WHERE node = $1`, d.Name); err != nil {
			return convErr(err)
		}
		for _, ifc := range d.Interfaces {
			if _, err := tx.Exec(ctx, `INSERT INTO node_interfaces (interface, node, registered_at) VALUES ($1, $2, $3)`,
				ifc.Name, d.Name, now); err != nil {
				return convErr(err)
			}
			for _, p := range ifc.Profiles {
				if _, err := tx.Exec(ctx, `INSERT INTO node_profiles (interface, profile_id, ipv4_range, ipv6_range)
					VALUES ($1, $2, $3::cidr, $4::cidr)`, ifc.Name, p.ID, cidrOrNil(p.IPv4Range), cidrOrNil(p.IPv6Range)); err != nil {
					return convErr(err)
				}
			}
		}
		// Events of these interfaces recorded while no node declared them
		// are this node's now (its firewall's).
		if _, err := tx.Exec(ctx, `UPDATE events SET node = $1
			WHERE node = '' AND interface = ANY($2) AND status IN ('running', 'pending')`, d.Name, ifaces); err != nil {
			return convErr(err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("register node %q: %w", d.Name, err)
	}
	return nil
}

func cidrOrNil(p netip.Prefix) any {
	if !p.IsValid() {
		return nil
	}
	return p.Masked().String()
}

// Heartbeat records that the node is alive; see store.Nodes.
func (s *Store) Heartbeat(ctx context.Context, node string) error {
	tag, err := s.pool.Exec(ctx, `UPDATE nodes SET last_seen = $2, dead_since = NULL WHERE name = $1`, node, s.clock().UnixNano())
	if err != nil {
		return fmt.Errorf("heartbeat of node %q: %w", node, convErr(err))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("heartbeat of node %q: not registered: %w", node, store.ErrNotFound)
	}
	return nil
}

// MarkDead marks the nodes whose heartbeat stopped before the given time;
// see store.Nodes.
func (s *Store) MarkDead(ctx context.Context, before time.Time) ([]string, error) {
	rows, err := s.pool.Query(ctx, `UPDATE nodes SET dead_since = $2
		WHERE last_seen < $1 AND dead_since IS NULL RETURNING name`, before.UnixNano(), s.clock().UnixNano())
	if err != nil {
		return nil, fmt.Errorf("mark dead nodes: %w", convErr(err))
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("mark dead nodes: %w", convErr(err))
	}
	sort.Strings(out)
	return out, nil
}

// ListNodes returns every registered node, ordered by name.
func (s *Store) ListNodes(ctx context.Context) ([]store.Node, error) {
	holdCol := "n.connect_hold"
	if s.noConnectHold {
		holdCol = "0::bigint"
	}
	rows, err := s.pool.Query(ctx, `SELECT n.name, n.version, n.started_at, n.last_seen, n.dead_since, `+holdCol+`,
			coalesce(array_agg(ni.interface ORDER BY ni.interface) FILTER (WHERE ni.interface IS NOT NULL), '{}')
		FROM nodes n LEFT JOIN node_interfaces ni ON ni.node = n.name
		GROUP BY n.name ORDER BY n.name`)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", convErr(err))
	}
	defer rows.Close()
	var out []store.Node
	for rows.Next() {
		var n store.Node
		var started, seen, hold int64
		var dead *int64
		if err := rows.Scan(&n.Name, &n.Version, &started, &seen, &dead, &hold, &n.Interfaces); err != nil {
			return nil, fmt.Errorf("list nodes: %w", convErr(err))
		}
		n.StartedAt, n.LastSeen = time.Unix(0, started).UTC(), time.Unix(0, seen).UTC()
		n.ConnectHold = time.Duration(hold)
		if dead != nil {
			n.DeadSince = time.Unix(0, *dead).UTC()
		}
		out = append(out, n)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list nodes: %w", convErr(err))
	}
	return out, nil
}

// ProfileNodes returns the nodes that declare the profile; see store.Nodes.
func (s *Store) ProfileNodes(ctx context.Context, profile string) ([]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT DISTINCT ni.node FROM node_profiles np JOIN node_interfaces ni USING (interface)
		WHERE np.profile_id = $1 ORDER BY 1`, profile)
	if err != nil {
		return nil, fmt.Errorf("nodes of profile %q: %w", profile, convErr(err))
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("nodes of profile %q: %w", profile, convErr(err))
	}
	sort.Strings(out)
	return out, nil
}
