package adapter

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/underlay/underlay/internal/dashboard"
	"github.com/underlay/underlay/internal/doctor"
	"github.com/underlay/underlay/internal/inventory"
	"github.com/underlay/underlay/internal/ipam"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/shellword"
	"github.com/underlay/underlay/internal/unregistered"
)

// KV is what Store reads of Consul KV (consul.KV): through netspec, ipam,
// inventory and doctor, and blocking queries on their prefixes.
type KV interface {
	inventory.PoolKV
	// Watch fires whenever a key under prefix changes; it ends with ctx.
	Watch(ctx context.Context, prefix string) <-chan struct{}
}

// Store reads underlay's state in Consul KV for the dashboard, through the
// packages that write it.
type Store struct {
	kv   KV
	nets *netspec.Store
	// watched are the KV prefixes whose changes are signalled.
	watched []string
}

// NewStore reads through kv; historyPrefix is the autoscaler's decision
// history, watched too.
func NewStore(kv KV, historyPrefix string) *Store {
	return &Store{kv: kv, nets: netspec.NewStore(kv), watched: []string{
		netspec.KVPrefix, netspec.NodesKVPrefix, inventory.KVPrefix, ipam.KVPrefix, doctor.KVPrefix, unregistered.KVPrefix, historyPrefix,
	}}
}

// Networks implements dashboard.Store.
func (s *Store) Networks(ctx context.Context) ([]dashboard.NetworkInput, error) {
	l, err := s.nets.ReadListing(ctx)
	if err != nil {
		return nil, err
	}
	refused := l.Refused()
	out := make([]dashboard.NetworkInput, 0, len(l.Specs))
	for _, spec := range l.Specs {
		n := dashboard.NetworkInput{Spec: spec}
		if n.States, err = s.nets.NodeStates(ctx, spec.Name); err != nil {
			return nil, err
		}
		if err := refused[spec.Name]; err != nil {
			// No pool: the IPAM plugin serves none of a refused spec's,
			// and `underlay ips` lists none.
			n.Refused = strings.ReplaceAll(err.Error(), "\n", "; ")
			out = append(out, n)
			continue
		}
		switch spec.IPAM {
		case netspec.Cluster:
			// Both families' pools, as `underlay ips` lists them.
			n.Blocks, n.Kept = map[netip.Prefix]ipam.BlockDoc{}, ipam.KeptAddrs{}
			for _, v6 := range []bool{false, true} {
				if v6 && !spec.IPv6Subnet.IsValid() {
					continue
				}
				pool, _ := ipam.PoolOf(spec, v6)
				// Unreadable block documents are left out, as the allocator
				// leaves them (doctor names them with their fix).
				c, err := ipam.Inspect(ctx, s.kv, pool)
				if err != nil {
					return nil, fmt.Errorf("read pool of %s: %w", spec.Name, err)
				}
				maps.Copy(n.Blocks, c.Blocks)
				maps.Copy(n.Kept, c.Kept)
			}
		default:
			if n.Leases, err = s.nets.Leases(ctx, spec.Name); err != nil {
				return nil, err
			}
		}
		out = append(out, n)
	}
	return out, nil
}

// Nodes implements dashboard.Store.
func (s *Store) Nodes(ctx context.Context) ([]netspec.NodeFacts, []netspec.MisfiledFacts, error) {
	return s.nets.ReadNodes(ctx)
}

// Inventory implements dashboard.Store.
func (s *Store) Inventory(ctx context.Context, facts []netspec.NodeFacts) ([]inventory.Entry, error) {
	// Unreadable inventories are left out here; `underlay ips` names them.
	es, _, err := inventory.Load(ctx, s.kv, facts)
	return es, err
}

// Unregistered implements dashboard.Store. The tasks of a report readers
// refuse are shown as without one (mismatches once Consul has not listed
// them for a while), and the report among the problems.
func (s *Store) Unregistered(ctx context.Context) ([]unregistered.Report, []unregistered.BadReport, error) {
	return unregistered.Load(ctx, s.kv)
}

// Agents implements dashboard.Store: node facts and doctor reports, by
// node, one AgentInput for each identity whose facts name the node (two
// hosts' agents may use one name: Build tells them apart by swarm node
// ID), each with its doctor report (the one under its swarm node ID;
// else the one an older agent published under the name, unless that
// names another swarm node) and the name's warnings (among them the
// failure of a report under the name that LoadReports refused, when none
// of them is given it). A report under a
// swarm node ID no facts name is an AgentInput of its own (NoFacts). When the facts
// of several identities name one node, each but the newest is a
// nodes/facts warning of the node (duplicateResult). A misfiled facts
// document is the nodes/facts warning of the node it is listed as
// (doctor.MisfiledResult); Build shows it among that node's doctor
// problems, once even when its report has it too (every agent's doctor
// reports it), or among the cluster's when the page has no column for
// the node (a document naming no node).
func (s *Store) Agents(ctx context.Context, facts []netspec.NodeFacts, misfiled []netspec.MisfiledFacts) ([]dashboard.AgentInput, error) {
	// Facts under a key naming no swarm node ID are no agent's: not an
	// identity of the node they name, but the cluster's problem.
	var noNode []dashboard.DoctorResult
	noNodeKeys := map[string]bool{}
	facts = slices.DeleteFunc(slices.Clone(facts), func(f netspec.NodeFacts) bool {
		r, ok := doctor.NoNodeFactsResult(f)
		if ok {
			noNode = append(noNode, result(r))
			noNodeKeys[f.FactsKey()] = true
		}
		return ok
	})
	reports, err := doctor.LoadReportsWithFacts(ctx, s.kv, facts)
	if err != nil {
		return nil, err
	}
	// node is what a node name gathers: its identities' facts, its
	// doctor report and its warnings.
	type node struct {
		facts  []netspec.NodeFacts
		doctor *dashboard.DoctorReport
		// doctorID is the swarm node ID the name's report names ("":
		// none, an older agent's).
		doctorID string
		warnings []dashboard.DoctorResult
	}
	by := map[string]*node{}
	var order []string
	get := func(name string) *node {
		if a, ok := by[name]; ok {
			return a
		}
		a := &node{}
		by[name] = a
		order = append(order, name)
		return a
	}
	// In one order whatever the caller's, so are the warnings.
	facts = slices.SortedFunc(slices.Values(facts), func(a, b netspec.NodeFacts) int {
		return cmp.Or(strings.Compare(a.Node, b.Node), strings.Compare(a.ID, b.ID))
	})
	newest := newestFacts(facts)
	for _, f := range facts {
		get(f.Node).facts = append(get(f.Node).facts, f)
	}
	for _, name := range order {
		a := by[name]
		a.warnings = append(a.warnings, duplicateResults(a.facts, facts[newest[name]])...)
	}
	byID := map[string]doctor.Report{}
	for _, r := range reports {
		if r.ByID() {
			byID[r.NodeID] = r
			continue
		}
		a := get(r.Node)
		a.doctor, a.doctorID = doctorReport(r), r.NodeID
	}
	nameOf := make(map[string]string, len(facts))
	for _, f := range facts {
		nameOf[f.ID] = f.Node
	}
	for _, m := range misfiled {
		if noNodeKeys[m.Key] {
			continue // its noNode warning says more
		}
		a := get(nameOf[strings.TrimPrefix(m.Key, netspec.NodesKVPrefix)])
		a.warnings = append(a.warnings, result(doctor.MisfiledResult(m)))
	}
	if len(noNode) > 0 {
		// Node "": no column, so among the cluster's problems.
		get("").warnings = append(get("").warnings, noNode...)
	}
	for _, name := range order {
		n := by[name]
		if n.doctor == nil || len(n.facts) == 0 || slices.ContainsFunc(n.facts, func(f netspec.NodeFacts) bool {
			_, own := byID[f.ID]
			return !own && (n.doctorID == "" || n.doctorID == f.ID)
		}) {
			continue
		}
		// The name's report, given to none of its identities: each
		// publishes its own under its ID. LoadReports leaves out a
		// report that is theirs from before, and keeps one it refuses,
		// whose failure names the key to delete.
		for _, r := range n.doctor.Results {
			if r.Check == "doctor/report" && r.Status == "fail" {
				n.warnings = append(n.warnings, r)
			}
		}
	}
	out := make([]dashboard.AgentInput, 0, len(order)+len(byID))
	for _, name := range order {
		n := by[name]
		if len(n.facts) == 0 {
			out = append(out, dashboard.AgentInput{Node: name, Doctor: n.doctor, Warnings: n.warnings})
		}
		for _, f := range n.facts {
			a := dashboard.AgentInput{Node: name, ID: f.ID, FactsAt: f.UpdatedAt, Warnings: n.warnings}
			if r, ok := byID[f.ID]; ok {
				a.Doctor, a.DoctorByID = doctorReport(r), true
				delete(byID, f.ID)
			} else if n.doctorID == "" || n.doctorID == f.ID {
				a.Doctor = n.doctor
			}
			out = append(out, a)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(byID)) {
		r := byID[id]
		out = append(out, dashboard.AgentInput{Node: r.Node, ID: id, Doctor: doctorReport(r), DoctorByID: true, NoFacts: true})
	}
	return out, nil
}

// doctorReport is r as the dashboard takes it.
func doctorReport(r doctor.Report) *dashboard.DoctorReport {
	d := &dashboard.DoctorReport{Key: r.Key, At: r.At, Every: r.Every, Version: r.Version}
	if o := r.Omitted; o != nil {
		d.OmittedOK, d.OmittedWarn, d.OmittedFail = o.OK, o.Warn, o.Fail
	}
	for _, res := range r.Results {
		d.Results = append(d.Results, result(res))
	}
	return d
}

// newestFacts gives, by node name, the index in facts of the ones
// refreshed last: the node's agent's heartbeat when several identities'
// facts name one node (it joined the swarm again under a new identity,
// and the old one's remain; or two hosts' agents use one name). Equal
// times are told apart by ID, so that the choice does not depend on the
// order facts were read in.
func newestFacts(facts []netspec.NodeFacts) map[string]int {
	out := map[string]int{}
	for i, f := range facts {
		j, ok := out[f.Node]
		if !ok || f.UpdatedAt.After(facts[j].UpdatedAt) || f.UpdatedAt.Equal(facts[j].UpdatedAt) && f.ID > facts[j].ID {
			out[f.Node] = i
		}
	}
	return out
}

// liveWithin is how long before a node name's newest facts others of
// the name count as refreshed as lately, by agents as live: the
// dashboard's least time before an agent counts as stale.
const liveWithin = 90 * time.Second

// duplicateResults are the nodes/facts warnings of a node name's facts
// (in ID order) when several identities' name it; newest are those
// refreshed last. Those refreshed within liveWithin of newest are live
// agents', named together in one warning (two hosts' agents use the
// name): which of them refreshed last changes at each of their
// heartbeats, and a warning telling them apart by it would change with
// it. Each older one is a warning of its own. No live agent's refresh
// time is given, for the same reason.
func duplicateResults(facts []netspec.NodeFacts, newest netspec.NodeFacts) []dashboard.DoctorResult {
	if len(facts) < 2 {
		return nil
	}
	var live []string
	var older []netspec.NodeFacts
	for _, f := range facts {
		if newest.UpdatedAt.Sub(f.UpdatedAt) <= liveWithin {
			live = append(live, factsOf(f))
		} else {
			older = append(older, f)
		}
	}
	var out []dashboard.DoctorResult
	if len(live) > 1 {
		out = append(out, dashboard.DoctorResult{Check: "nodes/facts", Status: "warn",
			Message: fmt.Sprintf("node %s has facts under more than one identity refreshed lately: %s; the agents of several hosts use the same node name, "+
				"each taken as the heartbeat of the swarm node its facts name", newest.Node, strings.Join(live, ", ")),
			Fix: "give each host's agent a node name of its own (underlay agent --node), or stop the agent of a host that left the swarm"})
	}
	for _, f := range older {
		out = append(out, duplicateResult(strings.Join(live, ", "), f))
	}
	return out
}

// duplicateResult is the nodes/facts warning of facts stale, naming the
// node those live (the facts refreshed last, named) name too and
// refreshed no later: those are taken as the node's agent's heartbeat.
// Their refresh time is left out, so that the warning does not change at
// each of its heartbeats.
func duplicateResult(live string, stale netspec.NodeFacts) dashboard.DoctorResult {
	r := dashboard.DoctorResult{Check: "nodes/facts", Status: "warn",
		Message: fmt.Sprintf("node %s has facts under more than one identity: %s (refreshed %s) are older than %s, taken as its agent's heartbeat; "+
			"the older are a former identity's (the node left the swarm and joined again), or another host's agent uses the same node name",
			stale.Node, factsOf(stale), stamp(stale.UpdatedAt), live)}
	if stale.ID != "" {
		// The ID is a key any agent may write: one shell word.
		r.Fix = "underlay node rm " + shellword.Quote(stale.ID) + " (once the swarm no longer lists it: docker node rm)"
	}
	return r
}

func factsOf(f netspec.NodeFacts) string {
	if f.ID == "" {
		return "those naming no swarm node (an older agent's)"
	}
	return "those of swarm node " + f.ID
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format(time.RFC3339)
}

// result is r as the dashboard carries it.
func result(r doctor.Result) dashboard.DoctorResult {
	d := dashboard.DoctorResult{Check: r.Check, Status: string(r.Status), Message: r.Message, Fix: r.Fix}
	if o := r.Omitted; o != nil {
		d.Stands = &dashboard.DoctorCounts{OK: o.OK, Warn: o.Warn, Fail: o.Fail}
	}
	return d
}

// Changes implements dashboard.Store with a blocking query per prefix.
func (s *Store) Changes(ctx context.Context) <-chan struct{} {
	out := make(chan struct{}, 1)
	for _, prefix := range s.watched {
		ch := s.kv.Watch(ctx, prefix)
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-ch:
					signal(out)
				}
			}
		}()
	}
	return out
}
