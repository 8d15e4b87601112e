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

	got, err := ForgetNode(ctx, kv, p, "gone")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{blockPath(p, p.Block(mine)), keptKey(p, "gone"), nodelessKey(p, "gone")}
	if !slices.Equal(got.Freed, []netip.Addr{mine}) || !slices.Equal(got.Deleted, want) || len(got.Changed) > 0 {
		t.Errorf("freed %v, deleted %q, changed %q; want %v, %q and nothing", got.Freed, got.Deleted, got.Changed, mine, want)
	}
	for _, k := range []string{keptKey(p, "live"), nodelessKey(p, "live")} {
		if _, ok, _ := kv.Get(ctx, k); !ok {
			t.Errorf("%s deleted with gone's", k)
		}
	}
	got, err = ForgetNode(ctx, kv, p, "gone")
	if err != nil || len(got.Freed)+len(got.Deleted)+len(got.Changed) != 0 {
		t.Errorf("again: %+v, %v; want nothing", got, err)
	}
}

// TestForgetNodeReportsBlocksItRewrites: a block where the removed node
// borrowed an address, and whose other addresses are another node's, is
// rewritten without it, not deleted: ForgetNode says it changed, so that
// node rm prints it; a block left empty is said deleted.
func TestForgetNodeReportsBlocksItRewrites(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	_, p := clusterNet(t, kv)
	live, gone := NewAllocator(kv, "live", nil), NewAllocator(kv, "gone", nil)
	theirs, err := live.Allocate(ctx, p, netip.Addr{}, KindTask)
	if err != nil {
		t.Fatal(err)
	}
	own, err := gone.Allocate(ctx, p, netip.Addr{}, KindTask)
	if err != nil {
		t.Fatal(err)
	}
	borrowed, err := gone.Allocate(ctx, p, theirs.Next(), KindTask)
	if err != nil {
		t.Fatal(err)
	}
	if p.Block(own) == p.Block(theirs) || p.Block(borrowed) != p.Block(theirs) {
		t.Fatalf("set-up: gone's %s and %s, live's %s: want gone's own block apart, and one address borrowed in live's", own, borrowed, theirs)
	}
	got, err := ForgetNode(ctx, kv, p, "gone")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{blockPath(p, p.Block(theirs))}; !slices.Equal(got.Changed, want) {
		t.Errorf("changed %q, want %q: live's block, rewritten without gone's %s", got.Changed, want, borrowed)
	}
	if want := []string{blockPath(p, p.Block(own))}; !slices.Equal(got.Deleted, want) {
		t.Errorf("deleted %q, want %q: gone's block, left empty", got.Deleted, want)
	}
	if all, _ := Allocations(ctx, kv, p); len(all) != 1 || all[theirs].Node != "live" {
		t.Errorf("allocations after: %v, want live's %s only", all, theirs)
	}
}
