package testenv

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
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
	"github.com/docker/docker/client"
	"github.com/hashicorp/consul/api"

	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/dockerhost"
	"github.com/underlay/underlay/internal/lab"
	"github.com/underlay/underlay/internal/netspec"
)

// Lab is a running `underlay lab` for a test: a multi-node swarm with a
// Consul agent per node and a macvlan underlay whose gateway is held by the
// root namespace (the test process), which so reaches every container.
type Lab struct {
	t       testing.TB
	cfg     lab.Config
	Name    string
	Subnet  netip.Prefix // underlay subnet
	Gateway netip.Addr   // underlay gateway, held by the root namespace (by the lab's namespace for VM nodes)
	Nodes   []*LabNode
	// UnderlayBin is the underlay binary as the nodes see it.
	UnderlayBin string
}

// LabNode is one node of a Lab.
type LabNode struct {
	Name string // node1, node2, ...
	Host string // host name: Docker and Consul node name
	Role string // lab.RoleManager or lab.RoleWorker
	// Parent is the node's link on the underlay: eth1, or bond0.40 on VM nodes.
	Parent string
	// ManagementIP is the node's eth0 address; the root namespace reaches it.
	ManagementIP string
	// Docker is a client of the node's dockerd, at DockerHost.
	Docker     *client.Client
	DockerHost string
	// ConsulAddr is the node's Consul agent as the root namespace reaches it
	// (its management IP); inside the node it answers on 127.0.0.1:8500 too.
	ConsulAddr string
	Consul     *api.Client
}

// EnvLabAgents chooses how the labs' agents run (lab.AgentsProcess or
// lab.AgentsStack) when a test's config does not: `make test-stack` runs
// every lab test with the agents deployed by deploy/stack.yml.
const EnvLabAgents = "UNDERLAY_LAB_AGENTS"

// StartLab brings up a lab for t and removes it when t ends. An empty
// cfg.Name gets a unique one; the agent runs (with UnderlayBinary) unless
// cfg.NoAgent, as cfg.Agents or $UNDERLAY_LAB_AGENTS says; the nodes run
// the Docker engine $UNDERLAY_DOCKERD unless cfg.Engine names one. Up's
// progress goes to the test log.
func StartLab(t testing.TB, cfg lab.Config) *Lab {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = "t" + ID(t)
	}
	if cfg.Engine == "" {
		cfg.Engine = lab.DefaultEngine()
	}
	if !cfg.NoAgent && cfg.UnderlayBin == "" {
		cfg.UnderlayBin = UnderlayBinary(t)
	}
	if cfg.Agents == "" {
		cfg.Agents = os.Getenv(EnvLabAgents)
	}
	log := TestLogger(t)
	t.Cleanup(func() {
		if t.Failed() {
			logAgentTails(t, cfg)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := lab.Down(ctx, cfg.Name, log); err != nil {
			t.Errorf("lab down: %v", err)
		}
	})
	ctx := Context(t, upTimeout(cfg))
	if err := lab.Up(ctx, cfg, log); err != nil {
		t.Fatalf("lab up: %v", err)
	}
	l := &Lab{t: t, cfg: cfg}
	l.refresh(ctx)
	return l
}

// LogAgentTails logs the end of every node's agent log, as the lab's
// cleanup does when the test failed: for a test that takes its lab down
// itself.
func (l *Lab) LogAgentTails() { logAgentTails(l.t, l.cfg) }

// AgentLogLines returns the lines of every node's agent log with a field
// among fields (slog's key=value, as "addr=10.1.0.5"), node by node: what
// the agents said of what a failed test found wrong.
func (l *Lab) AgentLogLines(fields ...string) string {
	return l.logLines("agent", func(line string) bool {
		return slices.ContainsFunc(strings.Fields(line), func(f string) bool { return slices.Contains(fields, f) })
	})
}

// DockerdLogLines returns the lines of every node's dockerd log that hold
// one of texts, node by node: what Docker (swarm's orchestrator and
// executor among it) said of what a failed test found wrong.
func (l *Lab) DockerdLogLines(texts ...string) string {
	return l.logLines("dockerd", func(line string) bool {
		return slices.ContainsFunc(texts, func(s string) bool { return strings.Contains(line, s) })
	})
}

func (l *Lab) logLines(component string, keep func(line string) bool) string {
	var b strings.Builder
	for _, n := range l.Nodes {
		path, err := lab.LogPath(l.cfg.Name, n.Name, component)
		if err != nil {
			fmt.Fprintf(&b, "%s: %v\n", n.Name, err)
			continue
		}
		data, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintf(&b, "%s: %v\n", n.Name, err)
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if keep(line) {
				fmt.Fprintf(&b, "%s: %s\n", n.Name, line)
			}
		}
	}
	return b.String()
}

// logAgentTails logs the end of every node's agent log and the crash of
// any node's dockerd, and keeps each whole agent and dockerd log among the
// test's artifacts: what a failed test's agents and dockerds said is gone
// once the lab is down.
func logAgentTails(t testing.TB, cfg lab.Config) {
	for i := 1; i <= lab.MaxNodes; i++ {
		node := fmt.Sprintf("node%d", i)
		if _, err := lab.LogPath(cfg.Name, node, "dockerd"); err != nil {
			return // past the lab's last node
		}
		if !cfg.NoAgent {
			lines, kept, err := keepLog(t, cfg, node, "agent")
			if err != nil {
				t.Logf("%s agent log: %v", node, err)
			} else {
				t.Logf("%s agent log (whole: %s), last lines of %d:\n%s", node, kept, len(lines), strings.Join(lines[max(0, len(lines)-30):], "\n"))
			}
		}
		lines, kept, err := keepLog(t, cfg, node, "dockerd")
		if err != nil {
			t.Logf("%s dockerd log: %v", node, err)
			continue
		}
		// A dockerd that died of a panic or a fatal runtime error ends its
		// log with the trace; its head names the cause.
		if at := slices.IndexFunc(lines, func(l string) bool {
			return strings.HasPrefix(l, "panic: ") || strings.HasPrefix(l, "fatal error: ")
		}); at >= 0 {
			t.Logf("%s dockerd crashed (whole log: %s):\n%s", node, kept, strings.Join(lines[at:min(len(lines), at+60)], "\n"))
		}
	}
}

// keepLog copies a node's log of component among the test's artifacts and
// returns its lines and where it is kept.
func keepLog(t testing.TB, cfg lab.Config, node, component string) ([]string, string, error) {
	path, err := lab.LogPath(cfg.Name, node, component)
	if err != nil {
		return nil, "", err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, "", err
	}
	kept := filepath.Join(Artifacts(t), node+"-"+component+".log")
	if err := os.WriteFile(kept, b, 0o644); err != nil {
		kept = err.Error()
	}
	return strings.Split(strings.TrimRight(string(b), "\n"), "\n"), kept, nil
}

// upTimeout bounds lab up: VM nodes boot and run emulated.
func upTimeout(cfg lab.Config) time.Duration {
	if cfg.VM {
		return 8 * time.Minute
	}
	return 3 * time.Minute
}

// Grow adds nodes to the lab (as `underlay lab up --nodes N` does) until it
// has n, and returns the new ones.
func (l *Lab) Grow(n int) []*LabNode {
	l.t.Helper()
	l.cfg.Nodes = n
	ctx := Context(l.t, upTimeout(l.cfg))
	if err := lab.Up(ctx, l.cfg, TestLogger(l.t)); err != nil {
		l.t.Fatalf("lab up --nodes %d: %v", n, err)
	}
	had := len(l.Nodes)
	l.refresh(ctx)
	return l.Nodes[had:]
}

// refresh reads the lab's status and adds clients for nodes not known yet.
func (l *Lab) refresh(ctx context.Context) {
	t := l.t
	st, err := lab.GetStatus(ctx, l.cfg.Name)
	if err != nil {
		t.Fatal(err)
	}
	l.Name, l.Subnet, l.Gateway = st.Name, netip.MustParsePrefix(st.UnderlaySubnet), netip.MustParseAddr(st.UnderlayGateway)
	l.UnderlayBin = st.UnderlayBin
	for _, n := range st.Nodes[len(l.Nodes):] {
		d, err := dockerhost.NewClientAt(n.DockerHost)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		c, err := consul.NewClient(consul.Options{Addr: n.ConsulHTTPAddr})
		if err != nil {
			t.Fatal(err)
		}
		l.Nodes = append(l.Nodes, &LabNode{
			Name: n.Name, Host: n.Host, Role: n.Role, Parent: n.UnderlayParent, ManagementIP: n.ManagementIP,
			Docker: d, DockerHost: n.DockerHost, ConsulAddr: n.ConsulHTTPAddr, Consul: c,
		})
	}
}

// Exec runs args inside node (in all its namespaces, with its DOCKER_HOST
// and CONSUL_HTTP_ADDR set) and returns its combined output.
func (l *Lab) Exec(ctx context.Context, node string, args ...string) ([]byte, error) {
	cmd, err := lab.Command(ctx, l.Name, node, args...)
	if err != nil {
		return nil, err
	}
	return cmd.CombinedOutput()
}

// TestLogger is a slog logger writing to t's log.
func TestLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}

// Repair runs `lab up` again, which restarts whatever of the lab died.
func (l *Lab) Repair() {
	l.t.Helper()
	l.Grow(len(l.Nodes))
}

// CreateNetwork waits until every node's agent has published its facts,
// runs `underlay network create NAME ARGS…` against node1 (its Consul and
// its dockerd, a manager), and waits until the swarm network exists.
func (l *Lab) CreateNetwork(name string, args ...string) {
	l.t.Helper()
	m := l.Nodes[0]
	ctx := Context(l.t, 2*time.Minute)
	st := netspec.NewStore(consul.NewKV(m.Consul))
	wait := 30 * time.Second
	if l.cfg.VM {
		wait = 90 * time.Second // emulated guests: Docker answers in seconds
	}
	Eventually(l.t, wait, func() (bool, string) {
		nodes, err := st.Nodes(ctx)
		return len(nodes) == len(l.Nodes), fmt.Sprintf("%d of %d agents published their node (%v)", len(nodes), len(l.Nodes), err)
	})
	bin := l.cfg.UnderlayBin
	if bin == "" {
		bin = UnderlayBinary(l.t)
	}
	cmd := exec.CommandContext(ctx, bin, append([]string{"network", "create", name, "--consul-addr", m.ConsulAddr}, args...)...)
	cmd.Env = append(os.Environ(), "DOCKER_HOST="+m.DockerHost)
	if out, err := cmd.CombinedOutput(); err != nil {
		l.t.Fatalf("underlay network create %s: %v\n%s", name, err, out)
	}
	Eventually(l.t, 60*time.Second, func() (bool, string) {
		_, err := m.Docker.NetworkInspect(ctx, name, network.InspectOptions{Scope: "swarm"})
		return err == nil, fmt.Sprintf("swarm network %s not created: %v", name, err)
	})
}

// RemoveNetwork runs `underlay network rm NAME` against node1 (its Consul
// and its dockerd), which returns once every node took its part down.
func (l *Lab) RemoveNetwork(name string) {
	l.t.Helper()
	m := l.Nodes[0]
	ctx := Context(l.t, 3*time.Minute)
	bin := l.cfg.UnderlayBin
	if bin == "" {
		bin = UnderlayBinary(l.t)
	}
	cmd := exec.CommandContext(ctx, bin, "network", "rm", name, "--consul-addr", m.ConsulAddr, "--timeout", "2m")
	cmd.Env = append(os.Environ(), "DOCKER_HOST="+m.DockerHost)
	if out, err := cmd.CombinedOutput(); err != nil {
		l.t.Fatalf("underlay network rm %s: %v\n%s", name, err, out)
	}
}

// ServiceReport says where a swarm service stands, for a failed test: each
// of its tasks as the first node (a manager) knows it, and each of its
// containers on every node with its state and addresses. It tells an
// address held by a container swarm left running from one nothing holds.
func (l *Lab) ServiceReport(service string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var b strings.Builder
	hosts := map[string]string{}
	if nodes, err := l.Nodes[0].Docker.NodeList(ctx, swarm.NodeListOptions{}); err == nil {
		for _, n := range nodes {
			hosts[n.ID] = n.Description.Hostname
		}
	}
	tasks, err := l.Nodes[0].Docker.TaskList(ctx, swarm.TaskListOptions{Filters: filters.NewArgs(filters.Arg("service", service))})
	if err != nil {
		fmt.Fprintf(&b, "tasks of %s: %v\n", service, err)
	}
	slices.SortFunc(tasks, func(a, c swarm.Task) int {
		return cmp.Or(cmp.Compare(a.Slot, c.Slot), a.Meta.CreatedAt.Compare(c.Meta.CreatedAt))
	})
	for _, tk := range tasks {
		var ctr string
		if tk.Status.ContainerStatus != nil {
			ctr = tk.Status.ContainerStatus.ContainerID
		}
		fmt.Fprintf(&b, "task %s slot %d on %s: desired %s, state %s since %s, err %q, container %.12s\n",
			tk.ID, tk.Slot, hosts[tk.NodeID], tk.DesiredState, tk.Status.State, tk.Status.Timestamp.Format(time.RFC3339Nano), tk.Status.Err, ctr)
	}
	for _, n := range l.Nodes {
		list, err := n.Docker.ContainerList(ctx, container.ListOptions{All: true,
			Filters: filters.NewArgs(filters.Arg("label", "com.docker.swarm.service.name="+service))})
		if err != nil {
			fmt.Fprintf(&b, "%s: containers: %v\n", n.Name, err)
			continue
		}
		for _, c := range list {
			var addrs []string
			if c.NetworkSettings != nil {
				for name, ep := range c.NetworkSettings.Networks {
					addrs = append(addrs, name+"="+ep.IPAddress)
				}
			}
			slices.Sort(addrs)
			fmt.Fprintf(&b, "%s: container %.12s %s: %s (%s) %s\n", n.Name, c.ID, strings.Join(c.Names, ","), c.State, c.Status, strings.Join(addrs, " "))
		}
	}
	return b.String()
}
