package hostnet

import (
	"errors"
	"fmt"
	"net"
	"sort"

	"github.com/vishvananda/netlink"
)

// ParentFacts is what a host says of a network's parent link and what is
// under it, for the doctor.
type ParentFacts struct {
	Exists bool
	// Type is netlink's link type: "vlan", "bond", "device", "veth"…
	Type    string
	Up      bool
	Promisc bool
	MTU     int
	// Alias marks a parent underlay made (OwnerAlias).
	Alias string
	// VLAN and Lower describe a vlan link: its id and lower device, with
	// that device's state. VLANProtocol is "802.1ad" for a service VLAN
	// (QinQ); "" for 802.1Q.
	VLAN         int
	VLANProtocol string
	Lower        string
	LowerExists  bool
	LowerUp      bool
	LowerMTU     int
	// Bond is the bond the parent is, or the VLAN's lower device is; nil
	// when there is none.
	Bond *BondFacts
}

// BondFacts describes a bond and its members.
type BondFacts struct {
	Name string
	Mode string // "active-backup", "802.3ad"…
	// Active is the member carrying traffic in active-backup mode.
	Active  string
	Members []BondMember
}

// BondMember is one NIC of a bond.
type BondMember struct {
	Name string
	// Up is true when the member is up with a carrier.
	Up bool
}

// InspectParent reads the parent link name, its lower device and its
// bond. A name no link can have is ErrBadLinkName, naming it.
func InspectParent(name string) (ParentFacts, error) {
	var f ParentFacts
	if err := checkLinkName("parent", name); err != nil {
		return f, err
	}
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			if lower, vid, ok := vlanParent(name); ok {
				f.Lower, f.VLAN = lower, vid
				if ll, err := netlink.LinkByName(lower); err == nil {
					f.LowerExists, f.LowerUp, f.LowerMTU = true, ll.Attrs().Flags&net.FlagUp != 0, ll.Attrs().MTU
					f.Bond, err = bondOf(ll)
					return f, err
				}
			}
			return f, nil
		}
		return f, fmt.Errorf("read %s: %w", name, err)
	}
	a := l.Attrs()
	f.Exists, f.Type, f.Up, f.Promisc, f.MTU, f.Alias = true, l.Type(), a.Flags&net.FlagUp != 0, a.Promisc != 0, a.MTU, a.Alias
	bondLink := l
	if v, ok := l.(*netlink.Vlan); ok {
		f.VLAN = v.VlanId
		if v.VlanProtocol == netlink.VLAN_PROTOCOL_8021AD {
			f.VLANProtocol = "802.1ad"
		}
		lower, err := netlink.LinkByIndex(a.ParentIndex)
		if err != nil {
			return f, fmt.Errorf("lower device of %s: %w", name, err)
		}
		la := lower.Attrs()
		f.Lower, f.LowerExists, f.LowerUp, f.LowerMTU = la.Name, true, la.Flags&net.FlagUp != 0, la.MTU
		bondLink = lower
	}
	f.Bond, err = bondOf(bondLink)
	return f, err
}

// bondOf describes l when it is a bond; nil otherwise.
func bondOf(l netlink.Link) (*BondFacts, error) {
	b, ok := l.(*netlink.Bond)
	if !ok {
		return nil, nil
	}
	f := &BondFacts{Name: b.Name, Mode: b.Mode.String()}
	links, err := retryDump(netlink.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	for _, m := range links {
		a := m.Attrs()
		if a.MasterIndex != b.Index {
			continue
		}
		f.Members = append(f.Members, BondMember{Name: a.Name, Up: a.Flags&net.FlagUp != 0 && a.OperState != netlink.OperDown && a.RawFlags&rawLowerUp != 0})
		if a.Index == b.ActiveSlave {
			f.Active = a.Name
		}
	}
	sort.Slice(f.Members, func(i, j int) bool { return f.Members[i].Name < f.Members[j].Name })
	return f, nil
}

// rawLowerUp is IFF_LOWER_UP: the link has a carrier.
const rawLowerUp = 1 << 16
