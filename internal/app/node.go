package app

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"os"
	"os/user"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/decommission"
	"github.com/underlay/underlay/internal/dockerhost"
	"github.com/underlay/underlay/internal/doctor"
	"github.com/underlay/underlay/internal/netagent"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/termtext"
)

func newNodeCommand(streams IOStreams) *cobra.Command {
	f := &networkFlags{}
	cmd := &cobra.Command{
		Use:   "node",
		Short: "List the nodes underlay knows, and remove what nodes removed from the swarm left in Consul",
	}
	addConsulFlags(cmd.PersistentFlags(), &f.consul)
	cmd.AddCommand(newNodeListCommand(f, streams), newNodeRemoveCommand(f, streams))
	return cmd
}

func newNodeListCommand(f *networkFlags, streams IOStreams) *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the nodes whose agents published facts, with their swarm state and when they were last heard",
		Long: `List the nodes whose agents published facts, with their swarm state and when they
were last heard; then the nodes ` + "`underlay node rm`" + ` removed (its records under
` + netspec.RemovedNodesKVPrefix + `ID), with when and by whom: their agents are refused
their identity. A node removed by mistake (the swarm still has it) comes back with
` + "`consul kv delete " + netspec.RemovedNodesKVPrefix + "ID`" + `; its agent, restarted, claims the ID again.
A node or host name the facts give that no agent writes (not 1 to 64 letters, digits,
'_', '.' or '-') is shown as ` + invalidCell + `, and warned of, naming the facts' key.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			kv, sw, done, err := f.nodeClients()
			if err != nil {
				return err
			}
			defer done()
			st := netspec.NewStore(kv)
			facts, misfiled, err := st.ReadNodes(ctx)
			if err != nil {
				return err
			}
			removed, err := st.Removals(ctx)
			if err != nil {
				return err
			}
			swarm, swarmErr := sw.ListSwarmNodes(ctx)
			if err := writeNodeList(streams, facts, misfiled, swarm, swarmErr, time.Now()); err != nil {
				return err
			}
			return writeRemovedNodes(streams.Out, removed, time.Now())
		},
	}
}

// writeRemovedNodes prints node ls's second table: the nodes node rm
// removed, from its records (netspec.RemovedNodesKVPrefix), whose agents
// are refused their identity, with the command that undoes a mistaken
// removal. Nothing when there are none.
func writeRemovedNodes(w io.Writer, removed []netspec.NodeRemoval, now time.Time) error {
	if len(removed) == 0 {
		return nil
	}
	fmt.Fprintf(w, "\nremoved by `underlay node rm` (their agents are refused; `consul kv delete %sID` undoes a mistaken removal):\n", netspec.RemovedNodesKVPrefix)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tREMOVED\tBY")
	// Records are documents node rm's token writes, but anyone's may:
	// quoted when they hold what would break their row.
	c := termtext.Cell
	for _, r := range removed {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c(r.ID), c(cmp.Or(r.Node, "-")), age(now, r.RemovedAt), c(cmp.Or(r.By, "-")))
	}
	return tw.Flush()
}

// writeNodeList prints node ls's table of facts, with the swarm's state
// of each node (of swarm's nodes, netspec.SwarmNodesOf; unknown when
// swarmErr is set), and its warnings. Facts under a key no agent writes
// are no node's: warned of, not listed.
func writeNodeList(streams IOStreams, facts []netspec.NodeFacts, misfiled []netspec.MisfiledFacts, swarm []netspec.SwarmNode, swarmErr error, now time.Time) error {
	facts, none := netspec.AgentsFacts(facts)
	warnFacts(streams.ErrOut, none, misfiled)
	warnNames(streams.ErrOut, facts, ": shown as "+invalidCell)
	if swarmErr != nil {
		// dockerd's answer, as it came: escaped where it would move the cursor.
		fmt.Fprintf(streams.ErrOut, "warning: %s: the SWARM column is unknown\n", termtext.Lines(swarmErr.Error()))
	}
	tw := tabwriter.NewWriter(streams.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tSWARM\tFACTS\tHOST")
	var gone []string
	for _, n := range facts {
		state := "?"
		if swarmErr == nil {
			var g bool
			state, g = swarmState(streams.ErrOut, n, swarm)
			if g {
				gone = append(gone, termtext.Cell(cmp.Or(n.ID, n.Node)))
			}
		}
		// Facts are documents every agent's token may write: quoted when
		// they hold what would break their row, and shortened; names no
		// agent writes are shown as invalid (warned of in warnFacts).
		c := tableCell
		name, host := c(n.Node), c(cmp.Or(n.Holder.Host, "-"))
		if n.NodeNameProblem() != nil {
			name = invalidCell
		}
		if n.HostNameProblem() != nil {
			host = invalidCell
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c(cmp.Or(n.ID, "-")), name, c(state), age(now, n.UpdatedAt), host)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(gone) > 0 {
		fmt.Fprintf(streams.ErrOut, "%d node(s) the swarm no longer lists: `underlay node rm NODE` removes what each left in Consul (%s)\n",
			len(gone), strings.Join(gone, ", "))
	}
	return nil
}

// swarmState is node ls's SWARM cell for the node of an agent's facts f,
// of the swarm's nodes (netspec.SwarmNodesOf), and whether the swarm no
// longer lists it. An older agent's node, naming no swarm node ID, is
// matched by host name, as node rm matches it, and said so: unknown ("?")
// when several swarm nodes have it (warned of on w), removed when none.
func swarmState(w io.Writer, f netspec.NodeFacts, swarm []netspec.SwarmNode) (state string, gone bool) {
	nodes, byHostName := netspec.SwarmNodesOf(f, swarm)
	switch len(nodes) {
	case 0:
		state, gone = "removed", true
	case 1:
		state = nodes[0].State
	default:
		each := make([]string, len(nodes))
		for i, n := range nodes {
			each[i] = fmt.Sprintf("%s (%s)", n.ID, n.State)
		}
		fmt.Fprintf(w, "warning: the swarm lists %d nodes of host name %s (swarm nodes %s): the SWARM column of %s, an older agent's node keyed by its name, is unknown\n",
			len(nodes), termtext.Cell(f.Node), termtext.Cell(strings.Join(each, ", ")), termtext.Cell(f.Node))
		return "?", false
	}
	if byHostName {
		state += " (by host name)"
	}
	return state, gone
}

func newNodeRemoveCommand(f *networkFlags, streams IOStreams) *cobra.Command {
	return &cobra.Command{
		Use:     "rm NODE",
		Aliases: []string{"remove"},
		Short:   "Remove what a node removed from the swarm for good left in Consul (refused while the swarm lists it or its agent runs)",
		Long: `Remove what a node removed from the swarm for good left in Consul: its facts, the
per-node ranges it leased and its state reports on every network, its cluster-IPAM
addresses, its inventory, doctor report, task metrics and report of the tasks it left
out of Consul. NODE is its swarm node ID,
or its name when only one node has it (an argument that may name more than one node —
a name two nodes have, an ID that is another node's name, a name that is the start of
another node's ID — is refused, naming each); or, for node facts under a key no agent writes
(node ls warns of them), the key's last part: they go with what is recorded under it,
and nothing under the node name they give. Refused while the swarm still lists the node
(run docker node rm first; an older agent's node, keyed by its name, while the swarm
lists a node of that host name) or while its agent refreshes its facts; facts refreshed
within the last 30 s are watched for 30 s first, older ones for 15 s (their stamp is
their node's clock, which may be behind this one's). Refused too while the swarm lists
none of the other nodes whose agents refresh their facts (DOCKER_HOST another cluster's
manager); when no stamp shows such an agent, their facts are watched for 15 s.

It records the removal under underlay/removed-nodes/ID first, before it removes
anything, and the record stays (a swarm node ID never comes back): an agent still
running under that ID, cut off from Consul during the removal, is refused its identity
when it comes back, writes nothing more and waits; a removal cut short (Consul out of
reach) is finished by running node rm again;
the node comes back by joining the swarm again (docker swarm leave, then docker swarm
join), its agent starting over under the new ID. node ls lists the records; a node
removed by mistake (the swarm still has it) comes back with
consul kv delete underlay/removed-nodes/ID.

It deregisters from Consul's catalog the services the node's agent registered (its
swarm tasks', found by swarm node ID, and its other containers', by node name) on
Consul nodes whose agent is no live member (serfHealth not passing), and says each. Stop
the node's Consul agent first, or run consul leave on it (which takes its services with
it): a running Consul agent registers its services again, so those are left, warned of,
and go when node rm runs again once it is stopped, by swarm node ID (the warning names
it: once the facts are gone the name finds no node). So are services of a container whose
node name another node has too. node rm's Consul token needs node:write on that Consul
node to deregister them (refused: warned of).

Its Consul token's policy: /usr/share/underlay/consul/node-rm.hcl (deploy/consul/node-rm.hcl),
exactly what it reads and writes.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			// An empty name (a shell variable unset in quotes) names no
			// node; refused before Consul or Docker is asked anything.
			if strings.TrimSpace(args[0]) == "" {
				return fmt.Errorf("node rm %q: give the node's swarm node ID or name, not an empty string", args[0])
			}
			kv, sw, done, err := f.nodeClients()
			if err != nil {
				return err
			}
			defer done()
			c, err := consul.NewClient(f.consul)
			if err != nil {
				return err
			}
			got, err := decommission.Remove(cmd.Context(), kv, sw, args[0], decommission.Options{Stale: netagent.StaleAfter, Heartbeat: removalHeartbeat, By: remover(),
				Services: decommission.ConsulServices(consul.NewNodeCatalog(c))})
			printRemoved(streams, got)
			if err != nil {
				return err
			}
			fmt.Fprintln(streams.Out, removedLine(got))
			return nil
		},
	}
}

// warnFacts warns of facts under a key no agent writes (none, as the
// doctor's nodes/facts does, with the command that removes each) and of
// misfiled ones, but those among none.
func warnFacts(w io.Writer, none []netspec.NodeFacts, misfiled []netspec.MisfiledFacts) {
	keys := map[string]bool{}
	for _, f := range none {
		r, _ := doctor.NoNodeFactsResult(f)
		keys[f.FactsKey()] = true
		if r.Fix == "" { // a key Consul's paths cannot name: the message says how it goes
			fmt.Fprintf(w, "warning: %s\n", r.Message)
		} else {
			fmt.Fprintf(w, "warning: %s; fix: %s\n", r.Message, r.Fix)
		}
	}
	for _, m := range misfiled {
		if !keys[m.Key] {
			fmt.Fprintf(w, "warning: %s\n", m)
		}
	}
}

// invalidCell stands in a listing for a name node facts give that no
// agent writes (netspec.NodeFacts.NameProblem).
const invalidCell = "(invalid)"

// warnNames warns of the agents' facts (netspec.AgentsFacts) whose names
// no agent writes, naming their key and why, then what the listing does
// of them (note, "" for nothing said).
func warnNames(w io.Writer, facts []netspec.NodeFacts, note string) {
	for _, f := range facts {
		if err := f.NameProblem(); err != nil {
			fmt.Fprintf(w, "warning: %s%s\n", termtext.Cell(err.Error()), note)
		}
	}
}

// remover names who runs node rm, user@host, for the record of the
// removal; what cannot be told is left out.
func remover() string {
	name := ""
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, _ := os.Hostname()
	switch {
	case name == "":
		return host
	case host == "":
		return name
	}
	return name + "@" + host
}

// removalHeartbeat is how long node rm watches facts stamped long ago:
// a heartbeat and a half, so that a running agent's next refresh comes
// within it.
const removalHeartbeat = netagent.Heartbeat * 3 / 2

// nodeClients are what the node commands read: Consul KV, and the swarm
// through DOCKER_HOST (a manager); done closes them.
func (f *networkFlags) nodeClients() (*consul.KV, *dockerhost.Networks, func(), error) {
	c, err := consul.NewClient(f.consul)
	if err != nil {
		return nil, nil, nil, err
	}
	api, err := dockerhost.NewClient()
	if err != nil {
		return nil, nil, nil, err
	}
	return consul.NewKV(c), dockerhost.NewNetworks(api), func() { api.Close() }, nil
}

// printRemoved says what was removed, also when the removal stopped part
// way, and warns of documents that disagree with their keys.
func printRemoved(streams IOStreams, r decommission.Removed) {
	// Networks, pools and keys are named as keys any agent's token may
	// write: quoted when they would break the line.
	c := termtext.Cell
	for _, n := range slices.Sorted(maps.Keys(r.Ranges)) {
		for _, b := range r.Ranges[n] {
			fmt.Fprintf(streams.Out, "released range %s of network %s\n", b, c(n))
		}
	}
	for _, n := range r.Reports {
		fmt.Fprintf(streams.Out, "removed its state report on network %s\n", c(n))
	}
	for _, p := range slices.Sorted(maps.Keys(r.Addresses)) {
		for _, a := range r.Addresses[p] {
			fmt.Fprintf(streams.Out, "freed address %s of pool %s\n", a, c(p))
		}
	}
	for _, k := range r.Keys {
		fmt.Fprintf(streams.Out, "deleted %s\n", c(k))
	}
	for _, k := range r.Changed {
		fmt.Fprintf(streams.Out, "rewrote %s without its records: other nodes' addresses stay\n", c(k))
	}
	for _, s := range r.Services {
		fmt.Fprintf(streams.Out, "deregistered service %s (%s) of Consul node %s from the catalog\n", c(s.ID), c(s.Name), c(s.Node))
	}
	if r.Recorded != "" {
		fmt.Fprintf(streams.Out, "recorded the removal in %s: an agent of the node is refused its identity from now on; it comes back by joining the swarm again, under a new ID\n", c(r.Recorded))
	}
	for _, w := range r.Warnings {
		fmt.Fprintf(streams.ErrOut, "warning: %s\n", c(w))
	}
}

// removedLine is node rm's last line: the node removed, or, when
// nothing was recorded under it (removed already, or an argument naming
// no node), that nothing was.
func removedLine(r decommission.Removed) string {
	if len(r.Ranges)+len(r.Reports)+len(r.Addresses)+len(r.Keys)+len(r.Changed)+len(r.Services) == 0 {
		return fmt.Sprintf("nothing recorded under %s: nothing removed", describeRemoved(r))
	}
	return fmt.Sprintf("node %s removed", describeRemoved(r))
}

func describeRemoved(r decommission.Removed) string {
	if r.Node == "" {
		return termtext.Cell(r.ID)
	}
	return fmt.Sprintf("%s (swarm node %s)", termtext.Cell(r.Node), termtext.Cell(r.ID))
}

// age says how long ago t was, for listings.
func age(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t).Round(time.Second)
	if d < 0 {
		return fmt.Sprintf("%s ahead of this clock", -d)
	}
	return d.String() + " ago"
}
