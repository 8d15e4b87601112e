package consul

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/underlay/underlay/internal/register"
)

// ServiceInstance is a service instance of Consul's catalog.
type ServiceInstance struct {
	// Node is the Consul node it is registered on, ID its service ID.
	Node, ID, Name string
	Meta           map[string]string
	// NodeAlive says Node's serfHealth check passes: its Consul agent is
	// a live member, which syncs its local services to the catalog again.
	NodeAlive bool
}

// NodeCatalog reads and writes Consul's catalog itself, not an agent's
// local state: the services other nodes' agents registered, for node rm.
type NodeCatalog struct {
	api *api.Client
	// Timeout bounds each call.
	Timeout time.Duration
}

// NewNodeCatalog wraps c.
func NewNodeCatalog(c *api.Client) *NodeCatalog {
	return &NodeCatalog{api: c, Timeout: 10 * time.Second}
}

// UnderlayServices lists the catalog's service instances an underlay
// agent registered (they carry register.MetaNode), with whether their
// Consul node's agent is alive.
func (c *NodeCatalog) UnderlayServices(ctx context.Context) ([]ServiceInstance, error) {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	q := (&api.QueryOptions{}).WithContext(ctx)
	names, _, err := c.api.Catalog().Services(q)
	if err != nil {
		return nil, fmt.Errorf("list catalog services: %w", err)
	}
	var out []ServiceInstance
	alive := map[string]bool{}
	for _, name := range slices.Sorted(maps.Keys(names)) {
		list, _, err := c.api.Catalog().Service(name, "", q)
		if err != nil {
			return nil, fmt.Errorf("list catalog service %s: %w", name, err)
		}
		for _, s := range list {
			if _, ok := s.ServiceMeta[register.MetaNode]; !ok {
				continue
			}
			out = append(out, ServiceInstance{Node: s.Node, ID: s.ServiceID, Name: s.ServiceName, Meta: s.ServiceMeta})
			alive[s.Node] = false
		}
	}
	for node := range alive {
		checks, _, err := c.api.Health().Node(node, q)
		if err != nil {
			return nil, fmt.Errorf("read the health of Consul node %s: %w", node, err)
		}
		for _, ch := range checks {
			if ch.CheckID == "serfHealth" && ch.Status == api.HealthPassing {
				alive[node] = true
			}
		}
	}
	for i := range out {
		out[i].NodeAlive = alive[out[i].Node]
	}
	return out, nil
}

// Deregister removes service id of Consul node node from the catalog
// (Consul answers success for one gone already). Its agent, if alive,
// registers it again at its next sync.
func (c *NodeCatalog) Deregister(ctx context.Context, node, id string) error {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	_, err := c.api.Catalog().Deregister(&api.CatalogDeregistration{Node: node, ServiceID: id}, (&api.WriteOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("deregister service %s of Consul node %s from the catalog: %w", id, node, err)
	}
	return nil
}

// Forbidden says Consul refused a call err is of to the token (403).
func Forbidden(err error) bool {
	var se api.StatusError
	return errors.As(err, &se) && se.Code == 403
}
