package soak

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// Fault is a kind of fault the soak injects.
type Fault string

// The faults. Each names what it does to one node (Node of an Injection)
// or to the cluster.
const (
	// AgentKill kills a node's underlay agent with SIGKILL; the lab
	// restarts it.
	AgentKill Fault = "agent_kill"
	// DockerdRestart kills a node's dockerd with SIGKILL and starts it again.
	DockerdRestart Fault = "dockerd_restart"
	// ConsulClientRestart stops a node's Consul client agent, then starts it.
	ConsulClientRestart Fault = "consul_client_restart"
	// NodeFreeze stops every process of a node (SIGSTOP) for longer than
	// the IPAM node timeout, then thaws it.
	NodeFreeze Fault = "node_freeze"
	// Partition takes a node's management link down, then up.
	Partition Fault = "partition"
	// ConsulServerRestart restarts the Consul server.
	ConsulServerRestart Fault = "consul_server_restart"
	// ControlLeaderKill kills the control instance that leads.
	ControlLeaderKill Fault = "control_leader_kill"
	// StrayRelease sends an IPAM ReleaseAddress for another node's address
	// to a node's plugin.
	StrayRelease Fault = "stray_release"
	// GarbageKey writes an undecodable document under the IPAM prefix,
	// and a decodable one: an address of a free block recorded for a node
	// that does not exist, which the leader must reclaim.
	GarbageKey Fault = "garbage_key"
)

// Faults are every fault, in the order reports list them.
var Faults = []Fault{AgentKill, DockerdRestart, ConsulClientRestart, NodeFreeze, Partition,
	ConsulServerRestart, ControlLeaderKill, StrayRelease, GarbageKey}

// ParseFaults reads a comma-separated list of faults ("all" for every one).
func ParseFaults(s string) ([]Fault, error) {
	if s == "" || s == "all" {
		return slices.Clone(Faults), nil
	}
	var out []Fault
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if !slices.Contains(Faults, Fault(f)) {
			return nil, fmt.Errorf("fault %q: want one of %s, or all", f, joinFaults(Faults))
		}
		if !slices.Contains(out, Fault(f)) {
			out = append(out, Fault(f))
		}
	}
	return out, nil
}

func joinFaults(fs []Fault) string {
	s := make([]string, len(fs))
	for i, f := range fs {
		s[i] = string(f)
	}
	return strings.Join(s, ", ")
}

// Injection is one fault the schedule chose.
type Injection struct {
	Seq   int // 1-based
	Fault Fault
	// Node is the index (0-based) of the node it hits; for cluster-wide
	// faults, the node it is injected through.
	Node int
	// Other is a second node: the owner of the address a StrayRelease
	// releases (the release arrives at Node); -1 otherwise.
	Other int
	// Hold is how long the fault lasts before it is cleared (0 for one-shot
	// faults: a kill, a stray request, a write).
	Hold time.Duration
	// Gap is the quiet time after the previous fault converged.
	Gap time.Duration
}

func (i Injection) String() string {
	s := fmt.Sprintf("#%d %s on node%d", i.Seq, i.Fault, i.Node+1)
	if i.Other >= 0 {
		s += fmt.Sprintf(" (address of node%d)", i.Other+1)
	}
	if i.Hold > 0 {
		s += fmt.Sprintf(" for %s", i.Hold)
	}
	return s
}

// Scheduler picks faults from its own random stream, so the sequence of
// faults depends on the seed alone, whatever the workload does. The first
// len(faults) injections are every fault once, in a seeded order, so that
// a short run covers every kind; then each is drawn at random.
type Scheduler struct {
	rng    *rand.Rand
	faults []Fault
	// round is the seeded order of the first injections.
	round []Fault
	nodes int
	// NodeTimeout is the IPAM node timeout: a freeze lasts longer.
	nodeTimeout time.Duration
	// gapMin, gapMax bound the quiet time between faults.
	gapMin, gapMax time.Duration
	seq            int
}

// NewScheduler schedules faults among faults on a lab of nodes nodes (at
// least 2: a stray release needs another node).
func NewScheduler(seed uint64, faults []Fault, nodes int, nodeTimeout, gapMin, gapMax time.Duration) (*Scheduler, error) {
	if len(faults) == 0 {
		return nil, fmt.Errorf("no fault to inject")
	}
	if nodes < 2 {
		return nil, fmt.Errorf("%d nodes: the soak needs at least 2", nodes)
	}
	if gapMax < gapMin {
		return nil, fmt.Errorf("gap %s..%s: the maximum is below the minimum", gapMin, gapMax)
	}
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	round := slices.Clone(faults)
	rng.Shuffle(len(round), func(i, j int) { round[i], round[j] = round[j], round[i] })
	return &Scheduler{
		rng: rng, faults: faults, round: round, nodes: nodes, nodeTimeout: nodeTimeout, gapMin: gapMin, gapMax: gapMax,
	}, nil
}

// Next returns the next fault to inject.
func (s *Scheduler) Next() Injection {
	s.seq++
	f := s.faults[s.rng.IntN(len(s.faults))]
	if s.seq <= len(s.round) {
		f = s.round[s.seq-1]
	}
	in := Injection{Seq: s.seq, Fault: f, Node: s.rng.IntN(s.nodes), Other: -1}
	in.Gap = s.gapMin + time.Duration(s.rng.Int64N(int64(s.gapMax-s.gapMin)+1))
	switch in.Fault {
	case NodeFreeze:
		// Past the node timeout, so the swarm leader's reclaim is tempted.
		in.Hold = s.nodeTimeout + s.nodeTimeout/2 + time.Duration(s.rng.Int64N(int64(time.Second)*5))
	case ConsulClientRestart, Partition:
		in.Hold = 2*time.Second + time.Duration(s.rng.Int64N(int64(8*time.Second)))
	case StrayRelease:
		in.Other = (in.Node + 1 + s.rng.IntN(s.nodes-1)) % s.nodes
	}
	return in
}
