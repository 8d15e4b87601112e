package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
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
	prometheus     string
	interval       time.Duration
	webhookSecret  string
	leaderElection bool
	advertise      string
	forward        bool
	leaderKey      string
	tokenKey       string
	policyFile     string
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

and the same routes without /v1/orbiter, plus

  POST /v1/underlay/alertmanager[/SERVICE[/up|down]], /alertmanager  (Alertmanager webhooks)
  POST /v1/underlay/services/SERVICE/scale   ({"direction": "up"} or {"replicas": N})
  GET  /v1/underlay/services, /v1/underlay/services/SERVICE/history, /v1/underlay/leader
  GET  /ui (the dashboard), /v1/cluster (its snapshot, JSON), /v1/cluster/events (server-sent)

Bounds, steps, cooldowns, stabilization and Prometheus queries (with
--prometheus-url) come from underlay.scale.* labels; nothing scales down unless
underlay.scale.allow-down=true. Every decision is kept in Consul KV under
--history-prefix.

Every flag can also be set through UNDERLAY_<FLAG>; Docker is reached through
DOCKER_HOST and Consul through the CONSUL_HTTP_* variables.`,
		Args: cobra.NoArgs,
		RunE: g.withLog(streams.ErrOut, func(cmd *cobra.Command, log *slog.Logger) error {
			return runControl(cmd.Context(), f, log)
		}),
	}
	fl := cmd.Flags()
	addConsulFlags(fl, &f.consul)
	fl.StringVar(&f.listen, "listen", "127.0.0.1:8000", "address of the HTTP API (Orbiter's default port)")
	fl.StringVar(&f.tokenFile, "token-file", "", "file of bearer tokens accepted on mutating routes, one a line (required unless --insecure-no-auth)")
	fl.BoolVar(&f.insecureNoAuth, "insecure-no-auth", false, "accept mutating requests without a token (Orbiter's behaviour; unsafe)")
	fl.BoolVar(&f.dryRun, "dry-run", false, "decide and record, but never change a service")
	fl.StringVar(&f.historyPrefix, "history-prefix", adapter.DefaultHistoryPrefix, "Consul KV prefix of the decision history")
	fl.IntVar(&f.historyLimit, "history-limit", adapter.DefaultHistoryLimit, "decisions kept per service in the history")
	fl.StringVar(&f.policyFile, "policy-file", "", "YAML file of per-service policies (services: NAME: {min: 2, max: 10, …}); they win over labels")
	fl.StringVar(&f.prometheus, "prometheus-url", "", "Prometheus server for services' underlay.scale.metric.* queries (metric-driven scaling off when empty)")
	fl.DurationVar(&f.interval, "interval", 15*time.Second, "period of metric evaluation")
	fl.StringVar(&f.webhookSecret, "webhook-secret-file", "", "file holding a secret: Alertmanager routes then also require an HMAC-SHA256 signature of the body ("+scale.SignatureHeader+": sha256=HEX)")
	fl.BoolVar(&f.leaderElection, "leader-election", false, "elect one deciding instance among several through a Consul lock; followers pass scaling requests on to the leader (see --forward-to-leader)")
	fl.StringVar(&f.advertise, "advertise", "", "address followers name as this instance's when it leads (default --listen)")
	fl.BoolVar(&f.forward, "forward-to-leader", true, "on a follower, pass scaling requests on to the leader when its --advertise address can be dialled (else answer 503 naming it)")
	fl.StringVar(&f.leaderKey, "leader-key", adapter.DefaultLeaderKey, "Consul KV key of the leader lock")
	fl.StringVar(&f.tokenKey, "token-consul-key", "", "Consul KV key holding more bearer tokens, one a line, followed while serving (with or instead of --token-file)")
	return cmd
}

// controlTokens checks the authentication flags and loads the tokens of
// --token-file; nil tokens and no --token-consul-key mean no
// authentication.
func controlTokens(f *controlFlags) (*scale.Tokens, error) {
	switch {
	case (f.tokenFile != "" || f.tokenKey != "") && f.insecureNoAuth:
		return nil, errors.New("--token-file or --token-consul-key, and --insecure-no-auth: give tokens, or no authentication, not both")
	case f.insecureNoAuth:
		return nil, nil
	case f.tokenFile == "" && f.tokenKey == "":
		return nil, errors.New("--token-file or --token-consul-key is required (or --insecure-no-auth to accept unauthenticated scaling requests)")
	case f.tokenFile == "":
		return nil, nil
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
	if f.interval <= 0 {
		return fmt.Errorf("--interval %s: must be positive", f.interval)
	}
	var secret []byte
	if f.webhookSecret != "" {
		if secret, err = scale.LoadSecret(f.webhookSecret); err != nil {
			return err
		}
	}
	var policies scale.PolicyFile
	if f.policyFile != "" {
		data, err := os.ReadFile(f.policyFile)
		if err != nil {
			return fmt.Errorf("--policy-file: %w", err)
		}
		if policies, err = scale.ParsePolicyFile(data); err != nil {
			return fmt.Errorf("--policy-file %s: %w", f.policyFile, err)
		}
	}
	var prom scale.MetricSource
	if f.prometheus != "" {
		if prom, err = adapter.NewPrometheus(f.prometheus, nil); err != nil {
			return fmt.Errorf("--prometheus-url: %w", err)
		}
	}
	if tokens == nil && f.tokenKey == "" {
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
	history := adapter.NewKVHistory(consulAPI, f.historyPrefix, f.historyLimit)
	metrics := adapter.Metrics{Builtin: adapter.NewBuiltin(consulAPI), Prometheus: prom}
	cfg := scale.Config{DryRun: f.dryRun, Metrics: metrics, Interval: f.interval, Policies: policies,
		AlertLog: adapter.NewKVAlertLog(consulAPI, "", 0)}
	var leader *adapter.ConsulLeader
	if f.leaderElection {
		advertise := f.advertise
		if advertise == "" {
			advertise = f.listen
		}
		leader = adapter.NewConsulLeader(adapter.LeaderConfig{Key: f.leaderKey, Advertise: advertise}, consulAPI, log)
		cfg.Leadership = leader
	}
	ctrl := scale.NewController(cfg, adapter.NewSwarm(dockerAPI), history, log, reg)
	apiCfg := scale.APIConfig{Tokens: tokens, WebhookSecret: secret, History: history, ForwardToLeader: f.forward}
	var kvTokens *adapter.KVTokens
	if f.tokenKey != "" {
		kvTokens = adapter.NewKVTokens(consulAPI, f.tokenKey, log)
		apiCfg.MoreTokens = kvTokens
	}
	api := scale.NewAPI(apiCfg, ctrl, log)
	dash, err := newDashboard(controlDashboard{docker: dockerAPI, consul: consulAPI, ctrl: ctrl, leadership: cfg.Leadership,
		history: history, historyPrefix: f.historyPrefix, api: api, apiCfg: apiCfg}, log, reg)
	if err != nil {
		return err
	}

	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.Handle("/", api.Handler())
	dash.Mount(mux)
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", f.listen, err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return ctrl.Run(gctx) })
	if leader != nil {
		g.Go(func() error { return leader.Run(gctx) })
	}
	if kvTokens != nil {
		g.Go(func() error { return kvTokens.Run(gctx) })
	}
	g.Go(func() error { return dash.Run(gctx) })
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
