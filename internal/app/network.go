package app

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/dockerhost"
	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/netagent"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/shellword"
	"github.com/underlay/underlay/internal/termtext"
)

// networkFlags are shared by the network commands.
type networkFlags struct {
	consul consul.Options
	json   bool
}

func newNetworkCommand(g *globalFlags, streams IOStreams) *cobra.Command {
	f := &networkFlags{}
	cmd := &cobra.Command{
		Use:   "network",
		Short: "Create, inspect and remove macvlan (or ipvlan) networks on every node of the swarm",
	}
	pf := cmd.PersistentFlags()
	addConsulFlags(pf, &f.consul)
	cmd.AddCommand(
		newNetworkCreateCommand(f, streams),
		newNetworkListCommand(f, streams),
		newNetworkInspectCommand(f, streams),
		newNetworkRemoveCommand(f, streams),
		newNetworkPlanCommand(streams),
	)
	return cmd
}

func (f *networkFlags) store() (*netspec.Store, error) {
	c, err := consul.NewClient(f.consul)
	if err != nil {
		return nil, err
	}
	return netspec.NewStore(consul.NewKV(c)), nil
}

// specFlags are the flags describing a network, shared by create and plan.
type specFlags struct {
	subnet, gateway, parent, ipRange, ipam, ipv6Subnet string
	driver, ipvlanMode                                 string
	aux                                                []string
	perNodeSize, vlan                                  int
	// fs tells the flags given from the defaults.
	fs *pflag.FlagSet
}

func (sf *specFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	sf.fs = fl
	fl.StringVar(&sf.subnet, "subnet", "", "IPv4 subnet of the existing network, CIDR (required)")
	fl.StringVar(&sf.gateway, "gateway", "", "the network's router (required)")
	fl.StringVar(&sf.parent, "parent", "", "host interface carrying the network on every node (required); a VLAN sub-interface such as bond0.40 is made where missing")
	fl.Var((*decimalInt)(&sf.vlan), "vlan", "VLAN id: the parent is VLAN N on --parent (--parent bond0 --vlan 40 is bond0.40)")
	fl.StringVar(&sf.driver, "driver", netspec.Macvlan, "macvlan or ipvlan")
	fl.StringVar(&sf.ipvlanMode, "ipvlan-mode", "", "ipvlan mode: l2 (default) or l3 (the router must route each node's range to that node; per-node IPAM only)")
	fl.StringVar(&sf.ipRange, "ip-range", "", "part of the subnet containers may use (default: all of it)")
	fl.StringArrayVar(&sf.aux, "aux-address", nil, "NAME=IP never given to a container (repeatable; at most 1024, NAME at most 64 bytes)")
	fl.StringVar(&sf.ipam, "ipam", string(netspec.PerNode), "per-node (a range leased per node) or cluster (one pool for the swarm, served by underlay's IPAM driver)")
	sf.perNodeSize = netspec.DefaultPerNodeSize
	fl.Var((*decimalInt)(&sf.perNodeSize), "per-node-size", "addresses per node range (per-node IPAM), a power of two")
	fl.StringVar(&sf.ipv6Subnet, "ipv6-subnet", "", "IPv6 subnet, /48 to /64; each node gets a /80")
}

// decimalInt is an int flag read in decimal: pflag's own reads Go
// syntax, so --vlan 040 was VLAN 32 (octal) and --vlan 0x28 VLAN 40.
type decimalInt int

func (d *decimalInt) Set(v string) error {
	n, err := strconv.Atoi(v)
	if err != nil {
		return errors.New("want a decimal number")
	}
	*d = decimalInt(n)
	return nil
}

func (d *decimalInt) String() string { return strconv.Itoa(int(*d)) }
func (d *decimalInt) Type() string   { return "int" }

// spec parses the flags; every bad value is named in the error.
func (sf *specFlags) spec(name string) (netspec.Spec, error) {
	s := netspec.Spec{Name: name, Parent: sf.parent, IPAM: netspec.IPAMMode(sf.ipam), PerNodeSize: sf.perNodeSize,
		Driver: sf.driver, IPvlanMode: sf.ipvlanMode}
	if s.Driver == netspec.Macvlan {
		s.Driver = "" // the default, as stored by versions without drivers
	}
	var errs []error
	if s.IPAM == netspec.Cluster {
		// Stored and listed, it would mean nothing: one pool serves every node.
		s.PerNodeSize = 0
		if sf.fs != nil && sf.fs.Changed("per-node-size") {
			errs = append(errs, fmt.Errorf("--per-node-size %d with --ipam cluster: cluster IPAM has no per-node ranges, every node draws from one pool (drop --per-node-size)", sf.perNodeSize))
		}
	}
	if sf.vlan == 0 && sf.fs != nil && sf.fs.Changed("vlan") {
		// WithVLAN takes 0 for no VLAN: given, it would make the network
		// on the untagged parent.
		errs = append(errs, errors.New("--vlan 0: want 1 to 4094 (leave --vlan out for the untagged parent)"))
	} else if p, err := netspec.WithVLAN(sf.parent, sf.vlan); err != nil {
		errs = append(errs, err)
	} else {
		s.Parent = p
	}
	prefix := func(flag, v string, dst *netip.Prefix) {
		if v == "" {
			return
		}
		p, err := netip.ParsePrefix(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("--%s %q: not a CIDR", flag, v))
			return
		}
		*dst = p
	}
	prefix("subnet", sf.subnet, &s.Subnet)
	prefix("ip-range", sf.ipRange, &s.IPRange)
	prefix("ipv6-subnet", sf.ipv6Subnet, &s.IPv6Subnet)
	if sf.gateway != "" {
		ip, err := netip.ParseAddr(sf.gateway)
		if err != nil {
			errs = append(errs, fmt.Errorf("--gateway %q: not an IP address", sf.gateway))
		}
		s.Gateway = ip
	}
	for _, a := range sf.aux {
		k, v, ok := strings.Cut(a, "=")
		ip, err := netip.ParseAddr(v)
		if !ok || k == "" || err != nil {
			errs = append(errs, fmt.Errorf("--aux-address %q: want NAME=IP", a))
			continue
		}
		if prev, ok := s.Aux[k]; ok {
			// The later would replace it, and the address it reserved be
			// handed to a container.
			errs = append(errs, fmt.Errorf("--aux-address %q: %s is already %s", a, k, prev))
			continue
		}
		if s.Aux == nil {
			s.Aux = map[string]netip.Addr{}
		}
		s.Aux[k] = ip
	}
	if err := errors.Join(errs...); err != nil {
		return s, err
	}
	return s, nil
}

func newNetworkCreateCommand(f *networkFlags, streams IOStreams) *cobra.Command {
	sf := &specFlags{}
	cmd := &cobra.Command{
		Use:   "create NAME --subnet CIDR --gateway IP --parent IFACE [--vlan N] [--driver ipvlan]",
		Short: "Create a macvlan or ipvlan network on every node; agents realise it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := sf.spec(args[0])
			if err != nil {
				return err
			}
			// The spec on its own first: a bad value is named, not hidden
			// behind Consul's error when Consul is out of reach.
			if err := netspec.Validate(s, nil); err != nil {
				return fmt.Errorf("network %s not created:\n%w", s.Name, err)
			}
			st, err := f.store()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			existing, err := st.Specs(ctx)
			if err != nil {
				return err
			}
			if err := netspec.Validate(s, existing); err != nil {
				return fmt.Errorf("network %s not created:\n%w", s.Name, err)
			}
			nodes, err := st.Nodes(ctx)
			if err != nil {
				return err
			}
			// The local Docker daemon, when one answers: the swarm's word on
			// which nodes are silent, and the names it uses.
			var docker *dockerhost.Networks
			var states map[string]string
			if api, err := dockerhost.NewClient(); err == nil {
				defer api.Close()
				docker = dockerhost.NewNetworks(api)
				if states, err = docker.SwarmNodes(ctx); err != nil {
					states = nil // not a manager, or no daemon: the facts' stamps are judged
				}
			}
			silent, err := netspec.CheckParent(s, nodes, states, time.Now(), netagent.StaleAfter)
			if err != nil {
				return fmt.Errorf("network %s not created: %w", s.Name, err)
			}
			warnSilentNodes(streams.ErrOut, s, silent, states)
			if docker != nil {
				if err := netspec.CheckNameFree(ctx, docker, s.Name); err != nil {
					return fmt.Errorf("network %s not created: %w", s.Name, err)
				}
			}
			if err := st.Create(ctx, s); err != nil {
				return err
			}
			if s.IPAM == netspec.Cluster {
				fmt.Fprintf(streams.Out, "network %s (%s) created: %d node(s) will share one pool, %s, through underlay's IPAM\n", s.Name, driverName(s), len(nodes), s.Range())
			} else {
				fmt.Fprintf(streams.Out, "network %s (%s) created: %d node(s) will each lease %d addresses of %s\n", s.Name, driverName(s), len(nodes), s.PerNodeSize, s.Range())
			}
			if s.IPvlanModeName() == netspec.IPvlanL3 {
				fmt.Fprintf(streams.Out, "ipvlan l3: containers answer no ARP; route each node's range (underlay network inspect %s) to that node's address on %s's network\n", s.Name, s.Parent)
			}
			return nil
		},
	}
	sf.add(cmd)
	return cmd
}

func newNetworkListCommand(f *networkFlags, streams IOStreams) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List underlay networks",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := f.store()
			if err != nil {
				return err
			}
			l, err := st.ReadListing(cmd.Context())
			if err != nil {
				return err
			}
			return writeNetworkList(streams, l, f.json)
		},
	}
	cmd.Flags().BoolVar(&f.json, "json", false, "print JSON")
	return cmd
}

// refusedSpec is a network spec the agents refuse, as listed.
type refusedSpec struct {
	Name  string `json:"name"`
	Key   string `json:"key"`
	Error string `json:"error"`
}

// writeNetworkList prints the networks of l: the ones the agents refuse
// (netspec.Listing.Refused) as invalid, or unreadable, each with a warning
// naming its problem and fix. --json lists them apart, under "refused".
func writeNetworkList(streams IOStreams, l *netspec.Listing, asJSON bool) error {
	refused := l.Refused()
	// Left out of both forms: no command given for them would act on
	// them, Consul's paths redirecting theirs.
	for _, k := range l.Unlisted {
		fmt.Fprintf(streams.ErrOut, "warning: %s\n", termtext.Cell(netspec.UnlistedProblem(k)))
	}
	var problems []refusedSpec
	for _, name := range slices.Sorted(maps.Keys(refused)) {
		problems = append(problems, refusedSpec{Name: name, Key: netspec.KVPrefix + name + "/spec",
			Error: strings.ReplaceAll(refused[name].Error(), "\n", "; ")})
	}
	if asJSON {
		return writeJSON(streams.Out, map[string]any{"networks": l.Specs, "refused": problems})
	}
	// Refused specs, and the keys of unreadable ones, are what any
	// agent's token may write: quoted when they would break their row,
	// and shortened.
	c := tableCell
	type row struct{ name, line string }
	var rows []row
	for _, s := range l.Specs {
		state := "active"
		switch {
		case s.Deleting:
			state = "deleting"
		case refused[s.Name] != nil:
			state = "invalid"
		}
		rows = append(rows, row{s.Name, fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c(s.Name), driverName(s), s.Subnet, s.Gateway, c(s.Parent), c(string(s.IPAM)), perNodeSize(s), state)})
	}
	for _, b := range l.Bad {
		rows = append(rows, row{b.Name, fmt.Sprintf("%s\t-\t-\t-\t-\t-\t-\tunreadable\n", c(b.Name))})
	}
	slices.SortFunc(rows, func(a, b row) int { return strings.Compare(a.name, b.name) })
	tw := tabwriter.NewWriter(streams.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tDRIVER\tSUBNET\tGATEWAY\tPARENT\tIPAM\tPER NODE\tSTATE")
	for _, r := range rows {
		fmt.Fprint(tw, r.line)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, p := range problems {
		fmt.Fprintf(streams.ErrOut, "warning: network %s: every agent refuses it and changes nothing for it: %s; fix: %s, or correct %s\n",
			termtext.Cell(p.Name), termtext.Cell(p.Error), termtext.Cell(netspec.RemoveFix(p.Name)), termtext.Cell(shellword.Quote(p.Key)))
	}
	return nil
}

func newNetworkInspectCommand(f *networkFlags, streams IOStreams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "inspect NAME",
		Short: "Show a network and its state on every node",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := f.store()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			s, ok, err := st.Get(ctx, args[0])
			if err != nil {
				return err
			}
			if !ok {
				return fmt.Errorf("network %q does not exist", args[0])
			}
			states, err := st.NodeStates(ctx, s.Name)
			if err != nil {
				return err
			}
			if f.json {
				return writeJSON(streams.Out, map[string]any{"network": s, "nodes": inspectNodes(s, states)})
			}
			return writeNetworkInspect(streams.Out, s, states)
		},
	}
	cmd.Flags().BoolVar(&f.json, "json", false, "print JSON")
	return cmd
}

// inspectNode is a node's state of a network as network inspect --json
// prints it: with the node's IPv6 range, which its report does not hold.
type inspectNode struct {
	netspec.NodeState
	IPv6Range netip.Prefix `json:"ipv6_range,omitzero"`
}

// inspectNodes are states with each node's IPv6 range of s (none for a
// network without per-node IPv6 ranges, or a node without a range).
func inspectNodes(s netspec.Spec, states []netspec.NodeState) []inspectNode {
	ranges := make([]netip.Prefix, len(states))
	for i, n := range states {
		ranges[i] = n.Range
	}
	v6 := netspec.IPv6Ranges(s, ranges)
	out := make([]inspectNode, len(states))
	for i, n := range states {
		out[i] = inspectNode{NodeState: n, IPv6Range: v6[i]}
	}
	return out
}

// hasIPv6Ranges reports whether each node of s holds an IPv6 range of its
// own: per-node IPAM with an IPv6 subnet.
func hasIPv6Ranges(s netspec.Spec) bool {
	return s.IPAM == netspec.PerNode && s.IPv6Subnet.IsValid()
}

// writeNetworkInspect prints network s and every node's state of it, as
// network inspect does without --json; an IPV6 RANGE column only for a
// network whose nodes hold IPv6 ranges of their own.
func writeNetworkInspect(w io.Writer, s netspec.Spec, states []netspec.NodeState) error {
	ipamMode := string(s.IPAM)
	if s.IPAM != netspec.Cluster {
		ipamMode += " (" + perNodeSize(s) + " per node)"
	}
	fmt.Fprintf(w, "network %s (%s): subnet %s gateway %s parent %s ipam %s\n",
		termtext.Cell(s.Name), driverName(s), s.Subnet, s.Gateway, termtext.Cell(s.Parent), ipamMode)
	if s.IPRange.IsValid() {
		fmt.Fprintf(w, "ip range %s\n", s.IPRange)
	}
	if len(s.Aux) > 0 {
		aux := make([]string, 0, len(s.Aux))
		for _, name := range slices.Sorted(maps.Keys(s.Aux)) {
			// A spec written by hand may hold any name: quoted unless
			// plain, so that it cannot break the line.
			if strings.ContainsFunc(name, func(r rune) bool { return !unicode.IsGraphic(r) || unicode.IsSpace(r) }) {
				name = strconv.Quote(name)
			}
			aux = append(aux, name+"="+s.Aux[name].String())
		}
		fmt.Fprintf(w, "aux addresses %s\n", strings.Join(aux, " "))
	}
	if s.IPv6Subnet.IsValid() {
		fmt.Fprintf(w, "ipv6 subnet %s\n", s.IPv6Subnet)
	}
	v6 := hasIPv6Ranges(s)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if v6 {
		fmt.Fprintln(tw, "NODE\tID\tSTATE\tRANGE\tIPV6 RANGE\tPARENT\tSHIM\tERROR")
	} else {
		fmt.Fprintln(tw, "NODE\tID\tSTATE\tRANGE\tPARENT\tSHIM\tERROR")
	}
	// The reports are documents every agent's token may write: quoted
	// when they hold what would break their row, and shortened.
	c := tableCell
	for _, n := range inspectNodes(s, states) {
		rng := fmt.Sprint(orDash(n.Range))
		if v6 {
			rng += "\t" + fmt.Sprint(orDash(n.IPv6Range))
		}
		shim := fmt.Sprint(orDash(n.Shim))
		if n.Shim6.IsValid() {
			shim += " " + n.Shim6.String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s %s\t%s\n", c(n.Node), c(shortID(n.ID)), c(n.State), rng, c(n.Parent), c(n.ShimLink), shim, termtext.Cell(n.Error)) // the last column: whole
	}
	return tw.Flush()
}

// warnSilentNodes warns, for network create, of each node whose last
// facts lack s's parent but whose agent is not heard (silent), with the
// swarm's state of each (states, by ID; nil when unknown).
func warnSilentNodes(w io.Writer, s netspec.Spec, silent []netspec.NodeFacts, states map[string]string) {
	// Facts are documents any agent's token may write: the ID goes into
	// the command as one shell word, odd values print quoted.
	c := termtext.Cell
	for _, n := range silent {
		why := "its agent has not been heard from since " + n.UpdatedAt.Format(time.RFC3339)
		if st, listed := states[n.ID]; listed {
			why = "it is " + st + " in the swarm"
		} else if states != nil && n.ID != "" {
			why = "the swarm no longer lists it"
		}
		fmt.Fprintf(w, "warning: node %s (swarm node %s) lacks parent %s by its last facts, but %s: "+
			"it sets the network up, or reports why not, when its agent is back; if the node was removed from the swarm for good: underlay node rm %s\n",
			c(n.Node), c(n.ID), c(s.Parent), why, c(shellword.Quote(n.ID)))
	}
}

func newNetworkRemoveCommand(f *networkFlags, streams IOStreams) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:     "rm NAME",
		Aliases: []string{"remove"},
		Short:   "Remove a network from every node (refused while services use it)",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			// Checked first: rm marks the network deleting before it waits.
			if timeout <= 0 {
				return fmt.Errorf("--timeout %s: must be positive", timeout)
			}
			st, err := f.store()
			if err != nil {
				return err
			}
			api, err := dockerhost.NewClient()
			if err != nil {
				return err
			}
			defer api.Close()
			ok, err := st.Remove(cmd.Context(), dockerhost.NewNetworks(api), name, netspec.Removal{Timeout: timeout, Trees: []string{ipam.NetworkPrefix(name)}})
			if err != nil {
				return err
			}
			if !ok {
				fmt.Fprintf(streams.Out, "network %s does not exist\n", name)
				return nil
			}
			fmt.Fprintf(streams.Out, "network %s removed\n", name)
			return nil
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", time.Minute, "how long to wait for every node to take its part down")
	return cmd
}

func newNetworkPlanCommand(streams IOStreams) *cobra.Command {
	sf := &specFlags{}
	var nodes []string
	var manager string
	cmd := &cobra.Command{
		Use:   "plan NAME --subnet CIDR --gateway IP --parent IFACE --nodes N1,N2,...",
		Short: "Print the docker and ip commands that make the network by hand, node by node",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := sf.spec(args[0])
			if err != nil {
				return err
			}
			if err := netspec.Validate(s, nil); err != nil {
				return err
			}
			if err := checkPlanNodes(nodes, manager); err != nil {
				return err
			}
			plans, err := netspec.Plan(s, nodes)
			if err != nil {
				return err
			}
			_, err = io.WriteString(streams.Out, netspec.Script(s, plans, cmp.Or(manager, nodes[0])))
			return err
		},
	}
	sf.add(cmd)
	cmd.Flags().Var((*nameList)(&nodes), "nodes", "node names, in order: the first gets the first range")
	cmd.Flags().StringVar(&manager, "manager", "", "the manager, one of --nodes, that creates the swarm network (default: the first node)")
	return cmd
}

// nameList is a flag of comma-separated names, repeatable. pflag's
// StringSlice reads CSV: it kept only the first line of a value, dropping
// the nodes after a newline, and took a quoted name's newline in.
type nameList []string

func (l *nameList) Set(v string) error {
	*l = append(*l, strings.Split(v, ",")...)
	return nil
}

func (l *nameList) String() string { return strings.Join(*l, ",") }
func (l *nameList) Type() string   { return "strings" }

// checkPlanNodes checks network plan's --nodes: each node is named once,
// with no space or control character
// (a node named twice would get two ranges and two config-only networks
// of one name), and no name is empty; and --manager, when given, is one
// of them: Docker makes the swarm network from the config-only network on
// the manager it is run on, and refuses where that network does not exist.
func checkPlanNodes(nodes []string, manager string) error {
	if len(nodes) == 0 {
		return errors.New("--nodes: name the nodes, in order, e.g. --nodes manager1,worker1")
	}
	seen := map[string]bool{}
	for i, n := range nodes {
		switch {
		case strings.TrimSpace(n) == "":
			return fmt.Errorf("--nodes %q: node %d has no name", strings.Join(nodes, ","), i+1)
		case strings.IndexFunc(n, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
			// Printed into the script's comments, a newline would make the
			// rest of the name a command of the script.
			return fmt.Errorf("--nodes %q: node %q has a space or control character, which no host name has", strings.Join(nodes, ","), n)
		case seen[n]:
			return fmt.Errorf("--nodes %q: node %s is named twice", strings.Join(nodes, ","), n)
		}
		seen[n] = true
	}
	if manager != "" && !seen[manager] {
		return fmt.Errorf("--manager %q: not among --nodes %q, so the plan makes no config-only network there and Docker refuses the swarm network; add it to --nodes", manager, strings.Join(nodes, ","))
	}
	return nil
}

// shortID is a swarm node ID as `docker node ls` prints it.
func shortID(id string) string {
	if id == "" {
		return "-"
	}
	return id[:min(len(id), 12)]
}

func orDash[T interface{ IsValid() bool }](v T) any {
	if !v.IsValid() {
		return "-"
	}
	return v
}

// perNodeSize is a network's per-node size as printed: none for cluster
// IPAM (specs stored before it was left out hold the flag's default).
func perNodeSize(s netspec.Spec) string {
	if s.IPAM == netspec.Cluster {
		return "-"
	}
	return strconv.Itoa(s.PerNodeSize)
}

// driverName is a network's driver as printed: "macvlan", "ipvlan l2".
func driverName(s netspec.Spec) string {
	if m := s.IPvlanModeName(); m != "" {
		return s.DriverName() + " " + m
	}
	return s.DriverName()
}
