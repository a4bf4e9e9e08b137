package cli

import (
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/config"
	"github.com/wgkeeper/wgkeeper/reconcile"
	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/wg"
)

// Peer states shown by status.
const (
	StateOnline         = "online"
	StateOffline        = "offline"
	StateNeverConnected = "never connected"
	StateMissing        = "missing on device"
	StateDrift          = "drift"
	StateOrphan         = "orphan (not in store)"
	StatePending        = "pending"
	StateUnknown        = "unknown (device unreadable)"
	// StateOrphanKept counts orphans kept with orphans = "keep"; their
	// rows say "orphan (keeps ADDRESSES)" when they hold pool addresses.
	StateOrphanKept = "orphan (kept)"
)

// statusPeer is one row of status: the store's config next to the device.
type statusPeer struct {
	PublicKey     string     `json:"public_key"`
	UserID        string     `json:"user_id"`
	ProfileID     string     `json:"profile_id"`
	IPFour        string     `json:"ip_four"`
	IPSix         string     `json:"ip_six"`
	CreatedAt     *time.Time `json:"created_at"`
	ExpiresAt     *time.Time `json:"expires_at"`
	LastHandshake *time.Time `json:"last_handshake"`
	RxBytes       int64      `json:"rx_bytes"`
	TxBytes       int64      `json:"tx_bytes"`
	Endpoint      string     `json:"endpoint"`
	State         string     `json:"state"`
	// Keeps lists, for an orphan kept on the device, the pool addresses
	// it holds (never handed to a config).
	Keeps []string `json:"keeps,omitempty"`
}

type statusPool struct {
	Profile string `json:"profile"`
	Used    int    `json:"used"`
	Total   int    `json:"total"`
}

type statusIface struct {
	Name        string `json:"name"`
	Mode        string `json:"mode"`
	ListenPort  int    `json:"listen_port"`
	DeviceError string `json:"device_error,omitempty"`
	// Blocked: more orphans than orphan_removal_limit; reconcile removes
	// none until `reconcile -force` (Orphans and OrphanRemovalLimit say
	// how many; both absent when the device could not be read).
	Blocked            bool `json:"blocked"`
	Orphans            *int `json:"orphans,omitempty"`
	OrphanRemovalLimit *int `json:"orphan_removal_limit,omitempty"`
	// Health: link, addresses, key and port against the config.
	reconcile.Health
	Counts map[string]int `json:"counts"`
	Pools  []statusPool   `json:"pools"`
	Peers  []statusPeer   `json:"peers"`
}

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

func addrText(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// statusRows joins the store's configs of one interface with its device
// peers (dev nil: the device could not be read). Rows are sorted by user,
// profile and address; orphans come last, those kept with orphans = "keep"
// (in kept) showing the pool addresses they hold.
func statusRows(peers []store.Peer, dev *wg.Device, kept map[wgtypes.Key]reconcile.HeldOrphan, t time.Time) []statusPeer {
	onDev := map[wgtypes.Key]wg.Peer{}
	if dev != nil {
		for _, p := range dev.Peers {
			onDev[p.PublicKey] = p
		}
	}
	known := map[wgtypes.Key]bool{}
	rows := make([]statusPeer, 0, len(peers))
	for _, p := range peers {
		known[p.PublicKey] = true
		r := statusPeer{PublicKey: p.PublicKey.String(), UserID: p.UserID, ProfileID: p.ProfileID,
			IPFour: addrText(p.IPv4), IPSix: addrText(p.IPv6), CreatedAt: optTime(p.CreatedAt), ExpiresAt: optTime(p.ExpiresAt)}
		d, on := onDev[p.PublicKey]
		if on {
			r.LastHandshake = optTime(d.LastHandshake)
			r.RxBytes, r.TxBytes = d.RxBytes, d.TxBytes
			if d.Endpoint.IsValid() {
				r.Endpoint = d.Endpoint.String()
			}
		}
		switch {
		case p.State == store.StatePending:
			r.State = StatePending
		case dev == nil:
			r.State = StateUnknown
		case !on:
			r.State = StateMissing
		case !wg.InSync(reconcile.WantedPeer(p), d):
			r.State = StateDrift
		case d.LastHandshake.IsZero():
			r.State = StateNeverConnected
		case d.Online(t):
			r.State = StateOnline
		default:
			r.State = StateOffline
		}
		rows = append(rows, r)
	}
	sort.SliceStable(rows, func(i, j int) bool {
		a, b := rows[i], rows[j]
		if a.UserID != b.UserID {
			return a.UserID < b.UserID
		}
		if a.ProfileID != b.ProfileID {
			return a.ProfileID < b.ProfileID
		}
		return false // the store lists by address within a profile
	})
	if dev != nil {
		for _, d := range dev.Peers { // sorted by key
			if known[d.PublicKey] {
				continue
			}
			r := statusPeer{PublicKey: d.PublicKey.String(), LastHandshake: optTime(d.LastHandshake),
				RxBytes: d.RxBytes, TxBytes: d.TxBytes, State: StateOrphan}
			var ips []string
			for _, a := range d.AllowedIPs {
				ips = append(ips, a.String())
			}
			r.IPFour = strings.Join(ips, ",")
			if h, ok := kept[d.PublicKey]; ok {
				r.State = StateOrphanKept
				if txt := h.KeepsText(); txt != "" {
					r.State = "orphan (keeps " + txt + ")"
					for _, k := range h.Keeps {
						r.Keeps = append(r.Keeps, keepText(k))
					}
				}
			}
			if d.Endpoint.IsValid() {
				r.Endpoint = d.Endpoint.String()
			}
			rows = append(rows, r)
		}
	}
	return rows
}

func cmdStatus(e *env, args []string) error {
	fs := newFlags("status")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(e, fs, args, "status",
		"Show, per interface, the store's configs next to the live device: state\n(online, offline, never connected, missing on device, drift, orphan,\npending), last handshake, traffic, and pool use.",
		"wgkeeper status -json"); err != nil {
		return err
	}
	return e.withParts(func(p *parts) error {
		ifaces, err := collectStatus(e, p)
		if err != nil {
			return err
		}
		if *asJSON {
			return writeJSONOut(e.stdout, struct {
				Interfaces []statusIface `json:"interfaces"`
			}{ifaces})
		}
		printStatus(e.stdout, ifaces, now())
		return nil
	})
}

func collectStatus(e *env, p *parts) ([]statusIface, error) {
	t := now()
	var out []statusIface
	for _, ifc := range p.cfg.Interfaces {
		si := statusIface{Name: ifc.Name, Mode: ifc.Mode, ListenPort: ifc.ListenPort, Counts: map[string]int{}, Pools: []statusPool{}}
		peers, err := p.store.ListPeers(e.ctx, store.PeerFilter{Interface: ifc.Name})
		if err != nil {
			return nil, err
		}
		dev, err := p.dev.Read(e.ctx, ifc.Name)
		var kept map[wgtypes.Key]reconcile.HeldOrphan
		if err != nil {
			si.DeviceError = err.Error()
			dev = nil
		} else {
			si.ListenPort = dev.ListenPort
			// The same verdict a reconcile would reach on this read.
			st, err := p.engine.Inspect(e.ctx, ifc.Name, dev)
			if err != nil {
				return nil, err
			}
			si.Blocked, si.Orphans, si.OrphanRemovalLimit = st.Blocked, &st.Orphans, &st.Limit
			if ifc.Orphans == config.OrphansKeep {
				kept = make(map[wgtypes.Key]reconcile.HeldOrphan, len(st.Held))
				for _, h := range st.Held {
					kept[h.PublicKey] = h
				}
			}
		}
		si.Health = p.engine.Health(e.ctx, ifc.Name, dev)
		si.Peers = statusRows(peers, dev, kept, t)
		for _, r := range si.Peers {
			if strings.HasPrefix(r.State, "orphan (keeps ") {
				si.Counts[StateOrphanKept]++
				continue
			}
			si.Counts[r.State]++
		}
		for _, prof := range p.cfg.ProfilesOn(ifc.Name) {
			used, err := p.store.PoolUsage(e.ctx, ifc.Name, prof.ID)
			if err != nil {
				return nil, err
			}
			si.Pools = append(si.Pools, statusPool{Profile: prof.ID, Used: used, Total: prof.Capacity()})
		}
		out = append(out, si)
	}
	return out, nil
}

var stateOrder = []string{StateOnline, StateOffline, StateNeverConnected, StatePending, StateMissing, StateDrift, StateOrphan, StateOrphanKept, StateUnknown}

// keepText is a held prefix as status shows it: a host prefix as its address.
func keepText(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

func printStatus(w io.Writer, ifaces []statusIface, t time.Time) {
	for i, si := range ifaces {
		if i > 0 {
			fmt.Fprintln(w)
		}
		var counts []string
		for _, s := range stateOrder {
			if n := si.Counts[s]; n > 0 {
				counts = append(counts, fmt.Sprintf("%d %s", n, s))
			}
		}
		if len(counts) == 0 {
			counts = []string{"no configs"}
		}
		var pools []string
		for _, p := range si.Pools {
			pools = append(pools, fmt.Sprintf("%s %d/%d", p.Profile, p.Used, p.Total))
		}
		link := "link " + dash(si.Link)
		if n := len(si.AddressesPresent) + len(si.AddressesMissing); n > 0 {
			link += fmt.Sprintf("  addresses %d/%d", len(si.AddressesPresent), n)
		}
		fmt.Fprintf(w, "%s  mode %s  port %d  %s  %s  pool %s\n", si.Name, si.Mode, si.ListenPort, link, strings.Join(counts, ", "), joinNonEmpty(pools...))
		if si.DeviceError != "" {
			fmt.Fprintf(w, "  device unreadable: %s\n", si.DeviceError)
		}
		for _, d := range si.Drift {
			fmt.Fprintf(w, "  drift: %s\n", d)
		}
		if si.Blocked {
			fmt.Fprintf(w, "  blocked: %d orphans (device peers not in the store), more than orphan_removal_limit %d: reconcile removes none\n    %s\n",
				deref0(si.Orphans), deref0(si.OrphanRemovalLimit), reconcile.ForceHint(si.Name))
		}
		if len(si.Peers) == 0 {
			continue
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  USER\tPROFILE\tKEY\tADDRESSES\tCREATED\tEXPIRES\tHANDSHAKE\tRX\tTX\tENDPOINT\tSTATE")
		for _, r := range si.Peers {
			created, expires := "-", "-"
			if r.CreatedAt != nil {
				created = ago(t, *r.CreatedAt)
			}
			if !strings.HasPrefix(r.State, "orphan") {
				expires = until(t, deref(r.ExpiresAt))
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", dash(r.UserID), dash(r.ProfileID), shortKey(r.PublicKey),
				joinNonEmpty(r.IPFour, r.IPSix), created, expires, ago(t, deref(r.LastHandshake)),
				bytesHuman(r.RxBytes), bytesHuman(r.TxBytes), dash(r.Endpoint), r.State)
		}
		tw.Flush()
	}
}

func deref0(n *int) int {
	if n == nil {
		return 0
	}
	return *n
}

func deref(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
