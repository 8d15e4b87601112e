package netspec

import (
	"fmt"
	"math/bits"
	"net/netip"
)

// reservedAuxPrefix names the aux addresses underlay reserves itself.
const reservedAuxPrefix = "underlay-"

// ShimAuxName is the aux-address name under which a node's host shim
// address is reserved in its config-only network.
const ShimAuxName = reservedAuxPrefix + "shim"

// Shim6AuxName reserves a node's host shim IPv6 address (Shim6).
const Shim6AuxName = reservedAuxPrefix + "shim6"

// MaxBlocks bounds the per-node ranges of a network: IPv6Block numbers
// them in 16 bits, and agents list them at every lease (a /8 in ranges
// of 4 is 4 million of them). A network of more nodes has no use for more.
const MaxBlocks = 1 << 16

// Blocks splits the spec's range into per-node ranges of PerNodeSize
// addresses, in address order, the first MaxBlocks of them. Blocks without
// two free addresses, one for the host shim and one for a container, are
// left out.
func Blocks(s Spec) []netip.Prefix {
	rng := s.Range().Masked()
	size := s.PerNodeSize
	if size <= 0 {
		size = DefaultPerNodeSize
	}
	blockBits := 32 - (bits.Len(uint(size)) - 1)
	if blockBits < rng.Bits() {
		return nil
	}
	count := 1 << (blockBits - rng.Bits())
	reserved := s.reserved()
	var out []netip.Prefix
	start := addrToUint(rng.Addr())
	for i := 0; i < count && len(out) < MaxBlocks; i++ {
		b := netip.PrefixFrom(uintToAddr(start+uint32(i*size)), blockBits)
		if freeCount(b, reserved, 2) >= 2 {
			out = append(out, b)
		}
	}
	return out
}

// Shim is the address a node's host shim takes inside its block: the
// block's first address that is not otherwise reserved, so the shim never
// competes with containers or with other nodes.
func Shim(s Spec, block netip.Prefix) (netip.Addr, error) {
	a, ok := firstFree(block, s.reserved())
	if !ok {
		return netip.Addr{}, fmt.Errorf("range %s has no free address for the host shim", block)
	}
	return a, nil
}

// reserved is every address of the subnet never given to a container:
// network, broadcast, gateway and aux addresses.
func (s Spec) reserved() map[netip.Addr]bool {
	r := map[netip.Addr]bool{
		s.Subnet.Masked().Addr(): true,
		LastAddr(s.Subnet):       true,
		s.Gateway:                true,
	}
	for _, a := range s.Aux {
		r[a] = true
	}
	return r
}

// freeCount counts b's unreserved addresses, stopping at limit.
func freeCount(b netip.Prefix, reserved map[netip.Addr]bool, limit int) int {
	n := 0
	for a := b.Addr(); b.Contains(a) && n < limit; a = a.Next() {
		if !reserved[a] {
			n++
		}
	}
	return n
}

func firstFree(b netip.Prefix, reserved map[netip.Addr]bool) (netip.Addr, bool) {
	a := b.Addr()
	for b.Contains(a) {
		if !reserved[a] {
			return a, true
		}
		a = a.Next()
	}
	return netip.Addr{}, false
}

// Shim6 is the IPv6 address a node's host shim takes inside its IPv6
// range: the range's last address. Docker hands out a range's addresses
// from its start, so even on a config-only network made before underlay
// reserved the shim's (Shim6AuxName), no container holds it.
func Shim6(block netip.Prefix) netip.Addr { return LastAddr(block) }

// IPv6Block is node i's /80 inside the spec's IPv6 subnet: bits 64 to 79
// of the address hold the index, so up to 65536 nodes get disjoint ranges
// whatever the subnet's size between /48 and /64.
func IPv6Block(s Spec, i int) netip.Prefix {
	a := s.IPv6Subnet.Masked().Addr().As16()
	a[8], a[9] = byte(i>>8), byte(i)
	return netip.PrefixFrom(netip.AddrFrom16(a), 80)
}

// IPv6Ranges gives, for each of ranges (per-node ranges of s, as nodes
// report them), the IPv6 range of the node that holds it: the IPv6Block
// of its index among Blocks(s), as NodePlanFor gives it. It gives the
// zero prefix for a range that is none of s's blocks (a node that
// reported none), and for every range when s has no IPv6 subnet or no
// per-node ranges (cluster IPAM draws IPv6 from one pool).
func IPv6Ranges(s Spec, ranges []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, len(ranges))
	if s.IPAM != PerNode || !s.IPv6Subnet.IsValid() {
		return out
	}
	at := map[netip.Prefix][]int{}
	for i, r := range ranges {
		if r.IsValid() {
			at[r] = append(at[r], i)
		}
	}
	if len(at) == 0 {
		return out
	}
	for i, b := range Blocks(s) {
		for _, j := range at[b] {
			out[j] = IPv6Block(s, i)
		}
	}
	return out
}

func addrToUint(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func uintToAddr(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
