package app

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/underlay/underlay/internal/lab"
)

type labFlags struct {
	name string
	cfg  lab.Config
	json bool
}

func newLabCommand(g *globalFlags, streams IOStreams) *cobra.Command {
	f := &labFlags{}
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "Run a multi-node Swarm + Consul cluster with a macvlan underlay on this machine",
		Long: `A lab is a set of nodes on this machine, each in its own network, mount, UTS
and PID namespaces with its own dockerd, Consul agent and underlay agent, joined
into one swarm. Each node's eth1 sits on a bridge playing the existing L2
network (the macvlan parent); this machine holds the underlay gateway on it, so
it reaches every container directly. Several labs coexist by name.

With --vm the nodes are QEMU virtual machines booting Debian's kernel, each with
two NICs bonded (bond0) on a trunk carrying VLANs 40 and 41; the underlay is
VLAN 40 (parent bond0.40), routed by the lab's own network namespace.`,
	}
	cmd.PersistentFlags().StringVar(&f.name, "name", lab.DefaultName, "lab name")
	cmd.AddCommand(newLabUpCommand(g, streams, f), newLabDownCommand(g, streams, f), newLabStatusCommand(streams, f),
		newLabEnvCommand(streams, f), newLabExecCommand(streams, f), newLabLogsCommand(streams, f))
	cmd.AddCommand(newLabVMCommands(g, streams)...)
	return cmd
}

func newLabUpCommand(g *globalFlags, streams IOStreams, f *labFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Create the lab, or repair it (restart what died)",
		Args:  cobra.NoArgs,
		RunE: g.withLog(streams.ErrOut, func(cmd *cobra.Command, log *slog.Logger) error {
			f.cfg.Name = f.name
			// Repairing an existing lab: flags not given keep its values.
			if old, err := lab.RecordedConfig(f.name); err == nil {
				f.cfg = keepRecorded(f.cfg, old, cmd.Flags().Changed)
			}
			if err := checkLabCounts(f.cfg); err != nil {
				return err
			}
			if !f.cfg.NoAgent || f.cfg.VM {
				var err error
				if f.cfg.UnderlayBin, err = underlayBinary(); err != nil {
					return err
				}
			}
			if err := lab.Up(cmd.Context(), f.cfg, log); err != nil {
				return err
			}
			st, err := lab.GetStatus(cmd.Context(), f.name)
			if err != nil {
				return err
			}
			return printStatus(streams.Out, st)
		}),
	}
	fl := cmd.Flags()
	fl.IntVar(&f.cfg.Nodes, "nodes", lab.DefaultNodes, fmt.Sprintf("number of nodes (1 to %d)", lab.MaxNodes))
	fl.IntVar(&f.cfg.Managers, "managers", 1, "number of swarm managers (the first nodes)")
	fl.IntVar(&f.cfg.ConsulServers, "consul-servers", 1, "number of Consul servers (the first nodes): 1 or 3")
	fl.StringVar(&f.cfg.UnderlaySubnet, "underlay-subnet", lab.DefaultUnderlaySubnet, "IPv4 subnet of the underlay bridge, in private, shared or benchmarking space (10/8, 172.16/12, 192.168/16, 100.64/10, 198.18/15); its first address is the gateway, held by this machine")
	fl.BoolVar(&f.cfg.NoAgent, "no-agent", false, "do not run the underlay agent on the nodes")
	fl.StringVar(&f.cfg.Agents, "agents", lab.AgentsProcess, "how the agents run: process (a plain process per node) or stack (deploy/stack.yml with the image underlay:VERSION, agent and control, as the README tells users)")
	fl.StringVar(&f.cfg.Engine, "engine", lab.DefaultEngine(), "Docker engine the nodes run: 20.10 (the dockerd on PATH), 28 or 29 (built by scripts/build-engines.sh); default $"+lab.EnvEngine)
	fl.BoolVar(&f.cfg.VM, "vm", false, "nodes are QEMU VMs booting Debian's kernel: bond0 of two NICs, VLANs 40 and 41, the underlay on bond0.40")
	fl.BoolVar(&f.cfg.Systemd, "systemd", false, "VM nodes boot systemd, with a disk: dockerd and Consul are units, what is installed survives 'systemctl reboot' (with --vm)")
	return cmd
}

// keepRecorded is cfg, for `lab up` on an existing lab: each setting whose
// flag was not given (changed reports which were), and each no flag sets,
// is the lab's recorded one, old's.
func keepRecorded(cfg, old lab.Config, changed func(flag string) bool) lab.Config {
	keep := func(flag string, dst *int, v int) {
		if !changed(flag) {
			*dst = v
		}
	}
	keep("nodes", &cfg.Nodes, old.Nodes)
	keep("managers", &cfg.Managers, old.Managers)
	keep("consul-servers", &cfg.ConsulServers, old.ConsulServers)
	if !changed("underlay-subnet") {
		cfg.UnderlaySubnet = old.UnderlaySubnet
	}
	if !changed("engine") && old.Engine != "" {
		cfg.Engine = old.Engine
	}
	if !changed("agents") {
		cfg.Agents = old.Agents
	}
	if !changed("no-agent") {
		cfg.NoAgent = old.NoAgent
	}
	if !changed("vm") {
		cfg.VM = old.VM
	}
	if !changed("systemd") {
		cfg.Systemd = old.Systemd
	}
	// No flag sets these: a lab made by a test or the soak keeps its own.
	cfg.AgentArgs, cfg.DockerArgs, cfg.Images = old.AgentArgs, old.DockerArgs, old.Images
	return cfg
}

// checkLabCounts refuses the counts lab.Up would take as "the default"
// when zero, so that a 0 given is not run as something else.
func checkLabCounts(cfg lab.Config) error {
	switch {
	case cfg.Nodes == 0:
		return fmt.Errorf("--nodes 0: want 1 to %d", lab.MaxNodes)
	case cfg.Managers == 0:
		return fmt.Errorf("--managers 0: want 1 to the node count (%d)", cfg.Nodes)
	case cfg.ConsulServers == 0:
		return errors.New("--consul-servers 0: want 1 or 3")
	}
	return nil
}

// underlayBinary is the binary the nodes run as their agent: $UNDERLAY_BIN,
// else this program.
func underlayBinary() (string, error) {
	if p := os.Getenv("UNDERLAY_BIN"); p != "" {
		return p, nil
	}
	p, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find the underlay binary for the agent (set UNDERLAY_BIN): %w", err)
	}
	return p, nil
}

func newLabDownCommand(g *globalFlags, streams IOStreams, f *labFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "down",
		Short: "Remove the lab: processes, namespaces, links, firewall rules, state (succeeds when already gone)",
		Args:  cobra.NoArgs,
		RunE: g.withLog(streams.ErrOut, func(cmd *cobra.Command, log *slog.Logger) error {
			return lab.Down(cmd.Context(), f.name, log)
		}),
	}
}

func newLabStatusCommand(streams IOStreams, f *labFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the lab's nodes and their state",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := lab.GetStatus(cmd.Context(), f.name)
			if err != nil {
				return err
			}
			if f.json {
				return writeJSON(streams.Out, st)
			}
			return printStatus(streams.Out, st)
		},
	}
	cmd.Flags().BoolVar(&f.json, "json", false, "print JSON")
	return cmd
}

func printStatus(w io.Writer, st *lab.Status) error {
	where := "on this machine"
	if st.Kind == lab.KindVM {
		where = "in the lab's namespace, VLAN 40"
	}
	fmt.Fprintf(w, "lab %s (%s nodes): underlay %s (gateway %s %s), management %s\n",
		st.Name, st.Kind, st.UnderlaySubnet, st.UnderlayGateway, where, st.ManagementSubnet)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tROLE\tSTATE\tMANAGEMENT IP\tPARENT\tDOCKER_HOST\tCONSUL_HTTP_ADDR")
	for _, n := range st.Nodes {
		state := n.State
		if len(n.Problems) > 0 {
			state += " (" + strings.Join(n.Problems, ", ") + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.Name, n.Role, state, n.ManagementIP, n.UnderlayParent, n.DockerHost, n.ConsulHTTPAddr)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(st.Nodes) > 0 {
		fmt.Fprintf(w, "Consul UI: http://%s/ui   work on a node: underlay lab exec --name %s node1 -- docker node ls\n", st.Nodes[0].ConsulHTTPAddr, st.Name)
	}
	if st.DashboardURL != "" {
		fmt.Fprintf(w, "Dashboard: %s (log in with the token in %s)   scale: underlay scale SERVICE up --addr %s --token-file %s --insecure-http\n",
			st.DashboardURL, st.ControlTokenFile, strings.TrimPrefix(st.Nodes[0].ControlURL, "http://"), st.ControlTokenFile)
	}
	return nil
}

func newLabEnvCommand(streams IOStreams, f *labFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "env NODE",
		Short: "Print the DOCKER_HOST, CONSUL_HTTP_ADDR and nsenter prefix to work on a node",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			env, err := lab.Env(f.name, args[0])
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(streams.Out, "export DOCKER_HOST=%s\nexport CONSUL_HTTP_ADDR=%s\n# run a command inside the node:\n# %s -- CMD\n",
				env.DockerHost, env.ConsulHTTPAddr, env.NsenterPrefix())
			return err
		},
	}
}

func newLabExecCommand(streams IOStreams, f *labFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "exec NODE -- CMD [ARG...]",
		Short: "Run a command inside a node, with its DOCKER_HOST and CONSUL_HTTP_ADDR set",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := lab.Command(cmd.Context(), f.name, args[0], args[1:]...)
			if err != nil {
				return err
			}
			c.Stdin, c.Stdout, c.Stderr = streams.In, streams.Out, streams.ErrOut
			if err := c.Run(); err != nil {
				var ee interface{ ExitCode() int }
				if errors.As(err, &ee) {
					return fmt.Errorf("%s on %s: exit status %d", args[1], args[0], ee.ExitCode())
				}
				return err
			}
			return nil
		},
	}
}

func newLabLogsCommand(streams IOStreams, f *labFlags) *cobra.Command {
	var component string
	cmd := &cobra.Command{
		Use:   "logs NODE",
		Short: "Print a node's logs (the underlay agent's unless --component)",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			fl, err := lab.OpenLog(f.name, args[0], component)
			if err != nil {
				return err
			}
			defer fl.Close()
			_, err = io.Copy(streams.Out, fl)
			return err
		},
	}
	cmd.Flags().StringVar(&component, "component", "agent", "agent, control (managers), dockerd, consul, holder (namespace nodes) or console (VM nodes)")
	return cmd
}
