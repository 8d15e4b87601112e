package app

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/underlay/underlay/internal/scale"
	scaleclient "github.com/underlay/underlay/internal/scale/client"
	"github.com/underlay/underlay/internal/termtext"
)

// scaleFlags are the flags of `underlay scale` and its subcommands.
type scaleFlags struct {
	addr         string
	tokenFile    string
	to           int
	json         bool
	followLeader bool
	// followInsecure is followLeader also to another host over http.
	followInsecure bool
	// insecureHTTP lets the token go in clear to a --addr that is not a
	// loopback address.
	insecureHTTP bool
	caCert       string
	cert         string
	key          string
}

// newScaleCommand is `underlay scale`: a client of `underlay control`.
func newScaleCommand(streams IOStreams) *cobra.Command {
	f := &scaleFlags{}
	cmd := &cobra.Command{
		Use:   "scale SERVICE up|down | scale SERVICE --to N",
		Short: "Scale a service through underlay control, list autoscaled services, read a service's history",
		Long: `scale asks underlay control (--addr) to scale a service one step up or down, or
to N replicas with --to; control applies the service's bounds, cooldowns and
stabilization, and the answer says what it decided and why:

  underlay scale web up
  underlay scale web --to 5
  underlay scale ls [--json]
  underlay scale history web [--json]

A follower of several control instances that does not pass requests on
refuses and names the leader; with --follow-leader the command then asks the
leader once, with the same scheme only (never from https to http), with the
token: over https, its certificate verified as control's; over plain http,
only a loopback address or the host of --addr (another port), as the token
goes in clear — --follow-leader-insecure allows any host. Calls carry the
token of --token-file; --addr https://HOST:PORT uses TLS, verified against
--cacert (mutual TLS with --cert and --key). With a token, a plain http --addr
must be a loopback address (127.0.0.1, ::1) unless --insecure-http allows the
token to cross the network in clear. Redirects are never followed.`,
		Args: func(cmd *cobra.Command, args []string) error {
			switch {
			case cmd.Flags().Changed("to") && len(args) == 1:
				return nil
			case cmd.Flags().Changed("to"):
				return errors.New("want SERVICE --to N")
			case len(args) == 2:
				return nil
			}
			return errors.New("want SERVICE up|down, or SERVICE --to N (or a subcommand: ls, history)")
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkServiceName(args[0]); err != nil {
				return err
			}
			var dir scale.Direction
			replicas := -1
			if cmd.Flags().Changed("to") {
				if f.to < 0 {
					return fmt.Errorf("--to %d: must be zero or more", f.to)
				}
				replicas = f.to
			} else {
				d, err := scale.ParseDirection(args[1])
				if err != nil {
					return fmt.Errorf("direction %q: want up or down", args[1])
				}
				dir = d
			}
			c, err := f.client(streams)
			if err != nil {
				return err
			}
			rec, err := c.Scale(cmd.Context(), args[0], dir, replicas)
			if err != nil {
				return err
			}
			if f.json {
				return writeJSON(streams.Out, rec)
			}
			verdict := "scaled"
			switch {
			case rec.Refused:
				verdict = "refused (" + string(rec.Reason) + ")"
			case rec.DryRun:
				verdict = "dry run"
			}
			fmt.Fprintf(streams.Out, "%s: %d → %d replicas: %s: %s\n", termtext.Cell(rec.Service), rec.From, rec.To, termtext.Cell(verdict), termtext.Cell(rec.Why))
			return nil
		},
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.addr, "addr", "127.0.0.1:8000", "address of underlay control's API (https://HOST:PORT for TLS)")
	pf.StringVar(&f.tokenFile, "token-file", "", "file whose first token authenticates the calls")
	pf.BoolVar(&f.followLeader, "follow-leader", false, "when a follower names the leader (X-Underlay-Leader), ask it once, over the same scheme, with the token; over plain http only at a loopback address or on the host of --addr")
	pf.BoolVar(&f.followInsecure, "follow-leader-insecure", false, "--follow-leader also to a leader on another host over plain http, which is sent the token in clear")
	pf.BoolVar(&f.insecureHTTP, "insecure-http", false, "send the token over plain http to a --addr that is not a loopback address (it crosses the network in clear)")
	pf.StringVar(&f.caCert, "cacert", "", "CA certificates (PEM) to verify control's TLS certificate (default: the system's)")
	pf.StringVar(&f.cert, "cert", "", "client certificate (PEM) for control's mutual TLS")
	pf.StringVar(&f.key, "key", "", "the key of --cert")
	pf.BoolVar(&f.json, "json", false, "print JSON")
	cmd.Flags().IntVar(&f.to, "to", 0, "scale to this many replicas instead of one step")
	cmd.AddCommand(newScaleLsCommand(f, streams), newScaleHistoryCommand(f, streams))
	return cmd
}

func newScaleLsCommand(f *scaleFlags, streams IOStreams) *cobra.Command {
	return &cobra.Command{
		Use:   "ls",
		Short: "List the autoscaled services",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.client(streams)
			if err != nil {
				return err
			}
			services, err := c.Services(cmd.Context())
			if err != nil {
				return err
			}
			if f.json {
				return writeJSON(streams.Out, services)
			}
			tw := tabwriter.NewWriter(streams.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SERVICE\tREPLICAS\tMIN\tMAX\tDOWN\tMETRICS\tERROR")
			for _, s := range services {
				down := "no"
				if s.Policy.AllowDown {
					down = "yes"
				}
				var ms []string
				for _, m := range s.Policy.Metrics {
					ms = append(ms, termtext.Cell(m.Name)+"="+strconv.FormatFloat(m.Target, 'g', -1, 64))
				}
				replicas := strconv.Itoa(s.Replicas)
				if s.Mode == "global" {
					replicas = "global"
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\n", termtext.Cell(s.Service), replicas, s.Policy.Min, s.Policy.Max, down, strings.Join(ms, ","), termtext.Cell(s.Error))
			}
			return tw.Flush()
		},
	}
}

func newScaleHistoryCommand(f *scaleFlags, streams IOStreams) *cobra.Command {
	return &cobra.Command{
		Use:   "history SERVICE",
		Short: "Print a service's scaling decisions, oldest first",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkServiceName(args[0]); err != nil {
				return err
			}
			c, err := f.client(streams)
			if err != nil {
				return err
			}
			ans, err := c.History(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			for _, b := range ans.BadRecords {
				fix := ""
				if b.Fix != "" { // none for a key Consul's paths cannot name: Error says how it goes
					fix = "; fix: " + termtext.Cell(b.Fix)
				}
				fmt.Fprintf(streams.ErrOut, "warning: skipped history record %s: %s%s\n", termtext.Cell(b.Key), termtext.Cell(b.Error), fix)
			}
			if f.json {
				return writeJSON(streams.Out, ans.Data)
			}
			tw := tabwriter.NewWriter(streams.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TIME\tDIRECTION\tFROM\tTO\tREASON\tSOURCE\tWHY")
			// A record's source holds what a webhook sent (an alert's name
			// and fingerprint): quoted when it would break its row.
			q := termtext.Cell
			for _, r := range ans.Data {
				reason := string(r.Reason)
				if r.DryRun {
					reason += " (dry run)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\n", r.Time.Format(time.RFC3339), q(string(r.Direction)), r.From, r.To, q(reason), q(r.Source), q(r.Why))
			}
			return tw.Flush()
		},
	}
}

// checkServiceName refuses an empty SERVICE, "." and ".." before any
// call: its path would be /v1/underlay/services//… (or /./, /../), which
// control answers with a redirect that names nothing.
func checkServiceName(name string) error {
	if strings.TrimSpace(name) == "" {
		return fmt.Errorf("SERVICE %q: the service name is empty", name)
	}
	// Cleaned out of the path by control's HTTP server, which answers
	// with a redirect naming neither; no swarm service is so named.
	if name == "." || name == ".." {
		return fmt.Errorf("SERVICE %q: not a service name (a path's %q segment, which control's HTTP server redirects)", name, name)
	}
	return nil
}

// client is the control API client of the flags; warnings about the
// token file go to streams.ErrOut.
func (f *scaleFlags) client(streams IOStreams) (*scaleclient.Client, error) {
	return scaleclient.New(f.config(streams))
}

// config is the client's configuration of the flags.
func (f *scaleFlags) config(streams IOStreams) scaleclient.Config {
	return scaleclient.Config{Addr: f.addr, TokenFile: f.tokenFile, FollowLeader: f.followLeader, FollowLeaderInsecure: f.followInsecure,
		InsecureHTTP: f.insecureHTTP, CACert: f.caCert, Cert: f.cert, Key: f.key, Log: slog.New(termtext.NewTextLogHandler(streams.ErrOut, nil))}
}
