package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/underlay/underlay/internal/kvstore"
	"github.com/underlay/underlay/internal/kvstore/kvtest"
)

// readKV counts what allocators read of a KV: listings of whole
// documents and of keys alone, and the block documents read (by List,
// and by Get, by key), with their bytes.
type readKV struct {
	KV
	mu          sync.Mutex // guards following fields
	lists, keys int
	docs, bytes int
	got         []string
}

func (r *readKV) List(ctx context.Context, prefix string) ([]kvstore.Pair, error) {
	pairs, err := r.KV.List(ctx, prefix)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lists++
	for _, p := range pairs {
		if strings.Contains(p.Key, "/blocks/") {
			r.docs++
			r.bytes += len(p.Value)
		}
	}
	return pairs, err
}

func (r *readKV) Keys(ctx context.Context, prefix string) ([]string, error) {
	r.mu.Lock()
	r.keys++
	r.mu.Unlock()
	return r.KV.Keys(ctx, prefix)
}

func (r *readKV) KeysIndex(ctx context.Context, prefix string) ([]string, uint64, error) {
	r.mu.Lock()
	r.keys++
	r.mu.Unlock()
	return r.KV.KeysIndex(ctx, prefix)
}

func (r *readKV) Get(ctx context.Context, key string) (kvstore.Pair, bool, error) {
	p, ok, err := r.KV.Get(ctx, key)
	r.mu.Lock()
	defer r.mu.Unlock()
	if ok && strings.Contains(key, "/blocks/") {
		r.docs++
		r.bytes += len(p.Value)
		r.got = append(r.got, key)
	}
	return p, ok, err
}

// reset forgets what was counted.
func (r *readKV) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lists, r.keys, r.docs, r.bytes, r.got = 0, 0, 0, 0, nil
}

func (r *readKV) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return fmt.Sprintf("%d listings of documents, %d of keys; %d block documents read (%d bytes), by Get %q", r.lists, r.keys, r.docs, r.bytes, r.got)
}

// fillOwnBlock allocates tasks of p from a until one lands outside the
// block of first (a's first address): a's block was full, and that
// allocation needed a new one. It returns that address.
func fillOwnBlock(t *testing.T, a *Allocator, p Pool, first netip.Addr) netip.Addr {
	t.Helper()
	for range 1<<(first.BitLen()-p.blockBits()) + 1 {
		if addr := taskAddr(t, a, p); p.Block(addr) != p.Block(first) {
			return addr
		}
	}
	t.Fatalf("%s: every address of block %s handed out and more, all in it", a.Node(), p.Block(first))
	return netip.Addr{}
}

// widePool is a /16 of /28 blocks, room for every node of the tests below.
var widePool = Pool{Network: "wide", Prefix: netip.MustParsePrefix("10.3.0.0/16"), BlockBits: 28}

// widePoolNodes makes n nodes on kv, each with a first task address in
// widePool (so each holds a block), and returns them and those addresses.
func widePoolNodes(t *testing.T, kv KV, n int) ([]*Allocator, []netip.Addr) {
	t.Helper()
	nodes := make([]*Allocator, n)
	firsts := make([]netip.Addr, n)
	for i := range nodes {
		nodes[i] = NewAllocator(kv, fmt.Sprintf("node-%03d", i), nil)
		firsts[i] = taskAddr(t, nodes[i], widePool)
	}
	return nodes, firsts
}

// TestMissReadsNoDocumentWhileBlocksAreFree: nodes whose blocks are full
// each need a new one (a miss) while the pool has free blocks: each reads
// the pool's keys once and claims a block of its own with one create,
// reading no block document. Before, each miss listed every document of
// the pool (`kv.List`), which with 1000 nodes took the Consul server to
// 10 GiB (README, "Scale").
func TestMissReadsNoDocumentWhileBlocksAreFree(t *testing.T) {
	ctx := context.Background()
	kv := &readKV{KV: kvtest.New()}
	const n = 50
	pool := widePool
	nodes, firsts := widePoolNodes(t, kv, n)
	kv.reset()
	claimed := map[netip.Prefix]string{}
	for i, a := range nodes {
		addr := fillOwnBlock(t, a, pool, firsts[i])
		if other, dup := claimed[pool.Block(addr)]; dup {
			t.Errorf("%s and %s both got a new address in block %s", other, a.Node(), pool.Block(addr))
		}
		claimed[pool.Block(addr)] = a.Node()
	}
	if kv.lists != 0 || kv.docs != 0 || kv.keys != n {
		t.Errorf("%d nodes missing once: %s; want %d listings of keys and no document read", n, kv, n)
	}
	c, err := Inspect(ctx, kv.KV, pool)
	if err != nil {
		t.Fatal(err)
	}
	for b, node := range claimed {
		if c.Blocks[b].Node != node {
			t.Errorf("block %s's affinity %q, want %s's, who claimed it", b, c.Blocks[b].Node, node)
		}
	}
	if want := 2 * n; len(c.Blocks) != want {
		t.Errorf("%d blocks held, want %d (two of each node's)", len(c.Blocks), want)
	}
	var lost uint64
	for _, a := range nodes {
		lost += a.WriteStats().Conflicts
	}
	if lost != 0 {
		t.Errorf("%d writes lost, want none: one node claimed at a time", lost)
	}
	t.Logf("%d misses: %s", n, kv)
}

// TestNodesMissingAtOnceClaimApart: nodes whose blocks are full all need
// a new block at once; each lists the keys and claims from its own place
// (claimOrder), so each ends up with a block of its own and nothing is
// handed out twice. A node that loses its create reads that block and
// then, as before, every document, to claim elsewhere: it never writes
// into the block another node made.
func TestNodesMissingAtOnceClaimApart(t *testing.T) {
	ctx := context.Background()
	kv := &readKV{KV: kvtest.New()}
	const n = 100
	pool := widePool
	nodes, firsts := widePoolNodes(t, kv, n)
	before := make([]uint64, n)
	for i, a := range nodes {
		before[i] = a.WriteStats().Conflicts
	}
	kv.reset()
	start := make(chan struct{})
	news := make([][]netip.Addr, n)
	var wg sync.WaitGroup
	for i, a := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			// More than a block holds: each node needs a new one.
			for range 1 << (32 - pool.BlockBits) {
				addr, err := a.Allocate(ctx, pool, netip.Addr{}, KindTask)
				if err != nil {
					t.Error(err)
					return
				}
				news[i] = append(news[i], addr)
			}
		}()
	}
	close(start)
	wg.Wait()
	var lost uint64
	for i, a := range nodes {
		lost += a.WriteStats().Conflicts - before[i]
	}
	c, err := Inspect(ctx, kv.KV, pool)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[netip.Addr]string{}
	for i, a := range nodes {
		for _, addr := range news[i] {
			if other, dup := seen[addr]; dup {
				t.Errorf("%s handed out to %s and %s", addr, other, a.Node())
			}
			seen[addr] = a.Node()
			if al := c.Allocs[addr]; al.Node != a.Node() {
				t.Errorf("%s's %s recorded as %+v", a.Node(), addr, al)
			}
		}
		// A node that lost no write claimed from its keys: its last
		// address is in a block of its own past its first. One that
		// lost may have borrowed, as before.
		last := news[i][len(news[i])-1]
		if b := pool.Block(last); a.WriteStats().Conflicts == before[i] && (b == pool.Block(firsts[i]) || c.Blocks[b].Node != a.Node()) {
			t.Errorf("%s's last address %s is in block %s of %q, want a block of its own past its first (%s)", a.Node(), last, b, c.Blocks[b].Node, pool.Block(firsts[i]))
		}
	}
	// A listing of documents only after a lost create; that read of the
	// pool (store.scan) lists its keys first, so a node that lost one
	// lists the keys twice.
	if uint64(kv.keys) < n || uint64(kv.keys) > n+lost || uint64(kv.lists) > lost {
		t.Errorf("%d nodes missing at once, %d writes lost: %s; want %d listings of keys and one more per write lost at most, and of documents no more than the writes lost", n, lost, kv, n)
	}
	t.Logf("%d nodes missing at once: %d writes lost; %s", n, lost, kv)
}

// TestLostCreateFallsBackToTheDocuments: a node that claims a block its
// listing of keys showed free, made meanwhile by another node, loses its
// create; it never writes into that block (that would borrow from it
// while other blocks are free), and reads the pool's documents to claim
// another.
func TestLostCreateFallsBackToTheDocuments(t *testing.T) {
	ctx := context.Background()
	base := kvtest.New()
	kv := &readKV{KV: base}
	a := NewAllocator(kv, "n1", nil)
	first := taskAddr(t, a, pool26)
	v, err := a.store.scan(ctx, pool26)
	if err != nil {
		t.Fatal(err)
	}
	next := claimable(pool26, v, "n1", reuse{})[0] // the block n1's miss claims
	other := NewAllocator(base, "n2", nil)
	raced := false
	base.Hook = func(call string, keys []string) error {
		if call != "txn" || raced || keys[0] != blockPath(pool26, next) {
			return nil
		}
		raced = true
		return other.allocateAt(ctx, pool26, next.Addr().Next().Next().Next(), Alloc{Node: "n2", At: t0, Kind: KindTask})
	}
	kv.reset()
	addr := fillOwnBlock(t, a, pool26, first)
	if !raced {
		t.Fatalf("n1's miss never claimed %s, the first block its keys showed free", next)
	}
	if pool26.Block(addr) == next {
		t.Errorf("n1 got %s, in %s, which n2 made first", addr, next)
	}
	c, err := Inspect(ctx, kv.KV, pool26)
	if err != nil {
		t.Fatal(err)
	}
	if d := c.Blocks[next]; d.Node != "n2" || len(d.Allocs) != 1 {
		t.Errorf("block %s after the race: %+v, want n2's alone", next, d)
	}
	if c.Blocks[pool26.Block(addr)].Node != "n1" {
		t.Errorf("n1's new %s in block %s of %q, want one n1 claimed", addr, pool26.Block(addr), c.Blocks[pool26.Block(addr)].Node)
	}
	if kv.lists != 1 || !slices.Equal(kv.got, []string{blockPath(pool26, next)}) {
		t.Errorf("reads: %s; want the block lost read, then one listing of documents", kv)
	}
}

// TestPoolWithNoFreeBlockStillBorrows: when the keys show no free block,
// the node takes the pool's documents (its last listing of them, the pool
// unchanged since) and borrows a free address of another node's block, as
// before.
func TestPoolWithNoFreeBlockStillBorrows(t *testing.T) {
	ctx := context.Background()
	kv := &readKV{KV: kvtest.New()}
	var owners []string
	for i := range len(pool26.Blocks()) {
		a := NewAllocator(kv, fmt.Sprintf("n%d", i), nil)
		taskAddr(t, a, pool26)
		owners = append(owners, a.Node())
	}
	c, err := Inspect(ctx, kv.KV, pool26)
	if err != nil || len(c.Blocks) != len(pool26.Blocks()) {
		t.Fatalf("set-up: %d blocks held, want every one of the %d (%v)", len(c.Blocks), len(pool26.Blocks()), err)
	}
	late := NewAllocator(kv, "late", nil)
	if _, err := late.store.scan(ctx, pool26); err != nil {
		t.Fatal(err)
	}
	kv.reset()
	addr := taskAddr(t, late, pool26)
	c, err = Inspect(ctx, kv.KV, pool26)
	if err != nil {
		t.Fatal(err)
	}
	if owner := c.Blocks[pool26.Block(addr)].Node; !slices.Contains(owners, owner) || c.Allocs[addr].Node != "late" {
		t.Errorf("late got %s, in a block of %q, recorded %+v; want it borrowed from one of %v", addr, owner, c.Allocs[addr], owners)
	}
	// The pool has not changed since late's listing of its documents:
	// the keys, listed again before the documents, show it, and that
	// listing is taken again (see store.listPool).
	if kv.keys != 2 || kv.lists != 0 || kv.docs != 0 {
		t.Errorf("reads: %s; want the keys, showing no free block, then the keys again, showing the pool unchanged, and no document", kv)
	}
}

// TestShadowedBlockNeverClaimedFromKeys: a bad key written since the
// node's last listing of documents shadows the blocks it overlaps (see
// view.shadowed): the node's miss, knowing the pool from its keys, never
// claims one of them, nor is an address of one handed out when asked
// for; the block no bad key overlaps is claimed, reading no document.
func TestShadowedBlockNeverClaimedFromKeys(t *testing.T) {
	ctx := context.Background()
	base := kvtest.New()
	kv := &readKV{KV: base}
	a := NewAllocator(kv, "n1", nil)
	first := taskAddr(t, a, pool26)
	var free []netip.Prefix
	for _, b := range pool26.Blocks() {
		if b != pool26.Block(first) {
			free = append(free, b)
		}
	}
	// Every free block but one, each shadowed by a stray key naming one
	// of its addresses.
	open := free[len(free)-1]
	for _, b := range free[:len(free)-1] {
		if err := base.Put(ctx, poolPrefix(pool26)+b.Addr().Next().Next().Next().String(), []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	kv.reset()
	addr := fillOwnBlock(t, a, pool26, first)
	if pool26.Block(addr) != open {
		t.Errorf("n1's miss got %s, in %s; want it in %s, the one block no bad key overlaps", addr, pool26.Block(addr), open)
	}
	if kv.docs != 0 {
		t.Errorf("reads: %s; want no document read", kv)
	}
	for _, b := range free[:len(free)-1] {
		want := b.Addr().Next().Next()
		if _, err := a.Allocate(ctx, pool26, want, KindTask); err == nil || !strings.Contains(err.Error(), "bad key") {
			t.Errorf("%s, of block %s a bad key overlaps, asked for: %v; want refused, naming the bad key", want, b, err)
		}
	}
	for {
		addr, err := a.Allocate(ctx, pool26, netip.Addr{}, KindTask)
		if errors.Is(err, ErrPoolExhausted) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if b := pool26.Block(addr); b != pool26.Block(first) && b != open {
			t.Fatalf("%s handed out, of block %s a bad key overlaps", addr, b)
		}
	}
	c, err := Inspect(ctx, kv.KV, pool26)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range free[:len(free)-1] {
		if d, ok := c.Blocks[b]; ok {
			t.Errorf("block %s, which a bad key overlaps, written: %+v", b, d)
		}
	}
}

// TestSpareRefillReadsNoWholePool: a node's keeper whose blocks are full
// claims a new block for its spares from the pool's keys: it may read its
// own blocks, and no listing of the pool's documents. Before, it listed
// every document of the pool.
func TestSpareRefillReadsNoWholePool(t *testing.T) {
	ctx := context.Background()
	kv := &readKV{KV: kvtest.New()}
	a := NewAllocator(kv, "n1", nil)
	taskAddr(t, a, pool26)
	own, err := a.store.own(ctx, pool26, "n1")
	if err != nil || len(own) != 1 {
		t.Fatalf("set-up: n1's blocks %v, %v; want one", own, err)
	}
	// More spares than n1's block has room for: the keeper fills it,
	// then claims another.
	const want = 20
	a.spares.enable(want, nil)
	kv.reset()
	if _, err := a.spares.syncAll(ctx, false, false); err != nil {
		t.Fatal(err)
	}
	kept := a.spares.known(pool26)
	if len(kept) != want {
		t.Fatalf("spares kept %v, want %d", kept, want)
	}
	if kv.lists != 0 || kv.keys != 1 {
		t.Errorf("reads: %s; want one listing of keys, none of documents", kv)
	}
	for _, key := range kv.got {
		if _, b, _ := parseBlockPath(key); own[b].Node != "n1" {
			t.Errorf("read %s, not one of n1's blocks", key)
		}
	}
	c, err := Inspect(ctx, kv.KV, pool26)
	if err != nil {
		t.Fatal(err)
	}
	claimed := map[netip.Prefix]bool{}
	for s := range kept {
		b := pool26.Block(s)
		if al := c.Allocs[s]; al.Kind != KindSpare || al.Node != "n1" || c.Blocks[b].Node != "n1" {
			t.Errorf("spare %s recorded %+v, in block %s of %q; want n1's spare in a block of n1's", s, al, b, c.Blocks[b].Node)
		}
		if _, ok := own[b]; !ok {
			claimed[b] = true
		}
	}
	if len(claimed) != 1 {
		t.Errorf("spares in %d blocks n1 did not hold, want 1 it claimed", len(claimed))
	}
}

// TestShimFoundAgainReadsOneBlock: every sync of a node's networks asks
// for its shim address; once the node knows it, that reads the block
// holding it, not the pool. A shim the block no longer records (the
// network's tree removed and made again, behind the node's back) is not
// answered from the copy: the pool is read and the shim allocated again,
// recorded in Consul. Before, every call listed every document of the
// pool.
func TestShimFoundAgainReadsOneBlock(t *testing.T) {
	ctx := context.Background()
	kv := &readKV{KV: kvtest.New()}
	a := NewAllocator(kv, "n1", nil)
	for i := range 3 {
		NewAllocator(kv, fmt.Sprintf("other%d", i), nil).Shim(ctx, pool26)
	}
	shim, err := a.Shim(ctx, pool26)
	if err != nil {
		t.Fatal(err)
	}
	kv.reset()
	again, err := a.Shim(ctx, pool26)
	if err != nil || again != shim {
		t.Fatalf("shim asked again: %s, %v; want %s", again, err, shim)
	}
	if kv.lists != 0 || !slices.Equal(kv.got, []string{blockPath(pool26, pool26.Block(shim))}) {
		t.Errorf("reads: %s; want the shim's block alone", kv)
	}
	if err := kv.KV.(*kvtest.KV).Delete(ctx, blockPath(pool26, pool26.Block(shim))); err != nil {
		t.Fatal(err)
	}
	kv.reset()
	now, err := a.Shim(ctx, pool26)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Inspect(ctx, kv.KV, pool26)
	if err != nil {
		t.Fatal(err)
	}
	if al := c.Allocs[now]; al.Node != "n1" || al.Kind != KindShim {
		t.Errorf("shim after its block went: %s, recorded %+v; want one recorded as n1's shim", now, al)
	}
	if kv.lists != 1 {
		t.Errorf("reads after the shim's block went: %s; want the pool listed", kv)
	}
}

// afterKeysKV runs after, once, when a listing of keys has been read and
// before it is answered: what another of the node's goroutines does
// meanwhile.
type afterKeysKV struct {
	KV
	after func()
}

func (kv *afterKeysKV) Keys(ctx context.Context, prefix string) ([]string, error) {
	keys, err := kv.KV.Keys(ctx, prefix)
	if f := kv.after; f != nil {
		kv.after = nil
		f()
	}
	return keys, err
}

// TestOlderKeyListingKeepsNewerShadows: a listing of the pool's keys read
// before a bad key was written, and taken in after a scan (a sweep, a
// request's fallback) found that key, left the blocks it shadows as the
// older listing had them: not shadowed. Until the next listing the node
// allocated in its own block the bad key overlaps, where that key may
// record the same addresses (another version's block of another size).
// A listing taken in after a later one changes nothing of what that
// later one found.
func TestOlderKeyListingKeepsNewerShadows(t *testing.T) {
	ctx := context.Background()
	base := kvtest.New()
	kv := &afterKeysKV{KV: base}
	a := NewAllocator(kv, "n1", nil)
	first := taskAddr(t, a, pool26)
	own := pool26.Block(first)
	stray := poolPrefix(pool26) + own.Addr().Next().Next().Next().Next().String()
	kv.after = func() {
		if err := base.Put(ctx, stray, []byte(`{}`)); err != nil {
			t.Error(err)
		}
		if _, err := a.store.scan(ctx, pool26); err != nil {
			t.Error(err)
		}
	}
	if _, err := a.store.listed(ctx, pool26); err != nil {
		t.Fatal(err)
	}
	if key, err := a.store.shadow(ctx, pool26, own); err != nil || key != stray {
		t.Errorf("block %s after the older listing of keys: shadowed by %q (%v), want by %s, which the later scan found", own, key, err, stray)
	}
	if n := a.store.badCount(); n != 1 {
		t.Errorf("bad keys counted after the older listing of keys: %d, want 1 (%s)", n, stray)
	}
	addr, err := a.Allocate(ctx, pool26, netip.Addr{}, KindTask)
	if err != nil {
		t.Fatal(err)
	}
	if pool26.Block(addr) == own {
		t.Errorf("n1 got %s, in its block %s, which %s shadows", addr, own, stray)
	}
}
