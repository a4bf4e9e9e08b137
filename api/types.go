package api

import (
	"context"
	"encoding/base64"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/reconcile"
	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/wg"
)

// The JSON shapes of the API, described field by field in openapi.yaml.
// Field names are snake_case and stable; absent values are null, lists are
// never null; the few fields marked omitempty are left out instead.

// PeerJSON is one config.
type PeerJSON struct {
	PublicKey     string     `json:"public_key"`
	Interface     string     `json:"interface"`
	ProfileID     string     `json:"profile_id"`
	UserID        string     `json:"user_id"`
	DisplayName   string     `json:"display_name"`
	IPFour        *string    `json:"ip_four"`
	IPSix         *string    `json:"ip_six"`
	OriginatingIP *string    `json:"originating_ip"`
	PresharedKey  bool       `json:"preshared_key"` // whether the config has one (never the key)
	State         string     `json:"state"`
	CreatedAt     time.Time  `json:"created_at"`
	ExpiresAt     *time.Time `json:"expires_at"` // null: never
	// Live is what the device shows; absent in create responses, in the
	// plan's expiring list and when the device could not be read.
	Live *LiveJSON `json:"live,omitempty"`
	// Traffic is what session tracking recorded; absent in create
	// responses and for pending configs.
	Traffic *TrafficJSON `json:"traffic,omitempty"`
}

// TrafficJSON is a config's traffic and session as the daemon's session
// polls recorded them, brought up to date with the device's counters when
// the device was read.
type TrafficJSON struct {
	// BytesIn and BytesOut are received from and sent to the client since
	// the config was created, across counter resets and restarts.
	BytesIn  int64 `json:"bytes_in"`
	BytesOut int64 `json:"bytes_out"`
	// LastHandshake is the latest handshake the polls saw; null = none.
	LastHandshake *time.Time `json:"last_handshake"`
	// Session is the open session (the client is talking); null when none.
	Session *OpenSessionJSON `json:"session"`
}

// OpenSessionJSON is a config's open session.
type OpenSessionJSON struct {
	StartedAt time.Time `json:"started_at"`
	Endpoint  *string   `json:"endpoint"`
}

// LiveJSON is a config's state on its device.
type LiveJSON struct {
	OnDevice bool `json:"on_device"`
	// InSync: an active config is on the device with exactly its allowed IPs,
	// preshared key and keepalive; a pending one is not on the device.
	InSync bool `json:"in_sync"`
	// Online: the config has a session open and not stale
	// (reconcile.Online; see README, Sessions).
	Online        bool       `json:"online"`
	LastHandshake *time.Time `json:"last_handshake"`
	RxBytes       int64      `json:"rx_bytes"`
	TxBytes       int64      `json:"tx_bytes"`
	Endpoint      *string    `json:"endpoint"`
}

// CreateResponse answers POST /v1/peers.
type CreateResponse struct {
	Peer PeerJSON `json:"peer"`
	// Config is the wg-quick(8) client file.
	Config string `json:"config"`
	// PrivateKey is present only when wgkeeper generated the key pair; it is
	// not stored and cannot be fetched again.
	PrivateKey string `json:"private_key,omitempty"`
}

// PeersResponse answers GET /v1/peers.
type PeersResponse struct {
	Peers []PeerJSON `json:"peers"`
	// DeviceErrors names the interfaces that could not be read (their
	// configs have no "live").
	DeviceErrors map[string]string `json:"device_errors,omitempty"`
}

// PeerResponse answers GET /v1/peers/{public_key}.
type PeerResponse struct {
	Peer        PeerJSON `json:"peer"`
	DeviceError string   `json:"device_error,omitempty"`
}

// EventJSON is one C or D event.
type EventJSON struct {
	ID     int64  `json:"id"`
	Event  string `json:"event"`
	Scope  string `json:"scope"`
	Reason string `json:"reason"`
	// Actor is who made the change: "api:admin@ADDRESS", "api:read@ADDRESS",
	// "cli:UID" or "daemon"; null when not recorded (older events).
	Actor         *string    `json:"actor"`
	PublicKey     string     `json:"public_key"`
	Interface     string     `json:"interface"`
	ProfileID     string     `json:"profile_id"`
	UserID        string     `json:"user_id"`
	IPFour        *string    `json:"ip_four"`
	IPSix         *string    `json:"ip_six"`
	OriginatingIP *string    `json:"originating_ip"`
	ExpiresAt     *time.Time `json:"expires_at"`
	BytesIn       int64      `json:"bytes_in"`
	BytesOut      int64      `json:"bytes_out"`
	CreatedAt     time.Time  `json:"created_at"`
	Status        string     `json:"status"`
	Attempts      int        `json:"attempts"`
	NextAttemptAt *time.Time `json:"next_attempt_at"`
	LastError     string     `json:"last_error"`
	DoneAt        *time.Time `json:"done_at"`
	// LeaseOwner is the process that holds the event to run its script
	// ("host:pid:token/claim"), LeaseUntil when the lease runs out; both
	// null when the event is not leased.
	LeaseOwner *string    `json:"lease_owner"`
	LeaseUntil *time.Time `json:"lease_until"`
}

// RemovedResponse answers the DELETE endpoints.
type RemovedResponse struct {
	// Events are the D events recorded, one per config removed.
	Events []EventJSON `json:"events"`
	// Delivered counts the events whose script already ran successfully;
	// the others are retried by delivery.
	Delivered int `json:"delivered"`
	// DeviceErrors names interfaces that could not be updated; the next
	// reconcile removes the peers there.
	DeviceErrors map[string]string `json:"device_errors,omitempty"`
}

// EventsResponse answers GET /v1/events.
type EventsResponse struct {
	Events []EventJSON `json:"events"`
	// NextBeforeID, when present, is the before_id that fetches the next
	// (older) page.
	NextBeforeID *int64 `json:"next_before_id,omitempty"`
}

// EventResponse answers POST /v1/events/{id}/retry.
type EventResponse struct {
	Event EventJSON `json:"event"`
}

// StatusResponse answers GET /v1/status.
type StatusResponse struct {
	Version    string            `json:"version"`
	Interfaces []InterfaceStatus `json:"interfaces"`
	Profiles   []ProfileStatus   `json:"profiles"`
	Events     map[string]int    `json:"events"`
	// Nodes lists every node sharing the database (PostgreSQL), by name;
	// absent with SQLite.
	Nodes []NodeStatus `json:"nodes,omitempty"`
}

// NodeStatus is one node in GET /v1/status.
type NodeStatus struct {
	Name      string    `json:"name"`
	Self      bool      `json:"self"` // the node answering
	Version   string    `json:"version"`
	StartedAt time.Time `json:"started_at"`
	LastSeen  time.Time `json:"last_seen"`
	// Alive: a heartbeat within NodeAliveWindow.
	Alive bool `json:"alive"`
	// State is NodeAlive, NodeSilent or NodeDead.
	State string `json:"state"`
	// DeadSince is when the cluster leader marked the node dead (its
	// heartbeat stopped for longer than NodeAliveWindow); nil while it
	// is not marked. Its next heartbeat clears it.
	DeadSince  *time.Time `json:"dead_since"`
	Interfaces []string   `json:"interfaces"`
}

// A node's state, in NodeStatus.State.
const (
	NodeAlive  = "alive"  // a heartbeat within NodeAliveWindow
	NodeSilent = "silent" // no heartbeat within NodeAliveWindow; not marked dead (yet)
	NodeDead   = "dead"   // marked dead by the cluster leader (DeadSince)
)

// NodeAliveWindow is how recent a node's last heartbeat must be for it to
// count as alive: three heartbeats (every 10 s). The cluster leader marks
// a node dead when its heartbeat is older.
const NodeAliveWindow = 30 * time.Second

// InterfaceStatus is one interface in GET /v1/status.
type InterfaceStatus struct {
	Name           string  `json:"name"`
	Mode           string  `json:"mode"`
	PublicKey      *string `json:"public_key"`
	ListenPort     *int    `json:"listen_port"`
	PeersOnDevice  *int    `json:"peers_on_device"`
	PeersOnline    *int    `json:"peers_online"`
	ConfigsActive  int     `json:"configs_active"`
	ConfigsPending int     `json:"configs_pending"`
	DeviceError    string  `json:"device_error,omitempty"`
	OrphansJSON
	// Health: link up/down, addresses present/missing, key and port
	// against the config, and what drifted.
	reconcile.Health
	// Configs are the interface's configs next to its device, sorted by
	// user, profile and address.
	Configs []StatusConfig `json:"configs"`
	// OrphanPeers are the device's peers the store has no config for,
	// sorted by key; empty when the device could not be read.
	OrphanPeers []OrphanPeer `json:"orphan_peers"`
}

// OrphansJSON is what a device read showed of an interface's orphans
// (device peers not in the store); the counts are absent when the device
// could not be read.
type OrphansJSON struct {
	// Blocked: more orphans than orphan_removal_limit; reconcile removes
	// none until `wgkeeper reconcile -force IFACE` or a higher limit.
	Blocked            bool `json:"blocked"`
	Orphans            *int `json:"orphans,omitempty"`
	OrphanRemovalLimit *int `json:"orphan_removal_limit,omitempty"`
	// KeptOrphans are the orphans kept with orphans = "keep" and the pool
	// addresses they hold (never given to a config).
	KeptOrphans []KeptOrphan `json:"kept_orphans,omitempty"`
}

// KeptOrphan is an orphan left on the device with orphans = "keep".
type KeptOrphan struct {
	PublicKey  string   `json:"public_key"`
	AllowedIPs []string `json:"allowed_ips"`
	// Keeps are the allowed IPs inside the interface's profile ranges.
	Keeps []string `json:"keeps"`
}

// OrphansView is an orphan state in the API's JSON shape; kept says
// whether the held orphans are kept (orphans = "keep") rather than blocked.
func OrphansView(st reconcile.OrphanState, kept bool) OrphansJSON {
	n, l := st.Orphans, st.Limit
	out := OrphansJSON{Blocked: st.Blocked, Orphans: &n, OrphanRemovalLimit: &l}
	if kept {
		for _, h := range st.Held {
			ko := KeptOrphan{PublicKey: h.PublicKey.String(), AllowedIPs: prefixesOut(h.AllowedIPs), Keeps: AddressesText(h.Keeps)}
			out.KeptOrphans = append(out.KeptOrphans, ko)
		}
	}
	return out
}

func prefixesOut(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

// ProfileStatus is one profile in GET /v1/status.
type ProfileStatus struct {
	ID             string `json:"id"`
	Interface      string `json:"interface"`
	ConfigsActive  int    `json:"configs_active"`
	ConfigsPending int    `json:"configs_pending"`
	PoolSize       int    `json:"pool_size"`
	PoolUsed       int    `json:"pool_used"`
	PoolFree       int    `json:"pool_free"`
}

// HousekeepingResponse answers POST /v1/housekeeping.
type HousekeepingResponse struct {
	StartedAt       time.Time        `json:"started_at"`
	DurationSeconds float64          `json:"duration_seconds"`
	Expired         int              `json:"expired"`
	Idle            int              `json:"idle"`
	Stale           int              `json:"stale"`
	Interfaces      []ReconciledJSON `json:"interfaces"`
	Delivered       int              `json:"delivered"`
	Retried         int              `json:"retried"`
	Failed          int              `json:"failed"`
	Pruned          int              `json:"pruned"`
	Errors          []string         `json:"errors"`
}

// ReconciledJSON is one interface's reconcile in a housekeeping run.
type ReconciledJSON struct {
	Interface   string `json:"interface"`
	Added       int    `json:"added"`
	Updated     int    `json:"updated"`
	Removed     int    `json:"removed"`
	KeptOrphans int    `json:"kept_orphans"`
	// Blocked: orphan removal blocked (see InterfacePlan).
	Blocked bool   `json:"blocked"`
	Error   string `json:"error,omitempty"`
}

// PlanResponse answers GET /v1/plan: what a reconcile would change now.
type PlanResponse struct {
	Interfaces []InterfacePlan `json:"interfaces"`
}

// InterfacePlan is one interface's dry-run plan.
type InterfacePlan struct {
	Interface   string        `json:"interface"`
	Add         []PlannedPeer `json:"add"`
	Update      []PlannedPeer `json:"update"`
	Remove      []string      `json:"remove"`
	KeptOrphans []string      `json:"kept_orphans"`
	// Expiring are the active configs housekeeping would expire now.
	Expiring []PeerJSON `json:"expiring"`
	// Blocked: more orphans (Orphans) than OrphanRemovalLimit; the plan
	// removes none of BlockedOrphans. Forced says `-force` lifted it.
	Blocked            bool     `json:"blocked"`
	Forced             bool     `json:"forced,omitempty"`
	Orphans            int      `json:"orphans"`
	OrphanRemovalLimit int      `json:"orphan_removal_limit"`
	BlockedOrphans     []string `json:"blocked_orphans"`
}

// PlannedPeer is a peer the plan adds or updates.
type PlannedPeer struct {
	PublicKey    string   `json:"public_key"`
	AllowedIPs   []string `json:"allowed_ips"`
	PresharedKey bool     `json:"preshared_key"`
	// Fields lists what drifted (update only): allowed_ips, preshared_key,
	// keepalive.
	Fields []string `json:"fields,omitempty"`
}

func optAddr(a netip.Addr) *string {
	if !a.IsValid() {
		return nil
	}
	s := a.String()
	return &s
}

// optString is s, or nil (JSON null) when empty.
func optString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

func peerOut(p store.Peer) PeerJSON {
	return PeerJSON{
		PublicKey:     p.PublicKey.String(),
		Interface:     p.Interface,
		ProfileID:     p.ProfileID,
		UserID:        p.UserID,
		DisplayName:   p.DisplayName,
		IPFour:        optAddr(p.IPv4),
		IPSix:         optAddr(p.IPv6),
		OriginatingIP: optAddr(p.OriginatingIP),
		PresharedKey:  p.PresharedKey != nil,
		State:         string(p.State),
		CreatedAt:     p.CreatedAt.UTC(),
		ExpiresAt:     optTime(p.ExpiresAt),
	}
}

func eventOut(e store.Event) EventJSON {
	out := EventJSON{
		ID:            e.ID,
		Event:         e.Kind,
		Scope:         e.Scope,
		Reason:        e.Reason,
		Actor:         optString(e.Actor),
		PublicKey:     e.PublicKey.String(),
		Interface:     e.Interface,
		ProfileID:     e.ProfileID,
		UserID:        e.UserID,
		IPFour:        optAddr(e.IPv4),
		IPSix:         optAddr(e.IPv6),
		OriginatingIP: optAddr(e.OriginatingIP),
		ExpiresAt:     optTime(e.ExpiresAt),
		BytesIn:       e.BytesIn,
		BytesOut:      e.BytesOut,
		CreatedAt:     e.CreatedAt.UTC(),
		Status:        e.Status,
		Attempts:      e.Attempts,
		NextAttemptAt: optTime(e.NextAttemptAt),
		LastError:     e.LastError,
		DoneAt:        optTime(e.DoneAt),
	}
	if e.LeaseOwner != "" {
		owner := e.LeaseOwner
		out.LeaseOwner, out.LeaseUntil = &owner, optTime(e.LeaseUntil)
	}
	return out
}

func eventsOut(evs []store.Event) []EventJSON {
	out := make([]EventJSON, len(evs))
	for i, e := range evs {
		out[i] = eventOut(e)
	}
	return out
}

func removedOut(r reconcile.Removed) RemovedResponse {
	out := RemovedResponse{Events: eventsOut(r.Events), Delivered: r.Delivery.Done}
	for iface, err := range r.DeviceErrs {
		if out.DeviceErrors == nil {
			out.DeviceErrors = map[string]string{}
		}
		out.DeviceErrors[iface] = err.Error()
	}
	return out
}

func keysOut(keys []wgtypes.Key) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.String()
	}
	return out
}

func plannedOut(w wg.Wanted, fields []string) PlannedPeer {
	p := PlannedPeer{PublicKey: w.PublicKey.String(), AllowedIPs: make([]string, len(w.AllowedIPs)),
		PresharedKey: w.PresharedKey != (wgtypes.Key{}), Fields: fields}
	for i, a := range w.AllowedIPs {
		p.AllowedIPs[i] = a.String()
	}
	return p
}

func planOut(r reconcile.Report) InterfacePlan {
	out := InterfacePlan{
		Interface:   r.Interface,
		Add:         make([]PlannedPeer, 0, len(r.Plan.Add)),
		Update:      make([]PlannedPeer, 0, len(r.Plan.Update)),
		Remove:      keysOut(r.Plan.Remove),
		KeptOrphans: keysOut(r.Plan.KeptOrphans),
		Expiring:    make([]PeerJSON, 0, len(r.Expiring)),
		Blocked:     r.Orphans.Blocked, Forced: r.Force && r.Orphans.Blocked,
		Orphans: r.Orphans.Orphans, OrphanRemovalLimit: r.Orphans.Limit,
		BlockedOrphans: []string{},
	}
	if r.Orphans.Blocked && !r.Force {
		out.BlockedOrphans = keysOut(r.Orphans.HeldKeys())
	}
	for _, w := range r.Plan.Add {
		out.Add = append(out.Add, plannedOut(w, nil))
	}
	for _, c := range r.Plan.Update {
		var f []string
		if c.AllowedIPs {
			f = append(f, "allowed_ips")
		}
		if c.PresharedKey {
			f = append(f, "preshared_key")
		}
		if c.Keepalive {
			f = append(f, "keepalive")
		}
		out.Update = append(out.Update, plannedOut(c.Wanted, f))
	}
	for _, p := range r.Expiring {
		out.Expiring = append(out.Expiring, peerOut(p))
	}
	return out
}

// keyPath is the form of a key used in URLs this server builds: base64url,
// which needs no escaping.
func keyPath(k wgtypes.Key) string { return base64.URLEncoding.EncodeToString(k[:]) }

// PlanOf is the answer of GET /v1/plan (and `reconcile -json`) for
// reconcile reports; the reports that failed are left out (the endpoint
// answers 503 instead, the CLI names them on stderr).
func PlanOf(reports []reconcile.Report) PlanResponse {
	out := PlanResponse{Interfaces: make([]InterfacePlan, 0, len(reports))}
	for _, r := range reports {
		if r.Err == nil {
			out.Interfaces = append(out.Interfaces, planOut(r))
		}
	}
	return out
}

// CreateView is the answer of POST /v1/peers (and `peer add -json`) for a
// created config.
func CreateView(c *reconcile.Created) CreateResponse {
	out := CreateResponse{Peer: peerOut(c.Peer), Config: c.Client.WGQuick()}
	if c.PrivateKey != nil {
		out.PrivateKey = c.PrivateKey.String()
	}
	return out
}

// RemovedView is the answer of the DELETE endpoints (and `peer remove
// -json`, `peer revoke -json`).
func RemovedView(r reconcile.Removed) RemovedResponse { return removedOut(r) }

// HousekeepingView is a housekeeping summary in the API's JSON shape.
func HousekeepingView(sum reconcile.Summary) HousekeepingResponse {
	out := HousekeepingResponse{
		StartedAt:       sum.StartedAt,
		DurationSeconds: sum.Duration.Seconds(),
		Expired:         sum.Expired,
		Idle:            sum.Idle,
		Stale:           sum.Stale,
		Interfaces:      make([]ReconciledJSON, 0, len(sum.Reports)),
		Delivered:       sum.Delivery.Done,
		Retried:         sum.Delivery.Retried,
		Failed:          sum.Delivery.Failed,
		Pruned:          sum.Pruned,
		Errors:          append([]string{}, sum.Errors...),
	}
	for _, rep := range sum.Reports {
		rj := ReconciledJSON{Interface: rep.Interface, Added: rep.Counts.Added, Updated: rep.Counts.Updated,
			Removed: rep.Counts.Removed, KeptOrphans: len(rep.Plan.KeptOrphans), Blocked: rep.Err == nil && rep.Orphans.Blocked && !rep.Force}
		if rep.Err != nil {
			rj.Error = rep.Err.Error()
		}
		out.Interfaces = append(out.Interfaces, rj)
	}
	return out
}

// ClientSessionJSON is one recorded session of a config: when its client
// really talked to the server, and from where.
type ClientSessionJSON struct {
	ID        int64      `json:"id"`
	PublicKey string     `json:"public_key"`
	Interface string     `json:"interface"`
	ProfileID string     `json:"profile_id"`
	UserID    string     `json:"user_id"`
	IPFour    *string    `json:"ip_four"`
	IPSix     *string    `json:"ip_six"`
	StartedAt time.Time  `json:"started_at"`
	EndedAt   *time.Time `json:"ended_at"`
	EndReason string     `json:"end_reason"`
	// Endpoints are every endpoint (ip:port) seen, in order; the first is
	// where the session started from.
	Endpoints []string `json:"endpoints"`
	BytesIn   int64    `json:"bytes_in"`
	BytesOut  int64    `json:"bytes_out"`
}

// ClientSessionView is a recorded session in the API's JSON shape.
func ClientSessionView(c store.ClientSession) ClientSessionJSON {
	out := ClientSessionJSON{
		ID: c.ID, PublicKey: c.PublicKey.String(), Interface: c.Interface, ProfileID: c.ProfileID, UserID: c.UserID,
		IPFour: optAddr(c.IPv4), IPSix: optAddr(c.IPv6), StartedAt: c.Started.UTC(), EndedAt: optTime(c.Ended),
		EndReason: c.EndReason, Endpoints: []string{}, BytesIn: c.BytesIn, BytesOut: c.BytesOut,
	}
	for _, ep := range c.Endpoints {
		out.Endpoints = append(out.Endpoints, ep.String())
	}
	return out
}

// trafficOut is a config's recorded activity, with the device peer's
// counters (when read) added as deltas against the last poll's bases.
func trafficOut(a store.Activity, dp *wg.Peer) *TrafficJSON {
	t := &TrafficJSON{BytesIn: a.BytesIn, BytesOut: a.BytesOut, LastHandshake: optTime(a.LastHandshake)}
	if dp != nil {
		t.BytesIn, t.BytesOut = store.Event{BytesIn: a.BytesIn, BytesOut: a.BytesOut, RxBase: a.RxBase, TxBase: a.TxBase}.
			AddCounters(max(dp.RxBytes, 0), max(dp.TxBytes, 0))
	}
	if a.SessionOpen() {
		t.Session = &OpenSessionJSON{StartedAt: a.Session.Started.UTC()}
		if a.Endpoint.IsValid() {
			ep := a.Endpoint.String()
			t.Session.Endpoint = &ep
		}
	}
	return t
}

// LogSession is one holding of an address by a config: its C event and its
// D event (null while the config exists).
type LogSession struct {
	C EventJSON  `json:"connect"`
	D *EventJSON `json:"disconnect"`
}

// LogResponse answers GET /v1/log (and `wgkeeper log -json`).
type LogResponse struct {
	Sessions []LogSession `json:"sessions"`
	// ClientSessions are the sessions of the configs' clients: those
	// covering the instant asked about, or all of a user's, newest first.
	ClientSessions []ClientSessionJSON `json:"client_sessions"`
	// Raw values, for the CLI's table; not part of the JSON.
	Configs []store.Session       `json:"-"`
	Clients []store.ClientSession `json:"-"`
}

// LogStore is what the log reads.
type LogStore interface {
	WhoHad(ctx context.Context, ip netip.Addr, at time.Time) ([]store.Session, error)
	UserSessions(ctx context.Context, user string) ([]store.Session, error)
	ListClientSessions(ctx context.Context, f store.ClientSessionFilter) ([]store.ClientSession, error)
}

// LogOfAddr answers who held ip at the instant at, with the client
// sessions of those configs covering it.
func LogOfAddr(ctx context.Context, st LogStore, ip netip.Addr, at time.Time) (LogResponse, error) {
	ss, err := st.WhoHad(ctx, ip, at)
	if err != nil {
		return LogResponse{}, err
	}
	var cs []store.ClientSession
	for _, s := range ss {
		k := s.C.PublicKey
		got, err := st.ListClientSessions(ctx, store.ClientSessionFilter{PublicKey: &k, At: at})
		if err != nil {
			return LogResponse{}, err
		}
		cs = append(cs, got...)
	}
	return logOut(ss, cs), nil
}

// LogOfUser lists the user's configs past and present and all their
// client sessions.
func LogOfUser(ctx context.Context, st LogStore, user string) (LogResponse, error) {
	ss, err := st.UserSessions(ctx, user)
	if err != nil {
		return LogResponse{}, err
	}
	cs, err := st.ListClientSessions(ctx, store.ClientSessionFilter{UserID: user})
	if err != nil {
		return LogResponse{}, err
	}
	return logOut(ss, cs), nil
}

func logOut(ss []store.Session, cs []store.ClientSession) LogResponse {
	out := LogResponse{Sessions: []LogSession{}, ClientSessions: []ClientSessionJSON{}, Configs: ss, Clients: cs}
	for _, s := range ss {
		o := LogSession{C: eventOut(s.C)}
		if s.D != nil {
			d := eventOut(*s.D)
			o.D = &d
		}
		out.Sessions = append(out.Sessions, o)
	}
	for _, c := range cs {
		out.ClientSessions = append(out.ClientSessions, ClientSessionView(c))
	}
	return out
}
