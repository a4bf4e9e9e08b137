// Package storetest is the conformance suite of the store contract. Run
// turns the guarantees written on store.Store into tests, and every backend
// runs it from its own tests:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) storetest.Open {
//			db := newEmptyDatabase(t)
//			return func(now func() time.Time) store.Store { return openHandle(t, db, now) }
//		})
//	}
//
// The suite covers what the lifecycle relies on: creating, activating,
// rejecting and deleting configs; the per-user limit and address
// allocation under concurrent writers on several handles; leases (claim,
// renew, expiry, one owner at a time, release); event order, filters,
// retries and pruning; WhoHad at its boundaries; session activity,
// sessions and their events; expiry changes; change
// notification seen by another handle; and every documented error. What
// only one backend has (file modes, migrations, a full disk) stays in that
// backend's own tests; Upgrade is what both check after migrating a
// database of an older schema version, which each builds its own way.
package storetest

import (
	"context"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/internal/fakeclock"
	"github.com/wgkeeper/wgkeeper/store"
)

// Open opens a new handle on the database that NewDB created, with now as
// the store's clock (nil: time.Now). Handles opened by one Open share the
// database as separate processes would, and may be used concurrently. It
// fails the test when the handle cannot be opened. The suite closes every
// handle it opens.
type Open func(now func() time.Time) store.Store

// NewDB creates an empty database for the test t, removed when t ends, and
// returns how to open handles on it.
type NewDB func(t *testing.T) Open

// Run runs the conformance suite against the backend newDB creates, one
// subtest per guarantee, each on a database of its own.
func Run(t *testing.T, newDB NewDB) {
	su := &suite{newDB: newDB}
	for _, tc := range []struct {
		name string
		fn   func(*testing.T)
	}{
		// Configs and addresses.
		{"CreateActivateReject", su.testCreateActivateReject},
		{"InsertPendingValidation", su.testInsertPendingValidation},
		{"InsertPendingConflictAndLimit", su.testInsertPendingConflictAndLimit},
		{"AllocatePairedIndexes", su.testAllocatePairedIndexes},
		{"AllocateExhaustionWritesNothing", su.testAllocateExhaustionWritesNothing},
		{"AllocateReusesLowestFreed", su.testAllocateReusesLowestFreed},
		{"AllocateSingleFamily", su.testAllocateSingleFamily},
		{"AllocateProfilesIndependent", su.testAllocateProfilesIndependent},
		{"AllocateSkipsAvoided", su.testAllocateSkipsAvoided},
		{"AllocateConcurrent", su.testAllocateConcurrent},
		{"ListPeersFilters", su.testListPeersFilters},
		{"NextExpiryNone", su.testNextExpiryNone},
		{"SetExpiry", su.testSetExpiry},
		{"SetExpiryOutOfRange", su.testSetExpiryOutOfRange},
		{"Disconnected", su.testDisconnected},
		// Events, leases and the connection log.
		{"DeletePeersLeasedEvents", su.testDeletePeersLeasedEvents},
		{"EventActor", su.testEventActor},
		{"MarkConnectStarted", su.testMarkConnectStarted},
		{"StalePendingDelete", su.testStalePendingDelete},
		{"StaleNeverStarted", su.testStaleNeverStarted},
		{"PendingDeleteHeldWithoutOwner", su.testPendingDeleteHeldWithoutOwner},
		{"RetryAndBackoff", su.testRetryAndBackoff},
		{"ClaimDueValidation", su.testClaimDueValidation},
		{"ClaimDueConcurrent", su.testClaimDueConcurrent},
		{"RenewLease", su.testRenewLease},
		{"ReleaseLeases", su.testReleaseLeases},
		{"ListEventsFilters", su.testListEventsFilters},
		{"PruneEvents", su.testPruneEvents},
		{"WhoHad", su.testWhoHad},
		{"DocumentedErrors", su.testDocumentedErrors},
		// Sessions.
		{"SessionLifecycle", su.testSessionLifecycle},
		{"SessionWithoutEvents", su.testSessionWithoutEvents},
		{"SessionSkipsGoneConfigs", su.testSessionSkipsGoneConfigs},
		{"SessionEndsWithConfig", su.testSessionEndsWithConfig},
		// The handle itself.
		{"VersionSeesOtherWriters", su.testVersionSeesOtherWriters},
		{"ChangesSeenByAnotherHandle", su.testChangesSeenByAnotherHandle},
		{"CheckAndSchemaVersion", su.testCheckAndSchemaVersion},
		{"CloseTwice", su.testCloseTwice},
	} {
		t.Run(tc.name, tc.fn)
	}
}

// suite carries the backend through the tests.
type suite struct{ newDB NewDB }

// handle opens a handle with open on clock c (nil: the real time) and
// closes it when t ends.
func (su *suite) handle(t *testing.T, open Open, c *fakeclock.Clock) store.Store {
	t.Helper()
	var now func() time.Time
	if c != nil {
		now = c.Now
	}
	s := open(now)
	t.Cleanup(func() { s.Close() })
	return s
}

// newStore opens one handle on a new database, on a test clock.
func (su *suite) newStore(t *testing.T) (store.Store, *fakeclock.Clock) {
	t.Helper()
	c := newClock()
	return su.handle(t, su.newDB(t), c), c
}

// newClock returns a test clock that moves only when told to.
func newClock() *fakeclock.Clock { return fakeclock.New(time.Date(2026, 3, 3, 14, 0, 0, 0, time.UTC)) }

// testClockFuture is a lease end far after any test clock.
func testClockFuture() time.Time { return newClock().Now().AddDate(1, 0, 0) }

// testKey returns a distinct valid key for each i.
func testKey(i int) wgtypes.Key {
	var k wgtypes.Key
	k[0] = 0x42
	binary.BigEndian.PutUint64(k[24:], uint64(i))
	return k
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

func mustInsert(t testing.TB, s store.Store, np store.NewPeer) (store.Peer, store.Event) {
	t.Helper()
	p, ev, err := s.InsertPending(context.Background(), np)
	if err != nil {
		t.Fatalf("InsertPending %s: %v", np.PublicKey, err)
	}
	return p, ev
}

// mustCreate inserts and activates a peer.
func mustCreate(t testing.TB, s store.Store, np store.NewPeer) store.Peer {
	t.Helper()
	p, ev := mustInsert(t, s, np)
	if err := s.Activate(context.Background(), p.PublicKey, ev.ID); err != nil {
		t.Fatalf("Activate %s: %v", p.PublicKey, err)
	}
	p.State = store.StateActive
	return p
}

// countPeers counts every stored peer.
func countPeers(t testing.TB, s store.Store) int {
	t.Helper()
	ps, err := s.ListPeers(context.Background(), store.PeerFilter{})
	if err != nil {
		t.Fatal(err)
	}
	return len(ps)
}

// countEvents counts every stored event.
func countEvents(t testing.TB, s store.Store) int {
	t.Helper()
	evs, err := s.ListEvents(context.Background(), store.EventFilter{})
	if err != nil {
		t.Fatal(err)
	}
	return len(evs)
}

// setEventBytes sets the counters of one event.
func setEventBytes(ctx context.Context, s store.Store, id, in, out int64) error {
	return s.SetEventsBytes(ctx, []store.EventBytes{{ID: id, In: in, Out: out}})
}

func keysOfPeers(ps []store.Peer) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.PublicKey.String()[:8]
	}
	return out
}
