package dockerhost

import (
	"net/netip"
	"testing"

	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"
	"github.com/google/go-cmp/cmp"

	"github.com/underlay/underlay/internal/netspec"
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

// TestToSwarmNodes: node rm matches an older agent's node, keyed by its
// name, against the host names the swarm lists: each node's ID, the host
// name its engine reports, and its state.
func TestToSwarmNodes(t *testing.T) {
	nodes := []swarm.Node{
		{ID: "a1", Description: swarm.NodeDescription{Hostname: "n1"}, Status: swarm.NodeStatus{State: swarm.NodeStateReady}},
		{ID: "b2", Description: swarm.NodeDescription{Hostname: "n1"}, Status: swarm.NodeStatus{State: swarm.NodeStateDown}},
		{ID: "c3", Status: swarm.NodeStatus{State: swarm.NodeStateUnknown}},
	}
	want := []netspec.SwarmNode{{ID: "a1", Hostname: "n1", State: "ready"}, {ID: "b2", Hostname: "n1", State: "down"}, {ID: "c3", State: "unknown"}}
	if diff := cmp.Diff(want, toSwarmNodes(nodes)); diff != "" {
		t.Errorf("toSwarmNodes (-want +got):\n%s", diff)
	}
}
