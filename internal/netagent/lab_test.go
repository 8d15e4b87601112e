package netagent_test

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"

	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/inventory"
	"github.com/underlay/underlay/internal/lab"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/testenv"
)

// TestIntegrationLabNetwork is issue 4's end-to-end test: on a lab with the
// agent on every node, one `underlay network create` gives every node a
// disjoint range and the swarm a macvlan network; a node added afterwards
// gets it too; a service spreads over all nodes, every task is reachable
// from outside the cluster and from its own host through the shim; `ips`
// lists them all and flags a duplicate; drift is repaired; rm leaves nothing.
func TestIntegrationLabNetwork(t *testing.T) {
	testenv.Require(t)
	l := testenv.StartLab(t, lab.Config{Nodes: 2, UnderlaySubnet: "10.202.0.0/16"})
	m := l.Nodes[0]
	t.Setenv("DOCKER_HOST", m.DockerHost)
	ctx := testenv.Context(t, 5*time.Minute)
	name := "lan"

	// Every agent has published its interfaces before create checks them.
	st := netspec.NewStore(consul.NewKV(m.Consul))
	l.CreateNetwork(name, "--subnet", l.Subnet.String(), "--gateway", l.Gateway.String(), "--parent", "eth1", "--per-node-size", "32")
	// A node added later gets the network and its own range.
	added := l.Grow(3)[0]
	var states []netspec.NodeState
	testenv.Eventually(t, 60*time.Second, func() (bool, string) {
		states, _ = st.NodeStates(ctx, name)
		for _, s := range states {
			if s.Node == added.Host && s.State == netspec.StateReady {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%s has not realised the network: %+v", added.Host, states)
	})
	ranges := map[string]netspec.NodeState{}
	for _, s := range states {
		if s.State != netspec.StateReady {
			t.Errorf("node %s is %s: %s", s.Node, s.State, s.Error)
		}
		for _, o := range ranges {
			if o.Range.Overlaps(s.Range) {
				t.Errorf("ranges of %s (%s) and %s (%s) overlap", s.Node, s.Range, o.Node, o.Range)
			}
		}
		ranges[s.Node] = s
	}
	if len(ranges) != 3 {
		t.Fatalf("%d nodes ready, want 3: %+v", len(ranges), states)
	}

	// One task per node.
	one := uint64(1)
	replicas := uint64(3)
	spec := swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: "spread"},
		TaskTemplate: swarm.TaskSpec{
			ContainerSpec: &swarm.ContainerSpec{Image: testenv.TestImage},
			Networks:      []swarm.NetworkAttachmentConfig{{Target: name}},
			Placement:     &swarm.Placement{MaxReplicas: one},
		},
		Mode: swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &replicas}},
	}
	if _, err := m.Docker.ServiceCreate(ctx, spec, swarm.ServiceCreateOptions{}); err != nil {
		t.Fatal(err)
	}
	byNode := map[string]netip.Addr{}
	testenv.Eventually(t, 90*time.Second, func() (bool, string) {
		for _, n := range l.Nodes {
			if ips := taskIPs(t, n.Docker, "spread", ""); len(ips) == 1 {
				byNode[n.Host] = ips[0]
			}
		}
		return len(byNode) == 3, fmt.Sprintf("tasks running with an address on %d nodes, want 3", len(byNode))
	})
	seen := map[netip.Addr]bool{}
	for _, n := range l.Nodes {
		ip := byNode[n.Host]
		if seen[ip] {
			t.Errorf("address %s given twice", ip)
		}
		seen[ip] = true
		if r := ranges[n.Host].Range; !r.Contains(ip) {
			t.Errorf("task on %s has %s, outside the node's range %s", n.Host, ip, r)
		}
		// From outside the cluster: the root namespace is the underlay's router.
		testenv.Eventually(t, 20*time.Second, func() (bool, string) { return testenv.HTTPGet(fmt.Sprintf("http://%s:8080/health", ip)) })
		// From its own host, through the shim.
		out, err := l.Exec(ctx, n.Name, "ip", "route", "get", ip.String())
		if err != nil || !strings.Contains(string(out), "dev "+ranges[n.Host].ShimLink) {
			t.Errorf("%s routes its own task %s not through its shim: %s %v", n.Host, ip, out, err)
		}
		out, err = l.Exec(ctx, n.Name, "curl", "-fsS", "--max-time", "5", fmt.Sprintf("http://%s:8080/health", ip))
		if err != nil {
			t.Errorf("%s cannot reach its own task %s: %v %s", n.Host, ip, err, out)
		}
	}

	// `underlay ips` lists every task's IP and MAC on every node, and flags
	// a duplicate injected as if a fourth node held node1's address.
	var inv struct {
		Addresses  []inventory.Entry
		Duplicates int
	}
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		out, err := underlay(t, m.ConsulAddr, "ips", "--network", name, "--json")
		if err != nil {
			return false, err.Error()
		}
		inv.Addresses = nil
		if err := json.Unmarshal([]byte(out), &inv); err != nil {
			return false, err.Error()
		}
		for _, e := range inv.Addresses {
			if byNode[e.Node].String() != e.IP || e.MAC == "" || e.Service != "spread" || e.Slot == "" || e.Task == "" {
				return false, fmt.Sprintf("entry %+v does not match the task on %s (%s)", e, e.Node, byNode[e.Node])
			}
		}
		return len(inv.Addresses) == 3, fmt.Sprintf("ips lists %d addresses, want 3: %+v", len(inv.Addresses), inv.Addresses)
	})
	// Another node's claim on an address: its facts, then its inventory,
	// as its agent would publish them (an inventory whose node has no
	// facts is set apart, not listed).
	// Under a swarm node ID, as an agent's: facts under a key no swarm
	// node ID can be are set apart, not read as a node's.
	const intruderID = "intruder00000000000000000"
	if err := st.PublishNode(ctx, netspec.NodeFacts{ID: intruderID, Node: "intruder", Interfaces: []string{"eth0"}}); err != nil {
		t.Fatal(err)
	}
	fake := []inventory.Entry{{IP: byNode[m.Host].String(), MAC: "02:00:00:00:00:99", Node: "intruder", Network: name, Container: "rogue"}}
	if err := inventory.Publish(ctx, consul.NewKV(m.Consul), intruderID, fake); err != nil {
		t.Fatal(err)
	}
	out, err := underlay(t, m.ConsulAddr, "ips")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "DUPLICATE: IP also on rogue@intruder") {
		t.Errorf("ips does not flag the duplicate:\n%s", out)
	}
	for _, k := range []string{inventory.KVPrefix + intruderID, netspec.NodesKVPrefix + intruderID} {
		if _, err := m.Consul.KV().Delete(k, nil); err != nil {
			t.Fatal(err)
		}
	}

	// Drift on node2: shim deleted; its agent puts it back at once.
	n2 := l.Nodes[1]
	shimLink := ranges[n2.Host].ShimLink
	if out, err := l.Exec(ctx, n2.Name, "ip", "link", "del", shimLink); err != nil {
		t.Fatalf("delete shim: %v %s", err, out)
	}
	testenv.Eventually(t, 15*time.Second, func() (bool, string) {
		out, err := l.Exec(ctx, n2.Name, "ip", "route", "get", byNode[n2.Host].String())
		return err == nil && strings.Contains(string(out), "dev "+shimLink), "shim not repaired: " + string(out)
	})

	// rm: refused while in use, then everything goes from every node.
	if _, err := underlay(t, m.ConsulAddr, "network", "rm", name); err == nil || !strings.Contains(err.Error(), "spread") {
		t.Fatalf("rm while the service runs: %v", err)
	}
	if err := m.Docker.ServiceRemove(ctx, "spread"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 60*time.Second, func() (bool, string) {
		for _, n := range l.Nodes {
			if ips := taskIPs(t, n.Docker, "spread", ""); len(ips) > 0 {
				return false, "tasks still running on " + n.Host
			}
		}
		return true, ""
	})
	if _, err := underlay(t, m.ConsulAddr, "network", "rm", name, "--timeout", "60s"); err != nil {
		t.Fatal(err)
	}
	for _, n := range l.Nodes {
		if _, err := n.Docker.NetworkInspect(ctx, netspec.ConfigNetworkName(name), network.InspectOptions{}); err == nil {
			t.Errorf("config-only network left on %s", n.Host)
		}
		if out, _ := l.Exec(ctx, n.Name, "ip", "link", "show", shimLink); strings.Contains(string(out), shimLink+"@") {
			t.Errorf("shim left on %s: %s", n.Host, out)
		}
	}
}
