package hostnet

import (
	"errors"

	"github.com/vishvananda/netlink"
)

// kernel is the part of netlink that Host and the removals use, so that
// unit tests can run them on an in-memory host.
type kernel interface {
	LinkByName(name string) (netlink.Link, error)
	LinkList() ([]netlink.Link, error)
	LinkAdd(link netlink.Link) error
	LinkDel(link netlink.Link) error
	LinkSetAlias(link netlink.Link, alias string) error
	LinkSetUp(link netlink.Link) error
	SetPromiscOn(link netlink.Link) error
	SetPromiscOff(link netlink.Link) error
	AddrList(link netlink.Link, family int) ([]netlink.Addr, error)
	AddrAdd(link netlink.Link, addr *netlink.Addr) error
	AddrDel(link netlink.Link, addr *netlink.Addr) error
	RouteList(link netlink.Link, family int) ([]netlink.Route, error)
	RouteReplace(route *netlink.Route) error
	RouteDel(route *netlink.Route) error
}

// netlinkKernel is the kernel of the calling process's network namespace,
// through netlink's package functions.
type netlinkKernel struct{}

func (netlinkKernel) LinkByName(name string) (netlink.Link, error) { return netlink.LinkByName(name) }
func (netlinkKernel) LinkList() ([]netlink.Link, error)            { return netlink.LinkList() }
func (netlinkKernel) LinkAdd(l netlink.Link) error                 { return netlink.LinkAdd(l) }
func (netlinkKernel) LinkDel(l netlink.Link) error                 { return netlink.LinkDel(l) }
func (netlinkKernel) LinkSetAlias(l netlink.Link, alias string) error {
	return netlink.LinkSetAlias(l, alias)
}
func (netlinkKernel) LinkSetUp(l netlink.Link) error    { return netlink.LinkSetUp(l) }
func (netlinkKernel) SetPromiscOn(l netlink.Link) error { return netlink.SetPromiscOn(l) }
func (netlinkKernel) SetPromiscOff(l netlink.Link) error {
	return netlink.SetPromiscOff(l)
}
func (netlinkKernel) AddrList(l netlink.Link, family int) ([]netlink.Addr, error) {
	return netlink.AddrList(l, family)
}
func (netlinkKernel) AddrAdd(l netlink.Link, a *netlink.Addr) error { return netlink.AddrAdd(l, a) }
func (netlinkKernel) AddrDel(l netlink.Link, a *netlink.Addr) error { return netlink.AddrDel(l, a) }
func (netlinkKernel) RouteList(l netlink.Link, family int) ([]netlink.Route, error) {
	return netlink.RouteList(l, family)
}
func (netlinkKernel) RouteReplace(r *netlink.Route) error { return netlink.RouteReplace(r) }
func (netlinkKernel) RouteDel(r *netlink.Route) error     { return netlink.RouteDel(r) }

// retryDumps is a kernel whose listings (of links, addresses, routes)
// are made again when a concurrent change interrupted them: netlink then
// answers a partial result and ErrDumpInterrupted, and other programs
// (Docker making and moving containers' links) change them all the time.
type retryDumps struct{ kernel }

// dumpAttempts is how many times a listing is made before its
// interruption is the error.
const dumpAttempts = 5

// retryDump runs dump until it is not interrupted, dumpAttempts times at
// most. A change interrupts one listing, so the next is made at once.
func retryDump[T any](dump func() ([]T, error)) ([]T, error) {
	var err error
	for range dumpAttempts {
		var out []T
		if out, err = dump(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			return out, err
		}
	}
	return nil, err
}

func (k retryDumps) LinkList() ([]netlink.Link, error) { return retryDump(k.kernel.LinkList) }
func (k retryDumps) AddrList(l netlink.Link, family int) ([]netlink.Addr, error) {
	return retryDump(func() ([]netlink.Addr, error) { return k.kernel.AddrList(l, family) })
}
func (k retryDumps) RouteList(l netlink.Link, family int) ([]netlink.Route, error) {
	return retryDump(func() ([]netlink.Route, error) { return k.kernel.RouteList(l, family) })
}
