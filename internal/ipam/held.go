package ipam

import (
	"context"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// msgLostHeld is logged, once per address, when an allocation of this
// node finds free in Consul an address a local container holds.
const msgLostHeld = "Consul shows free an address a local container holds (it lost or freed it while the container ran): not handing it out; recording it again as the container's once a fresh listing of the containers shows it still held"

// heldAddrs is what this node's containers held at the last listing of
// them by the leak sweep (Reclaimer.Sweep, every --ipam-sweep, and once as
// it starts): the node's allocations and spare claims pass over those
// addresses (see reuse), never handing out one a running container holds
// that Consul lost or freed under it (a reclaim of the node taken for
// departed, a Consul server restarted empty, a stray release), in the
// window before it is recorded again. It costs the hot path no read of
// Docker: the sweep refreshes it. A container gone since lets its address
// be handed out after the next sweep; until then it is only passed over.
// So is every task address this node handed out since (handed) until a
// listing begun after shows what became of it: a container started since
// the last sweep is in no listing, and Consul losing its address (a stray
// release, the node taken for departed while frozen) would otherwise have
// the node hand it to a second local container at its next request. A
// release does not end that: a release names no container, and a stray
// one is how Consul loses a running container's address.
// Another node's allocations do not see it: an address held here in a
// block that node allocates from (borrowing, or a request for that
// address) is covered only by its record, so each address an allocation
// finds so (noteFree) is handed to the reclaimer, which records it at
// once if a fresh listing of the containers still shows it held (see
// Reclaimer.recordLost), rather than at the sweep's second sighting.
type heldAddrs struct {
	mu sync.Mutex // guards following fields
	// at are the addresses held, by network name, as last listed; the
	// whole is replaced at each listing, never changed in place.
	at map[string]map[netip.Addr]bool
	// handed are, by network name, the task addresses this node handed
	// out, with when, that no listing begun after has judged: held then
	// (at has them), or in no container and no start's (gone).
	handed map[string]map[netip.Addr]handout
	// primedIDs are the pools, by ID, whose handouts by an earlier agent
	// of the node were taken into handed (see prime).
	primedIDs map[string]bool
	// noted are, by network name, those an allocation found free in
	// Consul and logged, until a sweep finds them recorded again or no
	// longer held.
	noted map[string]map[netip.Addr]bool
	// pending are, by network name, the releases held back (see
	// Allocator.Release): of addresses an earlier agent of this node
	// freed lately, freed once a listing shows no container holds them.
	pending map[string]map[netip.Addr]pendingRelease
	// lost counts the addresses noted (a metric).
	lost atomic.Int64
	// toRecord are the addresses noted since the reclaimer last took
	// them, to record at once (see Reclaimer.recordLost), by network and
	// address, with the pool they were noted in.
	toRecord map[lostKey]Pool
	// noting is signalled when an address is noted (nil: not yet asked
	// for, see noted).
	noting chan struct{}
	// listed is closed by the first set: from then on, the node's
	// allocations know what its containers hold (nil: not yet asked for,
	// see firstListed); taken says it was closed.
	listed chan struct{}
	taken  bool
}

// firstListed returns a channel closed once a listing of the containers
// has been taken in (see set).
func (h *heldAddrs) firstListed() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.listed == nil {
		h.listed = make(chan struct{})
		if h.taken {
			close(h.listed)
		}
	}
	return h.listed
}

// lostKey names a noted address: networks' subnets may overlap.
type lostKey struct {
	network string
	addr    netip.Addr
}

// notes returns the channel signalled whenever an address is noted.
func (h *heldAddrs) notes() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.noting == nil {
		h.noting = make(chan struct{}, 1)
	}
	return h.noting
}

// lostAddr is a noted address and the pool it was noted in.
type lostAddr struct {
	pool Pool
	addr netip.Addr
}

// takeLost returns, and forgets, the addresses noted since the last call,
// by network and address.
func (h *heldAddrs) takeLost() []lostAddr {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]lostAddr, 0, len(h.toRecord))
	for k, p := range h.toRecord {
		out = append(out, lostAddr{pool: p, addr: k.addr})
	}
	h.toRecord = nil
	slices.SortFunc(out, func(x, y lostAddr) int {
		if c := strings.Compare(x.pool.Network, y.pool.Network); c != 0 {
			return c
		}
		return x.addr.Compare(y.addr)
	})
	return out
}

// set makes held (by network name: Local.Held) what the node's containers
// hold, as listed from begun on (by the allocator's clock): the handouts
// before then the listing shows held, or that neither a container nor a
// start under way (starts, by network) may hold, are forgotten.
func (h *heldAddrs) set(held map[string]map[netip.Addr]bool, starts map[string][]Start, begun time.Time) {
	// A copy: the lister may keep its maps.
	held = maps.Clone(held)
	for name, m := range held {
		held[name] = maps.Clone(m)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.at = held
	if !h.taken {
		h.taken = true
		if h.listed != nil {
			close(h.listed)
		}
	}
	for name, handed := range h.handed {
		// A start under way holds an address allocated after it began.
		oldest := oldestStart(starts[name])
		maps.DeleteFunc(handed, func(a netip.Addr, ho handout) bool {
			return ho.at.Before(begun) && (held[name][a] || oldest.IsZero() || ho.at.Before(oldest))
		})
		if len(handed) == 0 {
			delete(h.handed, name)
		}
	}
	for name, noted := range h.noted {
		maps.DeleteFunc(noted, func(a netip.Addr, _ bool) bool { return !held[name][a] })
	}
	for name, pend := range h.pending {
		for a, pr := range pend {
			if pr.at.Before(begun) && held[name][a] {
				pr.seenHeld = true
				pend[a] = pr
			}
		}
	}
}

// pendingRelease is a release held back: of the address's pool, at when
// it was asked for; seenHeld: a listing begun after showed a container
// holding the address (the release was a repeat, or its container was
// still being removed).
type pendingRelease struct {
	pool     Pool
	at       time.Time
	seenHeld bool
}

// pend holds back the release of a, of p, asked for at at (see
// Allocator.Release); a repeat of it is asked for anew.
func (h *heldAddrs) pend(p Pool, a netip.Addr, at time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.pending == nil {
		h.pending = map[string]map[netip.Addr]pendingRelease{}
	}
	if h.pending[p.Network] == nil {
		h.pending[p.Network] = map[netip.Addr]pendingRelease{}
	}
	h.pending[p.Network][a] = pendingRelease{pool: p, at: at}
}

// pendingOf returns the release of a, of p's network, held back, if any.
func (h *heldAddrs) pendingOf(p Pool, a netip.Addr) (pendingRelease, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	pr, ok := h.pending[p.Network][a]
	return pr, ok
}

// heldBackVerdict is what a listing says of an address whose release is
// held back, asked for by name (see judgeHeldBack).
type heldBackVerdict int

const (
	heldBackFree     heldBackVerdict = iota // no container may hold it (or no release is held back)
	heldBackHeld                            // a container holds it
	heldBackStarting                        // a start under way since before its handout may hold it
	heldBackAgain                           // released again after the listing began: not judged
)

// judgeHeldBack says what a listing begun at begun, showing held and
// starts (p's network's), tells of a, whose release is held back: a
// container holds it (noted as pendingRelease.seenHeld, as set notes
// it), or a start under way since before a was last handed out (as set
// keeps a handout for) may, or neither. The container the address was
// last handed to, running or still starting, is one of those; the same
// container restarted, asking for it again, is neither: it released a
// at its exit, after which its start began.
func (h *heldAddrs) judgeHeldBack(p Pool, a netip.Addr, held map[netip.Addr]bool, starts []Start, begun time.Time) heldBackVerdict {
	h.mu.Lock()
	defer h.mu.Unlock()
	pr, ok := h.pending[p.Network][a]
	switch {
	case !ok:
		return heldBackFree
	case !pr.at.Before(begun):
		return heldBackAgain
	case held[a]:
		pr.seenHeld = true
		h.pending[p.Network][a] = pr
		return heldBackHeld
	}
	ho, handed := h.handed[p.Network][a]
	if oldest := oldestStart(starts); handed && ho.of(p) && !oldest.IsZero() && !ho.at.Before(oldest) {
		return heldBackStarting
	}
	return heldBackFree
}

// unpend forgets the release of a, of p's network, held back.
func (h *heldAddrs) unpend(p Pool, a netip.Addr) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.pending[p.Network], a)
}

// settleable returns the releases of p's network held back that a listing
// begun at begun, showing held and starts (p's network's), lets go: asked
// for before it, their address held by no container and by no start under
// way since before (which may be the container's the address was handed
// to). Those of another generation of the network are forgotten: their
// containers went with it.
func (h *heldAddrs) settleable(p Pool, held map[netip.Addr]bool, starts []Start, begun time.Time) []netip.Addr {
	h.mu.Lock()
	defer h.mu.Unlock()
	oldest := oldestStart(starts)
	var out []netip.Addr
	for a, pr := range h.pending[p.Network] {
		switch {
		case !(handout{gen: pr.pool.specCreate}).of(p):
			delete(h.pending[p.Network], a)
		case pr.at.Before(begun) && !held[a] && (oldest.IsZero() || pr.at.Before(oldest)):
			out = append(out, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// recorded forgets the noted addresses of p that allocs, the pool as a
// sweep read it, records: a later loss of one is logged again.
func (h *heldAddrs) recorded(p Pool, allocs map[netip.Addr]Alloc) {
	h.mu.Lock()
	defer h.mu.Unlock()
	maps.DeleteFunc(h.noted[p.Network], func(a netip.Addr, _ bool) bool {
		_, ok := allocs[a]
		return ok
	})
}

// handout is when an address was handed out, and the generation of its
// network (Pool.specCreate; 0: not known).
type handout struct {
	at  time.Time
	gen uint64
}

// handOut notes that the node handed out a, a task address of p, at at.
func (h *heldAddrs) handOut(p Pool, a netip.Addr, at time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.handOutLocked(p, a, at)
}

func (h *heldAddrs) handOutLocked(p Pool, a netip.Addr, at time.Time) {
	// A release of a held back spoke for the container it was handed to
	// before (freed since by another way: the leak sweep, Consul losing
	// it): done later, it would free a under the new one.
	delete(h.pending[p.Network], a)
	if h.handed == nil {
		h.handed = map[string]map[netip.Addr]handout{}
	}
	if h.handed[p.Network] == nil {
		h.handed[p.Network] = map[netip.Addr]handout{}
	}
	h.handed[p.Network][a] = handout{at: at, gen: p.specCreate}
}

// released forgets the handout of a, of p, which Docker released on
// this node, and any release of it held back (done now, or superseded):
// it is then passed over as freed lately (see reuse), as before. A stray
// release of a running container's address is not told from it (a
// release names no container); handed covers what Consul loses with no
// release here, and a release held back (see Allocator.Release) keeps
// its handout.
func (h *heldAddrs) released(p Pool, a netip.Addr) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.handed[p.Network], a)
	delete(h.pending[p.Network], a)
}

// primed says whether p's handouts of an earlier agent of the node were
// taken (see prime).
func (h *heldAddrs) primed(p Pool) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.primedIDs[p.ID()]
}

// primeHandouts has held take, once per pool, the addresses node's
// earlier agents may have handed out, as every block of p records them
// (the store's copies; the pool listed whole if it never was), at now
// (see heldAddrs.prime); gen is this agent's.
func primeHandouts(ctx context.Context, st *store, held *heldAddrs, p Pool, node, gen string, now time.Time) error {
	if held.primed(p) {
		return nil
	}
	docs, err := st.copies(ctx, p, func(BlockDoc) bool { return true })
	if err != nil {
		return err
	}
	held.prime(p, node, gen, now, docs)
	return nil
}

// prime takes, once per pool, as handouts the addresses of node that docs
// (p's blocks, as read at now) record as its tasks, or as spares of
// another generation than gen: an earlier agent of the node handed them
// out, for starts that may still be under way, in no listing yet (see
// handed). Every block is read, not only the node's: a start's address
// may be in another node's block (borrowed, or asked for there). A spare
// records when it was claimed, not when handed out, which may be as late
// as the earlier agent's end: it is taken as handed out now, kept while
// a start begun before now is under way.
func (h *heldAddrs) prime(p Pool, node, gen string, now time.Time, docs map[netip.Prefix]BlockDoc) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.primedIDs[p.ID()] {
		return
	}
	if h.primedIDs == nil {
		h.primedIDs = map[string]bool{}
	}
	h.primedIDs[p.ID()] = true
	for _, doc := range docs {
		for k, al := range doc.Allocs {
			a, err := netip.ParseAddr(k)
			at := al.At
			switch {
			case err != nil || al.Node != node:
				continue
			case al.Kind == KindSpare && al.Gen != gen:
				at = now
			case al.Kind != KindTask:
				continue
			}
			if _, ok := h.handed[p.Network][a]; !ok {
				h.handOutLocked(p, a, at)
			}
		}
	}
}

// of returns the addresses held on p's network, of both families, as last
// listed, and those handed out since that no listing has judged (nil:
// none known); the caller must not change the map.
func (h *heldAddrs) of(p Pool) map[netip.Addr]bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	handed := h.handed[p.Network]
	if len(handed) == 0 {
		return h.at[p.Network]
	}
	out := maps.Clone(h.at[p.Network])
	if out == nil {
		out = make(map[netip.Addr]bool, len(handed))
	}
	for a, ho := range handed {
		if ho.of(p) {
			out[a] = true
		}
	}
	return out
}

// holds says whether of(p) holds a, without copying it.
func (h *heldAddrs) holds(p Pool, a netip.Addr) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.at[p.Network][a] {
		return true
	}
	ho, ok := h.handed[p.Network][a]
	return ok && ho.of(p)
}

// of says whether the handout is of the network's generation p is (a
// network made again under the name is another; its predecessor's
// containers went with it).
func (ho handout) of(p Pool) bool {
	return ho.gen == 0 || p.specCreate == 0 || ho.gen == p.specCreate
}

// noteFree logs as an error, and counts, each address of block b that r
// passes over as held and doc, as Consul has it, shows free (see
// heldFree), once until a sweep finds it recorded again.
func (h *heldAddrs) noteFree(log *slog.Logger, p Pool, b netip.Prefix, doc BlockDoc, r reuse) {
	free := heldFree(p, b, doc, r)
	if len(free) == 0 {
		return
	}
	h.mu.Lock()
	var news []netip.Addr
	for _, a := range free {
		if h.noted[p.Network][a] {
			continue
		}
		if h.noted == nil {
			h.noted = map[string]map[netip.Addr]bool{}
		}
		if h.noted[p.Network] == nil {
			h.noted[p.Network] = map[netip.Addr]bool{}
		}
		h.noted[p.Network][a] = true
		news = append(news, a)
		if h.toRecord == nil {
			h.toRecord = map[lostKey]Pool{}
		}
		h.toRecord[lostKey{p.Network, a}] = p
	}
	if len(news) > 0 && h.noting != nil {
		select {
		case h.noting <- struct{}{}:
		default:
		}
	}
	h.mu.Unlock()
	h.lost.Add(int64(len(news)))
	for _, a := range news {
		log.Error(msgLostHeld, "pool", p.ID(), "addr", a, "block", b, "block_node", doc.Node)
	}
}
