package doctor

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/underlay/underlay/internal/kvstore"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/shellword"
	"github.com/underlay/underlay/internal/termtext"
)

// KVPrefix is where agents publish their node's doctor report, one key per
// node, for the dashboard (`underlay control`, /ui): IDPrefix and its
// swarm node ID; agents before that wrote KVPrefix and its name, which
// two nodes of one name (cloned hosts) shared, one report hiding the
// other. LoadReports reads both.
const KVPrefix = "underlay/doctor/"

// IDPrefix holds the reports by swarm node ID. It lies under KVPrefix,
// so that the ACL policies' prefix rules cover it, and no name key is
// under it: a node name has no '/' (netspec.CheckNodeName).
const IDPrefix = KVPrefix + "id/"

// MaxEvery is the longest period between an agent's reports (its
// --doctor-interval). Readers take a longer claim as MaxEvery: a report
// is called stale only after some multiple of its period, so a period of
// years, forged or a bug, would keep a dead agent shown as up.
const MaxEvery = time.Hour

// Report is one node's doctor results as its agent published them.
type Report struct {
	Node string `json:"node"`
	// NodeID is the node's swarm node ID, its key's (IDPrefix); none in
	// the reports of older agents, keyed by Node.
	NodeID string    `json:"node_id,omitempty"`
	At     time.Time `json:"at"`
	// Every is the agent's period between reports; a report older than
	// about twice that means the agent stopped reporting. LoadReports
	// caps it at MaxEvery.
	Every time.Duration `json:"every"`
	// Version is the agent's underlay version.
	Version string   `json:"version,omitempty"`
	Results []Result `json:"results"`
	// Omitted counts, by status, the results left out of Results to keep
	// the report within MaxReportBytes (a row left out that stood for
	// others, Result.Omitted, as those); nil when none were.
	Omitted *Omitted `json:"omitted,omitempty"`
	// Key is where LoadReports read the report: two nodes' reports may
	// name one node.
	Key string `json:"-"`
}

// ByID says r was read under its node's swarm node ID (IDPrefix), not
// under a name (an older agent's, which any node of the name may have
// written).
func (r Report) ByID() bool { return strings.HasPrefix(r.Key, IDPrefix) }

// Omitted counts results left out of a published report, by status.
type Omitted struct {
	OK   int `json:"ok"`
	Warn int `json:"warn"`
	Fail int `json:"fail"`
}

// MaxOmitted bounds each count of results left out that a report read
// back may hold: far more than any node's checks give, and too few for
// sums over the rows and nodes of a cluster to overflow.
const MaxOmitted = 1 << 30

// MaxReportBytes bounds a published report: Consul refuses a value above
// 512 KiB (kv_max_value_size), and a report refused at every period
// would leave the node looking dead. The rest is a margin.
const MaxReportBytes = 480 << 10

// KV is what publishing and reading reports needs of Consul's KV store.
type KV interface {
	List(ctx context.Context, prefix string) ([]kvstore.Pair, error)
	Put(ctx context.Context, key string, value []byte) error
}

// Publish stores a node's report under its swarm node ID (r.NodeID),
// bounded to MaxReportBytes (bound).
func Publish(ctx context.Context, kv KV, r Report) error {
	_, err := publish(ctx, kv, r)
	return err
}

// publish is Publish, returning the counts of the results left out (nil
// when none were).
func publish(ctx context.Context, kv KV, r Report) (*Omitted, error) {
	if r.NodeID == "" {
		return nil, fmt.Errorf("publish doctor report of %s: no swarm node ID to key it by", r.Node)
	}
	b, om, err := bound(r, MaxReportBytes)
	if err != nil {
		return nil, fmt.Errorf("encode doctor report of %s: %w", r.Node, err)
	}
	if err := kv.Put(ctx, IDPrefix+r.NodeID, b); err != nil {
		return om, fmt.Errorf("publish doctor report of %s (swarm node %s): %w", r.Node, r.NodeID, err)
	}
	return om, nil
}

// bound encodes r in at most limit bytes: when it is larger, it keeps
// the failures, then the warnings, then the OK results, each in the
// order given, as many as fit, and counts the rest in Omitted, which it
// returns too, so that counts read from the report stay true. Kept
// results stay in order.
func bound(r Report, limit int) ([]byte, *Omitted, error) {
	b, err := json.Marshal(r)
	if err != nil || len(b) <= limit {
		return b, nil, err
	}
	// The report with no results, and counts as large as they can be:
	// each result kept adds its encoding and, past the first, a comma.
	n, all := len(r.Results), Counts(r.Results)
	most := all.OK + all.Warn + all.Fail
	empty := r
	empty.Results, empty.Omitted = []Result{}, &Omitted{OK: most, Warn: most, Fail: most}
	b, err = json.Marshal(empty)
	if err != nil {
		return nil, nil, err
	}
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return rank(r.Results[a].Status) - rank(r.Results[b].Status) })
	size, keep := len(b)-1, make([]bool, n) // -1: the first adds no comma
	for _, i := range order {
		e, err := json.Marshal(r.Results[i])
		if err != nil {
			return nil, nil, err
		}
		if size+len(e)+1 > limit {
			break
		}
		size += len(e) + 1
		keep[i] = true
	}
	kept, om := make([]Result, 0, n), Omitted{}
	for i, res := range r.Results {
		if keep[i] {
			kept = append(kept, res)
		} else {
			om.add(res)
		}
	}
	r.Results, r.Omitted = kept, &om
	if b, err = json.Marshal(r); err == nil && len(b) > limit {
		err = fmt.Errorf("report of %d bytes with %d of %d results kept, above %d", len(b), len(kept), n, limit)
	}
	return b, &om, err
}

// rank orders statuses by how much they need to be seen: failures (and
// whatever is neither OK nor a warning, which readers count as failed)
// first, OK last.
func rank(s Status) int {
	switch s {
	case OK:
		return 2
	case Warn:
		return 1
	}
	return 0
}

// LoadReports reads every node's report: under its swarm node ID
// (NodeID the key's, Node the name it gives) or, an older agent's, under
// its name (Node the key's). A report under a key naming no node (a name
// netspec.CheckNodeName refuses, or no swarm node ID), that cannot be
// read, that names another node (or, under an ID, another swarm node;
// under a name, a swarm node no facts of that name name, when some do),
// or that
// counts a negative number of results left out (or above MaxOmitted), is
// that key's failed doctor/report check: one bad key hides no other
// node's report or failures, nor stands in for it. A period above MaxEvery is read as
// MaxEvery, with a doctor/report warning naming the claim. A report
// under a name is left out when one under a swarm node ID is of the same
// node (shadowed): the node's agent was upgraded since it wrote it. One
// naming no ID that no node would be given, and that may not be its
// nodes' (placeNameReports), is refused instead of left out. The
// node facts (netspec.NodesKVPrefix, read through kv too) tell which
// swarm nodes have a name.
func LoadReports(ctx context.Context, kv KV) ([]Report, error) {
	return loadReports(ctx, kv, netspec.IDsByName(ctx, kv))
}

// LoadReportsWithFacts is LoadReports given the node facts, read by the
// caller.
func LoadReportsWithFacts(ctx context.Context, kv KV, facts []netspec.NodeFacts) ([]Report, error) {
	byName := map[string][]string{}
	for _, f := range facts {
		if f.Node != "" {
			byName[f.Node] = append(byName[f.Node], f.ID)
		}
	}
	return loadReports(ctx, kv, byName)
}

// loadReports is LoadReports, given by node name the swarm node IDs
// whose facts name it (identities).
func loadReports(ctx context.Context, kv KV, byName map[string][]string) ([]Report, error) {
	kvs, err := kv.List(ctx, KVPrefix)
	if err != nil {
		return nil, fmt.Errorf("read doctor reports: %w", err)
	}
	out := make([]Report, 0, len(kvs))
	refused := map[string]bool{} // the keys of reports not read as written
	for _, p := range kvs {
		if id, ok := strings.CutPrefix(p.Key, IDPrefix); ok {
			r := loadByID(p, id)
			refused[p.Key] = r.Key == ""
			r.Key = p.Key
			out = append(out, boundedResults(r))
			continue
		}
		node := strings.TrimPrefix(p.Key, KVPrefix)
		var r Report
		if err := netspec.CheckNodeName(node); err != nil {
			// Shown as its node's name, and matched to node facts by
			// it, as the ID layout's node names are checked.
			r = badReport(p.Key, node, fmt.Sprintf("report %s is under no node's name: %v; agents publish theirs under %sSWARM-NODE-ID (older ones %sNODE)", termtext.Q(p.Key), err, IDPrefix, KVPrefix))
			refused[p.Key] = true
		} else if err := json.Unmarshal(p.Value, &r); err != nil {
			r = badReport(p.Key, node, fmt.Sprintf("unreadable report %s: %v", p.Key, err))
			refused[p.Key] = true
		} else if r.Node != "" && r.Node != node {
			// Taken by its node, it would replace that node's own
			// report on the dashboard.
			r = badReport(p.Key, node, fmt.Sprintf("report %s names node %s: an agent publishes its own node's report under its name", p.Key, termtext.Q(r.Node)))
			refused[p.Key] = true
		} else if ids := byName[node]; r.NodeID != "" && len(ids) > 0 && !slices.Contains(ids, r.NodeID) {
			// Taken by no node of the name (the dashboard gives such a
			// report to the one it names), it would show nowhere.
			r = badReport(p.Key, node, fmt.Sprintf("report %s names swarm node %s, which no node facts of node %s name: an older agent names none", p.Key, termtext.Q(r.NodeID), node))
			refused[p.Key] = true
		} else if r = checked(r, p.Key, node); r.Key == "" {
			refused[p.Key] = true
		}
		r.Node, r.Key = node, p.Key
		out = append(out, boundedResults(r))
	}
	placeNameReports(out, refused, byName)
	out = slices.DeleteFunc(out, shadowed(out, refused, byName))
	slices.SortFunc(out, func(a, b Report) int {
		return cmp.Or(strings.Compare(a.Node, b.Node), strings.Compare(a.NodeID, b.NodeID))
	})
	return out, nil
}

// placeNameReports refuses each of reports read under a name and naming
// no swarm node ID that no node is given, and that is not a node's from
// before its agent's upgrade either: every swarm node the node facts give
// the name (byName) publishes under its ID, so the dashboard gives the
// name's report to none of them, and one of those reports names another
// node than its facts (its agent's --node changed since it wrote them,
// or a report is forged), so the name's report may not be theirs. Read
// as written, it would show nowhere (shadowed, or given to no node); as
// its key's failed doctor/report check, it is shown among the name's
// nodes' problems, saying why, with the command that removes it. Its
// key joins refused.
func placeNameReports(reports []Report, refused map[string]bool, byName map[string][]string) {
	byID, reported := map[string]Report{}, map[string]string{}
	for _, r := range reports {
		if r.ByID() && !refused[r.Key] {
			byID[r.NodeID], reported[r.NodeID] = r, r.Node
		}
	}
	for i, r := range reports {
		if r.ByID() || refused[r.Key] || r.NodeID != "" {
			continue
		}
		id, n, ok := netspec.NameReportOfNoNode(r.Node, byName[r.Node], reported)
		if !ok {
			continue // an older agent's, or the name's nodes' own from before their upgrade (shadowed)
		}
		other, more := byID[id], ""
		if n > 0 {
			more = fmt.Sprintf(" (and %d more swarm nodes of the name, each naming another node)", n)
		}
		bad := badReport(r.Key, r.Node, fmt.Sprintf("report %s, an older agent's under node %s's name, is shown on no node: every swarm node the node facts name %s publishes its report under its ID, and %s names node %q, not %s%s (its agent's --node changed since its facts were written, or the report is forged), so it may not be theirs from before an upgrade",
			r.Key, r.Node, r.Node, other.Key, other.Node, r.Node, more))
		bad.Key = r.Key
		reports[i] = boundedResults(bad)
		refused[r.Key] = true
	}
}

// loadByID reads the report p under swarm node ID id. Its Key is set
// when it is read as written, and left empty when it is refused
// (a failed doctor/report check naming the key).
func loadByID(p kvstore.Pair, id string) Report {
	if err := netspec.CheckNodeID(id); err != nil {
		// Shown among the cluster's problems: it names no swarm node.
		return badByID(p.Key, id, "", fmt.Sprintf("report %s is under no swarm node's key: %s is not a swarm node ID: %v; agents publish theirs under %sSWARM-NODE-ID", termtext.Q(p.Key), termtext.Q(id), err, IDPrefix))
	}
	var r Report
	if err := json.Unmarshal(p.Value, &r); err != nil {
		return badByID(p.Key, id, "", fmt.Sprintf("unreadable report %s: %v", p.Key, err))
	}
	if r.NodeID != id {
		// Taken by its key, it would stand in for that swarm node's
		// report; by the ID it names, for another's.
		return badByID(p.Key, id, r.Node, fmt.Sprintf("report %s names swarm node %s: an agent publishes its own node's report under its swarm node ID", p.Key, termtext.Q(r.NodeID)))
	}
	if err := netspec.CheckNodeName(r.Node); err != nil {
		// Shown as the node's name, and matched to node facts by it.
		return badByID(p.Key, id, "", fmt.Sprintf("report %s names node %s: not a node's name: %v", p.Key, termtext.Q(r.Node), err))
	}
	return checked(r, p.Key, r.Node)
}

// badByID is the report under swarm node ID id that cannot be shown, as
// its key's failed check, on node (its name, when one can be told).
func badByID(key, id, node, problem string) Report {
	r := badReport(key, node, problem)
	r.NodeID = id
	return r
}

// checked is r, read under key, with what readers cannot take as written
// (counts, period, version) refused or bounded: node is its node's name.
// Its Key is key, or empty when it is refused whole.
func checked(r Report, key, node string) Report {
	if impossibleCounts(r) {
		// Counted, it would take other nodes' failures off the
		// dashboard's totals (a negative count, or a sum that
		// overflows).
		bad := badReport(key, node, fmt.Sprintf("report %s counts a negative number of results left out, or more than %d: no agent writes one", key, MaxOmitted))
		bad.NodeID = r.NodeID
		return bad
	}
	if r.Every > MaxEvery {
		fix, why := shellword.KVRemoval(key, fmt.Sprintf(" (its agent, with --doctor-interval at most %s, publishes its report again within its period)", MaxEvery))
		r.Results = append(r.Results, Result{Node: node, Check: "doctor/report", Status: Warn,
			Message: fmt.Sprintf("report %s claims a period of %s, above the agents' maximum: read as %s", key, r.Every, MaxEvery) + why,
			Fix:     fix})
		r.Every = MaxEvery
	}
	if !goodVersion(r.Version) {
		// Shown as the node's agent version on the dashboard: any
		// agent's token writes it.
		fix, why := shellword.KVRemoval(key, " (a node's agent publishes its report again within its period)")
		r.Results = append(r.Results, Result{Node: node, Check: "doctor/report", Status: Warn,
			Message: fmt.Sprintf("report %s gives an agent version of %d bytes, over %d or with a character that is not printable: not shown", key, len(r.Version), MaxVersion) + why,
			Fix:     fix})
		r.Version = ""
	}
	r.Key = key
	return r
}

// boundedResults is r with each result bounded as Run bounds them: a
// report in Consul may hold anything, and a bad one's result quotes its
// key.
func boundedResults(r Report) Report {
	for i := range r.Results {
		r.Results[i] = bounded(r.Results[i])
	}
	return r
}

// shadowed says which of reports, read under a name, is of a node whose
// report under its swarm node ID is among them too: one naming that ID,
// or, naming none (an older agent's), that node's name, unless a swarm
// node the facts give the name (byName) has no report under its ID: it
// may be that node's, whose agent is older (two nodes of one name, one
// upgraded), and would show nowhere. A report refused (its key among
// refused) shadows none and is never shadowed: its failure names the key
// to delete.
func shadowed(reports []Report, refused map[string]bool, byName map[string][]string) func(Report) bool {
	ids, names := map[string]bool{}, map[string]bool{}
	for _, r := range reports {
		if r.ByID() && !refused[r.Key] {
			ids[r.NodeID], names[r.Node] = true, true
		}
	}
	return func(r Report) bool {
		switch {
		case r.ByID() || refused[r.Key]:
			return false
		case r.NodeID != "":
			return ids[r.NodeID]
		}
		return names[r.Node] && !slices.ContainsFunc(byName[r.Node], func(id string) bool { return !ids[id] })
	}
}

// MaxVersion bounds, in bytes, the agent version a report read back may
// give: far more than any build's (a release, or git describe's).
const MaxVersion = 128

// goodVersion says v is an agent version a report may give: at most
// MaxVersion bytes, every character printable.
func goodVersion(v string) bool {
	return len(v) <= MaxVersion && termtext.Graphic(v)
}

// impossibleCounts says a count of results left out in r, its own or a
// row's, is below zero or above MaxOmitted.
func impossibleCounts(r Report) bool {
	bad := func(o *Omitted) bool {
		return o != nil && slices.ContainsFunc([]int{o.OK, o.Warn, o.Fail}, func(n int) bool { return n < 0 || n > MaxOmitted })
	}
	return bad(r.Omitted) || slices.ContainsFunc(r.Results, func(res Result) bool { return bad(res.Omitted) })
}

// badReport is a report that cannot be shown, as its key's failed check.
func badReport(key, node, problem string) Report {
	fix, why := shellword.KVRemoval(key, " (a node's agent publishes its report again within its period)")
	return Report{Node: node, Results: []Result{{Node: node, Check: "doctor/report", Status: Fail, Message: problem + why, Fix: fix}}}
}

// Recheck is how soon checks run again while one fails or warns, so that a
// repair shows within moments (a fresh node's Consul may have no leader
// yet at the first run).
const Recheck = 15 * time.Second

// MaxLoggedChecks bounds the failed checks the agent's "checks failing"
// warning names; it counts the others.
const MaxLoggedChecks = 10

// RunPeriodically runs checks every period (every Recheck while any fails
// or warns) and publishes the results, until ctx ends: the agents' reports
// are what the dashboard shows per node. A report is written every time
// even when nothing changed, as the agent's heartbeat.
//
// Reports go under id, the node's swarm node ID; published, unless nil,
// is called once the first is stored (the agent then retires the report
// an older agent kept under the node's name). The publish, and
// published, are each given up after kvstore.WriteWait, or period when
// shorter.
func RunPeriodically(ctx context.Context, kv KV, node, id, version string, checks []Check, period time.Duration, log *slog.Logger, published func(context.Context)) {
	log = log.With("component", "doctor")
	checks = oneRunAtATime(checks)
	var lastFailed []string
	var lastOmitted Omitted
	for {
		rs := Run(ctx, node, checks, nil)
		if ctx.Err() != nil {
			return
		}
		r := Report{Node: node, NodeID: id, At: time.Now().UTC(), Every: period, Version: version, Results: rs}
		// Each write is bounded (kvstore.WriteContext): a Consul agent
		// that never answers would hold the loop for good.
		wctx, cancel := kvstore.WriteContext(ctx, period)
		om, err := publish(wctx, kv, r)
		cancel()
		if err == nil {
			lastOmitted = logOmitted(log, om, lastOmitted, len(rs))
			if published != nil {
				wctx, cancel := kvstore.WriteContext(ctx, period)
				published(wctx)
				cancel()
				published = nil
			}
		} else if ctx.Err() == nil {
			log.Warn("doctor report not published; will retry", "err", err)
		}
		if failed := failedChecks(rs); !slices.Equal(failed, lastFailed) {
			if len(failed) > 0 {
				shown := failed[:min(len(failed), MaxLoggedChecks)]
				log.Warn("doctor: checks failing", "checks", strings.Join(shown, ","), "more", len(failed)-len(shown))
			} else if lastFailed != nil {
				log.Info("doctor: every check passes again")
			}
			lastFailed = failed
		}
		next := period
		if slices.ContainsFunc(rs, func(r Result) bool { return r.Status != OK }) {
			next = min(period, Recheck)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(next):
		}
	}
}

// logOmitted says, when they changed from last, how many of a report's
// results (of all) were left out to fit Consul's value limit (om; nil
// when none were), and returns them as the next last: the dashboard
// counts them, but lists none of them.
func logOmitted(log *slog.Logger, om *Omitted, last Omitted, all int) Omitted {
	var now Omitted
	if om != nil {
		now = *om
	}
	switch n := now.OK + now.Warn + now.Fail; {
	case now == last:
	case n > 0:
		log.Warn("doctor report cut to fit Consul's value limit: results left out, counted only (underlay doctor on the node lists them)",
			"left_out", n, "results", all, "ok", now.OK, "warn", now.Warn, "fail", now.Fail, "max_bytes", MaxReportBytes)
	default:
		log.Info("doctor report published whole again")
	}
	return now
}

// failedChecks names the failed checks of rs, sorted, each once (a check
// may fail in many rows: one per unreachable container).
func failedChecks(rs []Result) []string {
	out := []string{}
	for _, r := range rs {
		if r.Status == Fail {
			out = append(out, r.Check)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// oneRunAtATime wraps each of checks so that it is not started while a
// run of it has not returned, which then fails at once, saying so. Run
// leaves a check blocked where no context reaches (a wedged netlink)
// behind; run every period, each would leave one more.
func oneRunAtATime(checks []Check) []Check {
	out := make([]Check, len(checks))
	for i, c := range checks {
		out[i] = &oneRun{Check: c}
	}
	return out
}

// oneRun is a check that runs once at a time.
type oneRun struct {
	Check
	running atomic.Bool
}

// Run implements Check.
func (c *oneRun) Run(ctx context.Context, logf Logf) []Result {
	if !c.running.CompareAndSwap(false, true) {
		return []Result{{Check: c.Name(), Status: Fail,
			Message: "its previous run has not returned: something it reads (netlink, a file under /proc or /sys, Docker, Consul) does not answer"}}
	}
	defer c.running.Store(false)
	return c.Check.Run(ctx, logf)
}
