package lab

import (
	"context"
	"path/filepath"
)

// Node states in a Status.
const (
	StateRunning  = "running"
	StateDegraded = "degraded" // the namespaces hold, something in them is down
	StateStopped  = "stopped"  // the namespace holder is gone
)

// Status is what a lab is, as `lab status --json` prints it.
type Status struct {
	Name             string `json:"name"`
	UnderlaySubnet   string `json:"underlay_subnet"`
	UnderlayGateway  string `json:"underlay_gateway"`
	ManagementSubnet string `json:"management_subnet"`
	StateDir         string `json:"state_dir"`
	Agent            bool   `json:"agent"`
	// Agents is how the agents run: process or stack.
	Agents string       `json:"agents"`
	Nodes  []NodeStatus `json:"nodes"`

	// DashboardURL is the dashboard of the first manager's underlay
	// control, reached from the machine running the lab; empty without
	// the agent.
	DashboardURL string `json:"dashboard_url,omitempty"`
	// ControlTokenFile holds the token that scaling the lab's services
	// needs (underlay scale --token-file).
	ControlTokenFile string `json:"control_token_file,omitempty"`
}

// NodeStatus is one node of a Status.
type NodeStatus struct {
	Name string `json:"name"`
	// Host is the node's host name (its Docker and Consul node name).
	Host       string `json:"host"`
	Role       string `json:"role"`
	DockerHost string `json:"docker_host"`
	// ConsulHTTPAddr is the node's Consul agent on its management IP; it is
	// reached from the root namespace and from inside the node, where
	// 127.0.0.1:8500 answers too.
	ConsulHTTPAddr string `json:"consul_http_addr"`
	ManagementIP   string `json:"management_ip"`
	// ControlURL is a manager's underlay control (autoscaler API and
	// dashboard); empty on workers and without the agent.
	ControlURL string `json:"control_url,omitempty"`
	// UnderlayParent is the node's link into the underlay bridge, the parent
	// of macvlan networks.
	UnderlayParent string `json:"underlay_parent"`
	State          string `json:"state"`
	// Problems say what is down when State is not running.
	Problems []string `json:"problems,omitempty"`
	// HolderPID is the pid (in the root namespace) of the process holding the
	// node's namespaces; 0 when stopped.
	HolderPID int `json:"holder_pid,omitempty"`
	// DockerdPID is the pid (in the root namespace) of the node's dockerd; 0 when not running.
	DockerdPID int `json:"dockerd_pid,omitempty"`
}

// GetStatus reports on lab name; the error wraps ErrNotFound when it does not exist.
func GetStatus(ctx context.Context, name string) (*Status, error) {
	p, err := loadPlan(DefaultStateRoot, name)
	if err != nil {
		return nil, err
	}
	st := &Status{
		Name: p.cfg.Name, UnderlaySubnet: p.subnet.String(), UnderlayGateway: p.gateway.String(),
		ManagementSubnet: p.mgmt.String(), StateDir: p.dir(), Agent: !p.cfg.NoAgent, Agents: p.cfg.Agents,
	}
	for i := range p.nodes {
		st.Nodes = append(st.Nodes, p.nodeStatus(ctx, &p.nodes[i]))
	}
	if !p.cfg.NoAgent {
		st.DashboardURL = "http://" + p.controlAddr(&p.nodes[0]) + "/ui/"
		st.ControlTokenFile = filepath.Join(p.dir(), ControlTokensFile)
	}
	return st, nil
}

func (p *plan) nodeStatus(ctx context.Context, n *nodePlan) NodeStatus {
	ns := NodeStatus{
		Name: n.Name, Host: n.Host, Role: n.Role, DockerHost: p.dockerHost(n), ConsulHTTPAddr: p.consulAddr(n),
		ManagementIP: n.MgmtIP.String(), UnderlayParent: "eth1",
	}
	if n.Role == RoleManager && !p.cfg.NoAgent {
		ns.ControlURL = "http://" + p.controlAddr(n)
	}
	ns.HolderPID = holderPID(p.nodeDir(n))
	if ns.HolderPID == 0 {
		ns.State, ns.Problems = StateStopped, []string{"namespace holder not running"}
		return ns
	}
	ns.DockerdPID = dockerdPID(p.dockerHost(n))
	if c, err := p.dockerClient(n); err == nil {
		if err := pingDocker(ctx, c); err != nil {
			ns.Problems = append(ns.Problems, "dockerd not answering")
		}
		c.Close()
	}
	if err := consulAnswers(ctx, p.consulAddr(n)); err != nil {
		ns.Problems = append(ns.Problems, "consul not answering")
	}
	if !p.cfg.NoAgent && !p.agentRuns(ctx, n) {
		ns.Problems = append(ns.Problems, "underlay agent not running")
	}
	if !p.cfg.NoAgent && p.cfg.Agents != AgentsStack && n.Role == RoleManager && len(daemonWrappers(p.nodeDir(n), p.control(n).key)) == 0 {
		ns.Problems = append(ns.Problems, "underlay control not running")
	}
	ns.State = StateRunning
	if len(ns.Problems) > 0 {
		ns.State = StateDegraded
	}
	return ns
}

// agentRuns says whether the node's agent runs: its process, or its stack
// task.
func (p *plan) agentRuns(ctx context.Context, n *nodePlan) bool {
	if p.cfg.Agents != AgentsStack {
		return len(daemonWrappers(p.nodeDir(n), p.agent(n).key)) > 0
	}
	c, err := p.dockerClient(n)
	if err != nil {
		return false
	}
	defer c.Close()
	return stackTaskRunning(ctx, c, StackAgentService) == nil
}

func dockerdPID(host string) int {
	ps := processes(func(args []string) bool {
		return args[0] == "dockerd" && contains(args, host)
	})
	if len(ps) == 0 {
		return 0
	}
	return ps[0].pid
}
