package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wgkeeper/wgkeeper/store"
)

// The NOTIFY channels the schema's triggers use: every change goes to
// channelAll, a change that concerns a node's interface also to
// channelPrefix + node.
const (
	channelAll    = "wgkeeper"
	channelPrefix = "wgkeeper:"
)

// channel is what this handle listens on.
func (s *Store) channel() string {
	if s.node != "" {
		return channelPrefix + s.node
	}
	return channelAll
}

// Version returns a value that changes whenever a row of peers or events
// changes, by any handle on any node: the count of changed rows that the
// schema's triggers keep in a sequence, combined with the notifications
// this handle's listener received (a sequence moves before the change is
// committed; the notification arrives after, so a reader that looked in
// between still sees a new value afterwards). Only equality is meaningful.
func (s *Store) Version(ctx context.Context) (uint64, error) {
	var last int64
	var called bool
	if err := s.pool.QueryRow(ctx, `SELECT last_value, is_called FROM wgk_changes`).Scan(&last, &called); err != nil {
		return 0, fmt.Errorf("read data version: %w", convErr(err))
	}
	v := uint64(last) << 1
	if called {
		v |= 1
	}
	s.lmu.Lock()
	n := s.notified
	s.lmu.Unlock()
	return v ^ n<<40, nil
}

// listenWait bounds how long the first Changes waits for the listener to
// be in place, so that changes committed after Changes returns are seen.
const listenWait = 5 * time.Second

// Changes returns a channel that receives a value soon after a change is
// committed, by this handle or any other on any node (with Options.Node:
// a change of that node's interfaces). A dedicated connection LISTENs for
// the schema's notifications; when it is lost it is re-established with
// back-off, and every (re)connection sends a value too, since changes
// may have gone unheard meanwhile. The channel holds at most one value;
// it is closed when ctx is done or the Store is closed.
func (s *Store) Changes(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{}, 1)
	s.lmu.Lock()
	select {
	case <-s.closed:
		s.lmu.Unlock()
		close(ch)
		return ch
	default:
	}
	s.subs[ch] = struct{}{}
	s.wg.Add(1) // the goroutine below, added under lmu (see Close)
	var ready chan struct{}
	if !s.started {
		s.started = true
		ready = make(chan struct{})
		s.wg.Add(1)
		go s.listen(ready)
	}
	s.lmu.Unlock()
	if ready != nil {
		select {
		case <-ready:
		case <-time.After(listenWait):
		case <-ctx.Done():
		}
	}
	go func() {
		defer s.wg.Done()
		select {
		case <-ctx.Done():
		case <-s.closed:
		}
		s.lmu.Lock()
		delete(s.subs, ch)
		close(ch)
		s.lmu.Unlock()
	}()
	return ch
}

// wake sends to every subscriber that has no value pending.
func (s *Store) wake() {
	s.lmu.Lock()
	defer s.lmu.Unlock()
	s.notified++
	for ch := range s.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// listen holds the listening connection until the Store is closed,
// reconnecting with back-off (100 ms doubling up to 5 s). It closes ready
// once the first LISTEN is in place (or failed).
func (s *Store) listen(ready chan struct{}) {
	defer s.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-s.closed
		cancel()
	}()
	delay := 100 * time.Millisecond
	first := true
	for ctx.Err() == nil {
		err := s.listenOnce(ctx, func() {
			if first {
				first = false
				close(ready)
			} else {
				// The pool's idle connections most likely died with this
				// one (a server restart): drop them rather than have the
				// next requests fail on them. Changes may have been
				// missed while disconnected.
				s.pool.Reset()
				s.wake()
				s.resynced()
			}
			delay = 100 * time.Millisecond
		})
		if ctx.Err() != nil {
			break
		}
		if first {
			first = false
			close(ready)
		}
		s.log.Warn("database change listener lost; reconnecting", "err", convErr(err), "retry_in", delay)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
		}
		delay = min(2*delay, 5*time.Second)
	}
	if first {
		close(ready)
	}
}

// listenOnce connects, LISTENs, calls up, and then wakes the subscribers
// on every notification until the connection fails or ctx ends.
func (s *Store) listenOnce(ctx context.Context, up func()) error {
	conn, err := pgx.ConnectConfig(ctx, s.cfg.ConnConfig.Copy())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{s.channel()}.Sanitize()); err != nil {
		return err
	}
	up()
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return err
		}
		s.wake()
	}
}

var _ store.Resyncer = (*Store)(nil)

// Resyncs returns a channel that receives a value each time the listening
// connection is re-established after it was lost (the server restarted,
// the network failed): notifications sent meanwhile are lost, so the
// caller should re-read everything. It holds at most one value and is
// closed when ctx is done or the Store is closed. The listener starts
// with the first Changes; without one nothing is sent.
func (s *Store) Resyncs(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{}, 1)
	s.lmu.Lock()
	select {
	case <-s.closed:
		s.lmu.Unlock()
		close(ch)
		return ch
	default:
	}
	s.resyncSubs[ch] = struct{}{}
	s.wg.Add(1)
	s.lmu.Unlock()
	go func() {
		defer s.wg.Done()
		select {
		case <-ctx.Done():
		case <-s.closed:
		}
		s.lmu.Lock()
		delete(s.resyncSubs, ch)
		close(ch)
		s.lmu.Unlock()
	}()
	return ch
}

// resynced sends to every Resyncs subscriber that has no value pending.
func (s *Store) resynced() {
	s.lmu.Lock()
	defer s.lmu.Unlock()
	for ch := range s.resyncSubs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}
