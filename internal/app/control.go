package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/dockerhost"
	"github.com/underlay/underlay/internal/httpserve"
	"github.com/underlay/underlay/internal/scale"
	"github.com/underlay/underlay/internal/scale/adapter"
	"github.com/underlay/underlay/internal/secretfile"
	"github.com/underlay/underlay/internal/tlsfile"
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
	webhookMaxAge  time.Duration
	leaderElection bool
	advertise      string
	forward        bool
	leaderKey      string
	tokenKey       string
	policyFile     string
	authReads      bool
	// authReadsGiven is whether --auth-reads was set (flag or
	// environment), not its default: without tokens the default asks for
	// none, but an explicit --auth-reads is a mistake.
	authReadsGiven bool
	secureCookies  bool
	tlsCert        string
	tlsKey         string
	tlsClientCA    string
	peerSecret     string
	peers          []string
	peerCACert     string
	limits         scale.Limits
	// trustedProxies are --trusted-proxies, parsed into
	// limits.TrustedProxies.
	trustedProxies []string
	allowedHosts   []string
	// listener, when set, is served instead of listening on --listen
	// (tests: a port picked by listening once, not listen-and-close).
	listener net.Listener
}

// newControlCommand is `underlay control`, the autoscaler.
func newControlCommand(g *globalFlags, streams IOStreams) *cobra.Command {
	return newControlCommandFlags(g, streams, &controlFlags{})
}

// newControlCommandFlags is newControlCommand over f.
func newControlCommandFlags(g *globalFlags, streams IOStreams, f *controlFlags) *cobra.Command {
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

Scaling routes and reads (the GET routes, the event streams, the dashboard's
snapshot, /metrics) need a bearer token (--token-file, --token-consul-key) or
the dashboard's session; --auth-reads=false opens the reads to anyone reaching
--listen (health and the login page are always open); --tls-cert/--tls-key serve TLS, --tls-client-ca
requires client certificates. With --leader-election, followers pass requests
on to the leader only with --peer-secret-file, and only to an address of --peers
(the leader key in Consul is anyone's with KV write access; without --peers a
follower forwards nothing and answers 503 naming the leader).

Every flag can also be set through UNDERLAY_<FLAG>; Docker is reached through
DOCKER_HOST and Consul through the CONSUL_HTTP_* variables.`,
		Args: cobra.NoArgs,
		RunE: g.withLog(streams.ErrOut, func(cmd *cobra.Command, log *slog.Logger) error {
			f.authReadsGiven = cmd.Flags().Changed("auth-reads")
			return runControl(cmd.Context(), f, log)
		}),
	}
	fl := cmd.Flags()
	addConsulFlags(fl, &f.consul)
	fl.StringVar(&f.listen, "listen", "127.0.0.1:8000", "address of the HTTP API (Orbiter's default port)")
	fl.StringVar(&f.tokenFile, "token-file", "", "file of bearer tokens accepted on mutating routes, one a line, read again when it changes: left without a token, or removed, it accepts none (required unless --insecure-no-auth)")
	fl.BoolVar(&f.insecureNoAuth, "insecure-no-auth", false, "accept mutating requests without a token (Orbiter's behaviour; unsafe)")
	fl.BoolVar(&f.dryRun, "dry-run", false, "decide and record, but never change a service")
	fl.StringVar(&f.historyPrefix, "history-prefix", adapter.DefaultHistoryPrefix, "Consul KV prefix of the decision history")
	fl.IntVar(&f.historyLimit, "history-limit", adapter.DefaultHistoryLimit, "decisions kept per service in the history")
	fl.StringVar(&f.policyFile, "policy-file", "", "YAML file of per-service policies (services: NAME: {min: 2, max: 10, …}); they win over labels; read again when it changes (an edit refused keeps the last policies, logged)")
	fl.StringVar(&f.prometheus, "prometheus-url", "", "Prometheus server for services' underlay.scale.metric.* queries (metric-driven scaling off when empty)")
	fl.DurationVar(&f.interval, "interval", 15*time.Second, "period of metric evaluation")
	fl.StringVar(&f.webhookSecret, "webhook-secret-file", "", "file holding a secret: Alertmanager routes then also require "+scale.TimestampHeader+": UNIX-SECONDS and "+scale.SignatureHeader+": sha256=HEX, the HMAC-SHA256 of the timestamp, a dot and the body")
	fl.DurationVar(&f.webhookMaxAge, "webhook-max-age", scale.DefaultWebhookMaxAge, "how far a signed webhook's "+scale.TimestampHeader+" may be from this clock, either way (at most "+maxWebhookMaxAge.String()+"); a signature is accepted once within it")
	fl.BoolVar(&f.leaderElection, "leader-election", false, "elect one deciding instance among several through a Consul lock; followers pass scaling requests on to the leader (see --forward-to-leader)")
	fl.StringVar(&f.advertise, "advertise", "", "address followers name as this instance's when it leads (default --listen)")
	fl.BoolVar(&f.forward, "forward-to-leader", true, "on a follower, pass scaling requests on to the leader — signed with --peer-secret-file, never with the caller's credentials — when there is a peer secret and the leader's --advertise address can be dialled (else answer 503 naming it)")
	fl.StringVar(&f.leaderKey, "leader-key", adapter.DefaultLeaderKey, "Consul KV key of the leader lock")
	fl.StringVar(&f.tokenKey, "token-consul-key", "", "Consul KV key holding more bearer tokens, one a line, followed while serving (with or instead of --token-file)")
	fl.BoolVar(&f.authReads, "auth-reads", true, "require the token (or the dashboard's session) on reads too: the GET routes, the event streams, the dashboard's snapshot and /metrics; --auth-reads=false opens them to anyone reaching --listen, who then sees every service, task, address, node and scaling decision of the cluster (a read-only board; scaling still needs the token); the login page and health stay open either way")
	fl.BoolVar(&f.secureCookies, "secure-cookies", false, "mark the dashboard's session cookie Secure (sent over HTTPS only, named __Host-underlay_session) whatever the request came over: for control behind a proxy that ends TLS (X-Forwarded-Proto is never trusted); without it, the cookie is Secure over --tls-cert and for pages of an https origin")
	fl.StringVar(&f.tlsCert, "tls-cert", "", "serve the API over TLS with this PEM certificate (with --tls-key)")
	fl.StringVar(&f.tlsKey, "tls-key", "", "the PEM key of --tls-cert")
	fl.StringVar(&f.tlsClientCA, "tls-client-ca", "", "mutual TLS: clients must present a certificate signed by a CA of this PEM file")
	fl.StringVar(&f.peerSecret, "peer-secret-file", "", "file holding the secret the control instances share: followers pass scaling requests on to the leader signed with it, never with the caller's credentials (no forwarding without it)")
	fl.StringSliceVar(&f.peers, "peers", nil, "the advertised addresses (host:port) of the control instances, comma-separated: a follower passes requests on to the leader only at one of them, whatever the leader key in Consul says (none given: it passes nothing on, and answers 503 naming the leader)")
	fl.StringVar(&f.peerCACert, "peer-cacert", "", "CA certificates (PEM) to verify the leader's TLS certificate when passing requests on (default --tls-client-ca, else the system's)")
	fl.Float64Var(&f.limits.RateLimit, "rate-limit", scale.DefaultRateLimit, "scaling requests a second each client may make after --rate-burst, and as many reads, counted apart, with --auth-reads=false; beyond, 429 (0: no limit on requests; failed token checks stay limited, at 10 a second if 0)")
	fl.IntVar(&f.limits.RateBurst, "rate-burst", scale.DefaultRateBurst, "scaling requests a client may make at once (and failed token checks, whatever --rate-limit)")
	fl.IntVar(&f.limits.MaxEventReaders, "max-event-readers", scale.DefaultMaxEventReaders, "concurrent readers of the event stream; beyond, 503")
	fl.IntVar(&f.limits.MaxEventReadersPerClient, "max-event-readers-per-client", scale.DefaultMaxEventReadersPerClient, "concurrent event streams (the API's and the dashboard's) one client — an IPv4 address, or an IPv6 /64 — may hold, at most --max-event-readers; beyond, 429")
	fl.StringSliceVar(&f.trustedProxies, "trusted-proxies", nil, "reverse proxies in front of control (CIDR prefixes or addresses, comma-separated): a request from one is counted, by the per-client limits (--rate-limit, failed token checks, --max-event-readers-per-client), against the client its X-Forwarded-For names (the rightmost hop not among them); X-Forwarded-For from any other peer is ignored (default none: every client behind a proxy shares its limits)")
	fl.StringSliceVar(&f.allowedHosts, "allowed-host", nil, "a host name clients reach the API and dashboard by (repeatable, comma-separated; \"*\": any); besides IP addresses, localhost, this machine's name and --advertise's, other Host headers are answered 421, so that a page of another site rebound to this address (DNS rebinding) cannot read")
	return cmd
}

// checkAuthFlags checks the authentication flags: tokens, or no
// authentication, not both nor neither.
func checkAuthFlags(f *controlFlags) error {
	switch {
	case (f.tokenFile != "" || f.tokenKey != "") && f.insecureNoAuth:
		return errors.New("--token-file or --token-consul-key, and --insecure-no-auth: give tokens, or no authentication, not both")
	case f.insecureNoAuth && f.authReadsGiven && f.authReads:
		return errors.New("--auth-reads needs tokens (--token-file or --token-consul-key), not --insecure-no-auth")
	case !f.insecureNoAuth && f.tokenFile == "" && f.tokenKey == "":
		return errors.New("--token-file or --token-consul-key is required (or --insecure-no-auth to accept unauthenticated scaling requests)")
	}
	return nil
}

// controlLimits checks the limit flags and gives the API's limits:
// --rate-limit 0 lifts the limit on requests (a negative RateLimit for the
// API), never the one on failed token checks, which the API keeps in every
// configuration; a negative --rate-limit is refused, as it once lifted
// both.
func controlLimits(l scale.Limits) (scale.Limits, error) {
	// NaN compares as neither negative nor positive: it turned off the
	// rate limit and the limit on token guesses alike.
	if math.IsNaN(l.RateLimit) || math.IsInf(l.RateLimit, 0) || l.RateLimit < 0 {
		return l, fmt.Errorf("--rate-limit %g: want a number of requests a second, or 0 for no limit on requests (failed token checks stay limited)", l.RateLimit)
	}
	if l.MaxEventReaders <= 0 || l.RateBurst <= 0 {
		return l, fmt.Errorf("--max-event-readers %d, --rate-burst %d: want positive numbers", l.MaxEventReaders, l.RateBurst)
	}
	if l.RateLimit == 0 {
		l.RateLimit = -1
	}
	return l, nil
}

// maxWebhookMaxAge bounds --webhook-max-age: a captured signed webhook
// is refused as a replay within it, but the signatures remembered to
// refuse them are bounded too (over a longer window, a busy sender would
// meet the bound).
const maxWebhookMaxAge = time.Hour

// minPeerSecret is the shortest peer secret accepted, in bytes.
const minPeerSecret = 16

// controlSecrets opens the webhook and peer secret files, read again when
// they change (nil without their flag); the peer secret must be long
// enough to resist guessing, at start and after a rotation.
func controlSecrets(f *controlFlags, log *slog.Logger) (webhook, peer scale.Secret, err error) {
	if f.webhookSecret != "" {
		// Fail closed, as the token file: a secret whose file was emptied
		// or removed is nobody's to withdraw, so none is in use and every
		// signed request is refused until the file holds one again.
		sf, err := secretfile.Open(f.webhookSecret, "webhook secret", log, secretfile.FailClosed())
		if err != nil {
			return nil, nil, fmt.Errorf("--webhook-secret-file: %w", err)
		}
		webhook = sf
	}
	if f.peerSecret != "" {
		long := func(v []byte) error {
			if len(v) < minPeerSecret {
				return fmt.Errorf("%d bytes, want at least %d (head -c 32 /dev/urandom | base64)", len(v), minPeerSecret)
			}
			return nil
		}
		sf, err := secretfile.OpenChecked(f.peerSecret, "peer secret", long, log)
		if err != nil {
			return nil, nil, fmt.Errorf("--peer-secret-file: %w", err)
		}
		peer = sf
	}
	return webhook, peer, nil
}

// controlTLS is the API's TLS configuration (nil without --tls-cert) and
// the one followers reach the leader with, both following their files.
func controlTLS(f *controlFlags, log *slog.Logger) (server *tls.Config, peer func() *tls.Config, pair *tlsfile.Pair, err error) {
	switch {
	case f.tlsCert == "" && f.tlsKey == "" && f.tlsClientCA == "" && f.peerCACert == "":
		return nil, nil, nil, nil
	case f.tlsCert == "" || f.tlsKey == "":
		return nil, nil, nil, errors.New("--tls-cert and --tls-key go together (and --tls-client-ca, --peer-cacert need them)")
	}
	log = log.With("component", "control_tls")
	pair, err = tlsfile.OpenPair(f.tlsCert, f.tlsKey, log)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("--tls-cert, --tls-key: %w", err)
	}
	var clientCAs *tlsfile.Pool
	if f.tlsClientCA != "" {
		if clientCAs, err = tlsfile.OpenPool(f.tlsClientCA, "client CA", log); err != nil {
			return nil, nil, nil, fmt.Errorf("--tls-client-ca: %w", err)
		}
	}
	// A follower shows the leader its own certificate: with
	// --tls-client-ca, the leader asks for one.
	peerCAs := clientCAs
	if f.peerCACert != "" {
		if peerCAs, err = tlsfile.OpenPool(f.peerCACert, "peer CA", log); err != nil {
			return nil, nil, nil, fmt.Errorf("--peer-cacert: %w", err)
		}
	}
	peer = func() *tls.Config { return tlsfile.ClientConfig(pair, peerCAs) }
	return tlsfile.ServerConfig(pair, clientCAs), peer, pair, nil
}

// tlsExpiryMetric is when the served certificate expires, following its
// rotation: alert on it (time() > … - 14 days) before clients' handshakes
// fail.
func tlsExpiryMetric(pair *tlsfile.Pair) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "underlay", Subsystem: "control", Name: "tls_certificate_expiry_timestamp_seconds",
		Help: "When the certificate control serves (--tls-cert) expires, in seconds since the epoch; follows its rotation.",
	}, func() float64 { return float64(pair.NotAfter().Unix()) })
}

func runControl(ctx context.Context, f *controlFlags, log *slog.Logger) error {
	if err := checkAuthFlags(f); err != nil {
		return err
	}
	var fileTokens *scale.FileTokens
	if f.tokenFile != "" {
		t, err := scale.OpenTokenFile(f.tokenFile, log)
		if err != nil {
			return fmt.Errorf("--token-file: %w", err)
		}
		fileTokens = t
	}
	if f.historyLimit <= 0 {
		return fmt.Errorf("--history-limit %d: must be positive", f.historyLimit)
	}
	// A prefix of slashes alone is the KV root: a service's records would
	// sit under its bare name, and trimming them delete others' keys there.
	if strings.Trim(f.historyPrefix, "/") == "" {
		return fmt.Errorf("--history-prefix %q: want a Consul KV prefix such as %s", f.historyPrefix, adapter.DefaultHistoryPrefix)
	}
	if f.interval <= 0 {
		return fmt.Errorf("--interval %s: must be positive", f.interval)
	}
	if f.webhookMaxAge <= 0 || f.webhookMaxAge > maxWebhookMaxAge {
		return fmt.Errorf("--webhook-max-age %s: want more than 0 and at most %s", f.webhookMaxAge, maxWebhookMaxAge)
	}
	limits, err := controlLimits(f.limits)
	if err != nil {
		return err
	}
	f.limits = limits
	if f.limits.TrustedProxies, err = scale.ParseTrustedProxies(f.trustedProxies); err != nil {
		return fmt.Errorf("--trusted-proxies: %w", err)
	}
	// The names peers and clients are known to reach control by.
	hosts, err := allowedHosts(f.allowedHosts, f.advertise, f.listen)
	if err != nil {
		return err
	}
	if f.limits.MaxEventReadersPerClient <= 0 {
		return fmt.Errorf("--max-event-readers-per-client %d: want a positive number (at most --max-event-readers)", f.limits.MaxEventReadersPerClient)
	}
	for _, p := range f.peers {
		if _, _, err := net.SplitHostPort(p); err != nil {
			return fmt.Errorf("--peers %q: want host:port, as the instances' --advertise: %w", p, err)
		}
	}
	// Followers dial the leader's advertised host:port, and requests passed
	// on must name it: anything else is written to the leader key in vain.
	if f.advertise != "" {
		if host, port, err := net.SplitHostPort(f.advertise); err != nil || host == "" || port == "" {
			return fmt.Errorf("--advertise %q: want host:port, as followers and clients reach this instance", f.advertise)
		}
	}
	secret, peerSecret, err := controlSecrets(f, log)
	if err != nil {
		return err
	}
	serverTLS, peerTLS, tlsPair, err := controlTLS(f, log)
	if err != nil {
		return err
	}
	var policies scale.PolicyFile
	if f.policyFile != "" {
		if policies, err = scale.ReadPolicyFile(f.policyFile, log); err != nil {
			return fmt.Errorf("--policy-file: %w", err)
		}
	}
	var prom scale.MetricSource
	if f.prometheus != "" {
		if prom, err = adapter.NewPrometheus(f.prometheus, nil, log); err != nil {
			return fmt.Errorf("--prometheus-url: %w", err)
		}
	}
	switch {
	case f.insecureNoAuth:
		// No token to ask for: reads are as open as scaling.
		f.authReads = false
		log.Warn("authentication disabled (--insecure-no-auth): anyone reaching the API can scale services, and read the cluster", "addr", f.listen)
	case !f.authReads:
		log.Warn("reads open (--auth-reads=false): anyone reaching the API sees the cluster's services, tasks, addresses, nodes and scaling decisions, and /metrics; scaling still needs a token", "addr", f.listen)
	}
	dockerAPI, err := dockerhost.NewClient()
	if err != nil {
		return err
	}
	defer dockerAPI.Close()
	f.consul.Log = log // the token file's warnings
	consulAPI, err := consul.NewClient(f.consul)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if tlsPair != nil {
		reg.MustRegister(tlsExpiryMetric(tlsPair))
	}
	history := adapter.NewKVHistory(consulAPI, f.historyPrefix, f.historyLimit)
	metrics := adapter.Metrics{Builtin: adapter.NewBuiltin(consul.NewKV(consulAPI), log), Prometheus: prom}
	alertLog := adapter.NewKVAlertLog(consulAPI, "", 0, log)
	cfg := scale.Config{DryRun: f.dryRun, Metrics: metrics, Interval: f.interval, Policies: policies,
		AlertLog: alertLog}
	advertise := f.advertise
	if advertise == "" {
		advertise = f.listen
	}
	var leader *adapter.ConsulLeader
	if f.leaderElection {
		leader = adapter.NewConsulLeader(adapter.LeaderConfig{Key: f.leaderKey, Advertise: advertise}, consulAPI, log)
		cfg.Leadership = leader
		switch {
		case f.forward && peerSecret == nil:
			log.Info("followers will not pass scaling requests on to the leader without --peer-secret-file: they answer 503 naming it")
		case f.forward && len(f.peers) == 0:
			log.Warn("without --peers this instance, as a follower, passes no scaling request on to the leader (the leader key in Consul could name any address): it answers 503 naming the leader; list the instances' --advertise in --peers")
		}
	}
	ctrl := scale.NewController(cfg, adapter.NewSwarm(dockerAPI), history, log, reg)
	apiCfg := scale.APIConfig{WebhookSecret: secret, WebhookMaxAge: f.webhookMaxAge, History: history, ForwardToLeader: f.forward,
		OpenReads: !f.authReads, Limits: f.limits, Registerer: reg,
		Peer: scale.PeerConfig{Secret: peerSecret, Self: advertise, Allow: f.peers, TLS: peerTLS}}
	var tokens scale.AnyToken
	if fileTokens != nil {
		tokens = append(tokens, fileTokens)
	}
	var kvTokens *adapter.KVTokens
	if f.tokenKey != "" {
		kvTokens = adapter.NewKVTokens(consulAPI, f.tokenKey, log)
		tokens = append(tokens, kvTokens)
	}
	if len(tokens) > 0 {
		apiCfg.Tokens = tokens
	}
	api := scale.NewAPI(apiCfg, ctrl, log)
	dash, err := newDashboard(controlDashboard{docker: dockerAPI, consul: consulAPI, ctrl: ctrl, leadership: cfg.Leadership,
		history: history, historyPrefix: f.historyPrefix, api: api, apiCfg: apiCfg, secureCookies: f.secureCookies}, log, reg)
	if err != nil {
		return err
	}

	var metricsHandler http.Handler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	if api.AuthReads() {
		metricsHandler = api.RequireToken(metricsHandler)
	} else {
		metricsHandler = api.ReadLimit(metricsHandler)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", api.SameSiteRead(metricsHandler))
	mux.Handle("/", api.Handler())
	dash.Mount(mux)
	ln := f.listener
	if ln == nil {
		if ln, err = net.Listen("tcp", f.listen); err != nil {
			return fmt.Errorf("--listen %s: %w", f.listen, err)
		}
	}
	// Health answers whatever the Host: load balancers check by names of
	// their own, and it tells no more than whether control works.
	top := http.NewServeMux()
	top.Handle("GET /health", mux)
	top.Handle("GET /v1/orbiter/health", mux)
	// By another name, a request with a token is served once its token
	// checks out (webhooks, underlay scale); without tokens, never.
	var tokenChecked http.Handler
	if apiCfg.Tokens != nil {
		tokenChecked = api.RequireToken(mux)
	}
	top.Handle("/", hosts.WithToken("--allowed-host", mux, tokenChecked))
	srv := scale.NewServer(top, f.limits, log)
	srv.TLSConfig = serverTLS
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return ctrl.Run(gctx) })
	g.Go(func() error { return alertLog.Run(gctx) })
	if leader != nil {
		g.Go(func() error { return leader.Run(gctx) })
	}
	if kvTokens != nil {
		g.Go(func() error { return kvTokens.Run(gctx) })
	}
	if f.policyFile != "" {
		g.Go(func() error { ctrl.FollowPolicyFile(gctx, f.policyFile, secretfile.CheckEvery, log); return nil })
	}
	g.Go(func() error { return dash.Run(gctx) })
	g.Go(func() error { return serveControl(gctx, ln, srv, log) })
	return g.Wait()
}

// allowedHosts are the Host names a server answers to besides IP literals
// and localhost: given (--allowed-host), this machine's name and the
// hosts of addrs (HOST:PORT), the names it is known to be reached by.
func allowedHosts(given []string, addrs ...string) (httpserve.AllowedHosts, error) {
	names := slices.Clone(given)
	if _, err := httpserve.NewAllowedHosts(names...); err != nil {
		return httpserve.AllowedHosts{}, fmt.Errorf("--allowed-host: %w", err)
	}
	var implied []string
	if h, err := os.Hostname(); err == nil {
		implied = append(implied, h)
	}
	for _, addr := range addrs {
		if h, _, err := net.SplitHostPort(addr); err == nil {
			implied = append(implied, h)
		}
	}
	for _, h := range implied {
		// Addresses pass anyway; what is no host name cannot be a Host.
		if _, err := netip.ParseAddr(h); err != nil && httpserve.CheckHostName(h) == nil {
			names = append(names, h)
		}
	}
	return httpserve.NewAllowedHosts(names...)
}

// serveControl serves srv on ln until ctx ends, over TLS when srv has a
// TLS configuration.
func serveControl(ctx context.Context, ln net.Listener, srv *http.Server, log *slog.Logger) error {
	if srv.TLSConfig != nil {
		log.Info("serving the autoscaler API over TLS", "addr", ln.Addr().String(), "client_certificates", srv.TLSConfig.ClientCAs != nil)
	} else {
		log.Info("serving the autoscaler API", "addr", ln.Addr().String())
	}
	return httpserve.Serve(ctx, ln, srv)
}
