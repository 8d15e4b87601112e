package adapter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/underlay/underlay/internal/scale"
	"github.com/underlay/underlay/internal/taskmetrics"
)

// Builtin answers the built-in queries underlay:cpu and underlay:memory
// (per replica, in cores and bytes) from the usage the agents publish.
type Builtin struct {
	api *api.Client
	// MaxAge ignores a node whose report is older (its agent is gone).
	MaxAge time.Duration
}

// NewBuiltin reads agents' reports through c.
func NewBuiltin(c *api.Client) *Builtin { return &Builtin{api: c, MaxAge: time.Minute} }

// Query implements scale.MetricSource for "underlay:cpu@SERVICE" and
// "underlay:memory@SERVICE" (the controller adds the service).
func (b *Builtin) Query(ctx context.Context, query string) (float64, error) {
	what, service, ok := strings.Cut(strings.TrimPrefix(query, scale.BuiltinPrefix), "@")
	if !ok || (what != "cpu" && what != "memory") {
		return 0, fmt.Errorf("built-in metric %q: want %scpu or %smemory", query, scale.BuiltinPrefix, scale.BuiltinPrefix)
	}
	pairs, _, err := b.api.KV().List(taskmetrics.KVPrefix, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return 0, fmt.Errorf("read task metrics: %w", err)
	}
	var reports []taskmetrics.Report
	for _, p := range pairs {
		var r taskmetrics.Report
		if err := json.Unmarshal(p.Value, &r); err == nil {
			reports = append(reports, r)
		}
	}
	cpu, mem, found := taskmetrics.PerReplica(reports, service, time.Now(), b.MaxAge)
	if !found {
		return 0, fmt.Errorf("no agent reports tasks of %s", service)
	}
	if what == "cpu" {
		return cpu, nil
	}
	return mem, nil
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
