package ipam

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
)

// TestShimAddressAContainerHoldsGoesToTheContainer: the 30-minute soak of
// stop 50 met a node's shim given the address a local container held. The
// node was frozen past the node timeout, the leader freed its addresses
// under its running containers, and, thawed, its network sync asked for
// its shim address before any sweep had recorded the containers' again:
// the lowest free address, 10.193.8.128, which soak-plain-45 held. The
// host's shim and the container then answered for one address, and the
// sweep left it so for good ("recorded as shim of node3", 11 minutes, to
// the end of the run): it records again only what no one holds. Now a
// sweep that finds this node's shim address held by a local container
// records it as the container's, and the next Shim call gives the shim
// another address.
func TestShimAddressAContainerHoldsGoesToTheContainer(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	st, p := clusterNet(t, kv)
	a := newAllocator(kv, "n1", "g", time.Now, nil)
	shim, err := a.Shim(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	r := &Reclaimer{Alloc: a, Pools: SpecPools{Store: st}, Held: heldSet{shim: true}, Grace: 10 * time.Second, Log: slog.New(slog.DiscardHandler)}
	if err := r.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	all, err := Allocations(ctx, kv, p)
	if err != nil {
		t.Fatal(err)
	}
	if al := all[shim]; al.Node != "n1" || al.Kind != KindTask {
		t.Fatalf("%s, this node's shim address and held by a local container, is recorded as %+v after a sweep, want n1's task", shim, al)
	}
	again, err := a.Shim(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if again == shim {
		t.Fatalf("the shim is given %s again, which a local container holds", again)
	}
	all, err = Allocations(ctx, kv, p)
	if err != nil {
		t.Fatal(err)
	}
	if al := all[again]; al.Node != "n1" || al.Kind != KindShim {
		t.Errorf("the shim's new address %s is recorded as %+v, want n1's shim", again, al)
	}
}
