package lab_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"

	"github.com/underlay/underlay/internal/lab"
	"github.com/underlay/underlay/internal/testenv"
)

// TestIntegrationLab is the lab's acceptance test: a 3-node swarm with a
// swarm-scoped macvlan network (config-only per node + config-from), a
// replicated service with one task per node that the root namespace reaches
// by underlay IP, Consul clusters, repair of a killed dockerd, and a Down
// that leaves nothing behind.
func TestIntegrationLab(t *testing.T) {
	testenv.Require(t)
	testenv.Docker(t) // the machine's dockerd holds the test image
	ctx := testenv.Context(t, 4*time.Minute)
	subnet, prefix := labSubnet(t)

	start := time.Now()
	l := testenv.StartLab(t, lab.Config{Nodes: 3, UnderlaySubnet: subnet})
	t.Logf("lab %s up in %s", l.Name, time.Since(start).Round(time.Millisecond))
	if len(l.Nodes) != 3 {
		t.Fatalf("lab has %d nodes, want 3", len(l.Nodes))
	}
	holders := holderPIDs(t, ctx, l.Name)

	t.Run("second up changes nothing", func(t *testing.T) {
		if err := lab.Up(ctx, lab.Config{Name: l.Name, Nodes: 3, UnderlaySubnet: subnet, UnderlayBin: testenv.UnderlayBinary(t)}, testenv.TestLogger(t)); err != nil {
			t.Fatal(err)
		}
		if got := holderPIDs(t, ctx, l.Name); fmt.Sprint(got) != fmt.Sprint(holders) {
			t.Errorf("holders changed: %v, were %v", got, holders)
		}
	})

	t.Run("consul", func(t *testing.T) {
		for _, n := range l.Nodes {
			testenv.Eventually(t, 30*time.Second, func() (bool, string) {
				ms, err := n.Consul.Agent().Members(false)
				if err != nil {
					return false, err.Error()
				}
				alive := 0
				for _, m := range ms {
					if m.Status == 1 {
						alive++
					}
				}
				return alive == 3, fmt.Sprintf("%s sees %d alive members, want 3", n.Name, alive)
			})
		}
		out, err := l.Exec(ctx, "node2", "consul", "members")
		if err != nil || strings.Count(string(out), "alive") != 3 {
			t.Errorf("consul members inside node2 (127.0.0.1:8500): %v\n%s", err, out)
		}
	})

	t.Run("subnet in use", func(t *testing.T) {
		other := "o" + testenv.ID(t)
		err := lab.Up(ctx, lab.Config{Name: other, Nodes: 1, UnderlaySubnet: subnet, NoAgent: true}, testenv.TestLogger(t))
		if err == nil || !strings.Contains(err.Error(), "overlaps") {
			t.Errorf("second lab on %s: %v, want an overlap error", subnet, err)
		}
		assertGone(t, other)
	})

	svc := "web" + l.Name
	var taskContainers []string
	t.Run("macvlan service on every node", func(t *testing.T) {
		netName := "ul" + l.Name
		for i, n := range l.Nodes {
			_, err := n.Docker.NetworkCreate(ctx, netName+"-cfg", network.CreateOptions{
				ConfigOnly: true,
				Options:    map[string]string{"parent": "eth1"},
				IPAM: &network.IPAM{Config: []network.IPAMConfig{{
					Subnet: subnet, IPRange: fmt.Sprintf("%s%d.0/24", prefix, i+1), Gateway: l.Gateway.String(),
				}}},
			})
			if err != nil {
				t.Fatalf("%s: config-only network: %v", n.Name, err)
			}
		}
		mgr := l.Nodes[0].Docker
		if _, err := mgr.NetworkCreate(ctx, netName, network.CreateOptions{
			Driver: "macvlan", Scope: "swarm", ConfigFrom: &network.ConfigReference{Network: netName + "-cfg"},
		}); err != nil {
			t.Fatalf("swarm macvlan network: %v", err)
		}
		replicas := uint64(3)
		if _, err := mgr.ServiceCreate(ctx, swarm.ServiceSpec{
			Annotations: swarm.Annotations{Name: svc},
			TaskTemplate: swarm.TaskSpec{
				ContainerSpec: &swarm.ContainerSpec{Image: testenv.TestImage},
				Networks:      []swarm.NetworkAttachmentConfig{{Target: netName}},
				Placement:     &swarm.Placement{MaxReplicas: 1},
			},
			Mode: swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &replicas}},
		}, swarm.ServiceCreateOptions{}); err != nil {
			t.Fatalf("create service: %v", err)
		}
		testenv.Eventually(t, 90*time.Second, func() (bool, string) {
			tasks, err := mgr.TaskList(ctx, swarm.TaskListOptions{Filters: filters.NewArgs(
				filters.Arg("service", svc), filters.Arg("desired-state", "running"))})
			if err != nil {
				return false, err.Error()
			}
			nodes := map[string]bool{}
			for _, tk := range tasks {
				if tk.Status.State == swarm.TaskStateRunning {
					nodes[tk.NodeID] = true
				}
			}
			return len(nodes) == 3, fmt.Sprintf("tasks running on %d nodes, want 3", len(nodes))
		})
		// Every task's container, found on its own node, answers the root
		// namespace on its underlay IP.
		for _, n := range l.Nodes {
			cs, err := n.Docker.ContainerList(ctx, container.ListOptions{Filters: filters.NewArgs(filters.Arg("label", "com.docker.swarm.service.name="+svc))})
			if err != nil || len(cs) != 1 {
				t.Fatalf("%s: %d task containers (%v), want 1", n.Name, len(cs), err)
			}
			taskContainers = append(taskContainers, cs[0].ID)
			ip := cs[0].NetworkSettings.Networks[netName].IPAddress
			if !strings.HasPrefix(ip, prefix) {
				t.Fatalf("%s: task IP %q not in %s", n.Name, ip, subnet)
			}
			testenv.Eventually(t, 30*time.Second, func() (bool, string) {
				body, err := get("http://" + ip + ":8080/")
				return err == nil && strings.Contains(body, ip), fmt.Sprintf("GET %s:8080 from the root namespace: %v %s", ip, err, body)
			})
		}
	})

	t.Run("agents register the tasks", func(t *testing.T) {
		testenv.Eventually(t, 60*time.Second, func() (bool, string) {
			entries, _, err := l.Nodes[0].Consul.Catalog().Service(svc, "", nil)
			return err == nil && len(entries) == 3, fmt.Sprintf("%d catalog entries for %s (%v), want 3", len(entries), svc, err)
		})
	})

	t.Run("killed dockerd is reported and restored", func(t *testing.T) {
		if err := lab.KillDockerd(l.Name, "node3"); err != nil {
			t.Fatal(err)
		}
		st, err := lab.GetStatus(ctx, l.Name)
		if err != nil {
			t.Fatal(err)
		}
		if n := st.Nodes[2]; n.State != lab.StateDegraded || !strings.Contains(strings.Join(n.Problems, ","), "dockerd") {
			t.Fatalf("status of node3 after kill: %s %v, want degraded with dockerd", n.State, n.Problems)
		}
		if err := lab.Up(ctx, lab.Config{Name: l.Name, Nodes: 3, UnderlaySubnet: subnet, UnderlayBin: testenv.UnderlayBinary(t)}, testenv.TestLogger(t)); err != nil {
			t.Fatal(err)
		}
		st, err = lab.GetStatus(ctx, l.Name)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range st.Nodes {
			if n.State != lab.StateRunning {
				t.Errorf("%s after up: %s %v", n.Name, n.State, n.Problems)
			}
		}
		info, err := l.Nodes[2].Docker.Info(ctx)
		if err != nil || info.Swarm.LocalNodeState != swarm.LocalNodeStateActive {
			t.Errorf("node3 after up: swarm %q, %v", info.Swarm.LocalNodeState, err)
		}
	})

	t.Run("down leaves nothing", func(t *testing.T) {
		start := time.Now()
		if err := lab.Down(ctx, l.Name, testenv.TestLogger(t)); err != nil {
			t.Fatal(err)
		}
		t.Logf("lab down in %s", time.Since(start).Round(time.Millisecond))
		assertGone(t, l.Name)
		for _, id := range taskContainers {
			if m, _ := filepath.Glob("/sys/fs/cgroup/*/docker/" + id); len(m) > 0 {
				t.Errorf("cgroups of task container %s left: %v", id[:12], m)
			}
		}
		if err := lab.Down(ctx, l.Name, testenv.TestLogger(t)); err != nil {
			t.Errorf("second down: %v", err)
		}
	})
}

// TestIntegrationLabBadInput: bad configs fail with an error naming the
// value, and create nothing.
func TestIntegrationLabBadInput(t *testing.T) {
	testenv.Require(t)
	ctx := testenv.Context(t, time.Minute)
	name := "b" + testenv.ID(t)
	for _, tc := range []struct {
		cfg  lab.Config
		want string
	}{
		{lab.Config{Nodes: 21, NoAgent: true}, "--nodes 21"},
		{lab.Config{Nodes: 2, Managers: 3, NoAgent: true}, "--managers 3"},
		{lab.Config{Nodes: 3, UnderlaySubnet: "10.200.0.1/16", NoAgent: true}, "10.200.0.1/16"},
		{lab.Config{Nodes: 3, UnderlaySubnet: "fd00::/64", NoAgent: true}, "fd00::/64"},
		{lab.Config{Nodes: 3, UnderlayBin: "/nonexistent/underlay"}, "/nonexistent/underlay"},
	} {
		tc.cfg.Name = name
		err := lab.Up(ctx, tc.cfg, testenv.TestLogger(t))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Up(%+v) = %v, want an error naming %q", tc.cfg, err, tc.want)
		}
		assertGone(t, name)
	}
	if err := lab.Up(ctx, lab.Config{Name: "Bad/Name", NoAgent: true}, testenv.TestLogger(t)); err == nil || !strings.Contains(err.Error(), "Bad/Name") {
		t.Errorf("Up with a bad name = %v", err)
	}
	if _, err := lab.GetStatus(ctx, name); err == nil {
		t.Errorf("status of a lab that does not exist: no error")
	}
	if err := lab.Down(ctx, name, testenv.TestLogger(t)); err != nil {
		t.Errorf("down of a lab that does not exist: %v", err)
	}
}

// assertGone checks, kind by kind and without the lab package's own
// listing, that nothing of lab name is left.
func assertGone(t *testing.T, name string) {
	t.Helper()
	dir := filepath.Join(lab.DefaultStateRoot, name)
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		if s := strings.ReplaceAll(string(b), "\x00", " "); strings.Contains(s, dir+"/") || strings.Contains(s, "underlay-lab-holder") && strings.Contains(s, dir) {
			t.Errorf("process left: %s: %s", p, s)
		}
	}
	links, err := exec.Command("ip", "-o", "link", "show").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range linksLeft(string(links), name) {
		t.Errorf("link left: %s", line)
	}
	for _, tool := range []string{"iptables", "ip6tables"} {
		out, _ := exec.Command(tool, "-w", "-S", "FORWARD").Output()
		if strings.Contains(string(out), "underlay-lab-"+name+" ") {
			t.Errorf("%s rule left:\n%s", tool, out)
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mounts), dir) {
		t.Errorf("mount left under %s", dir)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("state directory %s left", dir)
	}
}

// linksLeft are the lines of `ip -o link show` ("7: ul-NAME-m1@if2: <…")
// of a link named as one of lab name's (lab.OwnLinkNames), exactly: a
// user's ul-NAME-foo is not the lab's.
func linksLeft(listing, name string) []string {
	own := lab.OwnLinkNames(name)
	var out []string
	for _, line := range strings.Split(listing, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		link, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		if slices.Contains(own, link) {
			out = append(out, line)
		}
	}
	return out
}

// TestLinksLeft: assertGone takes for the lab's only the links the lab
// makes, by their exact names: a user's ul-NAME-foo, or ul-NAME-m1x, is
// not left behind by the lab; the lab's bridges and veths are, whether
// listed with a peer (@if2) or not. A unit test: it reads a listing.
func TestLinksLeft(t *testing.T) {
	listing := `1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000\    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00
5: ul-t1-m: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default qlen 1000\    link/ether 02:42:ac:11:00:02 brd ff:ff:ff:ff:ff:ff
6: ul-t1-u: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default qlen 1000\    link/ether 02:42:ac:11:00:03 brd ff:ff:ff:ff:ff:ff
7: ul-t1-m1@if2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue master ul-t1-m state UP mode DEFAULT group default qlen 1000\    link/ether 02:42:ac:11:00:04 brd ff:ff:ff:ff:ff:ff link-netnsid 0
8: ul-t1-ua@if2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue master ul-t1-u state UP mode DEFAULT group default qlen 1000\    link/ether 02:42:ac:11:00:05 brd ff:ff:ff:ff:ff:ff link-netnsid 1
9: ul-t1-foo: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default qlen 1000\    link/ether 02:42:ac:11:00:06 brd ff:ff:ff:ff:ff:ff
10: ul-t1-m1x@if3: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default qlen 1000\    link/ether 02:42:ac:11:00:07 brd ff:ff:ff:ff:ff:ff link-netnsid 2
11: ul-t12-m: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default qlen 1000\    link/ether 02:42:ac:11:00:08 brd ff:ff:ff:ff:ff:ff
12: eth0@if13: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue master ul-t1-u state UP mode DEFAULT group default qlen 1000\    link/ether 02:42:ac:11:00:09 brd ff:ff:ff:ff:ff:ff link-netnsid 3
`
	var got []string
	for _, line := range linksLeft(listing, "t1") {
		got = append(got, strings.Fields(line)[1])
	}
	want := []string{"ul-t1-m:", "ul-t1-u:", "ul-t1-m1@if2:", "ul-t1-ua@if2:"}
	if !slices.Equal(got, want) {
		t.Errorf("links of lab t1 left: %q, want %q", got, want)
	}
}

// holderPIDs returns the pids of the lab's namespace holders.
func holderPIDs(t *testing.T, ctx context.Context, name string) []int {
	t.Helper()
	st, err := lab.GetStatus(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, n := range st.Nodes {
		if n.HolderPID == 0 {
			t.Fatalf("%s has no namespace holder", n.Name)
		}
		out = append(out, n.HolderPID)
	}
	return out
}

// labSubnet is this package's underlay /16: each package that starts labs
// has its own (DEVELOPERS.md lists them), since packages run in parallel.
func labSubnet(t *testing.T) (subnet, prefix string) {
	return "10.201.0.0/16", "10.201."
}

func get(url string) (string, error) {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}
