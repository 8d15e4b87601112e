package dockerhost

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"
	"github.com/google/go-cmp/cmp"

	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/testdocker"
)

func TestConfigRange(t *testing.T) {
	for _, tc := range []struct {
		name string
		nw   network.Inspect
		want netip.Prefix
	}{
		{
			name: "label wins",
			nw: network.Inspect{
				Labels: map[string]string{netspec.LabelRange: "10.0.0.64/27"},
				IPAM:   network.IPAM{Config: []network.IPAMConfig{{Subnet: "10.0.0.0/24", IPRange: "10.0.0.0/27"}}},
			},
			want: netip.MustParsePrefix("10.0.0.64/27"),
		},
		{
			name: "docker 20.10 and 28 report the range of an unlabelled network",
			nw: network.Inspect{IPAM: network.IPAM{Config: []network.IPAMConfig{
				{Subnet: "fd00::/64", IPRange: "fd00::/120"},
				{Subnet: "10.0.0.0/24", IPRange: "10.0.0.32/27"},
			}}},
			want: netip.MustParsePrefix("10.0.0.32/27"),
		},
		{
			// What 29 answers for a config-only network: "Config": null.
			name: "docker 29 reports no config",
			nw:   network.Inspect{IPAM: network.IPAM{Driver: "default"}},
		},
		{
			// 29 prints empty IPRange values where earlier versions omitted them.
			name: "empty range",
			nw:   network.Inspect{IPAM: network.IPAM{Config: []network.IPAMConfig{{Subnet: "10.0.0.0/24", IPRange: ""}}}},
		},
		{
			name: "garbage label falls back to the config",
			nw: network.Inspect{
				Labels: map[string]string{netspec.LabelRange: "nonsense"},
				IPAM:   network.IPAM{Config: []network.IPAMConfig{{Subnet: "10.0.0.0/24", IPRange: "10.0.0.0/27"}}},
			},
			want: netip.MustParsePrefix("10.0.0.0/27"),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := configRange(tc.nw); got != tc.want {
				t.Errorf("configRange = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestConfigNet: only a config-only network labelled underlay's counts as
// the config-only network of the cluster network it names.
func TestConfigNet(t *testing.T) {
	ours := map[string]string{netspec.LabelManaged: "true", netspec.LabelNetwork: "web"}
	for _, tc := range []struct {
		name string
		nw   network.Inspect
		want string
	}{
		{"underlay's", network.Inspect{ID: "a", ConfigOnly: true, Labels: ours}, "web"},
		{"an operator's bridge", network.Inspect{ID: "b", Driver: "bridge"}, ""},
		{"an operator's config-only network", network.Inspect{ID: "c", ConfigOnly: true}, ""},
		{"labelled but not config-only", network.Inspect{ID: "d", Labels: ours}, ""},
		{"without the managed label", network.Inspect{ID: "e", ConfigOnly: true, Labels: map[string]string{netspec.LabelNetwork: "web"}}, ""},
	} {
		got := configNet(tc.nw)
		if !got.Exists || got.ID != tc.nw.ID || got.Network != tc.want {
			t.Errorf("%s: %+v, want it to exist as %s of network %q", tc.name, got, tc.nw.ID, tc.want)
		}
	}
}

// TestConfigNetDriverOptions: a config-only network's parent and ipvlan
// mode are its driver options, which the reconciler compares with the
// spec's.
func TestConfigNetDriverOptions(t *testing.T) {
	nw := network.Inspect{ID: "a", ConfigOnly: true, Options: map[string]string{"parent": "eth1.40", "ipvlan_mode": "l3"}}
	if got := configNet(nw); got.Parent != "eth1.40" || got.IPvlanMode != "l3" {
		t.Errorf("configNet: parent %q, ipvlan mode %q; want eth1.40, l3", got.Parent, got.IPvlanMode)
	}
	if got := configNet(network.Inspect{ID: "b", ConfigOnly: true}); got.Parent != "" || got.IPvlanMode != "" {
		t.Errorf("configNet of a network without options: parent %q, ipvlan mode %q; want none", got.Parent, got.IPvlanMode)
	}
}

// TestToSwarmNodes: node rm matches an older agent's node, keyed by its
// name, against the host names the swarm lists: each node's ID, the host
// name its engine reports, its state and its availability.
func TestToSwarmNodes(t *testing.T) {
	nodes := []swarm.Node{
		{ID: "a1", Description: swarm.NodeDescription{Hostname: "n1"}, Status: swarm.NodeStatus{State: swarm.NodeStateReady}, Spec: swarm.NodeSpec{Availability: swarm.NodeAvailabilityActive}},
		{ID: "b2", Description: swarm.NodeDescription{Hostname: "n1"}, Status: swarm.NodeStatus{State: swarm.NodeStateDown}},
		{ID: "c3", Status: swarm.NodeStatus{State: swarm.NodeStateUnknown}},
	}
	want := []netspec.SwarmNode{{ID: "a1", Hostname: "n1", State: "ready", Availability: "active"}, {ID: "b2", Hostname: "n1", State: "down"}, {ID: "c3", State: "unknown"}}
	if diff := cmp.Diff(want, toSwarmNodes(nodes)); diff != "" {
		t.Errorf("toSwarmNodes (-want +got):\n%s", diff)
	}
}

// TestReadySwarmNodes: the leader's agent weighs the ready nodes by their
// availability before making a swarm network: a drained or paused node
// is listed as such, a node not ready not at all.
func TestReadySwarmNodes(t *testing.T) {
	nodes := []swarm.Node{
		{ID: "a1", Status: swarm.NodeStatus{State: swarm.NodeStateReady}, Spec: swarm.NodeSpec{Availability: swarm.NodeAvailabilityActive}},
		{ID: "b2", Status: swarm.NodeStatus{State: swarm.NodeStateReady}, Spec: swarm.NodeSpec{Availability: swarm.NodeAvailabilityDrain}},
		{ID: "c3", Status: swarm.NodeStatus{State: swarm.NodeStateReady}, Spec: swarm.NodeSpec{Availability: swarm.NodeAvailabilityPause}},
		{ID: "d4", Status: swarm.NodeStatus{State: swarm.NodeStateDown}, Spec: swarm.NodeSpec{Availability: swarm.NodeAvailabilityActive}},
	}
	want := []netspec.SwarmNode{{ID: "a1", State: "ready", Availability: "active"}, {ID: "b2", State: "ready", Availability: "drain"}, {ID: "c3", State: "ready", Availability: "pause"}}
	if diff := cmp.Diff(want, readySwarmNodes(nodes)); diff != "" {
		t.Errorf("readySwarmNodes (-want +got):\n%s", diff)
	}
}

// fakeNetworkInspect is a client of a fake dockerd (API 1.41) whose
// network inspect finds a term as dockerd's router does (getNetwork in
// api/server/router/network): a network whose ID is the term, else the
// one whose name is, else the one whose ID begins with it, else none.
func fakeNetworkInspect(t *testing.T, networks ...network.Inspect) *client.Client {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		term, ok := strings.CutPrefix(r.URL.Path, "/v1.41/networks/")
		if !ok {
			http.Error(w, `{"message":"not faked"}`, http.StatusNotFound)
			return
		}
		var byName, byPrefix []network.Inspect
		for _, nw := range networks {
			if scope := r.URL.Query().Get("scope"); scope != "" && nw.Scope != scope {
				continue
			}
			switch {
			case nw.ID == term:
				json.NewEncoder(w).Encode(nw)
				return
			case nw.Name == term:
				byName = append(byName, nw)
			case strings.HasPrefix(nw.ID, term):
				byPrefix = append(byPrefix, nw)
			}
		}
		switch {
		case len(byName) == 1:
			json.NewEncoder(w).Encode(byName[0])
		case len(byName) == 0 && len(byPrefix) == 1:
			json.NewEncoder(w).Encode(byPrefix[0])
		case len(byName)+len(byPrefix) > 1:
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"message":"network %s is ambiguous"}`, term)
		default:
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprintf(w, `{"message":"network %s not found"}`, term)
		}
	}))
	t.Cleanup(srv.Close)
	api, err := client.NewClientWithOpts(client.WithHost("tcp://"+srv.Listener.Addr().String()), client.WithVersion("1.41"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { api.Close() })
	return api
}

// TestSwarmNetworkByNameOnly: dockerd's network inspect of a name that no
// network has answers with the network whose ID begins with it, and
// swarm network IDs are 25 letters and digits: the swarm network of a
// spec named "db" was taken to exist while another network's ID began
// with "db", so the leader never created it, and network rm removed that
// other network.
func TestSwarmNetworkByNameOnly(t *testing.T) {
	other := network.Inspect{ID: "dbq2m9ysk1xq1ufhmgqnxlbz7", Name: "ops-overlay", Scope: "swarm", Driver: "overlay"}
	web := network.Inspect{ID: "w3k1p0c9x7ds2m5n8b4v6z1qa", Name: "web", Scope: "swarm", Driver: "macvlan"}
	n := NewNetworks(fakeNetworkInspect(t, other, web))
	ctx := context.Background()
	for name, want := range map[string]string{"db": "", "web": web.ID} {
		id, err := n.SwarmNetworkID(ctx, name)
		if err != nil || id != want {
			t.Errorf("SwarmNetworkID(%q) = %q, %v; want %q", name, id, err, want)
		}
		exists, err := n.SwarmNetworkExists(ctx, name)
		if err != nil || exists != (want != "") {
			t.Errorf("SwarmNetworkExists(%q) = %v, %v; want %v", name, exists, err, want != "")
		}
	}
}

// TestServiceNetworksReadsTheDeprecatedField: a service's networks are
// its task template's, or, when that names none, its spec's own
// Networks, which Docker's API deprecated but swarmkit still attaches
// tasks to (its allocator and its network-in-use check read it when the
// task template names none) and dockerd returns as stored. Such a
// service was listed without networks, so network rm took its network
// for unused, marked it deleting, and only then had its removal refused.
func TestServiceNetworksReadsTheDeprecatedField(t *testing.T) {
	services := `[
		{"ID": "s1", "Spec": {"Name": "old", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}}, "Networks": [{"Target": "netid1"}]}},
		{"ID": "s2", "Spec": {"Name": "new", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}, "Networks": [{"Target": "netid2"}]}}},
		{"ID": "s3", "Spec": {"Name": "both", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}, "Networks": [{"Target": "netid3"}]}, "Networks": [{"Target": "netid4"}]}},
		{"ID": "s4", "Spec": {"Name": "none", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}}}}
	]`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1.41/services" {
			http.Error(w, `{"message":"not faked"}`, http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, services)
	}))
	t.Cleanup(srv.Close)
	api, err := client.NewClientWithOpts(client.WithHost("tcp://"+srv.Listener.Addr().String()), client.WithVersion("1.41"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { api.Close() })
	got, err := NewNetworks(api).ServiceNetworks(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// swarmkit reads the spec's own only when the template names none.
	want := map[string][]string{"old": {"netid1"}, "new": {"netid2"}, "both": {"netid3"}, "none": nil}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("ServiceNetworks (-want +got):\n%s", d)
	}
}

// TestNetworksDoNotWaitForAHungDockerd: the network sync's, the IPAM
// leader's and the removals' Docker calls (Networks) had no deadline of
// their own: a dockerd that never answered one held the agent's network
// sync, or the IPAM reclaims, for good. Each is bounded (callWait): it
// fails with a deadline error naming the call, and the loop's next turn
// tries again.
func TestNetworksDoNotWaitForAHungDockerd(t *testing.T) {
	d := testdocker.New(t)
	api := d.Serve(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { d.Hang(r) }))
	n := NewNetworks(api)
	n.callWait = 50 * time.Millisecond
	ctx := context.Background()
	spec := netspec.Spec{Name: "lan", Subnet: netip.MustParsePrefix("10.0.0.0/24"), Gateway: netip.MustParseAddr("10.0.0.1")}
	for _, c := range []struct {
		name, want string // want: what the error names
		call       func() error
	}{
		{"ConfigNetwork", "inspect network", func() error { _, err := n.ConfigNetwork(ctx, "lan"); return err }},
		{"CreateConfigNetwork", "/networks/create", func() error {
			return n.CreateConfigNetwork(ctx, spec, netspec.NodePlan{Block: netip.MustParsePrefix("10.0.0.0/28")})
		}},
		{"RemoveNetwork", "remove network lan", func() error { return n.RemoveNetwork(ctx, "lan") }},
		{"ManagedConfigNetworks", "list networks", func() error { _, err := n.ManagedConfigNetworks(ctx); return err }},
		{"DockerLinks", "list Docker networks", func() error { _, err := n.DockerLinks(ctx); return err }},
		{"IsLeader", "docker info", func() error { _, err := n.IsLeader(ctx); return err }},
		{"ReadyNodes", "list swarm nodes", func() error { _, err := n.ReadyNodes(ctx); return err }},
		{"ListSwarmNodes", "list swarm nodes", func() error { _, err := n.ListSwarmNodes(ctx); return err }},
		{"ReadySwarmNodes", "list swarm nodes", func() error { _, err := n.ReadySwarmNodes(ctx); return err }},
		{"SwarmNetworkExists", "inspect network lan", func() error { _, err := n.SwarmNetworkExists(ctx, "lan"); return err }},
		{"CreateSwarmNetwork", "/networks/create", func() error { return n.CreateSwarmNetwork(ctx, spec) }},
		{"NetworksNamed", "list networks named lan", func() error { _, err := n.NetworksNamed(ctx, "lan"); return err }},
		{"ServiceNetworks", "/services", func() error { _, err := n.ServiceNetworks(ctx); return err }},
	} {
		testdocker.GivesUp(t, c.name, c.want, c.call)
	}
}
