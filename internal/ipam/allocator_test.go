package ipam

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/testmetrics"
)

// pool26 is 10.2.0.0/24 with a /26 range in /28 blocks, the gateway and
// one aux address reserved: 62 usable addresses (64 less .0 reserved as
// the subnet's network address, the gateway and the aux one; the range's
// last address is not the subnet's broadcast).
var pool26 = Pool{Network: "net", Prefix: netip.MustParsePrefix("10.2.0.0/24"), Range: netip.MustParsePrefix("10.2.0.0/26"), BlockBits: 28,
	Reserved: map[netip.Addr]bool{netip.MustParseAddr("10.2.0.1"): true, netip.MustParseAddr("10.2.0.20"): true}}

const pool26Usable = 61

// TestRangeNarrowerThanABlock: a range of 4 addresses in a pool of /28
// blocks is one block, the range itself: a block of 16 would start before
// the range, so its key would not read back as a block of the pool, and
// the next node, passing over it, would hand out its addresses again.
func TestRangeNarrowerThanABlock(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	p := Pool{Network: "narrow", Prefix: netip.MustParsePrefix("10.3.0.0/24"), Range: netip.MustParsePrefix("10.3.0.4/30"), BlockBits: 28}
	nodes := []*Allocator{NewAllocator(kv, "n1", nil), NewAllocator(kv, "n2", nil)}
	got := map[netip.Addr]string{}
	for i := 0; ; i++ {
		a := nodes[i%len(nodes)]
		addr, err := a.Allocate(ctx, p, netip.Addr{}, KindTask)
		if errors.Is(err, ErrPoolExhausted) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if prev, dup := got[addr]; dup {
			t.Fatalf("%s handed out to %s and again to %s", addr, prev, a.Node())
		}
		got[addr] = a.Node()
	}
	if len(got) != 4 {
		t.Errorf("%d addresses handed out, want the 4 of %s: %v", len(got), p.Range, got)
	}
	if c, err := Inspect(ctx, kv, p); err != nil || len(c.Bad) != 0 {
		t.Errorf("bad keys %+v (%v), want none", c.Bad, err)
	}
}

// TestNoDuplicatesConcurrent: three nodes, eight goroutines each, fill the
// pool at once; every address goes out once, none reserved, and every
// request past the end is told the pool is exhausted, by name.
func TestNoDuplicatesConcurrent(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	nodes := []*Allocator{NewAllocator(kv, "n1", nil), NewAllocator(kv, "n2", nil), NewAllocator(kv, "n3", nil)}
	var mu sync.Mutex
	got := map[netip.Addr]string{}
	exhausted := 0
	var wg sync.WaitGroup
	for i, a := range nodes {
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					addr, err := a.Allocate(ctx, pool26, netip.Addr{}, KindTask)
					mu.Lock()
					if errors.Is(err, ErrPoolExhausted) && strings.Contains(err.Error(), "net/v4") {
						exhausted++
						mu.Unlock()
						return
					}
					if err != nil {
						mu.Unlock()
						t.Error(err)
						return
					}
					if prev, dup := got[addr]; dup {
						t.Errorf("%s handed out twice: %s and n%d", addr, prev, i+1)
					}
					got[addr] = fmt.Sprintf("n%d/%d", i+1, g)
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	if len(got) != pool26Usable || exhausted != 24 {
		t.Errorf("%d addresses, %d requests told exhausted; want %d and 24", len(got), exhausted, pool26Usable)
	}
	for a := range got {
		if !pool26.usable(a) {
			t.Errorf("reserved or outside address %s handed out", a)
		}
	}
	stored, _ := Allocations(ctx, kv, pool26)
	if len(stored) != len(got) {
		t.Errorf("KV holds %d allocations, %d handed out", len(stored), len(got))
	}
	// Each node frees its own; every block is given back.
	for a, who := range got {
		if err := nodes[who[1]-'1'].Release(ctx, pool26, a); err != nil {
			t.Fatal(err)
		}
	}
	if left, _ := kv.List(ctx, KVPrefix); len(left) != 0 {
		t.Errorf("%d keys left after every release", len(left))
	}
	// A specific address: once.
	want := netip.MustParseAddr("10.2.0.33")
	if _, err := nodes[0].Allocate(ctx, pool26, want, KindTask); err != nil {
		t.Fatal(err)
	}
	if _, err := nodes[1].Allocate(ctx, pool26, want, KindTask); err == nil || !strings.Contains(err.Error(), "already in use (node n1)") {
		t.Errorf("second claim of %s: %v", want, err)
	}
	for _, bad := range []string{"10.2.0.1", "10.2.0.20", "10.2.0.0", "10.2.0.99"} {
		if _, err := nodes[1].Allocate(ctx, pool26, netip.MustParseAddr(bad), KindTask); err == nil {
			t.Errorf("%s (reserved or outside the range) handed out on request", bad)
		}
	}
}

// logCounter counts log records by message.
type logCounter struct {
	mu   sync.Mutex
	msgs map[string]int
	buf  bytes.Buffer
}

func (l *logCounter) Enabled(context.Context, slog.Level) bool { return true }
func (l *logCounter) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.msgs == nil {
		l.msgs = map[string]int{}
	}
	l.msgs[r.Message]++
	r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&l.buf, "%s=%v ", a.Key, a.Value); return true })
	l.buf.WriteString("\n")
	return nil
}
func (l *logCounter) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logCounter) WithGroup(string) slog.Handler      { return l }
func (l *logCounter) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.msgs[msg]
}

// TestBadDocumentsAreSkipped: an undecodable block document, one naming
// addresses of another block and a stray key leave the rest of the pool
// working on a node that never read it before: requests, shims and the
// keeper go on, nothing is handed out of the bad blocks, each bad key is
// logged once and counted, and the reader is told the fix.
func TestBadDocumentsAreSkipped(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	bad := map[string]string{
		poolPrefix(pool26) + "10.2.0.0_28":  `{"node":"n9","allocs":`,                             // undecodable
		poolPrefix(pool26) + "10.2.0.16_28": `{"node":"n9","allocs":{"10.2.0.99":{"node":"n9"}}}`, // another block's address
		poolPrefix(pool26) + "stray":        `hello`,
	}
	for k, v := range bad {
		kv.Put(ctx, k, []byte(v))
	}
	logs := &logCounter{}
	a := NewAllocator(kv, "n1", slog.New(logs))
	reg := prometheus.NewRegistry()
	NewMetrics(reg, a)
	shim, err := a.Shim(ctx, pool26)
	if err != nil {
		t.Fatalf("shim with bad documents in the pool: %v", err)
	}
	got := map[netip.Addr]bool{shim: true}
	for {
		addr, err := a.Allocate(ctx, pool26, netip.Addr{}, KindTask)
		if errors.Is(err, ErrPoolExhausted) {
			break
		}
		if err != nil {
			t.Fatalf("allocation with bad documents in the pool: %v", err)
		}
		got[addr] = true
	}
	// The two bad blocks (32 addresses, less .0, .1 and .20) are never used.
	if len(got) != 32 {
		t.Errorf("%d addresses handed out, want the 32 of the two good blocks", len(got))
	}
	for addr := range got {
		if b := pool26.Block(addr); b == netip.MustParsePrefix("10.2.0.0/28") || b == netip.MustParsePrefix("10.2.0.16/28") {
			t.Errorf("%s handed out of a bad block", addr)
		}
	}
	if _, err := a.Allocate(ctx, pool26, netip.MustParseAddr("10.2.0.5"), KindTask); !errors.Is(err, ErrBadDocument) {
		t.Errorf("specific address in the undecodable block: %v, want ErrBadDocument", err)
	}
	const msg = "skipping a bad document in the address pool: nothing is allocated from it"
	if n := logs.count(msg); n != 3 {
		t.Errorf("logged %d times, want once per bad key (3):\n%s", n, logs.buf.String())
	}
	if v := testmetrics.Gauge(t, reg, "underlay_ipam_skipped_documents"); v != 3 {
		t.Errorf("underlay_ipam_skipped_documents %v, want 3", v)
	}
	c, err := Inspect(ctx, kv, pool26)
	if err != nil || len(c.Bad) != 3 || len(c.Allocs) != 32 {
		t.Fatalf("inspect: %d bad, %d allocations, %v", len(c.Bad), len(c.Allocs), err)
	}
	for _, d := range c.Bad {
		if !strings.HasPrefix(d.removal(), "consul kv delete "+poolPrefix(pool26)) {
			t.Errorf("fix for %s: %q", d.Key, d.removal())
		}
	}
	// Fixed: the bad keys removed, the pool is whole again.
	for k := range bad {
		kv.Delete(ctx, k)
	}
	if _, err := a.Allocate(ctx, pool26, netip.Addr{}, KindTask); err != nil {
		t.Errorf("after the fix: %v", err)
	}
	if v := testmetrics.Gauge(t, reg, "underlay_ipam_skipped_documents"); v != 0 {
		t.Errorf("underlay_ipam_skipped_documents %v after the fix, want 0", v)
	}
}

// TestNonCanonicalBlockKeyIsBad: a stray key naming a block in another
// spelling than the allocator's own (IPv6 has many: upper case, zeros
// written out, an embedded IPv4 tail) is a bad key like any other. Taken
// as the block, it would hide the block's real document, and its empty
// one would be written over the real allocations: a duplicate address.
func TestNonCanonicalBlockKeyIsBad(t *testing.T) {
	ctx := context.Background()
	p := Pool{Network: "net6", Prefix: netip.MustParsePrefix("fd00::/64"), Range: netip.MustParsePrefix("fd00::1234:5600/120"), BlockBits: 124}
	b := netip.MustParsePrefix("fd00::1234:5670/124")
	held := netip.MustParseAddr("fd00::1234:5670")
	kv := kvtest.New()
	real, err := json.Marshal(BlockDoc{Node: "n1", Allocs: map[string]Alloc{held.String(): {Node: "n1", At: time.Unix(1, 0).UTC(), Kind: KindTask}}})
	if err != nil {
		t.Fatal(err)
	}
	kv.Put(ctx, blockPath(p, b), real)
	// The same block, spelt so that it lists after the real key.
	stray := poolPrefix(p) + "fd00::18.52.86.112_124"
	if stray <= blockPath(p, b) {
		t.Fatalf("stray key %s lists before %s", stray, blockPath(p, b))
	}
	kv.Put(ctx, stray, []byte(`{"node":"n1","allocs":{}}`))

	a := NewAllocator(kv, "n1", slog.New(&logCounter{}))
	for range 15 {
		addr, err := a.Allocate(ctx, p, netip.Addr{}, KindTask)
		if err != nil {
			t.Fatalf("allocate: %v", err)
		}
		if addr == held {
			t.Fatalf("%s handed out again: the stray key %s hid its allocation", held, stray)
		}
	}
	c, err := Inspect(ctx, kv, p)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Bad) != 1 || c.Bad[0].Key != stray || !strings.Contains(c.Bad[0].Err.Error(), blockKey(b)) {
		t.Errorf("bad keys %+v, want only %s, its error naming the block's own key %s", c.Bad, stray, blockKey(b))
	}
	if got := c.Allocs[held]; got.Node != "n1" || !got.At.Equal(time.Unix(1, 0)) {
		t.Errorf("allocation of %s is %+v, want the original one of n1", held, got)
	}
}

// fakeCluster is a swarm whose leader is this node, with the ready nodes given.
type fakeCluster struct{ ready []string }

func (c fakeCluster) IsLeader(context.Context) (bool, error)       { return true, nil }
func (c fakeCluster) ReadyNodes(context.Context) ([]string, error) { return c.ready, nil }

// clusterNet creates network net, 10.2.0.0/24 with cluster IPAM, in kv:
// the store and its pool.
func clusterNet(t *testing.T, kv *kvtest.KV) (*netspec.Store, Pool) {
	t.Helper()
	st := netspec.NewStore(kv)
	spec := netspec.Spec{Name: "net", Subnet: netip.MustParsePrefix("10.2.0.0/24"), Gateway: netip.MustParseAddr("10.2.0.1"),
		Parent: "eth1", IPAM: netspec.Cluster}
	if err := st.Create(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	p, _ := PoolOf(spec, false)
	return st, p
}

type noHeld struct{}

func (noHeld) HeldAddresses(context.Context) (Local, error) { return Local{}, nil }

// TestDepartedReclaimJudgesIdentities: every node has the same name (one
// --node for all, or cloned VMs). The leader reclaims the addresses of the
// one node that is neither Ready in the swarm nor fresh in its facts, and
// never those of a node that is either, whatever its name.
func TestDepartedReclaimJudgesIdentities(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	st, p := clusterNet(t, kv)
	clock := t0
	now := func() time.Time { return clock }
	held := map[string]netip.Addr{}
	for _, id := range []string{sid("ready"), sid("fresh"), sid("dead"), sid("leader")} {
		a := newAllocator(kv, id, "g", now, nil)
		addr := taskAddr(t, a, p)
		held[id] = addr
		f := netspec.NodeFacts{ID: id, Node: "same", Holder: netspec.Holder{Instance: id}}
		if err := st.PublishNode(ctx, f); err != nil {
			t.Fatal(err)
		}
	}
	// Holders without facts: a node gone whose facts were deleted, one
	// whose facts are unreadable, and one the swarm says is ready.
	for _, id := range []string{sid("ghost"), sid("garbled"), sid("readynofacts")} {
		addr, err := newAllocator(kv, id, "g", now, nil).Allocate(ctx, p, netip.Addr{}, KindTask)
		if err != nil {
			t.Fatal(err)
		}
		held[id] = addr
	}
	kv.Put(ctx, "underlay/nodes/"+sid("garbled"), []byte("{not json"))
	leader := newAllocator(kv, sid("leader"), "g", now, nil)
	r := departedReclaimer(leader, st, sid("ready"), sid("leader"), sid("readynofacts"))
	// PublishNode stamps facts with the real clock: judge them from there.
	clock = time.Now().Add(time.Minute)
	// The fresh node's agent beats; the swarm says it is not ready.
	refresh := func(id string) {
		raw := fmt.Sprintf(`{"id":%q,"node":"same","holder":{"instance":%q},"updated_at":%q}`, id, id, clock.Format(time.RFC3339Nano))
		kv.Put(ctx, "underlay/nodes/"+id, []byte(raw))
	}
	// Holders without facts are known from the first sweep, judged from
	// the second.
	for range 4 {
		refresh(sid("fresh"))
		if err := r.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
		clock = clock.Add(4 * time.Second)
	}
	wantHeld(ctx, t, kv, p, held, sid("dead"), sid("ghost"), sid("garbled"))
}

// withSpares returns n1's allocator over kv keeping n spares of pool26,
// made known by one allocation (returned) and claimed by one sync.
func withSpares(t *testing.T, kv *kvtest.KV, n int) (*Allocator, netip.Addr) {
	t.Helper()
	ctx := context.Background()
	a := NewAllocator(kv, "n1", nil)
	a.spares.enable(n, nil)
	first := taskAddr(t, a, pool26)
	if _, err := a.spares.syncAll(ctx, false, false); err != nil {
		t.Fatal(err)
	}
	return a, first
}

// TestStrayReleaseOfAFreeSpare: a release of an address this node keeps
// as a free spare (Docker never got it) is ignored: the spare stays
// claimed in Consul, so handing it out later is still safe.
func TestStrayReleaseOfAFreeSpare(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	a, _ := withSpares(t, kv, 2)
	free := a.spares.known(pool26)
	if len(free) != 2 {
		t.Fatalf("spares %v, want 2", free)
	}
	for s := range free {
		if err := a.Release(ctx, pool26, s); err != nil {
			t.Fatal(err)
		}
		all, _ := Allocations(ctx, kv, pool26)
		if !a.spares.mine(all[s]) {
			t.Errorf("stray release of free spare %s freed it in Consul: %+v", s, all[s])
		}
		// Handed out later, it is still recorded as n1's.
		got, err := a.Allocate(ctx, pool26, s, KindTask)
		if err != nil || got != s {
			t.Errorf("asking for spare %s: %s %v", s, got, err)
		}
	}
}

// TestReleaseOfAHandedSpareWhileItIsRecorded: Docker releases a spare it
// was handed (its container stopped at once) while the keeper's sync,
// planned before, records it as a task: the release wins, and nothing is
// left allocated that no container holds (before the fix, the sync wrote it
// back as a task: a leak until the reclaimer's grace ran out twice).
func TestReleaseOfAHandedSpareWhileItIsRecorded(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	a, first := withSpares(t, kv, 2)
	handed, err := a.Allocate(ctx, pool26, netip.Addr{}, KindTask)
	if err != nil || !a.spares.known(pool26)[handed] {
		t.Fatalf("Allocate = %s, %v; want one of the spares %v", handed, err, a.spares.known(pool26))
	}
	// The release lands between the sync's plan and its write: in the
	// agent, the plugin's Release of that block's update (which waits
	// for the sync's) goes first. Here, just before the sync's write, as
	// Release does it: the keeper forgets the handout, then Consul the
	// address (the write then fails its check and is made again).
	released := false
	key := blockPath(pool26, pool26.Block(handed))
	kv.Hook = func(call string, keys []string) error {
		if call != "txn" || released || !slices.Contains(keys, key) {
			return nil
		}
		released = true
		if stray, _, _ := a.spares.releasing(pool26, handed); stray {
			t.Errorf("release of handed %s taken as stray", handed)
		}
		pair, _, err := kv.Get(ctx, key)
		if err != nil {
			return err
		}
		var doc BlockDoc
		if err := json.Unmarshal(pair.Value, &doc); err != nil {
			return err
		}
		delete(doc.Allocs, handed.String())
		b, _ := json.Marshal(doc)
		return kv.Put(ctx, key, b)
	}
	if _, err := a.spares.syncAll(ctx, true, false); err != nil {
		t.Fatal(err)
	}
	kv.Hook = nil
	if !released {
		t.Fatal("the sync wrote nothing")
	}
	all, err := Allocations(ctx, kv, pool26)
	if err != nil {
		t.Fatal(err)
	}
	if al, ok := all[handed]; ok && !a.spares.mine(al) {
		t.Errorf("released %s is allocated after the sync as %+v, want free (or a new spare)", handed, al)
	}
	if al := all[first]; al.Kind != KindTask {
		t.Errorf("%s, still in use, is %+v", first, al)
	}
}

// TestReleaseOfAnAddressAllocatedAgainWhileItsSpareIsDropped: a sync gives
// a spare back; its write frees the address in Consul, and only then does
// the keeper forget it was giving it back. In between, a request may be
// allocated that address and Docker release it at once: that release is
// real and must free it (before the fix it was taken for a stray release
// of a spare and ignored: a task allocation no container held, which
// TestConcurrentCyclesWithSparesNoDuplicates caught once in CI).
func TestReleaseOfAnAddressAllocatedAgainWhileItsSpareIsDropped(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	a, _ := withSpares(t, kv, 1)
	var s netip.Addr
	for s = range a.spares.known(pool26) {
	}
	// Another node ran short: the next sync gives s back.
	a.spares.hold(pool26.ID())
	if _, err := a.spares.syncAll(ctx, false, false); err != nil {
		t.Fatal(err)
	}
	if all, _ := Allocations(ctx, kv, pool26); all[s].Node != "" {
		t.Fatalf("spare %s not given back: %+v", s, all[s])
	}
	// The moment between that write and the keeper's settling of it.
	a.spares.mu.Lock()
	a.spares.pools[pool26.ID()].Dropping = []netip.Addr{s}
	a.spares.mu.Unlock()
	got, err := a.Allocate(ctx, pool26, s, KindTask)
	if err != nil || got != s {
		t.Fatalf("Allocate(%s) = %s, %v", s, got, err)
	}
	if err := a.Release(ctx, pool26, got); err != nil {
		t.Fatal(err)
	}
	if all, _ := Allocations(ctx, kv, pool26); all[s].Node != "" {
		t.Errorf("%s still allocated after Docker released it: %+v", s, all[s])
	}
}

// TestStrayReleaseOfASpareNotYetListed: a sync's write claims a spare and
// only then does the keeper list it as free. A stray release of that
// address in between (Docker releasing an address it does not hold) must
// not free it: once listed, it is handed out, and with no record in Consul
// another node could allocate it too.
func TestStrayReleaseOfASpareNotYetListed(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	a, _ := withSpares(t, kv, 1)
	// The moment between the write claiming s and the keeper listing it.
	a.spares.mu.Lock()
	sp := a.spares.pools[pool26.ID()]
	s := sp.Free[0]
	sp.Free = nil
	a.spares.mu.Unlock()
	if err := a.Release(ctx, pool26, s); err != nil {
		t.Fatal(err)
	}
	if all, _ := Allocations(ctx, kv, pool26); !a.spares.mine(all[s]) {
		t.Errorf("stray release freed spare %s before the keeper listed it: %+v", s, all[s])
	}
}

// TestUpdateReReadsBeforeDecidingNothing: a stale copy saying "nothing to
// do" is checked on a fresh read.
func TestUpdateReReadsBeforeDecidingNothing(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	a := NewAllocator(kv, "n1", nil)
	addr := taskAddr(t, a, pool26)
	// Another process with this node's identity (its previous agent)
	// allocated a second address in the same block: n1's copy lacks it.
	other := NewAllocator(kv, "n1", nil)
	second, err := other.Allocate(ctx, pool26, addr.Next(), KindTask)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Release(ctx, pool26, second); err != nil {
		t.Fatal(err)
	}
	if all, _ := Allocations(ctx, kv, pool26); all[second].Node != "" {
		t.Errorf("%s still allocated after its release: the stale copy decided", second)
	}
}

// TestConcurrentCyclesWithSparesNoDuplicates: three nodes keep spares
// (their keepers running for real) while eight goroutines each allocate,
// hold and release, with stray releases from the wrong node thrown in: no
// address is ever held twice, and once everything is released and the
// keepers stop, the pool is empty.
func TestConcurrentCyclesWithSparesNoDuplicates(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv := kvtest.New()
	nodes := []*Allocator{NewAllocator(kv, "n1", nil), NewAllocator(kv, "n2", nil), NewAllocator(kv, "n3", nil)}
	keepCtx, stop := context.WithCancel(ctx)
	var keepers sync.WaitGroup
	for _, a := range nodes {
		keepers.Add(1)
		go func() { defer keepers.Done(); a.KeepSpares(keepCtx, 4, slog.New(slog.DiscardHandler)) }()
	}
	var mu sync.Mutex
	live := map[netip.Addr]string{}
	until := time.Now().Add(1500 * time.Millisecond)
	var wg sync.WaitGroup
	for i, a := range nodes {
		stray := nodes[(i+1)%len(nodes)]
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := 0; time.Now().Before(until); n++ {
					addr, err := a.Allocate(ctx, pool26, netip.Addr{}, KindTask)
					if errors.Is(err, ErrPoolExhausted) {
						continue
					}
					if err != nil {
						t.Error(err)
						return
					}
					who := fmt.Sprintf("n%d/%d", i+1, g)
					mu.Lock()
					if prev, dup := live[addr]; dup {
						t.Errorf("%s held by %s and %s", addr, prev, who)
					}
					live[addr] = who
					mu.Unlock()
					if n%7 == 0 {
						if err := stray.Release(ctx, pool26, addr); err != nil && !errors.Is(err, ErrNotHeld) {
							t.Error(err)
						}
					}
					time.Sleep(time.Duration(n%3) * time.Millisecond)
					mu.Lock()
					delete(live, addr)
					mu.Unlock()
					if err := a.Release(ctx, pool26, addr); err != nil {
						t.Error(err)
					}
				}
			}()
		}
	}
	wg.Wait()
	stop()
	keepers.Wait()
	if all, _ := Allocations(ctx, kv, pool26); len(all) != 0 {
		t.Errorf("%d allocations left after every release and the keepers' stop: %v", len(all), all)
	}
}

// TestSparesForPoolsUsedBeforeKeeping: a pool first used before KeepSpares
// started (the agent's goroutines start in any order) gets spares too.
func TestSparesForPoolsUsedBeforeKeeping(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv := kvtest.New()
	a := NewAllocator(kv, "n1", nil)
	if _, err := a.Allocate(ctx, pool26, netip.Addr{}, KindTask); err != nil {
		t.Fatal(err)
	}
	go a.KeepSpares(ctx, 3, slog.New(slog.DiscardHandler))
	for {
		all, _ := Allocations(ctx, kv, pool26)
		spares := 0
		for _, al := range all {
			if a.spares.mine(al) {
				spares++
			}
		}
		if spares == 3 {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%d spares after 10s, want 3", spares)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestWriteStatsCountConflicts: a node writing a block from a copy another
// node has changed since loses its check-and-set; the loss is counted (and
// exported as underlay_ipam_cas_conflicts_total), then retried and won.
func TestWriteStatsCountConflicts(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	a, b := NewAllocator(kv, "n1", nil), NewAllocator(kv, "n2", nil)
	reg := prometheus.NewRegistry()
	NewMetrics(reg, a)
	first, err := a.Allocate(ctx, pool26, netip.Addr{}, KindTask) // claims a block: one write
	if err != nil {
		t.Fatal(err)
	}
	// n2 takes an address of n1's block, so n1's copy of it is stale.
	other := first.Next()
	if err := b.allocateAt(ctx, pool26, other, Alloc{Node: "n2", Kind: KindTask}); err != nil {
		t.Fatal(err)
	}
	if got := a.WriteStats(); got != (WriteStats{Sent: 1}) {
		t.Fatalf("before the race: %+v, want 1 sent, no conflict", got)
	}
	second := taskAddr(t, a, pool26)
	if second == first || second == other {
		t.Fatalf("handed out %s again (first %s, n2's %s)", second, first, other)
	}
	if got := a.WriteStats(); got != (WriteStats{Sent: 3, Conflicts: 1}) {
		t.Errorf("after writing a stale copy: %+v, want 3 sent (won, lost, won), 1 conflict", got)
	}
	if got := b.WriteStats(); got != (WriteStats{Sent: 1}) {
		t.Errorf("n2: %+v, want 1 sent, no conflict", got)
	}
	for name, want := range map[string]float64{"underlay_ipam_block_writes_total": 3, "underlay_ipam_cas_conflicts_total": 1} {
		if v := testmetrics.Counter(t, reg, name); v != want {
			t.Errorf("%s %v, want %v", name, v, want)
		}
	}
}

// TestFullBlockOnAFreshReadIsNotWritten: a block the node's copy shows
// with room, found full on a fresh read (other nodes took the rest), gets
// no write: nothing was allocated there, and the node moves on to
// another block.
func TestFullBlockOnAFreshReadIsNotWritten(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	a, b := NewAllocator(kv, "n1", nil), NewAllocator(kv, "n2", nil)
	first, err := a.Allocate(ctx, pool26, netip.Addr{}, KindTask) // claims a block: one write
	if err != nil {
		t.Fatal(err)
	}
	blk := pool26.Block(first)
	for addr := blk.Addr(); blk.Contains(addr); addr = addr.Next() {
		if addr == first || !pool26.usable(addr) {
			continue
		}
		if err := b.allocateAt(ctx, pool26, addr, Alloc{Node: "n2", Kind: KindTask}); err != nil {
			t.Fatal(err)
		}
	}
	second := taskAddr(t, a, pool26)
	if blk.Contains(second) {
		t.Fatalf("handed out %s, of the full block %s", second, blk)
	}
	if got := a.WriteStats(); got != (WriteStats{Sent: 3, Conflicts: 1}) {
		t.Errorf("%+v, want 3 sent (the claim, the stale copy's lost write, the next block's claim), 1 conflict", got)
	}
}

// TestAddressThisNodeHandedOutIsRefusedAtOnce: a request for an address
// this node keeps as its own spare, already handed out, is refused at
// once: no other node will give it back, and waiting for spares would
// only hold Docker's request.
func TestAddressThisNodeHandedOutIsRefusedAtOnce(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	a, _ := withSpares(t, kv, 2)
	handed, err := a.Allocate(ctx, pool26, netip.Addr{}, KindTask)
	if err != nil {
		t.Fatal(err)
	}
	a.sleep = func(context.Context, time.Duration) error { return errors.New("waited for other nodes' spares") }
	_, err = a.Allocate(ctx, pool26, handed, KindShim)
	if err == nil || !strings.Contains(err.Error(), "already in use") {
		t.Errorf("allocating %s, handed out from this node's spares: %v, want already in use", handed, err)
	}
}

// TestReleaseOfAHandedSpareResentInOneBatch: Docker resends a release
// whose answer it missed. Queued behind the first, the resend finds the
// spare no longer handed (the first took it from the keeper), and both
// are served in one batch: the address counts as handed if any of its
// releases says so, and is freed. Taken as never handed, the release
// would be ignored as stray and the address stay allocated, a spare the
// keeper no longer knows.
func TestReleaseOfAHandedSpareResentInOneBatch(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	a, _ := withSpares(t, kv, 2)
	handed := taskAddr(t, a, pool26)
	var reqs []*request
	for range 2 {
		stray, h, undo := a.spares.releasing(pool26, handed)
		if stray {
			t.Fatalf("release of %s, handed out, taken as stray", handed)
		}
		reqs = append(reqs, &request{pool: pool26, release: handed, handed: h, undo: undo, done: make(chan result, 1)})
	}
	if !reqs[0].handed || reqs[1].handed {
		t.Fatalf("handed %v, %v: want the first release only to find the spare handed", reqs[0].handed, reqs[1].handed)
	}
	a.releaseBatch(ctx, reqs)
	for _, r := range reqs {
		if res := <-r.done; res.err != nil {
			t.Errorf("release of %s: %v", handed, res.err)
		}
	}
	all, err := Allocations(ctx, kv, pool26)
	if err != nil {
		t.Fatal(err)
	}
	if al, ok := all[handed]; ok {
		t.Errorf("%s still allocated (%+v) after its release and the resend", handed, al)
	}
}

// TestNodesClaimApart: a network created on many nodes at once, every
// node claiming its first block: they do not all race for the same free
// block (which lost most writes, make bench-ipam-sim found), so few
// check-and-sets are lost.
func TestNodesClaimApart(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	pool := Pool{Network: "wide", Prefix: netip.MustParsePrefix("10.3.0.0/16"), BlockBits: 28}
	const n = 200
	nodes := make([]*Allocator, n)
	for i := range nodes {
		nodes[i] = NewAllocator(kv, fmt.Sprintf("node-%03d", i), nil)
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for _, a := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if _, err := a.Shim(ctx, pool); err != nil {
				t.Error(err)
			}
		}()
	}
	close(start)
	wg.Wait()
	var lost, sent uint64
	blocks := map[netip.Prefix]bool{}
	for _, a := range nodes {
		s := a.WriteStats()
		lost, sent = lost+s.Conflicts, sent+s.Sent
	}
	all, err := Allocations(ctx, kv, pool)
	if err != nil || len(all) != n {
		t.Fatalf("%d shims allocated, want %d (%v)", len(all), n, err)
	}
	for addr := range all {
		blocks[pool.Block(addr)] = true
	}
	// From spread places, a node loses a write only when another hashed
	// near it; racing for the lowest free block, nearly every write of
	// every node but one is lost, many times over.
	if lost > n/4 {
		t.Errorf("%d of %d block writes lost for %d shims in %d blocks: nodes race for the same free blocks", lost, sent, n, len(blocks))
	}
	t.Logf("%d shims: %d block writes, %d lost, %d blocks", n, sent, lost, len(blocks))
}

// TestCancelledReleaseServedLaterIsNotRecordedBack: a release of a handed
// spare whose caller gives up while another request's write holds the
// batch is still served once that write ends; the spare's handout must
// not be put back, or the keeper records the freed address again as a
// task no container holds (a leak until the sweep returns it).
func TestCancelledReleaseServedLaterIsNotRecordedBack(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	a, _ := withSpares(t, kv, 2)
	handed, err := a.Allocate(ctx, pool26, netip.Addr{}, KindTask)
	if err != nil || !a.spares.known(pool26)[handed] {
		t.Fatalf("Allocate = %s, %v; want one of the spares %v", handed, err, a.spares.known(pool26))
	}
	// Another pool's request holds the batch in its write.
	other := Pool{Network: "other", Prefix: netip.MustParsePrefix("10.9.0.0/24"), BlockBits: 28}
	blocked, resume := make(chan struct{}), make(chan struct{})
	kv.Hook = func(call string, keys []string) error {
		if call == "txn" && slices.ContainsFunc(keys, func(k string) bool { return strings.HasPrefix(k, poolPrefix(other)) }) {
			close(blocked)
			<-resume
		}
		return nil
	}
	done := make(chan error, 1)
	go func() {
		_, err := a.Allocate(ctx, other, netip.Addr{}, KindTask)
		done <- err
	}()
	<-blocked
	kv.Hook = nil
	gone, cancel := context.WithCancel(ctx)
	cancel()
	// Docker gave up waiting: the release is queued, not yet served.
	if err := a.Release(gone, pool26, handed); !errors.Is(err, context.Canceled) {
		t.Fatalf("Release with its wait over = %v, want %v", err, context.Canceled)
	}
	close(resume)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The batch served the queued release too: handed is free in Consul.
	if all, _ := Allocations(ctx, kv, pool26); all[handed].Node != "" {
		t.Fatalf("%s after the release was served: %+v, want free", handed, all[handed])
	}
	if _, err := a.spares.syncAll(ctx, true, false); err != nil {
		t.Fatal(err)
	}
	all, err := Allocations(ctx, kv, pool26)
	if err != nil {
		t.Fatal(err)
	}
	if al, ok := all[handed]; ok && !a.spares.mine(al) {
		t.Errorf("released %s is allocated again after the spare sync as %+v, want free (or a new spare)", handed, al)
	}
}

// TestFailedReleaseOfAHandedSpareCanBeRetried: a release of a handed spare
// whose write fails keeps the handout, so that a retry frees the address
// instead of being taken for a stray release.
func TestFailedReleaseOfAHandedSpareCanBeRetried(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	a, _ := withSpares(t, kv, 2)
	handed := taskAddr(t, a, pool26)
	kv.Hook = func(call string, _ []string) error {
		if call == "txn" {
			return kvtest.ErrUnreachable
		}
		return nil
	}
	if err := a.Release(ctx, pool26, handed); !errors.Is(err, kvtest.ErrUnreachable) {
		t.Fatalf("Release with Consul out of reach = %v", err)
	}
	kv.Hook = nil
	if err := a.Release(ctx, pool26, handed); err != nil {
		t.Fatal(err)
	}
	if all, _ := Allocations(ctx, kv, pool26); all[handed].Node != "" {
		t.Errorf("%s after the retried release: %+v, want free", handed, all[handed])
	}
}

// TestPressureFromANodeWhoseClockIsBehind: a node asks the others for
// their spares with a note its own clock stamps. A note read as a change
// of the key a node follows is a new ask whatever its stamp, so a node
// whose clock is a minute behind is heard; only a note found when the
// watch starts is judged by its stamp, there being nothing else to judge
// it by.
func TestPressureFromANodeWhoseClockIsBehind(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	kv := kvtest.New()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := func(skew time.Duration) func() time.Time { return func() time.Time { return now.Add(skew) } }
	n1 := newAllocator(kv, "n1", "g1", clock(-time.Minute), nil)
	n2 := newAllocator(kv, "n2", "g2", clock(0), nil)
	n3 := newAllocator(kv, "n3", "g3", clock(-2*spareHold), nil)
	// An old ask, there before n2 watches: not heard.
	if err := n3.spares.askForSpares(ctx, pool26); err != nil {
		t.Fatal(err)
	}
	waits, events, stopped := watchPressure(ctx, kv, n2, pool26)
	defer func() { cancel(); <-stopped }()
	<-waits // the first read, of n3's old ask
	<-waits // then following the key
	select {
	case ev := <-events:
		t.Fatalf("n3's ask from before the watch, stamped %s before, heard: %+v", 2*spareHold, ev)
	default:
	}
	if err := n1.spares.askForSpares(ctx, pool26); err != nil {
		t.Fatal(err)
	}
	<-waits // n1's ask read, and the key followed again
	select {
	case ev := <-events:
		if ev.pool != pool26.ID() || ev.check {
			t.Errorf("event %+v, want an ask for %s's spares", ev, pool26.ID())
		}
	default:
		t.Errorf("n1's ask, stamped by a clock a minute behind n2's, not heard by n2")
	}
}

// watchPressure starts a's watch of p's pressure key, on kv, until ctx
// ends (then stopped closes): waits signals each blocking read it makes,
// events what it asks the keeper for.
func watchPressure(ctx context.Context, kv *kvtest.KV, a *Allocator, p Pool) (waits <-chan struct{}, events <-chan spareEvent, stopped <-chan struct{}) {
	w := make(chan struct{}, 16)
	kv.Hook = func(call string, _ []string) error {
		if call == "wait" {
			w <- struct{}{}
		}
		return nil
	}
	ev := make(chan spareEvent, 4)
	done := make(chan struct{})
	go func() {
		a.spares.watchPressure(ctx, p, ev)
		close(done)
	}()
	return w, ev, done
}

// TestPressureWatchAfterConsulRestartedEmpty: Consul restarts empty while
// a node follows a pool's pressure key (a dev agent: its indexes start
// again from 1). The blocking read in flight fails; the watch then reads
// the key at once and, finding it gone, asks for a check of every spare.
// Before, it waited again on the index from before the restart, which
// Consul answers only at the wait's timeout (a minute, all that time with
// the spares suspended) and kvtest, having none, never.
func TestPressureWatchAfterConsulRestartedEmpty(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	kv := kvtest.New()
	n := newAllocator(kv, "n1", "g1", time.Now, nil)
	waits, events, stopped := watchPressure(ctx, kv, n, pool26)
	defer func() { cancel(); <-stopped }()
	<-waits // the first read
	<-waits // then following the key
	kv.LoseState()
	select {
	case ev := <-events:
		if ev.pool != pool26.ID() || !ev.check {
			t.Errorf("event %+v, want a check of %s's spares", ev, pool26.ID())
		}
	case <-ctx.Done():
		t.Fatal("no check of the spares asked for after Consul restarted empty")
	}
}

// TestNodeIPAMShims: on a dual-stack cluster-IPAM network a node gets a
// host shim address of each family, found again on the next call, and
// the network's removal from the node gives both back.
func TestNodeIPAMShims(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	n := NodeIPAM{Alloc: NewAllocator(kv, "n1", slog.New(slog.DiscardHandler))}
	spec := netspec.Spec{Name: "lan", IPAM: netspec.Cluster, Subnet: netip.MustParsePrefix("10.9.0.0/24"), Gateway: netip.MustParseAddr("10.9.0.1"),
		IPv6Subnet: netip.MustParsePrefix("fd00:9::/64")}
	putSpecs(t, kv, spec)
	shims := map[bool]netip.Addr{}
	for _, v6 := range []bool{false, true} {
		a, err := n.Shim(ctx, spec, v6)
		if err != nil {
			t.Fatalf("shim (IPv6 %t): %v", v6, err)
		}
		if pool, _ := PoolOf(spec, v6); !pool.Prefix.Contains(a) {
			t.Errorf("shim (IPv6 %t) %s outside %s", v6, a, pool.Prefix)
		}
		if again, err := n.Shim(ctx, spec, v6); err != nil || again != a {
			t.Errorf("shim (IPv6 %t) asked again: %s, %v; want %s", v6, again, err, a)
		}
		shims[v6] = a
	}
	if _, err := n.Shim(ctx, netspec.Spec{Name: "v4only", IPAM: netspec.Cluster, Subnet: spec.Subnet}, true); err == nil || !strings.Contains(err.Error(), "v4only has no IPv6 subnet") {
		t.Errorf("IPv6 shim of an IPv4-only network: %v, want an error naming it", err)
	}
	if err := n.ReleaseShim(ctx, spec, 0); err != nil {
		t.Fatal(err)
	}
	for v6, a := range shims {
		pool, _ := PoolOf(spec, v6)
		v, err := n.Alloc.store.scan(ctx, pool)
		if err != nil {
			t.Fatal(err)
		}
		if doc, ok := v.docs[pool.Block(a)]; ok {
			if al, held := doc.alloc(a); held {
				t.Errorf("shim %s still allocated after ReleaseShim: %+v", a, al)
			}
		}
	}
}

// TestReleaseShimsOf: a node gives back its shims in a network's pools
// knowing only the network's name (its spec is gone): its shims of both
// families go, another node's shim and its own task addresses stay, and
// a key under the pool that cannot be read is passed over. A network
// without pools has nothing to give back, and is no error.
func TestReleaseShimsOf(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	spec := netspec.Spec{Name: "lan", IPAM: netspec.Cluster, Subnet: netip.MustParsePrefix("10.9.0.0/24"), Gateway: netip.MustParseAddr("10.9.0.1"),
		IPv6Subnet: netip.MustParsePrefix("fd00:9::/64")}
	putSpecs(t, kv, spec)
	n1 := NodeIPAM{Alloc: NewAllocator(kv, "n1", slog.New(slog.DiscardHandler))}
	n2 := NodeIPAM{Alloc: NewAllocator(kv, "n2", slog.New(slog.DiscardHandler))}
	want := map[netip.Addr]string{}
	for _, v6 := range []bool{false, true} {
		for _, n := range []NodeIPAM{n1, n2} {
			a, err := n.Shim(ctx, spec, v6)
			if err != nil {
				t.Fatal(err)
			}
			if n.Alloc == n2.Alloc {
				want[a] = "n2 " + KindShim
			}
		}
		p, _ := PoolOf(spec, v6)
		task, err := n1.Alloc.Allocate(ctx, p, netip.Addr{}, KindTask)
		if err != nil {
			t.Fatal(err)
		}
		want[task] = "n1 " + KindTask
	}
	if err := kv.Put(ctx, KVPrefix+"lan/v4/blocks/junk", []byte("{")); err != nil {
		t.Fatal(err)
	}
	if err := n1.ReleaseShimsOf(ctx, "lan"); err != nil {
		t.Fatalf("release n1's shims of lan: %v", err)
	}
	got := map[netip.Addr]string{}
	for _, v6 := range []bool{false, true} {
		p, _ := PoolOf(spec, v6)
		allocs, err := Allocations(ctx, kv, p)
		if err != nil {
			t.Fatal(err)
		}
		for a, al := range allocs {
			got[a] = al.Node + " " + al.Kind
		}
	}
	if !maps.Equal(got, want) {
		t.Errorf("allocations after n1 released its shims of lan: %v, want %v", got, want)
	}
	if err := n1.ReleaseShimsOf(ctx, "nopools"); err != nil {
		t.Errorf("release shims of a network without pools: %v, want no error", err)
	}
}

// TestShimNetworks: a node finds the networks in whose pools it holds
// shim addresses, and those addresses, knowing nothing of their specs:
// another node's shims and its own task addresses name no network, and
// a key that cannot be read is passed over.
func TestShimNetworks(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	spec := func(name, subnet string) netspec.Spec {
		p := netip.MustParsePrefix(subnet)
		return netspec.Spec{Name: name, IPAM: netspec.Cluster, Subnet: p, Gateway: p.Addr().Next()}
	}
	lan, wan, other, tasks := spec("lan", "10.9.0.0/24"), spec("wan", "10.8.0.0/24"), spec("other", "10.7.0.0/24"), spec("tasks", "10.6.0.0/24")
	lan.IPv6Subnet = netip.MustParsePrefix("fd00:9::/64")
	putSpecs(t, kv, lan, wan, other, tasks)
	n1 := NodeIPAM{Alloc: NewAllocator(kv, "n1", slog.New(slog.DiscardHandler))}
	n2 := NodeIPAM{Alloc: NewAllocator(kv, "n2", slog.New(slog.DiscardHandler))}
	var want []netip.Addr
	for _, s := range []netspec.Spec{lan, wan} {
		for _, v6 := range []bool{false, true} {
			if v6 && !s.IPv6Subnet.IsValid() {
				continue
			}
			a, err := n1.Shim(ctx, s, v6)
			if err != nil {
				t.Fatal(err)
			}
			if s.Name == "lan" {
				want = append(want, a)
			}
		}
	}
	if _, err := n2.Shim(ctx, other, false); err != nil {
		t.Fatal(err)
	}
	p, _ := PoolOf(tasks, false)
	if _, err := n1.Alloc.Allocate(ctx, p, netip.Addr{}, KindTask); err != nil {
		t.Fatal(err)
	}
	if err := kv.Put(ctx, KVPrefix+"junk/v4/blocks/junk", []byte("{")); err != nil {
		t.Fatal(err)
	}
	if got, err := n1.ShimNetworks(ctx); err != nil || !slices.Equal(got, []string{"lan", "wan"}) {
		t.Errorf("n1's shim networks: %v, %v; want lan and wan", got, err)
	}
	got, err := n1.ShimsOf(ctx, "lan")
	slices.SortFunc(got, netip.Addr.Compare)
	slices.SortFunc(want, netip.Addr.Compare)
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("n1's shims of lan: %v, %v; want %v", got, err, want)
	}
}

// TestShimNetworksOddKeys: ShimNetworks names a network by a key only as
// blockPath spells a block's: a shim of this node under a key of any
// other layout (a family that is not the block's, a segment more, a block
// not masked or spelt otherwise, a key beside the blocks) names none.
func TestShimNetworksOddKeys(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	doc := func(addr string) []byte {
		return []byte(`{"node":"n1","allocs":{"` + addr + `":{"node":"n1","at":"2026-12-01T00:00:00Z","kind":"shim"}}}`)
	}
	for key, value := range map[string][]byte{
		KVPrefix + "good/v4/blocks/10.5.0.48_28":      doc("10.5.0.50"),
		KVPrefix + "good6/v6/blocks/fd00:5::_120":     doc("fd00:5::5"),
		KVPrefix + "family/v6/blocks/10.5.0.0_28":     doc("10.5.0.5"),
		KVPrefix + "family6/v4/blocks/fd00:5::_120":   doc("fd00:5::5"),
		KVPrefix + "deeper/x/v4/blocks/10.5.0.16_28":  doc("10.5.0.17"),
		KVPrefix + "tail/v4/blocks/10.5.0.16_28/x":    doc("10.5.0.17"),
		KVPrefix + "unmasked/v4/blocks/10.5.0.17_28":  doc("10.5.0.17"),
		KVPrefix + "spelt/v6/blocks/FD00:5::_120":     doc("fd00:5::5"),
		KVPrefix + "spelt6/v6/blocks/fd00:5:0::_120":  doc("fd00:5::5"),
		KVPrefix + "notblocks/v4/block/10.5.0.32_28":  doc("10.5.0.33"),
		KVPrefix + "pressure/v4/pressure":             doc("10.5.0.33"),
		KVPrefix + "noslash":                          doc("10.5.0.33"),
		KVPrefix + "/v4/blocks/10.5.0.64_28":          doc("10.5.0.65"),
		"underlay/ipamx/other/v4/blocks/10.5.0.80_28": doc("10.5.0.81"),
	} {
		if err := kv.Put(ctx, key, value); err != nil {
			t.Fatal(err)
		}
	}
	a := NewAllocator(kv, "n1", slog.New(slog.DiscardHandler))
	if got, err := a.ShimNetworks(ctx); err != nil || !slices.Equal(got, []string{"good", "good6"}) {
		t.Errorf("shim networks: %v, %v; want good and good6 alone", got, err)
	}
}

// TestAdoptOnlyEarlierSparesAndNodeless: adopt rereads the block, and
// turns into this node's task allocation only a spare of this node's
// earlier agent, its shim, or an allocation naming no node: another node's address,
// allocated there since the sweep looked, stays that node's (taken, its
// release would be refused and this node's would free it under it), and
// so does a spare this allocator's keeper holds; one of this generation
// it no longer holds (dropHeld) is adopted.
func TestAdoptOnlyEarlierSparesAndNodeless(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	a, b := newAllocator(kv, "n1", "now", time.Now, nil), NewAllocator(kv, "n2", nil)
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	allocs := map[string]Alloc{
		"10.2.0.2": {Node: "n2", At: at, Kind: KindTask},
		"10.2.0.3": {Node: "n1", At: at, Kind: KindSpare, Gen: "now"},
		"10.2.0.4": {Node: "n1", At: at, Kind: KindSpare, Gen: "old"},
		"10.2.0.5": {At: at, Kind: KindTask},
		// This generation's, but not one its keeper holds (taken out of
		// its free spares as a local container holds it: dropHeld).
		"10.2.0.6": {Node: "n1", At: at, Kind: KindSpare, Gen: "now"},
		// This node's shim, which a local container holds: the
		// container's (see heldshim_test.go); another node's stays.
		"10.2.0.7": {Node: "n1", At: at, Kind: KindShim},
		"10.2.0.8": {Node: "n2", At: at, Kind: KindShim},
	}
	for _, k := range slices.Sorted(maps.Keys(allocs)) {
		if err := b.allocateAt(ctx, pool26, netip.MustParseAddr(k), allocs[k]); err != nil {
			t.Fatal(err)
		}
	}
	a.spares.mu.Lock()
	a.spares.pools[pool26.ID()] = &sparePool{pool: pool26, spareState: spareState{Free: []netip.Addr{netip.MustParseAddr("10.2.0.3")}, Handed: map[netip.Addr]Alloc{}}}
	a.spares.mu.Unlock()
	want := map[string]bool{"10.2.0.4": true, "10.2.0.5": true, "10.2.0.6": true, "10.2.0.7": true}
	for _, k := range slices.Sorted(maps.Keys(allocs)) {
		addr := netip.MustParseAddr(k)
		was, adopted, err := a.adopt(ctx, pool26, addr)
		if err != nil {
			t.Fatal(err)
		}
		if adopted != want[k] {
			t.Errorf("adopt %s (%+v): adopted %v, want %v", k, allocs[k], adopted, want[k])
		}
		if adopted && !was.same(allocs[k]) {
			t.Errorf("adopt %s: was %+v, want %+v", k, was, allocs[k])
		}
	}
	all, err := Allocations(ctx, kv, pool26)
	if err != nil {
		t.Fatal(err)
	}
	for k, al := range allocs {
		if want[k] {
			al = Alloc{Node: "n1", At: at, Kind: KindTask}
		}
		if got := all[netip.MustParseAddr(k)]; !got.same(al) {
			t.Errorf("%s: %+v after adopting, want %+v", k, got, al)
		}
	}
}

// TestReleaseShimLeavesAnotherNodesShim: releaseShim rereads the block
// and frees the address only while it is this node's shim: listed as
// this node's, it may have been freed and become another node's shim
// since.
func TestReleaseShimLeavesAnotherNodesShim(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	a, b := NewAllocator(kv, "n1", nil), NewAllocator(kv, "n2", nil)
	shim, err := b.Shim(ctx, pool26)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.releaseShim(ctx, pool26, pool26.Block(shim), shim); err != nil {
		t.Fatal(err)
	}
	all, err := Allocations(ctx, kv, pool26)
	if err != nil {
		t.Fatal(err)
	}
	if al := all[shim]; al.Node != "n2" || al.Kind != KindShim {
		t.Errorf("n2's shim %s after n1's releaseShim: %+v, want n2's shim", shim, al)
	}
}

// TestClaimAfterAListingReadsNothing: once the pool was listed, a node
// that needs a new block lists the pool's keys alone, and a block the
// keys lack is free: claiming it takes one write and no read of any
// document (the check-and-set on its absence checks it). Before, the
// node listed every document of the pool (list:1).
func TestClaimAfterAListingReadsNothing(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	a := NewAllocator(kv, "n1", nil)
	if _, err := a.store.scan(ctx, pool26); err != nil {
		t.Fatal(err)
	}
	calls := map[string]int{}
	var mu sync.Mutex
	kv.Hook = func(call string, _ []string) error {
		mu.Lock()
		defer mu.Unlock()
		calls[call]++
		return nil
	}
	if _, err := a.Allocate(ctx, pool26, netip.Addr{}, KindTask); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(calls) != "map[keys:1 txn:1]" {
		t.Errorf("calls to Consul %v, want the listing of keys that finds a free block and one transaction (the claim): no read of a document", calls)
	}
}
