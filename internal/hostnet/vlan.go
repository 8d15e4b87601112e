package hostnet

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"

	"github.com/underlay/underlay/internal/netspec"
)

// OwnerAlias is the alias (ip link's "alias") of a VLAN parent underlay
// made for network: it removes only parents carrying it.
func OwnerAlias(network string) string { return "underlay network " + network }

// ownedPrefix starts every OwnerAlias.
const ownedPrefix = "underlay network "

func vlanParent(name string) (string, int, bool) { return netspec.VLANParent(name) }

// createVLAN makes the VLAN sub-interface name on its lower device, with
// the lower device's MTU, marked with alias (an OwnerAlias, naming its
// owner or not: see withOwner).
func createVLAN(k kernel, name, alias string) error {
	lowerName, vid, ok := vlanParent(name)
	if !ok {
		return fmt.Errorf("%s is not a VLAN sub-interface name", name)
	}
	lower, err := k.LinkByName(lowerName)
	if err != nil {
		return fmt.Errorf("lower device %s: %w", lowerName, err)
	}
	v := &netlink.Vlan{
		LinkAttrs: netlink.LinkAttrs{Name: name, ParentIndex: lower.Attrs().Index, MTU: lower.Attrs().MTU},
		VlanId:    vid,
	}
	if err := addMarked(k, v, alias); err != nil {
		if other := vlanNamed(k, lower.Attrs().Index, vid); other != "" && errors.Is(err, syscall.EEXIST) {
			return fmt.Errorf("create VLAN %d on %s as %q: %w: the device carries it already, as %q; give that as the network's parent", vid, lowerName, name, err, other)
		}
		return fmt.Errorf("create VLAN %d on %s: %w", vid, lowerName, err)
	}
	return nil
}

// vlanNamed is the name of the link that is VLAN vid on the link of index
// lower, "" when there is none: a device carries one link per VLAN, of
// any name (bond0.040 is bond0.40's VLAN, vlan40 may be too).
func vlanNamed(k kernel, lower, vid int) string {
	links, err := k.LinkList()
	if err != nil {
		return ""
	}
	for _, l := range links {
		if v, ok := l.(*netlink.Vlan); ok && v.ParentIndex == lower && v.NetNsID < 0 && v.VlanId == vid {
			return v.Name
		}
	}
	return ""
}

// addMarked adds link l and marks it with alias. A link it cannot mark is
// deleted again: unmarked, it could not be told from an operator's link,
// so no later sync would mark it and no removal would take it; the next
// sync makes it again.
func addMarked(k kernel, l netlink.Link, alias string) error {
	if err := k.LinkAdd(l); err != nil {
		return err
	}
	name := l.Attrs().Name
	made, err := k.LinkByName(name)
	if err == nil {
		err = k.LinkSetAlias(made, alias)
	}
	if err == nil {
		return nil
	}
	// l holds the new link's index (netlink reads it back), so this
	// deletes the link just made and nothing of the name made since.
	if derr := k.LinkDel(l); derr != nil {
		return fmt.Errorf("mark %s %q: %w; deleting it again failed too (%v), so it is left unmarked: remove it (ip link del %s)", name, alias, err, derr, name)
	}
	return fmt.Errorf("mark %s %q: %w (deleted it again; the next sync makes it anew)", name, alias, err)
}

// RemoveParent deletes a VLAN parent that underlay made for network, and
// nothing else: a parent made by hand (or by Docker) is left. One that
// other links hang off is left too, with an error wrapping
// ErrParentInUse. It reports whether it deleted one; an absent parent is
// no error. A parent whose mark names an owner is left (see
// Host.RemoveParent): another agent's in this network namespace.
func RemoveParent(parent, network string) (bool, error) {
	return Host{}.RemoveParent(parent, network)
}

// removeParent is RemoveParent of a parent marked as owner's, or naming
// no owner, or, when recorded is network, unmarked (see
// Host.recordedFor).
func removeParent(k kernel, parent, network, owner, recorded string) (bool, error) {
	if _, _, ok := vlanParent(parent); !ok {
		return false, nil
	}
	l, err := k.LinkByName(parent)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return false, nil
		}
		return false, err
	}
	alias := l.Attrs().Alias
	n, ok := Owned(alias)
	mine := ok && n == network && ownersMark(alias, owner) || alias == "" && recorded != "" && recorded == network
	if l.Type() != "vlan" || !mine {
		return false, nil
	}
	if err := parentInUse(k, l); err != nil {
		return false, err
	}
	if err := k.LinkDel(l); err != nil {
		return false, fmt.Errorf("delete VLAN parent %s: %w", parent, err)
	}
	return true, nil
}

// ErrParentInUse marks a VLAN parent underlay made that is left in place
// because something it did not make hangs off it.
var ErrParentInUse = errors.New("in use by links or addresses underlay did not make for the network")

// parentInUse returns an error wrapping ErrParentInUse, naming them, when
// links sit on parent, it is a port of a bridge or bond, or the host has
// an address on it: the kernel deletes a link's upper links, addresses
// and routes with it, and takes it out of its master, so deleting it
// would take an operator's macvlan, another network's VLAN, a bridge's
// port or the host's own address on the VLAN along. underlay puts no
// address on a parent; the IPv6 link-local one the kernel gives every
// link is no use. (Links in other network namespaces, such as
// containers' endpoints, are not seen here.)
func parentInUse(k kernel, parent netlink.Link) error {
	a := parent.Attrs()
	links, err := k.LinkList()
	if err != nil {
		return fmt.Errorf("list links on VLAN parent %s: %w", a.Name, err)
	}
	var users []string
	for _, l := range links {
		la := l.Attrs()
		if la.Index == a.Index {
			continue
		}
		// A ParentIndex of another namespace's (a veth whose peer is a
		// container's, NetNsID set) may equal the parent's by chance.
		if la.ParentIndex == a.Index && la.NetNsID < 0 || a.MasterIndex != 0 && la.Index == a.MasterIndex {
			users = append(users, fmt.Sprintf("%q (%s)", la.Name, l.Type()))
		}
	}
	addrs, err := k.AddrList(parent, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list the addresses of VLAN parent %s: %w", a.Name, err)
	}
	for _, ad := range addrs {
		if ip, ok := netip.AddrFromSlice(ad.IP); ok && !ip.Unmap().IsLinkLocalUnicast() {
			users = append(users, "address "+ad.IPNet.String())
		}
	}
	if len(users) == 0 {
		return nil
	}
	slices.Sort(users)
	return fmt.Errorf("VLAN parent %q, left in place: %w: %s; remove it by hand (ip link del %s) once they are gone", a.Name, ErrParentInUse, strings.Join(users, ", "), a.Name)
}

// Owned reports whether a link alias marks a parent underlay made, and for
// which network, whichever owner the mark names (see withOwner).
func Owned(alias string) (network string, ok bool) {
	network, _, ok = parseMark(alias, ownedPrefix)
	return network, ok
}

// shimOK reports whether link is a shim of w's kind.
func (w Want) shimOK(link netlink.Link) bool {
	if w.Driver == "ipvlan" {
		iv, ok := link.(*netlink.IPVlan)
		return ok && iv.Mode == ipvlanMode(w.IPvlanMode)
	}
	mv, ok := link.(*netlink.Macvlan)
	return ok && mv.Mode == netlink.MACVLAN_MODE_BRIDGE
}

// shim is w's shim link on parent index.
func (w Want) shim(parent int) netlink.Link {
	attrs := netlink.LinkAttrs{Name: w.ShimLink, ParentIndex: parent}
	if w.Driver == "ipvlan" {
		return &netlink.IPVlan{LinkAttrs: attrs, Mode: ipvlanMode(w.IPvlanMode)}
	}
	return &netlink.Macvlan{LinkAttrs: attrs, Mode: netlink.MACVLAN_MODE_BRIDGE}
}

func ipvlanMode(m string) netlink.IPVlanMode {
	if m == "l3" {
		return netlink.IPVLAN_MODE_L3
	}
	return netlink.IPVLAN_MODE_L2
}
