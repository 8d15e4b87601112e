package hostnet_test

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/underlay/underlay/internal/hostnet"
	"github.com/underlay/underlay/internal/testenv"
)

// TestIntegrationEnsureAndRepair prepares a veth parent made for the test,
// then breaks the result in each way the agent must repair.
func TestIntegrationEnsureAndRepair(t *testing.T) {
	testenv.Require(t)
	parent := testenv.VethParent(t, "")
	w := hostnet.Want{
		Parent: parent, ShimLink: "uls" + testenv.ID(t)[:6], Network: "pool",
		Shim: netip.MustParseAddr("10.199.7.1"), Route: netip.MustParsePrefix("10.199.7.0/28"),
	}
	t.Cleanup(func() { hostnet.RemoveShim(w.ShimLink, w.Network) })
	var h hostnet.Host

	ensureOf := func(w hostnet.Want, wantRepairs int) {
		t.Helper()
		if got := ensureAll(t, h, w); len(got) != wantRepairs {
			t.Fatalf("repairs %v, want %d of them", got, wantRepairs)
		}
	}
	ensure := func(wantRepairs int) { t.Helper(); ensureOf(w, wantRepairs) }
	ensure(5) // the veth parent is up already
	ensure(0) // idempotent
	// Marked, so that removing underlay removes it (agent cleanup).
	if l, err := netlink.LinkByName(w.ShimLink); err != nil {
		t.Fatal(err)
	} else if l.Attrs().Alias != hostnet.ShimAlias(w.Network) {
		t.Errorf("shim %s: alias %q, want %q", w.ShimLink, l.Attrs().Alias, hostnet.ShimAlias(w.Network))
	}

	shim, _ := netlink.LinkByName(w.ShimLink)
	netlink.LinkSetDown(shim)
	ensure(2) // up, and the route the kernel dropped

	netlink.LinkDel(shim)
	ensure(4)

	// A veth parent cannot filter unicast addresses, so the kernel keeps it
	// promiscuous for as long as the shim exists; switching promiscuous
	// mode off only shows once the shim is gone too.
	shim, _ = netlink.LinkByName(w.ShimLink)
	netlink.LinkDel(shim)
	p, _ := netlink.LinkByName(parent)
	netlink.SetPromiscOff(p)
	ensure(5)

	// Another network's shim of that name (or anyone's link) stays.
	if err := hostnet.RemoveShim(w.ShimLink, "other"); !errors.Is(err, hostnet.ErrForeignLink) {
		t.Errorf("removing %s as network other's shim: %v, want it left alone", w.ShimLink, err)
	}
	if _, err := netlink.LinkByName(w.ShimLink); err != nil {
		t.Errorf("network %s's shim after a removal as another's: %v", w.Network, err)
	}
	if err := hostnet.RemoveShim(w.ShimLink, w.Network); err != nil {
		t.Fatal(err)
	}
	if err := hostnet.RemoveShim(w.ShimLink, w.Network); err != nil {
		t.Errorf("removing an absent shim: %v", err)
	}
	missing := w
	missing.Parent = "nosuch0"
	if _, err := h.Ensure(missing); !errors.Is(err, hostnet.ErrNoParent) {
		t.Errorf("Ensure with a missing parent: %v, want ErrNoParent", err)
	}

	// A parent that is itself a macvlan: the kernel puts the shim on the
	// parent's lower device, and the shim must be found in place there,
	// not replaced at every sync.
	mv := &netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: "ulm" + testenv.ID(t)[:6], ParentIndex: p.Attrs().Index}, Mode: netlink.MACVLAN_MODE_BRIDGE}
	if err := netlink.LinkAdd(mv); err != nil {
		t.Fatalf("macvlan parent: %v", err)
	}
	t.Cleanup(func() { netlink.LinkDel(mv) })
	onMacvlan := w
	onMacvlan.Parent, onMacvlan.ShimLink, onMacvlan.Network = mv.Name, "ult"+testenv.ID(t)[:6], "pool2"
	t.Cleanup(func() { hostnet.RemoveShim(onMacvlan.ShimLink, onMacvlan.Network) })
	ensureOf(onMacvlan, 6) // the macvlan parent: up, promiscuous, and the shim
	ensureOf(onMacvlan, 0)
}

// TestIntegrationEnsureDualStack: on a network with an IPv6 subnet the
// kernel's shim gets its IPv6 address, usable at once, and the route to
// the node's IPv6 range; the kernel flushes both when the shim goes down,
// and Ensure puts them back.
func TestIntegrationEnsureDualStack(t *testing.T) {
	testenv.Require(t)
	parent := testenv.VethParent(t, "")
	w := hostnet.Want{
		Parent: parent, ShimLink: "ul6" + testenv.ID(t)[:6], Network: "pool6",
		Shim: netip.MustParseAddr("10.199.8.1"), Route: netip.MustParsePrefix("10.199.8.0/28"),
		Shim6: netip.MustParseAddr("fd00:199:8:0:1:ffff:ffff:ffff"), Route6: netip.MustParsePrefix("fd00:199:8:0:1::/80"),
	}
	t.Cleanup(func() { hostnet.RemoveShim(w.ShimLink, w.Network) })
	var h hostnet.Host
	ensure := func(want []hostnet.Repair) {
		t.Helper()
		if got := ensureAll(t, h, w); !slices.Equal(got, want) {
			t.Fatalf("repairs %v, want %v", got, want)
		}
	}
	ensure([]hostnet.Repair{hostnet.ParentPromisc, hostnet.ShimCreate, hostnet.ShimAddress, hostnet.ShimAddress6, hostnet.ShimUp, hostnet.ShimRoute, hostnet.ShimRoute6})
	ensure(nil)

	shim, err := netlink.LinkByName(w.ShimLink)
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := netlink.AddrList(shim, netlink.FAMILY_V6)
	if err != nil {
		t.Fatal(err)
	}
	var global []string
	for _, a := range addrs {
		if !a.IP.IsLinkLocalUnicast() {
			global = append(global, a.IPNet.String())
			if a.Flags&(syscall.IFA_F_TENTATIVE|syscall.IFA_F_DADFAILED) != 0 {
				t.Errorf("shim address %s flags %#x: tentative or failed, so not usable as a source", a.IPNet, a.Flags)
			}
		}
	}
	if !slices.Equal(global, []string{"fd00:199:8:0:1:ffff:ffff:ffff/128"}) {
		t.Errorf("shim global IPv6 addresses %v, want [fd00:199:8:0:1:ffff:ffff:ffff/128]", global)
	}
	// The kernel picks the shim, and its address as the source, for a
	// container's address in the node's range.
	routes, err := netlink.RouteGet(net.ParseIP("fd00:199:8:0:1::5"))
	if err != nil {
		t.Fatal(err)
	}
	if len(routes) != 1 || routes[0].LinkIndex != shim.Attrs().Index || !routes[0].Src.Equal(net.ParseIP("fd00:199:8:0:1:ffff:ffff:ffff")) {
		t.Errorf("route to fd00:199:8:0:1::5: %+v, want through %s (index %d) from its address", routes, w.ShimLink, shim.Attrs().Index)
	}

	// Down, the kernel drops the shim's IPv6 address and routes.
	if err := netlink.LinkSetDown(shim); err != nil {
		t.Fatal(err)
	}
	o, err := h.Observe(w)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := hostnet.Repairs(w, o)
	if !slices.Contains(r, hostnet.ShimRoute6) || !slices.Contains(r, hostnet.ShimUp) {
		t.Errorf("repairs of a downed dual-stack shim %v, want it up and its IPv6 route back", r)
	}
	ensure(r)
}

// ensureAll runs h.Ensure(w), fails t unless the host then needs nothing
// more, and returns the repairs made.
func ensureAll(t *testing.T, h hostnet.Host, w hostnet.Want) []hostnet.Repair {
	t.Helper()
	got, err := h.Ensure(w)
	if err != nil {
		t.Fatal(err)
	}
	o, err := h.Observe(w)
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := hostnet.Repairs(w, o); len(r) != 0 {
		t.Fatalf("after Ensure the host still needs %v (observed %+v)", r, o)
	}
	return got
}
