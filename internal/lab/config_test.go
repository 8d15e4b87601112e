package lab

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/swarm"
	"github.com/google/go-cmp/cmp"
)

func TestValidate(t *testing.T) {
	ok := Config{Name: "lab", Nodes: 3, UnderlayBin: "/bin/underlay"}.withDefaults()
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string // error substring; empty: valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"no agent needs no binary", func(c *Config) { c.NoAgent, c.UnderlayBin = true, "" }, ""},
		{"nine nodes", func(c *Config) { c.Nodes = 9 }, ""},
		{"ten nodes", func(c *Config) { c.Nodes = 10 }, ""},
		{"three consul servers", func(c *Config) { c.ConsulServers = 3 }, ""},
		{"twenty nodes", func(c *Config) { c.Nodes = 20 }, ""},
		{"twenty-one nodes", func(c *Config) { c.Nodes = 21 }, "--nodes 21"},
		{"negative nodes", func(c *Config) { c.Nodes = -1 }, "--nodes -1"},
		{"more managers than nodes", func(c *Config) { c.Managers = 4 }, "--managers 4"},
		{"two consul servers", func(c *Config) { c.ConsulServers = 2 }, "--consul-servers 2"},
		{"three servers on two nodes", func(c *Config) { c.Nodes, c.ConsulServers = 2, 3 }, "--consul-servers 3"},
		{"name too long", func(c *Config) { c.Name = "abcdefghij" }, `"abcdefghij"`},
		{"name with a slash", func(c *Config) { c.Name = "a/b" }, `"a/b"`},
		{"name starting with a digit", func(c *Config) { c.Name = "1lab" }, `"1lab"`},
		{"subnet not a prefix", func(c *Config) { c.UnderlaySubnet = "10.1.2.3" }, `"10.1.2.3"`},
		{"subnet with host bits", func(c *Config) { c.UnderlaySubnet = "10.200.0.1/16" }, "10.200.0.0/16"},
		{"ipv6 subnet", func(c *Config) { c.UnderlaySubnet = "fd00::/64" }, "IPv4"},
		{"subnet too small", func(c *Config) { c.UnderlaySubnet = "10.200.0.0/25" }, "/25"},
		// The root namespace would hold the gateway and route the subnet to
		// the lab's bridge: none of these is a network of hosts.
		{"loopback subnet", func(c *Config) { c.UnderlaySubnet = "127.0.0.0/8" }, `"127.0.0.0/8"`},
		{"multicast subnet", func(c *Config) { c.UnderlaySubnet = "239.1.0.0/16" }, `"239.1.0.0/16"`},
		{"link-local subnet", func(c *Config) { c.UnderlaySubnet = "169.254.0.0/16" }, `"169.254.0.0/16"`},
		{"subnet over link-local", func(c *Config) { c.UnderlaySubnet = "169.0.0.0/8" }, `"169.0.0.0/8"`},
		{"this-network subnet", func(c *Config) { c.UnderlaySubnet = "0.0.0.0/8" }, `"0.0.0.0/8"`},
		{"reserved subnet", func(c *Config) { c.UnderlaySubnet = "255.255.255.0/24" }, `"255.255.255.0/24"`},
		{"private subnet", func(c *Config) { c.UnderlaySubnet = "192.168.50.0/24" }, ""},
		{"shared space", func(c *Config) { c.UnderlaySubnet = "100.100.0.0/16" }, ""},
		{"benchmarking space", func(c *Config) { c.UnderlaySubnet = "198.18.0.0/16" }, ""},
		// Routed into the lab, a public range hides its hosts from the
		// machine; before, accepted.
		{"public subnet", func(c *Config) { c.UnderlaySubnet = "8.8.0.0/16" }, `"8.8.0.0/16": a public range`},
		{"over private space", func(c *Config) { c.UnderlaySubnet = "172.0.0.0/8" }, `"172.0.0.0/8": a public range`},
		{"no binary", func(c *Config) { c.UnderlayBin = "" }, "underlay binary"},
		{"VM nodes without agents need the binary", func(c *Config) { c.VM, c.NoAgent, c.UnderlayBin = true, true, "" }, "VM nodes run it as their init"},
		{"VM nodes", func(c *Config) { c.VM = true }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.edit(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate() = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestPlan(t *testing.T) {
	cfg := Config{Name: "demo", Nodes: 3, Managers: 2, UnderlaySubnet: "10.200.0.0/16", NoAgent: true}.withDefaults()
	p, err := newPlan(DefaultStateRoot, cfg, netip.MustParsePrefix("172.31.4.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	want := []nodePlan{
		{Index: 1, Name: "node1", Host: "demo-node1", Role: RoleManager, ConsulServer: true, MgmtIP: netip.MustParseAddr("172.31.4.11")},
		{Index: 2, Name: "node2", Host: "demo-node2", Role: RoleManager, MgmtIP: netip.MustParseAddr("172.31.4.12")},
		{Index: 3, Name: "node3", Host: "demo-node3", Role: RoleWorker, MgmtIP: netip.MustParseAddr("172.31.4.13")},
	}
	if d := cmp.Diff(want, p.nodes, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
		t.Errorf("nodes (-want +got):\n%s", d)
	}
	if p.gateway.String() != "10.200.0.1" || p.mgmtGW.String() != "172.31.4.1" {
		t.Errorf("gateway %s, management gateway %s", p.gateway, p.mgmtGW)
	}
	if p.bridgeM != "ul-demo-m" || p.bridgeU != "ul-demo-u" {
		t.Errorf("bridges %s %s", p.bridgeM, p.bridgeU)
	}
	for _, l := range p.links(&p.nodes[2]) {
		if len(l.host) > 15 {
			t.Errorf("link name %s longer than 15 bytes", l.host)
		}
	}
	for _, name := range []string{"node2", "demo-node2", "2"} {
		if n, err := p.node(name); err != nil || n.Index != 2 {
			t.Errorf("node(%q) = %v, %v", name, n, err)
		}
	}
	if _, err := p.node("node4"); err == nil || !strings.Contains(err.Error(), `"node4"`) {
		t.Errorf("node(node4) = %v, want an error naming it", err)
	}
	args := strings.Join(p.consul(&p.nodes[1]).args, " ")
	if !strings.Contains(args, "-retry-join 172.31.4.11") || strings.Contains(args, "-server") {
		t.Errorf("consul client args: %s", args)
	}
	args = strings.Join(p.consul(&p.nodes[0]).args, " ")
	if !strings.Contains(args, "-server -bootstrap-expect 1") || strings.Contains(args, "-retry-join") {
		t.Errorf("consul server args: %s", args)
	}
}

func TestLongestNameFitsLinkNames(t *testing.T) {
	cfg := Config{Name: "abcdefghi", Nodes: 9, NoAgent: true}.withDefaults()
	p, err := newPlan(DefaultStateRoot, cfg, netip.MustParsePrefix("172.31.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range p.links(&p.nodes[8]) {
		if len(l.host) > 15 {
			t.Errorf("link name %s longer than 15 bytes", l.host)
		}
	}
}

func TestFirewallRules(t *testing.T) {
	var got []string
	for _, r := range firewallRules("demo") {
		got = append(got, strings.Join(r, " "))
	}
	want := []string{
		"-i ul-demo-m -o ul-demo-m -m comment --comment underlay-lab-demo -j ACCEPT",
		"-i ul-demo-m -o ul-demo-u -m comment --comment underlay-lab-demo -j ACCEPT",
		"-i ul-demo-u -o ul-demo-m -m comment --comment underlay-lab-demo -j ACCEPT",
		"-i ul-demo-u -o ul-demo-u -m comment --comment underlay-lab-demo -j ACCEPT",
		"-i ul-demo-m -m comment --comment underlay-lab-demo -j DROP",
		"-o ul-demo-m -m comment --comment underlay-lab-demo -j DROP",
		"-i ul-demo-u -m comment --comment underlay-lab-demo -j DROP",
		"-o ul-demo-u -m comment --comment underlay-lab-demo -j DROP",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("rules (-want +got):\n%s", d)
	}
}

func TestDaemonKey(t *testing.T) {
	p, _ := newPlan(DefaultStateRoot, Config{Name: "x", Nodes: 1, UnderlayBin: "/work/bin/underlay"}.withDefaults(), netip.MustParsePrefix("172.31.0.0/24"))
	n := &p.nodes[0]
	for _, d := range []daemon{p.dockerd(n), p.consul(n), p.agent(n), p.control(n)} {
		if got := daemonKey(d.args); got != d.key {
			t.Errorf("daemonKey(%q) = %q, want %q", d.args, got, d.key)
		}
	}
}

func TestUnescapeMount(t *testing.T) {
	if got := unescapeMount(`/var/lib/a\040b`); got != "/var/lib/a b" {
		t.Errorf("unescapeMount = %q", got)
	}
}

// TestLinkNamesFit: every node's links of the longest lab name fit in the
// kernel's 15 characters and are distinct, up to MaxNodes (node 10 is "a").
func TestLinkNamesFit(t *testing.T) {
	cfg := Config{Name: "abcdefghi", Nodes: MaxNodes, UnderlayBin: "/bin/true"}.withDefaults()
	p := &plan{cfg: cfg, bridgeM: "ul-" + cfg.Name + "-m", bridgeU: "ul-" + cfg.Name + "-u"}
	seen := map[string]bool{}
	for i := 1; i <= MaxNodes; i++ {
		for _, l := range p.links(&nodePlan{Index: i}) {
			if len(l.host) > 15 || seen[l.host] {
				t.Errorf("node %d: link %q too long or taken twice", i, l.host)
			}
			seen[l.host] = true
		}
	}
	if got := p.links(&nodePlan{Index: 3})[0].host; got != "ul-abcdefghi-m3" {
		t.Errorf("node 3's management link %q, want ul-abcdefghi-m3 (unchanged for nodes 1–9)", got)
	}
	if got := linkSuffix(10); got != "a" {
		t.Errorf("node 10's suffix %q, want a", got)
	}
}

// TestNotReady: a lab whose swarm does not come up names the nodes that
// hold it and what the managers say of each. Before, only "2 of 3 swarm
// nodes ready".
func TestNotReady(t *testing.T) {
	plan := []nodePlan{{Name: "node1", Host: "l-node1"}, {Name: "node2", Host: "l-node2"}, {Name: "node3", Host: "l-node3"}}
	list := []swarm.Node{
		{Description: swarm.NodeDescription{Hostname: "l-node1"}, Status: swarm.NodeStatus{State: swarm.NodeStateReady}},
		{Description: swarm.NodeDescription{Hostname: "l-node3"}, Status: swarm.NodeStatus{State: swarm.NodeStateDown, Message: "heartbeat failure"}},
	}
	got := notReady(plan, list, map[string]bool{"l-node1": true}, map[string]string{"l-node3": "active "})
	if want := ": node2 not in the swarm, node3 down (heartbeat failure), itself active"; got != want {
		t.Errorf("notReady = %q, want %q", got, want)
	}
	if got := notReady(plan[:1], list, map[string]bool{"l-node1": true}, nil); got != "" {
		t.Errorf("all ready: %q", got)
	}
}
