package adapter

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/underlay/underlay/internal/dashboard"
	"github.com/underlay/underlay/internal/doctor"
	"github.com/underlay/underlay/internal/inventory"
	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/kvstore"
	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/shellword"
)

// memKV is the in-memory store, with blocking queries that never fire.
type memKV struct{ *kvtest.KV }

func (memKV) Watch(context.Context, string) <-chan struct{} { return nil }

// listCounter counts the listings of each prefix of a store.
type listCounter struct {
	mu     sync.Mutex
	listed map[string]int
}

func countLists(kv *kvtest.KV) *listCounter {
	c := &listCounter{listed: map[string]int{}}
	kv.Hook = func(call string, keys []string) error {
		if call == "list" {
			c.mu.Lock()
			c.listed[keys[0]]++
			c.mu.Unlock()
		}
		return nil
	}
	return c
}

func (c *listCounter) get(prefix string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.listed[prefix]
}

// runRefreshes runs a dashboard server over src until it published a
// snapshot, and returns that snapshot once the server stopped.
func runRefreshes(t *testing.T, src dashboard.Sources) dashboard.Snapshot {
	t.Helper()
	srv, err := dashboard.New(dashboard.Config{Sources: src, Refresh: time.Hour, IdleRefresh: time.Hour},
		slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for srv.Snapshot() == nil {
		if time.Now().After(deadline) {
			cancel()
			t.Fatal("no snapshot within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// A refresh under way when Run ends reads every source to the end.
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var snap dashboard.Snapshot
	if err := json.Unmarshal(srv.Snapshot(), &snap); err != nil {
		t.Fatal(err)
	}
	return snap
}

// fixedSwarm is a swarm of the nodes given, running nothing.
type fixedSwarm []dashboard.SwarmNode

func (s fixedSwarm) Nodes(context.Context) ([]dashboard.SwarmNode, error)     { return s, nil }
func (fixedSwarm) Services(context.Context) ([]dashboard.SwarmService, error) { return nil, nil }
func (fixedSwarm) Tasks(context.Context) ([]dashboard.SwarmTask, error)       { return nil, nil }
func (fixedSwarm) Changes(context.Context) <-chan struct{}                    { return nil }

// TestStoreReadsNodeFactsOncePerRefresh: each refresh listed the node
// facts twice, to check the inventories and to judge the agents: a node
// publishing between the two reads made them disagree (an inventory
// checked against facts the agents' list did not have), and every refresh
// loaded Consul twice. The facts are now read once per refresh and handed
// to both.
func TestStoreReadsNodeFactsOncePerRefresh(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	kv.Put(ctx, netspec.NodesKVPrefix+"id10000000000000000000000", []byte(`{"id":"id10000000000000000000000","node":"n1","interfaces":["eth0"],"updated_at":"2026-12-03T12:00:00Z"}`))
	if err := inventory.Publish(ctx, kv, "id10000000000000000000000", []inventory.Entry{{IP: "10.0.0.5", Node: "n1", Network: "lan", Container: "a"}}); err != nil {
		t.Fatal(err)
	}
	lists := countLists(kv)
	runRefreshes(t, dashboard.Sources{Store: NewStore(memKV{kv}, "")})
	facts, invs := lists.get(netspec.NodesKVPrefix), lists.get(inventory.KVPrefix)
	if invs == 0 || facts != invs {
		t.Errorf("%d refresh(es) (listings of %s) listed %s %d times, want once each", invs, inventory.KVPrefix, netspec.NodesKVPrefix, facts)
	}
}

// TestStoreShowsMisfiledFacts: a node facts document naming another
// identity than its key's (netspec.MisfiledFacts), which node ls and node
// rm warn of, was dropped by the dashboard, though it took the document
// as its node's facts (the agent's heartbeat). It is now the nodes/facts
// warning of the node the document is listed as, among its doctor
// problems, with the doctor's text and fix, once even when that node's
// own report has it too.
func TestStoreShowsMisfiledFacts(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	kv.Put(ctx, netspec.NodesKVPrefix+"id10000000000000000000000", []byte(`{"id":"id10000000000000000000000","node":"n1","interfaces":["eth0"],"updated_at":"2026-12-03T12:00:00Z"}`))
	key := netspec.NodesKVPrefix + "id20000000000000000000000"
	kv.Put(ctx, key, []byte(`{"id":"id90000000000000000000000","node":"n2","interfaces":["eth0"],"updated_at":"2026-12-03T12:00:00Z"}`))
	misfiled := doctor.MisfiledResult(netspec.MisfiledFacts{Key: key, Names: "id90000000000000000000000"})
	swarm := fixedSwarm{{ID: "id10000000000000000000000", Hostname: "n1", State: "ready"}, {ID: "id20000000000000000000000", Hostname: "n2", State: "ready"}, {ID: "id30000000000000000000000", Hostname: "n3", State: "ready"}}
	report := func(node string, rs ...doctor.Result) {
		t.Helper()
		r := doctor.Report{Node: node, NodeID: map[string]string{"n1": "id10000000000000000000000", "n2": "id20000000000000000000000"}[node], At: time.Now().UTC(), Every: time.Minute, Results: append([]doctor.Result{{Check: "kernel/macvlan", Status: doctor.OK}}, rs...)}
		if err := doctor.Publish(ctx, kv, r); err != nil {
			t.Fatal(err)
		}
	}
	problems := func(snap dashboard.Snapshot) map[string][]dashboard.DoctorResult {
		out := map[string][]dashboard.DoctorResult{}
		for _, n := range snap.Nodes {
			if n.Doctor != nil {
				for _, p := range n.Doctor.Problems {
					if p.Check == "nodes/facts" {
						out[n.Name] = append(out[n.Name], p)
					}
				}
			}
		}
		return out
	}
	want := []dashboard.DoctorResult{{Check: misfiled.Check, Status: string(misfiled.Status), Message: misfiled.Message, Fix: misfiled.Fix}}
	for _, tt := range []struct {
		name    string
		reports func()
	}{
		{"no report", func() {}},
		{"a report without it", func() { report("n2") }},
		{"a report with it", func() { report("n2", misfiled) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			kv.DeleteTree(ctx, doctor.KVPrefix)
			tt.reports()
			report("n1")
			got := problems(runRefreshes(t, dashboard.Sources{Swarm: swarm, Store: NewStore(memKV{kv}, "")}))
			if d := cmp.Diff(map[string][]dashboard.DoctorResult{"n2": want}, got); d != "" {
				t.Errorf("nodes/facts problems by node (-want +got):\n%s", d)
			}
		})
	}
}

// TestStoreShowsMisfiledFactsOfNoNode: a misfiled facts document naming
// no node (node "") was the nodes/facts warning of a node named "",
// which has no column on the page: nobody saw it. A warning of a node
// the page has no column for is now among the cluster's problems. (Under
// the key of a swarm node listed, id2's, it is that node's: the swarm
// node ID its key names finds its column.)
func TestStoreShowsMisfiledFactsOfNoNode(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	kv.Put(ctx, netspec.NodesKVPrefix+"id10000000000000000000000", []byte(`{"id":"id10000000000000000000000","node":"n1","interfaces":["eth0"],"updated_at":"2026-12-03T12:00:00Z"}`))
	key := netspec.NodesKVPrefix + "id40000000000000000000000"
	kv.Put(ctx, key, []byte(`{"id":"id90000000000000000000000","node":"","interfaces":["eth0"],"updated_at":"2026-12-03T12:00:00Z"}`))
	misfiled := doctor.MisfiledResult(netspec.MisfiledFacts{Key: key, Names: "id90000000000000000000000"})
	swarm := fixedSwarm{{ID: "id10000000000000000000000", Hostname: "n1", State: "ready"}, {ID: "id20000000000000000000000", Hostname: "n2", State: "ready"}, {ID: "id30000000000000000000000", Hostname: "n3", State: "ready"}}
	snap := runRefreshes(t, dashboard.Sources{Swarm: swarm, Store: NewStore(memKV{kv}, "")})
	want := []dashboard.DoctorResult{{Check: misfiled.Check, Status: string(misfiled.Status), Message: misfiled.Message, Fix: misfiled.Fix}}
	if d := cmp.Diff(want, snap.Problems); d != "" {
		t.Errorf("the cluster's problems (-want +got):\n%s", d)
	}
	for _, n := range snap.Nodes {
		if n.Doctor != nil && len(n.Doctor.Problems) > 0 {
			t.Errorf("node %s has doctor problems %+v, want none", n.Name, n.Doctor.Problems)
		}
	}
}

// TestStoreDuplicateFactsNewestWins: two facts documents naming one node
// (it joined the swarm again under a new identity, the old one's facts
// remain) each set the node's heartbeat, the one read last winning: by
// the order of their IDs, a stale document hid a live agent. The newest
// is now the heartbeat, in either order, and each older one is a
// nodes/facts warning of the node, with the node rm that removes it.
func TestStoreDuplicateFactsNewestWins(t *testing.T) {
	for _, tt := range []struct{ name, live, stale string }{
		{"stale one read last", "ida0000000000000000000000", "idb0000000000000000000000"},
		{"stale one read first", "idb0000000000000000000000", "ida0000000000000000000000"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			kv := kvtest.New()
			put := func(id string, at time.Time) {
				kv.Put(ctx, netspec.NodesKVPrefix+id, []byte(`{"id":"`+id+`","node":"n1","interfaces":["eth0"],"updated_at":"`+at.Format(time.RFC3339Nano)+`"}`))
			}
			now := time.Now().UTC()
			put(tt.live, now.Add(-5*time.Second))
			put(tt.stale, now.Add(-time.Hour))
			swarm := fixedSwarm{{ID: tt.live, Hostname: "n1", State: "ready"}}
			snap := runRefreshes(t, dashboard.Sources{Swarm: swarm, Store: NewStore(memKV{kv}, "")})
			if len(snap.Nodes) != 1 {
				t.Fatalf("nodes %+v, want n1", snap.Nodes)
			}
			n := snap.Nodes[0]
			if n.Agent.State != dashboard.AgentUp {
				t.Errorf("n1's agent is %s, want up: its newest facts are 5s old", n.Agent.State)
			}
			var warns []dashboard.DoctorResult
			if n.Doctor != nil {
				warns = n.Doctor.Problems
			}
			if len(warns) != 1 || warns[0].Check != "nodes/facts" || warns[0].Status != "warn" ||
				!strings.Contains(warns[0].Message, "swarm node "+tt.stale) || !strings.Contains(warns[0].Message, "swarm node "+tt.live) ||
				!strings.HasPrefix(warns[0].Fix, "underlay node rm "+tt.stale+" ") {
				t.Errorf("n1's doctor problems %+v, want a nodes/facts warning naming %s's facts as stale, with underlay node rm %s", warns, tt.stale, tt.stale)
			}
		})
	}
}

// TestStoreReadsBothPools: the store read a cluster-IPAM network's IPv4
// pool only, so the dashboard could not show the IPv6 one `underlay ips`
// lists. It now reads both: an IPv6 allocation and shim are in the
// network's IPv6 pool, and its block is one of the pool's regions, while
// the IPv4 pool keeps its own.
func TestStoreReadsBothPools(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	s := netspec.Spec{Name: "web", Subnet: netip.MustParsePrefix("10.9.0.0/24"), Gateway: netip.MustParseAddr("10.9.0.1"),
		Parent: "eth1", IPAM: netspec.Cluster, IPv6Subnet: netip.MustParsePrefix("fd00:9::/64")}
	if err := netspec.NewStore(kv).Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	alloc := ipam.NewAllocator(kv, "node-id-1", nil)
	var got []netip.Addr
	for _, v6 := range []bool{false, true} {
		pool, _ := ipam.PoolOf(s, v6)
		a, err := alloc.Allocate(ctx, pool, netip.Addr{}, ipam.KindTask)
		if err != nil {
			t.Fatal(err)
		}
		shim, err := alloc.Shim(ctx, pool)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, a, shim)
	}
	snap := runRefreshes(t, dashboard.Sources{Store: NewStore(memKV{kv}, "")})
	if len(snap.Networks) != 1 || snap.Networks[0].IPv6Pool == nil {
		t.Fatalf("networks %+v, want web with its IPv6 pool", snap.Networks)
	}
	n := snap.Networks[0]
	states := func(p dashboard.Pool) map[string]string {
		out := map[string]string{}
		for _, a := range p.Addresses {
			out[a.IP] = a.State
		}
		return out
	}
	v4, v6 := states(n.Pool), states(*n.IPv6Pool)
	for i, a := range got {
		in, other := v4, v6
		if a.Is6() {
			in, other = v6, v4
		}
		want := dashboard.StateTask // allocated just now: a container being started
		if i%2 == 1 {
			want = dashboard.StateReserved // the shim
		}
		if in[a.String()] != want || other[a.String()] != "" {
			t.Errorf("%s: %q in its family's pool and %q in the other's, want %q and none", a, in[a.String()], other[a.String()], want)
		}
	}
	if len(n.IPv6Pool.Regions) != 1 || n.IPv6Pool.Regions[0].Kind != "block" || !netip.MustParsePrefix(n.IPv6Pool.Regions[0].Prefix).Contains(got[2]) {
		t.Errorf("IPv6 regions %+v, want the block of %s", n.IPv6Pool.Regions, got[2])
	}
	if len(n.Pool.Regions) != 1 || !netip.MustParsePrefix(n.Pool.Regions[0].Prefix).Contains(got[0]) {
		t.Errorf("IPv4 regions %+v, want the block of %s only", n.Pool.Regions, got[0])
	}
}

// TestStoreNamesRefusedSpecs: the store listed every readable spec as a
// network, a spec the agents refuse too (a forged one overlapping a
// network, which makes both refused): the dashboard showed both as
// working, with pools. Each network now says why it is refused.
func TestStoreNamesRefusedSpecs(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	s := netspec.Spec{Name: "web", Subnet: netip.MustParsePrefix("10.9.0.0/24"), Gateway: netip.MustParseAddr("10.9.0.1"),
		Parent: "eth1", IPAM: netspec.Cluster}
	if err := netspec.NewStore(kv).Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	lan := netspec.Spec{Name: "lan", Subnet: netip.MustParsePrefix("10.8.0.0/24"), Gateway: netip.MustParseAddr("10.8.0.1"),
		Parent: "eth2", IPAM: netspec.PerNode, PerNodeSize: 16}
	if err := netspec.NewStore(kv).Create(ctx, lan); err != nil {
		t.Fatal(err)
	}
	evil := netspec.Spec{Name: "evil", Subnet: netip.MustParsePrefix("10.9.0.0/16"), Gateway: netip.MustParseAddr("10.9.0.1"),
		Parent: "eth1", IPAM: netspec.Cluster}
	b, err := json.Marshal(evil)
	if err != nil {
		t.Fatal(err)
	}
	kv.Put(ctx, netspec.KVPrefix+"evil/spec", b) // past network create, which refuses it
	snap := runRefreshes(t, dashboard.Sources{Store: NewStore(memKV{kv}, "")})
	got := map[string]string{}
	for _, n := range snap.Networks {
		got[n.Name] = n.Refused
		if n.Refused != "" && len(n.Pool.Addresses) != 0 {
			t.Errorf("refused network %s has a pool: %+v", n.Name, n.Pool)
		}
	}
	if len(got) != 3 || got["lan"] != "" || !strings.Contains(got["web"], "overlaps") || !strings.Contains(got["evil"], "overlaps") {
		t.Errorf("networks' refusals %q, want web and evil refused (overlapping), lan not", got)
	}
}

// TestStoreCountsOmittedDoctorResults: a node's doctor report too large
// for one Consul key is published without some of its results (the OK
// ones first), with counts of those left out. The node's counts on the
// page are of every result, and its problems left out of the report are
// counted among those not listed.
func TestStoreCountsOmittedDoctorResults(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	kv.Put(ctx, netspec.NodesKVPrefix+"id10000000000000000000000", []byte(`{"id":"id10000000000000000000000","node":"n1","interfaces":["eth0"],"updated_at":"2026-12-03T12:00:00Z"}`))
	swarm := fixedSwarm{{ID: "id10000000000000000000000", Hostname: "n1", State: "ready"}}
	for _, tt := range []struct{ ok, warn, fail int }{{6000, 10, 30}, {10, 5, 200}} {
		var rs []doctor.Result
		add := func(n int, st doctor.Status, size int) {
			for i := range n {
				rs = append(rs, doctor.Result{Node: "n1", Check: fmt.Sprintf("network/net-%04d/%s", i, st), Status: st, Message: strings.Repeat("m", size)})
			}
		}
		add(tt.ok, doctor.OK, 200)
		add(tt.warn, doctor.Warn, 1024)
		add(tt.fail, doctor.Fail, 4096)
		if err := doctor.Publish(ctx, kv, doctor.Report{Node: "n1", NodeID: "id10000000000000000000000", At: time.Now().UTC(), Every: time.Minute, Results: rs}); err != nil {
			t.Fatal(err)
		}
		p, _, _ := kv.Get(ctx, doctor.IDPrefix+"id10000000000000000000000")
		var r struct{ Omitted *struct{ OK int } }
		if err := json.Unmarshal(p.Value, &r); err != nil || r.Omitted == nil {
			t.Fatalf("%+v: the report was published whole; make it larger", tt)
		}
		snap := runRefreshes(t, dashboard.Sources{Swarm: swarm, Store: NewStore(memKV{kv}, "")})
		d := snap.Nodes[0].Doctor
		if d == nil {
			t.Fatalf("%+v: node n1 has no doctor report", tt)
		}
		if d.OK != tt.ok || d.Warn != tt.warn || d.Fail != tt.fail {
			t.Errorf("%+v: node n1's doctor counts %d ok, %d warn, %d fail; want those", tt, d.OK, d.Warn, d.Fail)
		}
		if len(d.Problems)+d.ProblemsOmitted != tt.warn+tt.fail {
			t.Errorf("%+v: %d problems listed, %d not: want %d in all", tt, len(d.Problems), d.ProblemsOmitted, tt.warn+tt.fail)
		}
	}
}

// TestStoreCountsCappedDoctorRows: a check shows its first doctor.MaxRows
// rows and one standing for the rest, with their worst status; the page
// counted that row as one, so 50 keys that cannot be read were 21
// failures. The node's counts are of every row, and the problems the row
// stands for, past itself, are counted among those not listed.
func TestStoreCountsCappedDoctorRows(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	kv.Put(ctx, netspec.NodesKVPrefix+"id10000000000000000000000", []byte(`{"id":"id10000000000000000000000","node":"n1","interfaces":["eth0"],"updated_at":"2026-12-03T12:00:00Z"}`))
	var bad []doctor.BadKey
	for i := range 50 {
		bad = append(bad, doctor.BadKey{Key: fmt.Sprintf("underlay/ipam/lan/v4/blocks/%d", i), Problem: "not JSON", Fix: "consul kv delete x"})
	}
	rs := append(doctor.EvalIPAMDocuments("lan/v4", bad, nil), doctor.Result{Check: "docker/daemon", Status: doctor.OK, Message: "answers"})
	if len(rs) != doctor.MaxRows+2 {
		t.Fatalf("%d rows; want %d shown, one counting the rest, and one more", len(rs), doctor.MaxRows+2)
	}
	if err := doctor.Publish(ctx, kv, doctor.Report{Node: "n1", NodeID: "id10000000000000000000000", At: time.Now().UTC(), Every: time.Minute, Results: rs}); err != nil {
		t.Fatal(err)
	}
	snap := runRefreshes(t, dashboard.Sources{Swarm: fixedSwarm{{ID: "id10000000000000000000000", Hostname: "n1", State: "ready"}}, Store: NewStore(memKV{kv}, "")})
	d := snap.Nodes[0].Doctor
	if d == nil {
		t.Fatal("node n1 has no doctor report")
	}
	if d.OK != 1 || d.Warn != 0 || d.Fail != 50 {
		t.Errorf("node n1's doctor counts %d ok, %d warn, %d fail; want 1, 0, 50", d.OK, d.Warn, d.Fail)
	}
	if len(d.Problems) != doctor.MaxRows+1 || len(d.Problems)+d.ProblemsOmitted != 50 {
		t.Errorf("%d problems listed, %d not: want the %d rows listed and 50 in all", len(d.Problems), d.ProblemsOmitted, doctor.MaxRows+1)
	}
	if snap.Summary.DoctorFailures != 50 {
		t.Errorf("summary counts %d failed doctor checks, want 50", snap.Summary.DoctorFailures)
	}
}

// TestStoreTellsSameNameAgentsApart: two swarm nodes whose agents use one
// node name each showed the newest facts' heartbeat, so the dead agent
// of one hid behind the other's. Each identity's facts are now an agent
// of their own, matched to its swarm node by ID.
func TestStoreTellsSameNameAgentsApart(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	put := func(id string, at time.Time) {
		kv.Put(ctx, netspec.NodesKVPrefix+id, []byte(`{"id":"`+id+`","node":"n1","interfaces":["eth0"],"updated_at":"`+at.Format(time.RFC3339Nano)+`"}`))
	}
	now := time.Now().UTC()
	put("ida0000000000000000000000", now.Add(-5*time.Second))
	put("idb0000000000000000000000", now.Add(-time.Hour))
	swarm := fixedSwarm{{ID: "ida0000000000000000000000", Hostname: "n1", State: "ready"}, {ID: "idb0000000000000000000000", Hostname: "n1", State: "ready"}}
	snap := runRefreshes(t, dashboard.Sources{Swarm: swarm, Store: NewStore(memKV{kv}, "")})
	got := map[string]string{}
	for _, n := range snap.Nodes {
		got[n.ID] = n.Agent.State
	}
	if want := map[string]string{"ida0000000000000000000000": dashboard.AgentUp, "idb0000000000000000000000": dashboard.AgentStale}; !maps.Equal(got, want) {
		t.Errorf("agents by swarm node %v, want %v", got, want)
	}
}

// TestStoreDuplicateWarningIsStable: two live agents using one node name
// each refresh their facts in turn, and the nodes/facts warning called
// whichever had refreshed last the heartbeat and the other the stale one,
// with its refresh time: the warning alternated between the two from one
// refresh to the next, and the page flickered. Agents refreshing within
// a heartbeat's staleness of each other are now named together, in ID
// order, whichever refreshed last.
func TestStoreDuplicateWarningIsStable(t *testing.T) {
	ctx := context.Background()
	s := NewStore(memKV{kvtest.New()}, "")
	now := time.Now().UTC()
	warnings := func(aAt, bAt time.Time) []dashboard.DoctorResult {
		facts := []netspec.NodeFacts{{ID: "idb0000000000000000000000", Node: "n1", UpdatedAt: bAt}, {ID: "ida0000000000000000000000", Node: "n1", UpdatedAt: aAt}}
		as, err := s.Agents(ctx, facts, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(as) != 2 {
			t.Fatalf("agents %+v, want one of each identity", as)
		}
		if !cmp.Equal(as[0].Warnings, as[1].Warnings) {
			t.Errorf("the identities' warnings differ: %+v and %+v", as[0].Warnings, as[1].Warnings)
		}
		return as[0].Warnings
	}
	aLast := warnings(now.Add(-time.Second), now.Add(-5*time.Second))
	bLast := warnings(now.Add(-10*time.Second), now.Add(-2*time.Second))
	if diff := cmp.Diff(aLast, bLast); diff != "" {
		t.Errorf("the warning changed when the other agent refreshed last (-a last +b last):\n%s", diff)
	}
	if len(aLast) != 1 || !strings.Contains(aLast[0].Message, "swarm node ida0000000000000000000000") || !strings.Contains(aLast[0].Message, "swarm node idb0000000000000000000000") ||
		strings.Index(aLast[0].Message, "ida0000000000000000000000") > strings.Index(aLast[0].Message, "idb0000000000000000000000") {
		t.Errorf("warnings %+v, want one naming swarm nodes ida0000000000000000000000 and idb0000000000000000000000, in that order", aLast)
	}
}

// TestStoreGivesEachNodeOfANameItsOwnReport: two swarm nodes of one name
// published their doctor reports under the name, one hiding the other's.
// Each report is now under its swarm node ID, and each node shows its
// own; n1's report under the name, from before its agents were upgraded,
// is shown on neither. A report under the name naming one of them is
// that node's only (n2's: id3's agent is older and published none).
func TestStoreGivesEachNodeOfANameItsOwnReport(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	swarm := fixedSwarm{}
	for id, name := range map[string]string{"id10000000000000000000000": "n1", "id20000000000000000000000": "n1", "id30000000000000000000000": "n2", "id40000000000000000000000": "n2"} {
		kv.Put(ctx, netspec.NodesKVPrefix+id, fmt.Appendf(nil, `{"id":%q,"node":%q,"interfaces":["eth0"],"updated_at":"2026-12-03T12:00:00Z"}`, id, name))
		swarm = append(swarm, dashboard.SwarmNode{ID: id, Hostname: name, State: "ready"})
	}
	for _, r := range []doctor.Report{{Node: "n1", NodeID: "id10000000000000000000000"}, {Node: "n1", NodeID: "id20000000000000000000000"}, {Node: "n2", NodeID: "id40000000000000000000000"}} {
		r.At, r.Every, r.Results = time.Now().UTC(), time.Minute, []doctor.Result{{Check: "x", Status: doctor.Fail, Message: "on " + r.NodeID}}
		if err := doctor.Publish(ctx, kv, r); err != nil {
			t.Fatal(err)
		}
	}
	kv.Put(ctx, doctor.KVPrefix+"n1", fmt.Appendf(nil, `{"node":"n1","at":%q,"every":60000000000,"results":[{"check":"x","status":"fail","message":"on n1"}]}`, time.Now().UTC().Format(time.RFC3339)))
	kv.Delete(ctx, doctor.IDPrefix+"id40000000000000000000000")
	kv.Put(ctx, doctor.KVPrefix+"n2", fmt.Appendf(nil, `{"node":"n2","node_id":"id40000000000000000000000","at":%q,"every":60000000000,"results":[{"check":"x","status":"fail","message":"on id40000000000000000000000, by name"}]}`, time.Now().UTC().Format(time.RFC3339)))
	snap := runRefreshes(t, dashboard.Sources{Swarm: swarm, Store: NewStore(memKV{kv}, "")})
	got := map[string][]string{}
	for _, n := range snap.Nodes {
		got[n.ID] = []string{}
		if n.Doctor != nil {
			for _, p := range n.Doctor.Problems {
				if p.Check == "x" { // not the name's nodes/facts warning
					got[n.ID] = append(got[n.ID], p.Message)
				}
			}
		}
	}
	want := map[string][]string{"id10000000000000000000000": {"on id10000000000000000000000"}, "id20000000000000000000000": {"on id20000000000000000000000"}, "id30000000000000000000000": {}, "id40000000000000000000000": {"on id40000000000000000000000, by name"}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("doctor problems by node (-want +got):\n%s", d)
	}
}

// TestStoreShowsAnOlderAgentsReportBesideAnUpgradedOne: two swarm nodes
// of name n1, id1's agent upgraded (its report under its ID), id2's older
// (its report under the name). The name's report was left out as id1's
// from before its upgrade, and id2 showed no doctor report until its
// agent was upgraded. It is now id2's (the name's, shared), id1 keeps its
// own.
func TestStoreShowsAnOlderAgentsReportBesideAnUpgradedOne(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	swarm := fixedSwarm{}
	for _, id := range []string{"id10000000000000000000000", "id20000000000000000000000"} {
		kv.Put(ctx, netspec.NodesKVPrefix+id, fmt.Appendf(nil, `{"id":%q,"node":"n1","interfaces":["eth0"],"updated_at":"2026-12-03T12:00:00Z"}`, id))
		swarm = append(swarm, dashboard.SwarmNode{ID: id, Hostname: "n1", State: "ready"})
	}
	r := doctor.Report{Node: "n1", NodeID: "id10000000000000000000000", At: time.Now().UTC(), Every: time.Minute, Results: []doctor.Result{{Check: "x", Status: doctor.Fail, Message: "on id10000000000000000000000"}}}
	if err := doctor.Publish(ctx, kv, r); err != nil {
		t.Fatal(err)
	}
	kv.Put(ctx, doctor.KVPrefix+"n1", fmt.Appendf(nil, `{"node":"n1","at":%q,"every":60000000000,"results":[{"check":"x","status":"fail","message":"on id20000000000000000000000, by name"}]}`, time.Now().UTC().Format(time.RFC3339)))
	snap := runRefreshes(t, dashboard.Sources{Swarm: swarm, Store: NewStore(memKV{kv}, "")})
	got := map[string][]string{}
	for _, n := range snap.Nodes {
		got[n.ID] = []string{}
		if n.Doctor != nil {
			for _, p := range n.Doctor.Problems {
				if p.Check == "x" {
					got[n.ID] = append(got[n.ID], p.Message)
				}
			}
		}
	}
	want := map[string][]string{"id10000000000000000000000": {"on id10000000000000000000000"}, "id20000000000000000000000": {"on id20000000000000000000000, by name"}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("doctor problems by node (-want +got):\n%s", d)
	}
}

// TestStoreShowsANameReportNoNodeIsGiven: n1's only swarm node (ida)
// publishes its doctor report under its ID, naming node n2 (its agent's
// --node changed since its facts, naming n1, were written), and an older
// agent's report is under the name n1. The dashboard gives the name's
// report to none of the name's nodes (each has its own), so its results
// were shown nowhere. It is now a failed doctor/report check among n1's
// problems, naming its key and why no node shows it, with its fix.
func TestStoreShowsANameReportNoNodeIsGiven(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	const id = "ida0000000000000000000000"
	kv.Put(ctx, netspec.NodesKVPrefix+id, fmt.Appendf(nil, `{"id":%q,"node":"n1","interfaces":["eth0"],"updated_at":"2026-12-03T12:00:00Z"}`, id))
	if err := doctor.Publish(ctx, kv, doctor.Report{Node: "n2", NodeID: id, At: time.Now().UTC(), Every: time.Minute, Results: []doctor.Result{{Check: "x", Status: doctor.OK}}}); err != nil {
		t.Fatal(err)
	}
	key := doctor.KVPrefix + "n1"
	kv.Put(ctx, key, fmt.Appendf(nil, `{"node":"n1","at":%q,"every":60000000000,"results":[{"check":"x","status":"fail","message":"by name"}]}`, time.Now().UTC().Format(time.RFC3339)))
	snap := runRefreshes(t, dashboard.Sources{Swarm: fixedSwarm{{ID: id, Hostname: "n1", State: "ready"}}, Store: NewStore(memKV{kv}, "")})
	var shown []dashboard.DoctorResult
	for _, n := range snap.Nodes {
		if n.Doctor != nil {
			shown = append(shown, n.Doctor.Problems...)
		}
	}
	shown = append(shown, snap.Problems...)
	if !slices.ContainsFunc(shown, func(p dashboard.DoctorResult) bool {
		return p.Check == "doctor/report" && p.Status == "fail" && strings.Contains(p.Message, "report "+key+",") &&
			strings.Contains(p.Message, "is shown on no node") && strings.Contains(p.Fix, shellword.KVDelete(key))
	}) {
		t.Errorf("doctor problems %+v; want the failed doctor/report check of %s, saying why no node shows it, with its fix", shown, key)
	}
}

// TestStoreShowsRefusedReportsOfNoNode: a doctor report LoadReports
// refuses is its key's failed doctor/report check, with the command that
// deletes it, shown on its node. One under a key naming no node (the ID
// layout's prefix itself, a nested key, an ID no node has, a name no
// node has) was shown nowhere: the operator never learnt of it. It is
// among the cluster's problems, as is one under a name no node can have
// (a space, "..", a newline), which was read as that name's report.
func TestStoreShowsRefusedReportsOfNoNode(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	kv.Put(ctx, netspec.NodesKVPrefix+"id10000000000000000000000", []byte(`{"id":"id10000000000000000000000","node":"n1","interfaces":["eth0"],"updated_at":"2026-12-03T12:00:00Z"}`))
	keys := []string{doctor.IDPrefix, doctor.IDPrefix + "a/b", doctor.IDPrefix + "idz0000000000000000000000", doctor.KVPrefix + "zz"}
	for _, k := range keys {
		kv.Put(ctx, k, []byte(`garbage`))
	}
	// Under keys naming no swarm node ID, each naming its key's ID as
	// its own: read as those IDs' reports before.
	for _, id := range []string{"a b", "ID10000000000000000000000", "id1"} {
		kv.Put(ctx, doctor.IDPrefix+id, fmt.Appendf(nil, `{"node":"n1","node_id":%q,"at":%q,"every":60000000000,"results":[{"check":"x","status":"ok"}]}`, id, time.Now().UTC().Format(time.RFC3339)))
		keys = append(keys, doctor.IDPrefix+id)
	}
	kv.Put(ctx, doctor.IDPrefix+"idq0000000000000000000000", []byte(`{"node":"n1","node_id":"idr0000000000000000000000"}`))
	keys = append(keys, doctor.IDPrefix+"idq0000000000000000000000")
	// Under names no node can have, each naming its key's name.
	for _, name := range []string{"a b", "..", "n1\nn2"} {
		kv.Put(ctx, doctor.KVPrefix+name, fmt.Appendf(nil, `{"node":%q,"at":%q,"every":60000000000,"results":[{"check":"x","status":"ok"}]}`, name, time.Now().UTC().Format(time.RFC3339)))
		keys = append(keys, doctor.KVPrefix+name)
	}
	if err := doctor.Publish(ctx, kv, doctor.Report{Node: "n1", NodeID: "id10000000000000000000000", At: time.Now().UTC(), Every: time.Minute, Results: []doctor.Result{{Check: "x", Status: doctor.OK}}}); err != nil {
		t.Fatal(err)
	}
	snap := runRefreshes(t, dashboard.Sources{Swarm: fixedSwarm{{ID: "id10000000000000000000000", Hostname: "n1", State: "ready"}}, Store: NewStore(memKV{kv}, "")})
	for _, k := range keys {
		if !slices.ContainsFunc(snap.Problems, func(p dashboard.DoctorResult) bool {
			return p.Check == "doctor/report" && (strings.Contains(p.Message, "report "+k+" ") || strings.Contains(p.Message, "report "+k+":") || strings.Contains(p.Message, fmt.Sprintf("report %q ", k))) &&
				(strings.Contains(p.Fix, shellword.KVDelete(k)) || kvstore.PathRedirected(k) && p.Fix == "")
		}) {
			t.Errorf("cluster problems %+v; want the failed doctor/report check of %s, with its fix", snap.Problems, k)
		}
	}
	if n := snap.Nodes[0]; n.Doctor == nil || n.Doctor.Fail != 0 {
		t.Errorf("n1's doctor %+v, want its own report, no failure", n.Doctor)
	}
}

// TestStoreShowsReportsUnderIDsNobodyHasAsClusterProblems: a doctor
// report under a swarm node ID that the swarm does not list and no
// agent's facts name is no node's: a node that left the swarm, or a
// forged report. Naming n1, whose agent published no facts, it was taken
// as n1's agent (its heartbeat, its results); refused (naming another
// ID), its failure was shown on the node it names, n3, and among the
// cluster's problems too; naming a node the swarm
// does not have, it was shown nowhere. Each is now among the cluster's
// problems, naming its key, once, and no node's. A report under an ID
// the swarm lists, with no facts, stays that node's.
func TestStoreShowsReportsUnderIDsNobodyHasAsClusterProblems(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	at := time.Now().UTC().Format(time.RFC3339)
	put := func(id, node, nodeID string) {
		kv.Put(ctx, doctor.IDPrefix+id, fmt.Appendf(nil, `{"node":%q,"node_id":%q,"at":%q,"every":60000000000,"results":[{"check":"x","status":"fail","message":"on %s"}]}`, node, nodeID, at, id))
	}
	put("idx0000000000000000000000", "n1", "idx0000000000000000000000") // valid, naming n1
	put("idy0000000000000000000000", "n3", "idz0000000000000000000000") // refused: naming another ID
	put("idw0000000000000000000000", "n9", "idw0000000000000000000000") // valid, naming a node the swarm does not have
	put("id20000000000000000000000", "n2", "id20000000000000000000000") // n2's own, with no facts
	swarm := fixedSwarm{{ID: "id10000000000000000000000", Hostname: "n1", State: "ready"}, {ID: "id20000000000000000000000", Hostname: "n2", State: "ready"}, {ID: "id30000000000000000000000", Hostname: "n3", State: "ready"}}
	snap := runRefreshes(t, dashboard.Sources{Swarm: swarm, Store: NewStore(memKV{kv}, "")})
	type shown struct {
		Agent    string
		Problems []string
	}
	got := map[string]shown{}
	for _, n := range snap.Nodes {
		s := shown{Agent: n.Agent.State, Problems: []string{}}
		if n.Doctor != nil {
			for _, p := range n.Doctor.Problems {
				s.Problems = append(s.Problems, p.Check+": "+p.Message)
			}
		}
		got[n.Name] = s
	}
	want := map[string]shown{
		"n1": {Agent: dashboard.AgentAbsent, Problems: []string{}},
		"n2": {Agent: dashboard.AgentUp, Problems: []string{"x: on id20000000000000000000000"}},
		"n3": {Agent: dashboard.AgentAbsent, Problems: []string{}},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("nodes (-want +got):\n%s", d)
	}
	for _, k := range []string{"idx0000000000000000000000", "idy0000000000000000000000", "idw0000000000000000000000"} {
		key := doctor.IDPrefix + k
		n := 0
		for _, p := range snap.Problems {
			if p.Check == "doctor/report" && strings.Contains(p.Message, key) && strings.Contains(p.Fix, shellword.KVDelete(key)) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%s is %d of the cluster problems %+v, want 1, naming it with its deletion", key, n, snap.Problems)
		}
	}
	for _, p := range snap.Problems {
		if strings.Contains(p.Message, doctor.IDPrefix+"idx0000000000000000000000") && !strings.Contains(p.Message, "node n1") ||
			strings.Contains(p.Message, doctor.IDPrefix+"idw0000000000000000000000") && !strings.Contains(p.Message, "node n9") {
			t.Errorf("cluster problem %q, want it to name the node its report names", p.Message)
		}
	}
}

// TestStoreShowsANameReportNamingAnotherIdentity: a report under a name
// naming a swarm node ID no facts of that name name (only a forged one
// can) was given to no node of the name, and shown nowhere. It is its
// key's failed doctor/report check, on the name's node: n1's, whose
// agent publishes nothing under its ID, and n2's, whose agent does,
// beside its own report.
func TestStoreShowsANameReportNamingAnotherIdentity(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	at := time.Now().UTC().Format(time.RFC3339)
	swarm := fixedSwarm{}
	for id, name := range map[string]string{"id10000000000000000000000": "n1", "id20000000000000000000000": "n2"} {
		kv.Put(ctx, netspec.NodesKVPrefix+id, fmt.Appendf(nil, `{"id":%q,"node":%q,"interfaces":["eth0"],"updated_at":%q}`, id, name, at))
		swarm = append(swarm, dashboard.SwarmNode{ID: id, Hostname: name, State: "ready"})
	}
	kv.Put(ctx, doctor.IDPrefix+"id20000000000000000000000", fmt.Appendf(nil, `{"node":"n2","node_id":"id20000000000000000000000","at":%q,"every":60000000000,"results":[{"check":"x","status":"ok"}]}`, at))
	for _, name := range []string{"n1", "n2"} {
		kv.Put(ctx, doctor.KVPrefix+name, fmt.Appendf(nil, `{"node":%q,"node_id":"idz0000000000000000000000","at":%q,"every":60000000000,"results":[{"check":"x","status":"ok"}]}`, name, at))
	}
	snap := runRefreshes(t, dashboard.Sources{Swarm: swarm, Store: NewStore(memKV{kv}, "")})
	for _, n := range snap.Nodes {
		key := doctor.KVPrefix + n.Name
		if n.Doctor == nil || !slices.ContainsFunc(n.Doctor.Problems, func(p dashboard.DoctorResult) bool {
			return p.Check == "doctor/report" && p.Status == "fail" && strings.Contains(p.Message, key+" ") && strings.HasPrefix(p.Fix, shellword.KVDelete(key)+" ")
		}) {
			t.Errorf("%s's doctor %+v; want the failed doctor/report check of %s, with its deletion", n.Name, n.Doctor, key)
		}
	}
}

// TestStoreShowsFactsUnderNoNodesKey: node facts under a key naming no
// swarm node ID (underlay/nodes/X, underlay/nodes/a b: no agent writes
// one) were taken as an identity of the node they name: a second agent
// of n1 (its heartbeat, or a duplicate's warning), or a column of their
// own. They are now no node's: each is among the cluster's problems, the
// doctor's nodes/facts warning with the command that removes it.
func TestStoreShowsFactsUnderNoNodesKey(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	const id1 = "id10000000000000000000000"
	kv.Put(ctx, netspec.NodesKVPrefix+id1, []byte(`{"id":"`+id1+`","node":"n1","interfaces":["eth0"],"updated_at":"2026-12-03T12:00:00Z"}`))
	kv.Put(ctx, netspec.NodesKVPrefix+"X", []byte(`{"id":"X","node":"n1","interfaces":["eth0"],"updated_at":"2026-12-03T12:00:01Z"}`))
	kv.Put(ctx, netspec.NodesKVPrefix+"a b", []byte(`{"id":"`+id1+`","node":"n5","interfaces":["eth0"],"updated_at":"2026-12-03T12:00:00Z"}`))
	var want []dashboard.DoctorResult
	for _, f := range []netspec.NodeFacts{{ID: "X", Node: "n1"}, {ID: "a b", Node: "n5"}} {
		r, ok := doctor.NoNodeFactsResult(f)
		if !ok {
			t.Fatalf("no doctor warning for %+v", f)
		}
		want = append(want, dashboard.DoctorResult{Check: r.Check, Status: string(r.Status), Message: r.Message, Fix: r.Fix})
	}
	swarm := fixedSwarm{{ID: id1, Hostname: "n1", State: "ready"}}
	snap := runRefreshes(t, dashboard.Sources{Swarm: swarm, Store: NewStore(memKV{kv}, "")})
	byMessage := func(a, b dashboard.DoctorResult) int { return strings.Compare(a.Message, b.Message) }
	if d := cmp.Diff(want, slices.SortedFunc(slices.Values(snap.Problems), byMessage)); d != "" {
		t.Errorf("the cluster's problems (-want +got):\n%s", d)
	}
	for _, n := range snap.Nodes {
		if n.Name == "n5" {
			t.Errorf("node n5, named only by facts under underlay/nodes/a b, has a column: %+v", n)
		}
		if n.Doctor != nil && len(n.Doctor.Problems) > 0 {
			t.Errorf("node %s has doctor problems %+v, want none", n.Name, n.Doctor.Problems)
		}
	}
}

// TestStoreShowsFactsNamingNoIDUnderAnotherKey: facts naming no ID (an
// older agent's document) under a key other than the node name they name
// (underlay/nodes/a b naming n5) reached the store without their key,
// listed with no ID: they were taken as an older agent's, n5 getting a
// column. No agent writes them: they are now among the cluster's
// problems, as facts under keys naming no swarm node ID are, with the
// command that removes them.
func TestStoreShowsFactsNamingNoIDUnderAnotherKey(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	const id1 = "id10000000000000000000000"
	kv.Put(ctx, netspec.NodesKVPrefix+id1, []byte(`{"id":"`+id1+`","node":"n1","interfaces":["eth0"],"updated_at":"2026-12-03T12:00:00Z"}`))
	kv.Put(ctx, netspec.NodesKVPrefix+"a b", []byte(`{"node":"n5","interfaces":["eth0"],"updated_at":"2026-12-03T12:00:00Z"}`))
	swarm := fixedSwarm{{ID: id1, Hostname: "n1", State: "ready"}}
	snap := runRefreshes(t, dashboard.Sources{Swarm: swarm, Store: NewStore(memKV{kv}, "")})
	key := netspec.NodesKVPrefix + "a b"
	if len(snap.Problems) != 1 || snap.Problems[0].Check != "nodes/facts" || !strings.Contains(snap.Problems[0].Message, "nor is it the node name") ||
		!strings.HasPrefix(snap.Problems[0].Fix, shellword.KVDelete(key)) {
		t.Errorf("the cluster's problems %+v; want only the nodes/facts warning of %s, with %s", snap.Problems, key, shellword.KVDelete(key))
	}
	for _, n := range snap.Nodes {
		if n.Name == "n5" {
			t.Errorf("node n5, named only by facts under underlay/nodes/a b, has a column: %+v", n)
		}
	}
}
