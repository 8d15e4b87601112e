package doctor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/underlay/underlay/internal/hostnet"
	"github.com/underlay/underlay/internal/netspec"
)

// Files reads the kernel's files under /proc and /sys.
type Files interface {
	ReadFile(path string) ([]byte, error)
	Exists(path string) bool
}

// Links is the host's network links, as netlink shows them.
type Links interface {
	// Observe reads the state of a network's parent and shim.
	Observe(w hostnet.Want) (hostnet.Observed, error)
	// Parent describes a parent link, its lower device and its bond.
	Parent(name string) (hostnet.ParentFacts, error)
	// Conflicts reports the host's link holding a shim address, and the
	// host's route to a shim's range, that the agent refuses the shim's
	// for (hostnet.Host.Conflicts); nil each when there is none.
	Conflicts(w hostnet.Want) (addrs, routes error)
	// ProbeLink creates a link of kind (macvlan, ipvlan, vlan) on a
	// temporary link and deletes both, returning the error that stopped it.
	ProbeLink(kind string) error
}

// Firewall reads the FORWARD chains of iptables' two backends.
type Firewall interface {
	// Forward returns table filter's FORWARD chain of each backend
	// (nf_tables, legacy) that has one: none when neither does. With an
	// error it returns the chains it could read.
	Forward(ctx context.Context) ([]ForwardChain, error)
}

// Networks is the cluster's network specs and node reports (netspec.Store).
type Networks interface {
	Specs(ctx context.Context) ([]netspec.Spec, error)
	// ReadListing is Specs and, apart, the spec documents that cannot be
	// read and the keys under names Consul's paths redirect.
	ReadListing(ctx context.Context) (*netspec.Listing, error)
	NodeStates(ctx context.Context, name string) ([]netspec.NodeState, error)
	// ReadNodes lists the facts the nodes' agents published, and apart
	// the documents filed under another identity than the one they name.
	ReadNodes(ctx context.Context) ([]netspec.NodeFacts, []netspec.MisfiledFacts, error)
	// ReadFacts is ReadNodes with, apart, the documents that cannot be read.
	ReadFacts(ctx context.Context) (netspec.FactsListing, error)
}

// Docker is the local Docker daemon.
type Docker interface {
	// Facts reads version, swarm state; PluginDir is filled by the check.
	Facts(ctx context.Context) (DockerFacts, error)
	// Endpoints lists running containers' endpoints on the given networks
	// (by Docker network name), with their first exposed TCP port; those
	// it had no time left to learn the port of are Late.
	Endpoints(ctx context.Context, networks map[string]string) ([]Probe, error)
	// Services lists the replicated swarm services and the tasks swarm
	// wants running of each; managers only.
	Services(ctx context.Context) ([]ServiceFacts, error)
	// Managers lists the swarm's managers; managers only.
	Managers(ctx context.Context) ([]ManagerFacts, error)
	// NodeIDs lists the swarm node IDs of every node the swarm knows,
	// whatever its state; managers only.
	NodeIDs(ctx context.Context) (map[string]bool, error)
}

// Consul is the local Consul agent and, through it, the servers.
type Consul interface {
	// Facts reads the leader and a server's clock.
	Facts(ctx context.Context) ConsulFacts
}

// Dialer tries a TCP connection to addr.
type Dialer func(ctx context.Context, addr netip.AddrPort) error

// MacvlanCheck checks kernel macvlan support.
type MacvlanCheck struct {
	Files Files
	Links Links
}

// Name implements Check.
func (MacvlanCheck) Name() string { return "kernel/macvlan" }

// Run implements Check.
func (c MacvlanCheck) Run(ctx context.Context, logf Logf) []Result {
	f := MacvlanFacts{Loaded: moduleLoaded(c.Files, "macvlan")}
	if !f.Loaded {
		f.Probed, f.ProbeErr = true, c.Links.ProbeLink("macvlan")
	}
	return []Result{EvalMacvlan(f)}
}

// moduleLoaded reports whether a kernel module is loaded, from /sys/module
// or /proc/modules. Built-in modules without parameters show in neither.
func moduleLoaded(fs Files, name string) bool {
	if fs.Exists("/sys/module/" + name) {
		return true
	}
	b, err := fs.ReadFile("/proc/modules")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == name {
			return true
		}
	}
	return false
}

// vlanSupport reports whether the kernel has 802.1q: the module is
// loaded, or built in (then /proc/net/vlan exists).
func vlanSupport(fs Files) bool {
	return fs.Exists("/proc/net/vlan") || moduleLoaded(fs, "8021q")
}

// NetworksCheck checks, for every underlay network, this node's parent and
// shim against the node's own report.
type NetworksCheck struct {
	// NodeID is this node's identity (its swarm node ID; "" when Docker
	// does not say), Node its name: reports are matched by identity, by
	// name only when the identity is unknown.
	NodeID, Node string
	Networks     Networks
	Links        Links
	Files        Files
	// Parents is the agent's record of the VLAN parents it made (its
	// --state-dir's hostnet.ParentsFileName), judged here; Links reads
	// it too, to tell a parent dockerd made again unmarked at boot for
	// the agent's (hostnet.Observed.ParentMadeFor). nil: not read.
	Parents hostnet.ParentRecord
}

// Name implements Check.
func (NetworksCheck) Name() string { return "network" }

// Run implements Check.
func (c NetworksCheck) Run(ctx context.Context, logf Logf) []Result {
	facts, bad, unlisted, err := c.gather(ctx)
	if err != nil {
		return []Result{{Check: "network/specs", Status: Fail, Message: fmt.Sprintf("cannot read network specs from Consul: %v", err),
			Fix: "consul members   # the Consul agent must be reachable (see consul/agent)"}}
	}
	var rs []Result
	if c.Parents != nil {
		if _, err := c.Parents.List(); err != nil {
			rs = append(rs, EvalParentRecord(c.Parents.Where(), err))
		}
	}
	for _, k := range unlisted {
		rs = append(rs, Result{Check: "network/specs", Status: Warn, Message: netspec.UnlistedProblem(k)})
	}
	if len(facts) == 0 && len(bad) == 0 {
		return append(rs, Result{Check: "network/specs", Status: OK, Message: "no underlay networks defined"})
	}
	for _, f := range facts {
		rs = append(rs, EvalNetwork(f)...)
	}
	for _, b := range bad {
		rs = append(rs, EvalBadSpec(b))
	}
	return rs
}

func (c NetworksCheck) gather(ctx context.Context) (_ []NetworkFacts, _ []netspec.BadSpec, unlisted []string, _ error) {
	l, err := c.Networks.ReadListing(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	specs, bad := l.Specs, l.Bad
	vlan := vlanSupport(c.Files)
	var out []NetworkFacts
	for _, s := range specs {
		if s.Deleting {
			continue
		}
		f := NetworkFacts{Spec: s, VLANSupport: vlan}
		states, err := c.Networks.NodeStates(ctx, s.Name)
		if err != nil {
			return nil, nil, nil, err
		}
		f.State = c.ownState(states)
		w, ok := f.Want()
		f.Observed, f.ObserveErr = c.Links.Observe(w)
		if f.ObserveErr == nil {
			f.Parent, f.ObserveErr = c.Links.Parent(s.Parent)
		}
		if f.ObserveErr == nil && ok {
			f.AddrConflict, f.RouteConflict = c.Links.Conflicts(w)
		}
		out = append(out, f)
	}
	return out, bad, l.Unlisted, nil
}

// ownState picks this node's report among a network's: the one of its
// identity; only when none has it, one under its name with no identity
// (an older agent's, which an upgraded agent's report leaves behind).
func (c NetworksCheck) ownState(states []netspec.NodeState) *netspec.NodeState {
	var byName *netspec.NodeState
	for i, ns := range states {
		switch {
		case c.NodeID != "" && ns.ID == c.NodeID:
			return &states[i]
		case (c.NodeID == "" || ns.ID == "") && ns.Node == c.Node && byName == nil:
			byName = &states[i]
		}
	}
	return byName
}

// ModulesCheck checks the kernel modules the cluster's networks need
// beyond macvlan: 8021q for VLAN parents, ipvlan for ipvlan networks,
// bonding for parents on a bond.
type ModulesCheck struct {
	Networks Networks
	Links    Links
	Files    Files
}

// Name implements Check.
func (ModulesCheck) Name() string { return "kernel/modules" }

// Run implements Check. Without the specs it says nothing: the network
// check reports Consul.
func (c ModulesCheck) Run(ctx context.Context, logf Logf) []Result {
	specs, err := c.Networks.Specs(ctx)
	if err != nil {
		return []Result{{Check: "kernel/modules", Status: Warn, Message: fmt.Sprintf("cannot read network specs, modules not checked: %v", err)}}
	}
	need := map[string][]string{}
	var bonds []string
	for _, s := range specs {
		if s.Deleting {
			continue
		}
		lower, _, vlan := netspec.VLANParent(s.Parent)
		if vlan {
			need["8021q"] = append(need["8021q"], s.Name)
		}
		if s.DriverName() == netspec.IPvlan {
			need["ipvlan"] = append(need["ipvlan"], s.Name)
		}
		pf, err := c.Links.Parent(s.Parent)
		if err != nil {
			logf("parent %s: %v", s.Parent, err)
		}
		if pf.Bond != nil || strings.HasPrefix(s.Parent, "bond") || vlan && strings.HasPrefix(lower, "bond") {
			need["bonding"] = append(need["bonding"], s.Name)
			if pf.Bond != nil {
				bonds = append(bonds, pf.Bond.Name)
			}
		}
	}
	var rs []Result
	for _, mod := range []string{"8021q", "ipvlan", "bonding"} {
		if len(need[mod]) == 0 {
			continue
		}
		f := ModuleFacts{Module: mod, NeededBy: need[mod]}
		switch mod {
		case "8021q":
			f.Loaded = vlanSupport(c.Files)
		case "bonding":
			f.Loaded = moduleLoaded(c.Files, mod) || c.Files.Exists("/proc/net/bonding") || len(bonds) > 0
		default:
			f.Loaded = moduleLoaded(c.Files, mod)
		}
		if !f.Loaded && mod != "bonding" {
			kind := mod
			if mod == "8021q" {
				kind = "vlan"
			}
			f.Probed, f.ProbeErr = true, c.Links.ProbeLink(kind)
		}
		rs = append(rs, EvalModule(f))
	}
	return rs
}

// Pools reads the cluster-IPAM pools.
type Pools interface {
	// Read reads, by pool ID (NETWORK/v4, NETWORK/v6), each cluster-IPAM
	// pool's keys that cannot be read and the addresses nodes keep for
	// container starts under way.
	Read(ctx context.Context, specs []netspec.Spec) (map[string]PoolFacts, error)
}

// PoolFacts is what the doctor reads of one cluster-IPAM pool.
type PoolFacts struct {
	Bad  []BadKey
	Kept []KeptAddr
}

// KeptAddr is an address a node's agent keeps, unheld, for a container
// start under way on that node.
type KeptAddr struct {
	Addr netip.Addr
	// Node is the node's identity (swarm node ID).
	Node string
	// Allocated is when the start's address was allocated.
	Allocated time.Time
}

// IPAMCheck checks that the cluster-IPAM pools' KV documents are readable
// and that no start on this node (NodeID) has held an address for long.
type IPAMCheck struct {
	NodeID   string
	Networks Networks
	Pools    Pools
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Name implements Check.
func (IPAMCheck) Name() string { return "ipam" }

// Run implements Check.
func (c IPAMCheck) Run(ctx context.Context, logf Logf) []Result {
	specs, err := c.Networks.Specs(ctx)
	if err != nil {
		return EvalIPAMDocuments("pools", nil, err)
	}
	pools, err := c.Pools.Read(ctx, specs)
	if err != nil {
		return EvalIPAMDocuments("pools", nil, err)
	}
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	var rs []Result
	for _, id := range slices.Sorted(maps.Keys(pools)) {
		rs = append(rs, EvalIPAMDocuments(id, pools[id].Bad, nil)...)
		rs = append(rs, EvalKeptStarts(id, c.NodeID, pools[id].Kept, now())...)
	}
	return rs
}

// Documents reads one kind of KV document the nodes' agents publish.
type Documents interface {
	// Bad lists the published documents that cannot be used.
	Bad(ctx context.Context) ([]BadKey, error)
}

// DocumentsCheck checks that every published document of one kind is
// usable (inventories: `underlay ips` and the dashboard skip one that is
// not; task metrics reports: the autoscaler's averages leave one out).
type DocumentsCheck struct {
	Kind string
	Docs Documents
	// Eval judges what Docs returned (EvalInventories, EvalTaskReports).
	Eval func(bad []BadKey, err error) []Result
}

// Name implements Check.
func (c DocumentsCheck) Name() string { return c.Kind }

// Run implements Check.
func (c DocumentsCheck) Run(ctx context.Context, logf Logf) []Result {
	bad, err := c.Docs.Bad(ctx)
	return c.Eval(bad, err)
}

// NetfilterCheck checks the bridge-netfilter/FORWARD trap.
type NetfilterCheck struct {
	Files    Files
	Firewall Firewall
}

// Name implements Check.
func (NetfilterCheck) Name() string { return "netfilter/bridge-forward" }

// Run implements Check.
func (c NetfilterCheck) Run(ctx context.Context, logf Logf) []Result {
	var f NetfilterFacts
	b, err := c.Files.ReadFile(BridgeNFCallIPTables)
	switch {
	case err == nil:
		f.BridgeCallIPTables = strings.TrimSpace(string(b))
	case !errors.Is(err, fs.ErrNotExist): // absent: br_netfilter not loaded
		f.ReadErr = err
	}
	if f.BridgeCallIPTables == "1" {
		f.Chains, f.PolicyErr = c.Firewall.Forward(ctx)
	}
	return []Result{EvalNetfilter(f)}
}

// DockerCheck checks the local Docker daemon.
type DockerCheck struct {
	Docker Docker
	Files  Files
}

// Name implements Check.
func (DockerCheck) Name() string { return "docker" }

// Run implements Check.
func (c DockerCheck) Run(ctx context.Context, logf Logf) []Result {
	f, err := c.Docker.Facts(ctx)
	f.Err = err
	f.PluginDir = c.Files.Exists(PluginDir)
	return EvalDocker(f)
}

// SwarmCheck checks, on a manager, that the swarm's managers are all
// reachable and odd in number, and that swarm wants no replicated
// service's tasks running beyond its replicas.
type SwarmCheck struct{ Docker Docker }

// Name implements Check.
func (SwarmCheck) Name() string { return "swarm" }

// Run implements Check.
func (c SwarmCheck) Run(ctx context.Context, logf Logf) []Result {
	f, err := c.Docker.Facts(ctx)
	if err != nil {
		// The docker check reports the daemon down.
		msg := fmt.Sprintf("Docker daemon not reachable, not checked: %v", err)
		return []Result{{Check: "swarm/managers", Status: Warn, Message: msg}, {Check: "swarm/services", Status: Warn, Message: msg}}
	}
	if !f.Manager {
		return append(EvalManagers(false, nil, nil), EvalServices(false, nil, nil, time.Now())...)
	}
	managers, err := c.Docker.Managers(ctx)
	rs := EvalManagers(true, managers, err)
	svcs, err := c.Docker.Services(ctx)
	return append(rs, EvalServices(true, svcs, err, time.Now())...)
}

// RemovedNodesCheck finds the nodes the swarm no longer lists whose
// records remain in Consul (see package decommission).
type RemovedNodesCheck struct {
	Docker   Docker
	Networks Networks
}

// Name implements Check.
func (RemovedNodesCheck) Name() string { return "nodes" }

// Run implements Check.
func (c RemovedNodesCheck) Run(ctx context.Context, logf Logf) []Result {
	f, err := c.Docker.Facts(ctx)
	if err != nil {
		return []Result{{Check: "nodes/removed", Status: Warn, Message: fmt.Sprintf("Docker daemon not reachable, not checked: %v", err)}}
	}
	if !f.Manager {
		return EvalRemovedNodes(false, nil, nil, nil)
	}
	facts, _, err := c.Networks.ReadNodes(ctx) // misfiled ones: FactsCheck
	if err != nil {
		return EvalRemovedNodes(true, nil, nil, err)
	}
	ids, err := c.Docker.NodeIDs(ctx)
	return EvalRemovedNodes(true, facts, ids, err)
}

// FactsCheck checks that every node facts document names the identity
// its key does (netspec.MisfiledFacts).
type FactsCheck struct{ Networks Networks }

// Name implements Check.
func (FactsCheck) Name() string { return "nodes/facts" }

// Run implements Check.
func (c FactsCheck) Run(ctx context.Context, logf Logf) []Result {
	l, err := c.Networks.ReadFacts(ctx)
	return EvalFacts(l, err)
}

// ConsulCheck checks the local Consul agent and clock skew.
type ConsulCheck struct{ Consul Consul }

// Name implements Check.
func (ConsulCheck) Name() string { return "consul" }

// Run implements Check.
func (c ConsulCheck) Run(ctx context.Context, logf Logf) []Result {
	return EvalConsul(c.Consul.Facts(ctx))
}

// ProbeTimeout bounds each TCP connect to a container.
const ProbeTimeout = 2 * time.Second

// InspectShare is the percentage of the containers check's time left
// after reading the specs that its inspections of containers may take;
// the rest is the probes'.
const InspectShare = 60

// MaxProbes bounds the TCP connects to containers under way at once.
const MaxProbes = 64

// ContainersCheck checks that the host reaches its own containers on
// underlay networks, by a TCP connect to each one's first exposed port.
type ContainersCheck struct {
	Networks Networks
	Docker   Docker
	Dial     Dialer
}

// Name implements Check.
func (ContainersCheck) Name() string { return "containers" }

// Run implements Check.
func (c ContainersCheck) Run(ctx context.Context, logf Logf) []Result {
	specs, err := c.Networks.Specs(ctx)
	if err != nil {
		return []Result{{Check: "containers/reachable", Status: Warn, Message: fmt.Sprintf("cannot read network specs, containers not checked: %v", err)}}
	}
	// Docker network name (swarm network or node-local config-only) →
	// underlay network.
	nets := map[string]string{}
	for _, s := range specs {
		nets[s.Name] = s.Name
		nets[netspec.ConfigNetworkName(s.Name)] = s.Name
	}
	if len(specs) == 0 {
		return []Result{{Check: "containers/reachable", Status: OK, Message: "no underlay networks defined"}}
	}
	// A slow Docker's inspections would otherwise take the check's whole
	// time and leave the probes none: they stop at a share of what is
	// left, and what they did not reach counts as not probed in time.
	ictx := ctx
	if dl, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		ictx, cancel = context.WithDeadline(ctx, time.Now().Add(time.Until(dl)*InspectShare/100))
		defer cancel()
	}
	ps, err := c.Docker.Endpoints(ictx, nets)
	if err != nil {
		return EvalContainers(nil, err)
	}
	var wg sync.WaitGroup
	slots := make(chan struct{}, MaxProbes)
	for i := range ps {
		p := &ps[i]
		p.ShimLink = netspec.ShimLinkName(p.Network)
		if p.Port == 0 || p.Late { // no port, or not inspected in time
			continue
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil { // the check's time is over: not probed
			p.Late = true
			continue
		}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			dctx, cancel := context.WithTimeout(ctx, ProbeTimeout)
			defer cancel()
			p.Err = c.Dial(dctx, netip.AddrPortFrom(p.IP, uint16(p.Port)))
			// Cut by the check's time rather than its own: not judged.
			p.Late = p.Err != nil && ctx.Err() != nil
			logf("probe %s %s: %v", p.Container, netip.AddrPortFrom(p.IP, uint16(p.Port)), p.Err)
		}()
	}
	wg.Wait()
	// Stable: a container's IPv4 address stays before its IPv6 one.
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].Container < ps[j].Container })
	return EvalContainers(ps, nil)
}
