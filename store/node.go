package store

import (
	"context"
	"net/netip"
	"time"
)

// Node is one of the nodes sharing a database, as its daemon registered
// it.
type Node struct {
	Name      string
	Version   string
	StartedAt time.Time // when its daemon last registered
	LastSeen  time.Time // its last heartbeat
	// DeadSince is when the cluster leader found its heartbeat stopped
	// (Nodes.MarkDead); zero while it is alive.
	DeadSince  time.Time
	Interfaces []string // the interfaces it declares, sorted
	// ConnectHold is the NodeDecl.ConnectHold it last registered (zero
	// for a node registered by a version that did not record it).
	ConnectHold time.Duration
}

// NodeDecl is what a node's configuration declares: its interfaces and
// their profiles with their ranges, and how long a connect script it
// started may still run.
type NodeDecl struct {
	Name    string
	Version string
	// ConnectHold is how long after a delete the D event of a config
	// whose connect script this node may still be running must wait,
	// unleased, so that its script never sees D before C: the hold its
	// own deletes use, from its hooks settings (the longest it has run
	// with). A delete made on any node holds such a D for at least the
	// owning node's ConnectHold (see Store.DeletePeers); zero adds
	// nothing to the deleting node's own hold.
	ConnectHold time.Duration
	Interfaces  []NodeInterface
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
	// what it declared before, its ConnectHold included), atomically, and adopts the pending events
	// of its interfaces that no node owned. It fails with ErrConflict,
	// naming both nodes, when another node declares one of its interfaces
	// or a profile range overlapping one of its ranges; nothing is
	// changed then.
	RegisterNode(ctx context.Context, d NodeDecl) error
	// Heartbeat records that the node is alive, and clears its DeadSince.
	// Errors: ErrNotFound when the node is not registered. (RegisterNode
	// clears DeadSince too.)
	Heartbeat(ctx context.Context, node string) error
	// MarkDead sets DeadSince to now on every node whose last heartbeat
	// is older than before and that is not marked dead yet, and returns
	// their names, ordered; a node already marked keeps the time it was
	// first marked. It is a cluster-wide job: the daemons run it only
	// while they hold the cluster-job lock (ClusterLeader), but running
	// it twice at once is harmless.
	MarkDead(ctx context.Context, before time.Time) ([]string, error)
	// ListNodes returns every registered node, ordered by name.
	ListNodes(ctx context.Context) ([]Node, error)
	// ProfileNodes returns the nodes that declare a profile with this id,
	// ordered by name; none when no node does.
	ProfileNodes(ctx context.Context, profile string) ([]string, error)
}

// ClusterLeader is implemented by the backends that many nodes share
// (store/postgres): it elects the one handle, among all the nodes, that
// runs the cluster-wide jobs (pruning old events, marking nodes dead),
// with a lock that lives on a connection of its own, so that a node that
// dies or loses the database loses the lock with it.
type ClusterLeader interface {
	// LeadCluster reports whether this handle holds the cluster-job
	// lock now, taking it when it is free. A handle that holds it keeps
	// it (later calls confirm it on the lock's connection) until that
	// connection is lost or the handle is closed. It returns false and
	// an error when it cannot tell: the connection cannot be made, or it
	// was lost, and the lock with it (a call that finds it lost does not
	// try again at once; the next call tries on a new connection). The
	// answer is as of the call: a caller learns of a lost lock at its
	// next call, so the jobs it runs as leader must stay correct when,
	// rarely, two nodes run them at once.
	LeadCluster(ctx context.Context) (bool, error)
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
