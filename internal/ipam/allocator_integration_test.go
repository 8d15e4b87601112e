package ipam_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/testenv"
)

func testPool(prefix string, reserved ...string) ipam.Pool {
	p := ipam.Pool{Network: "net", Prefix: netip.MustParsePrefix(prefix), Reserved: map[netip.Addr]bool{}, BlockBits: 28}
	for _, r := range reserved {
		p.Reserved[netip.MustParseAddr(r)] = true
	}
	return p
}

// TestIntegrationNoDuplicates has 3 nodes × 8 goroutines allocate the whole
// of a /24 concurrently on a real Consul, then release and allocate again:
// no address is ever handed out twice, reserved ones never, and the pool
// reports exhaustion by name.
func TestIntegrationNoDuplicates(t *testing.T) {
	testenv.Require(t)
	c := testenv.StartConsul(t)
	kv := consul.NewKV(c.Client())
	pool := testPool("10.77.0.0/24", "10.77.0.1", "10.77.0.200")
	ctx := context.Background()

	nodes := []*ipam.Allocator{ipam.NewAllocator(kv, "n1", nil), ipam.NewAllocator(kv, "n2", nil), ipam.NewAllocator(kv, "n3", nil)}
	got := map[netip.Addr]string{}
	exhausted := fillPool(t, nodes, pool, got)
	// 256 addresses less network, broadcast, gateway and one aux address.
	if len(got) != 252 {
		t.Errorf("allocated %d addresses, want 252", len(got))
	}
	for _, r := range []string{"10.77.0.0", "10.77.0.1", "10.77.0.200", "10.77.0.255"} {
		if _, ok := got[netip.MustParseAddr(r)]; ok {
			t.Errorf("reserved address %s was handed out", r)
		}
	}
	if exhausted != 24 {
		t.Errorf("%d requests saw the pool exhausted, want all 24", exhausted)
	}
	_, err := nodes[0].Allocate(ctx, pool, netip.Addr{}, "task")
	if !errors.Is(err, ipam.ErrPoolExhausted) || !contains(err.Error(), "net/v4") {
		t.Errorf("exhausted pool: %v, want ErrPoolExhausted naming net/v4", err)
	}

	// The stored state agrees, address by address.
	stored, err := ipam.Allocations(ctx, kv, pool)
	if err != nil {
		t.Fatal(err)
	}
	if len(stored) != len(got) {
		t.Errorf("KV holds %d allocations, handed out %d", len(stored), len(got))
	}

	// Only its own node releases an address; a specific address can then
	// be taken, once.
	want := netip.MustParseAddr("10.77.0.77")
	owner := ownerOf(nodes, got[want])
	other := nodes[(slices.Index(nodes, owner)+1)%len(nodes)]
	if err := other.Release(ctx, pool, want); !errors.Is(err, ipam.ErrNotHeld) {
		t.Errorf("release by another node: %v, want ErrNotHeld", err)
	}
	if err := owner.Release(ctx, pool, want); err != nil {
		t.Fatal(err)
	}
	if err := owner.Release(ctx, pool, want); err != nil {
		t.Errorf("second release: %v", err)
	}
	if _, err := nodes[1].Allocate(ctx, pool, want, "task"); err != nil {
		t.Fatal(err)
	}
	if _, err := nodes[0].Allocate(ctx, pool, want, "task"); err == nil || !contains(err.Error(), "already in use") {
		t.Errorf("second claim of %s: %v", want, err)
	}
	if _, err := nodes[0].Allocate(ctx, pool, netip.MustParseAddr("10.77.0.1"), "task"); err == nil {
		t.Error("the gateway was handed out on request")
	}
	if _, err := nodes[0].Allocate(ctx, pool, netip.MustParseAddr("10.78.0.5"), "task"); err == nil {
		t.Error("an address outside the pool was handed out on request")
	}

	// Release everything, each by its node: every block is given back.
	stored, _ = ipam.Allocations(ctx, kv, pool)
	for addr, al := range stored {
		if err := byNode(nodes, al.Node).Release(ctx, pool, addr); err != nil {
			t.Fatal(err)
		}
	}
	pairs, err := kv.List(ctx, ipam.KVPrefix)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pairs {
		t.Errorf("block left after every address was released: %s %s", p.Key, p.Value)
	}
	// And allocating again works from a clean slate, for the node whose
	// cache still remembers blocks that are gone.
	if _, err := nodes[1].Allocate(ctx, pool, netip.Addr{}, "task"); err != nil {
		t.Fatal(err)
	}
}

// fillPool has 8 goroutines per node allocate until the pool is
// exhausted, recording every address in got (which may hold addresses
// allocated before) and failing t on any handed out twice; it returns how
// many requests saw the pool exhausted.
func fillPool(t *testing.T, nodes []*ipam.Allocator, pool ipam.Pool, got map[netip.Addr]string) int {
	ctx := testenv.Context(t, time.Minute)
	var mu sync.Mutex
	exhausted := 0
	var wg sync.WaitGroup
	for i, a := range nodes {
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					addr, err := a.Allocate(ctx, pool, netip.Addr{}, ipam.KindTask)
					mu.Lock()
					if errors.Is(err, ipam.ErrPoolExhausted) {
						exhausted++
						mu.Unlock()
						return
					}
					if err != nil {
						mu.Unlock()
						t.Error(err)
						return
					}
					if prev, dup := got[addr]; dup {
						t.Errorf("%s handed out twice: %s and n%d/%d", addr, prev, i+1, g)
					}
					got[addr] = fmt.Sprintf("n%d/%d", i+1, g)
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	return exhausted
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// ownerOf is the allocator fillPool's label ("n2/5") names.
func ownerOf(nodes []*ipam.Allocator, label string) *ipam.Allocator {
	return nodes[label[1]-'1']
}

// byNode is the allocator of a node identity.
func byNode(nodes []*ipam.Allocator, id string) *ipam.Allocator {
	for _, a := range nodes {
		if a.Node() == id {
			return a
		}
	}
	panic("no allocator for node " + id)
}

// TestIntegrationSpares: allocators that keep spares hand them out with no
// write, record them as tasks afterwards, give them back when another node
// runs short (so the whole pool can still be filled, with no duplicate), on
// request of a specific address, and when they stop.
func TestIntegrationSpares(t *testing.T) {
	testenv.Require(t)
	c := testenv.StartConsul(t)
	kv := consul.NewKV(c.Client())
	pool := testPool("10.78.0.0/24", "10.78.0.1")
	ctx := testenv.Context(t, 2*time.Minute)
	const want = 4
	nodes := []*ipam.Allocator{ipam.NewAllocator(kv, "n1", nil), ipam.NewAllocator(kv, "n2", nil), ipam.NewAllocator(kv, "n3", nil)}
	keepCtx, stopKeeping := context.WithCancel(ctx)
	var keepers sync.WaitGroup
	for _, a := range nodes {
		keepers.Add(1)
		go func() { defer keepers.Done(); a.KeepSpares(keepCtx, want, slog.Default()) }()
	}
	count := func() (spares map[string]int, tasks int) {
		all, err := ipam.Allocations(ctx, kv, pool)
		if err != nil {
			t.Fatal(err)
		}
		spares = map[string]int{}
		for _, al := range all {
			switch al.Kind {
			case ipam.KindSpare:
				spares[al.Node]++
			case ipam.KindTask:
				tasks++
			}
		}
		return spares, tasks
	}

	// The first request of each node is written; then it keeps 4 spares.
	first := map[netip.Addr]bool{}
	for _, a := range nodes {
		addr, err := a.Allocate(ctx, pool, netip.Addr{}, ipam.KindTask)
		if err != nil {
			t.Fatal(err)
		}
		first[addr] = true
	}
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		spares, tasks := count()
		return tasks == 3 && spares["n1"] == want && spares["n2"] == want && spares["n3"] == want,
			fmt.Sprintf("%d tasks, spares %v", tasks, spares)
	})
	// A spare handed out is recorded as a task, and replaced.
	handed, err := nodes[0].Allocate(ctx, pool, netip.Addr{}, ipam.KindTask)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		all, err := ipam.Allocations(ctx, kv, pool)
		if err != nil {
			return false, err.Error()
		}
		spares, tasks := count()
		return all[handed].Kind == ipam.KindTask && all[handed].Node == "n1" && tasks == 4 && spares["n1"] == want,
			fmt.Sprintf("%s is %+v; %d tasks, spares %v", handed, all[handed], tasks, spares)
	})

	// A specific address that n2 keeps as a spare is given to n3 on request.
	all, err := ipam.Allocations(ctx, kv, pool)
	if err != nil {
		t.Fatal(err)
	}
	var n2spare netip.Addr
	for a, al := range all {
		if al.Kind == ipam.KindSpare && al.Node == "n2" {
			n2spare = a
			break
		}
	}
	if got, err := nodes[2].Allocate(ctx, pool, n2spare, ipam.KindTask); err != nil || got != n2spare {
		t.Fatalf("n3 asking for n2's spare %s: got %s, %v", n2spare, got, err)
	}

	// Fill the pool from every node at once: spares are given back to
	// whoever runs short, every address is used once, none twice.
	got := map[netip.Addr]string{handed: "n1", n2spare: "n3"}
	for a := range first {
		got[a] = "first"
	}
	exhausted := fillPool(t, nodes, pool, got)
	if len(got) != 253 || exhausted != 24 {
		t.Errorf("allocated %d addresses (want 253: 256 less network, broadcast, gateway), %d requests saw exhaustion (want 24)", len(got), exhausted)
	}
	// Consul agrees once the last hand-outs are recorded: 253 tasks.
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		spares, tasks := count()
		return tasks == 253 && len(spares) == 0, fmt.Sprintf("%d tasks, spares %v", tasks, spares)
	})

	// IPv6 pools keep spares the same way.
	pool6 := ipam.Pool{Network: "net", Prefix: netip.MustParsePrefix("fd00:78::/120"), BlockBits: 124}
	got6 := map[netip.Addr]bool{}
	for range 6 {
		a, err := nodes[0].Allocate(ctx, pool6, netip.Addr{}, ipam.KindTask)
		if err != nil || got6[a] || !pool6.Prefix.Contains(a) || a == pool6.Prefix.Addr() {
			t.Fatalf("IPv6 allocation %s: %v (repeated, outside %s or its first address)", a, err, pool6.Prefix)
		}
		got6[a] = true
	}
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		all, err := ipam.Allocations(ctx, kv, pool6)
		if err != nil {
			return false, err.Error()
		}
		kinds := map[string]int{}
		for a, al := range all {
			if got6[a] && al.Kind != ipam.KindTask {
				return false, fmt.Sprintf("%s handed out but recorded as %s", a, al.Kind)
			}
			kinds[al.Kind]++
		}
		return kinds[ipam.KindTask] == 6 && kinds[ipam.KindSpare] >= want, fmt.Sprintf("IPv6 pool holds %v", kinds)
	})
	for a := range got6 {
		if err := nodes[0].Release(ctx, pool6, a); err != nil {
			t.Fatal(err)
		}
	}

	// Release everything, each by its node, then stop keeping spares: the
	// pool is empty.
	all, err = ipam.Allocations(ctx, kv, pool)
	if err != nil {
		t.Fatal(err)
	}
	for addr, al := range all {
		if al.Kind != ipam.KindTask {
			continue
		}
		if err := byNode(nodes, al.Node).Release(ctx, pool, addr); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := nodes[0].Allocate(ctx, pool, netip.Addr{}, ipam.KindTask); err != nil {
		t.Fatal(err)
	}
	stopKeeping()
	keepers.Wait()
	spares, tasks := count()
	if len(spares) != 0 || tasks != 1 {
		t.Errorf("after stopping: spares %v and %d tasks, want none and 1", spares, tasks)
	}
	if all, err := ipam.Allocations(ctx, kv, pool6); err != nil || len(all) != 0 {
		t.Errorf("IPv6 pool after stopping: %v %v, want empty", all, err)
	}
}

// TestIntegrationSparesConsulLostState: Consul restarts empty (a dev
// agent) while a node keeps spares. Asked at once, that node hands out no
// spare Consul no longer records (another node filling the pool then never
// gets the same address), and keeps spares again once it has checked.
func TestIntegrationSparesConsulLostState(t *testing.T) {
	testenv.Require(t)
	c := testenv.StartConsul(t)
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(c.LogPath())
			t.Logf("consul log:\n%s", b)
		}
	})
	kv := consul.NewKV(c.Client())
	pool := testPool("10.79.0.0/26", "10.79.0.1")
	ctx := testenv.Context(t, 2*time.Minute)
	n1, n2 := ipam.NewAllocator(kv, "n1", nil), ipam.NewAllocator(kv, "n2", nil)
	keepCtx, stop := context.WithCancel(ctx)
	defer stop()
	go n1.KeepSpares(keepCtx, 4, slog.Default())
	if _, err := n1.Allocate(ctx, pool, netip.Addr{}, ipam.KindTask); err != nil {
		t.Fatal(err)
	}
	spares := func(node string) int {
		all, err := ipam.Allocations(ctx, kv, pool)
		if err != nil {
			return -1
		}
		n := 0
		for _, al := range all {
			if al.Kind == ipam.KindSpare && al.Node == node {
				n++
			}
		}
		return n
	}
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		n := spares("n1")
		return n == 4, fmt.Sprintf("n1 keeps %d spares, want 4", n)
	})

	c.Restart(0) // every allocation, n1's spares included, is gone
	// At once: n1's spares are not Consul's record any more, so what n1
	// hands out now must be recorded, and n2 cannot take it.
	now1, err := n1.Allocate(ctx, pool, netip.Addr{}, ipam.KindTask)
	if err != nil {
		t.Fatal(err)
	}
	// Once it has checked, n1 keeps spares again.
	testenv.Eventually(t, 20*time.Second, func() (bool, string) {
		n := spares("n1")
		return n >= 4, fmt.Sprintf("n1 keeps %d spares, want 4 or more again", n)
	})
	// n2 fills the pool: n1 gives its spares back, and nothing is used twice.
	got := map[netip.Addr]string{}
	for {
		a, err := n2.Allocate(ctx, pool, netip.Addr{}, ipam.KindTask)
		if errors.Is(err, ipam.ErrPoolExhausted) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if a == now1 {
			t.Fatalf("%s handed out by n1 just after the restart and by n2", a)
		}
		got[a] = "n2"
	}
	if len(got) != 60 {
		t.Errorf("n2 took %d addresses, want the 60 n1 does not hold", len(got))
	}
	// n1 has nothing to give: its old spares are n2's now.
	if a, err := n1.Allocate(ctx, pool, netip.Addr{}, ipam.KindTask); !errors.Is(err, ipam.ErrPoolExhausted) {
		t.Fatalf("n1 handed out %s (%v) from a pool n2 holds whole", a, err)
	}
}
