package lab

import (
	"bytes"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
)

// fakeRoutes answers a route dump as netlink.RouteListFiltered does over
// the kernel's tables: routes of tables other than main only when the
// filter asks for tables (RT_FILTER_TABLE), all of them for table 0.
func fakeRoutes(routes []netlink.Route) func(*netlink.Route, uint64) ([]netlink.Route, error) {
	return func(filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
		var out []netlink.Route
		for _, r := range routes {
			byTable := filter != nil && mask&netlink.RT_FILTER_TABLE != 0
			if r.Table != 254 && !byTable {
				continue
			}
			if byTable && filter.Table != 0 && filter.Table != r.Table {
				continue
			}
			out = append(out, r)
		}
		return out, nil
	}
}

func route(dst string, link, table int) netlink.Route {
	p := netip.MustParsePrefix(dst)
	return netlink.Route{LinkIndex: link, Table: table,
		Dst: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}}
}

// TestUsedPrefixesEveryTable: the machine's routes in tables other than
// main — a VPN's (Tailscale's table 52 with its accepted subnet routes,
// strongSwan's 220), looked up by rules before main — are the machine's
// too. Before, only main was read: a lab took 10.200.0.0/16 while
// Tailscale routed it to a subnet router, and the machine's traffic to
// the lab's addresses (Consul's checks, tests) left the machine for real
// hosts of that subnet.
func TestUsedPrefixesEveryTable(t *testing.T) {
	links := []netlink.Link{
		&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: 2, Name: "eth0"}},
		&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: 5, Name: "tailscale0"}},
		&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Index: 9, Name: "ul-lab-u"}},
		&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Index: 10, Name: "ul-lab2-u"}},
	}
	routes := []netlink.Route{
		{LinkIndex: 2, Table: 254}, // default route: no Dst
		route("192.168.1.0/24", 2, 254),
		route("10.200.0.0/16", 5, 52),
		route("100.100.100.100/32", 5, 52),
		route("172.20.0.0/16", 2, 220),
		route("10.200.0.0/16", 9, 254),  // lab's own
		route("10.200.0.1/32", 9, 255),  // lab's own, local table
		route("10.210.0.0/16", 10, 254), // another lab's
		route("10.77.0.0/16", 99, 254),  // on a link gone meanwhile
	}
	got, err := usedPrefixesFrom("lab", fakeRoutes(routes), func() ([]netlink.Link, error) { return links, nil })
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{
		netip.MustParsePrefix("192.168.1.0/24"), netip.MustParsePrefix("10.200.0.0/16"),
		netip.MustParsePrefix("100.100.100.100/32"), netip.MustParsePrefix("172.20.0.0/16"),
		netip.MustParsePrefix("10.210.0.0/16"), netip.MustParsePrefix("10.77.0.0/16"),
	}
	if !slices.Equal(got, want) {
		t.Errorf("usedPrefixes = %v, want %v", got, want)
	}
}

// TestRulesWithComment: a rule of someone else's whose comment starts with
// the lab's and goes on after a space ("underlay-lab-lab x") is not the
// lab's. Before, `iptables -S` was split at every space: the comment's
// first word matched, the rule was taken for the lab's, and lab down tried
// `iptables -D FORWARD … --comment underlay-lab-lab x …`, which iptables
// refused, so lab down failed on a rule it never made.
func TestRulesWithComment(t *testing.T) {
	listing := `-P FORWARD DROP
-A FORWARD -i ul-lab-+ ! -o ul-lab-+ -m comment --comment "underlay-lab-lab x" -j DROP
-A FORWARD -i eth0 -m comment --comment "underlay-lab-lab \"q\" y" -j ACCEPT
-A FORWARD -i ul-lab-+ ! -o ul-lab-+ -m comment --comment underlay-lab-lab -j DROP
-A FORWARD -i ul-lab2-+ ! -o ul-lab2-+ -m comment --comment underlay-lab-lab2 -j DROP
-A FORWARD -i eth1 -m comment --comment "underlay-lab-lab" -j ACCEPT
`
	got := rulesWithComment(listing, ruleComment("lab"))
	want := [][]string{
		{"-A", "FORWARD", "-i", "ul-lab-+", "!", "-o", "ul-lab-+", "-m", "comment", "--comment", "underlay-lab-lab", "-j", "DROP"},
		{"-A", "FORWARD", "-i", "eth1", "-m", "comment", "--comment", "underlay-lab-lab", "-j", "ACCEPT"},
	}
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("rulesWithComment = %q, want %q", got, want)
	}
}

// TestUsedPrefixesIgnoreDefaultOverrides: OpenVPN's def1 routes
// (0.0.0.0/1 and 128.0.0.0/1) and other prefixes shorter than /8 replace
// the default route; the lab's /16 and /24 routes are longer and win over
// them as over the default route. Before, they were taken for routed
// subnets and every lab subnet overlapped one: lab up refused to start on
// any machine with such a VPN up. A /8 or longer stays a real overlap.
func TestUsedPrefixesIgnoreDefaultOverrides(t *testing.T) {
	links := []netlink.Link{
		&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: 2, Name: "eth0"}},
		&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: 7, Name: "tun0"}},
	}
	routes := []netlink.Route{
		route("0.0.0.0/0", 2, 254),
		route("0.0.0.0/1", 7, 254),
		route("128.0.0.0/1", 7, 254),
		route("64.0.0.0/2", 7, 254),
		route("8.0.0.0/7", 7, 254),
		route("10.0.0.0/8", 7, 254),
		route("172.31.5.0/24", 7, 254),
	}
	got, err := usedPrefixesFrom("lab", fakeRoutes(routes), func() ([]netlink.Link, error) { return links, nil })
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("172.31.5.0/24")}
	if !slices.Equal(got, want) {
		t.Errorf("usedPrefixes = %v, want %v", got, want)
	}
	// And through prepare: a lab in 10.0.0.0/8 is refused, one without
	// that route starts, clear of the /24 still routed.
	cfg := Config{Name: "def1", Nodes: 1, NoAgent: true, UnderlaySubnet: "10.252.0.0/16"}.withDefaults()
	routed := func(rs []netlink.Route) func() ([]netip.Prefix, error) {
		return func() ([]netip.Prefix, error) {
			return usedPrefixesFrom("def1", fakeRoutes(rs), func() ([]netlink.Link, error) { return links, nil })
		}
	}
	if _, _, err := prepare(t.TempDir(), cfg, routed(routes)); err == nil || !strings.Contains(err.Error(), "overlaps 10.0.0.0/8") {
		t.Errorf("prepare with 10.0.0.0/8 routed: %v, want it refused", err)
	}
	noTen := slices.DeleteFunc(slices.Clone(routes), func(r netlink.Route) bool { return r.Dst.String() == "10.0.0.0/8" })
	p, _, err := prepare(t.TempDir(), cfg, routed(noTen))
	if err != nil {
		t.Fatalf("prepare with only the VPN's default overrides routed: %v", err)
	}
	if c := netip.MustParsePrefix("172.31.5.0/24"); p.mgmt.Overlaps(c) {
		t.Errorf("management subnet %s overlaps the routed %s", p.mgmt, c)
	}
}

// TestCheckBridgePorts: a bridge named like the lab's that already exists
// with ports the lab did not make (the machine's uplink, another
// program's veth) is refused, naming them. Before, it was taken over as
// it was: lab up addressed it and forwarded the lab through it, onto the
// uplink's network.
func TestCheckBridgePorts(t *testing.T) {
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Index: 9, Name: "ul-lab-u"}}
	own := []netlink.Link{
		br,
		&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: 2, Name: "eth0"}},
		&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Index: 11, Name: "ul-lab-u1", MasterIndex: 9}},
		&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Index: 12, Name: "ul-lab-u2", MasterIndex: 9}},
		&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Index: 13, Name: "vethab12", MasterIndex: 4}},
	}
	if err := checkBridgePorts("lab", br, own); err != nil {
		t.Errorf("bridge with the lab's ports only: %v", err)
	}
	foreign := append(slices.Clone(own),
		&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: 3, Name: "eth1", MasterIndex: 9}},
		&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Index: 14, Name: "veth9f", MasterIndex: 9}},
		&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: 15, Name: "ul-lab-u3", MasterIndex: 9}},
	)
	err := checkBridgePorts("lab", br, foreign)
	if err == nil {
		t.Fatal("bridge with eth1, veth9f and a non-veth ul-lab-u3 as ports: taken over")
	}
	if !strings.Contains(err.Error(), ": eth1, veth9f, ul-lab-u3;") {
		t.Errorf("error %q: want it to name eth1, veth9f and ul-lab-u3, and only them", err)
	}
}

// TestDisableIPv6: IPv6 is turned off on the lab's links in the root
// namespace, so that no IPv6 packet from a node reaches the machine's IP
// stack to be forwarded, whether or not ip6tables (and with it the lab's
// IPv6 FORWARD drop rules) exists. Before, without ip6tables nothing
// stopped a node's IPv6 from being routed onto the machine's networks.
func TestDisableIPv6(t *testing.T) {
	sysctl := t.TempDir()
	conf := filepath.Join(sysctl, "net", "ipv6", "conf")
	for _, l := range []string{"ul-lab-m", "ul-lab-u", "eth0"} {
		if err := os.MkdirAll(filepath.Join(conf, l), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(conf, l, "disable_ipv6"), []byte("0\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	log := slog.New(slog.DiscardHandler)
	sys := sysctls{dir: sysctl, write: writeSysctl}
	if err := disableIPv6(log, sys, false, "ul-lab-m", "ul-lab-u"); err != nil {
		t.Fatal(err)
	}
	for l, want := range map[string]string{"ul-lab-m": "1", "ul-lab-u": "1", "eth0": "0"} {
		b, err := os.ReadFile(filepath.Join(conf, l, "disable_ipv6"))
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(string(b)); got != want {
			t.Errorf("%s: disable_ipv6 = %s, want %s", l, got, want)
		}
	}
	// A link the kernel does not know: an error, not a file made.
	if err := disableIPv6(log, sys, true, "ul-lab-x"); err == nil {
		t.Error("IPv6 turned off on a link that does not exist")
	}
	// A kernel without IPv6 (ipv6.disable=1) has no net/ipv6: nothing to do.
	if err := disableIPv6(log, sysctls{dir: t.TempDir(), write: writeSysctl}, false, "ul-lab-m"); err != nil {
		t.Errorf("without IPv6 in the kernel: %v", err)
	}
}

// TestLinksToDeleteSparesForeignBridges: lab down does not delete a bridge
// named like the lab's that has ports the lab did not make (the one lab up
// now refuses, with the machine's uplink in it): it says so instead.
// Before, Down deleted every link named for the lab, that bridge too,
// cutting the uplink's network off the machine.
func TestLinksToDeleteSparesForeignBridges(t *testing.T) {
	links := []netlink.Link{
		&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: 2, Name: "eth0", MasterIndex: 9}},
		&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Index: 8, Name: "ul-lab-m"}},
		&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Index: 9, Name: "ul-lab-u"}},
		&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Index: 11, Name: "ul-lab-m1", MasterIndex: 8}},
		&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Index: 12, Name: "ul-lab-u1", MasterIndex: 9}},
		&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Index: 20, Name: "ul-lab2-u"}},
	}
	del, err := linksToDelete("lab", links)
	var names []string
	for _, l := range del {
		names = append(names, l.Attrs().Name)
	}
	if want := []string{"ul-lab-m1", "ul-lab-u1", "ul-lab-m"}; !slices.Equal(names, want) {
		t.Errorf("links to delete = %v, want %v", names, want)
	}
	if err == nil || !strings.Contains(err.Error(), "ul-lab-u") || !strings.Contains(err.Error(), "eth0") {
		t.Errorf("error = %v, want one naming ul-lab-u and its port eth0", err)
	}
}

// TestCheckStaleVeth: when a node's (or the VM lab's management) veth pair
// is missing, a root-side link of its name is deleted before the pair is
// made again only if it is a veth, a leftover of the lab's. Before, any
// link of that name went: a bridge ul-NAME-m someone made, with the
// machine's uplink in it, was deleted by lab up.
func TestCheckStaleVeth(t *testing.T) {
	if err := checkStaleVeth(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ul-lab-m1"}}); err != nil {
		t.Errorf("a stale veth: %v", err)
	}
	for _, l := range []netlink.Link{
		&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "ul-lab-m"}},
		&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "ul-lab-u2"}},
	} {
		if err := checkStaleVeth(l); err == nil || !strings.Contains(err.Error(), l.Attrs().Name) {
			t.Errorf("%s, a %s: %v, want it refused by name", l.Attrs().Name, l.Type(), err)
		}
	}
}

// TestLinksToDeleteOnlyTheLabsOwn: lab down deletes the links the lab
// makes — its bridges ul-NAME-m and ul-NAME-u, the nodes' veths
// ul-NAME-{m,u}<node>, a VM lab's management veth ul-NAME-m — and no
// other link whose name merely starts with ul-NAME-. Before, it deleted
// every link of the prefix: a user's dummy, veth or macvlan, a bridge of
// another name.
func TestLinksToDeleteOnlyTheLabsOwn(t *testing.T) {
	links := []netlink.Link{
		&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: 2, Name: "eth0"}},
		&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Index: 8, Name: "ul-lab-m"}},
		&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Index: 9, Name: "ul-lab-u"}},
		&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Index: 11, Name: "ul-lab-m1", MasterIndex: 8}},
		&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Index: 12, Name: "ul-lab-u1", MasterIndex: 9}},
		&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Index: 13, Name: "ul-lab-mk", MasterIndex: 8}}, // node 20
		&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: 20, Name: "ul-lab-x"}},
		&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Index: 21, Name: "ul-lab-tmp"}},
		&netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Index: 22, Name: "ul-lab-u2", ParentIndex: 2}},
		&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Index: 23, Name: "ul-lab-mx"}},
		&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Index: 24, Name: "ul-lab-ml"}}, // node 21: no lab has it
		&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Index: 25, Name: "ul-lab-u"}},
		&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Index: 26, Name: "ul-lab2-u"}},
	}
	// ul-lab-u appears twice (a bridge and a veth): only in this list.
	del, err := linksToDelete("lab", links)
	var names []string
	for _, l := range del {
		names = append(names, l.Attrs().Name+" ("+l.Type()+")")
	}
	want := []string{"ul-lab-m1 (veth)", "ul-lab-u1 (veth)", "ul-lab-mk (veth)", "ul-lab-m (bridge)", "ul-lab-u (bridge)"}
	if !slices.Equal(names, want) || err != nil {
		t.Errorf("links to delete = %v, %v; want %v", names, err, want)
	}
	// A VM lab's one link in the root namespace, its management veth.
	vmLinks := []netlink.Link{&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Index: 8, Name: "ul-lab-m"}}}
	if del, err := linksToDelete("lab", vmLinks); len(del) != 1 || err != nil {
		t.Errorf("links to delete of a VM lab = %v, %v; want its veth ul-lab-m", del, err)
	}
}

// TestUsedPrefixesForeignLinksOfThePrefix: a route on a link whose name
// only starts with the lab's prefix (a user's ul-lab-foo, a dummy named
// like the lab's bridge, a veth of a node index no lab has) is the
// machine's, taken; only routes on the lab's own links (ownLink) are
// passed over. Before, every link named ul-NAME-* was taken for the
// lab's: its routes were passed over, and the lab could take a subnet the
// user's link routes.
func TestUsedPrefixesForeignLinksOfThePrefix(t *testing.T) {
	links := []netlink.Link{
		&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Index: 8, Name: "ul-lab-m"}},
		&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Index: 9, Name: "ul-lab-u"}},
		&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: 20, Name: "ul-lab-foo"}},
		&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Index: 21, Name: "ul-lab-mz"}},
		&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: 22, Name: "ul-lab2-u"}},
	}
	routes := []netlink.Route{
		route("172.31.0.0/24", 8, 254), // the lab's own
		route("10.200.0.0/16", 9, 254), // the lab's own
		route("10.90.0.0/16", 20, 254),
		route("10.91.0.0/16", 21, 254),
		route("10.92.0.0/16", 22, 254),
	}
	got, err := usedPrefixesFrom("lab", fakeRoutes(routes), func() ([]netlink.Link, error) { return links, nil })
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{
		netip.MustParsePrefix("10.90.0.0/16"), netip.MustParsePrefix("10.91.0.0/16"), netip.MustParsePrefix("10.92.0.0/16"),
	}
	if !slices.Equal(got, want) {
		t.Errorf("usedPrefixes = %v, want %v", got, want)
	}
}

// verdict is the target of the first of rules (iptables arguments after
// the chain, top to bottom) that a packet forwarded from interface in to
// out matches, as the kernel picks it; "" when none does (the chain's
// other rules and policy decide). It knows what the lab's rules use: -i
// and -o, negated or not, with iptables' trailing + wildcard.
func verdict(t *testing.T, rules [][]string, in, out string) string {
	t.Helper()
	ifMatch := func(pattern, name string) bool {
		if p, ok := strings.CutSuffix(pattern, "+"); ok {
			return strings.HasPrefix(name, p)
		}
		return pattern == name
	}
next:
	for _, r := range rules {
		neg, target := false, ""
		for i := 0; i < len(r); i++ {
			switch r[i] {
			case "!":
				neg = true
				continue
			case "-i", "-o":
				name := in
				if r[i] == "-o" {
					name = out
				}
				i++
				if ifMatch(r[i], name) == neg {
					continue next
				}
			case "-m":
				i++
			case "--comment":
				i++
			case "-j":
				i++
				target = r[i]
			default:
				t.Fatalf("rule %q: argument %q unknown to this test", r, r[i])
			}
			neg = false
		}
		return target
	}
	return ""
}

// TestFirewallOnlyTheLabsLinks: the lab's FORWARD rules drop what is
// forwarded between its links (the bridges ul-NAME-m and ul-NAME-u, or a
// VM lab's management veth ul-NAME-m) and any other interface, and accept
// what is forwarded among them; a user's link whose name only starts with
// ul-NAME- is none of the lab's business. Before, the rules matched the
// wildcard ul-NAME-+: a user's ul-NAME-foo counted as the lab's, and what
// it forwarded to or from the machine's other interfaces was dropped.
func TestFirewallOnlyTheLabsLinks(t *testing.T) {
	rules := firewallRules("lab")
	for _, tc := range []struct{ in, out, want string }{
		{"ul-lab-m", "ul-lab-m", "ACCEPT"},
		{"ul-lab-m", "ul-lab-u", "ACCEPT"},
		{"ul-lab-u", "ul-lab-m", "ACCEPT"},
		{"ul-lab-u", "ul-lab-u", "ACCEPT"},
		// Nothing from the lab off the machine, nor into it.
		{"ul-lab-m", "eth0", "DROP"},
		{"ul-lab-u", "eth0", "DROP"},
		{"eth0", "ul-lab-m", "DROP"},
		{"eth0", "ul-lab-u", "DROP"},
		{"ul-lab-m", "ul-lab-foo", "DROP"},
		{"ul-lab-foo", "ul-lab-u", "DROP"},
		{"ul-lab-u", "ul-lab2-u", "DROP"},
		// Not the lab's.
		{"ul-lab-foo", "eth0", ""},
		{"eth0", "ul-lab-foo", ""},
		{"ul-lab-foo", "ul-lab-bar", ""},
		{"ul-lab-mx", "eth0", ""},
		{"ul-lab2-u", "eth0", ""},
	} {
		if got := verdict(t, rules, tc.in, tc.out); got != tc.want {
			t.Errorf("forwarded from %s to %s: %q, want %q", tc.in, tc.out, got, tc.want)
		}
	}
}

// TestOwnLinkNames: the names the integration tests look for after lab
// down (ownLinkNames) are those ownLink deletes, of the kinds the lab
// makes them, and no other of the lab's prefix.
func TestOwnLinkNames(t *testing.T) {
	names := ownLinkNames("t1")
	if len(names) != 2+2*MaxNodes {
		t.Errorf("%d names, want %d: %q", len(names), 2+2*MaxNodes, names)
	}
	for _, n := range names {
		kind := "veth"
		if n == "ul-t1-u" {
			kind = "bridge"
		}
		if !ownLink("t1", &netlink.GenericLink{LinkAttrs: netlink.LinkAttrs{Name: n}, LinkType: kind}) {
			t.Errorf("%s (%s) is in ownLinkNames, not ownLink", n, kind)
		}
	}
	for _, n := range []string{"ul-t1-foo", "ul-t1-m1x", "ul-t1-", "ul-t12-m", "ul-t1-ml"} {
		if slices.Contains(names, n) {
			t.Errorf("%s is in ownLinkNames", n)
		}
	}
}

// TestFirewallSteps: lab up brings FORWARD to the lab's rules from
// whatever it finds — nothing, the older wildcard rules, its rules out of
// order or with a copy — and no step on the way lets the lab's traffic
// off the machine or the machine's into the lab. Run again, it does
// nothing. Others' rules stay as they were.
func TestFirewallSteps(t *testing.T) {
	c := []string{"-m", "comment", "--comment", "underlay-lab-lab", "-j"}
	rule := func(s string, target string) []string { return append(append(strings.Fields(s), c...), target) }
	others := [][]string{
		strings.Fields("-i docker0 -o eth0 -j ACCEPT"),
		strings.Fields("-i ul-lab-foo -o eth0 -j ACCEPT"),
		// Another lab's, of another comment.
		strings.Fields("-i ul-lab2-+ ! -o ul-lab2-+ -m comment --comment underlay-lab-lab2 -j DROP"),
	}
	wildcard := [][]string{
		rule("-i ul-lab-+ -o ul-lab-+", "ACCEPT"),
		rule("! -i ul-lab-+ -o ul-lab-+", "DROP"),
		rule("-i ul-lab-+ ! -o ul-lab-+", "DROP"),
	}
	want := firewallRules("lab")
	// reordered is a rule with its options in another order than the
	// lab gives them, as another iptables may list them: the comment
	// match first, the interfaces swapped, the target last.
	reordered := func(rules [][]string) [][]string {
		var out [][]string
		for _, r := range rules {
			at := slices.Index(r, "-m")
			body := slices.Delete(slices.Clone(r[:len(r)-2]), at, at+4)
			var units [][]string
			for i := 0; i < len(body); i += 2 {
				units = append([][]string{body[i : i+2]}, units...)
			}
			out = append(out, slices.Concat(r[at:at+4], slices.Concat(units...), r[len(r)-2:]))
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		lab   [][]string // the lab's rules found, top to bottom, above others'
		steps int
	}{
		{"none", nil, len(want)},
		{"older wildcard form", wildcard, len(want) + len(wildcard)},
		{"as they should be", want, 0},
		{"drops above accepts", append(slices.Clone(want[4:]), want[:4]...), 8},
		{"a copy of a drop, an accept below the drops", append(append(slices.Clone(want[1:]), want[7]), want[0]), 3},
		{"an accept missing", want[1:], 1},
		{"as they should be, options in another order", reordered(want), 0},
		{"drops above accepts, options in another order", reordered(append(slices.Clone(want[4:]), want[:4]...)), 8},
		{"an accept missing, options in another order", reordered(want[1:]), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chain := append(slices.Clone(tc.lab), others...)
			listing := func() string {
				var b strings.Builder
				b.WriteString("-P FORWARD DROP\n")
				for _, r := range chain {
					b.WriteString("-A FORWARD " + strings.Join(r, " ") + "\n")
				}
				return b.String()
			}
			// Between the lab and anything else: what was dropped stays so.
			outside := [][2]string{{"ul-lab-m", "eth0"}, {"eth0", "ul-lab-m"}, {"ul-lab-u", "eth0"}, {"eth0", "ul-lab-u"}, {"ul-lab-m", "ul-lab-foo"}, {"ul-lab-foo", "ul-lab-u"}}
			before := map[[2]string]string{}
			for _, p := range outside {
				before[p] = verdict(t, chain, p[0], p[1])
			}
			steps := firewallSteps(listing(), "lab")
			if len(steps) != tc.steps {
				t.Errorf("%d steps, want %d: %q", len(steps), tc.steps, steps)
			}
			for i, s := range steps {
				switch {
				case len(s) > 3 && s[0] == "-I" && s[1] == "FORWARD" && s[2] == "1":
					chain = append([][]string{s[3:]}, chain...)
				case len(s) > 2 && s[0] == "-D" && s[1] == "FORWARD":
					at := slices.IndexFunc(chain, func(r []string) bool { return slices.Equal(r, s[2:]) })
					if at < 0 {
						t.Fatalf("step %d %q: no such rule, iptables would fail", i, s)
					}
					chain = slices.Delete(chain, at, at+1)
				default:
					t.Fatalf("step %d %q: not an insert on top or a delete", i, s)
				}
				for _, p := range outside {
					if before[p] == "DROP" && verdict(t, chain, p[0], p[1]) != "DROP" {
						t.Errorf("after step %d %q: forwarded from %s to %s: %q, was dropped", i, s, p[0], p[1], verdict(t, chain, p[0], p[1]))
					}
					before[p] = verdict(t, chain, p[0], p[1])
				}
			}
			for _, p := range outside {
				if v := verdict(t, chain, p[0], p[1]); v != "DROP" {
					t.Errorf("at the end, forwarded from %s to %s: %q", p[0], p[1], v)
				}
			}
			for _, tc := range []struct{ in, out, want string }{
				{"ul-lab-m", "ul-lab-u", "ACCEPT"},
				{"ul-lab-u", "ul-lab-u", "ACCEPT"},
				{"ul-lab-u", "ul-lab-foo", "DROP"},
				{"ul-lab-foo", "eth0", "ACCEPT"}, // the user's rule decides
				{"docker0", "eth0", "ACCEPT"},
			} {
				if got := verdict(t, chain, tc.in, tc.out); got != tc.want {
					t.Errorf("at the end, forwarded from %s to %s: %q, want %q", tc.in, tc.out, got, tc.want)
				}
			}
			if !slices.EqualFunc(chain[len(chain)-len(others):], others, slices.Equal) {
				t.Errorf("others' rules changed: %q", chain)
			}
			if again := firewallSteps(listing(), "lab"); len(again) > 0 {
				t.Errorf("run again: %q, want nothing", again)
			}
		})
	}
}

// TestRuleKey: two listings of one rule, its options in any order or by
// their long names, are one key; a negation on another option, another
// value or another target is another rule.
func TestRuleKey(t *testing.T) {
	base := "-i a -o b -m comment --comment c -j DROP"
	for _, tc := range []struct {
		rule string
		same bool
	}{
		{"-m comment --comment c -o b -i a -j DROP", true},
		{"-j DROP -o b -m comment --comment c -i a", true},
		{"--in-interface a --out-interface b --match comment --comment c --jump DROP", true},
		{"-i a -o b -m comment --comment c -j ACCEPT", false},
		{"-i a -o bb -m comment --comment c -j DROP", false},
		{"-i a -m comment --comment c -j DROP", false},
		{"! -i a -o b -m comment --comment c -j DROP", false},
	} {
		if got := ruleKey(strings.Fields(tc.rule)) == ruleKey(strings.Fields(base)); got != tc.same {
			t.Errorf("%q the same rule as %q: %v, want %v", tc.rule, base, got, tc.same)
		}
	}
	// A negation stays with its option, wherever it is written.
	for _, tc := range []struct {
		a, b string
		same bool
	}{
		{"! -i a -o b -j DROP", "-o b ! -i a -j DROP", true},
		{"! -i a -o b -j DROP", "-i ! a -o b -j DROP", true},
		{"! -i a -o b -j DROP", "-i a ! -o b -j DROP", false},
	} {
		if got := ruleKey(strings.Fields(tc.a)) == ruleKey(strings.Fields(tc.b)); got != tc.same {
			t.Errorf("%q the same rule as %q: %v, want %v", tc.a, tc.b, got, tc.same)
		}
	}
}

// TestRuleKeyValues: an option known to take a value takes the next
// argument, even one starting with "-" (a link may be named -x, a comment
// may say anything); only an option it does not know takes the arguments
// up to the next one starting with "-".
func TestRuleKeyValues(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		same bool
	}{
		{"-i -x -o -y -j DROP", "-i -y -o -x -j DROP", false},
		{"-i -x -o b -j DROP", "-o b -i -x -j DROP", true},
		{"-i -x -o b -j DROP", "-x -i -o b -j DROP", false},
		{"-m comment --comment -c -i a -j DROP", "-m comment --comment -i -c a -j DROP", false},
		{"! -i -x -j DROP", "-i ! -x -j DROP", true},
		{"-p tcp -m tcp --tcp-flags SYN,ACK SYN -j DROP", "-j DROP -m tcp --tcp-flags SYN,ACK SYN -p tcp", true},
		{"-p tcp -m tcp --tcp-flags SYN,ACK SYN -j DROP", "-p tcp -m tcp --tcp-flags SYN SYN,ACK -j DROP", false},
		{"-f -i a -j DROP", "-i a -f -j DROP", true},
		{"-m foo --bar x y -j DROP", "-j DROP -m foo --bar x y", true},
	} {
		if got := ruleKey(strings.Fields(tc.a)) == ruleKey(strings.Fields(tc.b)); got != tc.same {
			t.Errorf("%q the same rule as %q: %v, want %v", tc.a, tc.b, got, tc.same)
		}
	}
	for rule, want := range map[string]string{
		"-i a -j ACCEPT":                      "ACCEPT",
		"-m comment --comment -j -j DROP":     "DROP",
		"-m comment --comment -j -i a":        "",
		"-i a --jump REJECT --reject-with -x": "REJECT",
		"-i a":                                "",
	} {
		if got := ruleTarget(strings.Fields(rule)); got != want {
			t.Errorf("ruleTarget(%q) = %q, want %q", rule, got, want)
		}
	}
}

// TestFirewallDeletesEveryForm: lab down deletes the lab's rules of both
// forms, the exact links' and the older wildcard's (from a lab made
// before), and nothing else.
func TestFirewallDeletesEveryForm(t *testing.T) {
	var lines []string
	for _, r := range firewallRules("lab") {
		lines = append(lines, "-A FORWARD "+strings.Join(r, " "))
	}
	lines = append(lines,
		"-A FORWARD -i ul-lab-+ ! -o ul-lab-+ -m comment --comment underlay-lab-lab -j DROP",
		"-A FORWARD ! -i ul-lab-+ -o ul-lab-+ -m comment --comment underlay-lab-lab -j DROP",
		"-A FORWARD -i ul-lab-+ -o ul-lab-+ -m comment --comment underlay-lab-lab -j ACCEPT",
	)
	others := []string{
		"-A FORWARD -i ul-lab-foo -o eth0 -j ACCEPT",
		"-A FORWARD -i ul-lab2-m -m comment --comment underlay-lab-lab2 -j DROP",
	}
	listing := "-P FORWARD DROP\n" + strings.Join(append(slices.Clone(lines), others...), "\n") + "\n"
	var got []string
	for _, d := range firewallDeletes(rulesWithComment(listing, ruleComment("lab"))) {
		got = append(got, strings.Join(d, " "))
	}
	var want []string
	for _, l := range lines {
		want = append(want, "-D "+strings.TrimPrefix(l, "-A "))
	}
	if !slices.Equal(got, want) {
		t.Errorf("deletes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestDisableIPv6ReadOnly: where /proc/sys is read-only (a container),
// IPv6 cannot be turned off on the lab's links. With ip6tables there, the
// lab's IPv6 FORWARD rules keep its IPv6 in (ensureFirewall puts them in
// or fails lab up): IPv6 off is only hygiene, so lab up warns, naming
// the file, and goes on. Without ip6tables nothing else would keep a
// node's IPv6 from being forwarded off the machine: lab up fails, naming
// the file and why. Before, it failed in both cases.
func TestDisableIPv6ReadOnly(t *testing.T) {
	sysctl := t.TempDir()
	if err := os.MkdirAll(filepath.Join(sysctl, "net", "ipv6", "conf", "ul-lab-m"), 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(sysctl, "net", "ipv6", "conf", "ul-lab-m", "disable_ipv6")
	for _, errno := range []syscall.Errno{syscall.EROFS, syscall.EACCES, syscall.EPERM} {
		sys := sysctls{dir: sysctl, write: func(f string, _ []byte) error {
			return &fs.PathError{Op: "open", Path: f, Err: errno}
		}}
		var logged bytes.Buffer
		log := slog.New(slog.NewTextHandler(&logged, nil))
		if err := disableIPv6(log, sys, true, "ul-lab-m"); err != nil {
			t.Errorf("%v, with ip6tables: %v, want a warning and no error", errno, err)
		}
		if !strings.Contains(logged.String(), "level=WARN") || !strings.Contains(logged.String(), file) {
			t.Errorf("%v, with ip6tables: logged %q, want a warning naming %s", errno, logged.String(), file)
		}
		err := disableIPv6(log, sys, false, "ul-lab-m")
		if err == nil || !strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), "ip6tables") || !errors.Is(err, errno) {
			t.Errorf("%v, without ip6tables: %v, want an error naming %s and ip6tables", errno, err, file)
		}
	}
	// Any other failure fails, with or without ip6tables.
	sys := sysctls{dir: sysctl, write: func(f string, _ []byte) error { return &fs.PathError{Op: "write", Path: f, Err: syscall.EIO} }}
	if err := disableIPv6(slog.New(slog.DiscardHandler), sys, true, "ul-lab-m"); !errors.Is(err, syscall.EIO) {
		t.Errorf("EIO with ip6tables: %v, want it returned", err)
	}
}

// TestRuleValuesOfMatchesAndTargets: the options of matches and targets
// that take one value and that `iptables -S` prints (a prefix, a name, a
// string to match, a range) took the next argument only when it did not
// start with "-": a log prefix "-x" made "-x" an option of its own and
// the rule another rule. Each now takes its value, whatever it starts
// with.
func TestRuleValuesOfMatchesAndTargets(t *testing.T) {
	for _, name := range []string{
		"--nflog-prefix", "--nflog-group", "--nflog-range", "--nflog-size", "--nflog-threshold",
		"--string", "--hex-string", "--algo", "--from", "--to",
		"--name", "--seconds", "--hitcount",
		"--hashlimit-name", "--hashlimit-upto", "--hashlimit-above", "--hashlimit-burst", "--hashlimit-mode",
		"--connlimit-upto", "--connlimit-above", "--connlimit-mask",
		"--u32", "--set-mss", "--queue-num", "--queue-balance",
		"--src-range", "--dst-range", "--mac-source",
		"--log-prefix", "--log-level", "--to-destination", "--to-source", "--to-ports",
	} {
		got := ruleOptions([]string{name, "-v", "-i", "a", "-j", "DROP"})
		want := []ruleOption{{name: name, values: []string{"-v"}}, {name: "-i", values: []string{"a"}}, {name: "-j", values: []string{"DROP"}}}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s -v -i a -j DROP: options %+v, want %+v", name, got, want)
		}
	}
}
