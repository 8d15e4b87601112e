package register

import (
	"cmp"
	"maps"
	"slices"
)

// LeftOut is a running Swarm task container the agent leaves out of
// Consul on purpose: Desired gives it no service, for Reason (a LeftOut*
// constant). Only the agent knows why; the dashboard, told, shows the
// task as not registered rather than as a mismatch between Swarm and
// Consul (package unregistered publishes the set).
type LeftOut struct {
	ContainerID string
	// TaskID and NodeID are the task's and its node's, from Swarm's
	// labels on the container.
	TaskID string
	NodeID string
	Reason string
}

// LeftOut returns the running Swarm task containers the agent leaves out
// of Consul, by container ID.
func (a *Agent) LeftOut() []LeftOut {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.SortedFunc(maps.Values(a.leftOut), func(x, y LeftOut) int {
		return cmp.Compare(x.ContainerID, y.ContainerID)
	})
}

// LeftOutChanged fires after LeftOut changed; changes made before the
// receiver reads LeftOut are signalled once.
func (a *Agent) LeftOutChanged() <-chan struct{} { return a.leftOutC }

// noteLeftOut records, once a pass is over (never before its Consul
// write), whether container c, of ID id, is a running Swarm task that
// Desired leaves out, and why: why is DesiredWhy's reason ("" when it
// has services).
func (a *Agent) noteLeftOut(id string, c Container, why string) {
	task := c.Labels[labelSwarmTaskID]
	keep := why != "" && c.Running && task != ""
	l := LeftOut{ContainerID: id, TaskID: task, NodeID: c.Labels[labelSwarmNodeID], Reason: why}
	a.mu.Lock()
	defer a.mu.Unlock()
	was, had := a.leftOut[id]
	switch {
	case keep && (!had || was != l):
		a.leftOut[id] = l
	case !keep && had:
		delete(a.leftOut, id)
	default:
		return
	}
	a.leftOutChangedLocked()
}

// leftOutChangedLocked signals LeftOutChanged without waiting: a signal
// already pending stands for this change too. a.mu is held.
func (a *Agent) leftOutChangedLocked() {
	select {
	case a.leftOutC <- struct{}{}:
	default:
	}
}
