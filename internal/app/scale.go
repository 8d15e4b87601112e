package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/underlay/underlay/internal/scale"
)

// scaleFlags are the flags of `underlay scale` and its subcommands.
type scaleFlags struct {
	addr         string
	tokenFile    string
	to           int
	json         bool
	followLeader bool
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
leader once, with the same scheme only (never from https to http). Calls
carry the token of --token-file; --addr https://HOST:PORT uses TLS, verified
against --cacert (mutual TLS with --cert and --key).`,
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
			body := map[string]any{}
			if cmd.Flags().Changed("to") {
				if f.to < 0 {
					return fmt.Errorf("--to %d: must be zero or more", f.to)
				}
				body["replicas"] = f.to
			} else {
				d, err := scale.ParseDirection(args[1])
				if err != nil {
					return fmt.Errorf("direction %q: want up or down", args[1])
				}
				body["direction"] = string(d)
			}
			var rec scale.Record
			if err := f.call(cmd.Context(), http.MethodPost, "/v1/underlay/services/"+url.PathEscape(args[0])+"/scale", body, &rec); err != nil {
				return err
			}
			if f.json {
				return printScaleJSON(streams.Out, rec)
			}
			verdict := "scaled"
			switch {
			case rec.Refused:
				verdict = "refused (" + string(rec.Reason) + ")"
			case rec.DryRun:
				verdict = "dry run"
			}
			fmt.Fprintf(streams.Out, "%s: %d → %d replicas: %s: %s\n", rec.Service, rec.From, rec.To, verdict, rec.Why)
			return nil
		},
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.addr, "addr", "127.0.0.1:8000", "address of underlay control's API (https://HOST:PORT for TLS)")
	pf.StringVar(&f.tokenFile, "token-file", "", "file whose first token authenticates the calls")
	pf.BoolVar(&f.followLeader, "follow-leader", false, "when a follower names the leader (X-Underlay-Leader), ask it once, over the same scheme, with the token")
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
			var ans struct {
				Data []scale.ServiceInfo `json:"data"`
			}
			if err := f.call(cmd.Context(), http.MethodGet, "/v1/underlay/services", nil, &ans); err != nil {
				return err
			}
			if f.json {
				return printScaleJSON(streams.Out, ans.Data)
			}
			tw := tabwriter.NewWriter(streams.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SERVICE\tREPLICAS\tMIN\tMAX\tDOWN\tMETRICS\tERROR")
			for _, s := range ans.Data {
				down := "no"
				if s.Policy.AllowDown {
					down = "yes"
				}
				var ms []string
				for _, m := range s.Policy.Metrics {
					ms = append(ms, m.Name+"="+strconv.FormatFloat(m.Target, 'g', -1, 64))
				}
				replicas := strconv.Itoa(s.Replicas)
				if s.Mode == "global" {
					replicas = "global"
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\n", s.Service, replicas, s.Policy.Min, s.Policy.Max, down, strings.Join(ms, ","), s.Error)
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
			var ans struct {
				Data []scale.Record `json:"data"`
			}
			if err := f.call(cmd.Context(), http.MethodGet, "/v1/underlay/services/"+url.PathEscape(args[0])+"/history", nil, &ans); err != nil {
				return err
			}
			if f.json {
				return printScaleJSON(streams.Out, ans.Data)
			}
			tw := tabwriter.NewWriter(streams.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TIME\tDIRECTION\tFROM\tTO\tREASON\tSOURCE\tWHY")
			for _, r := range ans.Data {
				reason := string(r.Reason)
				if r.DryRun {
					reason += " (dry run)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\n", r.Time.Format(time.RFC3339), r.Direction, r.From, r.To, reason, r.Source, r.Why)
			}
			return tw.Flush()
		},
	}
}

// call sends one request to control and decodes the answer into out. A
// follower's 503 naming the leader is retried once at the leader with
// --follow-leader, over the same scheme only: the token never goes from
// https to http, nor anywhere the user did not allow.
func (f *scaleFlags) call(ctx context.Context, method, path string, body, out any) error {
	token, err := readScaleToken(f.tokenFile)
	if err != nil {
		return err
	}
	client, err := f.client()
	if err != nil {
		return err
	}
	base, err := scaleBase(f.addr)
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		code, hdr, b, err := doScaleRequest(ctx, client, method, base, path, token, body)
		if err != nil {
			return err
		}
		if leader := hdr.Get(scale.LeaderHeader); code == http.StatusServiceUnavailable && leader != "" && attempt == 0 {
			next, err := leaderBase(base, leader)
			switch {
			case err != nil:
				return fmt.Errorf("control at %s: not the leader, and %w", base, err)
			case !f.followLeader:
				return fmt.Errorf("control at %s: %d: not the leader; the leader is at %s (ask it with --addr %s, or add --follow-leader)", base, code, leader, next)
			case next != base:
				base = next
				continue
			}
		}
		if code/100 != 2 {
			var e struct {
				Error string `json:"error"`
			}
			if json.Unmarshal(b, &e) == nil && e.Error != "" {
				return fmt.Errorf("control at %s: %d: %s", base, code, e.Error)
			}
			return fmt.Errorf("control at %s: %d: %.200s", base, code, b)
		}
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("control at %s: decode answer: %w", base, err)
		}
		return nil
	}
}

// client is the HTTP client of the calls: TLS from --cacert, --cert and
// --key; the environment's proxy, as before; redirects never followed, so
// that the token goes nowhere else.
func (f *scaleFlags) client() (*http.Client, error) {
	tlsCfg, err := scale.ClientTLS(f.caCert, f.cert, f.key)
	if err != nil {
		return nil, fmt.Errorf("--cacert, --cert, --key: %w", err)
	}
	return &http.Client{
		Transport:     &http.Transport{TLSClientConfig: tlsCfg, TLSHandshakeTimeout: 10 * time.Second, Proxy: http.ProxyFromEnvironment},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, nil
}

// scaleBase is --addr as scheme://host:port (http when it names none).
func scaleBase(addr string) (string, error) {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return "", fmt.Errorf("--addr %q: want HOST:PORT, http://HOST:PORT or https://HOST:PORT", addr)
	}
	return u.Scheme + "://" + u.Host, nil
}

// leaderBase is the leader a follower named, reached over base's scheme; a
// leader named with another scheme is refused.
func leaderBase(base, leader string) (string, error) {
	scheme, _, _ := strings.Cut(base, "://")
	if s, _, ok := strings.Cut(leader, "://"); ok && s != scheme {
		return "", fmt.Errorf("the leader it names, %s, is not reached over %s: not followed", leader, scheme)
	}
	next, err := scaleBase(scheme + "://" + strings.TrimPrefix(strings.TrimPrefix(leader, "https://"), "http://"))
	if err != nil {
		return "", fmt.Errorf("the leader it names, %q, is not an address", leader)
	}
	return next, nil
}

func doScaleRequest(ctx context.Context, client *http.Client, method, base, path, token string, body any) (int, http.Header, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("--addr %s: %w", base, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("reach control at %s: %w", base, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return 0, nil, nil, fmt.Errorf("read control's answer: %w", err)
	}
	return resp.StatusCode, resp.Header, b, nil
}

// readScaleToken reads the first token of a token file (the format of
// control's --token-file); no file means no token.
func readScaleToken(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("--token-file: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			return line, nil
		}
	}
	return "", fmt.Errorf("--token-file %s: no token found", path)
}

func printScaleJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
