package lab

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ensureBridge makes a bridge with addr (the root namespace's address on
// it) and brings it up. It never enslaves anything but the lab's veths;
// checkBridges has checked an existing one.
func ensureBridge(log *slog.Logger, name string, addr netip.Prefix) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if !errors.As(err, &nf) {
			return fmt.Errorf("look up bridge %s: %w", name, err)
		}
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
		if err := netlink.LinkAdd(br); err != nil {
			return fmt.Errorf("create bridge %s: %w", name, err)
		}
		if l, err = netlink.LinkByName(name); err != nil {
			return fmt.Errorf("look up bridge %s: %w", name, err)
		}
	}
	if l.Type() != "bridge" {
		return fmt.Errorf("link %s exists and is a %s, not the lab's bridge", name, l.Type())
	}
	// Before it is up: no IPv6 address, no router solicitation, ever.
	if err := disableIPv6(log, procSys(), haveIP6tables(), name); err != nil {
		return err
	}
	if err := netlink.AddrReplace(l, &netlink.Addr{IPNet: ipNet(addr)}); err != nil {
		return fmt.Errorf("address %s on %s: %w", addr, name, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("bring up %s: %w", name, err)
	}
	return nil
}

// checkBridges refuses the existing links of the given names, the lab's
// bridges, that are not bridges or have ports the lab did not make: run
// before any is made or changed.
func checkBridges(lab string, names ...string) error {
	all, err := retryDump(netlink.LinkList)
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	for _, l := range all {
		if !slices.Contains(names, l.Attrs().Name) {
			continue
		}
		if l.Type() != "bridge" {
			return fmt.Errorf("link %s exists and is a %s, not the lab's bridge", l.Attrs().Name, l.Type())
		}
		if err := checkBridgePorts(lab, l, all); err != nil {
			return err
		}
	}
	return nil
}

// checkBridgePorts refuses an existing bridge br of lab that has ports the
// lab did not make, among links: addressing it and forwarding through it
// would join the lab to whatever they reach (the machine's uplink).
func checkBridgePorts(lab string, br netlink.Link, links []netlink.Link) error {
	var foreign []string
	for _, l := range links {
		a := l.Attrs()
		if a.MasterIndex != br.Attrs().Index || a.Index == br.Attrs().Index {
			continue
		}
		// The lab's ports are its nodes' veths (ensureNodeLink).
		if l.Type() != "veth" || !ownLink(lab, l) {
			foreign = append(foreign, a.Name)
		}
	}
	if len(foreign) > 0 {
		return fmt.Errorf("bridge %s exists with ports lab %s did not make: %s; remove them from it (or the bridge), or pick another --name",
			br.Attrs().Name, lab, strings.Join(foreign, ", "))
	}
	return nil
}

// sysctls is a tree of the kernel's sysctls: procSys, or a test's.
type sysctls struct {
	dir string
	// write writes a sysctl's file (writeSysctl).
	write func(file string, data []byte) error
}

// procSys is the kernel's sysctls.
func procSys() sysctls { return sysctls{dir: "/proc/sys", write: writeSysctl} }

// writeSysctl writes data to the existing file: not O_CREATE, the file
// exists for every link the kernel knows.
func writeSysctl(file string, data []byte) error {
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// disableIPv6 turns IPv6 off on the given links through the sysctls sys
// (procSys). The lab's FORWARD drop rules for IPv6 need ip6tables,
// which a machine may lack; with IPv6 off on the lab's links in the root
// namespace, an IPv6 packet from a node is dropped as it arrives there and
// can never be forwarded to the machine's networks, nor one of theirs to
// a node. The lab itself uses no IPv6 between nodes and the machine.
// Bridged traffic between the nodes (layer 2) is not affected.
//
// Where the sysctls cannot be written (/proc/sys read-only in a
// container: EROFS; EACCES or EPERM in a user namespace), IPv6 off is only
// hygiene if ip6tables is there (ensureFirewall then puts the IPv6 drop
// rules in, or fails lab up): it warns and goes on. Without ip6tables it
// is what keeps the nodes' IPv6 on the machine: it fails, saying why.
func disableIPv6(log *slog.Logger, sys sysctls, ip6tables bool, links ...string) error {
	conf := filepath.Join(sys.dir, "net", "ipv6", "conf")
	if _, err := os.Stat(conf); errors.Is(err, fs.ErrNotExist) {
		return nil // a kernel without IPv6 (ipv6.disable=1)
	}
	for _, l := range links {
		file := filepath.Join(conf, l, "disable_ipv6")
		err := sys.write(file, []byte("1\n"))
		switch {
		case err == nil:
		case !errors.Is(err, syscall.EROFS) && !errors.Is(err, syscall.EACCES) && !errors.Is(err, syscall.EPERM):
			return fmt.Errorf("turn IPv6 off on %s: %w", l, err)
		case ip6tables:
			log.Warn("IPv6 stays on on a lab link: its sysctl cannot be written; the lab's ip6tables FORWARD rules keep its IPv6 off the machine's networks",
				"link", l, "file", file, "err", err)
		default:
			return fmt.Errorf("turn IPv6 off on %s: %s cannot be written (%w), and without ip6tables nothing else keeps the nodes' IPv6 from being forwarded off the machine: install ip6tables, or run where /proc/sys is writable", l, file, err)
		}
	}
	return nil
}

// checkStaleVeth refuses to delete l, a link with the name of a root side
// of the lab's veths found while its pair is missing, unless it is one.
func checkStaleVeth(l netlink.Link) error {
	if l.Type() != "veth" {
		return fmt.Errorf("link %s exists and is a %s, not the lab's veth: remove it, or pick another --name", l.Attrs().Name, l.Type())
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// nodeLink is one veth of a node: its name in the root namespace, the
// bridge it is a port of, its name in the node and its address there.
type nodeLink struct {
	host, bridge, inside string
	addr                 netip.Prefix // zero: no address
}

// ensureNodeLinks makes the node's eth0 and eth1 when the node (the
// network namespace of pid) lacks them, addresses them and sets the node's
// default route through gw.
func ensureNodeLinks(pid int, links []nodeLink, gw netip.Addr) error {
	h, err := handleAt(pid)
	if err != nil {
		return err
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("node lo: %w", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("node lo up: %w", err)
	}
	for _, nl := range links {
		if err := ensureNodeLink(h, pid, nl); err != nil {
			return err
		}
	}
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		return err
	}
	route := &netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: gw.AsSlice()}
	if err := h.RouteReplace(route); err != nil {
		return fmt.Errorf("node default route via %s: %w", gw, err)
	}
	return nil
}

func ensureNodeLink(h *netlink.Handle, pid int, nl nodeLink) error {
	in, err := h.LinkByName(nl.inside)
	if err != nil {
		// Missing: (re)make the pair. A root side left from an earlier
		// namespace goes first.
		if old, err := netlink.LinkByName(nl.host); err == nil {
			if err := checkStaleVeth(old); err != nil {
				return err
			}
			netlink.LinkDel(old)
		}
		br, err := netlink.LinkByName(nl.bridge)
		if err != nil {
			return fmt.Errorf("bridge %s: %w", nl.bridge, err)
		}
		veth := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: nl.host, MasterIndex: br.Attrs().Index},
			PeerName:      nl.inside,
			PeerNamespace: netlink.NsPid(pid),
		}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("create veth %s/%s: %w", nl.host, nl.inside, err)
		}
		if in, err = h.LinkByName(nl.inside); err != nil {
			return fmt.Errorf("node %s after create: %w", nl.inside, err)
		}
	}
	host, err := netlink.LinkByName(nl.host)
	if err != nil {
		return fmt.Errorf("veth %s: %w", nl.host, err)
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return fmt.Errorf("bring up %s: %w", nl.host, err)
	}
	if nl.addr.IsValid() {
		if err := h.AddrReplace(in, &netlink.Addr{IPNet: ipNet(nl.addr)}); err != nil {
			return fmt.Errorf("address %s on node %s: %w", nl.addr, nl.inside, err)
		}
	}
	if err := h.LinkSetUp(in); err != nil {
		return fmt.Errorf("bring up node %s: %w", nl.inside, err)
	}
	return nil
}

// labLinks lists the root namespace's links of the lab (ownLink).
func labLinks(name string) ([]netlink.Link, error) {
	all, err := retryDump(netlink.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	return slices.DeleteFunc(all, func(l netlink.Link) bool { return !ownLink(name, l) }), nil
}

// ownLink reports whether l is a link lab name makes in the root
// namespace, by its exact name and kind: the namespace lab's bridges
// ul-NAME-m and ul-NAME-u and their ports, the nodes' veths
// ul-NAME-{m,u}<node> (linkSuffix), and the VM lab's management veth
// ul-NAME-m. Another link whose name starts with ul-NAME- (a user's
// dummy, a macvlan, a bridge of another name) is not the lab's to delete.
func ownLink(name string, l netlink.Link) bool {
	rest, ok := strings.CutPrefix(l.Attrs().Name, linkPrefix(name))
	if !ok || rest == "" || (rest[0] != 'm' && rest[0] != 'u') {
		return false
	}
	switch node := rest[1:]; {
	case node == "":
		return l.Type() == "bridge" || l.Type() == "veth" && rest == "m"
	case l.Type() != "veth":
		return false
	default:
		for i := 1; i <= MaxNodes; i++ {
			if node == linkSuffix(i) {
				return true
			}
		}
		return false
	}
}

// ownLinkNames are the names of every link lab name may make in the root
// namespace (those ownLink takes for its own): the bridges ul-NAME-m and
// ul-NAME-u (a VM lab's management veth ul-NAME-m) and the veths to its
// nodes, ul-NAME-m1, ul-NAME-u1 and so on to MaxNodes.
func ownLinkNames(name string) []string {
	out := []string{linkPrefix(name) + "m", linkPrefix(name) + "u"}
	for i := 1; i <= MaxNodes; i++ {
		out = append(out, linkPrefix(name)+"m"+linkSuffix(i), linkPrefix(name)+"u"+linkSuffix(i))
	}
	return out
}

// deleteLinks deletes the lab's links: veths first, then the bridges.
func deleteLinks(name string) error {
	all, err := retryDump(netlink.LinkList)
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	del, err := linksToDelete(name, all)
	errs := []error{err}
	for _, l := range del {
		if err := netlink.LinkDel(l); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("delete link %s: %w", l.Attrs().Name, err))
		}
	}
	return errors.Join(errs...)
}

// linksToDelete picks, among links, the lab's (ownLink), in the order to
// delete them: veths first, then the bridges. A bridge named for the lab with
// ports the lab did not make is not the lab's (lab up refuses it): it is
// left, with an error naming them.
func linksToDelete(name string, links []netlink.Link) ([]netlink.Link, error) {
	var out []netlink.Link
	var errs []error
	for _, bridges := range []bool{false, true} {
		for _, l := range links {
			if !ownLink(name, l) || (l.Type() == "bridge") != bridges {
				continue
			}
			if bridges {
				if err := checkBridgePorts(name, l, links); err != nil {
					errs = append(errs, fmt.Errorf("not deleted: %w", err))
					continue
				}
			}
			out = append(out, l)
		}
	}
	return out, errors.Join(errs...)
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || strings.Contains(err.Error(), "no such device")
}

// usedPrefixes are the root namespace's routed prefixes, in every routing
// table, other than those on the lab's own links (ownLink). Not main's alone: a VPN
// routes in a table of its own (Tailscale's 52, strongSwan's 220) that a
// rule looks up before main, so its routes win over the lab's bridge.
func usedPrefixes(name string) ([]netip.Prefix, error) {
	return usedPrefixesFrom(name, netlinkRoutes, netlink.LinkList)
}

// netlinkRoutes dumps the root namespace's IPv4 routes that filter and mask select.
func netlinkRoutes(filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	return netlink.RouteListFiltered(netlink.FAMILY_V4, filter, mask)
}

// minRoutedBits is the shortest prefix taken for a routed subnet. A
// shorter one overrides the default route rather than reaching a network:
// OpenVPN's def1 (0.0.0.0/1 and 128.0.0.0/1), WireGuard's and other VPNs'
// splits of 0.0.0.0/0. Like the default route, it loses to the lab's
// longer routes (/16, /24) and takes nothing from the lab; counted, it
// overlapped every lab subnet. A /8 or longer (a VPN pushing 10.0.0.0/8)
// stays a routed subnet and a real overlap.
const minRoutedBits = 8

// usedPrefixesFrom is usedPrefixes over the dumps of routes and links.
func usedPrefixesFrom(name string, routes func(*netlink.Route, uint64) ([]netlink.Route, error), links func() ([]netlink.Link, error)) ([]netip.Prefix, error) {
	rs, err := retryDump(func() ([]netlink.Route, error) {
		return routes(&netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	ls, err := retryDump(links)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	byIndex := make(map[int]netlink.Link, len(ls))
	for _, l := range ls {
		byIndex[l.Attrs().Index] = l
	}
	var out []netip.Prefix
	for _, r := range rs {
		if r.Dst == nil {
			continue
		}
		// Only the lab's own links, by exact name and kind: a user's
		// ul-NAME-foo routes a subnet the lab must not take.
		if l, ok := byIndex[r.LinkIndex]; ok && ownLink(name, l) {
			continue
		}
		ip, ok := netip.AddrFromSlice(r.Dst.IP)
		if !ok {
			continue
		}
		ones, _ := r.Dst.Mask.Size()
		if ones < minRoutedBits {
			continue
		}
		out = append(out, netip.PrefixFrom(ip.Unmap(), ones))
	}
	return out, nil
}

// firewallRules are the lab's FORWARD rules, top to bottom: what is
// forwarded among the lab's links (the bridges ul-NAME-m and ul-NAME-u,
// bridged with br_netfilter or routed by the root namespace; a VM lab's
// management veth ul-NAME-m) is accepted, then anything else forwarded to
// or from one of them is dropped. The links are named exactly, never by
// the wildcard ul-NAME-+, which took a user's ul-NAME-foo for the lab's
// (dropping its traffic, and accepting the lab's to it). The ACCEPT rules
// must stay above the DROP rules (firewallSteps).
func firewallRules(name string) [][]string {
	own := []string{linkPrefix(name) + "m", linkPrefix(name) + "u"}
	c := []string{"-m", "comment", "--comment", ruleComment(name)}
	var accept, drop [][]string
	for _, in := range own {
		for _, out := range own {
			accept = append(accept, slices.Concat([]string{"-i", in, "-o", out}, c, []string{"-j", "ACCEPT"}))
		}
	}
	for _, l := range own {
		drop = append(drop,
			slices.Concat([]string{"-i", l}, c, []string{"-j", "DROP"}),
			slices.Concat([]string{"-o", l}, c, []string{"-j", "DROP"}))
	}
	return append(accept, drop...)
}

// firewallSteps are the iptables commands (after -w) that turn FORWARD,
// as `iptables -S FORWARD` lists it, into one holding exactly the lab's
// rules (firewallRules) with every ACCEPT above every DROP. No step ever
// lets more through than before it: missing DROP rules go in first,
// then any other rule of the lab's comment (the older wildcard form, a
// copy) goes, then the ACCEPT rules missing or below a DROP are put on
// top. None when FORWARD is as it should be. Rules are compared by
// ruleKey, not as text: iptables may list a rule's options in another
// order than they were given.
func firewallSteps(listing, name string) [][]string {
	type rule struct {
		key  string
		args []string // as listed, or as firewallRules gives it
	}
	var cur []rule // the lab's rules in FORWARD, top to bottom
	for _, r := range rulesWithComment(listing, ruleComment(name)) {
		if len(r) > 2 && r[0] == "-A" && r[1] == "FORWARD" {
			cur = append(cur, rule{ruleKey(r[2:]), r[2:]})
		}
	}
	var want []rule
	wanted := map[string]bool{}
	for _, r := range firewallRules(name) {
		want = append(want, rule{ruleKey(r), r})
		wanted[ruleKey(r)] = true
	}
	isAccept := func(r rule) bool { return ruleTarget(r.args) == "ACCEPT" }
	indexOf := func(key string) int { return slices.IndexFunc(cur, func(r rule) bool { return r.key == key }) }
	var steps [][]string
	insert := func(r rule) {
		steps = append(steps, append([]string{"-I", "FORWARD", "1"}, r.args...))
		cur = append([]rule{r}, cur...)
	}
	// -D deletes the first rule of that spec: so does this. It is given
	// as listed, which iptables matches whatever the order.
	remove := func(key string) {
		i := indexOf(key)
		steps = append(steps, append([]string{"-D", "FORWARD"}, cur[i].args...))
		cur = slices.Delete(cur, i, i+1)
	}
	for i := len(want) - 1; i >= 0; i-- {
		if r := want[i]; !isAccept(r) && indexOf(r.key) < 0 {
			insert(r)
		}
	}
	seen := map[string]bool{}
	for _, r := range slices.Clone(cur) {
		if !wanted[r.key] || seen[r.key] {
			remove(r.key)
		}
		seen[r.key] = true
	}
	for i := len(want) - 1; i >= 0; i-- {
		r := want[i]
		if !isAccept(r) {
			continue
		}
		at := indexOf(r.key)
		firstDrop := slices.IndexFunc(cur, func(r rule) bool { return !isAccept(r) })
		if at >= 0 && (firstDrop < 0 || at < firstDrop) {
			continue
		}
		if at >= 0 {
			remove(r.key)
		}
		insert(r)
	}
	return steps
}

// ruleLongFlags are the long names of the options iptables lists by their
// short ones.
var ruleLongFlags = map[string]string{
	"--in-interface": "-i", "--out-interface": "-o", "--jump": "-j", "--match": "-m",
	"--protocol": "-p", "--source": "-s", "--destination": "-d", "--goto": "-g",
	"--fragment": "-f",
}

// ruleValues is how many values an option of `iptables -S` takes, for
// the options it knows (by their short names when they have one): those
// values are taken whatever they start with. An option not named here
// takes the arguments up to the next one starting with "-".
var ruleValues = map[string]int{
	"-i": 1, "-o": 1, "-j": 1, "-m": 1, "-p": 1, "-s": 1, "-d": 1, "-g": 1, "-f": 0, "-c": 2,
	"--comment": 1, "--dport": 1, "--sport": 1, "--dports": 1, "--sports": 1, "--ports": 1,
	"--ctstate": 1, "--state": 1, "--tcp-flags": 2, "--syn": 0, "--icmp-type": 1,
	"--mark": 1, "--set-mark": 1, "--set-xmark": 1, "--uid-owner": 1, "--gid-owner": 1,
	"--physdev-in": 1, "--physdev-out": 1, "--physdev-is-bridged": 0, "--physdev-is-in": 0, "--physdev-is-out": 0,
	"--src-type": 1, "--dst-type": 1, "--limit": 1, "--limit-burst": 1, "--match-set": 2,
	"--to-destination": 1, "--to-source": 1, "--to-ports": 1, "--reject-with": 1,
	"--log-prefix": 1, "--log-level": 1,
	// Of the nflog, string, recent, hashlimit, connlimit, u32, iprange and
	// mac matches and the NFLOG, TCPMSS and NFQUEUE targets.
	"--nflog-prefix": 1, "--nflog-group": 1, "--nflog-range": 1, "--nflog-size": 1, "--nflog-threshold": 1,
	"--string": 1, "--hex-string": 1, "--algo": 1, "--from": 1, "--to": 1,
	"--name": 1, "--seconds": 1, "--hitcount": 1,
	"--hashlimit-name": 1, "--hashlimit-upto": 1, "--hashlimit-above": 1, "--hashlimit-burst": 1, "--hashlimit-mode": 1,
	"--connlimit-upto": 1, "--connlimit-above": 1, "--connlimit-mask": 1,
	"--u32": 1, "--set-mss": 1, "--queue-num": 1, "--queue-balance": 1,
	"--src-range": 1, "--dst-range": 1, "--mac-source": 1,
}

// ruleOption is one option of a rule with its values.
type ruleOption struct {
	neg    bool // "! -i x", or the older "-i ! x"
	name   string
	values []string
}

// ruleOptions splits a rule's arguments (after the chain) into its
// options, long names made short.
func ruleOptions(args []string) []ruleOption {
	var opts []ruleOption
	neg := false
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "!" {
			neg = true
			continue
		}
		if short, ok := ruleLongFlags[a]; ok {
			a = short
		}
		o := ruleOption{neg: neg, name: a}
		neg = false
		n, known := ruleValues[a]
		for i+1 < len(args) && (!known || len(o.values) < n) {
			v := args[i+1]
			if !known && strings.HasPrefix(v, "-") && len(v) > 1 {
				break
			}
			i++
			if v == "!" && len(o.values) == 0 {
				o.neg = true
				continue
			}
			o.values = append(o.values, v)
		}
		opts = append(opts, o)
	}
	return opts
}

// ruleKey is a rule's arguments (after the chain) as a key that does not
// depend on their order: each option with its values and its negation
// ("! -i x", or the older "-i ! x"), long names made short, sorted. The
// target (-j) is one of them, so rules of other targets differ.
func ruleKey(args []string) string {
	var opts []string
	for _, o := range ruleOptions(args) {
		cur := append([]string{o.name}, o.values...)
		if o.neg {
			cur = append([]string{"!"}, cur...)
		}
		opts = append(opts, strings.Join(cur, "\x00"))
	}
	slices.Sort(opts)
	return strings.Join(opts, "\x01")
}

// ruleTarget is a rule's -j target, "" without one.
func ruleTarget(args []string) string {
	for _, o := range ruleOptions(args) {
		if o.name == "-j" && len(o.values) > 0 {
			return o.values[0]
		}
	}
	return ""
}

// firewallTools are the programs the rules go through; ip6tables is
// optional: IPv6 is off on the lab's links anyway (disableIPv6).
var firewallTools = []string{"iptables", "ip6tables"}

// haveIP6tables reports whether ip6tables is there: then ensureFirewall
// puts the lab's rules in ip6tables' FORWARD too, or fails.
func haveIP6tables() bool {
	_, err := exec.LookPath("ip6tables")
	return err == nil
}

// ensureFirewall brings the lab's rules in FORWARD to firewallRules
// (firewallSteps), replacing those of older forms.
func ensureFirewall(name string) error {
	for _, tool := range firewallTools {
		if _, err := exec.LookPath(tool); err != nil {
			if tool == "iptables" {
				return fmt.Errorf("iptables not found: %w", err)
			}
			continue
		}
		listing, err := exec.Command(tool, "-w", "-S", "FORWARD").Output()
		if err != nil {
			return fmt.Errorf("%s -w -S FORWARD: %w", tool, err)
		}
		for _, step := range firewallSteps(string(listing), name) {
			args := append([]string{"-w"}, step...)
			if out, err := exec.Command(tool, args...).CombinedOutput(); err != nil {
				return fmt.Errorf("%s %s: %v: %s", tool, strings.Join(args, " "), err, out)
			}
		}
	}
	return nil
}

// labRules lists the lab's rules as `tool -S` prints them.
func labRules(name string) map[string][][]string {
	out := map[string][][]string{}
	for _, tool := range firewallTools {
		b, err := exec.Command(tool, "-w", "-S", "FORWARD").Output()
		if err != nil {
			continue
		}
		if rules := rulesWithComment(string(b), ruleComment(name)); len(rules) > 0 {
			out[tool] = rules
		}
	}
	return out
}

// rulesWithComment picks, from the output of `iptables -S`, the rules
// whose comment is exactly comment, as the arguments iptables was given:
// a comment with a space is one argument, printed quoted.
func rulesWithComment(listing, comment string) [][]string {
	var out [][]string
	for _, line := range strings.Split(listing, "\n") {
		f := ruleArgs(line)
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "--comment" && f[i+1] == comment {
				out = append(out, f)
				break
			}
		}
	}
	return out
}

// ruleArgs splits a line of `iptables -S` into arguments: iptables
// prints an argument with spaces or quotes in double quotes, with \" and
// \\ escaped.
func ruleArgs(line string) []string {
	var out []string
	var cur strings.Builder
	in, quoted := false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quoted && c == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
		case c == '"':
			quoted, in = !quoted, true
		case !quoted && (c == ' ' || c == '\t'):
			if in {
				out = append(out, cur.String())
				cur.Reset()
			}
			in = false
		default:
			cur.WriteByte(c)
			in = true
		}
	}
	if in {
		out = append(out, cur.String())
	}
	return out
}

// deleteFirewall deletes every rule carrying the lab's comment: those
// of firewallRules, and those of older forms.
func deleteFirewall(name string) error {
	var errs []error
	for tool, rules := range labRules(name) {
		for _, d := range firewallDeletes(rules) {
			args := append([]string{"-w"}, d...)
			if out, err := exec.Command(tool, args...).CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("%s %s: %v: %s", tool, strings.Join(args, " "), err, out))
			}
		}
	}
	return errors.Join(errs...)
}

// firewallDeletes are the iptables commands (after -w) deleting rules,
// as rulesWithComment lists them.
func firewallDeletes(rules [][]string) [][]string {
	var out [][]string
	for _, f := range rules {
		if len(f) < 2 || f[0] != "-A" {
			continue
		}
		out = append(out, append([]string{"-D"}, f[1:]...))
	}
	return out
}

// retryDump retries a netlink dump that a concurrent change interrupted
// (other programs, Docker among them, change links all the time).
func retryDump[T any](dump func() ([]T, error)) ([]T, error) {
	var err error
	for range 10 {
		var out []T
		if out, err = dump(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			return out, err
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil, err
}

// handleAt opens a netlink handle in the network namespace of pid.
func handleAt(pid int) (*netlink.Handle, error) {
	ns, err := netns.GetFromPid(pid)
	if err != nil {
		return nil, fmt.Errorf("network namespace of %d: %w", pid, err)
	}
	defer ns.Close() // the handle keeps its own sockets in the namespace
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("netlink in namespace of %d: %w", pid, err)
	}
	return h, nil
}
