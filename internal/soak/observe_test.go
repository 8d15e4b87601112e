package soak_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/swarm"
	"github.com/hashicorp/consul/api"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/lab"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/register"
	"github.com/underlay/underlay/internal/scale"
	"github.com/underlay/underlay/internal/soak"
	"github.com/underlay/underlay/internal/testenv"
)

// The soak's networks: the cluster-IPAM one on the lab's underlay (eth1),
// the per-node one on a veth inside every node (one network per parent).
const (
	poolNet   = "pool"
	pnNet     = "pn"
	pnParent  = "soak0"
	plainName = "soak-plain" // what plain containers register as
	// plainLabel marks the plain containers the workload runs.
	plainLabel = "io.underlay.soak.plain"
)

// cluster observes the lab: what each node's dockerd runs, Consul's
// catalog, the IPAM pool, the nodes' shims and routes, the services.
type cluster struct {
	t      *testing.T
	lab    *testenv.Lab
	log    *soak.Log
	hosts  []string          // by node index
	ids    map[string]string // swarm node ID → host
	hold   []int             // namespace holder pids, by node index
	kv     *consul.KV        // node1's Consul (the server)
	consul *api.Client
	store  *netspec.Store
	pool   ipam.Pool
	// controls are the managers' control URLs; token scales through them.
	controls []string
	token    string
	services []svcDef
}

// svcDef is a service of the workload.
type svcDef struct {
	name, network string
	max           int
}

func (c *cluster) event(format string, args ...any) soak.Event {
	ev := c.log.Add(time.Now(), format, args...)
	c.t.Logf("soak %9s  %s", ev.At, ev.What)
	return ev
}

// newCluster makes the networks and reads what the observations need.
func newCluster(ctx context.Context, t *testing.T, l *testenv.Lab, e soakEnv) *cluster {
	t.Helper()
	m := l.Nodes[0]
	c := &cluster{t: t, lab: l, log: soak.NewLog(time.Now()), ids: map[string]string{}, consul: m.Consul,
		kv: consul.NewKV(m.Consul)}
	c.store = netspec.NewStore(c.kv)
	st, err := lab.GetStatus(ctx, l.Name)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range st.Nodes {
		c.hosts = append(c.hosts, n.Host)
		c.hold = append(c.hold, n.HolderPID)
		if n.ControlURL != "" {
			c.controls = append(c.controls, n.ControlURL)
		}
	}
	tok, err := readToken(st.ControlTokenFile)
	if err != nil {
		t.Fatal(err)
	}
	c.token = tok
	for _, n := range l.Nodes {
		info, err := n.Docker.Info(ctx)
		if err != nil || info.Swarm.NodeID == "" {
			t.Fatalf("%s's swarm node ID: %q %v", n.Host, info.Swarm.NodeID, err)
		}
		c.ids[info.Swarm.NodeID] = n.Host
		// The per-node network's parent: one end of a veth pair inside the
		// node (a second underlay the lab does not have; this kernel has
		// no dummy links), so each network has a parent of its own.
		for _, args := range [][]string{{"ip", "link", "add", pnParent, "type", "veth", "peer", "name", pnParent + "p"},
			{"ip", "link", "set", pnParent + "p", "up"}, {"ip", "link", "set", pnParent, "up"}} {
			if out, err := l.Exec(ctx, n.Name, args...); err != nil {
				t.Fatalf("%s: %s: %v %s", n.Name, strings.Join(args, " "), err, out)
			}
		}
	}
	gw := netip.PrefixFrom(e.subnet.Addr().Next(), 16)
	l.CreateNetwork(poolNet, "--ipam", "cluster", "--subnet", e.subnet.String(), "--gateway", gw.Addr().String(),
		"--ip-range", ipRange(e.subnet, 8), "--parent", "eth1")
	// The agents publish their links with their facts, every heartbeat.
	testenv.Eventually(t, 45*time.Second, func() (bool, string) {
		facts, err := c.store.Nodes(ctx)
		have := 0
		for _, f := range facts {
			if slices.Contains(f.Interfaces, pnParent) {
				have++
			}
		}
		return have == len(l.Nodes), fmt.Sprintf("%d of %d nodes publish %s (%v)", have, len(l.Nodes), pnParent, err)
	})
	l.CreateNetwork(pnNet, "--subnet", e.pnSubnet.String(), "--gateway", e.pnSubnet.Addr().Next().String(),
		"--ip-range", ipRange(e.pnSubnet, 4), "--per-node-size", "32", "--parent", pnParent)
	spec, ok, err := c.store.Get(ctx, poolNet)
	if err != nil || !ok {
		t.Fatalf("spec of %s: %v %v", poolNet, ok, err)
	}
	c.pool, _ = ipam.PoolOf(spec, false)
	return c
}

// ipRange is the /24 number third of a /16.
func ipRange(p netip.Prefix, third byte) string {
	a := p.Addr().As4()
	a[2] = third
	return netip.PrefixFrom(netip.AddrFrom4(a), 24).String()
}

// containers lists the running containers with an address on the soak's
// networks, node by node; a node that does not answer within 3 s is left
// out, with an error.
func (c *cluster) containers(ctx context.Context) ([]soak.Container, error) {
	cs, _, err := c.listContainers(ctx)
	return cs, err
}

// listContainers is containers, also naming the nodes whose dockerd
// answered: the others' containers are not among those returned.
func (c *cluster) listContainers(ctx context.Context) ([]soak.Container, []string, error) {
	out := make([][]soak.Container, len(c.lab.Nodes))
	errs := make([]error, len(c.lab.Nodes))
	var wg sync.WaitGroup
	for i, n := range c.lab.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			list, err := n.Docker.ContainerList(ctx, container.ListOptions{})
			if err != nil {
				errs[i] = fmt.Errorf("list containers of %s: %w", n.Host, err)
				return
			}
			for _, ct := range list {
				if ct.NetworkSettings == nil {
					continue
				}
				for _, nw := range []string{poolNet, pnNet} {
					ep := ct.NetworkSettings.Networks[nw]
					if ep == nil || ep.IPAddress == "" {
						continue
					}
					ip, err := netip.ParseAddr(ep.IPAddress)
					if err != nil {
						continue
					}
					svc := ct.Labels["com.docker.swarm.service.name"]
					if ct.Labels[plainLabel] != "" {
						svc = plainName
					}
					name := ct.ID[:12]
					if len(ct.Names) > 0 {
						name = strings.TrimPrefix(ct.Names[0], "/")
					}
					out[i] = append(out[i], soak.Container{Node: n.Host, ID: ct.ID, Name: name, Network: nw, IP: ip, Service: svc})
				}
			}
		}()
	}
	wg.Wait()
	var listed []string
	for i, n := range c.lab.Nodes {
		if errs[i] == nil {
			listed = append(listed, n.Host)
		}
	}
	return slices.Concat(out...), listed, errors.Join(errs...)
}

// confirmDuplicates returns the duplicates among cs that a second look
// (each holder inspected again, still running with that address) confirms:
// one listing per node is not one instant, and an address released on one
// node and taken on another between two listings is no duplicate.
func (c *cluster) confirmDuplicates(ctx context.Context, cs []soak.Container) []soak.Violation {
	if len(soak.Duplicates(cs)) == 0 {
		return nil
	}
	byAddr := map[string][]soak.Container{}
	for _, ct := range cs {
		k := ct.Network + "|" + ct.IP.String()
		byAddr[k] = append(byAddr[k], ct)
	}
	var again []soak.Container
	for _, holders := range byAddr {
		if len(holders) < 2 {
			continue
		}
		for _, h := range holders {
			if c.stillHolds(ctx, h) {
				again = append(again, h)
			}
		}
	}
	return soak.Duplicates(again)
}

// stillHolds reports whether ct still runs with its address.
func (c *cluster) stillHolds(ctx context.Context, ct soak.Container) bool {
	i := slices.Index(c.hosts, ct.Node)
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	got, err := c.lab.Nodes[i].Docker.ContainerInspect(ctx, ct.ID)
	if err != nil || got.State == nil || !got.State.Running || got.NetworkSettings == nil {
		return false
	}
	ep := got.NetworkSettings.Networks[ct.Network]
	return ep != nil && ep.IPAddress == ct.IP.String()
}

// observe takes one observation of the whole cluster.
func (c *cluster) observe(ctx context.Context) (soak.Settled, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	s := soak.Settled{Registered: []string{plainName}, ClusterNetworks: []string{poolNet},
		Networks: []string{poolNet, pnNet}, Nodes: c.hosts}
	var err error
	if s.Containers, err = c.containers(ctx); err != nil {
		return s, err
	}
	for _, sv := range c.services {
		s.Registered = append(s.Registered, sv.name)
	}
	if s.Registrations, err = c.registrations(ctx); err != nil {
		return s, err
	}
	if s.Allocations, err = c.allocations(ctx); err != nil {
		return s, err
	}
	if s.HostNets, err = c.hostNets(ctx); err != nil {
		return s, err
	}
	s.Services, err = c.bounds(ctx, s.Containers)
	return s, err
}

// registrations lists the agents' services in Consul's catalog.
func (c *cluster) registrations(ctx context.Context) ([]soak.Registration, error) {
	q := (&api.QueryOptions{}).WithContext(ctx)
	names, _, err := c.consul.Catalog().Services(q)
	if err != nil {
		return nil, fmt.Errorf("catalog services: %w", err)
	}
	var out []soak.Registration
	for name := range names {
		entries, _, err := c.consul.Catalog().Service(name, "", q)
		if err != nil {
			return nil, fmt.Errorf("catalog service %s: %w", name, err)
		}
		for _, e := range entries {
			if e.ServiceMeta[register.MetaNode] == "" {
				continue
			}
			addr, _ := netip.ParseAddr(e.ServiceAddress)
			out = append(out, soak.Registration{Node: e.Node, ServiceID: e.ServiceID, Service: e.ServiceName,
				ContainerID: e.ServiceMeta[register.MetaContainerID], Address: addr})
		}
	}
	return out, nil
}

// allocations lists the cluster pool's allocations, with node identities
// translated to host names.
func (c *cluster) allocations(ctx context.Context) ([]soak.Allocation, error) {
	all, err := ipam.Allocations(ctx, c.kv, c.pool)
	if err != nil {
		return nil, err
	}
	var out []soak.Allocation
	for a, al := range all {
		node := c.ids[al.Node]
		if node == "" {
			node = "unknown node " + al.Node
		}
		out = append(out, soak.Allocation{Network: poolNet, IP: a, Node: node, Kind: al.Kind})
	}
	return out, nil
}

// hostNets reads, in every node's network namespace, each network's shim
// link (its address) and whether the route to the node's range (the
// network's range, on a cluster network) goes through it.
func (c *cluster) hostNets(ctx context.Context) ([]soak.HostNet, error) {
	var out []soak.HostNet
	for _, nw := range []string{poolNet, pnNet} {
		states, err := c.store.NodeStates(ctx, nw)
		if err != nil {
			return nil, err
		}
		ranges := map[string]netip.Prefix{}
		for _, st := range states {
			ranges[c.ids[st.ID]] = st.Range
		}
		for i, host := range c.hosts {
			h, err := shimOf(c.hold[i], netspec.ShimLinkName(nw), ranges[host])
			if err != nil {
				return nil, fmt.Errorf("%s: %w", host, err)
			}
			h.Node, h.Network = host, nw
			out = append(out, h)
		}
	}
	return out, nil
}

// shimOf reads a shim link in the network namespace of pid.
func shimOf(pid int, link string, route netip.Prefix) (soak.HostNet, error) {
	var h soak.HostNet
	ns, err := netns.GetFromPid(pid)
	if err != nil {
		return h, fmt.Errorf("network namespace of %d: %w", pid, err)
	}
	defer ns.Close()
	nl, err := netlink.NewHandleAt(ns)
	if err != nil {
		return h, err
	}
	defer nl.Close()
	lk, err := nl.LinkByName(link)
	if err != nil {
		return h, nil // no shim
	}
	addrs, err := nl.AddrList(lk, netlink.FAMILY_V4)
	if err != nil {
		return h, fmt.Errorf("addresses of %s: %w", link, err)
	}
	if len(addrs) > 0 && lk.Attrs().OperState != netlink.OperDown {
		h.Shim, _ = netip.AddrFromSlice(addrs[0].IP.To4())
	}
	routes, err := nl.RouteList(lk, netlink.FAMILY_V4)
	if err != nil {
		return h, fmt.Errorf("routes of %s: %w", link, err)
	}
	for _, rt := range routes {
		if rt.Dst != nil && route.IsValid() && rt.Dst.String() == route.String() {
			h.Route = true
		}
	}
	return h, nil
}

// bounds reads each service's replicas and bounds, and counts its running
// tasks among cs.
func (c *cluster) bounds(ctx context.Context, cs []soak.Container) ([]soak.ServiceBounds, error) {
	var out []soak.ServiceBounds
	for _, sv := range c.services {
		s, _, err := c.lab.Nodes[0].Docker.ServiceInspectWithRaw(ctx, sv.name, swarm.ServiceInspectOptions{})
		if err != nil {
			return nil, fmt.Errorf("inspect service %s: %w", sv.name, err)
		}
		if s.Spec.Mode.Replicated == nil || s.Spec.Mode.Replicated.Replicas == nil {
			return nil, fmt.Errorf("service %s is not a replicated service", sv.name)
		}
		// The bounds as control reads them: a label missing or bad is an
		// error here, never a bound of 0.
		pol, err := scale.ParsePolicy(s.Spec.Labels)
		if err != nil {
			return nil, fmt.Errorf("service %s: %w", sv.name, err)
		}
		b := soak.ServiceBounds{Name: sv.name, Replicas: int(*s.Spec.Mode.Replicated.Replicas), Min: pol.Min, Max: pol.Max}
		// cs has a row per address: a task on two networks is one task.
		running := map[string]bool{}
		for _, ct := range cs {
			if ct.Service == sv.name {
				running[ct.ID] = true
			}
		}
		b.Running = len(running)
		out = append(out, b)
	}
	return out, nil
}
