package doctor

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/underlay/underlay/internal/hostnet"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/shellword"
	"github.com/underlay/underlay/internal/termtext"
)

// This file turns observed facts into results. Nothing here does I/O.

// MacvlanFacts is what the kernel says about macvlan support.
type MacvlanFacts struct {
	// Loaded is true when the macvlan module is loaded (/sys/module or
	// /proc/modules).
	Loaded bool
	// Probed is true when a probe link was tried; ProbeErr is its error
	// (nil: a macvlan link could be created).
	Probed   bool
	ProbeErr error
}

// EvalMacvlan judges kernel macvlan support.
func EvalMacvlan(f MacvlanFacts) Result {
	r := Result{Check: "kernel/macvlan"}
	switch {
	case f.Loaded:
		r.Status, r.Message = OK, "macvlan module loaded"
	case f.Probed && f.ProbeErr == nil:
		r.Status, r.Message = OK, "kernel creates macvlan links (built in or loaded on demand)"
	case f.Probed:
		r.Status, r.Message = Fail, fmt.Sprintf("cannot create a macvlan link: %v", f.ProbeErr)
		r.Fix = "modprobe macvlan"
	default:
		r.Status, r.Message = Fail, "macvlan module not loaded"
		r.Fix = "modprobe macvlan"
	}
	return r
}

// VLANParent splits a parent named like a VLAN sub-interface (eth1.42) into
// its lower device and VLAN id; ok is false for other names.
func VLANParent(parent string) (lower string, vid int, ok bool) { return netspec.VLANParent(parent) }

// ModuleFacts is what the kernel says of a module some networks need.
type ModuleFacts struct {
	Module string
	// NeededBy names the networks that need it.
	NeededBy []string
	// Loaded is true when it is loaded (or built in and shown as such).
	Loaded bool
	// Probed is true when a probe link was tried; ProbeErr is its error.
	Probed   bool
	ProbeErr error
}

// moduleUse says what each module is for, in messages.
var moduleUse = map[string]string{
	"8021q":   "VLAN parents",
	"ipvlan":  "ipvlan networks",
	"bonding": "parents on a bond",
}

// EvalModule judges a kernel module the networks need.
func EvalModule(f ModuleFacts) Result {
	r := Result{Check: "kernel/" + f.Module}
	who := fmt.Sprintf("%s (network %s)", moduleUse[f.Module], strings.Join(f.NeededBy, ", "))
	switch {
	case f.Loaded:
		r.Status, r.Message = OK, fmt.Sprintf("%s loaded, for %s", f.Module, who)
	case f.Probed && f.ProbeErr == nil:
		r.Status, r.Message = OK, fmt.Sprintf("kernel makes %s links (built in or loaded on demand), for %s", f.Module, who)
	default:
		r.Status = Fail
		r.Message = fmt.Sprintf("%s not loaded: %s cannot work", f.Module, who)
		if f.Probed {
			r.Message += fmt.Sprintf(" (a probe failed: %v)", f.ProbeErr)
		}
		r.Fix = fmt.Sprintf("modprobe %s && echo %s >> /etc/modules-load.d/underlay.conf", f.Module, f.Module)
	}
	return r
}

// NetworkFacts is what this node knows about one underlay network.
type NetworkFacts struct {
	Spec netspec.Spec
	// State is this node's report for the network; nil when it has none.
	State *netspec.NodeState
	// VLANSupport is true when the kernel has 802.1q (8021q module).
	VLANSupport bool
	// Observed is the host's link state for the network, Parent what its
	// parent is (VLAN, bond); ObserveErr the error reading either. A zero
	// Parent (not read) skips the VLAN and bond checks.
	Observed   hostnet.Observed
	Parent     hostnet.ParentFacts
	ObserveErr error
	// AddrConflict and RouteConflict are what of the host's the agent
	// refuses the shim's address and route for (hostnet.Host.Conflicts):
	// the shim's address on another link, a route of the host's to the
	// shim's range; nil when there is none, or it was not looked at (no
	// range reported).
	AddrConflict, RouteConflict error
}

// Want is the host state f's network needs on this node, from the node's
// report; ok is false when the node has reported no range yet.
func (f NetworkFacts) Want() (hostnet.Want, bool) {
	w := hostnet.Want{Parent: f.Spec.Parent, Network: f.Spec.Name, Driver: f.Spec.DriverName(), IPvlanMode: f.Spec.IPvlanModeName(),
		ShimLink: netspec.ShimLinkName(f.Spec.Name), Subnet: f.Spec.Subnet, Subnet6: f.Spec.IPv6Subnet}
	if f.State == nil || !f.State.Range.IsValid() || !f.State.Shim.IsValid() || f.reportProblem() != "" {
		return w, false
	}
	// The report is a document any agent's token may write: a link name
	// the agent never gives would be pasted into the fixes.
	if netspec.IsShimLinkName(f.State.ShimLink) {
		w.ShimLink = f.State.ShimLink
	}
	w.Shim, w.Route = f.State.Shim, f.State.Range
	if f.State.Shim6.IsValid() && f.State.Range6.IsValid() {
		// An older agent reports none: only IPv4 is judged then.
		w.Shim6, w.Route6 = f.State.Shim6, f.State.Range6
	}
	return w, true
}

// reportProblem says what in this node's report no agent writes: a shim
// address of the wrong family, with a zone (which holds any text) or
// outside the network's subnet, or a range not within it. The report is a
// document any agent's token may write, and its values go into the fix
// commands: "" when they can.
func (f NetworkFacts) reportProblem() string {
	st, s := f.State, f.Spec
	if st == nil {
		return ""
	}
	var bad []string
	if st.Shim.IsValid() && (!st.Shim.Is4() || !s.Subnet.Contains(st.Shim)) {
		bad = append(bad, fmt.Sprintf("shim %s is not an IPv4 address of the subnet %s", st.Shim, s.Subnet))
	}
	if st.Range.IsValid() && !within(st.Range, s.Subnet, true) {
		bad = append(bad, fmt.Sprintf("range %s is not an IPv4 range within the subnet %s", st.Range, s.Subnet))
	}
	if st.Shim6.IsValid() && st.Range6.IsValid() {
		if !st.Shim6.Is6() || st.Shim6.Is4In6() || st.Shim6.Zone() != "" || !s.IPv6Subnet.Contains(st.Shim6) {
			bad = append(bad, fmt.Sprintf("IPv6 shim %s is not an address of the IPv6 subnet %s", st.Shim6, s.IPv6Subnet))
		}
		if !within(st.Range6, s.IPv6Subnet, false) {
			bad = append(bad, fmt.Sprintf("IPv6 range %s is not a range within the IPv6 subnet %s", st.Range6, s.IPv6Subnet))
		}
	}
	return strings.Join(bad, "; ")
}

// within says r is a masked range of the family given (v4) inside subnet.
func within(r, subnet netip.Prefix, v4 bool) bool {
	return r.Addr().Is4() == v4 && !r.Addr().Is4In6() && r == r.Masked() &&
		subnet.IsValid() && r.Bits() >= subnet.Bits() && subnet.Contains(r.Addr())
}

// EvalNetwork judges one network on this node: its state report, the
// parent (a VLAN of the right id on an up lower device, present, up, its
// bond's members, promiscuous for macvlan) and the shim (link, address,
// route).
func EvalNetwork(f NetworkFacts) []Result {
	s := f.Spec
	name := func(aspect string) string { return "network/" + s.Name + "/" + aspect }
	var rs []Result
	add := func(aspect string, st Status, msg, fix string) {
		rs = append(rs, Result{Check: name(aspect), Status: st, Message: msg, Fix: fix})
	}
	switch {
	case errors.Is(f.ObserveErr, hostnet.ErrBadLinkName):
		// Not the host's trouble: the spec's (written past network
		// create, which refuses it), and Ensure refuses it too.
		add("parent", Fail, fmt.Sprintf("%v: no agent sets anything up for %s", f.ObserveErr, s.Name),
			netspec.RemoveFix(s.Name)+"   # then create it again with --parent the interface (or VLAN) it hangs off")
		return rs
	case f.ObserveErr != nil:
		add("host", Fail, fmt.Sprintf("cannot read links: %v", f.ObserveErr), "")
		return rs
	}
	want, haveWant := f.Want()
	rs = append(rs, evalState(f, name("state"), haveWant))

	lower, vid, isVLAN := VLANParent(s.Parent)
	// A VLAN is judged as one by its kind, whatever its name (trunk40).
	switch p := f.Parent; {
	case isVLAN:
		rs = append(rs, evalVLAN(f, name("vlan"), lower, vid))
	case p.Exists && p.Type == "vlan":
		rs = append(rs, evalVLAN(f, name("vlan"), p.Lower, p.VLAN))
	}
	if hostnet.NotAsNamed(s.Parent, f.Parent) != "" {
		// The vlan check says it, with its fix: the agent refuses the
		// parent (ParentRefusal) and sets nothing up on it.
		return rs
	}
	o := f.Observed
	// The same refusal as the agent's. A link other than the VLAN its
	// name says is the vlan check's to say, above.
	refused := o
	refused.OtherVLAN = ""
	if err := hostnet.ParentRefusal(want, refused); err != nil {
		add("parent-use", Fail, fmt.Sprintf("%v: the agent sets nothing up for %s", err, s.Name), parentUseFix(s, o))
		return rs
	}
	if !o.ParentExists {
		fix := fmt.Sprintf("ip link show   # then recreate network %s with an existing --parent", s.Name)
		if isVLAN {
			fix = vlanCreate(s.Parent, lower, vid)
		}
		add("parent", Fail, fmt.Sprintf("parent %s does not exist on this host", s.Parent), fix)
		return rs
	}
	if o.ParentIsShim {
		add("parent", Fail, fmt.Sprintf("parent %s is one of underlay's host shims, not a host interface: the agent sets nothing up for %s", s.Parent, s.Name),
			netspec.RemoveFix(s.Name)+"   # then create it again with --parent the interface (or VLAN) it hangs off")
		return rs
	}
	if o.ParentUp {
		add("parent-up", OK, fmt.Sprintf("parent %s is up", s.Parent), "")
	} else {
		add("parent-up", Fail, fmt.Sprintf("parent %s is down: no container on %s can send or receive", s.Parent, s.Name), "ip link set "+shellword.Quote(s.Parent)+" up")
	}
	if b := f.Parent.Bond; b != nil {
		rs = append(rs, evalBond(*b, name("bond")))
	}
	switch {
	case !s.NeedsPromisc():
		// ipvlan endpoints share the parent's MAC address.
	case o.ParentPromisc:
		add("parent-promisc", OK, fmt.Sprintf("parent %s is promiscuous", s.Parent), "")
	default:
		add("parent-promisc", Fail, fmt.Sprintf("parent %s is not promiscuous: frames for containers' MAC addresses may be filtered", s.Parent), "ip link set "+shellword.Quote(s.Parent)+" promisc on")
	}
	if !haveWant {
		return rs // no range: the shim's address and route are unknown
	}
	rs = append(rs, evalShim(o, want, shimType(s), name)...)
	return append(rs, evalConflicts(f, want, name)...)
}

// parentUseFix is the fix of a parent the agent refuses (ParentRefusal):
// the network made again on the bond or bridge its parent is a port of,
// or on a parent without links of the other kind.
func parentUseFix(s netspec.Spec, o hostnet.Observed) string {
	again := netspec.RemoveFix(s.Name) + "   # then create it again with --parent "
	if o.PortOf != "" {
		if _, vid, ok := VLANParent(s.Parent); ok && !o.ParentExists {
			return again + fmt.Sprintf("%s.%d (VLAN %d on %s %s)", o.PortOf, vid, vid, o.PortOfKind, o.PortOf)
		}
		return again + fmt.Sprintf("%s (the %s), or a VLAN on it", o.PortOf, o.PortOfKind)
	}
	return fmt.Sprintf("ip -d link show   # %s sits on %s: remove it (ip link del NAME) if nothing uses it, or recreate %s on a parent without it", o.OtherKind, s.Parent, s.Name)
}

// evalConflicts fails what of the host's the agent refuses the shim's
// address and route for: the shim's address on another link, a route of
// the host's to the shim's range. None when there is none: the shim's
// own checks say the rest.
func evalConflicts(f NetworkFacts, w hostnet.Want, name func(string) string) []Result {
	var rs []Result
	if f.AddrConflict != nil {
		rs = append(rs, Result{Check: name("address-free"), Status: Fail, Message: f.AddrConflict.Error(),
			Fix: netspec.RemoveFix(f.Spec.Name) + "   # then create it again with an --ip-range that leaves out the hosts' addresses"})
	}
	if f.RouteConflict != nil {
		show := fmt.Sprintf("ip route show %s", w.Route)
		if w.Shim6.IsValid() {
			show += fmt.Sprintf("; ip -6 route show %s", w.Route6)
		}
		rs = append(rs, Result{Check: name("route-free"), Status: Fail, Message: f.RouteConflict.Error(),
			Fix: show + "   # delete that route (ip route del …) if the host needs it no more, or recreate " + f.Spec.Name + " with an --ip-range the host does not route"})
	}
	return rs
}

// shimType is netspec.ShimType with the ipvlan mode as one shell word: a
// spec is read as written, and the type goes into the shim's fixes.
func shimType(s netspec.Spec) string {
	if s.DriverName() == netspec.IPvlan {
		return "ipvlan mode " + shellword.Quote(s.IPvlanModeName())
	}
	return netspec.ShimType(s)
}

// vlanCreate is the command making parent, VLAN vid on lower. The
// parent is a spec's, read as written: each name is one shell word.
func vlanCreate(parent, lower string, vid int) string {
	p := shellword.Quote(parent)
	return fmt.Sprintf("ip link add link %s name %s type vlan id %d && ip link set %s up", shellword.Quote(lower), p, vid, p)
}

// EvalBadSpec is the failure of a network whose spec document cannot be
// read: every agent leaves the network alone, and `network rm` removes it
// by its name alone.
func EvalBadSpec(b netspec.BadSpec) Result {
	return Result{Check: "network/" + b.Name + "/spec", Status: Fail,
		Message: fmt.Sprintf("spec %s cannot be read, and no agent sets anything up for the network: %v", termtext.Cell(b.Key), b.Err),
		Fix:     netspec.RemoveFix(b.Name) + "   # then create it again (underlay network create …)"}
}

// EvalParentRecord is the warning of the agent's record of the VLAN
// parents it made, at where, that cannot be read (err): the agent takes
// it as recording none, so no unmarked parent is taken for its own.
func EvalParentRecord(where string, err error) Result {
	r := Result{Check: "network/vlan-parents", Status: Warn,
		Message: fmt.Sprintf("the agent's record of the VLAN parents it made cannot be read: %v; the agent takes it as recording none, so a parent dockerd made again unmarked at boot shows as made by hand, is not marked again by the agent, and is left by agent cleanup", err),
		Fix:     "rm " + shellword.Quote(where) + "   # or mend it: the agent records the parents it marked again at its next sync"}
	if !errors.Is(err, hostnet.ErrBadParentRecord) {
		r.Fix = "ls -l " + shellword.Quote(where) + "   # run underlay doctor as the agent runs (root), with the agent's --state-dir"
	}
	return r
}

// evalVLAN judges a VLAN parent, VLAN vid on lower as its name says or,
// named otherwise, as its link is: the kernel's 802.1q support, and, when
// the parent exists, that it is what its name says (hostnet.NotAsNamed),
// that lower is up, and that its MTU fits lower's.
func evalVLAN(f NetworkFacts, check, lower string, vid int) Result {
	s, p := f.Spec, f.Parent
	r := Result{Check: check}
	create := vlanCreate(s.Parent, lower, vid)
	switch {
	case !f.VLANSupport:
		r.Status, r.Fix = Fail, "modprobe 8021q"
		r.Message = fmt.Sprintf("parent %s is VLAN %d on %s but the kernel has no 802.1q support (8021q not loaded)", s.Parent, vid, lower)
	case !p.Exists && p.Lower != "" && !p.LowerExists:
		r.Status, r.Fix = Fail, "ip link show   # then recreate network "+s.Name+" on an existing device"
		r.Message = fmt.Sprintf("parent %s is VLAN %d on %s, which does not exist on this host", s.Parent, vid, lower)
	case !p.Exists:
		r.Status, r.Message = OK, fmt.Sprintf("parent %s is VLAN %d on %s and the kernel has 802.1q", s.Parent, vid, lower)
	case hostnet.NotAsNamed(s.Parent, p) != "":
		// The agent's rule: it refuses the parent.
		r.Status, r.Fix = Fail, "ip link del "+shellword.Quote(s.Parent)+" && "+create
		r.Message = fmt.Sprintf("parent %s is %s, not VLAN %d on %s as its name says: the agent sets nothing up for %s (its containers would not be on VLAN %d)",
			s.Parent, hostnet.NotAsNamed(s.Parent, p), vid, lower, s.Name, vid)
	case !p.LowerUp:
		r.Status, r.Fix = Fail, "ip link set "+shellword.Quote(lower)+" up"
		r.Message = fmt.Sprintf("%s's lower device %s is down", s.Parent, lower)
	case p.MTU > p.LowerMTU:
		r.Status, r.Fix = Fail, fmt.Sprintf("ip link set %s mtu %d", shellword.Quote(s.Parent), p.LowerMTU)
		r.Message = fmt.Sprintf("%s's MTU %d exceeds %s's %d: large frames are dropped", s.Parent, p.MTU, lower, p.LowerMTU)
	default:
		by := "made by hand"
		if n, ok := hostnet.Owned(p.Alias); ok {
			by = "made by underlay for network " + n
		} else if p.Alias == "" && f.Observed.ParentMadeFor != "" {
			// dockerd made it again at boot, unmarked, before the agent ran.
			by = fmt.Sprintf("made by underlay for network %s (recorded in %s; the agent marks it again at its next sync)", f.Observed.ParentMadeFor, hostnet.ParentsFileName)
		}
		r.Status, r.Message = OK, fmt.Sprintf("%s is VLAN %d on %s, MTU %d (%s)", s.Parent, vid, lower, p.MTU, by)
	}
	return r
}

// evalBond judges the bond under a parent: every member up, in
// active-backup one of them active.
func evalBond(b hostnet.BondFacts, check string) Result {
	r := Result{Check: check}
	var up, down []string
	for _, m := range b.Members {
		if m.Up {
			up = append(up, m.Name)
		} else {
			down = append(down, m.Name)
		}
	}
	active := ""
	if b.Active != "" {
		active = ", active " + b.Active
	}
	switch {
	case len(b.Members) == 0:
		r.Status, r.Fix = Fail, fmt.Sprintf("ip link set NIC down && ip link set NIC master %s   # for each of its NICs", shellword.Quote(b.Name))
		r.Message = fmt.Sprintf("bond %s (%s) has no members: nothing leaves the host", b.Name, b.Mode)
	case len(up) == 0:
		r.Status, r.Fix = Fail, fmt.Sprintf("ip link set %s up   # and check the cables and switch ports", shellword.Quote(down[0]))
		r.Message = fmt.Sprintf("bond %s (%s): every member is down (%s)", b.Name, b.Mode, strings.Join(down, ", "))
	case len(down) > 0:
		r.Status, r.Fix = Warn, fmt.Sprintf("ip link set %s up   # and check its cable and switch port", shellword.Quote(down[0]))
		r.Message = fmt.Sprintf("bond %s (%s%s): member %s down, no redundancy left", b.Name, b.Mode, active, strings.Join(down, ", "))
	default:
		r.Status = OK
		r.Message = fmt.Sprintf("bond %s (%s%s): members %s up", b.Name, b.Mode, active, strings.Join(up, ", "))
	}
	return r
}

func evalState(f NetworkFacts, check string, haveWant bool) Result {
	r := Result{Check: check}
	inspect := "underlay network inspect " + shellword.Quote(f.Spec.Name)
	switch {
	case f.State == nil:
		r.Status, r.Message, r.Fix = Fail, "this node has not reported the network: is the underlay agent running here?", inspect
	case f.State.State == netspec.StateError:
		r.Status, r.Message, r.Fix = Fail, "the agent reports an error: "+f.State.Error, inspect
	case f.State.State == netspec.StateInvalid:
		r.Status, r.Message = Fail, "the agent refuses the network's spec, and changed nothing for it: "+f.State.Error
		// network rm removes a refused spec, unless its name is none.
		r.Fix = netspec.RemoveFix(f.Spec.Name) + "   # then create it again with valid values (underlay network create …)"
	case f.State.State != netspec.StateReady:
		r.Status, r.Message, r.Fix = Warn, "the agent reports the network "+f.State.State, inspect
	case !haveWant && f.reportProblem() != "":
		r.Status, r.Fix = Fail, inspect
		r.Message = "this node's report is not one its agent writes, and nothing is judged from it: " + f.reportProblem()
	case !haveWant:
		r.Status, r.Message, r.Fix = Fail, "the agent reports ready but no range or shim address", inspect
	default:
		r.Status, r.Message = OK, fmt.Sprintf("ready: range %s, shim %s", f.State.Range, f.State.Shim)
		if f.State.Range6.IsValid() {
			r.Message += fmt.Sprintf("; IPv6 range %s, shim %s", f.State.Range6, f.State.Shim6)
		}
	}
	return r
}

func evalShim(o hostnet.Observed, w hostnet.Want, shimType string, name func(string) string) []Result {
	v6 := w.Shim6.IsValid()
	addr6 := fmt.Sprintf("ip -6 addr replace %s/128 dev %s nodad", w.Shim6, w.ShimLink)
	route6 := fmt.Sprintf("ip -6 route add %s dev %s metric 1", w.Route6, w.ShimLink)
	steps := []string{
		fmt.Sprintf("ip link add %s link %s type %s", w.ShimLink, shellword.Quote(w.Parent), shimType),
		fmt.Sprintf("ip addr add %s/32 dev %s", w.Shim, w.ShimLink),
	}
	if v6 {
		steps = append(steps, addr6)
	}
	steps = append(steps, fmt.Sprintf("ip link set %s up", w.ShimLink), fmt.Sprintf("ip route add %s dev %s", w.Route, w.ShimLink))
	if v6 {
		steps = append(steps, route6)
	}
	create := strings.Join(steps, " && ")
	ranges := w.Route.String()
	if v6 {
		ranges += " and " + w.Route6.String()
	}
	shim := Result{Check: name("shim")}
	switch {
	case !o.ShimExists:
		shim.Status, shim.Fix = Fail, create
		shim.Message = fmt.Sprintf("shim %s missing: this host cannot reach its own containers on %s", w.ShimLink, ranges)
	case o.ShimForeign:
		// Not underlay's: the agent leaves it, and so does the advice.
		shim.Status, shim.Fix = Fail, fmt.Sprintf("ip -d link show %s   # someone else's link has the shim's name: rename or remove it, and the agent makes the shim", w.ShimLink)
		shim.Message = fmt.Sprintf("%s is not underlay's shim of %s (not marked as it, nor an older agent's %s on %s with %s): the agent leaves it alone, and this host cannot reach its own containers on %s", w.ShimLink, w.Network, shimType, w.Parent, w.Shim, ranges)
	case !o.ShimOK:
		shim.Status, shim.Fix = Fail, fmt.Sprintf("ip link del %s && ", w.ShimLink)+create
		shim.Message = fmt.Sprintf("%s is not a %s on %s", w.ShimLink, shimType, w.Parent)
	case !o.ShimUp:
		// Setting a link down flushes its IPv6 addresses and every route.
		fix := []string{fmt.Sprintf("ip link set %s up", w.ShimLink), fmt.Sprintf("ip route add %s dev %s", w.Route, w.ShimLink)}
		if v6 {
			fix = []string{addr6, fix[0], fix[1], route6}
		}
		shim.Status, shim.Fix = Fail, strings.Join(fix, " && ")
		shim.Message = fmt.Sprintf("shim %s is down", w.ShimLink)
	default:
		shim.Status, shim.Message = OK, fmt.Sprintf("shim %s is a %s on %s, up", w.ShimLink, shimType, w.Parent)
	}
	if shim.Status == Fail && (!o.ShimExists || !o.ShimOK || o.ShimForeign) {
		return []Result{shim}
	}
	rs := []Result{shim}
	addr := Result{Check: name("shim-address")}
	if o.ShimHasIP {
		addr.Status, addr.Message = OK, fmt.Sprintf("shim %s has %s", w.ShimLink, w.Shim)
	} else {
		addr.Status, addr.Message = Fail, fmt.Sprintf("shim %s lacks its address %s", w.ShimLink, w.Shim)
		addr.Fix = fmt.Sprintf("ip addr add %s/32 dev %s && ip route add %s dev %s", w.Shim, w.ShimLink, w.Route, w.ShimLink)
	}
	route := Result{Check: name("route")}
	if o.RouteViaOK {
		route.Status, route.Message = OK, fmt.Sprintf("route to %s via %s", w.Route, w.ShimLink)
	} else {
		route.Status, route.Message = Fail, fmt.Sprintf("no route to this node's range %s via %s: the host reaches its containers through the parent, which macvlan forbids", w.Route, w.ShimLink)
		route.Fix = fmt.Sprintf("ip route add %s dev %s", w.Route, w.ShimLink)
	}
	rs = append(rs, addr, route)
	if !v6 {
		return rs
	}
	a6 := Result{Check: name("shim-address6")}
	if o.ShimHasIP6 {
		a6.Status, a6.Message = OK, fmt.Sprintf("shim %s has %s", w.ShimLink, w.Shim6)
	} else {
		a6.Status, a6.Message = Fail, fmt.Sprintf("shim %s lacks its IPv6 address %s", w.ShimLink, w.Shim6)
		a6.Fix = addr6 + " && " + route6
	}
	r6 := Result{Check: name("route6")}
	if o.Route6ViaOK {
		r6.Status, r6.Message = OK, fmt.Sprintf("route to %s via %s", w.Route6, w.ShimLink)
	} else {
		r6.Status, r6.Message = Fail, fmt.Sprintf("no route to %s via %s: the host reaches its containers' IPv6 addresses through the parent, which macvlan forbids", w.Route6, w.ShimLink)
		r6.Fix = route6
	}
	return append(rs, a6, r6)
}

// MaxRows bounds the rows of one check that name one thing each (an
// unreachable address, a bad key, a removed node, a lost task): past it,
// one more row counts the rest, so that neither the table nor the agent's
// published report (one Consul key, 512 KiB at most) grows with what it
// lists.
const MaxRows = 20

// capRows keeps the first MaxRows of rs and, past them, one row counting
// the rest (what names them) with the worst of their statuses, and their
// counts by status (Omitted), so that counts of the results (the
// dashboard's) stay those of every row.
func capRows(rs []Result, what string) []Result {
	if len(rs) <= MaxRows {
		return rs
	}
	rest := rs[MaxRows:]
	worst, c := OK, Counts(rest)
	switch {
	case c.Fail > 0:
		worst = Fail
	case c.Warn > 0:
		worst = Warn
	}
	return append(rs[:MaxRows:MaxRows], Result{Check: rest[0].Check, Status: worst, Omitted: &c,
		Message: fmt.Sprintf("%d more %s, not shown (%d in all; the first %d above)", len(rest), what, len(rs), MaxRows)})
}

// BadKey is a key of a cluster-IPAM pool that cannot be read (see
// ipam.BadDoc); Effect says what skipping it does.
type BadKey struct {
	Key, Problem, Effect, Fix string
}

// EvalIPAMDocuments judges one cluster-IPAM pool's KV documents: every
// bad key fails, with the command that removes it.
func EvalIPAMDocuments(pool string, bad []BadKey, err error) []Result {
	return evalKeys("ipam/"+pool+"/documents", "the pool", "every document of "+pool+" is readable", "is skipped", bad, err)
}

// EvalInventories judges the inventories the agents publish: every one
// that cannot be read fails, with the command that removes it.
func EvalInventories(bad []BadKey, err error) []Result {
	return evalKeys("inventory/documents", "the inventories", "every published inventory is readable",
		"is skipped by underlay ips and the dashboard", bad, err)
}

// EvalTaskReports judges the task metrics reports the agents publish:
// every one the built-in metrics do not count fails, with the command that
// removes it.
func EvalTaskReports(bad []BadKey, err error) []Result {
	return evalKeys("taskmetrics/reports", "the task metrics reports", "every published task metrics report is counted",
		"is not counted by underlay:cpu and underlay:memory", bad, err)
}

// evalKeys judges KV documents read together (what): a failed read fails
// once; each bad key fails, saying it is skipped and how to remove it.
func evalKeys(check, what, allOK, skipped string, bad []BadKey, err error) []Result {
	if err != nil {
		return []Result{{Check: check, Status: Fail, Message: fmt.Sprintf("cannot read %s from Consul: %v", what, err),
			Fix: "consul members   # the Consul agent must be reachable (see consul/agent)"}}
	}
	if len(bad) == 0 {
		return []Result{{Check: check, Status: OK, Message: allOK}}
	}
	var rs []Result
	for _, b := range bad {
		msg := fmt.Sprintf("%s %s (%s)", termtext.Cell(b.Key), skipped, b.Problem)
		if b.Effect != "" {
			msg += ": " + b.Effect
		}
		rs = append(rs, Result{Check: check, Status: Fail, Fix: b.Fix, Message: msg})
	}
	return capRows(rs, "keys that cannot be used")
}

// EvalRemovedNodes judges, on a manager, the facts agents published
// against the swarm's nodes: a node the swarm no longer lists (docker node
// rm forgot it, and its ID never comes back) whose records remain warns,
// with `underlay node rm ID`. Its ranges stay leased and `network rm`
// waits for it until then.
func EvalRemovedNodes(manager bool, facts []netspec.NodeFacts, swarmIDs map[string]bool, err error) []Result {
	const check = "nodes/removed"
	switch {
	case !manager:
		return []Result{{Check: check, Status: OK, Message: "checked on managers"}}
	case err != nil:
		return []Result{{Check: check, Status: Warn, Message: fmt.Sprintf("not checked: %v", err)}}
	}
	var rs []Result
	for _, f := range facts {
		if f.ID == "" || swarmIDs[f.ID] {
			continue
		}
		rs = append(rs, Result{Check: check, Status: Warn,
			Message: fmt.Sprintf("node %s (swarm node %s) is no longer a swarm node, but its records remain in Consul (facts of %s): its ranges stay leased and network rm waits for it",
				termtext.Cell(f.Node), termtext.Cell(f.ID), f.UpdatedAt.UTC().Format(time.RFC3339)),
			Fix: "underlay node rm " + shellword.Quote(f.ID)}) // the ID is a key any agent may write
	}
	if len(rs) == 0 {
		return []Result{{Check: check, Status: OK, Message: fmt.Sprintf("every node with records in Consul (%d) is a swarm node", len(facts))}}
	}
	return capRows(rs, "removed nodes with records in Consul")
}

// EvalFacts judges the node facts documents: each filed under another
// identity than the one it names warns (MisfiledResult), and so does each
// that cannot be read (UnreadableFactsResult), which every reader leaves
// out. Without them, nothing is checked, which warns.
func EvalFacts(l netspec.FactsListing, err error) []Result {
	const check = "nodes/facts"
	switch {
	case err != nil:
		return []Result{{Check: check, Status: Warn, Message: fmt.Sprintf("cannot read the node facts from Consul, not checked: %v", err),
			Fix: "consul members   # the Consul agent must be reachable (see consul/agent)"}}
	}
	var rs []Result
	noNode := map[string]bool{} // their keys, which need no misfiled warning too
	for _, f := range l.Facts {
		if r, ok := NoNodeFactsResult(f); ok {
			rs = append(rs, r)
			noNode[f.FactsKey()] = true
		} else if r, ok := InvalidNamesResult(f); ok {
			rs = append(rs, r)
		}
	}
	for _, m := range l.Misfiled {
		if !noNode[m.Key] {
			rs = append(rs, MisfiledResult(m))
		}
	}
	for _, u := range l.Unreadable {
		rs = append(rs, UnreadableFactsResult(u))
	}
	if len(rs) == 0 {
		return []Result{{Check: check, Status: OK, Message: fmt.Sprintf("every node's facts (%d) name the identity their key does", len(l.Facts))}}
	}
	return capRows(rs, "facts documents naming another identity than their key, under a key naming no swarm node, giving names no agent writes, or unreadable")
}

// NoNodeFactsResult is the nodes/facts warning of facts under a key no
// agent writes (netspec.NodeFacts.KeyProblem: agents write theirs under
// NodesKVPrefix and their swarm node ID, older ones, naming no ID, under
// the node name they name): they are no node's, and node ls, ips, node
// rm by name, the IPAM's departed-node reclaim and the dashboard leave
// them out. ok is false for any other facts.
func NoNodeFactsResult(f netspec.NodeFacts) (r Result, ok bool) {
	err := f.KeyProblem()
	if err == nil {
		return Result{}, false
	}
	key := f.FactsKey()
	fix, why := shellword.KVRemoval(key, "")
	c := termtext.Cell // a key and a name anyone with an agent's token may write
	return Result{Check: "nodes/facts", Status: Warn,
		Message: fmt.Sprintf("%s holds facts of node %s under a key naming no swarm node (%v): no agent writes it (agents write theirs under %sSWARM-NODE-ID); left out by node ls, underlay ips, node rm by name, the IPAM's departed-node reclaim and the dashboard",
			c(key), c(f.Node), err, netspec.NodesKVPrefix) + why,
		Fix: fix}, true
}

// InvalidNamesResult is the nodes/facts warning of an agent's facts
// giving a node or host name no agent writes (netspec.NodeFacts.
// NameProblem): node ls shows it as invalid. Deleted, the facts are
// written again by their key's agent, while one runs, with the names it
// has. ok is false for facts with no such name.
func InvalidNamesResult(f netspec.NodeFacts) (r Result, ok bool) {
	err := f.NameProblem()
	if err == nil {
		return Result{}, false
	}
	key := f.FactsKey()
	fix, why := shellword.KVRemoval(key, fmt.Sprintf(" (the agent of swarm node %s, while it runs, publishes its own facts again)",
		shellword.Quote(strings.TrimPrefix(key, netspec.NodesKVPrefix))))
	return Result{Check: "nodes/facts", Status: Warn,
		Message: termtext.Cell(err.Error()) + ": no agent writes such names; node ls shows them as invalid" + why,
		Fix:     fix}, true
}

// UnreadableFactsResult is the nodes/facts warning of a facts document
// that does not decode: node ls, node rm, ips and the dashboard leave it
// out, so nothing else shows it. Deleted, it is written again by its
// key's agent, while one runs.
func UnreadableFactsResult(u netspec.UnreadableFacts) Result {
	id := strings.TrimPrefix(u.Key, netspec.NodesKVPrefix)
	fix, why := shellword.KVRemoval(u.Key, fmt.Sprintf(" (the agent of swarm node %s, while it runs, publishes its own facts again)", shellword.Quote(id)))
	c := termtext.Cell // a key and an error anyone with an agent's token may write
	return Result{Check: "nodes/facts", Status: Warn,
		Message: fmt.Sprintf("%s holds facts that cannot be read (%s): skipped by node ls, node rm, underlay ips and the dashboard", c(u.Key), c(u.Problem)) + why,
		Fix:     fix}
}

// MisfiledResult is the nodes/facts warning of a facts document naming
// another identity than its key's: node ls, node rm, ips and the
// dashboard take it as its key's identity's facts, but no agent writes
// one. Deleted, it is written again by its key's agent, while one runs.
func MisfiledResult(m netspec.MisfiledFacts) Result {
	// The identity is the key's, which anyone with an agent's token may
	// write: one shell word, as the key is.
	fix, why := shellword.KVRemoval(m.Key, fmt.Sprintf(" (the agent of swarm node %s, while it runs, publishes its own facts again)",
		shellword.Quote(strings.TrimPrefix(m.Key, netspec.NodesKVPrefix))))
	return Result{Check: "nodes/facts", Status: Warn,
		Message: m.String() + "; no agent writes such a document (each writes its own identity's, naming it): it was written by hand, or copied" + why,
		Fix:     fix}
}

// HeldStartWarn is how long a container start may hold an address, kept
// unheld by its node's sweep, before the doctor warns: Swarm's and
// Docker's starts take seconds; minutes mean a hung dockerd (or runtime).
const HeldStartWarn = 10 * time.Minute

// EvalKeptStarts judges the addresses of one pool that node (this node's
// identity) keeps for container starts under way: none, no result; one
// kept longer than HeldStartWarn warns, since the address cannot be
// reclaimed until the start ends; one dated in the future warns too,
// saying by how much, and one with no date at all.
func EvalKeptStarts(pool, node string, kept []KeptAddr, now time.Time) []Result {
	// Dated in the future (this node's clock set back, a key written by
	// hand): no age can be judged, and none is shown negative. Undated
	// (only a hand-written key has no date): judged by the zero time it
	// would read as held since year 1.
	var mine, future, undated []KeptAddr
	for _, k := range kept {
		switch {
		case k.Node != node:
		case k.Allocated.IsZero():
			undated = append(undated, k)
		case k.Allocated.Sub(now).Round(time.Second) > 0:
			future = append(future, k)
		default:
			mine = append(mine, k)
		}
	}
	if node == "" {
		return nil
	}
	check := "ipam/" + pool + "/starts"
	var rs []Result
	if len(undated) > 0 {
		first := slices.MinFunc(undated, func(a, b KeptAddr) int { return a.Addr.Compare(b.Addr) })
		what := andMore(first.Addr, len(undated))
		rs = append(rs, Result{Check: check, Status: Warn,
			Message: fmt.Sprintf("%s kept for a container start under way on this node has no allocation date: the pool's key was written by hand; how long the start has held it cannot be judged",
				what)})
	}
	if len(future) > 0 {
		latest := slices.MaxFunc(future, func(a, b KeptAddr) int { return a.Allocated.Compare(b.Allocated) })
		what := andMore(latest.Addr, len(future))
		rs = append(rs, Result{Check: check, Status: Warn,
			Message: fmt.Sprintf("%s kept for a container start under way on this node is dated %s, %s in the future: this node's clock was set back, or the pool's key was written by hand; how long the start has held it cannot be judged",
				what, latest.Allocated.UTC().Format(time.RFC3339), latest.Allocated.Sub(now).Round(time.Second))})
	}
	if len(mine) == 0 {
		return rs
	}
	slices.SortFunc(mine, func(a, b KeptAddr) int { return a.Allocated.Compare(b.Allocated) })
	oldest := mine[0]
	age := max(now.Sub(oldest.Allocated).Round(time.Second), 0)
	if age < HeldStartWarn {
		return append(rs, Result{Check: check, Status: OK, Message: fmt.Sprintf("%d address(es) kept for container starts under way on this node, the oldest allocated %s ago", len(mine), age)})
	}
	what := andMore(oldest.Addr, len(mine))
	return append(rs, Result{Check: check, Status: Warn,
		Message: fmt.Sprintf("%s kept for a container start under way on this node since %s (%s ago): a start that long means a hung dockerd or runtime; the address cannot be reclaimed until the start ends",
			what, oldest.Allocated.UTC().Format(time.RFC3339), age),
		Fix: "docker ps -a --filter status=created --filter status=restarting   # the starts under way; docker inspect on one that hangs names a hung dockerd"})
}

// andMore names addr, one of n addresses, and how many more there are.
func andMore(addr netip.Addr, n int) string {
	if n > 1 {
		return fmt.Sprintf("%s (and %d more)", addr, n-1)
	}
	return addr.String()
}

// NetfilterFacts is the state behind the bridge-netfilter/FORWARD trap.
type NetfilterFacts struct {
	// BridgeCallIPTables is the content of
	// /proc/sys/net/bridge/bridge-nf-call-iptables; "" when absent
	// (br_netfilter not loaded).
	BridgeCallIPTables string
	// Chains are table filter's FORWARD chains of iptables' backends
	// (nf_tables, legacy) that have one; none: neither has, and nothing
	// is dropped there. Bridged traffic passes through each.
	Chains []ForwardChain
	// PolicyErr is why a backend's chain could not be read; nil when
	// Chains are all there are.
	PolicyErr error
	// ReadErr is why BridgeNFCallIPTables could not be read; nil when it
	// was, or is absent.
	ReadErr error
}

// BridgeNFCallIPTables says whether bridged frames pass through
// iptables; absent while br_netfilter is not loaded.
const BridgeNFCallIPTables = "/proc/sys/net/bridge/bridge-nf-call-iptables"

// acceptBridgedArgs is the rule that accepts all bridged traffic, as
// iptables takes it after the chain. Any other match added to it (an
// interface, a protocol, a bridge port, a mark, a '!' negating it)
// accepts only part of that traffic, or none, and leaves the rest to the
// policy.
const acceptBridgedArgs = "-m physdev --physdev-is-bridged -j ACCEPT"

// backendCommand is the iptables command that writes backend's rules
// whichever of the two the host's plain `iptables` is.
func backendCommand(backend string) string {
	if backend == BackendLegacy {
		return "iptables-legacy"
	}
	return "iptables-nft"
}

// EvalNetfilter judges the bridge-netfilter/FORWARD trap: bridged frames
// pass through iptables' FORWARD chains when bridge-nf-call-iptables is 1,
// and a DROP policy (Docker sets one) in either backend's then silently
// drops them unless a rule of that chain accepts them.
func EvalNetfilter(f NetfilterFacts) Result {
	r := Result{Check: "netfilter/bridge-forward"}
	nf := strings.TrimSpace(f.BridgeCallIPTables)
	var trapped, described []string
	var fixes []string
	for _, c := range f.Chains {
		d := fmt.Sprintf("FORWARD policy %s (%s)", c.Policy, c.Backend)
		switch {
		case c.Policy == "ACCEPT":
		case c.AcceptsBridged:
			d += ", but a rule accepts bridged traffic"
		default:
			trapped = append(trapped, d)
			fixes = append(fixes, backendCommand(c.Backend)+" -I FORWARD "+acceptBridgedArgs)
		}
		described = append(described, d)
	}
	switch {
	case f.ReadErr != nil:
		r.Status, r.Message = Warn, fmt.Sprintf("cannot read %s (%v): bridged traffic may be dropped", BridgeNFCallIPTables, f.ReadErr)
		r.Fix = "sysctl net.bridge.bridge-nf-call-iptables"
	case nf == "" || nf == "0":
		r.Status, r.Message = OK, "bridged traffic does not pass through iptables (bridge-nf-call-iptables off or br_netfilter not loaded)"
	case len(trapped) > 0:
		r.Status = Warn
		r.Message = fmt.Sprintf("bridge-nf-call-iptables=1 and iptables %s: bridged traffic is silently dropped unless a rule accepts it", strings.Join(trapped, "; "))
		if f.PolicyErr != nil {
			r.Message += fmt.Sprintf(" (and %v)", f.PolicyErr)
		}
		r.Fix = strings.Join(fixes, " && ") + "   # or: sysctl -w net.bridge.bridge-nf-call-iptables=0"
	case f.PolicyErr != nil:
		r.Status, r.Message = Warn, fmt.Sprintf("bridge-nf-call-iptables=1 and the FORWARD policy is unknown (%v): bridged traffic may be dropped", f.PolicyErr)
		r.Fix = "iptables-nft -S FORWARD; iptables-legacy -S FORWARD"
	case len(f.Chains) == 0:
		r.Status, r.Message = OK, "bridge-nf-call-iptables=1 but iptables has no FORWARD chain (nf_tables or legacy): nothing is dropped there, as by policy ACCEPT"
	default:
		r.Status, r.Message = OK, "bridge-nf-call-iptables=1 and iptables "+strings.Join(described, "; ")
	}
	return r
}

// MinDockerVersion is the oldest Docker Engine underlay supports.
const MinDockerVersion = "20.10"

// DockerFacts is what the local Docker daemon says about itself.
type DockerFacts struct {
	Err     error  // nil when the daemon answered
	Version string // "20.10.24+dfsg1"
	// SwarmState is Docker's LocalNodeState: active, inactive, pending,
	// error or locked.
	SwarmState string
	Manager    bool
	// PluginDir reports whether /run/docker/plugins exists.
	PluginDir bool
}

// EvalDocker judges the Docker daemon: version, swarm membership, plugin
// socket directory.
func EvalDocker(f DockerFacts) []Result {
	if f.Err != nil {
		return []Result{{Check: "docker/daemon", Status: Fail, Message: fmt.Sprintf("Docker daemon not reachable: %v", f.Err),
			Fix: "systemctl start docker   # or set DOCKER_HOST to this node's daemon"}}
	}
	var rs []Result
	v := Result{Check: "docker/version"}
	if newer, ok := versionAtLeast(f.Version, MinDockerVersion); !ok {
		v.Status, v.Message = Warn, fmt.Sprintf("cannot read Docker version %s", termtext.Q(f.Version))
	} else if !newer {
		v.Status, v.Message = Fail, fmt.Sprintf("Docker %s is older than %s", termtext.Cell(f.Version), MinDockerVersion)
		v.Fix = "apt-get install docker.io   # or your distribution's Docker Engine >= " + MinDockerVersion
	} else {
		v.Status, v.Message = OK, "Docker "+termtext.Cell(f.Version)
	}
	rs = append(rs, v)
	sw := Result{Check: "docker/swarm"}
	switch f.SwarmState {
	case "active":
		role := "worker"
		if f.Manager {
			role = "manager"
		}
		sw.Status, sw.Message = OK, "swarm active, this node is a "+role
	case "", "inactive":
		sw.Status, sw.Message = Fail, "this node is not in a swarm: swarm networks and services cannot use it"
		sw.Fix = "docker swarm join --token TOKEN MANAGER:2377   # TOKEN from `docker swarm join-token -q worker` on a manager"
	case "locked":
		sw.Status, sw.Message, sw.Fix = Fail, "swarm is locked", "docker swarm unlock"
	default:
		sw.Status, sw.Message = Fail, "swarm state "+f.SwarmState
		sw.Fix = "docker info --format '{{.Swarm.Error}}'"
	}
	rs = append(rs, sw)
	pd := Result{Check: "docker/plugin-dir"}
	if f.PluginDir {
		pd.Status, pd.Message = OK, PluginDir+" exists"
	} else {
		pd.Status, pd.Message, pd.Fix = Fail, PluginDir+" missing: Docker cannot find network and IPAM plugins", "mkdir -p "+PluginDir
	}
	return append(rs, pd)
}

// PluginDir is where Docker looks for plugin sockets.
const PluginDir = "/run/docker/plugins"

// versionAtLeast compares the leading major.minor of Docker version strings.
func versionAtLeast(v, min string) (atLeast, ok bool) {
	a, ok1 := majorMinor(v)
	b, ok2 := majorMinor(min)
	if !ok1 || !ok2 {
		return false, false
	}
	if a[0] != b[0] {
		return a[0] > b[0], true
	}
	return a[1] >= b[1], true
}

func majorMinor(v string) ([2]int, bool) {
	v = strings.TrimPrefix(v, "v")
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return [2]int{}, false
	}
	var out [2]int
	for i := range 2 {
		digits := parts[i]
		if j := strings.IndexFunc(digits, func(r rune) bool { return r < '0' || r > '9' }); j >= 0 {
			digits = digits[:j]
		}
		n, err := strconv.Atoi(digits)
		if err != nil {
			return [2]int{}, false
		}
		out[i] = n
	}
	return out, true
}

// MaxClockSkew is the skew above which the doctor warns.
const MaxClockSkew = time.Second

// ConsulFacts is what the local Consul agent and the servers say.
type ConsulFacts struct {
	Err    error  // nil when the local agent answered
	Leader string // the leader's address; "" when there is none
	// ServerDate is the Date header (second resolution) of a response
	// from Source, LocalAt this host's clock half-way through the request.
	// ServerDate is zero when it could not be read, with DateErr saying why.
	ServerDate time.Time
	LocalAt    time.Time
	Source     string
	DateErr    error
}

// EvalConsul judges the Consul agent (reachable, leader known) and the
// clock skew between this host and the Consul servers.
func EvalConsul(f ConsulFacts) []Result {
	agent := Result{Check: "consul/agent"}
	switch {
	case f.Err != nil:
		agent.Status, agent.Message = Fail, fmt.Sprintf("Consul agent not reachable: %v", f.Err)
		agent.Fix = "systemctl start consul   # or set CONSUL_HTTP_ADDR / --consul-addr to this node's agent"
		return []Result{agent}
	case f.Leader == "":
		agent.Status, agent.Message = Fail, "Consul agent answers but knows no leader: the cluster has no quorum or this agent has not joined"
		agent.Fix = "consul members   # then: consul join SERVER_ADDRESS"
	default:
		agent.Status, agent.Message = OK, "Consul agent reachable, leader "+f.Leader
	}
	skew := Result{Check: "consul/clock-skew"}
	if f.ServerDate.IsZero() {
		skew.Status, skew.Message = Warn, fmt.Sprintf("cannot measure clock skew: %v", f.DateErr)
		skew.Fix = "timedatectl status"
		return []Result{agent, skew}
	}
	d := SkewAtLeast(f.LocalAt, f.ServerDate)
	if d > MaxClockSkew || d < -MaxClockSkew {
		skew.Status = Warn
		skew.Message = fmt.Sprintf("this host's clock is %s off %s (more than %s): TTLs, sessions and logs will disagree", d.Round(time.Millisecond), f.Source, MaxClockSkew)
		skew.Fix = "timedatectl set-ntp true   # or: chronyc makestep"
	} else {
		skew.Status, skew.Message = OK, fmt.Sprintf("clock within %s of %s", MaxClockSkew, f.Source)
	}
	return []Result{agent, skew}
}

// SkewAtLeast is the smallest offset of local from a server whose clock
// read date (an HTTP Date, truncated to the second): zero when local falls
// within that second, negative when local is behind.
func SkewAtLeast(local, date time.Time) time.Duration {
	switch {
	case local.Before(date):
		return local.Sub(date)
	case !local.Before(date.Add(time.Second)):
		return local.Sub(date.Add(time.Second))
	}
	return 0
}

// Probe is one attempt to reach a local container on an underlay network
// from the host.
type Probe struct {
	Container string
	Network   string
	IP        netip.Addr
	// Port is the container's first exposed TCP port; 0 when it exposes
	// none (and was not probed).
	Port int
	// Err is nil when the host reached the container (a refused
	// connection counts: the container answered).
	Err error
	// ShimLink is the network's shim on this host, for the fix.
	ShimLink string
	// Late is true when the check's time ran out before the probe ended
	// (or began): it says nothing of the container.
	Late bool
}

// EvalContainers judges whether the host reaches its own containers on
// underlay networks.
func EvalContainers(ps []Probe, err error) []Result {
	const check = "containers/reachable"
	if err != nil {
		return []Result{{Check: check, Status: Fail, Message: fmt.Sprintf("cannot list containers: %v", err), Fix: "docker ps"}}
	}
	var rs []Result
	// Counted by container: one on a dual-stack network is probed at
	// each of its addresses.
	reached, skipped := map[string]bool{}, map[string]bool{}
	late := 0
	for _, p := range ps {
		switch {
		case p.Late: // before its port: one not inspected in time has none
			late++
		case p.Port == 0:
			skipped[p.Container] = true
		case p.Err == nil:
			reached[p.Container] = true
		default:
			p.IP = p.IP.Unmap() // ::ffff:a.b.c.d is reached as a.b.c.d
			route, checks := "route", "route"
			if p.IP.Is6() {
				route, checks = "-6 route", "shim-address6 and route6"
			}
			rs = append(rs, Result{Check: check, Status: Fail,
				Message: fmt.Sprintf("container %s at %s on %s unreachable from this host: %v", p.Container, netip.AddrPortFrom(p.IP, uint16(p.Port)), p.Network, p.Err),
				// The address is Docker's answer: one shell word whatever it holds.
				Fix: fmt.Sprintf("ip %s get %s   # must say dev %s; see the network/%s/shim and %s checks", route, shellword.Quote(p.IP.String()), p.ShimLink, p.Network, checks)})
		}
	}
	var lateRow []Result
	if late > 0 {
		lateRow = []Result{{Check: check, Status: Warn,
			Message: fmt.Sprintf("%d container address(es) not probed within the check's time (%s at most, Docker's inspections %d%% of it, %d connects at once); %d container(s) reached", late, CheckTimeout, InspectShare, MaxProbes, len(reached))}}
	}
	if len(rs) > 0 {
		return append(capRows(rs, "unreachable container addresses"), lateRow...)
	}
	if lateRow != nil {
		return lateRow
	}
	msg := fmt.Sprintf("%d container(s) on underlay networks reached from the host", len(reached))
	if len(skipped) > 0 {
		msg += fmt.Sprintf(", %d without an exposed TCP port not probed", len(skipped))
	}
	return []Result{{Check: check, Status: OK, Message: msg}}
}

// ServiceFacts is what the services check reads of one replicated swarm
// service.
type ServiceFacts struct {
	Name     string
	Replicas uint64
	// Wanted are the tasks swarm wants running: desired state ready or
	// running, and not yet ended.
	Wanted []TaskFacts
	// UpdateState is the service's rolling update's state ("" when it
	// never had one): while an update is under way or paused, start-first
	// updates run more tasks than the count by design.
	UpdateState string
	// UpdatedAt is when the service's spec was last written (a scale is
	// such a write).
	UpdatedAt time.Time
}

// TaskFacts is one task of a service.
type TaskFacts struct {
	ID    string
	Slot  int
	State string // observed: "running", "starting", ...
}

// ServicesSettle is how long after a service's last write the services
// check waits before it counts tasks above the count as lost: swarm
// removes them within seconds, and control rewrites a count whose
// removals were lost from 15 s on.
const ServicesSettle = time.Minute

// EvalServices judges whether swarm wants more tasks of any replicated
// service running than its replicas: a scale-down whose removals swarmkit
// lost ("failed to update task to REMOVE ... update out of sequence" in the
// manager's log) leaves them running, holding their addresses, until the
// service is written again. Only managers know services; on a worker it
// says so.
func EvalServices(manager bool, svcs []ServiceFacts, err error, now time.Time) []Result {
	const check = "swarm/services"
	if !manager {
		return []Result{{Check: check, Status: OK, Message: "not a swarm manager: services are checked on managers"}}
	}
	if err != nil {
		return []Result{{Check: check, Status: Warn, Message: fmt.Sprintf("cannot read services, not checked: %v", err), Fix: "docker service ls"}}
	}
	var rs []Result
	settling := 0
	for _, s := range svcs {
		if uint64(len(s.Wanted)) <= s.Replicas { // as uint64: swarm takes any count
			continue
		}
		extra := len(s.Wanted) - int(s.Replicas) // Replicas < len(Wanted): an int
		age := now.Sub(s.UpdatedAt)
		if updateUnderWay(s.UpdateState) || age < ServicesSettle {
			settling++
			continue
		}
		tasks := make([]string, 0, min(len(s.Wanted), MaxRows)+1)
		for _, t := range s.Wanted[:min(len(s.Wanted), MaxRows)] {
			tasks = append(tasks, fmt.Sprintf("%s.%d (%.12s, %s)", s.Name, t.Slot, t.ID, t.State))
		}
		if len(s.Wanted) > MaxRows {
			tasks = append(tasks, fmt.Sprintf("and %d more", len(s.Wanted)-MaxRows))
		}
		rs = append(rs, Result{Check: check, Status: Warn,
			Message: fmt.Sprintf("service %s has %d replicas but swarm wants %d tasks running, %s after its last write with no update under way: "+
				"a scale-down lost the removal of %d (a swarmkit race); they run on and hold their addresses: %s",
				s.Name, s.Replicas, len(s.Wanted), age.Round(time.Second), extra, strings.Join(tasks, ", ")),
			// The name is one shell word: it comes from whoever may create services.
			Fix: "docker service scale " + shellword.Quote(fmt.Sprintf("%s=%d", s.Name, s.Replicas)) + "   # writes the count again; swarm then stops the extra tasks"})
	}
	if len(rs) > 0 {
		return capRows(rs, "services above their replicas")
	}
	msg := fmt.Sprintf("%d replicated service(s), none with more tasks wanted than its replicas", len(svcs))
	if settling > 0 {
		msg = fmt.Sprintf("%d replicated service(s); %d above its replicas while an update or a scale settles (under %s, or an update under way)", len(svcs), settling, ServicesSettle)
	}
	return []Result{{Check: check, Status: OK, Message: msg}}
}

// updateUnderWay says a rolling update or rollback is running or paused.
func updateUnderWay(state string) bool {
	switch state {
	case "updating", "paused", "rollback_started", "rollback_paused":
		return true
	}
	return false
}

// ManagerFacts is one swarm manager, as the node list shows it.
type ManagerFacts struct {
	Name string // the node's host name
	ID   string
	// Reachability is swarm's view of its raft member: "reachable",
	// "unreachable" or "unknown".
	Reachability string
	Leader       bool
}

// noLeaderFix is the way back for a swarm that has lost quorum.
const noLeaderFix = "start docker on the managers that are down; if they are gone for good: docker swarm init --force-new-cluster   # on one surviving manager"

// EvalManagers judges the swarm's managers: swarm runs while more than
// half of them are reachable, so an even count tolerates no more losses
// than one manager fewer, and two tolerate none (the soak saw a frozen
// manager of two leave the swarm without a leader, so without scheduling,
// scaling or service changes, for over a minute after it thawed). Only
// managers see the list; on a worker it says so.
func EvalManagers(manager bool, managers []ManagerFacts, err error) []Result {
	const check = "swarm/managers"
	if !manager {
		return []Result{{Check: check, Status: OK, Message: "not a swarm manager: managers are checked on managers"}}
	}
	if err != nil {
		r := Result{Check: check, Status: Warn, Message: fmt.Sprintf("cannot list the swarm's managers: %v", err), Fix: "docker node ls"}
		// Docker's words for a swarm without quorum.
		if strings.Contains(err.Error(), "does not have a leader") {
			r.Status = Fail
			r.Message = fmt.Sprintf("the swarm has no leader (fewer than half its managers reachable): nothing is scheduled, scaled or changed until one is elected: %v", err)
			r.Fix = noLeaderFix
		}
		return []Result{r}
	}
	n := len(managers)
	var down []string
	leader := ""
	for _, m := range managers {
		if m.Reachability != "reachable" {
			down = append(down, fmt.Sprintf("%s (%.12s, %s)", m.Name, m.ID, m.Reachability))
		}
		if m.Leader {
			leader = m.Name
		}
	}
	quorum := n/2 + 1
	spare := n - len(down) - quorum // further losses swarm survives
	switch {
	case n == 0:
		return []Result{{Check: check, Status: Warn, Message: "a manager listed no managers", Fix: "docker node ls"}}
	case spare < 0:
		return []Result{{Check: check, Status: Fail,
			Message: fmt.Sprintf("%d of %d managers unreachable: %s; the swarm needs %d reachable to have a leader", len(down), n, strings.Join(down, ", "), quorum),
			Fix:     noLeaderFix}}
	case len(down) > 0:
		return []Result{{Check: check, Status: Warn,
			Message: fmt.Sprintf("%d of %d managers unreachable: %s; the swarm stops if %d more %s lost", len(down), n, strings.Join(down, ", "), spare+1, plural(spare+1, "is", "are")),
			Fix:     "start docker on the unreachable managers; if one is gone for good: docker node demote NODE && docker node rm --force NODE"}}
	case n%2 == 0:
		return []Result{{Check: check, Status: Warn,
			Message: fmt.Sprintf("%d managers (leader %s) tolerate the loss of %d, no more than %d would: an even count only adds a manager whose loss counts against quorum; with 2, losing either leaves the swarm without a leader", n, leader, (n-1)/2, n-1),
			Fix:     fmt.Sprintf("docker node promote WORKER   # %d managers, or demote one to %d", n+1, n-1)}}
	}
	msg := fmt.Sprintf("%d managers, all reachable (leader %s): the swarm survives the loss of %d", n, leader, (n-1)/2)
	if n == 1 {
		msg = fmt.Sprintf("1 manager (%s): the swarm survives the loss of none; 3 managers survive the loss of one", leader)
	}
	return []Result{{Check: check, Status: OK, Message: msg}}
}

// plural picks the word for n.
func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
