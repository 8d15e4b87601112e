package netspec

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestValidateDriver(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Spec)
		want string // error substring; empty: valid
	}{
		{"macvlan by default", func(*Spec) {}, ""},
		{"macvlan named", func(s *Spec) { s.Driver = Macvlan }, ""},
		{"ipvlan", func(s *Spec) { s.Driver = IPvlan }, ""},
		{"ipvlan l2", func(s *Spec) { s.Driver, s.IPvlanMode = IPvlan, IPvlanL2 }, ""},
		{"ipvlan l3 per node", func(s *Spec) { s.Driver, s.IPvlanMode = IPvlan, IPvlanL3 }, ""},
		{"ipvlan l3 cluster", func(s *Spec) { s.Driver, s.IPvlanMode, s.IPAM = IPvlan, IPvlanL3, Cluster }, "l3 needs --ipam per-node"},
		{"ipvlan l2 cluster", func(s *Spec) { s.Driver, s.IPAM = IPvlan, Cluster }, ""},
		{"bad mode", func(s *Spec) { s.Driver, s.IPvlanMode = IPvlan, "l3s" }, `ipvlan mode "l3s"`},
		{"mode without ipvlan", func(s *Spec) { s.IPvlanMode = IPvlanL2 }, "--driver ipvlan"},
		{"bad driver", func(s *Spec) { s.Driver = "bridge" }, `driver "bridge"`},
		{"VLAN parent", func(s *Spec) { s.Parent = "bond0.40" }, ""},
		{"VLAN id too big", func(s *Spec) { s.Parent = "bond0.4095" }, `"bond0.4095": VLAN id 4095`},
		{"VLAN id zero", func(s *Spec) { s.Parent = "eth0.0" }, `"eth0.0": VLAN id 0`},
		// Docker reads any digits after the dot as the VLAN id (Atoi):
		// a missing eth0.00000 it refuses as VLAN 0, eth0.04096 as 4096.
		{"VLAN id zero in five digits", func(s *Spec) { s.Parent = "eth0.00000" }, `"eth0.00000": VLAN id 00000 out of 1 to 4094`},
		{"VLAN id too big in five digits", func(s *Spec) { s.Parent = "eth0.04096" }, `"eth0.04096": VLAN id 04096 out of 1 to 4094`},
		{"VLAN id in five digits", func(s *Spec) { s.Parent = "eth0.04094" }, ""},
		// A parent named like a VLAN must be one Docker's macvlan and
		// ipvlan drivers can make (parseVlan: one dot, an id of 1 to
		// 4094): at boot dockerd makes a missing one before the agent runs.
		{"VLAN 1", func(s *Spec) { s.Parent = "eth0.1" }, ""},
		{"VLAN 4094", func(s *Spec) { s.Parent = "eth0.4094" }, ""},
		{"VLAN 4095", func(s *Spec) { s.Parent = "eth0.4095" }, `"eth0.4095": VLAN id 4095 out of 1 to 4094`},
		{"VLAN on a VLAN", func(s *Spec) { s.Parent = "bond0.40.5" }, `parent "bond0.40.5": VLAN 5 on bond0.40, a name with two dots: Docker's macvlan and ipvlan drivers make a missing parent only as device.vlan_id with one dot`},
		{"VLAN on a dotted name", func(s *Spec) { s.Parent = "br.lan.7" }, `parent "br.lan.7": VLAN 7 on br.lan, a name with two dots`},
		{"VLAN with no id", func(s *Spec) { s.Parent = "eth0." }, `parent "eth0.": no VLAN id after the dot`},
		{"VLAN with no device", func(s *Spec) { s.Parent = ".40" }, `parent ".40": no device before the dot`},
		{"dotted name, not a VLAN", func(s *Spec) { s.Parent = "br.lan" }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := validSpec()
			tc.edit(&s)
			err := Validate(s, nil)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate() = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestVLANParent(t *testing.T) {
	for _, tc := range []struct {
		in    string
		lower string
		vid   int
		ok    bool
	}{
		{"bond0.40", "bond0", 40, true},
		{"eth1.4094", "eth1", 4094, true},
		{"br.lan.7", "br.lan", 7, true},
		{"eth1", "", 0, false},
		{"eth1.0", "", 0, false},
		{"eth1.4095", "", 0, false},
		{"br.lan", "", 0, false},
		// As Docker's macvlan and ipvlan drivers read them, making a
		// missing one: VLAN 4094 and 40.
		{"eth1.04094", "eth1", 4094, true},
		{"eth1.0000040", "eth1", 40, true},
		{"eth1.04095", "", 0, false},
	} {
		lower, vid, ok := VLANParent(tc.in)
		if lower != tc.lower || vid != tc.vid || ok != tc.ok {
			t.Errorf("VLANParent(%q) = %q, %d, %v", tc.in, lower, vid, ok)
		}
	}
}

func TestWithVLAN(t *testing.T) {
	if got, err := WithVLAN("bond0", 40); err != nil || got != "bond0.40" {
		t.Errorf("WithVLAN(bond0, 40) = %q, %v", got, err)
	}
	if got, err := WithVLAN("bond0.40", 0); err != nil || got != "bond0.40" {
		t.Errorf("WithVLAN(bond0.40, 0) = %q, %v", got, err)
	}
	if _, err := WithVLAN("bond0", 4095); err == nil || !strings.Contains(err.Error(), "--vlan 4095") {
		t.Errorf("VLAN 4095: %v", err)
	}
	if _, err := WithVLAN("bond0.40", 41); err == nil || !strings.Contains(err.Error(), "already VLAN 40") {
		t.Errorf("VLAN on a VLAN: %v", err)
	}
	if _, err := WithVLAN("", 40); err == nil || !strings.Contains(err.Error(), "--vlan 40 needs --parent") {
		t.Errorf("VLAN with no parent: %v", err)
	}
}

func TestCheckParentVLAN(t *testing.T) {
	now := time.Now()
	s := validSpec()
	s.Parent = "bond0.40"
	nodes := []NodeFacts{
		{Node: "a", Interfaces: []string{"bond0", "eth0", "lo"}, UpdatedAt: now},
		{Node: "b", Interfaces: []string{"bond0", "bond0.40"}, UpdatedAt: now},
		{Node: "c", Interfaces: []string{"eth0"}, UpdatedAt: now},
	}
	silent, err := CheckParent(s, nodes, nil, now, 30*time.Second)
	if err == nil || !strings.Contains(err.Error(), "node(s) c") || strings.Contains(err.Error(), "a,") || len(silent) != 0 {
		t.Errorf("CheckParent = %v, %v; want only node c named", silent, err)
	}
	if _, err := CheckParent(s, nodes[:2], nil, now, 30*time.Second); err != nil {
		t.Errorf("lower present everywhere: %v", err)
	}
}

// TestCheckParentOfSilentNodes: a node not heard from (its facts stamped
// long ago: down, or removed from the swarm with its facts left behind)
// that lacks the parent is returned for a warning, not refused: it would
// otherwise refuse such networks for good. One stamped ahead of this
// clock is heard from.
func TestCheckParentOfSilentNodes(t *testing.T) {
	now := time.Now()
	s := validSpec()
	nodes := []NodeFacts{
		{ID: "x1", Node: "live", Interfaces: []string{"eth0"}, UpdatedAt: now.Add(-5 * time.Second)},
		{ID: "x2", Node: "gone", Interfaces: []string{"eth9"}, UpdatedAt: now.Add(-time.Hour)},
		{ID: "x3", Node: "old-with-it", Interfaces: []string{"eth0"}, UpdatedAt: now.Add(-time.Hour)},
	}
	silent, err := CheckParent(s, nodes, nil, now, 30*time.Second)
	if err != nil || len(silent) != 1 || silent[0].ID != "x2" {
		t.Errorf("CheckParent = %+v, %v; want no error and only x2 returned", silent, err)
	}
	nodes = append(nodes, NodeFacts{ID: "x4", Node: "ahead", Interfaces: []string{"eth9"}, UpdatedAt: now.Add(time.Hour)})
	if _, err := CheckParent(s, nodes, nil, now, 30*time.Second); err == nil || !strings.Contains(err.Error(), "parent eth0 does not exist on node(s) ahead") {
		t.Errorf("a node stamped ahead lacking the parent: %v, want it refused", err)
	}
}

// TestCheckParentBySwarmState: where the swarm's word is known, it says
// which nodes are heard from, not the facts' stamps (their node's clock): a
// ready node whose clock is an hour behind refuses the network, a down one
// stamped an hour ahead and one the swarm no longer lists are warned of,
// and facts without an identity are judged by their stamp.
func TestCheckParentBySwarmState(t *testing.T) {
	now := time.Now()
	s := validSpec()
	nodes := []NodeFacts{
		{ID: "x1", Node: "behind", Interfaces: []string{"eth9"}, UpdatedAt: now.Add(-time.Hour)},
		{ID: "x2", Node: "ahead-down", Interfaces: []string{"eth9"}, UpdatedAt: now.Add(time.Hour)},
		{ID: "x3", Node: "removed", Interfaces: []string{"eth9"}, UpdatedAt: now},
		{Node: "old-agent", Interfaces: []string{"eth9"}, UpdatedAt: now.Add(-time.Hour)},
		{ID: "x5", Node: "with-it", Interfaces: []string{"eth0"}, UpdatedAt: now.Add(-time.Hour)},
	}
	swarm := map[string]string{"x1": "ready", "x2": "down", "x5": "ready"}
	silent, err := CheckParent(s, nodes, swarm, now, 30*time.Second)
	if err == nil || !strings.Contains(err.Error(), "parent eth0 does not exist on node(s) behind") || strings.Contains(err.Error(), ",") {
		t.Errorf("CheckParent error %v; want only node behind refusing it", err)
	}
	var got []string
	for _, n := range silent {
		got = append(got, n.Node)
	}
	if d := cmp.Diff([]string{"ahead-down", "removed", "old-agent"}, got); d != "" {
		t.Errorf("silent nodes (-want +got):\n%s", d)
	}
}

func TestDriverArgs(t *testing.T) {
	s := planSpec()
	s.Driver, s.Parent = IPvlan, "bond0.40"
	p := NodePlan{Node: "n1", Block: netip.MustParsePrefix("192.168.10.0/26"), Shim: netip.MustParseAddr("192.168.10.3"), ShimLink: "ul-x"}
	want := []string{
		"ip link add link bond0 name bond0.40 type vlan id 40   # unless it exists",
		"ip link set bond0.40 up",
		"ip link add ul-x link bond0.40 type ipvlan mode l2",
		"ip addr add 192.168.10.3/32 dev ul-x",
		"ip link set ul-x up",
		"ip route add 192.168.10.0/26 dev ul-x",
	}
	if d := cmp.Diff(want, HostCommands(s, p)); d != "" {
		t.Errorf("HostCommands (-want +got):\n%s", d)
	}
	if args := strings.Join(ConfigNetworkArgs(s, p), " "); !strings.Contains(args, "-o parent=bond0.40 -o ipvlan_mode=l2 ") {
		t.Errorf("ConfigNetworkArgs: %s", args)
	}
	if args := strings.Join(SwarmNetworkArgs(s), " "); !strings.Contains(args, "-d ipvlan ") {
		t.Errorf("SwarmNetworkArgs: %s", args)
	}
	if d := cmp.Diff(map[string]string{"parent": "bond0.40", "ipvlan_mode": "l2"}, s.DriverOptions()); d != "" {
		t.Errorf("DriverOptions (-want +got):\n%s", d)
	}
	if s.NeedsPromisc() {
		t.Error("ipvlan wants a promiscuous parent")
	}
	s.IPvlanMode = IPvlanL3
	if got := ShimType(s); got != "ipvlan mode l3" {
		t.Errorf("ShimType = %q", got)
	}
	m := planSpec()
	if d := cmp.Diff(map[string]string{"parent": m.Parent}, m.DriverOptions()); d != "" || !m.NeedsPromisc() || ShimType(m) != "macvlan mode bridge" {
		t.Errorf("macvlan: options %v, promisc %v, shim %q", m.DriverOptions(), m.NeedsPromisc(), ShimType(m))
	}
}
