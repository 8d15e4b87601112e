package netspec

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"
)

// DockerNetwork is a network of the local Docker daemon, as the name check
// sees it.
type DockerNetwork struct {
	ID, Name, Driver string
	Labels           map[string]string
}

// NetworkLister lists the local daemon's networks whose name matches name.
type NetworkLister interface {
	NetworksNamed(ctx context.Context, name string) ([]DockerNetwork, error)
}

// CheckNameFree refuses a name Docker already uses (for the swarm network
// or the config-only one) for a network underlay does not manage. A daemon
// that cannot be listed passes: agents report a clash on their node.
func CheckNameFree(ctx context.Context, d NetworkLister, name string) error {
	list, err := d.NetworksNamed(ctx, name)
	if err != nil {
		return nil
	}
	for _, n := range list {
		if (n.Name == name || n.Name == ConfigNetworkName(name)) && n.Labels[LabelManaged] != "true" {
			return fmt.Errorf("name %q is already used by Docker network %s (driver %s), which underlay does not manage", name, n.ID[:min(len(n.ID), 12)], n.Driver)
		}
	}
	return nil
}

// SwarmManager is what removing a network needs of a swarm manager's
// Docker daemon.
type SwarmManager interface {
	// SwarmNetworkID returns the swarm network's ID, "" when there is none.
	SwarmNetworkID(ctx context.Context, name string) (string, error)
	// ServiceNetworks returns every service's name with the networks its
	// tasks attach to (IDs or names, as the service gives them).
	ServiceNetworks(ctx context.Context) (map[string][]string, error)
	// RemoveNetwork removes a network by name or ID; nil when already gone.
	RemoveNetwork(ctx context.Context, name string) error
}

// Removal is the `network rm` protocol's timing.
type Removal struct {
	// Timeout is how long every node has to take its part down.
	Timeout time.Duration
	// Poll is the interval of reading the nodes' states (default 250ms).
	Poll time.Duration
	// Trees are KV prefixes that belong to the network alone (its
	// cluster-IPAM pools), deleted with its spec once every node took its
	// part down: left behind, a network made again with the name would
	// find the old one's blocks, as keys it cannot read when its subnet
	// differs.
	Trees []string
}

// Remove removes network name from every node; ok is false when there is
// no such network (a spec that cannot be read is removed too, by its
// name). It refuses while services use the swarm network. The
// spec is marked deleting first, so no agent recreates the swarm network;
// the agents' config-only networks go once it is gone, and a second mark
// wakes them to that. It returns once every node that reported the
// network reports it removed and the swarm network is gone (again: see
// below), then deletes the spec.
func (st *Store) Remove(ctx context.Context, m SwarmManager, name string, r Removal) (ok bool, err error) {
	// Keys and trees are made of the name: it must be one.
	if !nameRE.MatchString(name) {
		return false, fmt.Errorf("network name %q: want letters, digits, '_', '.' or '-', starting with a letter or digit", name)
	}
	_, ok, err = st.Get(ctx, name)
	switch {
	case errors.Is(err, ErrBadSpec):
		// Removed all the same: it is the fix agents give for a spec they
		// refuse, and MarkDeleting marks it by its name alone.
	case err != nil || !ok:
		return false, err
	}
	swarmID, err := unusedSwarmNetwork(ctx, m, name)
	if err != nil {
		return true, err
	}
	if err := st.MarkDeleting(ctx, name); err != nil {
		return true, err
	}
	if swarmID != "" {
		if err := m.RemoveNetwork(ctx, swarmID); err != nil {
			return true, fmt.Errorf("remove swarm network %s: %w", name, err)
		}
		if err := st.MarkDeleting(ctx, name); err != nil {
			return true, err
		}
	}
	if err := st.waitRemoved(ctx, name, r); err != nil {
		return true, err
	}
	// The leader's agent may have created the swarm network again: a sync
	// that read the spec before the mark, and found the network gone after
	// the removal above. Every node's removal was reported by a later sync
	// of its agent, which read the mark, so none creates it again now.
	if err := removeSwarmNetwork(ctx, m, name); err != nil {
		return true, err
	}
	return true, st.Delete(ctx, name, r.Trees...)
}

// removeSwarmNetwork removes the swarm network name if there is one.
func removeSwarmNetwork(ctx context.Context, m SwarmManager, name string) error {
	id, err := m.SwarmNetworkID(ctx, name)
	if err != nil {
		return fmt.Errorf("inspect swarm network %s: %w", name, err)
	}
	if id == "" {
		return nil
	}
	if err := m.RemoveNetwork(ctx, id); err != nil {
		return fmt.Errorf("remove swarm network %s (created again while it was removed): %w", name, err)
	}
	return nil
}

// unusedSwarmNetwork returns the swarm network's ID ("" when there is
// none), or an error naming the services that still use it.
func unusedSwarmNetwork(ctx context.Context, m SwarmManager, name string) (string, error) {
	id, err := m.SwarmNetworkID(ctx, name)
	if err != nil {
		return "", fmt.Errorf("inspect swarm network %s (is DOCKER_HOST a manager?): %w", name, err)
	}
	if id == "" {
		return "", nil
	}
	services, err := m.ServiceNetworks(ctx)
	if err != nil {
		return "", fmt.Errorf("list services: %w", err)
	}
	var users []string
	for svc, targets := range services {
		for _, t := range targets {
			if t == id || t == name {
				users = append(users, svc)
			}
		}
	}
	if len(users) > 0 {
		slices.Sort(users)
		return "", fmt.Errorf("network %s is used by service(s) %s; remove them or move them to another network first", name, strings.Join(users, ", "))
	}
	return id, nil
}

// waitRemoved waits until every node that reported the network reports it
// removed, a report it cannot read counting as not removed
// (unlistedReports).
func (st *Store) waitRemoved(ctx context.Context, name string, r Removal) error {
	poll := r.Poll
	if poll <= 0 {
		poll = 250 * time.Millisecond
	}
	deadline := time.Now().Add(r.Timeout)
	for {
		reports, err := st.Reports(ctx, name)
		if err != nil {
			return err
		}
		states := make([]NodeState, len(reports))
		listed := make(map[string]bool, len(reports))
		for i, r := range reports {
			states[i], listed[r.Owner] = r.State, true
		}
		sort.Slice(states, func(i, j int) bool { return states[i].Node < states[j].Node })
		var left, said []string
		for _, s := range states {
			if s.State == StateRemoved {
				continue
			}
			left = append(left, s.Node)
			// What its agent said last: why it cannot take its part
			// down (its teardown failed), or an error from before.
			if s.State == StateError && s.Error != "" {
				said = append(said, s.Node+" reports: "+strings.ReplaceAll(s.Error, "\n", "; "))
			}
		}
		if len(left) == 0 {
			// Only now, the rare case: a report not listed may be one
			// the token cannot read.
			hidden, why, err := st.unlistedReports(ctx, name, listed)
			if err != nil {
				return err
			}
			left, said = append(left, hidden...), append(said, why...)
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			why := ""
			for _, s := range said {
				why += "; " + s
			}
			return fmt.Errorf("network %s: node(s) %s did not take it down within %s (are their agents running?)%s; run rm again to retry; "+
				"for a node removed from the swarm for good, `underlay node rm NODE` removes its report (underlay node ls lists them)",
				name, strings.Join(left, ", "), r.Timeout, why)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(poll):
		}
	}
}

// unlistedReports reads directly the report on network name of each node
// known by its facts or its lease on name whose report is not listed
// (listed, by owner): Consul leaves out of a listing, in silence, the
// keys the token may not read, and only a direct read answering that a
// report is absent proves the node has none (kvstore.Absence). left are
// those nodes whose report cannot be read, or was written since the
// listing (listed at the next look); why says what each read answered.
func (st *Store) unlistedReports(ctx context.Context, name string, listed map[string]bool) (left, why []string, err error) {
	facts, _, err := st.ReadNodes(ctx)
	if err != nil {
		return nil, nil, err
	}
	leases, err := st.Leases(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	known := map[string]bool{}
	for _, f := range facts {
		known[strings.TrimPrefix(f.FactsKey(), NodesKVPrefix)] = true
	}
	for _, owner := range leases {
		known[owner] = true
	}
	for _, id := range slices.Sorted(maps.Keys(known)) {
		if listed[id] || id == "" || strings.Contains(id, "/") {
			continue // a key under another node's, not a report of its own
		}
		key := nodesPrefix(name) + id
		if st.absence.Gone(ctx, st.kv, nil, key) {
			continue
		}
		left = append(left, id)
		if _, _, err := st.kv.Get(ctx, key); err != nil {
			why = append(why, fmt.Sprintf("the report of %s, %s, cannot be read (%v): the token may lack read rights on it, which leaves it out of Consul's listings in silence; it counts as not removed", id, key, err))
		}
	}
	return left, why, nil
}
