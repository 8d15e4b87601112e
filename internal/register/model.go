package register

import (
	"fmt"
	"time"

	"github.com/underlay/underlay/internal/termtext"
)

// Meta keys written on every service the agent registers. They are
// underscore-separated because Consul rejects other punctuation in Meta keys.
const (
	// MetaNode marks a service as owned by the underlay agent of that node.
	MetaNode = "underlay_node"
	// MetaHash is a digest of the registration, so an unchanged service is
	// recognised without comparing Consul's normalised copy field by field.
	MetaHash = "underlay_hash"

	MetaContainerID   = "container_id"
	MetaContainerName = "container_name"
	MetaImage         = "image"
	MetaNetwork       = "network"
	MetaMAC           = "mac"
	MetaSwarmService  = "swarm_service_id"
	MetaSwarmTask     = "swarm_task_id"
	MetaSwarmSlot     = "swarm_slot"
	MetaSwarmNode     = "swarm_node_id"
)

// Docker labels set by Swarm on task containers.
const (
	labelSwarmServiceName = "com.docker.swarm.service.name"
	labelSwarmServiceID   = "com.docker.swarm.service.id"
	labelSwarmTaskID      = "com.docker.swarm.task.id"
	labelSwarmTaskName    = "com.docker.swarm.task.name"
	labelSwarmNodeID      = "com.docker.swarm.node.id"
)

// Container is what the agent needs to know of one Docker container.
type Container struct {
	ID      string
	Name    string // without Docker's leading slash
	Image   string
	Running bool
	// Created says Docker's state is "created": never started.
	Created  bool
	ExitCode int
	Labels   map[string]string
	Env      []string // KEY=VALUE, as Docker reports it
	// NetworkMode is Docker's HostConfig.NetworkMode ("host", "bridge", a network name...).
	NetworkMode string
	Exposed     []Port
	Published   []Binding
	Networks    []Endpoint
	// Health is Docker's HEALTHCHECK state: "" when the container has none,
	// else "starting", "healthy" or "unhealthy".
	Health       string
	HealthOutput string
	// HealthConfigured says the container has a HEALTHCHECK that Docker
	// will run, so its health is "starting" once it starts.
	HealthConfigured bool
	// PublishRequested says the container asks for ports published on the
	// host, bound only when it starts.
	PublishRequested bool
}

// Port is a container port and its protocol ("tcp", "udp" or "sctp").
type Port struct {
	Port  int
	Proto string
}

func (p Port) String() string { return fmt.Sprintf("%d/%s", p.Port, p.Proto) }

// Binding is a container port published on the host.
type Binding struct {
	Port
	HostIP   string
	HostPort int
}

// Endpoint is a container's attachment to one Docker network.
type Endpoint struct {
	Network   string
	NetworkID string
	Driver    string // "macvlan", "ipvlan", "bridge", "overlay"...
	IPv4      string
	IPv6      string
	MAC       string
}

// Service is one registration the agent wants in Consul.
type Service struct {
	ID              string
	Name            string
	Address         string
	Port            int
	Tags            []string
	Meta            map[string]string
	TaggedAddresses map[string]TaggedAddress
	Checks          []Check
	// Health mirrors the container's Docker HEALTHCHECK into a TTL check;
	// nil when the container has no HEALTHCHECK.
	Health *HealthMirror
}

// ContainerID is the container the service was made from.
func (s Service) ContainerID() string { return s.Meta[MetaContainerID] }

// TaggedAddress is an address Consul keeps beside the service's main one
// ("lan_ipv4", "lan_ipv6").
type TaggedAddress struct {
	Address string
	Port    int
}

// Check is a Consul check defined by a container's SERVICE_CHECK_* metadata.
type Check struct {
	ID                    string
	Name                  string
	HTTP                  string
	TCP                   string
	GRPC                  string
	GRPCUseTLS            bool
	TLSSkipVerify         bool
	TTL                   time.Duration
	Interval              time.Duration
	Timeout               time.Duration
	DeregisterCriticalFor time.Duration
	InitialStatus         string
}

// HealthMirror is the Consul TTL check that mirrors a Docker HEALTHCHECK.
type HealthMirror struct {
	CheckID string
	Status  string // Consul status: passing, warning or critical
	Output  string
}

// Registered is a service found in Consul that carries an agent's marker.
type Registered struct {
	ID          string
	ContainerID string
	Hash        string
	// HealthStatus is the current status of the service's HEALTHCHECK
	// mirror, "" when it has none.
	HealthStatus string
}

// Warning is a problem with a container's metadata. The container is still
// registered without the bad part, or skipped when nothing sensible remains.
type Warning struct {
	Container string
	Key       string
	Value     string
	Problem   string
}

// String prints the container's name and the label's key as they are
// when Graphic, as Docker's names and most keys are, else quoted
// (termtext.Cell): whoever runs a container chooses both.
func (w Warning) String() string {
	c := termtext.Cell
	if w.Key == "" {
		return fmt.Sprintf("container %s: %s", c(w.Container), w.Problem)
	}
	return fmt.Sprintf("container %s: %s=%s: %s", c(w.Container), c(w.Key), termtext.Q(w.Value), w.Problem)
}
