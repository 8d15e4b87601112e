package lab

import (
	"context"
	"path/filepath"
)

// Node states in a Status.
const (
	StateRunning  = "running"
	StateDegraded = "degraded" // the node runs, something in it is down
	StateStopped  = "stopped"  // the namespace holder or the VM is gone
)

// Status is what a lab is, as `lab status --json` prints it.
type Status struct {
	Name string `json:"name"`
	// Kind is the kind of nodes: KindNetns or KindVM.
	Kind             string `json:"kind"`
	UnderlaySubnet   string `json:"underlay_subnet"`
	UnderlayGateway  string `json:"underlay_gateway"`
	ManagementSubnet string `json:"management_subnet"`
	StateDir         string `json:"state_dir"`
	Agent            bool   `json:"agent"`
	// Agents is how the agents run: process or stack.
	Agents string `json:"agents"`
	// UnderlayBin is the underlay binary as the nodes see it (VM nodes
	// run the lab's copy), to run `underlay doctor` in a node.
	UnderlayBin string       `json:"underlay_bin,omitempty"`
	Nodes       []NodeStatus `json:"nodes"`

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
	// UnderlayParent is the node's link on the underlay, the parent of
	// macvlan networks: eth1 (namespace nodes) or bond0.40 (VM nodes).
	UnderlayParent string `json:"underlay_parent"`
	State          string `json:"state"`
	// Problems say what is down when State is not running.
	Problems []string `json:"problems,omitempty"`
	// HolderPID is the pid (in the root namespace) of the process holding
	// the node: its namespace holder, or its QEMU; 0 when stopped.
	HolderPID int `json:"holder_pid,omitempty"`
	// DockerdPID is the pid (in the root namespace) of the node's dockerd;
	// 0 when not running, or inside a VM.
	DockerdPID int `json:"dockerd_pid,omitempty"`
}

// GetStatus reports on lab name; the error wraps ErrNotFound when it does not exist.
func (l Labs) GetStatus(ctx context.Context, name string) (*Status, error) {
	p, err := l.loadPlan(name)
	if err != nil {
		return nil, err
	}
	st := &Status{
		Name: p.cfg.Name, Kind: p.prov.Kind(), UnderlaySubnet: p.subnet.String(), UnderlayGateway: p.gateway.String(),
		ManagementSubnet: p.mgmt.String(), StateDir: p.dir(), Agent: !p.cfg.NoAgent, Agents: p.cfg.Agents,
	}
	if len(p.nodes) > 0 {
		st.UnderlayBin = p.layout(&p.nodes[0]).UnderlayBin
	}
	if !p.cfg.NoAgent {
		st.DashboardURL = "http://" + p.controlAddr(&p.nodes[0]) + "/ui/"
		st.ControlTokenFile = filepath.Join(p.dir(), ControlTokensFile)
	}
	st.Nodes = make([]NodeStatus, len(p.nodes))
	_ = p.eachNode(ctx, func(ctx context.Context, n *nodePlan) error {
		st.Nodes[n.Index-1] = p.nodeStatus(ctx, n)
		return nil
	})
	return st, nil
}

func (p *plan) nodeStatus(ctx context.Context, n *nodePlan) NodeStatus {
	ns := NodeStatus{
		Name: n.Name, Host: n.Host, Role: n.Role, DockerHost: p.dockerHost(n), ConsulHTTPAddr: p.consulAddr(n),
		ManagementIP: n.MgmtIP.String(), UnderlayParent: p.layout(n).Parent,
	}
	if n.Role == RoleManager && !p.cfg.NoAgent {
		ns.ControlURL = "http://" + p.controlAddr(n)
	}
	var problem string
	ns.HolderPID, problem = p.prov.Probe(ctx, p, n)
	if ns.HolderPID == 0 {
		ns.State, ns.Problems = StateStopped, []string{problem}
		return ns
	}
	if problem != "" {
		ns.Problems = append(ns.Problems, problem)
	}
	if p.prov.Kind() == KindNetns {
		ns.DockerdPID = dockerdPID(p.dockerHost(n))
	}
	if c, err := p.dockerClient(n); err == nil {
		if err := pingDocker(ctx, c); err != nil {
			ns.Problems = append(ns.Problems, "dockerd not answering")
		}
		c.Close()
	}
	if err := consulAnswers(ctx, p.consulAddr(n)); err != nil {
		ns.Problems = append(ns.Problems, "consul not answering")
	}
	if !p.cfg.NoAgent && problem == "" && !p.agentRuns(ctx, n) {
		ns.Problems = append(ns.Problems, "underlay agent not running")
	}
	if !p.cfg.NoAgent && problem == "" && p.cfg.Agents != AgentsStack && n.Role == RoleManager && !p.prov.Running(ctx, p, n, p.control(n).key) {
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
		return p.prov.Running(ctx, p, n, p.agent(n).key)
	}
	c, err := p.dockerClient(n)
	if err != nil {
		return false
	}
	defer c.Close()
	return stackTaskRunning(ctx, c, StackAgentService) == nil
}
