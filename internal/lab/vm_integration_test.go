package lab_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/swarm"
	"github.com/hashicorp/consul/api"

	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/lab"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/testenv"
)

// vmSubnet is the underlay /16 of the VM lab test (DEVELOPERS.md).
const vmSubnet, vmPrefix = "10.180.0.0/16", "10.180."

// TestIntegrationVM stands on one 3-node VM lab (Debian's kernel, bond0 of
// two NICs, VLAN 40 routed by the lab) and covers, in order: the nodes
// themselves; a VLAN parent the agents make (bond0 --vlan 40), repair and
// remove again (only where they made it), with a cluster-IPAM macvlan
// service on all three nodes reached from the root namespace; bond
// failover under that service with nothing flapping in Consul; an ipvlan
// L2 network with per-node ranges; the doctor on a node; and a down that
// leaves no VM, tap, bridge or namespace.
func TestIntegrationVM(t *testing.T) {
	testenv.Require(t)
	testenv.Docker(t) // the machine's dockerd holds the test image
	ctx := testenv.Context(t, 15*time.Minute)

	start := time.Now()
	l := testenv.StartLab(t, lab.Config{Nodes: 3, VM: true, UnderlaySubnet: vmSubnet})
	t.Logf("VM lab %s up in %s", l.Name, time.Since(start).Round(time.Millisecond))
	mgr := l.Nodes[0]
	top := t

	t.Run("nodes", func(t *testing.T) {
		// Status probes each daemon once, with a short timeout; a TCG
		// guest's Consul can miss one probe while it is busy (seen in CI):
		// wait for a status with every node running.
		var st *lab.Status
		testenv.Eventually(t, 90*time.Second, func() (bool, string) {
			var err error
			st, err = lab.GetStatus(ctx, l.Name)
			if err != nil {
				return false, err.Error()
			}
			for _, n := range st.Nodes {
				if n.State != lab.StateRunning {
					return false, fmt.Sprintf("%s: %s %v", n.Name, n.State, n.Problems)
				}
			}
			return true, ""
		})
		if st.Kind != lab.KindVM {
			t.Errorf("kind %q, want %q", st.Kind, lab.KindVM)
		}
		for _, n := range st.Nodes {
			if n.State != lab.StateRunning || n.UnderlayParent != "bond0.40" || n.HolderPID == 0 {
				t.Errorf("%s: %s %v, parent %q, qemu pid %d", n.Name, n.State, n.Problems, n.UnderlayParent, n.HolderPID)
			}
		}
		for _, n := range l.Nodes {
			// Its own kernel, with the NICs bonded.
			out := vmExec(t, ctx, l, n.Name, "sh", "-c", "uname -r; cat /proc/net/bonding/bond0")
			if strings.HasPrefix(out, hostKernel(t)+"\n") || !strings.Contains(out, "active-backup") ||
				!strings.Contains(out, "Slave Interface: eth0") || !strings.Contains(out, "Slave Interface: eth1") {
				t.Errorf("%s: not a VM with bond0 of eth0 and eth1:\n%s", n.Name, out)
			}
		}
		// A command's exit status comes back.
		cmd, err := lab.Command(ctx, l.Name, "node2", "sh", "-c", "echo out; exit 3")
		if err != nil {
			t.Fatal(err)
		}
		out, err := cmd.Output()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 || string(out) != "out\n" {
			t.Errorf("exit status through exec: %v, output %q", err, out)
		}
	})

	// node1 already has bond0.40, made by hand: the agent uses it and
	// leaves it; on node2 and node3 the agent makes it.
	vmExec(t, ctx, l, "node1", "ip", "link", "add", "link", "bond0", "name", "bond0.40", "type", "vlan", "id", "40")
	vmExec(t, ctx, l, "node1", "ip", "link", "set", "bond0.40", "up")

	svc := "web" + l.Name
	var ips []string
	t.Run("VLAN parent made by the agent, cluster IPAM service", func(t *testing.T) {
		l.CreateNetwork("v40", "--parent", "bond0", "--vlan", "40", "--subnet", vmSubnet, "--gateway", l.Gateway.String(),
			"--ipam", "cluster", "--ip-range", vmPrefix+"8.0/24")
		for _, n := range l.Nodes {
			checkVLANParent(t, ctx, l, n.Name, n.Name != "node1")
		}
		// Deleted, it comes back (and with it the shim on it).
		vmExec(t, ctx, l, "node3", "ip", "link", "del", "bond0.40")
		testenv.Eventually(t, 60*time.Second, func() (bool, string) {
			out, err := l.Exec(ctx, "node3", "ip", "-d", "-o", "link", "show")
			s := string(out)
			return err == nil && strings.Contains(s, "bond0.40@bond0") && strings.Contains(s, netspec.ShimLinkName("v40")+"@bond0.40"),
				fmt.Sprintf("bond0.40 and its shim not back on node3: %v\n%s", err, s)
		})
		checkVLANParent(t, ctx, l, "node3", true)

		createService(t, top, ctx, l, svc, "v40")
		serviceIPs(t, ctx, l, svc, "v40")
		ips = waitTasksAnswer(t, ctx, l, svc, "v40")
		for _, ip := range ips {
			if !strings.HasPrefix(ip, vmPrefix+"8.") {
				t.Errorf("task address %s outside the range %s8.0/24", ip, vmPrefix)
			}
		}
		waitPassing(t, mgr.Consul, svc, 3)
	})

	t.Run("bond failover", func(t *testing.T) {
		if len(ips) != 3 {
			t.Fatal("no service to fail over under: the subtest before failed")
		}
		node := l.Nodes[1]
		active := activeSlave(t, ctx, l, node.Name)
		nic, other := 0, "eth1"
		if active == "eth1" {
			nic, other = 1, "eth0"
		}
		checkIDs := serviceChecks(t, node.Consul, svc)
		watch := watchFlaps(ctx, mgr.Consul, svc, 3)
		outputs := checkOutputs(t, node.Consul, checkIDs)
		if err := lab.SetLink(ctx, l.Name, node.Name, nic, false); err != nil {
			t.Fatal(err)
		}
		pulled := time.Now()
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			lab.SetLink(ctx, l.Name, node.Name, nic, true)
		})
		testenv.Eventually(t, 30*time.Second, func() (bool, string) {
			got, err := bondActive(ctx, l, node.Name)
			return err == nil && got == other, fmt.Sprintf("active member of %s's bond0: %q (%v), want %s", node.Name, got, err, other)
		})
		waitTasksAnswer(t, ctx, l, svc, "v40")
		t.Logf("%s pulled on %s: bond0 on %s, every container answers %s after", active, node.Name, other, time.Since(pulled).Round(time.Millisecond))
		// A flap would show within a check run, and within serf's suspicion
		// time (4s for 3 nodes): wait for four runs of every check on the
		// node, 2s apart.
		for range 4 {
			outputs = checkRan(t, node.Consul, checkIDs, outputs)
		}
		if flaps := watch.stop(); len(flaps) > 0 {
			t.Errorf("Consul saw flaps during the failover:\n%s", strings.Join(flaps, "\n"))
		}
		// The doctor on the node says what is wrong and how to fix it.
		doc := doctor(t, ctx, l, node.Name)
		if r := doc["network/v40/bond"]; r.Status != "warn" || !strings.Contains(r.Fix, "ip link set "+active+" up") {
			t.Errorf("doctor on a bond with %s down: %+v", active, r)
		}
		if err := lab.SetLink(ctx, l.Name, node.Name, nic, true); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 30*time.Second, func() (bool, string) {
			out, err := l.Exec(ctx, node.Name, "cat", "/proc/net/bonding/bond0")
			return err == nil && strings.Count(string(out), "MII Status: up") == 3, fmt.Sprintf("bond0 members not all up again: %v\n%s", err, out)
		})
	})

	t.Run("network rm removes only the VLAN parents it made", func(t *testing.T) {
		removeService(t, ctx, l, svc)
		networkRm(t, ctx, l, "v40")
		for _, n := range l.Nodes {
			testenv.Eventually(t, 60*time.Second, func() (bool, string) {
				out, err := l.Exec(ctx, n.Name, "ip", "-o", "link", "show")
				has := strings.Contains(string(out), "bond0.40@bond0")
				return err == nil && has == (n.Name == "node1") && strings.Contains(string(out), "bond0:"),
					fmt.Sprintf("%s after rm: bond0.40 present %v (want %v), %v", n.Name, has, n.Name == "node1", err)
			})
		}
		// Its IPAM pool went with it: a network made again with the name
		// starts afresh.
		if pairs, _, err := mgr.Consul.KV().List(ipam.NetworkPrefix("v40"), nil); err != nil || len(pairs) != 0 {
			t.Errorf("KV under %s after network rm: %d keys (%v), want none", ipam.NetworkPrefix("v40"), len(pairs), err)
		}
	})

	t.Run("ipvlan network", func(t *testing.T) {
		name, isvc := "iv", "ipv"+l.Name
		// Dual stack: the ipvlan shim carries IPv6 too.
		l.CreateNetwork(name, "--driver", "ipvlan", "--ipvlan-mode", "l2", "--parent", "bond0.40", "--subnet", vmSubnet,
			"--gateway", l.Gateway.String(), "--ip-range", vmPrefix+"16.0/20", "--per-node-size", "16", "--ipv6-subnet", "fd00:40::/64")
		shim := netspec.ShimLinkName(name)
		for _, n := range l.Nodes {
			out := vmExec(t, ctx, l, n.Name, "ip", "-d", "-o", "link", "show", shim)
			if !strings.Contains(out, "ipvlan  mode l2") || !strings.Contains(out, "@bond0.40") {
				t.Errorf("%s: shim %s is not an ipvlan l2 on bond0.40:\n%s", n.Name, shim, out)
			}
		}
		createService(t, top, ctx, l, isvc, name)
		serviceIPs(t, ctx, l, isvc, name)
		ips := waitTasksAnswer(t, ctx, l, isvc, name)
		ips6, msg := taskIPsOf(ctx, l, isvc, name, true)
		if ips6 == nil {
			t.Fatal(msg)
		}
		for i, ip := range ips {
			// The node reaches its own container through the ipvlan shim.
			out := vmExec(t, ctx, l, l.Nodes[i].Name, "curl", "-sS", "-m", "5", "http://"+ip+":8080/")
			if !strings.Contains(out, ip) {
				t.Errorf("%s to its own container %s: %s", l.Nodes[i].Name, ip, out)
			}
			// And at its IPv6 address, through the shim's IPv6 route (the
			// node has no other: nothing leaves it otherwise).
			if out := vmExec(t, ctx, l, l.Nodes[i].Name, "ip", "-6", "route", "get", ips6[i]); !strings.Contains(out, "dev "+shim) {
				t.Errorf("%s: route to its container %s: %s; want it through %s", l.Nodes[i].Name, ips6[i], out, shim)
				continue
			}
			if out := vmExec(t, ctx, l, l.Nodes[i].Name, "curl", "-sS", "-g", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", "http://["+ips6[i]+"]:8080/"); out != "200" {
				t.Errorf("%s to its own container [%s]:8080: %s, want 200", l.Nodes[i].Name, ips6[i], out)
			}
		}
		waitPassing(t, mgr.Consul, isvc, 3)
		doc := doctor(t, ctx, l, "node2")
		for check, want := range map[string]string{
			"kernel/8021q": "ok", "kernel/ipvlan": "ok", "kernel/bonding": "ok",
			"network/iv/vlan": "ok", "network/iv/bond": "ok", "network/iv/shim": "ok", "network/iv/route": "ok",
			"network/iv/shim-address6": "ok", "network/iv/route6": "ok", "containers/reachable": "ok",
		} {
			if got := doc[check].Status; got != want {
				t.Errorf("doctor %s: %q (%s), want %s", check, got, doc[check].Message, want)
			}
		}
		if r, ok := doc["network/iv/parent-promisc"]; ok {
			t.Errorf("doctor checks promiscuous mode for an ipvlan network: %+v", r)
		}
	})

	t.Run("down leaves nothing", func(t *testing.T) {
		if top.Failed() {
			l.LogAgentTails() // gone once the lab is down
		}
		netNS := labNetNS(t, l.Name)
		start := time.Now()
		if err := lab.Down(ctx, l.Name, testenv.TestLogger(t)); err != nil {
			t.Fatal(err)
		}
		t.Logf("VM lab down in %s", time.Since(start).Round(time.Millisecond))
		assertGone(t, l.Name)
		testenv.Eventually(t, 10*time.Second, func() (bool, string) {
			users := nsUsers(netNS)
			return len(users) == 0, fmt.Sprintf("the lab's network namespace %s is still held by %v", netNS, users)
		})
	})
}

// vmExec runs args in a node and returns its output, failing t on error.
func vmExec(t *testing.T, ctx context.Context, l *testenv.Lab, node string, args ...string) string {
	t.Helper()
	out, err := l.Exec(ctx, node, args...)
	if err != nil {
		t.Fatalf("%s on %s: %v\n%s", strings.Join(args, " "), node, err, out)
	}
	return string(out)
}

func hostKernel(t *testing.T) string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

var mtuRE = regexp.MustCompile(`mtu (\d+)`)

// checkVLANParent checks bond0.40 on node: VLAN 40 on bond0, up,
// promiscuous, bond0's MTU, and marked as the agent's when it made it.
func checkVLANParent(t *testing.T, ctx context.Context, l *testenv.Lab, node string, made bool) {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		out, err := l.Exec(ctx, node, "ip", "-d", "-o", "link", "show", "bond0.40")
		s := string(out)
		bond, _ := l.Exec(ctx, node, "ip", "-o", "link", "show", "bond0")
		mv, mb := mtuRE.FindStringSubmatch(s), mtuRE.FindStringSubmatch(string(bond))
		ok := err == nil && strings.Contains(s, "vlan protocol 802.1Q id 40") && strings.Contains(s, ",UP") &&
			strings.Contains(s, "PROMISC") && mv != nil && mb != nil && mv[1] == mb[1] &&
			strings.Contains(s, "alias underlay network v40") == made
		return ok, fmt.Sprintf("%s: bond0.40 (made by the agent: %v): %v\n%s\nbond0: %s", node, made, err, s, bond)
	})
}

// createService creates a 3-replica service of the test image on netName,
// one task per node, removed when top ends.
func createService(t, top *testing.T, ctx context.Context, l *testenv.Lab, name, netName string) {
	mgr := l.Nodes[0]
	t.Helper()
	replicas := uint64(3)
	_, err := mgr.Docker.ServiceCreate(ctx, swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: name},
		TaskTemplate: swarm.TaskSpec{
			ContainerSpec: &swarm.ContainerSpec{Image: testenv.TestImage,
				// "/" answers with the caller's address: every check run
				// changes the check's output, which the test watches.
				Env: []string{"SERVICE_CHECK_HTTP=/", "SERVICE_CHECK_INTERVAL=2s"}},
			Networks:  []swarm.NetworkAttachmentConfig{{Target: netName}},
			Placement: &swarm.Placement{MaxReplicas: 1},
		},
		Mode: swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &replicas}},
	}, swarm.ServiceCreateOptions{})
	if err != nil {
		t.Fatalf("create service %s: %v", name, err)
	}
	top.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := lab.GetStatus(ctx, l.Name); err == nil { // not gone with the lab
			mgr.Docker.ServiceRemove(ctx, name)
		}
	})
}

// serviceIPs waits for one running task of svc on every node and returns
// their addresses on netName, in node order.
func serviceIPs(t *testing.T, ctx context.Context, l *testenv.Lab, svc, netName string) []string {
	t.Helper()
	var ips []string
	testenv.Eventually(t, 3*time.Minute, func() (bool, string) {
		var msg string
		ips, msg = taskIPs(ctx, l, svc, netName)
		return ips != nil, msg
	})
	return ips
}

// taskIPs reads the address on netName of the running task of svc on
// every node, in node order; nil, and why, unless each node runs one.
func taskIPs(ctx context.Context, l *testenv.Lab, svc, netName string) ([]string, string) {
	return taskIPsOf(ctx, l, svc, netName, false)
}

// taskIPsOf is taskIPs, of the tasks' IPv6 addresses with v6.
func taskIPsOf(ctx context.Context, l *testenv.Lab, svc, netName string, v6 bool) ([]string, string) {
	ips := make([]string, len(l.Nodes))
	for i, n := range l.Nodes {
		cs, err := n.Docker.ContainerList(ctx, container.ListOptions{Filters: filters.NewArgs(
			filters.Arg("label", "com.docker.swarm.service.name="+svc), filters.Arg("status", "running"))})
		if err != nil || len(cs) != 1 {
			return nil, fmt.Sprintf("%s: %d running tasks of %s (%v), want 1", n.Name, len(cs), svc, err)
		}
		ep := cs[0].NetworkSettings.Networks[netName]
		if ep != nil && v6 {
			ips[i] = ep.GlobalIPv6Address
		} else if ep != nil {
			ips[i] = ep.IPAddress
		}
		if ips[i] == "" {
			return nil, fmt.Sprintf("%s: task of %s has no address (IPv6 %t) on %s", n.Name, svc, v6, netName)
		}
	}
	return ips, ""
}

// waitTasksAnswer waits until the running task of svc on every node
// answers on its address on netName from the root namespace, and returns
// those addresses in node order. The addresses are read again at each
// try: swarm may replace a task (a node slow under TCG misses its
// heartbeats), and its replacement has another address — one freed is
// handed out last.
func waitTasksAnswer(t *testing.T, ctx context.Context, l *testenv.Lab, svc, netName string) []string {
	t.Helper()
	var ips []string
	testenv.Eventually(t, 90*time.Second, func() (bool, string) {
		now, msg := taskIPs(ctx, l, svc, netName)
		if now == nil {
			return false, msg
		}
		for _, ip := range now {
			body, err := get("http://" + ip + ":8080/")
			if err != nil || !strings.Contains(body, ip) {
				return false, fmt.Sprintf("GET %s:8080 from the root namespace: %v %s", ip, err, body)
			}
		}
		ips = now
		return true, ""
	})
	return ips
}

// waitPassing waits until svc has n instances in the catalog, every check passing.
func waitPassing(t *testing.T, c *api.Client, svc string, n int) {
	t.Helper()
	testenv.Eventually(t, 90*time.Second, func() (bool, string) {
		entries, _, err := c.Health().Service(svc, "", true, nil)
		return err == nil && len(entries) == n, fmt.Sprintf("%d passing instances of %s (%v), want %d", len(entries), svc, err, n)
	})
}

// serviceChecks lists the IDs of the checks of svc's instances on the node
// whose agent c is.
func serviceChecks(t *testing.T, c *api.Client, svc string) []string {
	t.Helper()
	var ids []string
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		checks, err := c.Agent().Checks()
		ids = nil
		for id, ch := range checks {
			if ch.ServiceName == svc {
				ids = append(ids, id)
			}
		}
		return err == nil && len(ids) > 0, fmt.Sprintf("no checks of %s on the node (%v)", svc, err)
	})
	return ids
}

func checkOutputs(t *testing.T, c *api.Client, ids []string) map[string]string {
	t.Helper()
	checks, err := c.Agent().Checks()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, id := range ids {
		if ch := checks[id]; ch != nil {
			out[id] = ch.Output
		}
	}
	return out
}

// checkRan waits until every check's output differs from before (each
// run of an HTTP check on "/" answers with a new client port) and returns
// the new outputs.
func checkRan(t *testing.T, c *api.Client, ids []string, before map[string]string) map[string]string {
	t.Helper()
	var now map[string]string
	testenv.Eventually(t, 60*time.Second, func() (bool, string) {
		now = checkOutputs(t, c, ids)
		for _, id := range ids {
			out, ok := now[id]
			if !ok {
				// Say what the agent has instead: a check re-registered
				// under another ID, or none.
				checks, err := c.Agent().Checks()
				var have []string
				for hid, ch := range checks {
					have = append(have, fmt.Sprintf("%s (%s, %s: %q)", hid, ch.ServiceName, ch.Status, ch.Output))
				}
				slices.Sort(have)
				return false, fmt.Sprintf("check %s is gone from the node's agent (%v); it has:\n%s", id, err, strings.Join(have, "\n"))
			}
			if out == before[id] {
				return false, fmt.Sprintf("check %s has not run again: output %q", id, out)
			}
		}
		return true, ""
	})
	return now
}

// flapWatch records every moment Consul showed svc with other than n
// passing instances, or a member not alive.
type flapWatch struct {
	mu     sync.Mutex
	flaps  []string
	cancel context.CancelFunc
	done   sync.WaitGroup
}

func watchFlaps(ctx context.Context, c *api.Client, svc string, n int) *flapWatch {
	ctx, cancel := context.WithCancel(ctx)
	w := &flapWatch{cancel: cancel}
	note := func(format string, args ...any) {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.flaps = append(w.flaps, time.Now().Format("15:04:05.000 ")+fmt.Sprintf(format, args...))
	}
	w.done.Add(2)
	go func() {
		defer w.done.Done()
		var index uint64
		for ctx.Err() == nil {
			entries, meta, err := c.Health().Service(svc, "", false, (&api.QueryOptions{WaitIndex: index, WaitTime: 5 * time.Second}).WithContext(ctx))
			if err != nil {
				continue
			}
			index = meta.LastIndex
			passing := 0
			var failing []string
			for _, e := range entries {
				if e.Checks.AggregatedStatus() == api.HealthPassing {
					passing++
					continue
				}
				// Which instance, on which node, and what its checks said:
				// a flap on another node than the one failing over is
				// that node's own trouble (a QEMU/TCG guest stalled).
				for _, c := range e.Checks {
					if c.Status != api.HealthPassing {
						failing = append(failing, fmt.Sprintf("%s on %s: check %q %s: %s", e.Service.ID, e.Node.Node, c.Name, c.Status, strings.TrimSpace(c.Output)))
					}
				}
			}
			if len(entries) != n || passing != n {
				note("%s: %d instances, %d passing %v", svc, len(entries), passing, failing)
			}
		}
	}()
	go func() {
		defer w.done.Done()
		for ctx.Err() == nil {
			if ms, err := c.Agent().Members(false); err == nil {
				for _, m := range ms {
					if m.Status != 1 {
						note("member %s status %d", m.Name, m.Status)
					}
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(250 * time.Millisecond):
			}
		}
	}()
	return w
}

func (w *flapWatch) stop() []string {
	w.cancel()
	w.done.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.flaps
}

var activeRE = regexp.MustCompile(`Currently Active Slave: (\S+)`)

func bondActive(ctx context.Context, l *testenv.Lab, node string) (string, error) {
	out, err := l.Exec(ctx, node, "cat", "/proc/net/bonding/bond0")
	if err != nil {
		return "", fmt.Errorf("%v: %s", err, out)
	}
	m := activeRE.FindStringSubmatch(string(out))
	if m == nil {
		return "", fmt.Errorf("no active member in:\n%s", out)
	}
	return m[1], nil
}

func activeSlave(t *testing.T, ctx context.Context, l *testenv.Lab, node string) string {
	t.Helper()
	a, err := bondActive(ctx, l, node)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

type doctorResult struct {
	Check, Status, Message, Fix string
}

// doctor runs `underlay doctor --json` in node and indexes its results by check.
func doctor(t *testing.T, ctx context.Context, l *testenv.Lab, node string) map[string]doctorResult {
	t.Helper()
	cmd, err := lab.Command(ctx, l.Name, node, l.UnderlayBin, "doctor", "--json")
	if err != nil {
		t.Fatal(err)
	}
	out, _ := cmd.Output() // exit status 1 when a check fails
	var rs []doctorResult
	if err := json.Unmarshal(out, &rs); err != nil {
		t.Fatalf("doctor on %s: %v\n%s", node, err, out)
	}
	m := map[string]doctorResult{}
	for _, r := range rs {
		m[r.Check] = r
	}
	return m
}

// removeService removes svc and waits until no node runs a task of it.
func removeService(t *testing.T, ctx context.Context, l *testenv.Lab, svc string) {
	t.Helper()
	if err := l.Nodes[0].Docker.ServiceRemove(ctx, svc); err != nil {
		t.Fatalf("remove service %s: %v", svc, err)
	}
	for _, n := range l.Nodes {
		testenv.Eventually(t, 60*time.Second, func() (bool, string) {
			cs, err := n.Docker.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", "com.docker.swarm.service.name="+svc))})
			return err == nil && len(cs) == 0, fmt.Sprintf("%s: %d containers of %s left (%v)", n.Name, len(cs), svc, err)
		})
	}
}

// networkRm runs `underlay network rm` against node1.
func networkRm(t *testing.T, ctx context.Context, l *testenv.Lab, name string) {
	t.Helper()
	m := l.Nodes[0]
	cmd := exec.CommandContext(ctx, testenv.UnderlayBinary(t), "network", "rm", name, "--consul-addr", m.ConsulAddr)
	cmd.Env = append(os.Environ(), "DOCKER_HOST="+m.DockerHost)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("underlay network rm %s: %v\n%s", name, err, out)
	}
}

// labNetNS names the network namespace of the lab's network holder.
func labNetNS(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(lab.DefaultStateRoot, name, "net", "holder.pid"))
	if err != nil {
		t.Fatal(err)
	}
	ns, err := os.Readlink("/proc/" + strings.TrimSpace(string(b)) + "/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// nsUsers lists the processes in network namespace ns.
func nsUsers(ns string) []int {
	paths, _ := filepath.Glob("/proc/[0-9]*/ns/net")
	var out []int
	for _, p := range paths {
		if l, err := os.Readlink(p); err == nil && l == ns {
			pid, _ := strconv.Atoi(strings.Split(p, "/")[2])
			out = append(out, pid)
		}
	}
	return out
}
