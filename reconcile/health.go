package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/config"
	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/wg"
)

// Links keeps the interfaces this process owns (modes kernel and
// userspace) as configured. *wg.Link does the work; the daemon maps names
// to its links.
type Links interface {
	// Ensure repairs the named interface if this process owns it:
	// recreates it when gone, sets it up, restores its addresses. It
	// returns what it repaired, and nothing for an interface it does not
	// own.
	Ensure(ctx context.Context, iface string) ([]string, error)
}

// SetLinks hands the engine the interfaces this process owns; every
// reconcile of such an interface repairs it first, under its device lock.
// nil means none (one-shot commands own nothing).
func (e *Engine) SetLinks(l Links) {
	e.links.Store(&linksBox{l})
}

type linksBox struct{ Links }

// devSnap is what the last full read of an interface found, with the
// identity of the link and socket it was read through.
type devSnap struct {
	link wg.LinkState
	pub  wgtypes.Key
	port int
}

// noteRead records a full device read. link is the state looked up just
// before the read; nil when none was (then only the first-seen key is
// recorded, and a snapshot the read contradicts is dropped).
func (e *Engine) noteRead(iface string, link *wg.LinkState, d *wg.Device) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.firstKeys[iface]; !ok && d.PublicKey != (wgtypes.Key{}) {
		e.firstKeys[iface] = d.PublicKey
	}
	switch s, ok := e.snaps[iface]; {
	case link != nil:
		e.snaps[iface] = devSnap{link: *link, pub: d.PublicKey, port: d.ListenPort}
	case ok && (s.pub != d.PublicKey || s.port != d.ListenPort):
		delete(e.snaps, iface)
	}
}

// rememberKey records the first public key seen on an interface.
func (e *Engine) rememberKey(iface string, k wgtypes.Key) {
	e.noteRead(iface, nil, &wg.Device{PublicKey: k})
}

// forgetDevice drops what the engine remembers of an interface's device
// (after it rewrote key or port), so the next check reads it again.
func (e *Engine) forgetDevice(iface string) {
	e.mu.Lock()
	delete(e.snaps, iface)
	e.mu.Unlock()
}

// want is what the config says an interface's device must have.
type want struct {
	priv    *wgtypes.Key // private key from private_key_file; nil = not managed
	pub     wgtypes.Key  // expected public key: of priv, else the first seen; zero = unknown
	port    int          // 0 = not managed
	managed bool         // pub comes from private_key_file
}

// wantOf returns what the device of ifc must have. The private key file is
// read once per configuration (a reload reads it again).
func (e *Engine) wantOf(ifc config.Interface) (want, error) {
	w := want{port: ifc.ListenPort}
	if ifc.PrivateKeyFile == "" {
		e.mu.Lock()
		w.pub = e.firstKeys[ifc.Name]
		e.mu.Unlock()
		return w, nil
	}
	e.mu.Lock()
	k, ok := e.keyFiles[ifc.PrivateKeyFile]
	e.mu.Unlock()
	if !ok {
		var err error
		if k, err = wg.LoadKey(ifc.PrivateKeyFile); err != nil {
			return w, fmt.Errorf("private_key_file of %s: %w", ifc.Name, err)
		}
		e.mu.Lock()
		e.keyFiles[ifc.PrivateKeyFile] = k
		e.mu.Unlock()
	}
	w.priv, w.pub, w.managed = &k, k.PublicKey(), true
	return w, nil
}

// checkDevice is the check before a create: the interface exists, is up,
// is readable and has the public key and listen port the config expects.
// It returns the interface's public key. It costs a link lookup (netlink)
// and a stat of the UAPI socket; the device is read in full only when the
// interface is not the one the last read saw (recreated, restarted), was
// never read, or was not as expected then. A key or port changed in place
// (wg set) on an interface that was fine is therefore seen by the next
// reconcile, which sets managed ones back. Errors match
// ErrDeviceUnavailable.
//
// When the check fails and a reconcile could repair what it found (an
// interface this process owns, or a key or port the config names), one
// reconcile of the interface runs at once and the check is repeated, so a
// create right after `ip link del` or a wg-quick restart does not wait
// for the next scheduled reconcile.
func (e *Engine) checkDevice(ctx context.Context, ifc config.Interface) (wgtypes.Key, error) {
	k, err := e.checkOnce(ctx, ifc)
	if err == nil || !e.repairable(ifc) {
		return k, err
	}
	if rep := e.Reconcile(ctx, ifc.Name, false); rep.Err != nil {
		return k, err
	}
	return e.checkOnce(ctx, ifc)
}

// repairable reports whether a reconcile may fix an interface that fails
// the check: this process owns it, or the config names its key or port.
func (e *Engine) repairable(ifc config.Interface) bool {
	if ifc.Owned() {
		b := e.links.Load()
		return b != nil && b.Links != nil
	}
	return ifc.PrivateKeyFile != "" || ifc.ListenPort != 0
}

func (e *Engine) checkOnce(ctx context.Context, ifc config.Interface) (wgtypes.Key, error) {
	name := ifc.Name
	fail := func(err error) (wgtypes.Key, error) {
		return wgtypes.Key{}, unavailable(fmt.Errorf("interface %s cannot take configs now: %w", name, err))
	}
	ls, err := e.dev.Link(ctx, name)
	if err != nil {
		return fail(err)
	}
	if !ls.Present() {
		return fail(fmt.Errorf("it does not exist (no link, no UAPI socket)"))
	}
	if ls.Exists && !ls.Up {
		return fail(fmt.Errorf("the link is down (ip link set up dev %s)", name))
	}
	e.mu.Lock()
	snap, ok := e.snaps[name]
	e.mu.Unlock()
	if !ls.Exists && (ifc.Owned() || ok && snap.link.Exists) {
		// A UAPI socket without its link: a userspace device whose TUN
		// was deleted still answers there, with nothing behind it.
		return fail(errors.New("its link is gone (deleted) while its UAPI socket remains"))
	}
	w, err := e.wantOf(ifc)
	if err != nil {
		return fail(err)
	}
	// The last read stands for the same interface while its link and
	// socket are the same, unless it showed a problem: a refusal always
	// rests on a fresh read.
	if !ok || !snap.link.Same(ls) || len(keyPortDrift(w, snap.pub, snap.port)) > 0 {
		// look also refreshes what the engine knows of orphans; their
		// verdict is heldAddrs' business, only key and port count here.
		d, _, err := e.look(ctx, ifc)
		if err != nil {
			return fail(err)
		}
		e.noteRead(name, &ls, d)
		snap = devSnap{link: ls, pub: d.PublicKey, port: d.ListenPort}
		w, _ = e.wantOf(ifc) // the first read of an interface sets its expected key
	}
	if drift := keyPortDrift(w, snap.pub, snap.port); len(drift) > 0 {
		return fail(errors.New(strings.Join(drift, "; ")))
	}
	return snap.pub, nil
}

// keyPortDrift says how a device's key and port differ from w; nothing
// when they do not.
func keyPortDrift(w want, pub wgtypes.Key, port int) []string {
	var out []string
	switch {
	case pub == (wgtypes.Key{}):
		out = append(out, "the device has no private key")
	case w.managed && pub != w.pub:
		out = append(out, fmt.Sprintf("public key %s differs from private_key_file (public key %s)", pub, w.pub))
	case !w.managed && w.pub != (wgtypes.Key{}) && pub != w.pub:
		out = append(out, fmt.Sprintf("public key changed (from %s to %s): clients hold the old one; reload wgkeeper to accept the new one", w.pub, pub))
	}
	if w.port != 0 && port != w.port {
		out = append(out, fmt.Sprintf("listen port %d, config says %d", port, w.port))
	}
	return out
}

// keepDevice re-applies what the config manages on a device just read:
// the private key (private_key_file) and the listen port, each only when it
// differs. An unmanaged key that changed is logged once per new key. It
// returns what it changed.
func (e *Engine) keepDevice(ctx context.Context, ifc config.Interface, d *wg.Device, log *slog.Logger) ([]string, error) {
	w, err := e.wantOf(ifc)
	if err != nil {
		return nil, err
	}
	var key *wgtypes.Key
	var port *int
	var out []string
	if w.priv != nil && d.PublicKey != w.pub {
		key = w.priv
		out = append(out, "set private key")
	}
	if w.port != 0 && d.ListenPort != w.port {
		port = &w.port
		out = append(out, fmt.Sprintf("set listen port %d", w.port))
	}
	if !w.managed && w.pub != (wgtypes.Key{}) && d.PublicKey != w.pub {
		e.mu.Lock()
		seen := e.driftLogged[ifc.Name] == d.PublicKey
		e.driftLogged[ifc.Name] = d.PublicKey
		e.mu.Unlock()
		if !seen {
			log.Warn("public key of the interface changed; creates are refused until wgkeeper is reloaded (SIGHUP) or restarted, which accepts the new key",
				"iface", ifc.Name, "was", w.pub.String(), "now", d.PublicKey.String())
		}
	}
	if key == nil && port == nil {
		return nil, nil
	}
	e.forgetDevice(ifc.Name)
	if err := e.dev.SetDevice(ctx, ifc.Name, key, port); err != nil {
		return nil, fmt.Errorf("re-apply %s: %w", strings.Join(out, ", "), err)
	}
	return out, nil
}

// ensureLink lets the owner of the interface repair it (recreate, set up,
// restore addresses).
func (e *Engine) ensureLink(ctx context.Context, iface string) ([]string, error) {
	b := e.links.Load()
	if b == nil || b.Links == nil {
		return nil, nil
	}
	return b.Ensure(ctx, iface)
}

// rollBack removes a config whose connect script succeeded but whose peer
// the device refused: a D event of reason "failed", delivered like any
// other. The error returned matches ErrDeviceUnavailable.
func (e *Engine) rollBack(ctx context.Context, p store.Peer, cause error, log *slog.Logger) error {
	log.Error("add config to device failed; rolling the config back with a D event", "err", cause)
	r, err := e.remove(ctx, []store.Peer{p}, store.ReasonFailed)
	if err != nil {
		// The row is active, so no stale cleanup will take it: it stays a
		// valid config, and the next reconcile adds it to the device. A
		// portal's retry with the same key gets it back (200).
		log.Error("roll back a config the device refused; it stays active and the next reconcile adds it", "err", err)
		return unavailable(fmt.Errorf("add %s to %s: %w (roll-back failed: %v; the config stays active and the next reconcile adds it)", p.PublicKey, p.Interface, cause, err))
	}
	id := int64(0)
	if len(r.Events) > 0 {
		id = r.Events[0].ID
	}
	return unavailable(fmt.Errorf("add %s to %s: %w; the config was rolled back (D event %d, reason failed)", p.PublicKey, p.Interface, cause, id))
}

// Health is how an interface compares with its configuration: its link,
// its addresses, and its device's key and port.
type Health struct {
	// Link is "up", "down", "missing" (no link: deleted, or never
	// created), or "none" (an existing userspace device with a UAPI socket
	// and no kernel link, such as one on a netstack).
	Link string `json:"link"`
	// AddressesPresent and AddressesMissing split the server addresses
	// wgkeeper puts on an interface it owns (each profile's +1); empty
	// for mode existing.
	AddressesPresent []string `json:"addresses_present"`
	AddressesMissing []string `json:"addresses_missing"`
	// ExpectedPublicKey is the public key of private_key_file, else the
	// first one this process saw on the interface; null when neither.
	ExpectedPublicKey *string `json:"expected_public_key"`
	// PublicKeyOK is whether the device has it; null when unknown.
	PublicKeyOK *bool `json:"public_key_ok"`
	// ExpectedListenPort is the configured port; null when not managed.
	ExpectedListenPort *int `json:"expected_listen_port"`
	// ListenPortOK is whether the device uses it; null when unknown.
	ListenPortOK *bool `json:"listen_port_ok"`
	// Drift says in words what differs ("link down", "address
	// fd77::1/64 missing", "public key changed (…)"); empty when nothing.
	Drift []string `json:"drift"`
}

// Health compares an interface with its configuration. d is the device as
// just read, nil when it could not be read. It costs a link lookup and an
// address dump over netlink.
func (e *Engine) Health(ctx context.Context, iface string, d *wg.Device) Health {
	h := Health{AddressesPresent: []string{}, AddressesMissing: []string{}, Drift: []string{}}
	cfg := e.Config()
	ifc, ok := cfg.Interface(iface)
	if !ok {
		h.Link = "missing"
		return h
	}
	ls, err := e.dev.Link(ctx, iface)
	switch {
	case err != nil:
		h.Link = "missing"
		h.Drift = append(h.Drift, "link not inspected: "+err.Error())
	case ls.Exists && ls.Up:
		h.Link = "up"
	case ls.Exists:
		h.Link = "down"
		h.Drift = append(h.Drift, "link down")
	case ls.Present() && !ifc.Owned():
		h.Link = "none"
	default:
		h.Link = "missing"
		h.Drift = append(h.Drift, "interface missing")
	}
	if ifc.Owned() && ls.Exists {
		for _, prof := range cfg.ProfilesOn(iface) {
			for _, a := range prof.ServerAddrs() {
				if ls.HasAddr(a) {
					h.AddressesPresent = append(h.AddressesPresent, a.String())
				} else {
					h.AddressesMissing = append(h.AddressesMissing, a.String())
					h.Drift = append(h.Drift, "address "+a.String()+" missing")
				}
			}
		}
	}
	w, werr := e.wantOf(ifc)
	if werr != nil {
		h.Drift = append(h.Drift, werr.Error())
	}
	if w.pub != (wgtypes.Key{}) {
		s := w.pub.String()
		h.ExpectedPublicKey = &s
	}
	if w.port != 0 {
		p := w.port
		h.ExpectedListenPort = &p
	}
	if d != nil {
		if h.ExpectedPublicKey != nil {
			ok := d.PublicKey == w.pub
			h.PublicKeyOK = &ok
		}
		if h.ExpectedListenPort != nil {
			ok := d.ListenPort == w.port
			h.ListenPortOK = &ok
		}
		h.Drift = append(h.Drift, keyPortDrift(w, d.PublicKey, d.ListenPort)...)
	}
	return h
}
