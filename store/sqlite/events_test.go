package sqlite

import (
	"context"
	"testing"
)

func TestPruneEventsBatches(t *testing.T) {
	ctx := context.Background()
	s, clock := newStore(t)
	// More done rows than one batch, inserted directly.
	_, err := s.db.Exec(`WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
		INSERT INTO events (event, reason, public_key, interface, profile_id, user_id, created_at, status, done_at)
		SELECT 'D', 'deleted', 'k' || i, 'wg0', 'staff', 'u', 1, 'done', 1 FROM n`, pruneBatch*2+17)
	if err != nil {
		t.Fatal(err)
	}
	n, err := s.PruneEvents(ctx, clock.Now())
	if err != nil || n != pruneBatch*2+17 {
		t.Fatalf("PruneEvents = %d, %v; want %d", n, err, pruneBatch*2+17)
	}
}
