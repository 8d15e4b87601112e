package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
)

// reuseNode is n1's allocator over kv on a clock the test moves, keeping
// spares spares of pool26 (0: none) once one allocation made the pool
// known; sync runs its keeper's sync, as KeepSpares would after each
// request.
type reuseNode struct {
	a     *Allocator
	clock *time.Time
}

func newReuseNode(t *testing.T, kv *kvtest.KV, spares int) reuseNode {
	t.Helper()
	clock := t0
	n := reuseNode{a: newAllocator(kv, "n1", "g1", func() time.Time { return clock }, nil), clock: &clock}
	n.a.spares.enable(spares, nil)
	return n
}

func (n reuseNode) tick(d time.Duration) { *n.clock = n.clock.Add(d) }

// opTime is how long each request takes on the test's clock: a pool's
// worth of them stays well inside reuseAfter.
const opTime = 100 * time.Millisecond

func (n reuseNode) sync(t *testing.T) {
	t.Helper()
	if _, err := n.a.spares.syncAll(context.Background(), false, false); err != nil {
		t.Fatal(err)
	}
}

// allocate asks for any address as Docker does, then lets the keeper sync.
func (n reuseNode) allocate(t *testing.T) netip.Addr {
	t.Helper()
	got, err := n.a.Allocate(context.Background(), pool26, netip.Addr{}, KindTask)
	if err != nil {
		t.Fatal(err)
	}
	n.tick(opTime)
	n.sync(t)
	return got
}

func (n reuseNode) release(t *testing.T, addr netip.Addr) {
	t.Helper()
	if err := n.a.Release(context.Background(), pool26, addr); err != nil {
		t.Fatal(err)
	}
	n.tick(opTime)
	n.sync(t)
}

// TestFreedAddressIsNotReusedAtOnce: an address Docker released is not
// handed out again while other addresses are free, with or without
// spares: a late or duplicate release of it must find it free, not
// another container's.
func TestFreedAddressIsNotReusedAtOnce(t *testing.T) {
	for _, spares := range []int{0, 4} {
		t.Run(map[int]string{0: "no spares", 4: "4 spares"}[spares], func(t *testing.T) {
			kv := kvtest.New()
			n := newReuseNode(t, kv, spares)
			n.allocate(t) // the pool is known: spares are claimed
			a := n.allocate(t)
			n.release(t, a)
			// Far fewer requests than free addresses.
			for i := range 10 {
				all, err := Allocations(context.Background(), kv, pool26)
				if err != nil {
					t.Fatal(err)
				}
				if got := n.allocate(t); got == a {
					t.Fatalf("%s, released, handed out again by request %d after its release while %d other addresses were unallocated",
						a, i+1, pool26Usable-len(all)-1)
				}
			}
		})
	}
}

// TestDuplicateReleaseAfterReallocation: Docker's plugin client resends a
// release whose answer it did not get (or any stray release of the
// address comes late) after the address's node allocated again: the new
// container's address stays allocated.
func TestDuplicateReleaseAfterReallocation(t *testing.T) {
	for _, spares := range []int{0, 4} {
		t.Run(map[int]string{0: "no spares", 4: "4 spares"}[spares], func(t *testing.T) {
			ctx := context.Background()
			kv := kvtest.New()
			n := newReuseNode(t, kv, spares)
			n.allocate(t)
			first := n.allocate(t) // container 1
			n.release(t, first)    // served; its answer lost
			var held []netip.Addr  // containers started since
			for range spares + 1 {
				held = append(held, n.allocate(t))
			}
			n.release(t, first) // the resend
			all, err := Allocations(ctx, kv, pool26)
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range held {
				if al, ok := all[h]; !ok || al.Node != "n1" {
					t.Errorf("the duplicate release of container 1's %s freed %s, held by a container started since: Consul records %+v (found %v)",
						first, h, al, ok)
				}
			}
		})
	}
}

// TestFreeOrder: a block's addresses freed lately are passed over while
// another is free; when none is, they are taken only when asked for
// (last), the one freed longest ago first.
func TestFreeOrder(t *testing.T) {
	b := block("10.1.0.0/29") // .0 network, .1 gateway: .2 to .7
	d := doc("n1", map[string]Alloc{"10.1.0.2": task("n1"), "10.1.0.5": task("n1")})
	freed := map[netip.Addr]time.Time{addr("10.1.0.3"): t0.Add(2 * time.Second), addr("10.1.0.4"): t0.Add(time.Second), addr("10.1.0.6"): t0}
	for _, tc := range []struct {
		name string
		doc  BlockDoc
		r    reuse
		want string // "" for none
	}{
		{"nothing freed lately: the first free", d, reuse{}, "10.1.0.3"},
		{"freed lately passed over", d, reuse{freed: freed}, "10.1.0.7"},
		{"one never freed still first with last", d, reuse{freed: freed, last: true}, "10.1.0.7"},
		{"only freed lately: none", doc("n1", map[string]Alloc{"10.1.0.2": task("n1"), "10.1.0.5": task("n1"), "10.1.0.7": task("n1")}), reuse{freed: freed}, ""},
		{"only freed lately, last: longest freed", doc("n1", map[string]Alloc{"10.1.0.2": task("n1"), "10.1.0.5": task("n1"), "10.1.0.7": task("n1")}),
			reuse{freed: freed, last: true}, "10.1.0.6"},
		{"longest freed taken", doc("n1", map[string]Alloc{"10.1.0.2": task("n1"), "10.1.0.5": task("n1"), "10.1.0.6": task("n1"), "10.1.0.7": task("n1")}),
			reuse{freed: freed, last: true}, "10.1.0.4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := tc.doc.free(pool8, b, tc.r)
			if s := map[bool]string{true: got.String(), false: ""}[ok]; s != tc.want {
				t.Errorf("free = %q, want %q", s, tc.want)
			}
		})
	}
	// A fill takes what free gives, in turn; a block no node holds whose
	// only usable addresses were freed lately is no candidate until last.
	_, got := fill(pool8, b, d, "n1", []Alloc{task("n1"), task("n1"), task("n1")}, reuse{freed: freed, last: true})
	if fmt.Sprint(got) != "[10.1.0.7 10.1.0.6 10.1.0.4]" {
		t.Errorf("fill, last: %v, want .7 (never freed), then .6 and .4 (freed longest ago)", got)
	}
	tiny := Pool{Network: "t", Prefix: netip.MustParsePrefix("10.9.0.0/30"), BlockBits: 30} // usable: .1 and .2
	lately := map[netip.Addr]time.Time{addr("10.9.0.1"): t0, addr("10.9.0.2"): t0}
	if got := candidates(tiny, view{}, "n1", true, reuse{freed: lately}); len(got) != 0 || anyFree(tiny, view{}, reuse{freed: lately}) {
		t.Errorf("candidates %v with every address freed lately, want none", got)
	}
	if got := fmt.Sprint(candidates(tiny, view{}, "n1", true, reuse{freed: lately, last: true})); got != "[10.9.0.0/30]" {
		t.Errorf("candidates, last: %s, want the block", got)
	}
}

// TestFreedAddrsAreForgotten: an address freed reuseAfter ago is no
// longer passed over, in any pool, and a pool with none left keeps no
// entry: the memory lasts no longer than the quarantine.
func TestFreedAddrsAreForgotten(t *testing.T) {
	var f freedAddrs
	other := Pool{Network: "other", Prefix: netip.MustParsePrefix("10.8.0.0/24")}
	f.add(pool26, []netip.Addr{addr("10.2.0.2")}, t0)
	f.add(other, []netip.Addr{addr("10.8.0.2")}, t0)
	f.add(pool26, []netip.Addr{addr("10.2.0.3")}, t0.Add(time.Minute))
	if got := f.recent(pool26, t0.Add(reuseAfter-time.Nanosecond)); len(got) != 2 || !got[addr("10.2.0.2")].Equal(t0) {
		t.Errorf("just inside reuseAfter: %v, want both", got)
	}
	if got := f.recent(pool26, t0.Add(reuseAfter)); len(got) != 1 || !got[addr("10.2.0.3")].Equal(t0.Add(time.Minute)) {
		t.Errorf("reuseAfter after the first free: %v, want only the later one", got)
	}
	f.mu.Lock()
	_, kept := f.at[other.ID()]
	f.mu.Unlock()
	if kept {
		t.Error("a pool whose frees are all older than reuseAfter is still remembered")
	}
	// A copy: the caller's changes do not reach the memory.
	f.recent(pool26, t0.Add(reuseAfter))[addr("10.2.0.9")] = t0
	if got := f.recent(pool26, t0.Add(reuseAfter)); len(got) != 1 {
		t.Errorf("recent handed out its own map: %v", got)
	}
}

// TestFullPoolUsesEveryAddress: with every address of the pool freed
// lately, the node still hands out every one before it reports the pool
// exhausted, and one address freed in a full pool is handed out again at
// once: passing over freed addresses never makes a pool look full.
func TestFullPoolUsesEveryAddress(t *testing.T) {
	for _, spares := range []int{0, 4} {
		t.Run(map[int]string{0: "no spares", 4: "4 spares"}[spares], func(t *testing.T) {
			ctx := context.Background()
			kv := kvtest.New()
			n := newReuseNode(t, kv, spares)
			fillUp := func(what string) map[netip.Addr]bool {
				t.Helper()
				got := map[netip.Addr]bool{}
				for range pool26Usable + 1 {
					a, err := n.a.Allocate(ctx, pool26, netip.Addr{}, KindTask)
					if errors.Is(err, ErrPoolExhausted) {
						break
					}
					if err != nil {
						t.Fatalf("%s: %v", what, err)
					}
					if got[a] {
						t.Fatalf("%s: %s handed out twice", what, a)
					}
					got[a] = true
					n.tick(opTime)
					n.sync(t)
				}
				if len(got) != pool26Usable {
					t.Fatalf("%s: %d addresses before the pool was reported exhausted, want every one of %d", what, len(got), pool26Usable)
				}
				return got
			}
			held := fillUp("first fill")
			for a := range held {
				n.release(t, a)
			}
			if n.a.freed.recent(pool26, *n.clock) == nil {
				t.Fatal("no address remembered as freed lately")
			}
			fillUp("fill with every address freed lately")
			x := addr("10.2.0.33")
			n.release(t, x)
			if got := n.allocate(t); got != x {
				t.Errorf("the one free address %s, freed lately, not handed out: got %s", x, got)
			}
		})
	}
}

// TestAskedForFreedAddressIsGiven: an address asked for by name is given
// even just after its release (Docker asks for a container's previous
// address, or the user's --ip).
func TestAskedForFreedAddressIsGiven(t *testing.T) {
	for _, spares := range []int{0, 4} {
		t.Run(map[int]string{0: "no spares", 4: "4 spares"}[spares], func(t *testing.T) {
			kv := kvtest.New()
			n := newReuseNode(t, kv, spares)
			n.allocate(t)
			a := n.allocate(t)
			n.release(t, a)
			got, err := n.a.Allocate(context.Background(), pool26, a, KindTask)
			if err != nil || got != a {
				t.Fatalf("Allocate(%s) just after its release = %s, %v", a, got, err)
			}
			all, err := Allocations(context.Background(), kv, pool26)
			if err != nil {
				t.Fatal(err)
			}
			if al := all[a]; al.Node != "n1" || al.Kind != KindTask {
				t.Errorf("%s given but recorded as %+v", a, al)
			}
		})
	}
}

// TestFailedReleaseIsNotNotedFreed: a release whose write fails frees
// nothing: the address is still allocated, and is not noted (nor saved)
// as freed lately; the retry that frees it is.
func TestFailedReleaseIsNotNotedFreed(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	a := NewAllocator(kv, "n1", nil)
	addr := taskAddr(t, a, pool26)
	kv.Hook = func(call string, _ []string) error {
		if call == "txn" {
			return errors.New("consul unreachable")
		}
		return nil
	}
	if err := a.Release(ctx, pool26, addr); err == nil {
		t.Fatalf("release of %s with every write failing: no error", addr)
	}
	if at, ok := a.freed.recent(pool26, a.now())[addr]; ok {
		t.Errorf("%s noted as freed at %s, but its release failed", addr, at)
	}
	kv.Hook = nil
	if err := a.Release(ctx, pool26, addr); err != nil {
		t.Fatal(err)
	}
	if _, ok := a.freed.recent(pool26, a.now())[addr]; !ok {
		t.Errorf("%s not noted as freed after its release", addr)
	}
}
