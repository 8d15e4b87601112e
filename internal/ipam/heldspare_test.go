package ipam

import (
	"context"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
)

// TestFreeSpareAContainerHoldsIsNeverHandedOut: an address a local
// container holds that Consul no longer recorded (the leader freed it,
// the node frozen past the node timeout; Consul lost it) was claimed
// again by this node's keeper as a free spare, before the sweep recorded
// it again as the container's. The 30-minute soak of stop 49 met it:
// "soak-plain-40 on node4 holds 10.193.8.49 of pool, recorded as spare of
// node4", for eight minutes, until the agent restarted. Handed out, it
// would have been a second container's address. The sweep now takes it
// out of the free spares and records it as the container's.
func TestFreeSpareAContainerHoldsIsNeverHandedOut(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	st, p := clusterNet(t, kv)
	a := newAllocator(kv, "n1", "g", time.Now, nil)
	a.spares.enable(3, nil)
	taskAddr(t, a, p) // the pool known to the keeper
	if _, err := a.spares.syncAll(ctx, false, false); err != nil {
		t.Fatal(err)
	}
	free := slices.SortedFunc(maps.Keys(a.spares.known(p)), netip.Addr.Compare)
	if len(free) != 3 {
		t.Fatalf("spares %v, want 3", free)
	}
	held := free[1]
	r := &Reclaimer{Alloc: a, Pools: SpecPools{Store: st}, Held: heldSet{held: true}, Grace: 10 * time.Second, Log: slog.New(slog.DiscardHandler)}
	for range 2 { // recording again takes two sightings; adopting, one
		if err := r.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for range len(free) {
		if got, ok := a.spares.take(p, netip.Addr{}, Alloc{Node: "n1", Kind: KindTask, At: time.Now()}); ok && got == held {
			t.Fatalf("spare %s handed out, though a local container holds it", held)
		}
	}
	all, err := Allocations(ctx, kv, p)
	if err != nil {
		t.Fatal(err)
	}
	if al := all[held]; al.Node != "n1" || al.Kind != KindTask {
		t.Errorf("%s, held by a local container, is recorded as %+v, want n1's task", held, al)
	}
}
