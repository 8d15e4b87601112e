package ipam

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/underlay/underlay/internal/kvstore"
)

// Forgotten is what ForgetNode did.
type Forgotten struct {
	// Freed are the addresses it freed.
	Freed []netip.Addr
	// Deleted are the keys it deleted: blocks it left without any
	// allocation, what the node kept for starts, its report of addresses
	// allocated to no node.
	Deleted []string
	// Changed are the block keys it rewrote without the node's
	// allocations: other nodes' stay there.
	Changed []string
}

// ForgetNode frees every address of p recorded for node, an identity
// removed from the swarm for good, at once rather than after the node
// timeout, and deletes what that node kept for container starts and its
// report of addresses allocated to no node (see nodeless.go). Like the
// reclaimer's path for departed nodes, it frees only what it listed, still
// allocated as listed. It returns what it did, also when it fails part
// way.
func ForgetNode(ctx context.Context, kv KV, p Pool, node string) (Forgotten, error) {
	var out Forgotten
	allocs, err := Allocations(ctx, kv, p)
	if err != nil {
		return out, err
	}
	want := map[netip.Addr]Alloc{}
	for a, al := range allocs {
		if al.Node == node {
			want[a] = al
		}
	}
	if len(want) > 0 {
		blocks, err := NewAllocator(kv, node, nil).reclaimBlocks(ctx, p, want)
		for _, r := range blocks {
			out.Freed = append(out.Freed, r.freed...)
			if r.emptied {
				out.Deleted = append(out.Deleted, blockPath(p, r.block))
			} else {
				out.Changed = append(out.Changed, blockPath(p, r.block))
			}
		}
		if err != nil {
			return out, fmt.Errorf("free the addresses of %s in %s: %w", node, p.ID(), err)
		}
	}
	for _, k := range []struct{ key, what string }{
		{keptKey(p, node), fmt.Sprintf("the addresses %s kept for starts in %s", node, p.ID())},
		{nodelessKey(p, node), fmt.Sprintf("the report of %s of addresses allocated to no node in %s", node, p.ID())},
	} {
		// Read and deleted at once, so that the key is reported if, and
		// only if, this deleted it (the get fails the transaction when it
		// is absent).
		res, err := kv.Txn(ctx, []kvstore.Op{{Verb: kvstore.Get, Key: k.key}, {Verb: kvstore.Delete, Key: k.key}})
		if err != nil {
			return out, fmt.Errorf("delete %s: %w", k.what, err)
		}
		if res.OK {
			out.Deleted = append(out.Deleted, k.key)
		}
	}
	return out, nil
}
