package app

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
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
service, slot and task. An IP (per network) or MAC held twice is flagged. For
cluster-IPAM networks it adds what the pool holds that no container does
(gateway, aux, host shims, spares, leaks awaiting reclaim) and warns of any
KV document the pool skips, with the command that removes it.`,
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
			pooled, bad, err := poolAddresses(cmd.Context(), kv, all)
			if err != nil {
				return err
			}
			all = append(all, pooled...)
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
				fmt.Fprintf(streams.ErrOut, "warning: pool %s skips %s (%s): nothing is allocated from it, and addresses recorded there are not listed above; fix: %s\n",
					b.Pool, b.Key, b.Problem, b.Fix)
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

// badDocument is a key a cluster-IPAM pool skips, as `ips --json` shows it.
type badDocument struct {
	Pool    string `json:"pool"`
	Key     string `json:"key"`
	Problem string `json:"problem"`
	Fix     string `json:"fix"`
}

// poolAddresses lists, for cluster-IPAM networks, what the pool holds that
// no container does: the gateway and aux addresses, shims, and allocations
// without a container (leaks awaiting reclaim), with the node's name (the
// pool records its identity); and the pool's bad KV documents. Inventory
// entries of those networks are marked in use.
func poolAddresses(ctx context.Context, kv *consul.KV, inv []inventory.Entry) ([]inventory.Entry, []badDocument, error) {
	st := netspec.NewStore(kv)
	specs, err := st.Specs(ctx)
	if err != nil {
		return nil, nil, err
	}
	facts, err := st.Nodes(ctx)
	if err != nil {
		return nil, nil, err
	}
	names := map[string]string{}
	for _, f := range facts {
		names[f.ID] = f.Node
	}
	nodeName := func(id string) string {
		if n := names[id]; n != "" {
			return n
		}
		return id
	}
	var bad []badDocument
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
		_, gw := ipam.PoolOf(s, false)
		out = append(out, inventory.Entry{IP: gw.String(), Network: s.Name, State: "reserved: gateway"})
		for name, a := range s.Aux {
			out = append(out, inventory.Entry{IP: a.String(), Network: s.Name, State: "reserved: aux " + name})
		}
		allocs := map[netip.Addr]ipam.Alloc{}
		for _, v6 := range []bool{false, true} {
			if v6 && !s.IPv6Subnet.IsValid() {
				continue
			}
			pool, _ := ipam.PoolOf(s, v6)
			c, err := ipam.Inspect(ctx, kv, pool)
			if err != nil {
				return nil, nil, fmt.Errorf("read pool of %s: %w", s.Name, err)
			}
			maps.Copy(allocs, c.Allocs)
			for _, b := range c.Bad {
				bad = append(bad, badDocument{Pool: pool.ID(), Key: b.Key, Problem: b.Err.Error(), Fix: b.Fix()})
			}
		}
		for a, al := range allocs {
			if held[s.Name+"|"+a.String()] {
				continue
			}
			e := inventory.Entry{IP: a.String(), Node: nodeName(al.Node), Network: s.Name, Since: al.At}
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
	return out, bad, nil
}
