package dashboard

import (
	"time"

	"github.com/underlay/underlay/internal/scale"
)

// Snapshot is the cluster as GET /v1/cluster returns it; README.md
// documents every field.
type Snapshot struct {
	// Version increases whenever the content changes (not with time alone).
	Version uint64 `json:"version"`
	// Instance names the control process that made the snapshot: versions
	// count anew when it changes (a restart).
	Instance    string      `json:"instance"`
	GeneratedAt time.Time   `json:"generated_at"`
	Control     ControlInfo `json:"control"`
	// Sources lists the sources that could not be read; the rest of the
	// snapshot then shows what they returned last.
	Sources []SourceError `json:"sources"`
	// Problems are the warnings (AgentInput.Warnings) about underlay's
	// records of nodes the page has no column for, which no node's doctor
	// problems can show, by node name, the failed doctor/report checks
	// of refused doctor reports no node shows (under a key naming no
	// node), and the agents' refused reports of unregistered tasks
	// (unregistered/report).
	Problems []DoctorResult `json:"problems"`
	// ProblemsOmitted counts the problems past MaxProblems, not listed.
	ProblemsOmitted int       `json:"problems_omitted,omitempty"`
	Summary         Summary   `json:"summary"`
	Nodes           []Node    `json:"nodes"`
	Services        []Service `json:"services"`
	Networks        []Network `json:"networks"`
	// Unplaced are tasks no node runs (pending, or on a node the swarm no
	// longer lists), and cards known by a node name only that several
	// swarm nodes have (with a problem naming them).
	Unplaced []Task `json:"unplaced"`
	// UnplacedOmitted counts the cards of no node not listed (past
	// MaxNodeCards, or MaxCards in all); ServicesOmitted the services
	// past MaxServices.
	UnplacedOmitted int `json:"unplaced_omitted,omitempty"`
	ServicesOmitted int `json:"services_omitted,omitempty"`
}

// SourceError is a source that could not be read.
type SourceError struct {
	Source string `json:"source"`
	Error  string `json:"error"`
	// Since is when its reads began to fail (the first of those failing
	// since).
	Since time.Time `json:"since,omitzero"`
}

// Summary counts what needs attention.
type Summary struct {
	Nodes    int `json:"nodes"`
	Services int `json:"services"`
	Tasks    int `json:"tasks"`
	Running  int `json:"running"`
	// Passing counts running tasks whose Consul checks all pass.
	Passing int `json:"passing"`
	// Mismatches counts cards where Swarm and Consul disagree.
	Mismatches int `json:"mismatches"`
	// Duplicates counts addresses held more than once.
	Duplicates int `json:"duplicates"`
	// DuplicateContainers counts container IDs the inventories of several
	// nodes list (inventory.Check marks their cards): a container runs on
	// one node, so the others' inventories are stale or forged.
	DuplicateContainers int `json:"duplicate_containers"`
	// DoctorFailures counts failed doctor checks over every node.
	DoctorFailures int `json:"doctor_failures"`
}

// Node is one swarm node, a column of the page.
type Node struct {
	ID            string `json:"id"`
	Name          string `json:"name"`
	Role          string `json:"role"`
	Leader        bool   `json:"leader"`
	State         string `json:"state"`
	Availability  string `json:"availability"`
	Addr          string `json:"addr,omitempty"`
	DockerVersion string `json:"docker_version"`
	Message       string `json:"message,omitempty"`
	Agent         Agent  `json:"agent"`
	// Doctor is nil when the node's agent published no report.
	Doctor *Doctor `json:"doctor"`
	Tasks  []Task  `json:"tasks"`
	// TasksOmitted counts the node's cards not listed: past MaxNodeCards,
	// or its share of MaxCards (those most in need of attention are
	// listed).
	TasksOmitted int `json:"tasks_omitted,omitempty"`
}

// Agent states.
const (
	AgentUp     = "up"
	AgentStale  = "stale"
	AgentAbsent = "absent"
	// AgentUnknown is the state of every agent while the dashboard cannot
	// read their reports (underlay's KV), and of one not heard since, until
	// its period has passed since the reads came back: silent or not, it
	// cannot tell.
	AgentUnknown = "unknown"
)

// Agent is the health of a node's underlay agent, from its reports.
type Agent struct {
	// State is up (reported lately), stale (it stopped reporting), absent
	// (it never reported) or unknown (AgentUnknown).
	State string `json:"state"`
	// LastState is, when State is unknown, the state the agent had when
	// the dashboard's reads of the reports began to fail.
	LastState string    `json:"last_state,omitempty"`
	LastSeen  time.Time `json:"last_seen,omitzero"`
	Version   string    `json:"version,omitempty"`
	// NameOnly is true when the agent is known by the node's name only
	// (its facts name no swarm node listed: an older agent's, or a former
	// identity's) and other swarm nodes have that name: it may be
	// another node's agent.
	NameOnly bool `json:"name_only,omitempty"`
}

// Doctor is a node's doctor report, summed up.
type Doctor struct {
	At   time.Time `json:"at"`
	OK   int       `json:"ok"`
	Warn int       `json:"warn"`
	Fail int       `json:"fail"`
	// Problems are the failed checks, then the warnings, with their fixes:
	// the first MaxProblems, their texts cut at MaxEventMessage.
	Problems []DoctorResult `json:"problems"`
	// ProblemsOmitted counts the problems not listed: past MaxProblems,
	// and those the agent left out of its report (too large for one
	// Consul key).
	ProblemsOmitted int `json:"problems_omitted,omitempty"`
	// SharedBy is set when several swarm nodes have the node's name: their
	// IDs. The report is published under the name only, so it may be any
	// of theirs: it is shown on each, counted once, and is no heartbeat
	// of their agents.
	SharedBy []string `json:"shared_by,omitempty"`
}

// Health values of a task, from Consul's checks.
const (
	HealthPassing       = "passing"
	HealthWarning       = "warning"
	HealthCritical      = "critical"
	HealthNotRegistered = "not registered"
)

// Kinds of cards.
const (
	// KindTask is a swarm task.
	KindTask = "task"
	// KindConsulOnly is an instance Consul lists for a task Swarm does
	// not run.
	KindConsulOnly = "consul-only"
	// KindContainer is a plain container (no swarm task) the agent
	// registered.
	KindContainer = "container"
)

// Task is one card: a swarm task with its addresses and Consul health.
type Task struct {
	Kind      string `json:"kind"`
	ID        string `json:"id"`
	Service   string `json:"service"`
	ServiceID string `json:"service_id,omitempty"`
	Slot      int    `json:"slot,omitempty"`
	Node      string `json:"node"`
	// NodeID is the swarm node ID of a task's node: two nodes may have
	// one name.
	NodeID string `json:"node_id,omitempty"`
	Image  string `json:"image,omitempty"`
	// State is Swarm's (running, failed, …); for a Consul-only card, the
	// task's last state known, or "unknown".
	State        string    `json:"state"`
	DesiredState string    `json:"desired_state,omitempty"`
	Message      string    `json:"message,omitempty"`
	Since        time.Time `json:"since,omitzero"`
	Container    string    `json:"container,omitempty"`
	ContainerID  string    `json:"container_id,omitempty"`
	Addresses    []Address `json:"addresses"`
	// Health is passing, warning, critical or "not registered".
	Health   string `json:"health"`
	ConsulID string `json:"consul_id,omitempty"`
	// Unregistered says why the task's node's agent leaves it out of
	// Consul on purpose (no port, SERVICE_IGNORE…), as it reported
	// (unregistered.Report): a running task Consul does not list is then
	// no mismatch. Empty otherwise.
	Unregistered string `json:"unregistered,omitempty"`
	// Checks are the instance's checks, the first MaxCardChecks (those
	// that do not pass first, when cut), each name and output cut at
	// MaxEventMessage; ChecksOmitted counts the others.
	Checks        []Check `json:"checks"`
	ChecksOmitted int     `json:"checks_omitted,omitempty"`
	// Mismatch is true when Swarm and Consul disagree about the task;
	// Duplicate when one of its addresses is held elsewhere too.
	Mismatch  bool `json:"mismatch"`
	Duplicate bool `json:"duplicate"`
	// Problems say what is wrong, one sentence each.
	Problems []string `json:"problems"`
}

// Address is one of a task's addresses.
type Address struct {
	Network string `json:"network"`
	IP      string `json:"ip"`
	MAC     string `json:"mac,omitempty"`
}

// Service is one swarm service.
type Service struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Mode  string `json:"mode"`
	Image string `json:"image,omitempty"`
	// Desired is the replica count asked for (replicated services); for a
	// global service, the number of tasks meant to run.
	Desired int `json:"desired"`
	Running int `json:"running"`
	// Passing counts running tasks whose Consul checks all pass.
	Passing    int      `json:"passing"`
	Networks   []string `json:"networks"`
	Autoscaled bool     `json:"autoscaled"`
	// Policy is the scaling policy of an autoscaled service.
	Policy      *scale.Policy `json:"policy,omitempty"`
	PolicyError string        `json:"policy_error,omitempty"`
	// Replicas is the replica count over time: the server's samples and
	// the applied decisions of the history, oldest first.
	Replicas []ReplicaPoint `json:"replicas"`
	// Metrics are the metric values the decisions were made on.
	Metrics []MetricPoint `json:"metrics"`
	// Decisions are the latest decisions, newest first.
	Decisions []scale.Record `json:"decisions"`
	// BadRecords are the records of its scaling history that cannot be
	// read, left out of Decisions and the charts, each with its fix.
	BadRecords []scale.BadRecord `json:"bad_records,omitempty"`
}

// ReplicaPoint is a service's replicas at one moment; Running is -1 when
// unknown (a point from the history, before this server's samples).
type ReplicaPoint struct {
	Time    time.Time `json:"time"`
	Desired int       `json:"desired"`
	Running int       `json:"running"`
}

// MetricPoint is one metric value a decision was made on.
type MetricPoint struct {
	Time   time.Time `json:"time"`
	Name   string    `json:"name"`
	Value  float64   `json:"value"`
	Target float64   `json:"target"`
}

// Network is one underlay network.
type Network struct {
	Name       string            `json:"name"`
	Subnet     string            `json:"subnet"`
	Gateway    string            `json:"gateway"`
	Parent     string            `json:"parent"`
	IPAM       string            `json:"ipam"`
	IPRange    string            `json:"ip_range,omitempty"`
	Aux        map[string]string `json:"aux,omitempty"`
	IPv6Subnet string            `json:"ipv6_subnet,omitempty"`
	Deleting   bool              `json:"deleting,omitempty"`
	// Refused says why every agent refuses the spec (netspec.CheckStored:
	// invalid, or overlapping another network's); its pools are then not
	// laid out, as `underlay ips` lists none of them.
	Refused string `json:"refused,omitempty"`
	// Nodes are the nodes' reports on the network.
	Nodes []NetworkNode `json:"nodes"`
	Pool  Pool          `json:"pool"`
	// IPv6Pool is the IPv6 subnet's pool, on a network with one (nil
	// without), as `underlay ips` lists it: too large for a map, it has
	// no Size, Cell nor free count (see Pool).
	IPv6Pool *Pool `json:"ipv6_pool,omitempty"`
	// Outside are the addresses containers hold by their nodes'
	// inventories that are in none of the network's subnets (another
	// subnet, or a family it has none of): Docker gives no such address,
	// so the inventory is stale or forged (inventory.StateOutside). No
	// map holds them.
	Outside []PoolAddress `json:"outside,omitempty"`
	// OutsideOmitted counts those past MaxPool6Addresses, not listed.
	OutsideOmitted int `json:"outside_omitted,omitempty"`
}

// NetworkNode is a node's report on a network.
type NetworkNode struct {
	// Node names the node; with its swarm node ID, "n1 (swarm node ID)",
	// when another node has its name.
	Node string `json:"node"`
	// ID is the node's identity (its swarm node ID); empty on an older
	// agent's report, which names none.
	ID    string `json:"id,omitempty"`
	State string `json:"state"`
	Range string `json:"range,omitempty"`
	// IPv6Range is the node's IPv6 /80 (netspec.IPv6Ranges): set for a
	// per-node network with an IPv6 subnet, on a node that holds a range.
	IPv6Range string `json:"ipv6_range,omitempty"`
	Shim      string `json:"shim,omitempty"`
	// Shim6 is the host shim's IPv6 address, on a network with an IPv6
	// subnet (an older agent reports none).
	Shim6 string `json:"shim6,omitempty"`
	Error string `json:"error,omitempty"`
}

// Address states of the subnet map.
const (
	StateFree      = "free"
	StateTask      = "task"
	StateSpare     = "spare"
	StateReserved  = "reserved"
	StateLeaked    = "leaked"
	StateDuplicate = "duplicate"
	// StateOutside is an address of the subnet outside the IP range, never
	// handed out.
	StateOutside = "outside"
)

// Pool is a network's IPv4 subnet, address by address; or its IPv6
// subnet (Network.IPv6Pool), whose 2^(128-Bits) addresses neither a map
// nor a JSON number holds: Size and Cell are then 0, and Counts counts
// the addresses listed only (no free or outside), the rest being free.
type Pool struct {
	// First is the subnet's first address; Size its number of addresses
	// (IPv4), Bits its prefix length.
	First string `json:"first"`
	Size  int    `json:"size"`
	Bits  int    `json:"bits"`
	// Range is the part addresses are handed out from (the IP range, or
	// the subnet).
	Range string `json:"range"`
	// Cell is how many addresses one cell of the map stands for: 1 up to a
	// /24, more for larger subnets so that the map has at most MaxCells.
	Cell int `json:"cell"`
	// Counts are the addresses in each state; they add up to Size (IPv4).
	Counts map[string]int `json:"counts"`
	// Addresses are every address not free, in address order; past
	// MaxPoolAddresses (IPv4) or MaxPool6Addresses (IPv6), those of the
	// states most in need of attention first (duplicate, leaked, task,
	// spare, reserved), then in address order.
	Addresses []PoolAddress `json:"addresses"`
	// Omitted counts the addresses not free that are not listed.
	Omitted int `json:"omitted,omitempty"`
	// Regions are the per-node ranges or cluster IPAM blocks, with their
	// node.
	Regions []Region `json:"regions"`
}

// PoolAddress is one address of a pool that is not free.
type PoolAddress struct {
	IP    string `json:"ip"`
	State string `json:"state"`
	// Holder names what holds it, for the map's hover.
	Holder string `json:"holder"`
	Node   string `json:"node,omitempty"`
	// NodeID is the identity of the node of a host shim or allocation
	// (its swarm node ID), when known.
	NodeID string `json:"node_id,omitempty"`
	// Task is the swarm task holding it, when one does.
	Task  string    `json:"task,omitempty"`
	MAC   string    `json:"mac,omitempty"`
	Since time.Time `json:"since,omitzero"`
}

// Region is a per-node range or a cluster IPAM block.
type Region struct {
	Prefix string `json:"prefix"`
	// Node names the node holding it; with its swarm node ID, "n1 (swarm
	// node ID)", when another node has its name.
	Node string `json:"node"`
	// Kind is "range" (per-node IPAM) or "block" (cluster IPAM).
	Kind string `json:"kind"`
	// NodeID is the holder's identity (its swarm node ID), when known (an
	// older agent's range is held by its name).
	NodeID string `json:"node_id,omitempty"`
}

// Event is one line of the page's events list.
type Event struct {
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
	// Kind is task, registration, health, allocation, scale, doctor, node
	// or source.
	Kind    string `json:"kind"`
	Node    string `json:"node,omitempty"`
	Service string `json:"service,omitempty"`
	IP      string `json:"ip,omitempty"`
	Message string `json:"message"`
}
