package dashboard

import (
	"context"
	"net/netip"
	"time"

	"github.com/underlay/underlay/internal/inventory"
	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/scale"
	"github.com/underlay/underlay/internal/unregistered"
)

// Swarm is what the dashboard reads of the swarm, through a manager's
// dockerd.
type Swarm interface {
	Nodes(ctx context.Context) ([]SwarmNode, error)
	Services(ctx context.Context) ([]SwarmService, error)
	Tasks(ctx context.Context) ([]SwarmTask, error)
	// Changes fires after service, node or container events; it reconnects
	// by itself and ends with ctx.
	Changes(ctx context.Context) <-chan struct{}
}

// Catalog is what the dashboard reads of Consul's catalog.
type Catalog interface {
	// Instances lists every service instance with its checks.
	Instances(ctx context.Context) ([]Instance, error)
	// Changes fires when a registration or a check changes.
	Changes(ctx context.Context) <-chan struct{}
}

// Store is underlay's own state in Consul KV.
type Store interface {
	// Networks lists the cluster networks with their ranges, node reports
	// and cluster IPAM blocks.
	Networks(ctx context.Context) ([]NetworkInput, error)
	// Nodes lists the facts the nodes' agents published, and apart the
	// documents filed under another identity than the one they name
	// (netspec.Store.ReadNodes). A refresh reads them once and hands them
	// to Inventory and Agents: two reads could disagree (a node
	// publishing in between), and would load Consul twice.
	Nodes(ctx context.Context) ([]netspec.NodeFacts, []netspec.MisfiledFacts, error)
	// Inventory lists every container address the agents published,
	// checked against facts.
	Inventory(ctx context.Context, facts []netspec.NodeFacts) ([]inventory.Entry, error)
	// Agents lists what each node's agent published about its node: its
	// newest facts, and its doctor report, with the nodes/facts warning of
	// each older facts document naming the node too, and of each misfiled
	// document, among the warnings of the node it is listed as.
	Agents(ctx context.Context, facts []netspec.NodeFacts, misfiled []netspec.MisfiledFacts) ([]AgentInput, error)
	// Unregistered lists the nodes' reports of the Swarm tasks their
	// agents leave out of Consul on purpose, and apart those readers
	// refuse (unregistered.Load).
	Unregistered(ctx context.Context) ([]unregistered.Report, []unregistered.BadReport, error)
	// Changes fires when any of the above changes.
	Changes(ctx context.Context) <-chan struct{}
}

// Scaling is the autoscaler of this control instance.
type Scaling interface {
	// Services lists the autoscaled services with their policies.
	Services() []scale.ServiceInfo
	// History lists a service's decisions, oldest first, and the records
	// of its history that cannot be read.
	History(ctx context.Context, service string) ([]scale.Record, []scale.BadRecord, error)
	// Control says who decides.
	Control(ctx context.Context) ControlInfo
}

// Sources are everything a snapshot is built from; Scaling may be nil
// (no autoscaler).
type Sources struct {
	Swarm   Swarm
	Catalog Catalog
	Store   Store
	Scaling Scaling
}

// SwarmNode is a swarm node as a manager lists it.
type SwarmNode struct {
	ID       string
	Hostname string
	// Role is "manager" or "worker".
	Role   string
	Leader bool
	// State is Swarm's: ready, down, unknown or disconnected.
	State string
	// Availability is active, pause or drain.
	Availability  string
	Addr          string
	EngineVersion string
	Message       string
}

// SwarmService is a swarm service.
type SwarmService struct {
	ID    string
	Name  string
	Image string
	// Global is true for a global-mode service; Replicas is then 0.
	Global   bool
	Replicas int
	Labels   map[string]string
}

// SwarmTask is a swarm task.
type SwarmTask struct {
	ID        string
	ServiceID string
	// NodeID is empty while the task is not assigned.
	NodeID       string
	Slot         int
	Image        string
	DesiredState string
	// State is the task's current state (new … running, complete, failed,
	// shutdown, rejected, orphaned, remove).
	State   string
	Message string
	Err     string
	// ContainerID is set once a container was made.
	ContainerID string
	// Since is when the task reached its current state.
	Since time.Time
}

// Instance is one service instance of Consul's catalog.
type Instance struct {
	// Node is the Consul node name (the agent's, its host name in a lab).
	Node    string
	ID      string
	Service string
	Address string
	Port    int
	Meta    map[string]string
	Checks  []Check
}

// Check is one health check of an instance.
type Check struct {
	Name   string `json:"name"`
	Status string `json:"status"`
	Output string `json:"output,omitempty"`
}

// NetworkInput is one cluster network as stored in Consul KV.
type NetworkInput struct {
	Spec netspec.Spec
	// Refused says why every agent refuses Spec (netspec.Listing.Refused);
	// empty when they take it.
	Refused string
	// Leases are the per-node ranges, by holder (per-node IPAM).
	Leases map[netip.Prefix]string
	// States are the nodes' reports.
	States []netspec.NodeState
	// Blocks are the IPv4 pool's claimed blocks (cluster IPAM).
	Blocks map[netip.Prefix]ipam.BlockDoc
	// Kept are the IPv4 pool's addresses that their node's agent keeps for
	// a container start under way there (cluster IPAM).
	Kept ipam.KeptAddrs
}

// AgentInput is what one node's agent published about its node.
type AgentInput struct {
	Node string
	// ID is the swarm node ID its facts name (empty: an older agent's,
	// naming none): two hosts' agents may use one node name, each then
	// its own AgentInput, with its own doctor report (DoctorByID; else
	// the name's) and the name's warnings.
	ID string
	// FactsAt is when the agent last published its node facts (the newest
	// of the node's, when several identities' name it); zero when it never
	// did.
	FactsAt time.Time
	// Doctor is the agent's latest doctor report; nil when none.
	Doctor *DoctorReport
	// DoctorByID says Doctor was published under ID, so it is this
	// agent's own even when other nodes have its name; otherwise an
	// older agent published it under the name, which any of them may
	// have written.
	DoctorByID bool
	// NoFacts says no facts name ID: the AgentInput is a doctor report
	// under ID (DoctorByID) alone. Under an ID the swarm does not list,
	// nobody has it (a node that left the swarm, or a forged report): no
	// node's agent, it is among the snapshot's problems.
	NoFacts bool
	// Warnings are the dashboard's own findings on the node's records
	// (a misfiled facts document listed as the node's, older facts of
	// another identity naming the node too), in the doctor's
	// words: among the node's doctor problems, or among the snapshot's
	// when the page has no column for the node.
	Warnings []DoctorResult
	// HeardAt is when the dashboard's own clock first saw the agent's
	// latest report (the server sets it, hearAgents); zero when it did not
	// watch, and the reports' stamps are judged instead.
	HeardAt time.Time
}

// DoctorReport is a node's doctor results (doctor.Report).
type DoctorReport struct {
	// Key is where it was read in Consul KV, for the problems naming it.
	Key     string
	At      time.Time
	Every   time.Duration
	Version string
	Results []DoctorResult
	// OmittedOK, OmittedWarn and OmittedFail count the results the agent
	// left out of the report to keep it within one Consul key
	// (doctor.Report.Omitted).
	OmittedOK, OmittedWarn, OmittedFail int
}

// DoctorResult is one check's result (doctor.Result).
type DoctorResult struct {
	Check   string `json:"check"`
	Status  string `json:"status"`
	Message string `json:"message"`
	Fix     string `json:"fix,omitempty"`
	// Stands counts, by status, the results of its check this row stands
	// for, not shown (doctor.Result.Omitted): the node's counts are
	// theirs, not this row's. Nil on a row that stands for itself.
	Stands *DoctorCounts `json:"-"`
}

// DoctorCounts counts doctor results by status.
type DoctorCounts struct {
	OK, Warn, Fail int
}

// ControlInfo is what the control instance serving the page knows of the
// autoscaler's leadership.
type ControlInfo struct {
	// Leading is true when this instance decides.
	Leading bool `json:"leading"`
	// Leader is the leader's advertised address, when known.
	Leader string `json:"leader,omitempty"`
	DryRun bool   `json:"dry_run,omitempty"`
}

// ReplicaSample is a service's replicas as seen at one moment; the server
// keeps one whenever they change, for the services' charts.
type ReplicaSample struct {
	Time    time.Time
	Desired int
	Running int
}

// Inputs is everything Build needs: what the sources returned, the server's
// samples and the clock.
type Inputs struct {
	Now       time.Time
	Nodes     []SwarmNode
	Services  []SwarmService
	Tasks     []SwarmTask
	Instances []Instance
	Networks  []NetworkInput
	Inventory []inventory.Entry
	// NodeNames maps node identities (swarm node IDs) to the names their
	// node facts give (inventory.NodeNames), which name the nodes of pool
	// allocations, ranges and blocks, as in `underlay ips`.
	NodeNames map[string]string
	Agents    []AgentInput
	// Unregistered are the nodes' reports of the Swarm tasks their agents
	// leave out of Consul on purpose, with why: such a running task that
	// Consul does not list is no mismatch.
	Unregistered []unregistered.Report
	// BadUnregistered are the reports refused (their tasks are shown as
	// without a report): among the snapshot's problems, with their fix.
	BadUnregistered []unregistered.BadReport
	Autoscaled      []scale.ServiceInfo
	// History holds each autoscaled service's decisions, oldest first.
	History map[string][]scale.Record
	// BadHistory holds, by service, the history records that cannot be
	// read (left out of History).
	BadHistory map[string][]scale.BadRecord
	// Samples holds each service's replica samples, oldest first.
	Samples map[string][]ReplicaSample
	Control ControlInfo
	// Errors says which sources could not be read, by source (docker,
	// consul, kv, history), with the error; what they returned last is
	// used meanwhile.
	Errors map[string]string
	// FailingSince holds, by source in Errors, when its reads began to
	// fail; nil or a source missing: unknown.
	FailingSince map[string]time.Time
	// AgentsUnread is the latest time the agents' reports (the kv source)
	// could not be read: while it lasts, and for an agent's period after,
	// silence is no sign of a dead agent (it could not publish either,
	// when Consul was down). Zero when they always could.
	AgentsUnread Outage
}

// Outage is a time a source could not be read: From its first failed
// read, To its first good one after; To is zero while it lasts.
type Outage struct {
	From, To time.Time
}
