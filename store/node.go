package store

import (
	"context"
	"net/netip"
	"time"
)

// Node is one of the nodes sharing a database, as its daemon registered
// it.
type Node struct {
	Name       string
	Version    string
	StartedAt  time.Time // when its daemon last registered
	LastSeen   time.Time // its last heartbeat
	Interfaces []string  // the interfaces it declares, sorted
}

// NodeDecl is what a node's configuration declares: its interfaces and
// their profiles with their ranges.
type NodeDecl struct {
	Name       string
	Version    string
	Interfaces []NodeInterface
}

// NodeInterface is one interface a node declares.
type NodeInterface struct {
	Name     string
	Profiles []NodeProfile
}

// NodeProfile is one profile of a declared interface; a zero range means
// the profile has no such family.
type NodeProfile struct {
	ID                   string
	IPv4Range, IPv6Range netip.Prefix
}

// Nodes is implemented by the backends that many nodes share
// (store/postgres): every interface, and so every profile and config,
// belongs to the node whose configuration declares it.
type Nodes interface {
	// RegisterNode records the node and what it declares now (replacing
	// what it declared before), atomically, and adopts the pending events
	// of its interfaces that no node owned. It fails with ErrConflict,
	// naming both nodes, when another node declares one of its interfaces
	// or a profile range overlapping one of its ranges; nothing is
	// changed then.
	RegisterNode(ctx context.Context, d NodeDecl) error
	// Heartbeat records that the node is alive. Errors: ErrNotFound when
	// the node is not registered.
	Heartbeat(ctx context.Context, node string) error
	// ListNodes returns every registered node, ordered by name.
	ListNodes(ctx context.Context) ([]Node, error)
	// ProfileNodes returns the nodes that declare a profile with this id,
	// ordered by name; none when no node does.
	ProfileNodes(ctx context.Context, profile string) ([]string, error)
}

// Resyncer is implemented by backends whose change notifications can be
// lost while a connection is down (store/postgres): Resyncs receives a
// value each time the listening connection is re-established after a
// loss, when the caller should re-read everything (a full reconcile)
// rather than trust that it heard of every change. It is closed when ctx
// is done or the handle is closed.
type Resyncer interface {
	Resyncs(ctx context.Context) <-chan struct{}
}
