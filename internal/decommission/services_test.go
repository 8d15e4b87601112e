package decommission

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/underlay/underlay/internal/register"
)

// catalog is Consul's catalog of underlay services, in memory: refused
// lists the service IDs whose deregistration Consul refuses the token.
type catalog struct {
	mu       sync.Mutex // guards following fields
	services []CatalogService
	refused  map[string]bool
}

func (c *catalog) UnderlayServices(context.Context) ([]CatalogService, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.services), nil
}

func (c *catalog) Deregister(_ context.Context, node, id string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.refused[id] {
		return fmt.Errorf("Unexpected response code: 403 (Permission denied): %w", ErrPermissionDenied)
	}
	c.services = slices.DeleteFunc(c.services, func(s CatalogService) bool { return s.Node == node && s.ID == id })
	return nil
}

func (c *catalog) ids() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, s := range c.services {
		out = append(out, s.Node+"/"+s.ID)
	}
	slices.Sort(out)
	return out
}

func svc(node, id, owner, swarmID string, alive bool) CatalogService {
	meta := map[string]string{register.MetaNode: owner}
	if swarmID != "" {
		meta[register.MetaSwarmNode] = swarmID
	}
	return CatalogService{Node: node, ID: id, Name: strings.Split(id, ":")[1], Meta: meta, NodeAlive: alive}
}

// TestRemoveDeregistersServices: node rm left in Consul's catalog the
// services the removed node's agent registered (its Consul agent failed,
// never left): listed as healthy or critical instances of a node that
// is gone. They are deregistered, and said: those of its swarm tasks
// (by swarm node ID) and its other containers (by its name); left, and
// warned of, those whose Consul agent still runs (it would register them
// again), those Consul refuses node rm's token, and those of a
// container named by a name another live node has too. Run again, once
// the facts are gone, node rm finds the name in its record.
func TestRemoveDeregistersServices(t *testing.T) {
	ctx := context.Background()
	const gone, live = "gone000000000000000000000", "live000000000000000000000"
	cat := &catalog{services: []CatalogService{
		svc("h-old", "old:web.1.x:80", "old", gone, false),
		svc("h-old", "old:db:5432", "old", "", false),
		svc("h-old", "old:refused:1", "old", "", false),
		svc("h-old", "old:other-task:80", "old", live, false), // a task of another swarm node: not the node's
		svc("h-old2", "old:still:80", "old", gone, true),      // its Consul agent runs
		svc("h-new", "new:web.2.y:80", "new", live, true),
	}, refused: map[string]bool{"old:refused:1": true}}
	c := newCluster(t)
	got, err := Remove(ctx, c.kv, swarmNodes{live: "ready"}, "old", Options{Stale: time.Minute, Services: cat})
	if err != nil {
		t.Fatal(err)
	}
	var deregistered []string
	for _, s := range got.Services {
		deregistered = append(deregistered, s.Node+"/"+s.ID)
	}
	if diff := cmp.Diff([]string{"h-old/old:db:5432", "h-old/old:web.1.x:80"}, deregistered); diff != "" {
		t.Errorf("deregistered (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"h-new/new:web.2.y:80", "h-old/old:other-task:80", "h-old/old:refused:1", "h-old2/old:still:80"}, cat.ids()); diff != "" {
		t.Errorf("catalog after the removal (-want +got):\n%s", diff)
	}
	// Run again by name, the facts gone, node rm finds no node: the
	// warning names the command that finds it, by its swarm node ID.
	for _, want := range []string{"old:refused:1 (refused) on Consul node h-old is left: Consul refused", "old:still:80 (still) on Consul node h-old2 is left: that node's Consul agent runs",
		"then run `underlay node rm " + gone + "` again"} {
		if !slices.ContainsFunc(got.Warnings, func(w string) bool { return strings.Contains(w, want) }) {
			t.Errorf("warnings %q, want one saying %q", got.Warnings, want)
		}
	}
	// Its Consul agent stopped, and the token given rights: run again by
	// ID, facts gone, node rm takes the name from its record.
	cat.mu.Lock()
	cat.refused = nil
	for i := range cat.services {
		cat.services[i].NodeAlive = cat.services[i].Node == "h-new"
	}
	cat.mu.Unlock()
	if _, err := Remove(ctx, c.kv, swarmNodes{live: "ready"}, gone, Options{Stale: time.Minute, Services: cat}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"h-new/new:web.2.y:80", "h-old/old:other-task:80"}, cat.ids()); diff != "" {
		t.Errorf("catalog after the removal run again (-want +got):\n%s", diff)
	}
}

// TestNodeServicesOfASharedName: a container's service names its node
// by name only: when another live node has the name too (cloned hosts)
// it may be theirs, and is left, said; a task's names its swarm node.
func TestNodeServicesOfASharedName(t *testing.T) {
	const gone, live = "gone000000000000000000000", "live000000000000000000000"
	list := []CatalogService{
		svc("h1", "old:db:5432", "old", "", false),
		svc("h1", "old:web.1.x:80", "old", gone, false),
		svc("h2", "old:web.2.y:80", "old", live, false),
	}
	gone1, warnings := NodeServices(list, gone, "old", true)
	if len(gone1) != 1 || gone1[0].ID != "old:web.1.x:80" {
		t.Errorf("services of the node: %+v, want its task's alone", gone1)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "old:db:5432") || !strings.Contains(warnings[0], "another node has that name") {
		t.Errorf("warnings %q, want one of old:db:5432, whose name another node has", warnings)
	}
}
