package netagent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/docker/docker/pkg/stringid"

	"github.com/underlay/underlay/internal/hostnet"
	"github.com/underlay/underlay/internal/kvstore"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/termtext"
)

// Docker is what the reconciler needs of the node's own dockerd.
type Docker interface {
	// ConfigNetwork reports the Docker network named name, the name of a
	// spec's config-only network (see ConfigNet).
	ConfigNetwork(ctx context.Context, name string) (ConfigNet, error)
	CreateConfigNetwork(ctx context.Context, s netspec.Spec, p netspec.NodePlan) error
	// RemoveNetwork removes a network by name or ID; an absent one is no
	// error.
	RemoveNetwork(ctx context.Context, name string) error
	// ManagedConfigNetworks lists the config-only networks here that bear
	// underlay's labels (Network is set), whatever their names.
	ManagedConfigNetworks(ctx context.Context) ([]ConfigNet, error)
	// DockerLinks is what dockerd says of its networks and the
	// containers on them: what uses a host link, by the rule `agent
	// cleanup` judges by too (hostnet.DockerLinks.Users).
	DockerLinks(ctx context.Context) (hostnet.DockerLinks, error)
}

// ConfigNet is the Docker network under a config-only network's name.
type ConfigNet struct {
	// Exists is false when Docker has no network of the name.
	Exists bool
	// ID is the network's, so that removing it removes no other.
	ID string
	// Name is the network's Docker name.
	Name string
	// Network is the cluster network it was made for when it is a
	// config-only network labelled underlay's (netspec.LabelManaged and
	// LabelNetwork); "" for any other network: an operator's, which the
	// reconciler neither uses nor removes.
	Network string
	// ClusterIPAM is true when it names underlay's cluster IPAM driver
	// (netspec.ClusterIPAMDriver), which Docker reports of a config-only
	// network on every version: the IPAM mode of a network whose spec is
	// gone.
	ClusterIPAM bool
	// Range is the IPv4 range it holds: the zero Prefix when it holds
	// none, or when Docker cannot say (see netspec.LabelRange).
	Range netip.Prefix
	// Parent and IPvlanMode are its driver options parent and
	// ipvlan_mode (see netspec.Spec.DriverOptions): the parent its
	// endpoints hang off, "" when Docker does not say, and with ipvlan
	// its mode ("" for macvlan).
	Parent, IPvlanMode string
}

// IPAMMode is the IPAM mode the config-only network was made for, by its
// IPAM driver: cluster, or per-node.
func (cn ConfigNet) IPAMMode() netspec.IPAMMode {
	if cn.ClusterIPAM {
		return netspec.Cluster
	}
	return netspec.PerNode
}

// Swarm is what the reconciler needs of the swarm, through this node's
// dockerd; it is consulted only on the swarm leader.
type Swarm interface {
	// IsLeader reports whether this node is the swarm's leader manager.
	IsLeader(ctx context.Context) (bool, error)
	// ReadySwarmNodes lists the swarm nodes in state ready, with their
	// availability.
	ReadySwarmNodes(ctx context.Context) ([]netspec.SwarmNode, error)
	SwarmNetworkExists(ctx context.Context, name string) (bool, error)
	CreateSwarmNetwork(ctx context.Context, s netspec.Spec) error
}

// IPAM gives a node its host shim addresses in a cluster-IPAM network:
// IPv4, or with v6 IPv6 from the network's IPv6 subnet.
type IPAM interface {
	Shim(ctx context.Context, s netspec.Spec, v6 bool) (netip.Addr, error)
	// ReleaseShim gives back the node's shim addresses in s's pools,
	// bound to s as read at modify index index (netspec.Listing.SpecIndex;
	// 0: not known): once the network is removed and made again under the
	// name, the new network's are not given back.
	ReleaseShim(ctx context.Context, s netspec.Spec, index uint64) error
	// ReleaseShimsOf gives back the node's shim addresses in network's
	// pools knowing only its name, its spec being gone; pools gone with
	// the spec are no error.
	ReleaseShimsOf(ctx context.Context, network string) error
	// ShimNetworks names the networks in whose pools the node holds shim
	// addresses, whatever their specs.
	ShimNetworks(ctx context.Context) ([]string, error)
	// ShimsOf lists the node's shim addresses in network's pools knowing
	// only its name.
	ShimsOf(ctx context.Context, network string) ([]netip.Addr, error)
}

// Host prepares and tears down the host side (hostnet.Host).
type Host interface {
	Ensure(w hostnet.Want) ([]hostnet.Repair, error)
}

// Reconciler makes one node carry every cluster network.
type Reconciler struct {
	// ID is the node's identity (its swarm node ID): leases and reports
	// are keyed by it. Node is its name, for display.
	ID, Node string
	// Facts publishes the node's facts (interfaces).
	Facts  *Facts
	Store  *netspec.Store
	Docker Docker
	Swarm  Swarm
	Host   Host
	// IPAM serves cluster-IPAM networks; nil refuses them.
	IPAM IPAM
	Log  *slog.Logger
	// RemoveShim deletes network's shim link, name; hostnet.RemoveShim
	// outside tests.
	RemoveShim func(name, network string) error
	// RemoveOldShim deletes network's shim link, name, when it is an
	// older agent's, unmarked, holding only held, the ranges and
	// addresses the node holds on the network (hostnet.RemoveOldShim
	// outside tests); nil leaves such links alone.
	RemoveOldShim func(name, network string, held []netip.Prefix) (bool, error)
	// RemoveParent deletes a network's VLAN parent if the agent made it
	// (hostnet.RemoveParent outside tests); nil leaves parents alone.
	RemoveParent func(parent, network string) (bool, error)
	// ReleasePromisc makes a parent not promiscuous again once no network
	// uses it, if underlay made it so (hostnet.Host.ReleasePromisc
	// outside tests); nil leaves parents promiscuous.
	ReleasePromisc func(parent string) (bool, error)
	// Marked lists the host's links underlay marked, by network
	// (hostnet.Marked outside tests): what a network whose spec is gone
	// left here, after a restart too. nil finds such networks by their
	// config-only networks only.
	Marked func() (map[string]hostnet.Marks, error)
	// Metrics is optional.
	Metrics *Metrics

	// reported is the last state reported per network: Sync runs on every
	// KV change, so it writes only what changed, or agents would wake each
	// other forever. A report missing from a sync's listing (Consul lost
	// it), or other there than written (an older one, from a snapshot
	// restored), is dropped from it, and so written again.
	reported map[string]written
	// refused is the last refusal logged per network, of the specs
	// refused at the last sync.
	refused map[string]string
	// foreign are the IDs of the Docker networks found at the last sync
	// bearing underlay's labels under a name underlay does not give (see
	// orphans), each warned of once.
	foreign map[string]bool
	// removed are the networks whose removal from this node was logged and
	// whose spec is still deleting (or config-only network still listed):
	// a spec left deleting, while `network rm` waits for a node that is
	// down, is torn down again at every sync, and logged once.
	removed map[string]bool
	// unfinished are the networks whose config-only network this node
	// removed and whose teardown failed after (a shim that would not go,
	// Consul out of reach), with what that network was: an orphan (see
	// Sync) is found by its config-only network only, and would be seen
	// no more, its shim, lease or shim addresses left for good. Each is
	// torn down again at every sync until done, or until a spec of its
	// name is back. Kept in memory only: after a restart the links
	// underlay marked as the network's (see Marked), or what Consul still
	// holds of this node's under a network with no spec key (see
	// unreleased), find it again.
	unfinished map[string]ConfigNet
	// unlisted are the keys of the last sync's listing under a network
	// name whose keys Consul's paths redirect (netspec.Listing.Unlisted),
	// each warned of once while it stays.
	unlisted map[string]bool
	// inUse are, by network, the VLAN parents made for it that were left
	// in place at the last sync, in use (hostnet.ErrParentInUse): an
	// orphan's marked parent finds it at every sync while it stays, and
	// is warned of once.
	inUse map[string][]string
	// settled are the orphans whose teardown is done but for VLAN parents
	// left in use, found again at every sync by their marks: while
	// nothing else of theirs shows (a config-only network, a marked shim),
	// only their parents are looked at again, not the whole teardown.
	settled map[string]bool
	// looked are, by network, the VLAN parents removeParents last looked
	// at and when: a settled orphan's are looked at again once
	// settledRecheck has passed, or once a parent it did not look at is
	// marked as the network's.
	looked map[string]parentsLook
	// heard are, by swarm node ID, the facts of the drained or paused
	// nodes that reported, as the last sync read them (see
	// stoppedAgents): whether their agents run is told by their change
	// seen by this clock, not by their stamps, their nodes' clocks.
	heard map[string]heardFacts
	// now is the clock; nil is time.Now.
	now func() time.Time
	// shimsScanned is set once the pools were searched for this node's
	// shim addresses in networks with no spec key (see unreleased): after
	// a restart, those a teardown could not give back before it.
	shimsScanned bool
	// period is Run's: each Consul call of a sync is given up past it,
	// when shorter than kvstore.WriteWait (see consulCall); 0 outside Run.
	period time.Duration
}

// Sync brings this node in line with every spec once. Errors of one
// network are reported for that network and do not stop the others. A
// spec that `network create` would refuse is refused here too, loudly,
// and nothing on the host changes for it (see refuse).
func (r *Reconciler) Sync(ctx context.Context) error {
	cctx, done := r.consulCall(ctx)
	err := r.Facts.Publish(cctx, false)
	done()
	if err != nil {
		return fmt.Errorf("publish this node's facts: %w", err)
	}
	cctx, done = r.consulCall(ctx)
	l, err := r.Store.ReadListing(cctx)
	done()
	if err != nil {
		return err
	}
	specs, refused := l.Specs, l.Refused()
	r.warnUnlisted(l.Unlisted)
	for name, w := range r.reported {
		if sum, ok := l.ReportSum(name, cmp.Or(r.ID, r.Node)); !ok || sum != w.sum {
			delete(r.reported, name)
		}
	}
	r.dropOrphanReports(ctx, l.Orphans)
	r.Metrics.setInvalid(len(refused))
	for name, err := range refused {
		r.refuse(ctx, name, err)
	}
	// A refusal goes with its spec: spec keys come and go (any agent's
	// token may write them), and one written again is logged again.
	for name := range r.refused {
		if refused[name] == nil {
			delete(r.refused, name)
		}
	}
	var errs []error
	marks, err := r.marked()
	if err != nil {
		errs = append(errs, err)
	}
	wanted, gone := map[string]bool{}, map[string]bool{}
	for _, s := range specs {
		if refused[s.Name] != nil {
			continue
		}
		if s.Deleting {
			gone[s.Name] = true
			if err := r.teardown(ctx, s, l.SpecIndex(s.Name), true, hostnet.Marks{Shims: marks[s.Name].Shims}); err != nil {
				// Said where `network rm`, waiting for this node's
				// removal, and `network inspect` look: the last report
				// said ready.
				r.report(ctx, s.Name, netspec.NodeState{State: netspec.StateError, Parent: s.Parent, Error: "removal failed: " + err.Error()})
				errs = append(errs, err)
			}
			continue
		}
		wanted[s.Name] = true
		if err := r.realise(ctx, s); err != nil {
			errs = append(errs, err)
		}
	}
	// Networks whose spec is gone entirely (deleted by hand, a lost KV):
	// found by label, removed.
	managed, err := r.Docker.ManagedConfigNetworks(ctx)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	// Networks of which this host has links underlay marked, and those
	// whose teardown is unfinished, likewise.
	// Networks of which Consul holds this node's lease or shim addresses,
	// their spec key gone: their teardown failed before a restart, with
	// nothing else left to find them.
	unreleased, err := r.unreleased(ctx, l)
	if err != nil {
		errs = append(errs, err)
	}
	labelled := r.orphans(managed)
	orphans := slices.Clone(labelled)
	for _, name := range slices.Concat(slices.Sorted(maps.Keys(r.unfinished)), slices.Sorted(maps.Keys(marks)), unreleased) {
		if !slices.Contains(orphans, name) {
			orphans = append(orphans, name)
		}
	}
	settled := map[string]bool{}
	for _, name := range orphans {
		if wanted[name] || gone[name] || refused[name] != nil {
			continue
		}
		gone[name] = true
		m := marks[name]
		m.Parents = orphanParents(m.Parents, l)
		if r.settled[name] && len(m.Shims) == 0 && !slices.Contains(labelled, name) {
			settled[name] = true
			if !r.lookedLately(name, m.Parents) && r.specGone(ctx, name) {
				errs = append(errs, r.removeParents(ctx, name, m.Parents, r.linkUsers()))
			}
			continue
		}
		// Not listed is no proof the spec is gone (Consul leaves out the
		// keys the token may not read): read it before tearing down, and
		// leave everything as it is, warned of, while that fails.
		if !r.specGone(ctx, name) {
			settled[name] = r.settled[name]
			continue
		}
		err := r.teardown(ctx, netspec.Spec{Name: name}, 0, false, m)
		settled[name] = err == nil
		errs = append(errs, err)
	}
	r.settled = settled
	maps.DeleteFunc(r.removed, func(name string, _ bool) bool { return !gone[name] })
	maps.DeleteFunc(r.unfinished, func(name string, _ ConfigNet) bool { return !gone[name] })
	maps.DeleteFunc(r.inUse, func(name string, _ []string) bool { return !gone[name] })
	maps.DeleteFunc(r.looked, func(name string, _ parentsLook) bool { return !settled[name] })
	return errors.Join(errs...)
}

// parentsLook is what removeParents last looked at of a network's VLAN
// parents, and when.
type parentsLook struct {
	parents []string
	at      time.Time
}

// lookedLately reports whether removeParents looked at each of parents
// of network name less than settledRecheck ago. What it found then
// stands: a parent in use is left (and warned of no more), which is
// looked at again past the bound. Docker networks on a parent change
// with no event the reconciler sees, so each look costs a Docker network
// listing (see removeParents), which a settled orphan's idle syncs are
// spared.
func (r *Reconciler) lookedLately(name string, parents []string) bool {
	l, ok := r.looked[name]
	return ok && r.clock().Sub(l.at) < settledRecheck && !slices.ContainsFunc(parents, func(p string) bool { return !slices.Contains(l.parents, p) })
}

// warnUnlisted warns once of each key of keys (netspec.Listing.Unlisted):
// nothing is done through them, a report there landing on another key.
func (r *Reconciler) warnUnlisted(keys []string) {
	seen := make(map[string]bool, len(keys))
	for _, k := range keys {
		seen[k] = true
		if !r.unlisted[k] {
			r.log().Warn("network key skipped: "+netspec.UnlistedProblem(k), "key", k)
		}
	}
	r.unlisted = seen
}

// orphans are the cluster networks of the labelled config-only networks
// underlay made, those under the name it gives them, for a network name
// it gives (netspec.IsNetworkName, as marked links and leases are
// taken): no other is underlay's (Docker renames no network), whatever
// its labels say — copied by an operator, or a script's — so none is
// removed, nor its network's shim, lease or VLAN parent torn down for
// it. Each is warned of once while it stays.
func (r *Reconciler) orphans(managed []ConfigNet) []string {
	var names []string
	foreign := map[string]bool{}
	for _, cn := range managed {
		named := netspec.IsNetworkName(cn.Network)
		if named && cn.Name == netspec.ConfigNetworkName(cn.Network) {
			names = append(names, cn.Network)
			continue
		}
		foreign[cn.ID] = true
		if r.foreign[cn.ID] {
			continue
		}
		if !named {
			r.log().Warn("a Docker network bears underlay's labels for a network name no underlay gives; not underlay's, left alone",
				"docker_network", cn.Name, "id", stringid.TruncateID(cn.ID), "labelled_network", cn.Network)
			continue
		}
		r.log().Warn("a Docker network bears underlay's labels but not the name underlay gives the config-only network; not underlay's, left alone",
			"docker_network", cn.Name, "id", stringid.TruncateID(cn.ID), "labelled_network", cn.Network, "config_network", netspec.ConfigNetworkName(cn.Network))
	}
	r.foreign = foreign
	return names
}

// unreleased are the networks with no spec key, readable or not, under
// which this node holds a range lease, and, searched once after a start,
// those in whose pools it holds shim addresses: what a teardown could not
// give back (Consul out of reach) before the agent restarted. A spec key,
// even one being deleted or unreadable, keeps its network out: what it
// holds is a live network's, or its teardown's to give back. Only this
// node's are given back (Store.Release, IPAM.ReleaseShimsOf). Those found
// in the pools are unfinished until their teardown is done, as the
// search is not made again.
func (r *Reconciler) unreleased(ctx context.Context, l *netspec.Listing) ([]string, error) {
	var names []string
	for name, ids := range l.Leased {
		if r.ID != "" && slices.Contains(ids, r.ID) && netspec.IsNetworkName(name) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	if r.IPAM == nil || r.shimsScanned {
		return names, nil
	}
	cctx, done := r.consulCall(ctx)
	nets, err := r.IPAM.ShimNetworks(cctx)
	done()
	if err != nil {
		return names, fmt.Errorf("find this node's shim addresses of networks whose spec is gone: %w", err)
	}
	r.shimsScanned = true
	for _, name := range nets {
		keyed := slices.ContainsFunc(l.Specs, func(s netspec.Spec) bool { return s.Name == name }) ||
			slices.ContainsFunc(l.Bad, func(b netspec.BadSpec) bool { return b.Name == name })
		if keyed || !netspec.IsNetworkName(name) {
			continue
		}
		if _, ok := r.unfinished[name]; !ok {
			if r.unfinished == nil {
				r.unfinished = map[string]ConfigNet{}
			}
			r.unfinished[name] = ConfigNet{}
		}
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	return names, nil
}

// orphanParents are, of the VLAN parents marked as an orphan's, those
// no spec of l names, by any spelling of its VLAN: a network made since
// on a parent the orphan's agent had made uses it as it is, marked as
// the orphan's, and its containers' endpoints, in their namespaces, are
// not seen by RemoveParent. None while a spec cannot be read: its parent
// cannot be told.
func orphanParents(marked []string, l *netspec.Listing) []string {
	if len(l.Bad) > 0 {
		return nil
	}
	return slices.DeleteFunc(slices.Clone(marked), func(parent string) bool {
		lower, vid, vlan := netspec.VLANParent(parent)
		return slices.ContainsFunc(l.Specs, func(s netspec.Spec) bool {
			sl, sv, sok := netspec.VLANParent(s.Parent)
			return s.Parent == parent || vlan && sok && sl == lower && sv == vid
		})
	})
}

// marked are the networks whose links underlay marked on this host (see
// Marked), by network; names no network can have are left out: nothing
// of theirs is underlay's to take apart.
func (r *Reconciler) marked() (map[string]hostnet.Marks, error) {
	if r.Marked == nil {
		return nil, nil
	}
	marks, err := r.Marked()
	if err != nil {
		return nil, fmt.Errorf("list the host links underlay marked: %w", err)
	}
	maps.DeleteFunc(marks, func(name string, _ hostnet.Marks) bool { return !netspec.IsNetworkName(name) })
	return marks, nil
}

// nodePlan is this node's part of s: a leased range (per-node IPAM), or a
// shim address from the cluster pool, whose whole range goes through the
// shim (cluster IPAM: local containers may have any address of it). route
// and route6 are what the shim routes: the node's ranges, or with cluster
// IPAM the network's.
func (r *Reconciler) nodePlan(ctx context.Context, s netspec.Spec) (plan netspec.NodePlan, route, route6 netip.Prefix, err error) {
	switch s.IPAM {
	case netspec.PerNode:
		cctx, done := r.consulCall(ctx)
		block, index, err := r.Store.Lease(cctx, s, r.ID)
		done()
		if err != nil {
			return plan, route, route6, err
		}
		plan, err := netspec.NodePlanFor(s, r.Node, block, index)
		return plan, block, plan.IPv6, err
	case netspec.Cluster:
		if r.IPAM == nil {
			return plan, route, route6, fmt.Errorf("network %s: cluster IPAM is off on this agent", s.Name)
		}
		shim, err := r.shim(ctx, s, false)
		if err != nil {
			return plan, route, route6, fmt.Errorf("network %s: shim address: %w", s.Name, err)
		}
		plan = netspec.NodePlan{Node: r.Node, Shim: shim, ShimLink: netspec.ShimLinkName(s.Name)}
		if s.IPv6Subnet.IsValid() {
			if plan.Shim6, err = r.shim(ctx, s, true); err != nil {
				return plan, route, route6, fmt.Errorf("network %s: shim IPv6 address: %w", s.Name, err)
			}
			route6 = s.IPv6Subnet.Masked()
		}
		return plan, s.Range(), route6, nil
	}
	return plan, route, route6, fmt.Errorf("network %s: unknown IPAM %s", s.Name, termtext.Q(string(s.IPAM)))
}

// realise makes this node's part of s and reports it: ready, or the
// error that stopped it. The swarm network is the leader's to make once
// the nodes are ready; its failure is reported beside this node's ready
// part, in one report, so that a failure that stays writes nothing more.
func (r *Reconciler) realise(ctx context.Context, s netspec.Spec) error {
	ns, err := r.realiseNode(ctx, s)
	if err != nil {
		r.report(ctx, s.Name, netspec.NodeState{State: netspec.StateError, Parent: s.Parent, Error: err.Error()})
		return err
	}
	if last, ok := r.reported[s.Name]; !ok || last.ns.State != netspec.StateReady {
		// This node's part is ready now: reported before the swarm network
		// is made, so that whoever sees the network sees every node's part,
		// the leader's too. Once ready, only changes are written.
		r.report(ctx, s.Name, ns)
	}
	err = r.maybeCreateSwarmNetwork(ctx, s)
	if err != nil {
		ns.Error = "swarm network not created: " + err.Error()
	}
	r.report(ctx, s.Name, ns)
	return err
}

// realiseNode makes this node's part of s: its range or shim address, the
// host side and the config-only network.
func (r *Reconciler) realiseNode(ctx context.Context, s netspec.Spec) (netspec.NodeState, error) {
	plan, route, route6, err := r.nodePlan(ctx, s)
	if err != nil {
		return netspec.NodeState{}, err
	}
	repairs, err := r.Host.Ensure(hostnet.Want{Parent: s.Parent, Network: s.Name, Driver: s.DriverName(), IPvlanMode: s.IPvlanModeName(),
		ShimLink: plan.ShimLink, Shim: plan.Shim, Route: route, Shim6: plan.Shim6, Route6: route6, Subnet: s.Subnet, Subnet6: s.IPv6Subnet})
	if err != nil {
		return netspec.NodeState{}, fmt.Errorf("network %s: prepare host: %w", s.Name, err)
	}
	if len(repairs) > 0 {
		r.log().Info("host prepared for network", "network", s.Name, "repairs", repairs)
	}
	cn, err := r.Docker.ConfigNetwork(ctx, netspec.ConfigNetworkName(s.Name))
	if err != nil {
		return netspec.NodeState{}, err
	}
	exists, have := cn.Exists, cn.Range
	if exists && cn.Network != s.Name {
		return netspec.NodeState{}, fmt.Errorf("network %s: Docker network %s (%s) is not the config-only network underlay makes for it (no %s=true, %s=%s labels); rename or remove it to let underlay create its own",
			s.Name, netspec.ConfigNetworkName(s.Name), termtext.Cell(stringid.TruncateID(cn.ID)), netspec.LabelManaged, netspec.LabelNetwork, s.Name)
	}
	if made := cn.IPAMMode(); exists && made != s.IPAM {
		// Left from a network of the name made again under the other mode
		// while this node's agent was away: a cluster-IPAM one holds no
		// range, and would pass for an older underlay's below.
		return netspec.NodeState{}, fmt.Errorf("network %s: config-only network %s was made for %s IPAM, not the spec's %s; remove it to let underlay recreate it",
			s.Name, netspec.ConfigNetworkName(s.Name), made, s.IPAM)
	}
	if exists && cn.Parent != "" && (cn.Parent != s.Parent || cn.IPvlanMode != s.IPvlanModeName()) {
		// Left likewise from a network of the name on another parent or
		// driver: its containers' endpoints would hang off another link
		// than the host's shim.
		// Docker's options are as whoever made the network wrote them:
		// quoted, as no spec's parent needs to be.
		return netspec.NodeState{}, fmt.Errorf("network %s: config-only network %s was made on parent %s (%s), not the spec's %s (%s); remove it to let underlay recreate it",
			s.Name, netspec.ConfigNetworkName(s.Name), termtext.QuoteShort(cn.Parent, maxQuoted), driverOf(cn.IPvlanMode),
			s.Parent, driverOf(s.IPvlanModeName()))
	}
	if exists && !have.IsValid() && plan.Block.IsValid() {
		// Made by an underlay that did not label the range, on a Docker that
		// does not report it (29): it was made from the lease, which stands.
		r.log().Debug("config-only network range cannot be read back; trusting the lease", "network", s.Name, "range", plan.Block)
	} else if exists && have != plan.Block {
		return netspec.NodeState{}, fmt.Errorf("network %s: config-only network %s holds range %s, not the leased %s; remove it to let underlay recreate it",
			s.Name, netspec.ConfigNetworkName(s.Name), have, plan.Block)
	}
	if !exists {
		if err := r.Docker.CreateConfigNetwork(ctx, s, plan); err != nil {
			return netspec.NodeState{}, fmt.Errorf("network %s: create config-only network: %w", s.Name, err)
		}
		r.log().Info("config-only network created", "network", s.Name, "range", plan.Block, "shim", plan.Shim)
	}
	return netspec.NodeState{State: netspec.StateReady, Range: route, Shim: plan.Shim, Range6: route6, Shim6: plan.Shim6, ShimLink: plan.ShimLink, Parent: s.Parent}, nil
}

// maxQuoted is how much of a name Docker gives, of any length, an error
// quotes (termtext.QuoteShort).
const maxQuoted = 64

// driverOf names the driver of a config-only network, or a spec, by its
// ipvlan mode (see netspec.Spec.IPvlanModeName): macvlan, or ipvlan and
// the mode.
func driverOf(ipvlanMode string) string {
	if ipvlanMode == "" {
		return netspec.Macvlan
	}
	// A config-only network's is Docker's, as its maker wrote it.
	return netspec.IPvlan + " " + termtext.Shorten(termtext.Cell(ipvlanMode), maxQuoted)
}

// maybeCreateSwarmNetwork creates the swarm network on the leader once
// every ready swarm node it waits for (waitsFor) has reported the network
// ready. Its errors name the network: the leader's check and the swarm's
// nodes are the same for every network, and the sync joins one error per
// network.
func (r *Reconciler) maybeCreateSwarmNetwork(ctx context.Context, s netspec.Spec) error {
	fail := func(what string, err error) error {
		return fmt.Errorf("network %s: %s: %w", s.Name, what, err)
	}
	leader, err := r.Swarm.IsLeader(ctx)
	if err != nil {
		return fail("is this node the swarm leader", err)
	}
	if !leader {
		return nil
	}
	exists, err := r.Swarm.SwarmNetworkExists(ctx, s.Name)
	if err != nil {
		return fail("look up the swarm network", err)
	}
	if exists {
		return nil
	}
	nodes, err := r.Swarm.ReadySwarmNodes(ctx)
	if err != nil {
		return fail("list the ready swarm nodes", err)
	}
	cctx, done := r.consulCall(ctx)
	reports, err := r.Store.Reports(cctx, s.Name)
	done()
	if err != nil {
		return fail("read the nodes' reports", err)
	}
	// A node's report is the one under its key (its Owner), as `node rm`
	// takes it, whatever identity the document names: one copied under
	// another node's key (by hand, a snapshot's) readies no node but its
	// key's.
	ready, reported := map[string]bool{}, map[string]bool{}
	for _, rep := range reports {
		ready[rep.Owner] = rep.State.State == netspec.StateReady
		reported[rep.Owner] = true
	}
	// This node's part is ready: its report follows this decision.
	ready[r.ID] = true
	stopped, err := r.stoppedAgents(ctx, nodes, reported)
	if err != nil {
		return fail("read the nodes' facts", err)
	}
	waited := 0
	for _, n := range nodes {
		if !waitsFor(n, reported[n.ID] && !stopped[n.ID]) {
			continue
		}
		waited++
		if !ready[n.ID] {
			r.log().Debug("swarm network waits for a node", "network", s.Name, "node", n.ID)
			return nil
		}
	}
	// `network rm` may have marked the spec, and removed the swarm
	// network, since this sync read it: creating it now would undo that.
	// (rm also looks once more at the end, for the window left here.)
	cctx, done = r.consulCall(ctx)
	cur, ok, err := r.Store.Get(cctx, s.Name)
	done()
	if err != nil {
		return fail("read the spec again", err)
	}
	if !ok || cur.Deleting {
		return nil
	}
	if err := r.Swarm.CreateSwarmNetwork(ctx, s); err != nil {
		return fail("create swarm network", err)
	}
	r.log().Info("swarm network created", "network", s.Name, "nodes", waited)
	return nil
}

// stoppedAgents gives the drained or paused nodes among nodes that have a
// report (reported) whose agent stopped: their facts were seen unchanged
// (their modify index) by this reconciler's clock for over StaleAfter,
// or, stamped over StaleAfter ago, for a heartbeat and a half. Such a
// report, not ready, would hold the swarm network up for as long as the
// node stays drained, no agent there to report again. A stamp is its
// node's clock: one behind this one's made a running agent look stopped
// at once, its report passed over; a running agent changes its facts
// every Heartbeat whatever its clock. Facts not found (or that the token
// may not read) say nothing: the node is waited for, as before. The
// facts are read only when such a node reports, which is rare.
func (r *Reconciler) stoppedAgents(ctx context.Context, nodes []netspec.SwarmNode, reported map[string]bool) (map[string]bool, error) {
	var asked []string
	for _, n := range nodes {
		if !waitsFor(n, false) && reported[n.ID] {
			asked = append(asked, n.ID)
		}
	}
	now := r.clock()
	heard := make(map[string]heardFacts, len(asked))
	out := map[string]bool{}
	for _, id := range asked {
		cctx, done := r.consulCall(ctx)
		f, index, found, err := r.Store.Facts(cctx, id)
		done()
		switch {
		case errors.Is(err, kvstore.ErrPermissionDenied):
			continue
		case err != nil:
			return nil, err
		case !found:
			continue
		}
		h, ok := r.heard[id]
		if !ok || h.index != index {
			h = heardFacts{index: index, since: now}
		}
		heard[id] = h
		if agentStopped(f.UpdatedAt, now.Sub(h.since), now) {
			out[id] = true
		}
	}
	r.heard = heard
	return out, nil
}

// heardFacts is a node's facts as stoppedAgents last read them: their
// modify index, and when this reconciler's clock first read them so.
type heardFacts struct {
	index uint64
	since time.Time
}

// agentStopped says an agent whose facts, stamped at by its clock, were
// seen unchanged for unchanged by the reader's clock (now) has stopped:
// unchanged over StaleAfter, or over a heartbeat and a half when its
// stamp is over StaleAfter old too (no agent running, whatever its
// clock, leaves its facts unchanged that long).
func agentStopped(at time.Time, unchanged time.Duration, now time.Time) bool {
	return unchanged > StaleAfter || unchanged >= Heartbeat*3/2 && now.Sub(at) > StaleAfter
}

// waitsFor reports whether the swarm network waits for ready node n to
// report it ready; reported is whether n has a report of it. Swarm places
// tasks only on active nodes, and stops the agent's own global task on a
// drained one (and starts none on a paused one), which then never
// reports: a drained or paused node is waited for only when it reports
// (its agent runs, from the .deb or as a paused node's task that goes
// on), so that it carries the network when made active again. One that
// does not gets its config-only network from its agent's sync once its
// agent runs there again. An availability not known is waited for.
func waitsFor(n netspec.SwarmNode, reported bool) bool {
	switch n.Availability {
	case "drain", "pause":
		return reported
	}
	return true
}

// teardown removes this node's part of a network: config-only network,
// shim (and with it the route) and range lease. The config-only network
// goes first: dockerd refuses while a network made from it is in use,
// which keeps the shim, lease and shim addresses under live containers.
// Once it is gone the rest is unfinished until done (see unfinished).
// marked are the host links underlay marked as the network's (see
// Marked): shims renamed since they were made go too, and the VLAN
// parents given (an orphan's, whose spec names none). index is s's
// modify index as read (0: an orphan's, or not known).
func (r *Reconciler) teardown(ctx context.Context, s netspec.Spec, index uint64, report bool, marked hostnet.Marks) error {
	name := s.Name
	cn, err := r.Docker.ConfigNetwork(ctx, netspec.ConfigNetworkName(name))
	switch {
	case err != nil:
		return fmt.Errorf("network %s: remove config-only network: %w", name, err)
	case cn.Exists && cn.Network != name:
		// An operator's network of the name: the rest goes all the same.
		r.log().Warn("a Docker network bears the network's config-only network name but is not underlay's; left alone",
			"network", name, "docker_network", netspec.ConfigNetworkName(name), "id", stringid.TruncateID(cn.ID))
	case cn.Exists:
		if err := r.Docker.RemoveNetwork(ctx, cn.ID); err != nil {
			return fmt.Errorf("network %s: remove config-only network: %w", name, err)
		}
		if r.unfinished == nil {
			r.unfinished = map[string]ConfigNet{}
		}
		r.unfinished[name] = cn
	default:
		if was, ok := r.unfinished[name]; ok {
			cn = was // removed at an earlier sync: it says what the network was
		}
	}
	for _, shim := range slices.Compact(slices.Sorted(slices.Values(append([]string{netspec.ShimLinkName(name)}, marked.Shims...)))) {
		err := r.RemoveShim(shim, name)
		if errors.Is(err, hostnet.ErrForeignLink) && shim == netspec.ShimLinkName(name) {
			var old bool
			if old, err = r.removeOldShim(ctx, shim, name, err); old {
				r.log().Info("an older agent's unmarked shim of the network removed: it held only this node's addresses of the network", "network", name, "shim", shim)
			}
		}
		if errors.Is(err, hostnet.ErrForeignLink) {
			// Someone else's link: the rest of the network goes all the same.
			r.log().Warn("a link bears the network's shim name but is not underlay's shim of it; left alone", "network", name, "err", err)
		} else if err != nil {
			return fmt.Errorf("network %s: remove shim %s: %w", name, shim, err)
		}
	}
	// One read of Docker's links for both: nothing of Docker's changes
	// between them, and two reads could disagree.
	users := r.linkUsers()
	if err := r.removeParents(ctx, name, append([]string{s.Parent}, marked.Parents...), users); err != nil {
		return err
	}
	// An orphan's spec names no parent: its config-only network did.
	r.releasePromisc(ctx, name, cmp.Or(s.Parent, cn.Parent), users)
	cctx, done := r.consulCall(ctx)
	_, err = r.Store.Release(cctx, name, r.ID)
	done()
	if err != nil {
		return err
	}
	cctx, done = r.consulCall(ctx)
	err = r.releaseShims(cctx, s, index, cn)
	done()
	if err != nil {
		return fmt.Errorf("network %s: release shim addresses: %w", name, err)
	}
	delete(r.unfinished, name)
	if report {
		r.report(ctx, name, netspec.NodeState{State: netspec.StateRemoved})
	}
	if !r.removed[name] {
		r.log().Info("network removed from this node", "network", name)
		if r.removed == nil {
			r.removed = map[string]bool{}
		}
		r.removed[name] = true
	}
	return nil
}

// removeOldShim removes network's shim link, name, that RemoveShim left
// as not marked underlay's (foreign, its error), when it is an older
// agent's shim (see RemoveOldShim): it holds only what this node holds on
// the network, its range leases and shim addresses, still in Consul as
// the teardown gives them back after. It returns whether it did, and
// otherwise foreign, or the error that stopped it.
func (r *Reconciler) removeOldShim(ctx context.Context, name, network string, foreign error) (bool, error) {
	if r.RemoveOldShim == nil {
		return false, foreign
	}
	var held []netip.Prefix
	cctx, done := r.consulCall(ctx)
	leases, err := r.Store.Leases(cctx, network)
	done()
	if err != nil {
		return false, err
	}
	for _, b := range slices.SortedFunc(maps.Keys(leases), netip.Prefix.Compare) {
		if r.ID != "" && leases[b] == r.ID {
			held = append(held, b)
		}
	}
	if r.IPAM != nil {
		cctx, done := r.consulCall(ctx)
		shims, err := r.IPAM.ShimsOf(cctx, network)
		done()
		if err != nil {
			return false, fmt.Errorf("this node's shim addresses: %w", err)
		}
		for _, a := range shims {
			held = append(held, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	if len(held) == 0 {
		return false, foreign
	}
	removed, err := r.RemoveOldShim(name, network, held)
	if err != nil || removed {
		return removed, err
	}
	return false, foreign
}

// linkUsers reads, once and when first asked, which host links Docker's
// networks and containers use (hostnet.DockerLinks.Users): a listing of
// every container on the host, shared by a teardown's judgements.
func (r *Reconciler) linkUsers() func(ctx context.Context) (map[string][]string, error) {
	var (
		read  bool
		users map[string][]string
		err   error
	)
	return func(ctx context.Context) (map[string][]string, error) {
		if !read {
			var dl hostnet.DockerLinks
			dl, err = r.Docker.DockerLinks(ctx)
			users, read = dl.Users(), true
		}
		return users, err
	}
}

// removeParents removes the VLAN parents given ("" passed over) that were
// made for network name and that nothing else uses (see RemoveParent);
// one in use is left, and warned of once while it stays (see inUse).
// linkUsers says what uses each host link (see Reconciler.linkUsers).
func (r *Reconciler) removeParents(ctx context.Context, name string, parents []string, linkUsers func(context.Context) (map[string][]string, error)) error {
	if r.RemoveParent == nil {
		return nil // parents are left alone
	}
	parents = slices.DeleteFunc(slices.Compact(slices.Sorted(slices.Values(parents))), func(p string) bool { return p == "" })
	var inUse []string
	for _, parent := range parents {
		// A Docker network on it (an operator's, another underlay
		// network's), and the containers on it: their endpoints, in their
		// own namespaces, are not seen by RemoveParent, and would go with
		// the parent. The rule is agent cleanup's (hostnet.DockerLinks.Users).
		dockerUsers, err := linkUsers(ctx)
		if err != nil {
			return fmt.Errorf("network %s: VLAN parent %s: %w", name, parent, err)
		}
		users := dockerUsers[parent]
		removed := false
		if len(users) > 0 {
			err = fmt.Errorf("VLAN parent %s, left in place: %w: %s", termtext.Q(parent), hostnet.ErrParentInUse, strings.Join(users, "; "))
		} else {
			removed, err = r.RemoveParent(parent, name)
		}
		switch {
		case errors.Is(err, hostnet.ErrParentInUse):
			// Links it did not make hang off it: deleting it would take
			// them along. The rest of the network goes all the same.
			inUse = append(inUse, parent)
			if !slices.Contains(r.inUse[name], parent) {
				r.log().Warn("the VLAN parent made for the network carries other links; left in place", "network", name, "parent", parent, "err", err)
			}
		case err != nil:
			return fmt.Errorf("network %s: remove VLAN parent %s: %w", name, parent, err)
		case removed:
			r.log().Info("VLAN parent made for the network removed", "network", name, "parent", parent)
		}
	}
	if r.inUse == nil {
		r.inUse = map[string][]string{}
	}
	r.inUse[name] = inUse
	if r.looked == nil {
		r.looked = map[string]parentsLook{}
	}
	r.looked[name] = parentsLook{parents: parents, at: r.clock()}
	return nil
}

// releasePromisc turns off the promiscuous mode underlay turned on
// network name's parent (see ReleasePromisc) when nothing Docker has
// uses it (hostnet.DockerLinks.Users: no Docker network left on it): the
// containers of one (another underlay network's, an operator's macvlan)
// have their endpoints in their own namespaces, which the host's check
// does not see. Failing, it warns: the network is gone all the same, and
// the parent only as it was with the network. linkUsers is as
// removeParents'.
func (r *Reconciler) releasePromisc(ctx context.Context, name, parent string, linkUsers func(context.Context) (map[string][]string, error)) {
	if r.ReleasePromisc == nil || parent == "" {
		return
	}
	users, err := linkUsers(ctx)
	if err == nil && len(users[parent]) > 0 {
		return
	}
	off := false
	if err == nil {
		off, err = r.ReleasePromisc(parent)
	}
	switch {
	case err != nil:
		r.log().Warn("cannot turn off the promiscuous mode underlay turned on the network's parent; left on", "network", name, "parent", parent, "err", err)
	case off:
		r.log().Info("the network's parent made not promiscuous again: underlay had made it so, and no network uses it now", "network", name, "parent", parent)
	}
}

// releaseShims gives back this node's shim addresses in a cluster-IPAM
// network's pools. An orphan's spec (see Sync) has a name only: its
// config-only network, cn, says whether it was a cluster-IPAM network,
// and its shims are found by the network's name. Without one (an orphan
// found by its marked links after a restart) its pools are looked for by
// the name: its spec is gone, so whatever of this node's is there is a
// leftover, and a network without pools has none. A spec's are given
// back bound to it as read at index (see IPAM.ReleaseShim).
func (r *Reconciler) releaseShims(ctx context.Context, s netspec.Spec, index uint64, cn ConfigNet) error {
	switch {
	case r.IPAM == nil:
		return nil
	case s.IPAM == netspec.Cluster:
		return r.IPAM.ReleaseShim(ctx, s, index)
	case s.IPAM == "" && (!cn.Exists || cn.Network == s.Name && cn.ClusterIPAM):
		return r.IPAM.ReleaseShimsOf(ctx, s.Name)
	}
	return nil
}

// refuse reports a spec this node will not realise: logged at error level
// once per distinct problem, counted (underlay_network_invalid_specs) and
// reported as StateInvalid, which `network inspect` shows. Whatever the
// network has on this node stays as it is: a bad spec must not tear down a
// working network either.
func (r *Reconciler) refuse(ctx context.Context, name string, err error) {
	msg := err.Error()
	if r.refused[name] != msg {
		r.log().Error("network spec refused: it fails the checks of `underlay network create`; nothing changed on this node for it",
			"network", name, "err", err, "fix", netspec.RemoveFix(name)+", or correct "+netspec.KVPrefix+name+"/spec")
		if r.refused == nil {
			r.refused = map[string]string{}
		}
		r.refused[name] = msg
	}
	r.report(ctx, name, netspec.NodeState{State: netspec.StateInvalid, Error: "spec refused: " + strings.ReplaceAll(msg, "\n", "; ")})
}

// dropOrphanReports deletes this node's reports under networks whose
// spec is gone (deleted by hand: network rm deletes the reports with
// it), which no sync would ever write again: left, they would show again
// under a network made anew with the name. Each node deletes only its
// own; node rm deletes a removed node's. A spec not listed is read
// first (Store.SpecGone): one the token may not read is not listed
// either.
func (r *Reconciler) dropOrphanReports(ctx context.Context, orphans map[string][]string) {
	for name, ids := range orphans {
		if !slices.Contains(ids, r.ID) || !r.specGone(ctx, name) {
			continue
		}
		cctx, done := r.consulCall(ctx)
		err := r.Store.DeleteReport(cctx, name, r.ID)
		done()
		if err != nil {
			r.log().Warn("cannot delete this node's report of a network whose spec is gone", "network", name, "err", err)
			continue
		}
		delete(r.reported, name)
		r.log().Info("deleted this node's report of a network whose spec is gone", "network", name)
	}
}

func (r *Reconciler) report(ctx context.Context, name string, ns netspec.NodeState) {
	ns.ID, ns.Node = r.ID, r.Node
	if ns.State != netspec.StateInvalid {
		delete(r.refused, name)
	}
	if last, ok := r.reported[name]; ok && last.ns == ns {
		return
	}
	stamped := ns
	stamped.UpdatedAt = time.Now().UTC()
	sum, err := netspec.ReportSum(stamped)
	if err == nil {
		cctx, done := r.consulCall(ctx)
		err = r.Store.Report(cctx, name, stamped)
		done()
	}
	if err != nil {
		r.log().Warn("cannot report network state", "network", name, "err", err)
		return
	}
	if r.reported == nil {
		r.reported = map[string]written{}
	}
	r.reported[name] = written{ns: ns, sum: sum}
}

// written is a report as the reconciler wrote it: its state without the
// stamp, and the digest of what was stored (netspec.ReportSum).
type written struct {
	ns  netspec.NodeState
	sum uint64
}

// Run syncs whenever the network specs or the host's links change and every
// period, so drift is repaired and new nodes pick up existing networks.
// links may be nil. Each Consul call of a sync is given up after
// kvstore.WriteWait, or period when shorter (see consulCall).
func (r *Reconciler) Run(ctx context.Context, changes, links <-chan struct{}, period time.Duration) {
	r.period = period
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		if err := r.Sync(ctx); err != nil && ctx.Err() == nil {
			r.log().Warn("network sync incomplete; will retry", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-changes:
		case <-links:
		case <-t.C:
			// Reports are not written again: only what changed, or what
			// Consul lost (see reported). (Facts is kept fresh by its own
			// heartbeat.)
		}
	}
}

// consulCall is ctx bounded for one Consul call of a sync, and the
// function that ends it. A Consul agent that accepts a call and never
// answers held the sync, and every later one, for good: each write, and
// each read (none of the sync's is a blocking query), is given up after
// kvstore.WriteWait, or Run's period when shorter (kvstore.WriteContext:
// one request of a loop, read or write, is answered in milliseconds, and
// a sync given up by the next period leaves that one to run). Given up,
// the call fails as when Consul is out of reach, the sync goes on with
// the next network, and it is counted
// (underlay_network_consul_calls_given_up_total).
func (r *Reconciler) consulCall(ctx context.Context) (context.Context, context.CancelFunc) {
	cctx, cancel := kvstore.WriteContext(ctx, r.period)
	return cctx, func() {
		if ctx.Err() == nil && errors.Is(cctx.Err(), context.DeadlineExceeded) {
			r.Metrics.countGivenUp()
		}
		cancel()
	}
}

// specGone is Store.SpecGone, bounded (see consulCall).
func (r *Reconciler) specGone(ctx context.Context, name string) bool {
	ctx, done := r.consulCall(ctx)
	defer done()
	return r.Store.SpecGone(ctx, name, r.log())
}

// shim is IPAM.Shim, bounded (see consulCall).
func (r *Reconciler) shim(ctx context.Context, s netspec.Spec, v6 bool) (netip.Addr, error) {
	ctx, done := r.consulCall(ctx)
	defer done()
	return r.IPAM.Shim(ctx, s, v6)
}

// settledRecheck is how long a settled orphan's VLAN parents are left
// unlooked at (see Sync): a parent freed meanwhile goes this late at
// most, and idle syncs between cost no Docker network listing.
const settledRecheck = 5 * time.Minute

// clock is now, or time.Now.
func (r *Reconciler) clock() time.Time {
	if r.now == nil {
		return time.Now()
	}
	return r.now()
}

// log is Log, or a discarding logger, with the package's component.
func (r *Reconciler) log() *slog.Logger {
	if r.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Log.With("component", "networks")
}
