package app

import (
	"errors"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/dockerhost"
	"github.com/underlay/underlay/internal/doctor"
	"github.com/underlay/underlay/internal/netspec"
)

// errChecksFailed makes the exit status non-zero when a check failed; the
// report already says which.
var errChecksFailed = errors.New("doctor: some checks failed")

func newDoctorCommand(g *globalFlags, streams IOStreams) *cobra.Command {
	var (
		opts     consul.Options
		node     string
		asJSON   bool
		stateDir string
	)
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check this node's host, Docker, Consul and underlay networks, and explain how to fix what is wrong",
		Long: `doctor runs on a node and checks its host (netlink, the local dockerd through
DOCKER_HOST, the local Consul agent) and, through Consul, what the cluster
expects of it: kernel macvlan and 802.1q support, each underlay network's
parent, shim and route, the bridge-netfilter/FORWARD trap, Docker version and
swarm state, the plugin directory, Consul reachability and clock skew, and
whether the host reaches its own containers on underlay networks.

A VLAN parent with no mark is judged made by hand, unless the agent's record of
the parents it made (--state-dir, file vlan-parents.json) names it: dockerd made it
again at boot, and the agent marks it again at its next sync. A record that cannot
be read is a warning naming the file.

Each failed check prints the command that fixes it. The exit status is 1
when any check failed; warnings alone leave it 0.`,
		Args: cobra.NoArgs,
		RunE: g.withLog(streams.ErrOut, func(cmd *cobra.Command, log *slog.Logger) error {
			ctx := cmd.Context()
			dc, err := dockerhost.NewClient()
			if err != nil {
				return err
			}
			defer dc.Close()
			c, err := consul.NewClient(opts)
			if err != nil {
				return err
			}
			ep, err := consul.NewEndpoint(opts)
			if err != nil {
				return err
			}
			ca := doctor.NewConsulAPI(c, ep)
			d := &doctor.DockerAPI{API: dc}
			kv := consul.NewKV(c)
			env := doctor.Env{
				NodeID:      doctor.NodeID(ctx, d),
				Node:        doctor.NodeName(ctx, node, d),
				Docker:      d,
				Consul:      ca,
				Networks:    netspec.NewStore(kv),
				Pools:       doctor.IPAMPools{KV: kv},
				Inventories: doctor.KVInventories{KV: kv},
				TaskReports: doctor.KVTaskReports{KV: kv},
				StateDir:    stateDir,
			}
			rs := doctor.Run(ctx, env.Node, env.Checks(), doctor.DebugLogf(log))
			if asJSON {
				err = doctor.WriteJSON(streams.Out, rs)
			} else {
				err = doctor.WriteTable(streams.Out, rs)
			}
			if err != nil {
				return err
			}
			if doctor.Failed(rs) {
				return errChecksFailed
			}
			return nil
		}),
	}
	fl := cmd.Flags()
	fl.StringVar(&node, "node", "", "this node's name, as its agent reports it (default: Docker's host name)")
	fl.BoolVar(&asJSON, "json", false, "print a JSON list of {node, check, status, message, fix}")
	fl.StringVar(&stateDir, "state-dir", defaultStateDir, "the agent's --state-dir, whose record of the VLAN parents it made tells one dockerd made again unmarked at boot for underlay's (read only; empty: not read)")
	addConsulFlags(fl, &opts)
	return cmd
}
