package netspec

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"
)

// specIndex finds, for a spec of a list, the others it conflicts with
// (pairConflicts), counted, and the first few of each kind of conflict,
// without visiting every other: by name, by the name of its config-only
// network, by shim name, by parent, by VLAN, and by overlapping subnet or
// IPv6 subnet. Its lists hold indexes in the list's order.
type specIndex struct {
	specs             []Spec
	shims             []string // ShimLinkName of each spec's name
	byName, byShim    map[string][]int
	byParent          map[string][]int
	byVLAN            map[vlan]map[string][]int // by parent, as spelt
	subnets, subnets6 prefixIndex
}

// vlan is a VLAN on a device, however its parent name spells the ID.
type vlan struct {
	lower string
	vid   int
}

func newSpecIndex(specs []Spec) *specIndex {
	ix := &specIndex{specs: specs, shims: make([]string, len(specs)), byName: map[string][]int{}, byShim: map[string][]int{},
		byParent: map[string][]int{}, byVLAN: map[vlan]map[string][]int{}}
	for i, s := range specs {
		ix.byName[s.Name] = append(ix.byName[s.Name], i)
		ix.shims[i] = ShimLinkName(s.Name)
		ix.byShim[ix.shims[i]] = append(ix.byShim[ix.shims[i]], i)
		ix.byParent[s.Parent] = append(ix.byParent[s.Parent], i)
		if lower, vid, ok := VLANParent(s.Parent); ok {
			v := vlan{lower, vid}
			if ix.byVLAN[v] == nil {
				ix.byVLAN[v] = map[string][]int{}
			}
			ix.byVLAN[v][s.Parent] = append(ix.byVLAN[v][s.Parent], i)
		}
		ix.subnets.add(s.Subnet, i)
		ix.subnets6.add(s.IPv6Subnet, i)
	}
	ix.subnets.sort()
	ix.subnets6.sort()
	return ix
}

// conflicts are the i-th spec's conflicts with the others, as
// conflictsIn finds them. The others of its name conflict with it by name
// only, so each kind's count is its list's length less those of its
// name, and its first are found skipping them: with names unique (as
// stored in KV, a key each), the work is near the same for a spec with
// thousands of conflicts as for one with none.
func (ix *specIndex) conflicts(i int) *conflicts {
	s := ix.specs[i]
	same := ix.byName[s.Name] // i among them
	other := func(j int) bool { return ix.specs[j].Name != s.Name }
	sameCount := func(f func(o Spec) bool) int {
		n := 0
		for _, j := range same {
			if f(ix.specs[j]) {
				n++
			}
		}
		return n
	}
	c := &conflicts{}
	c[nameTaken] = conflict{n: len(same) - 1}
	if base, ok := strings.CutSuffix(s.Name, ConfigNetworkName("")); ok {
		c[nameConfig] = firstOf(slices.Values(ix.byName[base]), other, len(ix.byName[base]))
	}
	taken := ix.byName[ConfigNetworkName(s.Name)]
	c[configTaken] = firstOf(slices.Values(taken), other, len(taken))
	c[subnetOverlap] = firstOf(ix.subnets.overlapping(s.Subnet), other,
		ix.subnets.count(s.Subnet)-sameCount(func(o Spec) bool { return o.Subnet.Overlaps(s.Subnet) }))
	if s.IPv6Subnet.IsValid() {
		c[subnet6Overlap] = firstOf(ix.subnets6.overlapping(s.IPv6Subnet), other,
			ix.subnets6.count(s.IPv6Subnet)-sameCount(func(o Spec) bool { return o.IPv6Subnet.Overlaps(s.IPv6Subnet) }))
	}
	parent := ix.byParent[s.Parent]
	c[parentTaken] = firstOf(slices.Values(parent), other, len(parent)-sameCount(func(o Spec) bool { return o.Parent == s.Parent }))
	if lower, vid, ok := VLANParent(s.Parent); ok {
		// Its other spellings (at most four: the ID has up to four
		// digits), each list's first merged.
		var first []int
		n := 0
		for p, js := range ix.byVLAN[vlan{lower, vid}] {
			if p != s.Parent {
				first = append(first, firstOf(slices.Values(js), other, 0).first...)
				n += len(js)
			}
		}
		slices.Sort(first)
		n -= sameCount(func(o Spec) bool {
			ol, ov, ook := VLANParent(o.Parent)
			return o.Parent != s.Parent && ook && ol == lower && ov == vid
		})
		c[vlanTaken] = conflict{first: first[:min(len(first), maxNamed)], n: n}
	}
	shim := ix.byShim[ix.shims[i]]
	c[shimTaken] = firstOf(slices.Values(shim), other, len(shim)-len(same))
	return c
}

// firstOf is the conflict of n networks whose first are the first of
// seq that keep holds (at most maxNamed).
func firstOf(seq func(yield func(int) bool), keep func(int) bool, n int) conflict {
	c := conflict{n: n}
	for j := range seq {
		if len(c.first) == maxNamed {
			break
		}
		if keep(j) {
			c.first = append(c.first, j)
		}
	}
	return c
}

// prefixIndex finds the prefixes of a list that overlap one: those that
// hold it, by looking up each of its shorter prefixes, and those it
// holds, in a list sorted by address.
type prefixIndex struct {
	byPrefix map[netip.Prefix][]int // by masked prefix
	sorted   []indexedPrefix        // by address, then length, then index
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
		return cmp.Or(a.p.Addr().Compare(b.p.Addr()), cmp.Compare(a.p.Bits(), b.p.Bits()), cmp.Compare(a.i, b.i))
	})
}

// count is how many prefixes overlap p (netip.Prefix.Overlaps): of one
// family, and one holding the other.
func (x *prefixIndex) count(p netip.Prefix) int {
	if !p.IsValid() || len(x.sorted) == 0 {
		return 0
	}
	p = p.Masked()
	n := 0
	for b := range p.Bits() + 1 {
		outer, _ := p.Addr().Prefix(b)
		n += len(x.byPrefix[outer])
	}
	lo, hi := x.held(p)
	return n + hi - lo
}

// overlapping yields the indexes of the prefixes that overlap p, by
// address, then length, then index: those that hold p (p itself among
// them), then those it holds.
func (x *prefixIndex) overlapping(p netip.Prefix) func(yield func(int) bool) {
	return func(yield func(int) bool) {
		if !p.IsValid() || len(x.sorted) == 0 {
			return
		}
		p := p.Masked()
		for b := range p.Bits() + 1 {
			outer, _ := p.Addr().Prefix(b)
			for _, i := range x.byPrefix[outer] {
				if !yield(i) {
					return
				}
			}
		}
		lo, hi := x.held(p)
		for _, e := range x.sorted[lo:hi] {
			if !yield(e.i) {
				return
			}
		}
	}
}

// held is where sorted holds the prefixes that masked p holds and is
// not: longer, from its address to its last. (A shorter or equal prefix
// from its address to its last starts at its address, being aligned at
// least as p is, and sorts before the longer.)
func (x *prefixIndex) held(p netip.Prefix) (lo, hi int) {
	lo, _ = slices.BinarySearchFunc(x.sorted, p, func(e indexedPrefix, p netip.Prefix) int {
		if c := e.p.Addr().Compare(p.Addr()); c != 0 {
			return c
		}
		if e.p.Bits() <= p.Bits() {
			return -1
		}
		return 1
	})
	last := LastAddr(p)
	hi, _ = slices.BinarySearchFunc(x.sorted, last, func(e indexedPrefix, last netip.Addr) int {
		if e.p.Addr().Compare(last) <= 0 {
			return -1
		}
		return 1
	})
	return lo, hi
}
