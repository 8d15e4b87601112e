package doctor

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/underlay/underlay/internal/hostnet"
	"github.com/underlay/underlay/internal/netspec"
)

// TestEvalNetworkRefusedSetUps: the set-ups the agent refuses, and so
// sets nothing up for, fail with the agent's own reason (hostnet's) and
// a fix: a parent that is a port of a bond or bridge (or a VLAN parent
// to be made on one), a parent carrying links of the other kind, the
// shim's address on another link, a route of the host's to the range.
func TestEvalNetworkRefusedSetUps(t *testing.T) {
	spec, ready, healthy := lanNetwork()
	vlan := spec
	vlan.Parent = "eth1.40"
	okRows := []brief{
		{"network/lan/state", "ok", ""},
		{"network/lan/parent-up", "ok", ""},
		{"network/lan/parent-promisc", "ok", ""},
		{"network/lan/shim", "ok", ""},
		{"network/lan/shim-address", "ok", ""},
		{"network/lan/route", "ok", ""},
	}
	again := "underlay network rm lan   # then create it again with "
	addrErr := errors.New(`shim address 10.0.0.64 is the host's already, on "eth0": …`)
	routeErr := errors.New(`route 10.0.0.64/26: the host routes it already, by a blackhole route (metric 0), …`)
	tests := []struct {
		name string
		f    NetworkFacts
		want []brief
		says string
	}{
		{"port of a bond", NetworkFacts{Spec: spec, State: ready, Observed: hostnet.Observed{ParentExists: true, ParentUp: true, PortOf: "bond0", PortOfKind: "bond"}},
			[]brief{okRows[0], {"network/lan/parent-use", "fail", again + "--parent bond0 (the bond), or a VLAN on it"}},
			"parent eth1 is a port of bond bond0"},
		{"VLAN to be made on a bridge's port", NetworkFacts{Spec: vlan, State: ready, VLANSupport: true, Observed: hostnet.Observed{ParentCreatable: true, PortOf: "br0", PortOfKind: "bridge"}},
			[]brief{okRows[0], {"network/lan/vlan", "ok", ""}, {"network/lan/parent-use", "fail", again + "--parent br0.40 (VLAN 40 on bridge br0)"}},
			"its lower device eth1 is a port of bridge br0"},
		{"links of the other kind", NetworkFacts{Spec: spec, State: ready, Observed: hostnet.Observed{ParentExists: true, ParentUp: true, OtherKind: `ipvlan "ipv0"`}},
			[]brief{okRows[0], {"network/lan/parent-use", "fail", `ip -d link show   # ipvlan "ipv0" sits on eth1: remove it (ip link del NAME) if nothing uses it, or recreate lan on a parent without it`}},
			`parent eth1 carries ipvlan "ipv0"`},
		{"shim address on another link", NetworkFacts{Spec: spec, State: ready, Observed: healthy, AddrConflict: addrErr},
			append(okRows, brief{"network/lan/address-free", "fail", again + "an --ip-range that leaves out the hosts' addresses"}),
			addrErr.Error()},
		{"route of the host's", NetworkFacts{Spec: spec, State: ready, Observed: healthy, RouteConflict: routeErr},
			append(okRows, brief{"network/lan/route-free", "fail", "ip route show 10.0.0.64/26   # delete that route (ip route del …) if the host needs it no more, or recreate lan with an --ip-range the host does not route"}),
			routeErr.Error()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := EvalNetwork(tt.f)
			if diff := cmp.Diff(tt.want, briefs(rs)); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
			if last := rs[len(rs)-1]; !strings.Contains(last.Message, tt.says) {
				t.Errorf("%s says %q, want %q", last.Check, last.Message, tt.says)
			}
		})
	}
}

// TestNetworksCheckConflicts: the check reads, where the node reported
// its range, the host's conflicts with the network's shim address and
// route, and fails them.
func TestNetworksCheckConflicts(t *testing.T) {
	lan := netspec.Spec{Name: "lan", Parent: "eth1", Subnet: netip.MustParsePrefix("10.0.0.0/24")}
	state := netspec.NodeState{Node: "n1", State: netspec.StateReady, Range: netip.MustParsePrefix("10.0.0.0/26"),
		Shim: netip.MustParseAddr("10.0.0.1"), ShimLink: "ul-0000abcd"}
	links := &fakeLinks{
		observed: map[string]hostnet.Observed{"eth1": {ParentExists: true, ParentUp: true, ParentPromisc: true, ShimExists: true, ShimOK: true,
			ShimMarked: true, ShimUp: true, ShimHasIP: true, RouteViaOK: true}},
		conflicts: map[string][2]error{"eth1": {errors.New("shim address 10.0.0.1 is the host's already"), errors.New("route 10.0.0.0/26: the host routes it already")}},
	}
	c := NetworksCheck{Node: "n1", Links: links, Files: fakeFiles{},
		Networks: fakeNetworks{specs: []netspec.Spec{lan}, states: map[string][]netspec.NodeState{"lan": {state}}}}
	var got []string
	for _, r := range c.Run(context.Background(), t.Logf) {
		if r.Status != OK {
			got = append(got, r.Check+": "+r.Message)
		}
	}
	want := []string{"network/lan/address-free: shim address 10.0.0.1 is the host's already", "network/lan/route-free: route 10.0.0.0/26: the host routes it already"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("failed checks (-want +got)\n%s", diff)
	}
}
