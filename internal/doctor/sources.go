package doctor

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stringid"
	"github.com/hashicorp/consul/api"
	"github.com/vishvananda/netlink"
	"golang.org/x/sync/errgroup"

	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/dockerhost"
	"github.com/underlay/underlay/internal/hostnet"
	"github.com/underlay/underlay/internal/inventory"
	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/taskmetrics"
)

// This file holds the real implementations of the checks' interfaces.

// OSFiles reads the real /proc and /sys.
type OSFiles struct{}

// ReadFile implements Files.
func (OSFiles) ReadFile(path string) ([]byte, error) { return os.ReadFile(path) }

// Exists implements Files.
func (OSFiles) Exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// NetlinkLinks reads links with netlink in this process's network namespace.
type NetlinkLinks struct {
	// Parents is the agent's record of the VLAN parents it made, which
	// tells an unmarked one dockerd made again at boot for the agent's
	// (hostnet.Observed.ParentMadeFor); nil: none is.
	Parents hostnet.ParentRecord
}

// Observe implements Links.
func (l NetlinkLinks) Observe(w hostnet.Want) (hostnet.Observed, error) {
	return hostnet.Host{Parents: l.Parents}.Observe(w)
}

// Conflicts implements Links.
func (NetlinkLinks) Conflicts(w hostnet.Want) (addrs, routes error) {
	return hostnet.Host{}.Conflicts(w)
}

// Parent implements Links.
func (NetlinkLinks) Parent(name string) (hostnet.ParentFacts, error) {
	return hostnet.InspectParent(name)
}

// ProbeLinkPrefix starts the names of the temporary links ProbeLink
// makes, so that one left by a crash is recognisably ours.
const ProbeLinkPrefix = "uldoc"

// ProbeLink implements Links: it creates a veth pair named uldoc<hex>, a
// link of kind on it, and deletes them (deleting the veth takes its peer
// and the child along).
func (NetlinkLinks) ProbeLink(kind string) error {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	name := ProbeLinkPrefix + hex.EncodeToString(b)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name + "a"}, PeerName: name + "b"}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("create probe veth %s: %w", veth.Name, err)
	}
	defer func() {
		if l, err := netlink.LinkByName(veth.Name); err == nil {
			netlink.LinkDel(l)
		}
	}()
	parent, err := netlink.LinkByName(veth.Name)
	if err != nil {
		return err
	}
	attrs := netlink.LinkAttrs{Name: name + "m", ParentIndex: parent.Attrs().Index}
	var child netlink.Link
	switch kind {
	case "macvlan":
		child = &netlink.Macvlan{LinkAttrs: attrs, Mode: netlink.MACVLAN_MODE_BRIDGE}
	case "ipvlan":
		child = &netlink.IPVlan{LinkAttrs: attrs, Mode: netlink.IPVLAN_MODE_L2}
	case "vlan":
		child = &netlink.Vlan{LinkAttrs: attrs, VlanId: 4094}
	default:
		return fmt.Errorf("no probe for links of kind %q", kind)
	}
	if err := netlink.LinkAdd(child); err != nil {
		return fmt.Errorf("create probe %s on %s: %w", kind, veth.Name, err)
	}
	return nil
}

// DockerAPI adapts a Docker client to Docker.
type DockerAPI struct {
	API *client.Client
	// IdentityTimeout bounds each question NodeID and NodeName ask;
	// 0 means IdentityTimeout.
	IdentityTimeout time.Duration
}

// identityTimeout is d's IdentityTimeout, the default in place of 0.
func (d DockerAPI) identityTimeout() time.Duration {
	return cmp.Or(d.IdentityTimeout, IdentityTimeout)
}

// Facts implements Docker.
func (d DockerAPI) Facts(ctx context.Context) (DockerFacts, error) {
	v, err := d.API.ServerVersion(ctx)
	if err != nil {
		return DockerFacts{}, err
	}
	info, err := d.API.Info(ctx)
	if err != nil {
		return DockerFacts{}, err
	}
	return DockerFacts{Version: v.Version, SwarmState: string(info.Swarm.LocalNodeState), Manager: info.Swarm.ControlAvailable}, nil
}

// Name returns the daemon's host name, which agents use as node name.
func (d DockerAPI) Name(ctx context.Context) (string, error) {
	info, err := d.API.Info(ctx)
	if err != nil {
		return "", err
	}
	return info.Name, nil
}

// Services implements Docker.
func (d DockerAPI) Services(ctx context.Context) ([]ServiceFacts, error) {
	svcs, err := d.API.ServiceList(ctx, swarm.ServiceListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list services: %w", err)
	}
	tasks, err := d.API.TaskList(ctx, swarm.TaskListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list tasks: %w", err)
	}
	wanted := map[string][]TaskFacts{}
	for _, t := range tasks {
		if (t.DesiredState == swarm.TaskStateRunning || t.DesiredState == swarm.TaskStateReady) && !taskEnded(t.Status.State) {
			wanted[t.ServiceID] = append(wanted[t.ServiceID], TaskFacts{ID: t.ID, Slot: t.Slot, State: string(t.Status.State)})
		}
	}
	var out []ServiceFacts
	for _, s := range svcs {
		r := s.Spec.Mode.Replicated
		if r == nil || r.Replicas == nil {
			continue // global services and jobs have no count to exceed
		}
		f := ServiceFacts{Name: s.Spec.Name, Replicas: *r.Replicas, Wanted: wanted[s.ID], UpdatedAt: s.UpdatedAt}
		if s.UpdateStatus != nil {
			f.UpdateState = string(s.UpdateStatus.State)
		}
		out = append(out, f)
	}
	return out, nil
}

// NodeIDs implements Docker.
func (d DockerAPI) NodeIDs(ctx context.Context) (map[string]bool, error) {
	nodes, err := d.API.NodeList(ctx, swarm.NodeListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list swarm nodes: %w", err)
	}
	out := make(map[string]bool, len(nodes))
	for _, n := range nodes {
		out[n.ID] = true
	}
	return out, nil
}

// Managers implements Docker.
func (d DockerAPI) Managers(ctx context.Context) ([]ManagerFacts, error) {
	nodes, err := d.API.NodeList(ctx, swarm.NodeListOptions{Filters: filters.NewArgs(filters.Arg("role", "manager"))})
	if err != nil {
		return nil, fmt.Errorf("list managers: %w", err)
	}
	out := make([]ManagerFacts, 0, len(nodes))
	for _, n := range nodes {
		m := ManagerFacts{Name: n.Description.Hostname, ID: n.ID, Reachability: "unknown"}
		if n.ManagerStatus != nil {
			m.Reachability, m.Leader = string(n.ManagerStatus.Reachability), n.ManagerStatus.Leader
		}
		out = append(out, m)
	}
	return out, nil
}

// taskEnded says a task's observed state is final: swarm replaces such a
// task (or already did) rather than count it.
func taskEnded(s swarm.TaskState) bool {
	switch s {
	case swarm.TaskStateComplete, swarm.TaskStateShutdown, swarm.TaskStateFailed, swarm.TaskStateRejected, swarm.TaskStateRemove, swarm.TaskStateOrphaned:
		return true
	}
	return false
}

// MaxInspects bounds the container inspections under way at once.
const MaxInspects = 8

// Endpoints implements Docker. It inspects the containers on those
// networks, MaxInspects at once (one at a time, thousands took longer
// than the check's time); those ctx leaves uninspected are Late.
func (d DockerAPI) Endpoints(ctx context.Context, networks map[string]string) ([]Probe, error) {
	list, err := d.API.ContainerList(ctx, container.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	var ids []string
	var eps [][]Probe // by container, as ids
	for _, c := range list {
		if mine := endpointsOf(c, networks); len(mine) > 0 {
			ids, eps = append(ids, c.ID), append(eps, mine)
		}
	}
	// Each inspection writes only its own container's entries.
	ports, inspected, gone := make([]int, len(ids)), make([]bool, len(ids)), make([]bool, len(ids))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(MaxInspects)
	for i, id := range ids {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			port, err := d.exposedPort(gctx, id)
			switch {
			case client.IsErrNotFound(err):
				gone[i] = true // ended since the list: nothing left to reach
			case err != nil:
				return fmt.Errorf("inspect container %s: %w", stringid.TruncateID(id), err)
			default:
				ports[i], inspected[i] = port, true
			}
			return nil
		})
	}
	// Out of time, the error is the deadline's: what was not inspected
	// is late rather than the whole listing failed.
	if err := g.Wait(); err != nil && ctx.Err() == nil {
		return nil, err
	}
	var out []Probe
	for i, mine := range eps {
		if gone[i] {
			continue
		}
		for j := range mine {
			mine[j].Port, mine[j].Late = ports[i], !inspected[i]
		}
		out = append(out, mine...)
	}
	return out, nil
}

// endpointsOf lists c's endpoints on networks (Docker network name →
// underlay network), both families: the host reaches its containers'
// IPv6 addresses through the shim too. An IPv4-mapped address
// (::ffff:a.b.c.d) is the IPv4 address it maps, given once. One with a
// zone is none: no container's address has one, and a zone, any text,
// names a host interface to dial through.
func endpointsOf(c container.Summary, networks map[string]string) []Probe {
	if c.NetworkSettings == nil {
		return nil
	}
	var mine []Probe
	// By name, not in the map's order: the rows stay in one order from
	// run to run.
	for _, netName := range slices.Sorted(maps.Keys(c.NetworkSettings.Networks)) {
		ep := c.NetworkSettings.Networks[netName]
		under, ok := networks[netName]
		if !ok || ep == nil {
			continue
		}
		var seen netip.Addr
		for _, a := range []string{ep.IPAddress, ep.GlobalIPv6Address} {
			if ip, err := netip.ParseAddr(a); err == nil && ip.Zone() == "" && ip.Unmap() != seen {
				seen = ip.Unmap()
				mine = append(mine, Probe{Container: dockerhost.ContainerName(c.Names, c.ID), Network: under, IP: seen})
			}
		}
	}
	return mine
}

// exposedPort is the first TCP port container id exposes (0: none).
func (d DockerAPI) exposedPort(ctx context.Context, id string) (int, error) {
	j, err := d.API.ContainerInspect(ctx, id)
	if err != nil || j.Config == nil {
		return 0, err
	}
	var ports []int
	for p := range j.Config.ExposedPorts {
		// Int is 0 for what is no port number (a range, a word, past
		// 65535): passed over, not taken as the first port.
		if n := p.Int(); p.Proto() == "tcp" && n > 0 {
			ports = append(ports, n)
		}
	}
	if len(ports) == 0 {
		return 0, nil
	}
	return slices.Min(ports), nil
}

// ConsulAPI adapts a Consul agent to Consul.
type ConsulAPI struct {
	API *api.Client
	// HTTP, Scheme and Port reach the servers' HTTP APIs (at the leader's
	// address, on the local agent's HTTP port) and, failing that, the
	// local agent at Local, to read a Date header.
	HTTP   *http.Client
	Scheme string
	Local  string // host:port of the local agent
}

// NewConsulAPI adapts c, with ep (the same agent's plain HTTP endpoint,
// both built by package consul), to Consul.
func NewConsulAPI(c *api.Client, ep consul.Endpoint) *ConsulAPI {
	hc := *ep.HTTP
	hc.Timeout = 3 * time.Second
	return &ConsulAPI{API: c, HTTP: &hc, Scheme: ep.Scheme, Local: ep.Addr}
}

// Facts implements Consul.
func (c *ConsulAPI) Facts(ctx context.Context) ConsulFacts {
	var f ConsulFacts
	f.Leader, f.Err = c.API.Status().LeaderWithQueryOptions((&api.QueryOptions{}).WithContext(ctx))
	if f.Err != nil {
		return f
	}
	var tried []string
	if host, _, err := net.SplitHostPort(f.Leader); err == nil {
		if _, port, err := net.SplitHostPort(c.Local); err == nil {
			server := net.JoinHostPort(host, port)
			f.ServerDate, f.LocalAt, err = c.date(ctx, server)
			if err == nil {
				f.Source = "the Consul leader (" + server + ")"
				return f
			}
			tried = append(tried, err.Error())
		}
	}
	// The leader's HTTP API is not reachable from here: fall back to the
	// local agent, which on a client node is this host's own clock.
	var err error
	if f.ServerDate, f.LocalAt, err = c.date(ctx, c.Local); err == nil {
		why := "was not reachable"
		if len(tried) > 0 {
			why += ": " + tried[0]
		}
		f.Source = "the local Consul agent (" + c.Local + "; the leader's HTTP API " + why + ")"
		return f
	}
	f.ServerDate, f.DateErr = time.Time{}, errors.New(strings.Join(append(tried, err.Error()), "; "))
	return f
}

// date reads the Date header of a response from the Consul HTTP API at
// hostport, and this host's clock half-way through the request.
func (c *ConsulAPI) date(ctx context.Context, hostport string) (time.Time, time.Time, error) {
	if strings.HasPrefix(hostport, "unix://") {
		return time.Time{}, time.Time{}, errors.New("no Date over a unix socket address")
	}
	// Built, not parsed from a string: an IPv6 zone (fe80::1%eth0) is
	// %25 in a URL, and taken raw it would not parse.
	u := &url.URL{Scheme: c.Scheme, Host: hostport, Path: "/v1/status/leader"}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return time.Time{}, time.Time{}, fmt.Errorf("request to %s: %w", hostport, err)
	}
	start := time.Now()
	resp, err := c.HTTP.Do(req)
	end := time.Now()
	if err != nil {
		return time.Time{}, time.Time{}, err
	}
	resp.Body.Close()
	d, err := http.ParseTime(resp.Header.Get("Date"))
	if err != nil {
		return time.Time{}, time.Time{}, fmt.Errorf("date header from %s: %w", hostport, err)
	}
	return d, start.Add(end.Sub(start) / 2), nil
}

// DialTCP is the real Dialer: a refused connection means the container's
// host answered, so it counts as reached.
func DialTCP(ctx context.Context, addr netip.AddrPort) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return nil
		}
		return err
	}
	return conn.Close()
}

// Env is a doctor run's connections; Checks builds the checks over them.
type Env struct {
	// NodeID is this node's swarm node ID ("" when unknown), Node its name.
	NodeID, Node string
	Docker       *DockerAPI
	Consul       *ConsulAPI
	Networks     Networks
	Pools        Pools
	Inventories  Documents
	TaskReports  Documents
	// StateDir is the agent's --state-dir, whose record of the VLAN
	// parents it made is read (never written); "": none is.
	StateDir string
}

// Checks returns every check, in report order.
func (e Env) Checks() []Check {
	files, links := OSFiles{}, NetlinkLinks{}
	var parents hostnet.ParentRecord
	if e.StateDir != "" {
		parents = hostnet.NewParentFile(e.StateDir)
		links.Parents = parents
	}
	return []Check{
		MacvlanCheck{Files: files, Links: links},
		ModulesCheck{Networks: e.Networks, Links: links, Files: files},
		NetworksCheck{NodeID: e.NodeID, Node: e.Node, Networks: e.Networks, Links: links, Files: files, Parents: parents},
		IPAMCheck{NodeID: e.NodeID, Networks: e.Networks, Pools: e.Pools},
		DocumentsCheck{Kind: "inventory", Docs: e.Inventories, Eval: EvalInventories},
		DocumentsCheck{Kind: "taskmetrics", Docs: e.TaskReports, Eval: EvalTaskReports},
		NetfilterCheck{Files: files, Firewall: KernelFirewall{}},
		DockerCheck{Docker: e.Docker, Files: files},
		SwarmCheck{Docker: e.Docker},
		FactsCheck{Networks: e.Networks},
		RemovedNodesCheck{Docker: e.Docker, Networks: e.Networks},
		ConsulCheck{Consul: e.Consul},
		ContainersCheck{Networks: e.Networks, Docker: e.Docker, Dial: DialTCP},
	}
}

// KVInventories reads the published inventories through Consul KV, with
// the node facts they are checked against (inventory.Load).
type KVInventories struct{ KV netspec.KV }

// Bad implements Documents.
func (i KVInventories) Bad(ctx context.Context) ([]BadKey, error) {
	facts, err := netspec.NewStore(i.KV).Nodes(ctx)
	if err != nil {
		return nil, err
	}
	_, bad, err := inventory.Load(ctx, i.KV, facts)
	if err != nil {
		return nil, err
	}
	out := make([]BadKey, len(bad))
	for j, b := range bad {
		out[j] = BadKey{Key: b.Key, Problem: b.Problem, Effect: b.Effect, Fix: b.Fix}
	}
	return out, nil
}

// KVTaskReports reads the published task metrics reports through Consul
// KV (taskmetrics.Load).
type KVTaskReports struct{ KV taskmetrics.Lister }

// Bad implements Documents.
func (r KVTaskReports) Bad(ctx context.Context) ([]BadKey, error) {
	_, bad, err := taskmetrics.Load(ctx, r.KV)
	if err != nil {
		return nil, err
	}
	out := make([]BadKey, len(bad))
	for j, b := range bad {
		out[j] = BadKey{Key: b.Key, Problem: b.Problem, Effect: "the autoscaler's averages leave it out", Fix: b.Fix}
	}
	return out, nil
}

// IdentityTimeout bounds each question to Docker about this node's
// identity and name, asked before any check (with no check's deadline).
const IdentityTimeout = 5 * time.Second

// NodeID is this node's swarm node ID, its identity in the cluster; ""
// when Docker does not answer or the node is in no swarm.
func NodeID(ctx context.Context, d *DockerAPI) string {
	if d == nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, d.identityTimeout())
	defer cancel()
	info, err := d.API.Info(ctx)
	if err != nil {
		return ""
	}
	return info.Swarm.NodeID
}

// IPAMPools reads pools through Consul KV (ipam.Inspect).
type IPAMPools struct{ KV ipam.KV }

// Read implements Pools.
func (p IPAMPools) Read(ctx context.Context, specs []netspec.Spec) (map[string]PoolFacts, error) {
	out := map[string]PoolFacts{}
	for _, s := range specs {
		if s.IPAM != netspec.Cluster {
			continue
		}
		for _, v6 := range []bool{false, true} {
			if v6 && !s.IPv6Subnet.IsValid() {
				continue
			}
			pool, _ := ipam.PoolOf(s, v6)
			c, err := ipam.Inspect(ctx, p.KV, pool)
			if err != nil {
				return nil, err
			}
			var f PoolFacts
			for _, b := range c.Bad {
				fix, why := b.Removal()
				f.Bad = append(f.Bad, BadKey{Key: b.Key, Problem: b.Err.Error() + why, Effect: b.Effect(), Fix: fix})
			}
			for a, al := range c.Allocs {
				if c.Kept.For(a, al) {
					f.Kept = append(f.Kept, KeptAddr{Addr: a, Node: al.Node, Allocated: al.At})
				}
			}
			out[pool.ID()] = f
		}
	}
	return out, nil
}

// NodeName resolves the node name: given, else Docker's host name (the
// agent's default), else the kernel's.
func NodeName(ctx context.Context, given string, d *DockerAPI) string {
	if given != "" {
		return given
	}
	if d != nil {
		ctx, cancel := context.WithTimeout(ctx, d.identityTimeout())
		defer cancel()
		if n, err := d.Name(ctx); err == nil && n != "" {
			return n
		}
	}
	n, _ := os.Hostname()
	return n
}
