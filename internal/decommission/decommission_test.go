package decommission

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"path"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/doctor"
	"github.com/underlay/underlay/internal/inventory"
	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/kvstore"
	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/taskmetrics"
	"github.com/underlay/underlay/internal/unregistered"
)

type swarmNodes map[string]string

// ListSwarmNodes lists s's nodes, by ID, with no host names.
func (s swarmNodes) ListSwarmNodes(context.Context) ([]netspec.SwarmNode, error) {
	var out []netspec.SwarmNode
	for _, id := range slices.Sorted(maps.Keys(s)) {
		out = append(out, netspec.SwarmNode{ID: id, State: s[id]})
	}
	return out, nil
}

// swarmList is a swarm listing its nodes with their host names.
type swarmList []netspec.SwarmNode

func (s swarmList) ListSwarmNodes(context.Context) ([]netspec.SwarmNode, error) { return s, nil }

var (
	lan = netspec.Spec{Name: "lan", Subnet: netip.MustParsePrefix("192.168.10.0/24"), Gateway: netip.MustParseAddr("192.168.10.1"),
		Parent: "eth0", IPAM: netspec.PerNode, PerNodeSize: 64}
	pool = netspec.Spec{Name: "pool", Subnet: netip.MustParsePrefix("10.20.0.0/16"), Gateway: netip.MustParseAddr("10.20.0.1"),
		Parent: "eth1", IPAM: netspec.Cluster}
)

// cluster is two nodes' records on two networks: "live000000000000000000000" (in the swarm,
// its agent heartbeating) and "gone000000000000000000000" (named "old", removed from the swarm,
// its facts an hour old).
type cluster struct {
	kv    *kvtest.KV
	st    *netspec.Store
	addrs map[string][]netip.Addr // cluster-IPAM addresses by node
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	ctx := context.Background()
	kv := kvtest.New()
	c := &cluster{kv: kv, st: netspec.NewStore(kv), addrs: map[string][]netip.Addr{}}
	for _, s := range []netspec.Spec{lan, pool} {
		if err := c.st.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	p, _ := ipam.PoolOf(pool, false)
	for _, n := range []struct {
		id, name string
		age      time.Duration
	}{{"gone000000000000000000000", "old", time.Hour}, {"live000000000000000000000", "new", 0}} {
		c.facts(t, n.id, n.name, time.Now().Add(-n.age))
		if _, _, err := c.st.Lease(ctx, lan, n.id); err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{lan.Name, pool.Name} {
			if err := c.st.Report(ctx, s, netspec.NodeState{ID: n.id, Node: n.name, State: netspec.StateReady}); err != nil {
				t.Fatal(err)
			}
		}
		a := ipam.NewAllocator(kv, n.id, nil)
		for _, kind := range []string{ipam.KindTask, ipam.KindShim} {
			addr, err := a.Allocate(ctx, p, netip.Addr{}, kind)
			if err != nil {
				t.Fatal(err)
			}
			c.addrs[n.id] = append(c.addrs[n.id], addr)
		}
		for _, k := range []string{inventory.KVPrefix + n.id, doctor.KVPrefix + n.name, taskmetrics.KVPrefix + n.name,
			ipam.KVPrefix + pool.Name + "/v4/kept/" + n.id, unregistered.KVPrefix + n.id} {
			kv.Put(ctx, k, []byte(`{}`))
		}
		for _, prefix := range []string{doctor.IDPrefix, taskmetrics.IDPrefix} {
			kv.Put(ctx, prefix+n.id, fmt.Appendf(nil, `{"node":%q,"node_id":%q}`, n.name, n.id))
		}
	}
	return c
}

// facts publishes an identity's facts stamped at.
func (c *cluster) facts(t *testing.T, id, name string, at time.Time) {
	t.Helper()
	f := netspec.NodeFacts{ID: id, Node: name, Interfaces: []string{"eth0"}, Holder: netspec.Holder{Instance: "agent-" + id, Host: name}}
	if err := c.st.Claim(context.Background(), f, netspec.ClaimOptions{Stale: time.Minute, Poll: time.Millisecond, Now: func() time.Time { return at }}); err != nil {
		t.Fatal(err)
	}
}

func (c *cluster) has(key string) bool {
	_, ok, _ := c.kv.Get(context.Background(), key)
	return ok
}

// TestRemove: a node the swarm no longer lists, whose agent stopped an
// hour ago, is removed by its name: its lease, its reports, its addresses,
// the addresses it kept, its inventory, doctor report, task metrics (under
// its swarm node ID, and those an older agent kept under its name) and
// facts; the live node's records are untouched. Every key deleted or
// rewritten is said: its block, left empty, deleted; live's block, where
// it had borrowed an address, rewritten.
func TestRemove(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	p, _ := ipam.PoolOf(pool, false)
	borrowed := c.addrs["live000000000000000000000"][1].Next()
	if _, err := ipam.NewAllocator(c.kv, "gone000000000000000000000", nil).Allocate(ctx, p, borrowed, ipam.KindTask); err != nil {
		t.Fatal(err)
	}
	if p.Block(borrowed) != p.Block(c.addrs["live000000000000000000000"][0]) || p.Block(borrowed) == p.Block(c.addrs["gone000000000000000000000"][0]) {
		t.Fatalf("set-up: %s is not in live's block apart from gone's", borrowed)
	}
	got, err := Remove(ctx, c.kv, swarmNodes{"live000000000000000000000": "ready"}, "old", Options{Stale: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	wantAddrs := slices.SortedFunc(slices.Values(append(slices.Clone(c.addrs["gone000000000000000000000"]), borrowed)), netip.Addr.Compare)
	if got.ID != "gone000000000000000000000" || got.Node != "old" || len(got.Ranges[lan.Name]) != 1 || fmt.Sprint(got.Reports) != "[lan pool]" ||
		!slices.Equal(slices.SortedFunc(slices.Values(got.Addresses[p.ID()]), netip.Addr.Compare), wantAddrs) {
		t.Errorf("removed %+v; want gone's range of lan, its reports on lan and pool, and its addresses %v", got, wantAddrs)
	}
	leases, _ := c.st.Leases(ctx, lan.Name)
	if len(leases) != 1 || slices.Collect(maps.Values(leases))[0] != "live000000000000000000000" {
		t.Errorf("leases of lan after: %v, want live's only", leases)
	}
	for _, s := range []string{lan.Name, pool.Name} {
		if states, _ := c.st.NodeStates(ctx, s); len(states) != 1 || states[0].ID != "live000000000000000000000" {
			t.Errorf("reports on %s after: %+v, want live's only", s, states)
		}
	}
	allocs, _ := ipam.Allocations(ctx, c.kv, p)
	for a, al := range allocs {
		if al.Node != "live000000000000000000000" {
			t.Errorf("%s still recorded for %s", a, al.Node)
		}
	}
	if len(allocs) != len(c.addrs["live000000000000000000000"]) {
		t.Errorf("%d allocations after, want live's %d", len(allocs), len(c.addrs["live000000000000000000000"]))
	}
	// Every key deleted or rewritten is said, for node rm to print.
	blockKey := func(a netip.Addr) string {
		b := p.Block(a)
		return ipam.KVPrefix + pool.Name + "/v4/blocks/" + b.Addr().String() + "_" + fmt.Sprint(b.Bits())
	}
	if want := []string{blockKey(c.addrs["gone000000000000000000000"][0]), ipam.KVPrefix + pool.Name + "/v4/kept/gone000000000000000000000", inventory.KVPrefix + "gone000000000000000000000",
		doctor.IDPrefix + "gone000000000000000000000", taskmetrics.IDPrefix + "gone000000000000000000000", unregistered.KVPrefix + "gone000000000000000000000", doctor.KVPrefix + "old", taskmetrics.KVPrefix + "old", netspec.NodesKVPrefix + "gone000000000000000000000"}; !slices.Equal(got.Keys, want) {
		t.Errorf("deleted keys %q, want %q", got.Keys, want)
	}
	if want := []string{blockKey(borrowed)}; !slices.Equal(got.Changed, want) {
		t.Errorf("changed keys %q, want %q: live's block, rewritten without gone's %s", got.Changed, want, borrowed)
	}
	for _, n := range []struct{ id, name string }{{"gone000000000000000000000", "old"}, {"live000000000000000000000", "new"}} {
		for _, k := range []string{netspec.NodesKVPrefix + n.id, inventory.KVPrefix + n.id, doctor.KVPrefix + n.name, taskmetrics.KVPrefix + n.name,
			doctor.IDPrefix + n.id, taskmetrics.IDPrefix + n.id, ipam.KVPrefix + pool.Name + "/v4/kept/" + n.id, unregistered.KVPrefix + n.id} {
			if c.has(k) != (n.id == "live000000000000000000000") {
				t.Errorf("%s present: %v, want it only for the live node", k, c.has(k))
			}
		}
	}
	// Facts that cannot be read are not listed, but go with the rest.
	c.kv.Put(ctx, netspec.NodesKVPrefix+"garbled", []byte("{"))
	c.kv.Put(ctx, inventory.KVPrefix+"garbled", []byte("[]"))
	if got, err := Remove(ctx, c.kv, swarmNodes{"live000000000000000000000": "ready"}, "garbled", Options{Stale: time.Minute}); err != nil ||
		fmt.Sprint(got.Keys) != fmt.Sprintf("[%sgarbled %sgarbled]", inventory.KVPrefix, netspec.NodesKVPrefix) {
		t.Errorf("removal of an identity with unreadable facts: %+v, %v; want its inventory and facts deleted", got, err)
	}
	// Nothing left of it: a second run finds nothing to remove.
	again, err := Remove(ctx, c.kv, swarmNodes{"live000000000000000000000": "ready"}, "gone000000000000000000000", Options{Stale: time.Minute})
	if err != nil || len(again.Ranges)+len(again.Reports)+len(again.Addresses)+len(again.Keys)+len(again.Changed) != 0 {
		t.Errorf("second removal: %+v, %v; want nothing removed", again, err)
	}
}

// TestRemoveRefuses: a node the swarm still lists, a name two identities
// share, and a node whose agent refreshes its facts while they are
// watched are not removed, and nothing of theirs is touched.
func TestRemoveRefuses(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	c.facts(t, "twin000000000000000000000", "new", time.Now().Add(-time.Hour))
	for _, tc := range []struct {
		arg   string
		swarm swarmNodes
		want  string
	}{
		{"gone000000000000000000000", swarmNodes{"gone000000000000000000000": "down"}, "node old (swarm node gone000000000000000000000) is still a swarm node (down): drain it, stop it and run `docker node rm gone000000000000000000000` first"},
		{"new", swarmNodes{}, "2 nodes are named new (swarm node IDs live000000000000000000000, twin000000000000000000000): name one by its ID"},
		{"a/b", swarmNodes{}, `"a/b" is neither a node's name nor a swarm node ID`},
	} {
		_, err := Remove(ctx, c.kv, tc.swarm, tc.arg, Options{Stale: time.Minute})
		if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("remove %s: %v; want refused with %q", tc.arg, err, tc.want)
		}
	}
	if !c.has(netspec.NodesKVPrefix+"gone000000000000000000000") || !c.has(inventory.KVPrefix+"gone000000000000000000000") {
		t.Error("a refused removal removed something")
	}

	// The live node, out of the swarm but its agent still heartbeating.
	stop := refreshing(c.kv, netspec.NodesKVPrefix+"live000000000000000000000", func() {
		c.st.PublishNode(ctx, netspec.NodeFacts{ID: "live000000000000000000000", Node: "new", Holder: netspec.Holder{Instance: "agent-live000000000000000000000"}})
	})
	_, err := Remove(ctx, c.kv, swarmNodes{}, "live000000000000000000000", Options{Stale: 5 * time.Second, Poll: 10 * time.Millisecond})
	stop()
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "the agent of node new (swarm node live000000000000000000000) is running") {
		t.Errorf("remove a node whose agent heartbeats: %v; want refused as running", err)
	}
	if leases, _ := c.st.Leases(ctx, lan.Name); len(leases) != 2 {
		t.Errorf("leases after the refusal: %v, want both", leases)
	}
}

// TestRemoveOlderAgentsNodeTheSwarmLists: an older agent keyed its facts
// and its lease by its node name (Docker's host name), naming no swarm
// node ID. node rm of that name asked the swarm whether the node ID "n1"
// was a member, which it never is: a node the swarm still listed, its
// agent merely stopped (facts an hour old), was removed, its range and
// addresses given to other nodes while its containers may still run. The
// swarm's nodes are also matched by host name: one of host name n1
// refuses the removal, naming its ID and how to remove it from the swarm;
// two name both IDs. Once the swarm lists none, the name's records go. A
// node named by its swarm node ID is judged by that ID alone, as before:
// a swarm node of its name (a host that joined again) does not hold it.
func TestRemoveOlderAgentsNodeTheSwarmLists(t *testing.T) {
	ctx := context.Background()
	live := netspec.SwarmNode{ID: "live000000000000000000000", Hostname: "new", State: "ready"}
	olda := netspec.SwarmNode{ID: "olda000000000000000000000", Hostname: "n1", State: "ready"}
	oldb := netspec.SwarmNode{ID: "oldb000000000000000000000", Hostname: "n1", State: "down"}
	downa := olda
	downa.State = "down"
	for _, tc := range []struct {
		name  string
		swarm swarmList
		want  []string
	}{
		{"ready", swarmList{live, olda}, []string{"node n1 is still a swarm node by its host name: swarm node olda000000000000000000000, host name n1 (ready): drain it, stop it and run `docker node rm olda000000000000000000000` first"}},
		{"down", swarmList{live, downa}, []string{"swarm node olda000000000000000000000, host name n1 (down)", "`docker node rm olda000000000000000000000`"}},
		{"two of the host name", swarmList{live, olda, oldb}, []string{"the swarm lists 2 nodes of host name n1 (swarm nodes olda000000000000000000000 (ready), oldb000000000000000000000 (down))", "`docker node rm`"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t)
			c.kv.Put(ctx, netspec.NodesKVPrefix+"n1", fmt.Appendf(nil, `{"node":"n1","interfaces":["eth0"],"updated_at":%q}`, time.Now().Add(-time.Hour).UTC().Format(time.RFC3339Nano)))
			if _, _, err := c.st.Lease(ctx, lan, "n1"); err != nil {
				t.Fatal(err)
			}
			got, err := Remove(ctx, c.kv, tc.swarm, "n1", Options{Stale: time.Minute})
			if !errors.Is(err, ErrRefused) {
				t.Fatalf("remove n1, an older agent's node the swarm lists by its host name: %v (removed %+v); want refused", err, got)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("remove n1: %v; want it to say %q", err, w)
				}
			}
			if leases, _ := c.st.Leases(ctx, lan.Name); len(leases) != 3 || !c.has(netspec.NodesKVPrefix+"n1") {
				t.Errorf("after the refusal: leases of lan %v, want all 3; n1's facts kept: %v", leases, c.has(netspec.NodesKVPrefix+"n1"))
			}
		})
	}

	// docker node rm done: the name's records go.
	c := newCluster(t)
	c.kv.Put(ctx, netspec.NodesKVPrefix+"n1", fmt.Appendf(nil, `{"node":"n1","interfaces":["eth0"],"updated_at":%q}`, time.Now().Add(-time.Hour).UTC().Format(time.RFC3339Nano)))
	if _, _, err := c.st.Lease(ctx, lan, "n1"); err != nil {
		t.Fatal(err)
	}
	got, err := Remove(ctx, c.kv, swarmList{live}, "n1", Options{Stale: time.Minute})
	if err != nil || len(got.Ranges[lan.Name]) != 1 || c.has(netspec.NodesKVPrefix+"n1") {
		t.Errorf("remove n1, the swarm listing no node of the host name: %+v, %v (facts kept: %v); want its range and facts removed", got, err, c.has(netspec.NodesKVPrefix+"n1"))
	}
	// A node named by its swarm node ID: a swarm node of its name (old,
	// joined again under a new ID) is another node.
	rejoined := netspec.SwarmNode{ID: "back000000000000000000000", Hostname: "old", State: "ready"}
	if got, err := Remove(ctx, c.kv, swarmList{live, rejoined}, "gone000000000000000000000", Options{Stale: time.Minute}); err != nil || len(got.Ranges[lan.Name]) != 1 {
		t.Errorf("remove gone000000000000000000000 (named old), a swarm node of host name old listed: %+v, %v; want removed by its ID", got, err)
	}
}

// TestKeyedByName: an identity is a name an older agent keyed its records
// by when it is not made like a swarm node ID, or when facts naming no ID
// are under its key (a host name made like one); a swarm node ID is not.
func TestKeyedByName(t *testing.T) {
	idLike := "host0000000000000000000aa"
	all := []netspec.NodeFacts{
		{ID: "gone000000000000000000000", Node: "old", Key: netspec.NodesKVPrefix + "gone000000000000000000000"},
		{Node: "n1", Key: netspec.NodesKVPrefix + "n1"},
		{Node: idLike, Key: netspec.NodesKVPrefix + idLike},
	}
	for _, tc := range []struct {
		id   string
		want bool
	}{
		{"n1", true},
		{"n2", true}, // no facts: a name all the same
		{idLike, true},
		{"gone000000000000000000000", false},
		{"live000000000000000000000", false}, // an ID without facts
	} {
		if got := keyedByName(all, tc.id); got != tc.want {
			t.Errorf("keyedByName(%s) = %v, want %v", tc.id, got, tc.want)
		}
	}
}

// TestResolveRefusesEmpty: an empty (or all-space) argument names no node.
// Taken as one, it matched facts with no identity (an older agent's) or
// no name, and node rm went on to remove what is recorded under an empty
// identity: every address allocated to no node among them.
func TestResolveRefusesEmpty(t *testing.T) {
	facts := []netspec.NodeFacts{{Node: "legacy"}, {ID: "noname"}, {ID: "id1", Node: "n1"}}
	for _, arg := range []string{"", " ", "\t\n"} {
		f, found, err := Resolve(facts, arg)
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q", arg)) || !strings.Contains(err.Error(), "empty") {
			t.Errorf("Resolve(%q) = %+v, %v, %v; want an error naming the empty argument", arg, f, found, err)
		}
	}
}

// TestRemoveRefusesEmpty: node rm "" removes nothing, where it took the
// facts of an older agent (no identity) for the node's, and freed every
// address allocated to no node.
func TestRemoveRefusesEmpty(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	c.kv.Put(ctx, netspec.NodesKVPrefix+"legacy", []byte(`{"node":"legacy"}`))
	p, _ := ipam.PoolOf(pool, false)
	nodeless := netip.MustParseAddr("10.20.200.7")
	c.kv.Put(ctx, ipam.KVPrefix+pool.Name+"/v4/blocks/10.20.200.0_28", []byte(`{"node":"","allocs":{"10.20.200.7":{"node":"","kind":"task"}}}`))
	got, err := Remove(ctx, c.kv, swarmNodes{}, "", Options{Stale: time.Minute})
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), `""`) {
		t.Errorf("remove \"\": %v (removed %+v); want refused, naming the empty argument", err, got)
	}
	all, err := ipam.Allocations(ctx, c.kv, p)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := all[nodeless]; !ok || !c.has(netspec.NodesKVPrefix+"legacy") {
		t.Errorf("remove \"\" removed something: %s allocated %v, legacy facts kept %v", nodeless, ok, c.has(netspec.NodesKVPrefix+"legacy"))
	}
}

// TestRemoveWatchesRecentFacts: facts stamped just now, or a year ahead of
// this clock (an agent whose clock was wrong), say nothing by their stamp:
// they are watched for Stale, and removed once they did not change.
func TestRemoveWatchesRecentFacts(t *testing.T) {
	ctx := context.Background()
	for _, at := range []time.Duration{0, 365 * 24 * time.Hour} {
		c := newCluster(t)
		c.facts(t, "gone000000000000000000000", "old", time.Now().Add(at))
		start := time.Now()
		got, err := Remove(ctx, c.kv, swarmNodes{"live000000000000000000000": "ready"}, "gone000000000000000000000", Options{Stale: 300 * time.Millisecond, Poll: 10 * time.Millisecond})
		if err != nil {
			t.Fatalf("facts stamped %v from now: %v", at, err)
		}
		if waited := time.Since(start); waited < 300*time.Millisecond {
			t.Errorf("facts stamped %v from now: removed after %v, before they were watched for 300ms", at, waited)
		}
		if c.has(netspec.NodesKVPrefix+"gone000000000000000000000") || len(got.Ranges[lan.Name]) != 1 {
			t.Errorf("facts stamped %v from now: removed %+v, facts left: %v", at, got, c.has(netspec.NodesKVPrefix+"gone000000000000000000000"))
		}
	}
}

// TestRemoveFromUnreadableSpecs: a network whose spec cannot be read (the
// agents refuse it, each reporting it invalid) still holds the removed
// node's report, which `network rm` of it waits for, and may hold its
// range: both go, by the network's name; the live node's stay.
func TestRemoveFromUnreadableSpecs(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	c.kv.Put(ctx, netspec.KVPrefix+"junk/spec", []byte(`{"name":`))
	for i, id := range []string{"gone000000000000000000000", "live000000000000000000000"} {
		c.kv.Put(ctx, netspec.KVPrefix+"junk/ranges/10.30.0."+fmt.Sprint(64*i)+"_26", []byte(id))
		if err := c.st.Report(ctx, "junk", netspec.NodeState{ID: id, Node: id, State: netspec.StateInvalid}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := Remove(ctx, c.kv, swarmNodes{"live000000000000000000000": "ready"}, "old", Options{Stale: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(got.Reports, "junk") || fmt.Sprint(got.Ranges["junk"]) != "[10.30.0.0/26]" {
		t.Errorf("removed %+v; want gone's report on junk and its range 10.30.0.0/26 of junk", got)
	}
	if states, _ := c.st.NodeStates(ctx, "junk"); len(states) != 1 || states[0].ID != "live000000000000000000000" {
		t.Errorf("reports on junk after: %+v, want live's only", states)
	}
	if leases, _ := c.st.Leases(ctx, "junk"); fmt.Sprint(leases) != "map[10.30.0.64/26:live000000000000000000000]" {
		t.Errorf("leases of junk after: %v, want live's only", leases)
	}
}

// misfile stores facts naming identity id, stamped an hour ago, under the
// key of identity key (written by hand, or copied).
func (c *cluster) misfile(t *testing.T, key, id, name string) {
	t.Helper()
	b, err := json.Marshal(netspec.NodeFacts{ID: id, Node: name, Interfaces: []string{"eth0"},
		Holder: netspec.Holder{Instance: "agent-" + key}, UpdatedAt: time.Now().Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	c.kv.Put(context.Background(), netspec.NodesKVPrefix+key, b)
}

// TestRemoveTakesFactsByTheirKey: facts whose document names another
// identity than their key are the key's identity's, as for the agent that
// claims and refreshes that key: removed by the node's name, the key's
// identity's records and facts go, with a warning naming the key and both
// identities; and the swarm is asked about the key's identity, so that a
// node it lists is refused, whatever its facts' document says.
func TestRemoveTakesFactsByTheirKey(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	c.misfile(t, "stray00000000000000000000", "other00000000000000000000", "odd")
	if _, _, err := c.st.Lease(ctx, lan, "stray00000000000000000000"); err != nil {
		t.Fatal(err)
	}
	c.kv.Put(ctx, inventory.KVPrefix+"stray00000000000000000000", []byte(`[]`))

	got, err := Remove(ctx, c.kv, swarmNodes{"live000000000000000000000": "ready"}, "odd", Options{Stale: time.Minute})
	if err != nil {
		t.Fatalf("remove odd: %v", err)
	}
	if got.ID != "stray00000000000000000000" || len(got.Ranges[lan.Name]) != 1 ||
		!slices.Equal(got.Keys, []string{inventory.KVPrefix + "stray00000000000000000000", netspec.NodesKVPrefix + "stray00000000000000000000"}) {
		t.Errorf("removed %+v; want stray's range of lan, its inventory and its facts", got)
	}
	for _, k := range []string{netspec.NodesKVPrefix + "stray00000000000000000000", inventory.KVPrefix + "stray00000000000000000000"} {
		if c.has(k) {
			t.Errorf("%s left behind", k)
		}
	}
	if leases, _ := c.st.Leases(ctx, lan.Name); len(leases) != 2 || slices.Contains(slices.Collect(maps.Values(leases)), "stray00000000000000000000") {
		t.Errorf("leases of lan after: %v, want gone's and live's", leases)
	}
	want := netspec.NodesKVPrefix + "stray00000000000000000000 holds facts naming swarm node other00000000000000000000: taken as the facts of swarm node stray00000000000000000000"
	if len(got.Warnings) != 1 || !strings.Contains(got.Warnings[0], want) {
		t.Errorf("warnings %q, want one with %q", got.Warnings, want)
	}

	// Facts of a swarm node naming one the swarm forgot.
	c.misfile(t, "member0000000000000000000", "forgotten0000000000000000", "twin000000000000000000000")
	_, err = Remove(ctx, c.kv, swarmNodes{"live000000000000000000000": "ready", "member0000000000000000000": "down"}, "twin000000000000000000000", Options{Stale: time.Minute})
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "node twin000000000000000000000 (swarm node member0000000000000000000) is still a swarm node (down)") {
		t.Errorf("remove twin, a swarm node by its key: %v; want refused as still a swarm node", err)
	}
	if !c.has(netspec.NodesKVPrefix + "member0000000000000000000") {
		t.Error("the refused removal of twin deleted its facts")
	}
}

// TestRemoveReportsByTheirKey: a node's report is the one under its key,
// as its agent writes it: one there naming another identity goes with the
// node, and one under another node's key naming it stays (that node may
// be live) and is not counted as removed; each is named in a warning.
func TestRemoveReportsByTheirKey(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	typo := netspec.KVPrefix + pool.Name + "/nodes/gone000000000000000000000"
	decoy := netspec.KVPrefix + lan.Name + "/nodes/decoy"
	c.kv.Put(ctx, typo, []byte(`{"id":"typo","node":"old","state":"ready"}`))
	c.kv.Delete(ctx, netspec.KVPrefix+lan.Name+"/nodes/gone000000000000000000000")
	c.kv.Put(ctx, decoy, []byte(`{"id":"gone000000000000000000000","node":"old","state":"ready"}`))

	got, err := Remove(ctx, c.kv, swarmNodes{"live000000000000000000000": "ready"}, "old", Options{Stale: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Reports, []string{pool.Name}) {
		t.Errorf("removed reports on %v, want [%s] (gone's key there, not lan's decoy)", got.Reports, pool.Name)
	}
	if c.has(typo) || !c.has(decoy) {
		t.Errorf("after: %s present %v (want gone), %s present %v (want kept)", typo, c.has(typo), decoy, c.has(decoy))
	}
	for _, want := range []string{
		typo + ", the report of swarm node gone000000000000000000000 on network pool, names swarm node typo",
		decoy + " names swarm node gone000000000000000000000, but is stored as the report of decoy on network lan: left",
	} {
		if !slices.ContainsFunc(got.Warnings, func(w string) bool { return strings.Contains(w, want) }) {
			t.Errorf("warnings %q, want one with %q", got.Warnings, want)
		}
	}
}

// TestRemoveWarningNamesOwnerAsOneWord: the warning about a report stored
// under another node's key that names the removed node gives the command
// that removes it, `underlay node rm OWNER`, and named the owner as its
// key gives it: any agent's Consul token may write that key, and an
// operator running the command ran what the key held after a ; or in a
// $(…). The owner is now one shell word.
func TestRemoveWarningNamesOwnerAsOneWord(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	owner := "x; touch /tmp/pwned"
	c.kv.Put(ctx, netspec.KVPrefix+lan.Name+"/nodes/"+owner, []byte(`{"id":"gone000000000000000000000","node":"old","state":"ready"}`))
	got, err := Remove(ctx, c.kv, swarmNodes{"live000000000000000000000": "ready"}, "old", Options{Stale: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	want := "`underlay node rm 'x; touch /tmp/pwned'`"
	if !slices.ContainsFunc(got.Warnings, func(w string) bool { return strings.Contains(w, want) }) {
		t.Errorf("warnings %q, want one with %s", got.Warnings, want)
	}
}

// TestRemoveWarnsOfUnreadableBlocks: a cluster-IPAM block key whose
// document cannot be read may hold addresses of the removed node that
// cannot be freed: the removal goes on and warns, naming the key, what
// is wrong with it and the command that removes it.
func TestRemoveWarnsOfUnreadableBlocks(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	p, _ := ipam.PoolOf(pool, false)
	var key string
	for _, b := range p.Blocks() {
		if b != p.Block(c.addrs["gone000000000000000000000"][0]) && b != p.Block(c.addrs["live000000000000000000000"][0]) {
			key = ipam.KVPrefix + pool.Name + "/v4/blocks/" + strings.ReplaceAll(b.String(), "/", "_")
			break
		}
	}
	c.kv.Put(ctx, key, []byte(`{"node":"gone000000000000000000000","allocs":{"nowhere":{"node":"gone000000000000000000000"}}}`))
	got, err := Remove(ctx, c.kv, swarmNodes{"live000000000000000000000": "ready"}, "old", Options{Stale: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Warnings) != 1 || !strings.Contains(got.Warnings[0], key) || !strings.Contains(got.Warnings[0], `"nowhere"`) ||
		!strings.Contains(got.Warnings[0], "consul kv delete") {
		t.Errorf("warnings %q, want one naming %s, its bad allocation \"nowhere\" and its removal", got.Warnings, key)
	}
}

// consulPaths is the store as Consul's HTTP API shows it: a key whose path
// /v1/kv/KEY is not clean (an empty, "." or ".." segment) is redirected to
// the cleaned path, and the client follows as a GET, so a read reads
// another key and a delete deletes nothing (but succeeds when that other
// key exists). Transactions carry their keys in the body, as they are.
type consulPaths struct{ *kvtest.KV }

func redirected(key string) (string, bool) {
	p := "/v1/kv/" + key
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	if c == p {
		return key, false
	}
	return strings.TrimPrefix(c, "/v1/kv/"), true
}

func (k consulPaths) Get(ctx context.Context, key string) (kvstore.Pair, bool, error) {
	key, _ = redirected(key)
	return k.KV.Get(ctx, key)
}

func (k consulPaths) Delete(ctx context.Context, key string) error {
	to, moved := redirected(key)
	if !moved {
		return k.KV.Delete(ctx, key)
	}
	if _, ok, err := k.KV.Get(ctx, to); err != nil || !ok {
		return fmt.Errorf("unexpected response code: 404 (%v)", err)
	}
	return nil
}

// TestRemoveDeletesKeysAsNamed: a node whose name (from its facts) holds
// ".." has its doctor report and task metrics under keys Consul's HTTP
// paths would redirect to another node's: they are deleted as named, and
// the other node's stay.
func TestRemoveDeletesKeysAsNamed(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	kv := consulPaths{c.kv}
	c.facts(t, "odd0000000000000000000000", "x/../new", time.Now().Add(-time.Hour))
	keys := []string{doctor.KVPrefix + "x/../new", taskmetrics.KVPrefix + "x/../new"}
	for _, k := range keys {
		if res, err := c.kv.Txn(ctx, []kvstore.Op{{Verb: kvstore.Set, Key: k, Value: []byte(`{}`)}}); err != nil || !res.OK {
			t.Fatalf("set-up: set %s: %v", k, err)
		}
	}
	got, err := Remove(ctx, kv, swarmNodes{"live000000000000000000000": "ready"}, "odd0000000000000000000000", Options{Stale: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if c.has(k) {
			t.Errorf("%s still there after removal (said deleted: %v)", k, slices.Contains(got.Keys, k))
		}
		if !slices.Contains(got.Keys, k) {
			t.Errorf("%s deleted but not said: %v", k, got.Keys)
		}
	}
	for _, k := range []string{doctor.KVPrefix + "new", taskmetrics.KVPrefix + "new"} {
		if !c.has(k) {
			t.Errorf("the live node's %s was deleted", k)
		}
	}
}

// TestRemoveWithoutKeysAsNamed: a node named with ".." that left no report
// under that name: nothing is said deleted, and the node its name points
// to through Consul's paths keeps its reports.
func TestRemoveWithoutKeysAsNamed(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	c.facts(t, "odd0000000000000000000000", "x/../new", time.Now().Add(-time.Hour))
	got, err := Remove(ctx, consulPaths{c.kv}, swarmNodes{"live000000000000000000000": "ready"}, "odd0000000000000000000000", Options{Stale: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{doctor.KVPrefix + "x/../new", taskmetrics.KVPrefix + "x/../new"} {
		if slices.Contains(got.Keys, k) {
			t.Errorf("%s said deleted, but there was no such key: %v", k, got.Keys)
		}
	}
	for _, k := range []string{doctor.KVPrefix + "new", taskmetrics.KVPrefix + "new"} {
		if !c.has(k) {
			t.Errorf("the live node's %s was deleted", k)
		}
	}
}

// TestResolveRefusesUnlikeID: an argument that no facts name and that is
// not made like a swarm node ID (letters and digits) names no node: it
// would only make keys Consul's paths move elsewhere.
func TestResolveRefusesUnlikeID(t *testing.T) {
	facts := []netspec.NodeFacts{{ID: "id1", Node: "n1"}}
	for _, arg := range []string{"..", ".", "a?b", "a#b", "a%2Fb", "x/../y"} {
		f, found, err := Resolve(facts, arg)
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q", arg)) {
			t.Errorf("Resolve(%q) = %+v, %v, %v; want an error naming the argument", arg, f, found, err)
		}
	}
	if f, found, err := Resolve(facts, "k3x9d2mq7wz1abc"); err != nil || found || f.ID != "k3x9d2mq7wz1abc" {
		t.Errorf("Resolve(an ID without facts) = %+v, %v, %v; want the ID, not found", f, found, err)
	}
}

// TestRemoveWatchesFactsWithoutHolder: facts naming no holder — an agent
// older than holders, which keyed its facts and lease by its name, or a
// document without one — were taken as silent at once, and node rm
// released the lease of an agent still refreshing them. They are watched
// like any others: refreshed while watched, the removal is refused.
func TestRemoveWatchesFactsWithoutHolder(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct{ arg, key, doc string }{
		{"web1", "web1", `{"node":"web1","interfaces":["eth0"],"updated_at":%q}`},
		{"gone000000000000000000000", "gone000000000000000000000", `{"id":"gone000000000000000000000","node":"old","interfaces":["eth0"],"updated_at":%q}`},
		{"old", "gone000000000000000000000", `{"id":"gone000000000000000000000","node":"old","interfaces":["eth0"],"updated_at":%q}`},
	} {
		c := newCluster(t)
		if _, _, err := c.st.Lease(ctx, lan, "web1"); err != nil {
			t.Fatal(err)
		}
		publish := func() {
			c.kv.Put(ctx, netspec.NodesKVPrefix+tc.key, []byte(fmt.Sprintf(tc.doc, time.Now().UTC().Format(time.RFC3339Nano))))
		}
		publish()
		stop := refreshing(c.kv, netspec.NodesKVPrefix+tc.key, publish)
		got, err := Remove(ctx, c.kv, swarmNodes{"live000000000000000000000": "ready"}, tc.arg, Options{Stale: 5 * time.Second, Poll: 10 * time.Millisecond})
		stop()
		if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "running") {
			t.Errorf("remove %s, its holderless facts refreshed: %v (removed %+v); want refused as running", tc.arg, err, got)
		}
		if leases, _ := c.st.Leases(ctx, lan.Name); len(leases) != 3 {
			t.Errorf("remove %s: leases after: %v, want all 3", tc.arg, leases)
		}
	}
}

// TestRemoveWatchesFactsStampedLongAgo: a stamp is the agent's clock,
// which may be behind this one. An agent whose clock was two minutes
// slow, out of the swarm but still running and refreshing its facts,
// looked stopped for two minutes: its ranges, reports and addresses were
// removed at once, and only the facts' change, seen at the end, refused
// the rest. Facts stamped over Stale ago are watched for a heartbeat too.
func TestRemoveWatchesFactsStampedLongAgo(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		doc  string // with the stamp to fill in
	}{
		{"holder", `{"id":"gone000000000000000000000","node":"old","interfaces":["eth0"],"holder":{"instance":"agent-gone"},"updated_at":%q}`},
		{"no holder", `{"id":"gone000000000000000000000","node":"old","interfaces":["eth0"],"updated_at":%q}`},
	} {
		c := newCluster(t)
		publish := func() {
			slow := time.Now().Add(-2 * time.Minute)
			c.kv.Put(ctx, netspec.NodesKVPrefix+"gone000000000000000000000", []byte(fmt.Sprintf(tc.doc, slow.UTC().Format(time.RFC3339Nano))))
		}
		publish()
		stop := refreshing(c.kv, netspec.NodesKVPrefix+"gone000000000000000000000", publish)
		got, err := Remove(ctx, c.kv, swarmNodes{"live000000000000000000000": "ready"}, "gone000000000000000000000", Options{Stale: 5 * time.Second, Heartbeat: time.Second, Poll: 10 * time.Millisecond})
		stop()
		if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "running") {
			t.Errorf("%s: remove a node whose slow-clocked agent refreshes its facts: %v; want refused as running", tc.name, err)
		}
		if leases, _ := c.st.Leases(ctx, lan.Name); len(leases) != 2 {
			t.Errorf("%s: leases after the refusal: %v, want both", tc.name, leases)
		}
		if len(got.Ranges)+len(got.Reports)+len(got.Addresses)+len(got.Keys)+len(got.Changed) != 0 {
			t.Errorf("%s: removed %+v; want nothing", tc.name, got)
		}
	}
	// Not refreshed while watched for the heartbeat: removed.
	c := newCluster(t)
	start := time.Now()
	got, err := Remove(ctx, c.kv, swarmNodes{"live000000000000000000000": "ready"}, "gone000000000000000000000", Options{Stale: time.Minute, Heartbeat: 200 * time.Millisecond, Poll: 10 * time.Millisecond})
	if err != nil || !slices.Contains(got.Keys, netspec.NodesKVPrefix+"gone000000000000000000000") {
		t.Errorf("remove a node whose facts are an hour old: %+v, %v; want removed", got, err)
	}
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Errorf("removed after %s, before the facts were watched for a heartbeat", took)
	}
}

// TestRemoveRefusesFactsChangingHolder: facts taken over by another
// agent while watched (an agent crash-looping, each start a new holder
// with a fresh stamp) were watched afresh at each change, so node rm
// waited for as long as the changes went on, for ever with an agent
// restarting more often than Stale; a new holder is a write, and proves
// an agent runs.
func TestRemoveRefusesFactsChangingHolder(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c := newCluster(t)
	n := 0
	var writing bool // the hook's own write, a transaction too
	c.kv.Hook = func(call string, keys []string) error {
		if (call == "get" || call == "txn") && !writing && slices.Equal(keys, []string{netspec.NodesKVPrefix + "gone000000000000000000000"}) {
			n++ // a new agent at each read
			writing = true
			defer func() { writing = false }()
			c.kv.Put(ctx, netspec.NodesKVPrefix+"gone000000000000000000000", []byte(fmt.Sprintf(`{"id":"gone000000000000000000000","node":"old","holder":{"instance":"agent-%d"},"updated_at":%q}`,
				n, time.Now().UTC().Format(time.RFC3339Nano))))
		}
		return nil
	}
	got, err := Remove(ctx, c.kv, swarmNodes{"live000000000000000000000": "ready"}, "gone000000000000000000000", Options{Stale: 5 * time.Second, Poll: 10 * time.Millisecond})
	c.kv.Hook = nil
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "running") {
		t.Errorf("remove a node whose facts change holder while watched: %v (removed %+v); want refused as running", err, got)
	}
	if leases, _ := c.st.Leases(context.Background(), lan.Name); len(leases) != 2 {
		t.Errorf("leases after the refusal: %v, want both", leases)
	}
}

// TestRemoveRefusesAnotherSwarm: with DOCKER_HOST naming another
// cluster's manager, every node of this one looked removed from the
// swarm, and a node whose agent was merely down (a reboot) lost its
// ranges and addresses. A swarm that lists none of the nodes whose
// agents refresh their facts is not taken as this cluster's.
func TestRemoveRefusesAnotherSwarm(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	got, err := Remove(ctx, c.kv, swarmNodes{"stranger00000000000000000": "ready"}, "gone000000000000000000000", Options{Stale: time.Minute})
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "the swarm lists none of the 1 nodes whose agents refreshed their facts within 1m0s (live000000000000000000000)") {
		t.Errorf("remove with another cluster's swarm: %v (removed %+v); want refused", err, got)
	}
	if leases, _ := c.st.Leases(ctx, lan.Name); len(leases) != 2 || !c.has(netspec.NodesKVPrefix+"gone000000000000000000000") {
		t.Errorf("leases after the refusal: %v, facts kept %v; want both leases and the facts", leases, c.has(netspec.NodesKVPrefix+"gone000000000000000000000"))
	}
	// With no other agent refreshing its facts (the last nodes of a
	// cluster taken down), the swarm cannot be told apart: removed.
	c = newCluster(t)
	c.facts(t, "live000000000000000000000", "new", time.Now().Add(-time.Hour))
	if _, err := Remove(ctx, c.kv, swarmNodes{"stranger00000000000000000": "ready"}, "gone000000000000000000000", Options{Stale: time.Minute}); err != nil {
		t.Errorf("remove with no other agent running: %v", err)
	}
}

// refreshing makes a running agent of the facts under key: publish
// refreshes them before each read of them, so every read after the first
// finds them refreshed, however long the reader was held up in between (a
// loaded machine). An agent heartbeating on a timer raced the watch: one
// not scheduled within the window looked stopped. The returned stop
// removes the hook.
func refreshing(kv *kvtest.KV, key string, publish func()) (stop func()) {
	var writing bool // publish's own reads and writes
	kv.Hook = func(call string, keys []string) error {
		if (call == "get" || call == "txn") && !writing && slices.Equal(keys, []string{key}) {
			writing = true
			defer func() { writing = false }()
			publish()
		}
		return nil
	}
	return func() { kv.Hook = nil }
}

// strictPaths is the store through consul.KV, which refuses, rather than
// sends, a read or delete of a key Consul's HTTP paths would redirect.
type strictPaths struct{ *kvtest.KV }

func (k strictPaths) Get(ctx context.Context, key string) (kvstore.Pair, bool, error) {
	if _, moved := redirected(key); moved {
		return kvstore.Pair{}, false, fmt.Errorf("kv get %q: a redirected path", key)
	}
	return k.KV.Get(ctx, key)
}

func (k strictPaths) List(ctx context.Context, prefix string) ([]kvstore.Pair, error) {
	if _, moved := redirected(prefix); moved {
		return nil, fmt.Errorf("kv list %q: a redirected path", prefix)
	}
	return k.KV.List(ctx, prefix)
}

func (k strictPaths) Delete(ctx context.Context, key string) error {
	if _, moved := redirected(key); moved {
		return fmt.Errorf("kv delete %q: a redirected path", key)
	}
	return k.KV.Delete(ctx, key)
}

// TestRemoveIdentityWithDotDot: an identity with a ".." segment, only
// possible in a hand-written key, once read its facts and deleted its
// reports through Consul's HTTP paths, which took them to the live node's
// keys: its facts were watched as live's, and its reports said deleted
// while they stayed (or, through consul.KV, which refuses such paths, the
// removal failed on reading its facts). Its records are removed by their
// keys as named, and the live node's stay.
func TestRemoveIdentityWithDotDot(t *testing.T) {
	ctx := context.Background()
	const odd = "x/../live"
	for _, tc := range []struct {
		name string
		kv   func(*kvtest.KV) KV
	}{
		{"consul paths", func(kv *kvtest.KV) KV { return consulPaths{kv} }},
		{"consul.KV", func(kv *kvtest.KV) KV { return strictPaths{kv} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t)
			doc := fmt.Sprintf(`{"id":%q,"node":"odd","interfaces":["eth0"],"updated_at":%q,"holder":{"instance":"agent-odd","host":"odd"}}`,
				odd, time.Now().Add(-time.Hour).UTC().Format(time.RFC3339Nano))
			c.kv.Put(ctx, netspec.NodesKVPrefix+odd, []byte(doc))
			if _, _, err := c.st.Lease(ctx, lan, odd); err != nil {
				t.Fatal(err)
			}
			for _, s := range []string{lan.Name, pool.Name} {
				if err := c.st.Report(ctx, s, netspec.NodeState{ID: odd, Node: "odd", State: netspec.StateReady}); err != nil {
					t.Fatal(err)
				}
			}
			got, err := Remove(ctx, tc.kv(c.kv), swarmNodes{"live000000000000000000000": "ready"}, odd, Options{Stale: 200 * time.Millisecond, Poll: 5 * time.Millisecond})
			if err != nil {
				t.Fatalf("Remove(%q): %v", odd, err)
			}
			if fmt.Sprint(got.Reports) != "[lan pool]" || len(got.Ranges[lan.Name]) != 1 {
				t.Errorf("removed %+v; want its range of lan and its reports on lan and pool", got)
			}
			for _, k := range []string{netspec.NodesKVPrefix + odd, netspec.KVPrefix + lan.Name + "/nodes/" + odd, netspec.KVPrefix + pool.Name + "/nodes/" + odd} {
				if c.has(k) {
					t.Errorf("%s still there after removal", k)
				}
			}
			for _, k := range []string{netspec.NodesKVPrefix + "live000000000000000000000", netspec.KVPrefix + lan.Name + "/nodes/live000000000000000000000", netspec.KVPrefix + pool.Name + "/nodes/live000000000000000000000"} {
				if !c.has(k) {
					t.Errorf("the live node's %s was deleted", k)
				}
			}
			leases, _ := c.st.Leases(ctx, lan.Name)
			if len(leases) != 2 || slices.Contains(slices.Collect(maps.Values(leases)), odd) {
				t.Errorf("leases of lan after: %v, want gone's and live's only", leases)
			}
		})
	}
}

// TestRemoveRefusesAgentStartedAfterTheWatch: an agent that claimed the
// node's facts just after node rm found them silent lost everything else
// — its ranges, reports, addresses, inventory — and kept only its facts,
// node rm failing only at their deletion. The facts are now taken over
// before anything is removed: an agent claiming first has the removal
// refused with nothing touched.
func TestRemoveRefusesAgentStartedAfterTheWatch(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	key := netspec.NodesKVPrefix + "gone000000000000000000000"
	var read, started, writing bool
	c.kv.Hook = func(call string, keys []string) error {
		if writing || started {
			return nil
		}
		if !read {
			read = (call == "get" || call == "txn") && slices.Equal(keys, []string{key})
			return nil
		}
		// The first call after the facts were found silent: the agent
		// starts and claims them.
		started, writing = true, true
		defer func() { writing = false }()
		c.facts(t, "gone000000000000000000000", "old", time.Now())
		return nil
	}
	got, err := Remove(ctx, c.kv, swarmNodes{"live000000000000000000000": "ready"}, "gone000000000000000000000", Options{Stale: time.Minute})
	c.kv.Hook = nil
	if !started {
		t.Fatal("set-up: the agent never started")
	}
	if !errors.Is(err, ErrRefused) {
		t.Errorf("remove while the agent claimed the facts: %v; want refused", err)
	}
	if len(got.Ranges)+len(got.Reports)+len(got.Addresses)+len(got.Keys)+len(got.Changed) != 0 {
		t.Errorf("removed %+v; want nothing", got)
	}
	if leases, _ := c.st.Leases(ctx, lan.Name); len(leases) != 2 {
		t.Errorf("leases after the refusal: %v, want both", leases)
	}
	for _, k := range []string{inventory.KVPrefix + "gone000000000000000000000", netspec.KVPrefix + lan.Name + "/nodes/gone000000000000000000000"} {
		if !c.has(k) {
			t.Errorf("%s deleted, want it kept for the agent that runs", k)
		}
	}
}

// TestRemoveAgainAfterCutShort: a removal cut short after node rm took
// the facts over (Consul out of reach) is run again at once: the facts,
// stamped fresh by node rm itself, are not watched as a running agent's.
func TestRemoveAgainAfterCutShort(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := newCluster(t)
	c.kv.Hook = func(call string, keys []string) error {
		if slices.Contains(keys, inventory.KVPrefix+"gone000000000000000000000") {
			return kvtest.ErrUnreachable
		}
		return nil
	}
	if _, err := Remove(ctx, c.kv, swarmNodes{"live000000000000000000000": "ready"}, "gone000000000000000000000", Options{Stale: time.Minute}); !errors.Is(err, kvtest.ErrUnreachable) {
		t.Fatalf("removal with Consul out of reach: %v", err)
	}
	c.kv.Hook = nil
	start := time.Now()
	got, err := Remove(ctx, c.kv, swarmNodes{"live000000000000000000000": "ready"}, "gone000000000000000000000", Options{Stale: time.Minute, Heartbeat: 30 * time.Second})
	if err != nil {
		t.Fatalf("removal run again: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("removal run again took %s: its own facts were watched", d)
	}
	if !slices.Contains(got.Keys, netspec.NodesKVPrefix+"gone000000000000000000000") || c.has(netspec.NodesKVPrefix+"gone000000000000000000000") {
		t.Errorf("removal run again: %+v; want the facts deleted", got)
	}
}

// TestRemoveWithUnlistableNetwork: a hand-written spec key whose network
// name is "", "." or ".." (underlay/networks/../spec) names ranges and
// reports no listing through Consul's HTTP paths can reach: node rm
// failed on it, for every node, for as long as the key stayed. The
// network is named in a warning, and the node's records elsewhere are
// removed.
func TestRemoveWithUnlistableNetwork(t *testing.T) {
	ctx := context.Background()
	for _, name := range []string{"..", ".", ""} {
		c := newCluster(t)
		key := netspec.KVPrefix + name + "/spec"
		c.kv.Put(ctx, key, []byte(`{}`))
		got, err := Remove(ctx, strictPaths{c.kv}, swarmNodes{"live000000000000000000000": "ready"}, "gone000000000000000000000", Options{Stale: time.Minute})
		if err != nil {
			t.Errorf("network %q: %v", name, err)
			continue
		}
		if !slices.ContainsFunc(got.Warnings, func(w string) bool { return strings.Contains(w, key) }) {
			t.Errorf("network %q: warnings %q; want one naming %s", name, got.Warnings, key)
		}
		if fmt.Sprint(got.Reports) != "[lan pool]" || c.has(netspec.NodesKVPrefix+"gone000000000000000000000") {
			t.Errorf("network %q: removed %+v; want gone's records removed", name, got)
		}
	}
}

// TestRemoveOneOfTwoNodesOfOneName: the doctor report and task metrics
// were keyed by node name only, so node rm of one of two swarm nodes of
// one name deleted neither (the name's might be the other's), and left
// the removed node's reports behind. They are now keyed by swarm node ID:
// the removed node's go, the other's stay. A report under the name goes
// when it names the removed node's ID, and stays when it names the
// other's. One naming none (an older agent's) stays while the other node
// may have written it: it goes when that one publishes under its ID (its
// agent was upgraded: a node that joined the swarm again, as twin, with a
// new agent, left its old identity's report under the name for ever).
func TestRemoveOneOfTwoNodesOfOneName(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		nameDoc  string // the report under the name ("": none)
		twinByID bool   // twin publishes under its ID
		nameGoes bool
	}{
		{"the name's names the removed node", `{"node":"old","node_id":"gone000000000000000000000"}`, true, true},
		{"the name's names the other node", `{"node":"old","node_id":"twin000000000000000000000"}`, true, false},
		{"the name's names no node ID, the other's agent is upgraded", `{"node":"old"}`, true, true},
		{"the name's names no node ID, the other's agent is older", `{"node":"old"}`, false, false},
		{"the name's cannot be read, the other's agent is older", `not json`, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t)
			c.facts(t, "twin000000000000000000000", "old", time.Now())
			for _, prefix := range []string{doctor.KVPrefix, taskmetrics.KVPrefix} {
				if tc.twinByID {
					c.kv.Put(ctx, prefix+"id/twin000000000000000000000", []byte(`{"node":"old","node_id":"twin000000000000000000000"}`))
				}
				c.kv.Put(ctx, prefix+"old", []byte(tc.nameDoc))
			}
			got, err := Remove(ctx, c.kv, swarmNodes{"live000000000000000000000": "ready", "twin000000000000000000000": "ready"}, "gone000000000000000000000", Options{Stale: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			for _, prefix := range []string{doctor.KVPrefix, taskmetrics.KVPrefix} {
				want := map[string]bool{prefix + "id/gone000000000000000000000": true, prefix + "old": tc.nameGoes}
				if tc.twinByID {
					want[prefix+"id/twin000000000000000000000"] = false
				}
				for key, goes := range want {
					if c.has(key) == goes || slices.Contains(got.Keys, key) != goes {
						t.Errorf("%s present after: %v, said deleted: %v; want it deleted: %v", key, c.has(key), slices.Contains(got.Keys, key), goes)
					}
				}
			}
		})
	}
}

// TestRemoveKeepsReportsOutsideTheNodesName: the facts of the removed
// node name it "id/twin000000000000000000000", no node's name (hand-written, or forged). The
// key under that "name", underlay/doctor/id/twin, is swarm node twin's
// report: node rm deleted it when it could not be read (naming no node
// ID, and no other identity of the "name"). A name that is no node's has
// no report under it: only the node's ID keys go.
func TestRemoveKeepsReportsOutsideTheNodesName(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	c.facts(t, "gone000000000000000000000", "id/twin000000000000000000000", time.Now().Add(-time.Hour))
	for _, prefix := range []string{doctor.KVPrefix, taskmetrics.KVPrefix} {
		c.kv.Put(ctx, prefix+"id/twin000000000000000000000", []byte(`not json`))
	}
	got, err := Remove(ctx, c.kv, swarmNodes{"live000000000000000000000": "ready", "twin000000000000000000000": "ready"}, "gone000000000000000000000", Options{Stale: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	for _, prefix := range []string{doctor.KVPrefix, taskmetrics.KVPrefix} {
		for key, goes := range map[string]bool{prefix + "id/gone000000000000000000000": true, prefix + "id/twin000000000000000000000": false} {
			if c.has(key) == goes || slices.Contains(got.Keys, key) != goes {
				t.Errorf("%s present after: %v, said deleted: %v; want it deleted: %v", key, c.has(key), slices.Contains(got.Keys, key), goes)
			}
		}
	}
	for _, prefix := range []string{doctor.KVPrefix, taskmetrics.KVPrefix} {
		key := prefix + "id/twin000000000000000000000"
		if !slices.ContainsFunc(got.Warnings, func(w string) bool {
			return strings.Contains(w, key) && strings.Contains(w, `"id/twin000000000000000000000"`)
		}) {
			t.Errorf("warnings %q; want one naming %s and the name \"id/twin\"", got.Warnings, key)
		}
	}
}

// TestRemoveFactsNoAgentWrites: node rm of the key of facts no agent
// writes (underlay/nodes/X naming the live node's ID and name, and,
// naming no ID, underlay/nodes/a b naming its name) is how an operator
// cleans them up. Before, X was taken as a node of the live node's name:
// `node rm new` was refused as naming two nodes, and `node rm X` deleted
// the reports under the name new (the live node's, from before its
// upgrade) with X's records; `node rm "a b"` was refused as naming no
// node. Now such facts are found by their key only, never by the name
// they give: each goes with what is recorded under its key, with a
// warning saying they were no node's, and the live node keeps its facts,
// lease, reports, addresses and every report under its name.
func TestRemoveFactsNoAgentWrites(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	const live = "live000000000000000000000"
	c.misfile(t, "X", live, "new")
	c.kv.Put(ctx, inventory.KVPrefix+"X", []byte(`[]`))
	swarm := swarmNodes{live: "ready"}

	_, err := Remove(ctx, c.kv, swarm, "new", Options{Stale: time.Minute})
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "node new (swarm node "+live+") is still a swarm node (ready)") {
		t.Errorf("remove new: %v; want refused as the live node, still a swarm node", err)
	}
	for _, tc := range []struct{ arg, key string }{{"X", "underlay/nodes/X"}, {"a b", "underlay/nodes/a b"}} {
		if tc.arg == "a b" {
			c.kv.Put(ctx, netspec.NodesKVPrefix+"a b", []byte(`{"node":"new","interfaces":["eth0"],"updated_at":"2020-01-01T00:00:00Z"}`))
		}
		got, err := Remove(ctx, c.kv, swarm, tc.arg, Options{Stale: time.Minute})
		if err != nil {
			t.Errorf("remove %q: %v", tc.arg, err)
			continue
		}
		if !slices.Contains(got.Keys, tc.key) || c.has(tc.key) {
			t.Errorf("remove %q: deleted %q, %s left: %v; want it deleted", tc.arg, got.Keys, tc.key, c.has(tc.key))
		}
		if got.Node != "" || !slices.ContainsFunc(got.Warnings, func(w string) bool {
			return strings.HasPrefix(w, tc.key+" holds facts of node new under a key naming no swarm node")
		}) {
			t.Errorf("remove %q: node %q, warnings %q; want no node name, and the facts' nodes/facts warning", tc.arg, got.Node, got.Warnings)
		}
	}
	if c.has(inventory.KVPrefix + "X") {
		t.Errorf("%sX left behind", inventory.KVPrefix)
	}
	for _, k := range []string{netspec.NodesKVPrefix + live, inventory.KVPrefix + live, doctor.IDPrefix + live, taskmetrics.IDPrefix + live, unregistered.KVPrefix + live,
		doctor.KVPrefix + "new", taskmetrics.KVPrefix + "new", netspec.KVPrefix + lan.Name + "/nodes/" + live} {
		if !c.has(k) {
			t.Errorf("the live node's %s was deleted", k)
		}
	}
	if leases, _ := c.st.Leases(ctx, lan.Name); !slices.Contains(slices.Collect(maps.Values(leases)), live) {
		t.Errorf("leases of lan after: %v; want the live node's kept", leases)
	}
	p, _ := ipam.PoolOf(pool, false)
	allocs, _ := ipam.Allocations(ctx, c.kv, p)
	for _, a := range c.addrs[live] {
		if allocs[a].Node != live {
			t.Errorf("the live node's address %s is now %+v", a, allocs[a])
		}
	}
}

// TestRemoveRefusesAnotherSwarmWhatTheStampsSay: the other nodes'
// running agents were told by their facts' stamps, their nodes' clocks.
// With those two minutes behind this one's, every agent of the cluster
// looked stopped, so a swarm listing none of them (DOCKER_HOST naming
// another cluster's manager) was taken as this cluster's, and a node
// whose agent was merely down lost its ranges and addresses. An agent
// whose facts change while node rm watches runs, whatever its stamp.
func TestRemoveRefusesAnotherSwarmWhatTheStampsSay(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	// live's agent refreshes its facts, stamped by a clock two minutes
	// slow, before each listing of the facts.
	var writing bool
	c.kv.Hook = func(call string, keys []string) error {
		if call == "list" && !writing && slices.Equal(keys, []string{netspec.NodesKVPrefix}) {
			writing = true
			defer func() { writing = false }()
			c.facts(t, "live000000000000000000000", "new", time.Now().Add(-2*time.Minute))
		}
		return nil
	}
	got, err := Remove(ctx, c.kv, swarmNodes{"stranger00000000000000000": "ready"}, "gone000000000000000000000",
		Options{Stale: time.Minute, Heartbeat: 100 * time.Millisecond, Poll: 10 * time.Millisecond})
	c.kv.Hook = nil
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "live000000000000000000000") || !strings.Contains(err.Error(), "node old (swarm node gone000000000000000000000)") {
		t.Errorf("remove with another cluster's swarm, this one's agents' clocks slow: %v (removed %+v); want refused, naming the running agent and the node", err, got)
	}
	if leases, _ := c.st.Leases(ctx, lan.Name); len(leases) != 2 || !c.has(netspec.NodesKVPrefix+"gone000000000000000000000") {
		t.Errorf("leases after the refusal: %v, facts kept %v; want both leases and the facts", leases, c.has(netspec.NodesKVPrefix+"gone000000000000000000000"))
	}
}

// TestRemoveMakesAStartingAgentWait: an agent of the node starting while
// node rm removes its records waits until they are gone (README). It
// judged node rm's hold of the facts by their stamp, written by the
// machine node rm runs on: an agent whose clock was two minutes ahead of
// it took the facts at once, and the addresses it then allocated for its
// containers were freed by the rest of the removal.
func TestRemoveMakesAStartingAgentWait(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	p, _ := ipam.PoolOf(pool, false)
	const id = "gone000000000000000000000"
	var writing, started bool
	var claimErr error
	var allocated netip.Addr
	c.kv.Hook = func(call string, keys []string) error {
		if call != "list" || writing || started || len(keys) != 1 || !strings.HasPrefix(keys[0], ipam.KVPrefix+pool.Name+"/") {
			return nil
		}
		// node rm holds the facts and is about to read the pool: the
		// node's agent starts, by a clock two minutes ahead.
		writing, started = true, true
		defer func() { writing = false }()
		claimCtx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		claimErr = c.st.Claim(claimCtx, netspec.NodeFacts{ID: id, Node: "old", Holder: netspec.Holder{Instance: "agent-again"}},
			netspec.ClaimOptions{Stale: time.Minute, Poll: 10 * time.Millisecond, Now: func() time.Time { return time.Now().Add(2 * time.Minute) }})
		if claimErr == nil {
			allocated, _ = ipam.NewAllocator(c.kv, id, nil).Allocate(ctx, p, netip.Addr{}, ipam.KindTask)
		}
		return nil
	}
	_, err := Remove(ctx, c.kv, swarmNodes{"live000000000000000000000": "ready"}, id, Options{Stale: time.Minute})
	c.kv.Hook = nil
	if !started {
		t.Fatal("set-up: the pool was never read during the removal")
	}
	if claimErr == nil {
		allocs, _ := ipam.Allocations(ctx, c.kv, p)
		al, ok := allocs[allocated]
		t.Errorf("an agent of the node claimed it while node rm removed it (removal: %v); the address it then allocated, %s, is now %+v (recorded: %v)",
			err, allocated, al, ok)
	} else if !errors.Is(claimErr, context.DeadlineExceeded) {
		t.Errorf("claim during the removal: %v; want it waiting", claimErr)
	}
}

// TestRemoveHoldsTheFactsAsItGoes: an agent of the node starting while
// node rm removes its records waits for as long as the removal takes.
// node rm took the facts over once, before the first network: an agent
// watching them unchanged for stale (30 s) took them over while a long
// removal (many networks, a slow Consul) went on, and the addresses it
// allocated then on a network not yet done were freed. node rm renews its
// hold before each network. Here each cluster network takes the agent's
// clock 20 s. Once the removal is done, the claim is refused: the node
// was removed (netspec.RemovedNodesKVPrefix).
func TestRemoveHoldsTheFactsAsItGoes(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := newCluster(t)
	for i, name := range []string{"pool2", "pool3"} {
		s := pool
		s.Name, s.Parent = name, fmt.Sprintf("eth%d", 2+i)
		s.Subnet, s.Gateway = netip.MustParsePrefix(fmt.Sprintf("10.%d.0.0/16", 30+i)), netip.MustParseAddr(fmt.Sprintf("10.%d.0.1", 30+i))
		if err := c.st.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	const id = "gone000000000000000000000"
	var mu sync.Mutex // guards following fields
	clock := time.Now()
	polls := 0 // the agent's reads of the facts
	claimDone := false
	claimed := make(chan error, 1)
	var allocated []netip.Addr
	agentClock := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	awaitPolls := func(n int) {
		mu.Lock()
		start := polls
		mu.Unlock()
		for {
			mu.Lock()
			done := polls >= start+n || claimDone
			mu.Unlock()
			if done {
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Millisecond):
			}
		}
	}
	started := false
	c.kv.Hook = func(call string, keys []string) error {
		if call == "get" && slices.Equal(keys, []string{netspec.NodesKVPrefix + id}) {
			mu.Lock()
			polls++
			mu.Unlock()
			return nil
		}
		if call != "list" || len(keys) != 1 || !strings.HasPrefix(keys[0], ipam.KVPrefix) || !strings.HasSuffix(keys[0], "/v4/blocks/") {
			return nil
		}
		mu.Lock()
		agents := claimDone // the agent's own reads, once it runs
		mu.Unlock()
		if agents {
			return nil
		}
		// node rm is about to read a cluster network's blocks.
		if !started {
			started = true
			go func() { // the node's agent starts, waiting for the facts
				err := c.st.Claim(ctx, netspec.NodeFacts{ID: id, Node: "old", Holder: netspec.Holder{Instance: "agent-again"}},
					netspec.ClaimOptions{Stale: 30 * time.Second, Poll: time.Millisecond, Now: agentClock})
				mu.Lock()
				claimDone = true
				mu.Unlock()
				if err == nil {
					a := ipam.NewAllocator(c.kv, id, nil)
					for _, name := range []string{pool.Name, "pool2", "pool3"} {
						s, _, _ := c.st.Get(ctx, name)
						p, _ := ipam.PoolOf(s, false)
						if addr, err := a.Allocate(ctx, p, netip.Addr{}, ipam.KindTask); err == nil {
							mu.Lock()
							allocated = append(allocated, addr)
							mu.Unlock()
						}
					}
				}
				claimed <- err
			}()
		} else {
			mu.Lock()
			clock = clock.Add(20 * time.Second)
			mu.Unlock()
		}
		awaitPolls(2) // the agent looked since
		return nil
	}
	_, err := Remove(ctx, c.kv, swarmNodes{"live000000000000000000000": "ready"}, id, Options{Stale: time.Minute})
	claimErr := <-claimed // facts gone: the agent learns the node was removed
	c.kv.Hook = nil
	mu.Lock()
	defer mu.Unlock()
	if err != nil || !errors.Is(claimErr, netspec.ErrNodeRemoved) {
		t.Errorf("removal: %v; the agent's claim: %v; want the removal done, and the claim refused once it was", err, claimErr)
	}
	for _, name := range []string{pool.Name, "pool2", "pool3"} {
		s, _, _ := c.st.Get(ctx, name)
		p, _ := ipam.PoolOf(s, false)
		allocs, _ := ipam.Allocations(ctx, c.kv, p)
		for _, a := range allocated {
			if p.Prefix.Contains(a) && allocs[a].Node != id {
				t.Errorf("%s, allocated by the agent that started, is now %+v: freed by the removal", a, allocs[a])
			}
		}
	}
	if len(allocated) != 0 {
		t.Errorf("the agent allocated %v, want nothing: its claim refused", allocated)
	}
}

// TestRemoveWarnsOfAnIDsStart: docker node rm takes the start of a node's
// ID; node rm took such an argument for an identity of its own, removed
// nothing (nothing is recorded under it) and said nothing of it. It now
// warns, naming the swarm nodes and the facts whose ID it starts.
func TestRemoveWarnsOfAnIDsStart(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	got, err := Remove(ctx, c.kv, swarmNodes{"live000000000000000000000": "ready"}, "l", Options{Stale: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Ranges)+len(got.Reports)+len(got.Addresses)+len(got.Keys)+len(got.Changed) != 0 {
		t.Errorf("removed %+v; want nothing", got)
	}
	want := "l is not a whole swarm node ID, only the start of swarm node live000000000000000000000's (ready): node rm names a node by its whole ID, or its name, and removes what is recorded under that"
	if !slices.Contains(got.Warnings, want) {
		t.Errorf("warnings %q, want %q", got.Warnings, want)
	}
	got, err = Remove(ctx, c.kv, swarmNodes{"live000000000000000000000": "ready"}, "gone", Options{Stale: time.Minute})
	want = "gone is not a whole swarm node ID, only the start of swarm node gone000000000000000000000's (not in the swarm; its facts name node old)"
	if err != nil || !slices.ContainsFunc(got.Warnings, func(w string) bool { return strings.HasPrefix(w, want) }) || !c.has(netspec.NodesKVPrefix+"gone000000000000000000000") {
		t.Errorf("remove gone: %+v, %v; want nothing removed and a warning starting %q", got, err, want)
	}
}

// TestRemoveHoldsTheFactsBetweenAPoolsFamilies: node rm renewed its hold
// before each network, not between a network's IPv4 and IPv6 pools. An
// agent starting while the IPv4 pool's removal took longer than the
// hold's stale time (many blocks, a slow Consul) took its node over,
// allocated in the IPv6 pool, and node rm, going on to that pool, freed
// what the agent had just allocated there.
func TestRemoveHoldsTheFactsBetweenAPoolsFamilies(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := newCluster(t)
	dual := pool
	dual.Name, dual.Parent = "dual", "eth2"
	dual.Subnet, dual.Gateway = netip.MustParsePrefix("10.31.0.0/16"), netip.MustParseAddr("10.31.0.1")
	dual.IPv6Subnet = netip.MustParsePrefix("fd00:31::/64")
	if err := c.st.Create(ctx, dual); err != nil {
		t.Fatal(err)
	}
	p6, _ := ipam.PoolOf(dual, true)
	const id = "gone000000000000000000000"
	var mu sync.Mutex // guards following fields
	clock := time.Now()
	started := false // node rm reads the IPv4 pool
	polls := 0       // the agent's reads of the facts since
	agentClock := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	type result struct {
		addr netip.Addr
		err  error
	}
	agent := make(chan result, 1)
	c.kv.Hook = func(call string, keys []string) error {
		mu.Lock()
		defer mu.Unlock()
		if started && call == "get" && slices.Equal(keys, []string{netspec.NodesKVPrefix + id}) {
			polls++
			if polls == 2 {
				// The agent watches the hold; the IPv4 pool's removal
				// goes on past the hold's stale time.
				clock = clock.Add(40 * time.Second)
			}
			return nil
		}
		if started || call != "list" || !slices.Equal(keys, []string{ipam.KVPrefix + "dual/v4/blocks/"}) {
			return nil
		}
		// node rm is about to read the IPv4 pool of dual: the node's
		// agent starts, takes its node over and allocates an IPv6
		// address, all while that pool's removal runs.
		started = true
		// The removal is recorded first: only an agent whose token may
		// not read the record (a policy from before it) takes its node
		// over now.
		c.kv.DenyRead(netspec.RemovedNodesKVPrefix)
		go func() {
			err := c.st.Claim(ctx, netspec.NodeFacts{ID: id, Node: "old", Holder: netspec.Holder{Instance: "agent-again"}},
				netspec.ClaimOptions{Stale: 30 * time.Second, Poll: time.Millisecond, Now: agentClock})
			if err != nil {
				agent <- result{err: err}
				return
			}
			addr, err := ipam.NewAllocator(c.kv, id, nil).Allocate(ctx, p6, netip.Addr{}, ipam.KindTask)
			agent <- result{addr, err}
		}()
		mu.Unlock()
		got := <-agent
		agent <- got
		mu.Lock()
		return nil
	}
	_, err := Remove(ctx, c.kv, swarmNodes{"live000000000000000000000": "ready"}, id, Options{Stale: time.Minute})
	c.kv.Hook = nil
	got := <-agent
	if got.err != nil {
		t.Fatalf("the agent that started: %v", got.err)
	}
	if !errors.Is(err, ErrRefused) {
		t.Errorf("removal with the agent taking its node over: %v, want refused", err)
	}
	allocs, err := ipam.Allocations(ctx, c.kv, p6)
	if err != nil {
		t.Fatal(err)
	}
	if al := allocs[got.addr]; al.Node != id {
		t.Errorf("%s, allocated by the agent that took its node over, is now %+v: freed by the removal", got.addr, al)
	}
}

// TestRemoveLeavesARecordTheAgentHonours: an agent cut off from Consul
// for longer than node rm watched its facts comes back after the removal
// and refreshes them: it registered the removed node again, which looked
// alive, its old claims to be taken again. node rm leaves a record of
// the removal under the swarm node ID, which never comes back: the
// agent's heartbeat and a claim of the identity are refused (named by
// netspec.ErrNodeRemoved), nothing written; a node that joined the swarm
// again, under a new ID, claims that one.
func TestRemoveLeavesARecordTheAgentHonours(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	const gone = "gone000000000000000000000"
	f, _, _, err := c.st.Facts(ctx, gone)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Remove(ctx, c.kv, swarmNodes{"live000000000000000000000": "ready"}, "old", Options{Stale: time.Minute, By: "ops@m1"}); err != nil {
		t.Fatal(err)
	}
	if r, found, err := c.st.Removal(ctx, gone); !found || err != nil || r.Node != "old" || r.By != "ops@m1" || r.RemovedAt.IsZero() {
		t.Errorf("record of the removal: %+v, %v, %v; want node old, by ops@m1, stamped", r, found, err)
	}
	if err := c.st.PublishNode(ctx, f); !errors.Is(err, netspec.ErrNodeRemoved) || !strings.Contains(err.Error(), gone) {
		t.Errorf("heartbeat of the removed node's agent: %v, want %v naming %s", err, netspec.ErrNodeRemoved, gone)
	}
	if c.has(netspec.NodesKVPrefix + gone) {
		t.Fatalf("the removed node's facts were written again by its agent")
	}
	f.Holder.Instance = "restarted"
	if err := c.st.Claim(ctx, f, netspec.ClaimOptions{Stale: time.Minute, Poll: time.Millisecond}); !errors.Is(err, netspec.ErrNodeRemoved) {
		t.Errorf("claim of the removed identity: %v, want %v", err, netspec.ErrNodeRemoved)
	}
	if c.has(netspec.NodesKVPrefix + gone) {
		t.Fatalf("the removed node's identity was claimed again")
	}
	f.ID = "back000000000000000000000"
	if err := c.st.Claim(ctx, f, netspec.ClaimOptions{Stale: time.Minute, Poll: time.Millisecond}); err != nil {
		t.Errorf("claim of the node's new swarm node ID: %v", err)
	}
	// Run again, node rm finds nothing left, and the record stays.
	if _, err := Remove(ctx, c.kv, swarmNodes{"live000000000000000000000": "ready"}, gone, Options{Stale: time.Minute}); err != nil {
		t.Fatal(err)
	}
	if err := c.st.PublishNode(ctx, netspec.NodeFacts{ID: gone, Node: "old", Holder: f.Holder}); !errors.Is(err, netspec.ErrNodeRemoved) {
		t.Errorf("heartbeat after a second node rm: %v, want %v", err, netspec.ErrNodeRemoved)
	}
}

// TestRemoveHoldsTheFactsWithinAPool: node rm renewed its hold on the
// facts before each network and each IPv6 pool, not while one pool's
// removal ran: one outlasting the hold's stale time (many blocks, a slow
// Consul) let an agent take its node over meanwhile, and the rest of that
// pool's removal deleted what the agent then kept for its containers'
// starts. The hold is renewed before each write of the pool's removal: the
// agent's takeover stops it there, and what it keeps stays.
func TestRemoveHoldsTheFactsWithinAPool(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := newCluster(t)
	const id = "gone000000000000000000000"
	kept := ipam.KVPrefix + pool.Name + "/v4/kept/" + id
	var mu sync.Mutex // guards following fields
	clock := time.Now()
	started := false // node rm rewrites one of the pool's blocks
	polls := 0       // the agent's reads of the facts since
	agentClock := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	agent := make(chan error, 1)
	c.kv.Hook = func(call string, keys []string) error {
		mu.Lock()
		defer mu.Unlock()
		if started && call == "get" && slices.Equal(keys, []string{netspec.NodesKVPrefix + id}) {
			polls++
			if polls == 2 {
				clock = clock.Add(40 * time.Second) // the pool's removal outlasts the hold
			}
			return nil
		}
		if started || call != "txn" || !slices.ContainsFunc(keys, func(k string) bool { return strings.HasPrefix(k, ipam.KVPrefix+pool.Name+"/v4/blocks/") }) {
			return nil
		}
		// node rm rewrites a block of the pool: the node's agent starts,
		// takes its node over and keeps an address for a start.
		started = true
		// The removal is recorded first: only an agent whose token may
		// not read the record (a policy from before it) takes its node
		// over now.
		c.kv.DenyRead(netspec.RemovedNodesKVPrefix)
		go func() {
			err := c.st.Claim(ctx, netspec.NodeFacts{ID: id, Node: "old", Holder: netspec.Holder{Instance: "agent-again"}},
				netspec.ClaimOptions{Stale: 30 * time.Second, Poll: time.Millisecond, Now: agentClock})
			if err == nil {
				err = c.kv.Put(ctx, kept, []byte(`{"agent":"again"}`))
			}
			agent <- err
		}()
		mu.Unlock()
		err := <-agent
		agent <- err
		mu.Lock()
		return nil
	}
	_, err := Remove(ctx, c.kv, swarmNodes{"live000000000000000000000": "ready"}, id, Options{Stale: time.Minute})
	c.kv.Hook = nil
	if aerr := <-agent; aerr != nil {
		t.Fatalf("the agent that started: %v", aerr)
	}
	if !errors.Is(err, ErrRefused) {
		t.Errorf("removal with the agent taking its node over: %v, want refused", err)
	}
	if !c.has(kept) {
		t.Errorf("%s, kept by the agent that took its node over, was deleted by the removal", kept)
	}
}

// TestRemoveByNameEdgeCases: node rm takes a node's name as well as its
// swarm node ID, and what an argument named could be more than one node:
// an ID that is also another node's name was taken for the ID alone; a
// name that is also the start of another node's ID (docker node rm takes
// that) for the name alone; a name a removed node had, shared by a node
// of today, for today's with no word of the other. Each is now refused,
// or warned of, naming the candidates, quoted where their names would
// break the line; nothing is removed by a refusal.
func TestRemoveByNameEdgeCases(t *testing.T) {
	ctx := context.Background()
	const gone, live = "gone000000000000000000000", "live000000000000000000000"
	inSwarm := swarmNodes{live: "ready"}
	for _, tc := range []struct {
		name  string
		setup func(c *cluster)
		arg   string
		swarm swarmNodes
		want  string // in the refusal ("": removed)
		warn  string // in a warning ("": none wanted)
		kept  string // facts left by a refusal
	}{
		{"an ID that is another node's name", func(c *cluster) {
			c.facts(t, "odd0000000000000000000000", gone, time.Now().Add(-time.Hour))
		}, gone, inSwarm, "names 2 nodes: swarm node gone000000000000000000000 (node old), and node gone000000000000000000000 (swarm node odd0000000000000000000000) by its name", "", gone},
		{"a name that is the start of another node's ID", func(c *cluster) {
			c.facts(t, "pfx0000000000000000000000", "live", time.Now().Add(-time.Hour))
		}, "live", inSwarm, "names node live (swarm node pfx0000000000000000000000) and is the start of swarm node live000000000000000000000's (ready)", "", "pfx0000000000000000000000"},
		{"a name that is the start of its own ID", func(c *cluster) {
			c.facts(t, "solo000000000000000000000", "solo", time.Now().Add(-time.Hour))
		}, "solo", inSwarm, "", "", ""},
		{"two nodes of a name with odd characters", func(c *cluster) {
			c.facts(t, "odd1000000000000000000000", "n 1\x1b[2J", time.Now().Add(-time.Hour))
			c.facts(t, "odd2000000000000000000000", "n 1\x1b[2J", time.Now().Add(-time.Hour))
		}, "n 1\x1b[2J", inSwarm, `2 nodes are named "n 1\x1b[2J" (swarm node IDs odd1000000000000000000000, odd2000000000000000000000): name one by its ID`, "", "odd1000000000000000000000"},
		{"a name with a space", func(c *cluster) {
			c.facts(t, "spc0000000000000000000000", "n 1", time.Now().Add(-time.Hour))
		}, "n 1", inSwarm, "", "", ""},
		{"a removed node's name, now another's in the swarm", func(c *cluster) {
			if _, err := Remove(ctx, c.kv, inSwarm, "old", Options{Stale: time.Minute}); err != nil {
				t.Fatal(err)
			}
			c.facts(t, "back000000000000000000000", "old", time.Now())
		}, "old", swarmNodes{live: "ready", "back000000000000000000000": "ready"}, "node old (swarm node back000000000000000000000) is still a swarm node",
			"node rm removed a node of that name already: swarm node gone000000000000000000000", "back000000000000000000000"},
		{"a removed node's name, no other", func(c *cluster) {
			if _, err := Remove(ctx, c.kv, inSwarm, "old", Options{Stale: time.Minute}); err != nil {
				t.Fatal(err)
			}
		}, "old", inSwarm, "", "node rm removed a node of that name already: swarm node gone000000000000000000000", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t)
			tc.setup(c)
			got, err := Remove(ctx, c.kv, tc.swarm, tc.arg, Options{Stale: time.Minute})
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("remove %q: %v, want it removed", tc.arg, err)
			case tc.want != "" && (!errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("remove %q: %v; want refused with %q", tc.arg, err, tc.want)
			}
			if tc.kept != "" && !c.has(netspec.NodesKVPrefix+tc.kept) {
				t.Errorf("remove %q: the facts of %s went", tc.arg, tc.kept)
			}
			if tc.warn != "" && !slices.ContainsFunc(got.Warnings, func(w string) bool { return strings.Contains(w, tc.warn) }) {
				t.Errorf("remove %q: warnings %q, want one with %q", tc.arg, got.Warnings, tc.warn)
			}
			if err != nil && strings.ContainsAny(err.Error(), "\x1b") {
				t.Errorf("remove %q: the refusal holds a control character: %q", tc.arg, err)
			}
		})
	}
}

// agentWrites plays the agent of swarm node id coming back: through its
// guarded KV store (netspec.GuardRemoved), it leases a range on lan,
// reports its state on lan and pool, allocates an address in pool and
// publishes its inventory. It returns each write's error.
func agentWrites(ctx context.Context, kv *kvtest.KV, id string) []error {
	g := netspec.GuardRemoved(kv, id)
	st := netspec.NewStore(g)
	_, _, err := st.Lease(ctx, lan, id)
	errs := []error{err}
	for _, name := range []string{lan.Name, pool.Name} {
		errs = append(errs, st.Report(ctx, name, netspec.NodeState{ID: id, Node: "old", State: netspec.StateReady}))
	}
	p, _ := ipam.PoolOf(pool, false)
	_, err = ipam.NewAllocator(g, id, nil).Allocate(ctx, p, netip.Addr{}, ipam.KindTask)
	errs = append(errs, err, g.Put(ctx, inventory.KVPrefix+id, []byte(`{}`)))
	return errs
}

// leftOf lists what is recorded of swarm node id on lan and pool, its
// inventory and facts.
func (c *cluster) leftOf(t *testing.T, id string) []string {
	t.Helper()
	ctx := context.Background()
	var left []string
	leases, err := c.st.Leases(ctx, lan.Name)
	if err != nil {
		t.Fatal(err)
	}
	for b, owner := range leases {
		if owner == id {
			left = append(left, "range "+b.String())
		}
	}
	for _, name := range []string{lan.Name, pool.Name} {
		reports, err := c.st.Reports(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range reports {
			if r.Owner == id {
				left = append(left, "report on "+name)
			}
		}
	}
	p, _ := ipam.PoolOf(pool, false)
	allocs, err := ipam.Allocations(ctx, c.kv, p)
	if err != nil {
		t.Fatal(err)
	}
	for a, al := range allocs {
		if al.Node == id {
			left = append(left, "address "+a.String())
		}
	}
	for _, k := range []string{inventory.KVPrefix + id, netspec.NodesKVPrefix + id} {
		if c.has(k) {
			left = append(left, k)
		}
	}
	slices.Sort(left)
	return left
}

// removalCalls counts node rm's KV calls removing id from a fresh
// cluster, with no agent about: the steps at which a test cuts in.
func removalCalls(t *testing.T, sw swarmNodes, id string) int {
	t.Helper()
	calls := 0
	c := newCluster(t)
	c.kv.Hook = func(string, []string) error { calls++; return nil }
	if _, err := Remove(context.Background(), c.kv, sw, id, Options{Stale: time.Minute}); err != nil {
		t.Fatal(err)
	}
	return calls
}

// TestRemoveRecordsFirst: an agent coming back during node rm (its facts
// still there, held by node rm) wrote on the networks the removal had
// passed already, for node rm recorded the removal, which the agent's
// writes are checked against, only at the end, with the facts' delete:
// its range, reports, address and inventory stayed after node rm
// returned. The agent's writes are slipped in before each of node rm's
// calls in turn: refused once the record is there, and nothing of the
// node left when the removal ends.
func TestRemoveRecordsFirst(t *testing.T) {
	ctx := context.Background()
	const id = "gone000000000000000000000"
	sw := swarmNodes{"live000000000000000000000": "ready"}
	calls := removalCalls(t, sw, id)
	for step := range calls {
		c := newCluster(t)
		n, agent := 0, false
		var recorded, leased bool
		var errs []error
		c.kv.Hook = func(call string, keys []string) error {
			if agent {
				return nil
			}
			if n++; n-1 != step {
				return nil
			}
			agent = true
			defer func() { agent = false }()
			recorded = c.has(netspec.RemovedNodesKVPrefix + id)
			leases, _ := c.st.Leases(ctx, lan.Name)
			leased = slices.Contains(slices.Collect(maps.Values(leases)), id)
			errs = agentWrites(ctx, c.kv, id)
			return nil
		}
		_, err := Remove(ctx, c.kv, sw, id, Options{Stale: time.Minute})
		c.kv.Hook = nil
		if err != nil {
			t.Fatalf("step %d: removal: %v", step, err)
		}
		if recorded {
			for i, err := range errs {
				// A lease the node holds still is found, not written.
				if i == 0 && leased && err == nil {
					continue
				}
				if !errors.Is(err, netspec.ErrNodeRemoved) {
					t.Errorf("step %d: the agent's write %d once the removal was recorded: %v, want %v", step, i, err, netspec.ErrNodeRemoved)
				}
			}
		}
		if left := c.leftOf(t, id); len(left) > 0 {
			t.Errorf("step %d of %d (recorded: %v): left of the node after its removal: %v", step, calls, recorded, left)
		}
	}
}

// TestRemoveResumes: a removal cut short at any of its calls (Consul out
// of reach) is finished by running it again: nothing of the node is left,
// and the record is the first run's when it wrote one.
func TestRemoveResumes(t *testing.T) {
	ctx := context.Background()
	const id = "gone000000000000000000000"
	sw := swarmNodes{"live000000000000000000000": "ready"}
	calls := removalCalls(t, sw, id)
	for step := range calls {
		c := newCluster(t)
		n := 0
		c.kv.Hook = func(string, []string) error {
			if n++; n-1 == step {
				return kvtest.ErrUnreachable
			}
			return nil
		}
		if _, err := Remove(ctx, c.kv, sw, id, Options{Stale: time.Minute, By: "first"}); !errors.Is(err, kvtest.ErrUnreachable) {
			t.Fatalf("step %d: removal with Consul out of reach: %v", step, err)
		}
		c.kv.Hook = nil
		first, recorded, err := c.st.Removal(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Remove(ctx, c.kv, sw, id, Options{Stale: time.Minute, By: "again"})
		if err != nil {
			t.Fatalf("step %d: removal run again: %v", step, err)
		}
		if left := c.leftOf(t, id); len(left) > 0 {
			t.Errorf("step %d: left of the node after the removal run again: %v", step, left)
		}
		r, found, err := c.st.Removal(ctx, id)
		switch {
		case err != nil || !found || got.Recorded != netspec.RemovedNodesKVPrefix+id:
			t.Errorf("step %d: record after the removal run again: %+v, %v, %v (said %q)", step, r, found, err, got.Recorded)
		case recorded && (r.By != "first" || !r.RemovedAt.Equal(first.RemovedAt)):
			t.Errorf("step %d: record %+v after the removal run again, want the first run's, %+v", step, r, first)
		}
	}
}

// TestRemoveRefusesAgentClaimingAbsentFacts: node rm of a node with no
// facts records the removal alone; an agent claiming the facts just
// before has the removal refused, nothing recorded nor removed, since
// its writes, which check its facts unchanged (netspec.RemovedGuard),
// would land after a record written next to them.
func TestRemoveRefusesAgentClaimingAbsentFacts(t *testing.T) {
	ctx := context.Background()
	const id = "gone000000000000000000000"
	c := newCluster(t)
	c.kv.Delete(ctx, netspec.NodesKVPrefix+id)
	var started bool
	c.kv.Hook = func(call string, keys []string) error {
		if started || call != "txn" || !slices.Contains(keys, netspec.RemovedNodesKVPrefix+id) {
			return nil
		}
		started = true
		c.facts(t, id, "old", time.Now())
		return nil
	}
	got, err := Remove(ctx, c.kv, swarmNodes{"live000000000000000000000": "ready"}, id, Options{Stale: time.Minute})
	c.kv.Hook = nil
	if !started {
		t.Fatal("set-up: the agent never started")
	}
	if !errors.Is(err, ErrRefused) || c.has(netspec.RemovedNodesKVPrefix+id) {
		t.Errorf("remove as the agent claimed the facts: %v, recorded %v; want refused, nothing recorded", err, c.has(netspec.RemovedNodesKVPrefix+id))
	}
	if len(got.Ranges)+len(got.Reports)+len(got.Addresses)+len(got.Keys)+len(got.Changed) != 0 {
		t.Errorf("removed %+v; want nothing", got)
	}
}

// TestRemoveManyKeys: Consul takes at most 64 operations in one
// transaction (kvstore.MaxTxnOps), and a removal with every key of a
// node in one would be refused whole, or split, half-applied. Remove
// writes each key in its own transaction (a key's get and delete, a
// block's rewrite with its checks, the facts' hold with the record), so
// a node with ranges and reports on 70 networks and addresses in 70
// blocks is removed whole, no transaction near the limit.
func TestRemoveManyKeys(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	const n = 70
	const gone = "gone000000000000000000000"
	for i := range n {
		s := netspec.Spec{Name: fmt.Sprintf("net%02d", i), Subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 16, byte(i), 0}), 24),
			Gateway: netip.AddrFrom4([4]byte{172, 16, byte(i), 1}), Parent: fmt.Sprintf("eth2.%d", 100+i), IPAM: netspec.PerNode, PerNodeSize: 64}
		if err := c.st.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.st.Lease(ctx, s, gone); err != nil {
			t.Fatal(err)
		}
		if err := c.st.Report(ctx, s.Name, netspec.NodeState{ID: gone, Node: "old", State: netspec.StateReady}); err != nil {
			t.Fatal(err)
		}
	}
	p, _ := ipam.PoolOf(pool, false)
	a := ipam.NewAllocator(c.kv, gone, nil)
	blocks := map[netip.Prefix]bool{}
	for i := 0; len(blocks) < n; i++ {
		addr, err := a.Allocate(ctx, p, netip.AddrFrom4([4]byte{10, 20, byte(1 + i), 10}), ipam.KindTask)
		if err != nil {
			t.Fatal(err)
		}
		blocks[p.Block(addr)] = true
	}
	most := 0
	c.kv.Hook = func(call string, keys []string) error {
		most = max(most, len(keys))
		return nil
	}
	got, err := Remove(ctx, c.kv, swarmNodes{"live000000000000000000000": "ready"}, "old", Options{Stale: time.Minute})
	if err != nil {
		t.Fatalf("Remove: %v (largest transaction %d operations)", err, most)
	}
	if len(got.Ranges) != n+1 || len(got.Reports) != n+2 || len(got.Addresses[p.ID()]) < n {
		t.Errorf("removed %d networks' ranges, %d reports, %d addresses; want %d, %d, at least %d", len(got.Ranges), len(got.Reports), len(got.Addresses[p.ID()]), n+1, n+2, n)
	}
	t.Logf("largest transaction: %d operations", most)
	if most > 4 {
		t.Errorf("a transaction of %d operations: want each key in its own, far from Consul's %d", most, kvstore.MaxTxnOps)
	}
	keys, _ := c.kv.Keys(ctx, "")
	for _, k := range keys {
		if strings.Contains(k, gone) && k != netspec.RemovedNodesKVPrefix+gone { // the record stays
			t.Errorf("%s left after the removal", k)
		}
	}
	allocs, _ := ipam.Allocations(ctx, c.kv, p)
	for addr, al := range allocs {
		if al.Node == gone {
			t.Errorf("%s still allocated to %s", addr, gone)
		}
	}
}
