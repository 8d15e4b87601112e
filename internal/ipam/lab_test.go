package ipam_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"

	"github.com/underlay/underlay/internal/app"
	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/inventory"
	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/lab"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/testenv"
)

func underlay(t testing.TB, args ...string) (string, error) {
	var out, errOut bytes.Buffer
	if code := app.Run(context.Background(), args, app.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}); code != 0 {
		return out.String(), fmt.Errorf("underlay %s: exit %d: %s", strings.Join(args, " "), code, errOut.String())
	}
	return out.String(), nil
}

// ipsOf is what `underlay ips --json` lists of network.
func ipsOf(t testing.TB, network, consulAddr string) ([]inventory.Entry, error) {
	out, err := underlay(t, "ips", "--network", network, "--json", "--consul-addr", consulAddr)
	if err != nil {
		return nil, err
	}
	var got struct{ Addresses []inventory.Entry }
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		return nil, fmt.Errorf("underlay ips --json: %w: %s", err, out)
	}
	return got.Addresses, nil
}

// TestIntegrationLabClusterIPAM: on a 3-node lab, a cluster-IPAM network
// gives a service spread over every node addresses from one pool, with no
// per-node range and no duplicate, never the gateway, an aux, a shim, the
// network or the broadcast address; concurrent scale-ups on all nodes never
// collide; scaling to zero gives every task address back.
func TestIntegrationLabClusterIPAM(t *testing.T) {
	testenv.Require(t)
	l := testenv.StartLab(t, lab.Config{Nodes: 3, UnderlaySubnet: "10.205.0.0/16"})
	m := l.Nodes[0]
	t.Setenv("DOCKER_HOST", m.DockerHost)
	ctx := testenv.Context(t, 6*time.Minute)
	kv := consul.NewKV(m.Consul)
	st := netspec.NewStore(kv)
	// A /26 range: 64 addresses, less the broadcast of nothing (it is not
	// the subnet's), an aux address and 3 shims.
	// Dual stack: each node's shim also has an IPv6 address of the pool.
	v6Subnet := netip.MustParsePrefix("fd00:205::/64")
	l.CreateNetwork("pool", "--ipam", "cluster", "--subnet", "10.205.0.0/16", "--gateway", "10.205.0.1",
		"--ip-range", "10.205.7.0/26", "--aux-address", "printer=10.205.7.5", "--parent", "eth1", "--ipv6-subnet", v6Subnet.String())
	states, err := st.NodeStates(ctx, "pool")
	if err != nil {
		t.Fatal(err)
	}
	shims, shims6 := map[netip.Addr]bool{}, map[netip.Addr]bool{}
	for _, s := range states {
		if s.State != netspec.StateReady {
			t.Fatalf("node %s: %s %s", s.Node, s.State, s.Error)
		}
		shims[s.Shim] = true
		if s.Range6 != v6Subnet || !v6Subnet.Contains(s.Shim6) {
			t.Errorf("node %s: IPv6 shim %s routing %s, want an address of %s routing all of it", s.Node, s.Shim6, s.Range6, v6Subnet)
		}
		shims6[s.Shim6] = true
	}
	if len(shims) != 3 || len(shims6) != 3 {
		t.Fatalf("shim addresses %v and %v, want 3 distinct of each family", shims, shims6)
	}
	// No per-node range on any node's config-only network: one pool, the driver's.
	for _, n := range l.Nodes {
		cfg, err := n.Docker.NetworkInspect(ctx, netspec.ConfigNetworkName("pool"), network.InspectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// Docker 29 reports no Config of a config-only network; earlier
		// versions report the subnet with no range.
		if cfg.IPAM.Driver != ipam.DriverName || len(cfg.IPAM.Config) > 0 && cfg.IPAM.Config[0].IPRange != "" || cfg.Labels[netspec.LabelRange] != "" {
			t.Errorf("%s config network IPAM %+v, want driver %s and no range", n.Host, cfg.IPAM, ipam.DriverName)
		}
	}

	replicas := uint64(6)
	spec := swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: "many"},
		TaskTemplate: swarm.TaskSpec{
			ContainerSpec: &swarm.ContainerSpec{Image: testenv.TestImage},
			Networks:      []swarm.NetworkAttachmentConfig{{Target: "pool"}},
		},
		Mode: swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &replicas}},
	}
	resp, err := m.Docker.ServiceCreate(ctx, spec, swarm.ServiceCreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	check := func(want int) map[netip.Addr]string {
		t.Helper()
		var ips map[netip.Addr]string
		testenv.Eventually(t, 120*time.Second, func() (bool, string) {
			var dups []string
			ips, dups = taskAddresses(t, l, "many", "pool")
			if len(dups) > 0 {
				t.Fatalf("duplicate task addresses: %v", dups)
			}
			return len(ips) == want, fmt.Sprintf("%d tasks with an address, want %d", len(ips), want)
		})
		rng := netip.MustParsePrefix("10.205.7.0/26")
		for ip, where := range ips {
			if !rng.Contains(ip) || shims[ip] || ip.String() == "10.205.7.5" || ip.String() == "10.205.0.1" {
				t.Errorf("task on %s got %s: outside the range or reserved", where, ip)
			}
		}
		return ips
	}
	ips := check(6)
	nodesUsed := map[string]bool{}
	for ip, where := range ips {
		nodesUsed[where] = true
		testenv.Eventually(t, 20*time.Second, func() (bool, string) { return testenv.HTTPGet(fmt.Sprintf("http://%s:8080/health", ip)) })
	}
	if len(nodesUsed) != 3 {
		t.Errorf("tasks on %d nodes, want all 3: %v", len(nodesUsed), ips)
	}
	// Each node reaches its own tasks' IPv6 addresses through its shim.
	ips6, dups6 := taskAddressesOf(t, l, "many", "pool", true)
	if len(ips6) != 6 || len(dups6) > 0 {
		t.Errorf("task IPv6 addresses %v (duplicates %v), want 6 distinct", ips6, dups6)
	}
	shimLink := netspec.ShimLinkName("pool")
	for ip, where := range ips6 {
		if !v6Subnet.Contains(ip) || shims6[ip] || ip == v6Subnet.Addr().Next() {
			t.Errorf("task on %s got %s: outside %s, or reserved", where, ip, v6Subnet)
			continue
		}
		for _, n := range l.Nodes {
			if n.Host != where {
				continue
			}
			if out, err := l.Exec(ctx, n.Name, "ip", "-6", "route", "get", ip.String()); err != nil || !strings.Contains(string(out), "dev "+shimLink) {
				t.Errorf("%s: route to its task %s: %s %v; want it through %s", n.Name, ip, out, err, shimLink)
				continue
			}
			testenv.Eventually(t, 20*time.Second, func() (bool, string) {
				out, err := l.Exec(ctx, n.Name, "curl", "-sS", "--noproxy", "*", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", fmt.Sprintf("http://[%s]:8080/health", ip))
				return err == nil && string(out) == "200", fmt.Sprintf("%s to its task %s: %s %v", n.Name, ip, out, err)
			})
		}
	}
	// `underlay ips` shows every address of the pool with its state.
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		addrs, err := ipsOf(t, "pool", m.ConsulAddr)
		if err != nil {
			return false, err.Error()
		}
		states, states6 := map[string]int{}, map[string]int{}
		for _, e := range addrs {
			if netip.MustParseAddr(e.IP).Is6() {
				states6[e.State]++
			} else {
				states[e.State]++
			}
		}
		// Each node keeps 4 spares (the agents' default) of each pool once
		// it has allocated.
		want := map[string]int{"in use": 6, "reserved: host shim": 3, "reserved: gateway": 1, "reserved: aux printer": 1,
			"reserved: spare": 12}
		want6 := map[string]int{"in use": 6, "reserved: host shim": 3, "reserved: gateway": 1, "reserved: spare": 12}
		return fmt.Sprint(states, states6) == fmt.Sprint(want, want6), fmt.Sprintf("states %v and IPv6 %v, want %v and %v", states, states6, want, want6)
	})

	// Concurrent scale-up: every node allocates at once; the /26 holds 60
	// task addresses (64, less the aux and 3 shims).
	testenv.ScaleService(t, m.Docker, resp.ID, 60)
	check(60)
	// One more cannot fit: the task says why.
	testenv.ScaleService(t, m.Docker, resp.ID, 61)
	testenv.Eventually(t, 60*time.Second, func() (bool, string) {
		tasks, _ := m.Docker.TaskList(ctx, swarm.TaskListOptions{Filters: filters.NewArgs(filters.Arg("service", resp.ID))})
		for _, tk := range tasks {
			if strings.Contains(tk.Status.Err, "no free address") {
				return true, ""
			}
		}
		return false, "no task reports the exhausted pool"
	})

	// Down to zero: every task address goes back; only the shims stay,
	// and at most each node's spares (4, raised up to 32 by bursts).
	testenv.ScaleService(t, m.Docker, resp.ID, 0)
	pool, _ := ipam.PoolOf(netspec.Spec{Name: "pool", Subnet: netip.MustParsePrefix("10.205.0.0/16"), Gateway: netip.MustParseAddr("10.205.0.1")}, false)
	// Failing, the test shows what the agents said of the task addresses
	// left (each allocation, release, reclaim and record of them), where
	// the service's tasks and containers stand, and what the dockerds said
	// of tasks they did not update or remove.
	var left []string
	t.Cleanup(func() {
		if t.Failed() && len(left) > 0 {
			t.Logf("the agents' log lines of the task addresses left:\n%s", l.AgentLogLines(left...))
			t.Logf("service many:\n%s", l.ServiceReport(resp.ID))
			t.Logf("the dockerds' log lines of tasks they failed to update or remove:\n%s",
				l.DockerdLogLines("failed to update task", "remove task failed", "shutdown failed"))
		}
	})
	testenv.Eventually(t, 90*time.Second, func() (bool, string) {
		all, err := ipam.Allocations(ctx, kv, pool)
		if err != nil {
			return false, err.Error()
		}
		if err := checkSpares(all, 32); err != nil {
			return false, err.Error()
		}
		left = left[:0]
		shims := 0
		for a, al := range all {
			switch al.Kind {
			case ipam.KindShim:
				shims++
			case ipam.KindTask:
				left = append(left, "addr="+a.String())
			}
		}
		return len(left) == 0 && shims == 3, fmt.Sprintf("task allocations left: %v; %d shims, want 3", left, shims)
	})
}

// checkSpares says what is wrong with a pool's spares: a node keeping more
// than max, or spares of a node's earlier agent that the reclaimer has not
// returned (more than one generation per node).
func checkSpares(all map[netip.Addr]ipam.Alloc, max int) error {
	count := map[string]int{}
	gens := map[string]map[string]bool{}
	for _, al := range all {
		if al.Kind != ipam.KindSpare {
			continue
		}
		count[al.Node]++
		if gens[al.Node] == nil {
			gens[al.Node] = map[string]bool{}
		}
		gens[al.Node][al.Gen] = true
	}
	for node, n := range count {
		if n > max || len(gens[node]) > 1 {
			return fmt.Errorf("node %s keeps %d spares of %d generations, want at most %d of one", node, n, len(gens[node]), max)
		}
	}
	return nil
}

// taskAddresses lists the addresses of a service's running task containers
// on a network, on every node, and any address seen twice.
func taskAddresses(t testing.TB, l *testenv.Lab, service, net string) (map[netip.Addr]string, []string) {
	return taskAddressesOf(t, l, service, net, false)
}

// taskAddressesOf is taskAddresses of the tasks' IPv6 addresses, with v6.
func taskAddressesOf(t testing.TB, l *testenv.Lab, service, net string, v6 bool) (map[netip.Addr]string, []string) {
	ips := map[netip.Addr]string{}
	var dups []string
	for _, n := range l.Nodes {
		list, err := n.Docker.ContainerList(context.Background(), container.ListOptions{
			Filters: filters.NewArgs(filters.Arg("label", "com.docker.swarm.service.name="+service)),
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range list {
			ep := c.NetworkSettings.Networks[net]
			if ep == nil {
				continue
			}
			addr := ep.IPAddress
			if v6 {
				addr = ep.GlobalIPv6Address
			}
			if addr == "" {
				continue
			}
			ip := netip.MustParseAddr(addr)
			if prev, ok := ips[ip]; ok {
				dups = append(dups, fmt.Sprintf("%s on %s and %s", ip, prev, n.Host))
			}
			ips[ip] = n.Host
		}
	}
	return ips, dups
}
