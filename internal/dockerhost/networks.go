package dockerhost

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"

	"github.com/underlay/underlay/internal/hostnet"
	"github.com/underlay/underlay/internal/netagent"
	"github.com/underlay/underlay/internal/netspec"
)

// Networks adapts a Docker client to netagent's Docker and Swarm interfaces.
type Networks struct {
	api *client.Client
	// callWait bounds each call to dockerd (see bounded).
	callWait time.Duration
}

// NewNetworks wraps api.
func NewNetworks(api *client.Client) *Networks { return &Networks{api: api, callWait: callWait} }

// bounded is ctx bounded by callWait, for one call to dockerd: the network
// sync, the IPAM leader's reclaims and the removals read and write
// networks and nodes in loops that run for good, and a dockerd that never
// answered one call held them with it. A call that times out fails as
// one dockerd refused, tried again at the loop's next turn.
func (n *Networks) bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, n.callWait)
}

// ConfigNetwork implements netagent.Docker.
func (n *Networks) ConfigNetwork(ctx context.Context, name string) (netagent.ConfigNet, error) {
	ctx, cancel := n.bounded(ctx)
	defer cancel()
	nw, err := n.api.NetworkInspect(ctx, name, network.InspectOptions{})
	if client.IsErrNotFound(err) {
		return netagent.ConfigNet{}, nil
	}
	if err != nil {
		return netagent.ConfigNet{}, fmt.Errorf("inspect network %s: %w", name, err)
	}
	return configNet(nw), nil
}

// configNet is what netagent needs to know of a network found under a
// config-only network's name.
func configNet(nw network.Inspect) netagent.ConfigNet {
	return netagent.ConfigNet{Exists: true, ID: nw.ID, Name: nw.Name, Network: managedConfigNetwork(nw.ConfigOnly, nw.Labels),
		ClusterIPAM: nw.IPAM.Driver == netspec.ClusterIPAMDriver, Range: configRange(nw),
		Parent: nw.Options["parent"], IPvlanMode: nw.Options["ipvlan_mode"]}
}

// managedConfigNetwork is the cluster network a config-only network was
// made for, by its labels; "" for a network underlay did not make.
func managedConfigNetwork(configOnly bool, labels map[string]string) string {
	if !configOnly || labels[netspec.LabelManaged] != "true" {
		return ""
	}
	return labels[netspec.LabelNetwork]
}

// configRange is the IPv4 range of a config-only network: its LabelRange,
// or for one made before underlay recorded it, the range Docker reports
// (Docker 20.10 and 28 do; 29 reports no IPAM config for a config-only
// network). The zero Prefix when neither says.
func configRange(nw network.Inspect) netip.Prefix {
	if p, err := netip.ParsePrefix(nw.Labels[netspec.LabelRange]); err == nil {
		return p
	}
	for _, c := range nw.IPAM.Config {
		if p, err := netip.ParsePrefix(c.IPRange); err == nil && p.Addr().Is4() {
			return p
		}
	}
	return netip.Prefix{}
}

// CreateConfigNetwork implements netagent.Docker.
func (n *Networks) CreateConfigNetwork(ctx context.Context, s netspec.Spec, p netspec.NodePlan) error {
	if s.IPAM == netspec.Cluster {
		return n.createClusterConfigNetwork(ctx, s)
	}
	aux := map[string]string{netspec.ShimAuxName: p.Shim.String()}
	for k, v := range s.Aux {
		aux[k] = v.String()
	}
	ipam := &network.IPAM{Config: []network.IPAMConfig{{
		Subnet: s.Subnet.String(), Gateway: s.Gateway.String(), IPRange: p.Block.String(), AuxAddress: aux,
	}}}
	opts := network.CreateOptions{
		ConfigOnly: true,
		Options:    s.DriverOptions(),
		IPAM:       ipam,
		Labels:     map[string]string{netspec.LabelManaged: "true", netspec.LabelNetwork: s.Name, netspec.LabelRange: p.Block.String()},
	}
	if p.IPv6.IsValid() {
		on := true
		opts.EnableIPv6 = &on
		c := network.IPAMConfig{Subnet: s.IPv6Subnet.String(), IPRange: p.IPv6.String()}
		if p.Shim6.IsValid() {
			c.AuxAddress = map[string]string{netspec.Shim6AuxName: p.Shim6.String()}
		}
		ipam.Config = append(ipam.Config, c)
	}
	ctx, cancel := n.bounded(ctx)
	defer cancel()
	if _, err := n.api.NetworkCreate(ctx, netspec.ConfigNetworkName(s.Name), opts); err != nil {
		return err
	}
	return nil
}

// createClusterConfigNetwork names underlay's IPAM driver with the same
// subnet on every node and no per-node range: the driver hands out
// addresses from the one pool.
func (n *Networks) createClusterConfigNetwork(ctx context.Context, s netspec.Spec) error {
	ipam := &network.IPAM{Driver: netspec.ClusterIPAMDriver, Config: []network.IPAMConfig{{Subnet: s.Subnet.String(), Gateway: s.Gateway.String()}}}
	opts := network.CreateOptions{
		ConfigOnly: true,
		Options:    s.DriverOptions(),
		IPAM:       ipam,
		Labels:     map[string]string{netspec.LabelManaged: "true", netspec.LabelNetwork: s.Name},
	}
	if s.IPv6Subnet.IsValid() {
		on := true
		opts.EnableIPv6 = &on
		ipam.Config = append(ipam.Config, network.IPAMConfig{Subnet: s.IPv6Subnet.String()})
	}
	ctx, cancel := n.bounded(ctx)
	defer cancel()
	_, err := n.api.NetworkCreate(ctx, netspec.ConfigNetworkName(s.Name), opts)
	return err
}

// RemoveNetwork implements netagent.Docker.
func (n *Networks) RemoveNetwork(ctx context.Context, name string) error {
	ctx, cancel := n.bounded(ctx)
	defer cancel()
	err := n.api.NetworkRemove(ctx, name)
	if err == nil || client.IsErrNotFound(err) {
		return nil
	}
	return fmt.Errorf("remove network %s: %w", name, err)
}

// ManagedConfigNetworks implements netagent.Docker.
func (n *Networks) ManagedConfigNetworks(ctx context.Context) ([]netagent.ConfigNet, error) {
	ctx, cancel := n.bounded(ctx)
	defer cancel()
	list, err := n.api.NetworkList(ctx, network.ListOptions{Filters: filters.NewArgs(filters.Arg("label", netspec.LabelManaged+"=true"))})
	if err != nil {
		return nil, fmt.Errorf("list networks: %w", err)
	}
	var out []netagent.ConfigNet
	for _, nw := range list {
		if cn := configNet(nw); cn.Network != "" {
			out = append(out, cn)
		}
	}
	return out, nil
}

// DockerLinks implements netagent.Docker: ReadLinks, each call to
// dockerd bounded (see bounded).
func (n *Networks) DockerLinks(ctx context.Context) (hostnet.DockerLinks, error) {
	return ReadLinks(ctx, boundedLinks{n})
}

// boundedLinks is n's client, each call bounded by n.callWait.
type boundedLinks struct{ n *Networks }

func (b boundedLinks) NetworkList(ctx context.Context, o network.ListOptions) ([]network.Summary, error) {
	ctx, cancel := b.n.bounded(ctx)
	defer cancel()
	return b.n.api.NetworkList(ctx, o)
}

func (b boundedLinks) ContainerList(ctx context.Context, o container.ListOptions) ([]container.Summary, error) {
	ctx, cancel := b.n.bounded(ctx)
	defer cancel()
	return b.n.api.ContainerList(ctx, o)
}

func (b boundedLinks) ContainerInspect(ctx context.Context, id string) (container.InspectResponse, error) {
	ctx, cancel := b.n.bounded(ctx)
	defer cancel()
	return b.n.api.ContainerInspect(ctx, id)
}

// IsLeader implements netagent.Swarm.
func (n *Networks) IsLeader(ctx context.Context) (bool, error) {
	ctx, cancel := n.bounded(ctx) // both calls: milliseconds each
	defer cancel()
	info, err := n.api.Info(ctx)
	if err != nil {
		return false, fmt.Errorf("docker info: %w", err)
	}
	if info.Swarm.LocalNodeState != swarm.LocalNodeStateActive || !info.Swarm.ControlAvailable {
		return false, nil
	}
	node, _, err := n.api.NodeInspectWithRaw(ctx, info.Swarm.NodeID)
	if err != nil {
		return false, fmt.Errorf("inspect swarm node %s: %w", info.Swarm.NodeID, err)
	}
	return node.ManagerStatus != nil && node.ManagerStatus.Leader, nil
}

// ReadyNodes implements netagent.Swarm and ipam.Cluster: the swarm node IDs
// of ready nodes (a node's identity; host names may repeat).
func (n *Networks) ReadyNodes(ctx context.Context) ([]string, error) {
	ctx, cancel := n.bounded(ctx)
	defer cancel()
	nodes, err := n.api.NodeList(ctx, swarm.NodeListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list swarm nodes: %w", err)
	}
	var out []string
	for _, nd := range nodes {
		if nd.Status.State == swarm.NodeStateReady {
			out = append(out, nd.ID)
		}
	}
	return out, nil
}

// SwarmNodes lists every node the swarm knows, whatever its state, by
// swarm node ID, with its state (ready, down, …): a node removed with
// docker node rm is not listed, and its ID never comes back.
func (n *Networks) SwarmNodes(ctx context.Context) (map[string]string, error) {
	nodes, err := n.ListSwarmNodes(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(nodes))
	for _, nd := range nodes {
		out[nd.ID] = nd.State
	}
	return out, nil
}

// ListSwarmNodes implements decommission.Swarm: every node the swarm
// knows, whatever its state, with its host name, as SwarmNodes lists them.
func (n *Networks) ListSwarmNodes(ctx context.Context) ([]netspec.SwarmNode, error) {
	ctx, cancel := n.bounded(ctx)
	defer cancel()
	nodes, err := n.api.NodeList(ctx, swarm.NodeListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list swarm nodes (is DOCKER_HOST a manager?): %w", err)
	}
	return toSwarmNodes(nodes), nil
}

// ReadySwarmNodes implements netagent.Swarm: the swarm's ready nodes, as
// ListSwarmNodes lists them, with their availability (ReadyNodes lists
// the same nodes' IDs).
func (n *Networks) ReadySwarmNodes(ctx context.Context) ([]netspec.SwarmNode, error) {
	ctx, cancel := n.bounded(ctx)
	defer cancel()
	nodes, err := n.api.NodeList(ctx, swarm.NodeListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list swarm nodes: %w", err)
	}
	return readySwarmNodes(nodes), nil
}

// readySwarmNodes maps the nodes of Docker's node list in state ready.
func readySwarmNodes(nodes []swarm.Node) []netspec.SwarmNode {
	return slices.DeleteFunc(toSwarmNodes(nodes), func(nd netspec.SwarmNode) bool {
		return nd.State != string(swarm.NodeStateReady)
	})
}

// toSwarmNodes maps Docker's node list: ID, the host name the node's
// engine reports, state and availability.
func toSwarmNodes(nodes []swarm.Node) []netspec.SwarmNode {
	out := make([]netspec.SwarmNode, len(nodes))
	for i, nd := range nodes {
		out[i] = netspec.SwarmNode{ID: nd.ID, Hostname: nd.Description.Hostname, State: string(nd.Status.State), Availability: string(nd.Spec.Availability)}
	}
	return out
}

// SwarmNetworkExists implements netagent.Swarm.
func (n *Networks) SwarmNetworkExists(ctx context.Context, name string) (bool, error) {
	_, ok, err := n.swarmNetwork(ctx, name)
	return ok, err
}

// swarmNetwork inspects the swarm network named name; ok is false when
// there is none. dockerd answers a name no network has with the network
// whose ID begins with it (api/server/router/network getNetwork), and a
// swarm network's ID is 25 lower-case letters and digits, which a
// network's name may begin: only a network of that very name is it.
func (n *Networks) swarmNetwork(ctx context.Context, name string) (nw network.Inspect, ok bool, err error) {
	ctx, cancel := n.bounded(ctx)
	defer cancel()
	nw, err = n.api.NetworkInspect(ctx, name, network.InspectOptions{Scope: "swarm"})
	if client.IsErrNotFound(err) {
		return network.Inspect{}, false, nil
	}
	if err != nil {
		return network.Inspect{}, false, fmt.Errorf("inspect network %s: %w", name, err)
	}
	if nw.Name != name || nw.Scope != "swarm" {
		return network.Inspect{}, false, nil
	}
	return nw, true, nil
}

// CreateSwarmNetwork implements netagent.Swarm.
func (n *Networks) CreateSwarmNetwork(ctx context.Context, s netspec.Spec) error {
	ctx, cancel := n.bounded(ctx)
	defer cancel()
	_, err := n.api.NetworkCreate(ctx, s.Name, network.CreateOptions{
		Driver:     s.DriverName(),
		Scope:      "swarm",
		ConfigFrom: &network.ConfigReference{Network: netspec.ConfigNetworkName(s.Name)},
		Attachable: true,
		// Docker refuses labels on a network built --config-from; it is
		// known as underlay's by its name and its config network's labels.
	})
	return err
}

// NetworksNamed implements netspec.NetworkLister: the networks whose name
// contains name (Docker's name filter), of any scope.
func (n *Networks) NetworksNamed(ctx context.Context, name string) ([]netspec.DockerNetwork, error) {
	ctx, cancel := n.bounded(ctx)
	defer cancel()
	list, err := n.api.NetworkList(ctx, network.ListOptions{Filters: filters.NewArgs(filters.Arg("name", name))})
	if err != nil {
		return nil, fmt.Errorf("list networks named %s: %w", name, err)
	}
	out := make([]netspec.DockerNetwork, len(list))
	for i, nw := range list {
		out[i] = netspec.DockerNetwork{ID: nw.ID, Name: nw.Name, Driver: nw.Driver, Labels: nw.Labels}
	}
	return out, nil
}

// SwarmNetworkID implements netspec.SwarmManager.
func (n *Networks) SwarmNetworkID(ctx context.Context, name string) (string, error) {
	nw, _, err := n.swarmNetwork(ctx, name)
	return nw.ID, err
}

// ServiceNetworks implements netspec.SwarmManager.
func (n *Networks) ServiceNetworks(ctx context.Context) (map[string][]string, error) {
	ctx, cancel := n.bounded(ctx)
	defer cancel()
	services, err := n.api.ServiceList(ctx, swarm.ServiceListOptions{})
	if err != nil {
		return nil, err
	}
	out := make(map[string][]string, len(services))
	for _, s := range services {
		var targets []string
		for _, nw := range serviceNetworks(s.Spec) {
			targets = append(targets, nw.Target)
		}
		out[s.Spec.Name] = targets
	}
	return out, nil
}

// serviceNetworks are the networks a service's tasks attach to: its task
// template's, or when that names none, the spec's own, which the API
// deprecated but swarmkit still reads then (its allocator, and the
// check that refuses to remove a network in use), as dockerd returns
// what a client stored there.
func serviceNetworks(s swarm.ServiceSpec) []swarm.NetworkAttachmentConfig {
	if len(s.TaskTemplate.Networks) > 0 {
		return s.TaskTemplate.Networks
	}
	return s.Networks
}
