package app

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"

	"github.com/spf13/cobra"

	"github.com/underlay/underlay/internal/lab"
	"github.com/underlay/underlay/internal/lab/guest"
	"github.com/underlay/underlay/internal/lab/vm"
)

// newLabVMCommands are the hidden commands VM nodes run: PID 1 of a VM,
// its control server, the host's client of it, and the lab's VLAN access
// port. The lab starts them; people do not.
func newLabVMCommands(g *globalFlags, streams IOStreams) []*cobra.Command {
	var nodeDir string
	initCmd := &cobra.Command{
		Use:    "vm-init --node-dir DIR",
		Short:  "PID 1 of a lab VM node",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			guest.Init(nodeDir, []string{os.Args[0], "lab", "vm-serve", "--node-dir", nodeDir})
			return nil
		},
	}
	serveCmd := &cobra.Command{
		Use:    "vm-serve --node-dir DIR",
		Short:  "The control server of a lab VM node",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: g.withLog(streams.ErrOut, func(cmd *cobra.Command, log *slog.Logger) error {
			return guest.ServeNode(cmd.Context(), nodeDir, log)
		}),
	}
	var execAddr string
	execCmd := &cobra.Command{
		Use:    "vm-exec --node-dir DIR --addr IP:PORT -- CMD [ARG...]",
		Short:  "Run a command in a lab VM node, with this command's environment",
		Hidden: true,
		Args:   cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			// The address comes from the lab's plan, never from the node's
			// directory: the VM can write that, and would then have this
			// command's environment and the token sent where it likes.
			ap, err := netip.ParseAddrPort(execAddr)
			if err != nil {
				return fmt.Errorf("--addr %q: want the node's IP:PORT: %w", execAddr, err)
			}
			_, token, err := guest.ReadConfig(nodeDir)
			if err != nil {
				return err
			}
			cl := guest.Client{Addr: ap.String(), Token: token}
			code, err := cl.Exec(cmd.Context(), args, os.Environ(), streams.In, streams.Out, streams.ErrOut)
			if err != nil {
				return err
			}
			if code != 0 {
				return exitCode(code)
			}
			return nil
		},
	}
	for _, c := range []*cobra.Command{initCmd, serveCmd, execCmd} {
		c.Flags().StringVar(&nodeDir, "node-dir", "", "the node's state directory")
		c.MarkFlagRequired("node-dir")
	}
	execCmd.Flags().StringVar(&execAddr, "addr", "", "the node's control server, IP:PORT, as the lab's plan gives it")
	execCmd.MarkFlagRequired("addr")
	var port vm.VLANPort
	var addr, stateDir string
	portCmd := &cobra.Command{
		Use:    "vm-vlan-port --trunk LINK --tap NAME --vlan ID --addr CIDR --state-dir DIR",
		Short:  "The VLAN access port of a VM lab's router",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: g.withLog(streams.ErrOut, func(cmd *cobra.Command, log *slog.Logger) error {
			if addr != "" {
				p, err := netip.ParsePrefix(addr)
				if err != nil {
					return fmt.Errorf("--addr %q: %w", addr, err)
				}
				port.Addr = p
			}
			ns, err := lab.HolderNetNS(stateDir)
			if err != nil {
				return fmt.Errorf("--state-dir %q: %w", stateDir, err)
			}
			port.NetNS = ns
			port.Log = log
			return port.Run(cmd.Context())
		}),
	}
	fl := portCmd.Flags()
	fl.StringVar(&port.Trunk, "trunk", "", "link carrying the tagged frames")
	fl.StringVar(&port.Tap, "tap", "", "tap to make for the VLAN's untagged frames")
	fl.IntVar(&port.VID, "vlan", 0, "VLAN id")
	fl.StringVar(&addr, "addr", "", "address of the tap (the VLAN's router)")
	fl.StringVar(&stateDir, "state-dir", "", "the lab's network directory this port belongs to: names the process for lab down; its holder's namespace is the only one the port runs in")
	portCmd.MarkFlagRequired("state-dir")
	return []*cobra.Command{initCmd, serveCmd, execCmd, portCmd}
}

// exitCode is an error that makes underlay exit with that status and
// print nothing (the command that failed has said why).
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// ExitCode is the status to exit with.
func (e exitCode) ExitCode() int { return int(e) }
