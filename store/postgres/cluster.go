package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wgkeeper/wgkeeper/store"
)

var _ store.ClusterLeader = (*Store)(nil)

// clusterLock is the session advisory lock key whose holder runs the
// cluster-wide jobs. pg_locks shows a bigint key as classid (its high 32
// bits) and objid (its low 32 bits), with objsubid 1.
const clusterLock = 0x776b636c75737472 // "wkclustr"

// clusterCheckTimeout bounds one LeadCluster round trip on the lock's
// connection: a server that does not answer within it counts as lost.
const clusterCheckTimeout = 5 * time.Second

// clusterConn is the dedicated connection of the cluster-job lock. It is
// never a pool connection: a session advisory lock belongs to the session
// that took it, and a pool would hand that session to other work (and
// keep it, with the lock, after this handle thinks it is gone).
type clusterConn struct {
	conn *pgx.Conn // nil until connected, and after it was lost
	held bool      // conn holds clusterLock
}

// LeadCluster reports whether this handle holds the cluster-job lock,
// taking it with pg_try_advisory_lock on its dedicated connection when
// it is free; see store.ClusterLeader. The connection (kept between
// calls, whether the lock is held or not) asks the TCP keep-alive of the
// server to notice a vanished client within about a minute, so that a
// node cut off from the database does not keep the lock for hours.
func (s *Store) LeadCluster(ctx context.Context) (bool, error) {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	select {
	case <-s.closed:
		return false, errors.New("cluster-job lock: the database handle is closed")
	default:
	}
	c := &s.cluster
	if c.conn == nil {
		cctx, cancel := context.WithTimeout(ctx, s.cfg.ConnConfig.ConnectTimeout)
		conn, err := pgx.ConnectConfig(cctx, s.clusterConnConfig())
		cancel()
		if err != nil {
			return false, fmt.Errorf("cluster-job lock: connect: %w", convErr(err))
		}
		// Effective on TCP connections only (a Unix socket ignores them);
		// a server that refuses them still serves the lock.
		kctx, cancel := context.WithTimeout(ctx, clusterCheckTimeout)
		_, err = conn.Exec(kctx, `SELECT set_config('tcp_keepalives_idle', '30', false),
			set_config('tcp_keepalives_interval', '10', false), set_config('tcp_keepalives_count', '3', false)`)
		cancel()
		if err != nil && conn.IsClosed() {
			return false, fmt.Errorf("cluster-job lock: connect: %w", convErr(err))
		}
		if err != nil {
			s.log.Debug("cluster-job lock: TCP keep-alive settings refused; a vanished node keeps the lock until the server notices", "err", convErr(err))
		}
		c.conn = conn
	}
	// Holding it: confirm the session still has it (pg_locks), without
	// taking it a second time (a session lock counts its takings). Not
	// holding it: try to take it.
	qctx, cancel := context.WithTimeout(ctx, clusterCheckTimeout)
	var held bool
	err := c.conn.QueryRow(qctx, `SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_locks
			WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
			AND classid = $2::bigint::oid AND objid = $3::bigint::oid AND objsubid = 1)
		THEN true ELSE pg_try_advisory_lock($1) END`,
		int64(clusterLock), int64(uint64(clusterLock)>>32), int64(uint64(clusterLock)&0xffffffff)).Scan(&held)
	cancel()
	if err != nil {
		// A failed query on this connection leaves no way to tell
		// whether the session, and the lock, survive: drop it, which
		// releases the lock if the server still has the session.
		was := c.held
		c.drop()
		if ctx.Err() != nil {
			return false, fmt.Errorf("cluster-job lock: %w", ctx.Err())
		}
		if was {
			return false, fmt.Errorf("cluster-job lock: its connection was lost, and the lock with it: %w", convErr(err))
		}
		return false, fmt.Errorf("cluster-job lock: %w", convErr(err))
	}
	if c.held && !held {
		// Only an unlock on this session could do it; none is ever sent.
		s.log.Warn("cluster-job lock: no longer held by its connection; trying again")
	}
	c.held = held
	return held, nil
}

// clusterConnConfig is the pool's connection settings, named so that an
// operator sees which session holds the lock (pg_stat_activity).
func (s *Store) clusterConnConfig() *pgx.ConnConfig {
	cc := s.cfg.ConnConfig.Copy()
	name := "wgkeeper cluster lock"
	if s.node != "" {
		name += " " + s.node
	}
	cc.RuntimeParams["application_name"] = name
	return cc
}

// drop closes the connection (releasing the lock if the server still
// has the session) and forgets it.
func (c *clusterConn) drop() {
	if c.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = c.conn.Close(ctx) // the connection is gone either way
		cancel()
	}
	c.conn, c.held = nil, false
}
