package ipam

import (
	"context"
	"net/netip"
	"slices"
	"testing"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
)

// TestForgetNodeReportsKeys: ForgetNode frees the node's addresses and
// deletes what it kept for starts, and says so, so that node rm prints
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
	}

	freed, deleted, err := ForgetNode(ctx, kv, p, "gone")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(freed, []netip.Addr{mine}) || !slices.Equal(deleted, []string{keptKey(p, "gone")}) {
		t.Errorf("freed %v, deleted %q; want %v and %q", freed, deleted, mine, keptKey(p, "gone"))
	}
	if _, ok, _ := kv.Get(ctx, keptKey(p, "live")); !ok {
		t.Errorf("%s deleted with gone's", keptKey(p, "live"))
	}
	freed, deleted, err = ForgetNode(ctx, kv, p, "gone")
	if err != nil || len(freed)+len(deleted) != 0 {
		t.Errorf("again: freed %v, deleted %q, %v; want nothing", freed, deleted, err)
	}
}
