package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/store/internal/sqlrow"
)

// TestCorruptRowsGiveClearErrors edits stored values by hand, as an operator
// with the sqlite3 shell might, and checks that reads name the row and the
// column instead of panicking or returning garbage.
func TestCorruptRowsGiveClearErrors(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	psk := testKey(77)
	np := staffPeer(1, "alice")
	np.PresharedKey = &psk
	p, ev := mustInsert(t, s, np)
	key := p.PublicKey.String()

	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := s.db.Exec(q, args...); err != nil {
			t.Fatal(err)
		}
	}

	exec(`UPDATE peers SET ip_four = '10.42.0.x' WHERE public_key = ?`, key)
	_, err := s.GetPeer(ctx, p.PublicKey)
	want := `corrupt row peer "` + key + `": column ip_four = "10.42.0.x"`
	if !errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), want) {
		t.Fatalf("GetPeer = %v, want ErrCorrupt containing %q", err, want)
	}
	if _, err := s.ListPeers(ctx, store.PeerFilter{}); !errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), want) {
		t.Fatalf("ListPeers = %v, want %q", err, want)
	}
	// DeletePeers refuses to record an event from a corrupt row, and
	// deletes nothing.
	if _, err := s.DeletePeers(ctx, []wgtypes.Key{p.PublicKey}, store.ReasonDeleted, "", time.Time{}); !errors.Is(err, store.ErrCorrupt) {
		t.Errorf("DeletePeers of a corrupt row = %v, want ErrCorrupt", err)
	}
	if n := countRows(t, s, "peers"); n != 1 {
		t.Errorf("%d peers after a refused delete, want 1", n)
	}
	exec(`UPDATE peers SET ip_four = '10.42.0.2', ip_six = '10.42.0.2' WHERE public_key = ?`, key)
	if _, err := s.GetPeer(ctx, p.PublicKey); !errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), "not an IPv6 address") {
		t.Errorf("v4 in ip_six: %v", err)
	}
	exec(`UPDATE peers SET ip_six = 'FD42::2' WHERE public_key = ?`, key)
	if _, err := s.GetPeer(ctx, p.PublicKey); !errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), "not in canonical form") {
		t.Errorf("non-canonical address: %v", err)
	}
	exec(`UPDATE peers SET ip_six = 'fd42::2', preshared_key = 'c2VjcmV0' WHERE public_key = ?`, key)
	_, err = s.GetPeer(ctx, p.PublicKey)
	if !errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), "column preshared_key = (secret, 8 bytes)") {
		t.Errorf("bad preshared key: %v", err)
	}
	if strings.Contains(err.Error(), "c2VjcmV0") {
		t.Errorf("error %q reveals the stored preshared key", err)
	}
	// The schema itself refuses an unknown state.
	if _, err := s.db.Exec(`UPDATE peers SET preshared_key = NULL, state = 'zombie' WHERE public_key = ?`, key); err == nil {
		t.Error("schema accepted state 'zombie'")
	}

	// A corrupt key in the events table names the event.
	exec(`UPDATE events SET public_key = 'not-a-key' WHERE id = ?`, ev.ID)
	_, err = s.ListEvents(ctx, store.EventFilter{})
	want = `corrupt row event 1: column public_key = "not-a-key"`
	if !errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), want) {
		t.Errorf("ListEvents = %v, want %q", err, want)
	}
	if _, err := s.UserSessions(ctx, "alice"); !errors.Is(err, store.ErrCorrupt) {
		t.Errorf("UserSessions = %v, want ErrCorrupt", err)
	}
}

func TestTimeRange(t *testing.T) {
	s, _ := newStore(t)
	np := staffPeer(1, "alice")
	np.ExpiresAt = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
	_, _, err := s.InsertPending(context.Background(), np)
	if err == nil || !strings.Contains(err.Error(), "expires at: time 9999-01-01T00:00:00Z is outside the storable range 1677..2262") {
		t.Errorf("far-future expiry: err = %v", err)
	}
	for _, tm := range []time.Time{sqlrow.MinTime, sqlrow.MaxTime, time.Unix(0, 1).UTC(), time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("x", 3600))} {
		v, err := sqlrow.EncTime(tm)
		if err != nil {
			t.Fatalf("encTime(%s): %v", tm, err)
		}
		if back := sqlrow.DecTime(sql.NullInt64{Int64: v.(int64), Valid: true}); !back.Equal(tm) || back.Location() != time.UTC {
			t.Errorf("round trip of %s gave %s", tm, back)
		}
	}
	if v, err := sqlrow.EncTime(time.Time{}); v != nil || err != nil {
		t.Errorf("encTime(zero) = %v, %v; want NULL", v, err)
	}
}

func nullStr(s string, valid bool) sql.NullString { return sql.NullString{String: s, Valid: valid} }

// FuzzPeerRowDecode feeds arbitrary stored text to the peer decoder: it must
// never panic, every failure must be ErrCorrupt naming the row, and whatever
// it accepts must be exactly what the store would have written.
func FuzzPeerRowDecode(f *testing.F) {
	good := testKey(1).String()
	f.Add(good, "10.42.0.2", true, "fd42::2", true, testKey(2).String(), true, "192.0.2.1", true, "active", int64(0))
	f.Add(good, "", false, "fd42::2", true, "", false, "", false, "pending", int64(3))
	f.Add("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "10.0.0.1", true, "", false, "", false, "", false, "active", int64(0))
	f.Add(good, "::ffff:10.0.0.1", true, "fe80::1%eth0", true, "x", true, "1.2.3.4.5", true, "gone", int64(-1))
	f.Add(good, "", false, "", false, "", false, "", false, "active", int64(0))
	f.Add("QgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB=", "10.0.0.1", true, "", false, "", false, "", false, "active", int64(0))
	f.Fuzz(func(t *testing.T, key, four string, fourOK bool, six string, sixOK bool, psk string, pskOK bool,
		orig string, origOK bool, state string, index int64) {
		r := sqlrow.PeerRow{
			PublicKey: key, Interface: "wg0", ProfileID: "p", UserID: "u", IPIndex: index,
			IPFour: nullStr(four, fourOK), IPSix: nullStr(six, sixOK), PresharedKey: nullStr(psk, pskOK),
			OriginatingIP: nullStr(orig, origOK), State: state, CreatedAt: 1,
		}
		p, err := r.Decode()
		if err != nil {
			if !errors.Is(err, store.ErrCorrupt) || !strings.HasPrefix(err.Error(), "corrupt row peer ") {
				t.Fatalf("error %q is not a corrupt-row error naming the peer", err)
			}
			msg := err.Error()
			if i := strings.Index(msg, "column preshared_key = "); i >= 0 && len(psk) >= 4 && strings.Contains(msg[i:], psk) {
				t.Fatalf("error %q reveals the preshared key", err)
			}
			return
		}
		if p.PublicKey.String() != key || (state != "active" && state != "pending") || index < 0 {
			t.Fatalf("accepted key %q state %q index %d", key, state, index)
		}
		for _, c := range []struct {
			in  sql.NullString
			out any
		}{{r.IPFour, sqlrow.EncAddr(p.IPv4)}, {r.IPSix, sqlrow.EncAddr(p.IPv6)}, {r.OriginatingIP, sqlrow.EncAddr(p.OriginatingIP)}} {
			if c.in.Valid != (c.out != nil) || (c.in.Valid && c.out.(string) != c.in.String) {
				t.Fatalf("address %q decoded to %v, which encodes differently", c.in.String, c.out)
			}
		}
		if p.IPv4.IsValid() && !p.IPv4.Is4() || p.IPv6.IsValid() && !p.IPv6.Is6() || !p.IPv4.IsValid() && !p.IPv6.IsValid() {
			t.Fatalf("accepted addresses %v / %v", p.IPv4, p.IPv6)
		}
		if pskOK && p.PresharedKey.String() != psk {
			t.Fatalf("preshared key does not round-trip")
		}
	})
}

// FuzzEventRowDecode does the same for events, including NULLs where the
// schema forbids them.
func FuzzEventRowDecode(f *testing.F) {
	good := testKey(1).String()
	f.Add(int64(1), "D", true, good, true, "10.42.0.2", "fd42::2", "", "done", true, int64(0), int64(5))
	f.Add(int64(2), "C", true, good, true, "", "", "192.0.2.1", "running", true, int64(1), int64(0))
	f.Add(int64(3), "X", false, "nope", false, "300.1.1.1", "10.0.0.1", "::1%lo", "lost", false, int64(-1), int64(-7))
	f.Fuzz(func(t *testing.T, id int64, kind string, kindOK bool, key string, keyOK bool,
		four, six, orig, status string, statusOK bool, attempts, bytesIn int64) {
		opt := func(s string) sql.NullString { return nullStr(s, s != "") }
		r := sqlrow.EventRow{
			ID: sql.NullInt64{Int64: id, Valid: true}, Kind: nullStr(kind, kindOK), Reason: opt("deleted"),
			PublicKey: nullStr(key, keyOK), Interface: opt("wg0"), ProfileID: opt("p"), UserID: opt("u"),
			IPFour: opt(four), IPSix: opt(six), OriginatingIP: opt(orig),
			BytesIn: sql.NullInt64{Int64: bytesIn, Valid: true}, BytesOut: sql.NullInt64{Valid: true},
			CreatedAt: sql.NullInt64{Int64: 1, Valid: true}, Status: nullStr(status, statusOK),
			Attempts: sql.NullInt64{Int64: attempts, Valid: true}, LastError: opt("x"), LeaseOwner: sql.NullString{Valid: true},
		}
		if r.LastError.String == "" {
			r.LastError.Valid = true
		}
		e, err := r.Decode()
		if err != nil {
			if !errors.Is(err, store.ErrCorrupt) || !strings.HasPrefix(err.Error(), "corrupt row event ") {
				t.Fatalf("error %q is not a corrupt-row error naming the event", err)
			}
			return
		}
		if !kindOK || !keyOK || !statusOK || e.PublicKey.String() != key || e.Attempts < 0 || e.BytesIn < 0 || e.ID != id {
			t.Fatalf("accepted %+v from %+v", e, r)
		}
		if (four != "" && sqlrow.EncAddr(e.IPv4) != four) || (six != "" && sqlrow.EncAddr(e.IPv6) != six) || (orig != "" && sqlrow.EncAddr(e.OriginatingIP) != orig) {
			t.Fatalf("addresses do not round-trip: %q %q %q -> %v %v %v", four, six, orig, e.IPv4, e.IPv6, e.OriginatingIP)
		}
	})
}
