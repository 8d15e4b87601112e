package ipam

import (
	"log/slog"
	"maps"
	"net/netip"
	"sync"
	"sync/atomic"
)

// msgLostHeld is logged, once per address, when an allocation of this
// node finds free in Consul an address a local container holds.
const msgLostHeld = "Consul shows free an address a local container holds (it lost or freed it while the container ran): not handing it out; the leak sweep records it again as the container's"

// heldAddrs is what this node's containers held at the last listing of
// them by the leak sweep (Reclaimer.Sweep, every --ipam-sweep, and once as
// it starts): the node's allocations and spare claims pass over those
// addresses (see reuse), never handing out one a running container holds
// that Consul lost or freed under it (a reclaim of the node taken for
// departed, a Consul server restarted empty, a stray release), in the
// window before the sweep records it again (two sightings). It costs the
// hot path no read of Docker: the sweep refreshes it. A container gone
// since lets its address be handed out after the next sweep; until then
// it is only passed over, never recorded here, so nothing leaks. Another
// node's allocations do not see it: an address held here in a block that
// node allocates from (borrowing) is covered only by the sweep's record.
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
	}
	h.mu.Unlock()
	h.lost.Add(int64(len(news)))
	for _, a := range news {
		log.Error(msgLostHeld, "pool", p.ID(), "addr", a, "block", b, "block_node", doc.Node)
	}
}
