package api

import (
	"context"
	"strings"
	"sync"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/api/ui"
	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/wg"
)

// Events on the admin page: the failed ones (up to pageFailed), then the
// latest others (up to pageLatest).
const (
	pageFailed = 20
	pageLatest = 30
)

type deviceReadsKey struct{}

// deviceReads shares the device reads of one request: each interface is
// read once, whichever handler code asks.
type deviceReads struct {
	mu sync.Mutex // guards m; held during a read, so a second asker waits for it
	m  map[string]deviceRead
}

type deviceRead struct {
	dev *wg.Device
	err error
}

func withDeviceReads(ctx context.Context) (context.Context, *deviceReads) {
	dr := &deviceReads{m: map[string]deviceRead{}}
	return context.WithValue(ctx, deviceReadsKey{}, dr), dr
}

func (dr *deviceReads) read(ctx context.Context, s *Server, iface string) (*wg.Device, error) {
	dr.mu.Lock()
	defer dr.mu.Unlock()
	if r, ok := dr.m[iface]; ok {
		return r.dev, r.err
	}
	d, err := s.dev.Read(ctx, iface)
	if err != nil {
		s.metrics.DeviceReadError(iface)
	}
	dr.m[iface] = deviceRead{d, err}
	return d, err
}

// pageData builds the admin page from what GET /v1/status and GET
// /v1/peers compute, with one device read per interface. filter keeps the
// configs and events whose user id or address contains it, or whose public
// key starts with it (ignoring case).
func (s *Server) pageData(ctx context.Context, filter string) (*ui.Page, error) {
	ctx, reads := withDeviceReads(ctx)
	st, err := s.statusView(ctx)
	if err != nil {
		return nil, err
	}
	peers, err := s.st.ListPeers(ctx, store.PeerFilter{})
	if err != nil {
		return nil, err
	}
	views := make([]PeerJSON, len(peers))
	for i, p := range peers {
		views[i] = peerOut(p)
	}
	s.addLive(ctx, peers, views)

	page := &ui.Page{Version: st.Version, EventCounts: st.Events}
	for _, n := range st.Nodes {
		pn := ui.Node{Name: n.Name, Version: n.Version, Self: n.Self, State: n.State, LastSeen: n.LastSeen, Interfaces: n.Interfaces}
		if n.DeadSince != nil {
			pn.DeadSince = *n.DeadSince
		}
		page.Nodes = append(page.Nodes, pn)
	}
	for _, is := range st.Interfaces {
		pi := ui.Interface{Name: is.Name, Mode: is.Mode, DeviceError: is.DeviceError, Blocked: is.Blocked,
			Orphans: is.Orphans, OrphanLimit: is.OrphanRemovalLimit, Link: is.Link, Drift: is.Drift}
		if is.PublicKey != nil {
			pi.PublicKey, pi.ListenPort, pi.PeersOnDevice, pi.PeersOnline = *is.PublicKey, *is.ListenPort, *is.PeersOnDevice, *is.PeersOnline
		}
		for _, ps := range st.Profiles {
			if ps.Interface == is.Name {
				pi.Pools = append(pi.Pools, ui.Pool{Profile: ps.ID, Used: ps.PoolUsed, Total: ps.PoolSize})
			}
		}
		known := map[wgtypes.Key]bool{}
		for i, p := range peers {
			if p.Interface != is.Name {
				continue
			}
			known[p.PublicKey] = true
			c := pageConfig(views[i])
			if matches(filter, c) {
				pi.Configs = append(pi.Configs, c)
			} else {
				pi.Hidden++
			}
		}
		if d, err := reads.read(ctx, s, is.Name); err == nil {
			for _, dp := range d.Peers {
				if known[dp.PublicKey] {
					continue
				}
				c := orphanConfig(dp)
				if matches(filter, c) {
					pi.Configs = append(pi.Configs, c)
				} else {
					pi.Hidden++
				}
			}
		}
		page.Interfaces = append(page.Interfaces, pi)
	}

	failed, err := s.st.ListEvents(ctx, store.EventFilter{Status: store.StatusFailed, Limit: pageFailed})
	if err != nil {
		return nil, err
	}
	latest, err := s.st.ListEvents(ctx, store.EventFilter{Limit: pageLatest + len(failed)})
	if err != nil {
		return nil, err
	}
	for _, e := range eventsOut(failed) {
		if matchesEvent(filter, e) {
			page.Events = append(page.Events, pageEvent(e))
		}
	}
	n := 0
	for _, e := range eventsOut(latest) {
		if e.Status == store.StatusFailed || n == pageLatest || !matchesEvent(filter, e) {
			continue
		}
		page.Events = append(page.Events, pageEvent(e))
		n++
	}
	return page, nil
}

// pageState is a config's state on the page: its status in GET
// /v1/status (ConfigStatus); the page's states have the same names.
func pageState(p PeerJSON) string { return ConfigStatus(p) }

func pageConfig(p PeerJSON) ui.Config {
	c := ui.Config{State: pageState(p), User: p.UserID, Profile: p.ProfileID, Name: p.DisplayName,
		PublicKey: p.PublicKey, CreatedAt: p.CreatedAt}
	for _, a := range []*string{p.IPFour, p.IPSix} {
		if a != nil {
			c.Addresses = append(c.Addresses, *a)
		}
	}
	if p.ExpiresAt != nil {
		c.ExpiresAt = *p.ExpiresAt
	}
	if l := p.Live; l != nil {
		c.RxBytes, c.TxBytes = l.RxBytes, l.TxBytes
		if l.LastHandshake != nil {
			c.LastHandshake = *l.LastHandshake
		}
		if l.Endpoint != nil {
			c.Endpoint = *l.Endpoint
		}
	}
	return c
}

func orphanConfig(d wg.Peer) ui.Config {
	c := ui.Config{State: ui.StateOrphan, PublicKey: d.PublicKey.String(), LastHandshake: d.LastHandshake,
		RxBytes: d.RxBytes, TxBytes: d.TxBytes}
	for _, a := range d.AllowedIPs {
		if a.IsSingleIP() {
			c.Addresses = append(c.Addresses, a.Addr().String())
		} else {
			c.Addresses = append(c.Addresses, a.String())
		}
	}
	if d.Endpoint.IsValid() {
		c.Endpoint = d.Endpoint.String()
	}
	return c
}

func matches(filter string, c ui.Config) bool {
	return matchAny(filter, c.User, c.PublicKey, c.Addresses...)
}

func matchesEvent(filter string, e EventJSON) bool {
	var addrs []string
	for _, a := range []*string{e.IPFour, e.IPSix} {
		if a != nil {
			addrs = append(addrs, *a)
		}
	}
	return matchAny(filter, e.UserID, e.PublicKey, addrs...)
}

// matchAny: the filter is empty, or the user id or an address contains it,
// or the key starts with it, ignoring case.
func matchAny(filter, user, key string, addrs ...string) bool {
	if filter == "" {
		return true
	}
	f := strings.ToLower(filter)
	if strings.Contains(strings.ToLower(user), f) || strings.HasPrefix(strings.ToLower(key), f) {
		return true
	}
	for _, a := range addrs {
		if strings.Contains(strings.ToLower(a), f) {
			return true
		}
	}
	return false
}

func pageEvent(e EventJSON) ui.Event {
	ev := ui.Event{ID: e.ID, Kind: e.Event, Reason: e.Reason, Status: e.Status, User: e.UserID, PublicKey: e.PublicKey,
		Interface: e.Interface, Attempts: e.Attempts, LastError: e.LastError, CreatedAt: e.CreatedAt}
	if e.Actor != nil {
		ev.Actor = *e.Actor
	}
	if e.NextAttemptAt != nil {
		ev.NextAttemptAt = *e.NextAttemptAt
	}
	return ev
}
