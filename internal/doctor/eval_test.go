package doctor

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/underlay/underlay/internal/hostnet"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/shellword"
)

// brief is a result without its message, for comparing outcomes.
type brief struct {
	Check, Status, Fix string
}

func briefs(rs []Result) []brief {
	out := make([]brief, len(rs))
	for i, r := range rs {
		out[i] = brief{r.Check, string(r.Status), r.Fix}
	}
	return out
}

func TestEvalMacvlan(t *testing.T) {
	tests := []struct {
		name string
		f    MacvlanFacts
		want brief
	}{
		{"module loaded", MacvlanFacts{Loaded: true}, brief{"kernel/macvlan", "ok", ""}},
		{"built in, probe works", MacvlanFacts{Probed: true}, brief{"kernel/macvlan", "ok", ""}},
		{"probe fails", MacvlanFacts{Probed: true, ProbeErr: errors.New("operation not supported")}, brief{"kernel/macvlan", "fail", "modprobe macvlan"}},
		{"not loaded, not probed", MacvlanFacts{}, brief{"kernel/macvlan", "fail", "modprobe macvlan"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff([]brief{tt.want}, briefs([]Result{EvalMacvlan(tt.f)})); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
}

func TestVLANParent(t *testing.T) {
	tests := []struct {
		in    string
		lower string
		vid   int
		ok    bool
	}{
		{"eth1.42", "eth1", 42, true},
		{"bond0.4094", "bond0", 4094, true},
		{"eth1", "", 0, false},
		{"eth1.0", "", 0, false},
		{"eth1.4095", "", 0, false},
		{"br.lan", "", 0, false},
	}
	for _, tt := range tests {
		lower, vid, ok := VLANParent(tt.in)
		if lower != tt.lower || vid != tt.vid || ok != tt.ok {
			t.Errorf("VLANParent(%q) = %q, %d, %v; want %q, %d, %v", tt.in, lower, vid, ok, tt.lower, tt.vid, tt.ok)
		}
	}
}

// lanNetwork is the network "lan" on parent eth1, this node's state of
// it ready, and what a healthy host shows of it.
func lanNetwork() (netspec.Spec, *netspec.NodeState, hostnet.Observed) {
	spec := netspec.Spec{Name: "lan", Parent: "eth1", Subnet: netip.MustParsePrefix("10.0.0.0/24")}
	ready := &netspec.NodeState{Node: "n1", State: netspec.StateReady, Range: netip.MustParsePrefix("10.0.0.64/26"),
		Shim: netip.MustParseAddr("10.0.0.64"), ShimLink: netspec.ShimLinkName("lan"), Parent: "eth1"}
	healthy := hostnet.Observed{ParentExists: true, ParentUp: true, ParentPromisc: true, ShimExists: true, ShimOK: true,
		ShimUp: true, ShimHasIP: true, RouteViaOK: true}
	return spec, ready, healthy
}

func TestEvalNetwork(t *testing.T) {
	spec, ready, healthy := lanNetwork()
	link := ready.ShimLink
	vlanSpec := spec
	vlanSpec.Parent = "eth1.42"
	with := func(mod func(*hostnet.Observed)) hostnet.Observed {
		o := healthy
		mod(&o)
		return o
	}
	create := "ip link add " + link + " link eth1 type macvlan mode bridge && ip addr add 10.0.0.64/32 dev " + link +
		" && ip link set " + link + " up && ip route add 10.0.0.64/26 dev " + link
	okRows := []brief{
		{"network/lan/state", "ok", ""},
		{"network/lan/parent-up", "ok", ""},
		{"network/lan/parent-promisc", "ok", ""},
		{"network/lan/shim", "ok", ""},
		{"network/lan/shim-address", "ok", ""},
		{"network/lan/route", "ok", ""},
	}
	badName := spec
	badName.Name = "my net" // stored by hand: network create refuses it
	refused := &netspec.NodeState{Node: "n1", State: netspec.StateInvalid, Error: "spec refused: gateway missing"}
	const recreate = "   # then create it again with valid values (underlay network create …)"
	replace := func(rows []brief, i int, b brief) []brief {
		out := append([]brief(nil), rows...)
		out[i] = b
		return out
	}
	tests := []struct {
		name string
		f    NetworkFacts
		want []brief
	}{
		{"healthy", NetworkFacts{Spec: spec, State: ready, Observed: healthy}, okRows},
		{"parent down", NetworkFacts{Spec: spec, State: ready, Observed: with(func(o *hostnet.Observed) { o.ParentUp = false })},
			replace(okRows, 1, brief{"network/lan/parent-up", "fail", "ip link set eth1 up"})},
		{"parent not promiscuous", NetworkFacts{Spec: spec, State: ready, Observed: with(func(o *hostnet.Observed) { o.ParentPromisc = false })},
			replace(okRows, 2, brief{"network/lan/parent-promisc", "fail", "ip link set eth1 promisc on"})},
		{"shim missing", NetworkFacts{Spec: spec, State: ready, Observed: hostnet.Observed{ParentExists: true, ParentUp: true, ParentPromisc: true}},
			append(okRows[:3:3], brief{"network/lan/shim", "fail", create})},
		{"shim of the wrong kind", NetworkFacts{Spec: spec, State: ready, Observed: with(func(o *hostnet.Observed) { o.ShimOK = false })},
			append(okRows[:3:3], brief{"network/lan/shim", "fail", "ip link del " + link + " && " + create})},
		// Someone else's link of the shim's name: the agent leaves it, and
		// the advice must not be to delete it.
		{"shim someone else's", NetworkFacts{Spec: spec, State: ready, Observed: with(func(o *hostnet.Observed) { o.ShimForeign, o.ShimOK = true, false })},
			append(okRows[:3:3], brief{"network/lan/shim", "fail", "ip -d link show " + link + "   # someone else's link has the shim's name: rename or remove it, and the agent makes the shim"})},
		{"shim someone else's, of the right kind", NetworkFacts{Spec: spec, State: ready, Observed: with(func(o *hostnet.Observed) { o.ShimForeign = true })},
			append(okRows[:3:3], brief{"network/lan/shim", "fail", "ip -d link show " + link + "   # someone else's link has the shim's name: rename or remove it, and the agent makes the shim"})},
		{"parent is a shim", NetworkFacts{Spec: spec, State: ready, Observed: with(func(o *hostnet.Observed) { o.ParentIsShim = true })},
			[]brief{okRows[0], {"network/lan/parent", "fail", "underlay network rm lan   # then create it again with --parent the interface (or VLAN) it hangs off"}}},
		{"shim down", NetworkFacts{Spec: spec, State: ready, Observed: with(func(o *hostnet.Observed) { o.ShimUp, o.RouteViaOK = false, false })},
			replace(replace(okRows, 3, brief{"network/lan/shim", "fail", "ip link set " + link + " up && ip route add 10.0.0.64/26 dev " + link}),
				5, brief{"network/lan/route", "fail", "ip route add 10.0.0.64/26 dev " + link})},
		{"shim without its address", NetworkFacts{Spec: spec, State: ready, Observed: with(func(o *hostnet.Observed) { o.ShimHasIP = false })},
			replace(okRows, 4, brief{"network/lan/shim-address", "fail", "ip addr add 10.0.0.64/32 dev " + link + " && ip route add 10.0.0.64/26 dev " + link})},
		// ip route add, not replace: replace takes a route of the same
		// range and metric from whichever link holds it (the host's own
		// connected route), and removing the network would leave none.
		{"route missing", NetworkFacts{Spec: spec, State: ready, Observed: with(func(o *hostnet.Observed) { o.RouteViaOK = false })},
			replace(okRows, 5, brief{"network/lan/route", "fail", "ip route add 10.0.0.64/26 dev " + link})},
		{"parent missing", NetworkFacts{Spec: spec, State: ready},
			[]brief{okRows[0], {"network/lan/parent", "fail", "ip link show   # then recreate network lan with an existing --parent"}}},
		{"no report from this node", NetworkFacts{Spec: spec, Observed: healthy},
			[]brief{{"network/lan/state", "fail", "underlay network inspect lan"}, okRows[1], okRows[2]}},
		{"agent reports an error", NetworkFacts{Spec: spec, State: &netspec.NodeState{State: netspec.StateError, Error: "boom"}, Observed: healthy},
			[]brief{{"network/lan/state", "fail", "underlay network inspect lan"}, okRows[1], okRows[2]}},
		{"VLAN parent without 802.1q", NetworkFacts{Spec: vlanSpec},
			[]brief{
				{"network/lan/state", "fail", "underlay network inspect lan"},
				{"network/lan/vlan", "fail", "modprobe 8021q"},
				{"network/lan/parent", "fail", "ip link add link eth1 name eth1.42 type vlan id 42 && ip link set eth1.42 up"},
			}},
		{"VLAN parent with 802.1q", NetworkFacts{Spec: vlanSpec, VLANSupport: true, State: ready, Observed: healthy},
			append([]brief{okRows[0], {"network/lan/vlan", "ok", ""}}, okRows[1:]...)},
		{"links unreadable", NetworkFacts{Spec: spec, ObserveErr: errors.New("netlink: permission denied")},
			[]brief{{"network/lan/host", "fail", ""}}},
		{"spec refused", NetworkFacts{Spec: spec, State: refused, Observed: healthy},
			[]brief{{"network/lan/state", "fail", "underlay network rm lan" + recreate}, okRows[1], okRows[2]}},
		// network rm refuses a name that is none (its keys are made of
		// it): the fix given could not be followed.
		{"spec refused, named as no network is", NetworkFacts{Spec: badName, State: refused, Observed: healthy},
			[]brief{{"network/my net/state", "fail", "consul kv delete -recurse 'underlay/networks/my net/'" + recreate},
				{"network/my net/parent-up", "ok", ""}, {"network/my net/parent-promisc", "ok", ""}}},
		// A name as a shell would split it, as the other fixes quote it.
		{"not reported, named with a blank", NetworkFacts{Spec: badName, Observed: healthy},
			[]brief{{"network/my net/state", "fail", "underlay network inspect 'my net'"},
				{"network/my net/parent-up", "ok", ""}, {"network/my net/parent-promisc", "ok", ""}}},
		{"parent is a shim, named as no network is", NetworkFacts{Spec: badName, State: refused, Observed: with(func(o *hostnet.Observed) { o.ParentIsShim = true })},
			[]brief{{"network/my net/state", "fail", "consul kv delete -recurse 'underlay/networks/my net/'" + recreate},
				{"network/my net/parent", "fail", "consul kv delete -recurse 'underlay/networks/my net/'   # then create it again with --parent the interface (or VLAN) it hangs off"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, briefs(EvalNetwork(tt.f))); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
}

// TestEvalNetworkDualStack: on a network with an IPv6 subnet the shim's
// IPv6 address and route are judged too, with fixes that restore them.
func TestEvalNetworkDualStack(t *testing.T) {
	spec := netspec.Spec{Name: "lan", Parent: "eth1", Subnet: netip.MustParsePrefix("10.0.0.0/24"), IPv6Subnet: netip.MustParsePrefix("fd00:1::/64")}
	link := netspec.ShimLinkName("lan")
	ready := &netspec.NodeState{Node: "n1", State: netspec.StateReady, Range: netip.MustParsePrefix("10.0.0.64/26"),
		Shim: netip.MustParseAddr("10.0.0.64"), ShimLink: link, Parent: "eth1",
		Range6: netip.MustParsePrefix("fd00:1:0:0:1::/80"), Shim6: netip.MustParseAddr("fd00:1::1:ffff:ffff:ffff")}
	healthy := hostnet.Observed{ParentExists: true, ParentUp: true, ParentPromisc: true, ShimExists: true, ShimOK: true,
		ShimUp: true, ShimHasIP: true, RouteViaOK: true, ShimHasIP6: true, Route6ViaOK: true}
	addr6 := "ip -6 addr replace fd00:1::1:ffff:ffff:ffff/128 dev " + link + " nodad"
	route6 := "ip -6 route add fd00:1:0:0:1::/80 dev " + link + " metric 1"
	okRows := []brief{
		{"network/lan/state", "ok", ""},
		{"network/lan/parent-up", "ok", ""},
		{"network/lan/parent-promisc", "ok", ""},
		{"network/lan/shim", "ok", ""},
		{"network/lan/shim-address", "ok", ""},
		{"network/lan/route", "ok", ""},
		{"network/lan/shim-address6", "ok", ""},
		{"network/lan/route6", "ok", ""},
	}
	with := func(mod func(*hostnet.Observed)) hostnet.Observed {
		o := healthy
		mod(&o)
		return o
	}
	replace := func(rows []brief, i int, b brief) []brief {
		out := append([]brief(nil), rows...)
		out[i] = b
		return out
	}
	older := *ready // an older agent's report: IPv4 judged only
	older.Range6, older.Shim6 = netip.Prefix{}, netip.Addr{}
	tests := []struct {
		name string
		f    NetworkFacts
		want []brief
	}{
		{"healthy", NetworkFacts{Spec: spec, State: ready, Observed: healthy}, okRows},
		{"IPv6 address missing", NetworkFacts{Spec: spec, State: ready, Observed: with(func(o *hostnet.Observed) { o.ShimHasIP6, o.Route6ViaOK = false, false })},
			replace(replace(okRows, 6, brief{"network/lan/shim-address6", "fail", addr6 + " && " + route6}), 7, brief{"network/lan/route6", "fail", route6})},
		{"IPv6 route missing", NetworkFacts{Spec: spec, State: ready, Observed: with(func(o *hostnet.Observed) { o.Route6ViaOK = false })},
			replace(okRows, 7, brief{"network/lan/route6", "fail", route6})},
		{"shim missing", NetworkFacts{Spec: spec, State: ready, Observed: hostnet.Observed{ParentExists: true, ParentUp: true, ParentPromisc: true}},
			append(okRows[:3:3], brief{"network/lan/shim", "fail", "ip link add " + link + " link eth1 type macvlan mode bridge && ip addr add 10.0.0.64/32 dev " + link +
				" && " + addr6 + " && ip link set " + link + " up && ip route add 10.0.0.64/26 dev " + link + " && " + route6})},
		{"an older agent's report", NetworkFacts{Spec: spec, State: &older, Observed: healthy}, okRows[:6]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, briefs(EvalNetwork(tt.f))); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
}

// TestEvalNetworkForgedShimLink: a node's report is a document any
// agent's token may write; a shim link name in it that is none the agent
// gives was pasted into the fix commands, so copying a fix ran it.
func TestEvalNetworkForgedShimLink(t *testing.T) {
	spec := netspec.Spec{Name: "lan", Parent: "eth1", Subnet: netip.MustParsePrefix("10.0.0.0/24")}
	forged := &netspec.NodeState{Node: "n1", State: netspec.StateReady, Range: netip.MustParsePrefix("10.0.0.64/26"),
		Shim: netip.MustParseAddr("10.0.0.64"), ShimLink: "x;touch /tmp/p", Parent: "eth1"}
	f := NetworkFacts{Spec: spec, State: forged, Observed: hostnet.Observed{ParentExists: true, ParentUp: true, ParentPromisc: true}}
	for _, r := range EvalNetwork(f) {
		if strings.Contains(r.Fix, "touch") || strings.Contains(r.Message, "touch") {
			t.Errorf("%s: fix %q, message %q: the report's shim link name is used", r.Check, r.Fix, r.Message)
		}
	}
	if w, _ := f.Want(); w.ShimLink != netspec.ShimLinkName("lan") {
		t.Errorf("shim link %q, want the agent's name for it, %q", w.ShimLink, netspec.ShimLinkName("lan"))
	}
}

// TestEvalNetworkForgedAddresses: a node's report is a document any
// agent's token may write, and its shim addresses and ranges were pasted
// into the fix commands as they were: a zone holds any text (fd00::5%x;
// touch /tmp/p), so copying the fix ran it; an IPv6 address in the IPv4
// field, or a range outside the network (0.0.0.0/0), made a fix routing
// the host's traffic elsewhere. Such a report is now this node's failed
// state, naming the values, and no fix is built of them.
func TestEvalNetworkForgedAddresses(t *testing.T) {
	spec := netspec.Spec{Name: "lan", Parent: "eth1", Subnet: netip.MustParsePrefix("10.0.0.0/24"), IPv6Subnet: netip.MustParsePrefix("fd00:1::/64")}
	good := netspec.NodeState{Node: "n1", State: netspec.StateReady, Range: netip.MustParsePrefix("10.0.0.64/26"),
		Shim: netip.MustParseAddr("10.0.0.64"), ShimLink: netspec.ShimLinkName("lan"), Parent: "eth1",
		Range6: netip.MustParsePrefix("fd00:1:0:0:1::/80"), Shim6: netip.MustParseAddr("fd00:1::1:ffff:ffff:ffff")}
	for _, tc := range []struct {
		name, bad string
		forge     func(*netspec.NodeState)
	}{
		{"zone in the IPv6 shim", "touch", func(s *netspec.NodeState) { s.Shim6 = netip.MustParseAddr("fd00:1::5%x;touch /tmp/p") }},
		{"zone in the IPv4 shim field", "touch", func(s *netspec.NodeState) { s.Shim = netip.MustParseAddr("fe80::1%x;touch /tmp/p") }},
		{"IPv6 address as the IPv4 shim", "fd00:1::9", func(s *netspec.NodeState) { s.Shim = netip.MustParseAddr("fd00:1::9") }},
		{"IPv4-mapped address as the IPv4 shim", "::ffff:", func(s *netspec.NodeState) { s.Shim = netip.MustParseAddr("::ffff:10.0.0.64") }},
		{"IPv4 address as the IPv6 shim", "10.0.0.99", func(s *netspec.NodeState) { s.Shim6 = netip.MustParseAddr("10.0.0.99") }},
		{"range of everything", "0.0.0.0/0", func(s *netspec.NodeState) { s.Range = netip.MustParsePrefix("0.0.0.0/0") }},
		{"range outside the subnet", "192.168.1.0/24", func(s *netspec.NodeState) { s.Range = netip.MustParsePrefix("192.168.1.0/24") }},
		{"shim outside the subnet", "192.168.1.1", func(s *netspec.NodeState) { s.Shim = netip.MustParseAddr("192.168.1.1") }},
		{"IPv6 range of everything", "::/0", func(s *netspec.NodeState) { s.Range6 = netip.MustParsePrefix("::/0") }},
		{"IPv6 shim outside the subnet", "2001:db8::1", func(s *netspec.NodeState) { s.Shim6 = netip.MustParseAddr("2001:db8::1") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forged := good
			tc.forge(&forged)
			f := NetworkFacts{Spec: spec, State: &forged, Observed: hostnet.Observed{ParentExists: true, ParentUp: true, ParentPromisc: true}}
			rs := EvalNetwork(f)
			for _, r := range rs {
				if strings.Contains(r.Fix, tc.bad) {
					t.Errorf("%s: fix %q uses the report's %s", r.Check, r.Fix, tc.bad)
				}
			}
			if rs[0].Check != "network/lan/state" || rs[0].Status != Fail || !strings.Contains(rs[0].Message, tc.bad) {
				t.Errorf("state %+v, want a failure naming %s", rs[0], tc.bad)
			}
			if _, ok := f.Want(); ok {
				t.Errorf("Want takes the forged report")
			}
		})
	}
}

// TestEvalNetworkForgedParent: a spec is read from Consul as written (the
// agents refuse one network create would, but the doctor still judges
// it), and its parent went into the fix commands bare: a VLAN-like parent
// "x;touch /tmp/p.42" made "ip link add link x;touch /tmp/p name ...",
// which ran touch when copied. Each fix now names the parent, and its
// lower device, as one shell word.
func TestEvalNetworkForgedParent(t *testing.T) {
	const parent = "x;touch /tmp/p.42"
	spec := netspec.Spec{Name: "lan", Parent: parent, Subnet: netip.MustParsePrefix("10.0.0.0/24")}
	state := &netspec.NodeState{Node: "n1", State: netspec.StateReady, Range: netip.MustParsePrefix("10.0.0.64/26"),
		Shim: netip.MustParseAddr("10.0.0.64"), ShimLink: netspec.ShimLinkName("lan")}
	for _, tc := range []struct {
		name string
		f    NetworkFacts
	}{
		{"parent missing", NetworkFacts{Spec: spec, State: state, VLANSupport: true}},
		{"parent down, shim missing", NetworkFacts{Spec: spec, State: state, VLANSupport: true, Observed: hostnet.Observed{ParentExists: true}}},
		{"parent of another kind", NetworkFacts{Spec: spec, State: state, VLANSupport: true, Observed: hostnet.Observed{ParentExists: true, ParentUp: true},
			Parent: hostnet.ParentFacts{Exists: true, Type: "dummy"}}},
		{"lower down", NetworkFacts{Spec: spec, State: state, VLANSupport: true, Observed: hostnet.Observed{ParentExists: true, ParentUp: true},
			Parent: hostnet.ParentFacts{Exists: true, Type: "vlan", VLAN: 42, Lower: "x;touch /tmp/p", LowerExists: true}}},
		{"MTU above the lower's", NetworkFacts{Spec: spec, State: state, VLANSupport: true, Observed: hostnet.Observed{ParentExists: true, ParentUp: true},
			Parent: hostnet.ParentFacts{Exists: true, Type: "vlan", VLAN: 42, Lower: "x;touch /tmp/p", LowerExists: true, LowerUp: true, MTU: 9000, LowerMTU: 1500}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fixes := 0
			for _, r := range EvalNetwork(tc.f) {
				if r.Fix == "" || strings.HasPrefix(r.Fix, "underlay ") {
					continue
				}
				fixes++
				if strings.Contains(strings.ReplaceAll(r.Fix, "'x;touch", ""), "x;touch") {
					t.Errorf("%s: fix %q holds the parent bare", r.Check, r.Fix)
				}
				if !strings.Contains(r.Fix, "'x;touch /tmp/p") {
					t.Errorf("%s: fix %q does not name the parent quoted", r.Check, r.Fix)
				}
			}
			if fixes == 0 {
				t.Errorf("no fix naming the parent")
			}
		})
	}
}

// TestEvalNetworkForgedIPvlanMode: the shim's fix named the spec's ipvlan
// mode as written, and a spec in Consul may hold any: a mode of
// "l2;touch /tmp/p" made "ip link add ... type ipvlan mode l2;touch
// /tmp/p", which ran touch when copied. The mode is now one shell word.
func TestEvalNetworkForgedIPvlanMode(t *testing.T) {
	spec := netspec.Spec{Name: "lan", Parent: "eth1", Driver: netspec.IPvlan, IPvlanMode: "l2;touch /tmp/p", Subnet: netip.MustParsePrefix("10.0.0.0/24")}
	state := &netspec.NodeState{Node: "n1", State: netspec.StateReady, Range: netip.MustParsePrefix("10.0.0.64/26"),
		Shim: netip.MustParseAddr("10.0.0.64"), ShimLink: netspec.ShimLinkName("lan")}
	for _, o := range []hostnet.Observed{{ParentExists: true, ParentUp: true}, {ParentExists: true, ParentUp: true, ShimExists: true}} {
		for _, r := range EvalNetwork(NetworkFacts{Spec: spec, State: state, Observed: o}) {
			if strings.Contains(strings.ReplaceAll(r.Fix, "'l2;touch", ""), "l2;touch") {
				t.Errorf("%s: fix %q holds the mode bare", r.Check, r.Fix)
			}
		}
	}
}

func TestEvalNetfilter(t *testing.T) {
	nft := func(policy string, bridged bool) ForwardChain {
		return ForwardChain{Backend: BackendNFT, Policy: policy, AcceptsBridged: bridged}
	}
	legacy := func(policy string, bridged bool) ForwardChain {
		return ForwardChain{Backend: BackendLegacy, Policy: policy, AcceptsBridged: bridged}
	}
	const accept = "-I FORWARD -m physdev --physdev-is-bridged -j ACCEPT"
	tests := []struct {
		name string
		f    NetfilterFacts
		want Status
		fix  string
		msg  string
	}{
		{"br_netfilter not loaded", NetfilterFacts{}, OK, "", "does not pass"},
		{"bridge-nf off", NetfilterFacts{BridgeCallIPTables: "0", Chains: []ForwardChain{nft("DROP", false)}}, OK, "", "does not pass"},
		{"on, no chain at all", NetfilterFacts{BridgeCallIPTables: "1"}, OK, "", "no FORWARD chain"},
		{"on, policy accept", NetfilterFacts{BridgeCallIPTables: "1", Chains: []ForwardChain{nft("ACCEPT", false)}}, OK, "", "policy ACCEPT (nf_tables)"},
		{"on, policy drop: the trap", NetfilterFacts{BridgeCallIPTables: "1", Chains: []ForwardChain{nft("DROP", false)}}, Warn, "iptables-nft " + accept + "   #", "policy DROP (nf_tables)"},
		{"on, legacy policy drop: the trap", NetfilterFacts{BridgeCallIPTables: "1", Chains: []ForwardChain{nft("ACCEPT", false), legacy("DROP", false)}}, Warn, "iptables-legacy " + accept + "   #", "policy DROP (legacy)"},
		{"on, both drop", NetfilterFacts{BridgeCallIPTables: "1", Chains: []ForwardChain{nft("DROP", false), legacy("DROP", false)}}, Warn, "iptables-nft " + accept + " && iptables-legacy " + accept + "   #", "(nf_tables); FORWARD policy DROP (legacy)"},
		{"on, both drop, only nft accepts bridged", NetfilterFacts{BridgeCallIPTables: "1", Chains: []ForwardChain{nft("DROP", true), legacy("DROP", false)}}, Warn, "iptables-legacy " + accept + "   #", "policy DROP (legacy)"},
		{"on, policy drop, bridged traffic accepted", NetfilterFacts{BridgeCallIPTables: "1", Chains: []ForwardChain{nft("DROP", true)}}, OK, "", "but a rule accepts"},
		{"on, both drop, both accept bridged", NetfilterFacts{BridgeCallIPTables: "1", Chains: []ForwardChain{nft("DROP", true), legacy("DROP", true)}}, OK, "", "but a rule accepts bridged traffic; FORWARD policy DROP (legacy)"},
		{"on, policy unknown", NetfilterFacts{BridgeCallIPTables: "1", PolicyErr: errors.New("read nf_tables: EPERM")}, Warn, "iptables-nft -S FORWARD", "unknown (read nf_tables: EPERM)"},
		{"on, one backend unknown, the other drops", NetfilterFacts{BridgeCallIPTables: "1", Chains: []ForwardChain{legacy("DROP", false)}, PolicyErr: errors.New("read nf_tables: EPERM")}, Warn, "iptables-legacy " + accept, "read nf_tables: EPERM"},
		{"on, one backend unknown, the other accepts", NetfilterFacts{BridgeCallIPTables: "1", Chains: []ForwardChain{legacy("ACCEPT", false)}, PolicyErr: errors.New("read nf_tables: EPERM")}, Warn, "iptables-nft -S FORWARD", "unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := EvalNetfilter(tt.f)
			if r.Status != tt.want || !strings.HasPrefix(r.Fix, tt.fix) || (tt.fix == "") != (r.Fix == "") || !strings.Contains(r.Message, tt.msg) {
				t.Errorf("got %s %q (fix %q), want %s with fix %q, message with %q", r.Status, r.Message, r.Fix, tt.want, tt.fix, tt.msg)
			}
		})
	}
}

func TestParseForward(t *testing.T) {
	tests := []struct {
		name, in string
		policy   string
		bridged  bool
		wantErr  bool
	}{
		{"docker's", "-P FORWARD DROP\n-A FORWARD -j DOCKER-USER\n-A FORWARD -o docker0 -j ACCEPT\n", "DROP", false, false},
		{"fixed", "-P FORWARD DROP\n-A FORWARD -m physdev --physdev-is-bridged -j ACCEPT\n-A FORWARD -j DOCKER-USER\n", "DROP", true, false},
		{"bridged accepted on one port only", "-P FORWARD DROP\n-A FORWARD -i br0 -m physdev --physdev-is-bridged -j ACCEPT\n", "DROP", false, false},
		{"no policy line", "-A FORWARD -j ACCEPT\n", "", false, true},
		// A rule that accepts only some bridged traffic, or (negated) none
		// of it, leaves the rest to the DROP policy.
		{"negated: what is not bridged accepted", "-P FORWARD DROP\n-A FORWARD -m physdev ! --physdev-is-bridged -j ACCEPT\n", "DROP", false, false},
		{"bridged TCP only", "-P FORWARD DROP\n-A FORWARD -p tcp -m physdev --physdev-is-bridged -j ACCEPT\n", "DROP", false, false},
		{"bridged from one bridge port only", "-P FORWARD DROP\n-A FORWARD -m physdev --physdev-in veth1 --physdev-is-bridged -j ACCEPT\n", "DROP", false, false},
		{"bridged and marked only", "-P FORWARD DROP\n-A FORWARD -m mark --mark 0x1 -m physdev --physdev-is-bridged -j ACCEPT\n", "DROP", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, b, err := ParseForward(tt.in)
			if p != tt.policy || b != tt.bridged || (err != nil) != tt.wantErr {
				t.Errorf("got %q, %v, %v; want %q, %v, error %v", p, b, err, tt.policy, tt.bridged, tt.wantErr)
			}
		})
	}
}

func TestEvalDocker(t *testing.T) {
	tests := []struct {
		name string
		f    DockerFacts
		want []brief
	}{
		{"manager", DockerFacts{Version: "20.10.24+dfsg1", SwarmState: "active", Manager: true, PluginDir: true},
			[]brief{{"docker/version", "ok", ""}, {"docker/swarm", "ok", ""}, {"docker/plugin-dir", "ok", ""}}},
		{"newer major", DockerFacts{Version: "28.5.2", SwarmState: "active", PluginDir: true},
			[]brief{{"docker/version", "ok", ""}, {"docker/swarm", "ok", ""}, {"docker/plugin-dir", "ok", ""}}},
		{"too old, no swarm, no plugin dir", DockerFacts{Version: "19.03.15", SwarmState: "inactive"},
			[]brief{
				{"docker/version", "fail", "apt-get install docker.io   # or your distribution's Docker Engine >= 20.10"},
				{"docker/swarm", "fail", "docker swarm join --token TOKEN MANAGER:2377   # TOKEN from `docker swarm join-token -q worker` on a manager"},
				{"docker/plugin-dir", "fail", "mkdir -p /run/docker/plugins"},
			}},
		{"locked swarm, odd version", DockerFacts{Version: "dev", SwarmState: "locked", PluginDir: true},
			[]brief{{"docker/version", "warn", ""}, {"docker/swarm", "fail", "docker swarm unlock"}, {"docker/plugin-dir", "ok", ""}}},
		{"daemon down", DockerFacts{Err: errors.New("connection refused")},
			[]brief{{"docker/daemon", "fail", "systemctl start docker   # or set DOCKER_HOST to this node's daemon"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, briefs(EvalDocker(tt.f))); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
}

func TestSkewAtLeast(t *testing.T) {
	date := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		local time.Time
		want  time.Duration
	}{
		{date, 0},
		{date.Add(999 * time.Millisecond), 0},
		{date.Add(1500 * time.Millisecond), 500 * time.Millisecond},
		{date.Add(-2 * time.Second), -2 * time.Second},
	}
	for _, tt := range tests {
		if got := SkewAtLeast(tt.local, date); got != tt.want {
			t.Errorf("SkewAtLeast(%s) = %s, want %s", tt.local.Sub(date), got, tt.want)
		}
	}
}

func TestEvalConsul(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		f    ConsulFacts
		want []brief
	}{
		{"healthy", ConsulFacts{Leader: "10.0.0.1:8300", ServerDate: now, LocalAt: now.Add(300 * time.Millisecond), Source: "leader"},
			[]brief{{"consul/agent", "ok", ""}, {"consul/clock-skew", "ok", ""}}},
		{"clock ahead", ConsulFacts{Leader: "10.0.0.1:8300", ServerDate: now, LocalAt: now.Add(3 * time.Second), Source: "leader"},
			[]brief{{"consul/agent", "ok", ""}, {"consul/clock-skew", "warn", "timedatectl set-ntp true   # or: chronyc makestep"}}},
		{"clock behind", ConsulFacts{Leader: "10.0.0.1:8300", ServerDate: now, LocalAt: now.Add(-1500 * time.Millisecond), Source: "leader"},
			[]brief{{"consul/agent", "ok", ""}, {"consul/clock-skew", "warn", "timedatectl set-ntp true   # or: chronyc makestep"}}},
		{"no leader", ConsulFacts{ServerDate: now, LocalAt: now},
			[]brief{{"consul/agent", "fail", "consul members   # then: consul join SERVER_ADDRESS"}, {"consul/clock-skew", "ok", ""}}},
		{"skew unmeasurable", ConsulFacts{Leader: "x:8300", DateErr: errors.New("timeout")},
			[]brief{{"consul/agent", "ok", ""}, {"consul/clock-skew", "warn", "timedatectl status"}}},
		{"agent down", ConsulFacts{Err: errors.New("connection refused")},
			[]brief{{"consul/agent", "fail", "systemctl start consul   # or set CONSUL_HTTP_ADDR / --consul-addr to this node's agent"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, briefs(EvalConsul(tt.f))); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
}

func TestEvalContainers(t *testing.T) {
	ip := netip.MustParseAddr("10.0.0.70")
	tests := []struct {
		name string
		ps   []Probe
		err  error
		want []brief
	}{
		{"none", nil, nil, []brief{{"containers/reachable", "ok", ""}}},
		{"reached and unprobed", []Probe{{Container: "a", IP: ip, Port: 8080}, {Container: "b", IP: ip}}, nil,
			[]brief{{"containers/reachable", "ok", ""}}},
		{"unreachable", []Probe{{Container: "a", Network: "lan", IP: ip, Port: 8080, Err: errors.New("i/o timeout"), ShimLink: "ul-1"}}, nil,
			[]brief{{"containers/reachable", "fail", "ip route get 10.0.0.70   # must say dev ul-1; see the network/lan/shim and route checks"}}},
		{"docker down", nil, errors.New("refused"), []brief{{"containers/reachable", "fail", "docker ps"}}},
		{"unreachable over IPv6", []Probe{{Container: "a", Network: "lan", IP: ip, Port: 8080, ShimLink: "ul-1"},
			{Container: "a", Network: "lan", IP: netip.MustParseAddr("fd00::7"), Port: 8080, Err: errors.New("no route to host"), ShimLink: "ul-1"}}, nil,
			[]brief{{"containers/reachable", "fail", "ip -6 route get fd00::7   # must say dev ul-1; see the network/lan/shim and shim-address6 and route6 checks"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, briefs(EvalContainers(tt.ps, tt.err))); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
	// A dual-stack container reached at both addresses counts once.
	rs := EvalContainers([]Probe{{Container: "a", IP: ip, Port: 80}, {Container: "a", IP: netip.MustParseAddr("fd00::7"), Port: 80}}, nil)
	if len(rs) != 1 || !strings.HasPrefix(rs[0].Message, "1 container(s)") {
		t.Errorf("one dual-stack container reached: %+v, want it counted once", rs)
	}
	if rs := EvalContainers([]Probe{{Container: "a", IP: netip.MustParseAddr("fd00::7"), Port: 80, Err: errors.New("timeout")}}, nil); !strings.Contains(rs[0].Message, "[fd00::7]:80") {
		t.Errorf("message %q, want the address and port as [fd00::7]:80", rs[0].Message)
	}
}

// TestRemovedNodeFixIsOneWord: the fix of a node the swarm no longer lists
// named the node's ID as its facts' key gives it, as it was; any agent's
// Consul token may write such a key, and an operator running the fix
// ran what the key held after a ; or a $(…). The ID is now one shell
// word.
func TestRemovedNodeFixIsOneWord(t *testing.T) {
	for _, id := range []string{"x; touch /tmp/pwned", "$(reboot)", "a\nb"} {
		rs := EvalRemovedNodes(true, []netspec.NodeFacts{{ID: id, Node: "old"}}, map[string]bool{}, nil)
		if want := "underlay node rm " + shellword.Quote(id); len(rs) != 1 || rs[0].Fix != want {
			t.Errorf("node %q: %+v, want fix %s", id, rs, want)
		}
	}
}

// TestServicesFixIsOneWord: the fix of a service whose removals were lost
// pasted the service's name into `docker service scale` as it was, so an
// operator copying it ran what the name held after a ; or a $(…). The
// name=count argument is now one shell word.
func TestServicesFixIsOneWord(t *testing.T) {
	now := time.Date(2026, 12, 3, 5, 0, 0, 0, time.UTC)
	wanted := []TaskFacts{{ID: "0123456789abcdef", Slot: 1, State: "running"}}
	for _, name := range []string{"x; touch /tmp/pwned", "$(reboot)", "a\nb", "web"} {
		svc := ServiceFacts{Name: name, Replicas: 0, Wanted: wanted, UpdatedAt: now.Add(-time.Hour)}
		rs := EvalServices(true, []ServiceFacts{svc}, nil, now)
		want := "docker service scale " + shellword.Quote(name+"=0") + "   # writes the count again; swarm then stops the extra tasks"
		if len(rs) != 1 || rs[0].Fix != want {
			t.Errorf("service %q: %+v, want fix %s", name, rs, want)
		}
	}
}

// TestEvalServicesHugeReplicas: a count above the largest int (swarm
// takes any uint64) wrapped negative when compared, so a service of
// 18446744073709551615 replicas with 2 tasks was warned of as a lost
// scale-down of 3 tasks, with a fix writing that count again. It is
// compared as the count it is now.
func TestEvalServicesHugeReplicas(t *testing.T) {
	now := time.Date(2026, 12, 3, 5, 0, 0, 0, time.UTC)
	wanted := []TaskFacts{{ID: "a", Slot: 1, State: "running"}, {ID: "b", Slot: 2, State: "running"}}
	for _, replicas := range []uint64{math.MaxUint64, math.MaxInt64 + 1, 2} {
		svc := ServiceFacts{Name: "web", Replicas: replicas, Wanted: wanted, UpdatedAt: now.Add(-time.Hour)}
		if rs := EvalServices(true, []ServiceFacts{svc}, nil, now); len(rs) != 1 || rs[0].Status != OK {
			t.Errorf("%d replicas, 2 tasks: %+v, want ok", replicas, rs)
		}
	}
}

// TestEvalBoundsNumerousRows: a check printed one row per unreachable
// address, bad key, removed node or misfiled facts document, and a lost
// task's service listed every task in one message: with a node's shim
// down under a thousand containers, or a thousand stray keys, doctor
// printed thousands of rows and the agent's report outgrew what Consul
// stores in one key (512 KiB), so it was no longer published and the node
// looked dead. Each check now shows MaxRows rows and one more counting the
// rest, which keeps the worst status; a message names MaxRows tasks.
func TestEvalBoundsNumerousRows(t *testing.T) {
	const n = 5000
	var ps []Probe
	var bad []BadKey
	var facts []netspec.NodeFacts
	var misfiled []netspec.MisfiledFacts
	var tasks []TaskFacts
	for i := range n {
		ps = append(ps, Probe{Container: fmt.Sprintf("web.%d", i), Network: "lan", IP: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), Port: 80,
			Err: errors.New("i/o timeout"), ShimLink: "ul-1"})
		bad = append(bad, BadKey{Key: fmt.Sprintf("underlay/ipam/lan/v4/blocks/%d", i), Problem: "not JSON", Fix: "consul kv delete x"})
		facts = append(facts, netspec.NodeFacts{ID: fmt.Sprintf("gone%d", i), Node: fmt.Sprintf("n%d", i)})
		misfiled = append(misfiled, netspec.MisfiledFacts{Key: fmt.Sprintf("underlay/nodes/k%d", i), Names: fmt.Sprintf("other%d", i)})
		tasks = append(tasks, TaskFacts{ID: fmt.Sprintf("task%020d", i), Slot: i, State: "running"})
	}
	svcs := []ServiceFacts{{Name: "web", Replicas: 1, Wanted: tasks, UpdatedAt: time.Now().Add(-time.Hour)}}
	for _, tc := range []struct {
		name string
		rs   []Result
		want Status
	}{
		{"containers", EvalContainers(ps, nil), Fail},
		{"keys", EvalIPAMDocuments("lan/v4", bad, nil), Fail},
		{"removed nodes", EvalRemovedNodes(true, facts, map[string]bool{}, nil), Warn},
		{"misfiled facts", EvalFacts(netspec.FactsListing{Misfiled: misfiled}, nil), Warn},
		{"services", EvalServices(true, svcs, nil, time.Now()), Warn},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.rs) > MaxRows+1 {
				t.Errorf("%d rows, want at most %d", len(tc.rs), MaxRows+1)
			}
			size := 0
			for _, r := range tc.rs {
				size += len(r.Message) + len(r.Fix)
				if r.Status != tc.want {
					t.Errorf("row %+v, want status %s", r, tc.want)
				}
			}
			if size > 64<<10 {
				t.Errorf("%d bytes of messages and fixes, want at most 64 KiB", size)
			}
			if last := tc.rs[len(tc.rs)-1]; len(tc.rs) > 1 && !strings.Contains(last.Message, strconv.Itoa(n-MaxRows)+" more") {
				t.Errorf("last row %q does not count the %d not shown", last.Message, n-MaxRows)
			}
		})
	}
}

// TestEvalNetworkBadParentName: a spec's parent no link can be named (16
// bytes or more; written past network create) was the network's failed
// "host" check, "cannot read links", with netlink's words. It is now the
// network's failed parent check, naming the value and what is wrong with
// it, with the command that removes the network.
func TestEvalNetworkBadParentName(t *testing.T) {
	parent := strings.Repeat("p", 200)
	spec := netspec.Spec{Name: "lan", Parent: parent, Subnet: netip.MustParsePrefix("10.0.0.0/24")}
	_, err := hostnet.Host{}.Observe(hostnet.Want{Parent: parent, ShimLink: netspec.ShimLinkName("lan")})
	rs := EvalNetwork(NetworkFacts{Spec: spec, VLANSupport: true, ObserveErr: err})
	if len(rs) != 1 || rs[0].Check != "network/lan/parent" || rs[0].Status != Fail ||
		!strings.Contains(rs[0].Message, `"`+parent+`": not a valid interface name`) || !strings.HasPrefix(rs[0].Fix, "underlay network rm lan") {
		t.Errorf("got %+v; want the parent check failing, naming it as not a valid interface name, with network rm", rs)
	}
}

// TestMisfiledResultQuotesIdentity: the fix for a facts document filed
// under another identity quoted its key but named the key's identity
// again raw in its note: an identity holding a newline (a key anyone
// with an agent's token may write) made the fix two lines, the second
// one a command of the key's choosing ("touch /tmp/p #'s agent, …"). The
// identity in the note is now one shell word too, and the fix one line.
func TestMisfiledResultQuotesIdentity(t *testing.T) {
	for _, id := range []string{"x\ntouch /tmp/p #", "x; touch /tmp/p #", "abc123"} {
		r := MisfiledResult(netspec.MisfiledFacts{Key: netspec.NodesKVPrefix + id, Names: "other"})
		cmd := shellword.KVDelete(netspec.NodesKVPrefix + id)
		if strings.Contains(r.Fix, "\n") || !strings.HasPrefix(r.Fix, cmd+" ") || !strings.Contains(r.Fix[len(cmd):], " swarm node "+shellword.Quote(id)+", ") {
			t.Errorf("identity %q: fix %q; want one line, %s then the identity as one shell word", id, r.Fix, cmd)
		}
	}
}

// TestMisfiledResultGivesNoDeleteConsulRedirects: facts misfiled under a
// key with an empty, "." or ".." segment had `consul kv delete KEY` as
// their fix, whose path Consul's HTTP API redirects to another key: the
// delete misses it. No command, and the message says how it goes.
func TestMisfiledResultGivesNoDeleteConsulRedirects(t *testing.T) {
	for _, id := range []string{"..", "a//b", "a/./b"} {
		r := MisfiledResult(netspec.MisfiledFacts{Key: netspec.NodesKVPrefix + id, Names: "other"})
		if r.Fix != "" || !strings.Contains(r.Message, "PUT /v1/txn") {
			t.Errorf("identity %q: %+v; want no fix, and the message saying to delete it by a transaction", id, r)
		}
	}
}

// TestEvalFactsInvalidNames: the doctor's nodes/facts said nothing of
// facts giving a node or host name no agent writes; each is now a
// warning naming the key, with the consul kv delete that removes it.
func TestEvalFactsInvalidNames(t *testing.T) {
	const id1, id2 = "id10000000000000000000000", "id20000000000000000000000"
	l := netspec.FactsListing{Facts: []netspec.NodeFacts{
		{ID: id1, Node: "n1", Key: netspec.NodesKVPrefix + id1},
		{ID: id2, Node: "n2\x1b[2J", Key: netspec.NodesKVPrefix + id2},
	}}
	rs := EvalFacts(l, nil)
	if len(rs) != 1 || rs[0].Status != Warn || !strings.Contains(rs[0].Message, "node facts underlay/nodes/"+id2+`: node name "n2\x1b[2J"`) ||
		rs[0].Fix != "consul kv delete underlay/nodes/"+id2+" (the agent of swarm node "+id2+", while it runs, publishes its own facts again)" {
		t.Errorf("nodes/facts: %+v, want one warning of %s's name, with its removal", rs, id2)
	}
}
