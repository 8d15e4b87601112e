package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/docker/docker/client"
	"github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/underlay/underlay/internal/activation"
	"github.com/underlay/underlay/internal/backoff"
	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/dockerhost"
	"github.com/underlay/underlay/internal/doctor"
	"github.com/underlay/underlay/internal/hostnet"
	"github.com/underlay/underlay/internal/inventory"
	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/netagent"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/profiling"
	"github.com/underlay/underlay/internal/register"
	"github.com/underlay/underlay/internal/taskmetrics"
)

type agentFlags struct {
	consul           consul.Options
	node             string
	network          string
	hostIP           string
	internal         bool
	explicit         bool
	tags             []string
	labels           []string
	resync           time.Duration
	deregister       string
	deregisterOnExit bool
	listen           string
	workers          int
	networks         bool
	networkSync      time.Duration
	ipam             bool
	ipamSocket       string
	ipamGrace        time.Duration
	ipamNodeTimeout  time.Duration
	ipamSweep        time.Duration
	ipamSpares       int
	taskMetrics      time.Duration
	doctorInterval   time.Duration
	pprof            string
}

func newAgentCommand(g *globalFlags, streams IOStreams) *cobra.Command {
	f := &agentFlags{}
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the node agent: Consul registration, cluster networks, IPAM plugin, inventory",
		Long: `The agent watches this host's Docker daemon and keeps the local Consul agent's
services in step with the running containers: macvlan and ipvlan containers are
registered with their own routable IP, Swarm tasks under their service name, with
registrator-compatible SERVICE_* labels and environment for names, tags, Meta and checks.

Every flag can also be set through UNDERLAY_<FLAG> (for example UNDERLAY_RESYNC=30s);
Docker is reached through DOCKER_HOST and Consul through the CONSUL_HTTP_* variables.`,
		Args: cobra.NoArgs,
		RunE: g.withLog(streams.ErrOut, func(cmd *cobra.Command, log *slog.Logger) error {
			return runAgent(cmd.Context(), f, log)
		}),
	}
	fl := cmd.Flags()
	addConsulFlags(fl, &f.consul)
	fl.StringVar(&f.node, "node", "", "node name: ownership marker and service ID prefix, and how `ips` and `network inspect` show the node (default: Docker's host name); in the cluster the node is known by its swarm node ID")
	fl.StringVar(&f.network, "network", "", "preferred network when a container is on several (SERVICE_NETWORK overrides)")
	fl.StringVar(&f.hostIP, "host-ip", "", "address registered for published ports and host-network containers (default: the Consul agent's address)")
	fl.BoolVar(&f.internal, "internal", false, "register container IPs and exposed ports on every user network, not only macvlan/ipvlan")
	fl.BoolVar(&f.explicit, "explicit", false, "register only containers that set SERVICE_NAME or SERVICE_<port>_NAME")
	fl.StringSliceVar(&f.tags, "tags", nil, "tags added to every service (comma-separated)")
	fl.StringArrayVar(&f.labels, "label", nil, "only containers with this label KEY or KEY=VALUE (repeatable)")
	fl.DurationVar(&f.resync, "resync", time.Minute, "interval of full resyncs")
	fl.StringVar(&f.deregister, "deregister", string(register.DeregisterAlways), "when to deregister a stopped container: always or on-success (keep failed ones)")
	fl.BoolVar(&f.deregisterOnExit, "deregister-on-exit", false, "deregister every service of this node when the agent exits")
	fl.StringVar(&f.listen, "listen", "127.0.0.1:9465", "address for /healthz and /metrics (empty to disable)")
	fl.BoolVar(&f.networks, "networks", true, "realise underlay cluster networks on this node (host shim, config-only network, range lease)")
	fl.DurationVar(&f.networkSync, "network-sync", 30*time.Second, "interval of cluster network syncs (drift repair)")
	fl.BoolVar(&f.ipam, "ipam", true, "serve underlay's cluster IPAM to the local dockerd (Docker's remote IPAM plugin protocol)")
	fl.StringVar(&f.ipamSocket, "ipam-socket", ipam.DefaultSocket, "Unix socket of the IPAM plugin, in Docker's plugin directory")
	fl.DurationVar(&f.ipamGrace, "ipam-leak-grace", time.Minute, "an allocated address no local container holds is reclaimed after twice this (protects allocations in flight)")
	fl.DurationVar(&f.ipamNodeTimeout, "ipam-node-timeout", 10*time.Minute, "the swarm leader reclaims the addresses of a node not ready for this long (0: never)")
	fl.DurationVar(&f.ipamSweep, "ipam-sweep", 15*time.Second, "interval of leaked-address sweeps")
	fl.IntVar(&f.ipamSpares, "ipam-spares", 4, "addresses per cluster-IPAM pool this node claims ahead of demand, handed to Docker with no wait on Consul (given back when another node runs short; 0: none)")
	fl.DurationVar(&f.taskMetrics, "task-metrics", 10*time.Second, "interval of Swarm task CPU/memory reports for the autoscaler's underlay:cpu and underlay:memory (0: off)")
	fl.DurationVar(&f.doctorInterval, "doctor-interval", time.Minute, "interval of this node's doctor checks, published to Consul for the dashboard (0: off)")
	fl.StringVar(&f.pprof, "pprof", "", "serve Go's profiler at http://ADDR/debug/pprof/ on this loopback ADDR, such as 127.0.0.1:6060 (empty: off)")
	fl.IntVar(&f.workers, "workers", 32, "containers reconciled concurrently (Docker holds inspects of starting containers, so more than the start concurrency)")
	cmd.AddCommand(newAgentCleanupCommand(g, streams))
	return cmd
}

func runAgent(ctx context.Context, f *agentFlags, log *slog.Logger) error {
	labels, err := parseLabelFilters(f.labels)
	if err != nil {
		return err
	}
	if f.hostIP != "" && net.ParseIP(f.hostIP) == nil {
		return fmt.Errorf("--host-ip %q: not an IP address", f.hostIP)
	}
	if f.resync <= 0 {
		return fmt.Errorf("--resync %s: must be positive", f.resync)
	}
	if f.ipamSpares < 0 || f.ipamSpares > 64 {
		return fmt.Errorf("--ipam-spares %d: want 0 to 64", f.ipamSpares)
	}
	if f.pprof != "" {
		if err := profiling.CheckAddr(f.pprof); err != nil {
			return fmt.Errorf("--pprof: %w", err)
		}
	}
	// Socket activation (underlay-ipam.socket): systemd made the plugin's
	// socket before dockerd started; the agent serves on it, never removes it.
	ipamLn, err := activation.Take(f.ipamSocket)
	if err != nil {
		log.Warn("socket activation", "err", err)
	}
	if ipamLn != nil {
		defer ipamLn.Close()
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
	catalog := consul.NewCatalog(consulAPI)

	node := f.node
	if node == "" {
		node, err = waitFor(ctx, log, "docker host name", func(ctx context.Context) (string, error) {
			info, err := dockerAPI.Info(ctx)
			return info.Name, err
		})
		if err != nil {
			return err
		}
	}
	hostIP := f.hostIP
	if hostIP == "" {
		hostIP, err = waitFor(ctx, log, "consul agent address", catalog.NodeAddress)
		if err != nil {
			return err
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// One Docker source for every part of the agent: they share its cache
	// of network drivers.
	src := dockerhost.NewSource(dockerAPI)
	agent, err := register.NewAgent(register.Config{
		Policy: register.Policy{
			Node: node, Network: f.network, HostIP: hostIP, Internal: f.internal,
			Explicit: f.explicit, Tags: f.tags, Labels: labels,
		},
		Deregister:       register.DeregisterMode(f.deregister),
		DeregisterOnExit: f.deregisterOnExit,
		Resync:           f.resync,
		Workers:          f.workers,
	}, src, catalog, log, reg)
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return agent.Run(gctx) })
	if f.networks {
		g.Go(func() error { return runNetworks(gctx, f, dockerAPI, consulAPI, src, node, reg, ipamLn, log) })
	}
	if f.listen != "" {
		g.Go(func() error { return serveStatus(gctx, f.listen, agent, reg, log) })
	}
	if f.pprof != "" {
		g.Go(func() error { return profiling.Serve(gctx, f.pprof, log) })
	}
	return g.Wait()
}

// serveIPAMActivated serves the IPAM plugin on the listener systemd passed
// until ctx ends. The socket file is systemd's: it stays, so that dockerd's
// requests made while the agent restarts wait in its backlog.
func serveIPAMActivated(ctx context.Context, ln net.Listener, h http.Handler, log *slog.Logger) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	log.Info("serving Docker's IPAM plugin protocol on the socket systemd passed", "component", "ipam", "socket", ln.Addr().String())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("IPAM plugin on %s: %w", ln.Addr(), err)
	}
	return nil
}

// runDoctorReports runs the doctor's checks on this node every
// --doctor-interval and publishes the results for the dashboard. It never
// stops the agent: without its reports the dashboard only lacks them.
func runDoctorReports(ctx context.Context, f *agentFlags, id, node string, dockerAPI *client.Client, kv *consul.KV, store *netspec.Store, log *slog.Logger) error {
	ca, err := doctor.NewConsulAPI(f.consul)
	if err != nil {
		log.Error("doctor reports off: no Consul client for the checks", "err", err)
		return nil
	}
	env := doctor.Env{NodeID: id, Node: node, Docker: &doctor.DockerAPI{API: dockerAPI}, Consul: ca, Networks: store, Pools: doctor.IPAMPools{KV: kv}}
	doctor.RunPeriodically(ctx, kv, node, Version, env.Checks(), f.doctorInterval, log.With("component", "doctor"))
	return nil
}

// runNetworks runs the parts of the agent that act for the node in the
// cluster — networks, IPAM, inventory, task metrics — under its identity:
// its swarm node ID (the name is for display only). It first claims that
// identity, and fails if another live agent holds it or takes it over.
func runNetworks(ctx context.Context, f *agentFlags, dockerAPI *client.Client, consulAPI *api.Client, src *dockerhost.Source, node string, reg *prometheus.Registry, ipamLn net.Listener, log *slog.Logger) error {
	id, err := waitFor(ctx, log, "this node's swarm node ID (cluster networks need the node in a swarm)", func(ctx context.Context) (string, error) {
		info, err := dockerAPI.Info(ctx)
		return info.Swarm.NodeID, err
	})
	if err != nil {
		return err
	}
	kv := consul.NewKV(consulAPI)
	store := netspec.NewStore(kv)
	facts := &netagent.Facts{Store: store, ID: id, Node: node, Holder: netagent.Self()}
	delays := backoff.Backoff{Min: 500 * time.Millisecond, Max: 15 * time.Second}
	for {
		err := facts.Claim(ctx)
		if err == nil {
			break
		}
		if errors.Is(err, netspec.ErrIdentityHeld) || ctx.Err() != nil {
			return err
		}
		log.Warn("cannot claim this node's identity; retrying", "node", node, "node_id", id, "err", err)
		backoff.Sleep(ctx, delays.Next())
	}
	log.Info("node identity claimed", "node", node, "node_id", id)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return facts.Run(gctx, netagent.Heartbeat) })
	g.Go(func() error { return watchSwarmNodeID(gctx, dockerAPI, id) })
	nets := dockerhost.NewNetworks(dockerAPI)
	rec := &netagent.Reconciler{
		ID: id, Node: node, Facts: facts, Store: store, Docker: nets, Swarm: nets,
		Host: hostnet.Host{}, RemoveShim: hostnet.RemoveShim, RemoveParent: hostnet.RemoveParent,
		Log: log.With("component", "networks"), Metrics: netagent.NewMetrics(reg),
	}
	if f.ipam {
		ilog := log.With("component", "ipam")
		alloc := ipam.NewAllocator(kv, id, ilog)
		pools := ipam.SpecPools{Store: store}
		rec.IPAM = ipam.NodeIPAM{Alloc: alloc, Pools: pools}
		ipamMetrics := ipam.NewMetrics(reg, alloc)
		plugin := &ipam.Plugin{Alloc: alloc, Pools: pools, Log: ilog, Metrics: ipamMetrics}
		reclaimer := &ipam.Reclaimer{
			Alloc: alloc, Pools: pools, Held: src, Cluster: nets, Metrics: ipamMetrics, Grace: f.ipamGrace,
			NodeTimeout: f.ipamNodeTimeout, Fresh: max(f.ipamNodeTimeout, netagent.StaleAfter), Log: ilog,
		}
		g.Go(func() error { reclaimer.Run(gctx, f.ipamSweep); return nil })
		g.Go(func() error { alloc.KeepSpares(gctx, f.ipamSpares, ilog); return nil })
		g.Go(func() error {
			if ipamLn != nil {
				return serveIPAMActivated(gctx, ipamLn, plugin.Handler(), log)
			}
			// Registration goes on whatever happens to the plugin socket.
			for gctx.Err() == nil {
				if err := plugin.Serve(gctx, f.ipamSocket); err != nil {
					log.Error("IPAM plugin stopped; retrying in 10s", "socket", f.ipamSocket, "err", err)
				}
				select {
				case <-gctx.Done():
				case <-time.After(10 * time.Second):
				}
			}
			return nil
		})
	}
	links, err := hostnet.Watch(gctx)
	if err != nil {
		log.Warn("link changes are not watched; drift is repaired at each --network-sync", "err", err)
	}
	g.Go(func() error { rec.Run(gctx, kv.Watch(gctx, netspec.KVPrefix), links, f.networkSync); return nil })
	g.Go(func() error {
		inventory.Run(gctx, src, kv, node, id, f.networkSync, log.With("component", "inventory"))
		return nil
	})
	if f.doctorInterval > 0 {
		g.Go(func() error { return runDoctorReports(gctx, f, id, node, dockerAPI, kv, store, log) })
	}
	if f.taskMetrics > 0 {
		g.Go(func() error {
			taskmetrics.Run(gctx, src, kv, node, f.taskMetrics, log.With("component", "taskmetrics"))
			return nil
		})
	}
	return g.Wait()
}

// watchSwarmNodeID returns an error once this node's swarm node ID is no
// longer id (it left the swarm and joined again): everything this agent
// owns is keyed by the old one, so it must start over.
func watchSwarmNodeID(ctx context.Context, dockerAPI *client.Client, id string) error {
	t := time.NewTicker(netagent.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		info, err := dockerAPI.Info(ctx)
		if err == nil && info.Swarm.NodeID != "" && info.Swarm.NodeID != id {
			return fmt.Errorf("this node's swarm node ID changed from %s to %s (it joined the swarm again): restart the agent to serve the new identity", id, info.Swarm.NodeID)
		}
	}
}

// waitFor retries get with backoff until it succeeds or ctx ends: the agent
// may start before Docker or Consul and must not exit because of it.
func waitFor(ctx context.Context, log *slog.Logger, what string, get func(context.Context) (string, error)) (string, error) {
	delays := backoff.Backoff{Min: 500 * time.Millisecond, Max: 15 * time.Second}
	for {
		v, err := get(ctx)
		if err == nil && v != "" {
			return v, nil
		}
		delay := delays.Next()
		log.Warn("waiting for "+what, "err", err, "retry_in", delay)
		backoff.Sleep(ctx, delay)
		if ctx.Err() != nil {
			return "", fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		}
	}
}

func parseLabelFilters(in []string) (map[string]string, error) {
	out := map[string]string{}
	for _, l := range in {
		k, v, _ := strings.Cut(l, "=")
		if k == "" {
			return nil, fmt.Errorf("--label %q: want KEY or KEY=VALUE", l)
		}
		out[k] = v
	}
	return out, nil
}

// serveStatus serves /healthz (503 while Docker or Consul is unreachable) and /metrics.
func serveStatus(ctx context.Context, addr string, agent *register.Agent, reg *prometheus.Registry, log *slog.Logger) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		st := agent.Status()
		w.Header().Set("Content-Type", "application/json")
		if !st.DockerConnected || !st.ConsulReachable {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		json.NewEncoder(w).Encode(st)
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	log.Info("serving /healthz and /metrics", "addr", ln.Addr().String())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
