package dashboard

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/underlay/underlay/internal/inventory"
	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/netspec"
)

// buildPool lays out a network's IPv4 subnet: every address that is not
// free with its state and holder, the counts per state, and the per-node
// ranges or blocks. entries are the network's inventory entries (with
// duplicates marked); ix names what holds one (holder) and the nodes of
// allocations and regions (nodeOf), as `underlay ips` does. The states follow
// `underlay ips`: an address a container holds is a task's (a duplicate
// when several hold it); of the pool's allocations the others are
// reserved (host shims), spares or leaks (allocated, no container, for
// longer than StartGrace); the network and broadcast addresses, the
// gateway and aux addresses are reserved.
func buildPool(n NetworkInput, entries []inventory.Entry, ix *index, now time.Time) Pool {
	sub := n.Spec.Subnet.Masked()
	if !sub.IsValid() || !sub.Addr().Is4() {
		return emptyPool()
	}
	size := 1 << (32 - sub.Bits())
	rng := n.Spec.Range().Masked()
	if !rng.IsValid() || !sub.Contains(rng.Addr()) || rng.Bits() < sub.Bits() {
		rng = sub
	}
	p := Pool{First: sub.Addr().String(), Size: size, Bits: sub.Bits(), Range: rng.String(), Cell: cellSize(size)}
	reserved := map[netip.Addr]string{sub.Addr(): "network address", netspec.LastAddr(sub): "broadcast address"}
	if n.Spec.Gateway.IsValid() {
		reserved[n.Spec.Gateway] = "gateway"
	}
	for name, a := range n.Spec.Aux {
		reserved[a] = "aux address " + name
	}
	p.Addresses = notFree(n, sub, reserved, entries, ix, now)
	p.Counts = counts(p.Addresses, sub, rng)
	p.Regions = regions(n, sub, ix)
	return p
}

// emptyPool is the pool of a network without one to lay out.
func emptyPool() Pool {
	return Pool{Counts: map[string]int{}, Addresses: []PoolAddress{}, Regions: []Region{}}
}

// buildPool6 lays out a network's IPv6 subnet as buildPool does its IPv4
// one, nil when it has none: the pool `underlay ips` lists too (its
// gateway is the one ipam.PoolOf gives, as Docker's default IPAM takes it
// in per-node networks), with the nodes' /80s (netspec.IPv6Ranges) or the
// cluster IPAM blocks. A /48 to /64 is too large for a map, and for JSON
// to count its free addresses: Size and Cell are 0 and Counts counts the
// addresses listed only; the rest of the 2^(128-Bits) are free.
func buildPool6(n NetworkInput, entries []inventory.Entry, ix *index, now time.Time) *Pool {
	sub := n.Spec.IPv6Subnet.Masked()
	if !sub.IsValid() || sub.Addr().Is4() {
		return nil
	}
	_, gw := ipam.PoolOf(n.Spec, true)
	reserved := map[netip.Addr]string{sub.Addr(): "network address (subnet-router anycast)", gw: "gateway"}
	p := &Pool{First: sub.Addr().String(), Bits: sub.Bits(), Range: sub.String()}
	p.Addresses = notFree(n, sub, reserved, entries, ix, now)
	p.Counts = map[string]int{StateTask: 0, StateSpare: 0, StateReserved: 0, StateLeaked: 0, StateDuplicate: 0}
	for _, a := range p.Addresses {
		p.Counts[a.State]++
	}
	p.Regions = regions(n, sub, ix)
	return p
}

// notFree lists, in address order, the addresses of sub (one family of
// network n) that are not free: reserved (by address, with what reserves
// it), the nodes' host shims, the pool's allocations (cluster IPAM), and
// those entries hold.
func notFree(n NetworkInput, sub netip.Prefix, reserved map[netip.Addr]string, entries []inventory.Entry, ix *index, now time.Time) []PoolAddress {
	addrs := map[netip.Addr]PoolAddress{}
	set := func(a netip.Addr, pa PoolAddress) {
		if sub.Contains(a) {
			pa.IP = a.String()
			addrs[a] = pa
		}
	}
	for a, what := range reserved {
		set(a, PoolAddress{State: StateReserved, Holder: what})
	}
	for _, st := range n.States {
		node, id := ix.stateLabel(st)
		for _, shim := range []netip.Addr{st.Shim, st.Shim6} {
			if shim.IsValid() {
				set(shim, PoolAddress{State: StateReserved, Holder: "host shim of " + node, Node: node, NodeID: id})
			}
		}
	}
	held := map[netip.Addr][]inventory.Entry{}
	for _, e := range entries {
		if a, err := netip.ParseAddr(e.IP); err == nil && sub.Contains(a) {
			held[a] = append(held[a], e)
		}
	}
	full := inventory.UnlistedNodes(entries)
	for _, doc := range n.Blocks {
		for s, al := range doc.Allocs {
			a, err := netip.ParseAddr(s)
			if err != nil || len(held[a]) > 0 {
				continue
			}
			node, known := ix.label(al.Node)
			pa := allocation(al, node, n.Kept.For(a, al), full[al.Node], now)
			if known {
				pa.NodeID = al.Node
			}
			set(a, pa)
		}
	}
	for a, es := range held {
		set(a, heldBy(es, ix))
	}
	out := slices.Collect(maps.Values(addrs))
	slices.SortFunc(out, func(x, y PoolAddress) int {
		return netip.MustParseAddr(x.IP).Compare(netip.MustParseAddr(y.IP))
	})
	return out
}

// StartGrace is how long an allocation held by no container counts as a
// task's, not a leak: the inventory lists running containers only, so a
// container being started holds its address before it is listed. Past
// it, one its node's agent keeps for a start under way (kept) still does.
// One dated over it ahead of now is of unknown age (its node's clock was
// set back, or a stray hand wrote it) and shows as the leak the node's
// sweep takes it for, not as a start for as long as it is ahead.
const StartGrace = 30 * time.Second

// allocation is the map entry of a cluster IPAM allocation no container
// holds; node names its node (al.Node is the node's identity). unlisted
// says its node's inventory, too big for Consul, left addresses out
// without listing them: this may be one, or a leak.
func allocation(al ipam.Alloc, node string, kept, unlisted bool, now time.Time) PoolAddress {
	pa := PoolAddress{Node: node, Since: utc(al.At)}
	switch {
	case al.Kind == ipam.KindShim:
		pa.State, pa.Holder = StateReserved, "host shim of "+node
	case al.Kind == ipam.KindSpare:
		pa.State, pa.Holder = StateSpare, "spare of "+node+": handed to its next container without waiting for Consul"
	case now.Sub(al.At) < StartGrace && al.At.Sub(now) < StartGrace || kept:
		pa.State, pa.Holder = StateTask, "allocated to "+node+" for a container being started"
	case unlisted:
		pa.State, pa.Holder = StateTask, "allocated to "+node+", not reported (its inventory is full): a container's, or a leak its node's sweep reclaims"
	default:
		// No age in the text: it would change every snapshot; the page
		// shows the age from Since.
		pa.State = StateLeaked
		pa.Holder = "allocated to " + node + ", held by no container: reclaimed after the grace period"
	}
	return pa
}

// heldBy is the map entry of an address containers hold.
func heldBy(es []inventory.Entry, ix *index) PoolAddress {
	slices.SortFunc(es, func(a, b inventory.Entry) int { return cmp.Compare(a.Node+a.Container, b.Node+b.Container) })
	pa := ix.heldAddress(es[0])
	pa.State = StateTask
	if len(es) > 1 {
		names := make([]string, len(es))
		for i, e := range es {
			names[i] = ix.holder(e)
			if _, id := ix.entryNode(e); id != pa.NodeID {
				pa.NodeID = "" // holders of several nodes: none is the node
			}
		}
		pa.State, pa.Holder = StateDuplicate, "held "+fmt.Sprint(len(es))+" times: "+strings.Join(names, "; ")
	}
	return pa
}

// counts counts the addresses per state over the whole subnet: listed
// addresses by their state, the rest free inside the range and outside
// it.
func counts(addrs []PoolAddress, sub, rng netip.Prefix) map[string]int {
	c := map[string]int{StateFree: 0, StateTask: 0, StateSpare: 0, StateReserved: 0, StateLeaked: 0, StateDuplicate: 0, StateOutside: 0}
	inRange := 0
	for _, a := range addrs {
		c[a.State]++
		if rng.Contains(netip.MustParseAddr(a.IP)) {
			inRange++
		}
	}
	size := 1 << (32 - sub.Bits())
	rangeSize := 1 << (32 - rng.Bits())
	c[StateFree] = rangeSize - inRange
	c[StateOutside] = size - rangeSize - (len(addrs) - inRange)
	return c
}

// regions are the per-node ranges (per-node IPAM) or the claimed blocks
// (cluster IPAM) of sub, one family of network n, in address order: an
// IPv6 subnet's ranges are the nodes' /80s, those of their IPv4 ranges
// (netspec.IPv6Ranges). Each names its node (ix.nodeOf): ranges and
// blocks are held by identities.
func regions(n NetworkInput, sub netip.Prefix, ix *index) []Region {
	out := []Region{}
	region := func(p netip.Prefix, holder, kind string) Region {
		r := Region{Prefix: p.String(), Kind: kind}
		if name, known := ix.label(holder); known {
			r.Node, r.NodeID = name, holder
		} else {
			r.Node = name
		}
		return r
	}
	if sub.Addr().Is4() {
		for p, node := range n.Leases {
			out = append(out, region(p, node, "range"))
		}
	} else {
		ranges := slices.Collect(maps.Keys(n.Leases))
		for i, r6 := range netspec.IPv6Ranges(n.Spec, ranges) {
			if r6.IsValid() {
				out = append(out, region(r6, n.Leases[ranges[i]], "range"))
			}
		}
	}
	for p, doc := range n.Blocks {
		if sub.Contains(p.Addr()) {
			out = append(out, region(p, doc.Node, "block"))
		}
	}
	slices.SortFunc(out, func(a, b Region) int {
		return netip.MustParsePrefix(a.Prefix).Addr().Compare(netip.MustParsePrefix(b.Prefix).Addr())
	})
	return out
}

// cellSize is how many addresses a map cell stands for: one up to a /24,
// else enough that the map has at most MaxCells cells.
func cellSize(size int) int {
	if size <= 256 {
		return 1
	}
	return max(1, size/MaxCells)
}
