package dashboard

import (
	"net/netip"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/underlay/underlay/internal/inventory"
	"github.com/underlay/underlay/internal/register"
	"github.com/underlay/underlay/internal/scale"
)

// kinds lists each event as "kind: message" for matching.
func lines(evs []Event) string {
	var b strings.Builder
	for _, e := range evs {
		b.WriteString(e.Kind + ": " + e.Message + "\n")
	}
	return b.String()
}

func TestDiffNothingFromNothing(t *testing.T) {
	s := Build(cardsInput())
	if evs := Diff(nil, &s); evs != nil {
		t.Errorf("first snapshot gave events: %v", evs)
	}
	s2 := Build(cardsInput())
	if evs := Diff(&s, &s2); len(evs) != 0 {
		t.Errorf("same inputs gave events:\n%s", lines(evs))
	}
}

func TestDiff(t *testing.T) {
	before := cardsInput()
	n, es := clusterNet()
	before.Networks = []NetworkInput{n}
	before.Inventory = append(before.Inventory, es...)
	before.Agents = []AgentInput{{Node: "node1", FactsAt: t0, Doctor: &DoctorReport{At: t0, Results: []DoctorResult{{Check: "network/web/shim", Status: "fail", Message: "missing", Fix: "ip link add …"}}}}}
	before.Autoscaled = []scale.ServiceInfo{{Service: "hello"}}
	before.History = map[string][]scale.Record{"hello": {{Time: t0.Add(-time.Hour), Service: "hello", Direction: scale.Up, Decision: scale.Decision{From: 1, To: 2, Reason: scale.ReasonScaled}}}}
	old := Build(before)

	after := cardsInput()
	after.Now = t0.Add(10 * time.Second)
	// The task "ok" failed, its instance went critical; "unreg" got
	// registered; a new task started; the ghost is gone.
	after.Tasks[0].State, after.Tasks[0].Err = "failed", "task: non-zero exit (137)"
	after.Instances[0].Checks[1].Status = HealthCritical
	after.Instances = append(after.Instances[:2], after.Instances[3:]...)
	after.Instances = append(after.Instances, inst("node2", "node2:c-unreg:8080", "unreg", "c-unreg", "10.0.0.11", HealthPassing))
	after.Tasks = append(after.Tasks, SwarmTask{ID: "new", ServiceID: "s1", NodeID: "n1", Slot: 5, DesiredState: "running", State: "running", Since: after.Now})
	after.Inventory = append(after.Inventory, inventory.Entry{IP: "10.0.0.140", Node: "node1", Network: "web", Container: "hello.5", Service: "hello", Slot: "5", Task: "new"})
	n2, es2 := clusterNet()
	delete(n2.Blocks[mustPrefix("10.0.0.128/28")].Allocs, "10.0.0.129") // the spare was handed out…
	n2.Blocks[mustPrefix("10.0.0.128/28")].Allocs["10.0.0.140"] = n2.Blocks[mustPrefix("10.0.0.128/28")].Allocs["10.0.0.131"]
	after.Networks = []NetworkInput{n2}
	after.Inventory = append(after.Inventory, es2...)
	after.Agents = []AgentInput{{Node: "node1", FactsAt: t0, Doctor: &DoctorReport{At: after.Now, Results: []DoctorResult{{Check: "network/web/shim", Status: "ok"}}}},
		{Node: "node2", FactsAt: after.Now}}
	after.Nodes[0].State = "down" // node2
	after.Autoscaled = before.Autoscaled
	after.History = map[string][]scale.Record{"hello": append(before.History["hello"], scale.Record{Time: after.Now, Service: "hello", Direction: scale.Up,
		Source: "http 10.1.1.1:5", Decision: scale.Decision{From: 2, To: 3, Reason: scale.ReasonScaled, Why: "scaled up from 2 to 3 replicas"}})}
	after.Errors = map[string]string{"consul": "connection refused"}
	cur := Build(after)

	got := lines(Diff(&old, &cur))
	for _, want := range []string{
		"source: consul cannot be read: connection refused",
		"node: node node2: worker ready → worker down\n",
		"node: node node2: underlay agent absent → up",
		"doctor: doctor on node1: network/web/shim ok again",
		"scale: hello up 2 → 3: scaled up from 2 to 3 replicas — asked by http 10.1.1.1:5",
		"task: hello.1 on node1: running → failed (task: non-zero exit (137))",
		"task: hello.5 running on node1 (10.0.0.140)",
		"task: hello ghost gone from node2 (was unknown)",
		"registration: hello.1 registered in Consul as node2:c-unreg:8080 (10.0.0.11), passing",
		"health: hello.1 (10.0.0.10): passing → critical: out",
		"allocation: web/10.0.0.129 free again (was spare",
		"allocation: web/10.0.0.140 task: hello.5 (hello.5) on node1",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing event %q in:\n%s", want, got)
		}
	}
	if strings.Contains(got, "scale: hello up 1 → 2") {
		t.Errorf("an old decision was reported again:\n%s", got)
	}
}

func TestDiffDoctorFailure(t *testing.T) {
	mk := func(rs ...DoctorResult) *Snapshot {
		s := Build(Inputs{Now: t0, Nodes: []SwarmNode{{ID: "n1", Hostname: "node1"}},
			Agents: []AgentInput{{Node: "node1", Doctor: &DoctorReport{At: t0, Results: rs}}}})
		return &s
	}
	evs := Diff(mk(DoctorResult{Check: "docker/daemon", Status: "ok"}), mk(DoctorResult{Check: "docker/daemon", Status: "fail", Message: "not answering", Fix: "systemctl start docker"}))
	if got := lines(evs); got != "doctor: doctor on node1: docker/daemon fail: not answering — fix: systemctl start docker\n" {
		t.Errorf("events:\n%s", got)
	}
}

// TestDiffClusterProblems: the cluster's problems (warnings of nodes the
// page has no column for) come and go as events, as doctor problems do.
func TestDiffClusterProblems(t *testing.T) {
	mk := func(ws ...DoctorResult) *Snapshot {
		s := Build(Inputs{Now: t0, Agents: []AgentInput{{Warnings: ws}}})
		return &s
	}
	w := DoctorResult{Check: "nodes/facts", Status: "warn", Message: "misfiled", Fix: "consul kv delete k"}
	if got := lines(Diff(mk(), mk(w))); got != "doctor: cluster: nodes/facts warn: misfiled — fix: consul kv delete k\n" {
		t.Errorf("events of a new cluster problem:\n%s", got)
	}
	if got := lines(Diff(mk(w), mk())); got != "doctor: cluster: nodes/facts ok again\n" {
		t.Errorf("events of a cluster problem gone:\n%s", got)
	}
}

func TestDecisionText(t *testing.T) {
	for _, c := range []struct {
		r    scale.Record
		want string
	}{
		{scale.Record{Service: "web", Direction: scale.Up, Decision: scale.Decision{From: 5, To: 5, Refused: true, Reason: scale.ReasonAtMax, Why: "at its maximum of 5"}, Source: "alertmanager x"},
			"web up refused (at_max): at its maximum of 5 — asked by alertmanager x"},
		{scale.Record{Service: "web", Direction: scale.Down, Decision: scale.Decision{From: 5, To: 4}, DryRun: true}, "web down 5 → 4 (dry run, not applied)"},
	} {
		if got := decisionText(c.r); got != c.want {
			t.Errorf("decisionText = %q, want %q", got, c.want)
		}
	}
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// TestDiffPool6: an address of a network's IPv6 pool allocated, and freed
// again, is an allocation event, as an IPv4 one is.
func TestDiffPool6(t *testing.T) {
	mk := func(ips ...string) *Snapshot {
		n, _ := clusterNet()
		n.Spec.IPv6Subnet = mustPrefix("fd00:1::/64")
		var es []inventory.Entry
		for _, ip := range ips {
			es = append(es, inventory.Entry{IP: ip, Node: "node1", Network: "web", Container: "hello.1.x", Service: "hello", Slot: "1", Task: "t1"})
		}
		s := Build(Inputs{Now: t0, Networks: []NetworkInput{n}, Inventory: es})
		return &s
	}
	without, with := mk(), mk("fd00:1::5")
	if got, want := lines(Diff(without, with)), "allocation: web/fd00:1::5 task: hello.1 (hello.1.x) on node1\n"; got != want {
		t.Errorf("events of an IPv6 address taken:\n%s\nwant:\n%s", got, want)
	}
	if got, want := lines(Diff(with, without)), "allocation: web/fd00:1::5 free again (was task: hello.1 (hello.1.x) on node1)\n"; got != want {
		t.Errorf("events of an IPv6 address freed:\n%s\nwant:\n%s", got, want)
	}
}

// TestDiffEventMessageBounded: an event's message carried the whole text
// of what it reports, as long as an agent's document made it (a doctor
// result of hundreds of KB, a new check name each report): the server
// keeps EventBacklog events and sends them all to every page that
// connects, so one agent could make it hold, and send, hundreds of MB.
// A message is now cut at MaxEventMessage bytes (on a rune boundary,
// marked with "…"); the snapshot still has the whole result.
func TestDiffEventMessageBounded(t *testing.T) {
	mk := func(rs ...DoctorResult) *Snapshot {
		s := Build(Inputs{Now: t0, Nodes: []SwarmNode{{ID: "n1", Hostname: "node1"}},
			Agents: []AgentInput{{Node: "node1", Doctor: &DoctorReport{At: t0, Results: rs}}}})
		return &s
	}
	long := strings.Repeat("é", 300<<10)
	evs := Diff(mk(), mk(DoctorResult{Check: "big", Status: "fail", Message: long, Fix: long}))
	if len(evs) != 1 {
		t.Fatalf("events: %d, want 1", len(evs))
	}
	m := evs[0].Message
	if len(m) > MaxEventMessage || !utf8.ValidString(m) || !strings.HasPrefix(m, "doctor on node1: big fail: éé") || !strings.HasSuffix(m, "…") {
		t.Errorf("event message of %d bytes (valid UTF-8: %v), starting %.40q, ending %q; want at most %d, cut with …",
			len(m), utf8.ValidString(m), m, m[max(0, len(m)-8):], MaxEventMessage)
	}
}

// TestCutNotUTF8: an event message of bytes that are no UTF-8 keeps as
// many of them as fit. Before, the cut looked back for a character's
// start as far as the first byte and kept none, only the mark.
func TestCutNotUTF8(t *testing.T) {
	bad := strings.Repeat("\x80", 2*MaxEventMessage)
	if got, want := cut(bad, MaxEventMessage), bad[:MaxEventMessage-len("…")]+"…"; got != want {
		t.Errorf("cut(%d bytes of \\x80) = %.20q… of %d bytes, want %d bytes", len(bad), got, len(got), len(want))
	}
	if got := cut("ab"+strings.Repeat("é", 10), 9); got != "abéé…" {
		t.Errorf("cut on a character boundary: %q, want %q", got, "abéé…")
	}
}

// TestDiffEventNamesBounded: an event names its node, service and address
// apart from its message, as they came: a registration in Consul's
// catalog (any agent's token may write one) with a service or node name
// of hundreds of KB made each of its events as large, and the server keeps
// EventBacklog events and sends them to every page that connects. Each
// field is cut at MaxEventMessage, as the message is.
func TestDiffEventNamesBounded(t *testing.T) {
	long := strings.Repeat("n", 300<<10)
	mk := func(is ...Instance) *Snapshot {
		s := Build(Inputs{Now: t0, Nodes: []SwarmNode{{ID: "n1", Hostname: "node1"}}, Instances: is})
		return &s
	}
	evs := Diff(mk(), mk(Instance{Node: long, ID: "x", Service: long, Address: "10.0.0.1", Port: 80,
		Meta: map[string]string{register.MetaNode: long}}))
	if len(evs) == 0 {
		t.Fatal("no event of a new registration")
	}
	for _, e := range evs {
		for name, f := range map[string]string{"node": e.Node, "service": e.Service, "ip": e.IP, "message": e.Message} {
			if len(f) > MaxEventMessage {
				t.Errorf("%s event: %s of %d bytes, want at most %d", e.Kind, name, len(f), MaxEventMessage)
			}
		}
	}
}
