package lab

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Defaults of a Config.
const (
	DefaultName           = "lab"
	DefaultNodes          = 3
	DefaultUnderlaySubnet = "10.200.0.0/16"
	// MaxNodes is the largest lab: node indexes are one character in
	// link names (1–9, then a–k: see linkSuffix), and 20 namespace nodes
	// is already more than a 2-core machine runs well.
	MaxNodes = 20
	// DefaultStateRoot holds one directory per lab.
	DefaultStateRoot = "/var/lib/underlay/lab"
	// ConsulHTTPPort is the port every node's Consul agent answers HTTP on.
	ConsulHTTPPort = 8500
	// AgentListen is where the underlay agent of every node serves /healthz,
	// inside the node.
	AgentListen = "127.0.0.1:9465"
	// NodeDockerHost is where the node's dockerd also answers inside the
	// node: Docker's standard socket, in the node's own /run.
	NodeDockerHost = "unix:///var/run/docker.sock"
	// ControlPort is where `underlay control` (the autoscaler and the
	// dashboard) listens on every manager's management IP.
	ControlPort = 8000
)

// How the agents run: Config.Agents.
const (
	AgentsProcess = "process"
	AgentsStack   = "stack"
)

// DefaultImages are loaded from the machine's dockerd into every node.
var DefaultImages = []string{"underlay/testserver:dev"}

// ErrNotFound is returned for a lab that does not exist.
var ErrNotFound = errors.New("lab not found")

// Config is the requested state of a lab.
type Config struct {
	// Name names the lab and everything it creates; 1 to 9 characters,
	// lowercase letters and digits, starting with a letter.
	Name string `json:"name"`
	// Nodes is the number of nodes, 1 to MaxNodes.
	Nodes int `json:"nodes"`
	// Managers is the number of swarm managers (the first nodes); 0 means 1.
	Managers int `json:"managers"`
	// ConsulServers is the number of Consul servers (the first nodes): 1 or 3; 0 means 1.
	ConsulServers int `json:"consul_servers"`
	// UnderlaySubnet is the IPv4 subnet of the "VLAN"; its first address is
	// the gateway, owned by the root namespace. Empty means DefaultUnderlaySubnet.
	UnderlaySubnet string `json:"underlay_subnet"`
	// NoAgent leaves the underlay agent out of the nodes.
	NoAgent bool `json:"no_agent"`
	// Agents is how the agent (and control) run: AgentsProcess as a plain
	// process in every node, or AgentsStack with deploy/stack.yml from the
	// image of UnderlayBin's version, as the README tells users. Empty
	// means as the existing lab runs them, else AgentsProcess.
	Agents string `json:"agents,omitempty"`
	// UnderlayBin is the underlay binary run as the agent; required unless NoAgent.
	UnderlayBin string `json:"underlay_bin,omitempty"`
	// AgentArgs are extra flags for every node's agent (tests shorten
	// timers with them).
	AgentArgs []string `json:"agent_args,omitempty"`
	// DockerArgs are extra flags for every node's dockerd (a test adds a
	// runtime with them).
	DockerArgs []string `json:"docker_args,omitempty"`
	// Images are copied from the machine's dockerd into every node; nil
	// means DefaultImages. An image the machine lacks is skipped with a warning.
	Images []string `json:"images,omitempty"`
	// Engine is the Docker engine release line the nodes run: "20.10",
	// "28" or "29" (built by scripts/build-engines.sh); empty means the
	// dockerd on PATH.
	Engine string `json:"engine,omitempty"`
	// VM makes the nodes QEMU virtual machines booting Debian's kernel,
	// each with two NICs bonded (bond0) on a trunk carrying VLANs 40 and
	// 41, the underlay being VLAN 40; otherwise nodes are namespaces of
	// this machine's kernel.
	VM bool `json:"vm,omitempty"`
	// Systemd makes VM nodes boot systemd as PID 1, each with a disk of its
	// own: the nodes' dockerd (docker.service) and Consul are enabled
	// units, and what is installed in a node (a Debian package, its
	// enabled units) and Docker's state survive a reboot, as on a host.
	Systemd bool `json:"systemd,omitempty"`
}

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,8}$`)

// validName checks a lab name: it becomes part of link names (15 bytes at
// most: "ul-" + name + "-m9") and of paths.
func validName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("lab name %q: want 1 to 9 lowercase letters or digits, starting with a letter", name)
	}
	return nil
}

// withDefaults fills in the zero fields.
func (c Config) withDefaults() Config {
	if c.Name == "" {
		c.Name = DefaultName
	}
	if c.Nodes == 0 {
		c.Nodes = DefaultNodes
	}
	if c.Managers == 0 {
		c.Managers = 1
	}
	if c.ConsulServers == 0 {
		c.ConsulServers = 1
	}
	if c.UnderlaySubnet == "" {
		c.UnderlaySubnet = DefaultUnderlaySubnet
	}
	if c.Images == nil {
		c.Images = DefaultImages
	}
	return c
}

// Validate checks c (with defaults applied for zero fields other than Nodes).
func (c Config) Validate() error {
	if err := validName(c.Name); err != nil {
		return err
	}
	if err := c.checkShape(); err != nil {
		return err
	}
	if _, err := EngineBinDir(c.Engine); err != nil {
		return err
	}
	if c.Agents != "" && c.Agents != AgentsProcess && c.Agents != AgentsStack {
		return fmt.Errorf("--agents %q: want process or stack", c.Agents)
	}
	if !c.NoAgent && c.UnderlayBin == "" {
		return errors.New("no underlay binary for the agent (set UnderlayBin, or NoAgent)")
	}
	if c.Systemd && !c.VM {
		return errors.New("--systemd: only VM nodes boot systemd (add --vm)")
	}
	if c.VM && c.UnderlayBin == "" {
		return errors.New("no underlay binary: VM nodes run it as their init (set UnderlayBin)")
	}
	return nil
}

// checkShape checks what the plan of c is made from: the counts and the
// underlay subnet. A lab's recorded config is checked so too.
func (c Config) checkShape() error {
	if c.Nodes < 1 || c.Nodes > MaxNodes {
		return fmt.Errorf("--nodes %d: want 1 to %d", c.Nodes, MaxNodes)
	}
	if c.Managers < 1 || c.Managers > c.Nodes {
		return fmt.Errorf("--managers %d: want 1 to the node count (%d)", c.Managers, c.Nodes)
	}
	if c.ConsulServers != 1 && c.ConsulServers != 3 {
		return fmt.Errorf("--consul-servers %d: want 1 or 3", c.ConsulServers)
	}
	if c.ConsulServers > c.Nodes {
		return fmt.Errorf("--consul-servers %d: more than the node count (%d)", c.ConsulServers, c.Nodes)
	}
	_, _, err := underlay(c.UnderlaySubnet)
	return err
}

// labRanges are the ranges a lab's underlay subnet must lie in: private
// (RFC 1918), shared (RFC 6598) and benchmarking (RFC 2544) space.
var labRanges = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("172.16.0.0/12"), netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("100.64.0.0/10"), netip.MustParsePrefix("198.18.0.0/15"),
}

// joinPrefixes lists ps, comma separated.
func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

// underlay parses the underlay subnet and returns it with its gateway.
func underlay(subnet string) (netip.Prefix, netip.Addr, error) {
	p, err := netip.ParsePrefix(subnet)
	if err != nil {
		return netip.Prefix{}, netip.Addr{}, fmt.Errorf("--underlay-subnet %q: %w", subnet, err)
	}
	if !p.Addr().Is4() {
		return netip.Prefix{}, netip.Addr{}, fmt.Errorf("--underlay-subnet %q: want an IPv4 subnet", subnet)
	}
	if p.Masked() != p {
		return netip.Prefix{}, netip.Addr{}, fmt.Errorf("--underlay-subnet %q: host bits set (did you mean %s?)", subnet, p.Masked())
	}
	if p.Bits() < 8 || p.Bits() > 24 {
		return netip.Prefix{}, netip.Addr{}, fmt.Errorf("--underlay-subnet %q: want a prefix length from /8 to /24", subnet)
	}
	// The root namespace holds the gateway and routes the subnet to the
	// lab's bridge: it must be a network of hosts, not one of these.
	for _, r := range []struct{ prefix, what string }{
		{"0.0.0.0/8", "this network"}, {"127.0.0.0/8", "loopback"}, {"169.254.0.0/16", "link-local"},
		{"224.0.0.0/4", "multicast"}, {"240.0.0.0/4", "reserved"},
	} {
		if special := netip.MustParsePrefix(r.prefix); p.Overlaps(special) {
			return netip.Prefix{}, netip.Addr{}, fmt.Errorf("--underlay-subnet %q: overlaps %s (%s); want a unicast subnet", subnet, special, r.what)
		}
	}
	// Routed into the lab while it runs, a public range would hide its real
	// hosts from this machine (a typo of 10.x away from someone's servers):
	// only ranges no Internet host has.
	if !slices.ContainsFunc(labRanges, func(r netip.Prefix) bool { return r.Bits() <= p.Bits() && r.Contains(p.Addr()) }) {
		return netip.Prefix{}, netip.Addr{}, fmt.Errorf("--underlay-subnet %q: a public range, routed into the lab on this machine while it runs; want one inside %s", subnet, joinPrefixes(labRanges))
	}
	return p, p.Addr().Next(), nil
}

// Role of a node in the swarm.
const (
	RoleManager = "manager"
	RoleWorker  = "worker"
)

// nodePlan is what one node is meant to be.
type nodePlan struct {
	Index        int // 1-based
	Name         string
	Host         string // host name inside the node: <lab>-<node>
	Role         string
	ConsulServer bool
	MgmtIP       netip.Addr
}

// plan is the address and role plan of a lab, computed from its config and
// its management subnet, with the provider of its kind of nodes.
type plan struct {
	root     string // the state root the lab's directory is in
	cfg      Config
	prov     provider
	mgmt     netip.Prefix // a /24
	mgmtGW   netip.Addr   // .1, held by the root namespace
	subnet   netip.Prefix
	gateway  netip.Addr
	nodes    []nodePlan
	bridgeM  string
	bridgeU  string
	ruleMark string
	// secretMu serialises the making of the lab's secrets: the managers'
	// agents start at once, and each asks for them.
	secretMu sync.Mutex
}

// newPlan lays out a validated config on the management subnet mgmt (a
// /24), for a lab whose directory is under root.
func newPlan(root string, cfg Config, mgmt netip.Prefix) (*plan, error) {
	subnet, gw, err := underlay(cfg.UnderlaySubnet)
	if err != nil {
		return nil, err
	}
	p := &plan{
		root: root, cfg: cfg, prov: providerFor(cfg), mgmt: mgmt, mgmtGW: mgmt.Addr().Next(), subnet: subnet, gateway: gw,
		bridgeM: "ul-" + cfg.Name + "-m", bridgeU: "ul-" + cfg.Name + "-u",
		ruleMark: ruleComment(cfg.Name),
	}
	base := mgmt.Addr().As4()
	for i := 1; i <= cfg.Nodes; i++ {
		ip := base
		ip[3] = byte(10 + i)
		role := RoleWorker
		if i <= cfg.Managers {
			role = RoleManager
		}
		name := "node" + strconv.Itoa(i)
		p.nodes = append(p.nodes, nodePlan{
			Index: i, Name: name, Host: cfg.Name + "-" + name, Role: role,
			ConsulServer: i <= cfg.ConsulServers, MgmtIP: netip.AddrFrom4(ip),
		})
	}
	return p, nil
}

// ruleComment marks the lab's firewall rules.
func ruleComment(name string) string { return "underlay-lab-" + name }

// linkPrefix starts the name of every link of the lab.
func linkPrefix(name string) string { return "ul-" + name + "-" }

// node finds a node by name ("node2"), host name ("lab-node2") or index ("2").
func (p *plan) node(name string) (*nodePlan, error) {
	for i := range p.nodes {
		n := &p.nodes[i]
		if name == n.Name || name == n.Host || name == strconv.Itoa(n.Index) {
			return n, nil
		}
	}
	return nil, fmt.Errorf("lab %s has no node %q (it has node1 to node%d)", p.cfg.Name, name, len(p.nodes))
}

// mgmtCandidates are the management /24s a lab may take, in order of preference.
func mgmtCandidates() []netip.Prefix {
	out := make([]netip.Prefix, 0, 256)
	for k := 0; k < 256; k++ {
		out = append(out, netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 31, byte(k), 0}), 24))
	}
	return out
}
