// Package taskmetrics measures the CPU and memory of a node's Swarm tasks
// and publishes them, summed per service, to Consul KV, where the
// autoscaler's built-in metrics (underlay:cpu, underlay:memory) read them.
// Rates come from two samples of Docker's cumulative CPU counter, so no
// stats stream is held open.
//
// Docker sits behind Source (dockerhost implements it) and Consul KV behind
// KV and Lister (consul implements them).
package taskmetrics

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/underlay/underlay/internal/kvstore"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/shellword"
	"github.com/underlay/underlay/internal/termtext"
)

// KVPrefix holds the reports, one key per node: IDPrefix and its swarm
// node ID; agents before that wrote KVPrefix and its name, which two
// nodes of one name (cloned hosts) shared, one report hiding the other.
// Readers read both (Load).
const KVPrefix = "underlay/metrics/"

// IDPrefix holds the reports by swarm node ID. It lies under KVPrefix,
// so that the ACL policies' prefix rules cover it, and no name key is
// under it: a node name has no '/' (netspec.CheckNodeName).
const IDPrefix = KVPrefix + "id/"

// Sample is one container's counters at one moment.
type Sample struct {
	ContainerID string
	Service     string
	At          time.Time
	// CPUTotal is the container's cumulative CPU time.
	CPUTotal time.Duration
	// Memory is the working set in bytes (usage less inactive file cache).
	Memory uint64
}

// ServiceUsage is a service's usage on one node.
type ServiceUsage struct {
	Tasks int `json:"tasks"`
	// CPU is in cores (1.0 = one core busy), summed over the node's tasks.
	CPU float64 `json:"cpu"`
	// Memory is in bytes, summed over the node's tasks.
	Memory uint64 `json:"memory"`
}

// Bounds of one service's usage in one node's report: a report beyond
// them is refused (Decode), as no node reaches them. Within them, the sums
// PerReplica takes stay finite, and one report cannot claim enough idle
// tasks to hold a service's average near 0.
const (
	// MaxTasks is ten thousand: a node runs at most a few thousand
	// containers (each holds processes, a cgroup and network endpoints).
	MaxTasks = 10000
	// MaxCPU, in cores, is Linux's largest CPU count (NR_CPUS under
	// x86-64's MAXSMP): no node's tasks keep more cores busy.
	MaxCPU = 8192
	// MaxMemory, in bytes, is 64 TiB, the physical address space of
	// x86-64 with 4-level paging; the largest machines hold less.
	MaxMemory = 64 << 40
)

// Report is a node's published usage.
type Report struct {
	Node string `json:"node"`
	// NodeID is the node's swarm node ID, its key's (IDPrefix); none in
	// the reports of older agents, keyed by Node.
	NodeID   string                  `json:"node_id,omitempty"`
	At       time.Time               `json:"at"`
	Services map[string]ServiceUsage `json:"services"`
	// Key is where Load read the report: two nodes' reports may name one
	// node.
	Key string `json:"-"`
}

// Usage turns two rounds of samples into per-service usage: CPU as the
// rate between a container's previous and current sample. A container seen
// for the first time counts for memory and tasks, with no CPU yet. A
// sample of no service is left out: readers refuse a report with an
// unnamed service whole.
func Usage(prev map[string]Sample, cur []Sample) map[string]ServiceUsage {
	out := map[string]ServiceUsage{}
	for _, s := range cur {
		if s.Service == "" {
			continue
		}
		u := out[s.Service]
		u.Tasks++
		u.Memory += s.Memory
		if p, ok := prev[s.ContainerID]; ok && s.At.After(p.At) && s.CPUTotal >= p.CPUTotal {
			u.CPU += float64(s.CPUTotal-p.CPUTotal) / float64(s.At.Sub(p.At))
		}
		out[s.Service] = u
	}
	return out
}

// Source samples the node's Swarm task containers.
type Source interface {
	Samples(ctx context.Context) ([]Sample, error)
}

// KV is what publishing needs of Consul's KV store.
type KV interface {
	Put(ctx context.Context, key string, value []byte) error
}

// Run samples every period and publishes the report of node (its name)
// under id (its swarm node ID), without the services whose figures
// readers would refuse (leaveOutRefused), and, when the report would
// exceed Consul's value limit, without the services fit leaves out. A
// task container whose stats read fails fails the round (nothing is
// published, the previous samples are kept) until it has failed
// LeaveOutAfter rounds in a row; it is then left out, and the rest
// published.
// published, unless nil, is called once the first report is stored (the
// agent then retires the report an older agent kept under the node's
// name). m, unless nil, counts the services left out. The publish, and
// published, are each given up after kvstore.WriteWait, or period when
// shorter.
func Run(ctx context.Context, src Source, kv KV, node, id string, period time.Duration, log *slog.Logger, m *Metrics, published func(context.Context)) {
	log = log.With("component", "taskmetrics")
	t := time.NewTicker(period)
	defer t.Stop()
	prev := map[string]Sample{}
	leftOut := map[string]bool{}
	var tooLarge []string
	var stuck unmeasured
	for {
		cur, err := src.Samples(ctx)
		counted, err := stuck.round(log, cur, err)
		if err != nil {
			log.Warn("task metrics not sampled", "err", err)
		} else {
			m.setTasksLeftOut(len(stuck.leftOut))
			r := Report{Node: node, NodeID: id, At: time.Now().UTC(), Services: Usage(prev, counted)}
			refused := leaveOutRefused(r.Services)
			dropped := fit(&r)
			tooLarge = noteTooLarge(log, tooLarge, dropped)
			m.setLeftOut(len(refused), len(dropped))
			leftOut = noteLeftOut(log, leftOut, refused, r.Services)
			// Each write is bounded (kvstore.WriteContext): a Consul
			// agent that never answers would hold the loop for good.
			wctx, cancel := kvstore.WriteContext(ctx, period)
			err := publish(wctx, kv, r)
			cancel()
			if err != nil && ctx.Err() == nil {
				log.Warn("task metrics not published", "err", err)
			} else if err == nil && published != nil {
				wctx, cancel := kvstore.WriteContext(ctx, period)
				published(wctx)
				cancel()
				published = nil
			}
			prev = make(map[string]Sample, len(cur))
			for _, s := range cur {
				prev[s.ContainerID] = s
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			// Both may be ready, and select picks either: stopped is
			// stopped, with no round more.
			if ctx.Err() != nil {
				return
			}
		}
	}
}

// leaveOutRefused takes out of services every one whose figures Decode
// refuses, and returns why by service: readers refuse a report with one
// such service whole, which would leave every other service's tasks on
// the node uncounted.
func leaveOutRefused(services map[string]ServiceUsage) map[string]string {
	refused := map[string]string{}
	for name, u := range services {
		if p := usageProblem(u); p != "" {
			refused[name] = p
			delete(services, name)
		}
	}
	return refused
}

// noteLeftOut logs each service of refused not left out last round (was),
// with its figure, and each of published that was: once each, not every
// round. It returns the services left out now.
func noteLeftOut(log *slog.Logger, was map[string]bool, refused map[string]string, published map[string]ServiceUsage) map[string]bool {
	now := make(map[string]bool, len(refused))
	for _, name := range slices.Sorted(maps.Keys(refused)) {
		if !was[name] {
			log.Warn("service left out of the node's task metrics: readers would refuse the whole report with it", "service", termtext.Shorten(name, maxNameLog), "problem", refused[name])
		}
		now[name] = true
	}
	for _, name := range slices.Sorted(maps.Keys(was)) {
		if _, ok := published[name]; ok {
			log.Info("service's task metrics published again", "service", termtext.Shorten(name, maxNameLog))
		}
	}
	return now
}

// fit leaves out of r, when it is encoded above Consul's value limit
// (kvstore.MaxValueSize: Consul refuses it, and the node would publish
// nothing), the fewest services in dropOrder's order that bring it under,
// and returns them in that order; nil when r fits.
func fit(r *Report) []string {
	order := dropOrder(r.Services)
	var dropped []string
	// Each service left out saves its entry's bytes; those summed may be
	// a comma off, so the result is measured again.
	for over := encodedSize(*r) - kvstore.MaxValueSize; over > 0 && len(order) > 0; over = encodedSize(*r) - kvstore.MaxValueSize {
		for ; over > 0 && len(order) > 0; order = order[1:] {
			name := order[0]
			over -= entrySize(name, r.Services[name])
			delete(r.Services, name)
			dropped = append(dropped, name)
		}
	}
	return dropped
}

// dropOrder is the order in which fit leaves services out: first those
// whose names no Swarm service can have (a huge
// com.docker.swarm.service.name label on a plain container), for which
// the autoscaler never asks; then those with the fewest tasks on the
// node, which weigh least in a service's average per replica (PerReplica:
// the other nodes' reports still give it); then the longest entries,
// to leave out fewer; then by name.
func dropOrder(services map[string]ServiceUsage) []string {
	return slices.SortedFunc(maps.Keys(services), func(a, b string) int {
		ua, ub := services[a], services[b]
		return cmp.Or(
			-cmp.Compare(b2i(!swarmServiceName(a)), b2i(!swarmServiceName(b))),
			cmp.Compare(ua.Tasks, ub.Tasks),
			-cmp.Compare(entrySize(a, ua), entrySize(b, ub)),
			strings.Compare(a, b))
	})
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// swarmServiceName says whether a Swarm service can be named name:
// swarmkit's validateAnnotations takes a DNS name component of at most 63
// characters, letters, digits, '-' and '_', starting and ending with a
// letter or digit.
func swarmServiceName(name string) bool {
	if name == "" || len(name) > 63 {
		return false
	}
	alnum := func(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' }
	for i := 0; i < len(name); i++ {
		if c := name[i]; !alnum(c) && c != '-' && c != '_' {
			return false
		}
	}
	return alnum(name[0]) && alnum(name[len(name)-1])
}

// encodedSize is the length of r as publish encodes it; 0 when it cannot
// be encoded (publish says why).
func encodedSize(r Report) int {
	b, err := json.Marshal(r)
	if err != nil {
		return 0
	}
	return len(b)
}

// entrySize is the length of a service's entry in an encoded report, with
// its ':' and a ','.
func entrySize(name string, u ServiceUsage) int {
	k, _ := json.Marshal(name)
	v, _ := json.Marshal(u)
	return len(k) + 1 + len(v) + 1
}

// maxNamed is how many services a warning names at most, and maxNameLog
// how many bytes of each name it quotes (a swarm service's name has 63 at
// most).
const (
	maxNamed   = 10
	maxNameLog = 64
)

// noteTooLarge logs the services fit left out (dropped) when they are not
// those it left out last round (was): a warning naming how many and the
// first maxNamed, or once none is left out any more, that the report is
// whole again. It returns dropped.
func noteTooLarge(log *slog.Logger, was, dropped []string) []string {
	switch {
	case slices.Equal(was, dropped):
	case len(dropped) > 0:
		// Shortened: a name no swarm service can have may be a label of
		// any size, and would fill the journal at every change.
		named := make([]string, 0, maxNamed)
		for _, name := range dropped[:min(len(dropped), maxNamed)] {
			named = append(named, termtext.Shorten(name, maxNameLog))
		}
		log.Warn("services left out of the node's task metrics: the report is above Consul's value limit (left out first: names no swarm service can have, then the fewest tasks, the longest entries)",
			"left_out", len(dropped), "services", strings.Join(named, ","), "unnamed", len(dropped)-len(named), "limit_bytes", kvstore.MaxValueSize)
	default:
		log.Info("the node's task metrics fit Consul's value limit again: no service left out for size", "was_left_out", len(was))
	}
	return dropped
}

// publish stores r under its node's swarm node ID.
func publish(ctx context.Context, kv KV, r Report) error {
	if r.NodeID == "" {
		return fmt.Errorf("publish task metrics of %s: no swarm node ID to key them by", r.Node)
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := kv.Put(ctx, IDPrefix+r.NodeID, b); err != nil {
		return fmt.Errorf("publish task metrics of %s (swarm node %s): %w", r.Node, r.NodeID, err)
	}
	return nil
}

// Heard is what a reader heard of each node's report: its stamp and when
// the reader's clock saw it change, by the report's key (Report.Key; its
// node's name when it has none).
type Heard map[string]netspec.Heard

// Hear sets each report's At to when this reader's clock saw its stamp
// change (netspec.Hear), given what it heard at its last read; it returns
// what it hears now. Judged by their stamps, another host's clock,
// the reports of a node whose clock is behind would read as stale while
// its agent publishes, and the last of an agent that stopped with its
// clock ahead as fresh for as long. A report first seen dated ahead of
// now proves nothing of its agent yet: it counts once it changes (its
// agent publishes every few seconds), so that a stray one dated far ahead
// never counts.
func Hear(reports []Report, prev Heard, now time.Time) Heard {
	next := make(Heard, len(reports))
	for i := range reports {
		r := &reports[i]
		key := cmp.Or(r.Key, r.Node)
		was, seen := prev[key]
		h := netspec.Hear(was, seen, r.At, now)
		if !seen && r.At.After(now) {
			h.At = time.Time{} // stale until its stamp changes
		}
		next[key] = h
		r.At = h.At
	}
	return next
}

// PerReplica averages a service's usage over its tasks on every node whose
// report is fresher than maxAge (by At: Hear sets it by the reader's
// clock); ok is false when no fresh task is known.
func PerReplica(reports []Report, service string, now time.Time, maxAge time.Duration) (cpu, memory float64, ok bool) {
	// Summed as a float: an int sum of the counts reports claim can wrap
	// negative.
	tasks := 0.0
	for _, r := range reports {
		if now.Sub(r.At) > maxAge {
			continue
		}
		u, found := r.Services[service]
		if !found || usageProblem(u) != "" {
			continue // what Decode refuses, in a report not read by it
		}
		tasks += float64(u.Tasks)
		cpu += u.CPU
		memory += float64(u.Memory)
	}
	if tasks == 0 {
		return 0, 0, false
	}
	return cpu / tasks, memory / tasks, true
}

// BadReport is a key under KVPrefix that readers do not count.
type BadReport struct {
	Key     string
	Problem string
	Fix     string
}

// Lister is what reading reports needs of Consul's KV store.
type Lister interface {
	List(ctx context.Context, prefix string) ([]kvstore.Pair, error)
}

// Load reads every node's report, under its swarm node ID or, an older
// agent's, under its name. A report that cannot be decoded, or that
// Decode refuses, is set apart with the command that removes it, and hides
// no other. A report under a name is left out when one under a swarm
// node ID is of the same node (shadowed): the node's agent was upgraded,
// and the old one would count its tasks twice; one naming no ID that no
// node may be given is set apart instead (refuseNameReports). The node facts
// (netspec.NodesKVPrefix, read through kv too) tell which swarm nodes
// have a name.
func Load(ctx context.Context, kv Lister) ([]Report, []BadReport, error) {
	pairs, err := kv.List(ctx, KVPrefix)
	if err != nil {
		return nil, nil, fmt.Errorf("read task metrics: %w", err)
	}
	var out []Report
	var bad []BadReport
	for _, p := range pairs {
		r, err := Decode(p.Key, p.Value)
		if err != nil {
			fix, why := shellword.KVRemoval(p.Key, " (a node's agent publishes its report again within its period)")
			bad = append(bad, BadReport{Key: p.Key, Problem: err.Error() + why, Fix: fix})
			continue
		}
		out = append(out, r)
	}
	byName := netspec.IDsByName(ctx, kv)
	out, refused := refuseNameReports(out, byName)
	bad = append(bad, refused...)
	return slices.DeleteFunc(out, shadowed(out, byName)), bad, nil
}

// refuseNameReports sets apart each of reports read under a name and
// naming no swarm node ID that no node may be given, as the doctor's
// LoadReports refuses its like: every swarm node the node facts give the
// name (byName) publishes under its ID, and one of those reports names
// another node than its facts (its agent's --node changed since it wrote
// them, or a report is forged), so the name's report may not be theirs
// from before their upgrade. Counted, it could count a node's tasks
// twice; left out as shadowed, it was dropped without a word. Set apart,
// the autoscaler's caller logs it, and the doctor shows it, with the
// command that removes it.
func refuseNameReports(reports []Report, byName map[string][]string) ([]Report, []BadReport) {
	byID, reported := map[string]Report{}, map[string]string{}
	for _, r := range reports {
		if strings.HasPrefix(r.Key, IDPrefix) {
			byID[r.NodeID], reported[r.NodeID] = r, r.Node
		}
	}
	var bad []BadReport
	kept := slices.DeleteFunc(reports, func(r Report) bool {
		if strings.HasPrefix(r.Key, IDPrefix) || r.NodeID != "" {
			return false
		}
		id, n, ok := netspec.NameReportOfNoNode(r.Node, byName[r.Node], reported)
		if !ok {
			return false // an older agent's, or the name's nodes' own from before their upgrade (shadowed)
		}
		other, more := byID[id], ""
		if n > 0 {
			more = fmt.Sprintf(" (and %d more swarm nodes of the name, each naming another node)", n)
		}
		fix, why := shellword.KVRemoval(r.Key, "")
		bad = append(bad, BadReport{Key: r.Key, Fix: fix,
			Problem: fmt.Sprintf("report %s, an older agent's under node %s's name, is counted for no node: every swarm node the node facts name %s publishes its report under its ID, and %s names node %q, not %s%s (its agent's --node changed since its facts were written, or the report is forged), so it may not be theirs from before an upgrade",
				r.Key, r.Node, r.Node, other.Key, other.Node, r.Node, more) + why})
		return true
	})
	return kept, bad
}

// shadowed says which of reports, read under a name, is of a node whose
// report under its swarm node ID is among them too: one naming that ID,
// or, naming none (an older agent's), that node's name, unless a swarm
// node the facts give the name (byName) has no report under its ID: it
// may be that node's, whose agent is older (two nodes of one name, one
// upgraded), and would count nowhere.
func shadowed(reports []Report, byName map[string][]string) func(Report) bool {
	ids, names := map[string]bool{}, map[string]bool{}
	for _, r := range reports {
		if strings.HasPrefix(r.Key, IDPrefix) {
			ids[r.NodeID], names[r.Node] = true, true
		}
	}
	return func(r Report) bool {
		switch {
		case strings.HasPrefix(r.Key, IDPrefix):
			return false
		case r.NodeID != "":
			return ids[r.NodeID]
		}
		return names[r.Node] && !slices.ContainsFunc(byName[r.Node], func(id string) bool { return !ids[id] })
	}
}

// Decode reads the report stored under key and says why it cannot be
// counted: it must be a node's own report (its key, IDPrefix and its
// swarm node ID or, an older agent's, KVPrefix and its name, a valid
// node name, names its node, and a report under an ID names a node by a
// valid name), dated,
// with 1 to MaxTasks tasks, a CPU of 0 to MaxCPU cores and at most
// MaxMemory bytes per service. A stamp ahead
// of the reader's clock is no reason: readers judge a report's age by when
// their own clock saw it change (Hear). Such a report, stray or forged, would otherwise move
// every average it enters and so the replicas the autoscaler sets.
func Decode(key string, value []byte) (Report, error) {
	node := strings.TrimPrefix(key, KVPrefix)
	id, byID := strings.CutPrefix(key, IDPrefix)
	if node == key || !byID && netspec.CheckNodeName(node) != nil {
		return Report{}, fmt.Errorf("%s is not a node's key: agents write %sSWARM-NODE-ID (older ones %sNODE)", termtext.Q(key), IDPrefix, KVPrefix)
	}
	if err := netspec.CheckNodeID(id); byID && err != nil {
		return Report{}, fmt.Errorf("%s is not a node's key: %s is not a swarm node ID: %v; agents write %sSWARM-NODE-ID (older ones %sNODE)", termtext.Q(key), termtext.Q(id), err, IDPrefix, KVPrefix)
	}
	var r Report
	if err := json.Unmarshal(value, &r); err != nil {
		return Report{}, fmt.Errorf("not a task metrics report: %w", err)
	}
	switch {
	case byID && r.NodeID != id:
		return Report{}, fmt.Errorf("the report under %s names swarm node %s, its key swarm node %s: one node's tasks would count twice", key, termtext.Q(r.NodeID), termtext.Q(id))
	case byID && r.Node == "":
		return Report{}, fmt.Errorf("the report of swarm node %s names no node", id)
	case byID:
		// Shown with the report, and what the ID report shadows an
		// older agent's by (shadowed), as doctor's LoadReports refuses.
		if err := netspec.CheckNodeName(r.Node); err != nil {
			return Report{}, fmt.Errorf("the report under %s names node %s: not a node's name: %v", key, termtext.Q(r.Node), err)
		}
		node = r.Node
	case r.Node != node:
		return Report{}, fmt.Errorf("the report names node %s, its key node %s: one node's tasks would count twice", termtext.Q(r.Node), termtext.Q(node))
	}
	r.Key = key
	if r.At.IsZero() {
		return Report{}, fmt.Errorf("the report of %s has no time", node)
	}
	for _, name := range slices.Sorted(maps.Keys(r.Services)) {
		if name == "" {
			return Report{}, fmt.Errorf("the report of %s has a service with no name", node)
		}
		if p := usageProblem(r.Services[name]); p != "" {
			return Report{}, fmt.Errorf("the report of %s gives service %s %s", node, termtext.Q(name), p)
		}
	}
	return r, nil
}

// usageProblem says which of u's figures is outside its bounds; "" when
// none is.
func usageProblem(u ServiceUsage) string {
	switch {
	case u.Tasks < 1 || u.Tasks > MaxTasks:
		return fmt.Sprintf("%d tasks: want 1 to %d", u.Tasks, MaxTasks)
	case !(u.CPU >= 0 && u.CPU <= MaxCPU): // NaN too
		return fmt.Sprintf("a CPU of %v cores: want 0 to %d", u.CPU, MaxCPU)
	case u.Memory > MaxMemory:
		return fmt.Sprintf("%d bytes of memory: want at most %d (64 TiB)", u.Memory, uint64(MaxMemory))
	}
	return ""
}
