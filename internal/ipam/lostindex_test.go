package ipam

import (
	"context"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
)

// TestStoreCopiesOfALostStateNotWrittenBack: Consul (a dev agent)
// restarted empty; its indexes start over, and the same writes as before
// soon bring a block's key back to an index the store's copies were read
// at. A scan took its last listing again (same index, same keys) and
// wrote its old copy back with a check-and-set at that index, which won:
// the spares another writer (the node's keeper) had claimed since the
// restart were lost, though the keeper held them for its own (the
// integration test TestIntegrationSparesConsulLostState: n1 then kept no
// spare for 20 s). An index below one seen makes the store read again.
func TestStoreCopiesOfALostStateNotWrittenBack(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	s := newStore(kv, slog.New(slog.DiscardHandler))
	p := pool26
	b := p.Block(netip.MustParseAddr("10.2.0.2"))
	set := func(st *store, node string, addrs ...string) { t.Helper(); allocIn(t, st, p, b, node, addrs...) }
	set(s, "n1", "10.2.0.2")
	listedAt := kv.Index()
	if _, err := s.scan(ctx, p); err != nil { // the listing kept
		t.Fatal(err)
	}
	set(s, "n1", "10.2.0.3") // an index above it

	kv.LoseState()
	// The new state reaches the listing's index again, the block's key
	// written last there, by the keeper (played by another store).
	for kv.Index() < listedAt-1 {
		kv.Put(ctx, "other", []byte("x"))
	}
	set(newStore(kv, slog.New(slog.DiscardHandler)), "n1", "10.2.0.7", "10.2.0.8")
	if kv.Index() != listedAt {
		t.Fatalf("index %d after the rewrite, want the listing's %d", kv.Index(), listedAt)
	}

	if _, err := s.scan(ctx, p); err != nil {
		t.Fatal(err)
	}
	set(s, "n1", "10.2.0.4")
	pair, _, err := kv.Get(ctx, blockPath(p, b))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := decodeBlock(p, b, pair.Value)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"10.2.0.7", "10.2.0.8", "10.2.0.4"} {
		if _, ok := doc.Allocs[a]; !ok {
			t.Errorf("after the restart, block %s holds %v: %s, written since, lost", b, slices.Sorted(maps.Keys(doc.Allocs)), a)
		}
	}
}

// TestStoreReadOfAnOlderBlockKeepsCopies: a block read afresh carries its
// own key's modify index, below the pool's newest write whenever another
// block was written since (another node's write lost a check-and-set
// here, say): no sign of a replaced state. Taken for one, it dropped
// every copy of the pool's blocks and warned, at every such read:
//
//	reading 10.2.0.0/28 (written before 10.2.0.16/28) dropped the copy of 10.2.0.16/28
func TestStoreReadOfAnOlderBlockKeepsCopies(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	s := newStore(kv, slog.New(slog.DiscardHandler))
	p := pool26
	older, newer := p.Block(netip.MustParseAddr("10.2.0.2")), p.Block(netip.MustParseAddr("10.2.0.18"))
	for _, b := range []netip.Prefix{older, newer} {
		allocIn(t, s, p, b, "n1", b.Addr().Next().String())
	}
	s.mu.Lock()
	delete(s.docs, blockPath(p, older))
	s.mu.Unlock()
	if _, err := s.read(ctx, p, older); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	_, kept := s.docs[blockPath(p, newer)]
	s.mu.Unlock()
	if !kept {
		t.Errorf("reading %s (written before %s) dropped the copy of %s", older, newer, newer)
	}
}

// TestStoreForgetsCopiesOfAReplacedState: Consul restarted empty, and the
// new state's index passed every index the store saw before it next
// answered about the pool, so no answer went backwards; the keeper's
// watch of the pool's pressure key saw the state lost, and the store's
// copies must go then (forgetCopies), or a check-and-set at a copy's
// index, reached again by the key in the new state, writes the old state
// back over what was written since:
//
//	after the restart, block 10.2.0.0/28 holds [10.2.0.2 10.2.0.3 10.2.0.4]: 10.2.0.7, written since, lost
func TestStoreForgetsCopiesOfAReplacedState(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	s := newStore(kv, slog.New(slog.DiscardHandler))
	p := pool26
	b := p.Block(netip.MustParseAddr("10.2.0.2"))
	set := func(st *store, addrs ...string) { t.Helper(); allocIn(t, st, p, b, "n1", addrs...) }
	set(s, "10.2.0.2")
	set(s, "10.2.0.3")
	pair, _, err := kv.Get(ctx, blockPath(p, b))
	if err != nil {
		t.Fatal(err)
	}
	copyAt := pair.Index // the store's copy of the block is at this index

	kv.LoseState()
	// In the new state another writer brings the block's key to the
	// copy's index, and the state's index goes past every one s saw.
	for kv.Index() < copyAt-1 {
		kv.Put(ctx, "other", []byte("x"))
	}
	set(newStore(kv, slog.New(slog.DiscardHandler)), "10.2.0.7")
	for range 10 {
		kv.Put(ctx, "other", []byte("x"))
	}
	s.forgetCopies(p) // as the keeper's watch does once it sees the state lost
	set(s, "10.2.0.4")

	pair, _, err = kv.Get(ctx, blockPath(p, b))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := decodeBlock(p, b, pair.Value)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := doc.Allocs["10.2.0.7"]; !ok {
		t.Errorf("after the restart, block %s holds %v: 10.2.0.7, written since, lost", b, slices.Sorted(maps.Keys(doc.Allocs)))
	}
}

// allocIn records addrs, of block b of p, as node's tasks' through st.
func allocIn(t *testing.T, st *store, p Pool, b netip.Prefix, node string, addrs ...string) {
	t.Helper()
	if _, err := st.update(context.Background(), p, b, func(doc BlockDoc) (BlockDoc, bool) {
		doc.Node = node
		for _, a := range addrs {
			doc.Allocs[a] = Alloc{Node: node, At: time.Unix(1, 0), Kind: KindTask}
		}
		return doc, true
	}); err != nil {
		t.Fatal(err)
	}
}
