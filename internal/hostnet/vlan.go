package hostnet

import (
	"errors"
	"fmt"
	"strings"

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
// the lower device's MTU, marked as network's.
func createVLAN(k kernel, name, network string) error {
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
	if err := addMarked(k, v, OwnerAlias(network)); err != nil {
		return fmt.Errorf("create VLAN %d on %s: %w", vid, lowerName, err)
	}
	return nil
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
// nothing else: a parent made by hand (or by Docker) is left. It reports
// whether it deleted one; an absent parent is no error.
func RemoveParent(parent, network string) (bool, error) {
	return removeParent(netlinkKernel{}, parent, network)
}

func removeParent(k kernel, parent, network string) (bool, error) {
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
	if l.Type() != "vlan" || l.Attrs().Alias != OwnerAlias(network) {
		return false, nil
	}
	if err := k.LinkDel(l); err != nil {
		return false, fmt.Errorf("delete VLAN parent %s: %w", parent, err)
	}
	return true, nil
}

// Owned reports whether a link alias marks a parent underlay made, and for
// which network.
func Owned(alias string) (network string, ok bool) {
	return strings.CutPrefix(alias, ownedPrefix)
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
