package app

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/inventory"
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
way on their node, leaks awaiting reclaim) and warns of any
KV document it skips (a node's inventory, a pool's key that cannot be read),
with the command that removes it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := consul.NewClient(opts)
			if err != nil {
				return err
			}
			kv := consul.NewKV(c)
			all, bad, err := inventory.Load(cmd.Context(), kv)
			if err != nil {
				return err
			}
			pooled, badPool, err := inventory.PoolAddresses(cmd.Context(), kv, all)
			if err != nil {
				return err
			}
			all, bad = append(all, pooled...), append(bad, badPool...)
			inventory.Sort(all)
			dups := inventory.Check(all)
			es := inventory.Filter(all, network, node)
			if asJSON {
				return writeJSON(streams.Out, map[string]any{"addresses": es, "duplicates": dups, "bad_documents": bad})
			}
			tw := tabwriter.NewWriter(streams.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "IP\tMAC\tNODE\tNETWORK\tCONTAINER\tSERVICE\tSLOT\tTASK\tSINCE\tSTATE\tPROBLEM")
			for _, e := range es {
				task := e.Task
				if len(task) > 12 {
					task = task[:12]
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.IP, e.MAC, e.Node, e.Network, e.Container,
					e.Service, e.Slot, task, since(e.Since), e.State, dupNote(e.Duplicate))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if dups > 0 {
				fmt.Fprintf(streams.ErrOut, "warning: %d address(es) held more than once; see PROBLEM\n", dups)
			}
			for _, b := range bad {
				what := "skipped inventory"
				switch {
				case b.Network != "":
					what = "skipped the refused spec of network " + b.Network + ","
				case b.Pool != "":
					what = "pool " + b.Pool + " skips"
				}
				fmt.Fprintf(streams.ErrOut, "warning: %s %s (%s): %s; fix: %s\n", what, b.Key, b.Problem, b.Effect, b.Fix)
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

func since(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.DateTime)
}

func dupNote(s string) string {
	if s == "" {
		return ""
	}
	return "DUPLICATE: " + s
}
