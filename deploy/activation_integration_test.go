package deploy_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/swarm"

	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/lab"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/testenv"
)

// TestIntegrationSocketActivation is the boot-order rule of the README on
// a node: the agent socket-activated as underlay-ipam.socket does it
// (systemd's own systemd-socket-activate holds the plugin's socket and
// starts the agent on the first connection, passing it as LISTEN_FDS),
// with only the capabilities underlay-agent.service leaves it
// (CAP_NET_ADMIN) and no new privileges: it makes the host
// shim and serves the plugin with them.
// With containers on a cluster-IPAM network running — a standalone one
// with restart policy "always" and two swarm tasks — the node's agent and
// dockerd stop, as at a reboot; the socket is made again before dockerd
// starts; dockerd's requests while it restores containers start the
// agent. Every container comes back running with an address allocated to
// it exactly once, registered in Consul with that address, no duplicate
// and no leak; dockerd starts with no wait on the plugin.
//
// (Without the socket held before dockerd, Docker 20.10 waits about 20 s
// for the plugin while it starts, then gives up on the standalone
// container, which stays exited; swarm replaces its tasks once the agent
// is back. The README calls that deployment unsafe for cluster IPAM.)
func TestIntegrationSocketActivation(t *testing.T) {
	testenv.Require(t)
	testenv.Docker(t)
	bin := testenv.UnderlayBinary(t)
	l := testenv.StartLab(t, lab.Config{Nodes: 1, UnderlaySubnet: "10.143.0.0/16", NoAgent: true})
	n := l.Nodes[0]
	ctx := testenv.Context(t, 5*time.Minute)
	kv := consul.NewKV(n.Consul)

	// The agent of the unit: socket-activated, its node name given (as
	// underlay-agent.service does with %H), short leak timers.
	dir := t.TempDir()
	agentRuns := 0
	startActivated := func() {
		t.Helper()
		agentRuns++
		// The unit's CapabilityBoundingSet and NoNewPrivileges, by setpriv.
		cmd, err := lab.Command(ctx, l.Name, n.Name, "systemd-socket-activate", "--listen", ipam.DefaultSocket,
			"setpriv", "--bounding-set", "-all,+net_admin", "--inh-caps", "-all", "--no-new-privs",
			bin, "agent", "--node", n.Host, "--listen", lab.AgentListen, "--ipam-test-timers", "--ipam-leak-grace", "5s", "--ipam-sweep", "500ms",
			"--state-dir", filepath.Join(dir, "state"))
		if err != nil {
			t.Fatal(err)
		}
		logf, err := os.Create(filepath.Join(dir, fmt.Sprintf("agent-%d.log", agentRuns)))
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		logf.Close()
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		testenv.Eventually(t, 10*time.Second, func() (bool, string) {
			out, err := l.Exec(ctx, n.Name, "test", "-S", ipam.DefaultSocket)
			return err == nil, fmt.Sprintf("no socket at %s: %v %s", ipam.DefaultSocket, err, out)
		})
	}
	agentLog := func() string {
		b, _ := os.ReadFile(filepath.Join(dir, fmt.Sprintf("agent-%d.log", agentRuns)))
		return string(b)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for i := 1; i <= agentRuns; i++ {
				b, _ := os.ReadFile(filepath.Join(dir, fmt.Sprintf("agent-%d.log", i)))
				t.Logf("agent run %d's log:\n%s", i, b)
			}
		}
	})
	startActivated()
	// At boot systemd also starts the enabled service by itself: a first
	// connection does it here.
	if out, err := l.Exec(ctx, n.Name, "curl", "-fsS", "--max-time", "10", "--unix-socket", ipam.DefaultSocket,
		"-X", "POST", "http://plugin/Plugin.Activate"); err != nil || !strings.Contains(string(out), "IpamDriver") {
		t.Fatalf("activate the plugin: %v %s\n%s", err, out, agentLog())
	}
	if !strings.Contains(agentLog(), "on the socket systemd passed") {
		t.Fatalf("the agent did not take the socket from systemd-socket-activate:\n%s", agentLog())
	}

	l.CreateNetwork("pool", "--ipam", "cluster", "--subnet", l.Subnet.String(), "--gateway", l.Gateway.String(),
		"--ip-range", "10.143.3.0/24", "--parent", "eth1")
	spec, _, err := netspec.NewStore(kv).Get(ctx, "pool")
	if err != nil {
		t.Fatal(err)
	}
	pool, _ := ipam.PoolOf(spec, false)
	testenv.RunContainer(t, n.Docker, testenv.Container{Name: "solo", Networks: []string{"pool"}, RestartAlways: true,
		Env: []string{"SERVICE_NAME=solo", "SERVICE_CHECK_HTTP=/health", "SERVICE_CHECK_INTERVAL=1s"}})
	two := uint64(2)
	testenv.CreateService(t, n.Docker, swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: "svc"},
		TaskTemplate: swarm.TaskSpec{
			ContainerSpec: &swarm.ContainerSpec{Image: testenv.TestImage, Env: []string{
				"SERVICE_NAME=svc", "SERVICE_CHECK_HTTP=/health", "SERVICE_CHECK_INTERVAL=1s"}},
			Networks: []swarm.NetworkAttachmentConfig{{Target: "pool"}},
		},
		Mode: swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &two}},
	})
	settled := func() {
		t.Helper()
		testenv.Eventually(t, 120*time.Second, func() (bool, string) {
			return settledState(ctx, t, l, kv, pool)
		})
	}
	settled()

	// A reboot of the node, as far as underlay is concerned, in systemd's
	// order: dockerd stops (the agent still answers its releases), then
	// the agent and its socket; at boot /run is empty, and systemd makes
	// the socket again before dockerd starts.
	st, err := lab.GetStatus(ctx, l.Name)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(st.Nodes[0].DockerdPID, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 60*time.Second, func() (bool, string) {
		return syscall.Kill(st.Nodes[0].DockerdPID, 0) != nil, "dockerd still running"
	})
	out, err := l.Exec(ctx, n.Name, "pkill", "-TERM", "-x", "underlay")
	if err != nil {
		t.Fatalf("stop the agent: %v %s", err, out)
	}
	testenv.Eventually(t, 20*time.Second, func() (bool, string) {
		out, err := l.Exec(ctx, n.Name, "pgrep", "-x", "underlay")
		return err != nil, "agent still running: " + string(out)
	})
	if out, err := l.Exec(ctx, n.Name, "rm", "-f", ipam.DefaultSocket); err != nil {
		t.Fatalf("remove the socket: %v %s", err, out)
	}
	startActivated()
	if strings.Contains(agentLog(), "agent starting") {
		t.Fatalf("the agent started before dockerd asked for the plugin:\n%s", agentLog())
	}
	start := time.Now()
	l.Repair() // starts dockerd
	t.Logf("dockerd answered %s after its start", time.Since(start).Round(time.Millisecond))
	if !strings.Contains(agentLog(), "on the socket systemd passed") {
		t.Errorf("dockerd's start did not activate the agent:\n%s", agentLog())
	}
	settled()
}

// settledState says whether the node is as it must be: the standalone
// container and both tasks running, each with an address of the pool
// allocated to it once, registered in Consul with that address and
// passing, and no other task address allocated.
func settledState(ctx context.Context, t *testing.T, l *testenv.Lab, kv *consul.KV, pool ipam.Pool) (bool, string) {
	held := map[netip.Addr]string{}
	ips, dups := runningAddresses(t, l, "pool")
	if len(dups) > 0 {
		t.Fatalf("duplicate addresses: %v", dups)
	}
	for ip, name := range ips {
		held[ip] = name
	}
	if len(held) != 3 {
		return false, fmt.Sprintf("%d containers running with an address, want 3: %v", len(held), held)
	}
	all, err := ipam.Allocations(ctx, kv, pool)
	if err != nil {
		return false, err.Error()
	}
	tasks := 0
	for a, al := range all {
		if al.Kind != ipam.KindTask {
			continue
		}
		tasks++
		if _, ok := held[a]; !ok {
			return false, fmt.Sprintf("%s allocated, held by no container (leak awaiting reclaim)", a)
		}
	}
	for a, name := range held {
		if all[a].Kind != ipam.KindTask {
			return false, fmt.Sprintf("%s of %s not allocated as a task address: %+v", a, name, all[a])
		}
	}
	if tasks != 3 {
		return false, fmt.Sprintf("%d task addresses allocated, want 3", tasks)
	}
	reg := passingAddresses(t, l, "solo")
	for a := range passingAddresses(t, l, "svc") {
		reg[a] = true
	}
	for a, name := range held {
		if !reg[a.String()] {
			return false, fmt.Sprintf("%s (%s) not registered passing in Consul; registered: %v", a, name, reg)
		}
	}
	return len(reg) == 3, fmt.Sprintf("registered %v, want the 3 held %v", reg, held)
}

// runningAddresses lists running containers' addresses on a network, on
// every node of the lab, and any address seen twice.
func runningAddresses(t *testing.T, l *testenv.Lab, network string) (map[netip.Addr]string, []string) {
	out := map[netip.Addr]string{}
	var dups []string
	for _, n := range l.Nodes {
		for id, addr := range containerAddressesOn(t, n, network) {
			a, err := netip.ParseAddr(addr)
			if err != nil {
				continue
			}
			if prev, ok := out[a]; ok {
				dups = append(dups, fmt.Sprintf("%s on %s and %s", a, prev, id))
			}
			out[a] = id
		}
	}
	return out, dups
}

// passingAddresses returns the addresses of a service's passing instances.
func passingAddresses(t testing.TB, l *testenv.Lab, service string) map[string]bool {
	out := map[string]bool{}
	for _, addr := range passing(t, l, service) {
		out[addr] = true
	}
	return out
}

// containerAddressesOn lists the node's running containers on a network:
// name → address.
func containerAddressesOn(t *testing.T, n *testenv.LabNode, network string) map[string]string {
	cs, err := n.Docker.ContainerList(context.Background(), container.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, c := range cs {
		if ep := c.NetworkSettings.Networks[network]; ep != nil && ep.IPAddress != "" {
			out[strings.TrimPrefix(c.Names[0], "/")] = ep.IPAddress
		}
	}
	return out
}
