package unregistered

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/underlay/underlay/internal/backoff"
	"github.com/underlay/underlay/internal/kvstore"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/shellword"
	"github.com/underlay/underlay/internal/termtext"
)

// KVPrefix holds the reports, one key per node: KVPrefix and its swarm
// node ID.
const KVPrefix = "underlay/unregistered/"

// Bounds of a report: Decode refuses one beyond them. MaxTasks entries
// of MaxReason bytes stay well under Consul's value limit
// (kvstore.MaxValueSize); a node runs at most a few hundred task
// containers without a service, and one past MaxTasks is counted in
// Omitted (its card is then a mismatch, as before reports).
const (
	MaxTasks  = 1000
	MaxReason = 200
)

// Task is one task container the node's agent leaves out of Consul.
type Task struct {
	TaskID      string `json:"task_id"`
	ContainerID string `json:"container_id"`
	Reason      string `json:"reason"`
	// NodeID is the swarm node the container's labels name; not stored
	// (the report's NodeID is): Build keeps only the publishing node's.
	NodeID string `json:"-"`
}

// Report is one node's left-out task containers.
type Report struct {
	Node   string `json:"node"`
	NodeID string `json:"node_id"`
	// Tasks are sorted by task ID.
	Tasks []Task `json:"tasks"`
	// Omitted counts the tasks past MaxTasks, not listed.
	Omitted int `json:"omitted,omitempty"`
	// Key is where Load read it.
	Key string `json:"-"`
}

// Build is the report of node (its name), whose swarm node ID is id, from
// the agent's left-out tasks: those its containers' labels place on
// another node are left out (a plain container may carry Swarm's labels:
// it would speak for another node's task), as are those whose fields
// Decode would refuse, which would make readers refuse the whole report;
// past MaxTasks, the rest are counted. It returns how many it dropped.
func Build(node, id string, tasks []Task) (Report, int) {
	r := Report{Node: node, NodeID: id, Tasks: []Task{}}
	seen := map[string]bool{}
	dropped := 0
	for _, t := range slices.SortedFunc(slices.Values(tasks), func(a, b Task) int { return strings.Compare(a.TaskID, b.TaskID) }) {
		if len(t.Reason) > MaxReason {
			t.Reason = termtext.Head(t.Reason, MaxReason-len("…")) + "…"
		}
		if t.NodeID != id || taskProblem(t) != "" || seen[t.TaskID] {
			dropped++
			continue
		}
		seen[t.TaskID] = true
		if len(r.Tasks) == MaxTasks {
			r.Omitted++
			continue
		}
		t.NodeID = ""
		r.Tasks = append(r.Tasks, t)
	}
	return r, dropped
}

// taskProblem says which of t's fields Decode refuses; "" when none.
func taskProblem(t Task) string {
	if err := netspec.CheckNodeID(t.TaskID); err != nil { // swarm's IDs share one form
		return fmt.Sprintf("task ID %q is not a swarm ID: %v", t.TaskID, err)
	}
	if !containerID(t.ContainerID) {
		return fmt.Sprintf("task %s: container ID %q is not 64 lowercase hex digits", t.TaskID, t.ContainerID)
	}
	switch {
	case t.Reason == "":
		return fmt.Sprintf("task %s has no reason", t.TaskID)
	case len(t.Reason) > MaxReason:
		return fmt.Sprintf("task %s: reason of %d bytes, want at most %d", t.TaskID, len(t.Reason), MaxReason)
	case !termtext.Graphic(t.Reason):
		return fmt.Sprintf("task %s: reason %s: %v", t.TaskID, termtext.QuoteShort(t.Reason, MaxReason), termtext.CheckGraphic(t.Reason))
	}
	return ""
}

func containerID(id string) bool {
	if len(id) != 64 {
		return false
	}
	for _, r := range id {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return false
		}
	}
	return true
}

// KV is what publishing needs of Consul's KV store.
type KV interface {
	Put(ctx context.Context, key string, value []byte) error
}

// Publisher writes a node's report whenever the agent's set changes.
type Publisher struct {
	KV KV
	// Node and NodeID are the node's name and swarm node ID.
	Node, NodeID string
	// Changed fires when the set may have changed (register.Agent's
	// LeftOutChanged); List returns it.
	Changed <-chan struct{}
	List    func() []Task
	// Settle is how long Run waits after a change before it reads the
	// set, so that a burst of starts is written once.
	Settle time.Duration
	// Retry is how long Run waits to write again after a failed write;
	// the wait doubles with each failure in a row, up to MaxRetry (Retry
	// when below it). A write refused for good (an ACL policy from before
	// the report, which lacks its prefix) is then tried every MaxRetry,
	// not every few seconds, and warned of once.
	Retry, MaxRetry time.Duration
	// Initial is how long Run waits before its first write: the agent's
	// first resync fills the set meanwhile, and until then the report an
	// earlier agent left stands, rather than one that lists none of the
	// node's tasks yet, which would show each as a mismatch for a while.
	Initial time.Duration
	Log     *slog.Logger
}

// Run publishes the report after Initial whatever changed (an earlier
// agent's may be stale), then after each change, writing only a report
// that differs from the last it stored, until ctx ends. Each write is
// bounded (kvstore.WriteContext).
func (p *Publisher) Run(ctx context.Context) {
	log := p.Log.With("component", "unregistered")
	if !wait(ctx, p.Initial, p.Changed) {
		return
	}
	var stored []byte // the last report written; nil before the first
	var retry <-chan time.Time
	dirty := true
	var warned int
	delay := backoff.Backoff{Min: p.Retry, Max: p.MaxRetry}
	var failing string // the error of the failures in a row, logged once
	for {
		if dirty {
			r, dropped := Build(p.Node, p.NodeID, p.List())
			if dropped != warned {
				if dropped > 0 {
					log.Warn("task containers left out of the node's report of unregistered tasks: on another node by their labels, with IDs or a reason readers refuse, or repeated", "dropped", dropped)
				}
				warned = dropped
			}
			b, err := json.Marshal(r)
			switch {
			case err != nil:
				log.Warn("report of unregistered tasks not encoded", "err", err)
			case bytes.Equal(b, stored):
			default:
				wctx, cancel := kvstore.WriteContext(ctx, p.Retry)
				err = p.KV.Put(wctx, KVPrefix+p.NodeID, b)
				cancel()
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					d := delay.Next()
					// Logged when the failures begin or their error changes:
					// a policy that refuses the write for good would
					// otherwise warn at every try.
					if err.Error() != failing {
						log.Warn("report of unregistered tasks not published; trying again, less often while it fails", "retry_in", d, "err", err)
						failing = err.Error()
					}
					retry = time.After(d)
					break
				}
				if failing != "" {
					log.Info("report of unregistered tasks published again")
					failing = ""
				}
				delay.Reset()
				stored = b
				log.Debug("report of unregistered tasks published", "tasks", len(r.Tasks), "omitted", r.Omitted)
			}
			dirty = false
		}
		select {
		case <-ctx.Done():
			return
		case <-retry:
			retry, dirty = nil, true
			continue
		case <-p.Changed:
		}
		if !wait(ctx, p.Settle, p.Changed) {
			return
		}
		dirty = true
	}
}

// wait waits d, taking the signals of changed meanwhile (the read after
// it covers them); false when ctx ended first.
func wait(ctx context.Context, d time.Duration, changed <-chan struct{}) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-changed:
		case <-t.C:
			return true
		}
	}
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

// Load reads every node's report. One that Decode refuses is set apart
// with the command that removes it, and hides no other.
func Load(ctx context.Context, kv Lister) ([]Report, []BadReport, error) {
	pairs, err := kv.List(ctx, KVPrefix)
	if err != nil {
		return nil, nil, fmt.Errorf("read reports of unregistered tasks: %w", err)
	}
	var out []Report
	var bad []BadReport
	for _, p := range pairs {
		r, err := Decode(p.Key, p.Value)
		if err != nil {
			fix, why := shellword.KVRemoval(p.Key, " (a node's agent publishes its report again when it starts)")
			bad = append(bad, BadReport{Key: p.Key, Problem: err.Error() + why, Fix: fix})
			continue
		}
		out = append(out, r)
	}
	return out, bad, nil
}

// Decode reads the report stored under key and says why it cannot be
// taken: its key must be KVPrefix and a swarm node ID, which the report
// names (one node's report would speak for another's tasks), with a
// valid node name; at most MaxTasks tasks, each with a swarm task ID
// listed once, a container ID and a readable reason of at most MaxReason
// bytes.
func Decode(key string, value []byte) (Report, error) {
	id, ok := strings.CutPrefix(key, KVPrefix)
	if !ok {
		return Report{}, fmt.Errorf("%q is not a node's key: agents write %sSWARM-NODE-ID", key, KVPrefix)
	}
	if err := netspec.CheckNodeID(id); err != nil {
		return Report{}, fmt.Errorf("%q is not a node's key: %q is not a swarm node ID: %v; agents write %sSWARM-NODE-ID", key, id, err, KVPrefix)
	}
	var r Report
	if err := json.Unmarshal(value, &r); err != nil {
		return Report{}, fmt.Errorf("%s: not a report of unregistered tasks: %w", key, err)
	}
	switch {
	case r.NodeID != id:
		return Report{}, fmt.Errorf("the report under %s names swarm node %q: it would speak for another node's tasks", key, r.NodeID)
	case netspec.CheckNodeName(r.Node) != nil:
		return Report{}, fmt.Errorf("the report under %s names node %q: not a node's name: %v", key, r.Node, netspec.CheckNodeName(r.Node))
	case len(r.Tasks) > MaxTasks:
		return Report{}, fmt.Errorf("the report under %s lists %d tasks, want at most %d", key, len(r.Tasks), MaxTasks)
	case r.Omitted < 0:
		return Report{}, fmt.Errorf("the report under %s omits %d tasks, want 0 or more", key, r.Omitted)
	}
	seen := make(map[string]bool, len(r.Tasks))
	for _, t := range r.Tasks {
		if p := taskProblem(t); p != "" {
			return Report{}, fmt.Errorf("the report under %s: %s", key, p)
		}
		if seen[t.TaskID] {
			return Report{}, fmt.Errorf("the report under %s lists task %s twice", key, t.TaskID)
		}
		seen[t.TaskID] = true
	}
	r.Key = key
	return r, nil
}
