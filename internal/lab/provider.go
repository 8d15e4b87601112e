package lab

import (
	"context"
	"log/slog"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/underlay/underlay/internal/lab/guest"
)

// Node kinds, as Status reports them.
const (
	KindNetns = "netns"
	KindVM    = "vm"
)

// provider runs a lab's nodes of one kind (as kind's node providers do).
// Every step above it is shared — the plan, dockerd, Consul, the swarm,
// images, agents, status, down — and goes through these methods, so a new
// daemon on the nodes (say a control daemon on managers) is a daemon value
// and a step, with nothing to add here. Implementations: netnsProvider
// (namespaces of this machine's kernel) and vmProvider (QEMU VMs with
// their own kernel).
type provider interface {
	// Kind is KindNetns or KindVM.
	Kind() string
	// Preflight checks that the machine has what this kind of node needs.
	Preflight(cfg Config) error
	// EnsureNetwork makes the lab's networks, or repairs them; what it
	// goes on without (disableIPv6) goes to log.
	EnsureNetwork(ctx context.Context, p *plan, log *slog.Logger) error
	// EnsureNode makes node n run, or repairs it, and returns once daemons
	// can be started in it. A new node is a freshly booted host.
	EnsureNode(ctx context.Context, p *plan, n *nodePlan) error
	// Layout says where n's daemons keep their state and how the root
	// namespace reaches them.
	Layout(p *plan, n *nodePlan) layout
	// Env is the environment of programs run in n.
	Env(p *plan, n *nodePlan) []string
	// Start starts daemon d in n, killing what is left of an earlier run of it.
	Start(ctx context.Context, p *plan, n *nodePlan, d daemon) error
	// Running reports whether daemon key runs in n.
	Running(ctx context.Context, p *plan, n *nodePlan, key string) bool
	// Kill kills daemon key in n with SIGKILL, as a crash would.
	Kill(ctx context.Context, p *plan, n *nodePlan, key string) error
	// Command returns a command that runs args in n with Env(p, n).
	Command(ctx context.Context, p *plan, n *nodePlan, args []string) (*exec.Cmd, error)
	// Probe reports the root-namespace pid holding n (its namespace
	// holder, its QEMU), 0 when n does not run, and a problem seen.
	Probe(ctx context.Context, p *plan, n *nodePlan) (pid int, problem string)
	// Memory is the resident memory, in bytes, of everything the lab's
	// nodes run.
	Memory(ctx context.Context, p *plan) (int64, error)
}

// providerFor picks the provider of cfg's kind of nodes.
func providerFor(cfg Config) provider {
	if cfg.VM {
		return &vmProvider{}
	}
	return netnsProvider{}
}

// layout is where a node's daemons keep their state, as seen inside the
// node, and how the root namespace reaches them.
type layout struct {
	// DockerListen are dockerd's --host values; DockerHost is how the root
	// namespace reaches it.
	DockerListen []string
	DockerHost   string
	// DockerData, DockerExec and DockerPid are dockerd's --data-root,
	// --exec-root and --pidfile; DockerExtra more flags.
	DockerData, DockerExec, DockerPid string
	DockerExtra                       []string
	ConsulData                        string
	// AgentState is the agent's --state-dir (its recorded identity).
	AgentState string
	// LogDir holds the daemons' logs; it is the node's state directory on
	// the host (shared with a VM).
	LogDir string
	// UnderlayBin is the underlay binary as the node sees it.
	UnderlayBin string
	// Parent is the node's link on the underlay, the parent of its
	// macvlan and ipvlan networks.
	Parent string
	// Slow multiplies the waits for daemons (emulated CPUs are slow).
	Slow time.Duration
}

// daemon is one long-running program of a node.
type daemon struct {
	key  string // guest.DaemonKey of args
	args []string
	env  []string // added to the node's environment
	log  string   // file name in the layout's LogDir
}

// daemonKey names a node's daemon by its program's base name and first
// argument: "dockerd --host", "consul agent", "underlay agent".
func daemonKey(args []string) string { return guest.DaemonKey(args) }

func (p *plan) layout(n *nodePlan) layout { return p.prov.Layout(p, n) }

func (p *plan) dockerd(n *nodePlan) daemon {
	l := p.layout(n)
	args := []string{"dockerd"}
	for _, h := range l.DockerListen {
		args = append(args, "--host", h)
	}
	args = append(args, "--data-root", l.DockerData, "--exec-root", l.DockerExec, "--pidfile", l.DockerPid,
		"--iptables=false", "--ip6tables=false", "--bridge", "none")
	return daemon{
		key:  "dockerd --host",
		args: slices.Concat(args, l.DockerExtra, p.cfg.DockerArgs),
		// Swarm tasks use the images loaded into the node; without this,
		// dockerd first tries (and, with no way out of the lab, times out)
		// pulling them from a registry.
		env: []string{"DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1"},
		log: "dockerd.log",
	}
}

func (p *plan) consul(n *nodePlan) daemon {
	ip := n.MgmtIP.String()
	args := []string{"consul", "agent", "-node", n.Host, "-data-dir", p.layout(n).ConsulData,
		"-bind", ip, "-advertise", ip, "-client", "127.0.0.1 " + ip, "-ui", "-grpc-port", "-1", "-retry-interval", "1s"}
	if n.ConsulServer {
		args = append(args, "-server", "-bootstrap-expect", strconv.Itoa(p.cfg.ConsulServers))
	}
	for i := 0; i < p.cfg.ConsulServers; i++ {
		if s := p.nodes[i]; s.Index != n.Index {
			args = append(args, "-retry-join", s.MgmtIP.String())
		}
	}
	return daemon{key: "consul agent", args: args, log: "consul.log"}
}

func (p *plan) agent(n *nodePlan) daemon {
	bin := p.layout(n).UnderlayBin
	return daemon{
		key:  filepath.Base(bin) + " agent",
		args: append([]string{bin, "agent", "--listen", AgentListen, "--node", n.Host, "--state-dir", p.layout(n).AgentState}, p.cfg.AgentArgs...),
		log:  "agent.log",
	}
}

// control runs `underlay control` on a manager: the autoscaler and the
// dashboard, with leader election among the managers. It listens on the
// node's management IP, which the machine running the lab reaches; reads
// and scaling need the lab's token (ControlTokensFile), and
// followers pass scaling requests on to the leader signed with the lab's
// peer secret (ControlPeerSecretFile), to the managers' addresses only
// (--peers: control forwards to no other address the leader key names).
func (p *plan) control(n *nodePlan) daemon {
	bin, addr := p.layout(n).UnderlayBin, p.controlAddr(n)
	var peers []string
	for i := range p.nodes {
		if p.nodes[i].Role == RoleManager {
			peers = append(peers, p.controlAddr(&p.nodes[i]))
		}
	}
	return daemon{
		key: filepath.Base(bin) + " control",
		args: []string{bin, "control", "--listen", addr, "--advertise", addr, "--leader-election",
			"--token-file", filepath.Join(p.dir(), ControlTokensFile),
			"--peer-secret-file", filepath.Join(p.dir(), ControlPeerSecretFile),
			"--peers", strings.Join(peers, ",")},
		log: "control.log",
	}
}

// controlAddr is where a manager's control instance listens.
func (p *plan) controlAddr(n *nodePlan) string {
	return netip.AddrPortFrom(n.MgmtIP, ControlPort).String()
}

// wait scales a wait for a daemon of n.
func (p *plan) wait(n *nodePlan, d time.Duration) time.Duration {
	if s := p.layout(n).Slow; s > 1 {
		return d * s
	}
	return d
}
