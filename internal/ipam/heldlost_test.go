package ipam

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
)

// heldListings is a node whose containers on network net hold, at the
// i-th listing, sets[i] (the last set from then on); each listing is
// sent on listed, when set.
type heldListings struct {
	mu     sync.Mutex // guards following field
	n      int
	sets   []heldSet
	listed chan int
}

func (h *heldListings) HeldAddresses(ctx context.Context) (Local, error) {
	h.mu.Lock()
	i := h.n
	h.n++
	set := h.sets[min(i, len(h.sets)-1)]
	h.mu.Unlock()
	if h.listed != nil {
		h.listed <- i
	}
	return set.HeldAddresses(ctx)
}

// lostUnderContainer sets up node n1 with three task addresses its
// containers hold, listed by a reclaimer's first listing, and has the
// leader (n0) free the second, as a reclaim of n1 taken for departed
// does: Consul lost it under its container. It returns n1's allocator,
// the pool and the lost address.
func lostUnderContainer(t *testing.T, kv *kvtest.KV) (*Allocator, Pool, heldSet, netip.Addr) {
	t.Helper()
	_, p := clusterNet(t, kv)
	a := newAllocator(kv, "n1", "g", time.Now, nil)
	held, lost := loseOneOfThree(t, kv, a, p)
	return a, p, held, lost
}

// loseOneOfThree has a allocate three task addresses in p, held by its
// containers, and the leader (n0) free the second as observed, as a
// reclaim of a's node taken for departed does: Consul lost it under its
// container. It returns the held addresses and the lost one.
func loseOneOfThree(t *testing.T, kv *kvtest.KV, a *Allocator, p Pool) (heldSet, netip.Addr) {
	t.Helper()
	ctx := context.Background()
	held := heldSet{}
	var lost netip.Addr
	for i := range 3 {
		addr := taskAddr(t, a, p)
		held[addr] = true
		if i == 1 {
			lost = addr
		}
	}
	all, err := Allocations(ctx, kv, p)
	if err != nil {
		t.Fatal(err)
	}
	leader := newAllocator(kv, "n0", "g0", time.Now, nil)
	if freed, err := leader.reclaimObserved(ctx, p, map[netip.Addr]Alloc{lost: all[lost]}); err != nil || len(freed) != 1 {
		t.Fatalf("reclaim %s: freed %v, %v", lost, freed, err)
	}
	return held, lost
}

// TestLostHeldAddressIsRecordedAtOnce: Consul lost an address a local
// container holds (the leader reclaimed it, the node frozen past the node
// timeout). The node's own allocations passed it over and logged it
// (underlay_ipam_lost_held_total), but only the sweep recorded it again,
// at its second sighting: up to two sweep periods (~30 s) in which
// another node could take it, a request for that address, or a borrow
// from the block, and two containers answered for it. Now the first
// allocation that finds it free has the reclaimer record it at once,
// once a fresh listing of the containers still shows it held; no sweep
// runs in this test.
func TestLostHeldAddressIsRecordedAtOnce(t *testing.T) {
	kv := kvtest.New()
	a, p, held, lost := lostUnderContainer(t, kv)
	lister := &heldListings{sets: []heldSet{held}, listed: make(chan int)}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// No sweep runs: its period is an hour.
	r := &Reclaimer{Alloc: a, Held: lister, Grace: 10 * time.Second, Log: slog.New(slog.DiscardHandler)}
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx, time.Hour) }()
	defer func() { cancel(); <-done }()
	<-lister.listed // Run's first listing: the node passes over what its containers hold

	// The node's next allocation finds the lost address free in its block.
	if got := taskAddr(t, a, p); got == lost {
		t.Fatalf("handed out %s, which a local container holds", lost)
	}
	// Bounded: before, nothing recorded it until a sweep.
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	select {
	case <-lister.listed: // the fresh listing before the record
	case <-wctx.Done():
		t.Fatalf("%s, lost under a local container, is not recorded until a sweep: no listing of the containers follows its sighting", lost)
	}
	key := blockPath(p, p.Block(lost))
	var index uint64
	for {
		pair, ok, next, err := kv.Wait(wctx, key, index)
		if err != nil {
			t.Fatalf("%s not recorded again: %v", lost, err)
		}
		if doc, err := decodeBlock(p, p.Block(lost), pair.Value); ok && err == nil {
			if al, ok := doc.alloc(lost); ok {
				if al.Node != "n1" || al.Kind != KindTask {
					t.Fatalf("%s recorded as %+v, want n1's task", lost, al)
				}
				break
			}
		}
		index = next
	}
	// Another node asking for it now is refused.
	n2 := newAllocator(kv, "n2", "g2", time.Now, nil)
	if _, err := n2.Allocate(ctx, p, lost, KindTask); err == nil {
		t.Errorf("n2 was given %s, which n1's container holds", lost)
	}
}

// TestLostHeldAddressOfAContainerGoneIsNotRecorded: an address noted lost
// whose container is gone by the fresh listing (stopped since the sweep)
// is not recorded at once: it would be a leak.
func TestLostHeldAddressOfAContainerGoneIsNotRecorded(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	a, p, held, lost := lostUnderContainer(t, kv)
	gone := heldSet{}
	for addr := range held {
		if addr != lost {
			gone[addr] = true
		}
	}
	lister := &heldListings{sets: []heldSet{held, gone}}
	r := &Reclaimer{Alloc: a, Held: lister, Grace: 10 * time.Second, Log: slog.New(slog.DiscardHandler)}
	notes := a.held.notes()
	r.listHeld(ctx)
	taskAddr(t, a, p)
	select {
	case <-notes:
	default:
		t.Fatalf("no note of %s, free in Consul and held at the last listing", lost)
	}
	r.recordLost(ctx)
	all, err := Allocations(ctx, kv, p)
	if err != nil {
		t.Fatal(err)
	}
	if al, ok := all[lost]; ok {
		t.Errorf("%s, whose container is gone, recorded as %+v", lost, al)
	}
}
