package adapter

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/underlay/underlay/internal/backoff"
	"github.com/underlay/underlay/internal/dashboard"
	"github.com/underlay/underlay/internal/kvstore"
)

// Catalog adapts a Consul client to dashboard.Catalog.
type Catalog struct {
	api *api.Client
	log *slog.Logger
	// noDump is set once the agent answered that it has no node dump
	// (nodeDumpPath): Instances then reads each service's health.
	noDump atomic.Bool
}

// NewCatalog wraps c.
func NewCatalog(c *api.Client, log *slog.Logger) *Catalog {
	return &Catalog{api: c, log: log.With("component", "dashboard_catalog")}
}

// nodeDumpPath is Consul's node dump (Internal.NodeDump, what its own UI
// reads): every node with its services and checks, in one request. It is
// an internal endpoint, not a documented one, so an agent that answers it
// 404 is read service by service instead.
const nodeDumpPath = "/v1/internal/ui/nodes"

// Instances implements dashboard.Catalog: every instance of every service
// but Consul's own, with its node's and its own checks, as Consul's health
// of the service aggregates them. One request whatever the number of
// services: each refresh reads it (every 5 s while a page is open).
func (c *Catalog) Instances(ctx context.Context) ([]dashboard.Instance, error) {
	if !c.noDump.Load() {
		out, err := c.dumpInstances(ctx)
		var se api.StatusError
		if !errors.As(err, &se) || se.Code != http.StatusNotFound {
			return out, err
		}
		c.noDump.Store(true)
		c.log.Info("consul has no node dump; reading the health of each service", "path", nodeDumpPath, "err", err)
	}
	return c.serviceInstances(ctx)
}

// dumpNode is a node of the node dump (structs.NodeInfo), with only what
// the dashboard reads of it: the rest of its services' and checks' fields
// differ from the api package's types across Consul versions.
type dumpNode struct {
	Node     string
	Address  string
	Services []struct {
		ID, Service, Address string
		Port                 int
		Meta                 map[string]string
	}
	Checks []struct {
		ServiceID, Name, Status, Output string
	}
}

// dumpInstances reads the instances from the node dump, in one request.
func (c *Catalog) dumpInstances(ctx context.Context) ([]dashboard.Instance, error) {
	var dump []dumpNode
	if _, err := c.api.Raw().Query(nodeDumpPath, &dump, (&api.QueryOptions{}).WithContext(ctx)); err != nil {
		return nil, fmt.Errorf("read consul node dump %s: %w", nodeDumpPath, err)
	}
	var out []dashboard.Instance
	for _, n := range dump {
		for _, svc := range n.Services {
			if svc.Service == "consul" {
				continue
			}
			i := dashboard.Instance{Node: n.Node, ID: svc.ID, Service: svc.Service, Address: cmp.Or(svc.Address, n.Address), Port: svc.Port, Meta: svc.Meta}
			// As the health of a service lists them: the node's checks,
			// then the instance's own.
			for _, own := range []bool{false, true} {
				for _, ch := range n.Checks {
					if (ch.ServiceID != "") == own && (!own || ch.ServiceID == svc.ID) {
						i.Checks = append(i.Checks, dashboard.Check{Name: ch.Name, Status: ch.Status, Output: ch.Output})
					}
				}
			}
			out = append(out, i)
		}
	}
	// In the order the health of each service, by name, gave them.
	slices.SortStableFunc(out, func(a, b dashboard.Instance) int {
		return cmp.Or(strings.Compare(a.Service, b.Service), strings.Compare(a.Node, b.Node), strings.Compare(a.ID, b.ID))
	})
	return out, nil
}

// serviceInstances reads the instances service by service: one request
// for the list, and one per service.
func (c *Catalog) serviceInstances(ctx context.Context) ([]dashboard.Instance, error) {
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
	var index kvstore.BlockingIndex // Consul's rules, a failed read included
	delays := backoff.Backoff{Min: 500 * time.Millisecond, Max: pause}
	for ctx.Err() == nil {
		rctx, cancel := kvstore.BlockingContext(ctx, index.Wait())
		got, err := query((&api.QueryOptions{WaitIndex: index.Next(), WaitTime: index.Wait()}).WithContext(rctx))
		cancel()
		if err != nil {
			index.Failed()
			if ctx.Err() == nil {
				c.log.Debug("consul watch failed; retrying", "watch", what, "err", err)
			}
			backoff.Sleep(ctx, delays.Next())
			continue
		}
		delays.Reset()
		if index.Answered(got) {
			signal(out)
		}
	}
}
