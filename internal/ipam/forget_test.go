package ipam

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
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

	got, err := ForgetNode(ctx, kv, p, "gone", ForgetOptions{})
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
	got, err = ForgetNode(ctx, kv, p, "gone", ForgetOptions{})
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
	theirs := taskAddr(t, live, p)
	own := taskAddr(t, gone, p)
	borrowed, err := gone.Allocate(ctx, p, theirs.Next(), KindTask)
	if err != nil {
		t.Fatal(err)
	}
	if p.Block(own) == p.Block(theirs) || p.Block(borrowed) != p.Block(theirs) {
		t.Fatalf("set-up: gone's %s and %s, live's %s: want gone's own block apart, and one address borrowed in live's", own, borrowed, theirs)
	}
	got, err := ForgetNode(ctx, kv, p, "gone", ForgetOptions{})
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

// TestForgetNodeGivesUpItsBlocks: a block the removed node had affinity
// for that still holds another node's addresses, whether or not the
// removed node held an address there, is rewritten with no affinity, so
// that the next node to allocate claims it as its own, as it would a free
// block; left the removed node's, no live node would ever own it again.
func TestForgetNodeGivesUpItsBlocks(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	_, p := clusterNet(t, kv)
	gone := NewAllocator(kv, "gone", nil)
	live := NewAllocator(kv, "live", nil)
	// gone's first block: gone's address and one live allocated there.
	own := taskAddr(t, gone, p)
	lent, err := live.Allocate(ctx, p, own.Next(), KindTask)
	if err != nil {
		t.Fatal(err)
	}
	// gone's second block: only live's address left, gone's released.
	other := p.Blocks()[0]
	if other == p.Block(own) {
		other = p.Blocks()[1]
	}
	kept := other.Addr().Next().Next().Next() // past the network address and the gateway
	if _, err := gone.Allocate(ctx, p, kept.Next(), KindTask); err != nil {
		t.Fatal(err)
	}
	if _, err := live.Allocate(ctx, p, kept, KindTask); err != nil {
		t.Fatal(err)
	}
	if err := gone.Release(ctx, p, kept.Next()); err != nil {
		t.Fatal(err)
	}
	for _, b := range []netip.Prefix{p.Block(own), other} {
		if c, _ := Inspect(ctx, kv, p); c.Blocks[b].Node != "gone" {
			t.Fatalf("set-up: block %s's affinity %q, want gone's", b, c.Blocks[b].Node)
		}
	}

	got, err := ForgetNode(ctx, kv, p, "gone", ForgetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	blocks := []netip.Prefix{p.Block(own), other}
	slices.SortFunc(blocks, comparePrefix)
	want := []string{blockPath(p, blocks[0]), blockPath(p, blocks[1])}
	if !slices.Equal(got.Changed, want) {
		t.Errorf("changed %q, want %q: both of gone's blocks, rewritten", got.Changed, want)
	}
	c, err := Inspect(ctx, kv, p)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []netip.Prefix{p.Block(own), other} {
		if node := c.Blocks[b].Node; node != "" {
			t.Errorf("block %s still has affinity for %q after ForgetNode, want none", b, node)
		}
	}
	if len(c.Allocs) != 2 || c.Allocs[lent].Node != "live" || c.Allocs[kept].Node != "live" {
		t.Errorf("allocations after: %v, want live's %s and %s only", c.Allocs, lent, kept)
	}

	// A new node claims the first of them it allocates in, and fills it
	// from then on as its own; nothing is handed out twice.
	fresh := NewAllocator(kv, "fresh", nil)
	addr := taskAddr(t, fresh, p)
	b := p.Block(addr)
	if b != p.Block(own) && b != other {
		t.Fatalf("fresh got %s, in block %s: want one of the blocks gone left (%s, %s), claimed before free ones", addr, b, p.Block(own), other)
	}
	c, _ = Inspect(ctx, kv, p)
	if c.Blocks[b].Node != "fresh" {
		t.Errorf("block %s's affinity %q after fresh allocated %s there, want fresh", b, c.Blocks[b].Node, addr)
	}
	if addr == lent || addr == kept {
		t.Errorf("fresh got %s, live's", addr)
	}
	// The old owner's identity, were an allocator of it to run again,
	// owns nothing.
	if mine, err := newStore(kv, gone.log).own(ctx, p, "gone"); err != nil || len(mine) != 0 {
		t.Errorf("gone's blocks after ForgetNode: %v, %v; want none", mine, err)
	}
}

// TestBlocksWithoutAffinityClaimedConcurrently: nodes filling a pool at
// once whose every block holds an address of a removed node's neighbour
// and no affinity race to claim them; each address still goes out once,
// the neighbour's stay, and every block ends up some live node's.
func TestBlocksWithoutAffinityClaimedConcurrently(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	kept := map[netip.Addr]bool{}
	for _, b := range pool26.Blocks() {
		a := b.Addr().Next().Next().Next()
		kept[a] = true
		raw, _ := json.Marshal(BlockDoc{Allocs: map[string]Alloc{a.String(): {Node: "live", At: t0, Kind: KindTask}}})
		kv.Put(ctx, blockPath(pool26, b), raw)
	}
	nodes := []*Allocator{NewAllocator(kv, "n1", nil), NewAllocator(kv, "n2", nil), NewAllocator(kv, "n3", nil)}
	var mu sync.Mutex
	got := map[netip.Addr]string{}
	var wg sync.WaitGroup
	for _, a := range nodes {
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					addr, err := a.Allocate(ctx, pool26, netip.Addr{}, KindTask)
					if errors.Is(err, ErrPoolExhausted) {
						return
					}
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					if prev, dup := got[addr]; dup || kept[addr] {
						t.Errorf("%s handed out twice: %s (%q before) and %s", addr, a.Node(), prev, a.Node())
					}
					got[addr] = a.Node()
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	if want := pool26Usable - len(kept); len(got) != want {
		t.Errorf("%d addresses handed out, want %d", len(got), want)
	}
	c, err := Inspect(ctx, kv, pool26)
	if err != nil {
		t.Fatal(err)
	}
	for a := range kept {
		if c.Allocs[a].Node != "live" {
			t.Errorf("live's %s now %+v", a, c.Allocs[a])
		}
	}
	for b, d := range c.Blocks {
		if d.Node == "" || d.Node == "live" {
			t.Errorf("block %s's affinity %q after the pool filled, want one of the nodes that filled it", b, d.Node)
		}
	}
}

// TestForgetNodeNamesBlocksItCannotRead: a block key of the pool whose
// document cannot be read may record addresses of the removed node that
// ForgetNode cannot free: it says which key it passed over, why, and how
// to remove it, instead of reporting the node forgotten.
func TestForgetNodeNamesBlocksItCannotRead(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	_, p := clusterNet(t, kv)
	mine, err := NewAllocator(kv, "gone", nil).Allocate(ctx, p, netip.Addr{}, KindTask)
	if err != nil {
		t.Fatal(err)
	}
	garbled := blockPath(p, p.Blocks()[0])
	if garbled == blockPath(p, p.Block(mine)) {
		garbled = blockPath(p, p.Blocks()[1])
	}
	kv.Put(ctx, garbled, []byte(`{"node":"gone","allocs":{"not an address":{"node":"gone"}}}`))
	got, err := ForgetNode(ctx, kv, p, "gone", ForgetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Freed, []netip.Addr{mine}) {
		t.Errorf("freed %v, want %s", got.Freed, mine)
	}
	if len(got.Skipped) != 1 || got.Skipped[0].Key != garbled || !strings.Contains(got.Skipped[0].Err.Error(), `"not an address"`) {
		t.Fatalf("skipped %+v, want %s, naming its bad allocation", got.Skipped, garbled)
	}
	if fix := got.Skipped[0].removal(); !strings.Contains(fix, garbled) {
		t.Errorf("fix %q does not name %s", fix, garbled)
	}
}
