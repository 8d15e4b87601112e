package ipam

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
)

// TestStrayKeyOverlappingBlocksShadowsThem: a key under a pool's blocks/
// that names a prefix of the pool other than one of its blocks (a block
// of another size, another agent's or version's) records addresses the
// allocator cannot read. Handing out addresses of the blocks it overlaps
// could hand out one it records: nothing new is allocated there, by a
// request, a chosen address or a spare, until it is removed; the other
// blocks serve as before, and releases there still work.
func TestStrayKeyOverlappingBlocksShadowsThem(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	// n1 allocates first, so that one of its blocks is in the shadow.
	a := NewAllocator(kv, "n1", nil)
	first, err := a.Allocate(ctx, pool26, netip.MustParseAddr("10.2.0.3"), KindTask)
	if err != nil {
		t.Fatal(err)
	}
	stray := poolPrefix(pool26) + "10.2.0.0_27"
	kv.Put(ctx, stray, []byte(`{"node":"other","allocs":{"10.2.0.2":{"node":"other","kind":"task"},"10.2.0.17":{"node":"other","kind":"task"}}}`))
	shadow := netip.MustParsePrefix("10.2.0.0/27")
	// Seen at n1's next listing of the pool (a sweep's, or a restarted
	// agent's first).
	if _, err := a.store.scan(ctx, pool26); err != nil {
		t.Fatal(err)
	}

	b := NewAllocator(kv, "n2", nil)
	b.spares.enable(3, nil)
	var got []netip.Addr
	for _, al := range []*Allocator{b, a} {
		for {
			addr, err := al.Allocate(ctx, pool26, netip.Addr{}, KindTask)
			if errors.Is(err, ErrPoolExhausted) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, addr)
			if _, err := al.spares.syncAll(ctx, false, false); err != nil {
				t.Fatal(err)
			}
			for s := range al.spares.known(pool26) {
				if shadow.Contains(s) {
					t.Fatalf("spare %s claimed in %s, overlapped by the stray key %s", s, shadow, stray)
				}
			}
		}
	}
	for _, addr := range got {
		if shadow.Contains(addr) {
			t.Errorf("%s handed out, in %s, overlapped by the stray key %s", addr, shadow, stray)
		}
	}
	if len(got) != 32 {
		t.Errorf("%d addresses handed out, want the 32 of 10.2.0.32/27", len(got))
	}
	_, err = b.Allocate(ctx, pool26, netip.MustParseAddr("10.2.0.5"), KindShim)
	if err == nil || !strings.Contains(err.Error(), stray) {
		t.Errorf("allocating 10.2.0.5 in the shadow: %v, want refused naming %s", err, stray)
	}
	if err := a.Release(ctx, pool26, first); err != nil {
		t.Errorf("release of %s in the shadow: %v", first, err)
	}
	if all, _ := Allocations(ctx, kv, pool26); func() bool { _, ok := all[first]; return ok }() {
		t.Errorf("%s still allocated after its release", first)
	}
}

// TestUnmaskedBlockKeyIsBad: a key spelt as a block of the pool's size
// but not at a block's start (10.2.0.4_28, by hand or another tool) is
// not the block 10.2.0.0/28, whose key is another: read as a block, the
// addresses it records would be handed out again from 10.2.0.0/28. It is
// a bad key, and shadows the block it overlaps.
func TestUnmaskedBlockKeyIsBad(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	stray := poolPrefix(pool26) + "10.2.0.4_28"
	kv.Put(ctx, stray, []byte(`{"node":"other","allocs":{"10.2.0.2":{"node":"other","kind":"task"}}}`))
	a := NewAllocator(kv, "n1", nil)
	recorded := netip.MustParseAddr("10.2.0.2")
	for {
		addr, err := a.Allocate(ctx, pool26, netip.Addr{}, KindTask)
		if errors.Is(err, ErrPoolExhausted) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if addr == recorded {
			t.Fatalf("%s handed out, recorded as other's under the key %s", addr, stray)
		}
	}
	c, err := Inspect(ctx, kv, pool26)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Bad) != 1 || c.Bad[0].Key != stray {
		t.Errorf("bad keys %+v, want %s", c.Bad, stray)
	}
}
