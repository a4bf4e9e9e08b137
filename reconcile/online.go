package reconcile

import (
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/config"
	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/wg"
)

// Online is the one definition of "online" for everything that reports it:
// `status` (table and -json), GET /v1/status, the live state of GET
// /v1/peers, the admin page and the metrics. The session tracker
// (TrackPeer) keeps its own rules: it decides when a session starts and
// ends; Online reads what it persisted.
//
//   - A config is online while it has an open session whose last activity
//     (the later of Activity.LastActive and the session's start) is less
//     than offline_after + poll_interval before now. A polling daemon ends
//     a session at the first poll at least offline_after after its last
//     activity, so an open session older than that bound is stale: no
//     daemon polled the interface since (stopped, or its reads fail), and
//     what the client does now is unknown; it is reported offline.
//   - A config with no activity ever recorded (the zero Activity: no
//     daemon has seen its client talk, or no daemon ever polled) is
//     offline. Status then calls it "never" when no handshake is known
//     either (neither on the device nor recorded).
//   - A device peer the store has no config for (an orphan) has no tracked
//     sessions; it is online when its latest handshake is less than
//     offline_after before now. A client that talks re-handshakes every 2
//     minutes, so with the default offline_after of 3 minutes that is the
//     session rule applied to the one evidence the device keeps.
//
// The zero Online takes config.DefaultOfflineAfter and
// config.DefaultPollInterval.
type Online struct {
	// OfflineAfter is sessions.offline_after.
	OfflineAfter time.Duration
	// PollInterval is sessions.poll_interval.
	PollInterval time.Duration
}

// OnlineRule returns the definition of online under the sessions
// configuration s.
func OnlineRule(s config.Sessions) Online {
	return Online{OfflineAfter: s.OfflineAfter, PollInterval: s.PollInterval}
}

func (o Online) window() (session, orphan time.Duration) {
	off, poll := o.OfflineAfter, o.PollInterval
	if off <= 0 {
		off = config.DefaultOfflineAfter
	}
	if poll <= 0 {
		poll = config.DefaultPollInterval
	}
	return off + poll, off
}

// Config reports whether a config whose persisted activity is a counts as
// online at now.
func (o Online) Config(a store.Activity, now time.Time) bool {
	if !a.SessionOpen() {
		return false
	}
	w, _ := o.window()
	return now.Sub(maxTime(a.LastActive, a.Session.Started)) < w
}

// Orphan reports whether a device peer that is no config counts as online
// at now.
func (o Online) Orphan(p wg.Peer, now time.Time) bool {
	_, w := o.window()
	return !p.LastHandshake.IsZero() && now.Sub(p.LastHandshake) < w
}

// CountDevice counts the peers of d online at now: a peer that is a config
// in acts (the activity of the interface's active configs) by Config, any
// other by Orphan. A config that is not on the device is not counted.
func (o Online) CountDevice(d *wg.Device, acts map[wgtypes.Key]store.Activity, now time.Time) int {
	n := 0
	for _, p := range d.Peers {
		a, ok := acts[p.PublicKey]
		if ok && o.Config(a, now) || !ok && o.Orphan(p, now) {
			n++
		}
	}
	return n
}
