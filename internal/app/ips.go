package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/doctor"
	"github.com/underlay/underlay/internal/inventory"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/shellword"
	"github.com/underlay/underlay/internal/termtext"
)

func newIPsCommand(streams IOStreams) *cobra.Command {
	var (
		opts          consul.Options
		network, node string
		asJSON        bool
	)
	cmd := &cobra.Command{
		Use:   "ips",
		Short: "List every underlay IP and MAC in the cluster, where it is and what holds it",
		Long: `ips reads the inventories the agents publish: every container address on a
macvlan or ipvlan network, on every node, with its MAC, container and Swarm
service, slot and task. An IP (per network) or MAC held twice is flagged. For
cluster-IPAM networks it adds what the pool holds that no container does
(gateway, aux, host shims, spares, addresses kept for a container start under
way on their node, leaks awaiting reclaim). An address a node's inventory
left out to fit Consul's value limit (512 KiB: thousands of addresses on one
node) is listed as not reported (inventory full), not as a leak, and warned
of. An address on a network its node could not read is listed with the
error in PROBLEM. A name longer than 128 bytes is shortened in the table,
saying how long it was (--json holds it whole). It warns of any KV document it
skips, with the command that removes it: a node's inventory that cannot be
read, that names another node than its key's, or whose key's node has no node
facts (an agent publishes its facts first: it is stale or forged); a pool's
key that cannot be read, or a whole pool Consul did not give (the other pools are
listed); a network spec every agent refuses (its pool is not
listed). It warns too of node facts filed under another node's key, taken as
that key's node's (--json lists them under misfiled_facts), and of node facts
under a key no agent writes, which are no node's (no_node_facts). --network and --node must name a network or
node the cluster knows; when they match no address, ips says so.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, f := range []string{"network", "node"} {
				// An empty value matched everything: a script's unset
				// variable listed the whole cluster as if it were one node's.
				if cmd.Flags().Changed(f) && cmd.Flags().Lookup(f).Value.String() == "" {
					return fmt.Errorf("--%s \"\": empty; leave --%s out to list every %s", f, f, f)
				}
			}
			c, err := consul.NewClient(opts)
			if err != nil {
				return err
			}
			ctx, kv := cmd.Context(), consul.NewKV(c)
			// Read once for all that judges by them: two reads could
			// disagree (a node publishing in between).
			facts, misfiled, err := netspec.NewStore(kv).ReadNodes(ctx)
			if err != nil {
				return err
			}
			// Facts under a key no agent writes are no node's: they name
			// no inventory's or pool's holder, and are warned of.
			facts, none := netspec.AgentsFacts(facts)
			all, bad, err := inventory.Load(ctx, kv, facts)
			if err != nil {
				return err
			}
			pooled, badPool, err := inventory.PoolAddresses(ctx, kv, all, facts)
			if err != nil {
				return err
			}
			all, bad = append(all, pooled...), append(bad, badPool...)
			inventory.Sort(all)
			dups := inventory.Check(all)
			filters := ipsFilters(network, node)
			if filters != "" {
				networks, nodes, err := knownNames(ctx, kv, facts)
				if err != nil {
					return err
				}
				if err := checkIPsFilters(all, network, node, networks, nodes); err != nil {
					return err
				}
			}
			es := inventory.Filter(all, network, node)
			if len(es) == 0 && filters != "" {
				// Said, so that an empty listing is not taken for a failure
				// to read; to stderr, leaving --json's output as it was.
				fmt.Fprintf(streams.ErrOut, "no addresses match %s\n", filters)
			}
			if asJSON {
				return writeJSON(streams.Out, map[string]any{"addresses": es, "duplicates": dups, "bad_documents": bad,
					"misfiled_facts": misfiledJSON(misfiled, none), "no_node_facts": noNodeJSON(none)})
			}
			// As node ls does: misfiled ones name the inventories' and
			// pools' holders below. Each quotes what it names.
			warnFacts(streams.ErrOut, none, misfiled)
			warnNames(streams.ErrOut, facts, "")
			tw := tabwriter.NewWriter(streams.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "IP\tMAC\tNODE\tNETWORK\tCONTAINER\tSERVICE\tSLOT\tTASK\tSINCE\tSTATE\tPROBLEM")
			// The pools' holders are named as block documents and facts,
			// which any agent's token may write, name them: quoted when
			// they would break their row (the inventories' are checked).
			// Shortened too: a name of any length widened its column, and
			// so every row (--json keeps it whole).
			q := tableCell
			for _, e := range es {
				task := termtext.Head(e.Task, 12) // as docker service ps shows it
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", q(e.IP), q(e.MAC), q(e.Node), q(e.Network), q(e.Container),
					q(e.Service), q(e.Slot), q(task), since(e.Since), q(e.State), problemNote(e))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if dups > 0 {
				fmt.Fprintf(streams.ErrOut, "warning: %d address(es) held more than once; see PROBLEM\n", dups)
			}
			warnNotReported(streams.ErrOut, es)
			// Keys and specs any agent's token may write, quoted as above;
			// whole: one line each, its problem long.
			q = termtext.Cell
			for _, b := range bad {
				what := "skipped inventory"
				switch {
				case b.Network != "":
					what = "skipped the refused spec of network " + q(b.Network) + ","
				case b.Pool != "":
					what = "pool " + q(b.Pool) + " skips"
				}
				fix := ""
				if b.Fix != "" { // none for a key Consul's paths cannot name: Problem says how it goes
					fix = "; fix: " + q(b.Fix)
				}
				fmt.Fprintf(streams.ErrOut, "warning: %s %s (%s): %s%s\n", what, q(b.Key), q(b.Problem), q(b.Effect), fix)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	addConsulFlags(fl, &opts)
	fl.StringVar(&network, "network", "", "only this network")
	fl.StringVar(&node, "node", "", "only this node")
	fl.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// warnNotReported says how many of es their nodes' inventories left
// out to fit Consul's value limit, by node: not leaks, but addresses
// whose containers ips cannot name.
func warnNotReported(w io.Writer, es []inventory.Entry) {
	byNode := map[string]int{}
	for _, e := range es {
		if e.State == inventory.StateNotReported || e.State == inventory.StateUnlisted {
			byNode[e.Node]++
		}
	}
	for _, node := range slices.Sorted(maps.Keys(byNode)) {
		fmt.Fprintf(w, "warning: %d address(es) of node %s not reported: its inventory is above Consul's value limit (its agent logs which, and counts them in underlay_inventory_entries_left_out); see STATE\n",
			byNode[node], termtext.Cell(node))
	}
}

// misfiledFact is a facts document filed under another node's key, as
// ips --json lists it: TakenAs is the node whose facts ips takes it for
// (its key's), Names the one it names.
type misfiledFact struct {
	Key     string `json:"key"`
	Names   string `json:"names"`
	TakenAs string `json:"taken_as"`
}

// misfiledJSON is ms for ips --json, but those under the keys of none
// (no_node_facts: taken as no node's): a list, empty when there are
// none, so that a script can read it without checking for null.
func misfiledJSON(ms []netspec.MisfiledFacts, none []netspec.NodeFacts) []misfiledFact {
	out := make([]misfiledFact, 0, len(ms))
	for _, m := range ms {
		if slices.ContainsFunc(none, func(f netspec.NodeFacts) bool { return f.FactsKey() == m.Key }) {
			continue
		}
		out = append(out, misfiledFact{Key: m.Key, Names: m.Names, TakenAs: strings.TrimPrefix(m.Key, netspec.NodesKVPrefix)})
	}
	return out
}

// noNodeFact is a facts document under a key no agent writes, as ips
// --json lists it: Node is the node it names, Problem why no agent writes
// its key, and Fix the command that removes it ("" for a key Consul's
// paths cannot name: Problem says how it goes).
type noNodeFact struct {
	Key     string `json:"key"`
	Node    string `json:"node"`
	Problem string `json:"problem"`
	Fix     string `json:"fix"`
}

// noNodeJSON is none for ips --json: a list, empty when there are none.
func noNodeJSON(none []netspec.NodeFacts) []noNodeFact {
	out := make([]noNodeFact, 0, len(none))
	for _, f := range none {
		r, _ := doctor.NoNodeFactsResult(f)
		out = append(out, noNodeFact{Key: f.FactsKey(), Node: f.Node, Problem: r.Message, Fix: r.Fix})
	}
	return out
}

// ipsFilters is the filters given to ips, as flags: "" for none.
func ipsFilters(network, node string) string {
	var fs []string
	if network != "" {
		fs = append(fs, "--network "+shellword.Quote(network))
	}
	if node != "" {
		fs = append(fs, "--node "+shellword.Quote(node))
	}
	return strings.Join(fs, " ")
}

// knownNames are the networks with a spec, readable or not, and the
// nodes whose agents published facts (the facts ips read).
func knownNames(ctx context.Context, kv netspec.KV, facts []netspec.NodeFacts) (networks, nodes []string, err error) {
	l, err := netspec.NewStore(kv).ReadListing(ctx)
	if err != nil {
		return nil, nil, err
	}
	for _, s := range l.Specs {
		networks = append(networks, s.Name)
	}
	for _, b := range l.Bad {
		networks = append(networks, b.Name)
	}
	for _, f := range facts {
		nodes = append(nodes, f.Node)
	}
	return networks, nodes, nil
}

// checkIPsFilters refuses a filter naming a network or node the cluster
// knows nowhere: not among es's, nor networks (those with a spec) or
// nodes (those whose agent published facts). Such a name is a typo,
// which matched nothing and was taken for an empty network or node.
func checkIPsFilters(es []inventory.Entry, network, node string, networks, nodes []string) error {
	for _, e := range es {
		networks = append(networks, e.Network)
		if e.Node != "" {
			nodes = append(nodes, e.Node)
		}
	}
	var errs []error
	if network != "" && !slices.Contains(networks, network) {
		errs = append(errs, fmt.Errorf("--network %q: no such network (networks: %s)", network, someNames(networks)))
	}
	if node != "" && !slices.Contains(nodes, node) {
		errs = append(errs, fmt.Errorf("--node %q: no such node (nodes: %s)", node, someNames(nodes)))
	}
	return errors.Join(errs...)
}

// someNames lists names, sorted and once each, the first ten of them,
// each as a table's cell (tableCell): node facts, which any agent's token
// may write, name their node unchecked, and a newline there forged a line
// of the error.
func someNames(names []string) string {
	names = slices.Compact(slices.Sorted(slices.Values(names)))
	more := ""
	switch {
	case len(names) == 0:
		return "none"
	case len(names) > 10:
		more = fmt.Sprintf(" and %d more", len(names)-10)
		names = names[:10]
	}
	cells := make([]string, len(names))
	for i, n := range names {
		cells[i] = tableCell(n)
	}
	return strings.Join(cells, ", ") + more
}

func since(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.DateTime)
}

// problemNote is the PROBLEM column of e: its duplicate's note, and why
// its node could not read its network, each quoted when it would break
// its row (the notes quote their holders).
func problemNote(e inventory.Entry) string {
	var ps []string
	if e.Duplicate != "" {
		ps = append(ps, "DUPLICATE: "+e.Duplicate)
	}
	if e.NetworkProblem != "" {
		ps = append(ps, "NETWORK UNREADABLE ON ITS NODE: "+termtext.Shorten(termtext.Cell(e.NetworkProblem), 2*maxTableCell))
	}
	return strings.Join(ps, "; ")
}
