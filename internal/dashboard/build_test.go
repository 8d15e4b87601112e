package dashboard

import (
	"encoding/json"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/underlay/underlay/internal/inventory"
	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/register"
	"github.com/underlay/underlay/internal/scale"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func inst(node, id, task, ctr, ip, status string) Instance {
	return Instance{Node: node, ID: id, Service: "hello", Address: ip, Port: 8080,
		Meta:   map[string]string{register.MetaNode: node, register.MetaSwarmTask: task, register.MetaContainerID: ctr, register.MetaMAC: "02:00:00:00:00:01"},
		Checks: []Check{{Name: "serfHealth", Status: HealthPassing}, {Name: "HTTP /health", Status: status, Output: "out"}}}
}

func entry(node, task, ctr, ip string) inventory.Entry {
	return inventory.Entry{IP: ip, MAC: "02:00:" + ip, Node: node, Network: "web", Container: "hello." + task, ID: ctr, Service: "hello", Slot: "1", Task: task, Since: t0.Add(-time.Hour)}
}

// cardsInput is two nodes and one service whose cards show every case.
func cardsInput() Inputs {
	running := func(id, node, ctr string, since time.Duration) SwarmTask {
		return SwarmTask{ID: id, ServiceID: "s1", NodeID: node, Slot: 1, Image: "img@sha256:1", DesiredState: "running", State: "running", Since: t0.Add(-since), ContainerID: ctr}
	}
	return Inputs{
		Now:      t0,
		Nodes:    []SwarmNode{{ID: "n2", Hostname: "node2", Role: "worker", State: "ready"}, {ID: "n1", Hostname: "node1", Role: "manager", Leader: true, State: "ready"}},
		Services: []SwarmService{{ID: "s1", Name: "hello", Image: "img@sha256:1", Replicas: 3}},
		Tasks: []SwarmTask{
			running("ok", "n1", "c-ok", time.Hour),
			running("unreg", "n2", "c-unreg", time.Minute),   // running past the grace, not in Consul
			running("young", "n2", "c-young", 5*time.Second), // not in Consul yet, within the grace
			{ID: "failed", ServiceID: "s1", NodeID: "n1", Slot: 2, DesiredState: "shutdown", State: "failed", Err: "task: non-zero exit (137)", Since: t0.Add(-30 * time.Second), ContainerID: "c-failed"},
			{ID: "old", ServiceID: "s1", NodeID: "n1", Slot: 3, DesiredState: "shutdown", State: "shutdown", Since: t0.Add(-time.Hour)}, // ended long ago: not shown
			{ID: "pending", ServiceID: "s1", Slot: 4, DesiredState: "running", State: "pending", Since: t0},
		},
		Inventory: []inventory.Entry{
			entry("node1", "ok", "c-ok", "10.0.0.10"),
			entry("node2", "unreg", "c-unreg", "10.0.0.11"),
			{IP: "10.0.0.10", Node: "node2", Network: "web", Container: "intruder", ID: "c-x"},
		},
		Instances: []Instance{
			inst("node1", "node1:c-ok:8080", "ok", "c-ok", "10.0.0.10", HealthPassing),
			inst("node1", "node1:c-failed:8080", "failed", "c-failed", "10.0.0.12", HealthCritical),
			inst("node2", "node2:c-ghost:8080", "ghost", "c-ghost", "10.0.0.13", HealthWarning),
			{Node: "node2", ID: "plain", Service: "db", Address: "10.0.0.14", Meta: map[string]string{register.MetaNode: "node2", register.MetaContainerID: "c-plain"}},
			{Node: "node1", ID: "consul", Service: "consul"}, // not underlay's
		},
	}
}

func TestBuildCards(t *testing.T) {
	s := Build(cardsInput())
	type card struct {
		Node, Kind, ID, State, Health string
		IPs                           string
		Mismatch, Duplicate           bool
		Problems                      int
	}
	var got []card
	for _, n := range append(s.Nodes, Node{Name: "", Tasks: s.Unplaced}) {
		for _, c := range n.Tasks {
			var ips []string
			for _, a := range c.Addresses {
				ips = append(ips, a.IP)
			}
			got = append(got, card{n.Name, c.Kind, c.ID, c.State, c.Health, strings.Join(ips, ","), c.Mismatch, c.Duplicate, len(c.Problems)})
		}
	}
	want := []card{
		{"node1", KindTask, "ok", "running", HealthPassing, "10.0.0.10", false, true, 1},
		{"node1", KindTask, "failed", "failed", HealthCritical, "10.0.0.12", true, false, 1},
		{"node2", KindContainer, "c-plain", "running", HealthPassing, "10.0.0.14", false, false, 0},
		{"node2", KindConsulOnly, "ghost", "unknown", HealthWarning, "10.0.0.13", true, false, 1},
		{"node2", KindTask, "unreg", "running", HealthNotRegistered, "10.0.0.11", true, false, 1},
		{"node2", KindTask, "young", "running", HealthNotRegistered, "", false, false, 0},
		{"", KindTask, "pending", "pending", HealthNotRegistered, "", false, false, 0},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("cards (-want +got):\n%s", d)
	}
	if s.Nodes[0].Name != "node1" || !s.Nodes[0].Leader {
		t.Errorf("nodes not sorted by name, or leader lost: %+v", s.Nodes[0])
	}
	ok := s.Nodes[0].Tasks[0]
	if ok.Image != "img" || ok.ConsulID != "node1:c-ok:8080" || ok.Container != "hello.ok" || len(ok.Checks) != 2 {
		t.Errorf("card ok = %+v", ok)
	}
	wantSum := Summary{Nodes: 2, Services: 1, Tasks: 5, Running: 4, Passing: 2, Mismatches: 3, Duplicates: 1}
	if d := cmp.Diff(wantSum, s.Summary); d != "" {
		t.Errorf("summary (-want +got):\n%s", d)
	}
	svc := s.Services[0]
	if svc.Desired != 3 || svc.Running != 3 || svc.Passing != 1 || svc.Image != "img" || strings.Join(svc.Networks, ",") != "web" {
		t.Errorf("service = %+v; want 3 desired, 3 running, 1 passing, image img, on web", svc)
	}
}

func TestWorse(t *testing.T) {
	for _, c := range []struct{ a, b, want string }{
		{HealthPassing, HealthPassing, HealthPassing},
		{HealthPassing, HealthWarning, HealthWarning},
		{HealthWarning, HealthPassing, HealthWarning},
		{HealthWarning, HealthCritical, HealthCritical},
		{HealthPassing, "maintenance", HealthCritical},
		{HealthCritical, HealthWarning, HealthCritical},
	} {
		if got := worse(c.a, c.b); got != c.want {
			t.Errorf("worse(%s, %s) = %s, want %s", c.a, c.b, got, c.want)
		}
	}
}

func TestAgentHealth(t *testing.T) {
	for _, c := range []struct {
		name string
		in   AgentInput
		want string
	}{
		{"never reported", AgentInput{Node: "n"}, AgentAbsent},
		{"facts lately", AgentInput{FactsAt: t0.Add(-30 * time.Second)}, AgentUp},
		{"facts long ago", AgentInput{FactsAt: t0.Add(-10 * time.Minute)}, AgentStale},
		{"doctor lately, slow period", AgentInput{FactsAt: t0.Add(-time.Hour), Doctor: &DoctorReport{At: t0.Add(-3 * time.Minute), Every: 5 * time.Minute}}, AgentUp},
		{"doctor missed two periods", AgentInput{Doctor: &DoctorReport{At: t0.Add(-3 * time.Minute), Every: time.Minute}}, AgentStale},
	} {
		if got := agentHealth(c.in, t0, Outage{}).State; got != c.want {
			t.Errorf("%s: agent %s, want %s", c.name, got, c.want)
		}
	}
}

func TestDoctorSummary(t *testing.T) {
	d := doctorSummary(&DoctorReport{At: t0, Results: []DoctorResult{
		{Check: "a", Status: "ok"}, {Check: "b", Status: "warn", Message: "w"}, {Check: "c", Status: "fail", Message: "f", Fix: "fix c"}, {Check: "d", Status: "ok"},
	}})
	if d.OK != 2 || d.Warn != 1 || d.Fail != 1 {
		t.Errorf("counts %d ok %d warn %d fail, want 2 1 1", d.OK, d.Warn, d.Fail)
	}
	if len(d.Problems) != 2 || d.Problems[0].Check != "c" || d.Problems[0].Fix != "fix c" || d.Problems[1].Check != "b" {
		t.Errorf("problems %+v: want the failure (with its fix), then the warning", d.Problems)
	}
	if doctorSummary(nil) != nil {
		t.Error("no report gives a doctor summary")
	}
}

// TestBuildWarnings: the dashboard's own warnings on a node's records
// (AgentInput.Warnings) are among its doctor problems, once even when its
// report has them, and the only ones when it has no report; those of a
// node the page has no column for (named "", or no swarm node) are the
// cluster's problems, which no node column would show. A report is not
// changed: the inputs are kept as their source's last answer.
func TestBuildWarnings(t *testing.T) {
	w := func(m string) DoctorResult {
		return DoctorResult{Check: "nodes/facts", Status: "warn", Message: m, Fix: "fix " + m}
	}
	rep := &DoctorReport{At: t0, Results: []DoctorResult{{Check: "kernel/macvlan", Status: "ok"}, w("one")}}
	in := Inputs{Now: t0, Nodes: []SwarmNode{{ID: "n1", Hostname: "node1"}, {ID: "n2", Hostname: "node2"}, {ID: "n3", Hostname: "node3"}},
		Agents: []AgentInput{
			{Node: "node1", FactsAt: t0, Doctor: rep, Warnings: []DoctorResult{w("one"), w("two")}},
			{Node: "node2", FactsAt: t0, Warnings: []DoctorResult{w("three")}},
			{Node: "gone", Doctor: &DoctorReport{At: t0, Results: []DoctorResult{{Check: "docker/daemon", Status: "fail"}}}, Warnings: []DoctorResult{w("five")}},
			{Node: "", Warnings: []DoctorResult{w("four"), w("four")}},
		}}
	s := Build(in)
	got := map[string][]DoctorResult{}
	for _, n := range s.Nodes {
		if n.Doctor != nil {
			got[n.Name] = n.Doctor.Problems
		}
	}
	want := map[string][]DoctorResult{"node1": {w("one"), w("two")}, "node2": {w("three")}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("doctor problems by node (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]DoctorResult{w("four"), w("five")}, s.Problems); d != "" {
		t.Errorf("the cluster's problems (-want +got):\n%s", d)
	}
	if len(rep.Results) != 2 {
		t.Errorf("node1's report was changed: %+v", rep.Results)
	}
	if s := Build(Inputs{Now: t0}); s.Problems == nil {
		t.Error("no warnings give problems null, want []")
	}
}

// clusterNet is a /24 with cluster IPAM, an IP range of its upper half, an
// aux address, and one of everything in its pool.
func clusterNet() (NetworkInput, []inventory.Entry) {
	spec := netspec.Spec{Name: "web", Subnet: netip.MustParsePrefix("10.0.0.0/24"), Gateway: netip.MustParseAddr("10.0.0.1"),
		IPRange: netip.MustParsePrefix("10.0.0.128/25"), Aux: map[string]netip.Addr{"router2": netip.MustParseAddr("10.0.0.2")},
		Parent: "eth1", IPAM: netspec.Cluster}
	at := t0.Add(-time.Minute)
	n := NetworkInput{Spec: spec, Blocks: map[netip.Prefix]ipam.BlockDoc{
		netip.MustParsePrefix("10.0.0.128/28"): {Node: "node1", Allocs: map[string]ipam.Alloc{
			"10.0.0.128": {Node: "node1", At: at, Kind: ipam.KindShim},
			"10.0.0.129": {Node: "node1", At: at, Kind: ipam.KindSpare},
			"10.0.0.130": {Node: "node1", At: at, Kind: ipam.KindTask}, // no container: a leak
			"10.0.0.131": {Node: "node1", At: at, Kind: ipam.KindTask},
			"10.0.0.132": {Node: "node1", At: t0.Add(-StartGrace / 2), Kind: ipam.KindTask}, // a container starting
		}},
		netip.MustParsePrefix("10.0.0.144/28"): {Node: "node2", Allocs: map[string]ipam.Alloc{
			"10.0.0.144": {Node: "node2", At: at, Kind: ipam.KindTask},
		}},
	}}
	es := []inventory.Entry{
		{IP: "10.0.0.131", Node: "node1", Network: "web", Container: "hello.1.x", Service: "hello", Slot: "1", Task: "t1"},
		{IP: "10.0.0.144", Node: "node2", Network: "web", Container: "hello.2.y", Service: "hello", Slot: "2", Task: "t2"},
		{IP: "10.0.0.144", Node: "node1", Network: "web", Container: "rogue"},
	}
	inventory.Check(es)
	return n, es
}

// TestBuildPoolKept: an allocation past StartGrace that its node's agent
// keeps for a container start under way shows as a starting container's,
// not a leak; a key of another node keeps nothing.
func TestBuildPoolKept(t *testing.T) {
	state := func(kept ipam.KeptAddrs) (string, string) {
		n, es := clusterNet()
		n.Kept = kept
		ix := &index{}
		for _, a := range buildPool(n, es, ix, t0).Addresses {
			if a.IP == "10.0.0.130" {
				return a.State, a.Holder
			}
		}
		return "", ""
	}
	leak := netip.MustParseAddr("10.0.0.130")
	if st, h := state(ipam.KeptAddrs{leak: {Node: "node1", At: t0}}); st != StateTask || h != "allocated to node1 for a container being started" {
		t.Errorf("kept by its node: %s %q, want a task being started", st, h)
	}
	if st, _ := state(ipam.KeptAddrs{leak: {Node: "node2", At: t0}}); st != StateLeaked {
		t.Errorf("kept by another node: %s, want %s", st, StateLeaked)
	}
}

// TestBuildPoolInventoryFull: a node whose inventory was too big for
// Consul lists some addresses by address only (left out), and may leave
// more out unlisted; neither shows as a leak, as in underlay ips.
func TestBuildPoolInventoryFull(t *testing.T) {
	n, es := clusterNet()
	n.Blocks[netip.MustParsePrefix("10.0.0.128/28")].Allocs["10.0.0.133"] = ipam.Alloc{Node: "node1", At: t0.Add(-time.Minute), Kind: ipam.KindTask}
	es = append(es, inventory.Entry{IP: "10.0.0.133", Node: "node1", NodeID: "node1", Network: "web", LeftOut: true, Unlisted: 3})
	got := map[string]PoolAddress{}
	for _, a := range buildPool(n, es, &index{}, t0).Addresses {
		got[a.IP] = a
	}
	if a := got["10.0.0.133"]; a.State != StateTask || !strings.Contains(a.Holder, "not reported") {
		t.Errorf("10.0.0.133, left out of node1's full inventory: %s %q, want a task's, not reported", a.State, a.Holder)
	}
	if a := got["10.0.0.130"]; a.State == StateLeaked || !strings.Contains(a.Holder, "not reported") {
		t.Errorf("10.0.0.130, allocated to node1 whose full inventory left addresses out unlisted: %s %q, want not reported, not a leak", a.State, a.Holder)
	}
}

// TestAllocationAhead: an allocation dated within StartGrace of now, on
// either side, is a container being started; one dated further ahead is of
// unknown age and shows as the leak its node's sweep takes it for.
func TestAllocationAhead(t *testing.T) {
	for _, c := range []struct {
		at   time.Duration
		want string
	}{
		{-StartGrace / 2, StateTask},
		{StartGrace / 2, StateTask},
		{-2 * StartGrace, StateLeaked},
		{365 * 24 * time.Hour, StateLeaked},
	} {
		if got := allocation(ipam.Alloc{Node: "node1", At: t0.Add(c.at), Kind: ipam.KindTask}, "node1", false, false, t0).State; got != c.want {
			t.Errorf("allocation dated %s from now: %s, want %s", c.at, got, c.want)
		}
	}
}

func TestBuildPoolCluster(t *testing.T) {
	n, es := clusterNet()
	ix := &index{}
	p := buildPool(n, es, ix, t0)
	type addr struct{ IP, State, Holder string }
	var got []addr
	for _, a := range p.Addresses {
		got = append(got, addr{a.IP, a.State, a.Holder})
	}
	want := []addr{
		{"10.0.0.0", StateReserved, "network address"},
		{"10.0.0.1", StateReserved, "gateway"},
		{"10.0.0.2", StateReserved, "aux address router2"},
		{"10.0.0.128", StateReserved, "host shim of node1"},
		{"10.0.0.129", StateSpare, "spare of node1: handed to its next container without waiting for Consul"},
		{"10.0.0.130", StateLeaked, "allocated to node1, held by no container: reclaimed after the grace period"},
		{"10.0.0.131", StateTask, "hello.1 (hello.1.x) on node1"},
		{"10.0.0.132", StateTask, "allocated to node1 for a container being started"},
		{"10.0.0.144", StateDuplicate, "held 2 times: rogue on node1; hello.2 (hello.2.y) on node2"},
		{"10.0.0.255", StateReserved, "broadcast address"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("addresses (-want +got):\n%s", d)
	}
	wantCounts := map[string]int{StateReserved: 5, StateSpare: 1, StateLeaked: 1, StateTask: 2, StateDuplicate: 1,
		StateFree:    128 - 7, // the range less shim, spare, leak, two tasks, duplicate, broadcast
		StateOutside: 128 - 3} // the lower half less network, gateway, aux
	if d := cmp.Diff(wantCounts, p.Counts); d != "" {
		t.Errorf("counts (-want +got):\n%s", d)
	}
	sum := 0
	for _, c := range p.Counts {
		sum += c
	}
	if sum != p.Size || p.Size != 256 || p.Cell != 1 || p.First != "10.0.0.0" || p.Range != "10.0.0.128/25" {
		t.Errorf("pool size %d (counts sum %d), cell %d, first %s, range %s; want 256, 256, 1, 10.0.0.0, 10.0.0.128/25", p.Size, sum, p.Cell, p.First, p.Range)
	}
	wantRegions := []Region{{"10.0.0.128/28", "node1", "block", ""}, {"10.0.0.144/28", "node2", "block", ""}}
	if d := cmp.Diff(wantRegions, p.Regions); d != "" {
		t.Errorf("regions (-want +got):\n%s", d)
	}
}

func TestBuildPoolPerNode(t *testing.T) {
	spec := netspec.Spec{Name: "demo", Subnet: netip.MustParsePrefix("10.200.0.0/16"), Gateway: netip.MustParseAddr("10.200.0.1"),
		Parent: "eth1", IPAM: netspec.PerNode, PerNodeSize: 64}
	n := NetworkInput{Spec: spec,
		Leases: map[netip.Prefix]string{netip.MustParsePrefix("10.200.0.64/26"): "node2", netip.MustParsePrefix("10.200.0.0/26"): "node1"},
		States: []netspec.NodeState{{Node: "node1", State: "ready", Shim: netip.MustParseAddr("10.200.0.2")}, {Node: "node2", State: "ready", Shim: netip.MustParseAddr("10.200.0.66")}},
	}
	es := []inventory.Entry{{IP: "10.200.0.3", Node: "node1", Network: "demo", Container: "a"}, {IP: "10.200.0.67", Node: "node2", Network: "demo", Container: "b"}}
	p := buildPool(n, es, &index{}, t0)
	if p.Size != 65536 || p.Cell != 64 {
		t.Errorf("a /16 has size %d and cell %d, want 65536 and 64", p.Size, p.Cell)
	}
	want := map[string]int{StateReserved: 5, StateTask: 2, StateFree: 65536 - 7, StateSpare: 0, StateLeaked: 0, StateDuplicate: 0, StateOutside: 0}
	if d := cmp.Diff(want, p.Counts); d != "" {
		t.Errorf("counts (-want +got):\n%s", d)
	}
	wantRegions := []Region{{"10.200.0.0/26", "node1", "range", ""}, {"10.200.0.64/26", "node2", "range", ""}}
	if d := cmp.Diff(wantRegions, p.Regions); d != "" {
		t.Errorf("regions (-want +got):\n%s", d)
	}
}

// TestBuildNetworkIPv6Ranges: a per-node network's nodes showed their
// IPv4 range only, not the IPv6 /80 each node of a network with an IPv6
// subnet hands out (and a router must route to it), which network
// inspect shows. Each node's report now carries it (ipv6_range), the one
// its plan gives; a node without a range, a network without an IPv6
// subnet and a cluster-IPAM one (one IPv6 pool) have none.
func TestBuildNetworkIPv6Ranges(t *testing.T) {
	spec := netspec.Spec{Name: "web", Subnet: netip.MustParsePrefix("10.0.0.0/24"), Gateway: netip.MustParseAddr("10.0.0.1"),
		Parent: "eth0.40", IPAM: netspec.PerNode, PerNodeSize: 16, IPRange: netip.MustParsePrefix("10.0.0.128/25"),
		IPv6Subnet: netip.MustParsePrefix("fd00:1::/64")}
	states := []netspec.NodeState{
		{Node: "n2", State: "ready", Range: netip.MustParsePrefix("10.0.0.144/28")},
		{Node: "n1", State: "ready", Range: netip.MustParsePrefix("10.0.0.128/28")},
		{Node: "n3", State: "error", Error: "no parent"},
	}
	noV6, cluster := spec, spec
	noV6.Name, noV6.IPv6Subnet = "lan", netip.Prefix{}
	cluster.Name, cluster.IPAM = "pool", netspec.Cluster
	s := Build(Inputs{Now: t0, Networks: []NetworkInput{{Spec: spec, States: states}, {Spec: noV6, States: states}, {Spec: cluster, States: states}}})
	got := map[string]map[string]string{}
	for _, n := range s.Networks {
		got[n.Name] = map[string]string{}
		for _, nn := range n.Nodes {
			got[n.Name][nn.Node] = nn.Range + " " + nn.IPv6Range
		}
	}
	none := map[string]string{"n1": "10.0.0.128/28 ", "n2": "10.0.0.144/28 ", "n3": " "}
	want := map[string]map[string]string{
		"web":  {"n1": "10.0.0.128/28 fd00:1::/80", "n2": "10.0.0.144/28 fd00:1:0:0:1::/80", "n3": " "},
		"lan":  none,
		"pool": none,
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("nodes' range and IPv6 range by network (-want +got):\n%s", d)
	}
	b, err := json.Marshal(s.Networks[2].Nodes[0])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"ipv6_range":"fd00:1::/80"`) {
		t.Errorf("n1's report on web in JSON: %s, want its ipv6_range", b)
	}
	// A node's shim IPv6 address, as its agent reports it.
	states[1].Shim, states[1].Shim6 = netip.MustParseAddr("10.0.0.128"), netip.MustParseAddr("fd00:1::ffff:ffff:ffff")
	s = Build(Inputs{Now: t0, Networks: []NetworkInput{{Spec: spec, States: states}}})
	if nn := s.Networks[0].Nodes[0]; nn.Node != "n1" || nn.Shim != "10.0.0.128" || nn.Shim6 != "fd00:1::ffff:ffff:ffff" {
		t.Errorf("n1's report on web: %+v, want its shim 10.0.0.128 and fd00:1::ffff:ffff:ffff", nn)
	}
}

func TestCellSize(t *testing.T) {
	for bits, want := range map[int]int{30: 1, 24: 1, 23: 1, 22: 1, 20: 4, 16: 64, 8: 16384} {
		if got := cellSize(1 << (32 - bits)); got != want {
			t.Errorf("/%d: cell of %d addresses, want %d", bits, got, want)
		}
		if got := (1 << (32 - bits)) / cellSize(1<<(32-bits)); got > MaxCells {
			t.Errorf("/%d: %d cells, more than %d", bits, got, MaxCells)
		}
	}
}

func TestServicesHistoryAndSamples(t *testing.T) {
	p := scale.DefaultPolicy()
	p.Enabled = true
	rec := func(min int, from, to int, refused bool, metric float64) scale.Record {
		return scale.Record{Time: t0.Add(time.Duration(min) * time.Minute), Service: "hello", Direction: scale.Up,
			Decision: scale.Decision{From: from, To: to, Refused: refused, Reason: scale.ReasonScaled},
			Metrics:  []scale.MetricValue{{Name: "rps", Value: metric, Target: 100}, {Name: "broken", Error: "no data"}}}
	}
	var history []scale.Record
	for i := 0; i < 12; i++ {
		history = append(history, rec(-60+i, 1+i, 2+i, false, float64(100+i)))
	}
	history = append(history, rec(-5, 13, 13, true, 150))
	in := Inputs{Now: t0,
		Services:   []SwarmService{{ID: "s1", Name: "hello", Replicas: 13}, {ID: "s2", Name: "agent", Global: true}},
		Tasks:      []SwarmTask{{ID: "g1", ServiceID: "s2", DesiredState: "running", State: "running"}, {ID: "g2", ServiceID: "s2", DesiredState: "running", State: "starting"}},
		Autoscaled: []scale.ServiceInfo{{Service: "hello", Policy: p}},
		History:    map[string][]scale.Record{"hello": history},
		BadHistory: map[string][]scale.BadRecord{"hello": {{Key: "underlay/scale/history/hello/last-up", Direction: scale.Up, Error: "decode: invalid character 'g'", Fix: "consul kv delete underlay/scale/history/hello/last-up"}}},
		Samples:    map[string][]ReplicaSample{"hello": {{Time: t0.Add(-50 * time.Minute), Desired: 11, Running: 10}, {Time: t0.Add(-time.Minute), Desired: 13, Running: 13}}},
	}
	s := Build(in)
	agent, hello := s.Services[0], s.Services[1]
	if agent.Mode != "global" || agent.Desired != 2 || agent.Running != 1 || agent.Autoscaled {
		t.Errorf("global service = %+v; want 2 desired, 1 running, not autoscaled", agent)
	}
	if !hello.Autoscaled || hello.Policy == nil || hello.Policy.Max != p.Max {
		t.Errorf("hello is not shown autoscaled with its policy: %+v", hello)
	}
	if len(hello.Decisions) != MaxDecisions || !hello.Decisions[0].Refused || hello.Decisions[1].To != 13 {
		t.Errorf("decisions: %d, first %+v; want %d, newest (the refusal) first", len(hello.Decisions), hello.Decisions[0], MaxDecisions)
	}
	if len(hello.BadRecords) != 1 || hello.BadRecords[0].Key != "underlay/scale/history/hello/last-up" || len(agent.BadRecords) != 0 {
		t.Errorf("bad records: hello %+v, agent %+v; want hello's unreadable last-up named", hello.BadRecords, agent.BadRecords)
	}
	if len(hello.Metrics) != 13 || hello.Metrics[0].Value != 100 || hello.Metrics[12].Value != 150 {
		t.Errorf("metric points %+v: want the 13 readable values, oldest first", hello.Metrics)
	}
	// History points before the first sample (two per applied decision:
	// the step), then the samples.
	var got []ReplicaPoint
	for _, pt := range hello.Replicas {
		got = append(got, ReplicaPoint{Desired: pt.Desired, Running: pt.Running})
	}
	var want []ReplicaPoint
	for i := 0; i < 10; i++ { // decisions at -60 … -51 minutes
		want = append(want, ReplicaPoint{Desired: 1 + i, Running: -1}, ReplicaPoint{Desired: 2 + i, Running: -1})
	}
	want = append(want, ReplicaPoint{Desired: 11, Running: 10}, ReplicaPoint{Desired: 13, Running: 13})
	if len(got) != len(want) {
		t.Fatalf("%d replica points, want %d: %+v", len(got), len(want), hello.Replicas)
	}
	for i := range want {
		if got[i].Desired != want[i].Desired || got[i].Running != want[i].Running {
			t.Errorf("point %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestReplicaCounts(t *testing.T) {
	in := Inputs{Now: t0,
		Services: []SwarmService{{ID: "s1", Name: "hello", Replicas: 3}, {ID: "s2", Name: "agent", Global: true}},
		Tasks: []SwarmTask{
			{ServiceID: "s1", DesiredState: "running", State: "running"}, {ServiceID: "s1", DesiredState: "running", State: "starting"},
			{ServiceID: "s1", DesiredState: "shutdown", State: "running"}, {ServiceID: "s2", DesiredState: "running", State: "running"},
		}}
	want := map[string]ReplicaSample{"hello": {Time: t0, Desired: 3, Running: 1}, "agent": {Time: t0, Desired: 1, Running: 1}}
	if d := cmp.Diff(want, ReplicaCounts(in)); d != "" {
		t.Errorf("counts (-want +got):\n%s", d)
	}
}

func TestBuildSynthetic(t *testing.T) {
	s := Build(synthetic(10, 500, t0, nil))
	if s.Summary.Nodes != 10 || s.Summary.Tasks != 500 || s.Summary.Running != 500 || s.Summary.Passing != 498 {
		t.Errorf("summary %+v: want 10 nodes, 500 tasks running, 498 passing (one critical, one unregistered)", s.Summary)
	}
	if s.Summary.Mismatches != 2 || s.Summary.Duplicates != 1 || s.Summary.DoctorFailures != 1 {
		t.Errorf("summary %+v: want 2 mismatches (unregistered, Consul-only), 1 duplicate, 1 doctor failure", s.Summary)
	}
	p := s.Networks[0].Pool
	if p.Size != 4096 || p.Cell != 4 || p.Counts[StateSpare] != 1 || p.Counts[StateLeaked] != 1 || p.Counts[StateDuplicate] != 1 {
		t.Errorf("pool size %d cell %d counts %v", p.Size, p.Cell, p.Counts)
	}
}

// TestBuildStampsJSONCannotCarry: a stamp of a document any agent may
// write (a doctor report, node facts, an inventory entry, a pool's
// allocation, a decision record), read as RFC 3339 with an offset, can
// lie past year 9999 (or before year 0) in UTC, which JSON cannot carry:
// encoding the snapshot failed, and one bad node froze the whole
// dashboard. Such a stamp now shows as unknown (the zero time); the rest
// of the node's data, and every other node's, is shown.
func TestBuildStampsJSONCannotCarry(t *testing.T) {
	stamp := func(s string) time.Time {
		var at time.Time
		if err := json.Unmarshal([]byte(`"`+s+`"`), &at); err != nil {
			t.Fatalf("read %s: %v", s, err)
		}
		return at
	}
	for _, bad := range []string{"9999-12-31T23:59:59-23:59", "0000-01-01T00:00:00+23:59"} {
		at := stamp(bad)
		for _, c := range []struct {
			name string
			mod  func(in *Inputs)
		}{
			{"doctor report", func(in *Inputs) {
				in.Agents = []AgentInput{{Node: "node2", Doctor: &DoctorReport{At: at, Results: []DoctorResult{{Check: "x", Status: "fail"}}}}}
			}},
			{"node facts", func(in *Inputs) { in.Agents = []AgentInput{{Node: "node2", FactsAt: at}} }},
			{"task", func(in *Inputs) { in.Tasks[0].Since = at }},
			{"inventory entry", func(in *Inputs) {
				in.Inventory[0].Since = at
				in.Networks = []NetworkInput{{Spec: netspec.Spec{Name: "web", Subnet: netip.MustParsePrefix("10.0.0.0/24"), IPAM: netspec.PerNode}}}
			}},
			{"pool allocation", func(in *Inputs) {
				n, _ := clusterNet()
				n.Blocks[netip.MustParsePrefix("10.0.0.144/28")].Allocs["10.0.0.150"] = ipam.Alloc{Node: "node2", At: at, Kind: ipam.KindTask}
				in.Networks = []NetworkInput{n}
			}},
			{"decision record", func(in *Inputs) {
				in.History = map[string][]scale.Record{"hello": {{Time: at, Service: "hello", Decision: scale.Decision{From: 1, To: 2},
					Metrics: []scale.MetricValue{{Name: "cpu", Value: 1, Target: 0.5}}}}}
			}},
		} {
			in := cardsInput()
			c.mod(&in)
			s := Build(in)
			if _, err := json.Marshal(s); err != nil {
				t.Errorf("%s stamped %s: the snapshot cannot be encoded: %v", c.name, bad, err)
				continue
			}
			if len(s.Nodes) != 2 || len(s.Nodes[0].Tasks) == 0 {
				t.Errorf("%s stamped %s: nodes %+v, want both with their cards", c.name, bad, s.Nodes)
			}
		}
	}
}

// TestBuildPool6Cluster: the dashboard showed a dual-stack network's IPv4
// pool only, while `underlay ips` lists the IPv6 one too. The network now
// carries its IPv6 pool (ipv6_pool): the network address, the gateway
// ipam.PoolOf gives, the host shims, the IPv6 pool's allocations and the
// addresses containers hold, with the IPv6 blocks as its regions; the
// IPv4 pool is as it was.
func TestBuildPool6Cluster(t *testing.T) {
	n, es := clusterNet()
	n.Spec.IPv6Subnet = netip.MustParsePrefix("fd00:1::/64")
	at := t0.Add(-time.Minute)
	n.Blocks[netip.MustParsePrefix("fd00:1::100/120")] = ipam.BlockDoc{Node: "node1", Allocs: map[string]ipam.Alloc{
		"fd00:1::100": {Node: "node1", At: at, Kind: ipam.KindShim},
		"fd00:1::101": {Node: "node1", At: at, Kind: ipam.KindTask},
		"fd00:1::102": {Node: "node1", At: at, Kind: ipam.KindTask}, // no container: a leak
	}}
	es = append(es, inventory.Entry{IP: "fd00:1::101", Node: "node1", Network: "web", Container: "hello.1.x", Service: "hello", Slot: "1", Task: "t1"})
	in := Inputs{Now: t0, Networks: []NetworkInput{n}, Inventory: es}
	s := Build(in)
	nw := s.Networks[0]
	if nw.IPv6Pool == nil {
		t.Fatal("the dual-stack network has no IPv6 pool")
	}
	p := *nw.IPv6Pool
	type addr struct{ IP, State, Holder string }
	var got []addr
	for _, a := range p.Addresses {
		got = append(got, addr{a.IP, a.State, a.Holder})
	}
	want := []addr{
		{"fd00:1::", StateReserved, "network address (subnet-router anycast)"},
		{"fd00:1::1", StateReserved, "gateway"},
		{"fd00:1::100", StateReserved, "host shim of node1"},
		{"fd00:1::101", StateTask, "hello.1 (hello.1.x) on node1"},
		{"fd00:1::102", StateLeaked, "allocated to node1, held by no container: reclaimed after the grace period"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("IPv6 addresses (-want +got):\n%s", d)
	}
	wantCounts := map[string]int{StateReserved: 3, StateTask: 1, StateLeaked: 1, StateSpare: 0, StateDuplicate: 0}
	if d := cmp.Diff(wantCounts, p.Counts); d != "" {
		t.Errorf("IPv6 counts (-want +got):\n%s", d)
	}
	if p.First != "fd00:1::" || p.Bits != 64 || p.Range != "fd00:1::/64" || p.Size != 0 || p.Cell != 0 {
		t.Errorf("IPv6 pool first %s, bits %d, range %s, size %d, cell %d; want fd00:1::, 64, fd00:1::/64, 0, 0", p.First, p.Bits, p.Range, p.Size, p.Cell)
	}
	if d := cmp.Diff([]Region{{"fd00:1::100/120", "node1", "block", ""}}, p.Regions); d != "" {
		t.Errorf("IPv6 regions (-want +got):\n%s", d)
	}
	// The IPv4 pool is the one the network had without its IPv6 subnet.
	v4, _ := clusterNet()
	only4 := Build(Inputs{Now: t0, Networks: []NetworkInput{v4}, Inventory: es[:3]}).Networks[0]
	if d := cmp.Diff(only4.Pool, nw.Pool); d != "" {
		t.Errorf("IPv4 pool of the dual-stack network (-v4 only +dual-stack):\n%s", d)
	}
	if only4.IPv6Pool != nil {
		t.Errorf("a network without an IPv6 subnet has an IPv6 pool: %+v", only4.IPv6Pool)
	}
	b, err := json.Marshal(s.Networks[0])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"ipv6_pool":{"first":"fd00:1::","size":0,"bits":64`) {
		t.Errorf("network JSON %s, want its ipv6_pool", b)
	}
	if b, _ := json.Marshal(only4); strings.Contains(string(b), "ipv6_pool") {
		t.Errorf("network JSON without an IPv6 subnet: %s, want no ipv6_pool", b)
	}
}

// TestBuildPool6PerNode: a per-node network's IPv6 pool has the nodes'
// /80s (those network inspect shows) as its regions, their host shims'
// IPv6 addresses reserved, and the addresses containers hold.
func TestBuildPool6PerNode(t *testing.T) {
	spec := netspec.Spec{Name: "demo", Subnet: netip.MustParsePrefix("10.200.0.0/16"), Gateway: netip.MustParseAddr("10.200.0.1"),
		Parent: "eth1", IPAM: netspec.PerNode, PerNodeSize: 64, IPv6Subnet: netip.MustParsePrefix("fd00:2::/64")}
	n := NetworkInput{Spec: spec,
		Leases: map[netip.Prefix]string{netip.MustParsePrefix("10.200.0.64/26"): "node2", netip.MustParsePrefix("10.200.0.0/26"): "node1"},
		States: []netspec.NodeState{
			{Node: "node1", State: "ready", Shim: netip.MustParseAddr("10.200.0.2"), Shim6: netip.MustParseAddr("fd00:2::ffff:ffff:ffff")},
			{Node: "node2", State: "ready", Shim: netip.MustParseAddr("10.200.0.66")},
		},
	}
	es := []inventory.Entry{
		{IP: "10.200.0.3", Node: "node1", Network: "demo", Container: "a"},
		{IP: "fd00:2::2", Node: "node1", Network: "demo", Container: "a"},
		{IP: "fd00:2:0:0:1::2", Node: "node2", Network: "demo", Container: "b"},
		{IP: "fd00:3::2", Node: "node2", Network: "demo", Container: "elsewhere"}, // not in the subnet
	}
	nw := Build(Inputs{Now: t0, Networks: []NetworkInput{n}, Inventory: es}).Networks[0]
	p := nw.IPv6Pool
	if p == nil {
		t.Fatal("the dual-stack network has no IPv6 pool")
	}
	var got []string
	for _, a := range p.Addresses {
		got = append(got, a.IP+" "+a.State+" "+a.Holder)
	}
	want := []string{
		"fd00:2:: reserved network address (subnet-router anycast)",
		"fd00:2::1 reserved gateway",
		"fd00:2::2 task a on node1",
		"fd00:2::ffff:ffff:ffff reserved host shim of node1",
		"fd00:2::1:0:0:2 task b on node2",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("IPv6 addresses (-want +got):\n%s", d)
	}
	wantRegions := []Region{{"fd00:2::/80", "node1", "range", ""}, {"fd00:2:0:0:1::/80", "node2", "range", ""}}
	if d := cmp.Diff(wantRegions, p.Regions); d != "" {
		t.Errorf("IPv6 regions (-want +got):\n%s", d)
	}
	if p4 := nw.Pool; p4.Counts[StateTask] != 1 || p4.Counts[StateReserved] != 5 {
		t.Errorf("IPv4 counts %v, want 1 task and 5 reserved (no IPv6 address among them)", p4.Counts)
	}
}

// TestBuildRefusedNetwork: a spec every agent refuses (a forged one
// overlapping a network, which makes both refused) showed as a working
// network, its pool laid out as if the IPAM plugin served it, while
// `underlay ips` lists no pool of it and warns. The network now says why
// it is refused, and has no pool.
func TestBuildRefusedNetwork(t *testing.T) {
	n, es := clusterNet()
	n.Spec.IPv6Subnet = netip.MustParsePrefix("fd00:1::/64")
	n.Refused = `subnet 10.0.0.0/24 overlaps network "evil" (10.0.0.0/16)`
	nw := Build(Inputs{Now: t0, Networks: []NetworkInput{n}, Inventory: es}).Networks[0]
	if nw.Refused != n.Refused {
		t.Errorf("refused %q, want %q", nw.Refused, n.Refused)
	}
	if nw.Pool.Size != 0 || len(nw.Pool.Addresses) != 0 || len(nw.Pool.Regions) != 0 || nw.IPv6Pool != nil {
		t.Errorf("the refused network's pools: %+v and %+v, want none", nw.Pool, nw.IPv6Pool)
	}
}

// TestBuildPoolShowsClashesAndOutsideAddresses: the pool map merged an
// allocation of another node into the container holding its address on
// this node (and a host shim into a container holding its address), so
// the clash did not show; and inventory entries outside the network's
// subnets were dropped, neither in the map nor anywhere else. As
// `underlay ips` (inventory.PoolAddresses) shows them, the clash is now a
// duplicate, counted among the summary's, and the outside addresses are
// listed apart.
func TestBuildPoolShowsClashesAndOutsideAddresses(t *testing.T) {
	n, es := clusterNet()
	at := t0.Add(-time.Minute)
	n.Blocks[netip.MustParsePrefix("10.0.0.160/28")] = ipam.BlockDoc{Node: "id2", Allocs: map[string]ipam.Alloc{
		"10.0.0.161": {Node: "id2", At: at, Kind: ipam.KindTask}, // node2's, held by a container on node1
		"10.0.0.162": {Node: "id1", At: at, Kind: ipam.KindShim}, // node1's shim, held by a container there
		"10.0.0.163": {Node: "id1", At: at, Kind: ipam.KindTask}, // node1's, held there: no clash
	}}
	es = append(es,
		inventory.Entry{IP: "10.0.0.161", Node: "node1", Network: "web", Container: "a", ID: "ca"},
		inventory.Entry{IP: "10.0.0.162", Node: "node1", Network: "web", Container: "b", ID: "cb"},
		inventory.Entry{IP: "10.0.0.163", Node: "node1", Network: "web", Container: "c", ID: "cc"},
		inventory.Entry{IP: "192.168.7.7", Node: "node2", Network: "web", Container: "d", ID: "cd"},
		inventory.Entry{IP: "fd00::7", Node: "node2", Network: "web", Container: "e", ID: "ce"},
	)
	for i := range es {
		es[i].Duplicate = "" // Build checks them
	}
	s := Build(Inputs{Now: t0, Networks: []NetworkInput{n}, Inventory: es,
		Nodes: []SwarmNode{{ID: "id1", Hostname: "node1", State: "ready"}, {ID: "id2", Hostname: "node2", State: "ready"}}})
	nw := s.Networks[0]
	got := map[string]string{}
	for _, a := range nw.Pool.Addresses {
		got[a.IP] = a.State
	}
	for ip, want := range map[string]string{"10.0.0.161": StateDuplicate, "10.0.0.162": StateDuplicate, "10.0.0.163": StateTask, "10.0.0.144": StateDuplicate} {
		if got[ip] != want {
			t.Errorf("%s: state %q, want %q", ip, got[ip], want)
		}
	}
	if s.Summary.Duplicates != 3 {
		t.Errorf("summary counts %d duplicate addresses, want 3 (10.0.0.144, .161, .162)", s.Summary.Duplicates)
	}
	var outside []string
	for _, a := range nw.Outside {
		outside = append(outside, a.IP+" "+a.Holder)
	}
	if d := cmp.Diff([]string{"192.168.7.7 d on node2", "fd00::7 e on node2"}, outside); d != "" {
		t.Errorf("addresses outside the subnets (-want +got):\n%s", d)
	}
}

// TestBuildCountsDuplicateContainers: a container ID two nodes'
// inventories list (one of them stale or forged) marked both cards, but
// the summary, which counted duplicate addresses only, did not count it.
// It now counts such container IDs apart (duplicate_containers); one
// container on two networks of its node is none.
func TestBuildCountsDuplicateContainers(t *testing.T) {
	es := []inventory.Entry{
		{IP: "10.0.0.5", Node: "node1", Network: "web", Container: "a", ID: "ca"},
		{IP: "10.0.1.5", Node: "node1", Network: "db", Container: "a", ID: "ca"},
		{IP: "10.0.0.6", Node: "node2", Network: "web", Container: "b", ID: "cb"},
		{IP: "10.0.0.7", Node: "node1", Network: "web", Container: "b", ID: "cb"},
		{IP: "10.0.0.8", Node: "node3", Network: "web", Container: "b", ID: "cb"},
	}
	s := Build(Inputs{Now: t0, Inventory: es})
	b, err := json.Marshal(s.Summary)
	if err != nil {
		t.Fatal(err)
	}
	var sum map[string]int
	if err := json.Unmarshal(b, &sum); err != nil {
		t.Fatal(err)
	}
	if sum["duplicate_containers"] != 1 || sum["duplicates"] != 0 {
		t.Errorf("summary %s: want duplicate_containers 1 (cb, on three nodes), duplicates 0", b)
	}
}

// TestBuildPoolNamesNodes: the pool's allocations, and its blocks, named
// their node by its identity ("allocated to 4x1f…", the swarm node ID),
// where `underlay ips` names it. They now name it as the node facts do,
// else by its swarm host name, else by the identity.
func TestBuildPoolNamesNodes(t *testing.T) {
	spec := netspec.Spec{Name: "web", Subnet: netip.MustParsePrefix("10.0.0.0/24"), Parent: "eth1", IPAM: netspec.Cluster}
	at := t0.Add(-time.Minute)
	n := NetworkInput{Spec: spec, Blocks: map[netip.Prefix]ipam.BlockDoc{
		netip.MustParsePrefix("10.0.0.16/28"): {Node: "id2", Allocs: map[string]ipam.Alloc{
			"10.0.0.16": {Node: "id2", At: at, Kind: ipam.KindShim},
			"10.0.0.17": {Node: "id2", At: at, Kind: ipam.KindSpare},
			"10.0.0.18": {Node: "id2", At: at, Kind: ipam.KindTask}, // a leak
		}},
	}}
	for _, tc := range []struct {
		name string
		in   Inputs
		want string
	}{
		{"by its facts", Inputs{NodeNames: map[string]string{"id2": "node2"}, Nodes: []SwarmNode{{ID: "id2", Hostname: "host2"}}}, "node2"},
		{"by its swarm host name", Inputs{Nodes: []SwarmNode{{ID: "id2", Hostname: "host2"}}}, "host2"},
		{"unknown", Inputs{}, "id2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.in.Now, tc.in.Networks = t0, []NetworkInput{n}
			p := Build(tc.in).Networks[0].Pool
			got := map[string]string{}
			for _, a := range p.Addresses {
				if a.Node != "" {
					got[a.IP] = a.Node + ": " + a.Holder
				}
			}
			w := tc.want
			want := map[string]string{
				"10.0.0.16": w + ": host shim of " + w,
				"10.0.0.17": w + ": spare of " + w + ": handed to its next container without waiting for Consul",
				"10.0.0.18": w + ": allocated to " + w + ", held by no container: reclaimed after the grace period",
			}
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("allocations' nodes and holders (-want +got):\n%s", d)
			}
			if len(p.Regions) != 1 || p.Regions[0].Node != w {
				t.Errorf("regions %+v, want the block of %s", p.Regions, w)
			}
		})
	}
}

// TestBuildFindsAnAgentByIDWhateverItsName: an agent's --node is its
// node's name for display; in the cluster the node is known by its swarm
// node ID, which its facts and its report under its ID name. An agent
// whose --node is not its host name (Docker's, the swarm's) was looked
// for under the host name only: its node showed no agent and no doctor,
// and its report was on no column. It is its node's, once: its warnings
// and the failure of its report among that node's problems, not the
// cluster's.
func TestBuildFindsAnAgentByIDWhateverItsName(t *testing.T) {
	w := DoctorResult{Check: "nodes/facts", Status: "warn", Message: "w", Fix: "fix w"}
	in := Inputs{Now: t0, Nodes: []SwarmNode{{ID: "id1", Hostname: "host1"}},
		Agents: []AgentInput{{Node: "custom", ID: "id1", FactsAt: t0, DoctorByID: true, Warnings: []DoctorResult{w},
			Doctor: &DoctorReport{At: t0, Every: time.Minute, Results: []DoctorResult{{Check: "doctor/report", Status: "fail", Message: "refused"}}}}}}
	s := Build(in)
	n := s.Nodes[0]
	if n.Agent.State != AgentUp {
		t.Errorf("host1's agent %+v, want up", n.Agent)
	}
	if n.Doctor == nil || len(n.Doctor.Problems) != 2 {
		t.Errorf("host1's doctor %+v, want its report's failure and its warning", n.Doctor)
	}
	if len(s.Problems) != 0 {
		t.Errorf("cluster problems %+v, want none: they are host1's", s.Problems)
	}
}

// TestBuildShowsAFormerIdentitysRefusedReportOnce: node n1 (id1) has no
// facts of its own; the facts of id0, which the swarm no longer lists,
// name it: its agent, not restarted since the node joined the swarm
// again, is taken as n1's, with its report under id0. That report
// refused (its key's failed doctor/report check) was shown on n1 and
// among the cluster's problems too. It is n1's only.
func TestBuildShowsAFormerIdentitysRefusedReportOnce(t *testing.T) {
	refused := DoctorResult{Check: "doctor/report", Status: "fail", Message: "report underlay/doctor/id/id0 is refused", Fix: "consul kv delete underlay/doctor/id/id0"}
	s := Build(Inputs{Now: t0, Nodes: []SwarmNode{{ID: "id1", Hostname: "n1"}},
		Agents: []AgentInput{{Node: "n1", ID: "id0", FactsAt: t0, DoctorByID: true, Doctor: &DoctorReport{Results: []DoctorResult{refused}}}}})
	if d := s.Nodes[0].Doctor; d == nil || !slices.Contains(d.Problems, refused) {
		t.Errorf("n1's doctor %+v, want its agent's report refused", d)
	}
	if len(s.Problems) != 0 {
		t.Errorf("cluster problems %+v, want none: the refusal is on n1", s.Problems)
	}
}

// TestBuildGivesNoDeleteConsulRedirects: the warning of a report under
// an ID nobody has, "..", gave `consul kv delete underlay/doctor/id/..`,
// whose path Consul's HTTP API redirects to another key: the delete
// misses it. It gives no command, and says how the report goes.
func TestBuildGivesNoDeleteConsulRedirects(t *testing.T) {
	s := Build(Inputs{Now: t0, Agents: []AgentInput{{Node: "n1", ID: "..", DoctorByID: true, NoFacts: true,
		Doctor: &DoctorReport{Key: "underlay/doctor/id/..", At: t0, Every: time.Minute}}}})
	if len(s.Problems) != 1 || s.Problems[0].Fix != "" || !strings.Contains(s.Problems[0].Message, "PUT /v1/txn") {
		t.Errorf("cluster problems %+v; want the report's warning, with no fix, saying to delete it by a transaction", s.Problems)
	}
}

// nulls lists the paths of v, decoded JSON, whose value is null, but for
// the fields named in nullable.
func nulls(path string, v any, nullable map[string]bool) []string {
	var out []string
	switch v := v.(type) {
	case nil:
		return []string{path}
	case map[string]any:
		for k, e := range v {
			if e == nil && nullable[k] {
				continue
			}
			out = append(out, nulls(path+"."+k, e, nullable)...)
		}
	case []any:
		for i, e := range v {
			out = append(out, nulls(path+"["+strconv.Itoa(i)+"]", e, nullable)...)
		}
	}
	return out
}

// TestSnapshotListsAreLists: a service none of whose running tasks has
// an underlay address (scaled to zero, or on overlay networks only: most
// clusters run one) had "networks": null, on which the page's script
// threw (svc.networks.length), so that no service after it, no network
// and no search was shown, at every snapshot. Every list of the snapshot
// is now a list, empty when there is nothing in it; only a node's doctor
// report is null (no report).
func TestSnapshotListsAreLists(t *testing.T) {
	sparse := Inputs{Now: t0,
		Nodes:    []SwarmNode{{ID: "n1", Hostname: "h1", State: "ready"}},
		Services: []SwarmService{{ID: "s1", Name: "web"}, {ID: "s2", Name: "overlay-only", Replicas: 1}, {ID: "s3", Name: "global", Global: true}},
		Tasks: []SwarmTask{{ID: "t1", ServiceID: "s2", NodeID: "n1", DesiredState: "running", State: "running"},
			{ID: "t2", ServiceID: "sX", NodeID: "nX", DesiredState: "running"}},
		Instances: []Instance{{Node: "h1", ID: "i1", Service: "lost", Meta: map[string]string{register.MetaNode: "h1"}}},
		Networks: []NetworkInput{{Spec: netspec.Spec{Name: "n", Subnet: netip.MustParsePrefix("10.0.0.0/24"), IPAM: netspec.PerNode}},
			{Spec: netspec.Spec{Name: "c", Subnet: netip.MustParsePrefix("10.1.0.0/24"), IPv6Subnet: netip.MustParsePrefix("fd00::/64"), IPAM: netspec.Cluster}},
			{Spec: netspec.Spec{Name: "r"}, Refused: "bad"}},
		Agents:     []AgentInput{{Node: "h1"}},
		Autoscaled: []scale.ServiceInfo{{Service: "web"}},
	}
	for name, in := range map[string]Inputs{"sparse": sparse, "empty": {Now: t0}, "cards": cardsInput(), "synthetic": synthetic(3, 20, t0, nil), "huge": hugeInputs()} {
		lim, _ := limit(Build(in))
		b, err := json.Marshal(lim)
		if err != nil {
			t.Fatal(err)
		}
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatal(err)
		}
		got := nulls("snapshot", v, map[string]bool{"doctor": true})
		slices.Sort(got)
		for _, p := range got {
			t.Errorf("%s: %s is null, want a list or an object", name, p)
		}
	}
}
