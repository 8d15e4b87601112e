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
	saved Freed
}

func (m *memFreed) Load() (Freed, error) { return m.saved, nil }

func (m *memFreed) Save(freed Freed) error {
	m.saved = freed
	return nil
}

// repeatNode is n1 on a clock the test moves, with its reclaimer over the
// containers the test says run (held), and what it freed lately kept
// across its agent's restarts.
type repeatNode struct {
	a    *Allocator
	r    *Reclaimer
	kv   *kvtest.KV
	st   *netspec.Store
	p    Pool
	held heldSet
	// starts are the node's container starts under way.
	starts []Start
	freed  memFreed
	// freedStore, if set, is kept across restarts instead of freed.
	freedStore FreedStore
	gens       int
	clock      *time.Time
	// listing: the node's allocator lists its containers (the node) for
	// a request by name of an address whose release is held back, as the
	// agent's does (see WithHeld).
	listing bool
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
	var fs FreedStore = &n.freed
	if n.freedStore != nil {
		fs = n.freedStore
	}
	opts := []Option{WithFreedStore(fs)}
	if n.listing {
		opts = append(opts, WithHeld(n))
	}
	n.a = newAllocator(n.kv, "n1", fmt.Sprintf("g%d", n.gens), func() time.Time { return *n.clock }, nil, opts...)
	n.r = &Reclaimer{Alloc: n.a, Pools: SpecPools{Store: n.st}, Held: n, Grace: 10 * time.Second}
	if !n.r.start(context.Background()) {
		t.Fatal("the restarted agent's reclaimer did not start")
	}
}

func (n *repeatNode) HeldAddresses(ctx context.Context) (Local, error) {
	l, err := n.held.HeldAddresses(ctx)
	l.Starts = map[string][]Start{"net": n.starts}
	return l, err
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

// freedByAnEarlierAgent has container 1 take an address, listed held,
// then released (served, its answer lost: the agent is killed), and the
// node's agent restarted; it returns the address.
func (n *repeatNode) freedByAnEarlierAgent(t *testing.T) netip.Addr {
	t.Helper()
	x := taskAddr(t, n.a, n.p)
	n.held[x] = true
	n.sweep(t)
	n.release(t, x)
	delete(n.held, x)
	n.restart(t)
	return x
}

// heldBack has container 2 ask for x by address, freed by an earlier
// agent, and release it: held back.
func (n *repeatNode) heldBack(t *testing.T, x netip.Addr) {
	t.Helper()
	if got, err := n.a.Allocate(context.Background(), n.p, x, KindTask); err != nil || got != x {
		t.Fatalf("request for %s just after its release: %s, %v", x, got, err)
	}
	n.tick()
	n.release(t, x)
	if _, ok := n.a.held.pendingOf(n.p, x); !ok {
		t.Fatalf("release of %s, freed by an earlier agent and handed out again, not held back", x)
	}
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

// TestHeldBackReleaseOfAnAddressFreedAndHandedOutAgain: a release held
// back outlived its address being freed by the leak sweep (a listing
// showed no container holding it, while an unrelated start under way kept
// the held-back release itself waiting) and handed out again, to a new
// container: once that one's start was the oldest under way, the sweep did
// the old release, freeing the address under it (found by the model test,
// seed 1796630728295315107):
//
//	10.2.0.2, handed out again to container 4 after the leak sweep freed it, freed under it by the release held back before
//
// A handout of the address now drops the release held back of it: the
// release spoke for an earlier container, and the new one's own release
// will come.
func TestHeldBackReleaseOfAnAddressFreedAndHandedOutAgain(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	n := newRepeatNode(t, kv)
	x := n.freedByAnEarlierAgent(t)
	if got, err := n.a.Allocate(ctx, n.p, x, KindTask); err != nil || got != x { // container 2, by address
		t.Fatalf("request for %s just after its release: %s, %v", x, got, err)
	}
	*n.clock = n.clock.Add(startSkew + time.Second)
	// Container 3 starts, after x was handed out, and stays starting: a
	// release asked for since waits for it.
	n.starts = append(n.starts, Start{Since: *n.clock})
	n.tick()
	y := taskAddr(t, n.a, n.p)
	n.tick()
	n.release(t, x) // container 2 stops
	if _, ok := n.a.held.pendingOf(n.p, x); !ok {
		t.Fatalf("release of %s, freed by an earlier agent and handed out again, not held back", x)
	}
	// The leak sweep frees x: recorded, held by no container.
	for i := 0; n.recorded(t, kv, x); i++ {
		if i == 100 {
			t.Fatalf("%s, held by no container, not reclaimed by the sweep after %d sweeps", x, i)
		}
		*n.clock = n.clock.Add(time.Second)
		n.sweep(t)
	}
	// Container 4 gets x, from a request of any address.
	for {
		*n.clock = n.clock.Add(time.Second)
		got, err := n.a.Allocate(ctx, n.p, netip.Addr{}, KindTask)
		if err != nil {
			t.Fatalf("request after %s was freed: %v", x, err)
		}
		if got == x {
			break
		}
		n.held[got] = true
	}
	n.starts = []Start{{Since: n.clock.Add(-time.Millisecond)}} // container 3's start is done; container 4's under way
	n.held[y] = true
	n.sweep(t)
	if !n.recorded(t, kv, x) {
		t.Errorf("%s, handed out again to container 4 after the leak sweep freed it, freed under it by the release held back before", x)
	}
}

// TestHeldBackReleaseOfAnAddressAnotherNodeTook: Consul lost an address
// whose release was held back (the leader reclaimed it, the node taken
// for departed), and another node took it. The sweep that then did the
// release failed, every time it ran, until the release was dropped:
//
//	release 10.2.0.2, held back, in net/v4: address 10.2.0.2 in net/v4 is held by node n2 (task), not this node (n1): not released
//
// It is dropped, with no error: not this node's to free any more.
func TestHeldBackReleaseOfAnAddressAnotherNodeTook(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	n := newRepeatNode(t, kv)
	x := n.freedByAnEarlierAgent(t)
	n.heldBack(t, x)
	all, err := Allocations(ctx, kv, n.p)
	if err != nil {
		t.Fatal(err)
	}
	if freed, err := newAllocator(kv, "n0", "g0", time.Now, nil).reclaimObserved(ctx, n.p, map[netip.Addr]Alloc{x: all[x]}); err != nil || len(freed) != 1 {
		t.Fatalf("reclaim %s: freed %v, %v", x, freed, err)
	}
	if got, err := newAllocator(kv, "n2", "g2", time.Now, nil).Allocate(ctx, n.p, x, KindTask); err != nil || got != x {
		t.Fatalf("n2's request for %s, freed: %s, %v", x, got, err)
	}
	n.tick()
	if err := n.r.Sweep(ctx); err != nil {
		t.Errorf("sweep with the release of %s held back, now n2's: %v", x, err)
	}
	if _, ok := n.a.held.pendingOf(n.p, x); ok {
		t.Errorf("release of %s, n2's now, still held back", x)
	}
}
