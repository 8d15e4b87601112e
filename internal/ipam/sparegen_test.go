package ipam

import (
	"context"
	"maps"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/netspec"
)

// spareNode is node n1 keeping two spares of lan, served from a new KV.
func spareNode(t *testing.T) (*kvtest.KV, *netspec.Store, *Allocator, Pool) {
	t.Helper()
	kv := kvtest.New()
	st := netspec.NewStore(kv)
	n1 := NewAllocator(kv, "n1", nil)
	n1.spares.enable(2, nil)
	return kv, st, n1, servedLan(t, st)
}

// spareOf returns a spare a's keeper hands out of p, asking for one
// before each of up to five syncs (verifying, as its periodic check
// does), and what Consul holds of p then.
func spareOf(t *testing.T, ctx context.Context, kv *kvtest.KV, a *Allocator, p Pool) (netip.Addr, bool, map[netip.Addr]Alloc) {
	t.Helper()
	for range 5 {
		if addr, ok := a.spares.take(p, netip.Addr{}, Alloc{Node: a.node, At: time.Now().UTC(), Kind: KindTask}); ok {
			held, err := Allocations(ctx, kv, p)
			if err != nil {
				t.Fatal(err)
			}
			return addr, true, held
		}
		if _, err := a.spares.syncAll(ctx, true, false); err != nil {
			t.Errorf("sync of the spares: %v", err)
		}
	}
	return netip.Addr{}, false, nil
}

// TestSparesOfAnOlderGenerationGiveWay: the spare keeper, keyed by the
// pool's ID (NETWORK/v4, the same for every generation of the network),
// holds spares of a network removed and made again under the name (its
// teardown missed on this node), with the old tree deleted or left (the
// spec deleted by hand). None is handed out for the new network's
// requests (TestNoSpareOfANetworkMadeAgain), but the keeper kept the old
// pool for as long as the agent ran: the new network's requests never
// got a spare, and the old spares left in the blocks stayed recorded as
// this node's, which the reclaimer takes for spares it keeps. The old
// pool now gives way to the new one.
func TestSparesOfAnOlderGenerationGiveWay(t *testing.T) {
	for _, c := range []struct {
		name   string
		remove func(ctx context.Context, kv *kvtest.KV, st *netspec.Store) error
	}{
		{name: "tree_deleted", remove: func(ctx context.Context, kv *kvtest.KV, st *netspec.Store) error {
			return st.Delete(ctx, lanSpec.Name, NetworkPrefix(lanSpec.Name))
		}},
		{name: "spec_deleted_by_hand", remove: func(ctx context.Context, kv *kvtest.KV, st *netspec.Store) error {
			return kv.Delete(ctx, netspec.SpecKey(lanSpec.Name))
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			kv, st, n1, old := spareNode(t)
			oldSpares := keptSpares(t, n1, old)
			if err := c.remove(ctx, kv, st); err != nil {
				t.Fatal(err)
			}
			now := served(t, st, lanSpec)
			addr, ok, held := spareOf(t, ctx, kv, n1, now)
			switch {
			case !ok:
				t.Fatalf("no spare handed out for the network made again after 5 syncs; the keeper holds %v", n1.spares.known(now))
			case oldSpares[addr] && c.name == "tree_deleted":
				t.Errorf("spare %s of the old network handed out in the network made again", addr)
			case !n1.spares.mine(held[addr]):
				t.Errorf("spare %s handed out in the network made again is %+v there, want this keeper's spare", addr, held[addr])
			}
			for a := range n1.spares.known(now) {
				if !n1.spares.mine(held[a]) {
					t.Errorf("the keeper holds %s in the network made again, recorded there as %+v", a, held[a])
				}
			}
		})
	}
}

// TestSparesOfASpecRewrittenInPlace: a spec rewritten in place (by hand:
// its key's CreateIndex kept, a new modify index) is the same network.
// The keeper kept the pool as read before the rewrite, another pool to
// every request read after it (samePool compares the spec index): no
// spare of the pool was handed out again for as long as the agent ran.
// A rewrite that reserves one of its free spares (an aux address) or
// leaves it out of the range made the keeper's writes refused, its pool
// closed, and its spares kept recorded, never given back. The keeper now
// takes the pool as read again: its spares the rewrite still allows are
// handed out, and the others given back.
func TestSparesOfASpecRewrittenInPlace(t *testing.T) {
	for _, c := range []struct {
		name    string
		rewrite func(s *netspec.Spec, spares []netip.Addr) netip.Addr
	}{
		{name: "another_parent", rewrite: func(s *netspec.Spec, _ []netip.Addr) netip.Addr {
			s.Parent = "eth9"
			return netip.Addr{}
		}},
		{name: "aux_address_on_a_spare", rewrite: func(s *netspec.Spec, spares []netip.Addr) netip.Addr {
			s.Aux = map[string]netip.Addr{"router2": spares[0]}
			return spares[0]
		}},
		{name: "range_without_the_spares", rewrite: func(s *netspec.Spec, spares []netip.Addr) netip.Addr {
			s.IPRange = netip.MustParsePrefix("10.90.0.192/26")
			return spares[0]
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			kv, st, n1, old := spareNode(t)
			spares := slices.Collect(maps.Keys(keptSpares(t, n1, old)))
			rewritten := lanSpec
			excluded := c.rewrite(&rewritten, spares)
			putSpecs(t, kv, rewritten)
			now, _, err := SpecPools{Store: st}.PoolFor(ctx, lanSpec.Subnet)
			if err != nil {
				t.Fatal(err)
			}
			addr, ok, held := spareOf(t, ctx, kv, n1, now)
			switch {
			case !ok:
				t.Fatalf("no spare handed out after the spec was rewritten in place after 5 syncs; the keeper holds %v", n1.spares.known(now))
			case !now.usable(addr):
				t.Errorf("spare %s handed out, which the spec rewritten in place does not allow (%s)", addr, c.name)
			case !n1.spares.mine(held[addr]):
				t.Errorf("spare %s handed out is %+v in Consul, want this keeper's spare", addr, held[addr])
			}
			// One more sync (verifying: every handout recorded at once)
			// records the handout and gives back what the rewrite no
			// longer allows.
			if _, err := n1.spares.syncAll(ctx, true, false); err != nil {
				t.Errorf("sync of the spares: %v", err)
			}
			if held, err = Allocations(ctx, kv, now); err != nil {
				t.Fatal(err)
			}
			if al := held[addr]; al.Kind != KindTask || al.Node != n1.node {
				t.Errorf("spare %s handed out recorded as %+v, want n1's task", addr, al)
			}
			if excluded.IsValid() && n1.spares.mine(held[excluded]) {
				t.Errorf("%s, which the rewritten spec does not allow, still recorded as this node's spare: %+v", excluded, held[excluded])
			}
			for a := range n1.spares.known(now) {
				if !now.usable(a) {
					t.Errorf("the keeper still holds %s, which the rewritten spec does not allow", a)
				}
			}
		})
	}
}

// TestSpareClaimedAsTheSpecIsRewritten: the keeper claims spares for its
// pool as the sync read it; a request read after a rewrite in place that
// reserves one of them (an aux address) takes the pool as read again
// before the sync settles. The spare claimed must not be handed out: it
// is given back.
func TestSpareClaimedAsTheSpecIsRewritten(t *testing.T) {
	ctx := context.Background()
	kv, st, n1, old := spareNode(t)
	task := taskAddr(t, n1, old)
	reserved := task.Next() // the first spare the sync claims
	rewritten := lanSpec
	rewritten.Aux = map[string]netip.Addr{"router2": reserved}
	var now Pool
	n1.spares.afterWrite = func() {
		n1.spares.afterWrite = nil
		putSpecs(t, kv, rewritten)
		var err error
		if now, _, err = (SpecPools{Store: st}).PoolFor(ctx, lanSpec.Subnet); err != nil {
			t.Error(err)
		}
		n1.spares.take(now, reserved, Alloc{Node: n1.node, At: time.Now().UTC(), Kind: KindTask})
	}
	if _, err := n1.spares.syncAll(ctx, false, false); err != nil {
		t.Fatal(err)
	}
	if !now.Prefix.IsValid() {
		t.Fatal("the sync claimed no spare")
	}
	if got, ok := n1.spares.take(now, reserved, Alloc{Node: n1.node, At: time.Now().UTC(), Kind: KindTask}); ok {
		t.Errorf("spare %s handed out, which the spec rewritten as it was claimed reserves", got)
	}
	if _, err := n1.spares.syncAll(ctx, false, false); err != nil {
		t.Errorf("sync of the spares: %v", err)
	}
	held, err := Allocations(ctx, kv, now)
	if err != nil {
		t.Fatal(err)
	}
	if n1.spares.mine(held[reserved]) {
		t.Errorf("%s, which the rewritten spec reserves, still recorded as this node's spare: %+v", reserved, held[reserved])
	}
}

// TestShimReleaseOfASpecRewrittenInPlace: the keeper's pool rebound to
// the spec rewritten in place (a request read after the rewrite), the
// network's teardown on this node, bound to the spec as the reconciler
// read it before the rewrite, gives its spares back: the same network,
// not one made again under the name.
func TestShimReleaseOfASpecRewrittenInPlace(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	st := netspec.NewStore(kv)
	n := NodeIPAM{Alloc: NewAllocator(kv, "n1", nil), Pools: SpecPools{Store: st}}
	n.Alloc.spares.enable(2, nil)
	servedLan(t, st)
	l, err := st.ReadListing(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rewritten := lanSpec
	rewritten.Parent = "eth9"
	putSpecs(t, kv, rewritten)
	now, _, err := SpecPools{Store: st}.PoolFor(ctx, lanSpec.Subnet)
	if err != nil {
		t.Fatal(err)
	}
	keptSpares(t, n.Alloc, now)
	if err := n.ReleaseShim(ctx, l.Specs[0], l.SpecIndex(lanSpec.Name)); err != nil {
		t.Errorf("release of the network's shims and spares, read before the rewrite: %v", err)
	}
	if got := n.Alloc.spares.count(); got != 0 {
		t.Errorf("%d spares kept after the release of the network's spares, want 0", got)
	}
	held, err := Allocations(ctx, kv, now)
	if err != nil {
		t.Fatal(err)
	}
	for a, al := range held {
		if n.Alloc.spares.mine(al) {
			t.Errorf("spare %s still recorded after the release of the network's spares", a)
		}
	}
}

// TestReleaseInANetworkMadeAgainOfAnOldSpare: the keeper holds free
// spares of a network removed and made again under the name (its tree
// deleted, its teardown missed on this node). The new network hands one
// of those addresses to a container by its own write; the container's
// release was taken for the release of a spare Docker never got, and
// ignored: the address stayed recorded as the container's, a leak until
// the reclaimer's grace ran out. A release is judged against the
// keeper's spares only in the network they were claimed in.
func TestReleaseInANetworkMadeAgainOfAnOldSpare(t *testing.T) {
	ctx := context.Background()
	kv, st, n1, old := spareNode(t)
	oldSpares := keptSpares(t, n1, old)
	now := remakeLan(t, st)
	var x netip.Addr
	for range 4 {
		if a := taskAddr(t, n1, now); oldSpares[a] {
			x = a
			break
		}
	}
	if !x.IsValid() {
		t.Fatalf("none of the old spares %v handed out in the network made again", oldSpares)
	}
	if err := n1.Release(ctx, now, x); err != nil {
		t.Errorf("release of %s in the network made again: %v", x, err)
	}
	held, err := Allocations(ctx, kv, now)
	if err != nil {
		t.Fatal(err)
	}
	if al, ok := held[x]; ok {
		t.Errorf("%s still allocated after its release in the network made again: %+v", x, al)
	}
}
