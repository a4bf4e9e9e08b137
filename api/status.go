package api

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/config"
	"github.com/wgkeeper/wgkeeper/reconcile"
	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/wg"
)

// What a config is on its device, in StatusConfig.Status.
const (
	ConfigOnline  = "online"  // reconcile.Online: a session open and not stale
	ConfigOffline = "offline" // not online, a handshake seen once
	ConfigNever   = "never"   // on the device, never a handshake (seen by the device or recorded)
	ConfigMissing = "missing" // active, but not on the device
	ConfigDrift   = "drift"   // on the device with other allowed IPs, preshared key or keepalive
	ConfigPending = "pending" // its connect script runs
	ConfigUnknown = "unknown" // the device could not be read
)

// StatusConfig is one config in GET /v1/status: the store's config, what
// its device shows (live, absent when the device could not be read), and
// the verdict.
type StatusConfig struct {
	PeerJSON
	// Status is one of online, offline, never, missing, drift, pending,
	// unknown.
	Status string `json:"status"`
}

// OrphanPeer is a device peer the store has no config for.
type OrphanPeer struct {
	PublicKey  string   `json:"public_key"`
	AllowedIPs []string `json:"allowed_ips"`
	// Kept: left on the device with orphans = "keep"; Keeps are the pool
	// addresses it holds (never given to a config).
	Kept  bool     `json:"kept"`
	Keeps []string `json:"keeps"`
	// Online: a handshake within sessions.offline_after (reconcile.Online).
	Online        bool       `json:"online"`
	LastHandshake *time.Time `json:"last_handshake"`
	RxBytes       int64      `json:"rx_bytes"`
	TxBytes       int64      `json:"tx_bytes"`
	Endpoint      *string    `json:"endpoint"`
}

// Source is what the read views of the API are built from: the server
// fills one per request, the CLI one per command, so that `-json` output
// and the endpoints are one code path.
type Source struct {
	// Engine gives the config, the orphan verdicts and the health checks.
	Engine Engine
	Store  Store
	// Read reads one interface's device; an error becomes that
	// interface's device_error.
	Read    func(ctx context.Context, iface string) (*wg.Device, error)
	Version string
	// Online and Now decide which peers are online: reconcile.OnlineRule
	// of the configuration's sessions (the zero Online assumes their
	// defaults), at Now.
	Online reconcile.Online
	Now    time.Time
}

// Status builds the answer of GET /v1/status. `wgkeeper status -json`
// prints the same value and `wgkeeper status` renders it, so the API and
// the CLI cannot disagree. Each interface's device is read once. It fails
// only when the store cannot be read or an orphan verdict cannot be
// reached; an unreadable device is reported in its interface.
func (src Source) Status(ctx context.Context) (StatusResponse, error) {
	var out StatusResponse
	cfg := src.Engine.Config()
	counts, err := src.Store.CountPeers(ctx)
	if err != nil {
		return out, err
	}
	evs, err := src.Store.CountEvents(ctx)
	if err != nil {
		return out, err
	}
	type key struct{ iface, profile string }
	active, pending := map[key]int{}, map[key]int{}
	ifActive, ifPending := map[string]int{}, map[string]int{}
	for _, c := range counts {
		k := key{c.Interface, c.ProfileID}
		if c.State == store.StateActive {
			active[k] += c.Count
			ifActive[c.Interface] += c.Count
		} else {
			pending[k] += c.Count
			ifPending[c.Interface] += c.Count
		}
	}
	rule := src.Online
	out = StatusResponse{Version: src.Version, Events: evs,
		Interfaces: make([]InterfaceStatus, 0, len(cfg.Interfaces)), Profiles: make([]ProfileStatus, 0, len(cfg.Profiles))}
	if nodes := src.nodes(); nodes != nil {
		ns, err := nodes.ListNodes(ctx)
		if err != nil {
			return out, err
		}
		out.Nodes = make([]NodeStatus, 0, len(ns))
		for _, n := range ns {
			st := NodeStatus{Name: n.Name, Self: n.Name == cfg.Node, Version: n.Version,
				StartedAt: n.StartedAt, LastSeen: n.LastSeen, Alive: src.Now.Sub(n.LastSeen) <= NodeAliveWindow,
				State: NodeSilent, Interfaces: append([]string{}, n.Interfaces...)}
			switch {
			case !n.DeadSince.IsZero():
				t := n.DeadSince
				st.State, st.DeadSince = NodeDead, &t
			case st.Alive:
				st.State = NodeAlive
			}
			out.Nodes = append(out.Nodes, st)
		}
	}
	for _, ifc := range cfg.Interfaces {
		is := InterfaceStatus{Name: ifc.Name, Mode: ifc.Mode,
			ConfigsActive: ifActive[ifc.Name], ConfigsPending: ifPending[ifc.Name]}
		peers, err := src.Store.ListPeers(ctx, store.PeerFilter{Interface: ifc.Name})
		if err != nil {
			return out, err
		}
		acts, err := src.Store.ListActivity(ctx, ifc.Name)
		if err != nil {
			return out, err
		}
		var kept map[wgtypes.Key]reconcile.HeldOrphan
		d, err := src.Read(ctx, ifc.Name)
		if err != nil {
			is.DeviceError = err.Error()
			// What the engine saw last still says whether it is blocked.
			if st, ok := src.Engine.Orphans(ifc.Name); ok {
				is.Blocked = st.Blocked
			}
			d = nil
		} else {
			pk, port, n, online := d.PublicKey.String(), d.ListenPort, len(d.Peers), rule.CountDevice(d, acts, src.Now)
			is.PublicKey, is.ListenPort, is.PeersOnDevice, is.PeersOnline = &pk, &port, &n, &online
			// The verdict a reconcile would reach on this read.
			st, err := src.Engine.Inspect(ctx, ifc.Name, d)
			if err != nil {
				return out, err
			}
			keep := ifc.Orphans == config.OrphansKeep
			is.OrphansJSON = OrphansView(st, keep)
			if keep {
				kept = make(map[wgtypes.Key]reconcile.HeldOrphan, len(st.Held))
				for _, h := range st.Held {
					kept[h.PublicKey] = h
				}
			}
		}
		is.Health = src.Engine.Health(ctx, ifc.Name, d)
		is.Configs, is.OrphanPeers = statusRows(peers, d, kept, onlineView{rule, acts, src.Now})
		out.Interfaces = append(out.Interfaces, is)
	}
	for _, p := range cfg.Profiles {
		k := key{p.Interface, p.ID}
		ps := ProfileStatus{ID: p.ID, Interface: p.Interface, ConfigsActive: active[k], ConfigsPending: pending[k], PoolSize: p.Capacity()}
		ps.PoolUsed = ps.ConfigsActive + ps.ConfigsPending
		ps.PoolFree = max(ps.PoolSize-ps.PoolUsed, 0)
		out.Profiles = append(out.Profiles, ps)
	}
	return out, nil
}

// onlineView judges the configs and orphans of one interface online with
// reconcile.Online, from the activity of its active configs.
type onlineView struct {
	rule reconcile.Online
	acts map[wgtypes.Key]store.Activity
	now  time.Time
}

// config reports whether the config with key k is online.
func (v onlineView) config(k wgtypes.Key) bool { return v.rule.Config(v.acts[k], v.now) }

// orphan reports whether the device peer p, no config, is online.
func (v onlineView) orphan(p wg.Peer) bool { return v.rule.Orphan(p, v.now) }

// traffic is the recorded traffic of the config with key k, with its device
// peer's counters when onDev has it; nil when it has no recorded activity.
func (v onlineView) traffic(k wgtypes.Key, onDev map[wgtypes.Key]wg.Peer) *TrafficJSON {
	a, ok := v.acts[k]
	if !ok {
		return nil
	}
	var dp *wg.Peer
	if p, on := onDev[k]; on {
		dp = &p
	}
	return trafficOut(a, dp)
}

// statusRows joins the store's configs of one interface with its device
// peers (dev nil: the device could not be read), online as ov says.
// Configs are sorted by user and profile, then by address as the store
// lists them; orphans by key, those kept with orphans = "keep" (in kept)
// with the pool addresses they hold.
func statusRows(peers []store.Peer, dev *wg.Device, kept map[wgtypes.Key]reconcile.HeldOrphan, ov onlineView) ([]StatusConfig, []OrphanPeer) {
	onDev := map[wgtypes.Key]wg.Peer{}
	if dev != nil {
		for _, p := range dev.Peers {
			onDev[p.PublicKey] = p
		}
	}
	known := make(map[wgtypes.Key]bool, len(peers))
	rows := make([]StatusConfig, 0, len(peers))
	for _, p := range peers {
		known[p.PublicKey] = true
		r := StatusConfig{PeerJSON: peerOut(p)}
		if dev != nil {
			r.Live = live(p, onDev, ov)
		}
		r.Traffic = ov.traffic(p.PublicKey, onDev)
		r.Status = ConfigStatus(r.PeerJSON)
		rows = append(rows, r)
	}
	sort.SliceStable(rows, func(i, j int) bool {
		a, b := rows[i], rows[j]
		if a.UserID != b.UserID {
			return a.UserID < b.UserID
		}
		return a.ProfileID < b.ProfileID // the store lists by address within a profile
	})
	orphans := []OrphanPeer{}
	if dev == nil {
		return rows, orphans
	}
	for _, d := range dev.Peers { // sorted by key
		if known[d.PublicKey] {
			continue
		}
		o := OrphanPeer{PublicKey: d.PublicKey.String(), AllowedIPs: prefixesOut(d.AllowedIPs), Keeps: []string{},
			Online: ov.orphan(d), LastHandshake: optTime(d.LastHandshake), RxBytes: d.RxBytes, TxBytes: d.TxBytes}
		if h, ok := kept[d.PublicKey]; ok {
			o.Kept = true
			o.Keeps = AddressesText(h.Keeps)
		}
		if d.Endpoint.IsValid() {
			e := d.Endpoint.String()
			o.Endpoint = &e
		}
		orphans = append(orphans, o)
	}
	return rows, orphans
}

// AddressesText renders prefixes as status shows addresses: a host prefix
// as its bare address, any other as a prefix.
func AddressesText(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		if p.IsSingleIP() {
			out[i] = p.Addr().String()
		} else {
			out[i] = p.String()
		}
	}
	return out
}

// Peers builds the answer of GET /v1/peers for the configs f selects, each
// with its live state from one device read per interface.
func (src Source) Peers(ctx context.Context, f store.PeerFilter) (PeersResponse, error) {
	peers, err := src.Store.ListPeers(ctx, f)
	if err != nil {
		return PeersResponse{}, err
	}
	out := PeersResponse{Peers: make([]PeerJSON, len(peers))}
	for i, p := range peers {
		out.Peers[i] = peerOut(p)
	}
	out.DeviceErrors = src.addLive(ctx, peers, out.Peers)
	return out, nil
}

// addLive fills the live fields of out (parallel to peers) with one device
// read per interface and returns the interfaces that could not be read.
func (src Source) addLive(ctx context.Context, peers []store.Peer, out []PeerJSON) map[string]string {
	byIface := map[string][]int{}
	var order []string
	for i, p := range peers {
		if _, ok := byIface[p.Interface]; !ok {
			order = append(order, p.Interface)
		}
		byIface[p.Interface] = append(byIface[p.Interface], i)
	}
	var errs map[string]string
	fail := func(iface, msg string) {
		if errs == nil {
			errs = map[string]string{}
		}
		errs[iface] = msg
	}
	rule := src.Online
	for _, iface := range order {
		idx := byIface[iface]
		// online is decided from the recorded activity: without it, no
		// live fields
		acts, err := src.Store.ListActivity(ctx, iface)
		if err != nil {
			fail(iface, fmt.Sprintf("read the session activity of %s: %v", iface, err))
			continue
		}
		d, err := src.Read(ctx, iface)
		if err != nil {
			fail(iface, err.Error())
			continue
		}
		onDev := make(map[wgtypes.Key]wg.Peer, len(idx))
		for _, dp := range d.Peers {
			onDev[dp.PublicKey] = dp
		}
		ov := onlineView{rule, acts, src.Now}
		for _, i := range idx {
			out[i].Live = live(peers[i], onDev, ov)
			out[i].Traffic = ov.traffic(peers[i].PublicKey, onDev)
		}
	}
	return errs
}

// ConfigStatus is a config's status in GET /v1/status and on the admin
// page, from its live state (nil: the device could not be read) and its
// recorded traffic: pending, unknown, missing, drift, online (live.online,
// decided by reconcile.Online), never (no handshake on the device nor
// recorded), else offline.
func ConfigStatus(p PeerJSON) string {
	switch {
	case p.State == string(store.StatePending):
		return ConfigPending
	case p.Live == nil:
		return ConfigUnknown
	case !p.Live.OnDevice:
		return ConfigMissing
	case !p.Live.InSync:
		return ConfigDrift
	case p.Live.Online:
		return ConfigOnline
	case p.Live.LastHandshake == nil && (p.Traffic == nil || p.Traffic.LastHandshake == nil):
		return ConfigNever
	}
	return ConfigOffline
}

// Events builds the answer of GET /v1/events: the events f selects,
// newest first, and the before_id of the next page when f.Limit cut the
// list.
func (src Source) Events(ctx context.Context, f store.EventFilter) (EventsResponse, error) {
	evs, err := src.Store.ListEvents(ctx, f)
	if err != nil {
		return EventsResponse{}, err
	}
	out := EventsResponse{Events: eventsOut(evs)}
	if f.Limit > 0 && len(evs) == f.Limit && evs[len(evs)-1].ID > 1 {
		next := evs[len(evs)-1].ID
		out.NextBeforeID = &next
	}
	return out, nil
}

// nodes is where the nodes sharing the database are listed: the store, or
// the engine's (the server's Store is its engine); nil with one node.
func (src Source) nodes() store.Nodes {
	if n, ok := src.Store.(store.Nodes); ok {
		return n
	}
	if e, ok := src.Engine.(interface{ Nodes() store.Nodes }); ok {
		return e.Nodes()
	}
	return nil
}
