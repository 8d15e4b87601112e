package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/termtext"
)

// ErrPoolExhausted is returned when no address of a pool is free.
var ErrPoolExhausted = errors.New("no free address")

// Pool is one address family of one cluster network.
type Pool struct {
	// Network names the cluster network (its spec name).
	Network string
	Prefix  netip.Prefix
	// Range limits allocations; the zero value means all of Prefix.
	Range netip.Prefix
	// Reserved addresses are never handed out: gateway, aux addresses.
	// Network and broadcast addresses are reserved implicitly.
	Reserved map[netip.Addr]bool
	// BlockBits is the prefix length of a block (e.g. 28 for 16 IPv4 addresses).
	BlockBits int
	// fromSpec: read from its network's spec (see SpecPools), so a block
	// of it is claimed only while that spec stands (see store.specCheck).
	fromSpec bool
	// specIndex is the modify index of the spec it was read from, when
	// known (0: not): its writes are bound to that spec, not to any spec
	// under the name (see specCheck).
	specIndex uint64
	// specCreate is the create index of that spec, when known (0: not):
	// the network's generation, which a network made again under the
	// name does not share, and which the plugin's pool ID names (see
	// PluginID).
	specCreate uint64
	// marked: read from a spec marked by `network rm` (a *RemovingError's,
	// released from as the removal's containers go): its writes, bound to
	// the spec as read, stay bound to it while it is the same network's
	// spec, marked (see boundRefusal).
	marked bool
	// listed is the Settled of the listing of the specs it was read from
	// (0: not read from one): only a listing begun after is as new (see
	// SpecPools.PoolGone).
	listed uint64
}

// Family is "v4" or "v6", part of the pool's KV path.
func (p Pool) Family() string {
	if p.Prefix.Addr().Is4() {
		return "v4"
	}
	return "v6"
}

// ID is the pool's identifier in KV, in the freed-addresses file, in
// metrics and in logs: NETWORK/v4 or NETWORK/v6, the same for a network
// made again under the name. Docker is given PluginID.
func (p Pool) ID() string { return p.Network + "/" + p.Family() }

// genSep separates a plugin pool ID's generation from its family
// (NETWORK/v4@GEN): no network name holds it (netspec's name rule), and
// the family, cut at the name's end, is v4 or v6.
const genSep = "@"

// PluginID is the pool's ID in the plugin protocol, which Docker stores
// with its network and hands back in each request of it: ID and the
// network's generation (its spec's create index), NETWORK/v4@GEN. A
// request naming a generation is served only while the spec under the
// name has it: Docker's network of a network removed and made again
// under the name and subnet (its tree deleted while its containers live)
// holds addresses this node may hand out again in the new one, which its
// late releases must not free. With no generation known (a pool not read
// from a listing of the specs), it is ID.
func (p Pool) PluginID() string {
	if p.specCreate == 0 {
		return p.ID()
	}
	return p.ID() + genSep + strconv.FormatUint(p.specCreate, 10)
}

func (p Pool) allocRange() netip.Prefix {
	if p.Range.IsValid() {
		return p.Range.Masked()
	}
	return p.Prefix.Masked()
}

// usable reports whether a may ever be allocated from p.
func (p Pool) usable(a netip.Addr) bool {
	if !p.allocRange().Contains(a) || p.Reserved[a] || a == p.Prefix.Masked().Addr() {
		return false
	}
	if a.Is4() && a == broadcast(p.Prefix) {
		return false
	}
	return true
}

// Block is the block holding a.
func (p Pool) Block(a netip.Addr) netip.Prefix {
	b, _ := a.Prefix(p.blockBits())
	return b
}

func (p Pool) blockBits() int {
	bits := p.BlockBits
	if bits <= 0 {
		bits = 28
		if p.Prefix.Addr().Is6() {
			bits = 120
		}
	}
	return max(bits, p.allocRange().Bits())
}

// isBlock reports whether b is one of p's blocks.
func (p Pool) isBlock(b netip.Prefix) bool {
	return b.IsValid() && b.Addr().Is4() == p.Prefix.Addr().Is4() && b.Bits() == p.blockBits() &&
		b == b.Masked() && p.allocRange().Contains(b.Addr())
}

// Blocks lists every block of the allocation range, in address order.
func (p Pool) Blocks() []netip.Prefix {
	r := p.allocRange()
	bits := p.blockBits()
	var out []netip.Prefix
	// Walk block starts; for IPv6 ranges much larger than blocks, this
	// list would be huge, so cap the walk: a pool never needs more blocks
	// than it can have nodes times a few.
	const maxBlocks = 1 << 16
	for b := netip.PrefixFrom(r.Addr(), bits); r.Contains(b.Addr()) && len(out) < maxBlocks; {
		out = append(out, b)
		next := netspec.LastAddr(b).Next()
		if !next.IsValid() {
			break
		}
		b = netip.PrefixFrom(next, bits)
	}
	return out
}

// blockKey turns a block into a KV key segment ("10.0.0.16_28").
func blockKey(b netip.Prefix) string { return strings.ReplaceAll(b.String(), "/", "_") }

// parseBlockKey reads a block key, which must be spelt exactly as
// blockKey spells it: an IPv6 block has other spellings (upper case,
// zeros written out, an IPv4 tail), and a second key for one block would
// hide the first's allocations from the allocator.
func parseBlockKey(k string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(strings.ReplaceAll(k, "_", "/"))
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("block key %s: %s", termtext.Q(k), termtext.Lines(err.Error())) // netip quotes k with %q
	}
	if own := blockKey(p); own != k {
		return netip.Prefix{}, fmt.Errorf("block key %s: not how underlay spells block %s (%q)", termtext.Q(k), p, own)
	}
	return p, nil
}

func broadcast(p netip.Prefix) netip.Addr { return netspec.LastAddr(p) }
