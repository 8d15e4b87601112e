package inventory

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/netspec"
)

// States of an entry, as `underlay ips` prints them.
const (
	StateInUse   = "in use"
	StateGateway = "reserved: gateway"
	StateAuxPfx  = "reserved: aux " // followed by the aux address's name
	StateShim    = "reserved: host shim"
	StateSpare   = "reserved: spare"
	StateLeak    = "allocated, no container (leak: reclaimed after the grace period)"
	// StateOutside is a container's address, by a node's inventory, that
	// is outside its network's subnets, or of a family it has none of:
	// Docker gives no such address, so the inventory is stale (the
	// network was made again with another subnet) or forged.
	StateOutside = "in use by its inventory, but outside the network's subnets: a stale or forged inventory"
	// StateStarting is an address the node's agent keeps although no
	// container shows it: a container start under way there may hold it
	// (Docker shows the address only once the start is done).
	StateStarting = "allocated, no container yet (kept: a container start on its node may hold it)"
	// StateNotReported is an address its node's inventory lists without
	// its container (Entry.LeftOut): it was left out to fit Consul's
	// value limit.
	StateNotReported = "not reported (inventory full): its node lists the address only"
	// StateNetworkUnread is a container's address on a network its
	// node's agent could not read (Entry.NetworkProblem says why).
	StateNetworkUnread = "in use, its network unreadable on its node (see PROBLEM)"
	// StateUnlisted is an allocation no container's entry lists, of a
	// node whose inventory left addresses out unlisted (Entry.Unlisted):
	// one of those, or a leak, which cannot be told apart.
	StateUnlisted = "allocated, not reported (inventory full: its node left addresses out unlisted), or a leak"
)

// BadDocument is a key `ips` skips, as `ips --json` shows it: a node's
// inventory, or a key a cluster-IPAM pool skips (Pool set).
type BadDocument struct {
	// Network is set for a network spec the agents refuse, whose pool
	// is not listed.
	Network string `json:"network,omitempty"`
	Pool    string `json:"pool,omitempty"`
	Key     string `json:"key"`
	Problem string `json:"problem"`
	// Effect says what skipping it does.
	Effect string `json:"effect"`
	Fix    string `json:"fix"`
}

// PoolKV is what reading the networks and their pools needs of the KV store.
type PoolKV interface {
	netspec.KV
	ipam.KV
}

// PoolAddresses lists, for cluster-IPAM networks, what the pool holds that
// no container does: the gateway and aux addresses, shims, and allocations
// without a container (leaks awaiting reclaim, or kept for a container
// start under way on their node), with the node's name (the
// pool records its identity, facts give its name: the node facts as
// netspec.Store.ReadNodes lists them, those Load was given); and the
// pool's bad KV documents, and each pool that could not be read (the
// others are listed all the same). Inventory entries are marked in use, or, when
// their network's spec has no subnet holding their address, outside.
func PoolAddresses(ctx context.Context, kv PoolKV, inv []Entry, facts []netspec.NodeFacts) ([]Entry, []BadDocument, error) {
	l, err := netspec.NewStore(kv).ReadListing(ctx)
	if err != nil {
		return nil, nil, err
	}
	specs, bad := refusedSpecs(l)
	// By identity, as NodeNames maps them: an older agent's facts, naming
	// no ID, by its node name, which its allocations name it by.
	names := map[string]string{}
	for _, f := range facts {
		if f.Node != "" {
			names[cmp.Or(f.ID, f.Node)] = f.Node
		}
	}
	subnets := make(map[string][]netip.Prefix, len(specs))
	for _, s := range specs {
		subnets[s.Name] = []netip.Prefix{s.Subnet, s.IPv6Subnet}
	}
	for i := range inv {
		inv[i].State = inUse(inv[i], subnets)
	}
	var out []Entry
	for _, s := range specs {
		if s.IPAM != netspec.Cluster {
			continue
		}
		_, gw := ipam.PoolOf(s, false)
		out = append(out, Entry{IP: gw.String(), Network: s.Name, State: StateGateway})
		if s.IPv6Subnet.IsValid() {
			_, gw6 := ipam.PoolOf(s, true)
			out = append(out, Entry{IP: gw6.String(), Network: s.Name, State: StateGateway})
		}
		for name, a := range s.Aux {
			out = append(out, Entry{IP: a.String(), Network: s.Name, State: StateAuxPfx + name})
		}
		allocs := map[netip.Addr]ipam.Alloc{}
		kept := ipam.KeptAddrs{}
		for _, v6 := range []bool{false, true} {
			if v6 && !s.IPv6Subnet.IsValid() {
				continue
			}
			pool, _ := ipam.PoolOf(s, v6)
			c, err := ipam.Inspect(ctx, kv, pool)
			if err != nil && ctx.Err() != nil {
				return nil, nil, fmt.Errorf("read pool of %s: %w", s.Name, err)
			}
			if err != nil {
				// One pool's failed read failed the whole listing: every
				// other pool and inventory is listed, this one named.
				bad = append(bad, unreadPool(pool, err))
				continue
			}
			maps.Copy(allocs, c.Allocs)
			maps.Copy(kept, c.Kept)
			for _, b := range c.Bad {
				fix, why := b.Removal()
				bad = append(bad, BadDocument{Pool: pool.ID(), Key: b.Key, Problem: b.Err.Error() + why, Effect: b.Effect(), Fix: fix})
			}
		}
		out = append(out, AllocationEntries(s.Name, allocs, kept, inv, names)...)
	}
	return out, bad, nil
}

// unreadPool is the bad document naming pool, whose read failed with err:
// its allocations (shims, leaks, starts under way) are not listed.
func unreadPool(pool ipam.Pool, err error) BadDocument {
	return BadDocument{Pool: pool.ID(), Key: ipam.NetworkPrefix(pool.Network) + pool.Family() + "/",
		Problem: strings.ReplaceAll(err.Error(), "\n", "; "),
		Effect:  "the pool could not be read: its allocations (shims, spares, leaks, starts under way) are not listed",
		Fix:     "run underlay ips again; if it keeps failing, see Consul's log for the read of the key"}
}

// AllocationEntries lists the allocations of network's cluster-IPAM pool
// (allocs, with kept, what their nodes keep for starts under way) that no
// container's entry of inv lists: shims, spares, leaks, starts under way,
// those a node whose inventory is full may not list (StateUnlisted),
// and those whose address containers of other nodes hold (see
// heldAsAllocated), which Check then flags with them. names maps the
// allocations' nodes (identities) to node names, as the node facts give
// them; an entry names an allocation's node by its identity without one.
func AllocationEntries(network string, allocs map[netip.Addr]ipam.Alloc, kept ipam.KeptAddrs, inv []Entry, names map[string]string) []Entry {
	// held has, by address, the nodes of the containers that hold it.
	held := map[string][]nodeRef{}
	for _, e := range inv {
		if e.Network != network {
			continue
		}
		held[e.IP] = append(held[e.IP], nodeRef{name: e.Node, id: e.NodeID})
	}
	full := UnlistedNodes(inv)
	var out []Entry
	for a, al := range allocs {
		if heldAsAllocated(held[a.String()], al, names) {
			continue
		}
		e := Entry{IP: a.String(), Node: cmp.Or(names[al.Node], al.Node), Network: network, Since: al.At}
		if name := names[al.Node]; name != "" && name != al.Node {
			e.NodeID = al.Node // not an older agent's node, named by its name
		}
		switch {
		case al.Kind == ipam.KindShim:
			e.State = StateShim
		case al.Kind == ipam.KindSpare:
			e.State = StateSpare
		case kept.For(a, al):
			e.State = StateStarting
		case full[al.Node]:
			e.State = StateUnlisted
		default:
			e.State = StateLeak
		}
		out = append(out, e)
	}
	return out
}

// UnlistedNodes are the identities (swarm node IDs) of the nodes whose
// inventories in inv left addresses out unlisted (Entry.Unlisted): any
// allocation of theirs that no entry lists may be one of those. Only
// agents that write node_id leave addresses out unlisted.
func UnlistedNodes(inv []Entry) map[string]bool {
	full := map[string]bool{}
	for _, e := range inv {
		if e.Unlisted > 0 && e.NodeID != "" {
			full[e.NodeID] = true
		}
	}
	return full
}

// nodeRef is the node of a container's entry: its name, and its swarm
// node ID when the entry gives it.
type nodeRef struct{ name, id string }

// heldAsAllocated says whether allocation al is listed by the entries of
// the containers that hold its address, on the nodes in holders: some
// does, al is no host shim, and its node is one of theirs. Otherwise two
// nodes, or a host and a container, claim one address: al is listed too,
// and Check flags both. Its node is taken as theirs when it cannot be
// told apart: an allocation of no node (its node was forgotten), or of a
// node without facts (names, by identity), whose name is unknown. A
// holder whose entry gives its node's ID is its node by that ID, which
// tells apart two nodes of one name; one giving none (an older agent's),
// or an allocation naming its node by name, by name.
func heldAsAllocated(holders []nodeRef, al ipam.Alloc, names map[string]string) bool {
	if len(holders) == 0 || al.Kind == ipam.KindShim {
		return false
	}
	name := names[al.Node]
	if al.Node == "" || name == "" {
		return true
	}
	for _, h := range holders {
		if h.id == al.Node || h.name == name && (h.id == "" || al.Node == name) {
			return true
		}
	}
	return false
}

// inUse is the state of e, a container's entry, given the subnets of
// each network with a spec: in use (not reported when its inventory left
// it out), unless e's address is in none of its network's. Networks without a spec (not underlay's, or being made) are
// not judged.
func inUse(e Entry, subnets map[string][]netip.Prefix) string {
	ps, ok := subnets[e.Network]
	switch {
	case ok && Outside(e, ps):
		return StateOutside
	case e.LeftOut:
		return StateNotReported
	case e.NetworkProblem != "":
		return StateNetworkUnread
	}
	return StateInUse
}

// Outside says whether e's address is in none of subnets, its network's
// (invalid ones, a family the network lacks, hold none): Docker gives no
// such address, so e's inventory is stale or forged (StateOutside).
func Outside(e Entry, subnets []netip.Prefix) bool {
	a, err := netip.ParseAddr(e.IP)
	return err != nil || !slices.ContainsFunc(subnets, func(p netip.Prefix) bool { return p.Contains(a) })
}

// refusedSpecs parts the listing's specs: those whose pool is listed, and
// a bad document for each spec the agents refuse that may have a pool
// (cluster IPAM, or unreadable). Taken as a network's, such a pool would
// be listed from what the spec says, an invalid gateway or an overlapping
// subnet, though the IPAM plugin serves none of it.
func refusedSpecs(l *netspec.Listing) ([]netspec.Spec, []BadDocument) {
	refused := l.Refused()
	ipamOf := map[string]netspec.IPAMMode{}
	var specs []netspec.Spec
	for _, s := range l.Specs {
		ipamOf[s.Name] = s.IPAM
		if refused[s.Name] == nil {
			specs = append(specs, s)
		}
	}
	var bad []BadDocument
	for _, name := range slices.Sorted(maps.Keys(refused)) {
		if m, read := ipamOf[name]; read && m != netspec.Cluster {
			continue // no pool to list
		}
		bad = append(bad, BadDocument{Network: name, Key: netspec.KVPrefix + name + "/spec",
			Problem: strings.ReplaceAll(refused[name].Error(), "\n", "; "),
			Effect:  "its pool, if it has one, is not listed: every agent refuses the spec, and the IPAM plugin hands out no address of it",
			Fix:     netspec.RemoveFix(name) + ", or correct the spec"})
	}
	return specs, bad
}
