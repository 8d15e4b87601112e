package ipam

import (
	"context"
	"net/netip"
	"slices"
	"testing"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
)

// TestForgetNodeReportsKeys: ForgetNode frees the node's addresses and
// deletes what it kept for starts and its report of addresses allocated to
// no node, and says so, so that node rm prints
// it; run again, it finds nothing and reports nothing. Another node's
// addresses and kept key stay.
func TestForgetNodeReportsKeys(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	_, p := clusterNet(t, kv)
	var mine netip.Addr
	for _, node := range []string{"gone", "live"} {
		addr, err := NewAllocator(kv, node, nil).Allocate(ctx, p, netip.Addr{}, KindTask)
		if err != nil {
			t.Fatal(err)
		}
		if node == "gone" {
			mine = addr
		}
		kv.Put(ctx, keptKey(p, node), []byte(`{"addrs":["`+addr.String()+`"]}`))
		kv.Put(ctx, nodelessKey(p, node), []byte(`{"allocs":{"10.2.0.250":{"node":""}}}`))
	}

	freed, deleted, err := ForgetNode(ctx, kv, p, "gone")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{keptKey(p, "gone"), nodelessKey(p, "gone")}; !slices.Equal(freed, []netip.Addr{mine}) || !slices.Equal(deleted, want) {
		t.Errorf("freed %v, deleted %q; want %v and %q", freed, deleted, mine, want)
	}
	for _, k := range []string{keptKey(p, "live"), nodelessKey(p, "live")} {
		if _, ok, _ := kv.Get(ctx, k); !ok {
			t.Errorf("%s deleted with gone's", k)
		}
	}
	freed, deleted, err = ForgetNode(ctx, kv, p, "gone")
	if err != nil || len(freed)+len(deleted) != 0 {
		t.Errorf("again: freed %v, deleted %q, %v; want nothing", freed, deleted, err)
	}
}
