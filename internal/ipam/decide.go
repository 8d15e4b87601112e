package ipam

import (
	"hash/fnv"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/underlay/underlay/internal/netspec"
)

// This file holds the allocator's decisions: pure functions over values,
// with no I/O and no locks. Everything that picks among several addresses
// or blocks does so in address order, so that a run is reproducible (free
// blocks from a place hashed from the node: see claimOrder; addresses the
// node freed lately last: see reuse).

// reuse says which free addresses an allocation may take. freed is when
// this node freed each address it freed lately (within reuseAfter): those
// are passed over while any other address is free, so that a late or
// repeated release of one (Docker's plugin client resends a release whose
// answer it missed, and a release names no container) finds it still free,
// not a new container's. last: nothing else is free; they are taken, the
// one freed longest ago first. held are the addresses local containers
// held at the last sweep (see heldAddrs): never taken, not even last, as
// Consul showing one free means it lost a running container's address.
// The zero value passes over nothing.
type reuse struct {
	freed map[netip.Addr]time.Time
	last  bool
	held  map[netip.Addr]bool
}

// heldFree lists, in address order, the addresses of block b that r passes
// over as held and doc does not allocate, leaving out those this node
// freed lately: a container that stopped since the sweep listed it had its
// address released. Consul lost (or another node freed) each of the rest
// while a local container holds it.
func heldFree(p Pool, b netip.Prefix, doc BlockDoc, r reuse) []netip.Addr {
	var out []netip.Addr
	for a, held := range r.held {
		if _, taken := doc.Allocs[a.String()]; held && b.Contains(a) && !taken && p.usable(a) && r.freed[a].IsZero() {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// fill allocates to each of als, in order, a free address of block b in
// doc that r allows, claiming the block for node when no node has
// affinity for it (see claims); it returns the new document and the
// addresses given (fewer than als when b runs out).
func fill(p Pool, b netip.Prefix, doc BlockDoc, node string, als []Alloc, r reuse) (BlockDoc, []netip.Addr) {
	var got []netip.Addr
	for len(got) < len(als) {
		a, ok := doc.free(p, b, r)
		if !ok {
			break
		}
		if claims(doc) {
			doc.Node = node
		}
		doc.Allocs[a.String()] = als[len(got)]
		got = append(got, a)
	}
	return doc, got
}

// claims reports whether an allocation written to doc claims its block
// for the allocating node: the block is free, or holds allocations but
// no node has affinity for it (its node was removed: see ForgetNode).
func claims(doc BlockDoc) bool { return len(doc.Allocs) == 0 || doc.Node == "" }

// candidates lists the blocks of v where node may allocate, in the order
// to try them: its own blocks with a free address r allows, then blocks
// it would claim (see claimable), and, with borrow, other nodes' blocks
// with such an address.
func candidates(p Pool, v view, node string, borrow bool, r reuse) []netip.Prefix {
	var own, others []netip.Prefix
	for _, b := range slices.SortedFunc(maps.Keys(v.docs), comparePrefix) {
		doc := v.docs[b]
		if _, ok := doc.free(p, b, r); !ok || claims(doc) || v.shadowed[b] != "" {
			continue
		}
		if doc.Node == node {
			own = append(own, b)
		} else {
			others = append(others, b)
		}
	}
	out := append(own, claimable(p, v, node, r)...)
	if borrow {
		out = append(out, others...)
	}
	return out
}

// claimable lists the blocks of v that node would claim, with a free
// address r allows, in the order to try them: those with a document and
// no node's affinity (or no allocation: a stray write) first, so that
// they are owned again (and a free block stays free while they have
// room), then blocks without a key, each in claimOrder.
func claimable(p Pool, v view, node string, r reuse) []netip.Prefix {
	var unowned []netip.Prefix
	for _, b := range slices.SortedFunc(maps.Keys(v.docs), comparePrefix) {
		doc := v.docs[b]
		if _, ok := doc.free(p, b, r); ok && claims(doc) && v.shadowed[b] == "" {
			unowned = append(unowned, b)
		}
	}
	return append(claimOrder(unowned, node), claimOrder(unclaimed(p, v, r), node)...)
}

// claimOrder is the order in which node tries free blocks: from a place
// of its own (a hash of its identity), wrapping around. Were every node to
// try the lowest free block first, all nodes needing a block at once (a
// network created, a burst) would race for the same one: one wins each
// round, the rest lose their check-and-set and pile into it, so lost
// writes grow with the square of those nodes (make bench-ipam-sim: 87% of
// writes lost with 100 nodes, 55 of 300 nodes past the 10 s commit
// timeout). From spread places, two nodes meet only by chance.
func claimOrder(free []netip.Prefix, node string) []netip.Prefix {
	if len(free) < 2 {
		return free
	}
	h := fnv.New32a()
	h.Write([]byte(node))
	i := int(h.Sum32() % uint32(len(free)))
	return append(free[i:len(free):len(free)], free[:i]...)
}

// unclaimed lists the blocks of p that have no key, nor a bad key over
// them (see view.shadowed), and a usable address r allows.
func unclaimed(p Pool, v view, r reuse) []netip.Prefix {
	var out []netip.Prefix
	for _, b := range p.Blocks() {
		if _, ok := (BlockDoc{}).free(p, b, r); ok && !v.taken[b] && v.shadowed[b] == "" {
			out = append(out, b)
		}
	}
	return out
}

// anyFree reports whether any address of p that r allows is free in v,
// outside the blocks a bad key shadows.
func anyFree(p Pool, v view, r reuse) bool {
	for b, doc := range v.docs {
		if _, ok := doc.free(p, b, r); ok && v.shadowed[b] == "" {
			return true
		}
	}
	return len(unclaimed(p, v, r)) > 0
}

// sparesElsewhere reports whether v holds spares that are not this
// allocator's (other nodes', or this node's earlier agents'), which might
// be given back on request.
func sparesElsewhere(v view, node, gen string) bool {
	for _, doc := range v.docs {
		for _, al := range doc.Allocs {
			if al.Kind == KindSpare && !(al.Node == node && al.Gen == gen) {
				return true
			}
		}
	}
	return false
}

// releaseOwn frees those of addrs that doc allocates to node, shims apart
// (only ReleaseShim frees those). It returns the new document, the
// addresses it freed and, by address, the allocations it refused to free
// because they are not node's: only their own node, or the reclaimer, may
// free them. Spares of generation gen are freed only when handed out: one
// that is not was never given to Docker (its keeper may not have listed it
// yet, or be giving it back), so its release is stray and is ignored
// (returned in unhanded).
func releaseOwn(doc BlockDoc, node, gen string, addrs []netip.Addr, handed map[netip.Addr]bool) (_ BlockDoc, refused map[netip.Addr]Alloc, unhanded, freed []netip.Addr) {
	refused = map[netip.Addr]Alloc{}
	for _, a := range addrs {
		al, ok := doc.alloc(a)
		switch {
		case !ok:
		case al.Node != node || al.Kind == KindShim:
			refused[a] = al
		case al.Kind == KindSpare && al.Gen == gen && !handed[a]:
			unhanded = append(unhanded, a)
		default:
			delete(doc.Allocs, a.String())
			freed = append(freed, a)
		}
	}
	return doc, refused, unhanded, freed
}

// reclaim frees those of want's addresses that doc still allocates exactly
// as observed: an address released and allocated again meanwhile is a new
// allocation, and stays.
func reclaim(doc BlockDoc, want map[netip.Addr]Alloc) (BlockDoc, []netip.Addr) {
	var freed []netip.Addr
	for _, a := range slices.SortedFunc(maps.Keys(want), netip.Addr.Compare) {
		if al, ok := doc.alloc(a); ok && al.same(want[a]) {
			delete(doc.Allocs, a.String())
			freed = append(freed, a)
		}
	}
	return doc, freed
}

// forget frees those of want's addresses that doc still allocates exactly
// as observed (see reclaim) and, when node has affinity for the block,
// gives it up: node was removed for good, and a block left its would
// never be owned again, only borrowed from until it emptied. It returns
// the new document, the addresses freed and whether the affinity went.
func forget(doc BlockDoc, want map[netip.Addr]Alloc, node string) (BlockDoc, []netip.Addr, bool) {
	doc, freed := reclaim(doc, want)
	disowned := node != "" && doc.Node == node
	if disowned {
		doc.Node = ""
	}
	return doc, freed, disowned
}

// sweepInput is what one leak sweep of one pool knows.
type sweepInput struct {
	Node, Gen string
	Allocs    map[netip.Addr]Alloc
	// Held are the addresses local containers hold.
	Held map[netip.Addr]bool
	// Gone are departed nodes, by identity (the leader's sweep only).
	Gone map[string]bool
	// Leader: this sweep reclaims for nodes that cannot (the leader's,
	// with a node timeout). Nodeless is when it first saw each allocation
	// that names no node; one seen so for NodeTimeout is reclaimed once
	// each of Reporters (the other nodes that may hold it) has it in its
	// report (Reports, by node: the allocations naming no node it holds
	// none of).
	Leader      bool
	Nodeless    map[netip.Addr]time.Time
	NodeTimeout time.Duration
	Reporters   map[string]bool
	Reports     map[string]map[netip.Addr]Alloc
	// Spares are the spares this allocator knows it holds (free, handed
	// or being given back); a spare of its generation it does not know
	// was claimed by a write whose answer was lost.
	Spares map[netip.Addr]bool
	// Unheld is when each of this node's addresses was first seen unheld.
	Unheld map[netip.Addr]time.Time
	// Starts are the local container starts under way on the pool's
	// network.
	Starts []Start
	// Future are the allocations dated over Grace in the future, each as
	// first seen (see planSweep).
	Future map[netip.Addr]dated
	Now    time.Time
	Grace  time.Duration
}

// dated is an allocation dated in the future: its date, and when the
// sweep first saw it with that date.
type dated struct{ At, Seen time.Time }

// sweepPlan is what the sweep does: free the addresses of departed nodes,
// orphans and this node's leaks (as observed), make this node's earlier
// spares and allocations naming no node that a local container holds its
// task addresses, and remember what is unheld (leaks included, until
// freed) and what names no node.
type sweepPlan struct {
	Departed, Leaked map[netip.Addr]Alloc
	// Orphaned are allocations naming no node, seen so for NodeTimeout:
	// no node claimed them, and every node that may hold them reported it
	// does not (see planSweep).
	Orphaned map[netip.Addr]Alloc
	// Awaiting are, by allocation naming no node seen so for NodeTimeout,
	// the nodes that may hold it and have not reported they do not (the
	// leader's sweep only).
	Awaiting map[netip.Addr][]string
	// Unclaimed are the allocations naming no node that no local container
	// holds, nor may a start under way: this node's report.
	Unclaimed map[netip.Addr]Alloc
	Adopt     []netip.Addr
	Unheld    map[netip.Addr]time.Time
	// Nodeless is when each allocation naming no node was first seen
	// (the leader's sweep only).
	Nodeless map[netip.Addr]time.Time
	// Deferred are leaks kept for now: a start under way may hold them.
	Deferred []netip.Addr
	// Future are the allocations of this node, or of no node, dated over
	// Grace in the future, each as first seen.
	Future map[netip.Addr]dated
}

// planSweep decides one pool's sweep. This node's task addresses, and
// spares of its earlier agents (one may have been handed out just before
// that agent stopped) or that this agent does not know, that no local
// container holds are leaked once they have been allocated for longer
// than Grace (allocations in flight: Docker asks for the address before
// the container runs) and unheld for Grace. While a start is under
// way, those it may hold are deferred instead: the task addresses
// allocated since the oldest such start's container was created, and the
// earlier agents' spares (claimed before, handed out at any time). An
// allocation dated over Grace in the future counts, for the starts, as
// allocated when first seen so dated (Future): it was allocated by then.
//
// An allocation with no kind (a hand edit, a bug, another version) is
// this node's task address: no other kind is safe to reclaim, and none
// would ever be. So is one of a kind this agent does not know (a newer
// version's, or a hand edit's) — left alone, it would be lost while its
// node lives — but, as it may have been claimed ahead of a start as a
// spare is, it is deferred while any start is under way.
//
// This node's shim address that a local container holds is the
// container's (adopted): Consul lost the container's address, and the shim
// was given it (see heldshim_test.go); the shim, the node's own, gets
// another address at the next network sync.
//
// One naming no node, which no node would ever release or reclaim, is the
// node's whose container holds it (adopted). A node none of whose
// containers holds it, nor a start under way (one begun before it was
// allocated), reports so (Unclaimed). The leader reclaims it, as a
// departed node's, once it has seen it for NodeTimeout and every other
// node that may hold it has reported it does not: a node whose agent is
// down, or whose sweeps fail, cannot adopt the address its container
// holds, and the address, freed, would be handed to a second container.
// So it waits, as that node's own addresses do, until the node's agent is
// back or the node departs.
func planSweep(in sweepInput) sweepPlan {
	out := sweepPlan{Departed: map[netip.Addr]Alloc{}, Leaked: map[netip.Addr]Alloc{}, Orphaned: map[netip.Addr]Alloc{},
		Unheld: map[netip.Addr]time.Time{}, Nodeless: map[netip.Addr]time.Time{}}
	out.Awaiting, out.Unclaimed, out.Future = map[netip.Addr][]string{}, map[netip.Addr]Alloc{}, map[netip.Addr]dated{}
	starting := oldestStart(in.Starts)
	for _, a := range slices.SortedFunc(maps.Keys(in.Allocs), netip.Addr.Compare) {
		al := in.Allocs[a]
		// at is when al was allocated, for the starts under way: by its
		// date, or, dated over the grace in the future, by when it was
		// first seen with that date, by which time it was allocated.
		// Taken at its word, a date ahead of every start's would keep it
		// for as long as any start is under way on the node.
		at := al.At
		if (al.Node == "" || al.Node == in.Node) && al.At.Sub(in.Now) > in.Grace {
			d := dated{At: al.At, Seen: in.Now}
			if last, ok := in.Future[a]; ok && last.At.Equal(al.At) {
				d = last
			}
			out.Future[a] = d
			at = d.Seen
		}
		earlierSpare := al.Kind == KindSpare && (al.Gen != in.Gen || !in.Spares[a])
		unknown := !knownKind(al.Kind)
		switch {
		case al.Node == "" && in.Held[a]:
			out.Adopt = append(out.Adopt, a)
		case al.Node == "":
			if !starting.IsZero() && !at.Before(starting) {
				continue // a start under way may hold it
			}
			out.Unclaimed[a] = al
			if !in.Leader {
				continue
			}
			since, ok := in.Nodeless[a]
			if !ok {
				since = in.Now
			}
			out.Nodeless[a] = since
			if in.Now.Sub(since) <= in.NodeTimeout {
				continue
			}
			var missing []string
			for _, node := range slices.Sorted(maps.Keys(in.Reporters)) {
				if rep, ok := in.Reports[node][a]; node != in.Node && (!ok || !rep.same(al)) {
					missing = append(missing, node)
				}
			}
			if len(missing) > 0 {
				out.Awaiting[a] = missing
				continue
			}
			out.Orphaned[a] = al
		case in.Gone[al.Node] && al.Node != in.Node:
			out.Departed[a] = al
		case al.Node != in.Node:
		case (earlierSpare || al.Kind == KindShim) && in.Held[a]:
			out.Adopt = append(out.Adopt, a)
		case !in.Held[a] && allocatedBefore(al, in.Now, in.Grace) && (al.Kind == KindTask || al.Kind == "" || unknown || earlierSpare):
			since, ok := in.Unheld[a]
			if !ok {
				since = in.Now
			}
			out.Unheld[a] = since
			switch {
			case in.Now.Sub(since) < in.Grace:
			case !starting.IsZero() && (earlierSpare || unknown || !at.Before(starting)):
				out.Deferred = append(out.Deferred, a)
			default:
				out.Leaked[a] = al
			}
		}
	}
	return out
}

// knownKind reports whether kind is one this agent allocates, or none
// (taken for a task's).
func knownKind(kind string) bool {
	switch kind {
	case "", KindTask, KindShim, KindSpare:
		return true
	}
	return false
}

// allocatedBefore reports whether al was allocated over grace before now:
// not in flight. An allocation dated over grace after now was made before
// this node's clock was set back (or written by a stray hand): how old it
// is cannot be told, and counting it as in flight would keep it until the
// clock caught up, so it counts as old; it is still freed only once seen
// unheld for grace.
func allocatedBefore(al Alloc, now time.Time, grace time.Duration) bool {
	return now.Sub(al.At) > grace || al.At.Sub(now) > grace
}

// startSkew allows for a container's creation time and an allocation's
// coming from two processes (dockerd, the agent) and the former's being
// listed in whole seconds.
const startSkew = time.Second

// oldestStart is when the oldest start began, less startSkew; zero if
// none is under way.
func oldestStart(starts []Start) time.Time {
	var oldest time.Time
	for _, st := range starts {
		if oldest.IsZero() || st.Since.Before(oldest) {
			oldest = st.Since
		}
	}
	if oldest.IsZero() {
		return oldest
	}
	return oldest.Add(-startSkew)
}

// planRecord picks the addresses local containers hold that the pool does
// not record (Consul lost them: a snapshot restored, a dev agent
// restarted), to record again once seen twice in a row: a container being
// removed may still be listed after its release. Addresses in unreadable
// blocks, or in blocks a bad key shadows (see view.shadowed), are left
// alone. It returns those to record and those seen once.
func planRecord(p Pool, v view, held map[netip.Addr]bool, allocs map[netip.Addr]Alloc, prev map[netip.Addr]bool) ([]netip.Addr, map[netip.Addr]bool) {
	var record []netip.Addr
	next := map[netip.Addr]bool{}
	for _, a := range slices.SortedFunc(maps.Keys(held), netip.Addr.Compare) {
		_, readable := v.docs[p.Block(a)]
		if _, ok := allocs[a]; ok || !p.usable(a) || (v.taken[p.Block(a)] && !readable) || v.shadowed[p.Block(a)] != "" {
			continue
		}
		if prev[a] {
			record = append(record, a)
		} else {
			next[a] = true
		}
	}
	return record, next
}

// departWatch is what the swarm leader remembers between two judgements of
// which nodes departed.
type departWatch struct {
	// Missing is when each node was first seen departed.
	Missing map[string]time.Time
	// Heard is, by identity, the time stamp its facts carried at the last
	// look (their UpdatedAt, renewed at every heartbeat of its agent) and
	// when this leader's clock first saw it.
	Heard map[string]netspec.Heard
}

// planDeparted decides which nodes have departed: a node is alive while
// its swarm node is Ready or its agent's facts are fresh, whatever its
// name; one neither for longer than timeout is gone.
//
// Facts are fresh while the leader has seen their stamp change within
// fresh, by its own clock: the stamp is written by the node's clock, and
// judging its age would take a live node whose clock is behind by more than
// fresh for a departed one (its addresses reclaimed while its containers
// hold them: a duplicate), and keep a dead node whose clock was ahead alive
// for as long. Facts seen for the first time count from their stamp if it
// is in the past, so a leader just elected judges a node long gone as
// before.
//
// A node holding addresses or named as a block's affinity (holders)
// without facts at all (deleted, unreadable, lost with Consul's state,
// never written) is judged as one whose facts are never fresh: a live
// agent writes them again within a heartbeat, and a node gone for good
// would otherwise keep its addresses and blocks forever. Facts
// without an identity (written by older agents) are never judged, nor
// holders named like any node's facts (older agents' allocations named
// their node by name).
func planDeparted(facts []netspec.NodeFacts, ready, holders map[string]bool, w departWatch, now time.Time, timeout, fresh time.Duration) (map[string]bool, departWatch) {
	gone := map[string]bool{}
	next := departWatch{Missing: map[string]time.Time{}, Heard: map[string]netspec.Heard{}}
	judge := func(id string) {
		since, ok := w.Missing[id]
		if !ok {
			since = now
		}
		next.Missing[id] = since
		if now.Sub(since) > timeout {
			gone[id] = true
		}
	}
	known := map[string]bool{}
	for _, f := range facts {
		known[f.ID], known[f.Node] = true, true
		if f.ID == "" {
			continue
		}
		prev, seen := w.Heard[f.ID]
		h := netspec.Hear(prev, seen, f.UpdatedAt, now)
		next.Heard[f.ID] = h
		if ready[f.ID] || now.Sub(h.At) <= fresh {
			continue
		}
		judge(f.ID)
	}
	for id := range holders {
		if id != "" && !known[id] && !ready[id] {
			judge(id)
		}
	}
	return gone, next
}

// unmiss is missing (when each node was first seen departed) after a
// stretch from unseen to now in which the leader could not look (zero
// unseen: none): each time before it moves on by the stretch, so that
// only the time the node was seen missing counts. A node then Ready
// unseen, as it is after its leader's check failed for long, is not
// departed at its first moment not Ready; nor, under a check failing at
// times, is one gone for good kept for ever, as forgetting the watch at
// each failure would.
func unmiss(missing map[string]time.Time, unseen, now time.Time) map[string]time.Time {
	if unseen.IsZero() || !now.After(unseen) {
		return missing
	}
	out := make(map[string]time.Time, len(missing))
	for id, since := range missing {
		if !since.After(unseen) {
			since = since.Add(now.Sub(unseen))
		}
		out[id] = since
	}
	return out
}

// reporters are the nodes other than self that may hold an allocation
// naming no node, and must report they do not before the leader reclaims
// it: every node with facts (it ran an agent, so its containers may be on
// a cluster-IPAM network) or holding addresses, unless departed. A swarm
// node that never ran an agent has neither: none of its containers can be
// on such a network, whose plugin is the agent.
func reporters(facts []netspec.NodeFacts, holders, gone map[string]bool, self string) map[string]bool {
	out := map[string]bool{}
	for _, f := range facts {
		out[f.ID] = true
	}
	for id := range holders {
		out[id] = true
	}
	for id := range out {
		if id == "" || id == self || gone[id] {
			delete(out, id)
		}
	}
	return out
}

// spareState is a pool's spares on one node, as the keeper sees them.
type spareState struct {
	// Free spares are claimed in Consul and not handed out.
	Free []netip.Addr
	// Handed spares were given to Docker and are still recorded as spares:
	// the next write records these allocations.
	Handed map[netip.Addr]Alloc
	// Target is how many spares to keep: the configured number, doubled
	// each time requests find none left (a burst), halved after a quiet
	// check. Dry: a request found none since the last refill; Busy: since
	// the last check.
	Target    int
	Dry, Busy bool
	// HoldUntil: another node ran short; keep no spares until then.
	HoldUntil time.Time
	// Closing: the pool is being removed from this node.
	Closing bool
	// Dropping are spares being given back, until a write confirms it;
	// never handed out.
	Dropping []netip.Addr
}

// sparePlan is what one sync of a pool's spares writes.
type sparePlan struct {
	// Record are handed spares to record as their allocations.
	Record map[netip.Addr]Alloc
	// Drop are free spares to give back; Keep the free ones left.
	Drop, Keep []netip.Addr
	// Need is how many spares to claim.
	Need int
	// Target and Busy are the pool's new ones.
	Target int
	Busy   bool
}

// planSpares decides one sync of a pool's spares. Handed spares are
// recorded once recordDelay old (most get recorded sooner, in writes made
// anyway), or all of them when stopping, closing or verifying. want is the
// configured number (0: keep none).
func planSpares(st spareState, want int, now time.Time, stopping, verify bool) sparePlan {
	// The target is never below the configured number (a pool may have
	// become known before spares were kept).
	out := sparePlan{Record: map[netip.Addr]Alloc{}, Target: max(st.Target, want), Busy: st.Busy}
	all := stopping || st.Closing || verify
	for a, al := range st.Handed {
		if all || now.Sub(al.At) >= recordDelay {
			out.Record[a] = al
		}
	}
	if verify {
		if !st.Busy {
			out.Target = max(want, st.Target/2)
		}
		out.Busy = false
	}
	switch {
	case stopping || st.Closing || now.Before(st.HoldUntil) || want == 0:
		out.Drop = slices.Clone(st.Free)
	case len(st.Free) > out.Target:
		out.Keep, out.Drop = slices.Clone(st.Free[:out.Target]), slices.Clone(st.Free[out.Target:])
	default:
		out.Keep = slices.Clone(st.Free)
		out.Need = out.Target - len(st.Free)
	}
	out.Drop = append(slices.Clone(st.Dropping), out.Drop...)
	return out
}

// spareWrite is one block's part of a spare sync.
type spareWrite struct {
	doc     BlockDoc
	changed bool
	// Recorded handed spares are now their allocations (also those whose
	// spare record was reclaimed, now free); Lost ones are held by another
	// allocation in Consul.
	Recorded, Lost []netip.Addr
	// Dropped spares were given back; Added ones claimed.
	Dropped, Added []netip.Addr
	// Unconfirmed are free spares Consul does not hold as this
	// allocator's: they must never be handed out.
	Unconfirmed []netip.Addr
}

// writeSpares applies a spare sync to block b's document: handed spares in
// b become their allocations (recorded again when their record was
// reclaimed and nothing took them), dropped ones are freed, the free ones in
// check are confirmed, and up to need free addresses that r allows become
// spares when the block is node's (or no node's: it is claimed, see
// claims).
func writeSpares(p Pool, b netip.Prefix, doc BlockDoc, node, gen string, record map[netip.Addr]Alloc, drop, check []netip.Addr, need int, now time.Time, r reuse) spareWrite {
	mine := func(a netip.Addr) bool {
		al, ok := doc.alloc(a)
		return ok && al.Kind == KindSpare && al.Node == node && al.Gen == gen
	}
	out := spareWrite{}
	for _, a := range slices.SortedFunc(maps.Keys(record), netip.Addr.Compare) {
		if !b.Contains(a) {
			continue
		}
		_, held := doc.alloc(a)
		switch {
		case mine(a):
			doc.Allocs[a.String()] = record[a]
			out.Recorded = append(out.Recorded, a)
		case !held && p.usable(a):
			// Docker has it and no node does: its spare record was
			// reclaimed meanwhile (this node looked departed). Recorded
			// again as what it is, it is never claimed afresh as a free
			// spare below and handed to a second container.
			if doc.Allocs == nil {
				doc.Allocs = map[string]Alloc{}
			}
			if claims(doc) {
				doc.Node = node
			}
			doc.Allocs[a.String()] = record[a]
			out.Recorded = append(out.Recorded, a)
		default:
			out.Lost = append(out.Lost, a)
		}
	}
	for _, a := range drop {
		if b.Contains(a) && mine(a) {
			delete(doc.Allocs, a.String())
			out.Dropped = append(out.Dropped, a)
		}
	}
	for _, a := range check {
		if b.Contains(a) && !mine(a) {
			out.Unconfirmed = append(out.Unconfirmed, a)
		}
	}
	if need > 0 && (doc.Node == node || claims(doc)) {
		als := make([]Alloc, need)
		for i := range als {
			als[i] = Alloc{Node: node, At: now.UTC(), Kind: KindSpare, Gen: gen}
		}
		doc, out.Added = fill(p, b, doc, node, als, r)
	}
	out.doc = doc
	out.changed = len(out.Recorded)+len(out.Dropped)+len(out.Added) > 0
	return out
}

func comparePrefix(x, y netip.Prefix) int { return x.Addr().Compare(y.Addr()) }
