package ipam

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/netspec"
)

// TestSweepLeavesRefusedSpecsAlone: a spec written to KV past `network
// create` that fails its checks (netspec.CheckStored) is served by no
// agent, and its pool is not swept either: neither this node's leaks nor
// a departed node's addresses are reclaimed there, and the refusal is
// logged once, not at every sweep. The valid network beside it is swept
// as before.
func TestSweepLeavesRefusedSpecsAlone(t *testing.T) {
	for _, c := range []struct {
		name  string
		spoil func(ctx context.Context, kv *kvtest.KV, spec netspec.Spec)
		want  string // in the logged refusal
		// refused are the networks whose refusal is logged (once each).
		refused []string
	}{
		{"gateway outside the subnet", func(ctx context.Context, kv *kvtest.KV, spec netspec.Spec) {
			spec.Gateway = netip.MustParseAddr("10.9.9.1")
			putSpec(t, kv, spec)
		}, "10.9.9.1", []string{"net"}},
		{"another network on its subnet", func(ctx context.Context, kv *kvtest.KV, spec netspec.Spec) {
			putSpec(t, kv, netspec.Spec{Name: "twin", Subnet: spec.Subnet, Gateway: spec.Gateway, Parent: "eth9", IPAM: netspec.Cluster})
		}, "twin", []string{"net", "twin"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			kv := kvtest.New()
			st, p := clusterNet(t, kv)
			good := netspec.Spec{Name: "good", Subnet: netip.MustParsePrefix("10.3.0.0/24"), Gateway: netip.MustParseAddr("10.3.0.1"),
				Parent: "eth3", IPAM: netspec.Cluster}
			if err := st.Create(ctx, good); err != nil {
				t.Fatal(err)
			}
			clock := t0
			now := func() time.Time { return clock }
			leader := newAllocator(kv, "leader", "g", now, nil)
			dead := newAllocator(kv, "dead", "g", now, nil)
			// In each pool: a leak of this node's and an address of a
			// node gone from the swarm.
			leaks := map[string]netip.Addr{}
			for _, q := range []Pool{p, PoolOf4(good)} {
				for _, a := range []*Allocator{leader, dead} {
					addr := taskAddr(t, a, q)
					leaks[q.Network+"/"+a.Node()] = addr
				}
			}
			var spec netspec.Spec
			for _, s := range mustSpecs(t, st) {
				if s.Name == p.Network {
					spec = s
				}
			}
			c.spoil(ctx, kv, spec)
			logs := &logCounter{}
			r := &Reclaimer{Alloc: leader, Pools: SpecPools{Store: st}, Held: noHeld{}, Cluster: fakeCluster{ready: []string{"leader"}},
				Grace: 10 * time.Second, NodeTimeout: 5 * time.Second, Fresh: 5 * time.Second, Log: slog.New(logs)}
			for range 5 {
				clock = clock.Add(15 * time.Second)
				if err := r.Sweep(ctx); err != nil {
					t.Fatal(err)
				}
			}
			for _, q := range []Pool{p, PoolOf4(good)} {
				all, err := Allocations(ctx, kv, q)
				if err != nil {
					t.Fatal(err)
				}
				for _, node := range []string{"leader", "dead"} {
					addr := leaks[q.Network+"/"+node]
					switch kept := all[addr].Node == node; {
					case q.Network == p.Network && !kept:
						t.Errorf("%s's %s in refused network %s reclaimed (now %+v): a refused spec's pool must be left alone", node, addr, q.Network, all[addr])
					case q.Network == good.Name && kept:
						t.Errorf("%s's %s in valid network %s not reclaimed after 5 sweeps", node, addr, q.Network)
					}
				}
			}
			const msg = "network spec refused: its pool is not swept until it is fixed"
			out := logs.buf.String()
			if n := logs.count(msg); n != len(c.refused) || !strings.Contains(out, c.want) {
				t.Errorf("refusal logged %d times in 5 sweeps (want once for each of %v, naming %s):\n%s", n, c.refused, c.want, out)
			}
			for _, name := range c.refused {
				if !strings.Contains(out, "network="+name+" ") {
					t.Errorf("no refusal logged for %s:\n%s", name, out)
				}
			}
		})
	}
}

// putSpec writes spec to KV as a hand (or a bug) would, past `network create`.
func putSpec(t *testing.T, kv *kvtest.KV, spec netspec.Spec) {
	t.Helper()
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Put(context.Background(), netspec.KVPrefix+spec.Name+"/spec", b); err != nil {
		t.Fatal(err)
	}
}

func mustSpecs(t *testing.T, st *netspec.Store) []netspec.Spec {
	t.Helper()
	specs, err := st.Specs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return specs
}

// heldSet is a node whose containers on network net hold the addresses
// given, and whose starts are all done.
type heldSet map[netip.Addr]bool

func (h heldSet) HeldAddresses(context.Context) (Local, error) {
	return Local{Held: map[string]map[netip.Addr]bool{"net": h}}, nil
}

// TestSweepReclaimsAllocationsWithoutNodeOrKind: a block document with an
// allocation naming no node, no kind or a kind this agent does not know (a
// hand edit, a bug, another version) loses no address for good, and frees
// none a container holds. One with no kind or an unknown one is its node's
// task address: reclaimed by that node's sweep once unheld for the leak
// grace, kept while a container holds it.
// One naming no node becomes the node's whose container holds it, and is
// otherwise reclaimed by the leader once seen for the node timeout and
// reported unheld by every other node that may hold it, as a departed
// node's would be; never by another node. Each reclaim is logged with the
// address and why.
func TestSweepReclaimsAllocationsWithoutNodeOrKind(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	st, p := clusterNet(t, kv)
	clock := t0
	now := func() time.Time { return clock }
	at := t0.Add(-time.Hour).Format(time.RFC3339Nano)
	const (
		orphan      = "10.2.0.17" // no node, unheld: the leader's, after the node timeout
		orphanHeld  = "10.2.0.18" // no node nor kind, held on the leader's node: adopted
		kindless    = "10.2.0.19" // the leader's, no kind, unheld: a leak
		kindHeld    = "10.2.0.20" // the leader's, no kind, held: stays
		task        = "10.2.0.21" // the leader's task, held: stays
		otherNode   = "10.2.0.22" // another live node's, no kind: its business
		unknown     = "10.2.0.23" // the leader's, a kind it does not know, unheld: a leak
		unknownHeld = "10.2.0.24" // the leader's, a kind it does not know, held: stays
		otherKind   = "10.2.0.25" // another live node's, a kind unknown here: its business
	)
	raw := fmt.Sprintf(`{"node":"leader","allocs":{
		%q:{"node":"","at":%q,"kind":"task"},
		%q:{"node":"","at":%q},
		%q:{"node":"leader","at":%q},
		%q:{"node":"leader","at":%q},
		%q:{"node":"leader","at":%q,"kind":"task"},
		%q:{"node":"n3","at":%q},
		%q:{"node":"leader","at":%q,"kind":"reserved"},
		%q:{"node":"leader","at":%q,"kind":"reserved"},
		%q:{"node":"n3","at":%q,"kind":"reserved"}}}`, orphan, at, orphanHeld, at, kindless, at, kindHeld, at, task, at, otherNode, at,
		unknown, at, unknownHeld, at, otherKind, at)
	if err := kv.Put(ctx, blockPath(p, p.Block(netip.MustParseAddr(orphan))), []byte(raw)); err != nil {
		t.Fatal(err)
	}
	logs := &logCounter{}
	held := heldSet{netip.MustParseAddr(orphanHeld): true, netip.MustParseAddr(kindHeld): true, netip.MustParseAddr(task): true,
		netip.MustParseAddr(unknownHeld): true}
	const timeout = 5 * time.Minute
	// A node that is not the leader sweeps first, for longer than the
	// node timeout: it frees no address it does not hold.
	follower := &Reclaimer{Alloc: newAllocator(kv, "n2", "g", now, nil), Pools: SpecPools{Store: st}, Held: heldSet{},
		Grace: 10 * time.Second, NodeTimeout: timeout, Log: slog.New(logs)}
	leader := &Reclaimer{Alloc: newAllocator(kv, "leader", "g", now, nil), Pools: SpecPools{Store: st}, Held: held,
		Cluster: fakeCluster{ready: []string{"leader", "n2", "n3"}}, Grace: 10 * time.Second, NodeTimeout: timeout, Fresh: timeout, Log: slog.New(logs)}
	// n3, holding addresses, sweeps alongside the leader: it may hold the
	// addresses naming no node, and must say it does not.
	n3 := &Reclaimer{Alloc: newAllocator(kv, "n3", "g", now, nil), Pools: SpecPools{Store: st},
		Held: heldSet{netip.MustParseAddr(otherNode): true, netip.MustParseAddr(otherKind): true}, Grace: 10 * time.Second, NodeTimeout: timeout}
	sweep := func(d time.Duration, rs ...*Reclaimer) map[netip.Addr]Alloc {
		t.Helper()
		return sweepFor(ctx, t, kv, p, &clock, d, rs...)
	}
	check := func(when string, all map[netip.Addr]Alloc, want map[string]string) {
		t.Helper()
		for a, node := range want {
			al, ok := all[netip.MustParseAddr(a)]
			switch {
			case node == "free" && ok:
				t.Errorf("%s: %s still allocated (%+v), want it reclaimed", when, a, al)
			case node != "free" && (!ok || al.Node != node):
				t.Errorf("%s: %s is %+v (allocated %v), want held by %q", when, a, al, ok, node)
			}
		}
	}
	all := sweep(2*timeout, follower)
	check("after the follower's sweeps", all, map[string]string{orphan: "", orphanHeld: "", kindless: "leader", kindHeld: "leader", task: "leader", otherNode: "n3",
		unknown: "leader", unknownHeld: "leader", otherKind: "n3"})
	all = sweep(2*time.Minute, leader, n3)
	check("the leader's sweeps, within the node timeout", all, map[string]string{orphan: "", orphanHeld: "leader", kindless: "free", kindHeld: "leader", task: "leader", otherNode: "n3",
		unknown: "free", unknownHeld: "leader", otherKind: "n3"})
	if al := all[netip.MustParseAddr(orphanHeld)]; al.Kind != KindTask {
		t.Errorf("%s, held by a local container, adopted as %+v, want a task address", orphanHeld, al)
	}
	all = sweep(timeout, leader, n3)
	check("the leader's sweeps, past the node timeout", all, map[string]string{orphan: "free", orphanHeld: "leader", kindless: "free", kindHeld: "leader", task: "leader", otherNode: "n3",
		unknown: "free", unknownHeld: "leader", otherKind: "n3"})
	out := logs.buf.String()
	for msg, a := range map[string]string{
		"reclaimed an address allocated to no node: no node's container claimed it":                         orphan,
		"reclaimed a leaked address allocated with no kind, as a task's: no container holds it":             kindless,
		"recorded as this node's an address allocated to no node: a local container holds it":               orphanHeld,
		"reclaimed a leaked address of a kind this agent does not know, as a task's: no container holds it": unknown,
	} {
		if logs.count(msg) != 1 || !strings.Contains(out, "addr="+a+" ") {
			t.Errorf("%q logged %d times, want once, naming %s:\n%s", msg, logs.count(msg), a, out)
		}
	}
}

// TestSweepKeepsNodelessAddressesANodeMayHold: an allocation naming no
// node is held by a container on a node whose agent is down (its swarm
// node Ready, its containers running): no agent there adopts it. The
// leader must not reclaim it however long it waits, as it keeps that
// node's own addresses: handed out again, the address would be two
// containers'. Once that node's agent is back, it adopts the address; an
// allocation naming no node that no node's container holds is reclaimed
// once every node that may hold it has reported it does not.
func TestSweepKeepsNodelessAddressesANodeMayHold(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	st, p := clusterNet(t, kv)
	clock := t0
	now := func() time.Time { return clock }
	at := t0.Add(-time.Hour).Format(time.RFC3339Nano)
	const (
		heldThere = "10.2.0.17" // no node, held by a container on node down
		unheld    = "10.2.0.18" // no node, held by no container anywhere
	)
	raw := fmt.Sprintf(`{"node":"","allocs":{%q:{"node":"","at":%q,"kind":"task"},%q:{"node":"","at":%q,"kind":"task"}}}`, heldThere, at, unheld, at)
	if err := kv.Put(ctx, blockPath(p, p.Block(netip.MustParseAddr(heldThere))), []byte(raw)); err != nil {
		t.Fatal(err)
	}
	// Every node has run an agent; the facts of down stopped an hour ago.
	for _, id := range []string{sid("leader"), sid("live"), sid("down")} {
		if err := kv.Put(ctx, netspec.NodesKVPrefix+id, []byte(fmt.Sprintf(`{"id":%q,"node":%q,"updated_at":%q}`, id, id, at))); err != nil {
			t.Fatal(err)
		}
	}
	const timeout = 5 * time.Minute
	cluster := fakeCluster{ready: []string{sid("leader"), sid("live"), sid("down")}}
	logs := &logCounter{}
	leader := &Reclaimer{Alloc: newAllocator(kv, sid("leader"), "g", now, nil), Pools: SpecPools{Store: st}, Held: heldSet{},
		Cluster: cluster, Grace: 10 * time.Second, NodeTimeout: timeout, Fresh: timeout, Log: slog.New(logs)}
	live := &Reclaimer{Alloc: newAllocator(kv, sid("live"), "g", now, nil), Pools: SpecPools{Store: st}, Held: heldSet{},
		Grace: 10 * time.Second, NodeTimeout: timeout}
	sweep := func(d time.Duration, rs ...*Reclaimer) map[netip.Addr]Alloc {
		t.Helper()
		return sweepFor(ctx, t, kv, p, &clock, d, rs...)
	}
	all := sweep(3*timeout, leader, live)
	for _, a := range []string{heldThere, unheld} {
		if al, ok := all[netip.MustParseAddr(a)]; !ok || al.Node != "" {
			t.Errorf("%s, naming no node, is %+v (allocated %v) after 3 node timeouts with node down's agent down: want it kept; a container there may hold it, and handed out again it would be two containers'",
				a, al, ok)
		}
	}
	const waiting = "kept an address allocated to no node: nodes whose containers may hold it have not reported they do not (is their agent running?)"
	if n := logs.count(waiting); n != 2 || !strings.Contains(logs.buf.String(), "nodes="+sid("down")+" ") {
		t.Errorf("%q logged %d times, want once for each address, naming down:\n%s", waiting, n, logs.buf.String())
	}
	// Node down's agent starts again: its container holds heldThere.
	down := &Reclaimer{Alloc: newAllocator(kv, sid("down"), "g2", now, nil), Pools: SpecPools{Store: st}, Held: heldSet{netip.MustParseAddr(heldThere): true},
		Grace: 10 * time.Second, NodeTimeout: timeout}
	all = sweep(time.Minute, leader, live, down)
	if al := all[netip.MustParseAddr(heldThere)]; al.Node != sid("down") || al.Kind != KindTask {
		t.Errorf("%s, held by a container on down, is %+v once its agent is back: want down's task address", heldThere, al)
	}
	if al, ok := all[netip.MustParseAddr(unheld)]; ok {
		t.Errorf("%s, held by no container, still allocated (%+v) once every node reported it does not hold it, %v after the leader first saw it", unheld, al, clock.Sub(t0))
	}
	// With nothing naming no node left, the reports are gone too.
	if pairs, err := kv.List(ctx, nodelessPrefix(p)); err != nil || len(pairs) > 0 {
		t.Errorf("reports left once nothing names no node: %v, %v", pairs, err)
	}
}

// sweepFor runs the sweeps of rs every 15 s of clock for d, then returns
// the allocations of p.
func sweepFor(ctx context.Context, t *testing.T, kv KV, p Pool, clock *time.Time, d time.Duration, rs ...*Reclaimer) map[netip.Addr]Alloc {
	t.Helper()
	for end := clock.Add(d); clock.Before(end); *clock = clock.Add(15 * time.Second) {
		for _, r := range rs {
			if err := r.Sweep(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	all, err := Allocations(ctx, kv, p)
	if err != nil {
		t.Fatal(err)
	}
	return all
}

// TestLeaderGivesUpDepartedNodesBlocks: the leader gives up the affinity
// of a departed node for its blocks where another node's addresses stay,
// and of a node named only as a block's affinity that never ran (a hand
// edit, a stray agent): no allocator of either claims those blocks again,
// so the next node to allocate there does. A live node's stays.
func TestLeaderGivesUpDepartedNodesBlocks(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	st, p := clusterNet(t, kv)
	clock := t0
	now := func() time.Time { return clock }
	live := newAllocator(kv, "live", "g", now, nil)
	dead := newAllocator(kv, "dead", "g", now, nil)
	for _, id := range []string{"live", "dead"} {
		if err := st.PublishNode(ctx, netspec.NodeFacts{ID: id, Node: id, Holder: netspec.Holder{Instance: id}}); err != nil {
			t.Fatal(err)
		}
	}
	own := taskAddr(t, live, p)
	deads := taskAddr(t, dead, p)
	lent := deads.Next()
	if _, err := live.Allocate(ctx, p, lent, KindTask); err != nil {
		t.Fatal(err)
	}
	// A block whose affinity names a node that never was.
	var never netip.Prefix
	for _, b := range p.Blocks() {
		if b != p.Block(own) && b != p.Block(deads) {
			never = b
			break
		}
	}
	stray := never.Addr().Next().Next().Next()
	raw, _ := json.Marshal(BlockDoc{Node: "never", Allocs: map[string]Alloc{stray.String(): {Node: "live", At: t0, Kind: KindTask}}})
	kv.Put(ctx, blockPath(p, never), raw)

	r := departedReclaimer(live, st, "live")
	sweepPastNodeTimeout(ctx, t, r, &clock)
	c, err := Inspect(ctx, kv, p)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Allocs[deads]; ok {
		t.Fatalf("set-up: dead's %s not reclaimed", deads)
	}
	for b, want := range map[netip.Prefix]string{p.Block(own): "live", p.Block(deads): "", never: ""} {
		if got := c.Blocks[b].Node; got != want {
			t.Errorf("block %s's affinity %q after the sweeps, want %q", b, got, want)
		}
	}
	for _, a := range []netip.Addr{own, lent, stray} {
		if c.Allocs[a].Node != "live" {
			t.Errorf("live's %s now %+v", a, c.Allocs[a])
		}
	}
}

// TestLeaderDropsDepartedNodesOrphanReports: a node's report under a
// network whose spec was deleted by hand is deleted by its own agent at
// its next sync; a departed node's stayed in KV until `underlay node
// rm`, and showed again under a network made anew with the name. The
// leader, once it judges the node departed, deletes it; a live node's
// (its own agent's to delete), and a departed node's under a network
// that has a spec key, stay.
func TestLeaderDropsDepartedNodesOrphanReports(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	st, _ := clusterNet(t, kv)
	clock := t0
	now := func() time.Time { return clock }
	for _, id := range []string{sid("live"), sid("dead")} {
		if err := st.PublishNode(ctx, netspec.NodeFacts{ID: id, Node: id, Holder: netspec.Holder{Instance: id}}); err != nil {
			t.Fatal(err)
		}
		for _, network := range []string{"net", "gone"} {
			if err := st.Report(ctx, network, netspec.NodeState{ID: id, Node: id, State: netspec.StateReady}); err != nil {
				t.Fatal(err)
			}
		}
	}
	r := departedReclaimer(newAllocator(kv, sid("live"), "g", now, nil), st, sid("live"))
	sweepPastNodeTimeout(ctx, t, r, &clock)
	ids := func(network string) []string {
		reports, err := st.Reports(ctx, network)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, rep := range reports {
			out = append(out, rep.Owner)
		}
		return out
	}
	if got, want := ids("gone"), []string{sid("live")}; !slices.Equal(got, want) {
		t.Errorf("reports left under gone (no spec key): %q, want %q: the departed node's deleted", got, want)
	}
	if got, want := ids("net"), []string{sid("dead"), sid("live")}; !slices.Equal(got, want) {
		t.Errorf("reports left under net: %q, want %q", got, want)
	}
}

// departedReclaimer is a reclaimer of alloc over st's specs whose swarm
// has the nodes ready, with a node timeout of 5 s: nodes whose facts go
// unrefreshed for that long are departed.
func departedReclaimer(alloc *Allocator, st *netspec.Store, ready ...string) *Reclaimer {
	return &Reclaimer{Alloc: alloc, Pools: SpecPools{Store: st}, Held: noHeld{}, Cluster: fakeCluster{ready: ready},
		Grace: time.Hour, NodeTimeout: 5 * time.Second, Fresh: 30 * time.Second, Log: slog.New(slog.DiscardHandler)}
}

// sweepPastNodeTimeout sweeps with r four times, clock (r's allocator's)
// starting a minute past the real one, which PublishNode stamps facts
// with, and 4 s on each time: past departedReclaimer's node timeout.
func sweepPastNodeTimeout(ctx context.Context, t *testing.T, r *Reclaimer, clock *time.Time) {
	t.Helper()
	*clock = time.Now().Add(time.Minute)
	for range 4 {
		if err := r.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
		*clock = clock.Add(4 * time.Second)
	}
}

// TestDepartedReclaimIgnoresFactsNoAgentWrites: facts under a key naming
// no swarm node ID (underlay/nodes/X, underlay/nodes/a b: no agent writes
// one) judge no node's liveness. Before, one naming a dead node as its
// node kept that node's addresses for ever (holders named like any
// facts' node are never judged), and fresh ones made their key a node
// that must report on every address naming no node, which it never
// does. A live node stays live whatever such a key says of it.
func TestDepartedReclaimIgnoresFactsNoAgentWrites(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	st, p := clusterNet(t, kv)
	clock := t0
	now := func() time.Time { return clock }
	leaderID, liveID, deadID := sid("leader"), sid("live"), sid("dead")
	held := map[string]netip.Addr{}
	for _, id := range []string{leaderID, liveID, deadID} {
		held[id] = taskAddr(t, newAllocator(kv, id, "g", now, nil), p)
	}
	for _, id := range []string{leaderID, liveID} {
		if err := st.PublishNode(ctx, netspec.NodeFacts{ID: id, Node: id, Holder: netspec.Holder{Instance: id}}); err != nil {
			t.Fatal(err)
		}
	}
	// The dead node's facts are gone; keys no agent writes name it, and
	// the live one, stale or fresh.
	stamp := func() string { return clock.Format(time.RFC3339Nano) }
	bogus := func() {
		for key, doc := range map[string]string{
			"X":                         fmt.Sprintf(`{"id":"X","node":%q,"updated_at":%q}`, deadID, stamp()),
			"a b":                       fmt.Sprintf(`{"id":%q,"node":"n1","updated_at":%q}`, deadID, stamp()),
			"LIVE00000000000000000000A": fmt.Sprintf(`{"id":%q,"node":%q,"updated_at":"2000-01-01T00:00:00Z"}`, liveID, liveID),
		} {
			kv.Put(ctx, netspec.NodesKVPrefix+key, []byte(doc))
		}
	}
	r := departedReclaimer(newAllocator(kv, leaderID, "g", now, nil), st, leaderID, liveID)
	clock = time.Now().Add(time.Minute)
	for range 4 {
		bogus() // refreshed, as an agent would
		if err := r.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
		clock = clock.Add(4 * time.Second)
	}
	wantHeld(ctx, t, kv, p, held, deadID)
}

// TestDepartedReclaimIgnoresUnkeyedFactsNamingNoID: facts naming no ID
// are an older agent's, written under the node name they name; under any
// other key (underlay/nodes/a b naming node DEAD-ID) no agent wrote them.
// Listed with no ID, they still made the name they give a node's, so the
// dead node whose ID they give as a name kept its addresses for ever.
// An older agent's facts (underlay/nodes/n1 naming n1) still keep the
// addresses named n1 (older agents' allocations name their node by name).
func TestDepartedReclaimIgnoresUnkeyedFactsNamingNoID(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	st, p := clusterNet(t, kv)
	clock := t0
	now := func() time.Time { return clock }
	leaderID, deadID := sid("leader"), sid("dead")
	held := map[string]netip.Addr{}
	for _, id := range []string{leaderID, deadID, "n1"} {
		held[id] = taskAddr(t, newAllocator(kv, id, "g", now, nil), p)
	}
	if err := st.PublishNode(ctx, netspec.NodeFacts{ID: leaderID, Node: "leader", Holder: netspec.Holder{Instance: leaderID}}); err != nil {
		t.Fatal(err)
	}
	kv.Put(ctx, netspec.NodesKVPrefix+"a b", []byte(fmt.Sprintf(`{"node":%q}`, deadID)))
	kv.Put(ctx, netspec.NodesKVPrefix+"n1", []byte(`{"node":"n1"}`))
	r := departedReclaimer(newAllocator(kv, leaderID, "g", now, nil), st, leaderID)
	sweepPastNodeTimeout(ctx, t, r, &clock)
	wantHeld(ctx, t, kv, p, held, deadID)
}

// wantHeld fails t unless each address of held, by the identity that
// took it, is still that identity's after a departed-node reclaim, but
// those of reclaimed, which are free (held by no node).
func wantHeld(ctx context.Context, t *testing.T, kv *kvtest.KV, p Pool, held map[string]netip.Addr, reclaimed ...string) {
	t.Helper()
	all, err := Allocations(ctx, kv, p)
	if err != nil {
		t.Fatal(err)
	}
	for id, addr := range held {
		want := id
		if slices.Contains(reclaimed, id) {
			want = ""
		}
		if all[addr].Node != want {
			t.Errorf("%s's address %s is now %+v, want held by %q", id, addr, all[addr], want)
		}
	}
}

// termCluster is a swarm whose leadership and ready nodes a test changes
// between sweeps.
type termCluster struct {
	leader bool
	ready  []string
}

func (c *termCluster) IsLeader(context.Context) (bool, error)       { return c.leader, nil }
func (c *termCluster) ReadyNodes(context.Context) ([]string, error) { return c.ready, nil }

// TestLeaderAgainWatchesDepartingNodesAfresh: a node is departed once the
// leader has seen it neither Ready nor fresh for the node timeout. A
// leader that saw node n so once, then lost the leadership while n was
// Ready again (its agent down, its containers running), kept when it
// first saw n missing: elected again much later, a moment of n not
// Ready (as the swarm's nodes are just after an election) made n
// departed at once, its addresses freed under its running containers.
// What a leader did not watch it cannot count: it watches from scratch.
func TestLeaderAgainWatchesDepartingNodesAfresh(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	st, p := clusterNet(t, kv)
	clock := t0
	now := func() time.Time { return clock }
	leaderID, nID := sid("leader"), sid("n")
	held := map[string]netip.Addr{nID: taskAddr(t, newAllocator(kv, nID, "g", now, nil), p)}
	// n's agent stopped an hour ago; its containers run on.
	stale := t0.Add(-time.Hour).Format(time.RFC3339Nano)
	if err := kv.Put(ctx, netspec.NodesKVPrefix+nID, []byte(fmt.Sprintf(`{"id":%q,"node":"n","updated_at":%q}`, nID, stale))); err != nil {
		t.Fatal(err)
	}
	const timeout = 5 * time.Minute
	cluster := &termCluster{leader: true, ready: []string{leaderID}}
	r := &Reclaimer{Alloc: newAllocator(kv, leaderID, "g", now, nil), Pools: SpecPools{Store: st}, Held: noHeld{}, Cluster: cluster,
		Grace: time.Hour, NodeTimeout: timeout, Fresh: timeout, Log: slog.New(slog.DiscardHandler)}
	if err := r.Sweep(ctx); err != nil { // n not Ready: missing from now
		t.Fatal(err)
	}
	// Another manager leads for three node timeouts; n is Ready.
	cluster.leader, cluster.ready = false, []string{leaderID, nID}
	sweepFor(ctx, t, kv, p, &clock, 3*timeout, r)
	// Elected again: n is not Ready for a moment.
	cluster.leader, cluster.ready = true, []string{leaderID}
	if err := r.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	wantHeld(ctx, t, kv, p, held)
}

// flakyCluster is a swarm whose leadership check fails at times: the
// leader is this node throughout, but IsLeader errs while fail is set.
type flakyCluster struct {
	termCluster
	fail bool
}

var errFlaky = errors.New("docker info: context deadline exceeded")

func (c *flakyCluster) IsLeader(ctx context.Context) (bool, error) {
	if c.fail {
		return false, errFlaky
	}
	return c.termCluster.IsLeader(ctx)
}

// flakySweepFor sweeps with r every 15 s of clock for d, the leadership
// check failing at every other sweep.
func flakySweepFor(ctx context.Context, t *testing.T, r *Reclaimer, c *flakyCluster, clock *time.Time, d time.Duration) {
	t.Helper()
	for end := clock.Add(d); clock.Before(end); *clock = clock.Add(15 * time.Second) {
		c.fail = !c.fail
		if err := r.Sweep(ctx); err != nil && !errors.Is(err, errFlaky) {
			t.Fatal(err)
		}
	}
	c.fail = false
}

// TestFlakyLeaderCheckStillReclaimsDepartedNodes: the leader's check that
// it leads (docker info) fails now and then, while it leads throughout.
// Before, each failure forgot what the leader had watched of departing
// nodes, as if it had lost the leadership: failing at least once a node
// timeout, it never found a node departed, and a node gone for good kept
// its addresses for ever. A failed check is a sweep that did not look:
// the watch is kept, and what the leader did not see does not count.
func TestFlakyLeaderCheckStillReclaimsDepartedNodes(t *testing.T) {
	ctx := context.Background()
	f := newFlakyLeader(t, "gone")
	// Half the sweeps look: the node is seen missing for half the time,
	// so past twice the timeout (and a little) it is departed.
	flakySweepFor(ctx, t, f.r, f.cluster, f.clock, 2*flakyTimeout+2*time.Minute)
	wantHeld(ctx, t, f.kv, f.p, f.held, f.nodeID)
}

// flakyTimeout is the node timeout of newFlakyLeader's reclaimer.
const flakyTimeout = 5 * time.Minute

// flakyLeader is a leader's reclaimer on a cluster network, the only Ready
// node of its cluster, and another node that holds one address and whose
// facts were last stamped an hour before t0.
type flakyLeader struct {
	kv       *kvtest.KV
	p        Pool
	clock    *time.Time
	r        *Reclaimer
	cluster  *flakyCluster
	leaderID string
	nodeID   string
	held     map[string]netip.Addr
}

func newFlakyLeader(t *testing.T, node string) flakyLeader {
	t.Helper()
	kv := kvtest.New()
	st, p := clusterNet(t, kv)
	clock := t0
	now := func() time.Time { return clock }
	f := flakyLeader{kv: kv, p: p, clock: &clock, leaderID: sid("leader"), nodeID: sid(node)}
	f.held = map[string]netip.Addr{f.nodeID: taskAddr(t, newAllocator(kv, f.nodeID, "g", now, nil), p)}
	stale := t0.Add(-time.Hour).Format(time.RFC3339Nano)
	if err := kv.Put(context.Background(), netspec.NodesKVPrefix+f.nodeID, []byte(fmt.Sprintf(`{"id":%q,"node":%q,"updated_at":%q}`, f.nodeID, node, stale))); err != nil {
		t.Fatal(err)
	}
	f.cluster = &flakyCluster{termCluster: termCluster{leader: true, ready: []string{f.leaderID}}}
	f.r = &Reclaimer{Alloc: newAllocator(kv, f.leaderID, "g", now, nil), Pools: SpecPools{Store: st}, Held: noHeld{}, Cluster: f.cluster,
		Grace: time.Hour, NodeTimeout: flakyTimeout, Fresh: flakyTimeout, Log: slog.New(slog.DiscardHandler)}
	return f
}

// TestLeaderCheckFailingLongCountsNothingUnseen: a node seen missing,
// then Ready all along while the leader's check failed for three node
// timeouts, is not departed at the next look that finds it not Ready for
// a moment: the time the leader did not look does not count as missing.
func TestLeaderCheckFailingLongCountsNothingUnseen(t *testing.T) {
	ctx := context.Background()
	f := newFlakyLeader(t, "n")
	if err := f.r.Sweep(ctx); err != nil { // n not Ready: missing from now
		t.Fatal(err)
	}
	f.cluster.fail, f.cluster.ready = true, []string{f.leaderID, f.nodeID}
	for end := f.clock.Add(3 * flakyTimeout); f.clock.Before(end); *f.clock = f.clock.Add(15 * time.Second) {
		if err := f.r.Sweep(ctx); !errors.Is(err, errFlaky) {
			t.Fatalf("sweep with the leadership check failing: %v, want %v", err, errFlaky)
		}
	}
	f.cluster.fail, f.cluster.ready = false, []string{f.leaderID}
	if err := f.r.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	wantHeld(ctx, t, f.kv, f.p, f.held)
}
