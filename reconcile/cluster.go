package reconcile

import (
	"context"
	"errors"
	"time"
)

// Lead reports whether this node runs the cluster-wide jobs now (pruning
// old events, marking silent nodes dead): always when it is the only node
// (no Options.Leader); with many, while it holds the cluster-job lock
// (store.ClusterLeader), which each call confirms or tries to take. It
// logs when the node becomes or stops being the leader, and tells the
// Observer. A store error means "not leading" (logged with the loss when
// the node was leading, at debug level otherwise: it keeps trying at
// every call).
func (e *Engine) Lead(ctx context.Context) bool {
	if e.leader == nil {
		return true
	}
	e.leadMu.Lock()
	defer e.leadMu.Unlock()
	lead, err := e.leader.LeadCluster(ctx)
	node := e.Config().Node
	switch {
	case lead && !e.leading:
		e.log.Info("this node is now the cluster leader: it runs the cluster-wide jobs (pruning old events, marking silent nodes dead)", "node", node)
	case !lead && e.leading && ctx.Err() != nil:
		e.log.Info("this node is no longer the cluster leader: it is stopping", "node", node)
	case !lead && e.leading && err != nil:
		e.log.Warn("this node is no longer the cluster leader; another node takes over the cluster-wide jobs", "node", node, "err", err)
	case !lead && e.leading:
		e.log.Warn("this node is no longer the cluster leader; another node takes over the cluster-wide jobs", "node", node)
	case err != nil && ctx.Err() == nil:
		e.log.Debug("cluster-job lock; trying again at the next cluster job", "node", node, "err", err)
	}
	if lead != e.leading {
		e.leading = lead
		e.obs.ClusterLeader(lead)
	}
	return lead
}

// MarkDeadNodes is the cluster-wide job that marks dead the nodes whose
// last heartbeat is older than after (store.Nodes.MarkDead), when this
// node is the cluster leader; it returns the nodes it marked. With one
// node (no Options.Nodes) it does nothing. Errors: the store's.
func (e *Engine) MarkDeadNodes(ctx context.Context, after time.Duration) ([]string, error) {
	if e.nodes == nil {
		return nil, nil
	}
	if after <= 0 {
		return nil, errors.New("mark dead nodes: the threshold must be positive")
	}
	if !e.Lead(ctx) {
		return nil, nil
	}
	dead, err := e.nodes.MarkDead(ctx, e.clock().Add(-after))
	if err != nil {
		return nil, err
	}
	for _, n := range dead {
		e.log.Warn("node marked dead: its heartbeat stopped", "node", n, "silent_for_over", after)
	}
	return dead, nil
}
