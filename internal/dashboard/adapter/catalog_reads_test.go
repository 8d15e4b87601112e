package adapter

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/consul/api"

	"github.com/underlay/underlay/internal/dashboard"
)

// fakeConsul serves the catalog and health reads of a Consul agent (1.8)
// over nodes and counts the requests by path.
type fakeConsul struct {
	nodes []fakeNode
	// noNodeDump answers /v1/internal/ui/nodes 404, as an agent without
	// that endpoint would.
	noNodeDump bool

	mu       sync.Mutex
	requests map[string]int
}

type fakeNode struct {
	name, addr string
	services   []api.AgentService
	// checks are the node's own (ServiceID "") and its services'.
	checks api.HealthChecks
}

func (f *fakeConsul) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.requests[r.URL.Path]++
	f.mu.Unlock()
	var out any
	switch p := r.URL.Path; {
	case p == "/v1/catalog/services":
		names := map[string][]string{"consul": {}}
		for _, n := range f.nodes {
			for _, s := range n.services {
				names[s.Service] = []string{}
			}
		}
		out = names
	case strings.HasPrefix(p, "/v1/health/service/"):
		name := strings.TrimPrefix(p, "/v1/health/service/")
		entries := []api.ServiceEntry{}
		for _, n := range f.nodes {
			for _, s := range n.services {
				if s.Service != name {
					continue
				}
				var checks api.HealthChecks
				for _, c := range n.checks {
					if c.ServiceID == "" || c.ServiceID == s.ID {
						checks = append(checks, c)
					}
				}
				entries = append(entries, api.ServiceEntry{Node: &api.Node{Node: n.name, Address: n.addr}, Service: &s, Checks: checks})
			}
		}
		out = entries
	case p == "/v1/internal/ui/nodes" && !f.noNodeDump:
		dump := []map[string]any{}
		for _, n := range f.nodes {
			dump = append(dump, map[string]any{"Node": n.name, "Address": n.addr, "Services": n.services, "Checks": n.checks})
		}
		out = dump
	default:
		http.NotFound(w, r)
		return
	}
	w.Header().Set("X-Consul-Index", "7")
	json.NewEncoder(w).Encode(out)
}

// count returns the requests made since the last count, in all and by
// path.
func (f *fakeConsul) count() (int, map[string]int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, by := 0, maps.Clone(f.requests)
	for _, c := range f.requests {
		n += c
	}
	clear(f.requests)
	return n, by
}

// fakeCluster is services instances spread over three nodes, each with
// a service check, the nodes with their serfHealth, and a Consul
// instance, which the dashboard leaves out.
func fakeCluster(services int) []fakeNode {
	nodes := make([]fakeNode, 3)
	for i := range nodes {
		n := &nodes[i]
		n.name, n.addr = fmt.Sprintf("node%d", i+1), fmt.Sprintf("172.31.0.%d", 11+i)
		n.checks = append(n.checks, &api.HealthCheck{Node: n.name, CheckID: "serfHealth", Name: "Serf Health Status", Status: "passing"})
	}
	nodes[0].services = append(nodes[0].services, api.AgentService{ID: "consul", Service: "consul", Port: 8300})
	for i := range services {
		n := &nodes[i%3]
		id := fmt.Sprintf("%s:svc%03d:8080", n.name, i)
		n.services = append(n.services, api.AgentService{ID: id, Service: fmt.Sprintf("svc%03d", i), Port: 8080,
			Address: fmt.Sprintf("10.200.0.%d", 10+i), Meta: map[string]string{"io.underlay.node": n.name}})
		status := "passing"
		if i%7 == 0 {
			status = "critical"
		}
		n.checks = append(n.checks, &api.HealthCheck{Node: n.name, CheckID: "service:" + id, Name: "http", Status: status,
			Output: "out " + id, ServiceID: id, ServiceName: fmt.Sprintf("svc%03d", i)})
	}
	return nodes
}

func newFakeConsul(t *testing.T, f *fakeConsul) *Catalog {
	t.Helper()
	f.requests = map[string]int{}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	c, err := api.NewClient(&api.Config{Address: strings.TrimPrefix(srv.URL, "http://"), HttpClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	return NewCatalog(c, slog.New(slog.DiscardHandler))
}

// TestCatalogReadsConstantPerRefresh: a refresh reads the catalog's
// instances with their checks in a constant number of Consul requests,
// whatever the number of services. Before, it read the list of services
// and then each service's health: 101 requests for 100 services, every
// refresh (every 5 s while a page is open), from every dashboard.
func TestCatalogReadsConstantPerRefresh(t *testing.T) {
	for _, services := range []int{1, 100} {
		f := &fakeConsul{nodes: fakeCluster(services)}
		c := newFakeConsul(t, f)
		got, err := c.Instances(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != services {
			t.Fatalf("%d services: got %d instances, want %d", services, len(got), services)
		}
		if n, by := f.count(); n > 1 {
			t.Errorf("%d services: a refresh made %d Consul requests (to %d paths), want 1", services, n, len(by))
		}
	}
}

// TestCatalogInstancesAsHealthService: the instances read in one request
// are those, with the same checks (their node's, then their own), that
// Consul's health of each service gives, which the dashboard read before
// and still reads when the agent does not answer the one request.
func TestCatalogInstancesAsHealthService(t *testing.T) {
	nodes := fakeCluster(10)
	one := &fakeConsul{nodes: nodes}
	perService := &fakeConsul{nodes: nodes, noNodeDump: true}
	want, err := newFakeConsul(t, perService).Instances(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := perService.count(); n != 1+1+10 {
		t.Errorf("without the node dump: %d requests, want 12 (the dump refused, the services, each service's health)", n)
	}
	got, err := newFakeConsul(t, one).Instances(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	sortInstances := func(is []dashboard.Instance) {
		slices.SortFunc(is, func(a, b dashboard.Instance) int { return strings.Compare(a.Node+a.ID, b.Node+b.ID) })
	}
	sortInstances(want)
	sortInstances(got)
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("instances (-per service +one read):\n%s", d)
	}
	if len(got) == 0 || len(got[0].Checks) != 2 || got[0].Checks[0].Name != "Serf Health Status" {
		t.Errorf("an instance's checks are its node's then its own; got %+v", got[0].Checks)
	}
}
