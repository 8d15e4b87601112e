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

func TestEvalModule(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    ModuleFacts
		want brief
	}{
		{"loaded", ModuleFacts{Module: "8021q", NeededBy: []string{"v40"}, Loaded: true}, brief{"kernel/8021q", "ok", ""}},
		{"made on demand", ModuleFacts{Module: "ipvlan", NeededBy: []string{"iv"}, Probed: true}, brief{"kernel/ipvlan", "ok", ""}},
		{"probe failed", ModuleFacts{Module: "ipvlan", NeededBy: []string{"iv"}, Probed: true, ProbeErr: errors.New("operation not supported")},
			brief{"kernel/ipvlan", "fail", "modprobe ipvlan && echo ipvlan >> /etc/modules-load.d/underlay.conf"}},
		{"bonding missing", ModuleFacts{Module: "bonding", NeededBy: []string{"a", "b"}},
			brief{"kernel/bonding", "fail", "modprobe bonding && echo bonding >> /etc/modules-load.d/underlay.conf"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := EvalModule(tc.f)
			if d := cmp.Diff(tc.want, briefs([]Result{r})[0]); d != "" {
				t.Errorf("(-want +got)\n%s", d)
			}
			if !strings.Contains(r.Message, strings.Join(tc.f.NeededBy, ", ")) {
				t.Errorf("message %q does not name the networks", r.Message)
			}
		})
	}
}

// vlanFacts is a healthy macvlan network on bond0.40, bond0 of eth0 and eth1.
func vlanFacts() NetworkFacts {
	link := netspec.ShimLinkName("v40")
	return NetworkFacts{
		Spec:        netspec.Spec{Name: "v40", Parent: "bond0.40", Subnet: netip.MustParsePrefix("10.0.0.0/24")},
		VLANSupport: true,
		State: &netspec.NodeState{Node: "n1", State: netspec.StateReady, Range: netip.MustParsePrefix("10.0.0.64/26"),
			Shim: netip.MustParseAddr("10.0.0.64"), ShimLink: link, Parent: "bond0.40"},
		Observed: hostnet.Observed{ParentExists: true, ParentUp: true, ParentPromisc: true, ShimExists: true, ShimOK: true,
			ShimUp: true, ShimHasIP: true, RouteViaOK: true},
		Parent: hostnet.ParentFacts{Exists: true, Type: "vlan", Up: true, Promisc: true, MTU: 1500, Alias: hostnet.OwnerAlias("v40"),
			VLAN: 40, Lower: "bond0", LowerExists: true, LowerUp: true, LowerMTU: 1500,
			Bond: &hostnet.BondFacts{Name: "bond0", Mode: "active-backup", Active: "eth0",
				Members: []hostnet.BondMember{{Name: "eth0", Up: true}, {Name: "eth1", Up: true}}}},
	}
}

// oddly names f's parent trunk40, a name that says no VLAN.
func oddly(f *NetworkFacts) {
	f.Spec.Parent, f.State.Parent = "trunk40", "trunk40"
	f.Parent.Alias = ""
}

// TestEvalNetworkVLANAndBond: the doctor judges a parent by what its link
// is, with the agent's rule (hostnet.NotAsNamed): a dummy or macvlan named
// like a VLAN (bond0.40) fails, as the agent refuses it, and nothing past
// it is judged; a VLAN named otherwise (trunk40) gets the VLAN checks
// (802.1q, its lower device up, its MTU), which it got none of.
func TestEvalNetworkVLANAndBond(t *testing.T) {
	result := func(rs []Result, check string) Result {
		for _, r := range rs {
			if r.Check == check {
				return r
			}
		}
		return Result{Check: check, Status: "absent"}
	}
	for _, tc := range []struct {
		name  string
		edit  func(*NetworkFacts)
		check string
		want  brief
		msg   string // in the message
	}{
		{"healthy VLAN", func(*NetworkFacts) {}, "network/v40/vlan", brief{"network/v40/vlan", "ok", ""}, "made by underlay for network v40"},
		{"VLAN made by hand", func(f *NetworkFacts) { f.Parent.Alias = "" }, "network/v40/vlan", brief{"network/v40/vlan", "ok", ""}, "made by hand"},
		// Unmarked, but the agent's record names it: dockerd made it again
		// at boot, and the agent marks it again (see Observed.ParentMadeFor).
		{"VLAN made again unmarked, recorded", func(f *NetworkFacts) { f.Parent.Alias = ""; f.Observed.ParentMadeFor = "v40" }, "network/v40/vlan",
			brief{"network/v40/vlan", "ok", ""}, "made by underlay for network v40 (recorded in vlan-parents.json; the agent marks it again at its next sync)"},
		{"wrong VLAN id", func(f *NetworkFacts) { f.Parent.VLAN = 41 }, "network/v40/vlan",
			brief{"network/v40/vlan", "fail", "ip link del bond0.40 && ip link add link bond0 name bond0.40 type vlan id 40 && ip link set bond0.40 up"}, "VLAN 41 on bond0"},
		{"not a VLAN", func(f *NetworkFacts) { f.Parent.Type = "dummy" }, "network/v40/vlan",
			brief{"network/v40/vlan", "fail", "ip link del bond0.40 && ip link add link bond0 name bond0.40 type vlan id 40 && ip link set bond0.40 up"}, "is a dummy"},
		// The agent's rule (hostnet.NotAsNamed), from the link's kind.
		{"a macvlan named like a VLAN", func(f *NetworkFacts) { f.Parent.Type, f.Parent.VLAN, f.Parent.Lower = "macvlan", 0, "" }, "network/v40/vlan",
			brief{"network/v40/vlan", "fail", "ip link del bond0.40 && ip link add link bond0 name bond0.40 type vlan id 40 && ip link set bond0.40 up"}, "is a macvlan link, not VLAN 40 on bond0"},
		{"an 802.1ad VLAN", func(f *NetworkFacts) { f.Parent.VLANProtocol = "802.1ad" }, "network/v40/vlan",
			brief{"network/v40/vlan", "fail", "ip link del bond0.40 && ip link add link bond0 name bond0.40 type vlan id 40 && ip link set bond0.40 up"}, "802.1ad VLAN 40 on bond0"},
		// Refused, the agent makes no shim: none is judged, nor fixed on
		// the wrong link.
		{"no shim judged on a dummy", func(f *NetworkFacts) { f.Parent.Type = "dummy" }, "network/v40/shim", brief{"network/v40/shim", "absent", ""}, ""},
		{"no shim judged on another VLAN", func(f *NetworkFacts) { f.Parent.VLAN = 41 }, "network/v40/parent-up", brief{"network/v40/parent-up", "absent", ""}, ""},
		// A VLAN named oddly is judged as the VLAN it is.
		{"a VLAN named oddly", func(f *NetworkFacts) { oddly(f) }, "network/v40/vlan", brief{"network/v40/vlan", "ok", ""}, "trunk40 is VLAN 40 on bond0"},
		{"a VLAN named oddly, its lower device down", func(f *NetworkFacts) { oddly(f); f.Parent.LowerUp = false }, "network/v40/vlan",
			brief{"network/v40/vlan", "fail", "ip link set bond0 up"}, "bond0 is down"},
		{"a VLAN named oddly, no 802.1q", func(f *NetworkFacts) { oddly(f); f.VLANSupport = false }, "network/v40/vlan",
			brief{"network/v40/vlan", "fail", "modprobe 8021q"}, "trunk40 is VLAN 40 on bond0"},
		{"a VLAN named oddly, of another id than any name says", func(f *NetworkFacts) { oddly(f); f.Parent.VLAN = 7 }, "network/v40/vlan",
			brief{"network/v40/vlan", "ok", ""}, "trunk40 is VLAN 7 on bond0"},
		{"a dummy named plainly", func(f *NetworkFacts) { oddly(f); f.Parent = hostnet.ParentFacts{Exists: true, Type: "dummy", Up: true} }, "network/v40/vlan",
			brief{"network/v40/vlan", "absent", ""}, ""},
		{"lower down", func(f *NetworkFacts) { f.Parent.LowerUp = false }, "network/v40/vlan", brief{"network/v40/vlan", "fail", "ip link set bond0 up"}, "bond0 is down"},
		{"MTU above the lower's", func(f *NetworkFacts) { f.Parent.MTU = 9000 }, "network/v40/vlan", brief{"network/v40/vlan", "fail", "ip link set bond0.40 mtu 1500"}, "9000"},
		{"lower missing", func(f *NetworkFacts) {
			f.Parent = hostnet.ParentFacts{Lower: "bond0", VLAN: 40}
			f.Observed = hostnet.Observed{}
		},
			"network/v40/vlan", brief{"network/v40/vlan", "fail", "ip link show   # then recreate network v40 on an existing device"}, "does not exist"},
		{"bond healthy", func(*NetworkFacts) {}, "network/v40/bond", brief{"network/v40/bond", "ok", ""}, "active eth0"},
		{"a member down", func(f *NetworkFacts) { f.Parent.Bond.Members[1].Up = false }, "network/v40/bond",
			brief{"network/v40/bond", "warn", "ip link set eth1 up   # and check its cable and switch port"}, "no redundancy"},
		{"every member down", func(f *NetworkFacts) {
			f.Parent.Bond.Members = []hostnet.BondMember{{Name: "eth0"}, {Name: "eth1"}}
		}, "network/v40/bond", brief{"network/v40/bond", "fail", "ip link set eth0 up   # and check the cables and switch ports"}, "every member"},
		{"no members", func(f *NetworkFacts) { f.Parent.Bond.Members = nil }, "network/v40/bond",
			brief{"network/v40/bond", "fail", "ip link set NIC down && ip link set NIC master bond0   # for each of its NICs"}, "no members"},
		{"no bond", func(f *NetworkFacts) { f.Parent.Bond = nil }, "network/v40/bond", brief{"network/v40/bond", "absent", ""}, ""},
		{"macvlan parent not promiscuous", func(f *NetworkFacts) { f.Observed.ParentPromisc = false }, "network/v40/parent-promisc",
			brief{"network/v40/parent-promisc", "fail", "ip link set bond0.40 promisc on"}, ""},
		{"ipvlan needs no promiscuous parent", func(f *NetworkFacts) { f.Spec.Driver = netspec.IPvlan; f.Observed.ParentPromisc = false },
			"network/v40/parent-promisc", brief{"network/v40/parent-promisc", "absent", ""}, ""},
		{"ipvlan shim", func(f *NetworkFacts) { f.Spec.Driver = netspec.IPvlan; f.Observed.ShimExists = false }, "network/v40/shim",
			brief{"network/v40/shim", "fail", "ip link add " + netspec.ShimLinkName("v40") + " link bond0.40 type ipvlan mode l2 && ip addr add 10.0.0.64/32 dev " +
				netspec.ShimLinkName("v40") + " && ip link set " + netspec.ShimLinkName("v40") + " up && ip route add 10.0.0.64/26 dev " + netspec.ShimLinkName("v40")}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := vlanFacts()
			b := *f.Parent.Bond
			b.Members = append([]hostnet.BondMember(nil), b.Members...)
			f.Parent.Bond = &b
			tc.edit(&f)
			r := result(EvalNetwork(f), tc.check)
			if d := cmp.Diff(tc.want, briefs([]Result{r})[0]); d != "" {
				t.Errorf("(-want +got)\n%s\nmessage: %s", d, r.Message)
			}
			if !strings.Contains(r.Message, tc.msg) {
				t.Errorf("message %q lacks %q", r.Message, tc.msg)
			}
		})
	}
}

func TestModulesCheck(t *testing.T) {
	specs := []netspec.Spec{
		{Name: "plain", Parent: "eth1"},
		{Name: "v40", Parent: "bond0.40"},
		{Name: "iv", Parent: "bond0.41", Driver: netspec.IPvlan},
		{Name: "gone", Parent: "eth9.9", Driver: netspec.IPvlan, Deleting: true},
	}
	links := &fakeLinks{parents: map[string]hostnet.ParentFacts{
		"bond0.40": {Exists: true, Type: "vlan", Bond: &hostnet.BondFacts{Name: "bond0"}},
	}}
	c := ModulesCheck{Networks: fakeNetworks{specs: specs}, Links: links,
		Files: fakeFiles{"/proc/modules": "8021q 40960 0 - Live 0x0\nbonding 229376 0 - Live 0x0\n"}}
	want := []brief{
		{"kernel/8021q", "ok", ""},
		{"kernel/ipvlan", "ok", ""}, // the probe made one
		{"kernel/bonding", "ok", ""},
	}
	if d := cmp.Diff(want, briefs(c.Run(context.Background(), t.Logf))); d != "" {
		t.Errorf("(-want +got)\n%s", d)
	}
	if d := cmp.Diff([]string{"ipvlan"}, links.probes); d != "" {
		t.Errorf("probes (-want +got)\n%s", d)
	}
	// Nothing loaded, probes failing: each module fails with its fix.
	links.probeErr, links.probes = errors.New("not supported"), nil
	links.parents = nil
	c.Files = fakeFiles{}
	want = []brief{
		{"kernel/8021q", "fail", "modprobe 8021q && echo 8021q >> /etc/modules-load.d/underlay.conf"},
		{"kernel/ipvlan", "fail", "modprobe ipvlan && echo ipvlan >> /etc/modules-load.d/underlay.conf"},
		{"kernel/bonding", "fail", "modprobe bonding && echo bonding >> /etc/modules-load.d/underlay.conf"},
	}
	if d := cmp.Diff(want, briefs(c.Run(context.Background(), t.Logf))); d != "" {
		t.Errorf("(-want +got)\n%s", d)
	}
	// No network needs any of them: nothing to say.
	c.Networks = fakeNetworks{specs: specs[:1]}
	if rs := c.Run(context.Background(), t.Logf); len(rs) != 0 {
		t.Errorf("plain macvlan network: %+v", rs)
	}
}
