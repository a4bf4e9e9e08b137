package postgres

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/internal/pgtest"
	"github.com/wgkeeper/wgkeeper/store"
)

func open(t testing.TB, url string, opts Options) *Store {
	t.Helper()
	s, err := Open(context.Background(), url, opts)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func testKey(i int) wgtypes.Key {
	var k wgtypes.Key
	k[0] = 0x42
	binary.BigEndian.PutUint64(k[24:], uint64(i))
	return k
}

// Only Create applies the schema; the migrations are recorded, applied
// once by concurrent openers, and a second Open changes nothing.
func TestMigrations(t *testing.T) {
	url := pgtest.NewDatabase(t)
	ctx := context.Background()
	if _, err := Open(ctx, url, Options{}); !errors.Is(err, store.ErrNoDatabase) {
		t.Fatalf("Open without Create on an empty database = %v, want ErrNoDatabase", err)
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var tables int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = 'public'`).Scan(&tables); err != nil || tables != 0 {
		t.Fatalf("Open without Create left %d tables (%v)", tables, err)
	}

	all, err := Migrations()
	if err != nil || len(all) == 0 {
		t.Fatalf("Migrations = %d, %v", len(all), err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			s, err := Open(ctx, url, Options{Create: true})
			if err == nil {
				s.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent Open %d: %v", i, err)
		}
	}
	rows, err := conn.Query(ctx, `SELECT version, name FROM schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var v int
		var name string
		if err := rows.Scan(&v, &name); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%04d_%s", v, name))
	}
	var want []string
	for _, m := range all {
		want = append(want, fmt.Sprintf("%04d_%s", m.Version, m.Name))
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("recorded migrations %v, want %v", got, want)
	}
	s := open(t, url, Options{})
	if v, err := s.SchemaVersion(ctx); err != nil || v != len(all) {
		t.Fatalf("SchemaVersion = %d, %v; want %d", v, err, len(all))
	}

	// A schema from a newer wgkeeper is refused, and left as it is.
	if _, err := conn.Exec(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, 'future', 0)`, len(all)+1); err != nil {
		t.Fatal(err)
	}
	_, err = Open(ctx, url, Options{Create: true})
	var tooNew *store.SchemaTooNewError
	if !errors.As(err, &tooNew) || tooNew.Version != len(all)+1 || tooNew.Known != len(all) {
		t.Fatalf("Open of a newer schema = %v", err)
	}
}

// The per-user limit and allocation stay exact with 8 creators on 2
// handles (as on 2 nodes) for one user in one pool; the unique indexes
// agree.
func TestConcurrentCreatorsOneUser(t *testing.T) {
	url := pgtest.NewDatabase(t)
	ctx := context.Background()
	handles := []*Store{open(t, url, Options{Create: true}), open(t, url, Options{})}
	const (
		workers = 8
		each    = 12
		limit   = 40
	)
	var (
		mu      sync.Mutex
		made    = map[netip.Addr]bool{}
		limited int
		failed  []error
	)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for j := range each {
				_, _, err := handles[w%2].InsertPending(ctx, store.NewPeer{
					PublicKey:  testKey(w*each + j + 1),
					Interface:  "wg0",
					ProfileID:  "staff",
					UserID:     "alice",
					IPv4Range:  netip.MustParsePrefix("10.42.0.0/24"),
					IPv6Range:  netip.MustParsePrefix("fd42::/64"),
					MaxPerUser: limit,
				})
				mu.Lock()
				switch {
				case errors.Is(err, store.ErrLimitReached):
					limited++
				case err != nil:
					failed = append(failed, err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(failed) > 0 {
		t.Fatalf("%d creates failed, first: %v", len(failed), failed[0])
	}
	ps, err := handles[0].ListPeers(ctx, store.PeerFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		if made[p.IPv4] {
			t.Fatalf("address %s handed out twice", p.IPv4)
		}
		made[p.IPv4] = true
	}
	if len(ps) != limit || limited != workers*each-limit {
		t.Fatalf("created %d and refused %d, want %d and %d", len(ps), limited, limit, workers*each-limit)
	}
	// The lowest indexes, none skipped.
	for i := range limit {
		if a := store.HostAddr(netip.MustParsePrefix("10.42.0.0/24"), int64(i)); !made[a] {
			t.Errorf("address %s not handed out, yet %d peers exist", a, limit)
		}
	}
}

// A server that cannot be reached is ErrUnavailable, naming the cause.
func TestUnreachable(t *testing.T) {
	srv := pgtest.NewServer(t)
	url := pgtest.CreateDatabase(t, srv.URL())
	ctx := context.Background()
	s := open(t, url, Options{Create: true})
	if err := s.Check(ctx); err != nil {
		t.Fatalf("Check = %v", err)
	}
	srv.Stop(t)
	err := s.Check(ctx)
	var ue *store.UnavailableError
	if !errors.As(err, &ue) || ue.Cause != store.CauseUnreachable {
		t.Fatalf("Check with the server stopped = %v, want CauseUnreachable", err)
	}
	if _, _, err := s.InsertPending(ctx, store.NewPeer{PublicKey: testKey(1), Interface: "wg0", ProfileID: "p", UserID: "u",
		IPv4Range: netip.MustParsePrefix("10.0.0.0/24")}); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("InsertPending with the server stopped = %v, want ErrUnavailable", err)
	}
	if _, err := Open(ctx, url, Options{}); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Open with the server stopped = %v, want ErrUnavailable", err)
	}
	srv.Start(t)
	if err := s.Check(ctx); err != nil {
		t.Fatalf("Check after the server came back = %v", err)
	}
	if _, _, err := s.InsertPending(ctx, store.NewPeer{PublicKey: testKey(1), Interface: "wg0", ProfileID: "p", UserID: "u",
		IPv4Range: netip.MustParsePrefix("10.0.0.0/24")}); err != nil {
		t.Fatalf("InsertPending after the server came back = %v", err)
	}
}

func TestIsURLAndRedact(t *testing.T) {
	for in, want := range map[string]bool{
		"postgres://h/db": true, "POSTGRESQL://h/db": true, "/var/lib/wgkeeper/wgkeeper.db": false,
		"postgres.db": false, "file:postgres://x": false,
	} {
		if IsURL(in) != want {
			t.Errorf("IsURL(%q) = %v", in, !want)
		}
	}
	if got := Redact("postgres://u:secret@h/db"); strings.Contains(got, "secret") {
		t.Errorf("Redact kept the password: %s", got)
	}
}

// A server restart under a listening handle: Changes and Resyncs both
// fire once the listener is back, and changes after it are heard again.
func TestListenerResyncsAfterRestart(t *testing.T) {
	srv := pgtest.NewServer(t)
	url := pgtest.CreateDatabase(t, srv.URL())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := open(t, url, Options{Create: true})
	w := open(t, url, Options{})
	changes := s.Changes(ctx)
	resyncs := s.Resyncs(ctx)
	wait := func(ch <-chan struct{}, what string) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(30 * time.Second):
			t.Fatalf("no %s within 30 s", what)
		}
	}
	drain := func(ch <-chan struct{}) {
		for {
			select {
			case <-ch:
			default:
				return
			}
		}
	}
	v0, err := s.Version(ctx)
	if err != nil {
		t.Fatal(err)
	}
	srv.Restart(t)
	wait(resyncs, "resync after the restart")
	wait(changes, "change after the restart")
	if v, err := s.Version(ctx); err != nil || v == v0 {
		t.Errorf("Version after a resync = %d, %v; want other than %d", v, err, v0)
	}
	drain(changes)
	if _, _, err := w.InsertPending(ctx, store.NewPeer{PublicKey: testKey(1), Interface: "wg0", ProfileID: "p", UserID: "u",
		IPv4Range: netip.MustParsePrefix("10.0.0.0/24")}); err != nil {
		t.Fatal(err)
	}
	wait(changes, "change by another handle after the restart")
	select {
	case <-resyncs:
		t.Error("a resync without a lost connection")
	default:
	}
}
