package ipam

import (
	"context"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
)

// TestAddressFreedThenHandedAgainIsPassedOverWhenLost: Docker released a
// task address of this node (its container gone), then asked for that
// address again for a new container; a sweep listed that container
// holding it, and Consul lost it under the container. Freed lately, it
// was taken for one whose container stopped since the listing: a request
// for it was served, a second local container given the address (the
// model test with UNDERLAY_IPAM_MODEL_LOSE=1, seed 1796598911515194862:
// "10.3.0.61 held by a container of n4 and by a container starting on
// n4"), and the node's allocations did not note it lost. Handed out
// again, an address is no longer freed lately.
func TestAddressFreedThenHandedAgainIsPassedOverWhenLost(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	_, p := clusterNet(t, kv)
	a := newAllocator(kv, "n1", "g", time.Now, nil)
	addr := taskAddr(t, a, p)
	if err := a.Release(ctx, p, addr); err != nil {
		t.Fatal(err)
	}
	// A new container asks for the address its predecessor had.
	if got, err := a.Allocate(ctx, p, addr, KindTask); err != nil || got != addr {
		t.Fatalf("asked for %s again: got %s, %v", addr, got, err)
	}
	r := &Reclaimer{Alloc: a, Held: heldSet{addr: true}, Grace: 10 * time.Second, Log: slog.New(slog.DiscardHandler)}
	if !r.listHeld(ctx) {
		t.Fatal("no listing")
	}
	all, err := Allocations(ctx, kv, p)
	if err != nil {
		t.Fatal(err)
	}
	leader := newAllocator(kv, "n0", "g0", time.Now, nil)
	if freed, err := leader.reclaimObserved(ctx, p, map[netip.Addr]Alloc{addr: all[addr]}); err != nil || len(freed) != 1 {
		t.Fatalf("reclaim %s: freed %v, %v", addr, freed, err)
	}
	notes := a.held.notes()
	if got, err := a.Allocate(ctx, p, addr, KindTask); err == nil {
		t.Errorf("handed out %s (%s) to a second container: a local container holds it, lost by Consul", got, addr)
	}
	if got := taskAddr(t, a, p); got == addr {
		t.Fatalf("handed out %s, which a local container holds", addr)
	}
	select {
	case <-notes:
	default:
		t.Errorf("%s, free in Consul and held at the last listing, not noted lost by an allocation in its block", addr)
	}
}
