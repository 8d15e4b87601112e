package hostnet

import (
	"errors"
	"maps"
	"net"
	"net/netip"
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
	rep, err := removeLeftovers(k, Cleanup{})
	removed := rep.Removed
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

// TestCleanupLeavesAnotherOwnersLinks: `agent cleanup` (the Debian
// package's prerm) removed every underlay-marked link, so removing one of
// two underlays in a network namespace (two clusters' agents) tore down
// the other's shims and VLAN parents. A cleanup for an owner removes the
// links marked as its own, those naming no owner (older agents') and
// older agents' unmarked shims, and lists the others it leaves; a
// parent of its own that another's shim hangs off is left, named. With
// no owner known, only links naming none go; All removes every one.
func TestCleanupLeavesAnotherOwnersLinks(t *testing.T) {
	web, db, api := netspec.ShimLinkName("web"), netspec.ShimLinkName("db"), netspec.ShimLinkName("api")
	links := func() *fakeKernel {
		return newFakeKernel(
			&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "eth1"}},
			&netlink.Vlan{LinkAttrs: netlink.LinkAttrs{Name: "eth1.40", ParentIndex: 1, Alias: "underlay network web by a1"}, VlanId: 40},
			&netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: web, ParentIndex: 2, Alias: "underlay shim web by a1"}, Mode: netlink.MACVLAN_MODE_BRIDGE},
			&netlink.Vlan{LinkAttrs: netlink.LinkAttrs{Name: "eth1.50", ParentIndex: 1, Alias: "underlay network db by b2"}, VlanId: 50},
			&netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: db, ParentIndex: 4, Alias: "underlay shim db by b2"}, Mode: netlink.MACVLAN_MODE_BRIDGE},
			&netlink.Vlan{LinkAttrs: netlink.LinkAttrs{Name: "eth1.60", ParentIndex: 1, Alias: OwnerAlias("old")}, VlanId: 60},
			&netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: "ul-0a1b2c3d", ParentIndex: 6}, Mode: netlink.MACVLAN_MODE_BRIDGE},
			&netlink.Vlan{LinkAttrs: netlink.LinkAttrs{Name: "eth1.70", ParentIndex: 1, Alias: "underlay network api by a1"}, VlanId: 70},
			&netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: api, ParentIndex: 8, Alias: "underlay shim api by b2"}, Mode: netlink.MACVLAN_MODE_BRIDGE},
		)
	}
	for _, c := range []struct {
		name          string
		c             Cleanup
		removed, left []string
		inUse         bool // eth1.70 left, in use by b2's shim
	}{
		{"owner a1", Cleanup{Owner: "a1"}, []string{web, "ul-0a1b2c3d", "eth1.40", "eth1.60"}, []string{db, api, "eth1.50"}, true},
		{"no owner known", Cleanup{}, []string{"ul-0a1b2c3d", "eth1.60"}, []string{web, db, api, "eth1.40", "eth1.50", "eth1.70"}, false},
		{"all", Cleanup{Owner: "a1", All: true}, []string{web, db, "ul-0a1b2c3d", api, "eth1.40", "eth1.50", "eth1.60", "eth1.70"}, nil, false},
	} {
		k := links()
		rep, err := removeLeftovers(k, c.c)
		removed, left := rep.Removed, rep.Left
		var leftNames []string
		for _, l := range left {
			leftNames = append(leftNames, l.Name)
		}
		if !slices.Equal(removed, c.removed) || !slices.Equal(leftNames, c.left) {
			t.Errorf("%s: removed %v, left %v; want removed %v, left %v", c.name, removed, leftNames, c.removed, c.left)
		}
		if inUse := errors.Is(err, ErrParentInUse) && strings.Contains(err.Error(), "eth1.70") && strings.Contains(err.Error(), api); inUse != c.inUse || !inUse && err != nil {
			t.Errorf("%s: %v; want an error naming eth1.70 in use by %s: %t", c.name, err, api, c.inUse)
		}
		for _, l := range left {
			if o := MarkOwner(l.Alias); o == "" || o == c.c.Owner {
				t.Errorf("%s: left %s of owner %q", c.name, l.Name, o)
			}
		}
	}
	if o := MarkOwner(OwnerAlias("web")); o != "" {
		t.Errorf("MarkOwner of a mark naming none: %q", o)
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

// TestMarksNameTheirOwner: a second underlay's agent in the same network
// namespace (another cluster's, another Consul) took this one's marked
// links for orphans of its own (no spec of theirs) and tore them down.
// The links an agent makes now name its owner (Host.Owner) in their
// marks: another owner's are not listed as its own (Marked), nor
// removed (RemoveShim, RemoveParent), whatever their network; a live
// network's shim marked by another owner is still used as the
// network's. Marks naming no owner (older agents', or a Host of no
// Owner) are every agent's, as before.
func TestMarksNameTheirOwner(t *testing.T) {
	k := newFakeKernel(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "eth1", Flags: net.FlagUp}})
	mine, theirs, old := Host{Owner: "a1", k: k}, Host{Owner: "b2", k: k}, Host{k: k}
	web := Want{Parent: "eth1.40", Network: "web", ShimLink: netspec.ShimLinkName("web"),
		Shim: netip.MustParseAddr("10.40.0.2"), Route: netip.MustParsePrefix("10.40.0.0/26")}
	if _, err := theirs.Ensure(web); err != nil {
		t.Fatal(err)
	}
	if a := k.links[web.ShimLink].Attrs().Alias; a != "underlay shim web by b2" {
		t.Errorf("shim made by owner b2: alias %q, want %q", a, "underlay shim web by b2")
	}
	if a := k.links["eth1.40"].Attrs().Alias; a != "underlay network web by b2" {
		t.Errorf("VLAN parent made by owner b2: alias %q, want %q", a, "underlay network web by b2")
	}
	for _, h := range []Host{mine, old} {
		if marks, err := h.Marked(); err != nil || len(marks) != 0 {
			t.Errorf("owner %q's marked links: %v, %v; want none of b2's", h.Owner, marks, err)
		}
		if err := h.RemoveShim(web.ShimLink, "web"); !errors.Is(err, ErrForeignLink) {
			t.Errorf("owner %q removing b2's shim: %v, want ErrForeignLink", h.Owner, err)
		}
		if removed, err := h.RemoveParent("eth1.40", "web"); removed || err != nil {
			t.Errorf("owner %q removing b2's VLAN parent: %t, %v; want it left", h.Owner, removed, err)
		}
	}
	if repairs, err := mine.Ensure(web); err != nil || len(repairs) != 0 {
		t.Errorf("owner a1's Ensure of web on b2's shim: %v, %v; want it used as it is", repairs, err)
	}
	if marks, err := theirs.Marked(); err != nil || !slices.Equal(marks["web"].Shims, []string{web.ShimLink}) || !slices.Equal(marks["web"].Parents, []string{"eth1.40"}) {
		t.Errorf("owner b2's marked links: %v, %v; want web's shim and parent", marks, err)
	}
	if n, ok := Owned(k.links["eth1.40"].Attrs().Alias); !ok || n != "web" {
		t.Errorf("Owned of b2's parent: %q, %t; want web", n, ok)
	}

	// An older agent's marks name no owner: every agent's, as before.
	db := Want{Parent: "eth1.50", Network: "db", ShimLink: netspec.ShimLinkName("db"),
		Shim: netip.MustParseAddr("10.50.0.2"), Route: netip.MustParsePrefix("10.50.0.0/26")}
	if _, err := old.Ensure(db); err != nil {
		t.Fatal(err)
	}
	if marks, err := mine.Marked(); err != nil || len(marks) != 1 || len(marks["db"].Shims) != 1 || len(marks["db"].Parents) != 1 {
		t.Errorf("owner a1's marked links beside an older agent's: %v, %v; want db's shim and parent only", marks, err)
	}
	if err := mine.RemoveShim(db.ShimLink, "db"); err != nil {
		t.Errorf("owner a1 removing an older agent's shim: %v", err)
	}
	if removed, err := mine.RemoveParent("eth1.50", "db"); !removed || err != nil {
		t.Errorf("owner a1 removing an older agent's VLAN parent: %t, %v; want it removed", removed, err)
	}
	if err := theirs.RemoveShim(web.ShimLink, "web"); err != nil {
		t.Errorf("owner b2 removing its shim: %v", err)
	}
	if removed, err := theirs.RemoveParent("eth1.40", "web"); !removed || err != nil {
		t.Errorf("owner b2 removing its VLAN parent: %t, %v; want it removed", removed, err)
	}
}

// TestGarbledMarksAreNobodys: a mark whose owner is cut off ("underlay
// shim web by ", as a script marking links with an unset owner writes
// it) or whose network is no network's name ("underlay shim web by",
// network "web by") was read as a mark naming no owner, an older
// agent's, which is every agent's: each agent in the network namespace
// listed the link as an orphan of its own and removed it, as did `agent
// cleanup` of any owner. Underlay never made such a mark (older agents
// named a network, as netspec names them, and nothing more), so the link
// is someone else's and stays.
func TestGarbledMarksAreNobodys(t *testing.T) {
	for _, alias := range []string{"web by ", "web by", " web", "web by \t", ""} {
		shim, parent := "underlay shim "+alias, "underlay network "+alias
		k := newFakeKernel(
			&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "eth1"}},
			&netlink.Vlan{LinkAttrs: netlink.LinkAttrs{Name: "eth1.40", ParentIndex: 1, Alias: parent}, VlanId: 40},
			&netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: "ul-0a1b2c3d", ParentIndex: 2, Alias: shim}, Mode: netlink.MACVLAN_MODE_BRIDGE},
		)
		h := Host{Owner: "a1", k: k}
		marks, err := h.Marked()
		if err != nil || len(marks) != 0 {
			t.Errorf("%q, %q: owner a1's marked links: %v, %v; want none", shim, parent, marks, err)
		}
		for network := range marks {
			if err := h.RemoveShim("ul-0a1b2c3d", network); err == nil {
				t.Errorf("%q: owner a1 removed it as network %q's shim", shim, network)
			}
			if removed, _ := h.RemoveParent("eth1.40", network); removed {
				t.Errorf("%q: owner a1 removed it as network %q's VLAN parent", parent, network)
			}
		}
		if rep, err := removeLeftovers(k, Cleanup{Owner: "a1"}); len(rep.Removed) != 0 {
			t.Errorf("%q, %q: owner a1's cleanup removed %v, %v; want nothing", shim, parent, rep.Removed, err)
		}
		if names := slices.Sorted(maps.Keys(k.links)); !slices.Equal(names, []string{"eth1", "eth1.40", "ul-0a1b2c3d"}) {
			t.Errorf("%q, %q: links left %v, want all three", shim, parent, names)
		}
	}
}

// TestAnotherOwnersShimKeepsItsAddresses: a live network's shim marked
// by another owner (another cluster's agent in this network namespace,
// with a network of the same name) is used as it is; but giving it this
// agent's address deleted every other address on it, the other agent's
// own among them, so that its host lost the way to its containers until
// its next sync deleted this agent's in turn. This agent's address is
// added beside the other owner's now; on a shim of its own, or naming
// no owner, an old address still goes (it may be a container's by now).
func TestAnotherOwnersShimKeepsItsAddresses(t *testing.T) {
	k := newFakeKernel(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "eth1", Flags: net.FlagUp}})
	theirs, mine := Host{Owner: "b2", k: k}, Host{Owner: "a1", k: k}
	web := func(shim, route, shim6, route6 string) Want {
		return Want{Parent: "eth1.40", Network: "web", ShimLink: netspec.ShimLinkName("web"),
			Shim: netip.MustParseAddr(shim), Route: netip.MustParsePrefix(route),
			Shim6: netip.MustParseAddr(shim6), Route6: netip.MustParsePrefix(route6)}
	}
	if _, err := theirs.Ensure(web("10.40.0.2", "10.40.0.0/26", "fd00:40::2", "fd00:40::/64")); err != nil {
		t.Fatal(err)
	}
	if _, err := mine.Ensure(web("10.40.0.66", "10.40.0.64/26", "fd00:41::2", "fd00:41::/64")); err != nil {
		t.Fatal(err)
	}
	addrs := func() []string {
		var out []string
		for _, a := range k.addrs[netspec.ShimLinkName("web")] {
			out = append(out, a.IP.String())
		}
		slices.Sort(out)
		return out
	}
	if got, want := addrs(), []string{"10.40.0.2", "10.40.0.66", "fd00:40::2", "fd00:41::2"}; !slices.Equal(got, want) {
		t.Errorf("b2's shim after a1's Ensure holds %v, want %v: b2's addresses kept", got, want)
	}
	// b2's own shim: an address it no longer wants goes.
	if _, err := theirs.Ensure(web("10.40.0.3", "10.40.0.0/26", "fd00:40::3", "fd00:40::/64")); err != nil {
		t.Fatal(err)
	}
	if got := addrs(); !slices.Contains(got, "10.40.0.3") || slices.Contains(got, "10.40.0.2") || slices.Contains(got, "fd00:40::2") {
		t.Errorf("b2's shim after b2's new address holds %v, want 10.40.0.3 and neither 10.40.0.2 nor fd00:40::2", got)
	}
}

// markingKernel is a fakeKernel on which, as the first LinkByName of
// name returns, the link is marked alias: another agent at work between
// a listing and what follows it.
type markingKernel struct {
	*fakeKernel
	name, alias string
	done        bool
}

func (k *markingKernel) LinkByName(name string) (netlink.Link, error) {
	if name == k.name && !k.done {
		k.done = true
		if l, ok := k.links[name]; ok {
			if err := k.LinkSetAlias(l, k.alias); err != nil {
				return nil, err
			}
		}
	}
	return k.fakeKernel.LinkByName(name)
}

// TestCleanupRereadsTheMark: `agent cleanup` decided from its listing of
// the links which to delete, then looked each up by name and deleted
// what it found, whatever it had become: an older agent's unmarked shim
// that another cluster's agent, upgraded and running, marked as its own
// meanwhile (Ensure adopts such shims) was deleted all the same. The mark
// is read again on the link about to be deleted: one that now names
// another owner is left, and listed.
func TestCleanupRereadsTheMark(t *testing.T) {
	shim := netspec.ShimLinkName("web")
	k := &markingKernel{fakeKernel: newFakeKernel(
		&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "eth1"}},
		&netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: shim, ParentIndex: 1}, Mode: netlink.MACVLAN_MODE_BRIDGE},
	), name: shim, alias: "underlay shim web by b2"}
	rep, err := removeLeftovers(k, Cleanup{Owner: "a1"})
	removed, left := rep.Removed, rep.Left
	if len(removed) != 0 || err != nil {
		t.Errorf("owner a1's cleanup removed %v, %v; want b2's newly marked %s left", removed, err, shim)
	}
	if len(left) != 1 || left[0].Name != shim || MarkOwner(left[0].Alias) != "b2" {
		t.Errorf("owner a1's cleanup left %+v; want %s, b2's", left, shim)
	}
	if _, ok := k.links[shim]; !ok {
		t.Errorf("%s, marked by b2 since the listing, was deleted", shim)
	}
}

// TestEnsureAdoptsOlderAgentsLinks: links agents made before marks named
// an owner (a VLAN parent marked "underlay network web", a shim marked
// "underlay shim web", or a shim unmarked and named ul-…) were every
// agent's for good: another cluster's agent in the network namespace
// took them for its own orphans and removed them. An agent with an owner
// adopts them, marking them with its owner, when they are what it would
// make for the network: the VLAN its parent's name says; a shim of the
// network's kind on that parent (unmarked: named as ShimLinkName names the
// network's, and holding the node's shim address). An unmarked VLAN
// parent (an operator's) and any link short of that are never adopted.
func TestEnsureAdoptsOlderAgentsLinks(t *testing.T) {
	shim := netspec.ShimLinkName("web")
	w := Want{Parent: "eth1.40", Network: "web", ShimLink: shim, Shim: netip.MustParseAddr("10.40.0.2"),
		Route: netip.MustParsePrefix("10.40.0.0/26"), Subnet: netip.MustParsePrefix("10.40.0.0/24")}
	const eth1, eth140 = 1, 2
	host := func(parentAlias, shimAlias string, shimParent int, addr string) *fakeKernel {
		k := newFakeKernel(
			&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "eth1", Flags: net.FlagUp}},
			&netlink.Vlan{LinkAttrs: netlink.LinkAttrs{Name: "eth1.40", ParentIndex: eth1, Alias: parentAlias, Flags: net.FlagUp, Promisc: 1}, VlanId: 40},
			&netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: shim, ParentIndex: shimParent, Alias: shimAlias, Flags: net.FlagUp}, Mode: netlink.MACVLAN_MODE_BRIDGE},
		)
		k.addrs[shim] = []netlink.Addr{{IPNet: &net.IPNet{IP: net.ParseIP(addr).To4(), Mask: net.CIDRMask(32, 32)}}}
		return k
	}
	for _, tc := range []struct {
		name                 string
		k                    *fakeKernel
		owner                string
		wantParent, wantShim string // aliases after Ensure
		err                  error
	}{
		{"marks naming no owner", host(OwnerAlias("web"), ShimAlias("web"), eth140, "10.40.0.2"), "a1",
			"underlay network web by a1", "underlay shim web by a1", nil},
		{"an unmarked shim named ul-…, holding the shim address", host(OwnerAlias("web"), "", eth140, "10.40.0.2"), "a1",
			"underlay network web by a1", "underlay shim web by a1", nil},
		{"no owner to adopt them for", host(OwnerAlias("web"), ShimAlias("web"), eth140, "10.40.0.2"), "",
			OwnerAlias("web"), ShimAlias("web"), nil},
		// Never an operator's link.
		{"an unmarked VLAN parent", host("", ShimAlias("web"), eth140, "10.40.0.2"), "a1",
			"", "underlay shim web by a1", nil},
		{"a VLAN parent marked for another network", host(OwnerAlias("db"), ShimAlias("web"), eth140, "10.40.0.2"), "a1",
			OwnerAlias("db"), "underlay shim web by a1", nil},
		{"a VLAN parent of someone's alias", host("uplink 40", ShimAlias("web"), eth140, "10.40.0.2"), "a1",
			"uplink 40", "underlay shim web by a1", nil},
		{"another owner's marks", host("underlay network web by b2", "underlay shim web by b2", eth140, "10.40.0.2"), "a1",
			"underlay network web by b2", "underlay shim web by b2", nil},
		{"an unmarked shim without the shim address", host(OwnerAlias("web"), "", eth140, "192.168.9.9"), "a1",
			OwnerAlias("web"), "", ErrForeignLink},
		{"an unmarked shim on another parent", host(OwnerAlias("web"), "", eth1, "10.40.0.2"), "a1",
			OwnerAlias("web"), "", ErrForeignLink},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Host{k: tc.k, Owner: tc.owner}.Ensure(w)
			if tc.err == nil && err != nil || !errors.Is(err, tc.err) {
				t.Errorf("Ensure: %v, want %v", err, tc.err)
			}
			if got := tc.k.links["eth1.40"].Attrs().Alias; got != tc.wantParent {
				t.Errorf("eth1.40's alias %q, want %q", got, tc.wantParent)
			}
			if got := tc.k.links[shim].Attrs().Alias; got != tc.wantShim {
				t.Errorf("%s's alias %q, want %q", shim, got, tc.wantShim)
			}
		})
	}
	// Adopted, they are a1's: another owner's cleanup leaves them.
	k := host(OwnerAlias("web"), ShimAlias("web"), eth140, "10.40.0.2")
	if _, err := (Host{k: k, Owner: "a1"}).Ensure(w); err != nil {
		t.Fatal(err)
	}
	rep, err := removeLeftovers(k, Cleanup{Owner: "b2"})
	if err != nil || len(rep.Removed) != 0 || len(rep.Left) != 2 {
		t.Errorf("owner b2's cleanup after a1 adopted them: %+v, %v; want both left as a1's", rep, err)
	}
}
