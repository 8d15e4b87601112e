// Package app wires underlay's command line to its packages. It holds no
// logic of its own beyond flags, logging and process lifetime.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/underlay/underlay/internal/app/agentflags"
	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/termtext"
)

// Version is set at build time with -ldflags "-X .../internal/app.Version=...".
var Version = "dev"

// IOStreams are the standard streams a command uses; program output goes to
// Out, logs to ErrOut.
type IOStreams struct {
	In     io.Reader
	Out    io.Writer
	ErrOut io.Writer
}

// Run executes the command line args and returns the process exit code.
func Run(ctx context.Context, args []string, streams IOStreams) int {
	root := newRootCommand(streams)
	root.SetArgs(args)
	root.SetIn(streams.In)
	root.SetOut(streams.Out)
	root.SetErr(streams.ErrOut)
	if err := root.ExecuteContext(ctx); err != nil {
		var ec exitCode
		if errors.As(err, &ec) {
			return ec.ExitCode()
		}
		// Errors quote what others wrote: Consul keys, a server's answer.
		fmt.Fprintf(streams.ErrOut, "underlay: %s\n", termtext.Lines(err.Error()))
		return 1
	}
	return 0
}

// globalFlags are the flags every command shares.
type globalFlags struct {
	logLevel  string
	logFormat string
}

func newRootCommand(streams IOStreams) *cobra.Command {
	g := &globalFlags{}
	root := &cobra.Command{
		Use:           "underlay",
		Short:         "Routable containers on the networks you already have",
		Long:          "underlay runs Docker Swarm services on existing L2 networks (macvlan or ipvlan), advertises them in Consul and scales them.",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return applyEnv(cmd.Flags())
		},
	}
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	root.AddCommand(
		newVersionCommand(streams),
		newAgentCommand(g, streams),
		newNetworkCommand(g, streams),
		newNodeCommand(streams),
		newIPsCommand(streams),
		newLabCommand(g, streams),
		newControlCommand(g, streams),
		newScaleCommand(streams),
		newDoctorCommand(g, streams),
	)
	return root
}

// withLog makes a command's RunE that builds the logger of the global
// flags, writing to w, before running.
func (g *globalFlags) withLog(w io.Writer, run func(cmd *cobra.Command, log *slog.Logger) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		log, err := g.logger(w)
		if err != nil {
			return err
		}
		return run(cmd, log)
	}
}

func (g *globalFlags) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(g.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", g.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	// Log values hold what others wrote (labels, Consul documents, API
	// bodies): the termtext handlers escape what would hide or reorder it.
	switch g.logFormat {
	case "text":
		return slog.New(termtext.NewTextLogHandler(w, opts)), nil
	case "json":
		return slog.New(termtext.NewJSONLogHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", g.logFormat)
}

// applyEnv sets every flag not given on the command line from
// UNDERLAY_<FLAG_NAME> when that variable is set, so flags win over the environment.
func applyEnv(fs *pflag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed {
			return
		}
		name := "UNDERLAY_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(name); ok {
			if serr := fs.Set(f.Name, v); serr != nil {
				err = fmt.Errorf("%s=%q: %w", name, v, serr)
			}
		}
	})
	return err
}

func newVersionCommand(streams IOStreams) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print underlay's version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := fmt.Fprintf(streams.Out, "underlay %s\n", Version)
			return err
		},
	}
}

// writeJSON is the CLI's one JSON printer: v, indented, on w, with
// controls escaped (termtext.WriteJSON): it prints what others wrote.
func writeJSON(w io.Writer, v any) error {
	return termtext.WriteJSON(w, v)
}

// maxTableCell is how long a cell of a table underlay prints (ips,
// network ls and inspect, node ls) is at most: the names Docker, swarm
// and hosts give are shorter (a task container's about 100 bytes); a
// label set by hand, or a document any agent's token may write (an
// inventory, node facts, a network state report), may hold a name of
// any length, to which tabwriter pads every row of its column.
const maxTableCell = 128

// tableCell is s as a table prints it in a cell: quoted when it would
// break its row (termtext.Cell), and shortened, saying how long it was
// (--json holds it whole).
func tableCell(s string) string {
	return termtext.Shorten(termtext.Cell(s), maxTableCell)
}

// addConsulFlags adds the flags every command that talks to Consul shares;
// empty values keep the standard CONSUL_HTTP_* environment.
func addConsulFlags(fs *pflag.FlagSet, o *consul.Options) {
	agentflags.Consul(fs, o)
}
