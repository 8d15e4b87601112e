package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/docker/docker/client"
	"github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/underlay/underlay/internal/backoff"
	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/dockerhost"
	"github.com/underlay/underlay/internal/httpserve"
	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/profiling"
	"github.com/underlay/underlay/internal/register"
)

// Config is what runs on the node and how. The CLI checks its values.
type Config struct {
	// Register is the registration's configuration; an empty Policy.Node
	// is Docker's host name, an empty Policy.HostIP the Consul agent's
	// address, both read (retrying) once Docker and Consul answer.
	Register register.Config
	// Networks realises the cluster networks on the node (host shim,
	// ranges, config-only networks) and runs everything that acts for the
	// node in the cluster: its identity, the inventory, doctor reports,
	// task metrics and, with IPAM, the cluster IPAM plugin.
	Networks    bool
	NetworkSync time.Duration // interval of network syncs and inventory republishing
	IPAM        IPAMConfig
	// TaskMetrics is the interval of task CPU/memory reports (0: off).
	TaskMetrics time.Duration
	// DoctorInterval is the interval of this node's doctor reports (0: off).
	DoctorInterval time.Duration
	// Listen is the address of /healthz and /metrics ("": off).
	Listen string
	// StatusHosts are the names /metrics answers to in the Host header,
	// besides addresses and localhost (DNS rebinding: see
	// httpserve.AllowedHosts).
	StatusHosts httpserve.AllowedHosts
	// Pprof is the loopback address of Go's profiler ("": off).
	Pprof string
	// StateDir is where the node's identity is recorded (see
	// netagent.ResolveID), and the addresses its IPAM freed lately (see
	// ipam.FreedFile); "": nowhere.
	StateDir string
	// Version is the agent's, as doctor reports carry it.
	Version string
}

// IPAMConfig is the cluster IPAM plugin's part of Config.
type IPAMConfig struct {
	// Enabled serves the plugin (with Networks only).
	Enabled bool
	// Socket is the plugin's Unix socket, made and removed by the agent
	// unless Listener is set.
	Socket string
	// Listener is the socket systemd passed (socket activation), or nil.
	Listener        net.Listener
	LeakGrace       time.Duration // an unheld allocation is reclaimed after twice this
	NodeTimeout     time.Duration // a node gone this long loses its addresses (0: never)
	Sweep           time.Duration // interval of leak sweeps
	Spares          int           // addresses claimed ahead of demand per pool
	PluginRetryWait time.Duration // wait before serving the socket again after a failure (default 10s)
	// ClaimWait bounds how long a pool or address request waits for the
	// node's identity claim before it is refused (default
	// DefaultClaimWait).
	ClaimWait time.Duration
	// ListingWait bounds how long requests wait, once the identity is
	// claimed, for the first listing of the node's containers (default
	// DefaultListingWait).
	ListingWait time.Duration
}

// DefaultListingWait is IPAMConfig.ListingWait's default. The plugin
// serves once the node's containers are listed, so that an address Consul
// lost under one of them is not handed out again; but at boot dockerd
// serves its API, and so the listing, only once the containers it
// restores have started, and those wait for this plugin: past this wait
// it serves without the listing (the first sweep's still passes over
// what they hold).
const DefaultListingWait = 5 * time.Second

// listingWait is ListingWait or its default.
func (c IPAMConfig) listingWait() time.Duration {
	if c.ListingWait <= 0 {
		return DefaultListingWait
	}
	return c.ListingWait
}

// DefaultClaimWait is IPAMConfig.ClaimWait's default. At boot dockerd
// restores containers before it serves its API, and its plugin client sets
// no deadline: a restored container on a cluster-IPAM network waits while
// the node's Consul agent joins and the claim lands, which takes more than
// a request's 5 s; a container refused then stays down (dockerd does not
// try a failed restore again). Bounded still, so that dockerd comes up
// when Consul does not.
const DefaultClaimWait = 2 * time.Minute

// claimWait is ClaimWait or its default.
func (c IPAMConfig) claimWait() time.Duration {
	if c.ClaimWait <= 0 {
		return DefaultClaimWait
	}
	return c.ClaimWait
}

// Clients are the agent's connections, built by dockerhost and consul.
type Clients struct {
	Docker *client.Client
	Consul *api.Client
	// ConsulHTTP reaches Consul's servers with plain HTTP requests, for the
	// doctor's clock check.
	ConsulHTTP consul.Endpoint
}

// Run runs the agent for one node until ctx ends or a part fails: the
// registration always, the status server, the profiler and the node's
// cluster parts as cfg says.
func Run(ctx context.Context, cfg Config, c Clients, log *slog.Logger) error {
	if !cfg.Networks || !cfg.IPAM.Enabled {
		return run(ctx, cfg, c, nil, log)
	}
	// The IPAM plugin answers from the start: dockerd, restoring
	// containers at boot, waits for it while the agent waits for Docker
	// and Consul. Its gate opens once the node's identity is claimed.
	gate := ipam.NewGate(c.ConsulHTTP.Addr, cfg.IPAM.claimWait(), log)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return servePlugin(gctx, cfg.IPAM, gate, agentLog(log)) })
	g.Go(func() error {
		defer cancel() // the plugin stops with the rest
		return run(gctx, cfg, c, gate, log)
	})
	return g.Wait()
}

// run is Run once the IPAM plugin, if any, is served through gate (nil:
// none).
func run(ctx context.Context, cfg Config, c Clients, gate *ipam.Gate, log *slog.Logger) error {
	catalog := consul.NewCatalog(c.Consul)
	alog := agentLog(log)
	pol := &cfg.Register.Policy
	if pol.Node == "" {
		node, err := waitFor(ctx, alog, "docker host name", gate.Waiting, dockerHostName(c.Docker, dockerAsk))
		if err != nil {
			return stopped(ctx, err)
		}
		if err := netspec.CheckNodeName(node); err != nil {
			return fmt.Errorf("docker host name %q: %w; give the node a name with --node", node, err)
		}
		pol.Node = node
	}
	if pol.HostIP == "" {
		ip, err := waitFor(ctx, alog, "consul agent address", gate.Waiting, catalog.NodeAddress)
		if err != nil {
			return stopped(ctx, err)
		}
		pol.HostIP = ip
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// One Docker source for every part of the agent: they share its cache
	// of network drivers.
	src := dockerhost.NewSource(c.Docker)
	agent, err := register.NewAgent(cfg.Register, src, catalog, log, reg)
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return agent.Run(gctx) })
	if cfg.Networks {
		n := &node{cfg: cfg, c: c, src: src, name: pol.Node, reg: reg, log: log, gate: gate, registrar: agent}
		g.Go(func() error { return n.run(gctx) })
	}
	if cfg.Listen != "" {
		g.Go(func() error { return serveStatus(gctx, cfg.Listen, cfg.StatusHosts, agent, reg, alog) })
	}
	if cfg.Pprof != "" {
		g.Go(func() error { return profiling.Serve(gctx, cfg.Pprof, log) })
	}
	return g.Wait()
}

// agentLog is log for the agent's own messages (its parts set their own
// component).
func agentLog(log *slog.Logger) *slog.Logger { return log.With("component", "agent") }

// stopped is err, or nil once ctx ended: an agent stopped while it waits
// for Docker or Consul at start stops cleanly, as a running one does (an
// error is exit status 1, and a unit left failed).
func stopped(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// waitFor retries get with backoff until it succeeds or ctx ends: the agent
// may start before Docker or Consul and must not exit because of it. note
// is told of each failure.
func waitFor(ctx context.Context, log *slog.Logger, what string, note func(error), get func(context.Context) (string, error)) (string, error) {
	delays := backoff.Backoff{Min: 500 * time.Millisecond, Max: 15 * time.Second}
	for {
		v, err := get(ctx)
		if err == nil && v != "" {
			return v, nil
		}
		if err != nil {
			note(fmt.Errorf("waiting for the %s: %w", what, err))
		} else {
			note(fmt.Errorf("waiting for the %s: none yet", what))
		}
		delay := delays.Next()
		log.Warn("waiting for "+what, "err", err, "retry_in", delay)
		backoff.Sleep(ctx, delay)
		if ctx.Err() != nil {
			return "", fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		}
	}
}

// dockerAsk bounds each ask of dockerd while the agent waits for it at
// start, as the Consul catalog's Timeout bounds each of Consul's.
const dockerAsk = 10 * time.Second

// dockerHostName asks api for the Docker host name, each ask given up
// after wait: a dockerd that accepted it and never answered held the
// agent's start for good, with no ask again (see waitFor).
func dockerHostName(api *client.Client, wait time.Duration) func(context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		ctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		info, err := api.Info(ctx)
		if err != nil {
			return "", fmt.Errorf("docker info: %w", err)
		}
		return info.Name, nil
	}
}

// servePlugin serves the IPAM plugin's gate until ctx ends: on the socket
// systemd passed, or on one it makes, made again after a failure.
func servePlugin(ctx context.Context, cfg IPAMConfig, gate *ipam.Gate, log *slog.Logger) error {
	if ln := cfg.Listener; ln != nil {
		// The socket file is systemd's: it stays, so that dockerd's
		// requests made while the agent restarts wait in its backlog.
		log.Info("serving Docker's IPAM plugin protocol on the socket systemd passed", "socket", ln.Addr().String())
		if err := httpserve.Serve(ctx, ln, pluginServer(cfg, gate, log)); err != nil {
			return fmt.Errorf("IPAM plugin: %w", err)
		}
		return nil
	}
	retry := cfg.PluginRetryWait
	if retry <= 0 {
		retry = 10 * time.Second
	}
	// Registration goes on whatever happens to the plugin socket.
	for ctx.Err() == nil {
		if err := gate.Serve(ctx, cfg.Socket); err != nil {
			log.Error("IPAM plugin stopped; retrying", "socket", cfg.Socket, "retry_in", retry, "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(retry):
		}
	}
	return nil
}

// pluginServer is the server of the IPAM plugin on the socket systemd
// passed: its gate holds a request for up to the claim wait (minutes at
// boot) before the plugin answers (see ipam.SocketServer).
func pluginServer(cfg IPAMConfig, gate *ipam.Gate, log *slog.Logger) *http.Server {
	return ipam.SocketServer(gate.Handler(), log.With("server", "ipam_plugin"), cfg.claimWait())
}

// serveStatus serves /healthz (503 while Docker or Consul is unreachable) and /metrics.
func serveStatus(ctx context.Context, addr string, hosts httpserve.AllowedHosts, agent *register.Agent, reg *prometheus.Registry, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", addr, err)
	}
	log.Info("serving /healthz and /metrics", "addr", ln.Addr().String())
	return httpserve.Serve(ctx, ln, httpserve.NewServer(statusHandler(agent.Status, reg, hosts), log.With("server", "status")))
}

// statusHandler serves /healthz from status and /metrics from reg, the
// latter to the Host names hosts allows.
func statusHandler(status func() register.Status, reg prometheus.Gatherer, hosts httpserve.AllowedHosts) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", hosts.Handler("--allowed-host", promhttp.HandlerFor(reg, promhttp.HandlerOpts{})))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		st := status()
		w.Header().Set("Content-Type", "application/json")
		if !st.DockerConnected || !st.ConsulReachable {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		json.NewEncoder(w).Encode(st)
	})
	return mux
}
