package netspec

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"
)

// specIndex finds, for a spec of a list, the others checkPair may find
// a conflict with, without comparing it with every other: by name, by
// the name of its config-only network, by shim name, by parent, by
// VLAN, and by overlapping subnet or IPv6 subnet.
type specIndex struct {
	specs             []Spec
	byName, byShim    map[string][]int
	byParent          map[string][]int
	byVLAN            map[vlan][]int
	subnets, subnets6 prefixIndex
}

// vlan is a VLAN on a device, however its parent name spells the ID.
type vlan struct {
	lower string
	vid   int
}

func newSpecIndex(specs []Spec) *specIndex {
	ix := &specIndex{specs: specs, byName: map[string][]int{}, byShim: map[string][]int{},
		byParent: map[string][]int{}, byVLAN: map[vlan][]int{}}
	for i, s := range specs {
		ix.byName[s.Name] = append(ix.byName[s.Name], i)
		shim := ShimLinkName(s.Name)
		ix.byShim[shim] = append(ix.byShim[shim], i)
		ix.byParent[s.Parent] = append(ix.byParent[s.Parent], i)
		if lower, vid, ok := VLANParent(s.Parent); ok {
			v := vlan{lower, vid}
			ix.byVLAN[v] = append(ix.byVLAN[v], i)
		}
		ix.subnets.add(s.Subnet, i)
		ix.subnets6.add(s.IPv6Subnet, i)
	}
	ix.subnets.sort()
	ix.subnets6.sort()
	return ix
}

// related returns, in order, the indexes of the specs other than the
// i-th that share something checkPair compares with it.
func (ix *specIndex) related(i int) []int {
	s := ix.specs[i]
	var out []int
	out = append(out, ix.byName[s.Name]...)
	if base, ok := strings.CutSuffix(s.Name, ConfigNetworkName("")); ok {
		out = append(out, ix.byName[base]...)
	}
	out = append(out, ix.byName[ConfigNetworkName(s.Name)]...)
	out = append(out, ix.byShim[ShimLinkName(s.Name)]...)
	out = append(out, ix.byParent[s.Parent]...)
	if lower, vid, ok := VLANParent(s.Parent); ok {
		out = append(out, ix.byVLAN[vlan{lower, vid}]...)
	}
	out = ix.subnets.overlapping(s.Subnet, out)
	out = ix.subnets6.overlapping(s.IPv6Subnet, out)
	slices.Sort(out)
	out = slices.Compact(out)
	if k, found := slices.BinarySearch(out, i); found {
		out = slices.Delete(out, k, k+1)
	}
	return out
}

// prefixIndex finds the prefixes of a list that overlap one: those that
// hold it, by looking up each of its shorter prefixes, and those it
// holds, in a list sorted by address.
type prefixIndex struct {
	byPrefix map[netip.Prefix][]int // by masked prefix
	sorted   []indexedPrefix        // by address, then length
}

type indexedPrefix struct {
	p netip.Prefix // masked
	i int
}

func (x *prefixIndex) add(p netip.Prefix, i int) {
	if !p.IsValid() {
		return // overlaps nothing
	}
	p = p.Masked() // Overlaps compares prefixes as masked
	if x.byPrefix == nil {
		x.byPrefix = map[netip.Prefix][]int{}
	}
	x.byPrefix[p] = append(x.byPrefix[p], i)
	x.sorted = append(x.sorted, indexedPrefix{p, i})
}

func (x *prefixIndex) sort() {
	slices.SortFunc(x.sorted, func(a, b indexedPrefix) int {
		return cmp.Or(a.p.Addr().Compare(b.p.Addr()), cmp.Compare(a.p.Bits(), b.p.Bits()))
	})
}

// overlapping appends to out the indexes of the prefixes that overlap p
// (netip.Prefix.Overlaps): of one family, and one holding the other.
func (x *prefixIndex) overlapping(p netip.Prefix, out []int) []int {
	if !p.IsValid() || len(x.sorted) == 0 {
		return out
	}
	p = p.Masked()
	for b := range p.Bits() + 1 {
		outer, _ := p.Addr().Prefix(b)
		out = append(out, x.byPrefix[outer]...)
	}
	last := LastAddr(p)
	k, _ := slices.BinarySearchFunc(x.sorted, p.Addr(), func(e indexedPrefix, a netip.Addr) int { return e.p.Addr().Compare(a) })
	for ; k < len(x.sorted) && x.sorted[k].p.Addr().Compare(last) <= 0; k++ {
		out = append(out, x.sorted[k].i)
	}
	return out
}
