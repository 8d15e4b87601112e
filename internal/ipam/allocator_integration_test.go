package ipam_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"

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

	nodes := []*ipam.Allocator{ipam.NewAllocator(kv, "n1"), ipam.NewAllocator(kv, "n2"), ipam.NewAllocator(kv, "n3")}
	var mu sync.Mutex
	got := map[netip.Addr]string{}
	exhausted := 0
	var wg sync.WaitGroup
	for i, a := range nodes {
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					addr, err := a.Allocate(ctx, pool, netip.Addr{}, "task")
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

	// Release from any node; a specific address can then be taken, once.
	want := netip.MustParseAddr("10.77.0.77")
	if err := nodes[2].Release(ctx, pool, want); err != nil {
		t.Fatal(err)
	}
	if err := nodes[2].Release(ctx, pool, want); err != nil {
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

	// Release everything: every block is given back.
	for addr := range got {
		if err := nodes[0].Release(ctx, pool, addr); err != nil {
			t.Fatal(err)
		}
	}
	pairs, err := kv.ListPairs(ctx, ipam.KVPrefix)
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

func contains(s, sub string) bool { return strings.Contains(s, sub) }
