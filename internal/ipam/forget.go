package ipam

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/underlay/underlay/internal/kvstore"
)

// ForgetNode frees every address of p recorded for node, an identity
// removed from the swarm for good, at once rather than after the node
// timeout, and deletes what that node kept for container starts and its
// report of addresses allocated to no node (see nodeless.go). Like the
// reclaimer's path for departed nodes, it frees only what it listed, still
// allocated as listed. It returns the addresses it freed and the keys it
// deleted, also when it fails part way.
func ForgetNode(ctx context.Context, kv KV, p Pool, node string) (freed []netip.Addr, deleted []string, err error) {
	allocs, err := Allocations(ctx, kv, p)
	if err != nil {
		return nil, nil, err
	}
	want := map[netip.Addr]Alloc{}
	for a, al := range allocs {
		if al.Node == node {
			want[a] = al
		}
	}
	if len(want) > 0 {
		if freed, err = NewAllocator(kv, node, nil).reclaimObserved(ctx, p, want); err != nil {
			return freed, nil, fmt.Errorf("free the addresses of %s in %s: %w", node, p.ID(), err)
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
			return freed, deleted, fmt.Errorf("delete %s: %w", k.what, err)
		}
		if res.OK {
			deleted = append(deleted, k.key)
		}
	}
	return freed, deleted, nil
}
