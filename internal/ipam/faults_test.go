package ipam_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/swarm"

	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/doctor"
	"github.com/underlay/underlay/internal/inventory"
	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/lab"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/testenv"
)

// TestIntegrationLabIPAMFaults: with short timers, on a 3-node lab, a leak
// (an allocation whose container never came) is reclaimed after the grace
// period; an agent killed -9 during a scale-up and restarted loses and
// duplicates nothing; a dockerd killed and restarted leaves no leak; Consul
// down on a node makes its tasks fail with a clear error; a node gone for
// good has its addresses reclaimed.
func TestIntegrationLabIPAMFaults(t *testing.T) {
	testenv.Require(t)
	l := testenv.StartLab(t, lab.Config{Nodes: 3, UnderlaySubnet: "10.206.0.0/16",
		AgentArgs: []string{"--ipam-test-timers", "--ipam-leak-grace", "15s", "--ipam-sweep", "500ms", "--ipam-node-timeout", "5s"}})
	m := l.Nodes[0]
	t.Setenv("DOCKER_HOST", m.DockerHost)
	ctx := testenv.Context(t, 8*time.Minute)
	kv := consul.NewKV(m.Consul)
	l.CreateNetwork("pool", "--ipam", "cluster", "--subnet", "10.206.0.0/16", "--gateway", "10.206.0.1",
		"--ip-range", "10.206.9.0/24", "--parent", "eth1")
	pool, _ := ipam.PoolOf(netspec.Spec{Name: "pool", Subnet: netip.MustParsePrefix("10.206.0.0/16"),
		Gateway: netip.MustParseAddr("10.206.0.1"), IPRange: netip.MustParsePrefix("10.206.9.0/24")}, false)
	// settled checks that allocations are exactly the running tasks plus
	// one shim per live node, and spares of live agents only: no leak, no
	// duplicate.
	settled := func(liveNodes int) {
		t.Helper()
		testenv.Eventually(t, 90*time.Second, func() (bool, string) {
			all, err := ipam.Allocations(ctx, kv, pool)
			if err != nil {
				return false, err.Error()
			}
			ips, dups := taskAddresses(t, l, "many", "pool")
			if len(dups) > 0 {
				t.Fatalf("duplicate task addresses: %v", dups)
			}
			if err := checkSpares(all, 32); err != nil {
				return false, err.Error()
			}
			shims, tasks := 0, 0
			for a, al := range all {
				if al.Kind == ipam.KindShim {
					shims++
					continue
				}
				if al.Kind == ipam.KindSpare {
					continue
				}
				tasks++
				if _, ok := ips[a]; !ok {
					return false, fmt.Sprintf("%s allocated to %s but no task holds it", a, al.Node)
				}
			}
			return tasks == len(ips) && shims == liveNodes,
				fmt.Sprintf("%d task allocations for %d tasks, %d shims for %d nodes", tasks, len(ips), shims, liveNodes)
		})
	}

	// A leak: allocated as node2's plugin would (under its identity, its
	// swarm node ID), but no container ever came.
	leaker := ipam.NewAllocator(kv, swarmNodeID(t, l.Nodes[1]), nil)
	leaked, err := leaker.Allocate(ctx, pool, netip.Addr{}, ipam.KindTask)
	if err != nil {
		t.Fatal(err)
	}
	settled(3)
	if all, _ := ipam.Allocations(ctx, kv, pool); all[leaked].Node != "" {
		t.Errorf("leaked %s still allocated", leaked)
	}

	replicas := uint64(9)
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
	settled(3)

	// Agent killed -9 on node2 while a scale-up allocates on every node:
	// once the pool holds more than the 9 tasks' addresses.
	testenv.ScaleService(t, m.Docker, resp.ID, 30)
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		n := taskAllocations(ctx, kv, pool)
		return n > 9, fmt.Sprintf("%d task addresses allocated, want the scale-up under way (more than 9)", n)
	})
	if out, err := l.Exec(ctx, "node2", "pkill", "-9", "-f", " agent --listen"); err != nil {
		t.Fatalf("kill node2's agent: %v %s", err, out)
	}
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		out, err := l.Exec(ctx, "node2", "pgrep", "-f", " agent --listen")
		return err != nil, "node2's agent still running: pid " + strings.TrimSpace(string(out))
	})
	l.Repair()
	testenv.Eventually(t, 120*time.Second, func() (bool, string) {
		ips, _ := taskAddresses(t, l, "many", "pool")
		return len(ips) == 30, fmt.Sprintf("%d of 30 tasks running with an address", len(ips))
	})
	settled(3)

	// dockerd killed and restarted on node3.
	if err := lab.KillDockerd(l.Name, "node3"); err != nil {
		t.Fatal(err)
	}
	waitDockerGone(t, l, "node3")
	l.Repair()
	testenv.Eventually(t, 120*time.Second, func() (bool, string) {
		ips, _ := taskAddresses(t, l, "many", "pool")
		return len(ips) == 30, fmt.Sprintf("%d of 30 tasks running with an address", len(ips))
	})
	settled(3)

	// Consul down on node2: its new tasks fail, saying so; nothing is guessed.
	// node1 and node3 are paused meanwhile, so that every new task lands
	// on node2: swarm balances tasks across nodes, and node3's, moved to
	// node2 while its dockerd was down, could leave node2 none (seen).
	if out, err := l.Exec(ctx, "node2", "pkill", "-STOP", "-f", "consul agent"); err != nil {
		t.Fatalf("stop node2's consul: %v %s", err, out)
	}
	others := []string{swarmNodeID(t, l.Nodes[0]), swarmNodeID(t, l.Nodes[2])}
	for _, id := range others {
		testenv.SetNodeAvailability(t, m.Docker, id, swarm.NodeAvailabilityPause)
	}
	testenv.ScaleService(t, m.Docker, resp.ID, 45)
	// Swarm must first place and start the new tasks, slow on a loaded
	// machine (CI runs other packages' labs beside this one).
	testenv.Eventually(t, 180*time.Second, func() (bool, string) {
		tasks, _ := m.Docker.TaskList(ctx, swarm.TaskListOptions{Filters: filters.NewArgs(filters.Arg("service", resp.ID))})
		for _, tk := range tasks {
			if strings.Contains(tk.Status.Err, "underlay ipam") {
				return true, ""
			}
		}
		return false, "no task on node2 reports the IPAM error"
	})
	if out, err := l.Exec(ctx, "node2", "pkill", "-CONT", "-f", "consul agent"); err != nil {
		t.Fatalf("resume node2's consul: %v %s", err, out)
	}
	for _, id := range others {
		testenv.SetNodeAvailability(t, m.Docker, id, swarm.NodeAvailabilityActive)
	}
	testenv.Eventually(t, 120*time.Second, func() (bool, string) {
		ips, _ := taskAddresses(t, l, "many", "pool")
		return len(ips) == 45, fmt.Sprintf("%d of 45 tasks running with an address", len(ips))
	})
	settled(3)

	// node3 gone for good (its holder killed: everything of it dies): after
	// the node timeout the leader reclaims its addresses, shim included.
	gone := swarmNodeID(t, l.Nodes[2]) // read while node3 answers
	st3, err := lab.GetStatus(ctx, l.Name)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(st3.Nodes[2].HolderPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	l.Nodes = l.Nodes[:2] // taskAddresses no longer asks node3
	testenv.Eventually(t, 120*time.Second, func() (bool, string) {
		all, _ := ipam.Allocations(ctx, kv, pool)
		for a, al := range all {
			if al.Node == gone {
				return false, fmt.Sprintf("%s still allocated to node3 (%s)", a, gone)
			}
		}
		return true, ""
	})
	settled(2)
}

// TestIntegrationLabIPAMStandaloneRestart: a standalone container on a
// cluster-IPAM network (the swarm network is attachable) whose dockerd is
// killed and restarted comes back with an address allocated once (Docker
// asks for a new one: the plugin does not ask for RequiresRequestReplay),
// and its old address is not leaked. Then a container whose start stays
// under way past the leak grace twice over keeps the address allocated as
// its start began, which Docker shows only once the start is done, and
// `underlay ips` says why: first the start of a created container, then,
// stopped, its start again (docker start of an exited container). A
// container created and never started holds no leak back.
func TestIntegrationLabIPAMStandaloneRestart(t *testing.T) {
	testenv.Require(t)
	// The node's dockerd runs containers through a runc whose start waits
	// while the file stall exists: a container start that long under way,
	// as on a loaded or hung machine (seen: 42 s). Every engine has
	// allocated the address by then (29 allocates it after runc's create).
	dir := t.TempDir()
	stall, runtime := filepath.Join(dir, "stall"), filepath.Join(dir, "runc-stall")
	if err := os.WriteFile(runtime, []byte(stallRuntime(stall)), 0o755); err != nil {
		t.Fatal(err)
	}
	l := testenv.StartLab(t, lab.Config{Nodes: 1, UnderlaySubnet: "10.207.0.0/16",
		AgentArgs:  []string{"--ipam-test-timers", "--ipam-leak-grace", "5s", "--ipam-sweep", "500ms"},
		DockerArgs: []string{"--add-runtime", "stall=" + runtime, "--default-runtime", "stall"}})
	n := l.Nodes[0]
	ctx := testenv.Context(t, 4*time.Minute)
	kv := consul.NewKV(n.Consul)
	l.CreateNetwork("solo", "--ipam", "cluster", "--subnet", "10.207.0.0/16", "--gateway", "10.207.0.1",
		"--ip-range", "10.207.3.0/24", "--parent", "eth1")
	pool, _ := ipam.PoolOf(netspec.Spec{Name: "solo", Subnet: netip.MustParsePrefix("10.207.0.0/16"),
		Gateway: netip.MustParseAddr("10.207.0.1"), IPRange: netip.MustParsePrefix("10.207.3.0/24")}, false)
	id := testenv.RunContainer(t, n.Docker, testenv.Container{Name: "solo" + testenv.ID(t), Networks: []string{"solo"}, RestartAlways: true})
	address := func() (netip.Addr, bool) {
		c, err := n.Docker.ContainerInspect(ctx, id)
		if err != nil || c.State == nil || !c.State.Running || c.NetworkSettings.Networks["solo"] == nil {
			return netip.Addr{}, false
		}
		a, err := netip.ParseAddr(c.NetworkSettings.Networks["solo"].IPAddress)
		return a, err == nil
	}
	// exactly says whether the pool holds the addresses want as task
	// addresses and no other task address.
	exactly := func(want ...netip.Addr) (bool, string) {
		all, err := ipam.Allocations(ctx, kv, pool)
		if err != nil {
			return false, err.Error()
		}
		var tasks []netip.Addr
		for a, al := range all {
			if al.Kind == ipam.KindTask {
				tasks = append(tasks, a)
			}
		}
		slices.SortFunc(tasks, netip.Addr.Compare)
		slices.SortFunc(want, netip.Addr.Compare)
		return slices.Equal(tasks, want), fmt.Sprintf("task addresses %v, want %v", tasks, want)
	}
	before, ok := address()
	if !ok {
		t.Fatal("container has no address on solo")
	}
	testenv.Eventually(t, 20*time.Second, func() (bool, string) { return exactly(before) })

	if err := lab.KillDockerd(l.Name, "node1"); err != nil {
		t.Fatal(err)
	}
	waitDockerGone(t, l, "node1")
	l.Repair()
	var after netip.Addr
	testenv.Eventually(t, 90*time.Second, func() (bool, string) {
		after, ok = address()
		return ok, "container not running with an address after dockerd's restart"
	})
	// outlivesGrace waits until a has been allocated for the leak grace
	// twice over and two sweeps more (a sweep would have reclaimed it by
	// then, were it taken for a leak), failing if it is freed meanwhile.
	outlivesGrace := func(a netip.Addr, what string) {
		t.Helper()
		testenv.Eventually(t, 60*time.Second, func() (bool, string) {
			all, err := ipam.Allocations(ctx, kv, pool)
			if err != nil {
				return false, err.Error()
			}
			al, ok := all[a]
			if !ok {
				t.Fatalf("%s, %s, was reclaimed as a leak", a, what)
			}
			age := time.Since(al.At)
			return age > 2*5*time.Second+2*500*time.Millisecond+time.Second, fmt.Sprintf("%s allocated %s ago", a, age.Round(time.Second))
		})
	}
	outlivesGrace(after, "the address of a running container")
	testenv.Eventually(t, 30*time.Second, func() (bool, string) { return exactly(after) })
	testenv.Eventually(t, 20*time.Second, func() (bool, string) {
		return testenv.HTTPGet(fmt.Sprintf("http://%s:8080/health", after))
	})

	// A start held under way: its address is allocated as it begins.
	if err := os.WriteFile(stall, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	slow := testenv.CreateContainer(t, n.Docker, testenv.Container{Name: "slow" + testenv.ID(t), Networks: []string{"solo"}})
	t.Cleanup(func() { os.Remove(stall) }) // before the container's removal: a held start would hold that up
	started := make(chan error, 1)
	go func() { started <- n.Docker.ContainerStart(ctx, slow, container.StartOptions{}) }()
	// heldStart waits for the address of the start held under way (the
	// pool's one task address other than running's), for a sweep past the
	// grace to keep it (before the fix, that sweep freed it), and for
	// `underlay ips` to say why; it checks that the container is listed
	// as listed (a listing shows no address until the start is done).
	heldStart := func(running netip.Addr, listed string) netip.Addr {
		t.Helper()
		var inFlight netip.Addr
		testenv.Eventually(t, 60*time.Second, func() (bool, string) {
			all, err := ipam.Allocations(ctx, kv, pool)
			if err != nil {
				return false, err.Error()
			}
			for a, al := range all {
				if al.Kind == ipam.KindTask && a != running {
					inFlight = a
					return true, ""
				}
			}
			return false, "no address allocated for the held start"
		})
		// The event that must happen: a sweep past the grace keeps it, and
		// says so.
		deferred := `underlay_ipam_leaks_deferred{pool="` + pool.ID() + `"} 1`
		testenv.Eventually(t, 60*time.Second, func() (bool, string) {
			out, err := l.Exec(ctx, "node1", "curl", "-s", "http://"+lab.AgentListen+"/metrics")
			swept := err == nil && strings.Contains(string(out), deferred)
			all, err := ipam.Allocations(ctx, kv, pool)
			if err != nil {
				return false, err.Error()
			}
			if _, ok := all[inFlight]; !ok {
				t.Fatalf("%s, the address of a start under way, was reclaimed as a leak", inFlight)
			}
			return swept, fmt.Sprintf("no sweep has kept %s as a leak deferred yet (want %s in the agent's metrics)", inFlight, deferred)
		})
		// `underlay ips` says why: a start under way may hold it (the
		// agent publishes what its sweep keeps), not a leak.
		testenv.Eventually(t, 30*time.Second, func() (bool, string) {
			addrs, err := ipsOf(t, "solo", n.ConsulAddr)
			if err != nil {
				return false, err.Error()
			}
			for _, e := range addrs {
				if e.IP == inFlight.String() {
					return e.State == inventory.StateStarting, fmt.Sprintf("underlay ips shows %s as %q, want %q", e.IP, e.State, inventory.StateStarting)
				}
			}
			return false, fmt.Sprintf("underlay ips does not list %s: %+v", inFlight, addrs)
		})
		// So does the node's doctor (a warning only past 10 minutes).
		if r := doctorResult(t, ctx, l, "node1", "ipam/"+pool.ID()+"/starts"); r.Status != doctor.OK || !strings.Contains(r.Message, "1 address(es) kept") {
			t.Errorf("doctor on node1: %+v, want ok, one address kept for a start", r)
		}
		if c, err := n.Docker.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("id", slow))}); err != nil || len(c) != 1 || c[0].State != listed {
			t.Fatalf("the held start is not under way as a %s container's: %+v %v", listed, c, err)
		}
		return inFlight
	}
	// letGo ends the held start: the container then has inFlight, and the
	// pool the task addresses of the two containers only; the next sweep
	// keeps nothing, and says so.
	letGo := func(inFlight netip.Addr) {
		t.Helper()
		if err := os.Remove(stall); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-started:
			if err != nil {
				t.Fatalf("the held start, let go: %v", err)
			}
		case <-ctx.Done():
			t.Fatal("the held start, let go, did not end")
		}
		c, err := n.Docker.ContainerInspect(ctx, slow)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.NetworkSettings.Networks["solo"].IPAddress; got != inFlight.String() {
			t.Fatalf("the started container has %s, want %s, allocated as its start began", got, inFlight)
		}
		testenv.Eventually(t, 30*time.Second, func() (bool, string) { return exactly(after, inFlight) })
		testenv.Eventually(t, 30*time.Second, func() (bool, string) {
			c, err := ipam.Inspect(ctx, kv, pool)
			return err == nil && len(c.Kept) == 0, fmt.Sprintf("kept for starts: %v (%v)", c.Kept, err)
		})
	}
	letGo(heldStart(after, "created"))

	// docker start of an exited container, held under way: the listing
	// shows it exited all along; the agent follows the connect dockerd
	// announces as the start begins.
	if err := n.Docker.ContainerStop(ctx, slow, container.StopOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() (bool, string) { return exactly(after) })
	if err := os.WriteFile(stall, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	go func() { started <- n.Docker.ContainerStart(ctx, slow, container.StartOptions{}) }()
	inFlight := heldStart(after, "exited")
	letGo(inFlight)

	// A container created and never started (docker create; or one whose
	// start dockerd's death cut short) is no start under way: dockerd
	// answers for it. A leak allocated after its creation is reclaimed
	// like any other (before the fix, held back for 10 minutes: the soak
	// saw one for 9).
	testenv.CreateContainer(t, n.Docker, testenv.Container{Name: "idle" + testenv.ID(t), Networks: []string{"solo"}})
	leaker := ipam.NewAllocator(kv, swarmNodeID(t, n), nil)
	leaked, err := leaker.Allocate(ctx, pool, netip.Addr{}, ipam.KindTask)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 60*time.Second, func() (bool, string) {
		ok, why := exactly(after, inFlight)
		return ok, fmt.Sprintf("leak %s not reclaimed beside a created container: %s", leaked, why)
	})
}

// doctorResult runs `underlay doctor` on a lab node and returns its result
// of check.
func doctorResult(t *testing.T, ctx context.Context, l *testenv.Lab, node, check string) doctor.Result {
	t.Helper()
	cmd, err := lab.Command(ctx, l.Name, node, testenv.UnderlayBinary(t), "doctor", "--json")
	if err != nil {
		t.Fatal(err)
	}
	out, _ := cmd.Output() // exits 1 when any check fails
	var rs []doctor.Result
	if err := json.Unmarshal(out, &rs); err != nil {
		t.Fatalf("doctor on %s: %v: %s", node, err, out)
	}
	for _, r := range rs {
		if r.Check == check {
			return r
		}
	}
	t.Fatalf("doctor on %s has no %s: %+v", node, check, rs)
	return doctor.Result{}
}

// stallRuntime is a runc whose start waits while the file stall exists.
func stallRuntime(stall string) string {
	return `#!/bin/sh
for a in "$@"; do
	if [ "$a" = start ]; then
		while [ -e '` + stall + `' ]; do sleep 0.1; done
		break
	fi
done
exec runc "$@"
`
}

// swarmNodeID is a lab node's identity: its swarm node ID.
func swarmNodeID(t testing.TB, n *testenv.LabNode) string {
	t.Helper()
	info, err := n.Docker.Info(context.Background())
	if err != nil || info.Swarm.NodeID == "" {
		t.Fatalf("%s's swarm node ID: %q %v", n.Host, info.Swarm.NodeID, err)
	}
	return info.Swarm.NodeID
}

// taskAllocations counts the pool's task addresses.
func taskAllocations(ctx context.Context, kv ipam.KV, pool ipam.Pool) int {
	all, _ := ipam.Allocations(ctx, kv, pool)
	n := 0
	for _, al := range all {
		if al.Kind == ipam.KindTask {
			n++
		}
	}
	return n
}

// waitDockerGone waits until node's agent reports its dockerd unreachable
// (/healthz), which is what killing dockerd is for: the agent must live
// through it.
func waitDockerGone(t *testing.T, l *testenv.Lab, node string) {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		out, _ := l.Exec(context.Background(), node, "curl", "-s", "http://"+lab.AgentListen+"/healthz")
		return strings.Contains(string(out), `"docker_connected":false`), node + "'s agent: " + string(out)
	})
}
