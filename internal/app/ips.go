package app

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/inventory"
	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/netspec"
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
			kv := consul.NewKV(c)
			all, err := inventory.Load(cmd.Context(), kv)
			if err != nil {
				return err
			}
			pooled, err := poolAddresses(cmd.Context(), kv, all)
			if err != nil {
				return err
			}
			all = append(all, pooled...)
			inventory.Sort(all)
			dups := inventory.Check(all)
			es := inventory.Filter(all, network, node)
			if asJSON {
				return writeJSON(streams.Out, map[string]any{"addresses": es, "duplicates": dups})
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

// poolAddresses lists, for cluster-IPAM networks, what the pool holds that
// no container does: the gateway and aux addresses, shims, and allocations
// without a container (leaks awaiting reclaim). Inventory entries of those
// networks are marked in use.
func poolAddresses(ctx context.Context, kv *consul.KV, inv []inventory.Entry) ([]inventory.Entry, error) {
	specs, err := netspec.NewStore(kv).Specs(ctx)
	if err != nil {
		return nil, err
	}
	held := map[string]bool{}
	for i := range inv {
		inv[i].State = "in use"
		held[inv[i].Network+"|"+inv[i].IP] = true
	}
	var out []inventory.Entry
	for _, s := range specs {
		if s.IPAM != netspec.Cluster {
			continue
		}
		pool, gw := ipam.PoolOf(s, false)
		out = append(out, inventory.Entry{IP: gw.String(), Network: s.Name, State: "reserved: gateway"})
		for name, a := range s.Aux {
			out = append(out, inventory.Entry{IP: a.String(), Network: s.Name, State: "reserved: aux " + name})
		}
		allocs, err := ipam.Allocations(ctx, kv, pool)
		if err != nil {
			return nil, fmt.Errorf("read pool of %s: %w", s.Name, err)
		}
		for a, al := range allocs {
			if held[s.Name+"|"+a.String()] {
				continue
			}
			e := inventory.Entry{IP: a.String(), Node: al.Node, Network: s.Name, Since: al.At}
			switch al.Kind {
			case ipam.KindShim:
				e.State = "reserved: host shim"
			case ipam.KindSpare:
				e.State = "reserved: spare"
			default:
				e.State = "allocated, no container (leak: reclaimed after the grace period)"
			}
			out = append(out, e)
		}
	}
	return out, nil
}
