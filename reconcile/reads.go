package reconcile

import (
	"context"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/wg"
)

// The reads below pass on what the store and the devices answer, so that
// the API depends on the engine alone and reads nothing behind its back.
// Errors are those of the store contract (GetPeer: store.ErrNotFound; a
// store that cannot be reached: store.ErrUnavailable) and of the device
// (ReadDevice: os.ErrNotExist for a missing interface), unwrapped.

// ListPeers lists the stored configs that match f.
func (e *Engine) ListPeers(ctx context.Context, f store.PeerFilter) ([]store.Peer, error) {
	return e.store.ListPeers(ctx, f)
}

// GetPeer returns the stored config of key.
func (e *Engine) GetPeer(ctx context.Context, key wgtypes.Key) (store.Peer, error) {
	return e.store.GetPeer(ctx, key)
}

// ListEvents lists the events that match f.
func (e *Engine) ListEvents(ctx context.Context, f store.EventFilter) ([]store.Event, error) {
	return e.store.ListEvents(ctx, f)
}

// CountPeers counts the stored configs per interface, profile and state.
func (e *Engine) CountPeers(ctx context.Context) ([]store.PeerCount, error) {
	return e.store.CountPeers(ctx)
}

// CountEvents counts the events by status.
func (e *Engine) CountEvents(ctx context.Context) (map[string]int, error) {
	return e.store.CountEvents(ctx)
}

// Version is the store's change version; it answers when the store does
// (the API's health check).
func (e *Engine) Version(ctx context.Context) (uint64, error) {
	return e.store.Version(ctx)
}

// ReadDevice reads the interface's device: its key, port and peers with
// their live state.
func (e *Engine) ReadDevice(ctx context.Context, iface string) (*wg.Device, error) {
	return e.dev.Read(ctx, iface)
}

// WhoHad returns the configs that held ip at the instant at.
func (e *Engine) WhoHad(ctx context.Context, ip netip.Addr, at time.Time) ([]store.Session, error) {
	return e.store.WhoHad(ctx, ip, at)
}

// UserSessions returns the user's configs past and present.
func (e *Engine) UserSessions(ctx context.Context, user string) ([]store.Session, error) {
	return e.store.UserSessions(ctx, user)
}

// ListClientSessions returns the recorded client sessions that match f.
func (e *Engine) ListClientSessions(ctx context.Context, f store.ClientSessionFilter) ([]store.ClientSession, error) {
	return e.store.ListClientSessions(ctx, f)
}

// ListActivity returns the recorded session activity of the active
// configs on iface.
func (e *Engine) ListActivity(ctx context.Context, iface string) (map[wgtypes.Key]store.Activity, error) {
	return e.store.ListActivity(ctx, iface)
}
