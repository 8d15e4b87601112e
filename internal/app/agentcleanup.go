package app

import (
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/underlay/underlay/internal/hostnet"
)

// newAgentCleanupCommand removes what the agent made on this host: the
// Debian package's prerm runs it when underlay is removed.
func newAgentCleanupCommand(g *globalFlags, streams IOStreams) *cobra.Command {
	return &cobra.Command{
		Use:   "cleanup",
		Short: "Remove the host shims and VLAN parents the agent made (stop the agent first)",
		Long: `Deletes this host's links that underlay's agent made, and nothing else: the
shims (macvlan or ipvlan links marked "underlay shim NETWORK", or named ul-XXXXXXXX
as older agents made them) and the VLAN parents marked "underlay network NETWORK"
(one that other links still hang off is left, and named: they would go with it).
Containers, Docker networks and Consul registrations are left. A running agent makes
its shims again: stop it first (removing the package does).`,
		Args: cobra.NoArgs,
		RunE: g.withLog(streams.ErrOut, func(cmd *cobra.Command, log *slog.Logger) error {
			removed, err := hostnet.RemoveLeftovers()
			for _, name := range removed {
				fmt.Fprintln(streams.Out, "removed", name)
			}
			return err
		}),
	}
}
