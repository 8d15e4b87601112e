package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/underlay/underlay/internal/activation"
	"github.com/underlay/underlay/internal/agent"
	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/dockerhost"
	"github.com/underlay/underlay/internal/doctor"
	"github.com/underlay/underlay/internal/httpserve"
	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/profiling"
	"github.com/underlay/underlay/internal/register"
)

type agentFlags struct {
	consul           consul.Options
	node             string
	network          string
	hostIP           string
	allowedHosts     []string
	internal         bool
	explicit         bool
	swarmNames       bool
	swarmNameAllow   []string
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
	ipamTestTimers   bool
	taskMetrics      time.Duration
	doctorInterval   time.Duration
	pprof            string
	stateDir         string
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
			return runAgent(cmd.Context(), cmd, f, log)
		}),
	}
	fl := cmd.Flags()
	addConsulFlags(fl, &f.consul)
	fl.StringVar(&f.node, "node", "", "node name: ownership marker and service ID prefix, and how underlay ips and network inspect show the node (default: Docker's host name); in the cluster the node is known by its swarm node ID")
	fl.StringVar(&f.network, "network", "", "preferred network when a container is on several (SERVICE_NETWORK overrides)")
	fl.StringVar(&f.hostIP, "host-ip", "", "address registered for published ports and host-network containers (default: the Consul agent's address)")
	fl.BoolVar(&f.internal, "internal", false, "register container IPs and exposed ports on every user network, not only macvlan/ipvlan")
	fl.BoolVar(&f.explicit, "explicit", false, "register only containers that set SERVICE_NAME or SERVICE_<port>_NAME")
	fl.BoolVar(&f.swarmNames, "swarm-names", false, "register a Swarm task under its Swarm service's name only: a SERVICE_NAME or SERVICE_<port>_NAME naming another service is refused with a warning (other containers are not affected)")
	fl.StringSliceVar(&f.swarmNameAllow, "swarm-name-allow", nil, "with --swarm-names, let a task of Swarm service SVC also register under NAME: `SVC=NAME` (repeatable, comma-separated; both must be names the agent registers under: not empty, no control character, no '.', '..' or empty path segment)")
	fl.StringSliceVar(&f.tags, "tags", nil, "tags added to every service (comma-separated)")
	fl.StringArrayVar(&f.labels, "label", nil, "only containers with this label KEY or KEY=VALUE (repeatable)")
	fl.DurationVar(&f.resync, "resync", time.Minute, "interval of full resyncs")
	fl.StringVar(&f.deregister, "deregister", string(register.DeregisterAlways), "when to deregister a stopped container: always or on-success (keep failed ones)")
	fl.BoolVar(&f.deregisterOnExit, "deregister-on-exit", false, "deregister every service of this node when the agent exits")
	fl.StringVar(&f.listen, "listen", "127.0.0.1:9465", "address for /healthz and /metrics (empty to disable)")
	fl.StringSliceVar(&f.allowedHosts, "allowed-host", nil, "a host name clients reach /metrics by (repeatable, comma-separated; \"*\": any); besides IP addresses, localhost, this machine's name and --listen's, other Host headers are answered 421, so that a page of another site rebound to this address (DNS rebinding) cannot read it")
	fl.BoolVar(&f.networks, "networks", true, "realise underlay cluster networks on this node (host shim, config-only network, range lease)")
	fl.DurationVar(&f.networkSync, "network-sync", 30*time.Second, "interval of cluster network syncs (drift repair)")
	fl.BoolVar(&f.ipam, "ipam", true, "serve underlay's cluster IPAM to the local dockerd (Docker's remote IPAM plugin protocol)")
	fl.StringVar(&f.ipamSocket, "ipam-socket", ipam.DefaultSocket, "Unix socket of the IPAM plugin, in Docker's plugin directory")
	fl.DurationVar(&f.ipamGrace, "ipam-leak-grace", time.Minute, "an allocated address no local container holds is reclaimed after twice this (protects allocations in flight), never while a local container start may hold it; at least "+minLeakGrace.String()+": shorter would reclaim the address of a container Docker is still starting")
	fl.DurationVar(&f.ipamNodeTimeout, "ipam-node-timeout", 10*time.Minute, "the swarm leader reclaims the addresses of a node not ready for this long (0: never); at least "+minNodeTimeout.String()+": shorter would reclaim a live node's addresses at a blip of its agent or of the swarm")
	// Test labs check reclamation in seconds, not minutes.
	fl.BoolVar(&f.ipamTestTimers, "ipam-test-timers", false, "for test labs only: take --ipam-leak-grace and --ipam-node-timeout below their safe minimums")
	fl.Lookup("ipam-test-timers").Hidden = true
	fl.DurationVar(&f.ipamSweep, "ipam-sweep", 15*time.Second, "interval of leaked-address sweeps")
	fl.IntVar(&f.ipamSpares, "ipam-spares", 4, "addresses per cluster-IPAM pool this node claims ahead of demand, handed to Docker with no wait on Consul (given back when another node runs short; 0: none)")
	fl.DurationVar(&f.taskMetrics, "task-metrics", 10*time.Second, "interval of Swarm task CPU/memory reports for the autoscaler's underlay:cpu and underlay:memory (0: off)")
	fl.DurationVar(&f.doctorInterval, "doctor-interval", time.Minute, "interval of this node's doctor checks, published to Consul for the dashboard (0: off; at most 1h)")
	fl.StringVar(&f.stateDir, "state-dir", defaultStateDir, "directory where the agent records this node's identity, so that at boot its IPAM plugin answers dockerd before dockerd answers it, and the addresses its IPAM freed lately, so that a restarted agent does not hand them out again at once (empty: none)")
	fl.StringVar(&f.pprof, "pprof", "", "serve Go's profiler at http://ADDR/debug/pprof/ on this loopback ADDR, such as 127.0.0.1:6060 (empty: off)")
	fl.IntVar(&f.workers, "workers", 32, "containers reconciled concurrently (Docker holds inspects of starting containers, so more than the start concurrency)")
	cmd.AddCommand(newAgentCleanupCommand(g, streams), newAgentPolicyCommand(streams))
	return cmd
}

func runAgent(ctx context.Context, cmd *cobra.Command, f *agentFlags, log *slog.Logger) error {
	labels, err := parseLabelFilters(f.labels)
	if err != nil {
		return err
	}
	swarmNameAllow, err := parseSwarmNameAllow(f.swarmNameAllow)
	if err != nil {
		return err
	}
	if swarmNameAllow != nil && !f.swarmNames {
		// Not refused: without --swarm-names every name is taken anyway.
		log.Warn("--swarm-name-allow has no effect without --swarm-names: a task may register under any name", "swarm_name_allow", f.swarmNameAllow)
	}
	if err := checkAgentFlags(f, cmd.Flags().Changed("ipam")); err != nil {
		return err
	}
	if f.ipamTestTimers && (f.ipamGrace < minLeakGrace || f.ipamNodeTimeout > 0 && f.ipamNodeTimeout < minNodeTimeout) {
		log.Warn("IPAM timers below their safe minimums (--ipam-test-timers): for test labs only",
			"ipam_leak_grace", f.ipamGrace, "ipam_node_timeout", f.ipamNodeTimeout)
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
	statusHosts, err := allowedHosts(f.allowedHosts, f.listen)
	if err != nil {
		return err // checked by checkAgentFlags
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
	consulHTTP, err := consul.NewEndpoint(f.consul)
	if err != nil {
		return err
	}
	cfg := agent.Config{
		Register: register.Config{
			Policy: register.Policy{
				Node: f.node, Network: f.network, HostIP: f.hostIP, Internal: f.internal,
				Explicit: f.explicit, SwarmNames: f.swarmNames, SwarmNameAllow: swarmNameAllow,
				Tags: f.tags, Labels: labels,
			},
			Deregister:       register.DeregisterMode(f.deregister),
			DeregisterOnExit: f.deregisterOnExit,
			Resync:           f.resync,
			Workers:          f.workers,
		},
		Networks:    f.networks,
		NetworkSync: f.networkSync,
		IPAM: agent.IPAMConfig{
			Enabled: f.ipam, Socket: f.ipamSocket, Listener: ipamLn, LeakGrace: f.ipamGrace,
			NodeTimeout: f.ipamNodeTimeout, Sweep: f.ipamSweep, Spares: f.ipamSpares,
		},
		TaskMetrics:    f.taskMetrics,
		DoctorInterval: f.doctorInterval,
		Listen:         f.listen,
		StatusHosts:    statusHosts,
		Pprof:          f.pprof,
		StateDir:       f.stateDir,
		Version:        Version,
	}
	return agent.Run(ctx, cfg, agent.Clients{Docker: dockerAPI, Consul: consulAPI, ConsulHTTP: consulHTTP}, log)
}

// checkAgentFlags checks the agent's flags before it connects to anything:
// a zero interval would make a ticker panic once the node has claimed its
// identity, and a leak grace of zero would reclaim addresses Docker is
// still handing to containers. ipamChanged says --ipam was given.
func checkAgentFlags(f *agentFlags, ipamChanged bool) error {
	if _, err := httpserve.NewAllowedHosts(f.allowedHosts...); err != nil {
		return fmt.Errorf("--allowed-host: %w", err)
	}
	// Empty is Docker's host name, which the agent checks once it has it.
	if f.node != "" {
		if err := netspec.CheckNodeName(f.node); err != nil {
			return fmt.Errorf("--node %q: %w", f.node, err)
		}
	}
	if f.listen != "" {
		if err := checkListenAddr(f.listen); err != nil {
			return fmt.Errorf("--listen %q: %w", f.listen, err)
		}
	}
	if f.hostIP != "" && net.ParseIP(f.hostIP) == nil {
		return fmt.Errorf("--host-ip %q: not an IP address", f.hostIP)
	}
	positive := []struct {
		flag string
		v    time.Duration
	}{
		{"resync", f.resync}, {"network-sync", f.networkSync}, {"ipam-sweep", f.ipamSweep}, {"ipam-leak-grace", f.ipamGrace},
	}
	for _, d := range positive {
		if d.v <= 0 {
			return fmt.Errorf("--%s %s: must be positive", d.flag, d.v)
		}
	}
	// Each of these reads Consul's KV or Docker's objects every period, on
	// every node: a few nanoseconds (a unit left off) would do so without
	// pause.
	periods := []struct {
		flag string
		v    time.Duration
	}{
		{"resync", f.resync}, {"network-sync", f.networkSync}, {"ipam-sweep", f.ipamSweep},
		{"task-metrics", f.taskMetrics}, {"doctor-interval", f.doctorInterval},
	}
	for _, d := range periods {
		if d.v > 0 && d.v < minPeriod {
			return fmt.Errorf("--%s %s: at least %s", d.flag, d.v, minPeriod)
		}
	}
	orOff := []struct {
		flag string
		v    time.Duration
	}{
		{"ipam-node-timeout", f.ipamNodeTimeout}, {"task-metrics", f.taskMetrics}, {"doctor-interval", f.doctorInterval},
	}
	for _, d := range orOff {
		if d.v < 0 {
			return fmt.Errorf("--%s %s: want a positive duration, or 0 for off", d.flag, d.v)
		}
	}
	if err := checkIPAMTimers(f); err != nil {
		return err
	}
	if f.doctorInterval > doctor.MaxEvery {
		return fmt.Errorf("--doctor-interval %s: at most %s (the dashboard reads no report's period as longer, so that a dead agent is seen)", f.doctorInterval, doctor.MaxEvery)
	}
	switch register.DeregisterMode(f.deregister) {
	case register.DeregisterAlways, register.DeregisterOnSuccess:
	default:
		return fmt.Errorf("--deregister %q: want always or on-success", f.deregister)
	}
	// Every worker starts at once, whatever the containers.
	if f.workers < 1 || f.workers > maxWorkers {
		return fmt.Errorf("--workers %d: want 1 to %d", f.workers, maxWorkers)
	}
	if f.ipamSpares < 0 || f.ipamSpares > 64 {
		return fmt.Errorf("--ipam-spares %d: want 0 to 64", f.ipamSpares)
	}
	// dockerd finds the plugin by its absolute path in its plugin
	// directory; anything else fails every retry, or is never found.
	if s := f.ipamSocket; f.ipam && f.networks && (!filepath.IsAbs(s) || strings.HasSuffix(s, "/")) {
		return fmt.Errorf("--ipam-socket %q: want the absolute path of the plugin's socket, such as %s", s, ipam.DefaultSocket)
	}
	if f.ipam && !f.networks && ipamChanged {
		return errors.New("--ipam needs --networks: the IPAM plugin serves the cluster networks the agent realises (drop --networks=false, or add --ipam=false)")
	}
	if f.pprof != "" {
		if err := profiling.CheckAddr(f.pprof); err != nil {
			return fmt.Errorf("--pprof: %w", err)
		}
	}
	return nil
}

// minPeriod is the shortest period of the agent's loops (--resync,
// --network-sync and the like) taken.
const minPeriod = 100 * time.Millisecond

// minLeakGrace and minNodeTimeout are the shortest --ipam-leak-grace and
// --ipam-node-timeout taken (without --ipam-test-timers): a container's
// start holds its address before Docker shows it, seconds on a loaded
// host; a node's agent restart or a swarm election lasts seconds too.
const (
	minLeakGrace   = 10 * time.Second
	minNodeTimeout = time.Minute
)

// checkIPAMTimers refuses reclamation timers short enough to reclaim
// addresses still in use, unless --ipam-test-timers asks for them.
func checkIPAMTimers(f *agentFlags) error {
	if f.ipamTestTimers {
		return nil
	}
	if f.ipamGrace < minLeakGrace {
		return fmt.Errorf("--ipam-leak-grace %s: at least %s (an address is reclaimed after twice the grace, and a container Docker is still starting holds it unseen)", f.ipamGrace, minLeakGrace)
	}
	if f.ipamNodeTimeout > 0 && f.ipamNodeTimeout < minNodeTimeout {
		return fmt.Errorf("--ipam-node-timeout %s: 0 (never) or at least %s (a node's addresses are reclaimed once it has been away that long, and an agent restart or a swarm election lasts seconds)", f.ipamNodeTimeout, minNodeTimeout)
	}
	return nil
}

// maxWorkers bounds --workers: far more than containers start at once.
const maxWorkers = 4096

// checkListenAddr refuses what net.Listen would refuse, or take as an
// ephemeral port on every address (":"), before the agent waits for
// Docker and Consul: it listens only once they answered.
func checkListenAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want HOST:PORT, such as 127.0.0.1:9465: %w", err)
	}
	if port == "" {
		return errors.New("no port")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q: want 0 to 65535", port)
	}
	return nil
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

// parseSwarmNameAllow reads --swarm-name-allow's SVC=NAME values into
// register.Policy's SwarmNameAllow (nil for none). Each side must be a
// name the agent registers under: a Swarm service's name it would not take
// never matches a task, and a NAME it would not take is never registered.
func parseSwarmNameAllow(in []string) (map[string][]string, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := map[string][]string{}
	for _, v := range in {
		svc, name, _ := strings.Cut(v, "=")
		if svc == "" || name == "" {
			return nil, fmt.Errorf("--swarm-name-allow %q: want SVC=NAME: a task of Swarm service SVC may also register under NAME", v)
		}
		if err := register.CheckName(svc); err != nil {
			return nil, fmt.Errorf("--swarm-name-allow %q: Swarm service %q: %w", v, svc, err)
		}
		if err := register.CheckName(name); err != nil {
			return nil, fmt.Errorf("--swarm-name-allow %q: name %q: %w", v, name, err)
		}
		if !slices.Contains(out[svc], name) {
			out[svc] = append(out[svc], name)
		}
	}
	return out, nil
}
