package ipam

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/underlay/underlay/internal/kvstore"
)

// ForgetNode frees every address of p recorded for node, an identity
// removed from the swarm for good, at once rather than after the node
// timeout, and deletes what that node kept for container starts. Like the
// reclaimer's path for departed nodes, it frees only what it listed, still
// allocated as listed.
func ForgetNode(ctx context.Context, kv KV, p Pool, node string) ([]netip.Addr, error) {
	allocs, err := Allocations(ctx, kv, p)
	if err != nil {
		return nil, err
	}
	want := map[netip.Addr]Alloc{}
	for a, al := range allocs {
		if al.Node == node {
			want[a] = al
		}
	}
	var freed []netip.Addr
	if len(want) > 0 {
		if freed, err = NewAllocator(kv, node, nil).reclaimObserved(ctx, p, want); err != nil {
			return freed, fmt.Errorf("free the addresses of %s in %s: %w", node, p.ID(), err)
		}
	}
	if _, err := kv.Txn(ctx, []kvstore.Op{{Verb: kvstore.Delete, Key: keptKey(p, node)}}); err != nil {
		return freed, fmt.Errorf("delete the addresses %s kept for starts in %s: %w", node, p.ID(), err)
	}
	return freed, nil
}
