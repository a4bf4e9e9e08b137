// Package sqlrow is the row codec the SQL backends of the store share: how
// times (INTEGER nanoseconds, UTC), addresses and keys are written to
// columns, and how peer and event rows are read back into store values,
// every bad value reported as a store.ErrCorrupt naming its column. It
// holds no SQL dialect and no driver.
package sqlrow

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
	MinTime = time.Unix(0, math.MinInt64).UTC()
	MaxTime = time.Unix(0, math.MaxInt64).UTC()
)

// EncTime returns the column value for t: nil for the zero time.
func EncTime(t time.Time) (any, error) {
	if t.IsZero() {
		return nil, nil
	}
	if t.Before(MinTime) || t.After(MaxTime) {
		return nil, fmt.Errorf("time %s is outside the storable range %d..%d", t.UTC().Format(time.RFC3339), MinTime.Year(), MaxTime.Year())
	}
	return t.UnixNano(), nil
}

// DecTime reads a time column; NULL is the zero time.
func DecTime(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return time.Unix(0, v.Int64).UTC()
}

// EncAddr returns the column value for a: nil for the zero address. An
// IPv4-mapped IPv6 address is stored as IPv4; a zone is dropped.
func EncAddr(a netip.Addr) any {
	if !a.IsValid() {
		return nil
	}
	return a.Unmap().WithZone("").String()
}

// errZeroKey is returned for an all-zero key, which WireGuard treats as none.
var errZeroKey = errors.New("key is all zeros")

// ParseStoredKey reads a key column: standard base64 of 32 bytes, in the
// canonical form Key.String produces, not all zeros.
func ParseStoredKey(s string) (wgtypes.Key, error) {
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

// parseStoredAddr reads an address column in the canonical form EncAddr
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

// QuoteValue quotes a stored value for an error message, shortened.
func QuoteValue(s string) string {
	const max = 64
	if len(s) > max {
		return fmt.Sprintf("%q…", s[:max])
	}
	return fmt.Sprintf("%q", s)
}

// RowDecoder collects the first error while a row's columns are decoded.
// Its methods decode one column each; the first bad value is kept in Err,
// a store.ErrCorrupt naming Row and the column.
type RowDecoder struct {
	Row string // names the row in errors: "peer KEY", "event 7"
	Err error  // the first column that failed; nil when all decoded
}

// Fail records a bad value of column, unless an earlier one was recorded.
func (d *RowDecoder) Fail(column, value string, err error) {
	if d.Err == nil {
		d.Err = &corruptError{row: d.Row, column: column, value: value, err: err}
	}
}

// Key decodes a key column.
func (d *RowDecoder) Key(column, s string) wgtypes.Key {
	k, err := ParseStoredKey(s)
	if err != nil {
		d.Fail(column, QuoteValue(s), err)
	}
	return k
}

// secretKey decodes a secret (preshared) key; its value never appears in
// errors.
func (d *RowDecoder) secretKey(column string, s sql.NullString) *wgtypes.Key {
	if !s.Valid {
		return nil
	}
	k, err := ParseStoredKey(s.String)
	if err != nil {
		d.Fail(column, fmt.Sprintf("(secret, %d bytes)", len(s.String)), errors.New("not a valid key"))
		return nil
	}
	return &k
}

// Addr decodes a nullable address column.
func (d *RowDecoder) Addr(column string, s sql.NullString) netip.Addr {
	if !s.Valid {
		return netip.Addr{}
	}
	a, err := parseStoredAddr(s.String)
	if err != nil {
		d.Fail(column, QuoteValue(s.String), err)
	}
	return a
}

// family checks that a is of the family the column holds.
func (d *RowDecoder) family(column string, a netip.Addr, want4 bool) {
	if a.IsValid() && a.Is4() != want4 {
		fam := "IPv6"
		if want4 {
			fam = "IPv4"
		}
		d.Fail(column, QuoteValue(a.String()), fmt.Errorf("not an %s address", fam))
	}
}

// oneOf checks that a text column holds one of allowed.
func (d *RowDecoder) oneOf(column, s string, allowed ...string) string {
	for _, a := range allowed {
		if s == a {
			return s
		}
	}
	d.Fail(column, QuoteValue(s), fmt.Errorf("not one of %q", allowed))
	return s
}

// nonNegative checks that an integer column is not negative.
func (d *RowDecoder) nonNegative(column string, v int64) int64 {
	if v < 0 {
		d.Fail(column, fmt.Sprint(v), errors.New("negative"))
	}
	return v
}

// PeerColumns lists the columns PeerRow scans, in order.
const PeerColumns = `public_key, interface, profile_id, user_id, display_name, ip_index,
	ip_four, ip_six, preshared_key, originating_ip, state, created_at, expires_at`

// PeerRow holds a peers row as stored, before decoding.
type PeerRow struct {
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

// Dest returns the scan destinations, in PeerColumns order.
func (r *PeerRow) Dest() []any {
	return []any{&r.PublicKey, &r.Interface, &r.ProfileID, &r.UserID, &r.DisplayName, &r.IPIndex,
		&r.IPFour, &r.IPSix, &r.PresharedKey, &r.OriginatingIP, &r.State, &r.CreatedAt, &r.ExpiresAt}
}

// decode turns a stored row into a Peer, or returns an error matching
// ErrCorrupt that names the row and the column.
func (r *PeerRow) Decode() (store.Peer, error) {
	d := RowDecoder{Row: "peer " + QuoteValue(r.PublicKey)}
	p := store.Peer{
		PublicKey:     d.Key("public_key", r.PublicKey),
		Interface:     r.Interface,
		ProfileID:     r.ProfileID,
		UserID:        r.UserID,
		DisplayName:   r.DisplayName,
		IPv4:          d.Addr("ip_four", r.IPFour),
		IPv6:          d.Addr("ip_six", r.IPSix),
		PresharedKey:  d.secretKey("preshared_key", r.PresharedKey),
		OriginatingIP: d.Addr("originating_ip", r.OriginatingIP),
		State:         store.State(d.oneOf("state", r.State, string(store.StatePending), string(store.StateActive))),
		CreatedAt:     time.Unix(0, r.CreatedAt).UTC(),
		ExpiresAt:     DecTime(r.ExpiresAt),
	}
	d.nonNegative("ip_index", r.IPIndex)
	d.family("ip_four", p.IPv4, true)
	d.family("ip_six", p.IPv6, false)
	if d.Err == nil && !p.IPv4.IsValid() && !p.IPv6.IsValid() {
		d.Fail("ip_four", "NULL", errors.New("peer has neither an IPv4 nor an IPv6 address"))
	}
	if d.Err != nil {
		return store.Peer{}, d.Err
	}
	return p, nil
}

// EventColumnNames lists the columns EventRow scans, in order.
var EventColumnNames = []string{"id", "event", "reason", "public_key", "interface", "profile_id", "user_id",
	"ip_four", "ip_six", "originating_ip", "expires_at", "bytes_in", "bytes_out", "created_at",
	"status", "attempts", "next_attempt_at", "last_error", "done_at", "lease_owner", "lease_until", "started_at",
	"actor", "scope", "session_id", "rx_base", "tx_base"}

// EventColumnsOf is the select list of EventColumnNames, each prefixed with
// the table alias alias and a dot when alias is not empty.
func EventColumnsOf(alias string) string {
	out := ""
	for i, c := range EventColumnNames {
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

// EventColumns is the select list of EventColumnNames without an alias.
var EventColumns = EventColumnsOf("")

// EventRow holds an events row as stored. Every field is nullable so that the
// same struct scans the optional side of a LEFT JOIN.
type EventRow struct {
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

// Dest returns the scan destinations, in EventColumns order.
func (r *EventRow) Dest() []any {
	return []any{&r.ID, &r.Kind, &r.Reason, &r.PublicKey, &r.Interface, &r.ProfileID, &r.UserID,
		&r.IPFour, &r.IPSix, &r.OriginatingIP, &r.ExpiresAt, &r.BytesIn, &r.BytesOut, &r.CreatedAt,
		&r.Status, &r.Attempts, &r.NextAttemptAt, &r.LastError, &r.DoneAt, &r.LeaseOwner, &r.LeaseUntil, &r.StartedAt,
		&r.Actor, &r.Scope, &r.SessionID, &r.RxBase, &r.TxBase}
}

// decode turns a stored row into an Event, or returns an error matching
// ErrCorrupt that names the event id and the column.
func (r *EventRow) Decode() (store.Event, error) {
	d := RowDecoder{Row: fmt.Sprintf("event %d", r.ID.Int64)}
	if !r.ID.Valid {
		d.Row = "event (no id)"
		d.Fail("id", "NULL", errors.New("missing"))
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
			d.Fail(c.name, "NULL", errors.New("missing"))
		}
	}
	e := store.Event{
		ID:            r.ID.Int64,
		Kind:          d.oneOf("event", r.Kind.String, store.KindConnect, store.KindDisconnect),
		Reason:        r.Reason.String,
		PublicKey:     d.Key("public_key", r.PublicKey.String),
		Interface:     r.Interface.String,
		ProfileID:     r.ProfileID.String,
		UserID:        r.UserID.String,
		IPv4:          d.Addr("ip_four", r.IPFour),
		IPv6:          d.Addr("ip_six", r.IPSix),
		OriginatingIP: d.Addr("originating_ip", r.OriginatingIP),
		ExpiresAt:     DecTime(r.ExpiresAt),
		BytesIn:       d.nonNegative("bytes_in", r.BytesIn.Int64),
		BytesOut:      d.nonNegative("bytes_out", r.BytesOut.Int64),
		CreatedAt:     DecTime(r.CreatedAt),
		Status:        d.oneOf("status", r.Status.String, store.StatusRunning, store.StatusPending, store.StatusDone, store.StatusFailed),
		Attempts:      int(d.nonNegative("attempts", r.Attempts.Int64)),
		NextAttemptAt: DecTime(r.NextAttemptAt),
		LastError:     r.LastError.String,
		DoneAt:        DecTime(r.DoneAt),
		LeaseOwner:    r.LeaseOwner.String,
		LeaseUntil:    DecTime(r.LeaseUntil),
		StartedAt:     DecTime(r.StartedAt),
		Actor:         r.Actor.String,
		Scope:         d.oneOf("scope", r.Scope.String, store.ScopeConfig, store.ScopeSession),
		SessionID:     r.SessionID.Int64,
		RxBase:        d.nonNegative("rx_base", r.RxBase.Int64),
		TxBase:        d.nonNegative("tx_base", r.TxBase.Int64),
	}
	d.family("ip_four", e.IPv4, true)
	d.family("ip_six", e.IPv6, false)
	if r.Attempts.Int64 > math.MaxInt32 {
		d.Fail("attempts", fmt.Sprint(r.Attempts.Int64), errors.New("out of range"))
	}
	if d.Err != nil {
		return store.Event{}, d.Err
	}
	return e, nil
}
