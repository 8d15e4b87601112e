package soak

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Container is a running container with an address on an underlay network,
// as its node's dockerd reports it.
type Container struct {
	Node    string // node name (node1, …)
	ID      string
	Name    string
	Network string
	IP      netip.Addr
	// Service is the swarm service of a task, or the name a plain container
	// registers under; empty for one that registers nothing.
	Service string
}

// Violation is an invariant found broken.
type Violation struct {
	Invariant string // "duplicate_ip", "missing", "stale", …
	Detail    string
}

func (v Violation) String() string { return v.Invariant + ": " + v.Detail }

// Duplicates finds running containers that share an IP on one network: the
// one thing underlay must never let happen, checked on every sample.
func Duplicates(cs []Container) []Violation {
	byAddr := map[string][]Container{}
	for _, c := range cs {
		if c.IP.IsValid() {
			k := c.Network + "|" + c.IP.String()
			byAddr[k] = append(byAddr[k], c)
		}
	}
	var out []Violation
	for _, k := range sortedKeys(byAddr) {
		if holders := byAddr[k]; len(holders) > 1 {
			names := make([]string, len(holders))
			for i, c := range holders {
				names[i] = c.Name + "@" + c.Node
			}
			out = append(out, Violation{"duplicate_ip", fmt.Sprintf("%s on %s held by %s", holders[0].IP, holders[0].Network, strings.Join(names, ", "))})
		}
	}
	return out
}

// Registration is a service instance in Consul's catalog that an underlay
// agent registered for a container.
type Registration struct {
	Node        string // the Consul node: the lab node it runs on
	ServiceID   string
	Service     string
	ContainerID string
	Address     netip.Addr
}

// Allocation is one address a cluster-IPAM pool records.
type Allocation struct {
	Network string
	IP      netip.Addr
	Node    string // node name (translated from the pool's node identity)
	Kind    string // "task", "shim" or "spare"
}

// HostNet is what one node has of one network: its shim link and the
// route through it.
type HostNet struct {
	Node, Network string
	Shim          netip.Addr // the shim's address; invalid when the link is missing
	Route         bool
}

// ServiceBounds is a scaled service's desired replica count and its
// bounds, and how many of its tasks run.
type ServiceBounds struct {
	Name               string
	Replicas, Min, Max int
	Running            int
}

// Settled is one observation of the whole cluster, taken when no fault is
// active and no scaling is in flight.
type Settled struct {
	Containers    []Container
	Registrations []Registration
	// Registered are the services whose containers must be in the catalog
	// (those that ask to be registered). Container.Service of a plain
	// container is the name it registers under.
	Registered []string
	// ClusterNetworks are the networks whose addresses the IPAM pool holds.
	ClusterNetworks []string
	Allocations     []Allocation
	// Networks are the underlay networks every node must carry.
	Networks []string
	Nodes    []string
	HostNets []HostNet
	Services []ServiceBounds
}

// Check returns every settled invariant that does not hold.
func Check(s Settled) []Violation {
	out := Duplicates(s.Containers)
	out = append(out, shimClashes(s)...)
	out = append(out, checkCatalog(s)...)
	out = append(out, checkAllocations(s)...)
	out = append(out, checkHosts(s)...)
	for _, b := range s.Services {
		if b.Replicas < b.Min || b.Replicas > b.Max {
			out = append(out, Violation{"bounds", fmt.Sprintf("service %s has %d replicas, outside %d..%d", b.Name, b.Replicas, b.Min, b.Max)})
		}
		if b.Running != b.Replicas {
			out = append(out, Violation{"replicas", fmt.Sprintf("service %s runs %d tasks, wants %d", b.Name, b.Running, b.Replicas)})
		}
	}
	return out
}

// shimClashes finds running containers holding the address of a node's
// host shim on their network: the host and the container then both answer
// for it, a duplicate as much as two containers' (the soak of stop 50 met
// one, seen only as a misrecorded allocation).
func shimClashes(s Settled) []Violation {
	shims := map[string][]string{}
	for _, h := range s.HostNets {
		if h.Shim.IsValid() {
			k := h.Network + "|" + h.Shim.String()
			shims[k] = append(shims[k], h.Node)
		}
	}
	var out []Violation
	for _, c := range s.Containers {
		for _, node := range shims[c.Network+"|"+c.IP.String()] {
			out = append(out, Violation{"duplicate_ip", fmt.Sprintf("%s on %s held by %s@%s and by the shim of %s", c.IP, c.Network, c.Name, c.Node, node)})
		}
	}
	return out
}

// checkCatalog: every running container of a registered service is in
// the catalog with one of its addresses, on its node; nothing else is. A
// container on several networks is listed once per address, and judged
// once: its agent registers one of them.
func checkCatalog(s Settled) []Violation {
	var out []Violation
	regs := map[string][]Registration{}
	for _, r := range s.Registrations {
		regs[r.ContainerID] = append(regs[r.ContainerID], r)
	}
	running := map[string][]Container{}
	var ids []string
	for _, c := range s.Containers {
		if !slices.Contains(s.Registered, c.Service) {
			continue
		}
		if running[c.ID] == nil {
			ids = append(ids, c.ID)
		}
		running[c.ID] = append(running[c.ID], c)
	}
	for _, id := range ids {
		cs, rs := running[id], regs[id]
		c := cs[0]
		addrs := make([]string, len(cs))
		for i, x := range cs {
			addrs[i] = x.IP.String()
		}
		switch {
		case len(rs) == 0:
			out = append(out, Violation{"missing", fmt.Sprintf("%s (%s on %s, %s) is not in the catalog", c.Name, c.Service, c.Node, strings.Join(addrs, ", "))})
		case len(rs) > 1:
			out = append(out, Violation{"registered_twice", fmt.Sprintf("%s is in the catalog %d times", c.Name, len(rs))})
		case rs[0].Node != c.Node || !slices.ContainsFunc(cs, func(x Container) bool { return x.IP == rs[0].Address }):
			out = append(out, Violation{"wrong_address", fmt.Sprintf("%s is %s on %s, the catalog says %s on %s", c.Name, strings.Join(addrs, ", "), c.Node, rs[0].Address, rs[0].Node)})
		}
	}
	for _, r := range s.Registrations {
		if running[r.ContainerID] == nil {
			out = append(out, Violation{"stale", fmt.Sprintf("%s (%s at %s on %s) has no running container", r.ServiceID, r.Service, r.Address, r.Node)})
		}
	}
	return out
}

// checkAllocations: on cluster-IPAM networks, allocations are exactly the
// running containers' addresses (kind task, the container's node), the
// nodes' shims (kind shim, the shim's node) and spares of the cluster's
// nodes.
func checkAllocations(s Settled) []Violation {
	var out []Violation
	alloc := map[string]Allocation{}
	for _, a := range s.Allocations {
		alloc[a.Network+"|"+a.IP.String()] = a
	}
	held := map[string]bool{}
	for _, c := range s.Containers {
		if !slices.Contains(s.ClusterNetworks, c.Network) {
			continue
		}
		k := c.Network + "|" + c.IP.String()
		held[k] = true
		switch a, ok := alloc[k]; {
		case !ok:
			out = append(out, Violation{"unrecorded", fmt.Sprintf("%s holds %s on %s, which the pool does not record", c.Name, c.IP, c.Network)})
		case a.Kind != "task" || a.Node != c.Node:
			out = append(out, Violation{"misrecorded", fmt.Sprintf("%s on %s holds %s of %s, recorded as %s of %s", c.Name, c.Node, c.IP, c.Network, a.Kind, a.Node)})
		}
	}
	for _, h := range s.HostNets {
		if h.Shim.IsValid() && slices.Contains(s.ClusterNetworks, h.Network) {
			k := h.Network + "|" + h.Shim.String()
			held[k] = true
			switch a, ok := alloc[k]; {
			case !ok || a.Kind != "shim":
				out = append(out, Violation{"unrecorded", fmt.Sprintf("shim %s of %s on %s is not recorded as a shim", h.Shim, h.Network, h.Node)})
			case a.Node != h.Node:
				// The pool would free it when that other node departs.
				out = append(out, Violation{"misrecorded", fmt.Sprintf("shim %s of %s on %s is recorded as shim of %s", h.Shim, h.Network, h.Node, a.Node)})
			}
		}
	}
	for _, a := range sortedAllocs(s.Allocations) {
		switch {
		case held[a.Network+"|"+a.IP.String()]:
		case a.Kind == "spare" && slices.Contains(s.Nodes, a.Node):
		case a.Kind == "spare":
			// No node of the cluster will hand it out: the leader must
			// reclaim it, as every address of a departed node.
			out = append(out, Violation{"leaked", fmt.Sprintf("%s of %s is recorded as spare of %s, not a node of the cluster", a.IP, a.Network, a.Node)})
		default:
			out = append(out, Violation{"leaked", fmt.Sprintf("%s of %s is recorded as %s of %s, but nothing holds it", a.IP, a.Network, a.Kind, a.Node)})
		}
	}
	return out
}

// checkHosts: every node has every network's shim and route.
func checkHosts(s Settled) []Violation {
	have := map[string]HostNet{}
	for _, h := range s.HostNets {
		have[h.Node+"|"+h.Network] = h
	}
	var out []Violation
	for _, n := range s.Nodes {
		for _, nw := range s.Networks {
			h, ok := have[n+"|"+nw]
			switch {
			case !ok || !h.Shim.IsValid():
				out = append(out, Violation{"shim_missing", fmt.Sprintf("%s has no shim for %s", n, nw)})
			case !h.Route:
				out = append(out, Violation{"route_missing", fmt.Sprintf("%s has no route to %s through its shim", n, nw)})
			}
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func sortedAllocs(as []Allocation) []Allocation {
	out := slices.Clone(as)
	slices.SortFunc(out, func(a, b Allocation) int {
		return cmp.Or(strings.Compare(a.Network, b.Network), a.IP.Compare(b.IP))
	})
	return out
}
