package hostnet_test

import (
	"errors"
	"net/netip"
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
		got, err := h.Ensure(w)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != wantRepairs {
			t.Fatalf("repairs %v, want %d of them", got, wantRepairs)
		}
		o, err := h.Observe(w)
		if err != nil {
			t.Fatal(err)
		}
		if r, _ := hostnet.Repairs(w, o); len(r) != 0 {
			t.Fatalf("after Ensure the host still needs %v (observed %+v)", r, o)
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
