package app

import (
	"fmt"
	"io"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/underlay/underlay/internal/app/agentflags"
	"github.com/underlay/underlay/internal/hostnet"
	"github.com/underlay/underlay/internal/netagent"
	"github.com/underlay/underlay/internal/termtext"
)

// defaultStateDir is the agent's --state-dir, which `agent cleanup`
// reads its link owner from.
const defaultStateDir = agentflags.DefaultStateDir

type agentCleanupFlags struct {
	stateDir string
	all      bool
}

// newAgentCleanupCommand removes what the agent made on this host: the
// Debian package's prerm runs it when underlay is removed.
func newAgentCleanupCommand(g *globalFlags, streams IOStreams) *cobra.Command {
	f := agentCleanupFlags{}
	cmd := &cobra.Command{
		Use:   "cleanup",
		Short: "Remove the host shims and VLAN parents the agent made (stop the agent first)",
		Long: `Deletes this host's links that this underlay's agent made, and nothing else: the
shims (macvlan or ipvlan links marked "underlay shim NETWORK by OWNER", or named
ul-XXXXXXXX as older agents made them) and the VLAN parents marked "underlay network
NETWORK by OWNER" (one that other links still hang off is left, and named: they would
go with it). OWNER is the agent's, read from its --state-dir (file link-owner); links
whose marks name no owner (older agents') go too. Links whose marks name another owner
are another underlay's (another cluster's agent in this network namespace): they are
left, and listed with their owner; --all removes them as well. With no owner recorded,
or one that cannot be read, only links naming no owner go. A parent the agent made
promiscuous (recorded in --state-dir, directory promisc) is made not promiscuous again
once no macvlan link is left on it; one promiscuous before underlay stays so.
Containers, Docker networks and Consul registrations are left. A running agent makes
its shims again: stop it first (removing the package does).`,
		Args: cobra.NoArgs,
		RunE: g.withLog(streams.ErrOut, func(cmd *cobra.Command, log *slog.Logger) error {
			return agentCleanup(streams.Out, log, f, hostnet.RemoveLeftovers)
		}),
	}
	fl := cmd.Flags()
	fl.StringVar(&f.stateDir, "state-dir", defaultStateDir, "the agent's --state-dir, where it recorded the owner its links' marks name (read only)")
	fl.BoolVar(&f.all, "all", false, "remove every underlay link, whatever owner its mark names (other underlays' in this network namespace too)")
	return cmd
}

// agentCleanup removes, with remove, the links of the agent whose owner
// f's state directory records, and reports what it removed and what it
// left as another owner's. It never records an owner itself: one made
// now would be no link's.
func agentCleanup(out io.Writer, log *slog.Logger, f agentCleanupFlags, remove func(hostnet.Cleanup) ([]string, []hostnet.Link, error)) error {
	c := hostnet.Cleanup{All: f.all}
	if !f.all {
		owner, err := netagent.RecordedLinkOwner(f.stateDir)
		if err != nil {
			log.Warn("this agent's link owner is unknown: removing only underlay links whose marks name no owner; those naming an owner are listed, and --all removes them", "component", "cleanup", "state_dir", f.stateDir, "err", err)
		}
		c.Owner = owner
	}
	if f.stateDir != "" {
		if rec, err := hostnet.NewPromiscFiles(f.stateDir); err != nil {
			log.Warn("the parents the agent made promiscuous cannot be told: every parent is left as it is", "component", "cleanup", "err", err)
		} else {
			c.Promisc = rec
		}
	}
	removed, left, err := remove(c)
	for _, name := range removed {
		fmt.Fprintln(out, "removed", name)
	}
	for _, l := range left {
		fmt.Fprintf(out, "left %s: marked by owner %s, not this agent's (--all removes it)\n", termtext.Cell(l.Name), termtext.Cell(hostnet.MarkOwner(l.Alias)))
	}
	return err
}
