package ipam

import (
	"context"
	"net/netip"
)

// BlockDocs reads every claimed block of a pool with its document: which
// node has affinity for it and what it allocated. Readers that show the
// pool (the dashboard's subnet map) need the blocks, not only the
// addresses Allocations lists.
func BlockDocs(ctx context.Context, kv KV, p Pool) (map[netip.Prefix]BlockDoc, error) {
	pairs, err := kv.ListPairs(ctx, poolPrefix(p))
	if err != nil {
		return nil, err
	}
	out := make(map[netip.Prefix]BlockDoc, len(pairs))
	for _, pr := range pairs {
		doc, b, err := decode(p, pr)
		if err != nil {
			return nil, err
		}
		out[b] = doc
	}
	return out, nil
}
