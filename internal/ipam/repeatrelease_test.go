package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/netspec"
)

// memFreed is a FreedStore in memory: the agent's state directory, which
// outlives it.
type memFreed struct {
	saved map[string]map[netip.Addr]time.Time
}

func (m *memFreed) Load() (map[string]map[netip.Addr]time.Time, error) { return m.saved, nil }

func (m *memFreed) Save(freed map[string]map[netip.Addr]time.Time) error {
	m.saved = freed
	return nil
}

// repeatNode is n1 on a clock the test moves, with its reclaimer over the
// containers the test says run (held), and what it freed lately kept
// across its agent's restarts.
type repeatNode struct {
	a     *Allocator
	r     *Reclaimer
	kv    *kvtest.KV
	st    *netspec.Store
	p     Pool
	held  heldSet
	freed memFreed
	gens  int
	clock *time.Time
}

func newRepeatNode(t *testing.T, kv *kvtest.KV) *repeatNode {
	t.Helper()
	st, p := clusterNet(t, kv)
	clock := t0
	n := &repeatNode{kv: kv, st: st, p: p, held: heldSet{}, clock: &clock}
	n.restart(t)
	return n
}

// restart starts the node's agent again, as Reclaimer.Run does first.
func (n *repeatNode) restart(t *testing.T) {
	t.Helper()
	n.gens++
	n.a = newAllocator(n.kv, "n1", fmt.Sprintf("g%d", n.gens), func() time.Time { return *n.clock }, nil, WithFreedStore(&n.freed))
	n.r = &Reclaimer{Alloc: n.a, Pools: SpecPools{Store: n.st}, Held: n, Grace: 10 * time.Second}
	if !n.r.start(context.Background()) {
		t.Fatal("the restarted agent's reclaimer did not start")
	}
}

func (n *repeatNode) HeldAddresses(ctx context.Context) (Local, error) {
	return n.held.HeldAddresses(ctx)
}

func (n *repeatNode) tick() { *n.clock = n.clock.Add(opTime) }

func (n *repeatNode) sweep(t *testing.T) {
	t.Helper()
	n.tick()
	if err := n.r.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	n.tick()
}

func (n *repeatNode) release(t *testing.T, x netip.Addr) {
	t.Helper()
	if err := n.a.Release(context.Background(), n.p, x); err != nil {
		t.Fatalf("release of %s: %v", x, err)
	}
	n.tick()
}

// recorded says whether Consul records x as n1's task.
func (n *repeatNode) recorded(t *testing.T, kv *kvtest.KV, x netip.Addr) bool {
	t.Helper()
	all, err := Allocations(context.Background(), kv, n.p)
	if err != nil {
		t.Fatal(err)
	}
	al, ok := all[x]
	return ok && al.Node == "n1" && al.Kind == KindTask
}

// TestRepeatedReleaseOfAnAddressHandedOutAgain: container 1's release of
// x is served and the agent killed before it answers; Docker sends it
// again (pkg/plugins' callWithRetry resends a call whose connection
// failed) after the restarted agent handed x, asked for by address, to
// container 2. A release names no container: the repeat freed x under
// container 2 in Consul, and the node forgot it, so a request of any
// address, with nothing else free, got it too:
//
//	the repeated release of container 1's 10.2.0.2 freed it under container 2, which holds it: Consul no longer records it
//	10.2.0.2, held by container 2, handed out again to a new request
//
// A release of an address an earlier agent freed lately and this one
// handed out again is now held back: x stays recorded, and passed over,
// until a listing of the containers taken after the release shows none
// holds it; then it is freed.
func TestRepeatedReleaseOfAnAddressHandedOutAgain(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	n := newRepeatNode(t, kv)
	x := taskAddr(t, n.a, n.p) // container 1
	n.held[x] = true
	n.sweep(t)
	n.release(t, x) // served; its answer lost: the agent is killed
	delete(n.held, x)
	n.restart(t)
	if got, err := n.a.Allocate(ctx, n.p, x, KindTask); err != nil || got != x { // container 2, by address
		t.Fatalf("request for %s just after its release: %s, %v", x, got, err)
	}
	n.tick()
	n.release(t, x) // Docker's resend of container 1's release
	if !n.recorded(t, kv, x) {
		t.Errorf("the repeated release of container 1's %s freed it under container 2, which holds it: Consul no longer records it", x)
	}
	// Nothing else free but x: a request of any address must not get it.
	for {
		got, err := n.a.Allocate(ctx, n.p, netip.Addr{}, KindTask)
		if errors.Is(err, ErrPoolExhausted) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if got == x {
			t.Fatalf("%s, held by container 2, handed out again to a new request", x)
		}
		n.held[got] = true
		n.tick()
	}
	other := newAllocator(kv, "n2", "g", func() time.Time { return *n.clock }, nil)
	if got, err := other.Allocate(ctx, n.p, x, KindTask); err == nil {
		t.Fatalf("%s, held by container 2 on n1, handed out to n2's request for it: %s", x, got)
	}
	// Container 2 listed running: the release was a repeat. Its address
	// stays its own, and a request for it by address is refused.
	n.held[x] = true
	n.sweep(t)
	if !n.recorded(t, kv, x) {
		t.Errorf("%s freed by the sweep while container 2 holds it", x)
	}
	if got, err := n.a.Allocate(ctx, n.p, x, KindTask); err == nil {
		t.Fatalf("%s, held by container 2, handed out again to a new request (by address): %s", x, got)
	}
	// Container 2 stops: its release, held back too, is done once a
	// listing shows no container holds x.
	n.release(t, x)
	if !n.recorded(t, kv, x) {
		t.Errorf("container 2's release of %s done at once, though it could not be told from a repeat", x)
	}
	delete(n.held, x)
	n.sweep(t)
	if n.recorded(t, kv, x) {
		t.Errorf("%s still recorded after a listing showed no container holds it", x)
	}
	if got, err := n.a.Allocate(ctx, n.p, x, KindTask); err != nil || got != x {
		t.Errorf("request for %s, freed: %s, %v", x, got, err)
	}
	// Released again by this agent, which freed it: not held back.
	n.release(t, x)
	if n.recorded(t, kv, x) {
		t.Errorf("release of %s, freed and handed out again by the same agent, held back", x)
	}
}

// TestHeldBackReleaseOfARestartedContainer: a container run with its
// address (--ip) restarts just after the agent did: Docker releases the
// address and asks for it again, twice. Its release held back (an
// earlier agent freed the address), the request that follows gets the
// address all the same, recorded anew, and the release is not done
// later under it.
func TestHeldBackReleaseOfARestartedContainer(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	n := newRepeatNode(t, kv)
	x := taskAddr(t, n.a, n.p)
	n.held[x] = true
	n.sweep(t)
	n.release(t, x)
	n.restart(t)
	for i := range 2 {
		got, err := n.a.Allocate(ctx, n.p, x, KindTask)
		if err != nil || got != x {
			t.Fatalf("restart %d: request for %s just after its release: %s, %v", i+1, x, got, err)
		}
		if !n.recorded(t, kv, x) {
			t.Fatalf("restart %d: %s handed out, not recorded", i+1, x)
		}
		n.tick()
		n.release(t, x)
		if _, ok := n.a.held.pendingOf(n.p, x); ok != (i == 0) {
			t.Fatalf("restart %d: release of %s held back: %v, want %v", i+1, x, ok, i == 0)
		}
	}
	if got, err := n.a.Allocate(ctx, n.p, x, KindTask); err != nil || got != x {
		t.Fatalf("request for %s after its release: %s, %v", x, got, err)
	}
	n.sweep(t)
	if !n.recorded(t, kv, x) {
		t.Errorf("%s, held by the restarted container, freed by the sweep", x)
	}
}
