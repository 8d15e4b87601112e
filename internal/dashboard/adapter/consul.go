package adapter

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/underlay/underlay/internal/backoff"
	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/dashboard"
)

// Catalog adapts a Consul client to dashboard.Catalog.
type Catalog struct {
	api *api.Client
	log *slog.Logger
}

// NewCatalog wraps c.
func NewCatalog(c *api.Client, log *slog.Logger) *Catalog {
	return &Catalog{api: c, log: log.With("component", "dashboard_catalog")}
}

// Instances implements dashboard.Catalog: every instance of every service
// but Consul's own, with its node's and its own checks, as Consul
// aggregates them.
func (c *Catalog) Instances(ctx context.Context) ([]dashboard.Instance, error) {
	q := (&api.QueryOptions{}).WithContext(ctx)
	names, _, err := c.api.Catalog().Services(q)
	if err != nil {
		return nil, fmt.Errorf("list catalog services: %w", err)
	}
	var out []dashboard.Instance
	for _, name := range slices.Sorted(maps.Keys(names)) {
		if name == "consul" {
			continue
		}
		entries, _, err := c.api.Health().Service(name, "", false, q)
		if err != nil {
			return nil, fmt.Errorf("health of service %s: %w", name, err)
		}
		for _, e := range entries {
			out = append(out, instance(e))
		}
	}
	return out, nil
}

func instance(e *api.ServiceEntry) dashboard.Instance {
	i := dashboard.Instance{ID: e.Service.ID, Service: e.Service.Service, Address: e.Service.Address, Port: e.Service.Port, Meta: e.Service.Meta}
	if e.Node != nil {
		i.Node = e.Node.Node
		if i.Address == "" {
			i.Address = e.Node.Address
		}
	}
	for _, ch := range e.Checks {
		i.Checks = append(i.Checks, dashboard.Check{Name: ch.Name, Status: ch.Status, Output: ch.Output})
	}
	return i
}

// Changes implements dashboard.Catalog with two blocking queries: on every
// check's state and on the list of services.
func (c *Catalog) Changes(ctx context.Context) <-chan struct{} {
	out := make(chan struct{}, 1)
	go c.watch(ctx, out, "health", func(q *api.QueryOptions) (uint64, error) {
		_, meta, err := c.api.Health().State(api.HealthAny, q)
		if err != nil {
			return 0, err
		}
		return meta.LastIndex, nil
	})
	go c.watch(ctx, out, "catalog", func(q *api.QueryOptions) (uint64, error) {
		_, meta, err := c.api.Catalog().Services(q)
		if err != nil {
			return 0, err
		}
		return meta.LastIndex, nil
	})
	return out
}

// watch repeats a blocking query, signalling each time its index moves,
// until ctx ends; it waits with backoff while Consul fails.
func (c *Catalog) watch(ctx context.Context, out chan struct{}, what string, query func(*api.QueryOptions) (uint64, error)) {
	var index uint64
	failed := false
	delays := backoff.Backoff{Min: 500 * time.Millisecond, Max: pause}
	for ctx.Err() == nil {
		// After an error read at once: Consul may have restarted empty,
		// and a wait on an index it has not reached blocks until the
		// wait time, five minutes.
		wait := index
		if failed {
			wait = 0
		}
		got, err := query((&api.QueryOptions{WaitIndex: wait, WaitTime: 5 * time.Minute}).WithContext(ctx))
		failed = err != nil
		if err != nil {
			if ctx.Err() == nil {
				c.log.Debug("consul watch failed; retrying", "watch", what, "err", err)
			}
			backoff.Sleep(ctx, delays.Next())
			continue
		}
		delays.Reset()
		var changed bool
		if index, changed = consul.NextIndex(index, got); changed {
			signal(out)
		}
	}
}
