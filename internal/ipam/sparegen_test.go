package ipam

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/netspec"
)

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
			kv := kvtest.New()
			st := netspec.NewStore(kv)
			n1 := NewAllocator(kv, "n1", nil)
			n1.spares.enable(2, nil)
			old := servedLan(t, st)
			taskAddr(t, n1, old)
			if _, err := n1.spares.syncAll(ctx, false, false); err != nil {
				t.Fatal(err)
			}
			oldSpares := n1.spares.known(old)
			if len(oldSpares) == 0 {
				t.Fatal("no spares kept")
			}
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
