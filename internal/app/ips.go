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
service, slot and task. An IP (per network) or MAC held twice is flagged.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := consul.NewClient(opts)
			if err != nil {
				return err
			}
			all, err := inventory.Load(cmd.Context(), consul.NewKV(c))
			if err != nil {
				return err
			}
			dups := inventory.Check(all)
			es := inventory.Filter(all, network, node)
			if asJSON {
				return writeJSON(streams.Out, map[string]any{"addresses": es, "duplicates": dups})
			}
			tw := tabwriter.NewWriter(streams.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "IP\tMAC\tNODE\tNETWORK\tCONTAINER\tSERVICE\tSLOT\tTASK\tSINCE\tPROBLEM")
			for _, e := range es {
				task := e.Task
				if len(task) > 12 {
					task = task[:12]
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.IP, e.MAC, e.Node, e.Network, e.Container,
					e.Service, e.Slot, task, e.Since.Local().Format(time.DateTime), dupNote(e.Duplicate))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if dups > 0 {
				fmt.Fprintf(streams.ErrOut, "warning: %d address(es) held more than once; see PROBLEM\n", dups)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&opts.Addr, "consul-addr", "", "Consul agent HTTP address (default $CONSUL_HTTP_ADDR or 127.0.0.1:8500)")
	fl.StringVar(&opts.Token, "consul-token", "", "Consul ACL token (default $CONSUL_HTTP_TOKEN)")
	fl.StringVar(&network, "network", "", "only this network")
	fl.StringVar(&node, "node", "", "only this node")
	fl.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func dupNote(s string) string {
	if s == "" {
		return ""
	}
	return "DUPLICATE: " + s
}
