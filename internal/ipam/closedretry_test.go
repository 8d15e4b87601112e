package ipam

import (
	"context"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
)

// TestRefusedGiveBacksOfARemovalBackOff: the node's teardown of a network
// `network rm` is removing gives its spares back (ReleaseSpares), bound to
// the spec as read before the mark: refused, since the removal deletes the
// network's tree with them. They stay pending, and the keeper tried them
// again every 500 ms for as long as the removal took (its other nodes'
// teardown, its containers' stop): a write and a read of the spec each
// time on every node, load and no use. The retries now back off, and the
// removal's delete ends them: the pool goes from the keeper.
func TestRefusedGiveBacksOfARemovalBackOff(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	st, _ := clusterNet(t, kv)
	// Read from the spec, as the plugin serves it: bound to the spec as read.
	p, _, err := SpecPools{Store: st}.PoolByID(ctx, "net/v4")
	if err != nil {
		t.Fatal(err)
	}
	a := newAllocator(kv, "n1", "g", time.Now, nil)
	a.spares.enable(3, nil)
	keptSpares(t, a, p)
	if err := st.MarkDeleting(ctx, p.Network); err != nil {
		t.Fatal(err)
	}
	if err := a.ReleaseSpares(ctx, p); err != nil {
		t.Fatal(err)
	}
	refused := refusedRetries()
	var delays []time.Duration
	for range 5 {
		pending, err := a.spares.syncAll(ctx, false, false)
		if err != nil {
			t.Fatal(err)
		}
		d, ok := a.spares.retryIn(pending, &refused)
		if !ok {
			t.Fatalf("after %v: no retry, though the spares are not given back (the tree stands)", delays)
		}
		delays = append(delays, d)
	}
	for i := 1; i < len(delays); i++ {
		if delays[i] <= delays[i-1] {
			t.Fatalf("retries of refused give-backs after %v: the interval does not grow", delays)
		}
	}
	if err := st.Delete(ctx, p.Network, NetworkPrefix(p.Network)); err != nil {
		t.Fatal(err)
	}
	pending, err := a.spares.syncAll(ctx, false, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := a.spares.retryIn(pending, &refused); ok {
		t.Errorf("spares still pending once the removal deleted the network's tree")
	}
	if sp := a.spares.pools[p.ID()]; sp != nil {
		t.Errorf("the removed network's pool is still kept: %+v", sp.spareState)
	}
}
