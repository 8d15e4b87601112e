package ipam

import (
	"encoding/json"
	"net/netip"
	"slices"
	"time"
)

// Allocation kinds.
const (
	KindTask = "task" // asked for by Docker
	KindShim = "shim" // a node's host shim
	// KindSpare is an address a node claimed ahead of demand, to hand out
	// without waiting for Consul; see Allocator.KeepSpares.
	KindSpare = "spare"
)

// Alloc is one allocated address.
type Alloc struct {
	// Node is the identity (swarm node ID) of the node that holds it.
	Node string    `json:"node"`
	At   time.Time `json:"at"`
	// Kind is KindTask, KindShim or KindSpare; the sweep takes none, or
	// any other (another version's), for a task's (see planSweep).
	Kind string `json:"kind,omitempty"`
	// Gen names the allocator process that claimed a spare: a spare of
	// another generation of its node may have been handed out before a
	// crash, so only the reclaimer decides its fate.
	Gen string `json:"gen,omitempty"`
	// Unknown holds the record's members this version does not know (a
	// newer version's), by name, as read; they are written back with the
	// record, so that this agent's rewrite of the block keeps them. A
	// record this version makes has none (nil).
	Unknown map[string]json.RawMessage `json:"-"`
}

// same reports whether two records are one allocation (not a later one of
// the same address).
func (al Alloc) same(o Alloc) bool {
	return al.Node == o.Node && al.Kind == o.Kind && al.Gen == o.Gen && al.At.Equal(o.At)
}

// BlockDoc is the KV document of one block: who has affinity for it and
// every allocation in it, by address. It is always rewritten whole, with
// check-and-set; a block whose last allocation goes is deleted.
type BlockDoc struct {
	Node   string           `json:"node"`
	Allocs map[string]Alloc `json:"allocs"`
	// Unknown holds the document's members this version does not know,
	// as Alloc.Unknown does the records'.
	Unknown map[string]json.RawMessage `json:"-"`
}

// free returns an address of block b that p may hand out and doc has not
// allocated: the first, in address order, that r does not pass over, or
// with r.last, of those it freed lately, the one freed longest ago. An
// address r holds (a local container's) is never returned.
func (doc BlockDoc) free(p Pool, b netip.Prefix, r reuse) (netip.Addr, bool) {
	var oldest netip.Addr
	for a := b.Addr(); b.Contains(a); a = a.Next() {
		if _, taken := doc.Allocs[a.String()]; taken || !p.usable(a) || r.held[a] {
			continue
		}
		at, lately := r.freed[a]
		switch {
		case !lately:
			return a, true
		case r.last && (!oldest.IsValid() || at.Before(r.freed[oldest])):
			oldest = a
		}
	}
	return oldest, oldest.IsValid()
}

// clone returns a copy of doc that can be changed freely.
func (doc BlockDoc) clone() BlockDoc {
	// Unknown is shared: nothing changes it, it is only written back.
	out := BlockDoc{Node: doc.Node, Allocs: make(map[string]Alloc, len(doc.Allocs)+1), Unknown: doc.Unknown}
	for k, v := range doc.Allocs {
		out.Allocs[k] = v
	}
	return out
}

// alloc returns the allocation of a, if any.
func (doc BlockDoc) alloc(a netip.Addr) (Alloc, bool) {
	al, ok := doc.Allocs[a.String()]
	return al, ok
}

// addrs lists doc's allocated addresses in address order; keys that are
// not addresses are left out.
func (doc BlockDoc) addrs() []netip.Addr {
	out := make([]netip.Addr, 0, len(doc.Allocs))
	for k := range doc.Allocs {
		if a, err := netip.ParseAddr(k); err == nil {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}
