package consul

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/underlay/underlay/internal/register"
)

// catalogServer answers Consul's catalog and health endpoints NodeCatalog
// calls: services "web" (an underlay service on a failed node, h-old, and
// one on a live node, h-new) and "consul" (no underlay marker); a
// deregistration of forbidden is refused (403).
type catalogServer struct {
	mu      sync.Mutex // guards following fields
	deregs  []string
	badPath []string
}

func (s *catalogServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	meta := func(node string) map[string]string { return map[string]string{register.MetaNode: node} }
	var body any
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/v1/catalog/services":
		body = map[string][]string{"web": nil, "consul": nil}
	case r.Method == http.MethodGet && r.URL.Path == "/v1/catalog/service/web":
		body = []map[string]any{
			{"Node": "h-old", "ServiceID": "old:web.1:80", "ServiceName": "web", "ServiceMeta": meta("old")},
			{"Node": "h-new", "ServiceID": "new:web.2:80", "ServiceName": "web", "ServiceMeta": meta("new")},
		}
	case r.Method == http.MethodGet && r.URL.Path == "/v1/catalog/service/consul":
		body = []map[string]any{{"Node": "h-new", "ServiceID": "consul", "ServiceName": "consul"}}
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/v1/health/node/"):
		status := "critical"
		if strings.TrimPrefix(r.URL.Path, "/v1/health/node/") == "h-new" {
			status = "passing"
		}
		body = []map[string]any{{"CheckID": "serfHealth", "Status": status}, {"CheckID": "other", "Status": "passing"}}
	case r.Method == http.MethodPut && r.URL.Path == "/v1/catalog/deregister":
		b, _ := io.ReadAll(r.Body)
		var d struct{ Node, ServiceID string }
		json.Unmarshal(b, &d)
		if d.ServiceID == "forbidden" {
			http.Error(w, "Permission denied", http.StatusForbidden)
			return
		}
		s.deregs = append(s.deregs, d.Node+"/"+d.ServiceID)
		body = true
	default:
		s.badPath = append(s.badPath, r.Method+" "+r.URL.Path)
		http.NotFound(w, r)
		return
	}
	json.NewEncoder(w).Encode(body)
}

// TestNodeCatalog: node rm's view of Consul's catalog lists the services
// underlay agents registered, with their Consul node's liveness (its
// serfHealth check), and deregisters one by its node and ID; a refusal
// is told apart (Forbidden).
func TestNodeCatalog(t *testing.T) {
	srv := &catalogServer{}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	c, err := NewClient(Options{Addr: hs.URL})
	if err != nil {
		t.Fatal(err)
	}
	nc := NewNodeCatalog(c)
	ctx := context.Background()
	got, err := nc.UnderlayServices(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []ServiceInstance{
		{Node: "h-old", ID: "old:web.1:80", Name: "web", Meta: map[string]string{register.MetaNode: "old"}},
		{Node: "h-new", ID: "new:web.2:80", Name: "web", Meta: map[string]string{register.MetaNode: "new"}, NodeAlive: true},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("underlay services (-want +got):\n%s", diff)
	}
	if err := nc.Deregister(ctx, "h-old", "old:web.1:80"); err != nil {
		t.Fatal(err)
	}
	if err := nc.Deregister(ctx, "h-old", "forbidden"); err == nil || !Forbidden(err) || !strings.Contains(err.Error(), "forbidden") {
		t.Errorf("refused deregistration: %v, want Forbidden, naming the service", err)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if diff := cmp.Diff([]string{"h-old/old:web.1:80"}, srv.deregs); diff != "" || len(srv.badPath) > 0 {
		t.Errorf("deregistrations (-want +got):\n%s\nunexpected calls: %v", diff, srv.badPath)
	}
}
