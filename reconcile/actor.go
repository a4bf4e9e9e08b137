package reconcile

import (
	"context"
	"fmt"
)

// ActorDaemon is the actor of the daemon's own scheduled work: expiry at
// a config's expiry, housekeeping on its schedule, the periodic reconcile,
// stale cleanup.
const ActorDaemon = "daemon"

// CLIActor is the actor of a command-line command run by uid: "cli:UID".
func CLIActor(uid int) string { return fmt.Sprintf("cli:%d", uid) }

type actorKey struct{}

// WithActor returns ctx carrying actor: who asks for the changes the engine
// makes under ctx ("api:admin@127.0.0.1:53412", "cli:0", "daemon"). It is
// recorded on every event those changes insert and logged (key "actor")
// with every change, reconcile, housekeeping and retry. An inner WithActor
// replaces an outer one.
func WithActor(ctx context.Context, actor string) context.Context {
	return context.WithValue(ctx, actorKey{}, actor)
}

// ActorFrom returns the actor WithActor put into ctx; "" when none (the
// events then record no actor).
func ActorFrom(ctx context.Context) string {
	a, _ := ctx.Value(actorKey{}).(string)
	return a
}
