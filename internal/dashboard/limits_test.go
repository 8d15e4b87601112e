package dashboard

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/underlay/underlay/internal/inventory"
	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/scale"
)

// hugeInputs is a cluster whose agents' documents are as large as anyone
// with an agent's token may make them: a doctor report of 500 failures
// of 4 KB each, as many warnings about a node with no column, a /16 pool
// with 5,000 allocations, an IPv6 pool with 600, and 400 inventory
// addresses outside the network's subnets.
func hugeInputs() Inputs {
	in := cardsInput()
	long := strings.Repeat("é", 2048)
	var results, warnings []DoctorResult
	for i := range 500 {
		results = append(results, DoctorResult{Check: fmt.Sprintf("c%d", i), Status: "fail", Message: long, Fix: "consul kv delete " + long})
		warnings = append(warnings, DoctorResult{Check: fmt.Sprintf("nodes/facts/%d", i), Status: "warn", Message: long})
	}
	in.Agents = []AgentInput{{Node: "node1", FactsAt: in.Now, Doctor: &DoctorReport{At: in.Now, Results: results}},
		{Node: "", Warnings: warnings}}
	spec := netspec.Spec{Name: "big", Subnet: netip.MustParsePrefix("10.50.0.0/16"), Gateway: netip.MustParseAddr("10.50.0.1"),
		IPv6Subnet: netip.MustParsePrefix("fd00:50::/64"), Parent: "eth1", IPAM: netspec.Cluster}
	n := NetworkInput{Spec: spec, Blocks: map[netip.Prefix]ipam.BlockDoc{}}
	at := in.Now.Add(-time.Hour)
	add := func(a netip.Addr, bits int) {
		b, _ := a.Prefix(bits)
		doc, ok := n.Blocks[b]
		if !ok {
			doc = ipam.BlockDoc{Node: "n1", Allocs: map[string]ipam.Alloc{}}
			n.Blocks[b] = doc
		}
		doc.Allocs[a.String()] = ipam.Alloc{Node: "n1", At: at, Kind: ipam.KindTask}
	}
	a := netip.MustParseAddr("10.50.1.0")
	for range 5000 {
		add(a, 28)
		a = a.Next()
	}
	a6 := netip.MustParseAddr("fd00:50::1:0")
	for range 600 {
		add(a6, 120)
		a6 = a6.Next()
	}
	in.Networks = append(in.Networks, n)
	o := netip.MustParseAddr("192.168.0.0")
	for i := range 400 {
		in.Inventory = append(in.Inventory, inventory.Entry{IP: o.String(), Node: "node2", Network: "big", Container: fmt.Sprintf("x%d", i), ID: fmt.Sprintf("id%d", i)})
		o = o.Next()
	}
	return in
}

// TestSnapshotIsBounded: doctor problems and pool address lists went to
// every page whole, however many and however long an agent's documents
// made them: one agent's token, or a large cluster, made every load of
// the page megabytes. Each list is now cut, as events are (fb928f1), with
// a count of what was left out, which the page shows; the counts of the
// pools' states stay whole.
func TestSnapshotIsBounded(t *testing.T) {
	ts := startServer(t, Config{Refresh: time.Minute, IdleRefresh: time.Hour}, hugeInputs())
	c := ts.client(t)
	resp, body := ts.get(t, c, "/v1/cluster", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("GET /v1/cluster: %d", resp.StatusCode)
	}
	if len(body) > 2<<20 {
		t.Errorf("snapshot of %d bytes, want at most 2 MiB", len(body))
	}
	var snap struct {
		Problems        []DoctorResult `json:"problems"`
		ProblemsOmitted int            `json:"problems_omitted"`
		Nodes           []struct {
			Name   string `json:"name"`
			Doctor *struct {
				Fail            int            `json:"fail"`
				Problems        []DoctorResult `json:"problems"`
				ProblemsOmitted int            `json:"problems_omitted"`
			} `json:"doctor"`
		} `json:"nodes"`
		Networks []struct {
			Name string `json:"name"`
			Pool struct {
				Counts    map[string]int `json:"counts"`
				Addresses []PoolAddress  `json:"addresses"`
				Omitted   int            `json:"omitted"`
			} `json:"pool"`
			IPv6Pool *struct {
				Counts    map[string]int `json:"counts"`
				Addresses []PoolAddress  `json:"addresses"`
				Omitted   int            `json:"omitted"`
			} `json:"ipv6_pool"`
			Outside        []PoolAddress `json:"outside"`
			OutsideOmitted int           `json:"outside_omitted"`
		} `json:"networks"`
	}
	if err := json.Unmarshal([]byte(body), &snap); err != nil {
		t.Fatal(err)
	}
	if n := len(snap.Problems); n > MaxProblems || n+snap.ProblemsOmitted != 500 {
		t.Errorf("cluster problems: %d listed, %d left out; want at most %d listed, 500 in all", n, snap.ProblemsOmitted, MaxProblems)
	}
	for _, p := range snap.Problems {
		if len(p.Message) > MaxEventMessage {
			t.Fatalf("a cluster problem's message has %d bytes, want at most %d", len(p.Message), MaxEventMessage)
		}
	}
	for _, n := range snap.Nodes {
		if n.Name != "node1" {
			continue
		}
		d := n.Doctor
		if d == nil || d.Fail != 500 || len(d.Problems) > MaxProblems || len(d.Problems)+d.ProblemsOmitted != 500 {
			t.Fatalf("node1's doctor: %+v; want 500 failures, at most %d listed, the rest counted", d, MaxProblems)
		}
		for _, p := range d.Problems {
			if len(p.Message) > MaxEventMessage || len(p.Fix) > MaxEventMessage {
				t.Fatalf("a problem of %d bytes, fix of %d; want at most %d each", len(p.Message), len(p.Fix), MaxEventMessage)
			}
		}
	}
	for _, n := range snap.Networks {
		if n.Name != "big" {
			continue
		}
		if l := len(n.Pool.Addresses); l > MaxPoolAddresses || l+n.Pool.Omitted != 5003 || n.Pool.Counts[StateLeaked] != 5000 {
			t.Errorf("IPv4 pool: %d addresses listed, %d left out, %d leaks counted; want at most %d listed, 5003 in all (the network, gateway and broadcast addresses too), 5000 leaks",
				l, n.Pool.Omitted, n.Pool.Counts[StateLeaked], MaxPoolAddresses)
		}
		if p := n.IPv6Pool; p == nil || len(p.Addresses) > MaxPool6Addresses || len(p.Addresses)+p.Omitted != 602 || p.Counts[StateLeaked] != 600 {
			t.Errorf("IPv6 pool: %+v; want at most %d listed, 602 in all", p, MaxPool6Addresses)
		}
		if l := len(n.Outside); l > MaxPool6Addresses || l+n.OutsideOmitted != 400 {
			t.Errorf("outside: %d listed, %d left out; want at most %d, 400 in all", l, n.OutsideOmitted, MaxPool6Addresses)
		}
	}
}

// TestCheckOutputBounded: a failing check's output went whole into its
// card, on every page load and every snapshot frame: Consul keeps up to
// check_output_max_size of it (4 KB unless raised), and the container
// checked writes it, so 3,000 cards of a failing dependency made 12 MB of
// snapshot. It is now cut at MaxEventMessage, as the other texts agents
// and containers write. The health event quoted its first 160 bytes,
// cut inside a character: now on a character boundary.
func TestCheckOutputBounded(t *testing.T) {
	in := cardsInput()
	long := "a" + strings.Repeat("é", 64<<10) // odd: 160 bytes end inside an é
	for i := range in.Instances {
		for j := range in.Instances[i].Checks {
			if in.Instances[i].Checks[j].Status != HealthPassing {
				in.Instances[i].Checks[j].Output = long
			}
		}
	}
	snap := Build(in)
	lim, _ := limit(snap)
	var cut int
	for _, n := range append(lim.Nodes, Node{Tasks: lim.Unplaced}) {
		for _, c := range n.Tasks {
			for _, ch := range c.Checks {
				if len(ch.Output) > MaxEventMessage || !utf8.ValidString(ch.Output) {
					t.Errorf("card %s: check %s's output of %d bytes (valid UTF-8: %v), want at most %d", c.ID, ch.Name, len(ch.Output), utf8.ValidString(ch.Output), MaxEventMessage)
				}
				if strings.HasPrefix(ch.Output, "aéé") && strings.HasSuffix(ch.Output, "…") {
					cut++
				}
			}
		}
	}
	if cut == 0 {
		t.Error("no failing check's output was kept, cut with …")
	}
	passing := cardsInput()
	for i := range passing.Instances {
		for j := range passing.Instances[i].Checks {
			passing.Instances[i].Checks[j].Status = HealthPassing
		}
	}
	old := Build(passing)
	for _, e := range Diff(&old, &snap) {
		if e.Kind == EventHealth && !utf8.ValidString(e.Message) {
			t.Errorf("health event %q is no UTF-8", e.Message)
		}
	}
}

// TestCardChecksBounded: an instance registered with a thousand checks,
// each named with 10 KiB (any token that may register a service may do
// so), made its card, in every snapshot and on every page, carry all of
// them: 10 MB. A card now lists at most MaxCardChecks, those that do not
// pass first, each name cut at MaxEventMessage, and counts the others;
// its health is still the worst of all.
func TestCardChecksBounded(t *testing.T) {
	in := cardsInput()
	for i := range in.Instances {
		if in.Instances[i].ID != "node1:c-ok:8080" {
			continue
		}
		var checks []Check
		for j := range 1000 {
			checks = append(checks, Check{Name: fmt.Sprintf("%d %s", j, strings.Repeat("n", 10<<10)), Status: HealthPassing})
		}
		checks[999].Status, checks[999].Output = HealthCritical, "down"
		in.Instances[i].Checks = checks
	}
	snap := Build(in)
	var card *Task
	for _, n := range snap.Nodes {
		for i, c := range n.Tasks {
			if c.ID == "ok" {
				card = &n.Tasks[i]
			}
		}
	}
	if card == nil {
		t.Fatal("no card of task ok")
	}
	b, _ := json.Marshal(card)
	if len(card.Checks) > MaxCardChecks || card.ChecksOmitted != 1000-len(card.Checks) || len(b) > 64<<10 {
		t.Fatalf("the card lists %d checks, %d omitted, in %d bytes; want at most %d, the rest counted, within 64 KiB",
			len(card.Checks), card.ChecksOmitted, len(b), MaxCardChecks)
	}
	if card.Health != HealthCritical || card.Checks[0].Status != HealthCritical || !strings.HasPrefix(card.Checks[0].Name, "999 ") {
		t.Errorf("health %s, first check %.20q %s; want critical, the critical check listed first", card.Health, card.Checks[0].Name, card.Checks[0].Status)
	}
	for _, c := range card.Checks {
		if len(c.Name) > MaxEventMessage {
			t.Errorf("a check's name of %d bytes is listed, more than %d", len(c.Name), MaxEventMessage)
		}
	}
}

// hugeCluster is 6,000 tasks on 20 nodes (300 a node, more than
// MaxNodeCards; more than MaxCards in all), each registered in Consul with
// four failing checks of 1 KiB of output: whole, a snapshot of tens of MB.
func hugeCluster() Inputs {
	in := synthetic(20, 6000, t0, nil)
	out := strings.Repeat("o", MaxEventMessage)
	for i := range in.Instances {
		var checks []Check
		for j := range 4 {
			checks = append(checks, Check{Name: fmt.Sprintf("check %d", j), Status: HealthCritical, Output: out})
		}
		in.Instances[i].Checks = checks
	}
	return in
}

// TestSnapshotCardsBounded: the snapshot every page loads, and every
// frame of the stream, listed every card of the cluster: 50,000 tasks
// made 26 MB (BenchmarkSnapshotSize), and cards of long check outputs
// more. A column now lists at most MaxNodeCards, all of them at most
// MaxCards, those in most need of attention first, with the count of the
// others; and past MaxSnapshotBytes every list is cut further.
func TestSnapshotCardsBounded(t *testing.T) {
	in := hugeCluster()
	whole := Build(in)
	ts := startServer(t, Config{Refresh: time.Minute, IdleRefresh: time.Hour}, in)
	c := ts.client(t)
	resp, body := ts.get(t, c, "/v1/cluster", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("GET /v1/cluster: %d", resp.StatusCode)
	}
	if len(body) > MaxSnapshotBytes {
		t.Errorf("snapshot of %d bytes, want at most %d", len(body), MaxSnapshotBytes)
	}
	var snap struct {
		Summary Summary `json:"summary"`
		Nodes   []struct {
			ID           string `json:"id"`
			Tasks        []Task `json:"tasks"`
			TasksOmitted int    `json:"tasks_omitted"`
		} `json:"nodes"`
		Unplaced        []Task `json:"unplaced"`
		UnplacedOmitted int    `json:"unplaced_omitted"`
	}
	if err := json.Unmarshal([]byte(body), &snap); err != nil {
		t.Fatal(err)
	}
	if snap.Summary != whole.Summary {
		t.Errorf("summary %+v, want the whole cluster's %+v", snap.Summary, whole.Summary)
	}
	wholeCards := map[string]int{}
	kept := map[string]bool{}
	for _, n := range whole.Nodes {
		wholeCards[n.ID] = len(n.Tasks)
	}
	listed, omitted := len(snap.Unplaced), snap.UnplacedOmitted
	if listed+omitted != len(whole.Unplaced) {
		t.Errorf("unplaced: %d listed, %d left out; want %d in all", listed, omitted, len(whole.Unplaced))
	}
	for _, n := range snap.Nodes {
		if len(n.Tasks) > MaxNodeCards || len(n.Tasks)+n.TasksOmitted != wholeCards[n.ID] {
			t.Errorf("node %s: %d cards listed, %d left out; want at most %d listed, %d in all", n.ID, len(n.Tasks), n.TasksOmitted, MaxNodeCards, wholeCards[n.ID])
		}
		listed, omitted = listed+len(n.Tasks), omitted+n.TasksOmitted
		for _, c := range n.Tasks {
			kept[c.Kind+"|"+c.ID] = true
		}
	}
	t.Logf("%d bytes, %d cards listed, %d left out", len(body), listed, omitted)
	if listed > MaxCards || listed == 0 || listed+omitted != whole.Summary.Tasks+1 { // and the Consul-only card
		t.Errorf("%d cards listed, %d left out; want at most %d listed, %d in all", listed, omitted, MaxCards, whole.Summary.Tasks+1)
	}
	// The cards marked (Swarm and Consul disagree, an address held twice)
	// are listed first.
	for _, n := range whole.Nodes {
		for _, c := range n.Tasks {
			if (c.Mismatch || c.Duplicate) && !kept[c.Kind+"|"+c.ID] {
				t.Errorf("card %s %s (mismatch %v, duplicate %v) is left out; want it listed", c.Kind, c.ID, c.Mismatch, c.Duplicate)
			}
		}
	}
}

// TestSnapshotServicesBounded: past MaxServices, the services listed are
// those in most need of attention (autoscaled, short of replicas), in
// name order, and the others are counted.
func TestSnapshotServicesBounded(t *testing.T) {
	var snap Snapshot
	for i := range MaxServices + 500 {
		snap.Services = append(snap.Services, Service{Name: fmt.Sprintf("s%05d", i), Desired: 2, Running: 2, Passing: 2})
	}
	last := len(snap.Services) - 1
	snap.Services[last].Autoscaled = true
	snap.Services[last-1].Running = 1
	lim, whole := limit(snap)
	if whole || len(lim.Services) != MaxServices || lim.ServicesOmitted != 500 {
		t.Fatalf("%d services listed, %d left out (whole %v); want %d, 500, cut", len(lim.Services), lim.ServicesOmitted, whole, MaxServices)
	}
	if !slices.IsSortedFunc(lim.Services, func(a, b Service) int { return strings.Compare(a.Name, b.Name) }) {
		t.Error("the services listed are not in name order")
	}
	tail := lim.Services[len(lim.Services)-2:]
	if tail[0].Name != snap.Services[last-1].Name || tail[1].Name != snap.Services[last].Name {
		t.Errorf("the last services listed are %s and %s; want the one short of replicas and the autoscaled one", tail[0].Name, tail[1].Name)
	}
	if len(snap.Services) != MaxServices+500 {
		t.Error("limit changed the snapshot it was given")
	}
}

// TestBuildCutsErrorTexts: the error texts Docker's and Consul's clients
// (and the documents and records read through them) give are placed in
// the snapshot as they come — a source's error, a task's and a node's
// message, a network's refusal and a node's report on it, a policy's
// error, a history record's and a metric's — and one of megabytes took
// its room in the 4 MiB snapshot (MaxSnapshotBytes) from the cards, or
// left none. Each is now cut at MaxEventMessage, as the events' fields
// are; the inputs are not changed.
func TestBuildCutsErrorTexts(t *testing.T) {
	long := strings.Repeat("é", 3000) // 6000 bytes, cut on a rune
	in := cardsInput()
	in.Errors = map[string]string{"docker": "list tasks: " + long}
	in.Nodes[0].Message = long
	in.Tasks[3].Err = long // "failed"
	in.Services = append(in.Services, SwarmService{ID: "s9", Name: "web", Replicas: 1})
	in.Autoscaled = []scale.ServiceInfo{{Service: "web", Error: long}}
	in.History = map[string][]scale.Record{"web": {{Service: "web", Time: t0, Metrics: []scale.MetricValue{{Name: "cpu", Error: long}}}}}
	in.BadHistory = map[string][]scale.BadRecord{"web": {{Key: "underlay/scale/history/web/1", Error: long}}}
	n, es := clusterNet()
	n.Refused = long
	n.States = []netspec.NodeState{{Node: "node1", State: "failed", Error: long}}
	in.Networks, in.Inventory = []NetworkInput{n}, append(in.Inventory, es...)

	s := Build(in)
	var web Service
	for _, sv := range s.Services {
		if sv.Name == "web" {
			web = sv
		}
	}
	var taskMessage string
	for _, nd := range s.Nodes {
		for _, tk := range nd.Tasks {
			if tk.ID == "failed" {
				taskMessage = tk.Message
			}
		}
	}
	texts := map[string]string{"task message": taskMessage, "policy error": web.PolicyError}
	for _, nd := range s.Nodes {
		if nd.ID == in.Nodes[0].ID {
			texts["node message"] = nd.Message
		}
	}
	if len(s.Sources) == 1 {
		texts["source error"] = s.Sources[0].Error
	}
	if len(web.BadRecords) == 1 {
		texts["bad record error"] = web.BadRecords[0].Error
	}
	if len(web.Decisions) == 1 && len(web.Decisions[0].Metrics) == 1 {
		texts["decision's metric error"] = web.Decisions[0].Metrics[0].Error
	}
	if len(s.Networks) == 1 {
		texts["network refused"] = s.Networks[0].Refused
		if len(s.Networks[0].Nodes) == 1 {
			texts["network node error"] = s.Networks[0].Nodes[0].Error
		}
	}
	if len(texts) != 8 {
		t.Fatalf("found %d of the 8 texts: %v", len(texts), slices.Sorted(maps.Keys(texts)))
	}
	for what, text := range texts {
		if len(text) > MaxEventMessage || !strings.HasSuffix(text, "…") || !utf8.ValidString(text) {
			t.Errorf("%s: %d bytes ending %q, want at most %d, cut with …", what, len(text), text[max(0, len(text)-8):], MaxEventMessage)
		}
	}
	if in.BadHistory["web"][0].Error != long || in.History["web"][0].Metrics[0].Error != long || n.States[0].Error != long {
		t.Error("Build changed its inputs")
	}
}
