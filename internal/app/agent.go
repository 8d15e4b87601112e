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
	"github.com/underlay/underlay/internal/app/agentflags"
	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/dockerhost"
	"github.com/underlay/underlay/internal/doctor"
	"github.com/underlay/underlay/internal/httpserve"
	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/profiling"
	"github.com/underlay/underlay/internal/register"
)

// agentFlags are the agent's flags, defined in agentflags so that the
// lab derives from them how it carries each to a stack's agent.
type agentFlags = agentflags.Flags

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
	agentflags.Define(fl, f)
	cmd.AddCommand(newAgentCleanupCommand(g, streams), newAgentPolicyCommand(streams))
	return cmd
}

func runAgent(ctx context.Context, cmd *cobra.Command, f *agentFlags, log *slog.Logger) error {
	labels, err := parseLabelFilters(f.Labels)
	if err != nil {
		return err
	}
	swarmNameAllow, err := parseSwarmNameAllow(f.SwarmNameAllow)
	if err != nil {
		return err
	}
	if swarmNameAllow != nil && !f.SwarmNames {
		// Not refused: without --swarm-names every name is taken anyway.
		log.Warn("--swarm-name-allow has no effect without --swarm-names: a task may register under any name", "swarm_name_allow", f.SwarmNameAllow)
	}
	if err := checkAgentFlags(f, cmd.Flags().Changed("ipam")); err != nil {
		return err
	}
	tags, err := register.AgentTags(f.Tags)
	if err != nil {
		return fmt.Errorf("--tags: %w", err)
	}
	if f.IPAMTestTimers && (f.IPAMGrace < minLeakGrace || f.IPAMNodeTimeout > 0 && f.IPAMNodeTimeout < minNodeTimeout) {
		log.Warn("IPAM timers below their safe minimums (--ipam-test-timers): for test labs only",
			"ipam_leak_grace", f.IPAMGrace, "ipam_node_timeout", f.IPAMNodeTimeout)
	}
	// Socket activation (underlay-ipam.socket): systemd made the plugin's
	// socket before dockerd started; the agent serves on it, never removes it.
	ipamLn, err := activation.Take(f.IPAMSocket)
	if err != nil {
		log.Warn("socket activation", "err", err)
	}
	if ipamLn != nil {
		defer ipamLn.Close()
	}
	statusHosts, err := allowedHosts(f.AllowedHosts, f.Listen)
	if err != nil {
		return err // checked by checkAgentFlags
	}
	dockerAPI, err := dockerhost.NewClient()
	if err != nil {
		return err
	}
	defer dockerAPI.Close()
	f.Consul.Log = log // the token file's warnings
	consulAPI, err := consul.NewClient(f.Consul)
	if err != nil {
		return err
	}
	consulHTTP, err := consul.NewEndpoint(f.Consul)
	if err != nil {
		return err
	}
	cfg := agent.Config{
		Register: register.Config{
			Policy: register.Policy{
				Node: f.Node, Network: f.Network, HostIP: f.HostIP, Internal: f.Internal,
				Explicit: f.Explicit, SwarmNames: f.SwarmNames, SwarmNameAllow: swarmNameAllow,
				Tags: tags, Labels: labels,
			},
			Deregister:       register.DeregisterMode(f.Deregister),
			DeregisterOnExit: f.DeregisterOnExit,
			Resync:           f.Resync,
			Workers:          f.Workers,
		},
		Networks:    f.Networks,
		NetworkSync: f.NetworkSync,
		IPAM: agent.IPAMConfig{
			Enabled: f.IPAM, Socket: f.IPAMSocket, Listener: ipamLn, LeakGrace: f.IPAMGrace,
			NodeTimeout: f.IPAMNodeTimeout, Sweep: f.IPAMSweep, Spares: f.IPAMSpares,
		},
		TaskMetrics:    f.TaskMetrics,
		DoctorInterval: f.DoctorInterval,
		Listen:         f.Listen,
		StatusHosts:    statusHosts,
		Pprof:          f.PProf,
		StateDir:       f.StateDir,
		Version:        Version,
	}
	return agent.Run(ctx, cfg, agent.Clients{Docker: dockerAPI, Consul: consulAPI, ConsulHTTP: consulHTTP}, log)
}

// checkAgentFlags checks the agent's flags before it connects to anything:
// a zero interval would make a ticker panic once the node has claimed its
// identity, and a leak grace of zero would reclaim addresses Docker is
// still handing to containers. ipamChanged says --ipam was given.
func checkAgentFlags(f *agentFlags, ipamChanged bool) error {
	if _, err := httpserve.NewAllowedHosts(f.AllowedHosts...); err != nil {
		return fmt.Errorf("--allowed-host: %w", err)
	}
	// Empty is Docker's host name, which the agent checks once it has it.
	if f.Node != "" {
		if err := netspec.CheckNodeName(f.Node); err != nil {
			return fmt.Errorf("--node %q: %w", f.Node, err)
		}
	}
	if f.Listen != "" {
		if err := checkListenAddr(f.Listen); err != nil {
			return fmt.Errorf("--listen %q: %w", f.Listen, err)
		}
	}
	if f.HostIP != "" && net.ParseIP(f.HostIP) == nil {
		return fmt.Errorf("--host-ip %q: not an IP address", f.HostIP)
	}
	positive := []struct {
		flag string
		v    time.Duration
	}{
		{"resync", f.Resync}, {"network-sync", f.NetworkSync}, {"ipam-sweep", f.IPAMSweep}, {"ipam-leak-grace", f.IPAMGrace},
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
		{"resync", f.Resync}, {"network-sync", f.NetworkSync}, {"ipam-sweep", f.IPAMSweep},
		{"task-metrics", f.TaskMetrics}, {"doctor-interval", f.DoctorInterval},
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
		{"ipam-node-timeout", f.IPAMNodeTimeout}, {"task-metrics", f.TaskMetrics}, {"doctor-interval", f.DoctorInterval},
	}
	for _, d := range orOff {
		if d.v < 0 {
			return fmt.Errorf("--%s %s: want a positive duration, or 0 for off", d.flag, d.v)
		}
	}
	if err := checkIPAMTimers(f); err != nil {
		return err
	}
	if f.DoctorInterval > doctor.MaxEvery {
		return fmt.Errorf("--doctor-interval %s: at most %s (the dashboard reads no report's period as longer, so that a dead agent is seen)", f.DoctorInterval, doctor.MaxEvery)
	}
	switch register.DeregisterMode(f.Deregister) {
	case register.DeregisterAlways, register.DeregisterOnSuccess:
	default:
		return fmt.Errorf("--deregister %q: want always or on-success", f.Deregister)
	}
	// Every worker starts at once, whatever the containers.
	if f.Workers < 1 || f.Workers > maxWorkers {
		return fmt.Errorf("--workers %d: want 1 to %d", f.Workers, maxWorkers)
	}
	if f.IPAMSpares < 0 || f.IPAMSpares > 64 {
		return fmt.Errorf("--ipam-spares %d: want 0 to 64", f.IPAMSpares)
	}
	// dockerd finds the plugin by its absolute path in its plugin
	// directory; anything else fails every retry, or is never found.
	if s := f.IPAMSocket; f.IPAM && f.Networks && (!filepath.IsAbs(s) || strings.HasSuffix(s, "/")) {
		return fmt.Errorf("--ipam-socket %q: want the absolute path of the plugin's socket, such as %s", s, ipam.DefaultSocket)
	}
	if f.IPAM && !f.Networks && ipamChanged {
		return errors.New("--ipam needs --networks: the IPAM plugin serves the cluster networks the agent realises (drop --networks=false, or add --ipam=false)")
	}
	if f.PProf != "" {
		if err := profiling.CheckAddr(f.PProf); err != nil {
			return fmt.Errorf("--pprof: %w", err)
		}
	}
	return nil
}

// minPeriod is the shortest period of the agent's loops (--resync,
// --network-sync and the like) taken.
const minPeriod = 100 * time.Millisecond

// minLeakGrace and minNodeTimeout are the shortest --ipam-leak-grace and
// --ipam-node-timeout taken (agentflags says why).
const (
	minLeakGrace   = agentflags.MinLeakGrace
	minNodeTimeout = agentflags.MinNodeTimeout
)

// checkIPAMTimers refuses reclamation timers short enough to reclaim
// addresses still in use, unless --ipam-test-timers asks for them.
func checkIPAMTimers(f *agentFlags) error {
	if f.IPAMTestTimers {
		return nil
	}
	if f.IPAMGrace < minLeakGrace {
		return fmt.Errorf("--ipam-leak-grace %s: at least %s (an address is reclaimed after twice the grace, and a container Docker is still starting holds it unseen)", f.IPAMGrace, minLeakGrace)
	}
	if f.IPAMNodeTimeout > 0 && f.IPAMNodeTimeout < minNodeTimeout {
		return fmt.Errorf("--ipam-node-timeout %s: 0 (never) or at least %s (a node's addresses are reclaimed once it has been away that long, and an agent restart or a swarm election lasts seconds)", f.IPAMNodeTimeout, minNodeTimeout)
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
