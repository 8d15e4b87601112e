package ipam

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

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
	a := NewAllocator(kv, "n1", nil)
	p := servedLan(t, st)
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
	kv := kvtest.New()
	st := netspec.NewStore(kv)
	a := NewAllocator(kv, "n1", nil)
	p := servedLan(b, st)
	want := netip.MustParseAddr("10.90.0.200")
	allocateAndRelease(b, a, p, want)
}

// BenchmarkReleaseFromSpec is a write into an existing block, bound to
// the spec as read: the release of an address (and its allocation again)
// in a block the node holds another address of, in a pool served from
// its spec, over the in-memory KV. It reports the spec reads and KV
// transactions per release and allocation.
func BenchmarkReleaseFromSpec(b *testing.B) {
	ctx := context.Background()
	kv := kvtest.New()
	st := netspec.NewStore(kv)
	a := NewAllocator(kv, "n1", nil)
	p := servedLan(b, st)
	if _, err := a.Allocate(ctx, p, netip.MustParseAddr("10.90.0.130"), KindTask); err != nil {
		b.Fatal(err)
	}
	var specReads, txns atomic.Int64
	kv.Hook = func(call string, keys []string) error {
		switch {
		case call == "get" && keys[0] == netspec.SpecKey(lanSpec.Name):
			specReads.Add(1)
		case call == "txn":
			txns.Add(1)
		}
		return nil
	}
	want := netip.MustParseAddr("10.90.0.131")
	allocateAndRelease(b, a, p, want)
	b.ReportMetric(float64(specReads.Load())/float64(b.N), "spec-reads/op")
	b.ReportMetric(float64(txns.Load())/float64(b.N), "txns/op")
}

// TestSparesOfARemovedNetworkAreLetGo: a request that read its network's
// spec before `underlay network rm` makes the spare keeper keep spares of
// its pool again, after the teardown gave them back. Once the network is
// gone its claims are refused (see TestNoBlockOfARemovedNetwork): the
// keeper failed every sync, retried each second for as long as the agent
// ran, and never let the pool go. It now lets it go, with nothing held.
func TestSparesOfARemovedNetworkAreLetGo(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	st := netspec.NewStore(kv)
	if err := st.Create(ctx, lanSpec); err != nil {
		t.Fatal(err)
	}
	a := NewAllocator(kv, "n1", nil)
	a.spares.enable(2, nil)
	p, _, err := SpecPools{Store: st}.PoolFor(ctx, lanSpec.Subnet)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Delete(ctx, lanSpec.Name, NetworkPrefix(lanSpec.Name)); err != nil {
		t.Fatal(err)
	}
	// The straggler: no spare yet, and its own claim refused.
	if _, err := a.Allocate(ctx, p, netip.Addr{}, KindTask); err == nil {
		t.Fatal("allocated after the network's removal")
	}
	for i := range 2 {
		if _, err := a.spares.syncAll(ctx, false, false); err != nil {
			t.Errorf("sync %d of the spares: %v, want the removed network's pool let go", i, err)
		}
	}
	if n := a.spares.count(); n != 0 {
		t.Errorf("%d spares kept", n)
	}
	a.spares.mu.Lock()
	_, kept := a.spares.pools[p.ID()]
	a.spares.mu.Unlock()
	if kept {
		t.Errorf("%s still kept by the spare keeper, its network removed", p.ID())
	}
	left, err := kv.List(ctx, NetworkPrefix(lanSpec.Name))
	if err != nil || len(left) > 0 {
		t.Errorf("left of the removed network: %v, %v", left, err)
	}
}

// TestSparesHandedOutAsTheSpecGoes: a spare handed out before its
// network's spec went is recorded as the container's while its block
// stands (the spec deleted by hand, the blocks left), and forgotten with
// the pool once the block went with the network (`network rm`).
func TestSparesHandedOutAsTheSpecGoes(t *testing.T) {
	for _, rm := range []bool{false, true} {
		t.Run(map[bool]string{false: "spec_deleted_by_hand", true: "network_removed"}[rm], func(t *testing.T) {
			ctx := context.Background()
			kv := kvtest.New()
			st := netspec.NewStore(kv)
			if err := st.Create(ctx, lanSpec); err != nil {
				t.Fatal(err)
			}
			a := NewAllocator(kv, "n1", nil)
			a.spares.enable(2, nil)
			p, _, err := SpecPools{Store: st}.PoolFor(ctx, lanSpec.Subnet)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := a.Allocate(ctx, p, netip.Addr{}, KindTask); err != nil {
				t.Fatal(err)
			}
			if _, err := a.spares.syncAll(ctx, false, false); err != nil {
				t.Fatal(err)
			}
			handed := taskAddr(t, a, p)
			if rm {
				err = st.Delete(ctx, lanSpec.Name, NetworkPrefix(lanSpec.Name))
			} else {
				err = kv.Delete(ctx, netspec.KVPrefix+lanSpec.Name+"/spec")
			}
			if err != nil {
				t.Fatal(err)
			}
			for i := range 2 {
				// Verifying: every handout is recorded at once.
				if _, err := a.spares.syncAll(ctx, true, false); err != nil {
					t.Errorf("sync %d of the spares: %v", i, err)
				}
			}
			all, err := Allocations(ctx, kv, p)
			if err != nil {
				t.Fatal(err)
			}
			a.spares.mu.Lock()
			_, kept := a.spares.pools[p.ID()]
			a.spares.mu.Unlock()
			switch {
			case rm && (len(all) > 0 || kept):
				t.Errorf("network removed: %v left in KV, pool kept by the spare keeper: %t", all, kept)
			case !rm && all[handed].Kind != KindTask:
				t.Errorf("spec deleted by hand: handed-out spare %s recorded as %+v, want the container's (%s)", handed, all[handed], KindTask)
			}
		})
	}
}

// removals are what `underlay network rm`, or a network made again, can
// do to a network's spec after a request read its pool: each leaves the
// pool read no longer served.
var removals = []struct {
	name string
	do   func(ctx context.Context, st *netspec.Store, spec netspec.Spec) error
}{
	{name: "removed", do: func(ctx context.Context, st *netspec.Store, spec netspec.Spec) error {
		return st.Delete(ctx, spec.Name, NetworkPrefix(spec.Name))
	}},
	{name: "being_removed", do: func(ctx context.Context, st *netspec.Store, spec netspec.Spec) error {
		return st.MarkDeleting(ctx, spec.Name)
	}},
	{name: "made_again_with_another_subnet", do: func(ctx context.Context, st *netspec.Store, spec netspec.Spec) error {
		if err := st.Delete(ctx, spec.Name, NetworkPrefix(spec.Name)); err != nil {
			return err
		}
		spec.Subnet, spec.Gateway, spec.IPRange = netip.MustParsePrefix("10.92.0.0/24"), netip.MustParseAddr("10.92.0.1"), netip.Prefix{}
		return st.Create(ctx, spec)
	}},
}

// TestNoPressureKeyOfARemovedNetwork: a request that read its network's
// spec just before `underlay network rm` and found the pool short asks
// the other nodes for their spares through the pool's pressure key. Its
// unconditional write left that key under the deleted network's tree:
// an orphan no removal deletes. The ask is now refused, as a block claim
// is (TestNoBlockOfARemovedNetwork), once the spec is gone, being
// removed, or no longer gives the pool.
func TestNoPressureKeyOfARemovedNetwork(t *testing.T) {
	for _, c := range removals {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			kv := kvtest.New()
			st := netspec.NewStore(kv)
			a := NewAllocator(kv, "n1", nil)
			p := servedLan(t, st)
			if err := c.do(ctx, st, lanSpec); err != nil {
				t.Fatal(err)
			}
			err := a.spares.askForSpares(ctx, p)
			if _, ok, gerr := kv.Get(ctx, pressureKey(p)); gerr != nil || ok {
				t.Errorf("asked for spares of %s (err %v): pressure key %s written (%t, %v), its network's spec no longer giving the pool", p.ID(), err, pressureKey(p), ok, gerr)
			}
			if !notServed(err) {
				t.Errorf("ask for spares of %s: %v, want refused: nothing more is handed out of it", p.ID(), err)
			}
		})
	}
}

// TestNoPressureWatchKeyOfARemovedNetwork: the spare keeper's watch of a
// pool's pressure key creates the key before following it. Started for
// a pool read before `underlay network rm` (a straggling request makes
// the keeper know it again), it wrote the key under the deleted tree. It
// now writes it only while the spec gives the pool, and otherwise asks
// for a check of the pool's spares, writing nothing.
func TestNoPressureWatchKeyOfARemovedNetwork(t *testing.T) {
	for _, c := range removals {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			kv := kvtest.New()
			st := netspec.NewStore(kv)
			a := NewAllocator(kv, "n1", nil)
			p := servedLan(t, st)
			if err := c.do(ctx, st, lanSpec); err != nil {
				t.Fatal(err)
			}
			waits, events, stopped := watchPressure(ctx, kv, a, p)
			select {
			case <-waits: // the key written, and followed
			case ev := <-events:
				if ev.pool != p.ID() || !ev.check {
					t.Errorf("event %+v, want a check of %s's spares", ev, p.ID())
				}
			}
			cancel()
			<-stopped
			if pair, ok, err := kv.Get(context.Background(), pressureKey(p)); err != nil || ok {
				t.Errorf("pressure key %s written by the watch of %s (%q, %v), its network's spec no longer giving the pool", pressureKey(p), p.ID(), pair.Value, err)
			}
		})
	}
}

// TestNoSweepReportOfARemovedNetwork: a node's sweep publishes, per pool,
// the addresses it keeps for container starts under way (kept/NODE) and
// its report of the allocations naming no node it holds none of
// (nodeless/NODE), with unconditional writes after its read of the specs.
// A network removed meanwhile got the key back under its deleted tree: a
// kept key left there delays reclaims in a network made again under the
// name, and shows its addresses as a start's. The writes are now refused,
// as a block claim is, once the spec is gone, being removed, or no
// longer gives the pool.
func TestNoSweepReportOfARemovedNetwork(t *testing.T) {
	for _, report := range []string{"kept", "nodeless"} {
		for _, c := range removals {
			t.Run(report+"/"+c.name, func(t *testing.T) {
				ctx := context.Background()
				kv := kvtest.New()
				st, p := clusterNet(t, kv)
				spec, _, err := st.Get(ctx, p.Network)
				if err != nil {
					t.Fatal(err)
				}
				clock := t0
				r := &Reclaimer{Alloc: newAllocator(kv, "n1", "g", func() time.Time { return clock }, nil), Pools: SpecPools{Store: st},
					Grace: 10 * time.Second, Log: slog.New(slog.DiscardHandler)}
				key := keptKey(p, "n1")
				if report == "kept" {
					// Past the grace twice, unheld, with a start under way
					// since before its allocation: kept at the second sweep.
					if _, err := r.Alloc.Allocate(ctx, p, netip.Addr{}, KindTask); err != nil {
						t.Fatal(err)
					}
					r.Held = &localStarts{starts: map[string][]Start{p.Network: {{Since: t0.Add(-time.Minute)}}}}
					clock = t0.Add(11 * time.Second)
					if err := r.Sweep(ctx); err != nil {
						t.Fatal(err)
					}
					clock = t0.Add(22 * time.Second)
				} else {
					// An allocation naming no node, which n1 does not hold.
					key = nodelessKey(p, "n1")
					r.Held = heldSet{}
					raw := fmt.Sprintf(`{"node":"","allocs":{"10.2.0.18":{"node":"","at":%q,"kind":"task"}}}`, t0.Add(-time.Hour).Format(time.RFC3339Nano))
					if err := kv.Put(ctx, blockPath(p, p.Block(netip.MustParseAddr("10.2.0.18"))), []byte(raw)); err != nil {
						t.Fatal(err)
					}
				}
				// The network goes after the sweep read the specs, just
				// before it writes the key.
				removed := false
				kv.Hook = func(call string, keys []string) error {
					if call == "txn" && keys[0] == key && !removed {
						removed = true
						if err := c.do(ctx, st, spec); err != nil {
							t.Error(err)
						}
					}
					return nil
				}
				sweepErr := r.Sweep(ctx)
				if !removed {
					t.Fatalf("the sweep wrote no %s (err %v)", key, sweepErr)
				}
				if pair, ok, err := kv.Get(ctx, key); err != nil || ok {
					t.Errorf("%s written by a sweep after its network's spec no longer gave the pool: %s (%v); the sweep: %v", key, pair.Value, err, sweepErr)
				}
			})
		}
	}
}

// TestNothingOfAPoolReadBeforeItsNetworkWasMadeAgain: a request that read
// its pool just before `underlay network rm`, with the network made again
// under the name and subnet before its write (within one request's life),
// claimed a block of the new network as this node's: the spec check found
// a spec standing that gives the pool. The claim is now bound to the spec
// as read (its modify index), and refused; so is the ask for spares.
func TestNothingOfAPoolReadBeforeItsNetworkWasMadeAgain(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	st := netspec.NewStore(kv)
	a := NewAllocator(kv, "n1", nil)
	old := servedLan(t, st)
	now := remakeLan(t, st)
	addr, err := a.Allocate(ctx, old, netip.Addr{}, KindTask)
	if !notServed(err) {
		t.Errorf("allocation from the pool read before the network was made again: %s (err %v), want refused", addr, err)
	}
	if err := a.spares.askForSpares(ctx, old); !notServed(err) {
		t.Errorf("ask for spares of the pool read before the network was made again: %v, want refused", err)
	}
	left, err := kv.List(ctx, NetworkPrefix(lanSpec.Name))
	if err != nil || len(left) > 0 {
		var keys []string
		for _, pr := range left {
			keys = append(keys, pr.Key)
		}
		t.Errorf("written into the network made again: %v (%v)", keys, err)
	}
	// The new network's own requests are served.
	if _, err := a.Allocate(ctx, now, netip.Addr{}, KindTask); err != nil {
		t.Errorf("allocation in the network made again: %v", err)
	}
}

// TestNoSpareOfANetworkMadeAgain: the spare keeper holds spares of a pool
// whose network was removed and made again under the name and subnet
// (its teardown missed on this node, or a straggling request made the
// pool known again). The old spares went with the old tree: handed out
// for the new network's request, one is recorded nowhere there, and
// another node may be given it too. A pool read from another spec is
// now another pool to the keeper.
func TestNoSpareOfANetworkMadeAgain(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	st := netspec.NewStore(kv)
	n1, n2 := NewAllocator(kv, "n1", nil), NewAllocator(kv, "n2", nil)
	n1.spares.enable(2, nil)
	old := servedLan(t, st)
	keptSpares(t, n1, old)
	now := remakeLan(t, st)
	got := taskAddr(t, n1, now)
	if again, err := n2.Allocate(ctx, now, got, KindTask); err == nil {
		t.Errorf("%s handed out to n1 and then to n2 (%s) in the network made again", got, again)
	}
}

// TestBatchOfTwoNetworksUnderOneName: requests of one pool ID share one
// batch, served with the first's pool. A request of a pool read before
// its network was removed and made again, and one of the network made
// again, came in one batch: the second was refused with the first, its
// network standing.
func TestBatchOfTwoNetworksUnderOneName(t *testing.T) {
	kv := kvtest.New()
	st := netspec.NewStore(kv)
	a := NewAllocator(kv, "n1", nil)
	old := servedLan(t, st)
	now := remakeLan(t, st)
	al := Alloc{Node: "n1", At: time.Now().UTC(), Kind: KindTask}
	stale := &request{pool: old, al: al, done: make(chan result, 1)}
	fresh := &request{pool: now, al: al, done: make(chan result, 1)}
	a.commit([]*request{stale, fresh})
	if res := <-stale.done; !notServed(res.err) {
		t.Errorf("request of the pool read before the network was made again: %s (err %v), want refused", res.addr, res.err)
	}
	if res := <-fresh.done; res.err != nil {
		t.Errorf("request of the network made again, in the same batch: %v", res.err)
	}
}

// TestNoReleaseOfAPoolReadBeforeItsNetworkWasMadeAgain: a release queued
// with a pool read before its network was removed and made again under
// the name and subnet (within one request's life) wrote into the new
// network's block, a write into an existing block carrying no spec check,
// and freed an address this node holds there for a running container:
// handed out again while in use. So did the reclaimer's frees. Writes of
// a pool read from a spec are now bound to that spec, and refused.
func TestNoReleaseOfAPoolReadBeforeItsNetworkWasMadeAgain(t *testing.T) {
	for _, how := range []string{"release", "reclaim"} {
		t.Run(how, func(t *testing.T) {
			ctx := context.Background()
			kv := kvtest.New()
			st := netspec.NewStore(kv)
			n1, n2 := NewAllocator(kv, "n1", nil), NewAllocator(kv, "n2", nil)
			old := servedLan(t, st)
			now := remakeLan(t, st)
			x, err := n1.Allocate(ctx, now, netip.Addr{}, KindTask)
			if err != nil {
				t.Fatal(err)
			}
			switch how {
			case "release":
				err = n1.Release(ctx, old, x)
			case "reclaim":
				held, err := Allocations(ctx, kv, now)
				if err != nil {
					t.Fatal(err)
				}
				var freed []netip.Addr
				freed, err = n1.reclaimObserved(ctx, old, map[netip.Addr]Alloc{x: held[x]})
				if len(freed) > 0 {
					t.Errorf("reclaim of the pool read before the network was made again freed %v (err %v)", freed, err)
				}
			}
			if how == "release" && (!notServed(err) || !strings.Contains(err.Error(), netspec.SpecKey(lanSpec.Name))) {
				t.Errorf("release of %s from the pool read before the network was made again: %v, want refused, naming the spec key", x, err)
			}
			if again, err := n2.Allocate(ctx, now, x, KindTask); err == nil {
				t.Errorf("%s, held by n1 in the network made again, handed out to n2 too (%s)", x, again)
			}
			if got, err := n1.Allocate(ctx, now, netip.Addr{}, KindTask); err != nil || got == x {
				t.Errorf("%s, held by n1 in the network made again, handed out again to n1: %s (%v)", x, got, err)
			}
			// The new network's own release still frees it.
			if err := n1.Release(ctx, now, x); err != nil {
				t.Errorf("release of %s from the network made again: %v", x, err)
			}
		})
	}
}

// TestNoReleaseOfAPoolReadBeforeItsNetworkWasMadeAgainWithAnotherSubnet:
// a network removed and made again under the name with another subnet
// whose blocks have the same keys (10.90.0.0/23 for 10.90.0.0/24, the
// same range) gives another pool, which boundRefusal took for a spec
// rewritten by hand: a release or reclaim of the pool read before went on
// unbound into the new network's block, freeing an address this node
// holds there for a running container, handed out again while in use.
// The new spec's CreateIndex, later than the old pool's reading, tells
// the network made again from a rewrite: refused.
func TestNoReleaseOfAPoolReadBeforeItsNetworkWasMadeAgainWithAnotherSubnet(t *testing.T) {
	for _, how := range []string{"release", "reclaim"} {
		t.Run(how, func(t *testing.T) {
			ctx := context.Background()
			kv := kvtest.New()
			st := netspec.NewStore(kv)
			n1, n2 := NewAllocator(kv, "n1", nil), NewAllocator(kv, "n2", nil)
			old := servedLan(t, st)
			now := remakeLanAs(t, st, wideLan)
			x, err := n1.Allocate(ctx, now, netip.MustParseAddr("10.90.0.130"), KindTask)
			if err != nil {
				t.Fatal(err)
			}
			if old.Block(x) != now.Block(x) || blockPath(old, old.Block(x)) != blockPath(now, now.Block(x)) {
				t.Fatalf("the two pools' blocks of %s differ: the test needs one key", x)
			}
			switch how {
			case "release":
				err = n1.Release(ctx, old, x)
				if !notServed(err) || !strings.Contains(err.Error(), `network "lan"`) || !strings.Contains(err.Error(), netspec.SpecKey(lanSpec.Name)) {
					t.Errorf("release of %s from the pool read before the network was made again with another subnet: %v, want refused, naming the network and its spec key", x, err)
				}
			case "reclaim":
				held, err := Allocations(ctx, kv, now)
				if err != nil {
					t.Fatal(err)
				}
				if freed, err := n1.reclaimObserved(ctx, old, map[netip.Addr]Alloc{x: held[x]}); len(freed) > 0 || !notServed(err) {
					t.Errorf("reclaim of the pool read before the network was made again with another subnet: freed %v, err %v, want nothing freed, refused", freed, err)
				}
			}
			if again, err := n2.Allocate(ctx, now, x, KindTask); err == nil {
				t.Errorf("%s, held by n1 in the network made again, handed out to n2 too (%s)", x, again)
			}
			if err := n1.Release(ctx, now, x); err != nil {
				t.Errorf("release of %s from the network made again: %v", x, err)
			}
		})
	}
}

// TestReleaseOfAPoolWhoseSpecWasRewrittenByHand: a spec rewritten by hand
// to another pool keeps its key's CreateIndex: a release of the pool read
// before goes on, unbound, as before (no agent serves the pool written;
// refused, the address would stay recorded for good).
func TestReleaseOfAPoolWhoseSpecWasRewrittenByHand(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	st := netspec.NewStore(kv)
	n1 := NewAllocator(kv, "n1", nil)
	old := servedLan(t, st)
	x := taskAddr(t, n1, old)
	putSpecs(t, kv, wideLan)
	if err := n1.Release(ctx, old, x); err != nil {
		t.Errorf("release of %s, its spec rewritten by hand to another subnet: %v", x, err)
	}
	held, err := Allocations(ctx, kv, old)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := held[x]; ok {
		t.Errorf("%s still held after its release", x)
	}
}

// TestWritesOfAPoolWhoseSpecWasRewrittenInPlace: a spec rewritten in
// place keeping its pool (by hand, here to another parent) keeps its
// key's CreateIndex: the same network. A release, a reclaim or an
// allocation of the pool read before was refused as the network removed
// and made again, the address left recorded (a claim of a free block, its
// spec read, likewise). They now go on, bound to the spec as it is now.
func TestWritesOfAPoolWhoseSpecWasRewrittenInPlace(t *testing.T) {
	for _, how := range []string{"release", "reclaim", "allocate", "claim"} {
		t.Run(how, func(t *testing.T) {
			ctx := context.Background()
			kv := kvtest.New()
			st := netspec.NewStore(kv)
			n1 := NewAllocator(kv, "n1", nil)
			old := servedLan(t, st)
			x := taskAddr(t, n1, old)
			moved := lanSpec
			moved.Parent = "eth9"
			putSpecs(t, kv, moved)
			var err error
			want := map[netip.Addr]bool{}
			switch how {
			case "release":
				err = n1.Release(ctx, old, x)
			case "reclaim":
				held, err := Allocations(ctx, kv, old)
				if err != nil {
					t.Fatal(err)
				}
				var freed []netip.Addr
				if freed, err = n1.reclaimObserved(ctx, old, map[netip.Addr]Alloc{x: held[x]}); len(freed) != 1 {
					t.Errorf("reclaim of %s, its spec rewritten in place: freed %v (%v)", x, freed, err)
				}
			case "allocate":
				var y netip.Addr
				y, err = n1.Allocate(ctx, old, netip.Addr{}, KindTask)
				want[x], want[y] = true, true
			case "claim":
				// A block of no document: its claim reads the spec.
				y := netip.MustParseAddr("10.90.0.200")
				_, err = n1.Allocate(ctx, old, y, KindTask)
				want[x], want[y] = true, true
			}
			if err != nil {
				t.Errorf("%s of a pool whose spec was rewritten in place, keeping the pool: %v", how, err)
			}
			held, err := Allocations(ctx, kv, old)
			if err != nil {
				t.Fatal(err)
			}
			got := map[netip.Addr]bool{}
			for a := range held {
				got[a] = true
			}
			if !maps.Equal(got, want) {
				t.Errorf("allocated after the %s: %v, want %v", how, got, want)
			}
		})
	}
}

// TestReleaseReadBeforeTheRemovalMark: a release of a pool read before
// `network rm` marked the spec is refused, with an error naming the
// network and its spec key, and the address left recorded: the removal
// deletes the network's tree with it. The pool as marked (the plugin's
// release during a removal) still frees it.
func TestReleaseReadBeforeTheRemovalMark(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	st := netspec.NewStore(kv)
	n1 := NewAllocator(kv, "n1", nil)
	old := servedLan(t, st)
	x := taskAddr(t, n1, old)
	y, err := n1.Allocate(ctx, old, netip.Addr{}, KindTask)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.MarkDeleting(ctx, lanSpec.Name); err != nil {
		t.Fatal(err)
	}
	err = n1.Release(ctx, old, x)
	var rm *RemovingError
	if !errors.As(err, &rm) || !strings.Contains(err.Error(), `network "lan"`) || !strings.Contains(err.Error(), netspec.SpecKey(lanSpec.Name)) {
		t.Errorf("release of %s read before the removal mark: %v, want refused as being removed, naming the network and its spec key", x, err)
	}
	_, _, err = SpecPools{Store: st}.PoolByID(ctx, old.ID())
	if !errors.As(err, &rm) {
		t.Fatalf("pool of the marked network: %v, want it being removed", err)
	}
	if err := n1.Release(ctx, rm.Pool, y); err != nil {
		t.Errorf("release of %s from the pool as marked: %v", y, err)
	}
	held, err := Allocations(ctx, kv, old)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := held[x]; !ok {
		t.Errorf("%s freed by a refused release", x)
	}
	if _, ok := held[y]; ok {
		t.Errorf("%s still held after its release from the pool as marked", y)
	}
}

// servedLan stores lanSpec in st, as `network create` does, and returns
// its pool as the plugin reads it.
func servedLan(tb testing.TB, st *netspec.Store) Pool {
	tb.Helper()
	return served(tb, st, lanSpec)
}

// served creates spec's network and returns its pool as the plugin reads
// it, through the specs.
func served(tb testing.TB, st *netspec.Store, spec netspec.Spec) Pool {
	tb.Helper()
	ctx := context.Background()
	if err := st.Create(ctx, spec); err != nil {
		tb.Fatal(err)
	}
	p, _, err := SpecPools{Store: st}.PoolFor(ctx, spec.Subnet)
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// remakeLan removes lanSpec's network, as `network rm` does, makes it
// again under the name and subnet, and returns the new network's pool.
func remakeLan(tb testing.TB, st *netspec.Store) Pool {
	tb.Helper()
	return remakeLanAs(tb, st, lanSpec)
}

// wideLan is lanSpec with another subnet whose blocks have lanSpec's keys:
// its range is lanSpec's, in a /23.
var wideLan = func() netspec.Spec {
	s := lanSpec
	s.Subnet = netip.MustParsePrefix("10.90.0.0/23")
	return s
}()

// remakeLanAs removes lanSpec's network, as `network rm` does, makes it
// again as spec, and returns the new network's pool.
func remakeLanAs(tb testing.TB, st *netspec.Store, spec netspec.Spec) Pool {
	tb.Helper()
	if err := st.Delete(context.Background(), lanSpec.Name, NetworkPrefix(lanSpec.Name)); err != nil {
		tb.Fatal(err)
	}
	return served(tb, st, spec)
}

// allocateAndRelease allocates want in p and releases it, b.N times.
func allocateAndRelease(b *testing.B, a *Allocator, p Pool, want netip.Addr) {
	ctx := context.Background()
	for b.Loop() {
		if _, err := a.Allocate(ctx, p, want, KindTask); err != nil {
			b.Fatal(err)
		}
		if err := a.Release(ctx, p, want); err != nil {
			b.Fatal(err)
		}
	}
}

// TestRewriteInPlaceThatReservesMore: a spec rewritten in place that
// keeps the pool's subnet and range but reserves another address (an aux
// address, or another gateway) is the same network, yet a pool read
// before the rewrite does not reserve that address: an allocation bound
// again to the spec as it is now handed it out, to a container, while
// the rewrite says the router or the host holds it (a duplicate). Such a
// write is refused, as before writes of a rewritten spec went on, and the
// pool read again reserves it.
func TestRewriteInPlaceThatReservesMore(t *testing.T) {
	for _, how := range []string{"aux address", "gateway", "aux address in a block to claim"} {
		t.Run(how, func(t *testing.T) {
			ctx := context.Background()
			kv := kvtest.New()
			st := netspec.NewStore(kv)
			n1 := NewAllocator(kv, "n1", nil)
			old := servedLan(t, st)
			x := taskAddr(t, n1, old)
			next, want := x.Next(), netip.Addr{} // what the pool read before would hand out next
			rewritten := lanSpec
			switch how {
			case "gateway":
				rewritten.Gateway = next
			case "aux address":
				rewritten.Aux = map[string]netip.Addr{"router2": next}
			default:
				// A block of no document: its claim reads the spec.
				next = netip.MustParseAddr("10.90.0.200")
				want = next
				rewritten.Aux = map[string]netip.Addr{"router2": next}
			}
			putSpecs(t, kv, rewritten)
			y, err := n1.Allocate(ctx, old, want, KindTask)
			if err == nil && y == next {
				t.Fatalf("allocated %s, which the spec rewritten in place reserves (%s), from the pool read before", y, how)
			}
			if err == nil {
				return // another address: no harm
			}
			if !strings.Contains(err.Error(), netspec.SpecKey(lanSpec.Name)) {
				t.Errorf("refused with %v; want the error to name the spec key %s", err, netspec.SpecKey(lanSpec.Name))
			}
			now, _, err := SpecPools{Store: st}.PoolFor(ctx, lanSpec.Subnet)
			if err != nil {
				t.Fatal(err)
			}
			if z := taskAddr(t, n1, now); z == next {
				t.Errorf("the pool read again handed out %s, which the rewritten spec reserves", z)
			}
		})
	}
}
