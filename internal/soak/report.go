package soak

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"time"
)

// Log is the soak's event log: every fault, every workload action, every
// violation, with its time since the start. Safe for concurrent use.
type Log struct {
	start time.Time

	mu     sync.Mutex // guards events
	events []Event
}

// Event is one line of the log.
type Event struct {
	At   time.Duration
	What string
}

// NewLog starts a log at start.
func NewLog(start time.Time) *Log { return &Log{start: start} }

// Add records what happened now.
func (l *Log) Add(now time.Time, format string, args ...any) Event {
	e := Event{At: now.Sub(l.start).Round(time.Millisecond), What: fmt.Sprintf(format, args...)}
	l.mu.Lock()
	l.events = append(l.events, e)
	l.mu.Unlock()
	return e
}

// Around returns the events within d of at.
func (l *Log) Around(at, d time.Duration) []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Event
	for _, e := range l.events {
		if e.At >= at-d && e.At <= at+d {
			out = append(out, e)
		}
	}
	return out
}

// Found is a violation with when it was seen.
type Found struct {
	At time.Duration
	Violation
}

// Report is what a soak run prints.
type Report struct {
	Seed     uint64
	Nodes    int
	Duration time.Duration // how long the run lasted
	Injected []Injection
	// Convergence is, by fault, how long each took from cleared to every
	// invariant holding again.
	Convergence map[Fault][]time.Duration
	Violations  []Found
	// Samples counts the duplicate-address samples; Listed counts, by
	// node, those in which the node's containers could be listed (a node
	// frozen or without dockerd cannot be).
	Samples int
	Listed  map[string]int
}

// Sampled records one duplicate-address sample over nodes, of which
// listed answered.
func (r *Report) Sampled(nodes, listed []string) {
	if r.Listed == nil {
		r.Listed = map[string]int{}
	}
	r.Samples++
	for _, n := range nodes {
		r.Listed[n] += 0 // a node never listed is counted, at 0
	}
	for _, n := range listed {
		r.Listed[n]++
	}
}

// Unsampled names the nodes whose containers no sample listed, and says
// so when no sample was taken at all: the duplicate-address invariant
// was never checked there, and a run with none of them proves nothing.
func (r *Report) Unsampled() error {
	if r.Samples == 0 {
		return errors.New("no duplicate-address sample was taken")
	}
	var never []string
	for _, n := range slices.Sorted(maps.Keys(r.Listed)) {
		if r.Listed[n] == 0 {
			never = append(never, n)
		}
	}
	if len(never) > 0 {
		return fmt.Errorf("no duplicate-address sample of %d listed the containers of %s", r.Samples, strings.Join(never, ", "))
	}
	return nil
}

// Converged records that an injected fault's convergence took d.
func (r *Report) Converged(f Fault, d time.Duration) {
	if r.Convergence == nil {
		r.Convergence = map[Fault][]time.Duration{}
	}
	r.Convergence[f] = append(r.Convergence[f], d)
}

// Summary is the report's last line, for scripts.
func (r *Report) Summary() string {
	return fmt.Sprintf("soak: seed=%d nodes=%d duration=%s faults=%d violations=%d",
		r.Seed, r.Nodes, r.Duration.Round(time.Second), len(r.Injected), len(r.Violations))
}

// Write prints the report: faults by kind with their convergence times,
// the violations with the events around each, and the summary line last.
func (r *Report) Write(w io.Writer, log *Log) {
	count := map[Fault]int{}
	for _, in := range r.Injected {
		count[in.Fault]++
	}
	fmt.Fprintf(w, "soak report (seed %d, %d nodes, %s)\n", r.Seed, r.Nodes, r.Duration.Round(time.Second))
	fmt.Fprintf(w, "%-24s %8s %12s %12s %12s\n", "fault", "injected", "converged", "p50", "p99")
	for _, f := range Faults {
		if count[f] == 0 {
			continue
		}
		ds := r.Convergence[f]
		fmt.Fprintf(w, "%-24s %8d %12d %12s %12s\n", f, count[f], len(ds), percentile(ds, 50), percentile(ds, 99))
	}
	if r.Samples > 0 {
		fmt.Fprintf(w, "duplicate-address samples: %d; nodes listed in them:", r.Samples)
		for _, n := range slices.Sorted(maps.Keys(r.Listed)) {
			fmt.Fprintf(w, " %s %d", n, r.Listed[n])
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "violations: %d\n", len(r.Violations))
	for _, v := range r.Violations {
		fmt.Fprintf(w, "  at %s: %s\n", v.At, v.Violation)
		if log != nil {
			for _, e := range log.Around(v.At, 10*time.Second) {
				fmt.Fprintf(w, "      %10s  %s\n", e.At, e.What)
			}
		}
	}
	fmt.Fprintln(w, r.Summary())
}

// percentile is the nearest-rank percentile p of ds; "-" for none.
func percentile(ds []time.Duration, p float64) string {
	if len(ds) == 0 {
		return "-"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(i, 0)].Round(time.Millisecond).String()
}

// Lines formats events, one a line.
func Lines(es []Event) string {
	var b strings.Builder
	for _, e := range es {
		fmt.Fprintf(&b, "%10s  %s\n", e.At, e.What)
	}
	return b.String()
}
