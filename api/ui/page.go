package ui

import (
	"cmp"
	"html/template"
	"slices"
	"time"

	"github.com/wgkeeper/wgkeeper/internal/humanfmt"
)

// Config states on the page.
const (
	StateOnline  = "online"  // a session open and not stale (see the README's Sessions)
	StateOffline = "offline" // not online, a handshake seen once
	StateNever   = "never"   // on the device, never a handshake
	StateMissing = "missing" // active in the store, not on the device
	StateDrift   = "drift"   // on the device, but not as the store says
	StateOrphan  = "orphan"  // on the device, not in the store
	StatePending = "pending" // its connect script runs
	StateUnknown = "unknown" // the device could not be read
)

// Page is everything one view of the admin page shows.
type Page struct {
	Version string
	// Nodes are the nodes sharing the database (PostgreSQL), by name;
	// none with SQLite.
	Nodes      []Node
	Interfaces []Interface
	// Events are the latest events, failed ones first.
	Events []Event
	// EventCounts counts the events per status.
	EventCounts map[string]int
	// Filter and Now are set by the Handler.
	Filter string
	Now    time.Time
}

// Node is one node sharing the database.
type Node struct {
	Name, Version string
	Self          bool // the node serving the page
	// State is "alive", "silent" (its heartbeat is late) or "dead" (the
	// cluster leader marked it dead at DeadSince).
	State      string
	LastSeen   time.Time
	DeadSince  time.Time // zero unless dead
	Interfaces []string
}

// Interface is one WireGuard interface and its configs.
type Interface struct {
	Name, Mode  string
	PublicKey   string // "" when the device could not be read
	ListenPort  int    // 0 when unknown
	DeviceError string
	// PeersOnDevice and PeersOnline count the device's peers.
	PeersOnDevice, PeersOnline int
	// Link is "up", "down", "missing" or "none" (a userspace device
	// without a kernel link); Drift says what differs from the config.
	Link  string
	Drift []string
	// Blocked: more orphans than OrphanLimit; reconcile removes none.
	Blocked bool
	// Orphans and OrphanLimit are nil when the device could not be read.
	Orphans, OrphanLimit *int
	Pools                []Pool
	// Configs are those matching the filter, orphans last.
	Configs []Config
	// Hidden counts the configs the filter left out.
	Hidden int
}

// Pool is a profile's address use.
type Pool struct {
	Profile     string
	Used, Total int
}

// Pct is the share used, 0-100.
func (p Pool) Pct() float64 {
	if p.Total <= 0 {
		return 0
	}
	return min(100, 100*float64(p.Used)/float64(p.Total))
}

// Config is one row: a config from the store next to the device, or an
// orphan (a device peer the store does not know).
type Config struct {
	State                               string
	User, Profile, Name, PublicKey      string
	Addresses                           []string
	CreatedAt, ExpiresAt, LastHandshake time.Time // zero: unknown / never
	RxBytes, TxBytes                    int64
	Endpoint                            string
}

// Event is one entry of the event log.
type Event struct {
	ID                                               int64
	Kind, Reason, Status, User, PublicKey, Interface string
	// Actor is who made the change (api:admin@ADDRESS, cli:UID, daemon);
	// empty for events recorded before actors were.
	Actor                    string
	Attempts                 int
	LastError                string
	CreatedAt, NextAttemptAt time.Time
}

// Chart is an interface's traffic picture: one bar pair per peer (received
// above sent), the busiest first, drawn as inline SVG.
type Chart struct {
	Width, Height    int
	Rows             []ChartRow
	More             int // peers with traffic left out
	TotalRx, TotalTx int64
}

// ChartRow is one peer in a Chart; widths are in SVG units.
type ChartRow struct {
	Label            string
	RxY, TxY, TextY  int
	RxW, TxW         float64
	RxBytes, TxBytes int64
}

const (
	chartRows   = 8
	chartLabelW = 120
	chartBarW   = 260
	chartRowH   = 22
)

// Traffic draws the interface's traffic from the counters of its configs
// and orphans as read from the device.
func (i Interface) Traffic() Chart {
	c := Chart{Width: chartLabelW + 4 + chartBarW + 8}
	var rows []Config
	for _, cf := range i.Configs {
		c.TotalRx += cf.RxBytes
		c.TotalTx += cf.TxBytes
		if cf.RxBytes+cf.TxBytes > 0 {
			rows = append(rows, cf)
		}
	}
	slices.SortStableFunc(rows, func(a, b Config) int { return cmp.Compare(b.RxBytes+b.TxBytes, a.RxBytes+a.TxBytes) })
	if len(rows) > chartRows {
		c.More = len(rows) - chartRows
		rows = rows[:chartRows]
	}
	var most int64 = 1
	for _, r := range rows {
		most = max(most, r.RxBytes, r.TxBytes)
	}
	for n, r := range rows {
		label := r.User
		if label == "" {
			label = "orphan " + humanfmt.ShortKey(r.PublicKey)
		}
		if len([]rune(label)) > 18 {
			label = string([]rune(label)[:17]) + "…"
		}
		y := 4 + n*chartRowH
		c.Rows = append(c.Rows, ChartRow{Label: label, RxY: y, TxY: y + 9, TextY: y + 12,
			RxW: float64(chartBarW) * float64(r.RxBytes) / float64(most), TxW: float64(chartBarW) * float64(r.TxBytes) / float64(most),
			RxBytes: r.RxBytes, TxBytes: r.TxBytes})
	}
	c.Height = 8 + len(c.Rows)*chartRowH
	return c
}

// Failed reports whether any event shown failed.
func (p *Page) Failed() int { return p.EventCounts["failed"] }

var funcs = template.FuncMap{
	"ago":       humanfmt.Ago,
	"until":     humanfmt.Until,
	"bytes":     humanfmt.Bytes,
	"short":     humanfmt.ShortKey,
	"stamp":     stamp,
	"filterURL": filterURL,
	"labelX":    func() int { return chartLabelW },
	"barX":      func() int { return chartLabelW + 4 },
	"deref":     func(p *int) int { return *p },
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}
