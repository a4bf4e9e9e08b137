package sqlite

import (
	"context"
	"encoding/binary"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/internal/fakeclock"
	"github.com/wgkeeper/wgkeeper/store"
)

// newClock returns a test clock that moves only when told to.
func newClock() *fakeclock.Clock { return fakeclock.New(time.Date(2026, 3, 3, 14, 0, 0, 0, time.UTC)) }

// testKey returns a distinct valid key for each i.
func testKey(i int) wgtypes.Key {
	var k wgtypes.Key
	k[0] = 0x42
	binary.BigEndian.PutUint64(k[24:], uint64(i))
	return k
}

// dbPath returns a database path inside a directory that does not exist yet.
func dbPath(t testing.TB) string {
	return filepath.Join(t.TempDir(), "state", "wgkeeper.db")
}

func openAt(t testing.TB, path string, clock *fakeclock.Clock) *Store {
	t.Helper()
	opts := Options{Create: true}
	if clock != nil {
		opts.Now = clock.Now
	}
	s, err := Open(context.Background(), path, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newStore(t testing.TB) (*Store, *fakeclock.Clock) {
	t.Helper()
	c := newClock()
	return openAt(t, dbPath(t), c), c
}

var (
	staff4 = netip.MustParsePrefix("10.42.0.0/24")
	staff6 = netip.MustParsePrefix("fd42::/64")
)

// staffPeer is a NewPeer in profile "staff" on wg0 (both families).
func staffPeer(i int, user string) store.NewPeer {
	return store.NewPeer{
		PublicKey: testKey(i),
		Interface: "wg0",
		ProfileID: "staff",
		UserID:    user,
		IPv4Range: staff4,
		IPv6Range: staff6,
	}
}

func mustInsert(t testing.TB, s *Store, np store.NewPeer) (store.Peer, store.Event) {
	t.Helper()
	p, ev, err := s.InsertPending(context.Background(), np)
	if err != nil {
		t.Fatalf("InsertPending %s: %v", np.PublicKey, err)
	}
	return p, ev
}

// mustCreate inserts and activates a peer.
func mustCreate(t testing.TB, s *Store, np store.NewPeer) store.Peer {
	t.Helper()
	p, ev := mustInsert(t, s, np)
	if err := s.Activate(context.Background(), p.PublicKey, ev.ID); err != nil {
		t.Fatalf("Activate %s: %v", p.PublicKey, err)
	}
	p.State = store.StateActive
	return p
}

// countRows counts the rows of a table.
func countRows(t testing.TB, s *Store, table string) int {
	t.Helper()
	var n int
	if err := s.db.QueryRow(`SELECT count(*) FROM ` + table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
