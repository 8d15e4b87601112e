// Package agentflags defines the flags of `underlay agent`: internal/app
// parses them, and internal/lab reads their kinds to carry a lab's agent
// flags to a stack's agents as UNDERLAY_* variables (lab.AgentEnv), so
// that a flag added here is carried as the agent takes it.
package agentflags

import (
	"time"

	"github.com/spf13/pflag"

	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/register"
)

// DefaultStateDir is the agent's --state-dir, which `agent cleanup`
// reads its link owner from: the Debian unit's StateDirectory.
const DefaultStateDir = "/var/lib/underlay"

// MinLeakGrace and MinNodeTimeout are the shortest --ipam-leak-grace and
// --ipam-node-timeout taken (without --ipam-test-timers): a container's
// start holds its address before Docker shows it, seconds on a loaded
// host; a node's agent restart or a swarm election lasts seconds too.
const (
	MinLeakGrace   = 10 * time.Second
	MinNodeTimeout = time.Minute
)

// Flags are the values of the agent's flags.
type Flags struct {
	Consul           consul.Options
	Node             string
	Network          string
	HostIP           string
	AllowedHosts     []string
	Internal         bool
	Explicit         bool
	SwarmNames       bool
	SwarmNameAllow   []string
	Tags             []string
	Labels           []string
	Resync           time.Duration
	Deregister       string
	DeregisterOnExit bool
	Listen           string
	Workers          int
	Networks         bool
	NetworkSync      time.Duration
	IPAM             bool
	IPAMSocket       string
	IPAMGrace        time.Duration
	IPAMNodeTimeout  time.Duration
	IPAMSweep        time.Duration
	IPAMSpares       int
	IPAMTestTimers   bool
	TaskMetrics      time.Duration
	DoctorInterval   time.Duration
	PProf            string
	StateDir         string
}

// Consul defines the flags that reach Consul (every command that does
// has them) on fs, into o.
func Consul(fs *pflag.FlagSet, o *consul.Options) {
	fs.StringVar(&o.Addr, "consul-addr", "", "Consul agent HTTP address, https:// for TLS (default $CONSUL_HTTP_ADDR or 127.0.0.1:8500)")
	fs.StringVar(&o.Token, "consul-token", "", "Consul ACL token (default $CONSUL_HTTP_TOKEN)")
	fs.StringVar(&o.TokenFile, "consul-token-file", "", "file holding the Consul ACL token (default $CONSUL_HTTP_TOKEN_FILE)")
	fs.StringVar(&o.CAFile, "consul-cacert", "", "CA certificate to verify Consul's TLS certificate (default $CONSUL_CACERT)")
	fs.StringVar(&o.CertFile, "consul-client-cert", "", "client certificate for Consul TLS (default $CONSUL_CLIENT_CERT)")
	fs.StringVar(&o.KeyFile, "consul-client-key", "", "client key for Consul TLS (default $CONSUL_CLIENT_KEY)")
	fs.StringVar(&o.TLSServerName, "consul-tls-server-name", "", "server name to verify in Consul's certificate (default $CONSUL_TLS_SERVER_NAME)")
	fs.BoolVar(&o.ProxyFromEnv, "consul-proxy-from-env", false, "reach Consul through the proxy of $HTTP_PROXY, $HTTPS_PROXY and $NO_PROXY (default: no proxy, which would see the ACL token)")
}

// Define defines the agent's flags on fl, into f.
func Define(fl *pflag.FlagSet, f *Flags) {
	Consul(fl, &f.Consul)
	fl.StringVar(&f.Node, "node", "", "node name: ownership marker and service ID prefix, and how underlay ips and network inspect show the node (default: Docker's host name); in the cluster the node is known by its swarm node ID")
	fl.StringVar(&f.Network, "network", "", "preferred network when a container is on several (SERVICE_NETWORK overrides)")
	fl.StringVar(&f.HostIP, "host-ip", "", "address registered for published ports and host-network containers (default: the Consul agent's address)")
	fl.BoolVar(&f.Internal, "internal", false, "register container IPs and exposed ports on every user network, not only macvlan/ipvlan")
	fl.BoolVar(&f.Explicit, "explicit", false, "register only containers that set SERVICE_NAME or SERVICE_<port>_NAME")
	fl.BoolVar(&f.SwarmNames, "swarm-names", false, "register a Swarm task under its Swarm service's name only: a SERVICE_NAME or SERVICE_<port>_NAME naming another service is refused with a warning (other containers are not affected)")
	fl.StringSliceVar(&f.SwarmNameAllow, "swarm-name-allow", nil, "with --swarm-names, let a task of Swarm service SVC also register under NAME: `SVC=NAME` (repeatable, comma-separated; both must be names the agent registers under: not empty, no control character, no space at either end, no '.', '..' or empty path segment)")
	fl.StringSliceVar(&f.Tags, "tags", nil, "tags added to every service (comma-separated; each trimmed of spaces, as SERVICE_TAGS's; one with a control character, a bidi override, an invisible character, a space other than U+0020 or a line separator is refused, as are more than 64)")
	fl.StringArrayVar(&f.Labels, "label", nil, "only containers with this label KEY or KEY=VALUE (repeatable)")
	fl.DurationVar(&f.Resync, "resync", time.Minute, "interval of full resyncs")
	fl.StringVar(&f.Deregister, "deregister", string(register.DeregisterAlways), "when to deregister a stopped container: always or on-success (keep failed ones)")
	fl.BoolVar(&f.DeregisterOnExit, "deregister-on-exit", false, "deregister every service of this node when the agent exits")
	fl.StringVar(&f.Listen, "listen", "127.0.0.1:9465", "address for /healthz and /metrics (empty to disable)")
	fl.StringSliceVar(&f.AllowedHosts, "allowed-host", nil, "a host name clients reach /metrics by (repeatable, comma-separated; \"*\": any); besides IP addresses, localhost, this machine's name and --listen's, other Host headers are answered 421, so that a page of another site rebound to this address (DNS rebinding) cannot read it")
	fl.BoolVar(&f.Networks, "networks", true, "realise underlay cluster networks on this node (host shim, config-only network, range lease)")
	fl.DurationVar(&f.NetworkSync, "network-sync", 30*time.Second, "interval of cluster network syncs (drift repair)")
	fl.BoolVar(&f.IPAM, "ipam", true, "serve underlay's cluster IPAM to the local dockerd (Docker's remote IPAM plugin protocol)")
	fl.StringVar(&f.IPAMSocket, "ipam-socket", ipam.DefaultSocket, "Unix socket of the IPAM plugin, in Docker's plugin directory")
	fl.DurationVar(&f.IPAMGrace, "ipam-leak-grace", time.Minute, "an allocated address no local container holds is reclaimed after twice this (protects allocations in flight), never while a local container start may hold it; at least "+MinLeakGrace.String()+": shorter would reclaim the address of a container Docker is still starting")
	fl.DurationVar(&f.IPAMNodeTimeout, "ipam-node-timeout", 10*time.Minute, "the swarm leader reclaims the addresses of a node not ready for this long (0: never); at least "+MinNodeTimeout.String()+": shorter would reclaim a live node's addresses at a blip of its agent or of the swarm")
	// Test labs check reclamation in seconds, not minutes.
	fl.BoolVar(&f.IPAMTestTimers, "ipam-test-timers", false, "for test labs only: take --ipam-leak-grace and --ipam-node-timeout below their safe minimums")
	fl.Lookup("ipam-test-timers").Hidden = true
	fl.DurationVar(&f.IPAMSweep, "ipam-sweep", 15*time.Second, "interval of leaked-address sweeps")
	fl.IntVar(&f.IPAMSpares, "ipam-spares", 4, "addresses per cluster-IPAM pool this node claims ahead of demand, handed to Docker with no wait on Consul (given back when another node runs short; 0: none)")
	fl.DurationVar(&f.TaskMetrics, "task-metrics", 10*time.Second, "interval of Swarm task CPU/memory reports for the autoscaler's underlay:cpu and underlay:memory (0: off)")
	fl.DurationVar(&f.DoctorInterval, "doctor-interval", time.Minute, "interval of this node's doctor checks, published to Consul for the dashboard (0: off; at most 1h)")
	fl.StringVar(&f.StateDir, "state-dir", DefaultStateDir, "directory where the agent records this node's identity, so that at boot its IPAM plugin answers dockerd before dockerd answers it, and the addresses its IPAM freed lately, so that a restarted agent does not hand them out again at once, and the owner its links' marks name, and the VLAN parents it made, so that one dockerd makes again unmarked at boot is known for its own, and the parents it made promiscuous (empty: none)")
	fl.StringVar(&f.PProf, "pprof", "", "serve Go's profiler at http://ADDR/debug/pprof/ on this loopback ADDR, such as 127.0.0.1:6060 (empty: off)")
	fl.IntVar(&f.Workers, "workers", 32, "containers reconciled concurrently (Docker holds inspects of starting containers, so more than the start concurrency)")
}

// FlagSet is the agent's flags alone, for reading their names and kinds.
func FlagSet() *pflag.FlagSet {
	fl := pflag.NewFlagSet("agent", pflag.ContinueOnError)
	Define(fl, &Flags{})
	return fl
}
