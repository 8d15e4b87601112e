package ipam

import (
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
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
	// noted are, by network name, those an allocation found free in
	// Consul and logged, until a sweep finds them recorded again or no
	// longer held.
	noted map[string]map[netip.Addr]bool
	// lost counts the addresses noted (a metric).
	lost atomic.Int64
	// toRecord are the addresses noted since the reclaimer last took
	// them, to record at once (see Reclaimer.recordLost), by network and
	// address, with the pool they were noted in.
	toRecord map[lostKey]Pool
	// noting is signalled when an address is noted (nil: not yet asked
	// for, see noted).
	noting chan struct{}
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
// hold.
func (h *heldAddrs) set(held map[string]map[netip.Addr]bool) {
	// A copy: the lister may keep its maps.
	held = maps.Clone(held)
	for name, m := range held {
		held[name] = maps.Clone(m)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.at = held
	for name, noted := range h.noted {
		maps.DeleteFunc(noted, func(a netip.Addr, _ bool) bool { return !held[name][a] })
	}
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

// of returns the addresses held on p's network, of both families, as last
// listed (nil: none known); the caller must not change the map.
func (h *heldAddrs) of(p Pool) map[netip.Addr]bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.at[p.Network]
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
