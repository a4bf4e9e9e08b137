package storetest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/internal/fakeclock"
	"github.com/wgkeeper/wgkeeper/store"
)

// OldSchema says what a backend's schema had at an older version, so that
// Upgrade writes the rows that version's code wrote, in the columns it had.
type OldSchema struct {
	// StartedAt: events.started_at exists (a C event records when its
	// connect script started).
	StartedAt bool
	// Actor: events.actor exists.
	Actor bool
	// Sessions: the activity columns of peers, the sessions table and the
	// scope and counter-base columns of events exist.
	Sessions bool
	// Node is the node whose registration (nodes, node_interfaces,
	// node_profiles) was written at the old version, and whose events get
	// its name through the events_node trigger; "" when the schema has no
	// nodes (SQLite).
	Node string
}

// The old database's pool: interface, profile and ranges.
const (
	upIface   = "wg0"
	upProfile = "staff"
)

var (
	upV4 = netip.MustParsePrefix("10.42.0.0/24")
	upV6 = netip.MustParsePrefix("fd42::/64")
	// upT0 is when the old version's configs were created.
	upT0 = time.Date(2026, 3, 3, 14, 0, 0, 0, time.UTC)
)

func upNS(t time.Time) string { return fmt.Sprint(t.UnixNano()) }

func upAddrs(idx int) (netip.Addr, netip.Addr) {
	v4, v6 := upV4.Addr(), upV6.Addr()
	for range idx + 2 {
		v4, v6 = v4.Next(), v6.Next()
	}
	return v4, v6
}

// oldConfig is a config the old version created (and maybe deleted).
type oldConfig struct {
	idx     int
	user    string
	state   store.State // "": deleted at the old version
	expires time.Time
	psk     *wgtypes.Key
	orig    string
}

// OldDataSQL returns the statements that write, at the schema old
// describes, what that version's code wrote for: four configs in one pool
// (two of user "old" active, one of "old" pending with its connect script
// running, one of "other" active), two deleted configs whose indexes are on
// the free list (one D pending and due, one D leased by a daemon of the old
// version), and with Sessions an open session with its activity and an
// ended one. Statements use literals only, valid in SQLite and PostgreSQL.
func OldDataSQL(old OldSchema) []string {
	var q []string
	if old.Node != "" {
		q = append(q,
			`INSERT INTO nodes (name, started_at, last_seen, version) VALUES ('`+old.Node+`', `+upNS(upT0)+`, `+upNS(upT0)+`, 'old')`,
			`INSERT INTO node_interfaces (interface, node, registered_at) VALUES ('`+upIface+`', '`+old.Node+`', `+upNS(upT0)+`)`,
			`INSERT INTO node_profiles (interface, profile_id, ipv4_range, ipv6_range) VALUES ('`+upIface+`', '`+upProfile+`', '`+upV4.String()+`', '`+upV6.String()+`')`)
	}
	for i, c := range upConfigs() {
		v4, v6 := upAddrs(c.idx)
		state := c.state
		if state == "" {
			state = store.StateActive
		}
		exp, psk, orig := "NULL", "NULL", "NULL"
		if !c.expires.IsZero() {
			exp = upNS(c.expires)
		}
		if c.psk != nil {
			psk = "'" + c.psk.String() + "'"
		}
		if c.orig != "" {
			orig = "'" + c.orig + "'"
		}
		created := upT0.Add(time.Duration(i) * time.Minute)
		key := "'" + upKey(c.idx).String() + "'"
		q = append(q, `INSERT INTO peers (public_key, interface, profile_id, user_id, display_name, ip_index, ip_four, ip_six,
			preshared_key, originating_ip, state, created_at, expires_at) VALUES (`+key+`, '`+upIface+`', '`+upProfile+`', '`+c.user+`',
			'laptop `+fmt.Sprint(c.idx)+`', `+fmt.Sprint(c.idx)+`, '`+v4.String()+`', '`+v6.String()+`', `+psk+`, `+orig+`, '`+string(state)+`', `+upNS(created)+`, `+exp+`)`)
		// The C event: done once the connect script succeeded, running
		// while it runs.
		cols := `event, reason, public_key, interface, profile_id, user_id, ip_four, ip_six, originating_ip, expires_at, created_at, status, done_at`
		status, done := "'done'", upNS(created.Add(time.Second))
		if c.state == store.StatePending {
			status, done = "'running'", "NULL"
		}
		vals := `'C', 'created', ` + key + `, '` + upIface + `', '` + upProfile + `', '` + c.user + `', '` + v4.String() + `', '` + v6.String() + `', ` + orig + `, ` + exp + `, ` + upNS(created) + `, ` + status + `, ` + done
		if old.StartedAt {
			cols += `, started_at`
			vals += `, ` + upNS(created)
		}
		if old.Actor {
			cols += `, actor`
			vals += `, 'api:admin@192.0.2.9'`
		}
		q = append(q, `INSERT INTO events (`+cols+`) VALUES (`+vals+`)`)
	}
	if old.Sessions {
		// Config 0 talks: its activity and its open session; config 2 had a
		// session that ended when it was deleted.
		on := upT0.Add(5 * time.Minute)
		v4, v6 := upAddrs(0)
		q = append(q,
			`UPDATE peers SET last_handshake = `+upNS(on)+`, last_active = `+upNS(on.Add(time.Minute))+`, rx_base = 100, tx_base = 200,
				bytes_in = 1000, bytes_out = 2000, endpoint = '192.0.2.1:51820' WHERE ip_index = 0`,
			`INSERT INTO sessions (public_key, interface, profile_id, user_id, ip_four, ip_six, started_at, endpoint, endpoints, bytes_in, bytes_out)
				VALUES ('`+upKey(0).String()+`', '`+upIface+`', '`+upProfile+`', 'old', '`+v4.String()+`', '`+v6.String()+`', `+upNS(on)+`,
				'192.0.2.1:51820', '192.0.2.1:51820', 300, 400)`)
		v4, v6 = upAddrs(2)
		q = append(q,
			`INSERT INTO sessions (public_key, interface, profile_id, user_id, ip_four, ip_six, started_at, ended_at, end_reason, endpoint, endpoints, bytes_in, bytes_out)
				VALUES ('`+upKey(2).String()+`', '`+upIface+`', '`+upProfile+`', 'old', '`+v4.String()+`', '`+v6.String()+`', `+upNS(on)+`, `+upNS(on.Add(2*time.Minute))+`,
				'deleted', '198.51.100.3:4000', '198.51.100.3:4000 198.51.100.4:4001', 50, 60)`)
	}
	// The deletes: the row goes (its index onto the free list by the
	// trigger) and a D takes its identity. Config 2's D is due; config 5's
	// is leased to the old daemon that deleted it.
	for _, d := range []struct {
		idx   int
		user  string
		lease string
	}{{2, "old", ""}, {5, "other", "node-old:7"}} {
		v4, v6 := upAddrs(d.idx)
		at := upT0.Add(10 * time.Minute)
		key := "'" + upKey(d.idx).String() + "'"
		owner, until := "''", "NULL"
		if d.lease != "" {
			owner, until = "'"+d.lease+"'", upNS(upLeaseUntil)
		}
		cols := `event, reason, public_key, interface, profile_id, user_id, ip_four, ip_six, created_at, status, next_attempt_at, lease_owner, lease_until, bytes_in, bytes_out`
		vals := `'D', 'deleted', ` + key + `, '` + upIface + `', '` + upProfile + `', '` + d.user + `', '` + v4.String() + `', '` + v6.String() + `', ` + upNS(at) + `, 'pending', ` + upNS(at) + `, ` + owner + `, ` + until + `, 70, 80`
		if old.Actor {
			cols += `, actor`
			vals += `, 'cli:0'`
		}
		if old.Sessions {
			cols += `, rx_base, tx_base`
			vals += `, 5, 6`
		}
		q = append(q,
			`DELETE FROM peers WHERE public_key = `+key,
			`INSERT INTO events (`+cols+`) VALUES (`+vals+`)`)
	}
	return q
}

// upLeaseUntil is when the old daemon's lease on config 5's D ends.
var upLeaseUntil = upT0.Add(time.Hour)

func upKey(idx int) wgtypes.Key { return testKey(1000 + idx) }

func upConfigs() []oldConfig {
	psk := testKey(999)
	return []oldConfig{
		{idx: 0, user: "old", state: store.StateActive},
		{idx: 1, user: "old", state: store.StateActive, expires: upT0.Add(48 * time.Hour), psk: &psk, orig: "198.51.100.7"},
		{idx: 2, user: "old"},
		{idx: 3, user: "old", state: store.StatePending},
		{idx: 4, user: "other", state: store.StateActive},
		{idx: 5, user: "other"},
	}
}

// Upgrade checks, through the current store API, a database that
// OldDataSQL(old) wrote at an older schema version and that open migrates
// to the newest: the old rows read back unchanged, the next creates take
// the lowest free addresses without colliding with old ones and count the
// old configs against the per-user limit, the pending D is claimable once
// and the leased one once its old lease ended, the running C can still
// finish, and deleting old configs records their D events.
func Upgrade(t *testing.T, old OldSchema, open Open) {
	ctx := context.Background()
	clock := fakeclock.New(upT0.Add(20 * time.Minute))
	s := open(clock.Now)
	t.Cleanup(func() { s.Close() })

	// Configs.
	for i, c := range upConfigs() {
		p, err := s.GetPeer(ctx, upKey(c.idx))
		if c.state == "" {
			if !errors.Is(err, store.ErrNotFound) {
				t.Errorf("deleted config %d after the upgrade: %+v, %v; want ErrNotFound", c.idx, p, err)
			}
			continue
		}
		v4, v6 := upAddrs(c.idx)
		want := store.Peer{PublicKey: upKey(c.idx), Interface: upIface, ProfileID: upProfile, UserID: c.user,
			DisplayName: fmt.Sprintf("laptop %d", c.idx), IPv4: v4, IPv6: v6, PresharedKey: c.psk, State: c.state,
			CreatedAt: upT0.Add(time.Duration(i) * time.Minute), ExpiresAt: c.expires}
		if c.orig != "" {
			want.OriginatingIP = netip.MustParseAddr(c.orig)
		}
		if err != nil || !samePeer(p, want) {
			t.Errorf("config %d after the upgrade:\n got %+v, %v\nwant %+v", c.idx, p, err, want)
		}
	}
	if n, err := s.PoolUsage(ctx, upIface, upProfile); err != nil || n != 4 {
		t.Errorf("PoolUsage after the upgrade = %d, %v; want the 4 old configs", n, err)
	}

	// Events, in order, with their states and leases.
	evs, err := s.ListEvents(ctx, store.EventFilter{})
	if err != nil {
		t.Fatal(err)
	}
	slices.Reverse(evs) // newest first
	type evWant struct {
		kind, status, user, owner string
		idx                       int
		lease                     time.Time
	}
	wants := []evWant{
		{"C", "done", "old", "", 0, time.Time{}}, {"C", "done", "old", "", 1, time.Time{}}, {"C", "done", "old", "", 2, time.Time{}},
		{"C", "running", "old", "", 3, time.Time{}}, {"C", "done", "other", "", 4, time.Time{}}, {"C", "done", "other", "", 5, time.Time{}},
		{"D", "pending", "old", "", 2, time.Time{}}, {"D", "pending", "other", "node-old:7", 5, upLeaseUntil},
	}
	if len(evs) != len(wants) {
		t.Fatalf("events after the upgrade: %d, want %d: %+v", len(evs), len(wants), evs)
	}
	var cRunning, dDue, dLeased int64
	for i, e := range evs {
		w := wants[i]
		v4, v6 := upAddrs(w.idx)
		if (i > 0 && e.ID <= evs[i-1].ID) || e.Kind != w.kind || e.Status != w.status || e.UserID != w.user || e.PublicKey != upKey(w.idx) ||
			e.IPv4 != v4 || e.IPv6 != v6 || e.Interface != upIface || e.ProfileID != upProfile || e.LeaseOwner != w.owner || !e.LeaseUntil.Equal(w.lease) {
			t.Errorf("event %d after the upgrade: %+v; want %+v", i, e, w)
		}
		if e.Scope != "" && e.Scope != "config" {
			t.Errorf("old event %d has scope %q, want a config event", e.ID, e.Scope)
		}
		switch {
		case w.kind == "C":
			created := upT0.Add(time.Duration(w.idx) * time.Minute)
			// A C of a schema without started_at had its script started
			// when it was created (the migration's rule).
			if !e.CreatedAt.Equal(created) || !e.StartedAt.Equal(created) {
				t.Errorf("C event %d after the upgrade: created %v, started %v; want both %v", e.ID, e.CreatedAt, e.StartedAt, created)
			}
			wantActor := ""
			if old.Actor {
				wantActor = "api:admin@192.0.2.9"
			}
			if e.Actor != wantActor {
				t.Errorf("C event %d after the upgrade: actor %q, want %q", e.ID, e.Actor, wantActor)
			}
			if w.status == "running" {
				cRunning = e.ID
			}
		default:
			wantRx := int64(0)
			if old.Sessions {
				wantRx = 5
			}
			if e.BytesIn != 70 || e.BytesOut != 80 || e.RxBase != wantRx || e.Reason != store.ReasonDeleted || !e.NextAttemptAt.Equal(upT0.Add(10*time.Minute)) {
				t.Errorf("D event %d after the upgrade: %+v", e.ID, e)
			}
			if w.owner == "" {
				dDue = e.ID
			} else {
				dLeased = e.ID
			}
		}
	}

	// Sessions and activity, where the old version had them.
	if old.Sessions {
		act, err := s.ListActivity(ctx, upIface)
		if err != nil {
			t.Fatal(err)
		}
		a := act[upKey(0)]
		on := upT0.Add(5 * time.Minute)
		if !a.LastHandshake.Equal(on) || !a.LastActive.Equal(on.Add(time.Minute)) || a.RxBase != 100 || a.TxBase != 200 ||
			a.BytesIn != 1000 || a.BytesOut != 2000 || a.Endpoint != netip.MustParseAddrPort("192.0.2.1:51820") ||
			!a.Session.Started.Equal(on) || a.Session.ID == 0 || a.Session.BytesIn != 300 || a.Session.BytesOut != 400 {
			t.Errorf("activity of config 0 after the upgrade: %+v", a)
		}
		cs, err := s.ListClientSessions(ctx, store.ClientSessionFilter{UserID: "old"})
		if err != nil || len(cs) != 2 {
			t.Fatalf("sessions of user old after the upgrade: %+v, %v; want 2", cs, err)
		}
		slices.SortFunc(cs, func(a, b store.ClientSession) int { return int(a.ID - b.ID) })
		if cs[0].PublicKey != upKey(0) || !cs[0].Ended.IsZero() || cs[0].BytesIn != 300 ||
			cs[1].PublicKey != upKey(2) || !cs[1].Ended.Equal(on.Add(2*time.Minute)) || cs[1].EndReason != "deleted" ||
			len(cs[1].Endpoints) != 2 || cs[1].Endpoints[1] != netip.MustParseAddrPort("198.51.100.4:4001") {
			t.Errorf("sessions after the upgrade: %+v", cs)
		}
	}

	// The pending D is claimable once; the leased one once its old lease
	// ended, by one claimer.
	now := clock.Now()
	claim := func(at time.Time) []int64 {
		t.Helper()
		got, err := s.ClaimDue(ctx, "node-new:1", at, at.Add(time.Minute), 10)
		if err != nil {
			t.Fatal(err)
		}
		var ids []int64
		for _, e := range got {
			ids = append(ids, e.ID)
		}
		return ids
	}
	if got := claim(now); !slices.Equal(got, []int64{dDue}) {
		t.Errorf("first claim after the upgrade = %v, want the old due D %d", got, dDue)
	}
	if got := claim(now); len(got) != 0 {
		t.Errorf("second claim = %v, want nothing (the D is leased)", got)
	}
	if err := s.MarkDone(ctx, dDue, "node-new:1"); err != nil {
		t.Errorf("MarkDone of the old D: %v", err)
	}
	if got := claim(upLeaseUntil.Add(time.Second)); !slices.Equal(got, []int64{dLeased}) {
		t.Errorf("claim after the old lease ended = %v, want the old leased D %d", got, dLeased)
	}
	if got := claim(upLeaseUntil.Add(2 * time.Second)); len(got) != 0 {
		t.Errorf("claim again = %v, want nothing", got)
	}

	// The connect script that ran across the upgrade finishes.
	if err := s.Activate(ctx, upKey(3), cRunning); err != nil {
		t.Errorf("Activate the old pending config: %v", err)
	}
	if p, err := s.GetPeer(ctx, upKey(3)); err != nil || p.State != store.StateActive {
		t.Errorf("old pending config after Activate: %+v, %v", p, err)
	}

	// Creates: the per-user limit counts the old configs; addresses are the
	// lowest free ones (the holes the old deletes left, then the high-water
	// mark), never an old config's.
	np := func(i int, user string, max int) store.NewPeer {
		return store.NewPeer{PublicKey: testKey(i), Interface: upIface, ProfileID: upProfile, UserID: user,
			IPv4Range: upV4, IPv6Range: upV6, MaxPerUser: max}
	}
	if _, _, err := s.InsertPending(ctx, np(1, "old", 3)); !errors.Is(err, store.ErrLimitReached) {
		t.Errorf("create for user old with a limit of 3 (3 old configs) = %v, want ErrLimitReached", err)
	}
	if _, _, err := s.InsertPending(ctx, np(1, "old", 4)); err != nil {
		t.Fatalf("create for user old with a limit of 4: %v", err)
	}
	if _, _, err := s.InsertPending(ctx, store.NewPeer{PublicKey: upKey(0), Interface: upIface, ProfileID: upProfile, UserID: "x",
		IPv4Range: upV4, IPv6Range: upV6}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("create with an old config's key = %v, want ErrConflict", err)
	}
	got := []int{2}
	for i, user := range []string{"new", "new"} {
		p, c, err := s.InsertPending(ctx, np(10+i, user, 2))
		if err != nil {
			t.Fatalf("create %d after the upgrade: %v", i, err)
		}
		if c.Kind != store.KindConnect || c.Status != store.StatusRunning || c.ID <= dLeased || c.IPv4 != p.IPv4 {
			t.Errorf("C event of create %d: %+v (the last old event is %d)", i, c, dLeased)
		}
		got = append(got, hostIndex(p.IPv4))
		if v4, v6 := upAddrs(hostIndex(p.IPv4)); p.IPv6 != v6 || p.IPv4 != v4 {
			t.Errorf("create %d: addresses %v, %v are not one index's", i, p.IPv4, p.IPv6)
		}
	}
	// Index 2 went to testKey(1) above; then 5 (the other hole), then 6.
	p1, err := s.GetPeer(ctx, testKey(1))
	if err != nil {
		t.Fatal(err)
	}
	got[0] = hostIndex(p1.IPv4)
	if !slices.Equal(got, []int{2, 5, 6}) {
		t.Errorf("host indexes of the creates after the upgrade = %v, want [2 5 6] (old configs hold 0 1 3 4)", got)
	}

	// Deleting old configs records their D events, with their addresses.
	dels, err := s.DeletePeers(ctx, []wgtypes.Key{upKey(0), upKey(1)}, store.ReasonDeleted, "", time.Time{})
	if err != nil || len(dels) != 2 {
		t.Fatalf("DeletePeers of old configs = %+v, %v; want 2 D events", dels, err)
	}
	for _, d := range dels {
		idx := 0
		if d.PublicKey == upKey(1) {
			idx = 1
		}
		v4, v6 := upAddrs(idx)
		if d.Kind != store.KindDisconnect || d.Status != store.StatusPending || d.IPv4 != v4 || d.IPv6 != v6 || d.UserID != "old" || d.ID <= dLeased {
			t.Errorf("D of old config %d: %+v", idx, d)
		}
		if idx == 1 && !d.ExpiresAt.Equal(upT0.Add(48*time.Hour)) {
			t.Errorf("D of old config 1: expiry %v, want the config's", d.ExpiresAt)
		}
	}
	if p, _, err := s.InsertPending(ctx, np(20, "new", 0)); err != nil || hostIndex(p.IPv4) != 0 {
		t.Errorf("create after deleting old configs = %v, %v; want index 0 (the lowest freed)", p.IPv4, err)
	}
}

// hostIndex is the index of a host address of upV4.
func hostIndex(a netip.Addr) int {
	b := a.As4()
	return int(b[3]) - 2
}

func samePeer(a, b store.Peer) bool {
	pskEq := (a.PresharedKey == nil) == (b.PresharedKey == nil) && (a.PresharedKey == nil || *a.PresharedKey == *b.PresharedKey)
	return pskEq && a.PublicKey == b.PublicKey && a.Interface == b.Interface && a.ProfileID == b.ProfileID && a.UserID == b.UserID &&
		a.DisplayName == b.DisplayName && a.IPv4 == b.IPv4 && a.IPv6 == b.IPv6 && a.OriginatingIP == b.OriginatingIP &&
		a.State == b.State && a.CreatedAt.Equal(b.CreatedAt) && a.ExpiresAt.Equal(b.ExpiresAt)
}
