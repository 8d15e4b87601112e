package ipam

import (
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/netspec"
)

// localStarts is a node whose containers hold nothing and whose starts
// are those it is set to, by network.
type localStarts struct{ starts map[string][]Start }

func (l *localStarts) HeldAddresses(context.Context) (Local, error) {
	return Local{Starts: l.starts}, nil
}

// TestKeptForStarts: what a node's sweep keeps for a container start under
// way is published for `underlay ips` and the dashboard, refreshed at
// every sweep while kept, deleted once nothing is; an agent's first sweep
// deletes what an earlier agent left; the leader deletes a departed node's
// with its addresses. Consul is written only when there is something to
// say.
func TestKeptForStarts(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	st, p := clusterNet(t, kv)
	clock := t0
	now := func() time.Time { return clock }
	a := newAllocator(kv, "n1", "g", now, nil)
	addr := taskAddr(t, a, p)
	// An earlier agent of n1 left a key naming an address it kept.
	if err := publishKept(ctx, kv, p, "n1", []netip.Addr{netip.MustParseAddr("10.2.0.200")}, t0); err != nil {
		t.Fatal(err)
	}
	local := &localStarts{}
	r := &Reclaimer{Alloc: a, Pools: SpecPools{Store: st}, Held: local, Grace: 10 * time.Second, Log: slog.New(slog.DiscardHandler)}
	sweep := func() Contents {
		t.Helper()
		if err := r.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
		c, err := Inspect(ctx, kv, p)
		if err != nil || len(c.Bad) > 0 {
			t.Fatalf("inspect: %v, bad %v", err, c.Bad)
		}
		return c
	}
	var writes atomic.Int64 // transactions on kept keys
	kv.Hook = func(call string, keys []string) error {
		if call == "txn" && strings.HasPrefix(keys[0], keptPrefix(p)) {
			writes.Add(1)
		}
		return nil
	}

	// In flight (younger than the grace): nothing is kept, and the
	// earlier agent's key is gone.
	if c := sweep(); len(c.Kept) != 0 {
		t.Fatalf("first sweep: kept %v, want the earlier agent's key deleted", c.Kept)
	}
	if w := writes.Load(); w != 1 {
		t.Errorf("first sweep: %d kept-key writes, want 1 (the deletion)", w)
	}
	sweep()
	if w := writes.Load(); w != 1 {
		t.Errorf("a sweep keeping nothing, as the last did, wrote the kept key (%d writes in all)", w)
	}

	// Past the grace twice, a start under way since before the
	// allocation keeps it: published with the sweep's time.
	local.starts = map[string][]Start{"net": {{Since: t0.Add(-time.Minute)}}}
	clock = t0.Add(11 * time.Second)
	sweep() // first seen unheld
	clock = t0.Add(22 * time.Second)
	c := sweep()
	if !c.Kept.For(addr, c.Allocs[addr]) || c.Kept[addr].At != clock {
		t.Fatalf("start under way: kept %v, want %s kept by n1 at %s", c.Kept, addr, clock)
	}
	// Another node's allocation of the same address would not be kept.
	if c.Kept.For(addr, Alloc{Node: "n2", Kind: KindTask}) {
		t.Errorf("n1's kept key counts for n2's allocation")
	}
	clock = clock.Add(time.Second)
	if c := sweep(); c.Kept[addr].At != clock {
		t.Errorf("kept at %s after a later sweep, want refreshed to %s", c.Kept[addr].At, clock)
	}

	// The start is over: the key is deleted and the leak reclaimed.
	local.starts = nil
	if c := sweep(); len(c.Kept) != 0 || c.Allocs[addr].Node != "" {
		t.Fatalf("after the start: kept %v, allocation %+v, want neither", c.Kept, c.Allocs[addr])
	}

	// A departed node's key goes with its addresses.
	b := newAllocator(kv, "gone", "g", now, nil)
	lost := taskAddr(t, b, p)
	if err := publishKept(ctx, kv, p, "gone", []netip.Addr{lost}, clock); err != nil {
		t.Fatal(err)
	}
	if err := st.PublishNode(ctx, netspec.NodeFacts{ID: "gone", Node: "gone", Holder: netspec.Holder{Instance: "gone"}}); err != nil {
		t.Fatal(err)
	}
	// PublishNode stamps facts with the real clock: judge them from there.
	clock = time.Now().Add(time.Minute)
	r.Cluster, r.NodeTimeout = fakeCluster{ready: []string{"n1"}}, time.Second
	for range 3 {
		sweep()
		clock = clock.Add(time.Second)
	}
	if c := sweep(); len(c.Kept) != 0 || c.Allocs[lost].Node != "" {
		t.Errorf("departed node: kept %v, allocation %+v, want both gone", c.Kept, c.Allocs[lost])
	}
}

// TestKeptBadDocuments: a kept key that cannot be read is reported with
// its key and problem, and keeps nothing.
func TestKeptBadDocuments(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	for key, doc := range map[string]string{
		keptPrefix(pool26) + "n1":    `{"addrs":`,
		keptPrefix(pool26) + "n2":    `{"addrs":["192.0.2.1"]}`,
		keptPrefix(pool26) + "n3/x":  `{"addrs":[]}`,
		keptPrefix(pool26) + "valid": `{"addrs":[]}`,
	} {
		kv.Put(ctx, key, []byte(doc))
	}
	c, err := Inspect(ctx, kv, pool26)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Kept) != 0 {
		t.Errorf("kept %v, want nothing", c.Kept)
	}
	got := map[string]string{}
	for _, b := range c.Bad {
		got[strings.TrimPrefix(b.Key, keptPrefix(pool26))] = b.Err.Error()
		if !strings.Contains(b.Effect(), "show as leaks") {
			t.Errorf("bad key %s: effect %q, want what skipping a kept key does", b.Key, b.Effect())
		}
	}
	for node, want := range map[string]string{"n1": "not a kept-addresses document", "n2": "192.0.2.1 is not in pool", "n3/x": `"n3/x" is not a node identity`} {
		if !strings.Contains(got[node], want) {
			t.Errorf("bad key %s: %q, want it to say %q", node, got[node], want)
		}
	}
	if len(got) != 3 {
		t.Errorf("bad keys %v, want 3", got)
	}
}

// listings is a node whose container listings are given one by one; the
// last repeats.
type listings struct {
	calls int
	held  []map[netip.Addr]bool
}

func (l *listings) HeldAddresses(context.Context) (Local, error) {
	h := l.held[min(l.calls, len(l.held)-1)]
	l.calls++
	return Local{Held: map[string]map[netip.Addr]bool{"net": h}}, nil
}

// TestRecordHeldListsAgain: an address a container shows and the pool does
// not record is recorded again only if a listing taken after the pool was
// read still shows it. A container stopping between a sweep's listing and
// its read of the pool has released its address: recorded from the stale
// listing, it was a leak until twice the grace (seen on Docker 29, where
// the pool had lost the address earlier, so that the two-sweeps rule did
// not hold it back).
func TestRecordHeldListsAgain(t *testing.T) {
	ctx := context.Background()
	x := netip.MustParseAddr("10.2.0.77")
	shows := map[netip.Addr]bool{x: true}
	for _, tt := range []struct {
		name   string
		held   []map[netip.Addr]bool
		record bool
	}{
		// Sweep 1 lists it (seen once), sweep 2 lists it, then the
		// listing after the pool read does not: the container stopped.
		{"stopped during the sweep", []map[netip.Addr]bool{shows, shows, {}}, false},
		{"still held", []map[netip.Addr]bool{shows}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			kv := kvtest.New()
			st, p := clusterNet(t, kv)
			a := newAllocator(kv, "n1", "g", func() time.Time { return t0 }, nil)
			r := &Reclaimer{Alloc: a, Pools: SpecPools{Store: st}, Held: &listings{held: tt.held}, Grace: 10 * time.Second, Log: slog.New(slog.DiscardHandler)}
			for range 2 {
				if err := r.Sweep(ctx); err != nil {
					t.Fatal(err)
				}
			}
			all, err := Allocations(ctx, kv, p)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := all[x]; ok != tt.record {
				t.Errorf("%s recorded %v, want %v", x, ok, tt.record)
			}
		})
	}
}
