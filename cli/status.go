package cli

import (
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/wgkeeper/wgkeeper/api"
	"github.com/wgkeeper/wgkeeper/internal/humanfmt"
	"github.com/wgkeeper/wgkeeper/reconcile"
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

// stateText is a config's status as status prints it.
var stateText = map[string]string{
	api.ConfigOnline:  StateOnline,
	api.ConfigOffline: StateOffline,
	api.ConfigNever:   StateNeverConnected,
	api.ConfigMissing: StateMissing,
	api.ConfigDrift:   StateDrift,
	api.ConfigPending: StatePending,
	api.ConfigUnknown: StateUnknown,
}

// orphanState is an orphan's state as status prints it.
func orphanState(o api.OrphanPeer) string {
	switch {
	case !o.Kept:
		return StateOrphan
	case len(o.Keeps) > 0:
		return "orphan (keeps " + strings.Join(o.Keeps, ", ") + ")"
	}
	return StateOrphanKept
}

func cmdStatus(e *env, args []string) error {
	fs := newFlags("status")
	asJSON := fs.Bool("json", false, "print JSON (exactly GET /v1/status)")
	if err := parseFlags(e, fs, args, "status",
		"Show, per interface, the store's configs next to the live device: state\n(online, offline, never connected, missing on device, drift, orphan,\npending), last handshake, traffic, and pool use.",
		"wgkeeper status -json"); err != nil {
		return err
	}
	return e.withParts(func(p *parts) error {
		t := now()
		src := api.Source{Engine: p.engine, Store: p.store, Read: p.dev.Read, Version: Version,
			Online: reconcile.OnlineRule(p.engine.Config().Sessions), Now: t}
		st, err := src.Status(e.ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			if err := writeJSONOut(e.stdout, st); err != nil {
				return err
			}
		} else {
			printStatus(e.stdout, st, t)
		}
		return statusProblems(st)
	})
}

// statusProblems is the error that makes status exit 1, after it printed
// everything: an interface whose device cannot be read, whose orphan
// removal is blocked, or that drifts from its config (link down or
// missing, an address, the key or the port not as configured). Configs
// missing from a device or drifting are left to reconcile and do not
// count.
func statusProblems(st api.StatusResponse) error {
	var probs []string
	for _, si := range st.Interfaces {
		if si.DeviceError != "" {
			probs = append(probs, fmt.Sprintf("%s: device unreadable", si.Name))
		}
		if si.Blocked {
			probs = append(probs, fmt.Sprintf("%s: blocked (%d orphans, more than orphan_removal_limit %d)", si.Name, deref0(si.Orphans), deref0(si.OrphanRemovalLimit)))
		}
		if len(si.Drift) > 0 {
			probs = append(probs, fmt.Sprintf("%s: drift: %s", si.Name, strings.Join(si.Drift, "; ")))
		}
	}
	if len(probs) == 0 {
		return nil
	}
	return fmt.Errorf("%s", strings.Join(probs, "; "))
}

var stateOrder = []string{StateOnline, StateOffline, StateNeverConnected, StatePending, StateMissing, StateDrift, StateOrphan, StateOrphanKept, StateUnknown}

// addressText is an allowed IP as status prints addresses: a host prefix
// as its bare address.
func addressText(s string) string {
	if p, err := netip.ParsePrefix(s); err == nil && p.IsSingleIP() {
		return p.Addr().String()
	}
	return s
}

// statusCounts counts an interface's rows by the state status prints.
func statusCounts(si api.InterfaceStatus) map[string]int {
	counts := map[string]int{}
	for _, c := range si.Configs {
		counts[stateText[c.Status]]++
	}
	for _, o := range si.OrphanPeers {
		if o.Kept {
			counts[StateOrphanKept]++
		} else {
			counts[StateOrphan]++
		}
	}
	return counts
}

// printStatus renders GET /v1/status for people, relative to t.
func printStatus(w io.Writer, st api.StatusResponse, t time.Time) {
	for _, n := range st.Nodes {
		state := n.State
		switch {
		case n.DeadSince != nil:
			state = "dead since " + n.DeadSince.UTC().Format(time.RFC3339)
		case n.State == api.NodeSilent:
			state = "silent (no heartbeat within " + api.NodeAliveWindow.String() + ")"
		}
		self := ""
		if n.Self {
			self = " (this node)"
		}
		fmt.Fprintf(w, "node %s%s  %s, last seen %s  interfaces %s\n", n.Name, self, state,
			n.LastSeen.UTC().Format(time.RFC3339), joinNonEmpty(n.Interfaces...))
	}
	if len(st.Nodes) > 0 {
		fmt.Fprintln(w)
	}
	for i, si := range st.Interfaces {
		if i > 0 {
			fmt.Fprintln(w)
		}
		var counts []string
		byState := statusCounts(si)
		for _, s := range stateOrder {
			if n := byState[s]; n > 0 {
				counts = append(counts, fmt.Sprintf("%d %s", n, s))
			}
		}
		if len(counts) == 0 {
			counts = []string{"no configs"}
		}
		var pools []string
		for _, p := range st.Profiles {
			if p.Interface == si.Name {
				pools = append(pools, fmt.Sprintf("%s %d/%d", p.ID, p.PoolUsed, p.PoolSize))
			}
		}
		port := "-"
		switch {
		case si.ListenPort != nil:
			port = strconv.Itoa(*si.ListenPort)
		case si.ExpectedListenPort != nil:
			port = strconv.Itoa(*si.ExpectedListenPort)
		}
		link := "link " + dash(si.Link)
		if n := len(si.AddressesPresent) + len(si.AddressesMissing); n > 0 {
			link += fmt.Sprintf("  addresses %d/%d", len(si.AddressesPresent), n)
		}
		fmt.Fprintf(w, "%s  mode %s  port %s  %s  %s  pool %s\n", si.Name, si.Mode, port, link, strings.Join(counts, ", "), joinNonEmpty(pools...))
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
		if len(si.Configs)+len(si.OrphanPeers) == 0 {
			continue
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  USER\tPROFILE\tKEY\tADDRESSES\tCREATED\tEXPIRES\tHANDSHAKE\tRX\tTX\tENDPOINT\tSTATE")
		for _, c := range si.Configs {
			var hs time.Time
			var rx, tx int64
			endpoint := ""
			if l := c.Live; l != nil {
				hs, rx, tx, endpoint = deref(l.LastHandshake), l.RxBytes, l.TxBytes, derefStr(l.Endpoint)
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", dash(c.UserID), dash(c.ProfileID), humanfmt.ShortKey(c.PublicKey),
				joinNonEmpty(derefStr(c.IPFour), derefStr(c.IPSix)), humanfmt.Ago(t, c.CreatedAt), humanfmt.Until(t, deref(c.ExpiresAt)), humanfmt.Ago(t, hs),
				humanfmt.Bytes(rx), humanfmt.Bytes(tx), dash(endpoint), stateText[c.Status])
		}
		for _, o := range si.OrphanPeers {
			addrs := make([]string, len(o.AllowedIPs))
			for i, a := range o.AllowedIPs {
				addrs[i] = addressText(a)
			}
			fmt.Fprintf(tw, "  -\t-\t%s\t%s\t-\t-\t%s\t%s\t%s\t%s\t%s\n", humanfmt.ShortKey(o.PublicKey), joinNonEmpty(addrs...),
				humanfmt.Ago(t, deref(o.LastHandshake)), humanfmt.Bytes(o.RxBytes), humanfmt.Bytes(o.TxBytes), dash(derefStr(o.Endpoint)), orphanState(o))
		}
		tw.Flush()
	}
}

func derefStr(s *string) string {
	if s == nil {
		return ""
	}
	return *s
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
