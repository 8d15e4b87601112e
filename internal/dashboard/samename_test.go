package dashboard

import (
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/underlay/underlay/internal/inventory"
	"github.com/underlay/underlay/internal/netspec"
)

// sameNameInput is two swarm nodes of one host name, a and b, each with
// a live agent of its own facts (b's stopped reporting an hour ago) and a
// task of its own.
func sameNameInput(bAt time.Time) Inputs {
	task := func(id, node string) SwarmTask {
		return SwarmTask{ID: id, ServiceID: "s1", NodeID: node, Slot: 1, DesiredState: "running", State: "running", Since: t0.Add(-time.Hour)}
	}
	return Inputs{
		Now:      t0,
		Nodes:    []SwarmNode{{ID: "idb", Hostname: "n1", Role: "worker", State: "ready"}, {ID: "ida", Hostname: "n1", Role: "worker", State: "ready"}},
		Services: []SwarmService{{ID: "s1", Name: "hello", Replicas: 2}},
		Tasks:    []SwarmTask{task("ta", "ida"), task("tb", "idb")},
		Agents:   []AgentInput{{Node: "n1", ID: "ida", FactsAt: t0.Add(-5 * time.Second)}, {Node: "n1", ID: "idb", FactsAt: bAt}},
	}
}

// TestBuildTellsNodesOfOneNameApart: two swarm nodes of one name were
// one node to the dashboard: both columns took the agent of whichever
// facts were newest, and every task of the name, so that a dead agent
// hid behind a live one. Each column now has its own agent, by swarm
// node ID, and its own tasks, and the events name the node's ID.
func TestBuildTellsNodesOfOneNameApart(t *testing.T) {
	old := Build(sameNameInput(t0.Add(-10 * time.Second)))
	snap := Build(sameNameInput(t0.Add(-time.Hour)))
	if len(snap.Nodes) != 2 {
		t.Fatalf("nodes %+v, want two", snap.Nodes)
	}
	for _, want := range []struct{ id, agent, task string }{{"ida", AgentUp, "ta"}, {"idb", AgentStale, "tb"}} {
		var n *Node
		for i := range snap.Nodes {
			if snap.Nodes[i].ID == want.id {
				n = &snap.Nodes[i]
			}
		}
		if n == nil {
			t.Fatalf("no column of node %s: %+v", want.id, snap.Nodes)
		}
		if n.Agent.State != want.agent {
			t.Errorf("node %s's agent is %s, want %s", want.id, n.Agent.State, want.agent)
		}
		if len(n.Tasks) != 1 || n.Tasks[0].ID != want.task || n.Tasks[0].NodeID != want.id {
			t.Errorf("node %s's tasks %+v, want %s only", want.id, n.Tasks, want.task)
		}
	}
	evs := Diff(&old, &snap)
	var agentEvents []string
	for _, e := range evs {
		if strings.Contains(e.Message, "agent") {
			agentEvents = append(agentEvents, e.Message)
		}
	}
	if len(agentEvents) != 1 || !strings.Contains(agentEvents[0], "idb") || !strings.Contains(agentEvents[0], "up → stale") {
		t.Errorf("events %q, want one of node idb's agent going stale", agentEvents)
	}
}

// TestScriptKeysNodeColumnsByID: the page kept its node columns by name,
// so two nodes of one name were drawn as one column. It keys them by
// swarm node ID now, and shows the ID on a column whose name another
// has.
func TestScriptKeysNodeColumnsByID(t *testing.T) {
	b, err := assets.ReadFile("assets/app.js")
	if err != nil {
		t.Fatal(err)
	}
	js := string(b)
	id := jsonName(t, Node{}, "ID")
	for _, want := range []string{"cols.get(n." + id + ")", "nodeId: n." + id, "'swarm node ' + n." + id} {
		if !strings.Contains(js, want) {
			t.Errorf("app.js lacks %s", want)
		}
	}
}

// TestBuildKeepsNameOnlyCardsApart: a card known by its node's name only
// (a Consul instance of a plain container, whose registration names no
// swarm node) went to the first swarm node of that name, by ID, when two
// have it: shown on a node that may not run it. It is now unplaced, with
// a problem naming both nodes; one whose registration names its swarm
// node goes to that node.
func TestBuildKeepsNameOnlyCardsApart(t *testing.T) {
	in := sameNameInput(t0.Add(-10 * time.Second))
	inst := func(id, swarmNode string) Instance {
		return Instance{Node: "n1", ID: id, Service: "plain", Address: "10.0.0.9",
			Meta: map[string]string{"underlay_node": "n1", "container_id": id, "swarm_node_id": swarmNode}}
	}
	in.Instances = []Instance{inst("c-name-only", ""), inst("c-of-idb", "idb")}
	snap := Build(in)
	where := map[string]string{}
	for _, n := range snap.Nodes {
		for _, c := range n.Tasks {
			where[c.ID] = n.ID
		}
	}
	for _, c := range snap.Unplaced {
		where[c.ID] = "unplaced"
		if c.ID == "c-name-only" && (len(c.Problems) == 0 || !strings.Contains(c.Problems[len(c.Problems)-1], "ida, idb")) {
			t.Errorf("unplaced card's problems %q, want one naming swarm nodes ida, idb", c.Problems)
		}
	}
	if where["c-name-only"] != "unplaced" || where["c-of-idb"] != "idb" {
		t.Errorf("cards on %v, want c-name-only unplaced and c-of-idb on idb", where)
	}
}

// TestBuildSaysWhenDoctorReportIsTheName: the doctor report is published
// under the node name, so with two swarm nodes of one name it was shown
// on both as each one's own, counted twice, and its fresh stamp kept a
// dead agent up: idb's agent stopped an hour ago, but idb looked live by
// the report ida's agent wrote. The report now says on each card that it
// is the name's, naming the nodes; it is counted once; and it is no
// heartbeat of either agent, nor their version.
func TestBuildSaysWhenDoctorReportIsTheName(t *testing.T) {
	in := sameNameInput(t0.Add(-time.Hour))
	report := &DoctorReport{At: t0.Add(-5 * time.Second), Every: time.Minute, Version: "v9",
		Results: []DoctorResult{{Check: "shim", Status: "fail", Message: "shim missing"}}}
	for i := range in.Agents {
		in.Agents[i].Doctor = report
	}
	in.Agents = hearAgentsOnce(in)
	snap := Build(in)
	for _, n := range snap.Nodes {
		if n.Doctor == nil || !slices.Equal(n.Doctor.SharedBy, []string{"ida", "idb"}) {
			t.Errorf("node %s's doctor %+v, want the report shared by ida, idb", n.ID, n.Doctor)
		}
		if n.ID == "idb" && (n.Agent.State != AgentStale || n.Agent.Version != "") {
			t.Errorf("node idb's agent %+v, want stale, no version: its facts are an hour old, the report is the name's", n.Agent)
		}
	}
	if snap.Summary.DoctorFailures != 1 {
		t.Errorf("doctor failures %d, want 1: one report", snap.Summary.DoctorFailures)
	}
	b, err := assets.ReadFile("assets/app.js")
	if err != nil {
		t.Fatal(err)
	}
	if want := "doc." + jsonName(t, Doctor{}, "SharedBy") + ".join(', ')"; !strings.Contains(string(b), want) {
		t.Errorf("app.js lacks %s: the page does not say whose report it is", want)
	}
}

// hearAgentsOnce is in's agents as the server hears them at in.Now, the
// first time.
func hearAgentsOnce(in Inputs) []AgentInput {
	as := slices.Clone(in.Agents)
	hearAgents(as, sharedNames(in.Nodes), nil, in.Now)
	return as
}

// TestBuildNamesSameNameNodesApartInNetworks: network states, per-node
// ranges and pool holders named their node by name only, so with two
// swarm nodes of one name the page could not tell which node's range,
// shim or report each was (the map's legend drew them as one node).
// Each now names its node's swarm node ID too when another node has the
// name, and carries the ID.
func TestBuildNamesSameNameNodesApartInNetworks(t *testing.T) {
	in := sameNameInput(t0.Add(-10 * time.Second))
	in.NodeNames = map[string]string{"ida": "n1", "idb": "n1"}
	spec := netspec.Spec{Name: "demo", Subnet: netip.MustParsePrefix("10.200.0.0/24"), Gateway: netip.MustParseAddr("10.200.0.1"),
		Parent: "eth1", IPAM: netspec.PerNode, PerNodeSize: 64}
	in.Networks = []NetworkInput{{Spec: spec,
		Leases: map[netip.Prefix]string{netip.MustParsePrefix("10.200.0.64/26"): "idb", netip.MustParsePrefix("10.200.0.0/26"): "ida"},
		States: []netspec.NodeState{
			{ID: "idb", Node: "n1", State: "error", Error: "no parent", Shim: netip.MustParseAddr("10.200.0.66")},
			{ID: "ida", Node: "n1", State: "ready", Shim: netip.MustParseAddr("10.200.0.2")},
		},
	}}
	snap := Build(in)
	nw := snap.Networks[0]
	wantNodes := []NetworkNode{
		{Node: "n1 (swarm node ida)", ID: "ida", State: "ready", Shim: "10.200.0.2"},
		{Node: "n1 (swarm node idb)", ID: "idb", State: "error", Shim: "10.200.0.66", Error: "no parent"},
	}
	if d := cmp.Diff(wantNodes, nw.Nodes); d != "" {
		t.Errorf("network's nodes (-want +got):\n%s", d)
	}
	wantRegions := []Region{
		{Prefix: "10.200.0.0/26", Node: "n1 (swarm node ida)", NodeID: "ida", Kind: "range"},
		{Prefix: "10.200.0.64/26", Node: "n1 (swarm node idb)", NodeID: "idb", Kind: "range"},
	}
	if d := cmp.Diff(wantRegions, nw.Pool.Regions); d != "" {
		t.Errorf("regions (-want +got):\n%s", d)
	}
	shims := map[string]string{}
	for _, a := range nw.Pool.Addresses {
		if strings.HasPrefix(a.Holder, "host shim") {
			shims[a.IP] = a.Holder + " / " + a.NodeID
		}
	}
	if want := map[string]string{"10.200.0.2": "host shim of n1 (swarm node ida) / ida", "10.200.0.66": "host shim of n1 (swarm node idb) / idb"}; !maps.Equal(shims, want) {
		t.Errorf("shims %v, want %v", shims, want)
	}
	// The map colours each node's regions by that label.
	b, err := assets.ReadFile("assets/app.js")
	if err != nil {
		t.Fatal(err)
	}
	if want := "nodeIdx.set(n.name + ' (swarm node ' + n.id + ')', i % 10)"; !strings.Contains(string(b), want) {
		t.Errorf("app.js lacks %s", want)
	}
}

// TestDiffTellsOfTheNameReportOnce: a doctor report of a name two swarm
// nodes have changed, and the events said so twice, once as each node's
// ("doctor on n1 (swarm node ida): …", then idb), each time attributed
// to one node. They now say it once, as the name's report.
func TestDiffTellsOfTheNameReportOnce(t *testing.T) {
	build := func(results ...DoctorResult) Snapshot {
		in := sameNameInput(t0.Add(-10 * time.Second))
		report := &DoctorReport{At: t0.Add(-5 * time.Second), Every: time.Minute, Results: results}
		for i := range in.Agents {
			in.Agents[i].Doctor = report
		}
		return Build(in)
	}
	old := build(DoctorResult{Check: "shim", Status: "ok"})
	cur := build(DoctorResult{Check: "shim", Status: "fail", Message: "shim missing"})
	var got []string
	for _, e := range Diff(&old, &cur) {
		if e.Kind == EventDoctor {
			got = append(got, e.Message)
		}
	}
	if len(got) != 1 || !strings.Contains(got[0], "swarm nodes ida, idb") {
		t.Errorf("doctor events %q, want one, of the report of the name swarm nodes ida, idb have", got)
	}
}

// TestBuildSaysWhenAgentIsKnownByNameOnly: an agent whose facts name no
// swarm node (an older agent's, or a former identity's) was taken as the
// agent of every node of its name without a word: with two swarm nodes
// of one name, both columns showed its heartbeat as their own. Under a
// name several nodes have, such an agent now shows as known by name
// only (Agent.NameOnly), and the page says so.
func TestBuildSaysWhenAgentIsKnownByNameOnly(t *testing.T) {
	in := sameNameInput(t0.Add(-10 * time.Second))
	in.Agents = []AgentInput{{Node: "n1", FactsAt: t0.Add(-5 * time.Second)}}
	for _, n := range Build(in).Nodes {
		if n.Agent.State != AgentUp || !n.Agent.NameOnly {
			t.Errorf("node %s's agent %+v, want up, known by name only", n.ID, n.Agent)
		}
	}
	in = sameNameInput(t0.Add(-10 * time.Second))
	for _, n := range Build(in).Nodes {
		if n.Agent.NameOnly {
			t.Errorf("node %s's agent %+v, known by name only, but its facts name it", n.ID, n.Agent)
		}
	}
	b, err := assets.ReadFile("assets/app.js")
	if err != nil {
		t.Fatal(err)
	}
	if want := "agent." + jsonName(t, Agent{}, "NameOnly") + " ?"; !strings.Contains(string(b), want) {
		t.Errorf("app.js lacks %s", want)
	}
}

// TestBuildSaysWhenAHolderIsKnownByNameOnly: a container's address on the
// map named its holder's node by the inventory's node name, which two
// swarm nodes had: "hello.1 (c1) on n1" read as one node's. Inventory
// entries carry no node ID, so the holder now says the name is several
// nodes', naming them, rather than pick one.
func TestBuildSaysWhenAHolderIsKnownByNameOnly(t *testing.T) {
	in := sameNameInput(t0.Add(-10 * time.Second))
	spec := netspec.Spec{Name: "demo", Subnet: netip.MustParsePrefix("10.200.0.0/24"), Gateway: netip.MustParseAddr("10.200.0.1"),
		Parent: "eth1", IPAM: netspec.PerNode, PerNodeSize: 64}
	in.Networks = []NetworkInput{{Spec: spec}}
	in.Inventory = []inventory.Entry{{IP: "10.200.0.3", Node: "n1", Network: "demo", Container: "c1", ID: "ctr1", Service: "hello", Slot: "1", Task: "ta"}}
	snap := Build(in)
	var holder string
	for _, a := range snap.Networks[0].Pool.Addresses {
		if a.IP == "10.200.0.3" {
			holder = a.Holder
		}
	}
	if want := "hello.1 (c1) on n1 (a name swarm nodes ida, idb have)"; holder != want {
		t.Errorf("holder %q, want %q", holder, want)
	}
}

// TestBuildPlacesAHolderByNodeID: an inventory entry naming its swarm
// node (node_id, which agents now write) was still named by its node's
// name only, "n1 (a name swarm nodes ida, idb have)", when two nodes
// have it. It is now named as that node, "n1 (swarm node ida)", with its
// ID, on the map and among the addresses outside the subnet; an entry
// without one (an older agent's) reads as before.
func TestBuildPlacesAHolderByNodeID(t *testing.T) {
	in := sameNameInput(t0.Add(-10 * time.Second))
	spec := netspec.Spec{Name: "demo", Subnet: netip.MustParsePrefix("10.200.0.0/24"), Gateway: netip.MustParseAddr("10.200.0.1"),
		Parent: "eth1", IPAM: netspec.PerNode, PerNodeSize: 64}
	in.Networks = []NetworkInput{{Spec: spec}}
	in.Inventory = []inventory.Entry{
		{IP: "10.200.0.3", Node: "n1", NodeID: "ida", Network: "demo", Container: "c1", ID: "ctr1", Service: "hello", Slot: "1", Task: "ta"},
		{IP: "10.200.0.4", Node: "n1", NodeID: "idb", Network: "demo", Container: "c2", ID: "ctr2", Service: "hello", Slot: "2", Task: "tb"},
		{IP: "10.200.0.5", Node: "n1", Network: "demo", Container: "c3", ID: "ctr3"},
		{IP: "10.200.0.6", Node: "n1", NodeID: "gone", Network: "demo", Container: "c4", ID: "ctr4"},
		{IP: "10.9.0.7", Node: "n1", NodeID: "idb", Network: "demo", Container: "c5", ID: "ctr5"},
	}
	snap := Build(in)
	got := map[string]string{}
	for _, a := range append(snap.Networks[0].Pool.Addresses, snap.Networks[0].Outside...) {
		got[a.IP] = a.Holder + " / " + a.NodeID
	}
	want := map[string]string{
		"10.200.0.3": "hello.1 (c1) on n1 (swarm node ida) / ida",
		"10.200.0.4": "hello.2 (c2) on n1 (swarm node idb) / idb",
		"10.200.0.5": "c3 on n1 (a name swarm nodes ida, idb have) / ",
		// An identity the dashboard does not know: by name, as before.
		"10.200.0.6": "c4 on n1 (a name swarm nodes ida, idb have) / ",
		"10.9.0.7":   "c5 on n1 (swarm node idb) / idb",
	}
	for ip, w := range want {
		if got[ip] != w {
			t.Errorf("%s: holder / node ID %q, want %q", ip, got[ip], w)
		}
	}
}

// TestBuildCountsADuplicateContainerOfSameNameNodes: the summary's
// duplicate_containers did not count a container ID two swarm nodes of
// one name list, their entries naming one node; entries giving their
// nodes' IDs are now told apart by them.
func TestBuildCountsADuplicateContainerOfSameNameNodes(t *testing.T) {
	in := sameNameInput(t0.Add(-10 * time.Second))
	in.Inventory = []inventory.Entry{
		{IP: "10.0.0.5", Node: "n1", NodeID: "ida", Network: "web", Container: "a", ID: "ca"},
		{IP: "10.0.0.6", Node: "n1", NodeID: "idb", Network: "web", Container: "a", ID: "ca"},
		{IP: "10.0.0.7", Node: "n1", NodeID: "idb", Network: "web", Container: "b", ID: "cb"},
		{IP: "10.0.1.7", Node: "n1", Network: "db", Container: "b", ID: "cb"}, // an older agent's: either
	}
	if got := Build(in).Summary.DuplicateContainers; got != 1 {
		t.Errorf("duplicate_containers %d, want 1 (ca, on ida and idb)", got)
	}
}

// TestBuildShowsEachNodesOwnDoctorReport: agents publish their doctor
// report under their swarm node ID (AgentInput.DoctorByID), so two
// swarm nodes of one name each have their own: it is shown on its node
// only, not as the name's, counted once each, and it is its agent's
// heartbeat (idb's, an hour old, leaves idb stale).
func TestBuildShowsEachNodesOwnDoctorReport(t *testing.T) {
	in := sameNameInput(t0.Add(-time.Hour))
	for i, a := range in.Agents {
		at := t0.Add(-5 * time.Second)
		if a.ID == "idb" {
			at = t0.Add(-time.Hour)
		}
		in.Agents[i].Doctor = &DoctorReport{At: at, Every: time.Minute, Version: "v9",
			Results: []DoctorResult{{Check: "shim", Status: "fail", Message: "shim missing on " + a.ID}}}
		in.Agents[i].DoctorByID = true
	}
	in.Agents = hearAgentsOnce(in)
	snap := Build(in)
	for _, n := range snap.Nodes {
		if n.Doctor == nil || n.Doctor.SharedBy != nil || len(n.Doctor.Problems) != 1 || n.Doctor.Problems[0].Message != "shim missing on "+n.ID {
			t.Errorf("node %s's doctor %+v, want its own report only", n.ID, n.Doctor)
		}
		if want := map[string]string{"ida": AgentUp, "idb": AgentStale}[n.ID]; n.Agent.State != want || n.Agent.Version != "v9" {
			t.Errorf("node %s's agent %+v, want %s with version v9", n.ID, n.Agent, want)
		}
	}
	if snap.Summary.DoctorFailures != 2 {
		t.Errorf("doctor failures %d, want 2: one report each", snap.Summary.DoctorFailures)
	}
}
