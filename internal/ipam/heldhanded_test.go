package ipam

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
)

// TestLostAddressOfAContainerStartedSinceTheSweep: Consul lost the
// address of a container this node started since its last sweep (a stray
// release, the leader's reclaim of the node taken for departed while
// frozen). The node passed over only what its containers held at the
// last sweep, so its next request was handed the lost address: two local
// containers on one address. Found by the model test's new step, its
// shortest run: {alloc 4} {started 4} {lose 4} {alloc 4}. The node now
// also passes over what it handed out since, until a listing of its
// containers judges it; a request for that very address is refused.
func TestLostAddressOfAContainerStartedSinceTheSweep(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	st, p := clusterNet(t, kv)
	a := newAllocator(kv, "n1", "g", time.Now, nil)
	r := &Reclaimer{Alloc: a, Pools: SpecPools{Store: st}, Held: heldSet{}, Grace: 10 * time.Second}
	if err := r.Sweep(ctx); err != nil { // no container yet
		t.Fatal(err)
	}
	x := taskAddr(t, a, p)
	// Consul loses x while its container runs.
	key := blockPath(p, p.Block(x))
	pair, _, err := kv.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := decodeBlock(p, p.Block(x), pair.Value)
	if err != nil {
		t.Fatal(err)
	}
	delete(doc.Allocs, x.String())
	b, _ := json.Marshal(doc)
	if err := kv.Put(ctx, key, b); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if y := taskAddr(t, a, p); y == x {
			t.Fatalf("%s handed out again, lost in Consul while the container started since the last sweep holds it", x)
		}
	}
	if got, err := a.Allocate(ctx, p, x, KindTask); err == nil {
		t.Errorf("request for %s, lost in Consul while a local container holds it: handed out (%s), want refused", x, got)
	}
	// A listing that shows it held keeps it passed over; one that shows
	// it gone lets it go.
	r.Held = heldSet{x: true}
	if err := r.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if held := a.held.of(p); !held[x] {
		t.Errorf("%s not passed over after a listing showing it held", x)
	}
	r.Held = heldSet{}
	if err := r.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if held := a.held.of(p); held[x] {
		t.Errorf("%s still passed over after a listing showing no container holds it", x)
	}
}
