package netspec

import (
	"fmt"
	"hash/fnv"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"github.com/underlay/underlay/internal/shellword"
)

// Labels put on every Docker network underlay creates.
const (
	LabelManaged = "io.underlay.managed"
	LabelNetwork = "io.underlay.network"
	// LabelRange records a per-node config-only network's IPv4 range:
	// Docker 29 no longer reports the IPAM config of a config-only network
	// (it has no allocations), so the range cannot be read back from it.
	LabelRange = "io.underlay.range"
)

// ClusterIPAMDriver is the Docker IPAM driver name of underlay's cluster
// IPAM, served by every agent.
const ClusterIPAMDriver = "underlay"

// NodePlan is what one node needs to carry a per-node network.
type NodePlan struct {
	Node  string       `json:"node"`
	Block netip.Prefix `json:"range"`
	// Shim is the host's own address on the network, on ShimLink.
	Shim     netip.Addr   `json:"shim"`
	ShimLink string       `json:"shim_link"`
	IPv6     netip.Prefix `json:"ipv6_range,omitzero"`
	// Shim6 is the host's address in IPv6, the last of IPv6 (Shim6).
	Shim6 netip.Addr `json:"shim6,omitzero"`
}

// ConfigNetworkName is the node-local config-only network behind the swarm
// network name.
func ConfigNetworkName(name string) string { return name + "-config" }

// ShimLinkName is the host's macvlan interface for network name: "ul-" and
// 8 hex digits of a hash, since interface names hold only 15 bytes.
func ShimLinkName(name string) string {
	h := fnv.New32a()
	h.Write([]byte(name))
	return fmt.Sprintf("ul-%08x", h.Sum32())
}

// shimNameRE matches the names ShimLinkName gives.
var shimNameRE = regexp.MustCompile(`^ul-[0-9a-f]{8}$`)

// IsShimLinkName reports whether name has the form of ShimLinkName's names.
func IsShimLinkName(name string) bool { return shimNameRE.MatchString(name) }

// Plan gives each node, in the order given, the next per-node range, as an
// operator would by hand. Agents lease ranges through Consul instead; Plan
// is for `underlay network plan` and for checking what the agents made.
func Plan(s Spec, nodes []string) ([]NodePlan, error) {
	if s.IPAM != PerNode {
		return nil, fmt.Errorf("network %s: a manual plan needs per-node IPAM, not %s", s.Name, s.IPAM)
	}
	blocks := Blocks(s)
	if len(nodes) > len(blocks) {
		return nil, fmt.Errorf("network %s: %d nodes but %s holds only %d ranges of %d addresses",
			s.Name, len(nodes), s.Range(), len(blocks), s.PerNodeSize)
	}
	plans := make([]NodePlan, len(nodes))
	for i, node := range nodes {
		p, err := NodePlanFor(s, node, blocks[i], i)
		if err != nil {
			return nil, err
		}
		plans[i] = p
	}
	return plans, nil
}

// NodePlanFor is the plan of a node that holds block, the index-th of the
// spec's blocks.
func NodePlanFor(s Spec, node string, block netip.Prefix, index int) (NodePlan, error) {
	shim, err := Shim(s, block)
	if err != nil {
		return NodePlan{}, fmt.Errorf("network %s on %s: %w", s.Name, node, err)
	}
	p := NodePlan{Node: node, Block: block, Shim: shim, ShimLink: ShimLinkName(s.Name)}
	if s.IPv6Subnet.IsValid() {
		p.IPv6 = IPv6Block(s, index)
		p.Shim6 = Shim6(p.IPv6)
	}
	return p, nil
}

// HostCommands are the ip commands that prepare a node: a VLAN parent
// made where missing, the parent up (and promiscuous for macvlan), and a
// shim of the network's driver (a bridge-mode macvlan, or an ipvlan: an
// ipvlan cannot reach its own parent either) with a route to the node's
// range, so the host reaches its own containers.
func HostCommands(s Spec, p NodePlan) []string {
	var cmds []string
	if lower, vid, ok := VLANParent(s.Parent); ok {
		cmds = append(cmds, fmt.Sprintf("ip link add link %s name %s type vlan id %d   # unless it exists", lower, s.Parent, vid))
	}
	up := fmt.Sprintf("ip link set %s up", s.Parent)
	if s.NeedsPromisc() {
		up += " promisc on"
	}
	cmds = append(cmds, up,
		fmt.Sprintf("ip link add %s link %s type %s", p.ShimLink, s.Parent, ShimType(s)),
		fmt.Sprintf("ip addr add %s/32 dev %s", p.Shim, p.ShimLink))
	if p.Shim6.IsValid() {
		cmds = append(cmds, fmt.Sprintf("ip -6 addr add %s/128 dev %s nodad", p.Shim6, p.ShimLink))
	}
	cmds = append(cmds, fmt.Sprintf("ip link set %s up", p.ShimLink),
		fmt.Sprintf("ip route add %s dev %s", p.Block, p.ShimLink))
	if p.IPv6.IsValid() {
		cmds = append(cmds, fmt.Sprintf("ip -6 route add %s dev %s metric 1", p.IPv6, p.ShimLink))
	}
	return cmds
}

// ShimType is the `ip link add … type` of a network's host shim:
// "macvlan mode bridge" or "ipvlan mode l2" (l3).
func ShimType(s Spec) string {
	if s.DriverName() == IPvlan {
		return "ipvlan mode " + s.IPvlanModeName()
	}
	return "macvlan mode bridge"
}

// ConfigNetworkArgs are the docker CLI arguments creating a node's
// config-only network.
func ConfigNetworkArgs(s Spec, p NodePlan) []string {
	args := []string{"network", "create", "--config-only",
		"--subnet", s.Subnet.String(), "--gateway", s.Gateway.String(), "--ip-range", p.Block.String()}
	aux := map[string]string{ShimAuxName: p.Shim.String()}
	for k, v := range s.Aux {
		aux[k] = v.String()
	}
	for _, k := range slices.Sorted(maps.Keys(aux)) {
		args = append(args, "--aux-address", k+"="+aux[k])
	}
	if p.IPv6.IsValid() {
		args = append(args, "--ipv6", "--subnet", s.IPv6Subnet.String(), "--ip-range", p.IPv6.String())
		if p.Shim6.IsValid() {
			args = append(args, "--aux-address", Shim6AuxName+"="+p.Shim6.String())
		}
	}
	args = append(args, "-o", "parent="+s.Parent)
	if m := s.IPvlanModeName(); m != "" {
		args = append(args, "-o", "ipvlan_mode="+m)
	}
	args = append(args, "--label", LabelManaged+"=true", "--label", LabelNetwork+"="+s.Name, "--label", LabelRange+"="+p.Block.String(),
		ConfigNetworkName(s.Name))
	return args
}

// SwarmNetworkArgs are the docker CLI arguments creating the swarm network
// on a manager once every node has its config-only network.
func SwarmNetworkArgs(s Spec) []string {
	return []string{"network", "create", "-d", s.DriverName(), "--scope", "swarm", "--attachable",
		"--config-from", ConfigNetworkName(s.Name), s.Name}
}

// Script renders the whole manual procedure, node by node, as shell.
func Script(s Spec, plans []NodePlan, manager string) string {
	var b strings.Builder
	driver := s.DriverName()
	if m := s.IPvlanModeName(); m != "" {
		driver += " " + m
	}
	fmt.Fprintf(&b, "# underlay network plan for %s (%s): subnet %s, gateway %s, parent %s, %d addresses per node\n",
		s.Name, driver, s.Subnet, s.Gateway, s.Parent, s.PerNodeSize)
	for _, p := range plans {
		fmt.Fprintf(&b, "\n# on %s (range %s, host shim %s on %s)\n", p.Node, p.Block, p.Shim, p.ShimLink)
		for _, c := range HostCommands(s, p) {
			fmt.Fprintln(&b, c)
		}
		fmt.Fprintln(&b, "docker "+shellword.Join(ConfigNetworkArgs(s, p)))
	}
	fmt.Fprintf(&b, "\n# then once, on a manager (%s)\n", manager)
	fmt.Fprintln(&b, "docker "+shellword.Join(SwarmNetworkArgs(s)))
	return b.String()
}
