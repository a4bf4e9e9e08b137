package sqlite

import (
	"context"
	"testing"
	"time"

	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/store/storetest"
)

// TestConformance runs the store contract's suite on SQLite files: each
// handle is a Store of its own on one file, as separate processes are.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Open {
		path := dbPath(t)
		return func(now func() time.Time) store.Store {
			t.Helper()
			s, err := Open(context.Background(), path, Options{Create: true, Now: now})
			if err != nil {
				t.Fatalf("open %s: %v", path, err)
			}
			return s
		}
	})
}
