package ipam_test

import (
	"fmt"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/swarm"

	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/lab"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/testenv"
)

// TestIntegrationLabIdentity: every node's agent runs with one custom
// --node, "samename" (cloned hosts share a host name; the flag is
// documented), and a 3 s departed-node timeout. Nodes are known by their
// swarm node IDs: each leases its own per-node range and holds its own
// shim; a release sent to node2's plugin for node1's task address frees
// nothing (filling the pool afterwards hands it to no one else); a second
// agent claiming node1's identity is refused; and when node3 dies for good
// the leader reclaims node3's addresses — proof its sweeps ran past the
// timeout — and not one of the live nodes', whatever their name.
func TestIntegrationLabIdentity(t *testing.T) {
	testenv.Require(t)
	const name = "samename"
	l := testenv.StartLab(t, lab.Config{Nodes: 3, UnderlaySubnet: "10.160.0.0/16",
		AgentArgs: []string{"--node", name, "--ipam-test-timers", "--ipam-node-timeout", "3s", "--ipam-sweep", "500ms"}})
	m := l.Nodes[0]
	t.Setenv("DOCKER_HOST", m.DockerHost)
	ctx := testenv.Context(t, 8*time.Minute)
	kv := consul.NewKV(m.Consul)
	st := netspec.NewStore(kv)
	ids := map[string]string{} // host → swarm node ID
	for _, n := range l.Nodes {
		ids[n.Host] = swarmNodeID(t, n)
	}

	// One identity per node, one name for all (agents publish their facts
	// once they claimed their identity, after the lab is up).
	var facts []netspec.NodeFacts
	testenv.Eventually(t, 60*time.Second, func() (bool, string) {
		var err error
		facts, err = st.Nodes(ctx)
		return err == nil && len(facts) >= len(l.Nodes), fmt.Sprintf("%d of %d agents published their facts (%v)", len(facts), len(l.Nodes), err)
	})
	seen := map[string]bool{}
	for _, f := range facts {
		if f.Node != name || f.Holder.Instance == "" {
			t.Errorf("facts %+v, want node %s and a holder", f, name)
		}
		seen[f.ID] = true
	}
	for host, id := range ids {
		if !seen[id] {
			t.Errorf("no facts for %s (swarm node %s): %+v", host, id, facts)
		}
	}

	// Per-node IPAM: three ranges, one per identity.
	l.CreateNetwork("pn", "--subnet", "10.160.0.0/16", "--gateway", "10.160.0.1", "--ip-range", "10.160.4.0/24",
		"--per-node-size", "16", "--parent", "eth1")
	states, err := st.NodeStates(ctx, "pn")
	if err != nil {
		t.Fatal(err)
	}
	ranges := map[netip.Prefix]string{}
	for _, s := range states {
		if s.State != netspec.StateReady || s.Node != name {
			t.Errorf("per-node network on %s: %+v", s.ID, s)
		}
		if other, dup := ranges[s.Range]; dup {
			t.Errorf("range %s leased to %s and %s", s.Range, other, s.ID)
		}
		ranges[s.Range] = s.ID
	}
	if len(ranges) != 3 {
		t.Errorf("per-node ranges %v, want 3", ranges)
	}
	if out, err := underlay(t, "network", "rm", "pn", "--consul-addr", m.ConsulAddr); err != nil {
		t.Fatalf("%v %s", err, out)
	}

	// Cluster IPAM: one shim per identity.
	l.CreateNetwork("pool", "--ipam", "cluster", "--subnet", "10.160.0.0/16", "--gateway", "10.160.0.1",
		"--ip-range", "10.160.7.0/27", "--parent", "eth1")
	pool, _ := ipam.PoolOf(netspec.Spec{Name: "pool", Subnet: netip.MustParsePrefix("10.160.0.0/16"),
		Gateway: netip.MustParseAddr("10.160.0.1"), IPRange: netip.MustParsePrefix("10.160.7.0/27")}, false)
	shims := map[string]netip.Addr{} // node ID → shim
	all, err := ipam.Allocations(ctx, kv, pool)
	if err != nil {
		t.Fatal(err)
	}
	for a, al := range all {
		if al.Kind == ipam.KindShim {
			shims[al.Node] = a
		}
	}
	if len(shims) != 3 {
		t.Fatalf("shims %v, want one for each of the three identities", shims)
	}

	replicas := uint64(6)
	svc := testenv.CreateService(t, m.Docker, swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: "ids"},
		TaskTemplate: swarm.TaskSpec{ContainerSpec: &swarm.ContainerSpec{Image: testenv.TestImage},
			Networks: []swarm.NetworkAttachmentConfig{{Target: "pool"}}},
		Mode: swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &replicas}},
	})
	running := func(want int) map[netip.Addr]string {
		t.Helper()
		var ips map[netip.Addr]string
		testenv.Eventually(t, 2*time.Minute, func() (bool, string) {
			var dups []string
			ips, dups = taskAddresses(t, l, "ids", "pool")
			if len(dups) > 0 {
				t.Fatalf("duplicate task addresses: %v", dups)
			}
			return len(ips) == want, fmt.Sprintf("%d of %d tasks running with an address", len(ips), want)
		})
		return ips
	}
	// owned checks that every task's address is allocated to its node's
	// identity, and every listed shim to its node.
	owned := func(ips map[netip.Addr]string, shims map[string]netip.Addr) error {
		all, err := ipam.Allocations(ctx, kv, pool)
		if err != nil {
			return err
		}
		for a, host := range ips {
			if all[a].Node != ids[host] {
				return fmt.Errorf("task address %s on %s (%s) is allocated as %+v", a, host, ids[host], all[a])
			}
		}
		for id, a := range shims {
			if all[a].Node != id || all[a].Kind != ipam.KindShim {
				return fmt.Errorf("shim %s of %s is allocated as %+v", a, id, all[a])
			}
		}
		return nil
	}
	ips := running(6)
	if err := owned(ips, shims); err != nil {
		t.Fatal(err)
	}

	// A release of node1's task address reaches node2's plugin: refused.
	var stray netip.Addr
	for a, host := range ips {
		if host == m.Host {
			stray = a
		}
	}
	if !stray.IsValid() {
		t.Fatalf("no task on %s: %v", m.Host, ips)
	}
	out, err := l.Exec(ctx, "node2", "curl", "-s", "--unix-socket", ipam.DefaultSocket, "-d",
		fmt.Sprintf(`{"PoolID":"pool/v4","Address":"%s"}`, stray), "http://plugin/IpamDriver.ReleaseAddress")
	if err != nil || !strings.Contains(string(out), "not released") || !strings.Contains(string(out), ids[m.Host]) {
		t.Errorf("stray release through node2's plugin: %v %s; want refused, naming node1's identity", err, out)
	}
	// Fill the pool: 32 addresses less 3 shims. Had the release gone
	// through, a task would now get the stray address twice.
	testenv.ScaleService(t, m.Docker, svc, 29)
	ips = running(29)
	if ips[stray] != m.Host {
		t.Errorf("%s is now held on %q, want still by node1's task", stray, ips[stray])
	}
	if err := owned(ips, shims); err != nil {
		t.Fatal(err)
	}

	// A second agent claiming node1's identity is refused, loudly.
	out, err = l.Exec(ctx, "node1", testenv.UnderlayBinary(t), "agent", "--node", "intruder", "--listen", "", "--task-metrics", "0",
		"--ipam-socket", "/run/docker/plugins/second.sock", "--label", "io.underlay.test=none")
	if err == nil || !strings.Contains(string(out), "held by another live agent") {
		t.Errorf("second agent on node1: %v, output:\n%s\nwant it refused", err, out)
	}

	// node3 dies for good. The leader reclaims its addresses once its facts
	// are stale and it has not been Ready for 3 s; the live nodes, named
	// alike, keep theirs.
	testenv.ScaleService(t, m.Docker, svc, 4)
	ips = running(4)
	gone := ids[l.Nodes[2].Host]
	live := map[string]netip.Addr{ids[l.Nodes[0].Host]: shims[ids[l.Nodes[0].Host]], ids[l.Nodes[1].Host]: shims[ids[l.Nodes[1].Host]]}
	st3, err := lab.GetStatus(ctx, l.Name)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(st3.Nodes[2].HolderPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	l.Nodes = l.Nodes[:2]
	testenv.Eventually(t, 3*time.Minute, func() (bool, string) {
		all, err := ipam.Allocations(ctx, kv, pool)
		if err != nil {
			return false, err.Error()
		}
		for a, al := range all {
			if al.Node == gone {
				return false, fmt.Sprintf("%s still allocated to node3 (%s)", a, gone)
			}
		}
		return true, ""
	})
	ips = running(4)
	if err := owned(ips, live); err != nil {
		t.Errorf("after node3's reclaim: %v", err)
	}
}
