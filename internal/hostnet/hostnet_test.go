package hostnet

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"

	"github.com/underlay/underlay/internal/netspec"
)

func TestRepairs(t *testing.T) {
	good := Observed{ParentExists: true, ParentUp: true, ParentPromisc: true, ShimExists: true, ShimOK: true, ShimMarked: true, ShimUp: true, ShimHasIP: true, RouteViaOK: true}
	tests := []repairCase{
		{"all in place", func(*Observed) {}, nil},
		{"fresh host", func(o *Observed) { *o = Observed{ParentExists: true} },
			[]Repair{ParentUp, ParentPromisc, ShimCreate, ShimAddress, ShimUp, ShimRoute}},
		{"promisc switched off", func(o *Observed) { o.ParentPromisc = false }, []Repair{ParentPromisc}},
		{"shim deleted", func(o *Observed) {
			o.ShimExists, o.ShimOK, o.ShimUp, o.ShimHasIP, o.RouteViaOK = false, false, false, false, false
		},
			[]Repair{ShimCreate, ShimAddress, ShimUp, ShimRoute}},
		{"shim of the wrong kind", func(o *Observed) { o.ShimOK = false },
			[]Repair{ShimReplace, ShimCreate, ShimAddress, ShimUp, ShimRoute}},
		{"shim set down loses its route", func(o *Observed) { o.ShimUp, o.RouteViaOK = false, false }, []Repair{ShimUp, ShimRoute}},
		{"route deleted", func(o *Observed) { o.RouteViaOK = false }, []Repair{ShimRoute}},
		{"range moved", func(o *Observed) { o.ShimHasIP, o.RouteViaOK, o.OldRoutes = false, false, true }, []Repair{ShimAddress, ShimRoute, ShimOldRoutes}},
		{"old range's route left", func(o *Observed) { o.OldRoutes = true }, []Repair{ShimOldRoutes}},
		{"old IPv6 range's route, IPv4 only", func(o *Observed) { o.OldRoutes6 = true }, nil},
		{"an older agent's shim", func(o *Observed) { o.ShimMarked = false }, []Repair{ShimMark}},
		{"a shim marked naming no owner", func(o *Observed) { o.ShimUnowned = true }, []Repair{ShimMark}},
		{"a VLAN parent marked naming no owner", func(o *Observed) { o.ParentUnowned = true }, []Repair{ParentMark}},
		{"a VLAN parent marked naming no owner, not recorded", func(o *Observed) { o.ParentUnowned, o.ParentUnrecorded = true, "pool" }, []Repair{ParentMark, ParentRemember}},
		{"the agent's VLAN parent made again unmarked", func(o *Observed) { o.ParentMadeFor, o.ParentPromisc = "pool", false }, []Repair{ParentReclaim, ParentPromisc}},
		{"VLAN parent missing", func(o *Observed) { *o = Observed{ParentCreatable: true} },
			[]Repair{ParentCreate, ParentUp, ParentPromisc, ShimCreate, ShimAddress, ShimUp, ShimRoute}},
	}
	checkRepairs(t, Want{}, good, tests)
	if _, err := Repairs(Want{}, Observed{}); !errors.Is(err, ErrNoParent) {
		t.Errorf("missing parent: err %v, want ErrNoParent", err)
	}
	foreign := good
	foreign.ShimMarked, foreign.ShimForeign, foreign.ParentPromisc = false, true, false
	if r, err := Repairs(Want{ShimLink: "ul-0a1b2c3d"}, foreign); !errors.Is(err, ErrForeignLink) || len(r) != 0 {
		t.Errorf("someone's link of the shim's name: %v, %v; want nothing done and ErrForeignLink", r, err)
	}
}

// TestRepairsIPv6: a network with an IPv6 subnet wants the shim's IPv6
// address and route too, and each is repaired on its own.
func TestRepairsIPv6(t *testing.T) {
	w := Want{Shim6: netip.MustParseAddr("fd00:40::1:0:0:1"), Route6: netip.MustParsePrefix("fd00:40::1:0:0:0/80")}
	good := Observed{ParentExists: true, ParentUp: true, ParentPromisc: true, ShimExists: true, ShimOK: true, ShimMarked: true, ShimUp: true,
		ShimHasIP: true, RouteViaOK: true, ShimHasIP6: true, Route6ViaOK: true}
	tests := []repairCase{
		{"all in place", func(*Observed) {}, nil},
		{"fresh host", func(o *Observed) { *o = Observed{ParentExists: true} },
			[]Repair{ParentUp, ParentPromisc, ShimCreate, ShimAddress, ShimAddress6, ShimUp, ShimRoute, ShimRoute6}},
		{"shim of the wrong kind", func(o *Observed) { o.ShimOK = false },
			[]Repair{ShimReplace, ShimCreate, ShimAddress, ShimAddress6, ShimUp, ShimRoute, ShimRoute6}},
		// The kernel flushes a link's IPv6 addresses when it goes down.
		{"shim set down", func(o *Observed) { o.ShimUp, o.RouteViaOK, o.ShimHasIP6, o.Route6ViaOK = false, false, false, false },
			[]Repair{ShimAddress6, ShimUp, ShimRoute, ShimRoute6}},
		{"IPv6 address removed", func(o *Observed) { o.ShimHasIP6, o.Route6ViaOK = false, false }, []Repair{ShimAddress6, ShimRoute6}},
		{"IPv6 route deleted", func(o *Observed) { o.Route6ViaOK = false }, []Repair{ShimRoute6}},
		{"IPv4 route deleted", func(o *Observed) { o.RouteViaOK = false }, []Repair{ShimRoute}},
		{"IPv6 range moved", func(o *Observed) { o.ShimHasIP6, o.Route6ViaOK, o.OldRoutes6 = false, false, true }, []Repair{ShimAddress6, ShimRoute6, ShimOldRoutes6}},
	}
	checkRepairs(t, w, good, tests)
}

// repairCase is a host observed as good, changed by mutate, and the
// repairs it wants.
type repairCase struct {
	name   string
	mutate func(*Observed)
	want   []Repair
}

// checkRepairs runs each case's Repairs for w.
func checkRepairs(t *testing.T, w Want, good Observed, tests []repairCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := good
			tt.mutate(&o)
			got, err := Repairs(w, o)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("repairs (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRepairsIPvlan(t *testing.T) {
	w := Want{Driver: "ipvlan", IPvlanMode: "l2"}
	got, err := Repairs(w, Observed{ParentExists: true})
	if err != nil {
		t.Fatal(err)
	}
	want := []Repair{ParentUp, ShimCreate, ShimAddress, ShimUp, ShimRoute}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ipvlan on a fresh host: the parent is never made promiscuous (-want +got):\n%s", diff)
	}
	got, _ = Repairs(w, Observed{ParentCreatable: true})
	if diff := cmp.Diff(append([]Repair{ParentCreate}, want...), got); diff != "" {
		t.Errorf("ipvlan on a missing VLAN parent (-want +got):\n%s", diff)
	}
}

func TestOwned(t *testing.T) {
	if n, ok := Owned(OwnerAlias("vlan40")); !ok || n != "vlan40" {
		t.Errorf("Owned(OwnerAlias(vlan40)) = %q, %v", n, ok)
	}
	if _, ok := Owned("uplink to rack 3"); ok {
		t.Error("an alias set by hand counts as underlay's")
	}
}

// vlanWant is a macvlan network on VLAN 40 of bond0, which a fake host
// made by vlanHost has.
func vlanWant() Want {
	return Want{Parent: "bond0.40", Network: "pool", ShimLink: netspec.ShimLinkName("pool"),
		Shim: netip.MustParseAddr("10.40.0.2"), Route: netip.MustParsePrefix("10.40.0.0/26"), Subnet: netip.MustParsePrefix("10.40.0.0/24")}
}

func vlanHost() *fakeKernel {
	return newFakeKernel(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "bond0", MTU: 9000, Flags: net.FlagUp}})
}

// TestEnsureOnAFakeHost runs Ensure's repairs on an in-memory host: a
// missing VLAN parent and shim are made, marked, and found in place the
// next time; the removals take exactly them away.
func TestEnsureOnAFakeHost(t *testing.T) {
	k := vlanHost()
	h, w := Host{k: k}, vlanWant()
	got, err := h.Ensure(w)
	if err != nil {
		t.Fatal(err)
	}
	want := []Repair{ParentCreate, ParentUp, ParentPromisc, ShimCreate, ShimAddress, ShimUp, ShimRoute}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("first Ensure (-want +got):\n%s", diff)
	}
	if got, err := h.Ensure(w); err != nil || len(got) != 0 {
		t.Errorf("second Ensure: %v, %v; want nothing to do", got, err)
	}
	if a := k.links[w.Parent].Attrs(); a.Alias != OwnerAlias(w.Network) || a.MTU != 9000 {
		t.Errorf("parent %s: alias %q, MTU %d; want %q and its lower device's 9000", w.Parent, a.Alias, a.MTU, OwnerAlias(w.Network))
	}
	if a := k.links[w.ShimLink].Attrs(); a.Alias != ShimAlias(w.Network) {
		t.Errorf("shim %s: alias %q, want %q", w.ShimLink, a.Alias, ShimAlias(w.Network))
	}
	if err := removeShim(k, w.ShimLink, w.Network, ""); err != nil {
		t.Fatal(err)
	}
	if removed, err := removeParent(k, w.Parent, w.Network, "", ""); !removed || err != nil {
		t.Errorf("removeParent: %t, %v; want the parent removed", removed, err)
	}
	if names := slices.Sorted(maps.Keys(k.links)); !slices.Equal(names, []string{"bond0"}) {
		t.Errorf("links left: %v, want [bond0]", names)
	}
}

// dualStackWant is vlanWant with an IPv6 subnet.
func dualStackWant() Want {
	w := vlanWant()
	w.Shim6, w.Route6 = netip.MustParseAddr("fd00:40::1:0:0:1"), netip.MustParsePrefix("fd00:40::1:0:0:0/80")
	w.Subnet6 = netip.MustParsePrefix("fd00:40::/64")
	return w
}

// TestEnsureDualStack: on a network with an IPv6 subnet the shim also gets
// its IPv6 address (at once usable: no duplicate address detection) and
// a route to the node's IPv6 range that wins over the parent's route to
// the subnet; a stale global IPv6 address goes, the link-local one stays.
func TestEnsureDualStack(t *testing.T) {
	k := vlanHost()
	h, w := Host{k: k}, dualStackWant()
	got, err := h.Ensure(w)
	if err != nil {
		t.Fatal(err)
	}
	want := []Repair{ParentCreate, ParentUp, ParentPromisc, ShimCreate, ShimAddress, ShimAddress6, ShimUp, ShimRoute, ShimRoute6}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("first Ensure (-want +got):\n%s", diff)
	}
	if got, err := h.Ensure(w); err != nil || len(got) != 0 {
		t.Errorf("second Ensure: %v, %v; want nothing to do", got, err)
	}
	shim := k.links[w.ShimLink]
	addrs6, _ := k.AddrList(shim, netlink.FAMILY_V6)
	if len(addrs6) != 1 || addrs6[0].IPNet.String() != "fd00:40::1:0:0:1/128" || addrs6[0].Flags&syscall.IFA_F_NODAD == 0 {
		t.Errorf("shim IPv6 addresses %+v, want fd00:40::1:0:0:1/128 with IFA_F_NODAD", addrs6)
	}
	routes6, _ := k.RouteList(shim, netlink.FAMILY_V6)
	if len(routes6) != 1 || routes6[0].Dst.String() != "fd00:40:0:0:1::/80" || routes6[0].Priority != 1 {
		t.Errorf("shim IPv6 routes %+v, want one to fd00:40:0:0:1::/80 of metric 1", routes6)
	}
	if routes4, _ := k.RouteList(shim, netlink.FAMILY_V4); len(routes4) != 1 || routes4[0].Dst.String() != "10.40.0.0/26" {
		t.Errorf("shim IPv4 routes %+v, want one to 10.40.0.0/26", routes4)
	}

	// The node's IPv6 range moved (its old address may now be a
	// container's): the old global address goes, the link-local stays.
	k.addrs[w.ShimLink] = append(k.addrs[w.ShimLink], netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP("fe80::1"), Mask: net.CIDRMask(64, 128)}})
	moved := w
	moved.Shim6, moved.Route6 = netip.MustParseAddr("fd00:40::2:0:0:1"), netip.MustParsePrefix("fd00:40::2:0:0:0/80")
	if got, err := h.Ensure(moved); err != nil || !slices.Equal(got, []Repair{ShimAddress6, ShimRoute6, ShimOldRoutes6}) {
		t.Errorf("Ensure after the IPv6 range moved: %v, %v; want [%s %s %s]", got, err, ShimAddress6, ShimRoute6, ShimOldRoutes6)
	}
	routes6, _ = k.RouteList(shim, netlink.FAMILY_V6)
	if len(routes6) != 1 || routes6[0].Dst.String() != "fd00:40:0:0:2::/80" {
		t.Errorf("shim IPv6 routes after the move %+v, want only the one to fd00:40:0:0:2::/80", routes6)
	}
	var have []string
	addrs6, _ = k.AddrList(shim, netlink.FAMILY_V6)
	for _, a := range addrs6 {
		have = append(have, a.IP.String())
	}
	if slices.Sort(have); !slices.Equal(have, []string{"fd00:40::2:0:0:1", "fe80::1"}) {
		t.Errorf("shim IPv6 addresses after the move: %v, want the new one and the link-local one", have)
	}
}

// TestEnsureIPv6Disabled: where the kernel refuses IPv6 on the shim, the
// error says so and where to look.
func TestEnsureIPv6Disabled(t *testing.T) {
	k := vlanHost()
	w := dualStackWant()
	k.fail = map[string]error{"AddrAdd6 " + w.ShimLink: syscall.EACCES}
	_, err := Host{k: k}.Ensure(w)
	if err == nil || !strings.Contains(err.Error(), "net.ipv6.conf."+w.ShimLink+".disable_ipv6") {
		t.Errorf("Ensure with IPv6 disabled: %v, want an error naming the sysctl", err)
	}
}

// TestEnsureMarkFails: a link Ensure makes but cannot mark as underlay's
// must not stay unmarked, where no later sync, network rm or agent
// cleanup would take it for underlay's. The failure is reported, and the
// next sync makes the link again, marked.
func TestEnsureMarkFails(t *testing.T) {
	for _, link := range []string{"bond0.40", netspec.ShimLinkName("pool")} {
		t.Run(link, func(t *testing.T) {
			k := vlanHost()
			h, w := Host{k: k}, vlanWant()
			k.fail["LinkSetAlias "+link] = errors.New("injected alias failure")
			if _, err := h.Ensure(w); err == nil || !strings.Contains(err.Error(), "injected alias failure") {
				t.Errorf("Ensure with the mark of %s failing: %v; want that failure", link, err)
			}
			if l, ok := k.links[link]; ok && l.Attrs().Alias == "" {
				t.Errorf("%s is left unmarked after its mark failed", link)
			}
			delete(k.fail, "LinkSetAlias "+link)
			if _, err := h.Ensure(w); err != nil {
				t.Fatal(err)
			}
			if a := k.links[w.Parent].Attrs().Alias; a != OwnerAlias(w.Network) {
				t.Errorf("parent %s after the next sync: alias %q, want %q", w.Parent, a, OwnerAlias(w.Network))
			}
			if a := k.links[w.ShimLink].Attrs().Alias; a != ShimAlias(w.Network) {
				t.Errorf("shim %s after the next sync: alias %q, want %q", w.ShimLink, a, ShimAlias(w.Network))
			}
		})
	}
}

// TestEnsureMarkAndUndoFail: when the unmarked link cannot be deleted
// either, the error says it is left and how to remove it.
func TestEnsureMarkAndUndoFail(t *testing.T) {
	k := vlanHost()
	k.fail["LinkSetAlias bond0.40"] = errors.New("injected alias failure")
	k.fail["LinkDel bond0.40"] = errors.New("injected delete failure")
	_, err := Host{k: k}.Ensure(vlanWant())
	for _, want := range []string{"injected alias failure", "injected delete failure", "left unmarked", "ip link del bond0.40"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Ensure: %v; want it to say %q", err, want)
		}
	}
}

// TestEnsureLinkOfTheShimsName: a link that bears the network's shim name
// is used (and replaced when of the wrong kind or parent) only when it is
// underlay's shim of the network: marked for it, or an older agent's
// unmarked shim — of the wanted kind, on the parent, holding the shim's
// address — which is then marked. Anything else is left exactly as it is,
// with an error wrapping ErrForeignLink.
func TestEnsureLinkOfTheShimsName(t *testing.T) {
	const other = "192.168.9.9"
	w := Want{Parent: "eth1", Network: "pool", ShimLink: netspec.ShimLinkName("pool"),
		Shim: netip.MustParseAddr("10.40.0.2"), Route: netip.MustParsePrefix("10.40.0.0/26")}
	attrs := func(parent int, alias string) netlink.LinkAttrs {
		return netlink.LinkAttrs{Name: w.ShimLink, ParentIndex: parent, Alias: alias, Flags: net.FlagUp}
	}
	const eth1, eth2 = 1, 2
	bridge := func(parent int, alias string) netlink.Link {
		return &netlink.Macvlan{LinkAttrs: attrs(parent, alias), Mode: netlink.MACVLAN_MODE_BRIDGE}
	}
	tests := []struct {
		name    string
		link    netlink.Link
		addr    string
		foreign bool
	}{
		{"marked", bridge(eth1, ShimAlias("pool")), w.Shim.String(), false},
		{"marked, another address", bridge(eth1, ShimAlias("pool")), other, false},
		{"marked, on another parent", bridge(eth2, ShimAlias("pool")), w.Shim.String(), false},
		{"an older agent's", bridge(eth1, ""), w.Shim.String(), false},
		{"unmarked, without the shim's address", bridge(eth1, ""), other, true},
		{"unmarked, on another parent", bridge(eth2, ""), w.Shim.String(), true},
		{"unmarked, another mode", &netlink.Macvlan{LinkAttrs: attrs(eth1, ""), Mode: netlink.MACVLAN_MODE_PRIVATE}, w.Shim.String(), true},
		{"unmarked, another driver", &netlink.IPVlan{LinkAttrs: attrs(eth1, ""), Mode: netlink.IPVLAN_MODE_L2}, w.Shim.String(), true},
		{"someone's alias", bridge(eth1, "mine"), w.Shim.String(), true},
		{"another network's", bridge(eth1, ShimAlias("db")), w.Shim.String(), true},
		{"marked, another kind", &netlink.Dummy{LinkAttrs: attrs(0, ShimAlias("pool"))}, w.Shim.String(), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := newFakeKernel(
				&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "eth1", Flags: net.FlagUp, Promisc: 1}},
				&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "eth2", Flags: net.FlagUp, Promisc: 1}},
				tt.link)
			k.addrs[w.ShimLink] = []netlink.Addr{{IPNet: &net.IPNet{IP: net.ParseIP(tt.addr).To4(), Mask: net.CIDRMask(32, 32)}}}
			before := *clone(k.links[w.ShimLink]).Attrs()
			repairs, err := Host{k: k}.Ensure(w)
			if tt.foreign {
				if !errors.Is(err, ErrForeignLink) || !strings.Contains(err.Error(), w.ShimLink) {
					t.Errorf("Ensure: %v, %v; want an error naming %s and wrapping ErrForeignLink", repairs, err, w.ShimLink)
				}
				l, ok := k.links[w.ShimLink]
				if !ok {
					t.Fatalf("%s was deleted", w.ShimLink)
				}
				if diff := cmp.Diff(before, *l.Attrs()); diff != "" {
					t.Errorf("%s changed (-before +after):\n%s", w.ShimLink, diff)
				}
				if got := k.addrs[w.ShimLink]; len(got) != 1 || got[0].IP.String() != tt.addr {
					t.Errorf("%s's addresses: %v, want only %s", w.ShimLink, got, tt.addr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Ensure: %v", err)
			}
			l := k.links[w.ShimLink]
			if a := l.Attrs(); a.Alias != ShimAlias("pool") || a.ParentIndex != eth1 {
				t.Errorf("%s after Ensure: alias %q on link %d, want %q on eth1", w.ShimLink, a.Alias, a.ParentIndex, ShimAlias("pool"))
			}
			if got := k.addrs[w.ShimLink]; len(got) != 1 || got[0].IP.String() != w.Shim.String() {
				t.Errorf("%s's addresses: %v, want only %s", w.ShimLink, got, w.Shim)
			}
			if again, err := (Host{k: k}).Ensure(w); err != nil || len(again) != 0 {
				t.Errorf("Ensure again: %v, %v; want nothing to do", again, err)
			}
		})
	}
}

// TestRemoveShimLeavesUnmarkedLinks: network rm deletes only a shim
// marked for the network. An older agent's unmarked shim is marked by
// the first sync of an agent that marks shims; an unmarked link of the
// shim's name that is still there may be anyone's.
func TestRemoveShimLeavesUnmarkedLinks(t *testing.T) {
	name := netspec.ShimLinkName("pool")
	k := newFakeKernel(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "eth1"}},
		&netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: name, ParentIndex: 1}, Mode: netlink.MACVLAN_MODE_BRIDGE})
	if err := removeShim(k, name, "pool", ""); !errors.Is(err, ErrForeignLink) {
		t.Errorf("removeShim of an unmarked %s: %v, want ErrForeignLink", name, err)
	}
	if _, ok := k.links[name]; !ok {
		t.Errorf("unmarked %s deleted", name)
	}
}

// TestEnsureRefusesBadWants: a Want no network create would make (a spec
// edited in KV, a caller's slip) is refused, naming the bad value, before
// anything on the host changes. A route of 0.0.0.0/0 (a cluster-IPAM
// network of subnet 0.0.0.0/0), or none at all, replaced the host's
// default route by one through the shim.
func TestEnsureRefusesBadWants(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Want)
		wantErr string
	}{
		{"default route", func(w *Want) { w.Route = netip.MustParsePrefix("0.0.0.0/0") }, "route 0.0.0.0/0"},
		{"no route", func(w *Want) { w.Route = netip.Prefix{} }, "route invalid Prefix"},
		{"route not a network address", func(w *Want) { w.Route = netip.MustParsePrefix("10.40.0.5/26") }, "route 10.40.0.5/26"},
		{"IPv6 route", func(w *Want) { w.Route = netip.MustParsePrefix("fd00::/64") }, "route fd00::/64"},
		{"no shim address", func(w *Want) { w.Shim = netip.Addr{} }, "shim address invalid IP"},
		{"unspecified shim address", func(w *Want) { w.Shim = netip.MustParseAddr("0.0.0.0") }, "shim address 0.0.0.0"},
		{"unknown driver", func(w *Want) { w.Driver = "IPVLAN" }, `driver "IPVLAN"`},
		{"unknown ipvlan mode", func(w *Want) { w.Driver, w.IPvlanMode = "ipvlan", "l3s" }, `ipvlan mode "l3s"`},
		{"shim link name too long", func(w *Want) { w.ShimLink = "ul-0123456789abc" }, `shim link "ul-0123456789abc"`},
		{"shim link is the parent", func(w *Want) { w.ShimLink = w.Parent }, `shim link "bond0.40"`},
		{"shim link with a slash", func(w *Want) { w.ShimLink = "ul/0a1b2c3d" }, `shim link "ul/0a1b2c3d"`},
		{"shim link with a space", func(w *Want) { w.ShimLink = "ul 0a1b2c3d" }, `shim link "ul 0a1b2c3d"`},
		{"shim link dot-dot", func(w *Want) { w.ShimLink = ".." }, `shim link ".."`},
		{"no parent", func(w *Want) { w.Parent = "" }, `parent ""`},
		{"parent with a newline", func(w *Want) { w.Parent = "bond0\n.40" }, `parent "bond0\n.40"`},
		{"parent name too long", func(w *Want) { w.Parent = "bond0.40.40.4094" }, `parent "bond0.40.40.4094"`},
		{"IPv6 route without a shim address", func(w *Want) { w.Route6 = netip.MustParsePrefix("fd00::/80") }, "shim IPv6 address invalid IP"},
		{"IPv6 shim address without a route", func(w *Want) { w.Shim6 = netip.MustParseAddr("fd00::1") }, "IPv6 route invalid Prefix"},
		{"link-local IPv6 shim address", func(w *Want) { *w = dualStackWant(); w.Shim6 = netip.MustParseAddr("fe80::1") }, "shim IPv6 address fe80::1"},
		{"IPv4 as IPv6 shim address", func(w *Want) { *w = dualStackWant(); w.Shim6 = netip.MustParseAddr("::ffff:10.40.0.9") }, "shim IPv6 address ::ffff:10.40.0.9"},
		{"IPv6 default route", func(w *Want) { *w = dualStackWant(); w.Route6 = netip.MustParsePrefix("::/0") }, "IPv6 route ::/0"},
		{"IPv6 route not a network address", func(w *Want) { *w = dualStackWant(); w.Route6 = netip.MustParsePrefix("fd00:40::1:0:0:1/80") }, "IPv6 route fd00:40::1:0:0:1/80"},
		{"IPv4 as IPv6 route", func(w *Want) { *w = dualStackWant(); w.Route6 = netip.MustParsePrefix("10.40.0.0/26") }, "IPv6 route 10.40.0.0/26"},
		{"shim address outside the route", func(w *Want) { w.Shim = netip.MustParseAddr("192.168.1.1") }, "shim address 192.168.1.1 is outside 10.40.0.0/26"},
		{"shim IPv6 address outside the route", func(w *Want) { *w = dualStackWant(); w.Shim6 = netip.MustParseAddr("fd00:99::1") }, "shim IPv6 address fd00:99::1 is outside fd00:40:0:0:1::/80"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := vlanHost()
			k.routes = []netlink.Route{{LinkIndex: 1, Gw: net.ParseIP("192.0.2.1")}}
			w := vlanWant()
			tt.mutate(&w)
			repairs, err := Host{k: k}.Ensure(w)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Ensure: %v, %v; want an error naming %s", repairs, err, tt.wantErr)
			}
			if names := slices.Sorted(maps.Keys(k.links)); !slices.Equal(names, []string{"bond0"}) {
				t.Errorf("links after a refused Ensure: %v, want [bond0]", names)
			}
			if len(k.routes) != 1 || k.routes[0].LinkIndex != 1 {
				t.Errorf("routes after a refused Ensure: %v, want the default route via bond0 only", k.routes)
			}
		})
	}
}

var eth1 = &netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "eth1", Flags: net.FlagUp, Promisc: 1}}

// poolOn is network pool's Want on parent, of driver.
func poolOn(parent string, driver string) Want {
	return Want{Parent: parent, Network: "pool", Driver: driver, ShimLink: netspec.ShimLinkName("pool"),
		Shim: netip.MustParseAddr("10.40.0.2"), Route: netip.MustParsePrefix("10.40.0.0/26")}
}

// TestEnsureStackedParents: the kernel makes a macvlan on a macvlan (an
// ipvlan on an ipvlan) on that link's lower device, so a shim on such a
// parent is where it belongs when it is on the parent's lower device; it
// was taken for one of the wrong parent and replaced at every sync, each
// replacement waking the next.
func TestEnsureStackedParents(t *testing.T) {
	t.Run("macvlan parent", func(t *testing.T) {
		k := newFakeKernel(eth1, &netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: "mv0", ParentIndex: 1, Flags: net.FlagUp}, Mode: netlink.MACVLAN_MODE_BRIDGE})
		h, w := Host{k: k}, poolOn("mv0", "")
		if _, err := h.Ensure(w); err != nil {
			t.Fatal(err)
		}
		if again, err := h.Ensure(w); err != nil || len(again) != 0 {
			t.Errorf("Ensure again: %v, %v; want nothing to do", again, err)
		}
	})
	t.Run("ipvlan parent", func(t *testing.T) {
		k := newFakeKernel(eth1, &netlink.IPVlan{LinkAttrs: netlink.LinkAttrs{Name: "ipv0", ParentIndex: 1, Flags: net.FlagUp}, Mode: netlink.IPVLAN_MODE_L2})
		h, w := Host{k: k}, poolOn("ipv0", "ipvlan")
		if _, err := h.Ensure(w); err != nil {
			t.Fatal(err)
		}
		if again, err := h.Ensure(w); err != nil || len(again) != 0 {
			t.Errorf("Ensure again: %v, %v; want nothing to do", again, err)
		}
	})
}

// TestEnsureRefusesShimParents: a parent that is one of underlay's shims
// (another network's, marked or as older agents made them) is refused,
// naming it, and left as it is: that network's removal would take it away.
func TestEnsureRefusesShimParents(t *testing.T) {
	for _, alias := range []string{ShimAlias("db"), ""} {
		t.Run(fmt.Sprintf("shim parent, alias %q", alias), func(t *testing.T) {
			parent := &netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: netspec.ShimLinkName("db"), ParentIndex: 1, Alias: alias, Flags: net.FlagUp}, Mode: netlink.MACVLAN_MODE_BRIDGE}
			k := newFakeKernel(eth1, parent)
			w := poolOn(parent.Name, "")
			before := *clone(k.links[w.Parent]).Attrs()
			repairs, err := Host{k: k}.Ensure(w)
			if err == nil || !strings.Contains(err.Error(), "parent "+w.Parent) {
				t.Errorf("Ensure: %v, %v; want an error naming parent %s", repairs, err, w.Parent)
			}
			if _, ok := k.links[w.ShimLink]; ok {
				t.Errorf("shim %s made on %s", w.ShimLink, w.Parent)
			}
			if diff := cmp.Diff(before, *k.links[w.Parent].Attrs()); diff != "" {
				t.Errorf("parent %s changed (-before +after):\n%s", w.Parent, diff)
			}
		})
	}
}

// TestRemoveParentLeavesParentInUse: a VLAN parent underlay made is
// removed with its network only when nothing else hangs off it. Deleting
// a link deletes every link stacked on it, and takes it out of its
// bridge: an operator's macvlan on bond0.40, another network's VLAN
// bond0.40.5, or a bridge bond0.40 was made a port of went with it.
func TestRemoveParentLeavesParentInUse(t *testing.T) {
	const parentIndex = 2 // bond0 is 1
	parent := &netlink.Vlan{LinkAttrs: netlink.LinkAttrs{Name: "bond0.40", ParentIndex: 1, Alias: OwnerAlias("pool")}, VlanId: 40}
	for _, tc := range []struct {
		name  string
		links []netlink.Link
		what  string
	}{
		{"operator's macvlan on it", []netlink.Link{&netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: "mv40", ParentIndex: parentIndex}, Mode: netlink.MACVLAN_MODE_BRIDGE}}, "mv40"},
		{"a VLAN on it", []netlink.Link{&netlink.Vlan{LinkAttrs: netlink.LinkAttrs{Name: "bond0.40.5", ParentIndex: parentIndex, Alias: OwnerAlias("inner")}, VlanId: 5}}, "bond0.40.5"},
		{"a port of a bridge", []netlink.Link{&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: "br40"}}}, "br40"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := clone(parent)
			if tc.what == "br40" {
				p.Attrs().MasterIndex = 3
			}
			k := newFakeKernel(append([]netlink.Link{&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "bond0"}}, p}, tc.links...)...)
			before := slices.Sorted(maps.Keys(k.links))
			removed, err := removeParent(k, "bond0.40", "pool", "", "")
			if removed || !errors.Is(err, ErrParentInUse) || !strings.Contains(err.Error(), "bond0.40") || !strings.Contains(err.Error(), tc.what) {
				t.Errorf("removeParent: %t, %v; want bond0.40 left, with an error wrapping ErrParentInUse naming it and %s", removed, err, tc.what)
			}
			if after := slices.Sorted(maps.Keys(k.links)); !slices.Equal(before, after) {
				t.Errorf("links %v after removeParent, want %v", after, before)
			}
		})
	}
	// Alone on it, the network's parent goes, even beside a veth whose
	// peer, in a container's namespace, has the parent's index there.
	k := newFakeKernel(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "bond0"}}, clone(parent),
		&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "veth0a1b2c3", ParentIndex: parentIndex, NetNsID: 1}})
	if removed, err := removeParent(k, "bond0.40", "pool", "", ""); !removed || err != nil {
		t.Errorf("removeParent of an unused parent: %t, %v; want it removed", removed, err)
	}
}

// TestEnsureLeavesTheHostsRoutes: the kernel replaces a route of the
// same destination and metric on whichever link, so the shim's route to
// the node's range took the host's own route to it (the connected route
// of an address the host has in the network's subnet, an operator's
// static route), and removing the network, which deletes the shim,
// left the host without either. Such a route is now left as it is and
// named in the error; one of another metric is no obstacle.
func TestEnsureLeavesTheHostsRoutes(t *testing.T) {
	route := func(dst string, metric int) netlink.Route {
		_, n, _ := net.ParseCIDR(dst)
		return netlink.Route{LinkIndex: 1, Dst: n, Scope: netlink.SCOPE_LINK, Protocol: 2, Priority: metric}
	}
	for _, tc := range []struct {
		name    string
		w       Want
		route   netlink.Route
		wantErr string
	}{
		{"IPv4", vlanWant(), route("10.40.0.0/26", 0), "route 10.40.0.0/26"},
		{"IPv6", dualStackWant(), route("fd00:40::1:0:0:0/80", 1), "IPv6 route fd00:40:0:0:1::/80"},
		{"IPv4 of another metric", vlanWant(), route("10.40.0.0/26", 100), ""},
		{"IPv6 of the kernel's metric", dualStackWant(), route("fd00:40::1:0:0:0/80", 256), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := vlanHost()
			k.routes = []netlink.Route{tc.route}
			repairs, err := Host{k: k}.Ensure(tc.w)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if !slices.ContainsFunc(k.routes, func(r netlink.Route) bool { return r.LinkIndex == 1 }) {
					t.Errorf("routes after Ensure: %v, want bond0's kept", k.routes)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), `"bond0"`) {
				t.Errorf("Ensure: %v, %v; want an error naming %s and bond0", repairs, err, tc.wantErr)
			}
			if len(k.routes) != 1 || k.routes[0].LinkIndex != 1 {
				t.Errorf("routes after a refused Ensure: %v, want bond0's only", k.routes)
			}
			if names := slices.Sorted(maps.Keys(k.links)); !slices.Equal(names, []string{"bond0"}) {
				t.Errorf("links after a refused Ensure: %v, want [bond0]", names)
			}
		})
	}
}

// TestEnsureVLANOfAnotherName: the VLAN a parent name asks for may exist
// under another name (an operator's vlan40, or bond0.40 for a spec's
// bond0.040): the kernel refuses a second link of one VLAN on a device.
// The error names the link that has it, so the operator can give that
// as the parent; it said only "file exists".
func TestEnsureVLANOfAnotherName(t *testing.T) {
	k := newFakeKernel(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "bond0", Flags: net.FlagUp}},
		&netlink.Vlan{LinkAttrs: netlink.LinkAttrs{Name: "vlan40", ParentIndex: 1}, VlanId: 40})
	w := vlanWant()
	w.Parent = "bond0.040"
	repairs, err := Host{k: k}.Ensure(w)
	if err == nil || !strings.Contains(err.Error(), `"vlan40"`) || !strings.Contains(err.Error(), "VLAN 40") {
		t.Errorf("Ensure: %v, %v; want an error naming vlan40, which is VLAN 40 on bond0", repairs, err)
	}
	if names := slices.Sorted(maps.Keys(k.links)); !slices.Equal(names, []string{"bond0", "vlan40"}) {
		t.Errorf("links after Ensure: %v, want [bond0 vlan40]", names)
	}
}

// TestEnsureErrorNamesTheLink: a repair of the parent that fails names the
// parent, and one of the shim the shim; each said "on" the shim.
func TestEnsureErrorNamesTheLink(t *testing.T) {
	for _, tc := range []struct{ call, link, want string }{
		{"SetPromiscOn", "bond0.40", `set parent promiscuous on parent "bond0.40"`},
		{"LinkSetUp", "bond0.40", `set parent up on parent "bond0.40"`},
		{"LinkSetUp", netspec.ShimLinkName("pool"), `set shim up on shim "` + netspec.ShimLinkName("pool") + `"`},
	} {
		t.Run(tc.call+" "+tc.link, func(t *testing.T) {
			k := newFakeKernel(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "bond0", Flags: net.FlagUp}},
				&netlink.Vlan{LinkAttrs: netlink.LinkAttrs{Name: "bond0.40", ParentIndex: 1}, VlanId: 40})
			k.fail[tc.call+" "+tc.link] = syscall.EPERM
			if _, err := (Host{k: k}).Ensure(vlanWant()); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Ensure: %v; want it to say %s", err, tc.want)
			}
		})
	}
}

// TestRemoveOldShim: an older agent's shim carries no mark, so removing
// its network (or its orphan, spec gone) left it for good. It goes when
// it is the link of exactly the name agents give the network's shim, a
// macvlan or ipvlan without alias, whose addresses (link-local ones
// aside) are all of those the node holds on the network. Any link that
// differs in one of these may be an operator's, and stays.
func TestRemoveOldShim(t *testing.T) {
	name := netspec.ShimLinkName("pool")
	held := []netip.Prefix{netip.MustParsePrefix("10.20.0.16/28"), netip.MustParsePrefix("fd00:20::5/128")}
	addr := func(s string) netlink.Addr {
		p := netip.MustParsePrefix(s)
		return netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
	}
	tests := []struct {
		name    string
		link    netlink.Link
		network string
		addrs   []netlink.Addr
		removed bool
	}{
		{"older agent's macvlan", &netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: name, ParentIndex: 1}}, "pool",
			[]netlink.Addr{addr("10.20.0.17/32"), addr("fd00:20::5/128"), addr("fe80::1/64")}, true},
		{"older agent's ipvlan", &netlink.IPVlan{LinkAttrs: netlink.LinkAttrs{Name: name, ParentIndex: 1}}, "pool",
			[]netlink.Addr{addr("10.20.0.17/32")}, true},
		{"address of no range the node holds", &netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: name, ParentIndex: 1}}, "pool",
			[]netlink.Addr{addr("10.20.0.17/32"), addr("192.168.1.5/24")}, false},
		{"no address", &netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: name, ParentIndex: 1}}, "pool", nil, false},
		{"alias of its own", &netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: name, ParentIndex: 1, Alias: "ops"}}, "pool",
			[]netlink.Addr{addr("10.20.0.17/32")}, false},
		{"another network's shim name", &netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: name, ParentIndex: 1}}, "web",
			[]netlink.Addr{addr("10.20.0.17/32")}, false},
		{"not a macvlan or ipvlan", &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: name}}, "pool",
			[]netlink.Addr{addr("10.20.0.17/32")}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := newFakeKernel(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "eth1"}}, tt.link)
			for _, a := range tt.addrs {
				k.addrs[name] = append(k.addrs[name], a)
			}
			removed, err := removeOldShim(k, name, tt.network, held)
			if err != nil {
				t.Fatal(err)
			}
			if _, there := k.links[name]; removed != tt.removed || there == tt.removed {
				t.Errorf("removeOldShim: %t, link there after: %t; want removed %t", removed, there, tt.removed)
			}
		})
	}
	k := newFakeKernel()
	if removed, err := removeOldShim(k, name, "pool", held); removed || err != nil {
		t.Errorf("removeOldShim of an absent link: %t, %v; want nothing done and no error", removed, err)
	}
}

// TestEnsureRefusesPortsOfABond: a parent that is a port of a bond or
// bridge (eth0 in bond0), or a VLAN parent to be made on one, is
// refused, naming the master, before anything changes. The master takes
// the frames its ports receive: the kernel refuses a macvlan or ipvlan
// on a port (EBUSY), which Ensure met only after making the operator's
// bond member promiscuous, with an error that named neither; and a VLAN
// made on a member bypassed the bond.
func TestEnsureRefusesPortsOfABond(t *testing.T) {
	const master = 1 // bond0 or br0, eth0's master
	eth0 := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "eth0", MasterIndex: master, Flags: net.FlagUp}}
	bond := &netlink.Bond{LinkAttrs: netlink.LinkAttrs{Name: "bond0", Flags: net.FlagUp}, Mode: netlink.BOND_MODE_ACTIVE_BACKUP}
	bridge := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0", Flags: net.FlagUp}}
	for _, tc := range []struct {
		name   string
		master netlink.Link
		w      Want
		want   []string
	}{
		{"bond member", bond, poolOn("eth0", ""), []string{"parent eth0", "bond bond0"}},
		{"bond member, ipvlan", bond, poolOn("eth0", "ipvlan"), []string{"parent eth0", "bond bond0"}},
		{"bridge port", bridge, poolOn("eth0", ""), []string{"parent eth0", "bridge br0"}},
		{"VLAN on a bond member", bond, poolOn("eth0.40", ""), []string{"parent eth0.40", "bond bond0", "bond0.40"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := newFakeKernel(clone(tc.master), clone(eth0))
			before := *clone(k.links["eth0"]).Attrs()
			repairs, err := Host{k: k}.Ensure(tc.w)
			for _, want := range tc.want {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("Ensure: %v, %v; want an error naming %s", repairs, err, want)
				}
			}
			if diff := cmp.Diff(before, *k.links["eth0"].Attrs()); diff != "" {
				t.Errorf("eth0 changed (-before +after):\n%s", diff)
			}
			if names := slices.Sorted(maps.Keys(k.links)); !slices.Equal(names, []string{tc.master.Attrs().Name, "eth0"}) {
				t.Errorf("links after a refused Ensure: %v, want only %s and eth0", names, tc.master.Attrs().Name)
			}
		})
	}
	// A port of a VRF keeps its frames: a parent like any other.
	k := newFakeKernel(&netlink.Vrf{LinkAttrs: netlink.LinkAttrs{Name: "vrf-blue", Flags: net.FlagUp}, Table: 10}, clone(eth0))
	if _, err := (Host{k: k}).Ensure(poolOn("eth0", "")); err != nil {
		t.Errorf("Ensure on a port of a VRF: %v", err)
	}
}

// TestEnsureRefusesAnotherVLAN: a link of the parent's name that is a
// VLAN, but not the one the name says (bond0.40 made as VLAN 41, or on
// another device), is refused, naming what it is, and left as it is. It
// was used as it was: the network's containers came up on another VLAN
// than the network's, and the node reported ready.
func TestEnsureRefusesAnotherVLAN(t *testing.T) {
	for _, tc := range []struct {
		name string
		link netlink.Link
		want string
	}{
		{"another VLAN id", &netlink.Vlan{LinkAttrs: netlink.LinkAttrs{Name: "bond0.40", ParentIndex: 1, Flags: net.FlagUp}, VlanId: 41}, "VLAN 41 on bond0"},
		{"another lower device", &netlink.Vlan{LinkAttrs: netlink.LinkAttrs{Name: "bond0.40", ParentIndex: 2, Flags: net.FlagUp}, VlanId: 40}, "VLAN 40 on eth0"},
		// Not a VLAN at all, whatever its name: the containers would be
		// on no VLAN (a dummy), or untagged on the macvlan's device.
		{"a dummy", &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: "bond0.40", Flags: net.FlagUp}}, "a dummy link"},
		{"a macvlan", &netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: "bond0.40", ParentIndex: 1, Flags: net.FlagUp}, Mode: netlink.MACVLAN_MODE_BRIDGE}, "a macvlan link"},
		{"an 802.1ad VLAN", &netlink.Vlan{LinkAttrs: netlink.LinkAttrs{Name: "bond0.40", ParentIndex: 1, Flags: net.FlagUp}, VlanId: 40, VlanProtocol: netlink.VLAN_PROTOCOL_8021AD}, "802.1ad VLAN 40 on bond0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := newFakeKernel(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "bond0", Flags: net.FlagUp}},
				&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "eth0", Flags: net.FlagUp}}, tc.link)
			before := *clone(k.links["bond0.40"]).Attrs()
			repairs, err := Host{k: k}.Ensure(vlanWant())
			if err == nil || !strings.Contains(err.Error(), "parent bond0.40 is "+tc.want+", not VLAN 40 on bond0") {
				t.Errorf("Ensure: %v, %v; want an error saying bond0.40 is %s, not VLAN 40 on bond0", repairs, err, tc.want)
			}
			if diff := cmp.Diff(before, *k.links["bond0.40"].Attrs()); diff != "" {
				t.Errorf("bond0.40 changed (-before +after):\n%s", diff)
			}
			if names := slices.Sorted(maps.Keys(k.links)); !slices.Equal(names, []string{"bond0", "bond0.40", "eth0"}) {
				t.Errorf("links after a refused Ensure: %v, want [bond0 bond0.40 eth0]", names)
			}
		})
	}
	// bond0.040 names VLAN 40 on bond0 too.
	k := newFakeKernel(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "bond0", Flags: net.FlagUp}},
		&netlink.Vlan{LinkAttrs: netlink.LinkAttrs{Name: "bond0.040", ParentIndex: 1, Flags: net.FlagUp}, VlanId: 40})
	w := vlanWant()
	w.Parent = "bond0.040"
	if _, err := (Host{k: k}).Ensure(w); err != nil {
		t.Errorf("Ensure on bond0.040, VLAN 40 on bond0: %v", err)
	}
	// A VLAN whose name says none (trunk40) is the VLAN it is.
	k = newFakeKernel(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "bond0", Flags: net.FlagUp}},
		&netlink.Vlan{LinkAttrs: netlink.LinkAttrs{Name: "trunk40", ParentIndex: 1, Flags: net.FlagUp}, VlanId: 40})
	w.Parent = "trunk40"
	if _, err := (Host{k: k}).Ensure(w); err != nil {
		t.Errorf("Ensure on trunk40, VLAN 40 on bond0: %v", err)
	}
}

// TestNotAsNamed: the one rule the agent (Observe) and the doctor judge a
// parent named like a VLAN by, from the link's kind, VLAN id, protocol
// and lower device, not from its name alone.
func TestNotAsNamed(t *testing.T) {
	vlan := func(vid int, lower string) ParentFacts {
		return ParentFacts{Exists: true, Type: "vlan", VLAN: vid, Lower: lower}
	}
	for _, tc := range []struct {
		name, parent string
		f            ParentFacts
		want         string
	}{
		{"the VLAN its name says", "eth1.40", vlan(40, "eth1"), ""},
		{"leading zeros", "eth1.040", vlan(40, "eth1"), ""},
		{"a dummy named like a VLAN", "eth1.40", ParentFacts{Exists: true, Type: "dummy"}, "a dummy link"},
		{"a macvlan named like a VLAN", "eth1.40", ParentFacts{Exists: true, Type: "macvlan"}, "a macvlan link"},
		{"an ipvlan named like a VLAN", "eth1.40", ParentFacts{Exists: true, Type: "ipvlan"}, "an ipvlan link"},
		{"another VLAN id", "eth1.40", vlan(41, "eth1"), "VLAN 41 on eth1"},
		{"another lower device", "eth1.40", vlan(40, "eth0"), "VLAN 40 on eth0"},
		{"802.1ad", "eth1.40", ParentFacts{Exists: true, Type: "vlan", VLAN: 40, Lower: "eth1", VLANProtocol: "802.1ad"}, "802.1ad VLAN 40 on eth1"},
		{"a VLAN named oddly", "trunk40", vlan(40, "eth1"), ""},
		{"a VLAN named oddly, of another id", "trunk40", vlan(7, "eth1"), ""},
		{"a dummy named plainly", "dummy0", ParentFacts{Exists: true, Type: "dummy"}, ""},
		{"missing", "eth1.40", ParentFacts{}, ""},
	} {
		if got := NotAsNamed(tc.parent, tc.f); got != tc.want {
			t.Errorf("%s: NotAsNamed(%q, %+v) = %q, want %q", tc.name, tc.parent, tc.f, got, tc.want)
		}
	}
}

// TestEnsureNamesTheDownLowerDevice: the kernel does not set a VLAN up on
// a lower device that is down (ENETDOWN). Ensure said only "set parent up
// on parent "bond0.40": network is down"; it names the lower device, and
// leaves it as it is (the operator's trunk or bond).
func TestEnsureNamesTheDownLowerDevice(t *testing.T) {
	for _, tc := range []struct {
		name string
		k    func() *fakeKernel
	}{
		{"VLAN parent to be made", func() *fakeKernel {
			return newFakeKernel(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "bond0"}})
		}},
		{"VLAN parent there, down", func() *fakeKernel {
			return newFakeKernel(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "bond0"}},
				&netlink.Vlan{LinkAttrs: netlink.LinkAttrs{Name: "bond0.40", ParentIndex: 1}, VlanId: 40})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := tc.k()
			_, err := Host{k: k}.Ensure(vlanWant())
			if !errors.Is(err, syscall.ENETDOWN) || !strings.Contains(err.Error(), `parent "bond0.40"`) || !strings.Contains(err.Error(), "lower device bond0 is down") {
				t.Errorf("Ensure: %v; want ENETDOWN, naming bond0.40 and its lower device bond0, down", err)
			}
			if k.links["bond0"].Attrs().Flags&net.FlagUp != 0 {
				t.Error("bond0 was set up")
			}
		})
	}
}

// TestEnsureNamesTheMissingLowerDevice: a VLAN parent whose lower device
// is missing cannot be made; the error said only "parent bond0.40:
// parent interface not found", not what is missing. A lower device that
// cannot be read is that error, not "not found".
func TestEnsureNamesTheMissingLowerDevice(t *testing.T) {
	k := newFakeKernel(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "eth0", Flags: net.FlagUp}})
	_, err := Host{k: k}.Ensure(vlanWant())
	if !errors.Is(err, ErrNoParent) || !strings.Contains(err.Error(), "parent bond0.40") || !strings.Contains(err.Error(), "lower device bond0") {
		t.Errorf("Ensure: %v; want ErrNoParent, naming bond0.40 and its lower device bond0", err)
	}
	k.fail["LinkByName bond0"] = syscall.EPERM
	if _, err := (Host{k: k}).Ensure(vlanWant()); !errors.Is(err, syscall.EPERM) || errors.Is(err, ErrNoParent) || !strings.Contains(err.Error(), "bond0") {
		t.Errorf("Ensure with bond0 unreadable: %v; want that error, naming bond0, and not ErrNoParent", err)
	}
	if names := slices.Sorted(maps.Keys(k.links)); !slices.Equal(names, []string{"eth0"}) {
		t.Errorf("links: %v, want [eth0]", names)
	}
}

// TestEnsureLeavesTheHostsRoutesOfNoLink: a route of the host's to the
// node's range that names no single link (a blackhole route a BGP
// speaker announces the range from, a multipath route over two uplinks)
// has link index 0, which routeFree took for the shim's while the shim
// did not exist: the shim's route replaced it. It is left, and named, as
// one through a link is.
func TestEnsureLeavesTheHostsRoutesOfNoLink(t *testing.T) {
	_, dst, _ := net.ParseCIDR("10.40.0.0/26")
	for _, tc := range []struct {
		name  string
		route netlink.Route
		want  string
	}{
		{"blackhole", netlink.Route{Dst: dst, Type: syscall.RTN_BLACKHOLE}, "a blackhole route"},
		{"multipath", netlink.Route{Dst: dst, MultiPath: []*netlink.NexthopInfo{{LinkIndex: 1, Gw: net.ParseIP("192.0.2.1")}, {LinkIndex: 1, Gw: net.ParseIP("192.0.2.2")}}}, "a multipath route"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := vlanHost()
			k.routes = []netlink.Route{tc.route}
			repairs, err := Host{k: k}.Ensure(vlanWant())
			if err == nil || !strings.Contains(err.Error(), "route 10.40.0.0/26") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Ensure: %v, %v; want an error naming route 10.40.0.0/26 and %s", repairs, err, tc.want)
			}
			if len(k.routes) != 1 || k.routes[0].LinkIndex != 0 {
				t.Errorf("routes after a refused Ensure: %v, want the host's %s only", k.routes, tc.name)
			}
		})
	}
}

// TestEnsureShimNameTakenWhileTheParentIsMissing: a link of the shim's
// name, while the VLAN parent is still to be made, was not looked at:
// Ensure made the parent, then failed making the shim ("file exists").
// Someone else's link of that name is now refused before anything is
// made, as it is once the parent exists; the network's own shim, marked
// and on another parent, is replaced in the same Ensure.
func TestEnsureShimNameTakenWhileTheParentIsMissing(t *testing.T) {
	w := vlanWant()
	eth1 := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "eth1", Flags: net.FlagUp}}
	t.Run("someone's link", func(t *testing.T) {
		k := newFakeKernel(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "bond0", Flags: net.FlagUp}},
			&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: w.ShimLink}})
		repairs, err := Host{k: k}.Ensure(w)
		if !errors.Is(err, ErrForeignLink) || !strings.Contains(err.Error(), w.ShimLink) {
			t.Errorf("Ensure: %v, %v; want an error naming %s, wrapping ErrForeignLink", repairs, err, w.ShimLink)
		}
		if names := slices.Sorted(maps.Keys(k.links)); !slices.Equal(names, []string{"bond0", w.ShimLink}) {
			t.Errorf("links after a refused Ensure: %v, want [bond0 %s]", names, w.ShimLink)
		}
	})
	t.Run("the network's shim on another parent", func(t *testing.T) {
		k := newFakeKernel(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "bond0", Flags: net.FlagUp}}, eth1,
			&netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: w.ShimLink, ParentIndex: 2, Alias: ShimAlias(w.Network)}, Mode: netlink.MACVLAN_MODE_BRIDGE})
		h := Host{k: k}
		got, err := h.Ensure(w)
		if err != nil {
			t.Fatal(err)
		}
		want := []Repair{ParentCreate, ParentUp, ParentPromisc, ShimReplace, ShimCreate, ShimAddress, ShimUp, ShimRoute}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Ensure (-want +got):\n%s", diff)
		}
		if p := k.links[w.ShimLink].Attrs().ParentIndex; p != k.links[w.Parent].Attrs().Index {
			t.Errorf("shim on link %d, want on %s", p, w.Parent)
		}
		if again, err := h.Ensure(w); err != nil || len(again) != 0 {
			t.Errorf("Ensure again: %v, %v; want nothing to do", again, err)
		}
	})
}

// TestEnsureRefusesAParentOfTheOtherKind: the kernel gives a device's
// frames to its macvlan links or to its ipvlan links, not both: a
// macvlan shim on a parent that carries an ipvlan (or an ipvlan shim on
// one carrying a macvlan) is EBUSY. Ensure made the parent promiscuous,
// then failed with "device or resource busy", naming neither the parent
// nor the link in the way. A link of the other kind that this host sees
// is now named, and nothing changes; one it cannot see (a container's
// endpoint, in the container's namespace) is named as the likely cause
// of the kernel's EBUSY.
func TestEnsureRefusesAParentOfTheOtherKind(t *testing.T) {
	for _, tc := range []struct {
		name   string
		driver string
		other  netlink.Link
		want   string
	}{
		{"macvlan network, ipvlan on the parent", "", &netlink.IPVlan{LinkAttrs: netlink.LinkAttrs{Name: "ipv0", ParentIndex: 1}, Mode: netlink.IPVLAN_MODE_L2}, `ipvlan "ipv0"`},
		{"ipvlan network, macvlan on the parent", "ipvlan", &netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: "mv0", ParentIndex: 1}, Mode: netlink.MACVLAN_MODE_BRIDGE}, `macvlan "mv0"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := newFakeKernel(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "eth1", Flags: net.FlagUp}}, tc.other)
			before := *clone(k.links["eth1"]).Attrs()
			repairs, err := Host{k: k}.Ensure(poolOn("eth1", tc.driver))
			if err == nil || !strings.Contains(err.Error(), "parent eth1") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Ensure: %v, %v; want an error naming parent eth1 and %s", repairs, err, tc.want)
			}
			if diff := cmp.Diff(before, *k.links["eth1"].Attrs()); diff != "" {
				t.Errorf("eth1 changed (-before +after):\n%s", diff)
			}
		})
	}
	t.Run("unseen", func(t *testing.T) {
		k := newFakeKernel(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "eth1", Flags: net.FlagUp, Promisc: 1}})
		w := poolOn("eth1", "")
		k.fail["LinkAdd "+w.ShimLink] = syscall.EBUSY
		_, err := Host{k: k}.Ensure(w)
		if !errors.Is(err, syscall.EBUSY) || !strings.Contains(err.Error(), "parent eth1") || !strings.Contains(err.Error(), "ipvlan") {
			t.Errorf("Ensure: %v; want EBUSY, naming parent eth1 and what takes its frames", err)
		}
	})
}

// TestRemoveParentLeavesAnAddressedParent: a VLAN parent underlay made
// that the host has since been given an address on (the operator's own
// address on VLAN 40) was deleted with its network, taking the host's
// address, and its routes, along. It is left, naming the address, as one
// carrying other links is; a link-local IPv6 address, which the kernel
// gives every link, is no use.
func TestRemoveParentLeavesAnAddressedParent(t *testing.T) {
	addr := func(s string) netlink.Addr {
		p := netip.MustParsePrefix(s)
		return netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
	}
	for _, tc := range []struct {
		name  string
		addrs []netlink.Addr
		inUse string
	}{
		{"IPv4 address", []netlink.Addr{addr("10.40.0.5/24"), addr("fe80::1/64")}, "10.40.0.5/24"},
		{"IPv6 address", []netlink.Addr{addr("fe80::1/64"), addr("fd00:40::5/64")}, "fd00:40::5/64"},
		{"link-local only", []netlink.Addr{addr("fe80::1/64")}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := newFakeKernel(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "bond0", Flags: net.FlagUp}},
				&netlink.Vlan{LinkAttrs: netlink.LinkAttrs{Name: "bond0.40", ParentIndex: 1, Alias: OwnerAlias("pool")}, VlanId: 40})
			k.addrs["bond0.40"] = tc.addrs
			removed, err := removeParent(k, "bond0.40", "pool", "", "")
			if tc.inUse == "" {
				if !removed || err != nil {
					t.Errorf("removeParent: %t, %v; want bond0.40 removed", removed, err)
				}
				return
			}
			if removed || !errors.Is(err, ErrParentInUse) || !strings.Contains(err.Error(), "bond0.40") || !strings.Contains(err.Error(), tc.inUse) {
				t.Errorf("removeParent: %t, %v; want bond0.40 left, with an error wrapping ErrParentInUse naming it and %s", removed, err, tc.inUse)
			}
			if _, ok := k.links["bond0.40"]; !ok {
				t.Error("bond0.40 deleted")
			}
		})
	}
}

// interruptingKernel is a fakeKernel whose dumps (LinkList, AddrList,
// RouteList) the kernel interrupts the first n times each, as netlink
// reports a dump a concurrent change made inconsistent: the partial
// result and ErrDumpInterrupted.
type interruptingKernel struct {
	*fakeKernel
	n     int
	calls map[string]int
}

func (k *interruptingKernel) interrupted(call string) bool {
	k.calls[call]++
	return k.calls[call] <= k.n
}

func (k *interruptingKernel) LinkList() ([]netlink.Link, error) {
	links, err := k.fakeKernel.LinkList()
	if err == nil && k.interrupted("LinkList") {
		return links[:len(links)/2], netlink.ErrDumpInterrupted
	}
	return links, err
}

func (k *interruptingKernel) AddrList(l netlink.Link, family int) ([]netlink.Addr, error) {
	addrs, err := k.fakeKernel.AddrList(l, family)
	if err == nil && k.interrupted("AddrList") {
		return nil, netlink.ErrDumpInterrupted
	}
	return addrs, err
}

func (k *interruptingKernel) RouteList(l netlink.Link, family int) ([]netlink.Route, error) {
	routes, err := k.fakeKernel.RouteList(l, family)
	if err == nil && k.interrupted("RouteList") {
		return nil, netlink.ErrDumpInterrupted
	}
	return routes, err
}

// TestEnsureRetriesInterruptedDumps: netlink reports a listing of links,
// addresses or routes that a concurrent change interrupted (Docker
// making and moving containers' links all the time) as
// ErrDumpInterrupted, with a partial result. Ensure failed on it, and
// the network's state on the node flapped to error until the next sync;
// Marked, which network rm and orphan removal read, failed the same way.
// Such a listing is made again.
func TestEnsureRetriesInterruptedDumps(t *testing.T) {
	k := &interruptingKernel{fakeKernel: vlanHost(), n: 2, calls: map[string]int{}}
	h, w := Host{k: k}, dualStackWant()
	if _, err := h.Ensure(w); err != nil {
		t.Fatalf("Ensure with dumps interrupted twice each: %v", err)
	}
	k.calls = map[string]int{}
	if got, err := h.Ensure(w); err != nil || len(got) != 0 {
		t.Errorf("Ensure again: %v, %v; want nothing to do", got, err)
	}
	k.calls = map[string]int{}
	marks, err := h.Marked()
	if err != nil || len(marks["pool"].Shims) != 1 || len(marks["pool"].Parents) != 1 {
		t.Errorf("Marked: %v, %v; want pool's shim and parent", marks, err)
	}
	// A dump interrupted every time is that error, not a partial result.
	k.n, k.calls = 1000, map[string]int{}
	if _, err := h.Marked(); !errors.Is(err, netlink.ErrDumpInterrupted) {
		t.Errorf("Marked, its dump always interrupted: %v, want ErrDumpInterrupted", err)
	}
}

// TestEnsureLeavesTheHostsAddresses: a shim address the host already has
// on another link (its own address on the LAN, where the node's range
// was carved from addresses hosts use) was given to the shim as well:
// two links of the host then answer ARP (neighbour discovery) for it,
// each with its own MAC address, and the host's own address becomes
// unreliable on its LAN. Such an address is refused, naming it and the
// link that has it, and nothing changes.
func TestEnsureLeavesTheHostsAddresses(t *testing.T) {
	addr := func(s string) netlink.Addr {
		p := netip.MustParsePrefix(s)
		return netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
	}
	for _, tc := range []struct {
		name string
		addr netlink.Addr
		want string
	}{
		{"IPv4", addr("10.40.0.2/24"), `shim address 10.40.0.2 is the host's already, on "bond0"`},
		{"IPv6", addr("fd00:40::1:0:0:1/64"), `shim IPv6 address fd00:40::1:0:0:1 is the host's already, on "bond0"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := vlanHost()
			k.addrs["bond0"] = []netlink.Addr{tc.addr}
			repairs, err := Host{k: k}.Ensure(dualStackWant())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Ensure: %v, %v; want an error saying %s", repairs, err, tc.want)
			}
			if names := slices.Sorted(maps.Keys(k.links)); !slices.Equal(names, []string{"bond0"}) {
				t.Errorf("links after a refused Ensure: %v, want [bond0]", names)
			}
		})
	}
	// The shim's own address, there already, is no obstacle.
	k := vlanHost()
	h, w := Host{k: k}, dualStackWant()
	if _, err := h.Ensure(w); err != nil {
		t.Fatal(err)
	}
	k.addrs[w.ShimLink] = slices.DeleteFunc(k.addrs[w.ShimLink], func(a netlink.Addr) bool { return a.IP.To4() == nil })
	if got, err := h.Ensure(w); err != nil || !slices.Equal(got, []Repair{ShimAddress6, ShimRoute6}) {
		t.Errorf("Ensure with the shim's IPv6 address gone: %v, %v; want [%s %s]", got, err, ShimAddress6, ShimRoute6)
	}
}

// TestEnsureErrorNamesTheAddress: an address or route the kernel refuses
// on the shim is named in the error: ipvlan, for one, refuses an address
// another link of its parent holds (a container's: EADDRINUSE), and the
// error said only "add shim address on shim …: address already in use".
func TestEnsureErrorNamesTheAddress(t *testing.T) {
	w := dualStackWant()
	for _, tc := range []struct{ call, want string }{
		{"AddrAdd", "add shim address (10.40.0.2)"},
		{"AddrAdd6", "add shim IPv6 address (fd00:40::1:0:0:1)"},
	} {
		t.Run(tc.call, func(t *testing.T) {
			k := vlanHost()
			k.fail[tc.call+" "+w.ShimLink] = syscall.EADDRINUSE
			if _, err := (Host{k: k}).Ensure(w); !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), w.ShimLink) {
				t.Errorf("Ensure: %v; want EADDRINUSE, saying %s on %s", err, tc.want, w.ShimLink)
			}
		})
	}
}

// TestEnsureDeletesTheOldRangesRoute: when the node's range moves (its
// lease renewed with another range, or the spec's range edited), the
// shim's route to the old range goes with its old address: the host's
// traffic to the old range, maybe another node's now, would leave through
// the shim. Before, Ensure deleted the address and left the route. Only
// routes underlay makes on the shim go: an operator's route on the shim
// of another protocol, one on another link, and the kernel's stay.
func TestEnsureDeletesTheOldRangesRoute(t *testing.T) {
	k := vlanHost()
	h, w := Host{k: k}, vlanWant()
	if _, err := h.Ensure(w); err != nil {
		t.Fatal(err)
	}
	shim := k.links[w.ShimLink]
	ix := shim.Attrs().Index
	ipnet := func(s string) *net.IPNet {
		_, n, err := net.ParseCIDR(s)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	operators := netlink.Route{LinkIndex: ix, Dst: ipnet("10.99.0.0/24"), Scope: netlink.SCOPE_LINK, Protocol: syscall.RTPROT_STATIC, Table: syscall.RT_TABLE_MAIN, Type: syscall.RTN_UNICAST}
	kernels := netlink.Route{LinkIndex: ix, Dst: ipnet("10.98.0.0/24"), Scope: netlink.SCOPE_LINK, Protocol: syscall.RTPROT_KERNEL, Table: syscall.RT_TABLE_MAIN, Type: syscall.RTN_UNICAST}
	otherLink := netlink.Route{LinkIndex: k.links["bond0"].Attrs().Index, Dst: ipnet("10.97.0.0/24"), Scope: netlink.SCOPE_LINK, Protocol: syscall.RTPROT_BOOT, Table: syscall.RT_TABLE_MAIN, Type: syscall.RTN_UNICAST}
	// An operator's plain `ip route add 10.96.0.0/24 dev SHIM`: of
	// underlay's kind in every field, but outside the network's subnet.
	plain := netlink.Route{LinkIndex: ix, Dst: ipnet("10.96.0.0/24"), Scope: netlink.SCOPE_LINK, Protocol: syscall.RTPROT_BOOT, Table: syscall.RT_TABLE_MAIN, Type: syscall.RTN_UNICAST}
	k.routes = append(k.routes, operators, kernels, otherLink, plain)

	moved := w
	moved.Shim, moved.Route = netip.MustParseAddr("10.40.0.66"), netip.MustParsePrefix("10.40.0.64/26")
	got, err := h.Ensure(moved)
	if err != nil {
		t.Fatal(err)
	}
	if want := []Repair{ShimAddress, ShimRoute, ShimOldRoutes}; !slices.Equal(got, want) {
		t.Errorf("Ensure after the range moved: %v, want %v", got, want)
	}
	var have []string
	for _, rt := range k.routes {
		have = append(have, fmt.Sprintf("%s link %d proto %d", rt.Dst, rt.LinkIndex, rt.Protocol))
	}
	want := []string{
		fmt.Sprintf("10.40.0.64/26 link %d proto %d", ix, syscall.RTPROT_BOOT),
		fmt.Sprintf("10.96.0.0/24 link %d proto %d", ix, syscall.RTPROT_BOOT),
		fmt.Sprintf("10.97.0.0/24 link %d proto %d", otherLink.LinkIndex, syscall.RTPROT_BOOT),
		fmt.Sprintf("10.98.0.0/24 link %d proto %d", ix, syscall.RTPROT_KERNEL),
		fmt.Sprintf("10.99.0.0/24 link %d proto %d", ix, syscall.RTPROT_STATIC),
	}
	if slices.Sort(have); !slices.Equal(have, want) {
		t.Errorf("routes after the move:\n%s\nwant (the old range's gone, the others kept):\n%s", strings.Join(have, "\n"), strings.Join(want, "\n"))
	}
	if got, err := h.Ensure(moved); err != nil || len(got) != 0 {
		t.Errorf("second Ensure: %v, %v; want nothing to do", got, err)
	}
}

// TestEnsureLeavesAnotherOwnersShimsRoutes: another owner's shim of the
// network, used as it is (see Host.Owner), keeps its routes to other
// ranges: they are that agent's, as its addresses are.
func TestEnsureLeavesAnotherOwnersShimsRoutes(t *testing.T) {
	k := vlanHost()
	w := vlanWant()
	if _, err := (Host{k: k, Owner: "them"}).Ensure(w); err != nil {
		t.Fatal(err)
	}
	mine := w
	mine.Shim, mine.Route = netip.MustParseAddr("10.40.0.66"), netip.MustParsePrefix("10.40.0.64/26")
	got, err := Host{k: k, Owner: "us"}.Ensure(mine)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(got, ShimOldRoutes) {
		t.Errorf("Ensure on another owner's shim: %v, want no %q", got, ShimOldRoutes)
	}
	routes, _ := k.RouteList(k.links[w.ShimLink], netlink.FAMILY_V4)
	var have []string
	for _, rt := range routes {
		have = append(have, rt.Dst.String())
	}
	if slices.Sort(have); !slices.Equal(have, []string{"10.40.0.0/26", "10.40.0.64/26"}) {
		t.Errorf("routes on another owner's shim: %v, want its own and ours", have)
	}
}

// TestFakeKernelRouteDel: the fake deletes a route as the kernel does
// what netlink's RouteDel sends: the one matching what is given, none
// when the protocol, scope or link given differ (ESRCH).
func TestFakeKernelRouteDel(t *testing.T) {
	k := vlanHost()
	_, dst, _ := net.ParseCIDR("10.40.0.0/26")
	if err := k.RouteReplace(&netlink.Route{LinkIndex: 1, Dst: dst, Scope: netlink.SCOPE_LINK}); err != nil {
		t.Fatal(err)
	}
	for _, miss := range []netlink.Route{
		{LinkIndex: 1, Dst: dst, Scope: netlink.SCOPE_LINK, Protocol: syscall.RTPROT_STATIC},
		{LinkIndex: 1, Dst: dst},
		{LinkIndex: 2, Dst: dst, Scope: netlink.SCOPE_LINK},
		{LinkIndex: 1, Dst: dst, Scope: netlink.SCOPE_LINK, Table: 100},
	} {
		if err := k.RouteDel(&miss); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("RouteDel(%+v): %v, want ESRCH", miss, err)
		}
	}
	listed, _ := k.RouteList(k.links["bond0"], netlink.FAMILY_V4)
	if len(listed) != 1 {
		t.Fatalf("routes %+v, want one", listed)
	}
	if err := k.RouteDel(&listed[0]); err != nil || len(k.routes) != 0 {
		t.Errorf("RouteDel of the listed route: %v, routes left %+v; want it gone", err, k.routes)
	}
}

// TestEnsureDropsTheIPv6OfASubnetGone: a network whose spec dropped its
// IPv6 subnet leaves the shim without its IPv6 address and route; the
// link-local address and an operator's IPv6 route on the shim stay.
func TestEnsureDropsTheIPv6OfASubnetGone(t *testing.T) {
	k := vlanHost()
	h, w := Host{k: k}, dualStackWant()
	if _, err := h.Ensure(w); err != nil {
		t.Fatal(err)
	}
	shim := k.links[w.ShimLink]
	k.addrs[w.ShimLink] = append(k.addrs[w.ShimLink], netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP("fe80::1"), Mask: net.CIDRMask(64, 128)}})
	_, static, _ := net.ParseCIDR("fd99::/64")
	k.routes = append(k.routes, netlink.Route{LinkIndex: shim.Attrs().Index, Dst: static, Protocol: syscall.RTPROT_STATIC, Table: syscall.RT_TABLE_MAIN, Type: syscall.RTN_UNICAST, Priority: 1024})

	v4 := vlanWant()
	got, err := h.Ensure(v4)
	if err != nil || !slices.Equal(got, []Repair{ShimDrop6}) {
		t.Errorf("Ensure once the IPv6 subnet is gone: %v, %v; want [%s]", got, err, ShimDrop6)
	}
	var have []string
	addrs6, _ := k.AddrList(shim, netlink.FAMILY_V6)
	for _, a := range addrs6 {
		have = append(have, a.IP.String())
	}
	if !slices.Equal(have, []string{"fe80::1"}) {
		t.Errorf("shim IPv6 addresses: %v, want only the link-local one", have)
	}
	routes6, _ := k.RouteList(shim, netlink.FAMILY_V6)
	if len(routes6) != 1 || routes6[0].Dst.String() != "fd99::/64" {
		t.Errorf("shim IPv6 routes %+v, want only the operator's to fd99::/64", routes6)
	}
	if routes4, _ := k.RouteList(shim, netlink.FAMILY_V4); len(routes4) != 1 || routes4[0].Dst.String() != "10.40.0.0/26" {
		t.Errorf("shim IPv4 routes %+v, want the one to 10.40.0.0/26 kept", routes4)
	}
	if got, err := h.Ensure(v4); err != nil || len(got) != 0 {
		t.Errorf("second Ensure: %v, %v; want nothing to do", got, err)
	}
}

// TestConflicts: what Ensure would refuse the shim's address and route
// for is told whatever is to be done, for the doctor: nothing on a host
// Ensure set up; the shim's address on another link, and a blackhole
// route to its range, each naming what it is.
func TestConflicts(t *testing.T) {
	k := vlanHost()
	h, w := Host{k: k}, dualStackWant()
	if _, err := h.Ensure(w); err != nil {
		t.Fatal(err)
	}
	if addrs, routes := h.Conflicts(w); addrs != nil || routes != nil {
		t.Errorf("Conflicts on the host Ensure set up: %v, %v; want none", addrs, routes)
	}
	k.addrs["bond0"] = append(k.addrs["bond0"], netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP("10.40.0.2").To4(), Mask: net.CIDRMask(24, 32)}})
	_, dst, _ := net.ParseCIDR("fd00:40::1:0:0:0/80")
	k.routes = append(k.routes, netlink.Route{Dst: dst, Type: syscall.RTN_BLACKHOLE, Priority: 1})
	addrs, routes := h.Conflicts(w)
	if addrs == nil || !strings.Contains(addrs.Error(), `shim address 10.40.0.2 is the host's already, on "bond0"`) {
		t.Errorf("address conflict: %v; want one naming 10.40.0.2 on bond0", addrs)
	}
	if routes == nil || !strings.Contains(routes.Error(), "IPv6 route fd00:40:0:0:1::/80: the host routes it already, by a blackhole route") {
		t.Errorf("route conflict: %v; want one naming the blackhole route", routes)
	}
}
