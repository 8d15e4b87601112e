package doctor

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/underlay/underlay/internal/kvstore"
	"github.com/underlay/underlay/internal/shellword"
)

// KVPrefix is where agents publish their node's doctor report, one key per
// node, for the dashboard (`underlay control`, /ui).
const KVPrefix = "underlay/doctor/"

// MaxEvery is the longest period between an agent's reports (its
// --doctor-interval). Readers take a longer claim as MaxEvery: a report
// is called stale only after some multiple of its period, so a period of
// years, forged or a bug, would keep a dead agent shown as up.
const MaxEvery = time.Hour

// Report is one node's doctor results as its agent published them.
type Report struct {
	Node string    `json:"node"`
	At   time.Time `json:"at"`
	// Every is the agent's period between reports; a report older than
	// about twice that means the agent stopped reporting. LoadReports
	// caps it at MaxEvery.
	Every time.Duration `json:"every"`
	// Version is the agent's underlay version.
	Version string   `json:"version,omitempty"`
	Results []Result `json:"results"`
}

// KV is what publishing and reading reports needs of Consul's KV store.
type KV interface {
	List(ctx context.Context, prefix string) ([]kvstore.Pair, error)
	Put(ctx context.Context, key string, value []byte) error
}

// Publish stores a node's report.
func Publish(ctx context.Context, kv KV, r Report) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode doctor report of %s: %w", r.Node, err)
	}
	if err := kv.Put(ctx, KVPrefix+r.Node, b); err != nil {
		return fmt.Errorf("publish doctor report of %s: %w", r.Node, err)
	}
	return nil
}

// LoadReports reads every node's report, by node name: the name its key
// gives. A report that cannot be read, or that names another node, is
// that key's failed doctor/report check: one bad key hides no other
// node's report, nor stands in for it. A period above MaxEvery is read as
// MaxEvery, with a doctor/report warning naming the claim.
func LoadReports(ctx context.Context, kv KV) ([]Report, error) {
	kvs, err := kv.List(ctx, KVPrefix)
	if err != nil {
		return nil, fmt.Errorf("read doctor reports: %w", err)
	}
	out := make([]Report, 0, len(kvs))
	for _, p := range kvs {
		node := strings.TrimPrefix(p.Key, KVPrefix)
		var r Report
		if err := json.Unmarshal(p.Value, &r); err != nil {
			r = badReport(p.Key, node, fmt.Sprintf("unreadable report %s: %v", p.Key, err))
		} else if r.Node != "" && r.Node != node {
			// Taken by its node, it would replace that node's own
			// report on the dashboard.
			r = badReport(p.Key, node, fmt.Sprintf("report %s names node %q: an agent publishes its own node's report under its name", p.Key, r.Node))
		} else if r.Every > MaxEvery {
			r.Results = append(r.Results, Result{Node: node, Check: "doctor/report", Status: Warn,
				Message: fmt.Sprintf("report %s claims a period of %s, above the agents' maximum: read as %s", p.Key, r.Every, MaxEvery),
				Fix:     shellword.KVDelete(p.Key) + fmt.Sprintf(" (its agent, with --doctor-interval at most %s, publishes its report again within its period)", MaxEvery)})
			r.Every = MaxEvery
		}
		r.Node = node
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Report) int { return strings.Compare(a.Node, b.Node) })
	return out, nil
}

// badReport is a report that cannot be shown, as its key's failed check.
func badReport(key, node, problem string) Report {
	return Report{Node: node, Results: []Result{{Node: node, Check: "doctor/report", Status: Fail, Message: problem,
		Fix: shellword.KVDelete(key) + " (a node's agent publishes its report again within its period)"}}}
}

// Recheck is how soon checks run again while one fails or warns, so that a
// repair shows within moments (a fresh node's Consul may have no leader
// yet at the first run).
const Recheck = 15 * time.Second

// RunPeriodically runs checks every period (every Recheck while any fails
// or warns) and publishes the results, until ctx ends: the agents' reports
// are what the dashboard shows per node. A report is written every time
// even when nothing changed, as the agent's heartbeat.
func RunPeriodically(ctx context.Context, kv KV, node, version string, checks []Check, period time.Duration, log *slog.Logger) {
	log = log.With("component", "doctor")
	checks = oneRunAtATime(checks)
	var lastFailed []string
	for {
		rs := Run(ctx, node, checks, nil)
		if ctx.Err() != nil {
			return
		}
		r := Report{Node: node, At: time.Now().UTC(), Every: period, Version: version, Results: rs}
		if err := Publish(ctx, kv, r); err != nil && ctx.Err() == nil {
			log.Warn("doctor report not published; will retry", "err", err)
		}
		if failed := failedChecks(rs); !slices.Equal(failed, lastFailed) {
			if len(failed) > 0 {
				log.Warn("doctor: checks failing", "checks", strings.Join(failed, ","))
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

// failedChecks names the failed checks of rs, sorted.
func failedChecks(rs []Result) []string {
	out := []string{}
	for _, r := range rs {
		if r.Status == Fail {
			out = append(out, r.Check)
		}
	}
	slices.Sort(out)
	return out
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
