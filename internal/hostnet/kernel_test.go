package hostnet

import (
	"fmt"
	"maps"
	"net"
	"slices"
	"syscall"

	"github.com/vishvananda/netlink"
)

// fakeKernel is an in-memory host for Host: links by name, with their
// addresses and routes, as netlink would show them. It checks what the
// kernel checks that matters here (names of 15 bytes at most, a parent
// that exists, no two links of one name) and fails any call named in
// fail.
type fakeKernel struct {
	links  map[string]netlink.Link
	addrs  map[string][]netlink.Addr
	routes []netlink.Route
	last   int // the last link index given out
	// fail makes a call fail: "LinkSetAlias bond0.40" (method and link
	// name) → the error it returns.
	fail map[string]error
}

func newFakeKernel(links ...netlink.Link) *fakeKernel {
	k := &fakeKernel{links: map[string]netlink.Link{}, addrs: map[string][]netlink.Addr{}, fail: map[string]error{}}
	for _, l := range links {
		if err := k.LinkAdd(l); err != nil {
			panic(err)
		}
	}
	return k
}

// clone copies l, as every netlink call returns a fresh value.
func clone(l netlink.Link) netlink.Link {
	switch v := l.(type) {
	case *netlink.Vlan:
		c := *v
		return &c
	case *netlink.Macvlan:
		c := *v
		return &c
	case *netlink.IPVlan:
		c := *v
		return &c
	case *netlink.Dummy:
		c := *v
		return &c
	case *netlink.Device:
		c := *v
		return &c
	case *netlink.Veth:
		c := *v
		return &c
	case *netlink.Bond:
		c := *v
		return &c
	case *netlink.Bridge:
		c := *v
		return &c
	case *netlink.Vrf:
		c := *v
		return &c
	}
	panic(fmt.Sprintf("fakeKernel: link type %T", l))
}

func (k *fakeKernel) failure(call, name string) error { return k.fail[call+" "+name] }

// get is the stored link l names, by index as netlink does when it has one.
func (k *fakeKernel) get(l netlink.Link) (netlink.Link, error) {
	a := l.Attrs()
	for _, s := range k.links {
		if a.Index != 0 && s.Attrs().Index == a.Index || a.Index == 0 && s.Attrs().Name == a.Name {
			return s, nil
		}
	}
	return nil, syscall.ENODEV
}

func (k *fakeKernel) byIndex(i int) netlink.Link {
	for _, s := range k.links {
		if s.Attrs().Index == i {
			return s
		}
	}
	return nil
}

func (k *fakeKernel) LinkByName(name string) (netlink.Link, error) {
	if err := k.failure("LinkByName", name); err != nil {
		return nil, err
	}
	l, ok := k.links[name]
	if !ok {
		return nil, netlink.LinkNotFoundError{}
	}
	return clone(l), nil
}

// LinkList lists every link, in index order as the kernel does.
func (k *fakeKernel) LinkList() ([]netlink.Link, error) {
	var out []netlink.Link
	for _, l := range k.links {
		out = append(out, clone(l))
	}
	slices.SortFunc(out, func(a, b netlink.Link) int { return a.Attrs().Index - b.Attrs().Index })
	return out, nil
}

func (k *fakeKernel) LinkAdd(l netlink.Link) error {
	a := l.Attrs()
	if err := k.failure("LinkAdd", a.Name); err != nil {
		return err
	}
	if len(a.Name) == 0 || len(a.Name) > 15 {
		return syscall.EINVAL
	}
	if _, ok := k.links[a.Name]; ok {
		return syscall.EEXIST
	}
	// netlink reports NetNsID -1 for a link whose lower link (IFLA_LINK) is
	// in this namespace; a test gives a positive one for a veth whose peer
	// is a container's, whose ParentIndex is an index of that namespace.
	if a.NetNsID == 0 {
		a.NetNsID = -1
	}
	var parent netlink.Link
	if a.NetNsID < 0 {
		parent = k.byIndex(a.ParentIndex)
		if a.ParentIndex != 0 && parent == nil {
			return syscall.ENODEV
		}
	}
	// A device carries one link per VLAN id (net/8021q/vlan.c).
	if v, ok := l.(*netlink.Vlan); ok {
		for _, h := range k.links {
			if hv, ok := h.(*netlink.Vlan); ok && hv.ParentIndex == a.ParentIndex && hv.VlanId == v.VlanId {
				return syscall.EEXIST
			}
		}
	}
	// A macvlan made on a macvlan, or an ipvlan on an ipvlan, is made on
	// that one's lower device, and says so (drivers/net/macvlan.c,
	// ipvlan_main.c).
	t := l.Type()
	lower := parent
	if parent != nil && parent.Type() == t && (t == "macvlan" || t == "ipvlan") {
		lower = k.byIndex(parent.Attrs().ParentIndex)
	}
	if lower != nil && (t == "macvlan" || t == "ipvlan") {
		// A macvlan or ipvlan takes its lower device's receive handler,
		// which a bond or bridge holds on its ports, and links of the
		// other kind on it: netdev_rx_handler_register answers EBUSY
		// (net/core/dev.c, from macvlan_port_create and
		// ipvlan_port_create).
		if m := k.byIndex(lower.Attrs().MasterIndex); m != nil && takesPorts(m) {
			return syscall.EBUSY
		}
		for _, up := range k.links {
			if ut := up.Type(); up.Attrs().ParentIndex == lower.Attrs().Index && ut != t && (ut == "macvlan" || ut == "ipvlan") {
				return syscall.EBUSY
			}
		}
	}
	k.last++
	a.Index = k.last // netlink reads the new index back into l
	made := clone(l)
	if lower != nil {
		made.Attrs().ParentIndex = lower.Attrs().Index
	}
	k.links[a.Name] = made
	return nil
}

func (k *fakeKernel) LinkDel(l netlink.Link) error {
	s, err := k.get(l)
	if err != nil {
		return err
	}
	if err := k.failure("LinkDel", s.Attrs().Name); err != nil {
		return err
	}
	// The kernel takes the links on top of a link, its addresses and its
	// routes along.
	for _, up := range k.links {
		if up.Attrs().ParentIndex == s.Attrs().Index {
			k.LinkDel(up)
		}
	}
	delete(k.links, s.Attrs().Name)
	delete(k.addrs, s.Attrs().Name)
	k.routes = slices.DeleteFunc(k.routes, func(r netlink.Route) bool { return r.LinkIndex == s.Attrs().Index })
	return nil
}

func (k *fakeKernel) LinkSetAlias(l netlink.Link, alias string) error {
	s, err := k.get(l)
	if err != nil {
		return err
	}
	if err := k.failure("LinkSetAlias", s.Attrs().Name); err != nil {
		return err
	}
	s.Attrs().Alias = alias
	return nil
}

func (k *fakeKernel) LinkSetUp(l netlink.Link) error {
	s, err := k.get(l)
	if err != nil {
		return err
	}
	if err := k.failure("LinkSetUp", s.Attrs().Name); err != nil {
		return err
	}
	// A VLAN does not come up on a lower device that is down
	// (vlan_dev_open, net/8021q/vlan_dev.c).
	if lower := k.byIndex(s.Attrs().ParentIndex); s.Type() == "vlan" && lower != nil && lower.Attrs().Flags&net.FlagUp == 0 {
		return syscall.ENETDOWN
	}
	s.Attrs().Flags |= net.FlagUp
	return nil
}

func (k *fakeKernel) SetPromiscOn(l netlink.Link) error {
	s, err := k.get(l)
	if err != nil {
		return err
	}
	if err := k.failure("SetPromiscOn", s.Attrs().Name); err != nil {
		return err
	}
	s.Attrs().Promisc = 1
	return nil
}

// AddrList lists l's addresses of family, as the kernel does
// (netlink.FAMILY_ALL for every family), or with l nil every link's, each
// with its link's index.
func (k *fakeKernel) AddrList(l netlink.Link, family int) ([]netlink.Addr, error) {
	links := slices.Collect(maps.Values(k.links))
	if l != nil {
		s, err := k.get(l)
		if err != nil {
			return nil, err
		}
		links = []netlink.Link{s}
	}
	var out []netlink.Addr
	for _, s := range links {
		for _, a := range k.addrs[s.Attrs().Name] {
			if ofFamily(a.IP, family) {
				a.LinkIndex = s.Attrs().Index
				out = append(out, a)
			}
		}
	}
	return out, nil
}

// ofFamily reports whether ip is of netlink family.
func ofFamily(ip net.IP, family int) bool {
	switch family {
	case netlink.FAMILY_V4:
		return ip.To4() != nil
	case netlink.FAMILY_V6:
		return ip.To4() == nil
	}
	return true
}

func (k *fakeKernel) AddrAdd(l netlink.Link, a *netlink.Addr) error {
	s, err := k.get(l)
	if err != nil {
		return err
	}
	name := s.Attrs().Name
	if err := k.failure("AddrAdd", name); err != nil {
		return err
	}
	if err := k.failure("AddrAdd6", name); err != nil && a.IP.To4() == nil {
		return err
	}
	if a.IPNet == nil || a.IP == nil {
		return syscall.EINVAL
	}
	if slices.ContainsFunc(k.addrs[name], func(h netlink.Addr) bool { return h.IP.Equal(a.IP) }) {
		return syscall.EEXIST
	}
	k.addrs[name] = append(k.addrs[name], *a)
	return nil
}

func (k *fakeKernel) AddrDel(l netlink.Link, a *netlink.Addr) error {
	s, err := k.get(l)
	if err != nil {
		return err
	}
	name := s.Attrs().Name
	n := len(k.addrs[name])
	k.addrs[name] = slices.DeleteFunc(k.addrs[name], func(h netlink.Addr) bool { return h.IP.Equal(a.IP) })
	if len(k.addrs[name]) == n {
		return syscall.EADDRNOTAVAIL
	}
	return nil
}

// RouteList lists l's routes of family, or with l nil every link's.
func (k *fakeKernel) RouteList(l netlink.Link, family int) ([]netlink.Route, error) {
	index := 0
	if l != nil {
		s, err := k.get(l)
		if err != nil {
			return nil, err
		}
		index = s.Attrs().Index
	}
	var rs []netlink.Route
	for _, r := range k.routes {
		if (index == 0 || r.LinkIndex == index) && (r.Dst == nil || ofFamily(r.Dst.IP, family)) {
			rs = append(rs, r)
		}
	}
	return rs, nil
}

// RouteReplace replaces the route to the same destination and of the
// same metric, on whichever link, as the kernel does in the main table (a
// route without one is the default route).
func (k *fakeKernel) RouteReplace(r *netlink.Route) error {
	if k.byIndex(r.LinkIndex) == nil {
		return syscall.ENODEV
	}
	dst := func(r netlink.Route) string {
		if r.Dst == nil || r.Dst.IP == nil {
			return "default"
		}
		if ones, _ := r.Dst.Mask.Size(); ones == 0 {
			return "default"
		}
		return r.Dst.String()
	}
	k.routes = slices.DeleteFunc(k.routes, func(h netlink.Route) bool { return dst(h) == dst(*r) && h.Priority == r.Priority })
	// As the kernel lists it: netlink asks for protocol boot, the main
	// table and type unicast unless told others.
	made := *r
	if made.Protocol == 0 {
		made.Protocol = syscall.RTPROT_BOOT
	}
	if made.Table == 0 {
		made.Table = syscall.RT_TABLE_MAIN
	}
	if made.Type == 0 {
		made.Type = syscall.RTN_UNICAST
	}
	k.routes = append(k.routes, made)
	return nil
}

// RouteDel deletes the first route (by metric) to r's destination in r's
// table (the main table when 0) that matches what else r gives, as the
// kernel does (fib_table_delete, ip6_route_del) with what netlink sends:
// the link, metric, protocol, type and gateway when given (not zero),
// and with IPv4 the scope, which netlink always sends. None: ESRCH.
func (k *fakeKernel) RouteDel(r *netlink.Route) error {
	if r.Dst == nil || r.Dst.IP == nil {
		return fmt.Errorf("either Dst.IP, Src.IP or Gw must be set")
	}
	table := r.Table
	if table == 0 {
		table = syscall.RT_TABLE_MAIN
	}
	v4 := r.Dst.IP.To4() != nil
	best := -1
	for i, h := range k.routes {
		ht := h.Table
		if ht == 0 {
			ht = syscall.RT_TABLE_MAIN
		}
		switch {
		case h.Dst == nil || h.Dst.String() != r.Dst.String() || ht != table,
			r.LinkIndex != 0 && h.LinkIndex != r.LinkIndex,
			r.Priority != 0 && h.Priority != r.Priority,
			r.Protocol != 0 && h.Protocol != r.Protocol,
			r.Type != 0 && h.Type != r.Type,
			r.Gw != nil && !h.Gw.Equal(r.Gw),
			v4 && h.Scope != r.Scope:
			continue
		}
		if best < 0 || h.Priority < k.routes[best].Priority {
			best = i
		}
	}
	if best < 0 {
		return syscall.ESRCH
	}
	k.routes = slices.Delete(k.routes, best, best+1)
	return nil
}

func (k *fakeKernel) SetPromiscOff(l netlink.Link) error {
	s, err := k.get(l)
	if err != nil {
		return err
	}
	if err := k.failure("SetPromiscOff", s.Attrs().Name); err != nil {
		return err
	}
	s.Attrs().Promisc = 0
	return nil
}
