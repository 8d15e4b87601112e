package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/dockerhost"
	"github.com/underlay/underlay/internal/scale"
	"github.com/underlay/underlay/internal/scale/adapter"
)

type controlFlags struct {
	consul         consul.Options
	listen         string
	tokenFile      string
	insecureNoAuth bool
	dryRun         bool
	historyPrefix  string
	historyLimit   int
}

// newControlCommand is `underlay control`, the autoscaler.
func newControlCommand(g *globalFlags, streams IOStreams) *cobra.Command {
	f := &controlFlags{}
	cmd := &cobra.Command{
		Use:   "control",
		Short: "Run the autoscaler: an Orbiter-compatible HTTP API that scales swarm services",
		Long: `control runs on a swarm manager. It follows the swarm's services through Docker
events and scales those labelled orbiter=true (or underlay.scale.enabled=true) on
Orbiter's HTTP API:

  POST /v1/orbiter/handle/autoswarm/SERVICE/up|down     (bearer token)
  POST /v1/orbiter/handle/autoswarm/SERVICE             (bearer token; {"direction": true|false|"up"|"down"})
  GET  /v1/orbiter/autoscaler, /v1/orbiter/health, /v1/orbiter/events (server-sent), /metrics

and the same routes without /v1/orbiter. Bounds, steps and cooldowns come from
underlay.scale.* labels; nothing scales down unless underlay.scale.allow-down=true.
Every decision is kept in Consul KV under --history-prefix.

Every flag can also be set through UNDERLAY_<FLAG>; Docker is reached through
DOCKER_HOST and Consul through the CONSUL_HTTP_* variables.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger(streams.ErrOut)
			if err != nil {
				return err
			}
			return runControl(cmd.Context(), f, log)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.consul.Addr, "consul-addr", "", "Consul agent HTTP address (default $CONSUL_HTTP_ADDR or 127.0.0.1:8500)")
	fl.StringVar(&f.consul.Token, "consul-token", "", "Consul ACL token (default $CONSUL_HTTP_TOKEN)")
	fl.StringVar(&f.consul.TokenFile, "consul-token-file", "", "file holding the Consul ACL token (default $CONSUL_HTTP_TOKEN_FILE)")
	fl.StringVar(&f.consul.CAFile, "consul-cacert", "", "CA certificate to verify Consul's TLS certificate (default $CONSUL_CACERT)")
	fl.StringVar(&f.consul.CertFile, "consul-client-cert", "", "client certificate for Consul TLS (default $CONSUL_CLIENT_CERT)")
	fl.StringVar(&f.consul.KeyFile, "consul-client-key", "", "client key for Consul TLS (default $CONSUL_CLIENT_KEY)")
	fl.StringVar(&f.consul.TLSServerName, "consul-tls-server-name", "", "server name to verify in Consul's certificate (default $CONSUL_TLS_SERVER_NAME)")
	fl.StringVar(&f.listen, "listen", "127.0.0.1:8000", "address of the HTTP API (Orbiter's default port)")
	fl.StringVar(&f.tokenFile, "token-file", "", "file of bearer tokens accepted on mutating routes, one a line (required unless --insecure-no-auth)")
	fl.BoolVar(&f.insecureNoAuth, "insecure-no-auth", false, "accept mutating requests without a token (Orbiter's behaviour; unsafe)")
	fl.BoolVar(&f.dryRun, "dry-run", false, "decide and record, but never change a service")
	fl.StringVar(&f.historyPrefix, "history-prefix", adapter.DefaultHistoryPrefix, "Consul KV prefix of the decision history")
	fl.IntVar(&f.historyLimit, "history-limit", adapter.DefaultHistoryLimit, "decisions kept per service in the history")
	return cmd
}

// controlTokens checks the authentication flags and loads the tokens; nil
// tokens mean no authentication.
func controlTokens(f *controlFlags) (*scale.Tokens, error) {
	switch {
	case f.tokenFile != "" && f.insecureNoAuth:
		return nil, errors.New("--token-file and --insecure-no-auth: give one, not both")
	case f.insecureNoAuth:
		return nil, nil
	case f.tokenFile == "":
		return nil, errors.New("--token-file is required (or --insecure-no-auth to accept unauthenticated scaling requests)")
	}
	return scale.LoadTokens(f.tokenFile)
}

func runControl(ctx context.Context, f *controlFlags, log *slog.Logger) error {
	tokens, err := controlTokens(f)
	if err != nil {
		return err
	}
	if f.historyLimit <= 0 {
		return fmt.Errorf("--history-limit %d: must be positive", f.historyLimit)
	}
	if f.historyPrefix == "" {
		return errors.New("--history-prefix is empty")
	}
	if tokens == nil {
		log.Warn("authentication disabled (--insecure-no-auth): anyone reaching the API can scale services", "listen", f.listen)
	}
	dockerAPI, err := dockerhost.NewClient()
	if err != nil {
		return err
	}
	defer dockerAPI.Close()
	consulAPI, err := consul.NewClient(f.consul)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ctrl := scale.NewController(scale.Config{DryRun: f.dryRun}, adapter.NewSwarm(dockerAPI),
		adapter.NewKVHistory(consulAPI, f.historyPrefix, f.historyLimit), log, reg)
	api := scale.NewAPI(scale.APIConfig{Tokens: tokens}, ctrl, log)

	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.Handle("/", api.Handler())
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", f.listen, err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return ctrl.Run(gctx) })
	g.Go(func() error { return serveControl(gctx, ln, mux, log) })
	return g.Wait()
}

// serveControl serves h on ln until ctx ends. Requests run under ctx, so
// open event streams end with it rather than holding the shutdown.
func serveControl(ctx context.Context, ln net.Listener, h http.Handler, log *slog.Logger) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	log.Info("serving the autoscaler API", "addr", ln.Addr().String())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	}
	return nil
}
