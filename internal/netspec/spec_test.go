package netspec

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// validSpec is a per-node network that Validate accepts; cases edit a copy.
func validSpec() Spec {
	return Spec{
		Name:        "lan",
		Subnet:      netip.MustParsePrefix("192.168.10.0/24"),
		Gateway:     netip.MustParseAddr("192.168.10.1"),
		Parent:      "eth0",
		Aux:         map[string]netip.Addr{"printer": netip.MustParseAddr("192.168.10.250")},
		IPAM:        PerNode,
		PerNodeSize: 64,
	}
}

// other is an existing network that conflicts with validSpec in nothing.
func other() Spec {
	return Spec{
		Name:        "other",
		Subnet:      netip.MustParsePrefix("10.20.0.0/16"),
		Gateway:     netip.MustParseAddr("10.20.0.1"),
		Parent:      "eth1",
		IPAM:        PerNode,
		PerNodeSize: 64,
	}
}

// splitErrs undoes errors.Join.
func splitErrs(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// validate calls Validate, turning a panic into a test failure so one bad
// case does not hide the others.
func validate(t *testing.T, s Spec, existing []Spec) (err error, panicked bool) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Errorf("Validate panicked: %v", r)
			panicked = true
		}
	}()
	return Validate(s, existing), false
}

func TestValidate(t *testing.T) {
	p := netip.MustParsePrefix
	a := netip.MustParseAddr
	for _, tc := range []struct {
		name     string
		edit     func(*Spec)
		existing []Spec
		// want holds one substring per reported problem, in the order
		// Validate reports them; empty means the spec is valid.
		want []string
	}{
		// Valid specs.
		{name: "valid", edit: func(*Spec) {}},
		{name: "valid with existing disjoint network", edit: func(*Spec) {}, existing: []Spec{other()}},
		{name: "valid without aux", edit: func(s *Spec) { s.Aux = nil }},
		{name: "valid ip range", edit: func(s *Spec) { s.IPRange = p("192.168.10.128/25") }},
		{name: "valid ip range equal to subnet", edit: func(s *Spec) { s.IPRange = p("192.168.10.0/24") }},
		{name: "valid per-node size 4", edit: func(s *Spec) { s.PerNodeSize = 4 }},
		{name: "valid per-node size equal to range", edit: func(s *Spec) { s.PerNodeSize = 256 }},
		{name: "valid per-node size equal to ip range", edit: func(s *Spec) { s.IPRange, s.PerNodeSize = p("192.168.10.64/26"), 64 }},
		{name: "valid /29 subnet", edit: func(s *Spec) {
			s.Subnet, s.Gateway, s.Aux, s.PerNodeSize = p("10.9.9.0/29"), a("10.9.9.1"), nil, 4
		}},
		{name: "valid /29 cluster subnet", edit: func(s *Spec) {
			s.IPAM, s.Subnet, s.Gateway, s.Aux, s.PerNodeSize = Cluster, p("10.9.9.0/29"), a("10.9.9.1"), nil, 0
		}},
		{name: "valid cluster mode ignores per-node size", edit: func(s *Spec) { s.IPAM, s.PerNodeSize = Cluster, 0 }},
		{name: "valid vlan parent", edit: func(s *Spec) { s.Parent = "eth0.100" }},
		{name: "valid 15 character parent", edit: func(s *Spec) { s.Parent = "enp0s31f6abcdef" }},
		{name: "valid 48 character name", edit: func(s *Spec) { s.Name = strings.Repeat("n", 48) }},
		{name: "valid name with dots dashes underscores", edit: func(s *Spec) { s.Name = "lan_1.prod-a" }},
		{name: "valid ipv6 /64", edit: func(s *Spec) { s.IPv6Subnet = p("fd00:1:2:3::/64") }},
		{name: "valid ipv6 /48", edit: func(s *Spec) { s.IPv6Subnet = p("fd00:1:2::/48") }},
		{name: "valid ipv6 next to existing ipv6", edit: func(s *Spec) { s.IPv6Subnet = p("fd00:1::/64") },
			existing: []Spec{func() Spec { o := other(); o.IPv6Subnet = p("fd00:2::/64"); return o }()}},

		// Name, parent and IPAM mode.
		{name: "empty name", edit: func(s *Spec) { s.Name = "" }, want: []string{`network name ""`}},
		{name: "name starting with dash", edit: func(s *Spec) { s.Name = "-lan" }, want: []string{`network name "-lan"`}},
		{name: "name with space", edit: func(s *Spec) { s.Name = "my lan" }, want: []string{`network name "my lan"`}},
		{name: "name with slash", edit: func(s *Spec) { s.Name = "a/b" }, want: []string{`network name "a/b"`}},
		{name: "name of 49 characters", edit: func(s *Spec) { s.Name = strings.Repeat("n", 49) },
			want: []string{`network name "` + strings.Repeat("n", 49) + `"`}},
		{name: "empty parent", edit: func(s *Spec) { s.Parent = "" }, want: []string{`parent ""`}},
		{name: "parent with shell characters", edit: func(s *Spec) { s.Parent = "eth0;reboot" }, want: []string{`parent "eth0;reboot"`}},
		{name: "parent with slash", edit: func(s *Spec) { s.Parent = "eth/0" }, want: []string{`parent "eth/0"`}},
		{name: "parent of 16 characters", edit: func(s *Spec) { s.Parent = "enp0s31f6abcdefg" }, want: []string{`parent "enp0s31f6abcdefg"`}},
		{name: "parent named as a shim", edit: func(s *Spec) { s.Parent = ShimLinkName("other") }, want: []string{fmt.Sprintf("parent %q: named as underlay's host shims are", ShimLinkName("other"))}},
		{name: "VLAN parent on a shim", edit: func(s *Spec) { s.Parent = "ul-0000abcd.40" }, want: []string{`parent "ul-0000abcd.40": a VLAN on ul-0000abcd`}},
		// Every node put lo promiscuous, then failed to add the shim:
		// the kernel makes no macvlan, ipvlan or VLAN on the loopback.
		{name: "loopback parent", edit: func(s *Spec) { s.Parent = "lo" }, want: []string{`parent "lo": the loopback device`}},
		{name: "VLAN on the loopback", edit: func(s *Spec) { s.Parent = "lo.40" }, want: []string{`parent "lo.40": the loopback device`}},
		{name: "valid parent named like lo", edit: func(s *Spec) { s.Parent = "lo0" }},
		{name: "valid parent like a shim's name", edit: func(s *Spec) { s.Parent = "ul-lan.40" }},
		{name: "empty ipam", edit: func(s *Spec) { s.IPAM = "" }, want: []string{`ipam ""`}},
		{name: "unknown ipam", edit: func(s *Spec) { s.IPAM = "dhcp" }, want: []string{`ipam "dhcp"`}},

		// Subnet.
		{name: "missing subnet", edit: func(s *Spec) { s.Subnet = netip.Prefix{} }, want: []string{"subnet: missing"}},
		{name: "ipv6 subnet", edit: func(s *Spec) { s.Subnet = p("fd00::/64") }, want: []string{"subnet fd00::/64: want an IPv4 CIDR"}},
		{name: "4in6 subnet", edit: func(s *Spec) { s.Subnet = p("::ffff:192.168.10.0/120") },
			want: []string{"subnet ::ffff:192.168.10.0/120: want an IPv4 CIDR"}},
		{name: "unmasked subnet", edit: func(s *Spec) { s.Subnet = p("192.168.10.5/24") },
			want: []string{"subnet 192.168.10.5/24: not a network address; did you mean 192.168.10.0/24?"}},
		{name: "/0 cluster subnet", edit: func(s *Spec) {
			s.IPAM, s.Subnet, s.Gateway, s.Aux, s.PerNodeSize = Cluster, p("0.0.0.0/0"), a("10.0.0.1"), nil, 0
		}, want: []string{"subnet 0.0.0.0/0: every address"}},
		{name: "/31 subnet", edit: func(s *Spec) { s.Subnet = p("192.168.10.0/31") }, want: []string{"subnet 192.168.10.0/31: too small"}},
		{name: "/32 subnet", edit: func(s *Spec) { s.Subnet = p("192.168.10.1/32") }, want: []string{"subnet 192.168.10.1/32: too small"}},
		// Every node would route its part of it through its host shim, and
		// give containers addresses no LAN routes.
		{name: "loopback subnet", edit: func(s *Spec) { s.Subnet, s.Gateway, s.Aux = p("127.0.0.0/24"), a("127.0.0.1"), nil },
			want: []string{"subnet 127.0.0.0/24: overlaps 127.0.0.0/8, the loopback addresses"}},
		{name: "multicast subnet", edit: func(s *Spec) { s.Subnet, s.Gateway, s.Aux = p("224.0.0.0/24"), a("224.0.0.1"), nil },
			want: []string{"subnet 224.0.0.0/24: overlaps 224.0.0.0/4, the multicast addresses"}},
		{name: "link-local subnet", edit: func(s *Spec) { s.Subnet, s.Gateway, s.Aux = p("169.254.169.0/24"), a("169.254.169.1"), nil },
			want: []string{"subnet 169.254.169.0/24: overlaps 169.254.0.0/16, the link-local addresses"}},
		{name: "this-network subnet", edit: func(s *Spec) { s.Subnet, s.Gateway, s.Aux = p("0.0.0.0/24"), a("0.0.0.1"), nil },
			want: []string{"subnet 0.0.0.0/24: overlaps 0.0.0.0/8"}},
		{name: "half of all addresses", edit: func(s *Spec) {
			s.IPAM, s.Subnet, s.Gateway, s.Aux, s.PerNodeSize = Cluster, p("0.0.0.0/1"), a("10.0.0.1"), nil, 0
		}, want: []string{"subnet 0.0.0.0/1: overlaps 0.0.0.0/8"}},
		{name: "valid subnet next to the loopback addresses", edit: func(s *Spec) {
			s.Subnet, s.Gateway, s.Aux = p("126.255.255.0/24"), a("126.255.255.1"), nil
		}},
		{name: "bad subnet still reports name", edit: func(s *Spec) { s.Name, s.Subnet = "", netip.Prefix{} },
			want: []string{`network name ""`, "subnet: missing"}},

		// Gateway.
		{name: "missing gateway", edit: func(s *Spec) { s.Gateway = netip.Addr{} }, want: []string{"gateway: missing"}},
		{name: "gateway outside subnet", edit: func(s *Spec) { s.Gateway = a("192.168.11.1") },
			want: []string{"gateway 192.168.11.1 is outside subnet 192.168.10.0/24"}},
		{name: "ipv6 gateway", edit: func(s *Spec) { s.Gateway = a("fd00::1") },
			want: []string{"gateway fd00::1 is outside subnet 192.168.10.0/24"}},
		{name: "gateway is network address", edit: func(s *Spec) { s.Gateway = a("192.168.10.0") },
			want: []string{"gateway 192.168.10.0 is the network or broadcast address of 192.168.10.0/24"}},
		{name: "gateway is broadcast address", edit: func(s *Spec) { s.Gateway = a("192.168.10.255") },
			want: []string{"gateway 192.168.10.255 is the network or broadcast address of 192.168.10.0/24"}},

		// IP range.
		{name: "ip range outside subnet", edit: func(s *Spec) { s.IPRange = p("10.0.0.0/26") },
			want: []string{"ip range 10.0.0.0/26 is not inside subnet 192.168.10.0/24"}},
		{name: "ip range larger than subnet", edit: func(s *Spec) { s.IPRange = p("192.168.0.0/16") },
			want: []string{"ip range 192.168.0.0/16 is not inside subnet 192.168.10.0/24"}},
		{name: "unmasked ip range", edit: func(s *Spec) { s.IPRange = p("192.168.10.70/26") },
			want: []string{"ip range 192.168.10.70/26: not a network address; did you mean 192.168.10.64/26?"}},
		// A node's host shim takes an address of the cluster pool: with
		// fewer than two free, no node had one for a container, and
		// every node failed on its shim or on its first container.
		{name: "cluster ip range of the gateway alone", edit: func(s *Spec) { s.IPAM, s.PerNodeSize, s.IPRange = Cluster, 0, p("192.168.10.1/32") },
			want: []string{"range 192.168.10.1/32 keeps fewer than two addresses free"}},
		{name: "cluster ip range of one free address", edit: func(s *Spec) { s.IPAM, s.PerNodeSize, s.IPRange = Cluster, 0, p("192.168.10.2/32") },
			want: []string{"range 192.168.10.2/32 keeps fewer than two addresses free"}},
		{name: "cluster /31 ip range of network address and gateway", edit: func(s *Spec) { s.IPAM, s.PerNodeSize, s.IPRange = Cluster, 0, p("192.168.10.0/31") },
			want: []string{"range 192.168.10.0/31 keeps fewer than two addresses free"}},
		{name: "cluster /30 subnet", edit: func(s *Spec) {
			s.IPAM, s.Subnet, s.Gateway, s.Aux, s.PerNodeSize = Cluster, p("10.9.9.0/30"), a("10.9.9.1"), nil, 0
		}, want: []string{"range 10.9.9.0/30 keeps fewer than two addresses free"}},
		{name: "valid cluster /31 ip range", edit: func(s *Spec) { s.IPAM, s.PerNodeSize, s.IPRange = Cluster, 0, p("192.168.10.2/31") }},
		{name: "ipv6 ip range cluster mode", edit: func(s *Spec) { s.IPAM, s.IPRange = Cluster, p("fd00::/64") },
			want: []string{"ip range fd00::/64: want an IPv4 CIDR"}},
		{name: "ipv6 ip range per-node mode", edit: func(s *Spec) { s.IPRange = p("fd00::/64") },
			want: []string{"ip range fd00::/64: want an IPv4 CIDR"}},

		// Aux addresses.
		{name: "aux outside subnet", edit: func(s *Spec) { s.Aux = map[string]netip.Addr{"printer": a("10.0.0.5")} },
			want: []string{"aux address printer=10.0.0.5 is outside subnet 192.168.10.0/24"}},
		{name: "aux missing address", edit: func(s *Spec) { s.Aux = map[string]netip.Addr{"printer": {}} },
			want: []string{"aux address printer=invalid IP is outside subnet"}},
		{name: "aux equal to gateway", edit: func(s *Spec) { s.Aux = map[string]netip.Addr{"router": a("192.168.10.1")} },
			want: []string{"aux address router=192.168.10.1 is the gateway"}},
		{name: "aux duplicate", edit: func(s *Spec) {
			s.Aux = map[string]netip.Addr{"nas": a("192.168.10.250"), "printer": a("192.168.10.250")}
		}, want: []string{"aux address printer=192.168.10.250 is also nas"}},
		{name: "aux reserved name", edit: func(s *Spec) { s.Aux = map[string]netip.Addr{"underlay-shim": a("192.168.10.2")} },
			want: []string{`aux address name "underlay-shim"`}},
		{name: "aux reserved name prefix", edit: func(s *Spec) { s.Aux = map[string]netip.Addr{"underlay-x": a("192.168.10.2")} },
			want: []string{`aux address name "underlay-x"`}},
		{name: "aux bad name", edit: func(s *Spec) { s.Aux = map[string]netip.Addr{"my printer": a("192.168.10.2")} },
			want: []string{`aux address name "my printer"`}},
		{name: "aux empty name", edit: func(s *Spec) { s.Aux = map[string]netip.Addr{"": a("192.168.10.2")} },
			want: []string{`aux address name ""`}},
		{name: "every bad aux reported", edit: func(s *Spec) {
			s.Aux = map[string]netip.Addr{"a": a("10.0.0.1"), "b": a("192.168.10.1"), "underlay-c": a("192.168.10.3")}
		}, want: []string{"aux address a=10.0.0.1", "aux address b=192.168.10.1", `aux address name "underlay-c"`}},

		// Per-node size.
		{name: "per-node size not power of two", edit: func(s *Spec) { s.PerNodeSize = 48 },
			want: []string{"per-node size 48: want a power of two"}},
		{name: "per-node size 2", edit: func(s *Spec) { s.PerNodeSize = 2 }, want: []string{"per-node size 2: want a power of two, at least 4"}},
		{name: "per-node size 1", edit: func(s *Spec) { s.PerNodeSize = 1 }, want: []string{"per-node size 1:"}},
		{name: "per-node size 0", edit: func(s *Spec) { s.PerNodeSize = 0 }, want: []string{"per-node size 0:"}},
		{name: "per-node size negative", edit: func(s *Spec) { s.PerNodeSize = -64 }, want: []string{"per-node size -64:"}},
		{name: "per-node size larger than subnet", edit: func(s *Spec) { s.PerNodeSize = 512 },
			want: []string{"per-node size 512 is larger than the range 192.168.10.0/24 (256 addresses)"}},
		// Network address, gateway and broadcast leave one address of
		// the /30: no node can take its range (a shim and a container),
		// and each reported "all 0 ranges … are leased".
		{name: "per-node /30 subnet", edit: func(s *Spec) {
			s.Subnet, s.Gateway, s.Aux, s.PerNodeSize = p("10.9.9.0/30"), a("10.9.9.1"), nil, 4
		}, want: []string{"per-node size 4: no range of 10.9.9.0/30 keeps two addresses free"}},
		{name: "aux addresses fill every range", edit: func(s *Spec) {
			s.IPRange, s.PerNodeSize = p("192.168.10.64/29"), 4
			s.Aux = map[string]netip.Addr{"a": a("192.168.10.64"), "b": a("192.168.10.65"), "c": a("192.168.10.66"),
				"d": a("192.168.10.68"), "e": a("192.168.10.69"), "f": a("192.168.10.70")}
		}, want: []string{"per-node size 4: no range of 192.168.10.64/29 keeps two addresses free"}},
		{name: "per-node size larger than ip range", edit: func(s *Spec) { s.IPRange, s.PerNodeSize = p("192.168.10.64/26"), 128 },
			want: []string{"per-node size 128 is larger than the range 192.168.10.64/26 (64 addresses)"}},

		// IPv6 subnet.
		{name: "ipv6 subnet is ipv4", edit: func(s *Spec) { s.IPv6Subnet = p("10.1.0.0/16") },
			want: []string{"IPv6 subnet 10.1.0.0/16: want an IPv6 CIDR"}},
		{name: "ipv6 subnet is 4in6", edit: func(s *Spec) { s.IPv6Subnet = p("::ffff:10.1.0.0/112") },
			want: []string{"IPv6 subnet ::ffff:10.1.0.0/112: want an IPv6 CIDR"}},
		{name: "ipv6 subnet unmasked", edit: func(s *Spec) { s.IPv6Subnet = p("fd00::1/64") },
			want: []string{"IPv6 subnet fd00::1/64: not a network address; did you mean fd00::/64?"}},
		{name: "ipv6 subnet /96 too small", edit: func(s *Spec) { s.IPv6Subnet = p("fd00::/96") },
			want: []string{"IPv6 subnet fd00::/96: want a prefix between /48 and /64"}},
		{name: "ipv6 subnet /65 too small", edit: func(s *Spec) { s.IPv6Subnet = p("fd00::/65") },
			want: []string{"IPv6 subnet fd00::/65:"}},
		{name: "ipv6 subnet /40 too large", edit: func(s *Spec) { s.IPv6Subnet = p("fd00::/40") },
			want: []string{"IPv6 subnet fd00::/40: want a prefix between /48 and /64"}},
		{name: "ipv6 link-local subnet", edit: func(s *Spec) { s.IPv6Subnet = p("fe80::/64") },
			want: []string{"IPv6 subnet fe80::/64: overlaps fe80::/10, the link-local addresses"}},
		{name: "ipv6 multicast subnet", edit: func(s *Spec) { s.IPv6Subnet = p("ff02::/64") },
			want: []string{"IPv6 subnet ff02::/64: overlaps ff00::/8, the multicast addresses"}},
		{name: "ipv6 subnet of the loopback address", edit: func(s *Spec) { s.IPv6Subnet = p("::/64") },
			want: []string{"IPv6 subnet ::/64: overlaps"}},
		{name: "ipv6 subnet /47 too large", edit: func(s *Spec) { s.IPv6Subnet = p("fd00::/47") },
			want: []string{"IPv6 subnet fd00::/47:"}},

		// Conflicts with existing networks.
		{name: "subnet overlaps existing", edit: func(*Spec) {},
			existing: []Spec{func() Spec { o := other(); o.Subnet = p("192.168.0.0/16"); return o }()},
			want:     []string{`subnet 192.168.10.0/24 overlaps network "other" (192.168.0.0/16)`}},
		{name: "subnet inside existing subnet", edit: func(s *Spec) { s.Subnet, s.Gateway, s.Aux = p("10.20.5.0/24"), a("10.20.5.1"), nil },
			existing: []Spec{other()},
			want:     []string{`subnet 10.20.5.0/24 overlaps network "other" (10.20.0.0/16)`}},
		{name: "ipv6 overlaps existing", edit: func(s *Spec) { s.IPv6Subnet = p("fd00:0:0:1::/64") },
			existing: []Spec{func() Spec { o := other(); o.IPv6Subnet = p("fd00::/48"); return o }()},
			want:     []string{`IPv6 subnet fd00:0:0:1::/64 overlaps network "other" (fd00::/48)`}},
		{name: "same name", edit: func(*Spec) {},
			existing: []Spec{func() Spec { o := other(); o.Name = "lan"; return o }()},
			want:     []string{`network "lan" already exists`}},
		{name: "same name reported once, not as overlap", edit: func(*Spec) {},
			existing: []Spec{validSpec()},
			want:     []string{`network "lan" already exists`}},
		{name: "same parent", edit: func(*Spec) {},
			existing: []Spec{func() Spec { o := other(); o.Parent = "eth0"; return o }()},
			want:     []string{`parent eth0 already carries network "other"`}},
		// Both VLAN 40 on eth0: the kernel makes one such link per
		// device, so every node failed to make the second.
		{name: "same VLAN spelt otherwise", edit: func(s *Spec) { s.Parent = "eth0.040" },
			existing: []Spec{func() Spec { o := other(); o.Parent = "eth0.40"; return o }()},
			want:     []string{`parent eth0.040 is VLAN 40 on eth0, as network "other"'s parent eth0.40 is`}},
		{name: "same VLAN in five digits", edit: func(s *Spec) { s.Parent = "eth0.04094" },
			existing: []Spec{func() Spec { o := other(); o.Parent = "eth0.4094"; return o }()},
			want:     []string{`parent eth0.04094 is VLAN 4094 on eth0, as network "other"'s parent eth0.4094 is`}},
		// Docker then has two networks of one name on every manager:
		// looking up either by name fails as ambiguous, which stops
		// the other network's sync and removal.
		{name: "name of an existing network's config-only network", edit: func(s *Spec) { s.Name = "other-config" },
			existing: []Spec{other()},
			want:     []string{`network name "other-config" is the name of network "other"'s config-only network`}},
		{name: "config-only network named as an existing network", edit: func(*Spec) {},
			existing: []Spec{func() Spec { o := other(); o.Name = "lan-config"; return o }()},
			want:     []string{`network "lan"'s config-only network would be named lan-config, as network "lan-config" is`}},
		// net162789 and net379192 hash alike (FNV-32a): both would have
		// host shim ul-f8d0434b, each replacing the other's.
		{name: "same shim link name", edit: func(s *Spec) { s.Name = "net162789" },
			existing: []Spec{func() Spec { o := other(); o.Name = "net379192"; return o }()},
			want:     []string{`host shim link ul-f8d0434b is also network "net379192"'s`}},
		{name: "conflicts with several existing", edit: func(*Spec) {},
			existing: []Spec{
				func() Spec { o := other(); o.Name, o.Subnet = "wide", p("192.168.0.0/16"); return o }(),
				func() Spec { o := other(); o.Name, o.Parent = "sibling", "eth0"; return o }(),
			},
			want: []string{`overlaps network "wide"`, `parent eth0 already carries network "sibling"`}},
		// One problem per kind of conflict, naming the first networks
		// (overlapping subnets by address) and counting the others.
		{name: "conflicts with many of one kind", edit: func(*Spec) {},
			existing: func() []Spec {
				var out []Spec
				for i, sub := range []string{"192.168.10.128/25", "192.168.0.0/16", "192.168.10.0/26", "192.168.10.64/26"} {
					o := other()
					o.Name, o.Subnet = fmt.Sprintf("sub%d", i), p(sub)
					out = append(out, o)
				}
				for i := range 5 {
					o := other()
					o.Name, o.Subnet, o.Parent = fmt.Sprintf("par%d", i), p(fmt.Sprintf("10.%d.0.0/16", 30+i)), "eth0"
					out = append(out, o)
				}
				return out
			}(),
			want: []string{
				`subnet 192.168.10.0/24 overlaps networks "sub1" (192.168.0.0/16), "sub2" (192.168.10.0/26), "sub3" (192.168.10.64/26) and 1 other`,
				`parent eth0 already carries networks "par0", "par1", "par2" and 2 others: Docker allows`,
			}},

		// Several problems at once.
		{name: "every problem reported", edit: func(s *Spec) {
			s.Name = "bad name"
			s.Parent = "eth0;x"
			s.IPAM = "dhcp"
			s.Gateway = a("10.0.0.1")
			s.IPRange = p("192.168.10.70/26")
			s.Aux = map[string]netip.Addr{"underlay-shim": a("192.168.10.9")}
			s.IPv6Subnet = p("fd00::/96")
		}, existing: []Spec{func() Spec { o := other(); o.Subnet = p("192.168.10.128/25"); return o }()},
			want: []string{
				`network name "bad name"`,
				`parent "eth0;x"`,
				`ipam "dhcp"`,
				"gateway 10.0.0.1 is outside subnet 192.168.10.0/24",
				"ip range 192.168.10.70/26: not a network address",
				`aux address name "underlay-shim"`,
				"IPv6 subnet fd00::/96",
				`subnet 192.168.10.0/24 overlaps network "other" (192.168.10.128/25)`,
			}},
		{name: "every per-node problem reported", edit: func(s *Spec) {
			s.Gateway = a("192.168.10.255")
			s.Aux = map[string]netip.Addr{"x": a("192.168.9.1")}
			s.PerNodeSize = 6
		}, want: []string{
			"gateway 192.168.10.255 is the network or broadcast address",
			"aux address x=192.168.9.1 is outside subnet",
			"per-node size 6",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := validSpec()
			tc.edit(&s)
			err, panicked := validate(t, s, tc.existing)
			if panicked {
				return
			}
			errs := splitErrs(err)
			var got []string
			for _, e := range errs {
				got = append(got, e.Error())
			}
			if len(got) != len(tc.want) {
				t.Fatalf("Validate() reported %d problems, want %d:\ngot:  %q\nwant: %q", len(got), len(tc.want), got, tc.want)
			}
			for i, w := range tc.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("problem %d = %q, want it to contain %q", i, got[i], w)
				}
			}
			if err != nil && len(tc.want) > 0 && !strings.Contains(err.Error(), tc.want[0]) {
				t.Errorf("Validate().Error() = %q, want it to contain %q", err, tc.want[0])
			}
		})
	}
}

// TestValidateDoesNotModify checks that Validate leaves its input alone.
func TestValidateDoesNotModify(t *testing.T) {
	s := validSpec()
	s.Aux["nas"] = netip.MustParseAddr("192.168.10.240")
	existing := []Spec{other()}
	if err := Validate(s, existing); err != nil {
		t.Fatalf("Validate() = %v, want nil", err)
	}
	if len(s.Aux) != 2 || s.Aux["nas"] != netip.MustParseAddr("192.168.10.240") {
		t.Errorf("Validate changed Aux: %v", s.Aux)
	}
	if existing[0].Name != "other" {
		t.Errorf("Validate changed existing: %+v", existing)
	}
}

// TestValidateJoined checks the problems come back as one joined error
// that errors.Is/As can walk, not as a pre-formatted string.
func TestValidateJoined(t *testing.T) {
	s := validSpec()
	s.Name, s.Parent = "", ""
	err := Validate(s, nil)
	if n := len(splitErrs(err)); n != 2 {
		t.Fatalf("Validate() = %v: %d problems, want 2", err, n)
	}
	if errors.Unwrap(err) != nil {
		t.Errorf("errors.Unwrap(%v) != nil, want a multi-error", err)
	}
}

func TestRange(t *testing.T) {
	s := validSpec()
	if got, want := s.Range(), s.Subnet; got != want {
		t.Errorf("Range() without ip range = %s, want %s", got, want)
	}
	s.IPRange = netip.MustParsePrefix("192.168.10.128/25")
	if got, want := s.Range(), s.IPRange; got != want {
		t.Errorf("Range() with ip range = %s, want %s", got, want)
	}
}

// TestValidateAuxBounds: an aux address's name had no length limit and
// a network no limit on their number short of Consul's 512 KiB value,
// every one quoted whole in the errors and passed to docker on every
// node. A name may have 64 bytes and a network 1024 aux addresses; beyond
// them Validate says so, naming the value, in an error of bounded size.
func TestValidateAuxBounds(t *testing.T) {
	a := netip.MustParseAddr
	wide := func(n int, name func(i int) string) Spec {
		s := validSpec()
		s.IPAM, s.PerNodeSize = Cluster, 0
		s.Subnet, s.Gateway = netip.MustParsePrefix("10.0.0.0/16"), a("10.0.0.1")
		s.Aux = map[string]netip.Addr{}
		for i := range n {
			s.Aux[name(i)] = netip.AddrFrom4([4]byte{10, 0, byte(4 + i/256), byte(i)})
		}
		return s
	}
	plain := func(i int) string { return fmt.Sprintf("host%d", i) }
	if err := Validate(wide(MaxAux, plain), nil); err != nil {
		t.Errorf("%d aux addresses: Validate() = %v, want nil", MaxAux, err)
	}
	if err := Validate(wide(1, func(int) string { return strings.Repeat("a", MaxAuxName) }), nil); err != nil {
		t.Errorf("aux name of %d bytes: Validate() = %v, want nil", MaxAuxName, err)
	}
	for _, tc := range []struct {
		name string
		s    Spec
		want string
	}{
		{"one too many", wide(MaxAux+1, plain), "1025 aux addresses: a network may have at most 1024"},
		{"name one byte too long", wide(1, func(int) string { return strings.Repeat("a", MaxAuxName+1) }),
			`aux address name "` + strings.Repeat("a", MaxAuxName)},
		{"name of a megabyte", wide(1, func(int) string { return strings.Repeat("a", 1<<20) }),
			"1048576 bytes, longer than the 64"},
		{"many bad names", wide(100000, func(i int) string { return fmt.Sprintf("bad name %d", i) }),
			"100000 aux addresses"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Validate(tc.s, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %.300v, want an error containing %q", err, tc.want)
			}
			if n := len(err.Error()); n > 128<<10 {
				t.Errorf("Validate()'s error has %d bytes, want at most 128 KiB", n)
			}
		})
	}
}
