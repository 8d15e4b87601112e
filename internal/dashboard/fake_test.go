package dashboard

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/underlay/underlay/internal/inventory"
	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/register"
	"github.com/underlay/underlay/internal/scale"
	"github.com/underlay/underlay/internal/shellword"
	"github.com/underlay/underlay/internal/unregistered"
)

// fakeSources serve fixed Inputs through every source interface; set
// replaces them and signals a change.
type fakeSources struct {
	mu      sync.Mutex
	in      Inputs
	failing map[string]error
	changed chan struct{}
}

func newFakeSources(in Inputs) *fakeSources {
	return &fakeSources{in: in, failing: map[string]error{}, changed: make(chan struct{}, 1)}
}

func (f *fakeSources) sources() Sources {
	return Sources{Swarm: fakeSwarm{f}, Catalog: fakeCatalog{f}, Store: fakeStore{f}, Scaling: fakeScaling{f}}
}

func (f *fakeSources) set(in Inputs) {
	f.mu.Lock()
	f.in = in
	f.mu.Unlock()
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

func (f *fakeSources) fail(source string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		delete(f.failing, source)
	} else {
		f.failing[source] = err
	}
}

func (f *fakeSources) get(source string) (Inputs, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.in, f.failing[source]
}

type fakeSwarm struct{ f *fakeSources }

func (s fakeSwarm) Nodes(context.Context) ([]SwarmNode, error) {
	in, err := s.f.get("docker")
	return in.Nodes, err
}
func (s fakeSwarm) Services(context.Context) ([]SwarmService, error) {
	in, err := s.f.get("docker")
	return in.Services, err
}
func (s fakeSwarm) Tasks(context.Context) ([]SwarmTask, error) {
	in, err := s.f.get("docker")
	return in.Tasks, err
}
func (s fakeSwarm) Changes(context.Context) <-chan struct{} { return s.f.changed }

type fakeCatalog struct{ f *fakeSources }

func (c fakeCatalog) Instances(context.Context) ([]Instance, error) {
	in, err := c.f.get("consul")
	return in.Instances, err
}
func (c fakeCatalog) Changes(context.Context) <-chan struct{} { return nil }

type fakeStore struct{ f *fakeSources }

func (s fakeStore) Networks(context.Context) ([]NetworkInput, error) {
	in, err := s.f.get("kv")
	return in.Networks, err
}
func (s fakeStore) Nodes(context.Context) ([]netspec.NodeFacts, []netspec.MisfiledFacts, error) {
	_, err := s.f.get("kv")
	return nil, nil, err
}
func (s fakeStore) Inventory(context.Context, []netspec.NodeFacts) ([]inventory.Entry, error) {
	in, err := s.f.get("kv")
	return in.Inventory, err
}
func (s fakeStore) Agents(context.Context, []netspec.NodeFacts, []netspec.MisfiledFacts) ([]AgentInput, error) {
	in, err := s.f.get("kv")
	return in.Agents, err
}
func (s fakeStore) Unregistered(context.Context) ([]unregistered.Report, []unregistered.BadReport, error) {
	in, err := s.f.get("kv")
	return in.Unregistered, in.BadUnregistered, err
}
func (s fakeStore) Changes(context.Context) <-chan struct{} { return nil }

type fakeScaling struct{ f *fakeSources }

func (s fakeScaling) Services() []scale.ServiceInfo {
	in, _ := s.f.get("")
	return in.Autoscaled
}
func (s fakeScaling) History(_ context.Context, svc string) ([]scale.Record, []scale.BadRecord, error) {
	in, err := s.f.get("history")
	return in.History[svc], in.BadHistory[svc], err
}
func (s fakeScaling) Control(context.Context) ControlInfo {
	in, _ := s.f.get("")
	return in.Control
}

// synthetic makes a cluster of nodes nodes running tasks tasks, spread
// over services of 50 replicas, on one cluster-IPAM network (a /20) with
// blocks per node; every task registered and passing in Consul but a few
// (one critical, one unregistered, one Consul-only, one duplicate IP),
// a failing doctor check on the last node, a warning of the cluster's
// (a misfiled facts document naming no node), and an autoscaled service
// with a history. name turns a plain name into what the cluster reports
// (the XSS test puts markup in every one).
func synthetic(nodes, tasks int, now time.Time, name func(string) string) Inputs {
	if name == nil {
		name = func(s string) string { return s }
	}
	in := Inputs{Now: now, Control: ControlInfo{Leading: true}, History: map[string][]scale.Record{}}
	subnet := netip.MustParsePrefix("10.150.0.0/20")
	spec := netspec.Spec{Name: name("web"), Subnet: subnet, Gateway: netip.MustParseAddr("10.150.0.1"), Parent: name("eth1"), IPAM: netspec.Cluster}
	net := NetworkInput{Spec: spec, Blocks: map[netip.Prefix]ipam.BlockDoc{}}
	for i := 1; i <= nodes; i++ {
		host := fmt.Sprintf("node%d", i)
		role := "worker"
		if i <= 3 {
			role = "manager"
		}
		in.Nodes = append(in.Nodes, SwarmNode{ID: fmt.Sprintf("nodeid%02d", i), Hostname: name(host), Role: role, Leader: i == 1,
			State: "ready", Availability: "active", EngineVersion: name("28.5.2")})
		rep := &DoctorReport{At: now.Add(-10 * time.Second), Every: time.Minute, Version: name("v1"),
			Results: []DoctorResult{{Check: "kernel/macvlan", Status: "ok", Message: "loaded"}}}
		if i == nodes {
			rep.Results = append(rep.Results, DoctorResult{Check: name("network/web/shim"), Status: "fail",
				Message: name("shim missing"), Fix: name("ip link add ul-1 link eth1 type macvlan mode bridge")})
		}
		in.Agents = append(in.Agents, AgentInput{Node: name(host), FactsAt: now.Add(-5 * time.Second), Doctor: rep})
		net.States = append(net.States, netspec.NodeState{Node: name(host), State: netspec.StateReady,
			Shim: netip.AddrFrom4([4]byte{10, 150, 15, byte(i)})})
	}
	// A misfiled facts document naming no node: a problem of the cluster.
	in.Agents = append(in.Agents, AgentInput{Warnings: []DoctorResult{{Check: "nodes/facts", Status: "warn",
		Message: name("misfiled facts"), Fix: name("consul kv delete underlay/nodes/x")}}})
	services := (tasks + 49) / 50
	for s := 0; s < services; s++ {
		svcName := name(fmt.Sprintf("svc%d", s))
		in.Services = append(in.Services, SwarmService{ID: fmt.Sprintf("svcid%02d", s), Name: svcName, Image: name("underlay/testserver:dev") + "@sha256:abc", Replicas: min(50, tasks-50*s)})
	}
	for t := 0; t < tasks; t++ {
		s := t / 50
		node := t % nodes
		host := in.Nodes[node].Hostname
		id := fmt.Sprintf("task%04d", t)
		ip := netip.AddrFrom4([4]byte{10, 150, byte(1 + t/250), byte(t%250 + 2)})
		mac := fmt.Sprintf("02:42:0a:96:%02x:%02x", 1+t/250, t%250+2)
		ctr := fmt.Sprintf("ctr%04d", t)
		svc := in.Services[s]
		in.Tasks = append(in.Tasks, SwarmTask{ID: id, ServiceID: svc.ID, NodeID: in.Nodes[node].ID, Slot: t%50 + 1,
			Image: svc.Image, DesiredState: "running", State: "running", Since: now.Add(-time.Duration(t+60) * time.Second), ContainerID: ctr})
		in.Inventory = append(in.Inventory, inventory.Entry{IP: ip.String(), MAC: mac, Node: host, Network: spec.Name, Container: name(svc.Name + "." + fmt.Sprint(t%50+1)),
			ID: ctr, Service: svc.Name, Slot: fmt.Sprint(t%50 + 1), Task: id, Since: now.Add(-time.Duration(t+60) * time.Second)})
		block, _ := ip.Prefix(28)
		doc, ok := net.Blocks[block]
		if !ok {
			doc = ipam.BlockDoc{Node: host, Allocs: map[string]ipam.Alloc{}}
		}
		doc.Allocs[ip.String()] = ipam.Alloc{Node: host, At: now.Add(-time.Minute), Kind: ipam.KindTask}
		net.Blocks[block] = doc
		if t == 1 {
			continue // Swarm runs it; Consul does not list it
		}
		status := HealthPassing
		if t == 2 {
			status = HealthCritical
		}
		in.Instances = append(in.Instances, Instance{Node: host, ID: host + ":" + ctr + ":8080", Service: svc.Name, Address: ip.String(), Port: 8080,
			Meta: map[string]string{register.MetaNode: host, register.MetaSwarmTask: id, register.MetaContainerID: ctr, register.MetaMAC: mac,
				register.MetaContainerName: name("ctr"), register.MetaImage: svc.Image},
			Checks: []Check{{Name: name("HTTP check"), Status: status, Output: name("HTTP GET /health: 200 OK")}}})
	}
	if tasks > 3 {
		// A duplicate: task 3's address held by another container too.
		dup := in.Inventory[3]
		dup.Container, dup.ID, dup.Task, dup.Node = name("intruder"), "ctrX", "", in.Nodes[0].Hostname
		in.Inventory = append(in.Inventory, dup)
		// A Consul-only instance: a task Swarm no longer runs.
		in.Instances = append(in.Instances, Instance{Node: in.Nodes[0].Hostname, ID: "ghost", Service: in.Services[0].Name, Address: "10.150.9.9",
			Meta:   map[string]string{register.MetaNode: in.Nodes[0].Hostname, register.MetaSwarmTask: "gonetask", register.MetaContainerID: "gonectr"},
			Checks: []Check{{Name: "HTTP", Status: HealthCritical, Output: name("connection refused")}}})
	}
	// A spare and a leak in node 1's first block.
	b := in.Nodes[0].Hostname
	for blk, doc := range net.Blocks {
		if doc.Node == b {
			doc.Allocs["10.150.14.1"] = ipam.Alloc{Node: b, At: now.Add(-time.Minute), Kind: ipam.KindSpare}
			doc.Allocs["10.150.14.2"] = ipam.Alloc{Node: b, At: now.Add(-time.Minute), Kind: ipam.KindTask}
			net.Blocks[blk] = doc
			break
		}
	}
	in.Networks = []NetworkInput{net}
	if len(in.Services) > 0 {
		svc := in.Services[0].Name
		p := scale.DefaultPolicy()
		p.Enabled, p.Max = true, 60
		p.Metrics = []scale.MetricSpec{{Name: name("rps"), Query: name(`sum(rate(x[1m]))`), Target: 100}}
		in.Autoscaled = []scale.ServiceInfo{{Name: "autoswarm/" + svc, Service: svc, ServiceID: in.Services[0].ID, Mode: "replicated", Replicas: in.Services[0].Replicas, Policy: p}}
		for i := 0; i < 5; i++ {
			in.History[svc] = append(in.History[svc], scale.Record{Seq: uint64(i + 1), Time: now.Add(time.Duration(i-5) * time.Minute),
				Autoscaler: scale.AutoswarmName, Service: svc, ServiceID: in.Services[0].ID, Direction: scale.Up, Source: name("http 127.0.0.1:1234"),
				Decision: scale.Decision{From: 45 + i, To: 46 + i, Reason: scale.ReasonScaled, Why: name(fmt.Sprintf("scaled up from %d to %d", 45+i, 46+i))},
				Metrics:  []scale.MetricValue{{Name: name("rps"), Value: float64(120 + i), Target: 100}}})
		}
		key := "underlay/scale/history/" + svc + "/" + name("stray")
		in.BadHistory = map[string][]scale.BadRecord{svc: {{Key: key, Error: name("decode: invalid character 'g'"), Fix: shellword.KVDelete(key)}}}
	}
	return in
}
