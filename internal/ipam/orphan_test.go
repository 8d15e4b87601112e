package ipam

import (
	"context"
	"net/netip"
	"testing"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/netspec"
)

// TestNoBlockOfARemovedNetwork: an address request that read its
// network's spec just before `underlay network rm` deleted the spec and
// the pool's KV tree went on to write a block document afterwards: a
// block of a deleted network, whose allocations would look held by a
// network made again with the name and subnet. Claiming a block now
// fails once the spec is gone, in the write itself, whether the block
// was free or this node had written it before the removal (its copy
// then is stale, and the write retried on a fresh read).
func TestNoBlockOfARemovedNetwork(t *testing.T) {
	for _, c := range []struct {
		name string
		// before allocates before the removal, so that the allocator
		// holds a copy of the block.
		before bool
		want   netip.Addr
	}{
		{name: "free_block_any_address"},
		{name: "free_block_address_asked", want: netip.MustParseAddr("10.90.0.200")},
		{name: "block_written_before_any_address", before: true},
		{name: "block_written_before_address_asked", before: true, want: netip.MustParseAddr("10.90.0.131")},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			kv := kvtest.New()
			st := netspec.NewStore(kv)
			if err := st.Create(ctx, lanSpec); err != nil {
				t.Fatal(err)
			}
			a := NewAllocator(kv, "n1", nil)
			// The pool as the plugin serves it, read before the removal.
			p, _, err := SpecPools{Store: st}.PoolFor(ctx, lanSpec.Subnet)
			if err != nil {
				t.Fatal(err)
			}
			if c.before {
				if _, err := a.Allocate(ctx, p, netip.Addr{}, KindTask); err != nil {
					t.Fatal(err)
				}
			}
			if err := st.Delete(ctx, lanSpec.Name, NetworkPrefix(lanSpec.Name)); err != nil {
				t.Fatal(err)
			}
			addr, err := a.Allocate(ctx, p, c.want, KindTask)
			left, lerr := kv.List(ctx, NetworkPrefix(lanSpec.Name))
			if lerr != nil {
				t.Fatal(lerr)
			}
			if len(left) > 0 {
				t.Errorf("allocation after the network's removal: %s (err %v), and %s left in KV: a block of a deleted network", addr, err, left[0].Key)
			}
			if err == nil {
				t.Errorf("allocated %s in %s after the network's removal, want refused", addr, p.ID())
			}
		})
	}
}

// TestBlockClaimsGoOnAsOtherKeysChange: the check that keeps a removed
// network's blocks from being written again fails no claim because of a
// write elsewhere: another network made or removed (the network index
// changes), a range lease, a state report of the network.
func TestBlockClaimsGoOnAsOtherKeysChange(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	st := netspec.NewStore(kv)
	if err := st.Create(ctx, lanSpec); err != nil {
		t.Fatal(err)
	}
	a := NewAllocator(kv, "n1", nil)
	p, _, err := SpecPools{Store: st}.PoolFor(ctx, lanSpec.Subnet)
	if err != nil {
		t.Fatal(err)
	}
	other := netspec.Spec{Name: "other", Subnet: netip.MustParsePrefix("10.91.0.0/24"), Gateway: netip.MustParseAddr("10.91.0.1"),
		Parent: "eth2", IPAM: netspec.Cluster}
	writes := []func() error{
		func() error { return st.Create(ctx, other) },
		func() error { return kv.Put(ctx, netspec.KVPrefix+lanSpec.Name+"/ranges/10.90.0.0_28", []byte("n2")) },
		func() error {
			return kv.Put(ctx, netspec.KVPrefix+lanSpec.Name+"/nodes/n2", []byte(`{"state":"ready"}`))
		},
		func() error { return st.Delete(ctx, other.Name) },
	}
	seen := map[netip.Prefix]bool{}
	for i, write := range writes {
		if err := write(); err != nil {
			t.Fatal(err)
		}
		// A block of its own for each: claimed after the write.
		want := p.Blocks()[i].Addr().Next()
		if _, err := a.Allocate(ctx, p, want, KindTask); err != nil {
			t.Fatalf("claim of block %s after write %d: %v", p.Block(want), i, err)
		}
		seen[p.Block(want)] = true
	}
	all, err := Allocations(ctx, kv, p)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != len(writes) {
		t.Errorf("%d allocations in %d blocks, want %d: %v", len(all), len(seen), len(writes), all)
	}
}

// BenchmarkClaimFromSpec is the worst case of the spec's check: every
// allocation claims a block (the block's only address, released after),
// in a pool served from its spec, over the in-memory KV.
func BenchmarkClaimFromSpec(b *testing.B) {
	ctx := context.Background()
	kv := kvtest.New()
	st := netspec.NewStore(kv)
	if err := st.Create(ctx, lanSpec); err != nil {
		b.Fatal(err)
	}
	a := NewAllocator(kv, "n1", nil)
	p, _, err := SpecPools{Store: st}.PoolFor(ctx, lanSpec.Subnet)
	if err != nil {
		b.Fatal(err)
	}
	want := netip.MustParseAddr("10.90.0.200")
	for b.Loop() {
		if _, err := a.Allocate(ctx, p, want, KindTask); err != nil {
			b.Fatal(err)
		}
		if err := a.Release(ctx, p, want); err != nil {
			b.Fatal(err)
		}
	}
}
