package decommission

import (
	"context"
	"fmt"

	"github.com/underlay/underlay/internal/consul"
)

// ConsulServices is Services on Consul's catalog (consul.NodeCatalog),
// its refusals for want of rights wrapped in ErrPermissionDenied.
func ConsulServices(c *consul.NodeCatalog) Services { return consulServices{c} }

type consulServices struct{ c *consul.NodeCatalog }

func (s consulServices) UnderlayServices(ctx context.Context) ([]CatalogService, error) {
	list, err := s.c.UnderlayServices(ctx)
	out := make([]CatalogService, len(list))
	for i, x := range list {
		out[i] = CatalogService{Node: x.Node, ID: x.ID, Name: x.Name, Meta: x.Meta, NodeAlive: x.NodeAlive}
	}
	return out, err
}

func (s consulServices) Deregister(ctx context.Context, node, id string) error {
	err := s.c.Deregister(ctx, node, id)
	if consul.Forbidden(err) {
		return fmt.Errorf("%w: %w", ErrPermissionDenied, err)
	}
	return err
}
