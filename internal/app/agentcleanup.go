package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/underlay/underlay/internal/app/agentflags"
	"github.com/underlay/underlay/internal/dockerhost"
	"github.com/underlay/underlay/internal/hostnet"
	"github.com/underlay/underlay/internal/netagent"
	"github.com/underlay/underlay/internal/termtext"
)

// defaultStateDir is the agent's --state-dir, which `agent cleanup`
// reads its link owner from.
const defaultStateDir = agentflags.DefaultStateDir

type agentCleanupFlags struct {
	stateDir      string
	all           bool
	withoutDocker bool
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
once no macvlan link is left on it; one promiscuous before underlay stays so. A VLAN
parent the agent made that dockerd made again at boot, unmarked, before the agent ran
(restoring a container on its network) is removed too: the agent records the parents
it makes in --state-dir (file vlan-parents.json), and an unmarked VLAN recorded there,
of the name, lower device and VLAN id recorded, is its own; one not recorded is the
operator's, and left. The records of the parents removed, or gone, are removed.

Running containers' endpoints are in their own network namespaces, which this host's
listing does not see: cleanup asks the local dockerd (DOCKER_HOST) which running
containers are on macvlan and ipvlan networks, and which stopped ones dockerd starts
again when it starts (restart policy always or unless-stopped: Docker's driver would
make a parent deleted under them again, unmarked), and leaves their networks' parents
(deleting one deletes the containers' endpoints), the parents' promiscuous mode and
the networks' shims, named with the containers, exiting non-zero: stop (or remove)
those containers, then run it again. A parent that a Docker network still names
(its own, or its config-only network's) with no such container is left too, named
as the network: remove the network first. This is the rule the agent follows when
a network is removed (underlay network rm). When dockerd cannot be asked, nothing is
removed; --without-docker removes the links whatever containers use them.

It prints each link removed, each left and why, each parent made not promiscuous
again, and each record of the promisc directory and of vlan-parents.json it removed. Containers, Docker
networks and Consul registrations are left. A running agent makes its shims again:
stop it first (removing the package does).`,
		Args: cobra.NoArgs,
		RunE: g.withLog(streams.ErrOut, func(cmd *cobra.Command, log *slog.Logger) error {
			var d dockerhost.LinkUsersAPI
			if !f.withoutDocker {
				dc, err := dockerhost.NewClient()
				if err != nil {
					return fmt.Errorf("docker client, to see which running containers use the links: %w (--without-docker removes them regardless)", err)
				}
				defer dc.Close()
				d = dc
			}
			return agentCleanup(cmd.Context(), streams.Out, log, f, d, hostnet.RemoveLeftovers)
		}),
	}
	fl := cmd.Flags()
	fl.StringVar(&f.stateDir, "state-dir", defaultStateDir, "the agent's --state-dir, where it recorded the owner its links' marks name (read only)")
	fl.BoolVar(&f.all, "all", false, "remove every underlay link, whatever owner its mark names (other underlays' in this network namespace too)")
	fl.BoolVar(&f.withoutDocker, "without-docker", false, "do not ask dockerd which running containers use the links: remove them regardless (a parent's removal takes its containers' endpoints along)")
	return cmd
}

// agentCleanup removes, with remove, the links of the agent whose owner
// f's state directory records, but those running containers use (asked
// of d; nil asks none), and reports what it removed, what it left and
// why, the parents it made not promiscuous again and the records it
// removed. It never records an owner itself: one made now would be no
// link's. Docker not answering, it removes nothing.
func agentCleanup(ctx context.Context, out io.Writer, log *slog.Logger, f agentCleanupFlags, d dockerhost.LinkUsersAPI, remove func(hostnet.Cleanup) (hostnet.CleanupReport, error)) error {
	c := hostnet.Cleanup{All: f.all}
	if d != nil {
		users, err := dockerhost.LinkUsers(ctx, d)
		if err != nil {
			return fmt.Errorf("%w: nothing removed; start dockerd (or set DOCKER_HOST) and run it again, or pass --without-docker to remove the links whatever containers use them", err)
		}
		c.InUse = users
	}
	if !f.all {
		owner, err := netagent.RecordedLinkOwner(f.stateDir)
		if err != nil {
			log.Warn("this agent's link owner is unknown: removing only underlay links whose marks name no owner; those naming an owner are listed, and --all removes them", "component", "cleanup", "state_dir", f.stateDir, "err", err)
		}
		c.Owner = owner
	}
	if f.stateDir != "" {
		c.Parents = hostnet.NewParentFile(f.stateDir)
		if rec, err := hostnet.NewPromiscFiles(f.stateDir); err != nil {
			log.Warn("the parents the agent made promiscuous cannot be told: every parent is left as it is", "component", "cleanup", "err", err)
		} else {
			c.Promisc = rec
		}
	}
	rep, err := remove(c)
	for _, name := range rep.Removed {
		fmt.Fprintln(out, "removed", termtext.Cell(name))
	}
	for _, l := range rep.Left {
		fmt.Fprintf(out, "left %s: marked by owner %s, not this agent's (--all removes it)\n", termtext.Cell(l.Name), termtext.Cell(hostnet.MarkOwner(l.Alias)))
	}
	for _, u := range rep.InUse {
		fmt.Fprintf(out, "left %s: in use by %s (stop or remove those containers, remove those networks, then run underlay agent cleanup again)\n", termtext.Cell(u.Name), termtext.Cell(strings.Join(u.Users, "; ")))
	}
	for _, p := range rep.PromiscOff {
		fmt.Fprintf(out, "parent %s: promiscuous mode off (the agent had turned it on)\n", termtext.Cell(p))
	}
	for _, p := range rep.Forgotten {
		fmt.Fprintf(out, "parent %s: record removed (%s)\n", termtext.Cell(p), termtext.Cell(filepath.Join(f.stateDir, hostnet.PromiscDir, p)))
	}
	for _, p := range rep.Unrecorded {
		fmt.Fprintf(out, "VLAN parent %s: record removed (%s)\n", termtext.Cell(p), termtext.Cell(filepath.Join(f.stateDir, hostnet.ParentsFileName)))
	}
	return err
}
