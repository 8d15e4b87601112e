package hostnet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode"

	"github.com/vishvananda/netlink"

	"github.com/underlay/underlay/internal/backoff"
	"github.com/underlay/underlay/internal/netspec"
)

// Want is the host state a network needs on this node.
type Want struct {
	// Parent is the link the network's endpoints hang off. A parent named
	// like a VLAN sub-interface (bond0.40) is made, on its lower device,
	// when missing, and marked as Network's.
	Parent string
	// Network names the network, for that mark.
	Network string
	// Driver is the network's driver: macvlan (also when empty; the parent
	// must be promiscuous and the shim is a bridge-mode macvlan) or ipvlan
	// (the shim is an ipvlan of IPvlanMode: an ipvlan cannot reach its own
	// parent either).
	Driver     string
	IPvlanMode string
	ShimLink   string
	// Shim is the host's address on the network; Route is the node's
	// container range, reached through the shim.
	Shim  netip.Addr
	Route netip.Prefix
	// Shim6 and Route6 are the same for the network's IPv6 subnet; both
	// are zero on an IPv4-only network. Without them the host would send
	// to its own containers' IPv6 addresses through the parent, which
	// macvlan and ipvlan forbid.
	Shim6  netip.Addr
	Route6 netip.Prefix
	// Subnet and Subnet6 are the network's subnets. Only the shim's
	// routes into them can be underlay's to a range of the node's that
	// has since moved (see shimsRoute); zero: none is.
	Subnet, Subnet6 netip.Prefix
}

// Observed is the host state that matters to a Want.
type Observed struct {
	ParentExists bool
	// ParentCreatable is true when the parent is missing but is a VLAN
	// sub-interface whose lower device exists.
	ParentCreatable bool
	// ParentIsShim is true when the parent is one of underlay's shims.
	ParentIsShim  bool
	ParentUp      bool
	ParentPromisc bool
	ShimExists    bool
	// ShimOK is false when a link of the shim's name exists but is not a
	// shim of the wanted kind on the parent: it must be replaced.
	ShimOK bool
	// ShimMarked is true when the link of the shim's name is marked as the
	// network's shim (ShimOf).
	ShimMarked bool
	// ShimUnowned is true, for a Host with an Owner, when the shim is
	// marked as the network's naming no owner, as agents marked them
	// before marks named one, and is of the wanted kind on the parent:
	// Ensure adopts it (ShimMark), so that another owner's agent in this
	// network namespace, to which a mark naming no owner is its own,
	// leaves it alone.
	ShimUnowned bool
	// ParentUnowned is true, for a Host with an Owner, when the parent
	// is a VLAN marked as made for the network naming no owner, and the
	// VLAN its name says: Ensure adopts it (ParentMark). A parent with no
	// mark is an operator's (underlay always marked those it made), and
	// is never adopted.
	ParentUnowned bool
	// ParentMadeFor is, for a Host with Parents, when the parent is an
	// unmarked VLAN, the one its name says (NotAsNamed), and the record
	// names it so (link, lower device, VLAN id), the network the agent
	// made it for: dockerd made it again at boot, restoring a container
	// on the network, before the agent ran. Ensure marks it again
	// (ParentReclaim). An unmarked VLAN not recorded so is an operator's:
	// "".
	ParentMadeFor string
	// ParentUnrecorded is, for a Host with Parents, when the parent is a
	// VLAN marked as this agent's (or adopted now: ParentUnowned) and the
	// VLAN its name says, but not recorded (made by an agent that kept no
	// record), the network its mark names: Ensure records it
	// (ParentRemember). "" otherwise.
	ParentUnrecorded string
	// ShimForeign is true when the link of the shim's name is not
	// underlay's shim of the network: neither marked for it nor an older
	// agent's (oldShim). It is left alone.
	ShimForeign bool
	ShimUp      bool
	ShimHasIP   bool
	RouteViaOK  bool
	// ShimHasIP6 and Route6ViaOK are ShimHasIP and RouteViaOK for the
	// Want's Shim6 and Route6; false when it has none.
	ShimHasIP6  bool
	Route6ViaOK bool
	// OldRoutes and OldRoutes6 are true when this owner's shim has routes
	// of the kind underlay makes (shimsRoute) to other destinations than
	// the Want's Route and Route6: the node's range before it moved.
	OldRoutes, OldRoutes6 bool
	// Stale6 is true, for a Want of no IPv6 (Shim6 zero), when this
	// owner's shim holds an IPv6 address other than a link-local one:
	// the network had an IPv6 subnet, which its spec dropped.
	Stale6 bool
	// PortOf is the bond or bridge (of kind PortOfKind: "bond", "bridge"…)
	// the parent is a port of, or, when the parent is to be made, its
	// lower device; "" when none. The master takes the frames its ports
	// receive, and the kernel refuses a macvlan or ipvlan on a port.
	PortOf, PortOfKind string
	// OtherVLAN describes what a parent named like a VLAN sub-interface
	// (bond0.40) is, as "VLAN 41 on bond0" or "a dummy link", when it is
	// not the 802.1Q VLAN its name says (NotAsNamed); "" when it is, or
	// its name says no VLAN.
	OtherVLAN string
	// OtherKind names a link of the other kind than the shim's (an ipvlan
	// for a macvlan shim, a macvlan for an ipvlan one) on the device the
	// shim goes on, as `ipvlan "ipv0"`; "" when this host sees none (a
	// container's endpoint is in the container's namespace). The kernel
	// gives a device's frames to macvlan links or to ipvlan links, not
	// both.
	OtherKind string
}

// Repair is one change that brings the host to the wanted state.
type Repair string

const (
	ParentCreate  Repair = "create VLAN parent"
	ParentUp      Repair = "set parent up"
	ParentPromisc Repair = "set parent promiscuous"
	ShimReplace   Repair = "replace shim (wrong kind or parent)"
	ShimCreate    Repair = "create shim"
	ShimMark      Repair = "mark an older agent's shim as this agent's"
	// ParentMark marks a VLAN parent an older agent made, whose mark
	// names no owner, as this agent's (Observed.ParentUnowned).
	ParentMark Repair = "mark an older agent's VLAN parent as this agent's"
	// ParentReclaim marks a VLAN parent this agent made, found unmarked
	// (Observed.ParentMadeFor), as its own again.
	ParentReclaim Repair = "mark the VLAN parent this agent made, made again unmarked (by dockerd at boot), as this agent's"
	// ParentRemember records a VLAN parent this agent marked as made by
	// it (Observed.ParentUnrecorded).
	ParentRemember Repair = "record the VLAN parent as made by this agent"
	ShimAddress    Repair = "add shim address"
	ShimUp         Repair = "set shim up"
	ShimRoute      Repair = "add route to the container range via the shim"
	ShimAddress6   Repair = "add shim IPv6 address"
	ShimRoute6     Repair = "add route to the IPv6 container range via the shim"
	// ShimOldRoutes and ShimOldRoutes6 delete the shim's routes to the
	// node's ranges before they moved (Observed.OldRoutes).
	ShimOldRoutes  Repair = "delete the shim's routes to ranges no longer the node's"
	ShimOldRoutes6 Repair = "delete the shim's routes to IPv6 ranges no longer the node's"
	// ShimDrop6 deletes the shim's IPv6 addresses and routes once the
	// network has no IPv6 subnet (Observed.Stale6).
	ShimDrop6 Repair = "delete the shim's IPv6 address and route (the network has no IPv6 subnet now)"
)

// ErrNoParent is returned when the parent interface does not exist.
var ErrNoParent = errors.New("parent interface not found")

// ErrBadLinkName is the error of a name no link can have (linkName):
// looked up, netlink says not found or, past 127 bytes (an alternative
// name's most), "numerical result out of range".
var ErrBadLinkName = errors.New("not a valid interface name")

// checkLinkName is nil when name can be a link's, and otherwise names it,
// as what.
func checkLinkName(what, name string) error {
	if linkName(name) {
		return nil
	}
	return fmt.Errorf("%s %q: %w (1 to %d bytes, no '/', ':' or white space, not . or ..)", what, name, ErrBadLinkName, maxLinkName)
}

// Repairs lists, in order, the changes that take a host observed as o to
// the state w wants. A link of the shim's name that is not underlay's
// shim of the network is an error wrapping ErrForeignLink, and nothing is
// to be done.
func Repairs(w Want, o Observed) ([]Repair, error) {
	var r []Repair
	if o.ParentIsShim {
		// Another network's shim: its removal would take this network's
		// endpoints' parent away.
		return nil, fmt.Errorf("parent %s is one of underlay's host shims, not a host interface: give the interface (or VLAN) its network hangs off", w.Parent)
	}
	if err := ParentRefusal(w, o); err != nil {
		return nil, err
	}
	if o.ShimExists && o.ShimForeign {
		return nil, fmt.Errorf("link %s: %w %s, left alone; rename or remove it", w.ShimLink, ErrForeignLink, w.Network)
	}
	if !o.ParentExists {
		if lower, vid, ok := vlanParent(w.Parent); ok && !o.ParentCreatable {
			return nil, fmt.Errorf("parent %s: %w, nor its lower device %s to make it on as VLAN %d", w.Parent, ErrNoParent, lower, vid)
		}
		if !o.ParentCreatable {
			return nil, fmt.Errorf("parent %s: %w", w.Parent, ErrNoParent)
		}
		// A new parent has no shim: everything below follows. A link of
		// the shim's name (the network's shim, on another parent) is
		// replaced.
		r = append(r, ParentCreate)
		o = Observed{ParentExists: true, ShimExists: o.ShimExists}
	}
	if o.ParentMadeFor != "" {
		r = append(r, ParentReclaim)
	}
	if o.ParentUnowned {
		r = append(r, ParentMark)
	}
	if o.ParentUnrecorded != "" {
		r = append(r, ParentRemember)
	}
	if !o.ParentUp {
		r = append(r, ParentUp)
	}
	if !o.ParentPromisc && w.promisc() {
		r = append(r, ParentPromisc)
	}
	v6 := w.Shim6.IsValid()
	switch {
	case o.ShimExists && !o.ShimOK:
		r = append(r, ShimReplace)
		fallthrough
	case !o.ShimExists:
		r = append(r, ShimCreate, ShimAddress)
		if v6 {
			r = append(r, ShimAddress6)
		}
		r = append(r, ShimUp, ShimRoute)
		if v6 {
			r = append(r, ShimRoute6)
		}
		return r, nil
	}
	if !o.ShimMarked || o.ShimUnowned {
		r = append(r, ShimMark)
	}
	if !o.ShimHasIP {
		r = append(r, ShimAddress)
	}
	if v6 && !o.ShimHasIP6 {
		r = append(r, ShimAddress6)
	}
	if !o.ShimUp {
		r = append(r, ShimUp)
	}
	if !o.RouteViaOK || !o.ShimUp || !o.ShimHasIP {
		// Setting a link down or removing its address drops its routes.
		r = append(r, ShimRoute)
	}
	if v6 && (!o.Route6ViaOK || !o.ShimUp || !o.ShimHasIP6) {
		r = append(r, ShimRoute6)
	}
	// After the new routes: the host reaches the new range all along.
	if o.OldRoutes {
		r = append(r, ShimOldRoutes)
	}
	if v6 && o.OldRoutes6 {
		r = append(r, ShimOldRoutes6)
	}
	if !v6 && o.Stale6 {
		r = append(r, ShimDrop6)
	}
	return slices.Compact(r), nil
}

// ParentRefusal is the error of a parent, observed as o, that the kernel
// would not put w's shim on, or that is not what its name says: a port of
// a bond, bridge, team or Open vSwitch (or a VLAN to be made on one), a
// device carrying links of the other kind than the shim's, a link named
// like a VLAN that is not that VLAN (NotAsNamed: another VLAN, or no VLAN
// at all). nil when it is none of these. Repairs refuses it; the
// doctor says it.
func ParentRefusal(w Want, o Observed) error {
	if o.PortOf != "" {
		return portErr(w.Parent, o)
	}
	if o.OtherKind != "" {
		return fmt.Errorf("parent %s carries %s: the kernel gives a device's frames to its macvlan links or to its ipvlan links, not both, so the network's %s shim cannot go on it; left as it is", w.Parent, o.OtherKind, w.shim(0).Type())
	}
	if o.OtherVLAN != "" {
		// Its containers would be on another VLAN than the network's, or on
		// none.
		lower, vid, _ := vlanParent(w.Parent)
		return fmt.Errorf("parent %s is %s, not VLAN %d on %s as its name says, left as it is: give the network the parent of its VLAN, or remove %s (ip link del %s) for underlay to make it", w.Parent, o.OtherVLAN, vid, lower, w.Parent, w.Parent)
	}
	return nil
}

// portErr is the error of a parent that is a port of a bond or bridge,
// or is to be made on one: containers on it would bypass the bond (or
// get no frames at all), and the kernel refuses the shim on it (EBUSY)
// once the parent has been made promiscuous.
func portErr(parent string, o Observed) error {
	if lower, vid, ok := vlanParent(parent); ok && !o.ParentExists {
		return fmt.Errorf("parent %s: its lower device %s is a port of %s %s, which takes the frames %s receives: give VLAN %d on %s as the parent (%s.%d)", parent, lower, o.PortOfKind, o.PortOf, lower, vid, o.PortOf, o.PortOf, vid)
	}
	return fmt.Errorf("parent %s is a port of %s %s, which takes the frames %s receives (the kernel refuses a macvlan or ipvlan on it): give %s, or a VLAN on it, as the parent; left as it is", parent, o.PortOfKind, o.PortOf, parent, o.PortOf)
}

// maxLinkName is the longest link name, in bytes (IFNAMSIZ less the NUL).
const maxLinkName = 15

// check refuses a w that no valid spec gives (netspec.Validate checks
// the spec): the driver and mode decide the shim's kind, and the route is
// replaced through the shim, so a route of 0.0.0.0/0, or none (netlink
// sends no destination), would take the host's default route; the shim's
// addresses lie in the ranges routed through it.
func (w Want) check() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if err := netspec.CheckDriverMode(w.Driver, w.IPvlanMode); err != nil {
		errs = append(errs, err)
	}
	if !linkName(w.Parent) {
		bad("parent %q: not a link name (1 to %d bytes, no '/', ':' or white space, not . or ..)", w.Parent, maxLinkName)
	}
	if !linkName(w.ShimLink) || w.ShimLink == w.Parent {
		bad("shim link %q: want a link name of 1 to %d bytes (no '/', ':' or white space, not . or ..), not the parent's", w.ShimLink, maxLinkName)
	}
	if !w.Shim.Is4() || w.Shim.IsUnspecified() {
		bad("shim address %s: want an IPv4 address", w.Shim)
	}
	switch r := w.Route; {
	case !r.IsValid() || !r.Addr().Is4() || r != r.Masked():
		bad("route %s: want the IPv4 network address of the node's container range", r)
	case r.Bits() == 0:
		bad("route %s: it would replace the host's default route by one through the shim", r)
	case w.Shim.Is4() && !r.Contains(w.Shim):
		// The shim's address is the node's, in its container range: one
		// elsewhere would make the host take another's address for its own.
		bad("shim address %s is outside %s, the range it is routed for", w.Shim, r)
	}
	if w.Shim6.IsValid() || w.Route6.IsValid() {
		if a := w.Shim6; !a.Is6() || a.Is4In6() || a.IsUnspecified() || a.IsLinkLocalUnicast() || a.IsMulticast() || a.IsLoopback() || a.Zone() != "" {
			bad("shim IPv6 address %s: want a global or unique-local IPv6 address", a)
		}
		switch r := w.Route6; {
		case !r.IsValid() || !r.Addr().Is6() || r.Addr().Is4In6() || r != r.Masked():
			bad("IPv6 route %s: want the IPv6 network address of the node's container range", r)
		case r.Bits() == 0:
			bad("IPv6 route %s: it would replace the host's default route by one through the shim", r)
		case w.Shim6.Is6() && !r.Contains(w.Shim6):
			bad("shim IPv6 address %s is outside %s, the range it is routed for", w.Shim6, r)
		}
	}
	return errors.Join(errs...)
}

// linkName reports whether the kernel takes name for a link's
// (dev_valid_name): a VLAN parent or shim of another name is never made,
// and named quoted.
func linkName(name string) bool {
	return name != "" && len(name) <= maxLinkName && name != "." && name != ".." &&
		!strings.ContainsFunc(name, func(r rune) bool { return r == '/' || r == ':' || r == 0 || unicode.IsSpace(r) })
}

// promisc reports whether w's parent must be promiscuous: macvlan
// endpoints have MAC addresses of their own; ipvlan ones share the parent's.
func (w Want) promisc() bool { return w.Driver != "ipvlan" }

// Host applies Wants with netlink in the calling process's network namespace.
type Host struct {
	// Owner names the agent in the marks of the links it makes; "" makes
	// marks that name none, as older agents did.
	Owner string
	// Promisc records the parents Ensure makes promiscuous, for
	// ReleasePromisc; nil records none, and none is made not promiscuous
	// again.
	Promisc PromiscRecord
	// Parents records the VLAN parents Ensure makes, so that one dockerd
	// made again, unmarked, at boot is known for the agent's and marked
	// again (see Observed.ParentMadeFor), and forgets those the removals
	// delete; nil records none, and no unmarked parent is taken.
	Parents ParentRecord
	// Log says what the record changes and why, and a record that cannot
	// be read; nil logs nothing.
	Log *slog.Logger
	// k is the kernel; nil is the calling process's, through netlink.
	k kernel
}

// RemoveShim is RemoveShim of a shim marked as h's Owner's, or naming no
// owner.
func (h Host) RemoveShim(name, network string) error {
	return removeShim(h.nl(), name, network, h.Owner)
}

// RemoveParent is RemoveParent of a parent marked as h's Owner's, or
// naming no owner, or unmarked and recorded in h.Parents as made for
// network (see Observed.ParentMadeFor). The record of a parent gone
// (deleted now, or before) is removed. A name no link can have is no
// parent's: nothing is done, and no error.
func (h Host) RemoveParent(parent, network string) (bool, error) {
	if !linkName(parent) {
		// No link is named so, so underlay made none (Observe refuses such
		// a parent before any change); netlink would look it up by
		// alternative name, or fail, and the network's removal with it.
		// A spec being deleted needs only a valid name, and an orphan's
		// parent is its config-only network's driver option.
		return false, nil
	}
	k := h.nl()
	removed, err := removeParent(k, parent, network, h.Owner, h.recordedFor(k, parent))
	if err == nil {
		h.forget(k, parent, network)
	}
	return removed, err
}

// Marked is Marked of the links marked as h's Owner's, or naming no
// owner (see MarkedBy), and of the unmarked VLAN parents h.Parents
// records as made for a network (see Observed.ParentMadeFor): what a
// network whose spec is gone left here.
func (h Host) Marked() (map[string]Marks, error) {
	k := h.nl()
	m, err := marked(k, h.Owner)
	if err != nil || h.Parents == nil {
		return m, err
	}
	recs, err := h.Parents.List()
	if err != nil {
		h.badRecord(err)
		return m, nil
	}
	for _, rec := range recs {
		if network := h.recordedFor(k, rec.Link); network != "" {
			mk := m[network]
			mk.Parents = append(mk.Parents, rec.Link)
			m[network] = mk
		}
	}
	return m, nil
}

// adopts reports whether h, with an Owner, takes a link marked alias for
// its own, re-marking it: alias is mark (a ShimAlias or OwnerAlias of the
// network) naming no owner, as agents marked links before marks named
// one. Any other alias (none, another network's, another owner's,
// someone else's) is not adopted.
func (h Host) adopts(alias, mark string) bool { return h.Owner != "" && alias == mark }

// nl is the kernel h works on, its interrupted listings made again.
func (h Host) nl() kernel {
	if h.k == nil {
		return retryDumps{netlinkKernel{}}
	}
	return retryDumps{h.k}
}

// Observe reads the host state relevant to w. A parent no link can be
// named is ErrBadLinkName, naming it: netlink would say not found, or
// answer an error of its own.
func (h Host) Observe(w Want) (Observed, error) {
	var o Observed
	if err := checkLinkName("parent", w.Parent); err != nil {
		return o, err
	}
	k := h.nl()
	parent, err := k.LinkByName(w.Parent)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			if lower, _, ok := vlanParent(w.Parent); ok {
				l, err := k.LinkByName(lower)
				if err == nil {
					o.ParentCreatable = true
					if o.PortOf, o.PortOfKind, err = portOf(k, l); err != nil {
						return o, err
					}
					return o, w.shimOffParent(k, &o)
				}
				if !errors.As(err, &nf) {
					return o, fmt.Errorf("read %s, the lower device of parent %s: %w", lower, w.Parent, err)
				}
			}
			return o, nil
		}
		return o, fmt.Errorf("read parent %s: %w", w.Parent, err)
	}
	o.ParentExists = true
	pa := parent.Attrs()
	if o.PortOf, o.PortOfKind, err = portOf(k, parent); err != nil {
		return o, err
	}
	if o.OtherVLAN, err = otherVLAN(k, parent, w.Parent); err != nil {
		return o, err
	}
	// The kernel makes a macvlan on a macvlan parent (an ipvlan on an
	// ipvlan) on the parent's lower device, and reports that as its link.
	on := pa.Index
	if parent.Type() == w.shim(0).Type() {
		on = pa.ParentIndex
	}
	if o.OtherKind, err = w.otherKind(k, on); err != nil {
		return o, err
	}
	// A shim's mark garbled (see parseMark) is no shim of underlay's to
	// remove, yet no parent to build on either.
	o.ParentIsShim = isShim(Link{Name: pa.Name, Type: parent.Type(), Alias: pa.Alias}) ||
		(parent.Type() == "macvlan" || parent.Type() == "ipvlan") && strings.HasPrefix(pa.Alias, shimPrefix)
	o.ParentUnowned = h.adopts(pa.Alias, OwnerAlias(w.Network)) && parent.Type() == "vlan" && o.OtherVLAN == ""
	if parent.Type() == "vlan" && o.OtherVLAN == "" {
		o.ParentMadeFor, o.ParentUnrecorded = h.parentRecord(w.Parent, pa.Alias, o.ParentUnowned)
	}
	o.ParentUp = pa.Flags&net.FlagUp != 0
	o.ParentPromisc = pa.Promisc != 0
	shim, err := k.LinkByName(w.ShimLink)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return o, nil
		}
		return o, fmt.Errorf("read shim %s: %w", w.ShimLink, err)
	}
	o.ShimExists = true
	sa := shim.Attrs()
	o.ShimOK = w.shimOK(shim) && sa.ParentIndex == on
	o.ShimMarked = ShimOf(Link{Name: sa.Name, Type: shim.Type(), Alias: sa.Alias}, w.Network)
	o.ShimUnowned = o.ShimMarked && o.ShimOK && h.adopts(sa.Alias, ShimAlias(w.Network))
	o.ShimUp = sa.Flags&net.FlagUp != 0
	addrs, err := k.AddrList(shim, netlink.FAMILY_V4)
	if err != nil {
		return o, fmt.Errorf("addresses of %s: %w", w.ShimLink, err)
	}
	o.ShimHasIP = hasAddr(addrs, w.Shim)
	if o.ShimForeign = !o.ShimMarked && !w.oldShim(sa.Alias, o); o.ShimForeign {
		return o, nil
	}
	// Another owner's shim, used as it is (see Host.Owner), keeps its
	// routes: they are that agent's. An older agent's is marked this
	// owner's by this Ensure.
	ours := !o.ShimMarked || ownersMark(sa.Alias, h.Owner)
	if o.RouteViaOK, o.OldRoutes, err = shimRoutes(k, shim, netlink.FAMILY_V4, w.Route, w.Subnet, ours); err != nil {
		return o, fmt.Errorf("routes of %s: %w", w.ShimLink, err)
	}
	if !w.Shim6.IsValid() {
		if ours {
			// The network's IPv6 subnet may be gone from its spec.
			if o.Stale6, err = stale6(k, shim); err != nil {
				return o, fmt.Errorf("IPv6 addresses of %s: %w", w.ShimLink, err)
			}
		}
		return o, nil
	}
	addrs, err = k.AddrList(shim, netlink.FAMILY_V6)
	if err != nil {
		return o, fmt.Errorf("IPv6 addresses of %s: %w", w.ShimLink, err)
	}
	o.ShimHasIP6 = hasAddr(addrs, w.Shim6)
	if o.Route6ViaOK, o.OldRoutes6, err = shimRoutes(k, shim, netlink.FAMILY_V6, w.Route6, w.Subnet6, ours); err != nil {
		return o, fmt.Errorf("IPv6 routes of %s: %w", w.ShimLink, err)
	}
	return o, nil
}

// shimRoutes reports whether shim has a route of family to dst, and, when
// ours, whether it has routes underlay made (shimsRoute) to other
// destinations in subnet.
func shimRoutes(k kernel, shim netlink.Link, family int, dst, subnet netip.Prefix, ours bool) (has, old bool, err error) {
	routes, err := k.RouteList(shim, family)
	if err != nil {
		return false, false, err
	}
	for _, rt := range routes {
		switch {
		case rt.Dst != nil && rt.Dst.String() == dst.String():
			has = true
		case ours && shimsRoute(rt, shim.Attrs().Index, family, subnet):
			old = true
		}
	}
	return has, old, nil
}

// shimsRoute reports whether rt is a route apply's ShimRoute (with
// family FAMILY_V6, ShimRoute6) makes on the shim of index shim, to
// whichever destination: in the main table, through the shim alone, of
// netlink's protocol (boot: what `ip route add` gives too, unless told
// another) and type (unicast), with no gateway or source, of scope link
// and metric 0 (IPv6: metric 1; the kernel gives every IPv6 route scope
// universe), to a destination inside the network's subnet (a node's
// range is one). The kernel's own routes (protocol kernel: the link-local
// one), an operator's of another protocol (`ip route add … proto
// static`) and any to a destination outside the subnet (an operator's
// plain `ip route add … dev SHIM`, of protocol boot too) are none.
func shimsRoute(rt netlink.Route, shim, family int, subnet netip.Prefix) bool {
	scope, metric := netlink.SCOPE_LINK, 0
	if family == netlink.FAMILY_V6 {
		scope, metric = netlink.SCOPE_UNIVERSE, 1
	}
	return rt.Dst != nil && inside(rt.Dst, subnet) && rt.LinkIndex == shim && len(rt.MultiPath) == 0 &&
		rt.Table == syscall.RT_TABLE_MAIN && rt.Protocol == syscall.RTPROT_BOOT && rt.Type == syscall.RTN_UNICAST &&
		rt.Gw == nil && rt.Via == nil && rt.Src == nil && rt.Scope == scope && rt.Priority == metric
}

// inside reports whether dst lies within subnet (false for a zero
// subnet).
func inside(dst *net.IPNet, subnet netip.Prefix) bool {
	ip, ok := netip.AddrFromSlice(dst.IP)
	ones, _ := dst.Mask.Size()
	return ok && subnet.IsValid() && ones >= subnet.Bits() && subnet.Contains(ip.Unmap())
}

// delOldRoutes deletes the routes underlay made on shim (shimsRoute) of
// family to other destinations than dst in subnet. RouteDel sends the destination,
// table, link, protocol, scope, type and metric (when not 0) given, and
// the kernel deletes the route that matches them all: that route and no
// other. One gone meanwhile is no error.
func delOldRoutes(k kernel, shim netlink.Link, family int, dst, subnet netip.Prefix) error {
	routes, err := k.RouteList(shim, family)
	if err != nil {
		return err
	}
	var errs []error
	for _, rt := range routes {
		if !shimsRoute(rt, shim.Attrs().Index, family, subnet) || rt.Dst.String() == dst.String() {
			continue
		}
		del := netlink.Route{LinkIndex: rt.LinkIndex, Dst: rt.Dst, Table: rt.Table, Protocol: rt.Protocol, Scope: rt.Scope, Type: rt.Type, Priority: rt.Priority}
		if err := k.RouteDel(&del); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("delete route %s: %w", rt.Dst, err))
		}
	}
	return errors.Join(errs...)
}

// globalAddrs6 are shim's IPv6 addresses but the link-local ones, which
// the kernel gives every link.
func globalAddrs6(k kernel, shim netlink.Link) ([]netlink.Addr, error) {
	addrs, err := k.AddrList(shim, netlink.FAMILY_V6)
	return slices.DeleteFunc(addrs, func(a netlink.Addr) bool {
		ip, ok := netip.AddrFromSlice(a.IP)
		return !ok || ip.IsLinkLocalUnicast()
	}), err
}

// stale6 reports whether shim holds an IPv6 address other than a
// link-local one (see Observed.Stale6).
func stale6(k kernel, shim netlink.Link) (bool, error) {
	addrs, err := globalAddrs6(k, shim)
	return len(addrs) > 0, err
}

// dropIPv6 deletes shim's IPv6 addresses (but the link-local ones) and
// the routes underlay made (shimsRoute) to a range holding one of them:
// the network's IPv6 subnet is gone, and the host would still answer for
// the address and send the range's traffic through the shim. Other
// IPv6 routes on the shim (an operator's) stay.
func dropIPv6(k kernel, shim netlink.Link) error {
	addrs, err := globalAddrs6(k, shim)
	if err != nil {
		return err
	}
	var ips []netip.Addr
	for _, a := range addrs {
		ip, _ := netip.AddrFromSlice(a.IP)
		ips = append(ips, ip)
	}
	var errs []error
	routes, err := k.RouteList(shim, netlink.FAMILY_V6)
	if err != nil {
		return err
	}
	for _, rt := range routes {
		if rt.Dst == nil {
			continue
		}
		dst, ok := netip.AddrFromSlice(rt.Dst.IP)
		ones, _ := rt.Dst.Mask.Size()
		p := netip.PrefixFrom(dst, ones)
		if !ok || !shimsRoute(rt, shim.Attrs().Index, netlink.FAMILY_V6, p) || !slices.ContainsFunc(ips, p.Contains) {
			continue
		}
		del := netlink.Route{LinkIndex: rt.LinkIndex, Dst: rt.Dst, Table: rt.Table, Protocol: rt.Protocol, Scope: rt.Scope, Type: rt.Type, Priority: rt.Priority}
		if err := k.RouteDel(&del); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("delete route %s: %w", rt.Dst, err))
		}
	}
	for _, a := range addrs {
		if err := k.AddrDel(shim, &a); err != nil && !errors.Is(err, syscall.EADDRNOTAVAIL) {
			errs = append(errs, fmt.Errorf("delete address %s: %w", a.IPNet, err))
		}
	}
	return errors.Join(errs...)
}

// shimOffParent observes into o the link of w's shim name while w's
// parent is still to be made: on no parent of the network's, it is the
// network's shim made on another parent, to be replaced, if marked as
// such, and someone else's otherwise (an older agent's unmarked shim is
// adopted only on the network's parent: see oldShim).
func (w Want) shimOffParent(k kernel, o *Observed) error {
	shim, err := k.LinkByName(w.ShimLink)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("read shim %s: %w", w.ShimLink, err)
	}
	a := shim.Attrs()
	o.ShimExists = true
	o.ShimMarked = ShimOf(Link{Name: a.Name, Type: shim.Type(), Alias: a.Alias}, w.Network)
	o.ShimForeign = !o.ShimMarked
	return nil
}

// portOf returns the name and kind of the bond, bridge, team or Open
// vSwitch link l is a port of: such a master takes its ports' frames
// (their receive handler, which a macvlan or ipvlan needs). A port of a
// VRF, which does not, is of none; so is a link with no master.
func portOf(k kernel, l netlink.Link) (name, kind string, err error) {
	a := l.Attrs()
	if a.MasterIndex == 0 {
		return "", "", nil
	}
	links, err := k.LinkList()
	if err != nil {
		return "", "", fmt.Errorf("list links for the master of %s: %w", a.Name, err)
	}
	for _, m := range links {
		if m.Attrs().Index == a.MasterIndex && takesPorts(m) {
			return m.Attrs().Name, m.Type(), nil
		}
	}
	return "", "", nil
}

// otherVLAN describes l, the link of a parent name, as NotAsNamed does
// ("VLAN 41 on eth0", "a dummy link"): "" when it is the VLAN name says,
// or name says none.
func otherVLAN(k kernel, l netlink.Link, name string) (string, error) {
	f := ParentFacts{Exists: true, Type: l.Type()}
	if v, ok := l.(*netlink.Vlan); ok {
		f.VLAN = v.VlanId
		if v.VlanProtocol == netlink.VLAN_PROTOCOL_8021AD {
			f.VLANProtocol = "802.1ad"
		}
		f.Lower = "a device of another network namespace"
		if _, _, named := vlanParent(name); named && v.NetNsID < 0 {
			links, err := k.LinkList()
			if err != nil {
				return "", fmt.Errorf("list links for the lower device of %s: %w", name, err)
			}
			f.Lower = fmt.Sprintf("link %d", v.ParentIndex)
			for _, ll := range links {
				if ll.Attrs().Index == v.ParentIndex {
					f.Lower = ll.Attrs().Name
				}
			}
		}
	}
	return NotAsNamed(name, f), nil
}

// NotAsNamed describes the link of parent, observed as f, when parent is
// named like a VLAN sub-interface (bond0.40: 802.1Q VLAN 40 on bond0, see
// netspec.VLANParent) and the link is not that VLAN, as the link's kind
// says, not its name: "VLAN 41 on bond0", "802.1ad VLAN 40 on bond0",
// "a dummy link", "a macvlan link". "" when it is that VLAN, does not
// exist (the agent makes it), or parent's name says no VLAN: a VLAN named
// otherwise (trunk40) is the VLAN it is. The agent refuses such a parent
// (ParentRefusal, through Observed.OtherVLAN) and the doctor fails it: its
// containers would not be on the VLAN the network names (a macvlan on a
// macvlan goes on that one's device, untagged; a dummy reaches nothing).
func NotAsNamed(parent string, f ParentFacts) string {
	lower, vid, named := vlanParent(parent)
	switch {
	case !named || !f.Exists:
		return ""
	case f.Type != "vlan":
		return article(f.Type) + " link"
	case f.VLANProtocol != "" && f.VLANProtocol != "802.1Q":
		return fmt.Sprintf("%s VLAN %d on %s", f.VLANProtocol, f.VLAN, f.Lower)
	case f.VLAN != vid || f.Lower != lower:
		return fmt.Sprintf("VLAN %d on %s", f.VLAN, f.Lower)
	}
	return ""
}

// article puts "a" or "an" before kind, a link kind ("dummy", "ipvlan").
func article(kind string) string {
	if kind != "" && strings.ContainsRune("aeiou", rune(kind[0])) {
		return "an " + kind
	}
	return "a " + kind
}

// otherKind names a link of this namespace on the link of index on of
// the other kind than w's shim (macvlan, ipvlan), as `ipvlan "ipv0"`; ""
// when there is none. A link of the shim's name is left out: it is
// replaced.
func (w Want) otherKind(k kernel, on int) (string, error) {
	kind := w.shim(0).Type()
	links, err := k.LinkList()
	if err != nil {
		return "", fmt.Errorf("list the links on parent %s: %w", w.Parent, err)
	}
	for _, l := range links {
		a := l.Attrs()
		if t := l.Type(); a.NetNsID < 0 && a.ParentIndex == on && a.Name != w.ShimLink && t != kind && (t == "macvlan" || t == "ipvlan") {
			return fmt.Sprintf("%s %q", t, a.Name), nil
		}
	}
	return "", nil
}

// takesPorts reports whether m, a master, takes the frames its ports
// receive.
func takesPorts(m netlink.Link) bool {
	switch m.Type() {
	case "bond", "bridge", "team", "openvswitch":
		return true
	}
	return false
}

// hasAddr reports whether addrs holds want (netlink gives IPv4 addresses
// in 16 bytes at times: compared unmapped).
func hasAddr(addrs []netlink.Addr, want netip.Addr) bool {
	return slices.ContainsFunc(addrs, func(a netlink.Addr) bool {
		ip, ok := netip.AddrFromSlice(a.IP)
		return ok && ip.Unmap() == want
	})
}

// Ensure makes the host match w and returns the repairs it made; none when
// the host already matched. A w no valid spec gives is refused, naming the
// bad value, and nothing changes.
func (h Host) Ensure(w Want) ([]Repair, error) {
	if err := w.check(); err != nil {
		return nil, err
	}
	o, err := h.Observe(w)
	if err != nil {
		return nil, err
	}
	repairs, err := Repairs(w, o)
	if err != nil {
		return nil, err
	}
	if err := checkRoutesFree(h.nl(), w, repairs); err != nil {
		return nil, err
	}
	if err := checkAddrsFree(h.nl(), w, repairs); err != nil {
		return nil, err
	}
	for _, r := range repairs {
		if err := h.apply(h.nl(), w, o, r); err != nil {
			switch r {
			case ParentCreate:
				err = fmt.Errorf("%s %q: %w", r, w.Parent, err)
			case ParentMark, ParentReclaim, ParentUp, ParentPromisc:
				err = fmt.Errorf("%s on parent %q: %w", r, w.Parent, err)
			case ShimAddress, ShimAddress6, ShimRoute, ShimRoute6:
				// The kernel's answer (EADDRINUSE from ipvlan, for one,
				// whose parent has the address on another link) names
				// neither.
				v := map[Repair]any{ShimAddress: w.Shim, ShimAddress6: w.Shim6, ShimRoute: w.Route, ShimRoute6: w.Route6}[r]
				err = fmt.Errorf("%s (%s) on shim %q: %w", r, v, w.ShimLink, err)
			default:
				err = fmt.Errorf("%s on shim %q: %w", r, w.ShimLink, err)
			}
			if r == ShimCreate && errors.Is(err, syscall.EBUSY) {
				other := map[string]string{"macvlan": "ipvlan", "ipvlan": "macvlan"}[w.shim(0).Type()]
				err = fmt.Errorf("%w: parent %s gives its frames to another driver: %s links on it (another network's containers' endpoints, in their own namespaces), or a bond or bridge it is a port of", err, w.Parent, other)
			}
			if (r == ShimAddress6 || r == ShimRoute6) && ipv6Off(err) {
				err = fmt.Errorf("%w (is IPv6 disabled on this host? the network has an IPv6 subnet: check sysctl net.ipv6.conf.%s.disable_ipv6 and net.ipv6.conf.default.disable_ipv6, or the kernel's ipv6.disable)", err, w.ShimLink)
			}
			return nil, err
		}
	}
	return repairs, nil
}

// Conflicts reports what of the host's would make Ensure refuse w's shim
// address and route, whatever is to be done: addrs, the link other than
// the shim holding one of its addresses (see checkAddrsFree); routes, the
// route of the host's other than the shim's to one of its ranges, with
// its metric (see checkRoutesFree). Each is nil when there is none. The
// doctor says them.
func (h Host) Conflicts(w Want) (addrs, routes error) {
	all := []Repair{ShimAddress, ShimRoute}
	if w.Shim6.IsValid() {
		all = append(all, ShimAddress6, ShimRoute6)
	}
	return checkAddrsFree(h.nl(), w, all), checkRoutesFree(h.nl(), w, all)
}

// checkRoutesFree refuses repairs that would replace a route of the
// host's: the kernel replaces the route of the same destination and
// metric on whichever link, so the shim's route would take the host's own
// route to the range (the connected route of an address the host has in
// it, an operator's static route), and removing the network, which
// deletes the shim, would leave the host without either. Only listed
// when a route is to be made, since the listing is of every route.
func checkRoutesFree(k kernel, w Want, repairs []Repair) error {
	shim := shimIndex(k, w)
	var errs []error
	if slices.Contains(repairs, ShimRoute) {
		errs = append(errs, routeFree(k, netlink.FAMILY_V4, "route", w.Route, 0, shim))
	}
	if slices.Contains(repairs, ShimRoute6) {
		errs = append(errs, routeFree(k, netlink.FAMILY_V6, "IPv6 route", w.Route6, 1, shim))
	}
	return errors.Join(errs...)
}

// shimIndex is the index of the link of w's shim name, 0 when there is
// none.
func shimIndex(k kernel, w Want) int {
	if l, err := k.LinkByName(w.ShimLink); err == nil {
		return l.Attrs().Index
	}
	return 0
}

// checkAddrsFree refuses repairs that would give the shim an address the
// host has already on another link (its own address on the LAN, where
// the node's range was carved from addresses hosts use): two links would
// answer ARP or neighbour discovery for it, each with its own MAC
// address. Only listed when an address is to be added.
func checkAddrsFree(k kernel, w Want, repairs []Repair) error {
	shim := shimIndex(k, w)
	var errs []error
	if slices.Contains(repairs, ShimAddress) {
		errs = append(errs, addrFree(k, netlink.FAMILY_V4, "shim address", w.Shim, shim))
	}
	if slices.Contains(repairs, ShimAddress6) {
		errs = append(errs, addrFree(k, netlink.FAMILY_V6, "shim IPv6 address", w.Shim6, shim))
	}
	return errors.Join(errs...)
}

// addrFree returns an error naming the link other than shim (its index;
// 0 when it does not exist yet) that has address a, if there is one.
func addrFree(k kernel, family int, what string, a netip.Addr, shim int) error {
	addrs, err := k.AddrList(nil, family)
	if err != nil {
		return fmt.Errorf("list the host's addresses: %w", err)
	}
	for _, ad := range addrs {
		ip, ok := netip.AddrFromSlice(ad.IP)
		if !ok || ip.Unmap() != a || shim != 0 && ad.LinkIndex == shim {
			continue
		}
		on := fmt.Sprintf("link %d", ad.LinkIndex)
		if links, err := k.LinkList(); err == nil {
			for _, l := range links {
				if l.Attrs().Index == ad.LinkIndex {
					on = fmt.Sprintf("%q", l.Attrs().Name)
				}
			}
		}
		return fmt.Errorf("%s %s is the host's already, on %s: the shim taking it too would have two links answer for it, each with its own MAC address; left as it is: give the network a range that leaves out the hosts' addresses", what, a, on)
	}
	return nil
}

// routeFree returns an error naming the route of family to dst of metric
// in the main table other than the shim's (shim is its index; 0 when it
// does not exist yet), if there is one. A route of no single link (a
// blackhole, a multipath route) has link index 0: never the shim's.
func routeFree(k kernel, family int, what string, dst netip.Prefix, metric, shim int) error {
	routes, err := k.RouteList(nil, family)
	if err != nil {
		return fmt.Errorf("list the host's routes: %w", err)
	}
	for _, rt := range routes {
		if rt.Dst == nil || rt.Dst.String() != dst.String() || rt.Priority != metric || shim != 0 && rt.LinkIndex == shim && len(rt.MultiPath) == 0 {
			continue
		}
		return fmt.Errorf("%s %s: the host routes it already, %s (metric %d), and the shim's route would replace that route, which removing the network would not bring back; left as it is: give the network a range the host does not route already, or remove that route", what, dst, routeDesc(k, rt), metric)
	}
	return nil
}

// routeDesc says what route rt goes through: a link, by name, or what
// it is when it names no single link.
func routeDesc(k kernel, rt netlink.Route) string {
	switch {
	case len(rt.MultiPath) > 0:
		return "by a multipath route"
	case rt.Type == syscall.RTN_BLACKHOLE:
		return "by a blackhole route"
	case rt.Type == syscall.RTN_UNREACHABLE:
		return "by an unreachable route"
	case rt.Type == syscall.RTN_PROHIBIT:
		return "by a prohibit route"
	case rt.LinkIndex == 0:
		return fmt.Sprintf("by a route of type %d", rt.Type)
	}
	on := fmt.Sprintf("link %d", rt.LinkIndex)
	if links, err := k.LinkList(); err == nil {
		for _, l := range links {
			if l.Attrs().Index == rt.LinkIndex {
				on = fmt.Sprintf("%q", l.Attrs().Name)
			}
		}
	}
	return "through " + on
}

// ipv6Off reports whether err is what the kernel answers when IPv6 is
// disabled on a link (EACCES, EPERM) or absent (EAFNOSUPPORT).
func ipv6Off(err error) bool {
	return errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EAFNOSUPPORT)
}

// apply makes repair r of w, observed as o, marking what it makes as
// h's Owner's, recording in h.Promisc (nil: nowhere) a parent it makes
// promiscuous, and in h.Parents a VLAN parent it makes.
func (h Host) apply(k kernel, w Want, o Observed, r Repair) error {
	owner, rec := h.Owner, h.Promisc
	switch r {
	case ParentCreate:
		if err := createVLAN(k, w.Parent, withOwner(OwnerAlias(w.Network), owner)); err != nil {
			return err
		}
		h.remember(w.Parent, w.Network)
		return nil
	case ParentRemember:
		h.remember(w.Parent, o.ParentUnrecorded)
		return nil
	case ParentMark, ParentReclaim, ParentUp, ParentPromisc:
		parent, err := k.LinkByName(w.Parent)
		if err != nil {
			return err
		}
		if r == ParentMark {
			return k.LinkSetAlias(parent, withOwner(OwnerAlias(w.Network), owner))
		}
		if r == ParentReclaim {
			return h.reclaim(k, parent, o.ParentMadeFor)
		}
		if r == ParentUp {
			return lowerDown(k, parent, k.LinkSetUp(parent))
		}
		// Recorded first: promiscuous mode underlay cannot record as its
		// own would never be turned off again.
		if rec != nil {
			if err := rec.Add(w.Parent, parent.Attrs().Index); err != nil {
				return err
			}
		}
		return k.SetPromiscOn(parent)
	case ShimReplace:
		return removeShim(k, w.ShimLink, w.Network, owner)
	case ShimCreate:
		parent, err := k.LinkByName(w.Parent)
		if err != nil {
			return err
		}
		// The mark by which removing underlay finds its shims (Leftovers).
		return addMarked(k, w.shim(parent.Attrs().Index), withOwner(ShimAlias(w.Network), owner))
	}
	shim, err := k.LinkByName(w.ShimLink)
	if err != nil {
		return err
	}
	switch r {
	case ShimAddress:
		// Only the wanted address: an old one (the node's address changed,
		// say after its allocation was reclaimed) may now be a container's.
		// On another owner's shim (see Host.Owner), used as it is, the
		// other addresses are that agent's: this one's goes beside them.
		if addrs, err := k.AddrList(shim, netlink.FAMILY_V4); err == nil && ownersMark(shim.Attrs().Alias, owner) {
			for _, a := range addrs {
				if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() != w.Shim {
					k.AddrDel(shim, &a)
				}
			}
		}
		return ignoreExists(k.AddrAdd(shim, &netlink.Addr{IPNet: &net.IPNet{IP: w.Shim.AsSlice(), Mask: net.CIDRMask(32, 32)}}))
	case ShimMark:
		return k.LinkSetAlias(shim, withOwner(ShimAlias(w.Network), owner))
	case ShimUp:
		return k.LinkSetUp(shim)
	case ShimRoute:
		dst := &net.IPNet{IP: w.Route.Addr().AsSlice(), Mask: net.CIDRMask(w.Route.Bits(), 32)}
		return k.RouteReplace(&netlink.Route{LinkIndex: shim.Attrs().Index, Dst: dst, Scope: netlink.SCOPE_LINK})
	case ShimAddress6:
		// As for IPv4, only the wanted global address (on a shim of this
		// owner's); the link-local one the kernel gives every link stays.
		if addrs, err := k.AddrList(shim, netlink.FAMILY_V6); err == nil && ownersMark(shim.Attrs().Alias, owner) {
			for _, a := range addrs {
				if ip, ok := netip.AddrFromSlice(a.IP); ok && ip != w.Shim6 && !ip.IsLinkLocalUnicast() {
					k.AddrDel(shim, &a)
				}
			}
		}
		// No duplicate address detection: the address is the node's own
		// (reserved in its range, or allocated to it), and a tentative
		// address would not be used as a source until DAD ends.
		return ignoreExists(k.AddrAdd(shim, &netlink.Addr{IPNet: &net.IPNet{IP: w.Shim6.AsSlice(), Mask: net.CIDRMask(128, 128)}, Flags: syscall.IFA_F_NODAD}))
	case ShimRoute6:
		// Metric 1: the parent may carry the kernel's route to the same
		// subnet (metric 256) when the host has an address on it; the
		// shim's must win for the host to reach its own containers.
		dst := &net.IPNet{IP: w.Route6.Addr().AsSlice(), Mask: net.CIDRMask(w.Route6.Bits(), 128)}
		return k.RouteReplace(&netlink.Route{LinkIndex: shim.Attrs().Index, Dst: dst, Priority: 1})
	case ShimOldRoutes:
		// The old range may now be another node's, or no one's: the
		// host's traffic to it would still leave through the shim, not
		// as the host routes it.
		return delOldRoutes(k, shim, netlink.FAMILY_V4, w.Route, w.Subnet)
	case ShimOldRoutes6:
		return delOldRoutes(k, shim, netlink.FAMILY_V6, w.Route6, w.Subnet6)
	case ShimDrop6:
		return dropIPv6(k, shim)
	}
	return fmt.Errorf("unknown repair %q", r)
}

// lowerDown adds to err, setting VLAN link l up, the name of l's lower
// device when that is down: the kernel answers ENETDOWN then
// (vlan_dev_open), which names neither. The lower device, the
// operator's trunk or bond, is left as it is.
func lowerDown(k kernel, l netlink.Link, err error) error {
	if !errors.Is(err, syscall.ENETDOWN) || l.Type() != "vlan" {
		return err
	}
	links, lerr := k.LinkList()
	if lerr != nil {
		return err
	}
	for _, ll := range links {
		if a := ll.Attrs(); l.Attrs().NetNsID < 0 && a.Index == l.Attrs().ParentIndex && a.Flags&net.FlagUp == 0 {
			return fmt.Errorf("%w: its lower device %s is down; set it up (ip link set %s up)", err, a.Name, a.Name)
		}
	}
	return err
}

// RemoveShim deletes network's shim link, name (and so its address and
// routes); removing an absent one succeeds. A link of that name not
// marked as network's shim (ShimOf) is left alone, with an error wrapping
// ErrForeignLink: an older agent's unmarked shim is marked by the first
// Ensure of the network, and one still unmarked may be anyone's. So is a
// shim whose mark names an owner (see Host.RemoveShim): another agent's
// in this network namespace.
func RemoveShim(name, network string) error { return Host{}.RemoveShim(name, network) }

func removeShim(k kernel, name, network, owner string) error {
	l, err := k.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return err
	}
	if a := l.Attrs(); !ShimOf(Link{Name: a.Name, Type: l.Type(), Alias: a.Alias}, network) || !ownersMark(a.Alias, owner) {
		return fmt.Errorf("link %s (%s, alias %q): %w %s, left alone; rename or remove it", name, l.Type(), a.Alias, ErrForeignLink, network)
	}
	return k.LinkDel(l)
}

func ignoreExists(err error) error {
	if err != nil && errors.Is(err, syscall.EEXIST) {
		return nil
	}
	return err
}

// Watch sends on the returned channel whenever a link of this network
// namespace is added, removed or changes flags (up, promiscuous), so drift
// is repaired at once rather than at the next periodic sync. Sends never
// block; changes seen while one is unread merge into it. It ends with ctx.
// When the kernel ends the subscription (its queue overflowed, a socket
// error) it logs why, sends (changes may have been lost) and subscribes
// again with backoff.
func Watch(ctx context.Context, log *slog.Logger) (<-chan struct{}, error) {
	return watch(ctx, func(ch chan<- netlink.LinkUpdate, done <-chan struct{}, onErr func(error)) error {
		return netlink.LinkSubscribeWithOptions(ch, done, netlink.LinkSubscribeOptions{ErrorCallback: onErr})
	}, log)
}

// linkSubscribe is netlink's LinkSubscribeWithOptions: updates on ch until
// done closes or the subscription fails (onErr is told, then ch closes).
type linkSubscribe func(ch chan<- netlink.LinkUpdate, done <-chan struct{}, onErr func(error)) error

func watch(ctx context.Context, subscribe linkSubscribe, log *slog.Logger) (<-chan struct{}, error) {
	var mu sync.Mutex
	var lastErr error
	onErr := func(err error) {
		mu.Lock()
		lastErr = err
		mu.Unlock()
	}
	sub := func() (chan netlink.LinkUpdate, chan struct{}, error) {
		updates := make(chan netlink.LinkUpdate, 64)
		done := make(chan struct{})
		if err := subscribe(updates, done, onErr); err != nil {
			return nil, nil, fmt.Errorf("subscribe to link changes: %w", err)
		}
		return updates, done, nil
	}
	updates, done, err := sub()
	if err != nil {
		return nil, err
	}
	out := make(chan struct{}, 1)
	signal := func() {
		select {
		case out <- struct{}{}:
		default:
		}
	}
	go func() {
		delays := backoff.Backoff{Min: 500 * time.Millisecond, Max: 30 * time.Second}
		for {
			select {
			case <-ctx.Done():
				close(done)
				return
			case _, ok := <-updates:
				if ok {
					delays.Reset()
					signal()
					continue
				}
			}
			close(done)
			signal() // what changed since is unknown: check it all
			for {
				mu.Lock()
				why := lastErr
				mu.Unlock()
				delay := delays.Next()
				log.Warn("link changes no longer received; subscribing again", "err", why, "retry_in", delay)
				backoff.Sleep(ctx, delay)
				if ctx.Err() != nil {
					return
				}
				if updates, done, err = sub(); err == nil {
					break
				}
				onErr(err)
			}
			signal()
		}
	}()
	return out, nil
}
