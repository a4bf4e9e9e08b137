package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/wgkeeper/wgkeeper/internal/pgtest"
	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/store/storetest"
)

// TestConformance runs the store contract's suite on PostgreSQL: each
// subtest gets a database of its own on the test server, and each handle
// is a Store of its own on it, as separate nodes are.
func TestConformance(t *testing.T) {
	pgtest.ServerURL(t)
	storetest.Run(t, func(t *testing.T) storetest.Open {
		url := pgtest.NewDatabase(t)
		return func(now func() time.Time) store.Store {
			t.Helper()
			s, err := Open(context.Background(), url, Options{Create: true, Now: now})
			if err != nil {
				t.Fatalf("open %s: %v", url, err)
			}
			return s
		}
	})
}
