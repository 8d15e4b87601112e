package app

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/docker/docker/api/types/system"
	"github.com/spf13/cobra"

	"github.com/underlay/underlay/deploy"
	"github.com/underlay/underlay/internal/dockerhost"
)

type agentPolicyFlags struct {
	nodeID, node string
}

// newAgentPolicyCommand prints the Consul ACL policy of this node's agent:
// agent.hcl narrowed to the node's own keys.
func newAgentPolicyCommand(streams IOStreams) *cobra.Command {
	f := agentPolicyFlags{}
	cmd := &cobra.Command{
		Use:   "acl-policy",
		Short: "Print the Consul ACL policy of this node's agent, narrowed to the node's own keys",
		Long: `Prints deploy/consul/agent.hcl (/usr/share/underlay/consul/agent.hcl) narrowed to
one node: under underlay/nodes/, underlay/inventory/, underlay/metrics/ and
underlay/doctor/ the agent may read every key but write only its node's (its facts,
inventory, task metrics and doctor report, keyed by its swarm node ID, and the reports
an older agent kept under its name). With one such token per node, a node cannot make
another look dead, steer the autoscaler with another's metrics, or hide another's
report. Network specs, range leases, IPAM blocks and services stay shared: any node
may claim them.

The swarm node ID and the name are Docker's (as the agent takes them) unless given.
Make the policy and the node's token with an operator's token:

  underlay agent acl-policy > agent-$(hostname).hcl
  consul acl policy create -name underlay-agent-$(hostname) -rules @agent-$(hostname).hcl
  consul acl token create -description "underlay agent on $(hostname)" -policy-name underlay-agent-$(hostname)

A node that joins the swarm again gets a new swarm node ID, and needs a new policy.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			info := func(ctx context.Context) (system.Info, error) {
				api, err := dockerhost.NewClient()
				if err != nil {
					return system.Info{}, err
				}
				defer api.Close()
				return api.Info(ctx)
			}
			return agentPolicy(cmd.Context(), streams.Out, f, info)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.nodeID, "node-id", "", "the node's swarm node ID (default: Docker's)")
	fl.StringVar(&f.node, "node", "", "the agent's --node (default: Docker's host name, as the agent's)")
	return cmd
}

// agentPolicy writes the policy of the node f names, asking info for what
// f leaves out.
func agentPolicy(ctx context.Context, out io.Writer, f agentPolicyFlags, info func(context.Context) (system.Info, error)) error {
	if f.nodeID == "" || f.node == "" {
		i, err := info(ctx)
		if err != nil {
			return fmt.Errorf("ask Docker for this node's swarm node ID and name (or give --node-id and --node): %w", err)
		}
		if f.nodeID == "" {
			if i.Swarm.NodeID == "" {
				return errors.New("this node is in no swarm (Docker reports no swarm node ID): join the swarm first, or give --node-id")
			}
			f.nodeID = i.Swarm.NodeID
		}
		if f.node == "" {
			f.node = i.Name
		}
	}
	p, err := deploy.AgentNodePolicy(f.nodeID, f.node)
	if err != nil {
		return err
	}
	_, err = io.WriteString(out, p)
	return err
}
