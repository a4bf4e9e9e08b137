package api

import (
	"context"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/config"
	"github.com/wgkeeper/wgkeeper/reconcile"
	"github.com/wgkeeper/wgkeeper/store"
	"github.com/wgkeeper/wgkeeper/wg"
)

// Engine is everything the API asks of the lifecycle engine: the changes,
// the verdicts, and every read of the store (Store) and of the devices
// (ReadDevice): the API reads nothing behind the engine's back.
// *reconcile.Engine satisfies it; each method's error contract is that of
// the engine's method of the same name.
type Engine interface {
	Store
	// ReadDevice reads one interface's device; the API counts a failure
	// in wgkeeper_device_read_errors_total and shows it as the interface's
	// device_error.
	ReadDevice(ctx context.Context, iface string) (*wg.Device, error)
	// Config is the configuration in force (it changes on reload).
	Config() *config.Config

	Create(ctx context.Context, req reconcile.CreateRequest) (*reconcile.Created, error)
	Delete(ctx context.Context, key wgtypes.Key) (reconcile.Removed, error)
	RevokeUser(ctx context.Context, user string) (reconcile.Removed, error)
	SetExpiry(ctx context.Context, key wgtypes.Key, c reconcile.ExpiryChange) (store.Peer, error)
	Retry(ctx context.Context, id int64) error
	Housekeeping(ctx context.Context, wait bool) (reconcile.Summary, error)
	ReconcileAll(ctx context.Context, dryRun bool) []reconcile.Report

	// Orphans is the latest verdict on an interface's orphans; Blocked
	// the interfaces whose orphan removal is blocked.
	Orphans(iface string) (reconcile.OrphanState, bool)
	Blocked() []reconcile.OrphanState
	// Inspect reaches the verdict a reconcile would reach on the device d.
	Inspect(ctx context.Context, iface string, d *wg.Device) (reconcile.OrphanState, error)
	// Health compares an interface with its configuration (d nil: the
	// device could not be read).
	Health(ctx context.Context, iface string, d *wg.Device) reconcile.Health
}

var _ Engine = (*reconcile.Engine)(nil)

// deviceOf reads devices through the engine.
type deviceOf struct{ eng Engine }

func (d deviceOf) Read(ctx context.Context, iface string) (*wg.Device, error) {
	return d.eng.ReadDevice(ctx, iface)
}
