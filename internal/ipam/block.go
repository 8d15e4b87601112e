package ipam

import (
	"net/netip"
	"time"
)

// Allocation kinds.
const (
	KindTask = "task" // asked for by Docker
	KindShim = "shim" // a node's host shim
	// KindSpare is an address a node claimed ahead of demand, to hand out
	// without waiting for Consul; see KeepSpares.
	KindSpare = "spare"
)

// Alloc is one allocated address.
type Alloc struct {
	Node string    `json:"node"`
	At   time.Time `json:"at"`
	// Kind is KindTask, KindShim or KindSpare.
	Kind string `json:"kind,omitempty"`
	// Gen names the allocator process that claimed a spare: a spare of
	// another generation of its node may have been handed out before a
	// crash, so only the reclaimer decides its fate.
	Gen string `json:"gen,omitempty"`
}

// BlockDoc is the KV document of one block: who has affinity for it and
// every allocation in it. It is always rewritten whole, with check-and-set.
type BlockDoc struct {
	Node   string           `json:"node"`
	Allocs map[string]Alloc `json:"allocs"`
}

// free returns the first address of block b that p may hand out and doc
// has not allocated.
func (doc BlockDoc) free(p Pool, b netip.Prefix) (netip.Addr, bool) {
	for a := b.Addr(); b.Contains(a); a = a.Next() {
		if _, taken := doc.Allocs[a.String()]; !taken && p.usable(a) {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// with returns a copy of doc with a allocated to node.
func (doc BlockDoc) with(a netip.Addr, al Alloc) BlockDoc {
	out := BlockDoc{Node: doc.Node, Allocs: make(map[string]Alloc, len(doc.Allocs)+1)}
	for k, v := range doc.Allocs {
		out.Allocs[k] = v
	}
	out.Allocs[a.String()] = al
	return out
}

// clone returns a copy of doc.
func (doc BlockDoc) clone() BlockDoc {
	out := BlockDoc{Node: doc.Node, Allocs: make(map[string]Alloc, len(doc.Allocs))}
	for k, v := range doc.Allocs {
		out.Allocs[k] = v
	}
	return out
}

// without returns a copy of doc with a released.
func (doc BlockDoc) without(a netip.Addr) BlockDoc {
	out := BlockDoc{Node: doc.Node, Allocs: make(map[string]Alloc, len(doc.Allocs))}
	for k, v := range doc.Allocs {
		if k != a.String() {
			out.Allocs[k] = v
		}
	}
	return out
}
