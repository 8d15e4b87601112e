package soak

import (
	"bytes"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var ip = netip.MustParseAddr

func TestSchedulerIsSeeded(t *testing.T) {
	run := func(seed uint64) []Injection {
		s, err := NewScheduler(seed, Faults, 3, 20*time.Second, time.Second, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var out []Injection
		for range 200 {
			out = append(out, s.Next())
		}
		return out
	}
	a, b := run(7), run(7)
	if d := cmp.Diff(a, b); d != "" {
		t.Fatalf("same seed, other schedule:\n%s", d)
	}
	if slices.Equal(a, run(8)) {
		t.Fatal("another seed gave the same schedule")
	}
	seen := map[Fault]bool{}
	for _, in := range a {
		seen[in.Fault] = true
		if in.Node < 0 || in.Node > 2 || in.Gap < time.Second || in.Gap > 5*time.Second {
			t.Errorf("%v: node or gap out of range (gap %s)", in, in.Gap)
		}
		switch in.Fault {
		case StrayRelease:
			if in.Other < 0 || in.Other > 2 || in.Other == in.Node {
				t.Errorf("%v: a stray release needs another node", in)
			}
		case NodeFreeze:
			if in.Hold <= 20*time.Second {
				t.Errorf("%v: a freeze must outlast the node timeout", in)
			}
		default:
			if in.Other != -1 {
				t.Errorf("%v: only a stray release names another node", in)
			}
		}
	}
	if len(seen) != len(Faults) {
		t.Errorf("200 faults cover %d of %d kinds", len(seen), len(Faults))
	}
	first := map[Fault]bool{}
	for _, in := range a[:len(Faults)] {
		first[in.Fault] = true
	}
	if len(first) != len(Faults) {
		t.Errorf("the first %d faults cover %d kinds, want every one: %v", len(Faults), len(first), a[:len(Faults)])
	}
}

func TestParseFaults(t *testing.T) {
	if fs, err := ParseFaults("all"); err != nil || len(fs) != len(Faults) {
		t.Errorf("all: %v %v", fs, err)
	}
	if fs, err := ParseFaults("agent_kill, partition,agent_kill"); err != nil || !slices.Equal(fs, []Fault{AgentKill, Partition}) {
		t.Errorf("list: %v %v", fs, err)
	}
	if _, err := ParseFaults("agent_kill,meteor"); err == nil || !strings.Contains(err.Error(), `"meteor"`) {
		t.Errorf("unknown fault: %v", err)
	}
	if _, err := NewScheduler(1, Faults, 1, time.Second, time.Second, time.Second); err == nil {
		t.Error("one node accepted")
	}
}

func TestDuplicates(t *testing.T) {
	cs := []Container{
		{Node: "node1", Name: "a", Network: "lan", IP: ip("10.0.0.5")},
		{Node: "node2", Name: "b", Network: "lan", IP: ip("10.0.0.5")},
		{Node: "node2", Name: "c", Network: "other", IP: ip("10.0.0.5")}, // another network
		{Node: "node3", Name: "d", Network: "lan", IP: ip("10.0.0.6")},
	}
	got := Duplicates(cs)
	if len(got) != 1 || !strings.Contains(got[0].Detail, "a@node1, b@node2") {
		t.Fatalf("duplicates %v, want a and b on lan", got)
	}
}

// settled is a cluster where every invariant holds.
func settled() Settled {
	return Settled{
		Containers: []Container{
			{Node: "node1", ID: "c1", Name: "web.1", Network: "pool", IP: ip("10.0.0.20"), Service: "web"},
			{Node: "node2", ID: "c2", Name: "web.2", Network: "pool", IP: ip("10.0.0.21"), Service: "web"},
			{Node: "node2", ID: "c3", Name: "plain", Network: "lan", IP: ip("10.1.0.9")},
		},
		Registrations: []Registration{
			{Node: "node1", ServiceID: "s1", Service: "web", ContainerID: "c1", Address: ip("10.0.0.20")},
			{Node: "node2", ServiceID: "s2", Service: "web", ContainerID: "c2", Address: ip("10.0.0.21")},
		},
		Registered:      []string{"web"},
		ClusterNetworks: []string{"pool"},
		Allocations: []Allocation{
			{Network: "pool", IP: ip("10.0.0.20"), Node: "node1", Kind: "task"},
			{Network: "pool", IP: ip("10.0.0.21"), Node: "node2", Kind: "task"},
			{Network: "pool", IP: ip("10.0.0.2"), Node: "node1", Kind: "shim"},
			{Network: "pool", IP: ip("10.0.0.3"), Node: "node2", Kind: "shim"},
			{Network: "pool", IP: ip("10.0.0.30"), Node: "node2", Kind: "spare"},
		},
		Networks: []string{"pool", "lan"},
		Nodes:    []string{"node1", "node2"},
		HostNets: []HostNet{
			{Node: "node1", Network: "pool", Shim: ip("10.0.0.2"), Route: true},
			{Node: "node2", Network: "pool", Shim: ip("10.0.0.3"), Route: true},
			{Node: "node1", Network: "lan", Shim: ip("10.1.0.64"), Route: true},
			{Node: "node2", Network: "lan", Shim: ip("10.1.0.128"), Route: true},
		},
		Services: []ServiceBounds{{Name: "web", Replicas: 2, Min: 0, Max: 6, Running: 2}},
	}
}

func TestCheck(t *testing.T) {
	if v := Check(settled()); len(v) != 0 {
		t.Fatalf("a sound cluster: %v", v)
	}
	for _, tc := range []struct {
		name string
		edit func(*Settled)
		want string
	}{
		{"missing registration", func(s *Settled) { s.Registrations = s.Registrations[1:] }, "missing: web.1"},
		{"stale registration", func(s *Settled) { s.Containers = s.Containers[1:] }, "stale: s1"},
		{"registered at the wrong address", func(s *Settled) { s.Registrations[0].Address = ip("10.0.0.99") }, "wrong_address: web.1 is 10.0.0.20 on node1"},
		{"registered twice", func(s *Settled) { s.Registrations = append(s.Registrations, s.Registrations[0]) }, "registered_twice: web.1"},
		{"duplicate", func(s *Settled) { s.Containers[1].IP = ip("10.0.0.20") }, "duplicate_ip: 10.0.0.20 on pool"},
		{"address not recorded", func(s *Settled) { s.Allocations = s.Allocations[1:] }, "unrecorded: web.1 holds 10.0.0.20"},
		{"recorded for another node", func(s *Settled) { s.Allocations[0].Node = "node2" }, "misrecorded: web.1 on node1 holds 10.0.0.20 of pool, recorded as task of node2"},
		{"leak", func(s *Settled) {
			s.Allocations = append(s.Allocations, Allocation{Network: "pool", IP: ip("10.0.0.40"), Node: "node1", Kind: "task"})
		}, "leaked: 10.0.0.40 of pool"},
		{"spare of a node not in the cluster", func(s *Settled) {
			s.Allocations = append(s.Allocations, Allocation{Network: "pool", IP: ip("10.0.0.41"), Node: "unknown node ghost", Kind: "spare"})
		}, "leaked: 10.0.0.41 of pool is recorded as spare of unknown node ghost"},
		{"shim not recorded", func(s *Settled) { s.Allocations[2].Kind = "task" }, "unrecorded: shim 10.0.0.2 of pool on node1"},
		{"shim recorded for another node", func(s *Settled) { s.Allocations[2].Node = "node2" }, "misrecorded: shim 10.0.0.2 of pool on node1 is recorded as shim of node2"},
		// The 30-minute soak of stop 50: a node's shim given the address
		// its container held.
		{"container holds a shim's address", func(s *Settled) { s.Containers[0].IP = ip("10.0.0.2") }, "duplicate_ip: 10.0.0.2 on pool held by web.1@node1 and by the shim of node1"},
		{"shim gone", func(s *Settled) { s.HostNets[2].Shim = netip.Addr{} }, "shim_missing: node1 has no shim for lan"},
		{"route gone", func(s *Settled) { s.HostNets[3].Route = false }, "route_missing: node2 has no route to lan"},
		{"above max", func(s *Settled) { s.Services[0].Replicas = 7 }, "bounds: service web has 7 replicas, outside 0..6"},
		{"tasks missing", func(s *Settled) { s.Services[0].Running = 1 }, "replicas: service web runs 1 tasks, wants 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := settled()
			tc.edit(&s)
			var got []string
			for _, v := range Check(s) {
				got = append(got, v.String())
			}
			if !slices.ContainsFunc(got, func(g string) bool { return strings.HasPrefix(g, tc.want) }) {
				t.Errorf("violations %q, want one starting %q", got, tc.want)
			}
		})
	}
}

// A container on two networks is listed once per address; its agent
// registers one of them, once.
func TestCheckContainerOnTwoNetworks(t *testing.T) {
	s := settled()
	s.Containers = append(s.Containers, Container{Node: "node1", ID: "c1", Name: "web.1", Network: "lan", IP: ip("10.1.0.10"), Service: "web"})
	if v := Check(s); len(v) != 0 {
		t.Errorf("registered at its address on pool: %v", v)
	}
	s.Registrations = s.Registrations[1:]
	var got []string
	for _, v := range Check(s) {
		got = append(got, v.String())
	}
	want := []string{"missing: web.1 (web on node1, 10.0.0.20, 10.1.0.10) is not in the catalog"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("not registered (-want +got):\n%s", d)
	}
}

func TestReport(t *testing.T) {
	start := time.Now()
	log := NewLog(start)
	log.Add(start.Add(time.Second), "inject #1 agent_kill on node2")
	log.Add(start.Add(30*time.Second), "scale web to 3")
	r := &Report{Seed: 42, Nodes: 3, Duration: 2 * time.Minute,
		Injected: []Injection{{Seq: 1, Fault: AgentKill}, {Seq: 2, Fault: AgentKill}, {Seq: 3, Fault: Partition}}}
	for _, d := range []time.Duration{time.Second, 3 * time.Second} {
		r.Converged(AgentKill, d)
	}
	r.Violations = []Found{{At: 2 * time.Second, Violation: Violation{"duplicate_ip", "10.0.0.5 on lan held by a@node1, b@node2"}}}
	var b bytes.Buffer
	r.Write(&b, log)
	out := b.String()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if last := lines[len(lines)-1]; last != "soak: seed=42 nodes=3 duration=2m0s faults=3 violations=1" {
		t.Errorf("last line %q", last)
	}
	for _, want := range []string{
		"agent_kill                      2            2           1s           3s",
		"partition                       1            0            -            -",
		"at 2s: duplicate_ip: 10.0.0.5 on lan",
		"1s  inject #1 agent_kill on node2", // the event log around the violation
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "scale web to 3") {
		t.Errorf("an event 28 s from the violation is not around it:\n%s", out)
	}
}

// A run whose samples never listed a node's containers (its dockerd
// down, or the node frozen, at every sample) did not check it for
// duplicate addresses: that must show, not pass as 0 violations.
func TestUnsampled(t *testing.T) {
	var r Report
	if err := r.Unsampled(); err == nil || !strings.Contains(err.Error(), "no duplicate-address sample") {
		t.Errorf("no samples: %v, want an error saying none was taken", err)
	}
	nodes := []string{"node1", "node2", "node3"}
	r.Sampled(nodes, []string{"node1", "node3"})
	r.Sampled(nodes, []string{"node1"})
	err := r.Unsampled()
	if err == nil || !strings.Contains(err.Error(), "of 2 listed the containers of node2") {
		t.Errorf("node2 never listed: %v, want an error naming node2", err)
	}
	r.Sampled(nodes, nodes)
	if err := r.Unsampled(); err != nil {
		t.Errorf("every node listed once: %v", err)
	}
	var b bytes.Buffer
	r.Write(&b, nil)
	if want := "duplicate-address samples: 3; nodes listed in them: node1 3 node2 1 node3 2\n"; !strings.Contains(b.String(), want) {
		t.Errorf("report lacks %q:\n%s", want, b.String())
	}
}
