package hostnet

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/underlay/underlay/internal/netspec"
)

func TestLeftovers(t *testing.T) {
	links := []Link{
		{Name: "lo", Type: "device"},
		{Name: "bond0", Type: "bond"},
		// A parent underlay made, and one made by hand (or by Docker).
		{Name: "bond0.40", Type: "vlan", Alias: OwnerAlias("pool")},
		{Name: "bond0.41", Type: "vlan"},
		{Name: "eth0.7", Type: "vlan", Alias: "uplink to rack 3"},
		// Shims: marked, marked ipvlan, and unmarked as older agents made them.
		{Name: netspec.ShimLinkName("pool"), Type: "macvlan", Alias: ShimAlias("pool")},
		{Name: netspec.ShimLinkName("l2"), Type: "ipvlan", Alias: ShimAlias("l2")},
		{Name: "ul-0a1b2c3d", Type: "macvlan"},
		// Not shims: another kind of link of the shims' form, a lab's
		// links, a macvlan somebody named and marked.
		{Name: "ul-deadbeef", Type: "veth"},
		{Name: "ul-lab-m", Type: "veth"},
		{Name: "ul-0a1b2c3d9", Type: "macvlan"},
		{Name: "ul-0a1b2c3e", Type: "macvlan", Alias: "mine"},
		{Name: "mv0", Type: "macvlan"},
	}
	var got []string
	for _, l := range Leftovers(links) {
		got = append(got, l.Name)
	}
	want := []string{netspec.ShimLinkName("pool"), netspec.ShimLinkName("l2"), "ul-0a1b2c3d", "bond0.40"}
	if !slices.Equal(got, want) {
		t.Errorf("Leftovers = %v, want %v", got, want)
	}
	if l := Leftovers(nil); len(l) != 0 {
		t.Errorf("Leftovers(nil) = %v", l)
	}
}

// TestShimOf: RemoveShim deletes a link of the shim's name only when it is
// marked as the network's shim: a macvlan or ipvlan marked for it. A link
// marked for another network, another kind of link, one with someone
// else's alias, or an unmarked one (an older agent's shim is marked by
// Ensure first) stays.
func TestShimOf(t *testing.T) {
	for _, c := range []struct {
		l    Link
		want bool
	}{
		{Link{Name: "ul-0a1b2c3d", Type: "macvlan", Alias: ShimAlias("web")}, true},
		{Link{Name: "ul-0a1b2c3d", Type: "ipvlan", Alias: ShimAlias("web")}, true},
		{Link{Name: "ul-0a1b2c3d", Type: "macvlan"}, false},
		{Link{Name: "ul-0a1b2c3d", Type: "macvlan", Alias: ShimAlias("db")}, false},
		{Link{Name: "ul-0a1b2c3d", Type: "macvlan", Alias: "uplink of rack 4"}, false},
		{Link{Name: "ul-0a1b2c3d", Type: "vlan", Alias: ShimAlias("web")}, false},
		{Link{Name: "ul-0a1b2c3d", Type: "dummy"}, false},
		{Link{Name: "myshim", Type: "macvlan"}, false},
	} {
		if got := ShimOf(c.l, "web"); got != c.want {
			t.Errorf("ShimOf(%+v, web) = %t, want %t", c.l, got, c.want)
		}
	}
}

// TestRemoveLeftoversLeavesParentInUse: the cleanup deletes the agent's
// shims and VLAN parents, but a parent that a link the agent did not make
// still hangs off (an operator's macvlan on bond0.40) is left, with an
// error naming both: the kernel would have deleted that link with it.
func TestRemoveLeftoversLeavesParentInUse(t *testing.T) {
	shim := netspec.ShimLinkName("pool")
	k := newFakeKernel(
		&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "bond0"}},
		&netlink.Vlan{LinkAttrs: netlink.LinkAttrs{Name: "bond0.40", ParentIndex: 1, Alias: OwnerAlias("pool")}, VlanId: 40},
		&netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: shim, ParentIndex: 2, Alias: ShimAlias("pool")}, Mode: netlink.MACVLAN_MODE_BRIDGE},
		&netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: "mv40", ParentIndex: 2}, Mode: netlink.MACVLAN_MODE_BRIDGE},
		&netlink.Vlan{LinkAttrs: netlink.LinkAttrs{Name: "bond0.41", ParentIndex: 1, Alias: OwnerAlias("db")}, VlanId: 41},
	)
	removed, err := removeLeftovers(k)
	if !slices.Equal(removed, []string{shim, "bond0.41"}) {
		t.Errorf("removed %v, want [%s bond0.41]", removed, shim)
	}
	if !errors.Is(err, ErrParentInUse) || !strings.Contains(err.Error(), "bond0.40") || !strings.Contains(err.Error(), "mv40") {
		t.Errorf("removeLeftovers: %v; want an error wrapping ErrParentInUse naming bond0.40 and mv40", err)
	}
	if names := slices.Sorted(maps.Keys(k.links)); !slices.Equal(names, []string{"bond0", "bond0.40", "mv40"}) {
		t.Errorf("links left: %v, want [bond0 bond0.40 mv40]", names)
	}
}

// TestMarkedOf: the links marked as made for a network are sorted out by
// network; unmarked links (an older agent's shim too), links marked
// otherwise, and marks on links of another kind are not.
func TestMarkedOf(t *testing.T) {
	got := MarkedOf([]Link{
		{Name: "eth0", Type: "device"},
		{Name: "ul-0000aaaa", Type: "macvlan", Alias: ShimAlias("web")},
		{Name: "renamed", Type: "ipvlan", Alias: ShimAlias("web")},
		{Name: "bond0.40", Type: "vlan", Alias: OwnerAlias("web")},
		{Name: "bond0.41", Type: "vlan", Alias: OwnerAlias("pool")},
		{Name: netspec.ShimLinkName("old"), Type: "macvlan"},
		{Name: "bond0.42", Type: "vlan", Alias: "an operator's"},
		{Name: "br0", Type: "bridge", Alias: OwnerAlias("web")},
		{Name: "dummy0", Type: "dummy", Alias: ShimAlias("web")},
	})
	want := map[string]Marks{
		"web":  {Shims: []string{"ul-0000aaaa", "renamed"}, Parents: []string{"bond0.40"}},
		"pool": {Parents: []string{"bond0.41"}},
	}
	if !maps.EqualFunc(got, want, func(a, b Marks) bool { return slices.Equal(a.Shims, b.Shims) && slices.Equal(a.Parents, b.Parents) }) {
		t.Errorf("marked %v, want %v", got, want)
	}
}
