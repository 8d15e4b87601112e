package adapter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/underlay/underlay/internal/scale"
	"github.com/underlay/underlay/internal/taskmetrics"
)

// Builtin answers the built-in queries underlay:cpu and underlay:memory
// (per replica, in cores and bytes) from the usage the agents publish.
type Builtin struct {
	kv  taskmetrics.Lister
	log *slog.Logger
	// MaxAge ignores a node whose report is older (its agent is gone).
	MaxAge time.Duration

	// now is the clock: time.Now but in tests.
	now func() time.Time

	mu sync.Mutex
	// heard is when each node's report was last seen changed, by this
	// clock (see taskmetrics.Hear).
	heard taskmetrics.Heard
	// warned holds the reports not counted that were logged, with their
	// problem, so that each is logged once and not at every query.
	warned map[string]string
}

// NewBuiltin reads agents' reports through kv.
func NewBuiltin(kv taskmetrics.Lister, log *slog.Logger) *Builtin {
	return &Builtin{kv: kv, log: log.With("component", "scale_builtin"), MaxAge: time.Minute, now: time.Now, warned: map[string]string{}}
}

// Query implements scale.MetricSource for "underlay:cpu@SERVICE" and
// "underlay:memory@SERVICE" (the controller adds the service).
func (b *Builtin) Query(ctx context.Context, query string) (float64, error) {
	what, service, ok := strings.Cut(strings.TrimPrefix(query, scale.BuiltinPrefix), "@")
	if !ok || (what != "cpu" && what != "memory") {
		return 0, fmt.Errorf("built-in metric %q: want %scpu or %smemory", query, scale.BuiltinPrefix, scale.BuiltinPrefix)
	}
	now := b.now()
	reports, bad, err := taskmetrics.Load(ctx, b.kv)
	if err != nil {
		return 0, err
	}
	b.noteBad(bad)
	b.hear(reports, now)
	cpu, mem, found := taskmetrics.PerReplica(reports, service, now, b.MaxAge)
	if !found {
		if len(bad) > 0 {
			left := fmt.Sprintf("%d reports", len(bad))
			if len(bad) == 1 {
				left = "1 report"
			}
			return 0, fmt.Errorf("no agent reports tasks of %s (%s not counted; underlay doctor names them under taskmetrics/reports)", service, left)
		}
		return 0, fmt.Errorf("no agent reports tasks of %s", service)
	}
	if what == "cpu" {
		return cpu, nil
	}
	return mem, nil
}

// hear dates reports by when this clock saw them change.
func (b *Builtin) hear(reports []taskmetrics.Report, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.heard = taskmetrics.Hear(reports, b.heard, now)
}

// noteBad logs each report not counted once, while it stays so.
func (b *Builtin) noteBad(bad []taskmetrics.BadReport) {
	b.mu.Lock()
	defer b.mu.Unlock()
	seen := make(map[string]bool, len(bad))
	for _, r := range bad {
		seen[r.Key] = true
		if b.warned[r.Key] == r.Problem {
			continue
		}
		b.warned[r.Key] = r.Problem
		b.log.Warn("task metrics report not counted by underlay:cpu and underlay:memory", "key", r.Key, "err", r.Problem, "fix", r.Fix)
	}
	for k := range b.warned {
		if !seen[k] {
			delete(b.warned, k)
		}
	}
}

// Metrics sends built-in queries to Builtin and the rest to Prometheus.
type Metrics struct {
	Builtin    scale.MetricSource
	Prometheus scale.MetricSource // nil without --prometheus-url
}

// Query implements scale.MetricSource.
func (m Metrics) Query(ctx context.Context, query string) (float64, error) {
	if strings.HasPrefix(query, scale.BuiltinPrefix) {
		return m.Builtin.Query(ctx, query)
	}
	if m.Prometheus == nil {
		return 0, errors.New("a Prometheus query, but control has no --prometheus-url")
	}
	return m.Prometheus.Query(ctx, query)
}
