package ipam

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/testmetrics"
)

// TestPlainAllocationPassesOverAnAddressAContainerHolds: Consul lost an
// address a local container holds (the leader reclaimed it, the node
// frozen past the node timeout), so the pool shows it free in the node's
// own block. Until the sweep records it again (two sightings, ~30 s), a
// plain allocation on the node (no spares kept) must never hand it out:
// it would be a second container's. Of both families; once the container
// is gone (the next sweep sees it no longer held), the address is handed
// out again: passing over leaks nothing.
func TestPlainAllocationPassesOverAnAddressAContainerHolds(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		t.Run(map[bool]string{false: "IPv4", true: "IPv6"}[v6], func(t *testing.T) {
			ctx := context.Background()
			kv := kvtest.New()
			spec := netspec.Spec{Name: "net", Subnet: netip.MustParsePrefix("10.2.0.0/24"), Gateway: netip.MustParseAddr("10.2.0.1"),
				IPv6Subnet: netip.MustParsePrefix("fd00:2::/64"), Parent: "eth1", IPAM: netspec.Cluster}
			st := netspec.NewStore(kv)
			if err := st.Create(ctx, spec); err != nil {
				t.Fatal(err)
			}
			p, _ := PoolOf(spec, v6)
			logs := &logCounter{}
			a := newAllocator(kv, "n1", "g", time.Now, slog.New(logs))
			reg := prometheus.NewRegistry()
			NewMetrics(reg, a)
			held, lost := loseOneOfThree(t, kv, a, p)
			r := &Reclaimer{Alloc: a, Pools: SpecPools{Store: st}, Held: held, Grace: 10 * time.Second, Log: slog.New(logs)}
			// One sighting: not recorded yet.
			if err := r.Sweep(ctx); err != nil {
				t.Fatal(err)
			}
			if all, _ := Allocations(ctx, kv, p); all[lost].Node != "" {
				t.Fatalf("%s recorded at the first sighting: %+v; the test needs it free", lost, all[lost])
			}
			got := taskAddr(t, a, p)
			if got == lost {
				t.Fatalf("handed out %s, which a local container holds (Consul lost it)", lost)
			}
			if n := logs.count(msgLostHeld); n != 1 {
				t.Errorf("logged %q %d times, want once", msgLostHeld, n)
			}
			if v := testmetrics.Counter(t, reg, "underlay_ipam_lost_held_total"); v != 1 {
				t.Errorf("underlay_ipam_lost_held_total %v, want 1", v)
			}
			taskAddr(t, a, p)
			if n := logs.count(msgLostHeld); n != 1 {
				t.Errorf("after a second allocation, logged %q %d times, want once", msgLostHeld, n)
			}

			// The container goes: the next sweep no longer sees it held,
			// and the address is handed out again.
			delete(held, lost)
			if err := r.Sweep(ctx); err != nil {
				t.Fatal(err)
			}
			handed := false
			for range 4 {
				if taskAddr(t, a, p) == lost {
					handed = true
					break
				}
			}
			if !handed {
				t.Errorf("%s, no longer held, never handed out again", lost)
			}
		})
	}
}

// TestSpareClaimPassesOverAnAddressAContainerHolds: the keeper, too,
// claims no spare a local container held at the last sweep, so that such
// an address is never even a free spare (see keeper.dropHeld, which
// catches one claimed before the sweep saw it held).
func TestSpareClaimPassesOverAnAddressAContainerHolds(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	st, p := clusterNet(t, kv)
	a := newAllocator(kv, "n1", "g", time.Now, nil)
	first := taskAddr(t, a, p) // 10.2.0.2: the block is n1's
	lost := first.Next()       // a container holds it, Consul shows it free
	r := &Reclaimer{Alloc: a, Pools: SpecPools{Store: st}, Held: heldSet{first: true, lost: true}, Grace: 10 * time.Second, Log: slog.New(slog.DiscardHandler)}
	if err := r.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	a.spares.enable(3, nil)
	if _, err := a.spares.syncAll(ctx, false, false); err != nil {
		t.Fatal(err)
	}
	kept := a.spares.known(p)
	if len(kept) != 3 || kept[lost] {
		t.Errorf("spares %v, want 3, without %s (a local container holds it)", kept, lost)
	}
	if n := a.held.lost.Load(); n != 1 {
		t.Errorf("lost held addresses counted %d, want 1", n)
	}
}

// TestHeldAddressesAreNeverFree: an address a local container held at the
// last sweep is never free for an allocation, in any block (the node's,
// one it would claim, another node's it borrows from), not even when
// nothing else is (last); heldFree names those Consul shows free, but not
// one this node freed lately (its container stopped since the sweep).
func TestHeldAddressesAreNeverFree(t *testing.T) {
	tiny := Pool{Network: "t", Prefix: netip.MustParsePrefix("10.9.0.0/30"), BlockBits: 30} // usable: .1 and .2
	b := tiny.Prefix
	held := map[netip.Addr]bool{addr("10.9.0.1"): true, addr("10.9.0.2"): true}
	for _, r := range []reuse{{held: held}, {held: held, last: true}, {held: held, freed: map[netip.Addr]time.Time{addr("10.9.0.2"): t0}, last: true}} {
		if got, ok := (BlockDoc{}).free(tiny, b, r); ok {
			t.Errorf("free with every address held (%+v): %s", r, got)
		}
		if got := candidates(tiny, view{}, "n1", true, r); len(got) != 0 || anyFree(tiny, view{}, r) {
			t.Errorf("candidates %v with every address held (%+v), want none", got, r)
		}
	}
	// n2's block, which n1 borrows from: the held address is passed over.
	d := doc("n2", map[string]Alloc{"10.1.0.2": task("n2")})
	r := reuse{held: map[netip.Addr]bool{addr("10.1.0.3"): true, addr("10.1.0.6"): true, addr("10.1.0.2"): true, addr("10.1.0.9"): true}}
	_, got := fill(pool8, block("10.1.0.0/29"), d, "n1", []Alloc{task("n1"), task("n1")}, r)
	if fmt.Sprint(got) != "[10.1.0.4 10.1.0.5]" {
		t.Errorf("fill in n2's block: %v, want .4 and .5 (.3 held)", got)
	}
	// .2 is n2's in Consul (not free); .9 is another block's.
	if got := heldFree(pool8, block("10.1.0.0/29"), d, r); fmt.Sprint(got) != "[10.1.0.3 10.1.0.6]" {
		t.Errorf("heldFree %v, want [10.1.0.3 10.1.0.6]", got)
	}
	r.freed = map[netip.Addr]time.Time{addr("10.1.0.6"): t0}
	if got := heldFree(pool8, block("10.1.0.0/29"), d, r); fmt.Sprint(got) != "[10.1.0.3]" {
		t.Errorf("heldFree with .6 freed lately %v, want [10.1.0.3]", got)
	}
}

// heldOnce is a Held whose listing cancels the test's context: Run then
// ends right after its first.
type heldOnce struct {
	held   map[netip.Addr]bool
	cancel context.CancelFunc
}

func (h heldOnce) HeldAddresses(context.Context) (Local, error) {
	h.cancel()
	return Local{Held: map[string]map[netip.Addr]bool{"net": h.held}}, nil
}

// TestRunListsHeldAtOnce: a reclaimer starting (an agent restarted) lists
// the local containers at once, not a sweep period later, so the node's
// allocations pass over what they hold from its first moments.
func TestRunListsHeldAtOnce(t *testing.T) {
	kv := kvtest.New()
	st, p := clusterNet(t, kv)
	a := newAllocator(kv, "n1", "g", time.Now, nil)
	held := netip.MustParseAddr("10.2.0.2") // the first a plain allocation would take
	// Bounded: a Run that never lists would never end.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r := &Reclaimer{Alloc: a, Pools: SpecPools{Store: st}, Held: heldOnce{map[netip.Addr]bool{held: true}, cancel}, Grace: 10 * time.Second}
	r.Run(ctx, time.Hour)
	if got := taskAddr(t, a, p); got == held {
		t.Errorf("handed out %s, which a local container holds, after the reclaimer started", held)
	}
}
