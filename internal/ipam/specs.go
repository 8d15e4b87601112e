package ipam

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/termtext"
)

// SpecPools finds pools among the cluster networks stored by netspec.
type SpecPools struct {
	Store *netspec.Store
	// BlockBits4 and BlockBits6 size the blocks (defaults /28 and /120).
	BlockBits4, BlockBits6 int
}

// PoolFor implements PoolSource.
func (s SpecPools) PoolFor(ctx context.Context, subnet netip.Prefix) (Pool, netip.Addr, error) {
	l, err := s.read(ctx)
	if err != nil {
		return Pool{}, netip.Addr{}, err
	}
	refused := l.Refused()
	for _, spec := range l.Specs {
		if spec.IPAM != netspec.Cluster {
			continue
		}
		v6 := spec.IPv6Subnet.IsValid() && spec.IPv6Subnet == subnet
		if spec.Subnet != subnet && !v6 {
			continue
		}
		if spec.Deleting {
			return Pool{}, netip.Addr{}, removing(spec, v6, l)
		}
		if err := refused[spec.Name]; err != nil {
			return Pool{}, netip.Addr{}, refusedSpec(spec.Name, err)
		}
		p, gw := s.listedPool(l, spec, v6)
		return p, gw, nil
	}
	return Pool{}, netip.Addr{}, fmt.Errorf("no underlay network with cluster IPAM has subnet %s; create it with `underlay network create … --ipam cluster`", subnet)
}

// PoolByID implements PoolSource.
func (s SpecPools) PoolByID(ctx context.Context, id string) (Pool, netip.Addr, error) {
	if _, err := parseID(id); err != nil {
		return Pool{}, netip.Addr{}, err
	}
	l, err := s.read(ctx)
	if err != nil {
		return Pool{}, netip.Addr{}, err
	}
	return s.poolByID(l, id)
}

// PoolSeen implements PoolSource, from the store's newest listing.
func (s SpecPools) PoolSeen(id string) (Pool, netip.Addr, error) {
	l := s.Store.Listed()
	if l == nil {
		return Pool{}, netip.Addr{}, errNotRead
	}
	return s.poolByID(l, id)
}

// PoolGone implements PoolSource, from the store's newest listing, if it
// began after the listing p was read from was answered. The newest one
// is the one begun last, which may have been answered first: a network
// made again under the name since it read the specs would pass for gone,
// and the record of a RequestPool of it for one of a gone network.
func (s SpecPools) PoolGone(p Pool) bool {
	l := s.Store.Listed()
	if l == nil || !l.BegunAfter(p.listed) {
		return false
	}
	id, err := parseID(p.ID())
	if err != nil {
		return true // no network's: nothing of it is ever served
	}
	return !slices.ContainsFunc(l.Specs, func(sp netspec.Spec) bool { return sp.Name == id.name }) &&
		!slices.ContainsFunc(l.Bad, func(b netspec.BadSpec) bool { return b.Name == id.name })
}

// SpecGone implements PoolSource, by a direct read of the spec key
// (netspec.Store.SpecGone).
func (s SpecPools) SpecGone(ctx context.Context, p Pool, log *slog.Logger) bool {
	return s.Store.SpecGone(ctx, p.Network, log)
}

// errNotRead is PoolSeen's answer before any reading of the specs.
var errNotRead = errors.New("network specs not read yet")

// pluginID is a pool ID as a request of the plugin gives it.
type pluginID struct {
	// name is the network, v6 says the pool is its IPv6 one.
	name string
	v6   bool
	// gen is the network's generation (see Pool.PluginID), 0 when the ID
	// names none: NETWORK/v4 or NETWORK/v6, as agents before generations
	// gave them to Docker, which keeps them with its networks. Those are
	// served as they always were, from the spec under the name whatever
	// its generation: the upgrade path, for Docker networks made before.
	gen uint64
}

// parseID reads a pool ID: NETWORK/v4 or NETWORK/v6, then, as PluginID
// writes it, @GEN, GEN a positive decimal number with no leading zero.
// It comes from the plugin socket: a generation written otherwise is
// refused, quoted, never taken for none.
func parseID(id string) (pluginID, error) {
	name, fam, _ := strings.Cut(id, "/")
	fam, gen, hasGen := strings.Cut(fam, genSep)
	if fam != "v4" && fam != "v6" {
		return pluginID{}, fmt.Errorf("pool id %s: want NETWORK/v4 or NETWORK/v6, with or without %sGENERATION", quoted(id), genSep)
	}
	out := pluginID{name: name, v6: fam == "v6"}
	if !hasGen {
		return out, nil
	}
	n, err := strconv.ParseUint(gen, 10, 64)
	if err != nil || n == 0 || strconv.FormatUint(n, 10) != gen {
		return pluginID{}, fmt.Errorf("pool id %s: generation %s is not a positive decimal number as underlay writes it", quoted(id), quoted(gen))
	}
	out.gen = n
	return out, nil
}

// poolByID finds pool id in a listing of the specs, judged as the agents
// judge them (see read).
func (s SpecPools) poolByID(l *netspec.Listing, id string) (Pool, netip.Addr, error) {
	pid, err := parseID(id)
	if err != nil {
		return Pool{}, netip.Addr{}, err
	}
	name, v6 := pid.name, pid.v6
	refused := l.Refused()[name]
	i := slices.IndexFunc(l.Specs, func(sp netspec.Spec) bool { return sp.Name == name })
	switch {
	case i < 0 && refused != nil:
		return Pool{}, netip.Addr{}, refusedSpec(name, refused) // unreadable
	case i < 0 || l.Specs[i].IPAM != netspec.Cluster:
		return Pool{}, netip.Addr{}, &goneError{name: name}
	}
	spec := l.Specs[i]
	if now := l.SpecCreateIndex(name); pid.gen != 0 && now != pid.gen {
		// Ahead of the mark of `network rm`: the *RemovingError of the
		// network made again, being removed, would carry its pool, and
		// a release from it would free an address of that network.
		return Pool{}, netip.Addr{}, &remadeError{name: name, gen: pid.gen, now: now}
	}
	if v6 && !spec.IPv6Subnet.IsValid() {
		return Pool{}, netip.Addr{}, fmt.Errorf("pool id %s: network %s has no IPv6 subnet", quoted(id), quoted(name))
	}
	if spec.Deleting {
		return Pool{}, netip.Addr{}, removing(spec, v6, l)
	}
	if refused != nil {
		return Pool{}, netip.Addr{}, refusedSpec(name, refused)
	}
	p, gw := s.listedPool(l, spec, v6)
	return p, gw, nil
}

// listedPool is spec's pool as listing l read it.
func (s SpecPools) listedPool(l *netspec.Listing, spec netspec.Spec, v6 bool) (Pool, netip.Addr) {
	p, gw := s.pool(spec, v6)
	p.specIndex, p.specCreate, p.listed = l.SpecIndex(spec.Name), l.SpecCreateIndex(spec.Name), l.Settled()
	return p, gw
}

// read reads every spec; its Refused judges them as the agents do
// (netspec.CheckStored): a spec written to KV past `network create` that
// fails its checks is realised by no agent, so no pool is served from it
// either — its range could lie outside its subnet, or in another
// network's.
func (s SpecPools) read(ctx context.Context) (*netspec.Listing, error) {
	l, err := s.Store.ReadListing(ctx)
	if err != nil {
		return nil, &unreadError{err: err}
	}
	return l, nil
}

// remadeError refuses a pool ID naming another generation of its network
// than the spec under the name now has, or, its spec gone, an older one
// than the plugin served since: the network Docker asked for the pool of
// was removed and made again since (or its spec rewritten by a delete
// and a write). Nothing is handed out of it or released
// into the network made again, whose addresses this node may have handed
// out again since: Docker's network of it must be made again.
type remadeError struct {
	name     string
	gen, now uint64
}

func (e *remadeError) Error() string {
	return fmt.Sprintf("network %s was made again since Docker asked for this pool (the pool's generation %d; generation %d since): "+
		"nothing of the network made again is handed out or released under it; remove and create the Docker network again",
		quoted(e.name), e.gen, e.now)
}

// goneError refuses a pool whose network has no cluster-IPAM spec.
type goneError struct{ name string }

func (e *goneError) Error() string {
	return fmt.Sprintf("no cluster-IPAM network %s (was it removed?)", quoted(e.name))
}

// unreadError is a failure to read the specs (Consul out of reach): it
// says nothing of whether a pool is served.
type unreadError struct{ err error }

func (e *unreadError) Error() string { return "read network specs: " + e.err.Error() }
func (e *unreadError) Unwrap() error { return e.err }

// RemovingError refuses a pool whose network is being removed: the
// nodes are taking it apart, so nothing more is handed out of it. It
// carries the pool, so that its addresses can still be released as its
// containers are taken down: bound, as any pool read from a spec, to the
// spec as read, marked (see store.update), so that a release that comes
// once the network was removed and made again under the name is refused,
// not written into the new network's blocks.
type RemovingError struct {
	Pool    Pool
	Gateway netip.Addr
}

func (e *RemovingError) Error() string {
	return fmt.Sprintf("network %s is being removed (`underlay network rm` under way): nothing more is handed out of it", termtext.Q(e.Pool.Network))
}

// removing refuses spec's pool, the spec as listing l read it, marked
// by `network rm`.
func removing(spec netspec.Spec, v6 bool, l *netspec.Listing) error {
	p, gw := SpecPools{}.pool(spec, v6)
	p.specIndex, p.specCreate, p.marked = l.SpecIndex(spec.Name), l.SpecCreateIndex(spec.Name), true
	return &RemovingError{Pool: p, Gateway: gw}
}

func refusedSpec(name string, err error) error {
	// One line: Docker shows it as the task's error. The name is a key
	// any agent's token may write: the command quotes it.
	return fmt.Errorf("network %s: spec refused, it fails the checks of `underlay network create` (fix it, or `%s`): %s",
		termtext.Q(name), termtext.Cell(netspec.RemoveFix(name)), strings.ReplaceAll(err.Error(), "\n", "; "))
}

// PoolOf is the pool of a spec's IPv4 (or, with v6, IPv6) subnet, and its
// gateway: to read, or free addresses of. Unlike the pools the plugin and
// NodeIPAM serve, its block claims are not checked against the spec in KV.
func PoolOf(spec netspec.Spec, v6 bool) (Pool, netip.Addr) {
	p, gw := SpecPools{}.pool(spec, v6)
	p.fromSpec = false
	return p, gw
}

func (s SpecPools) pool(spec netspec.Spec, v6 bool) (Pool, netip.Addr) {
	p := Pool{Network: spec.Name, Reserved: map[netip.Addr]bool{}, fromSpec: true}
	var gw netip.Addr
	if v6 {
		p.Prefix, p.BlockBits = spec.IPv6Subnet, s.BlockBits6
		// As Docker's default IPAM does: the first address is the gateway.
		gw = spec.IPv6Subnet.Masked().Addr().Next()
	} else {
		p.Prefix, p.Range, p.BlockBits = spec.Subnet, spec.IPRange, s.BlockBits4
		gw = spec.Gateway
		for _, a := range spec.Aux {
			p.Reserved[a] = true
		}
	}
	p.Reserved[gw] = true
	return p, gw
}

// NodeIPAM gives a node's network reconciler its shim addresses.
type NodeIPAM struct {
	Alloc *Allocator
	Pools SpecPools
}

// Shim implements netagent.IPAM.
func (n NodeIPAM) Shim(ctx context.Context, spec netspec.Spec, v6 bool) (netip.Addr, error) {
	if v6 && !spec.IPv6Subnet.IsValid() {
		return netip.Addr{}, fmt.Errorf("network %s has no IPv6 subnet", spec.Name)
	}
	p, _ := n.Pools.pool(spec, v6)
	return n.Alloc.Shim(ctx, p)
}

// ReleaseShim implements netagent.IPAM. Its pools are read from spec at
// modify index index (0: not known), marked when spec is: bound to it as
// any pool read from a spec (see store.update), so that a release that
// comes once the network was removed and made again under the name is
// refused, not written into the new network's blocks, where this node's
// shim is the new network's; nor are the new network's spares given back.
func (n NodeIPAM) ReleaseShim(ctx context.Context, spec netspec.Spec, index uint64) error {
	var errs []error
	for _, v6 := range []bool{false, true} {
		if v6 && !spec.IPv6Subnet.IsValid() {
			continue
		}
		pv, _ := n.Pools.pool(spec, v6)
		pv.specIndex, pv.marked = index, spec.Deleting
		errs = append(errs, n.Alloc.ReleaseSpares(ctx, pv), n.Alloc.ReleaseShim(ctx, pv))
	}
	return errors.Join(errs...)
}

// ReleaseShimsOf implements netagent.IPAM.
func (n NodeIPAM) ReleaseShimsOf(ctx context.Context, network string) error {
	return n.Alloc.ReleaseShimsOf(ctx, network)
}

// ShimNetworks implements netagent.IPAM.
func (n NodeIPAM) ShimNetworks(ctx context.Context) ([]string, error) {
	return n.Alloc.ShimNetworks(ctx)
}

// ShimsOf implements netagent.IPAM.
func (n NodeIPAM) ShimsOf(ctx context.Context, network string) ([]netip.Addr, error) {
	return n.Alloc.ShimsOf(ctx, network)
}
