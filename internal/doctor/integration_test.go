package doctor_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"
	"github.com/hashicorp/consul/api"

	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/doctor"
	"github.com/underlay/underlay/internal/inventory"
	"github.com/underlay/underlay/internal/lab"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/testenv"
)

// TestIntegrationDoctor runs `underlay doctor` inside lab nodes: on a
// healthy node with a network and a task every check passes; on a node
// whose agent is stopped (so nothing repairs drift), each thing broken on
// purpose fails its own check, with a fix.
func TestIntegrationDoctor(t *testing.T) {
	testenv.Require(t)
	bin := testenv.UnderlayBinary(t)
	if out, err := exec.Command(bin, "doctor", "--help").CombinedOutput(); err != nil {
		t.Fatalf("%s has no doctor command (build one whose app.go registers newDoctorCommand): %v %s", bin, err, out)
	}
	l := testenv.StartLab(t, lab.Config{Nodes: 2, UnderlaySubnet: "10.204.0.0/16", UnderlayBin: bin})
	m, n2 := l.Nodes[0], l.Nodes[1]
	ctx := testenv.Context(t, 4*time.Minute)
	st := netspec.NewStore(consul.NewKV(m.Consul))
	name := "lan"

	// Dual stack: the shim's IPv6 address and route are checked too, and
	// each task probed at both its addresses.
	l.CreateNetwork(name, "--subnet", l.Subnet.String(), "--gateway", l.Gateway.String(), "--parent", "eth1", "--per-node-size", "32",
		"--ipv6-subnet", "fd00:204::/64")
	list, err := st.NodeStates(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]netspec.NodeState{}
	for _, s := range list {
		states[s.Node] = s
	}
	// One task per node, so that the containers check has something to reach.
	replicas, one := uint64(2), uint64(1)
	if _, err := m.Docker.ServiceCreate(ctx, swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: "doc"},
		TaskTemplate: swarm.TaskSpec{
			ContainerSpec: &swarm.ContainerSpec{Image: testenv.TestImage},
			Networks:      []swarm.NetworkAttachmentConfig{{Target: name}},
			Placement:     &swarm.Placement{MaxReplicas: one},
		},
		Mode: swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &replicas}},
	}, swarm.ServiceCreateOptions{}); err != nil {
		t.Fatal(err)
	}
	taskIP := map[string]netip.Addr{}
	testenv.Eventually(t, 90*time.Second, func() (bool, string) {
		for _, n := range l.Nodes {
			if ip, ok := runningTaskIP(ctx, n.Docker, "doc"); ok {
				taskIP[n.Name] = ip
			}
		}
		return len(taskIP) == 2, fmt.Sprintf("tasks running on %d nodes, want 2", len(taskIP))
	})

	// A healthy node: every check passes.
	rs, code := runDoctor(t, ctx, l, bin, m.Name)
	for _, r := range rs {
		if r.Node != m.Host {
			t.Errorf("result for node %q, want %q: %+v", r.Node, m.Host, r)
		}
		if r.Status != doctor.OK {
			t.Errorf("healthy %s: %s %s: %s (fix: %s)", m.Name, r.Check, r.Status, r.Message, r.Fix)
		}
	}
	if code != 0 {
		t.Errorf("doctor on healthy %s exits %d", m.Name, code)
	}
	for _, c := range []string{"kernel/macvlan", "network/lan/parent-promisc", "network/lan/shim", "network/lan/route", "network/lan/shim-address6", "network/lan/route6",
		"inventory/documents", "netfilter/bridge-forward", "docker/version", "docker/swarm", "docker/plugin-dir", "consul/agent", "consul/clock-skew"} {
		find(t, rs, c, doctor.OK)
	}
	// A published inventory that cannot be read (underlay ips and the
	// dashboard skip it) fails, with the command that removes it.
	stray := inventory.KVPrefix + "stray"
	if _, err := m.Consul.KV().Put(&api.KVPair{Key: stray, Value: []byte("{")}, nil); err != nil {
		t.Fatal(err)
	}
	rs, code = runDoctor(t, ctx, l, bin, m.Name)
	if r := find(t, rs, "inventory/documents", doctor.Fail); r.Fix != "consul kv delete "+stray || !strings.Contains(r.Message, stray) || code == 0 {
		t.Errorf("a stray inventory: %s (fix %q), exit %d; want it named, with consul kv delete %s, and exit 1", r.Message, r.Fix, code, stray)
	}
	if _, err := m.Consul.KV().Delete(stray, nil); err != nil {
		t.Fatal(err)
	}
	if r := find(t, rs, "containers/reachable", doctor.OK); !strings.Contains(r.Message, "1 container(s)") {
		t.Errorf("containers check did not reach the local task: %s", r.Message)
	}
	// On the manager the services check counted doc's tasks against its
	// replicas.
	if r := find(t, rs, "swarm/services", doctor.OK); !strings.Contains(r.Message, "1 replicated service(s), none") {
		t.Errorf("services check on the manager: %s", r.Message)
	}
	if r := find(t, rs, "swarm/managers", doctor.OK); !strings.Contains(r.Message, "1 manager (") {
		t.Errorf("managers check on the manager: %s", r.Message)
	}

	// Two managers survive the loss of none: the check warns, naming the
	// fix; demoted again, node2 leaves one.
	setRole(t, ctx, l, n2, swarm.NodeRoleManager, 2)
	rs, _ = runDoctor(t, ctx, l, bin, m.Name)
	if r := find(t, rs, "swarm/managers", doctor.Warn); !strings.Contains(r.Message, "2 managers (leader ") || !strings.HasPrefix(r.Fix, "docker node promote WORKER") {
		t.Errorf("two managers: %s (fix %s)", r.Message, r.Fix)
	}
	setRole(t, ctx, l, n2, swarm.NodeRoleWorker, 1)

	// node2 with its agent stopped, so that nothing repairs what we break.
	if out, err := l.Exec(ctx, n2.Name, "pkill", "-f", "underlay agent"); err != nil {
		t.Fatalf("stop the agent on %s: %v %s", n2.Name, err, out)
	}
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		out, err := l.Exec(ctx, n2.Name, "pgrep", "-f", "underlay agent")
		return err != nil, "agent still running: " + string(out)
	})
	s2 := states[n2.Host]
	shim, rng := s2.ShimLink, s2.Range.String()
	// broken runs cmd inside node2 (none: nothing more to break), runs the
	// doctor there and wants each check of want ({check, part of its fix})
	// failed with that fix, and a non-zero exit status.
	broken := func(what string, want [][2]string, cmd ...string) {
		t.Helper()
		if len(cmd) > 0 {
			if out, err := l.Exec(ctx, n2.Name, cmd...); err != nil {
				t.Fatalf("%s: %v %s", what, err, out)
			}
		}
		rs, code := runDoctor(t, ctx, l, bin, n2.Name)
		for _, w := range want {
			if r := find(t, rs, w[0], doctor.Fail); !strings.Contains(r.Fix, w[1]) {
				t.Errorf("%s: %s fix %q, want it to contain %q", what, w[0], r.Fix, w[1])
			}
		}
		if code == 0 {
			t.Errorf("%s: doctor exits 0 with a failed check", what)
		}
	}
	// The IPv6 route gone: its check fails, and the task's IPv6 address
	// is not reached (the node has no other route to it). The fix given
	// puts it back.
	fix6 := "ip -6 route add " + s2.Range6.String() + " dev " + shim + " metric 1"
	broken("IPv6 route deleted", [][2]string{{"network/lan/route6", fix6}, {"containers/reachable", "ip -6 route get fd00:204:"}},
		"ip", "-6", "route", "del", s2.Range6.String(), "dev", shim)
	if out, err := l.Exec(ctx, n2.Name, "sh", "-c", fix6); err != nil {
		t.Fatalf("%s: %v %s", fix6, err, out)
	}
	broken("route deleted", [][2]string{{"network/lan/route", "ip route add " + rng + " dev " + shim}},
		"ip", "route", "del", rng, "dev", shim)
	broken("task unreachable", [][2]string{{"containers/reachable", "ip route get " + taskIP[n2.Name].String()}},
		"ip", "route", "add", "prohibit", taskIP[n2.Name].String()+"/32")
	if out, err := l.Exec(ctx, n2.Name, "ip", "route", "del", "prohibit", taskIP[n2.Name].String()+"/32"); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	broken("shim deleted", [][2]string{{"network/lan/shim", "ip link add " + shim + " link eth1 type macvlan mode bridge"}},
		"ip", "link", "del", shim)
	// The parent stays promiscuous in the kernel while any macvlan child
	// (the task's endpoint) needs it: remove the task first.
	if err := m.Docker.ServiceRemove(ctx, "doc"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		_, running := runningTaskIP(ctx, n2.Docker, "doc")
		return !running, "task still running on " + n2.Name
	})
	broken("parent not promiscuous", [][2]string{{"network/lan/parent-promisc", "ip link set eth1 promisc on"}},
		"ip", "link", "set", "eth1", "promisc", "off")

	// A network whose parent is a VLAN sub-interface, in KV only.
	vlan := netspec.Spec{Name: "tagged", Subnet: netip.MustParsePrefix("192.0.2.0/24"), Gateway: netip.MustParseAddr("192.0.2.1"),
		Parent: "eth1.42", IPAM: netspec.PerNode, PerNodeSize: 64}
	if err := st.Create(ctx, vlan); err != nil {
		t.Fatal(err)
	}
	want := [][2]string{{"network/tagged/parent", "ip link add link eth1 name eth1.42 type vlan id 42"}}
	if _, err := os.Stat("/proc/net/vlan"); err == nil {
		t.Log("this kernel has 802.1q: only the missing eth1.42 is checked")
	} else {
		want = append(want, [2]string{"network/tagged/vlan", "modprobe 8021q"})
	}
	broken("VLAN parent eth1.42", want)

	// The bridge-netfilter/FORWARD trap is a warning: the exit status stays
	// as the failures above make it.
	if out, err := l.Exec(ctx, n2.Name, "sh", "-c", "echo 1 > /proc/sys/net/bridge/bridge-nf-call-iptables && iptables -P FORWARD DROP"); err != nil {
		t.Fatalf("set the FORWARD trap: %v %s", err, out)
	}
	rs, _ = runDoctor(t, ctx, l, bin, n2.Name)
	r := find(t, rs, "netfilter/bridge-forward", doctor.Warn)
	fix, _, _ := strings.Cut(r.Fix, "   #")
	if !strings.HasPrefix(fix, "iptables-nft -I FORWARD") {
		t.Fatalf("FORWARD trap fix %q", r.Fix)
	}
	// Its fix, applied, clears it.
	if out, err := l.Exec(ctx, n2.Name, "sh", "-c", fix); err != nil {
		t.Fatalf("apply %q: %v %s", fix, err, out)
	}
	rs, _ = runDoctor(t, ctx, l, bin, n2.Name)
	find(t, rs, "netfilter/bridge-forward", doctor.OK)

	// Docker and Consul down.
	if err := lab.KillDockerd(l.Name, n2.Name); err != nil {
		t.Fatal(err)
	}
	if out, err := l.Exec(ctx, n2.Name, "pkill", "-f", "consul agent"); err != nil {
		t.Fatalf("stop consul on %s: %v %s", n2.Name, err, out)
	}
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		out, err := l.Exec(ctx, n2.Name, "pgrep", "-f", "consul agent")
		return err != nil, "consul still running: " + string(out)
	})
	broken("dockerd and consul down", [][2]string{
		{"docker/daemon", "systemctl start docker"},
		{"consul/agent", "systemctl start consul"},
		{"network/specs", "consul members"},
	})
}

// setRole makes node n of l a manager or a worker, through the lab's
// first node, and waits until that node lists the given number of
// managers, all reachable, and n's own daemon agrees on its role.
func setRole(t *testing.T, ctx context.Context, l *testenv.Lab, n *testenv.LabNode, role swarm.NodeRole, managers int) {
	t.Helper()
	info, err := n.Docker.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d := l.Nodes[0].Docker
	node, _, err := d.NodeInspectWithRaw(ctx, info.Swarm.NodeID)
	if err != nil {
		t.Fatal(err)
	}
	node.Spec.Role = role
	if err := d.NodeUpdate(ctx, node.ID, node.Version, node.Spec); err != nil {
		t.Fatalf("make %s a %s: %v", n.Name, role, err)
	}
	testenv.Eventually(t, 60*time.Second, func() (bool, string) {
		list, err := d.NodeList(ctx, swarm.NodeListOptions{Filters: filters.NewArgs(filters.Arg("role", "manager"))})
		if err != nil {
			return false, err.Error()
		}
		reachable := 0
		for _, m := range list {
			if m.ManagerStatus != nil && m.ManagerStatus.Reachability == swarm.ReachabilityReachable {
				reachable++
			}
		}
		info, err := n.Docker.Info(ctx)
		if err != nil {
			return false, err.Error()
		}
		return len(list) == managers && reachable == managers && info.Swarm.ControlAvailable == (role == swarm.NodeRoleManager),
			fmt.Sprintf("%d managers, %d reachable, want %d; %s a manager: %v", len(list), reachable, managers, n.Name, info.Swarm.ControlAvailable)
	})
}

// runDoctor runs `underlay doctor --json` inside node and returns its
// results and exit code.
func runDoctor(t *testing.T, ctx context.Context, l *testenv.Lab, bin, node string) ([]doctor.Result, int) {
	t.Helper()
	cmd, err := lab.Command(ctx, l.Name, node, bin, "doctor", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	code := 0
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("doctor on %s: %v", node, err)
		}
		code = ee.ExitCode()
	}
	var rs []doctor.Result
	if err := json.Unmarshal(out.Bytes(), &rs); err != nil {
		t.Fatalf("doctor on %s: %v\nstdout: %s\nstderr: %s", node, err, out.String(), errOut.String())
	}
	var table bytes.Buffer
	doctor.WriteTable(&table, rs)
	t.Logf("doctor on %s (exit %d):\n%s", node, code, table.String())
	return rs, code
}

// find returns the result of check, failing t unless it has status want.
func find(t *testing.T, rs []doctor.Result, check string, want doctor.Status) doctor.Result {
	t.Helper()
	for _, r := range rs {
		if r.Check == check {
			if r.Status != want {
				t.Errorf("%s is %s (%s), want %s", check, r.Status, r.Message, want)
			}
			return r
		}
	}
	t.Errorf("no %s result", check)
	return doctor.Result{}
}

// runningTaskIP returns the address of service's running task on a node.
func runningTaskIP(ctx context.Context, d *client.Client, service string) (netip.Addr, bool) {
	list, err := d.ContainerList(ctx, container.ListOptions{
		Filters: filters.NewArgs(filters.Arg("label", "com.docker.swarm.service.name="+service)),
	})
	if err != nil {
		return netip.Addr{}, false
	}
	for _, c := range list {
		for _, ep := range c.NetworkSettings.Networks {
			if ip, err := netip.ParseAddr(ep.IPAddress); err == nil {
				return ip, true
			}
		}
	}
	return netip.Addr{}, false
}
