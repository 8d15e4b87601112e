package netspec

import (
	"errors"
	"fmt"
	"maps"
	"math/bits"
	"net/netip"
	"regexp"
	"slices"
	"strings"
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

// Validate checks s on its own and against the networks that already
// exist, returning every problem found, each naming the bad value.
func Validate(s Spec, existing []Spec) error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if checkOwn(s, bad) {
		for _, o := range existing {
			checkPair(s, o, bad)
		}
	}
	return errors.Join(errs...)
}

// checkOwn checks s on its own, calling bad for each problem. It returns
// false when s's subnet is not one to compare with other networks'.
func checkOwn(s Spec, bad func(string, ...any)) bool {
	if !nameRE.MatchString(s.Name) {
		bad("network name %q: want 1 to 48 letters, digits, '_', '.' or '-', starting with a letter or digit", s.Name)
	}
	switch {
	case !parentRE.MatchString(s.Parent):
		bad("parent %q: not an interface name (at most 15 characters)", s.Parent)
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
		bad("ipam %q: want per-node or cluster", s.IPAM)
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

// checkPair checks s against the existing network o, calling bad for
// each conflict. CheckStored calls it only for the networks specIndex
// finds sharing something with s: a conflict found here must be one
// specIndex.related finds.
func checkPair(s, o Spec, bad func(string, ...any)) {
	if o.Name == s.Name {
		bad("network %q already exists", s.Name)
		return
	}
	// Docker would hold two networks of one name: looking either up
	// by name fails as ambiguous, which stops the agents' sync and
	// removal of the other network.
	if s.Name == ConfigNetworkName(o.Name) {
		bad("network name %q is the name of network %q's config-only network: choose another name", s.Name, o.Name)
	}
	if o.Name == ConfigNetworkName(s.Name) {
		bad("network %q's config-only network would be named %s, as network %q is: choose another name", s.Name, o.Name, o.Name)
	}
	if o.Subnet.Overlaps(s.Subnet) {
		bad("subnet %s overlaps network %q (%s)", s.Subnet, o.Name, o.Subnet)
	}
	if s.IPv6Subnet.IsValid() && o.IPv6Subnet.IsValid() && o.IPv6Subnet.Overlaps(s.IPv6Subnet) {
		bad("IPv6 subnet %s overlaps network %q (%s)", s.IPv6Subnet, o.Name, o.IPv6Subnet)
	}
	if o.Parent == s.Parent {
		bad("parent %s already carries network %q: Docker allows one macvlan or ipvlan network per parent interface", s.Parent, o.Name)
	} else if lower, vid, ok := VLANParent(s.Parent); ok {
		// bond0.40 and bond0.040 are one VLAN: the kernel makes one
		// link of a VLAN per device, so no node could make the other.
		if ol, ov, ook := VLANParent(o.Parent); ook && ol == lower && ov == vid {
			bad("parent %s is VLAN %d on %s, as network %q's parent %s is: a device carries one link per VLAN, and Docker one network per parent", s.Parent, vid, lower, o.Name, o.Parent)
		}
	}
	// Shim names are a 32-bit hash of the network's name: two networks
	// with one name would replace each other's shim at every sync, and
	// removing either would delete the other's.
	if shim := ShimLinkName(s.Name); shim == ShimLinkName(o.Name) {
		bad("host shim link %s is also network %q's (the names hash alike): choose another name", shim, o.Name)
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

func checkAux(s Spec, bad func(string, ...any)) {
	seen := map[netip.Addr]string{}
	for _, name := range slices.Sorted(maps.Keys(s.Aux)) {
		ip := s.Aux[name]
		switch {
		case !auxRE.MatchString(name) || strings.HasPrefix(name, reservedAuxPrefix):
			bad("aux address name %q: want letters, digits, '_', '.' or '-', not starting with %q", name, reservedAuxPrefix)
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
	}
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
// Each spec is compared only with those that share something with it (a
// name, a parent, overlapping subnets: specIndex), in their order, which
// gives what comparing it with every other would: it runs at every sync
// of every agent, and pairs of thousands of specs cost seconds.
func CheckStored(specs []Spec) map[string]error {
	out := map[string]error{}
	ix := newSpecIndex(specs)
	for i, s := range specs {
		if s.Deleting {
			if !nameRE.MatchString(s.Name) {
				out[s.Name] = fmt.Errorf("network name %q: want 1 to 48 letters, digits, '_', '.' or '-', starting with a letter or digit", s.Name)
			}
			continue
		}
		var errs []error
		bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
		if checkOwn(s, bad) {
			for _, j := range ix.related(i) {
				checkPair(s, specs[j], bad)
			}
		}
		if err := errors.Join(errs...); err != nil {
			out[s.Name] = err
		}
	}
	return out
}
