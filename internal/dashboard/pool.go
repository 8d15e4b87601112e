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
// duplicates marked); holder names what holds one. The states follow
// `underlay ips`: an address a container holds is a task's (a duplicate
// when several hold it); of the pool's allocations the others are
// reserved (host shims), spares or leaks (allocated, no container, for
// longer than StartGrace); the network and broadcast addresses, the
// gateway and aux addresses are reserved.
func buildPool(n NetworkInput, entries []inventory.Entry, holder func(inventory.Entry) string, now time.Time) Pool {
	sub := n.Spec.Subnet.Masked()
	if !sub.IsValid() || !sub.Addr().Is4() {
		return Pool{Counts: map[string]int{}, Addresses: []PoolAddress{}, Regions: []Region{}}
	}
	size := 1 << (32 - sub.Bits())
	rng := n.Spec.Range().Masked()
	if !rng.IsValid() || !sub.Contains(rng.Addr()) || rng.Bits() < sub.Bits() {
		rng = sub
	}
	p := Pool{First: sub.Addr().String(), Size: size, Range: rng.String(), Cell: cellSize(size)}
	addrs := map[netip.Addr]PoolAddress{}
	set := func(a netip.Addr, pa PoolAddress) {
		if sub.Contains(a) {
			pa.IP = a.String()
			addrs[a] = pa
		}
	}
	set(sub.Addr(), PoolAddress{State: StateReserved, Holder: "network address"})
	set(netspec.LastAddr(sub), PoolAddress{State: StateReserved, Holder: "broadcast address"})
	if n.Spec.Gateway.IsValid() {
		set(n.Spec.Gateway, PoolAddress{State: StateReserved, Holder: "gateway"})
	}
	for name, a := range n.Spec.Aux {
		set(a, PoolAddress{State: StateReserved, Holder: "aux address " + name})
	}
	for _, st := range n.States {
		if st.Shim.IsValid() {
			set(st.Shim, PoolAddress{State: StateReserved, Holder: "host shim of " + st.Node, Node: st.Node})
		}
	}
	held := map[netip.Addr][]inventory.Entry{}
	for _, e := range entries {
		if a, err := netip.ParseAddr(e.IP); err == nil && a.Is4() {
			held[a] = append(held[a], e)
		}
	}
	for _, doc := range n.Blocks {
		for s, al := range doc.Allocs {
			a, err := netip.ParseAddr(s)
			if err != nil || len(held[a]) > 0 {
				continue
			}
			set(a, allocation(al, n.Kept.For(a, al), now))
		}
	}
	for a, es := range held {
		set(a, heldBy(es, holder))
	}
	p.Addresses = slices.Collect(maps.Values(addrs))
	slices.SortFunc(p.Addresses, func(x, y PoolAddress) int {
		return netip.MustParseAddr(x.IP).Compare(netip.MustParseAddr(y.IP))
	})
	p.Counts = counts(p.Addresses, sub, rng)
	p.Regions = regions(n)
	return p
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
// holds.
func allocation(al ipam.Alloc, kept bool, now time.Time) PoolAddress {
	pa := PoolAddress{Node: al.Node, Since: utc(al.At)}
	switch {
	case al.Kind == ipam.KindShim:
		pa.State, pa.Holder = StateReserved, "host shim of "+al.Node
	case al.Kind == ipam.KindSpare:
		pa.State, pa.Holder = StateSpare, "spare of "+al.Node+": handed to its next container without waiting for Consul"
	case now.Sub(al.At) < StartGrace && al.At.Sub(now) < StartGrace || kept:
		pa.State, pa.Holder = StateTask, "allocated to "+al.Node+" for a container being started"
	default:
		// No age in the text: it would change every snapshot; the page
		// shows the age from Since.
		pa.State = StateLeaked
		pa.Holder = "allocated to " + al.Node + ", held by no container: reclaimed after the grace period"
	}
	return pa
}

// heldBy is the map entry of an address containers hold.
func heldBy(es []inventory.Entry, holder func(inventory.Entry) string) PoolAddress {
	slices.SortFunc(es, func(a, b inventory.Entry) int { return cmp.Compare(a.Node+a.Container, b.Node+b.Container) })
	e := es[0]
	pa := PoolAddress{State: StateTask, Holder: holder(e), Node: e.Node, Task: e.Task, MAC: e.MAC, Since: utc(e.Since)}
	if len(es) > 1 {
		names := make([]string, len(es))
		for i, e := range es {
			names[i] = holder(e)
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
// (cluster IPAM), in address order.
func regions(n NetworkInput) []Region {
	out := []Region{}
	for p, node := range n.Leases {
		out = append(out, Region{Prefix: p.String(), Node: node, Kind: "range"})
	}
	for p, doc := range n.Blocks {
		out = append(out, Region{Prefix: p.String(), Node: doc.Node, Kind: "block"})
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
