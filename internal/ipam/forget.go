package ipam

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"

	"github.com/underlay/underlay/internal/kvstore"
)

// ForgetOptions tune ForgetNode.
type ForgetOptions struct {
	// Before, when set, is called before each write ForgetNode makes (each
	// block rewritten, and the deletion of what the node kept), and stops
	// it when it fails, returning its error: node rm renews there its hold
	// on the node's facts, so that a pool's removal however long is
	// waited for, and an agent that took its node over meanwhile stops it
	// before what that agent keeps is deleted.
	Before func(ctx context.Context) error
}

// before calls Before, if set.
func (o ForgetOptions) before(ctx context.Context) error {
	if o.Before == nil {
		return nil
	}
	return o.Before(ctx)
}

// Forgotten is what ForgetNode did.
type Forgotten struct {
	// Freed are the addresses it freed.
	Freed []netip.Addr
	// Deleted are the keys it deleted: blocks it left without any
	// allocation, what the node kept for starts, its report of addresses
	// allocated to no node.
	Deleted []string
	// Changed are the block keys it rewrote without the node's
	// allocations or its affinity: other nodes' allocations stay there.
	Changed []string
	// Skipped are the block keys of the pool it could not read: any
	// address of the node recorded there stays until the key is removed
	// (see BadDoc).
	Skipped []BadDoc
}

// ForgetNode frees every address of p recorded for node, an identity
// removed from the swarm for good, at once rather than after the node
// timeout, gives up its affinity for the blocks where other nodes'
// addresses stay (so that the next node to allocate there claims them:
// no allocator of node will), and deletes what that node kept for
// container starts and its report of addresses allocated to no node (see
// nodeless.go). Like the reclaimer's path for departed nodes, it frees
// only what it listed, still allocated as listed; block keys it cannot
// read it passes over, and names (Skipped). It returns what it did, also
// when it fails part way.
func ForgetNode(ctx context.Context, kv KV, p Pool, node string, o ForgetOptions) (Forgotten, error) {
	var out Forgotten
	c, err := Inspect(ctx, kv, p)
	if err != nil {
		return out, err
	}
	for _, d := range c.Bad {
		if !d.Kept {
			out.Skipped = append(out.Skipped, d)
		}
	}
	want := map[netip.Prefix]map[netip.Addr]Alloc{}
	for b, doc := range c.Blocks {
		if doc.Node == node {
			want[b] = map[netip.Addr]Alloc{}
		}
	}
	for a, al := range c.Allocs {
		if al.Node != node {
			continue
		}
		b := p.Block(a)
		if want[b] == nil {
			want[b] = map[netip.Addr]Alloc{}
		}
		want[b][a] = al
	}
	st := newStore(kv, slog.New(slog.DiscardHandler))
	var errs []error
	for _, b := range slices.SortedFunc(maps.Keys(want), comparePrefix) {
		if err := o.before(ctx); err != nil {
			return out, err
		}
		var freed []netip.Addr
		var disowned bool
		doc, err := st.update(ctx, p, b, func(doc BlockDoc) (BlockDoc, bool) {
			doc, freed, disowned = forget(doc, want[b], node)
			return doc, len(freed) > 0 || disowned
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("rewrite %s: %w", blockPath(p, b), err))
			continue
		}
		out.Freed = append(out.Freed, freed...)
		switch {
		case len(freed) == 0 && !disowned:
		case len(doc.Allocs) == 0:
			out.Deleted = append(out.Deleted, blockPath(p, b))
		default:
			out.Changed = append(out.Changed, blockPath(p, b))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return out, fmt.Errorf("forget %s in %s: %w", node, p.ID(), err)
	}
	for _, k := range []struct{ key, what string }{
		{keptKey(p, node), fmt.Sprintf("the addresses %s kept for starts in %s", node, p.ID())},
		{nodelessKey(p, node), fmt.Sprintf("the report of %s of addresses allocated to no node in %s", node, p.ID())},
	} {
		// Read and deleted at once, so that the key is reported if, and
		// only if, this deleted it (the get fails the transaction when it
		// is absent).
		if err := o.before(ctx); err != nil {
			return out, err
		}
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
