package ipam

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/underlay/underlay/internal/backoff"
	"github.com/underlay/underlay/internal/netspec"
)

// Held reports what local containers hold.
type Held interface {
	HeldAddresses(ctx context.Context) (Local, error)
}

// Local is what this node's containers hold, from one listing of them, by
// network name.
type Local struct {
	// Held are the addresses containers show.
	Held map[string]map[netip.Addr]bool
	// Starts are the containers whose start may be under way. Docker
	// allocates a container's address as its start begins and shows it
	// only once the start is done: seconds, 42 s under load (seen), no
	// end on a hung dockerd.
	Starts map[string][]Start
}

// Start is a container start under way. Docker holds a container from
// before its start allocates the address to the start's end, and inspect
// waits for it: a container dockerd does not answer for in time is
// starting, however long (a hung start too). One dockerd answers for
// promptly is not, whatever its state: created and never started (docker
// create, or a start cut short when dockerd died: what that start
// allocated is a leak), restarting between two starts (its exit released
// its address), or its start over.
type Start struct {
	// Since is when the container was created (or last exited): the
	// address of its start is allocated after.
	Since time.Time
}

// Cluster tells the reclaimer whether this node is the swarm leader and
// which nodes are alive.
type Cluster interface {
	IsLeader(ctx context.Context) (bool, error)
	// ReadyNodes lists the identities (swarm node IDs) of the swarm's
	// nodes in state ready.
	ReadyNodes(ctx context.Context) ([]string, error)
}

// Reclaimer sets a pool right where it and the containers disagree:
//   - on every node, task addresses this node allocated that no local
//     container holds (and spares of its earlier agents) are returned
//     after Grace twice, and not while a local container start may hold
//     them (see planSweep); a spare of an earlier agent that a container
//     holds becomes a task address;
//   - on every node, addresses local containers hold that the pool does
//     not record (Consul lost them) are recorded again; what each sweep
//     lists held, the node's allocations pass over (see heldAddrs);
//   - on the swarm leader only, every address of a departed node: one
//     whose swarm node has been neither Ready nor its agent's facts fresh
//     (or present) for NodeTimeout, judged by identity, never by name
//     (see planDeparted), and its affinity for blocks where other nodes'
//     addresses stay, also of a node named only as a block's affinity
//     (see disownDeparted);
//   - allocations with no kind, or a kind this agent does not know, as
//     task addresses; those naming no node as a departed node's once
//     every node that may hold them has reported it does not (nodeless.go),
//     unless a local container holds one: it becomes that node's task
//     address (see planSweep).
//
// It frees only what it observed, still allocated as observed. A pool whose
// spec netspec.CheckStored refuses is left alone, as the agents leave the
// network: its unheld addresses are counted from zero again once it is
// fixed.
type Reclaimer struct {
	Alloc   *Allocator
	Pools   SpecPools
	Held    Held
	Cluster Cluster
	Grace   time.Duration
	// NodeTimeout is how long a node must look departed before its
	// addresses are reclaimed (0: never).
	NodeTimeout time.Duration
	// Fresh is how recently the leader must have seen a node's facts
	// change for it to count as alive whatever the swarm says: a few of its
	// agent's heartbeats (0: NodeTimeout).
	Fresh   time.Duration
	Log     *slog.Logger
	Metrics *Metrics // optional
	// wait bounds each sweep (see sweepContext); 0: sweepWait. Tests
	// shorten it.
	wait time.Duration

	mu sync.Mutex // guards following fields
	// unheld is when each of this node's addresses was first seen without
	// a container, by pool.
	unheld map[string]map[netip.Addr]time.Time
	// watch is what the leader remembers of departing nodes (leader only:
	// forgotten whenever this node is not).
	watch departWatch
	// unseen is when the leader last failed to look at the nodes (its
	// check that it leads, or its reads of them, failed) since its last
	// look; zero when it has not: the time since does not count as
	// missing (see departed).
	unseen time.Time
	// nodeless is when the leader first saw each allocation naming no
	// node, by pool (leader only).
	nodeless map[string]map[netip.Addr]time.Time
	// future is, by pool, when each allocation of this node or of no node
	// dated over Grace in the future was first seen (see planSweep).
	future map[string]map[netip.Addr]dated
	// holders are the nodes that held addresses at the last sweep: a
	// holder without facts is judged too (see planDeparted).
	holders map[string]bool
	// owners are the nodes with affinity for a block at the last sweep:
	// one with neither facts nor addresses is judged too, so that a
	// block named for a node that never ran is given up.
	owners map[string]bool
	// reported is, by pool, this node's last report of the allocations
	// naming no node it holds none of (see publishNodeless).
	reported map[string]nodelessReport
	// awaiting is, by pool, the allocations naming no node the leader last
	// logged as kept for nodes that have not reported (see noteAwaiting).
	awaiting map[string]map[netip.Addr]string
	// unrecorded holds, by pool, addresses local containers hold that the
	// pool did not record at the last sweep.
	unrecorded map[string]map[netip.Addr]bool
	// keptNone says, by pool, that this node's kept-addresses key is
	// known to be absent (see publishKept).
	keptNone map[string]bool
	// refused is the problem last logged, by network, of each cluster
	// spec the sweep leaves alone (see noteRefused).
	refused map[string]string
}

// Sweep runs one pass over every cluster-IPAM pool.
func (r *Reclaimer) Sweep(ctx context.Context) error {
	l, err := r.Pools.Store.ReadListing(ctx)
	if err != nil {
		return err
	}
	specs := l.Specs
	begun := r.Alloc.now()
	local, err := r.Held.HeldAddresses(ctx)
	if err != nil {
		return err
	}
	// From now on the node's allocations pass over what its containers
	// hold, as listed now (see heldAddrs).
	r.Alloc.held.set(local.Held, local.Starts, begun)
	gone, reporters, err := r.departed(ctx)
	if err != nil {
		return err
	}
	r.dropDepartedReports(ctx, l.Orphans, gone)
	// A spec that fails the checks of `network create` is served by no
	// agent; its pool's geometry (range, gateway, neighbours) cannot be
	// trusted to say what is a leak or whose an address is, so its blocks
	// are left as they are until it is fixed or removed.
	refused := l.Refused()
	r.noteRefused(specs, refused)
	var errs []error
	seen, holders, owners := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, spec := range specs {
		if spec.IPAM != netspec.Cluster || refused[spec.Name] != nil {
			continue
		}
		for _, v6 := range []bool{false, true} {
			if v6 && !spec.IPv6Subnet.IsValid() {
				continue
			}
			p, _ := r.Pools.pool(spec, v6)
			p.specIndex = l.SpecIndex(spec.Name)
			seen[p.ID()] = true
			errs = append(errs, r.settleReleases(ctx, p, local.Held[spec.Name], local.Starts[spec.Name], begun))
			errs = append(errs, r.sweepPool(ctx, p, local.Held[spec.Name], local.Starts[spec.Name], gone, reporters, holders, owners))
		}
	}
	r.mu.Lock()
	r.holders, r.owners = holders, owners
	for id := range r.nodeless {
		if !seen[id] {
			delete(r.nodeless, id)
		}
	}
	for id := range r.future {
		if !seen[id] {
			delete(r.future, id)
		}
	}
	for id := range r.unheld {
		if !seen[id] {
			delete(r.unheld, id)
			delete(r.keptNone, id)
			delete(r.reported, id)
			delete(r.awaiting, id)
			r.Metrics.setDeferred(id, -1)
		}
	}
	r.mu.Unlock()
	r.Alloc.store.forget(seen)
	return errors.Join(errs...)
}

// noteRefused logs each cluster-IPAM spec the sweep leaves alone, once per
// distinct problem: the sweep runs every few seconds, and the network
// reconciler already reports the refusal (underlay_network_invalid_specs,
// `network inspect`).
func (r *Reclaimer) noteRefused(specs []netspec.Spec, refused map[string]error) {
	now := map[string]string{}
	for _, spec := range specs {
		if err := refused[spec.Name]; spec.IPAM == netspec.Cluster && err != nil {
			now[spec.Name] = strings.ReplaceAll(err.Error(), "\n", "; ")
		}
	}
	r.mu.Lock()
	last := r.refused
	r.refused = now
	r.mu.Unlock()
	for _, name := range slices.Sorted(maps.Keys(now)) {
		if last[name] != now[name] {
			r.log().Warn("network spec refused: its pool is not swept until it is fixed", "network", name, "err", now[name],
				"fix", netspec.RemoveFix(name)+", or correct "+netspec.KVPrefix+name+"/spec")
		}
	}
}

// sweepPool sweeps one pool, adding the nodes holding its addresses to
// holders, and those with affinity for its blocks to owners.
func (r *Reclaimer) sweepPool(ctx context.Context, p Pool, held map[netip.Addr]bool, starts []Start, gone, reporters, holders, owners map[string]bool) error {
	v, err := r.Alloc.store.scan(ctx, p)
	if err != nil {
		return err
	}
	for _, doc := range v.docs {
		owners[doc.Node] = true
	}
	allocs := allocations(v)
	r.Alloc.held.recorded(p, allocs)
	nodeless := false
	for _, al := range allocs {
		holders[al.Node] = true
		nodeless = nodeless || al.Node == ""
	}
	errs := []error{r.recordHeld(ctx, p, v, held, allocs)}
	for _, a := range r.Alloc.spares.dropHeld(p, held) {
		r.log().Error("a free spare address is held by a local container (Consul lost or freed it while the container ran, and this node claimed it again): not handing it out; recorded as the container's",
			"pool", p.ID(), "addr", a)
	}
	var reports map[string]map[netip.Addr]Alloc
	if gone != nil && nodeless && len(reporters) > 0 {
		// Unread, no node has reported: nothing naming no node is freed.
		pairs, err := r.Alloc.store.kv.List(ctx, nodelessPrefix(p))
		if err != nil {
			errs = append(errs, fmt.Errorf("read the reports of addresses allocated to no node in %s: %w", p.ID(), err))
		}
		reports = decodeNodeless(p, pairs)
	}
	r.mu.Lock()
	// gone is nil unless this node judges departed nodes (see departed).
	plan := planSweep(sweepInput{Node: r.Alloc.node, Gen: r.Alloc.gen, Allocs: allocs, Held: held, Gone: gone,
		Leader: gone != nil, Nodeless: r.nodeless[p.ID()], NodeTimeout: r.NodeTimeout, Reporters: reporters, Reports: reports,
		Spares: r.Alloc.spares.known(p), Unheld: r.unheld[p.ID()], Starts: starts, Future: r.future[p.ID()],
		Now: r.Alloc.now(), Grace: r.Grace})
	lastFuture := r.future[p.ID()]
	if r.future == nil {
		r.future = map[string]map[netip.Addr]dated{}
	}
	r.future[p.ID()] = plan.Future
	if r.unheld == nil {
		r.unheld = map[string]map[netip.Addr]time.Time{}
	}
	r.unheld[p.ID()] = plan.Unheld
	if r.nodeless == nil {
		r.nodeless = map[string]map[netip.Addr]time.Time{}
	}
	r.nodeless[p.ID()] = plan.Nodeless
	r.mu.Unlock()
	for _, a := range slices.SortedFunc(maps.Keys(plan.Future), netip.Addr.Compare) {
		if d := plan.Future[a]; !lastFuture[a].At.Equal(d.At) {
			r.log().Warn("an address is allocated with a date in the future (this node's clock set back, or a key written by hand): taken as allocated now, when first seen, to judge whether a container start under way may hold it",
				"pool", p.ID(), "addr", a, "node", allocs[a].Node, "allocated", d.At, "ahead", d.At.Sub(d.Seen).Round(time.Second))
		}
	}
	r.Metrics.setDeferred(p.ID(), len(plan.Deferred))
	if len(plan.Deferred) > 0 {
		r.log().Debug("unheld addresses kept: a local container start may hold them", "pool", p.ID(), "addrs", plan.Deferred)
	}
	errs = append(errs, r.publishKept(ctx, p, plan.Deferred), r.publishNodeless(ctx, p, plan.Unclaimed))
	r.noteAwaiting(p, plan.Awaiting)
	for _, addr := range plan.Adopt {
		// A spare of this node's previous agent that Docker got before
		// the agent stopped, or an allocation naming no node that a
		// container here holds: now this node's task's.
		was, adopted, err := r.Alloc.adopt(ctx, p, addr)
		if err != nil {
			errs = append(errs, err)
		}
		switch {
		case adopted && was.Node == "":
			r.log().Warn("recorded as this node's an address allocated to no node: a local container holds it", "pool", p.ID(), "addr", addr,
				"kind", was.Kind, "allocated", was.At)
		case adopted && was.Kind == KindShim:
			r.log().Error("this node's shim address is held by a local container (Consul lost the container's address, and the shim was given it): recorded as the container's; the shim gets another address at the next network sync",
				"pool", p.ID(), "addr", addr)
		}
	}
	freed, err := r.Alloc.reclaimObserved(ctx, p, plan.Departed)
	departed := map[string]bool{}
	for _, addr := range freed {
		r.log().Warn("reclaimed the address of a departed node", "pool", p.ID(), "addr", addr, "node", plan.Departed[addr].Node)
		departed[plan.Departed[addr].Node] = true
	}
	for node := range departed {
		// What it kept for its starts went with its addresses.
		errs = append(errs, publishKept(ctx, r.Alloc.store.kv, p, node, nil, time.Time{}))
	}
	r.Metrics.reclaim("departed_node", len(freed))
	errs = append(errs, err, r.disownDeparted(ctx, p, v, gone))
	freed, err = r.Alloc.reclaimObserved(ctx, p, plan.Orphaned)
	r.mu.Lock()
	for _, addr := range freed {
		delete(r.nodeless[p.ID()], addr)
	}
	r.mu.Unlock()
	for _, addr := range freed {
		r.log().Warn("reclaimed an address allocated to no node: no node's container claimed it", "pool", p.ID(), "addr", addr,
			"kind", plan.Orphaned[addr].Kind, "allocated", plan.Orphaned[addr].At, "node_timeout", r.NodeTimeout)
	}
	r.Metrics.reclaim("no_node", len(freed))
	errs = append(errs, err)
	freed, err = r.Alloc.reclaimObserved(ctx, p, plan.Leaked)
	r.mu.Lock()
	for _, addr := range freed {
		delete(r.unheld[p.ID()], addr)
		// Freed: a release of it held back is done.
		r.Alloc.held.unpend(p, addr)
	}
	r.mu.Unlock()
	for _, addr := range freed {
		switch kind := plan.Leaked[addr].Kind; {
		case kind == "":
			r.log().Warn("reclaimed a leaked address allocated with no kind, as a task's: no container holds it", "pool", p.ID(), "addr", addr, "allocated", plan.Leaked[addr].At)
			continue
		case !knownKind(kind):
			r.log().Warn("reclaimed a leaked address of a kind this agent does not know, as a task's: no container holds it", "pool", p.ID(), "addr", addr,
				"kind", kind, "allocated", plan.Leaked[addr].At)
			continue
		}
		r.log().Warn("reclaimed a leaked address: no container holds it", "pool", p.ID(), "addr", addr, "allocated", plan.Leaked[addr].At)
	}
	r.Metrics.reclaim("leak", len(freed))
	return errors.Join(append(errs, err)...)
}

// settleReleases does the releases of p's addresses held back (see
// Allocator.Release) that the listing begun at begun lets go: no
// container holds the address, nor may a start under way (see
// heldAddrs.settleable).
func (r *Reclaimer) settleReleases(ctx context.Context, p Pool, held map[netip.Addr]bool, starts []Start, begun time.Time) error {
	var errs []error
	for _, addr := range r.Alloc.held.settleable(p, held, starts, begun) {
		done, err := r.Alloc.settle(ctx, p, addr)
		if err != nil {
			errs = append(errs, fmt.Errorf("release %s, held back, in %s: %w", addr, p.ID(), err))
		}
		if !done {
			continue
		}
		r.log().Info("released an address whose release was held back: no container holds it", "pool", p.ID(), "addr", addr)
		r.Metrics.reclaim("held_release", 1)
	}
	return errors.Join(errs...)
}

// publishKept publishes the addresses this node's sweep of p kept for
// starts under way: at every sweep while there are any (their time then
// says the agent still judges them so), and once, a deletion, when there
// are none any more or the agent has just started (an earlier agent's key
// may be left).
func (r *Reclaimer) publishKept(ctx context.Context, p Pool, kept []netip.Addr) error {
	r.mu.Lock()
	none := r.keptNone[p.ID()]
	r.mu.Unlock()
	if len(kept) == 0 && none {
		return nil
	}
	if err := publishKept(ctx, r.Alloc.store.kv, p, r.Alloc.node, kept, r.Alloc.now()); notServed(err) {
		// Its network went after the sweep read the specs: nothing is
		// written under its tree, and the next sweep leaves it.
		r.log().Debug("addresses kept for starts not published: the network is being removed, or gone", "pool", p.ID(), "err", err)
		return nil
	} else if err != nil {
		return err
	}
	r.mu.Lock()
	if r.keptNone == nil {
		r.keptNone = map[string]bool{}
	}
	r.keptNone[p.ID()] = len(kept) == 0
	r.mu.Unlock()
	return nil
}

// publishNodeless publishes this node's report of the allocations of p
// naming no node that it holds none of, when it changed, is due again, or
// the agent has just started (an earlier agent's key may be left).
func (r *Reclaimer) publishNodeless(ctx context.Context, p Pool, unclaimed map[netip.Addr]Alloc) error {
	now := r.Alloc.now()
	r.mu.Lock()
	last, known := r.reported[p.ID()]
	r.mu.Unlock()
	if !republish(last, known, unclaimed, now) {
		return nil
	}
	if err := publishNodeless(ctx, r.Alloc.store.kv, p, r.Alloc.node, unclaimed); notServed(err) {
		// As in publishKept.
		r.log().Debug("report of addresses allocated to no node not published: the network is being removed, or gone", "pool", p.ID(), "err", err)
		return nil
	} else if err != nil {
		return err
	}
	r.mu.Lock()
	if r.reported == nil {
		r.reported = map[string]nodelessReport{}
	}
	r.reported[p.ID()] = nodelessReport{allocs: unclaimed, at: now}
	r.mu.Unlock()
	return nil
}

// noteAwaiting logs, once per address and set of nodes, each allocation
// naming no node that the leader keeps past the node timeout because nodes
// that may hold it have not reported they do not.
func (r *Reclaimer) noteAwaiting(p Pool, awaiting map[netip.Addr][]string) {
	now := map[netip.Addr]string{}
	for a, nodes := range awaiting {
		now[a] = strings.Join(nodes, ",")
	}
	r.mu.Lock()
	last := r.awaiting[p.ID()]
	if r.awaiting == nil {
		r.awaiting = map[string]map[netip.Addr]string{}
	}
	r.awaiting[p.ID()] = now
	r.mu.Unlock()
	for _, a := range slices.SortedFunc(maps.Keys(now), netip.Addr.Compare) {
		if last[a] != now[a] {
			r.log().Warn("kept an address allocated to no node: nodes whose containers may hold it have not reported they do not (is their agent running?)",
				"pool", p.ID(), "addr", a, "nodes", now[a], "fix", "start those nodes' agents, or `underlay node rm` nodes removed from the swarm")
		}
	}
}

// recordHeld allocates again, to this node, addresses local containers
// hold that the pool does not record (see planRecord).
func (r *Reclaimer) recordHeld(ctx context.Context, p Pool, v view, held map[netip.Addr]bool, allocs map[netip.Addr]Alloc) error {
	r.mu.Lock()
	if r.unrecorded == nil {
		r.unrecorded = map[string]map[netip.Addr]bool{}
	}
	record, next := planRecord(p, v, held, allocs, r.unrecorded[p.ID()])
	r.unrecorded[p.ID()] = next
	r.mu.Unlock()
	if len(record) == 0 {
		return nil
	}
	// held was listed before the pool was read: a container that stopped
	// in between released its address and is gone from a listing now.
	// Recorded from the stale one, the address would be a leak.
	now, err := r.Held.HeldAddresses(ctx)
	if err != nil {
		return fmt.Errorf("list containers again before recording what the pool lost: %w", err)
	}
	var errs []error
	for _, addr := range record {
		if !now.Held[p.Network][addr] {
			continue
		}
		if err := r.Alloc.allocateAt(ctx, p, addr, Alloc{Node: r.Alloc.node, At: r.Alloc.now().UTC(), Kind: KindTask}); err != nil {
			r.log().Error("a local container holds an address the pool does not record, and it cannot be recorded: another node may use it too", "pool", p.ID(), "addr", addr, "err", err)
			errs = append(errs, err)
			continue
		}
		r.log().Warn("recorded an address a local container holds that the pool had lost", "pool", p.ID(), "addr", addr)
		r.Metrics.reclaim("recorded_held", 1)
	}
	return errors.Join(errs...)
}

// recordLost records again, at once, the addresses this node's
// allocations and spare claims found free in Consul while a local
// container held them at the last sweep (see heldAddrs.noteFree): until
// recorded, another node allocating in their block may hand one out, and
// the sweep records them only at its second sighting, a period or two
// away. A fresh listing of the containers must still show each held, as
// for the sweep's record (see recordHeld), and this node must not have
// freed it lately: a container stopped since had its address released
// (one whose address Consul had lost is still listed for a moment, its
// release freeing nothing: recorded so, the address is a leak, which the
// sweep returns; the sweep's two sightings avoid that leak, at the price
// of the window). Each is recorded as recordHeld records one: this
// node's task, written only where the block records no one.
func (r *Reclaimer) recordLost(ctx context.Context) {
	lost := r.Alloc.held.takeLost()
	if len(lost) == 0 {
		return
	}
	now, err := r.Held.HeldAddresses(ctx)
	if err != nil {
		if !stopped(ctx) {
			r.log().Warn("cannot list the local containers to record the addresses Consul lost under them; the sweep records them", "err", err)
		}
		return
	}
	for _, l := range lost {
		p, addr := l.pool, l.addr
		if !now.Held[p.Network][addr] || !r.Alloc.freed.recent(p, r.Alloc.now())[addr].IsZero() {
			continue
		}
		if err := r.Alloc.allocateAt(ctx, p, addr, Alloc{Node: r.Alloc.node, At: r.Alloc.now().UTC(), Kind: KindTask}); err != nil {
			if cur, rerr := r.Alloc.store.fresh(ctx, p, p.Block(addr)); rerr == nil {
				if al, ok := cur.doc.alloc(addr); ok && al.Node == r.Alloc.node {
					continue // recorded meanwhile, by the sweep
				}
			}
			r.log().Error("a local container holds an address Consul showed free, and it cannot be recorded: another node may use it too", "pool", p.ID(), "addr", addr, "err", err)
			continue
		}
		r.log().Warn("recorded at once an address a local container holds that the pool had lost", "pool", p.ID(), "addr", addr)
		r.Metrics.reclaim("recorded_held", 1)
	}
}

// departed returns, on the leader, the identities of departed nodes (a
// map, empty if none) and the other nodes that must report an allocation
// naming no node before it is reclaimed (see reporters); elsewhere, or
// with no NodeTimeout, nil.
func (r *Reclaimer) departed(ctx context.Context) (gone, report map[string]bool, err error) {
	if r.Cluster == nil || r.NodeTimeout <= 0 {
		return nil, nil, nil
	}
	leader, err := r.Cluster.IsLeader(ctx)
	if err == nil && !leader {
		// Another manager judges meanwhile, and what it saw this node
		// did not: a node first seen missing before, then Ready while
		// another led, would be departed at once were this node elected
		// again, its addresses freed under its running containers.
		r.mu.Lock()
		r.watch, r.unseen = departWatch{}, time.Time{}
		r.mu.Unlock()
		return nil, nil, nil
	}
	var ready []string
	var facts []netspec.NodeFacts
	if err == nil {
		ready, err = r.Cluster.ReadyNodes(ctx)
	}
	if err == nil {
		facts, err = r.Pools.Store.AgentsNodes(ctx) // none under keys no agent writes
	}
	if err != nil {
		// A look that failed (docker info timing out now and then) is
		// no sign of another leader: forgetting the watch at each would
		// keep a node gone for good from ever being departed. What
		// this node did not see does not count (see unmiss).
		r.mu.Lock()
		if r.unseen.IsZero() {
			r.unseen = r.Alloc.now()
		}
		r.mu.Unlock()
		return nil, nil, err
	}
	alive := map[string]bool{}
	for _, id := range ready {
		alive[id] = true
	}
	fresh := r.Fresh
	if fresh <= 0 {
		fresh = r.NodeTimeout
	}
	r.mu.Lock()
	r.watch.Missing = unmiss(r.watch.Missing, r.unseen, r.Alloc.now())
	r.unseen = time.Time{}
	// Sweep replaces holders whole, never changes it in place.
	holders := r.holders
	judged := maps.Clone(holders)
	if judged == nil {
		judged = map[string]bool{}
	}
	maps.Copy(judged, r.owners)
	gone, watch := planDeparted(facts, alive, judged, r.watch, r.Alloc.now(), r.NodeTimeout, fresh)
	r.watch = watch
	r.mu.Unlock()
	r.unlistedFactsRead(ctx, facts, gone)
	return gone, reporters(facts, holders, gone, r.Alloc.node), nil
}

// unlistedFactsRead drops from gone the nodes judged for having no facts
// listed whose facts key cannot be read directly
// (netspec.Store.FactsReadable): Consul leaves out of a listing the keys
// the token may not read, so a node alive by its facts would be taken for
// one without any, and its addresses and blocks reclaimed. Only the
// departed, which is rare, are read.
func (r *Reclaimer) unlistedFactsRead(ctx context.Context, facts []netspec.NodeFacts, gone map[string]bool) {
	for _, id := range slices.Sorted(maps.Keys(gone)) {
		listed := slices.ContainsFunc(facts, func(f netspec.NodeFacts) bool { return f.ID == id || f.Node == id })
		if !listed && !r.Pools.Store.FactsReadable(ctx, id, r.log()) {
			delete(gone, id)
		}
	}
}

// disownDeparted gives up the affinity of departed nodes (gone) for p's
// blocks in v that still hold other nodes' addresses once theirs are
// reclaimed: no allocator of a departed node claims them again, and left
// its, they would fill only by borrowing until they emptied. The next node
// to allocate there claims them (see claims). Were the node alive after
// all, it only claims them again the same way.
func (r *Reclaimer) disownDeparted(ctx context.Context, p Pool, v view, gone map[string]bool) error {
	var errs []error
	for _, b := range slices.SortedFunc(maps.Keys(v.docs), comparePrefix) {
		node := v.docs[b].Node
		if node == "" || node == r.Alloc.node || !gone[node] {
			continue
		}
		var disowned bool
		doc, err := r.Alloc.store.update(ctx, p, b, func(doc BlockDoc) (BlockDoc, bool) {
			doc, _, disowned = forget(doc, nil, node)
			return doc, disowned
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("give up the affinity of departed node %s for %s: %w", node, blockPath(p, b), err))
			continue
		}
		if disowned && len(doc.Allocs) > 0 {
			r.log().Warn("gave up a departed node's affinity for a block other nodes' addresses stay in: the next node to allocate there claims it",
				"pool", p.ID(), "block", b, "node", node)
		}
	}
	return errors.Join(errs...)
}

// Run sweeps every period until ctx ends. It reads what the node's
// earlier agents handed out and lists the local containers at once, and
// again with growing delays until both are done (see start): until then,
// the node's allocations know of none to pass over (see heldAddrs), and
// its plugin is not served (see Listed). Each sweep, each attempt at the
// start and each record of lost addresses is bounded (see sweepContext).
func (r *Reclaimer) Run(ctx context.Context, period time.Duration) {
	notes := r.Alloc.held.notes()
	delays := backoff.Backoff{Min: 200 * time.Millisecond, Max: min(period, 10*time.Second)}
	started := func() bool {
		sctx, cancel := r.sweepContext(ctx, period)
		defer cancel()
		return r.start(sctx)
	}
	for !started() && ctx.Err() == nil {
		backoff.Sleep(ctx, delays.Next())
	}
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-notes:
			sctx, cancel := r.sweepContext(ctx, period)
			r.recordLost(sctx)
			cancel()
			continue
		case <-t.C:
		}
		sctx, cancel := r.sweepContext(ctx, period)
		err := r.Sweep(sctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			r.log().Warn("address reclaim sweep incomplete", "err", fmt.Errorf("sweep: %w", err))
		}
	}
}

// sweepWait is the least time one sweep may take before it is given up.
// A sweep makes many calls, to Consul and to dockerd, one after the other
// (each of dockerd's bounded, see dockerhost's callWait, and those through
// the shared batch by commitTimeout): seconds, at most, in a large
// cluster, as long as both answer. A Consul agent that accepted a call and
// never answers held the reclaimer for good, no later sweep run. Given up
// then, the sweep fails (logged) and the next one runs: what it did not
// do, the next does.
const sweepWait = time.Minute

// sweepContext is ctx bounded for one sweep run every period: by
// sweepWait (Reclaimer.wait in tests), or by period when longer, since the
// next sweep is not due before then anyway and a slow one should not be
// cut short for nothing. Not by period when shorter: a sweep that takes
// longer than a short period only delays the next tick (the ticker drops
// it), and cut short it might never be done.
func (r *Reclaimer) sweepContext(ctx context.Context, period time.Duration) (context.Context, context.CancelFunc) {
	d := r.wait
	if d <= 0 {
		d = sweepWait
	}
	return context.WithTimeout(ctx, max(d, period))
}

// Listed returns a channel closed once a listing of the local containers
// has been taken in, by Run (after reading what the node's earlier agents
// handed out, see start) or a sweep: before, the node's allocations
// know of no address its containers hold, and would hand one out again
// that Consul lost under a container (an agent restarted after its node
// was taken for departed). The agent serves its plugin's requests only
// from then on.
func (r *Reclaimer) Listed() <-chan struct{} { return r.Alloc.held.firstListed() }

// start is what Run does first: it takes the addresses Consul records as
// handed out by the node's earlier agents (see primeAll), then lists the
// local containers (see listHeld), and says whether both were done. In
// that order: an address Consul loses after the first, its container's
// start done after the listing began, is passed over all the same. Not
// read (Consul out of reach), the listing waits: one of those addresses
// Consul loses before they are read would be missed, its container's
// start under way at the listing.
func (r *Reclaimer) start(ctx context.Context) bool {
	return r.primeAll(ctx) && r.listHeld(ctx)
}

// primeAll has the node's allocations pass over, in every cluster-IPAM
// pool, the task addresses Consul records as the node's (see
// heldAddrs.prime): starts its earlier agent answered may still be under
// way, their containers in no listing, and an address of one Consul
// loses before the next sweep would be handed to a second container.
// Read only at the pool's first allocation, as it was, it was missed when
// Consul lost it before. A pool made later is read at its first
// allocation or spare claim. It says whether every pool was read.
func (r *Reclaimer) primeAll(ctx context.Context) bool {
	if r.Pools.Store == nil {
		return true
	}
	l, err := r.Pools.Store.ReadListing(ctx)
	if err != nil {
		if !stopped(ctx) {
			r.log().Warn("cannot read the network specs, to pass over the addresses this node handed out before the agent started: the IPAM plugin serves no request until they are; retrying", "err", err)
		}
		return false
	}
	ok := true
	refused := l.Refused()
	for _, spec := range l.Specs {
		if spec.IPAM != netspec.Cluster || refused[spec.Name] != nil {
			continue
		}
		for _, v6 := range []bool{false, true} {
			if v6 && !spec.IPv6Subnet.IsValid() {
				continue
			}
			p, _ := r.Pools.pool(spec, v6)
			p.specIndex = l.SpecIndex(spec.Name)
			if err := primeHandouts(ctx, r.Alloc.store, r.Alloc.held, p, r.Alloc.node, r.Alloc.gen, r.Alloc.now()); err != nil {
				ok = false
				if !stopped(ctx) {
					r.log().Warn("cannot read the addresses this node handed out before the agent started: the IPAM plugin serves no request until they are; retrying", "pool", p.ID(), "err", err)
				}
			}
		}
	}
	return ok
}

// listHeld lists what the local containers hold for the node's
// allocations to pass over (see heldAddrs), and says whether it did; a
// failure is logged.
func (r *Reclaimer) listHeld(ctx context.Context) bool {
	begun := r.Alloc.now()
	local, err := r.Held.HeldAddresses(ctx)
	if err != nil {
		if !stopped(ctx) {
			r.log().Warn("cannot list the local containers' addresses: the IPAM plugin serves no request until they are; retrying", "err", err)
		}
		return false
	}
	r.Alloc.held.set(local.Held, local.Starts, begun)
	return true
}

// log is Log, or a discarding logger, with the package's component.
func (r *Reclaimer) log() *slog.Logger {
	if r.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Log.With("component", "ipam")
}

// dropDepartedReports deletes the reports of departed nodes (gone: the
// leader's judgement, see departed) under networks that have no spec
// key (orphans, netspec.Listing.Orphans): their spec deleted by hand. A
// live node's agent deletes its own at its next sync; a departed node's
// would stay until `underlay node rm`, and show again under a network
// made anew with the name. A node judged departed that is alive after
// all writes its report again at its next sync, as it does one Consul
// lost. Reports under a network with a spec key are left: network rm,
// or node rm, deletes those. A spec not listed is read first
// (netspec.Store.SpecGone): one the token may not read is not listed
// either.
func (r *Reclaimer) dropDepartedReports(ctx context.Context, orphans map[string][]string, gone map[string]bool) {
	for _, name := range slices.Sorted(maps.Keys(orphans)) {
		confirmed := false
		for _, id := range orphans[name] {
			if !gone[id] || id == r.Alloc.node {
				continue
			}
			if !confirmed && !r.Pools.Store.SpecGone(ctx, name, r.log()) {
				break
			}
			confirmed = true
			if err := r.Pools.Store.DeleteReport(ctx, name, id); err != nil {
				r.log().Warn("cannot delete a departed node's report of a network whose spec is gone", "network", name, "node", id, "err", err)
				continue
			}
			r.log().Info("deleted a departed node's report of a network whose spec is gone", "network", name, "node", id)
		}
	}
}

// stopped says whether ctx was cancelled (the agent stopping): a failure
// then is not logged. One given up at its bound (see sweepContext) is.
func stopped(ctx context.Context) bool { return errors.Is(ctx.Err(), context.Canceled) }
