package postgres

import (
	"database/sql"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/store"
)

// Times are stored as INTEGER nanoseconds since the Unix epoch (UTC), which
// sort correctly and round-trip exactly; NULL is the zero time.
var (
	minTime = time.Unix(0, math.MinInt64).UTC()
	maxTime = time.Unix(0, math.MaxInt64).UTC()
)

// encTime returns the column value for t: nil for the zero time.
func encTime(t time.Time) (any, error) {
	if t.IsZero() {
		return nil, nil
	}
	if t.Before(minTime) || t.After(maxTime) {
		return nil, fmt.Errorf("time %s is outside the storable range %d..%d", t.UTC().Format(time.RFC3339), minTime.Year(), maxTime.Year())
	}
	return t.UnixNano(), nil
}

func decTime(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return time.Unix(0, v.Int64).UTC()
}

// encAddr returns the column value for a: nil for the zero address. An
// IPv4-mapped IPv6 address is stored as IPv4; a zone is dropped.
func encAddr(a netip.Addr) any {
	if !a.IsValid() {
		return nil
	}
	return a.Unmap().WithZone("").String()
}

// errZeroKey is returned for an all-zero key, which WireGuard treats as none.
var errZeroKey = errors.New("key is all zeros")

// parseStoredKey reads a key column: standard base64 of 32 bytes, in the
// canonical form Key.String produces, not all zeros.
func parseStoredKey(s string) (wgtypes.Key, error) {
	k, err := wgtypes.ParseKey(s)
	if err != nil {
		return wgtypes.Key{}, err
	}
	if k.String() != s {
		return wgtypes.Key{}, errors.New("not in canonical base64 form")
	}
	if k == (wgtypes.Key{}) {
		return wgtypes.Key{}, errZeroKey
	}
	return k, nil
}

// parseStoredAddr reads an address column in the canonical form encAddr
// writes.
func parseStoredAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, err
	}
	if a.String() != s || a.Is4In6() || a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("not in canonical form (%s)", a.Unmap().WithZone(""))
	}
	return a, nil
}

// corruptError names the row and column of a stored value that cannot be
// read back. It matches ErrCorrupt.
type corruptError struct {
	row    string // e.g. `peer "AAAA…="`, "event 17"
	column string
	value  string // already quoted or redacted for the message
	err    error
}

func (e *corruptError) Error() string {
	return fmt.Sprintf("%s %s: column %s = %s: %v", store.ErrCorrupt, e.row, e.column, e.value, e.err)
}

func (e *corruptError) Is(target error) bool { return target == store.ErrCorrupt }

// quoteValue quotes a stored value for an error message, shortened.
func quoteValue(s string) string {
	const max = 64
	if len(s) > max {
		return fmt.Sprintf("%q…", s[:max])
	}
	return fmt.Sprintf("%q", s)
}

// rowDecoder collects the first error while a row's columns are decoded.
type rowDecoder struct {
	row string
	err error
}

func (d *rowDecoder) fail(column, value string, err error) {
	if d.err == nil {
		d.err = &corruptError{row: d.row, column: column, value: value, err: err}
	}
}

func (d *rowDecoder) key(column, s string) wgtypes.Key {
	k, err := parseStoredKey(s)
	if err != nil {
		d.fail(column, quoteValue(s), err)
	}
	return k
}

// secretKey decodes a secret (preshared) key; its value never appears in
// errors.
func (d *rowDecoder) secretKey(column string, s sql.NullString) *wgtypes.Key {
	if !s.Valid {
		return nil
	}
	k, err := parseStoredKey(s.String)
	if err != nil {
		d.fail(column, fmt.Sprintf("(secret, %d bytes)", len(s.String)), errors.New("not a valid key"))
		return nil
	}
	return &k
}

func (d *rowDecoder) addr(column string, s sql.NullString) netip.Addr {
	if !s.Valid {
		return netip.Addr{}
	}
	a, err := parseStoredAddr(s.String)
	if err != nil {
		d.fail(column, quoteValue(s.String), err)
	}
	return a
}

func (d *rowDecoder) family(column string, a netip.Addr, want4 bool) {
	if a.IsValid() && a.Is4() != want4 {
		fam := "IPv6"
		if want4 {
			fam = "IPv4"
		}
		d.fail(column, quoteValue(a.String()), fmt.Errorf("not an %s address", fam))
	}
}

func (d *rowDecoder) oneOf(column, s string, allowed ...string) string {
	for _, a := range allowed {
		if s == a {
			return s
		}
	}
	d.fail(column, quoteValue(s), fmt.Errorf("not one of %q", allowed))
	return s
}

func (d *rowDecoder) nonNegative(column string, v int64) int64 {
	if v < 0 {
		d.fail(column, fmt.Sprint(v), errors.New("negative"))
	}
	return v
}

// peerColumns lists the columns peerRow scans, in order.
const peerColumns = `public_key, interface, profile_id, user_id, display_name, ip_index,
	ip_four, ip_six, preshared_key, originating_ip, state, created_at, expires_at`

// peerRow holds a peers row as stored, before decoding.
type peerRow struct {
	PublicKey     string
	Interface     string
	ProfileID     string
	UserID        string
	DisplayName   string
	IPIndex       int64
	IPFour        sql.NullString
	IPSix         sql.NullString
	PresharedKey  sql.NullString
	OriginatingIP sql.NullString
	State         string
	CreatedAt     int64
	ExpiresAt     sql.NullInt64
}

func (r *peerRow) dest() []any {
	return []any{&r.PublicKey, &r.Interface, &r.ProfileID, &r.UserID, &r.DisplayName, &r.IPIndex,
		&r.IPFour, &r.IPSix, &r.PresharedKey, &r.OriginatingIP, &r.State, &r.CreatedAt, &r.ExpiresAt}
}

// decode turns a stored row into a Peer, or returns an error matching
// ErrCorrupt that names the row and the column.
func (r *peerRow) decode() (store.Peer, error) {
	d := rowDecoder{row: "peer " + quoteValue(r.PublicKey)}
	p := store.Peer{
		PublicKey:     d.key("public_key", r.PublicKey),
		Interface:     r.Interface,
		ProfileID:     r.ProfileID,
		UserID:        r.UserID,
		DisplayName:   r.DisplayName,
		IPv4:          d.addr("ip_four", r.IPFour),
		IPv6:          d.addr("ip_six", r.IPSix),
		PresharedKey:  d.secretKey("preshared_key", r.PresharedKey),
		OriginatingIP: d.addr("originating_ip", r.OriginatingIP),
		State:         store.State(d.oneOf("state", r.State, string(store.StatePending), string(store.StateActive))),
		CreatedAt:     time.Unix(0, r.CreatedAt).UTC(),
		ExpiresAt:     decTime(r.ExpiresAt),
	}
	d.nonNegative("ip_index", r.IPIndex)
	d.family("ip_four", p.IPv4, true)
	d.family("ip_six", p.IPv6, false)
	if d.err == nil && !p.IPv4.IsValid() && !p.IPv6.IsValid() {
		d.fail("ip_four", "NULL", errors.New("peer has neither an IPv4 nor an IPv6 address"))
	}
	if d.err != nil {
		return store.Peer{}, d.err
	}
	return p, nil
}

// eventColumns lists the columns eventRow scans, in order; prefix them with a
// table alias through eventColumnsOf.
var eventColumnNames = []string{"id", "event", "reason", "public_key", "interface", "profile_id", "user_id",
	"ip_four", "ip_six", "originating_ip", "expires_at", "bytes_in", "bytes_out", "created_at",
	"status", "attempts", "next_attempt_at", "last_error", "done_at", "lease_owner", "lease_until", "started_at",
	"actor", "scope", "session_id", "rx_base", "tx_base"}

func eventColumnsOf(alias string) string {
	out := ""
	for i, c := range eventColumnNames {
		if i > 0 {
			out += ", "
		}
		if alias != "" {
			out += alias + "."
		}
		out += c
	}
	return out
}

var eventColumns = eventColumnsOf("")

// eventRow holds an events row as stored. Every field is nullable so that the
// same struct scans the optional side of a LEFT JOIN.
type eventRow struct {
	ID            sql.NullInt64
	Kind          sql.NullString
	Reason        sql.NullString
	PublicKey     sql.NullString
	Interface     sql.NullString
	ProfileID     sql.NullString
	UserID        sql.NullString
	IPFour        sql.NullString
	IPSix         sql.NullString
	OriginatingIP sql.NullString
	ExpiresAt     sql.NullInt64
	BytesIn       sql.NullInt64
	BytesOut      sql.NullInt64
	CreatedAt     sql.NullInt64
	Status        sql.NullString
	Attempts      sql.NullInt64
	NextAttemptAt sql.NullInt64
	LastError     sql.NullString
	DoneAt        sql.NullInt64
	LeaseOwner    sql.NullString
	LeaseUntil    sql.NullInt64
	StartedAt     sql.NullInt64
	Actor         sql.NullString
	Scope         sql.NullString
	SessionID     sql.NullInt64
	RxBase        sql.NullInt64
	TxBase        sql.NullInt64
}

func (r *eventRow) dest() []any {
	return []any{&r.ID, &r.Kind, &r.Reason, &r.PublicKey, &r.Interface, &r.ProfileID, &r.UserID,
		&r.IPFour, &r.IPSix, &r.OriginatingIP, &r.ExpiresAt, &r.BytesIn, &r.BytesOut, &r.CreatedAt,
		&r.Status, &r.Attempts, &r.NextAttemptAt, &r.LastError, &r.DoneAt, &r.LeaseOwner, &r.LeaseUntil, &r.StartedAt,
		&r.Actor, &r.Scope, &r.SessionID, &r.RxBase, &r.TxBase}
}

// decode turns a stored row into an Event, or returns an error matching
// ErrCorrupt that names the event id and the column.
func (r *eventRow) decode() (store.Event, error) {
	d := rowDecoder{row: fmt.Sprintf("event %d", r.ID.Int64)}
	if !r.ID.Valid {
		d.row = "event (no id)"
		d.fail("id", "NULL", errors.New("missing"))
	}
	for _, c := range []struct {
		name  string
		valid bool
	}{
		{"event", r.Kind.Valid}, {"reason", r.Reason.Valid}, {"public_key", r.PublicKey.Valid},
		{"interface", r.Interface.Valid}, {"profile_id", r.ProfileID.Valid}, {"user_id", r.UserID.Valid},
		{"bytes_in", r.BytesIn.Valid}, {"bytes_out", r.BytesOut.Valid}, {"created_at", r.CreatedAt.Valid},
		{"status", r.Status.Valid}, {"attempts", r.Attempts.Valid}, {"last_error", r.LastError.Valid},
		{"lease_owner", r.LeaseOwner.Valid}, {"scope", r.Scope.Valid},
	} {
		if !c.valid {
			d.fail(c.name, "NULL", errors.New("missing"))
		}
	}
	e := store.Event{
		ID:            r.ID.Int64,
		Kind:          d.oneOf("event", r.Kind.String, store.KindConnect, store.KindDisconnect),
		Reason:        r.Reason.String,
		PublicKey:     d.key("public_key", r.PublicKey.String),
		Interface:     r.Interface.String,
		ProfileID:     r.ProfileID.String,
		UserID:        r.UserID.String,
		IPv4:          d.addr("ip_four", r.IPFour),
		IPv6:          d.addr("ip_six", r.IPSix),
		OriginatingIP: d.addr("originating_ip", r.OriginatingIP),
		ExpiresAt:     decTime(r.ExpiresAt),
		BytesIn:       d.nonNegative("bytes_in", r.BytesIn.Int64),
		BytesOut:      d.nonNegative("bytes_out", r.BytesOut.Int64),
		CreatedAt:     decTime(r.CreatedAt),
		Status:        d.oneOf("status", r.Status.String, store.StatusRunning, store.StatusPending, store.StatusDone, store.StatusFailed),
		Attempts:      int(d.nonNegative("attempts", r.Attempts.Int64)),
		NextAttemptAt: decTime(r.NextAttemptAt),
		LastError:     r.LastError.String,
		DoneAt:        decTime(r.DoneAt),
		LeaseOwner:    r.LeaseOwner.String,
		LeaseUntil:    decTime(r.LeaseUntil),
		StartedAt:     decTime(r.StartedAt),
		Actor:         r.Actor.String,
		Scope:         d.oneOf("scope", r.Scope.String, store.ScopeConfig, store.ScopeSession),
		SessionID:     r.SessionID.Int64,
		RxBase:        d.nonNegative("rx_base", r.RxBase.Int64),
		TxBase:        d.nonNegative("tx_base", r.TxBase.Int64),
	}
	d.family("ip_four", e.IPv4, true)
	d.family("ip_six", e.IPv6, false)
	if r.Attempts.Int64 > math.MaxInt32 {
		d.fail("attempts", fmt.Sprint(r.Attempts.Int64), errors.New("out of range"))
	}
	if d.err != nil {
		return store.Event{}, d.err
	}
	return e, nil
}
