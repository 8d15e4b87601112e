package decommission_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/swarm"

	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/lab"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/testenv"
)

// TestIntegrationLabNodeRemoved: on a 2-node lab with a per-node network,
// node2 is removed for good — its agent stopped, it leaves the swarm and
// `docker node rm` forgets it. What it left in Consul held `network rm`
// waiting for it, and its range leased; `underlay node rm` refuses while
// the swarm lists a node, then removes node2's records (after watching its
// facts, refreshed moments before its agent stopped), and `network rm`
// completes.
func TestIntegrationLabNodeRemoved(t *testing.T) {
	testenv.Require(t)
	l := testenv.StartLab(t, lab.Config{Nodes: 2, UnderlaySubnet: "10.198.0.0/16"})
	m, n2 := l.Nodes[0], l.Nodes[1]
	ctx := testenv.Context(t, 5*time.Minute)
	st := netspec.NewStore(consul.NewKV(m.Consul))
	const name = "lan"
	l.CreateNetwork(name, "--subnet", l.Subnet.String(), "--gateway", l.Gateway.String(), "--parent", "eth1", "--per-node-size", "32")
	testenv.Eventually(t, 60*time.Second, func() (bool, string) {
		states, err := st.NodeStates(ctx, name)
		return len(states) == 2 && states[0].State == netspec.StateReady && states[1].State == netspec.StateReady,
			fmt.Sprintf("states of %s: %+v %v", name, states, err)
	})
	info, err := n2.Docker.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	id := info.Swarm.NodeID

	underlay := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, l.UnderlayBin, append(args, "--consul-addr", m.ConsulAddr)...)
		cmd.Env = append(os.Environ(), "DOCKER_HOST="+m.DockerHost)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	// While the swarm lists node2, it is refused, and nothing is removed.
	if out, err := underlay("node", "rm", n2.Host); err == nil || !strings.Contains(out, "is still a swarm node (ready)") {
		t.Fatalf("node rm of a ready swarm node: %v\n%s", err, out)
	}

	// node2 goes for good.
	if err := (lab.Labs{}).Kill(ctx, l.Name, n2.Name, lab.ComponentAgent); err != nil {
		t.Fatal(err)
	}
	if err := n2.Docker.SwarmLeave(ctx, true); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 60*time.Second, func() (bool, string) {
		nd, _, err := m.Docker.NodeInspectWithRaw(ctx, id)
		return err == nil && nd.Status.State == swarm.NodeStateDown, fmt.Sprintf("node2 as node1 sees it: %s %v", nd.Status.State, err)
	})
	if err := m.Docker.NodeRemove(ctx, id, swarm.NodeRemoveOptions{}); err != nil {
		t.Fatal(err)
	}

	// The doctor on the manager names it, and the fix.
	doctorSays := func() string {
		out, _ := l.Exec(ctx, m.Name, l.UnderlayBin, "doctor") // exits 1 on a warning
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, "nodes/removed") {
				return line
			}
		}
		return string(out)
	}
	if says := doctorSays(); !strings.Contains(says, "node "+n2.Host+" (swarm node "+id+") is no longer a swarm node") {
		t.Errorf("doctor on node1 with node2 removed from the swarm: %s", says)
	}

	// What it left holds network rm waiting for it, and names the fix.
	out, err := underlay("network", "rm", name, "--timeout", "3s")
	if err == nil || !strings.Contains(out, "node(s) "+n2.Host+" did not take it down") || !strings.Contains(out, "underlay node rm NODE") {
		t.Fatalf("network rm with node2 gone: %v\n%s", err, out)
	}
	out, err = underlay("node", "ls")
	listed := false
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == id {
			listed = f[1] == n2.Host && f[2] == "removed"
		}
	}
	if err != nil || !listed {
		t.Errorf("node ls does not list %s (%s) as removed from the swarm: %v\n%s", n2.Host, id, err, out)
	}

	holds := func() int {
		leases, err := st.Leases(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, holder := range leases {
			if holder == id {
				n++
			}
		}
		return n
	}
	// node1 took its part down at the rm above (the network is marked
	// deleting); node2's range stays leased.
	if n := holds(); n != 1 {
		t.Errorf("node2 holds %d ranges of %s before node rm, want 1", n, name)
	}

	out, err = underlay("node", "rm", n2.Host)
	if err != nil {
		t.Fatalf("node rm %s: %v\n%s", n2.Host, err, out)
	}
	for _, want := range []string{"released range", "removed its state report on network " + name, "deleted " + netspec.NodesKVPrefix + id,
		"node " + n2.Host + " (swarm node " + id + ") removed"} {
		if !strings.Contains(out, want) {
			t.Errorf("node rm output lacks %q:\n%s", want, out)
		}
	}
	if n := holds(); n != 0 {
		t.Errorf("node2 still leases %d ranges of %s after node rm", n, name)
	}
	if out, err := underlay("network", "rm", name); err != nil || !strings.Contains(out, "network "+name+" removed") {
		t.Errorf("network rm after node rm: %v\n%s", err, out)
	}
	if nodes, err := st.Nodes(context.WithoutCancel(ctx)); err != nil || len(nodes) != 1 {
		t.Errorf("facts after: %+v %v, want node1's only", nodes, err)
	}
	if says := doctorSays(); !strings.Contains(says, "every node with records in Consul (1) is a swarm node") {
		t.Errorf("doctor on node1 after node rm: %s", says)
	}
}
