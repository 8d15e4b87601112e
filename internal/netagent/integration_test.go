package netagent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/vishvananda/netlink"

	"github.com/underlay/underlay/internal/app"
	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/dockerhost"
	"github.com/underlay/underlay/internal/hostnet"
	"github.com/underlay/underlay/internal/netagent"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/testenv"
)

// underlay runs the CLI in-process against the test's Consul.
func underlay(t *testing.T, consulAddr string, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	args = append(args, "--consul-addr", consulAddr)
	code := app.Run(context.Background(), args, app.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
	if code != 0 {
		return out.String(), fmt.Errorf("underlay %s: exit %d: %s", strings.Join(args, " "), code, errOut.String())
	}
	return out.String(), nil
}

// TestIntegrationNetworkLifecycle runs one node's reconciler against the
// machine's dockerd (a single-node swarm) and a private Consul: create,
// realise, use, drift, refuse, remove.
func TestIntegrationNetworkLifecycle(t *testing.T) {
	testenv.Require(t)
	d := testenv.Docker(t)
	leave := testenv.Swarm(t, d)
	defer leave()
	c := testenv.StartConsul(t)
	id := testenv.ID(t)
	parent := testenv.VethParent(t, "")
	v4, v6, prefix := testenv.Subnets(t)
	name := "un-" + id
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	info, err := d.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	kv := consul.NewKV(c.Client())
	st := netspec.NewStore(kv)
	nets := dockerhost.NewNetworks(d)
	facts := &netagent.Facts{Store: st, ID: info.Swarm.NodeID, Node: info.Name, Holder: netagent.Self()}
	if err := facts.Claim(ctx); err != nil {
		t.Fatal(err)
	}
	rec := &netagent.Reconciler{
		ID: info.Swarm.NodeID, Node: info.Name, Facts: facts, Store: st, Docker: nets, Swarm: nets, Host: hostnet.Host{}, RemoveShim: hostnet.RemoveShim,
		Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
	done := make(chan struct{})
	links, err := hostnet.Watch(ctx, rec.Log)
	if err != nil {
		t.Fatal(err)
	}
	// A long period: changes must be noticed through the watches alone.
	go func() { rec.Run(ctx, kv.Watch(ctx, netspec.KVPrefix), links, time.Hour); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		hostnet.RemoveShim(netspec.ShimLinkName(name), name)
		d.NetworkRemove(context.Background(), name)
		d.NetworkRemove(context.Background(), netspec.ConfigNetworkName(name))
	})
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		nodes, _ := st.Nodes(ctx)
		return len(nodes) == 1, "the agent has not published its interfaces"
	})

	// Bad input is refused before anything changes.
	if _, err := underlay(t, c.Addr(), "network", "create", name, "--subnet", v4, "--gateway", prefix+"1", "--parent", "nosuch0"); err == nil ||
		!strings.Contains(err.Error(), "nosuch0 does not exist on node(s) "+info.Name) {
		t.Errorf("missing parent: %v", err)
	}
	if _, err := underlay(t, c.Addr(), "network", "create", name, "--subnet", v4, "--gateway", "10.1.2.3", "--parent", parent); err == nil ||
		!strings.Contains(err.Error(), "gateway 10.1.2.3 is outside subnet "+v4) {
		t.Errorf("gateway outside: %v", err)
	}
	if specs, _ := st.Specs(ctx); len(specs) != 0 {
		t.Fatalf("refused creates stored %v", specs)
	}

	// Dual stack: the host reaches its containers' IPv6 addresses through
	// the shim too.
	if _, err := underlay(t, c.Addr(), "network", "create", name, "--subnet", v4, "--gateway", prefix+"1", "--ipv6-subnet", v6,
		"--parent", parent, "--per-node-size", "16", "--aux-address", "printer="+prefix+"5"); err != nil {
		t.Fatal(err)
	}
	var swarmNet network.Inspect
	testenv.Eventually(t, 20*time.Second, func() (bool, string) {
		swarmNet, err = d.NetworkInspect(ctx, name, network.InspectOptions{Scope: "swarm"})
		return err == nil, fmt.Sprintf("swarm network %s not created: %v", name, err)
	})
	out, err := underlay(t, c.Addr(), "network", "inspect", name, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var inspect struct{ Nodes []netspec.NodeState }
	if err := json.Unmarshal([]byte(out), &inspect); err != nil {
		t.Fatal(err)
	}
	if len(inspect.Nodes) != 1 || inspect.Nodes[0].State != netspec.StateReady {
		t.Fatalf("node states %+v, want one ready", inspect.Nodes)
	}
	node := inspect.Nodes[0]

	// `network plan` says exactly what the agent made.
	plan, err := underlay(t, c.Addr(), "network", "plan", name, "--subnet", v4, "--gateway", prefix+"1", "--ipv6-subnet", v6,
		"--parent", parent, "--per-node-size", "16", "--aux-address", "printer="+prefix+"5", "--nodes", info.Name)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := d.NetworkInspect(ctx, netspec.ConfigNetworkName(name), network.InspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The range as underlay recorded it; Docker reports it too, but for 29,
	// which reports no IPAM config of a config-only network.
	ipRange, shimAddr := cfg.Labels[netspec.LabelRange], node.Shim.String()
	if len(cfg.IPAM.Config) > 0 {
		ipam := cfg.IPAM.Config[0]
		if ipam.IPRange != ipRange {
			t.Errorf("config network range %s, labelled %s", ipam.IPRange, ipRange)
		}
		shimAddr = ipam.AuxAddress["underlay-shim"]
	} else if v := testenv.DockerMajor(t, d); v < 29 {
		t.Errorf("docker %d reports no IPAM config of the config-only network: %+v", v, cfg.IPAM)
	}
	for _, want := range []string{"--ip-range " + ipRange, "--aux-address underlay-shim=" + shimAddr,
		"--aux-address printer=" + prefix + "5", "ip route add " + ipRange + " dev " + node.ShimLink, "parent=" + parent,
		"--aux-address underlay-shim6=" + node.Shim6.String(), "ip -6 route add " + node.Range6.String() + " dev " + node.ShimLink + " metric 1"} {
		if !strings.Contains(plan, want) {
			t.Errorf("plan lacks %q of the real config network:\n%s", want, plan)
		}
	}
	if ipRange != node.Range.String() {
		t.Errorf("config network range %s, reported %s", ipRange, node.Range)
	}
	if r6 := netip.MustParsePrefix(v6); !node.Range6.IsValid() || node.Range6.Bits() != 80 || !r6.Contains(node.Range6.Addr()) || !node.Range6.Contains(node.Shim6) {
		t.Fatalf("reported IPv6 range %s, shim %s: want a /80 of %s holding the shim", node.Range6, node.Shim6, v6)
	}

	// A service on it: tasks take addresses from the node's range, and the
	// host reaches them through its shim.
	svcName := "svc-" + id
	testenv.SwarmService(t, d, svcName, name, 2, map[string]string{"io.underlay.test": id})
	var ips []netip.Addr
	testenv.Eventually(t, 60*time.Second, func() (bool, string) {
		ips = taskIPs(t, d, svcName, swarmNet.ID)
		return len(ips) == 2, fmt.Sprintf("%d task addresses, want 2", len(ips))
	})
	for _, ip := range ips {
		if !node.Range.Contains(ip) || ip == node.Shim || ip.String() == prefix+"5" {
			t.Errorf("task address %s outside range %s or reserved", ip, node.Range)
		}
		testenv.Eventually(t, 10*time.Second, func() (bool, string) {
			return testenv.HTTPGet(fmt.Sprintf("http://%s:8080/health", ip))
		})
	}
	ips6 := taskIPv6s(t, d, svcName, swarmNet.ID)
	if len(ips6) != 2 {
		t.Fatalf("task IPv6 addresses %v, want 2", ips6)
	}
	shimLink, err := netlink.LinkByName(node.ShimLink)
	if err != nil {
		t.Fatal(err)
	}
	for _, ip := range ips6 {
		if !node.Range6.Contains(ip) || ip == node.Shim6 {
			t.Errorf("task IPv6 address %s outside range %s or the shim's", ip, node.Range6)
			continue
		}
		// Only through the shim: any other way leads off this machine.
		routes, err := netlink.RouteGet(ip.AsSlice())
		if err != nil || len(routes) != 1 || routes[0].LinkIndex != shimLink.Attrs().Index {
			t.Fatalf("route to task %s: %+v, %v; want it through the shim %s, and sent nothing", ip, routes, err, node.ShimLink)
		}
		testenv.Eventually(t, 10*time.Second, func() (bool, string) {
			return testenv.HTTPGet(fmt.Sprintf("http://[%s]:8080/health", ip))
		})
	}

	// Drift: the shim deleted, promiscuous mode off; the agent repairs both.
	shim, err := netlink.LinkByName(node.ShimLink)
	if err != nil {
		t.Fatal(err)
	}
	netlink.LinkDel(shim)
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		w := hostnet.Want{Parent: parent, ShimLink: node.ShimLink, Shim: node.Shim, Route: node.Range, Shim6: node.Shim6, Route6: node.Range6}
		o, err := hostnet.Host{}.Observe(w)
		r, _ := hostnet.Repairs(w, o)
		return err == nil && len(r) == 0, fmt.Sprintf("shim not repaired: %v %v", r, err)
	})

	// rm is refused while the service uses the network.
	if _, err := underlay(t, c.Addr(), "network", "rm", name); err == nil || !strings.Contains(err.Error(), svcName) {
		t.Errorf("rm while %s uses it: %v", svcName, err)
	}
	testenv.RemoveService(t, d, svcName)
	if _, err := underlay(t, c.Addr(), "network", "rm", name, "--timeout", "30s"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.NetworkInspect(ctx, netspec.ConfigNetworkName(name), network.InspectOptions{}); err == nil {
		t.Error("config-only network left behind")
	}
	if _, err := d.NetworkInspect(ctx, name, network.InspectOptions{}); err == nil {
		t.Error("swarm network left behind")
	}
	if _, err := netlink.LinkByName(node.ShimLink); err == nil {
		t.Error("shim left behind")
	}
	if keys, _ := kv.List(ctx, netspec.KVPrefix+name+"/"); len(keys) != 0 {
		t.Errorf("KV left behind: %v", keys)
	}
}

// taskIPs lists the addresses of a service's running tasks on one daemon,
// on networkID or, when empty, on any network.
func taskIPs(t *testing.T, d containerLister, service, networkID string) []netip.Addr {
	return taskAddrs(t, d, service, networkID, false)
}

// taskIPv6s is taskIPs for the tasks' IPv6 addresses.
func taskIPv6s(t *testing.T, d containerLister, service, networkID string) []netip.Addr {
	return taskAddrs(t, d, service, networkID, true)
}

type containerLister interface {
	ContainerList(context.Context, container.ListOptions) ([]container.Summary, error)
}

func taskAddrs(t *testing.T, d containerLister, service, networkID string, v6 bool) []netip.Addr {
	list, err := d.ContainerList(context.Background(), container.ListOptions{
		Filters: filters.NewArgs(filters.Arg("label", "com.docker.swarm.service.name="+service)),
	})
	if err != nil {
		t.Fatal(err)
	}
	var out []netip.Addr
	for _, c := range list {
		for _, ep := range c.NetworkSettings.Networks {
			addr := ep.IPAddress
			if v6 {
				addr = ep.GlobalIPv6Address
			}
			if networkID == "" || ep.NetworkID == networkID {
				if ip, err := netip.ParseAddr(addr); err == nil {
					out = append(out, ip)
				}
			}
		}
	}
	return out
}
