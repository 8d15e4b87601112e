package netspec

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"math/bits"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/underlay/underlay/internal/termtext"
)

// IPAMMode says who hands out container addresses.
type IPAMMode string

const (
	// PerNode leases each node a range of the subnet; Docker's default
	// IPAM allocates within it, as the manual guide does by hand.
	PerNode IPAMMode = "per-node"
	// Cluster uses underlay's cluster-wide IPAM driver for one shared pool.
	Cluster IPAMMode = "cluster"
)

// DefaultPerNodeSize is the number of addresses leased to a node when
// --per-node-size is not given.
const DefaultPerNodeSize = 64

// Spec is a cluster network's desired state, as stored in Consul KV.
type Spec struct {
	Name    string       `json:"name"`
	Subnet  netip.Prefix `json:"subnet"`
	Gateway netip.Addr   `json:"gateway"`
	// Parent is the host interface macvlan (or ipvlan) endpoints hang off,
	// on every node. A name like bond0.40 is VLAN 40 on bond0: agents make
	// it where it is missing.
	Parent string `json:"parent"`
	// Driver is macvlan (also when empty) or ipvlan.
	Driver string `json:"driver,omitempty"`
	// IPvlanMode is l2 (also when empty) or l3, for ipvlan.
	IPvlanMode string `json:"ipvlan_mode,omitempty"`
	// IPRange limits container addresses; the zero value means the subnet.
	IPRange netip.Prefix `json:"ip_range,omitzero"`
	// Aux are addresses of the subnet that must never be given out.
	Aux  map[string]netip.Addr `json:"aux,omitempty"`
	IPAM IPAMMode              `json:"ipam"`
	// PerNodeSize is how many addresses each node leases (per-node mode),
	// a power of two.
	PerNodeSize int          `json:"per_node_size,omitempty"`
	IPv6Subnet  netip.Prefix `json:"ipv6_subnet,omitzero"`
	// Deleting asks every node to take its part of the network apart.
	Deleting bool `json:"deleting,omitempty"`
}

// Range is the range containers draw from: IPRange, or the whole subnet.
func (s Spec) Range() netip.Prefix {
	if s.IPRange.IsValid() {
		return s.IPRange
	}
	return s.Subnet
}

var (
	nameRE   = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,47}$`)
	parentRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.@-]{0,14}$`)
	auxRE    = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)
)

// IsNetworkName reports whether name is one a network can have.
func IsNetworkName(name string) bool { return nameRE.MatchString(name) }

// Validate checks s on its own and against the networks that already
// exist, returning every problem found, each naming the bad value. A kind
// of conflict (a subnet overlapping, a parent taken) is one problem,
// naming the first networks it is with (see maxNamed) and counting the
// others.
func Validate(s Spec, existing []Spec) error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if checkOwn(s, bad) {
		conflictsIn(s, existing).report(s, existing, bad)
	}
	return errors.Join(errs...)
}

// checkOwn checks s on its own, calling bad for each problem. It returns
// false when s's subnet is not one to compare with other networks'.
func checkOwn(s Spec, bad func(string, ...any)) bool {
	if !nameRE.MatchString(s.Name) {
		bad("network name %s: want 1 to 48 letters, digits, '_', '.' or '-', starting with a letter or digit", termtext.Q(s.Name))
	}
	switch {
	case strings.HasPrefix(s.Parent, ".") && vlanNameProblem(s.Parent) != "":
		// Read as a VLAN of no device (.40), as Docker's drivers read it.
		bad("parent %s: %s", termtext.Q(s.Parent), vlanNameProblem(s.Parent))
	case !parentRE.MatchString(s.Parent):
		bad("parent %s: not an interface name (at most 15 characters)", termtext.Q(s.Parent))
	case vlanNameProblem(s.Parent) != "":
		bad("parent %q: %s", s.Parent, vlanNameProblem(s.Parent))
	case s.Parent == "lo" || onLoopback(s.Parent):
		// The kernel makes no macvlan, ipvlan or VLAN link on it: every
		// node would fail, having set it promiscuous.
		bad("parent %q: the loopback device carries no macvlan, ipvlan or VLAN links; give the interface (or VLAN) of the network's LAN", s.Parent)
	case IsShimLinkName(s.Parent):
		// Every node would refuse it: a shim's removal would take the
		// network's endpoints with it.
		bad("parent %q: named as underlay's host shims are (ul- and 8 hex digits); give the interface (or VLAN) the network hangs off", s.Parent)
	default:
		if lower, _, ok := VLANParent(s.Parent); ok && IsShimLinkName(lower) {
			bad("parent %q: a VLAN on %s, named as underlay's host shims are (ul- and 8 hex digits); give a VLAN of the interface the network hangs off", s.Parent, lower)
		}
	}
	checkDriver(s, bad)
	switch s.IPAM {
	case PerNode, Cluster:
	default:
		bad("ipam %s: want per-node or cluster", termtext.Q(string(s.IPAM)))
	}
	if !validSubnet4(s.Subnet, bad) {
		return false
	}
	checkGateway(s, bad)
	if s.IPRange.IsValid() {
		switch {
		case !s.IPRange.Addr().Is4():
			bad("ip range %s: want an IPv4 CIDR", s.IPRange)
		case s.IPRange != s.IPRange.Masked():
			bad("ip range %s: not a network address; did you mean %s?", s.IPRange, s.IPRange.Masked())
		case !contains(s.Subnet, s.IPRange):
			bad("ip range %s is not inside subnet %s", s.IPRange, s.Subnet)
		}
	}
	if s.IPAM == Cluster && contains(s.Subnet, s.Range()) && freeCount(s.Range(), s.reserved(), 2) < 2 {
		// Each node's host shim takes an address of the pool: with fewer
		// than two, no node has one left for a container.
		bad("range %s keeps fewer than two addresses free (network and broadcast addresses, gateway and aux addresses are reserved): a node's host shim takes one, its containers need more", s.Range())
	}
	checkAux(s, bad)
	if s.IPAM == PerNode && s.Range().Addr().Is4() {
		checkPerNodeSize(s, bad)
	}
	if s.IPv6Subnet.IsValid() {
		checkIPv6(s.IPv6Subnet, bad)
	}
	return true
}

// conflictKind is a way two networks conflict: each kind is one problem
// of a spec, however many networks it conflicts with that way.
type conflictKind int

const (
	nameTaken   conflictKind = iota // the other has s's name
	nameConfig                      // s's name is the other's config-only network's
	configTaken                     // the other's name is s's config-only network's
	subnetOverlap
	subnet6Overlap
	parentTaken
	vlanTaken // the other's parent is s's VLAN, spelt otherwise
	shimTaken
	numConflictKinds
)

// maxNamed is how many networks a conflict names; the others are
// counted. A spec written past `network create` may conflict with every
// other (one parent for all): naming each would make every spec's error
// as long as the list, at every sync of every agent.
const maxNamed = 3

// conflict is the networks a spec conflicts with in one way, as indexes
// of a list: the first (at most maxNamed; in order of subnet, then of the
// list, for overlapping subnets; else in the list's order) and how many.
type conflict struct {
	first []int
	n     int
}

type conflicts [numConflictKinds]conflict

// pairConflicts calls add for each way s conflicts with the network o.
// specIndex.conflicts must find the same.
func pairConflicts(s, o Spec, add func(conflictKind)) {
	if o.Name == s.Name {
		add(nameTaken)
		return
	}
	// Docker would hold two networks of one name: looking either up
	// by name fails as ambiguous, which stops the agents' sync and
	// removal of the other network.
	if s.Name == ConfigNetworkName(o.Name) {
		add(nameConfig)
	}
	if o.Name == ConfigNetworkName(s.Name) {
		add(configTaken)
	}
	if o.Subnet.Overlaps(s.Subnet) {
		add(subnetOverlap)
	}
	if s.IPv6Subnet.IsValid() && o.IPv6Subnet.IsValid() && o.IPv6Subnet.Overlaps(s.IPv6Subnet) {
		add(subnet6Overlap)
	}
	if o.Parent == s.Parent {
		add(parentTaken)
	} else if lower, vid, ok := VLANParent(s.Parent); ok {
		// bond0.40 and bond0.040 are one VLAN: the kernel makes one
		// link of a VLAN per device, so no node could make the other.
		if ol, ov, ook := VLANParent(o.Parent); ook && ol == lower && ov == vid {
			add(vlanTaken)
		}
	}
	// Shim names are a 32-bit hash of the network's name: two networks
	// with one name would replace each other's shim at every sync, and
	// removing either would delete the other's.
	if ShimLinkName(s.Name) == ShimLinkName(o.Name) {
		add(shimTaken)
	}
}

// conflictsIn compares s with each of existing.
func conflictsIn(s Spec, existing []Spec) *conflicts {
	var all [numConflictKinds][]int
	for j, o := range existing {
		pairConflicts(s, o, func(k conflictKind) { all[k] = append(all[k], j) })
	}
	bySubnet := func(subnet func(Spec) netip.Prefix) func(i, j int) int {
		return func(i, j int) int {
			a, b := subnet(existing[i]).Masked(), subnet(existing[j]).Masked()
			return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()), cmp.Compare(i, j))
		}
	}
	slices.SortFunc(all[subnetOverlap], bySubnet(func(o Spec) netip.Prefix { return o.Subnet }))
	slices.SortFunc(all[subnet6Overlap], bySubnet(func(o Spec) netip.Prefix { return o.IPv6Subnet }))
	c := &conflicts{}
	for k, js := range all {
		c[k] = conflict{first: js[:min(len(js), maxNamed)], n: len(js)}
	}
	return c
}

// report calls bad once for each kind of conflict of s with the networks
// of specs that c holds.
func (c *conflicts) report(s Spec, specs []Spec, bad func(string, ...any)) {
	one := func(k conflictKind) Spec { return specs[c[k].first[0]] }
	if c[nameTaken].n > 0 {
		bad("network %s already exists", termtext.Q(s.Name))
	}
	if c[nameConfig].n > 0 {
		bad("network name %s is the name of network %s's config-only network: choose another name", termtext.Q(s.Name), termtext.Q(one(nameConfig).Name))
	}
	if c[configTaken].n > 0 {
		o := one(configTaken)
		bad("network %s's config-only network would be named %s, as network %s is: choose another name", termtext.Q(s.Name), o.Name, termtext.Q(o.Name))
	}
	if c[subnetOverlap].n > 0 {
		bad("subnet %s overlaps %s", s.Subnet, c[subnetOverlap].networks(specs, func(o Spec) string { return fmt.Sprintf("%s (%s)", termtext.Q(o.Name), o.Subnet) }))
	}
	if c[subnet6Overlap].n > 0 {
		bad("IPv6 subnet %s overlaps %s", s.IPv6Subnet, c[subnet6Overlap].networks(specs, func(o Spec) string { return fmt.Sprintf("%s (%s)", termtext.Q(o.Name), o.IPv6Subnet) }))
	}
	quoted := func(o Spec) string { return strconv.Quote(o.Name) }
	if c[parentTaken].n > 0 {
		bad("parent %s already carries %s: Docker allows one macvlan or ipvlan network per parent interface", s.Parent, c[parentTaken].networks(specs, quoted))
	}
	if v := c[vlanTaken]; v.n > 0 {
		lower, vid, _ := VLANParent(s.Parent)
		const why = "a device carries one link per VLAN, and Docker one network per parent"
		if o := one(vlanTaken); v.n == 1 {
			bad("parent %s is VLAN %d on %s, as network %s's parent %s is: "+why, s.Parent, vid, lower, termtext.Q(o.Name), o.Parent)
		} else {
			bad("parent %s is VLAN %d on %s, as the parents of %s are: "+why, s.Parent, vid, lower,
				v.networks(specs, func(o Spec) string { return fmt.Sprintf("%s (%s)", termtext.Q(o.Name), o.Parent) }))
		}
	}
	if c[shimTaken].n == 1 {
		bad("host shim link %s is also network %s's (the names hash alike): choose another name", ShimLinkName(s.Name), termtext.Q(one(shimTaken).Name))
	} else if c[shimTaken].n > 1 {
		bad("host shim link %s is also the shim of %s (the names hash alike): choose another name", ShimLinkName(s.Name), c[shimTaken].networks(specs, quoted))
	}
}

// networks names the networks of c, each as item says, and counts those
// past the first: `network "a"`, `networks "a", "b" and "c"`, `networks
// "a", "b", "c" and 7 others`.
func (c conflict) networks(specs []Spec, item func(Spec) string) string {
	if c.n == 1 {
		return "network " + item(specs[c.first[0]])
	}
	named := make([]string, len(c.first))
	for i, j := range c.first {
		named[i] = item(specs[j])
	}
	switch more := c.n - len(named); more {
	case 0:
		return "networks " + strings.Join(named[:len(named)-1], ", ") + " and " + named[len(named)-1]
	case 1:
		return "networks " + strings.Join(named, ", ") + " and 1 other"
	default:
		return fmt.Sprintf("networks %s and %d others", strings.Join(named, ", "), more)
	}
}

// onLoopback reports whether parent is a VLAN on the loopback device.
func onLoopback(parent string) bool {
	lower, _, ok := VLANParent(parent)
	return ok && lower == "lo"
}

func validSubnet4(p netip.Prefix, bad func(string, ...any)) bool {
	switch {
	case !p.IsValid():
		bad("subnet: missing or not a CIDR")
	case !p.Addr().Is4():
		bad("subnet %s: want an IPv4 CIDR (give IPv6 with --ipv6-subnet)", p)
	case p != p.Masked():
		bad("subnet %s: not a network address; did you mean %s?", p, p.Masked())
	case p.Bits() > 30:
		bad("subnet %s: too small for a gateway and containers; use /30 or larger", p)
	case p.Bits() == 0:
		// Each node routes its part of the subnet through its shim: the
		// whole of it would replace the host's default route.
		bad("subnet %s: every address, not a LAN's subnet", p)
	case specialOverlap(p, special4) != "":
		bad("subnet %s: overlaps %s, which no LAN's containers can have", p, specialOverlap(p, special4))
	default:
		return true
	}
	return false
}

func checkGateway(s Spec, bad func(string, ...any)) {
	switch {
	case !s.Gateway.IsValid():
		bad("gateway: missing or not an IP address")
	case !s.Subnet.Contains(s.Gateway):
		bad("gateway %s is outside subnet %s", s.Gateway, s.Subnet)
	case s.Gateway == s.Subnet.Addr() || s.Gateway == LastAddr(s.Subnet):
		bad("gateway %s is the network or broadcast address of %s", s.Gateway, s.Subnet)
	}
}

// MaxAuxName is the longest aux address name taken, in bytes, and MaxAux
// the most aux addresses a network may have. Docker bounds neither, but
// every aux address goes to docker on every node, and the spec to Consul
// (512 KiB a value). Hand-written names are short (router, vrrp-backup;
// a host name label has at most 63 bytes), and 1024 addresses are all of
// a /22: a list that long is better an --ip-range that leaves them out.
const (
	MaxAuxName = 64
	MaxAux     = 1024
)

func checkAux(s Spec, bad func(string, ...any)) {
	seen := map[netip.Addr]string{}
	names := slices.Sorted(maps.Keys(s.Aux))
	if len(names) > MaxAux {
		bad("%d aux addresses: a network may have at most %d (an --ip-range can leave a block of addresses out); the first %d by name are checked", len(names), MaxAux, MaxAux)
		names = names[:MaxAux] // each may be a problem of its own
	}
	for _, name := range names {
		ip := s.Aux[name]
		switch {
		case len(name) > MaxAuxName:
			bad("aux address name %s: %d bytes, longer than the %d an aux address name may have", termtext.QuoteShort(name, MaxAuxName), len(name), MaxAuxName)
		case !auxRE.MatchString(name) || strings.HasPrefix(name, reservedAuxPrefix):
			bad("aux address name %s: want letters, digits, '_', '.' or '-', not starting with %q", termtext.Q(name), reservedAuxPrefix)
		case !s.Subnet.Contains(ip):
			bad("aux address %s=%s is outside subnet %s", name, ip, s.Subnet)
		case ip == s.Gateway:
			bad("aux address %s=%s is the gateway", name, ip)
		case seen[ip] != "":
			bad("aux address %s=%s is also %s", name, ip, seen[ip])
		}
		seen[ip] = name
	}
}

func checkPerNodeSize(s Spec, bad func(string, ...any)) {
	n := s.PerNodeSize
	rng := s.Range()
	total := 1 << (32 - rng.Bits())
	switch {
	case n < 4 || bits.OnesCount(uint(n)) != 1:
		bad("per-node size %d: want a power of two, at least 4", n)
	case n > total:
		bad("per-node size %d is larger than the range %s (%d addresses): not even one node fits", n, rng, total)
	case total/n <= len(s.reserved()) && len(Blocks(s)) == 0:
		// (With more ranges than reserved addresses, one holds none.)
		// No node could lease a range: each reported "all 0 ranges … are
		// leased".
		bad("per-node size %d: no range of %s keeps two addresses free, one for a node's host shim and one for a container, beside the network and broadcast addresses, gateway and aux addresses", n, rng)
	}
}

func checkIPv6(p netip.Prefix, bad func(string, ...any)) {
	switch {
	case !p.Addr().Is6() || p.Addr().Is4In6():
		bad("IPv6 subnet %s: want an IPv6 CIDR", p)
	case p != p.Masked():
		bad("IPv6 subnet %s: not a network address; did you mean %s?", p, p.Masked())
	case p.Bits() > 64 || p.Bits() < 48:
		bad("IPv6 subnet %s: want a prefix between /48 and /64, so every node gets its own /80", p)
	case specialOverlap(p, special6) != "":
		bad("IPv6 subnet %s: overlaps %s, which no LAN's containers can have", p, specialOverlap(p, special6))
	}
}

// specialRange is a range of addresses no LAN hands out: every node
// would route its part of a subnet overlapping one through its host shim
// (127.0.0.0/8's part still to lo, the link-local /80s away from the
// host's links, 169.254.169.254, cloud metadata, to a container), and
// Docker would give its containers addresses no router forwards.
type specialRange struct {
	prefix netip.Prefix
	what   string
}

var (
	special4 = []specialRange{
		{netip.MustParsePrefix("0.0.0.0/8"), `"this network", no host's address`},
		{netip.MustParsePrefix("127.0.0.0/8"), "the loopback addresses"},
		{netip.MustParsePrefix("169.254.0.0/16"), "the link-local addresses"},
		{netip.MustParsePrefix("224.0.0.0/4"), "the multicast addresses"},
	}
	special6 = []specialRange{
		{netip.MustParsePrefix("::/127"), "the unspecified and loopback addresses"},
		{netip.MustParsePrefix("::ffff:0:0/96"), "the IPv4-mapped addresses"},
		{netip.MustParsePrefix("fe80::/10"), "the link-local addresses"},
		{netip.MustParsePrefix("ff00::/8"), "the multicast addresses"},
	}
)

// specialOverlap names the first of ranges that p overlaps, "" for none.
func specialOverlap(p netip.Prefix, ranges []specialRange) string {
	for _, r := range ranges {
		if p.Overlaps(r.prefix) {
			return r.prefix.String() + ", " + r.what
		}
	}
	return ""
}

// contains reports whether inner lies wholly inside outer.
func contains(outer, inner netip.Prefix) bool {
	return inner.Bits() >= outer.Bits() && outer.Contains(inner.Addr())
}

// LastAddr is the last address of a prefix, IPv4 (its broadcast address)
// or IPv6.
func LastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As16()
	for i := p.Bits() + 128 - p.Addr().BitLen(); i < 128; i++ {
		a[i/8] |= 0x80 >> (i % 8)
	}
	if p.Addr().Is4() {
		return netip.AddrFrom16(a).Unmap()
	}
	return netip.AddrFrom16(a)
}

// CheckStored validates specs read from KV exactly as `network create`
// validated them before storing: each on its own and against the others
// (a spec written past `network create`, by hand or by a bug, may break
// either; of two that overlap, both are refused). A spec being deleted
// needs only a valid name: taking a network apart touches only what is
// named after it. It returns the problems by network name.
//
// Each spec's conflicts are looked up in an index (specIndex), counted
// and only the first few visited, which gives what comparing it with
// every other would (Validate): it runs at every sync of every agent, and
// pairs of thousands of specs cost seconds, even when all conflict (one
// parent written for all).
func CheckStored(specs []Spec) map[string]error {
	out := map[string]error{}
	ix := newSpecIndex(specs)
	for i, s := range specs {
		if s.Deleting {
			if !nameRE.MatchString(s.Name) {
				out[s.Name] = fmt.Errorf("network name %s: want 1 to 48 letters, digits, '_', '.' or '-', starting with a letter or digit", termtext.Q(s.Name))
			}
			continue
		}
		var errs []error
		bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
		if checkOwn(s, bad) {
			ix.conflicts(i).report(s, specs, bad)
		}
		if err := errors.Join(errs...); err != nil {
			out[s.Name] = err
		}
	}
	return out
}
