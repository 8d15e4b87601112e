package ipam

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/netspec"
)

// withOthers stores lanSpec among n other networks' specs in kv.
func withOthers(tb testing.TB, kv *kvtest.KV, n int) *netspec.Store {
	tb.Helper()
	ctx := context.Background()
	st := netspec.NewStore(kv)
	for i := range n {
		spec := lanSpec
		spec.Name, spec.IPv6Subnet = fmt.Sprintf("other%d", i), netip.Prefix{}
		spec.Subnet = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 100, byte(i), 0}), 24)
		spec.Gateway, spec.IPRange, spec.Parent = spec.Subnet.Addr().Next(), netip.Prefix{}, fmt.Sprintf("eth%d", i+2)
		if err := st.Create(ctx, spec); err != nil {
			tb.Fatal(err)
		}
	}
	if err := st.Create(ctx, lanSpec); err != nil {
		tb.Fatal(err)
	}
	return st
}

// countLists counts kv's listings of the network specs.
func countLists(kv *kvtest.KV) *atomic.Int64 {
	var lists atomic.Int64
	kv.Hook = func(call string, keys []string) error {
		if call == "list" && strings.HasPrefix(keys[0], netspec.KVPrefix) {
			lists.Add(1)
		}
		return nil
	}
	return &lists
}

// BenchmarkRequestDuringRemoval refuses an address request in the pool
// of a network being removed, among 50 other networks' specs, the specs
// read since the mark (as the agent's reconciler reads them).
func BenchmarkRequestDuringRemoval(b *testing.B) {
	ctx := context.Background()
	kv := kvtest.New()
	st := withOthers(b, kv, 50)
	pl := &Plugin{Alloc: NewAllocator(kv, "n1", nil), Pools: SpecPools{Store: st}}
	if err := st.MarkDeleting(ctx, lanSpec.Name); err != nil {
		b.Fatal(err)
	}
	if _, err := st.ReadListing(ctx); err != nil {
		b.Fatal(err)
	}
	req := addressRequest{PoolID: "lan/v4"}
	for b.Loop() {
		if _, err := pl.requestAddress(ctx, req); err == nil {
			b.Fatal("request during the removal served")
		}
	}
}

// BenchmarkReleaseAfterTheSpecIsGone releases an address of a network
// whose spec was deleted, from the pool as the plugin served it, among
// 50 other networks' specs, the specs read since.
func BenchmarkReleaseAfterTheSpecIsGone(b *testing.B) {
	ctx := context.Background()
	kv := kvtest.New()
	st := withOthers(b, kv, 50)
	pl := &Plugin{Alloc: NewAllocator(kv, "n1", nil), Pools: SpecPools{Store: st}}
	out, err := pl.requestPool(ctx, poolRequest{Pool: "10.90.0.0/24"})
	if err != nil {
		b.Fatal(err)
	}
	// The pool ID the plugin gave (NAME/v4@GEN), as Docker sends it: a
	// generation-less one, never served here, has no pool to fall back on.
	id := out.(map[string]any)["PoolID"].(string)
	if err := st.Delete(ctx, lanSpec.Name, NetworkPrefix(lanSpec.Name)); err != nil {
		b.Fatal(err)
	}
	if _, err := st.ReadListing(ctx); err != nil {
		b.Fatal(err)
	}
	req := releaseRequest{PoolID: id, Address: "10.90.0.200"}
	for b.Loop() {
		if _, err := pl.releaseAddress(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// TestSettledAnswersAreNotReadAgain: while a network was being removed,
// every address request in its pool read every spec from Consul again
// to be refused, and once its spec was gone every late release of its
// addresses read them again before falling back on the pool as served: a
// removal's stragglers each cost a listing of every network's keys. Both
// answers stand until a network is created or deleted, which rewrites
// the network index: the specs are now read again only once the index
// has changed since they were, so a network made again under the name is
// still served at once.
func TestSettledAnswersAreNotReadAgain(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	pl, _ := pluginFor(t, kv, "n1")
	st := pl.Pools.(SpecPools).Store
	if _, err := pl.requestPool(ctx, poolRequest{Pool: "10.90.0.0/24"}); err != nil {
		t.Fatal(err)
	}
	var held []string
	for range 10 {
		out, err := pl.requestAddress(ctx, addressRequest{PoolID: "lan/v4"})
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, out.(map[string]any)["Address"].(string))
	}
	if err := st.MarkDeleting(ctx, lanSpec.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := st.ReadListing(ctx); err != nil {
		t.Fatal(err)
	}
	lists := countLists(kv)
	for range 10 {
		if _, err := pl.requestAddress(ctx, addressRequest{PoolID: "lan/v4"}); err == nil || !strings.Contains(err.Error(), "is being removed") {
			t.Fatalf("request during the removal: %v, want refused", err)
		}
	}
	if n := lists.Load(); n > 1 {
		t.Errorf("10 requests during the removal read the specs %d times, want once at most", n)
	}
	// The spec is deleted, the blocks left (as by hand): late releases.
	kv.Hook = nil
	if err := st.Delete(ctx, lanSpec.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := st.ReadListing(ctx); err != nil {
		t.Fatal(err)
	}
	lists = countLists(kv)
	for _, a := range held {
		if _, err := pl.releaseAddress(ctx, releaseRequest{PoolID: "lan/v4", Address: a}); err != nil {
			t.Errorf("late release of %s: %v", a, err)
		}
	}
	if n := lists.Load(); n > 1 {
		t.Errorf("10 releases after the spec was deleted read the specs %d times, want once at most", n)
	}
	kv.Hook = nil
	all, err := Allocations(ctx, kv, PoolOf4(lanSpec))
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 0 {
		t.Errorf("still allocated after their late releases: %v", all)
	}
	// Made again under the name: served at once, before the reconciler
	// reads the specs.
	spec := lanSpec
	spec.Subnet, spec.Gateway, spec.IPRange = netip.MustParsePrefix("10.91.0.0/24"), netip.MustParseAddr("10.91.0.1"), netip.Prefix{}
	if err := st.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	// Under its own pool ID: the older agent's one this plugin served,
	// naming no generation, stands for the first network's (see
	// TestOlderAgentsPoolIDOnceMadeAgain).
	pair, _, err := kv.Get(ctx, netspec.SpecKey(lanSpec.Name))
	if err != nil {
		t.Fatal(err)
	}
	out, err := pl.requestAddress(ctx, addressRequest{PoolID: fmt.Sprintf("lan/v4@%d", pair.CreateIndex)})
	if err != nil {
		t.Fatalf("request in the network made again: %v, want served", err)
	}
	if a := netip.MustParsePrefix(out.(map[string]any)["Address"].(string)); !spec.Subnet.Contains(a.Addr()) {
		t.Errorf("request in the network made again: %s, want an address of %s", a, spec.Subnet)
	}
}
