package ipam

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/netspec"
)

// sweepNet creates network net, 10.4.0.0/20 with cluster IPAM (256
// blocks of 16), in base, and n nodes reading and writing the pool
// through kv (base, or a wrapper of it), each holding tasks addresses of it (a
// block each), each with a reclaimer whose containers hold them all: a
// pool at rest, which no sweep changes. The first node leads the swarm
// and judges departed nodes; every node is ready.
func sweepNet(t *testing.T, base *kvtest.KV, kv KV, n, tasks int) (Pool, []*Reclaimer) {
	t.Helper()
	st := netspec.NewStore(base)
	spec := netspec.Spec{Name: "net", Subnet: netip.MustParsePrefix("10.4.0.0/20"), Gateway: netip.MustParseAddr("10.4.0.1"),
		Parent: "eth1", IPAM: netspec.Cluster}
	if err := st.Create(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	p, _ := PoolOf(spec, false)
	var ids []string
	for i := range n {
		ids = append(ids, sid(fmt.Sprintf("n%03d", i)))
	}
	rs := make([]*Reclaimer, n)
	for i, id := range ids {
		a := newAllocator(kv, id, "g", func() time.Time { return t0 }, nil)
		held := heldSet{}
		for range tasks {
			held[taskAddr(t, a, p)] = true
		}
		r := &Reclaimer{Alloc: a, Pools: SpecPools{Store: st}, Held: held, Grace: time.Minute, Log: slog.New(slog.DiscardHandler)}
		if i == 0 {
			r.Cluster, r.NodeTimeout = fakeCluster{ready: ids}, 10*time.Minute
		}
		rs[i] = r
	}
	return p, rs
}

// sweepAll sweeps with every reclaimer of rs once, in turn.
func sweepAll(ctx context.Context, t *testing.T, rs []*Reclaimer) {
	t.Helper()
	for _, r := range rs {
		if err := r.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSweepOfAPoolAtRestReadsNoDocument: N nodes sweep a pool nothing
// changes, K rounds: the first sweep of each reads every document of the
// pool, the next ones read none (one listing of the pool's keys each).
// Before, every sweep read every document: the main read load on Consul's
// servers at 1000 nodes (README, "Scale"). What was read is logged (go
// test -run TestSweepOfAPoolAtRestReadsNoDocument -v).
func TestSweepOfAPoolAtRestReadsNoDocument(t *testing.T) {
	ctx := context.Background()
	base := kvtest.New()
	kv := &readKV{KV: base}
	const n, k, tasks = 50, 10, 3
	_, rs := sweepNet(t, base, kv, n, tasks)
	kv.reset()
	sweepAll(ctx, t, rs)
	first := kv.String()
	firstDocs, firstBytes := kv.docs, kv.bytes
	kv.reset()
	for range k - 1 {
		sweepAll(ctx, t, rs)
	}
	t.Logf("%d nodes, %d block documents of %d addresses each: first round of sweeps: %s", n, n, tasks, first)
	t.Logf("the %d rounds after: %s", k-1, kv)
	if firstDocs != n*n {
		t.Errorf("first round of sweeps read %d block documents (%d bytes), want %d: each node's every document", firstDocs, firstBytes, n*n)
	}
	if kv.docs != 0 {
		t.Errorf("%d rounds of sweeps of a pool at rest read %d block documents (%d bytes), want none", k-1, kv.docs, kv.bytes)
	}
}

// sweepChanged sets up 4 nodes of 2 held addresses each (see sweepNet),
// sweeps twice with all (the second round reads no document), lets
// change change the pool behind node 1's back, and returns node 1's
// reclaimer, its held addresses, and the count of what was read since.
func sweepChanged(t *testing.T, change func(ctx context.Context, kv *kvtest.KV, p Pool, r *Reclaimer)) (*Reclaimer, Pool, *readKV) {
	t.Helper()
	ctx := context.Background()
	base := kvtest.New()
	kv := &readKV{KV: base}
	p, rs := sweepNet(t, base, kv, 4, 2)
	sweepAll(ctx, t, rs)
	sweepAll(ctx, t, rs)
	change(ctx, base, p, rs[1])
	kv.reset()
	return rs[1], p, kv
}

// wantRecordedAgain sweeps with r (a node whose containers hold what it
// allocated) until every address its containers hold is recorded as its
// own again, failing after 3 sweeps (recorded once seen missing twice:
// see planRecord).
func wantRecordedAgain(ctx context.Context, t *testing.T, kv KV, p Pool, r *Reclaimer) {
	t.Helper()
	held := r.Held.(heldSet)
	for range 3 {
		if err := r.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
		all, err := Allocations(ctx, kv, p)
		if err != nil {
			t.Fatal(err)
		}
		missing := 0
		for a := range held {
			if all[a].Node != r.Alloc.Node() {
				missing++
			}
		}
		if missing == 0 {
			return
		}
	}
	t.Errorf("%s's containers' addresses not recorded again after 3 sweeps: its sweeps did not see the pool lose them", r.Alloc.Node())
}

// ownBlock is the key of the one block r's node holds in p.
func ownBlock(t *testing.T, r *Reclaimer, p Pool) string {
	t.Helper()
	for a := range r.Held.(heldSet) {
		return blockPath(p, p.Block(a))
	}
	t.Fatal("no address held")
	return ""
}

// TestSweepSeesADocumentChangedElsewhere: after sweeps that read no
// document, another writer drops one of node 1's addresses from its
// block's document (a hand, a bug; Consul's index moves): node 1's next
// sweep reads the documents and, its container holding the address,
// records it again.
func TestSweepSeesADocumentChangedElsewhere(t *testing.T) {
	ctx := context.Background()
	r, p, kv := sweepChanged(t, func(ctx context.Context, kv *kvtest.KV, p Pool, r *Reclaimer) {
		key := ownBlock(t, r, p)
		pair, _, err := kv.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		doc, err := unmarshalBlockDoc(pair.Value)
		if err != nil {
			t.Fatal(err)
		}
		for a := range r.Held.(heldSet) {
			delete(doc.Allocs, a.String())
			break
		}
		b, _ := marshalBlockDoc(doc)
		if err := kv.Put(ctx, key, b); err != nil {
			t.Fatal(err)
		}
	})
	wantRecordedAgain(ctx, t, kv, p, r)
	if kv.lists == 0 {
		t.Errorf("reads after the change: %s; want the documents listed", kv)
	}
}

// TestSweepSeesADeletedBlock: node 1's block is deleted behind its back
// (Consul lost it, a hand): its next sweep reads the documents and records
// its containers' addresses again; also once Consul's tombstone GC reaped
// the delete's tombstone, which takes the pool's index back to the one
// node 1 last read (the block was not the pool's last written): the key
// missing from the listing shows the change.
func TestSweepSeesADeletedBlock(t *testing.T) {
	for _, reap := range []bool{false, true} {
		t.Run(fmt.Sprintf("tombstone reaped %v", reap), func(t *testing.T) {
			ctx := context.Background()
			r, p, kv := sweepChanged(t, func(ctx context.Context, kv *kvtest.KV, p Pool, r *Reclaimer) {
				_, before, err := kv.KeysIndex(ctx, poolPrefix(p))
				if err != nil {
					t.Fatal(err)
				}
				if err := kv.Delete(ctx, ownBlock(t, r, p)); err != nil {
					t.Fatal(err)
				}
				if !reap {
					return
				}
				kv.ReapTombstones(kv.Index())
				if _, after, _ := kv.KeysIndex(ctx, poolPrefix(p)); after != before {
					t.Fatalf("set-up: the pool's index %d once the tombstone is reaped, want %d as before the delete", after, before)
				}
			})
			wantRecordedAgain(ctx, t, kv, p, r)
			if kv.lists == 0 {
				t.Errorf("reads after the delete: %s; want the documents listed", kv)
			}
		})
	}
}

// TestSweepAfterConsulLostItsState: Consul restarts empty and its keys are
// written back (a snapshot restored), node 1's block without one of its
// addresses, the pool's keys as they were: its index went back, and node
// 1's next sweep reads the documents and records the address again.
func TestSweepAfterConsulLostItsState(t *testing.T) {
	ctx := context.Background()
	r, p, kv := sweepChanged(t, func(ctx context.Context, kv *kvtest.KV, p Pool, r *Reclaimer) {
		_, before, err := kv.KeysIndex(ctx, poolPrefix(p))
		if err != nil {
			t.Fatal(err)
		}
		all, err := kv.List(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		kv.LoseState()
		own := ownBlock(t, r, p)
		for _, pr := range all {
			if pr.Key == own {
				doc, err := unmarshalBlockDoc(pr.Value)
				if err != nil {
					t.Fatal(err)
				}
				for a := range r.Held.(heldSet) {
					delete(doc.Allocs, a.String())
					break
				}
				pr.Value, _ = marshalBlockDoc(doc)
			}
			if err := kv.Put(ctx, pr.Key, pr.Value); err != nil {
				t.Fatal(err)
			}
		}
		if _, after, _ := kv.KeysIndex(ctx, poolPrefix(p)); after >= before {
			t.Fatalf("set-up: the pool's index %d after the restart, want below %d", after, before)
		}
	})
	wantRecordedAgain(ctx, t, kv, p, r)
	if kv.lists == 0 {
		t.Errorf("reads after the restart: %s; want the documents listed", kv)
	}
}

// TestScanOfAPoolAtRestReadsAgainInTime: a pool nothing changes is listed
// again at the latest after maxRestSkips scans that took the last
// listing, and a key the token may no longer read (missing from the keys)
// has it listed at once, as filtered as any listing: its block not
// readable, as before.
func TestScanOfAPoolAtRestReadsAgainInTime(t *testing.T) {
	ctx := context.Background()
	base := kvtest.New()
	kv := &readKV{KV: base}
	other := NewAllocator(kv, "n2", nil)
	taken := taskAddr(t, other, pool26)
	a := NewAllocator(kv, "n1", nil)
	taskAddr(t, a, pool26)
	scans := func(n int) {
		t.Helper()
		for range n {
			if _, err := a.store.scan(ctx, pool26); err != nil {
				t.Fatal(err)
			}
		}
	}
	scans(1)
	kv.reset()
	scans(maxRestSkips)
	if kv.lists != 0 {
		t.Errorf("%d scans of a pool at rest after a listing: %s; want none listing documents", maxRestSkips, kv)
	}
	scans(1)
	if kv.lists != 1 {
		t.Errorf("the scan after %d that took the last listing: %s; want one listing of documents", maxRestSkips, kv)
	}
	kv.reset()
	base.DenyRead(blockPath(pool26, pool26.Block(taken)))
	v, err := a.store.scan(ctx, pool26)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := v.docs[pool26.Block(taken)]; ok || kv.lists != 1 {
		t.Errorf("a block the token may no longer read: %s, in the view %v; want one listing, without it", kv, ok)
	}
}
