package hostnet

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/underlay/underlay/internal/netspec"
)

// ShimAlias is the alias (ip link's "alias") of the shim underlay made
// for network, so that removing underlay removes exactly its shims.
func ShimAlias(network string) string { return shimPrefix + network }

// shimPrefix starts every ShimAlias.
const shimPrefix = "underlay shim "

// Link is what Leftovers needs to know of a host link.
type Link struct {
	Name  string
	Type  string // netlink's kind: "macvlan", "ipvlan", "vlan", ...
	Alias string
}

// ErrForeignLink marks a link that bears a shim's name but that underlay
// did not make for the network: it is left alone.
var ErrForeignLink = errors.New("not underlay's shim of the network")

// ShimOf reports whether l is marked as the shim underlay made for
// network: a macvlan or ipvlan with its ShimAlias, naming an owner or not
// (see withOwner). Any other kind or mark was made by someone else, or
// for another network; an unmarked link may be an older agent's shim
// (see oldShim) or anyone's.
func ShimOf(l Link, network string) bool {
	n, _, ok := parseMark(l.Alias, shimPrefix)
	return ok && n == network && (l.Type == "macvlan" || l.Type == "ipvlan")
}

// ownerSep parts, in a mark, the network from the owner (Host.Owner) of
// the agent that made the link: network names hold no space.
const ownerSep = " by "

// withOwner is mark alias (a ShimAlias or OwnerAlias) naming owner; alias
// itself, as older agents marked links, when owner is "". Older agents
// take a mark naming an owner for no mark of theirs, and leave the link.
func withOwner(alias, owner string) string {
	if owner == "" {
		return alias
	}
	return alias + ownerSep + owner
}

// parseMark reads a mark starting with prefix: the network, and the
// owner that made the link ("" for an older agent's mark, or a Host's of
// no Owner). A mark naming no network as netspec names them, or naming an
// empty owner ("underlay shim web by "), was made by someone else: not
// ok, or it would pass for an older agent's, which every agent takes.
func parseMark(alias, prefix string) (network, owner string, ok bool) {
	rest, ok := strings.CutPrefix(alias, prefix)
	if !ok {
		return "", "", false
	}
	network, owner, named := strings.Cut(rest, ownerSep)
	if !netspec.IsNetworkName(network) || named && owner == "" {
		return "", "", false
	}
	return network, owner, true
}

// ownersMark reports whether a mark, alias, is owner's to take apart:
// naming owner, or naming none (older agents' marks, every agent's as
// before). One naming another owner is another agent's in this network
// namespace (another cluster's): it is left, whatever its network.
func ownersMark(alias, owner string) bool {
	for _, prefix := range []string{shimPrefix, ownedPrefix} {
		if _, o, ok := parseMark(alias, prefix); ok {
			return o == "" || o == owner
		}
	}
	return false
}

// oldShim reports whether the unmarked link of w's shim name, observed as
// o and with alias, is the shim an older agent (which did not mark shims)
// made for w: named as agents name shims, of w's kind and mode, on w's
// parent, and holding w's shim address. Ensure adopts it, marking it. A
// link that differs in any of these may be an operator's and stays as it
// is.
func (w Want) oldShim(alias string, o Observed) bool {
	return alias == "" && netspec.IsShimLinkName(w.ShimLink) && o.ShimOK && o.ShimHasIP
}

// Leftovers selects, from the links of a host, those underlay's agent
// made and nothing else: shims (a macvlan or ipvlan marked with
// ShimAlias, or unmarked but named as the agent names them) first, then
// the VLAN parents marked with OwnerAlias. A link with any other alias
// was named by someone else and stays.
func Leftovers(links []Link) []Link {
	var shims, parents []Link
	for _, l := range links {
		switch {
		case isShim(l):
			shims = append(shims, l)
		case l.Type == "vlan":
			if _, ok := Owned(l.Alias); ok {
				parents = append(parents, l)
			}
		}
	}
	return append(shims, parents...)
}

// isShim reports whether l is a shim the agent made, for any network: a
// macvlan or ipvlan marked with a ShimAlias, or unmarked but named as the
// agent names them.
func isShim(l Link) bool {
	if l.Type != "macvlan" && l.Type != "ipvlan" {
		return false
	}
	_, _, marked := parseMark(l.Alias, shimPrefix)
	return marked || (l.Alias == "" && netspec.IsShimLinkName(l.Name))
}

// Cleanup says whose links RemoveLeftovers removes: a host may hold the
// links of two underlays (two clusters' agents in one network
// namespace), whose marks name each its owner (Host.Owner).
type Cleanup struct {
	// Owner is the owner this agent's marks name (its state directory's
	// record): links marked as its own are removed, besides those whose
	// marks name no owner (older agents') and the unmarked shims older
	// agents made. "" removes only those.
	Owner string
	// All removes every underlay link, whatever owner its mark names.
	All bool
	// Promisc is the agent's record of the parents it made promiscuous:
	// those left with no macvlan link on them are made not promiscuous
	// again (see Host.ReleasePromisc). nil leaves every parent as it is.
	Promisc PromiscRecord
	// Parents is the agent's record of the VLAN parents it made: an
	// unmarked VLAN it records (made again by dockerd at boot) is the
	// agent's, and removed as its marked parents are; the records of the
	// parents removed, or gone, are removed. nil takes marked parents
	// only.
	Parents ParentRecord
	// InUse names, by link, what uses it from other network namespaces,
	// which this host's listing does not see (DockerLinks.Users, the
	// rule the agent's network removal follows too): containers
	// (running, or stopped and started again by dockerd when it starts)
	// whose macvlan or ipvlan endpoints hang off a parent (deleting it
	// would delete them), or are reached through a shim, and Docker
	// networks on a parent with no such container. Such a link is left,
	// and so is a parent's promiscuous mode. The caller asks Docker; nil:
	// nothing is.
	InUse map[string][]string
}

// CleanupReport is what RemoveLeftovers did and left.
type CleanupReport struct {
	// Removed names the links deleted, in order.
	Removed []string
	// Left are the links left because their marks name another owner.
	Left []Link
	// InUse are the links left because Cleanup.InUse names users.
	InUse []LinkUse
	// PromiscOff names the parents made not promiscuous again.
	PromiscOff []string
	// Forgotten names the parents whose records (Cleanup.Promisc) were
	// removed: made not promiscuous, gone, or of an earlier boot.
	Forgotten []string
	// Unrecorded names the VLAN parents whose records (Cleanup.Parents)
	// were removed: removed now, or gone before.
	Unrecorded []string
}

// LinkUse is a link left in use, and by what.
type LinkUse struct {
	Name  string
	Users []string
}

// ErrInUse marks links `agent cleanup` leaves because containers'
// endpoints, in their own network namespaces, use them (running, or
// when dockerd starts them again).
var ErrInUse = errors.New("in use by containers")

// takes reports whether c removes l, one of Leftovers.
func (c Cleanup) takes(l Link) bool {
	o := MarkOwner(l.Alias)
	return c.All || o == "" || o == c.Owner
}

// MarkOwner returns the owner a link's mark names (see withOwner): ""
// for a mark naming none, as older agents made them, or for an alias
// that is no underlay mark.
func MarkOwner(alias string) string {
	for _, prefix := range []string{shimPrefix, ownedPrefix} {
		if _, o, ok := parseMark(alias, prefix); ok {
			return o
		}
	}
	return ""
}

// RemoveLeftovers deletes, among what Leftovers selects of this network
// namespace's links, those c takes (shims first: a parent's removal would
// take them along anyway) and reports what it deleted, the links it left
// because their marks name another owner than c's, and those it left
// because c.InUse names users (with an error wrapping ErrInUse naming
// them); then it makes the parents c.Promisc records not promiscuous
// again, where no macvlan is left on them and c.InUse names none (see
// Host.ReleasePromisc). A VLAN parent that other links (another owner's
// shim among them) still hang off is left, with an error wrapping
// ErrParentInUse. Run it with the agent stopped, or it makes them again.
func RemoveLeftovers(c Cleanup) (CleanupReport, error) {
	return removeLeftovers(retryDumps{netlinkKernel{}}, c)
}

func removeLeftovers(k kernel, c Cleanup) (CleanupReport, error) {
	var rep CleanupReport
	all, err := k.LinkList()
	if err != nil {
		return rep, fmt.Errorf("list links: %w", err)
	}
	links := make([]Link, 0, len(all))
	for _, l := range all {
		links = append(links, Link{Name: l.Attrs().Name, Type: l.Type(), Alias: l.Attrs().Alias})
	}
	var errs []error
	h := Host{Owner: c.Owner, Parents: c.Parents}
	var recs []MadeParent
	if c.Parents != nil {
		if recs, err = c.Parents.List(); err != nil {
			errs = append(errs, fmt.Errorf("%w: taken as recording none, so VLAN parents the agent made that came back unmarked (made again by dockerd at boot) are left; fix or delete it, then run underlay agent cleanup again", err))
			h.Parents = nil
		}
	}
	// The agent's parents made again unmarked, after its marked ones.
	var recorded []Link
	for _, rec := range recs {
		if h.recordedFor(k, rec.Link) != "" {
			recorded = append(recorded, Link{Name: rec.Link, Type: "vlan"})
		}
	}
	for _, l := range append(Leftovers(links), recorded...) {
		if !c.takes(l) {
			rep.Left = append(rep.Left, l)
			continue
		}
		if users := c.InUse[l.Name]; len(users) > 0 {
			rep.InUse = append(rep.InUse, LinkUse{Name: l.Name, Users: users})
			continue
		}
		link, err := k.LinkByName(l.Name)
		if err != nil {
			var nf netlink.LinkNotFoundError
			if !errors.As(err, &nf) {
				errs = append(errs, fmt.Errorf("look up %s: %w", l.Name, err))
			}
			continue
		}
		// Judged again on the link about to go: since the listing it may
		// have been marked (another owner's agent adopting an older
		// agent's shim), or replaced.
		l = Link{Name: link.Attrs().Name, Type: link.Type(), Alias: link.Attrs().Alias}
		if len(Leftovers([]Link{l})) == 0 && h.recordedFor(k, l.Name) == "" {
			continue
		}
		if !c.takes(l) {
			rep.Left = append(rep.Left, l)
			continue
		}
		if !isShim(l) {
			if err := parentInUse(k, link); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		if err := k.LinkDel(link); err != nil {
			errs = append(errs, fmt.Errorf("delete %s %s: %w", l.Type, l.Name, err))
			continue
		}
		rep.Removed = append(rep.Removed, l.Name)
	}
	// Records of parents removed now, or gone before: a link of the name
	// made later, unmarked, is not the agent's.
	for _, rec := range recs {
		if _, err := k.LinkByName(rec.Link); !errors.As(err, new(netlink.LinkNotFoundError)) {
			continue
		}
		if err := c.Parents.Remove(rec.Link); err != nil {
			errs = append(errs, err)
			continue
		}
		rep.Unrecorded = append(rep.Unrecorded, rec.Link)
	}
	if len(rep.InUse) > 0 {
		var names []string
		for _, u := range rep.InUse {
			names = append(names, fmt.Sprintf("%s (%s)", u.Name, strings.Join(u.Users, ", ")))
		}
		errs = append(errs, fmt.Errorf("left %s: %w, whose endpoints (in their own network namespaces) would go with a parent, or the host's reach to them with a shim: stop or remove them (or remove their networks), then run underlay agent cleanup again", strings.Join(names, "; "), ErrInUse))
	}
	// After the shims: a parent's last one gone, it is left as it was.
	rel, err := releaseRecorded(k, c.Promisc, func(parent string) bool { return len(c.InUse[parent]) > 0 })
	rep.PromiscOff, rep.Forgotten = rel.off, rel.forgotten
	if err != nil {
		errs = append(errs, err)
	}
	return rep, errors.Join(errs...)
}

// Marks are the links of a network namespace underlay marked as made for
// one network.
type Marks struct {
	// Shims are the names of the shims marked with the network's
	// ShimAlias.
	Shims []string
	// Parents are the names of the VLAN parents marked with the
	// network's OwnerAlias.
	Parents []string
}

// MarkedOf is MarkedBy of marks naming no owner.
func MarkedOf(links []Link) map[string]Marks { return MarkedBy(links, "") }

// MarkedBy sorts out of links, by network, those underlay marked as made
// for a network by owner, or naming no owner (older agents' marks): shims
// (a macvlan or ipvlan with a ShimAlias) and VLAN parents (a VLAN with an
// OwnerAlias). They survive the agent, so they say what a network whose
// spec is gone left here. A link marked by another owner (another
// cluster's agent in this network namespace) is not owner's, nor is an
// unmarked link (an older agent's shim among them): its network cannot
// be told.
func MarkedBy(links []Link, owner string) map[string]Marks {
	out := map[string]Marks{}
	for _, l := range links {
		if !ownersMark(l.Alias, owner) {
			continue
		}
		network, _, shim := parseMark(l.Alias, shimPrefix)
		switch {
		case (l.Type == "macvlan" || l.Type == "ipvlan") && shim:
			m := out[network]
			m.Shims = append(m.Shims, l.Name)
			out[network] = m
		case l.Type == "vlan":
			if network, ok := Owned(l.Alias); ok {
				m := out[network]
				m.Parents = append(m.Parents, l.Name)
				out[network] = m
			}
		}
	}
	return out
}

// Marked is MarkedOf the links of this network namespace (see
// Host.Marked).
func Marked() (map[string]Marks, error) { return Host{}.Marked() }

func marked(k kernel, owner string) (map[string]Marks, error) {
	all, err := k.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	links := make([]Link, 0, len(all))
	for _, l := range all {
		// A link on a device of another namespace is no shim or parent
		// made here.
		if a := l.Attrs(); a.NetNsID < 0 {
			links = append(links, Link{Name: a.Name, Type: l.Type(), Alias: a.Alias})
		}
	}
	return MarkedBy(links, owner), nil
}

// RemoveOldShim deletes the shim an older agent (which did not mark
// shims) made for network, name, and reports whether it did: the link of
// exactly the name ShimLinkName gives the network, a macvlan or ipvlan
// without alias, whose addresses (link-local ones aside) all lie in held,
// the ranges and addresses the node holds on the network (its lease, its
// shim addresses). An older agent's shim held exactly those; a link that
// differs in any of these may be an operator's, and stays. An absent link
// is no error.
func RemoveOldShim(name, network string, held []netip.Prefix) (bool, error) {
	return removeOldShim(retryDumps{netlinkKernel{}}, name, network, held)
}

func removeOldShim(k kernel, name, network string, held []netip.Prefix) (bool, error) {
	if name != netspec.ShimLinkName(network) {
		return false, nil
	}
	l, err := k.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return false, nil
		}
		return false, fmt.Errorf("look up %s: %w", name, err)
	}
	if a := l.Attrs(); a.Alias != "" || l.Type() != "macvlan" && l.Type() != "ipvlan" {
		return false, nil
	}
	addrs, err := k.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return false, fmt.Errorf("addresses of %s: %w", name, err)
	}
	n := 0
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if ip = ip.Unmap(); ok && ip.IsLinkLocalUnicast() {
			continue
		}
		if !ok || !slices.ContainsFunc(held, func(p netip.Prefix) bool { return p.Contains(ip) }) {
			return false, nil
		}
		n++
	}
	if n == 0 {
		return false, nil
	}
	if err := k.LinkDel(l); err != nil {
		return false, fmt.Errorf("delete %s %s: %w", l.Type(), name, err)
	}
	return true, nil
}
