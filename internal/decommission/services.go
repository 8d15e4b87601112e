package decommission

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/underlay/underlay/internal/register"
	"github.com/underlay/underlay/internal/termtext"
)

// ErrPermissionDenied is what a Services implementation wraps when
// Consul refuses node rm's token a deregistration: the removal goes on,
// the services named in a warning.
var ErrPermissionDenied = errors.New("permission denied")

// CatalogService is a service instance Consul's catalog lists that an
// underlay agent registered (it carries register.MetaNode).
type CatalogService struct {
	// Node is the Consul node it is registered on (the Consul agent the
	// underlay agent registered it through), ID its service ID, Name its
	// service name.
	Node, ID, Name string
	// Meta is its service meta: register.MetaNode names the underlay
	// node whose agent registered it, register.MetaSwarmNode the swarm
	// node ID of its task ("" for a container no swarm task runs).
	Meta map[string]string
	// NodeAlive says the Consul agent of Node is a live member (its
	// serfHealth check passes): it syncs its local services to the
	// catalog again, so a deregistration from the catalog does not last.
	NodeAlive bool
}

// Services is what removal needs of Consul's catalog.
type Services interface {
	// UnderlayServices lists the catalog's service instances an underlay
	// agent registered, with their Consul node's liveness.
	UnderlayServices(ctx context.Context) ([]CatalogService, error)
	// Deregister removes the instance id on Consul node node from the
	// catalog; one gone already is no error.
	Deregister(ctx context.Context, node, id string) error
}

// NodeServices sorts the underlay services of the catalog (list) into
// those of the removed node of swarm node ID id and node name name ("":
// by ID only) to deregister, and warnings about those left.
//
// A service is the node's when its task's swarm node ID is id, or, naming
// no swarm node (a container no swarm task runs), when its owner marker
// (register.MetaNode) is name: unless another node's agent has that name
// too (sameName: cloned hosts), then it may be theirs, and is left, said.
// One whose Consul agent is alive is left too, said: the agent holds it
// in its local state and registers it again at its next sync (Consul's
// anti-entropy); stopped (or `consul leave` run on its host, which takes
// its services with it), node rm run again, by swarm node ID (its name
// finds no node once its facts are gone), removes it.
func NodeServices(list []CatalogService, id, name string, sameName bool) (gone []CatalogService, warnings []string) {
	c := termtext.Cell // names any agent's token may register
	for _, s := range list {
		swarmID := s.Meta[register.MetaSwarmNode]
		switch {
		case swarmID == id && id != "":
		case swarmID == "" && name != "" && s.Meta[register.MetaNode] == name:
			if sameName {
				warnings = append(warnings, fmt.Sprintf("service %s (%s) on Consul node %s was registered by the agent of a node named %s, and another node has that name: left, as it may be that node's",
					c(s.ID), c(s.Name), c(s.Node), c(name)))
				continue
			}
		default:
			continue
		}
		if s.NodeAlive {
			// By its ID: its name finds no node once its facts are gone.
			warnings = append(warnings, fmt.Sprintf("service %s (%s) on Consul node %s is left: that node's Consul agent runs, and would register it again; stop it (or run `consul leave` on it), then run `underlay node rm %s` again",
				c(s.ID), c(s.Name), c(s.Node), c(id)))
			continue
		}
		gone = append(gone, s)
	}
	slices.SortFunc(gone, func(a, b CatalogService) int {
		return cmp.Or(strings.Compare(a.Node, b.Node), strings.Compare(a.ID, b.ID))
	})
	return gone, warnings
}

// forgetServices deregisters from the catalog the services of the
// removed node (NodeServices), adding them to out; a deregistration
// Consul refuses node rm's token is a warning.
func forgetServices(ctx context.Context, svc Services, id, name string, sameName bool, out *Removed) error {
	list, err := svc.UnderlayServices(ctx)
	if err != nil {
		return fmt.Errorf("list the services underlay agents registered in Consul's catalog: %w", err)
	}
	gone, warnings := NodeServices(list, id, name, sameName)
	out.Warnings = append(out.Warnings, warnings...)
	for _, s := range gone {
		err := svc.Deregister(ctx, s.Node, s.ID)
		switch {
		case errors.Is(err, ErrPermissionDenied):
			out.Warnings = append(out.Warnings, fmt.Sprintf("service %s (%s) on Consul node %s is left: Consul refused node rm's token its deregistration (%v): it needs node:write on that node",
				termtext.Cell(s.ID), termtext.Cell(s.Name), termtext.Cell(s.Node), err))
			continue
		case err != nil:
			return fmt.Errorf("deregister service %s of Consul node %s: %w", s.ID, s.Node, err)
		}
		out.Services = append(out.Services, s)
	}
	return nil
}
