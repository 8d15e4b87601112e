package consul

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/consul/api"

	"github.com/underlay/underlay/internal/register"
)

func TestToRegistration(t *testing.T) {
	s := register.Service{
		ID: "n1:web.1:8080", Name: "web", Address: "10.1.0.5", Port: 8080, Tags: []string{"a"},
		Meta:            map[string]string{register.MetaNode: "n1"},
		TaggedAddresses: map[string]register.TaggedAddress{"lan": {Address: "10.1.0.5", Port: 8080}},
		Checks: []register.Check{
			{ID: "c1", Name: "http", HTTP: "http://10.1.0.5:8080/health", Interval: 10 * time.Second, Timeout: 2 * time.Second,
				DeregisterCriticalFor: time.Minute, InitialStatus: "passing"},
			{ID: "c2", Name: "tcp", TCP: "10.1.0.5:8080"},
		},
		Health: &register.HealthMirror{CheckID: "n1:web.1:8080" + register.HealthCheckSuffix, Status: "passing"},
	}
	got := toRegistration(s)
	want := &api.AgentServiceRegistration{
		ID: "n1:web.1:8080", Name: "web", Address: "10.1.0.5", Port: 8080, Tags: []string{"a"},
		Meta:            map[string]string{register.MetaNode: "n1"},
		TaggedAddresses: map[string]api.ServiceAddress{"lan": {Address: "10.1.0.5", Port: 8080}},
		Checks: api.AgentServiceChecks{
			{CheckID: "c1", Name: "http", HTTP: "http://10.1.0.5:8080/health", Interval: "10s", Timeout: "2s",
				DeregisterCriticalServiceAfter: "1m0s", Status: "passing"},
			{CheckID: "c2", Name: "tcp", TCP: "10.1.0.5:8080"}, // no durations: Consul's defaults
			{CheckID: "n1:web.1:8080" + register.HealthCheckSuffix, Name: "Docker HEALTHCHECK", TTL: register.HealthMirrorTTL.String(),
				Status: "passing", Notes: "Mirrors the container's Docker HEALTHCHECK; updated by the underlay agent."},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("toRegistration (-want +got)\n%s", diff)
	}
}

// TestServices: the drift check's listing asks the agent for the node's
// services only (its filter), reads each one's container, hash and
// HEALTHCHECK mirror status, and nothing else of what the agent answers.
func TestServices(t *testing.T) {
	var filter string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/agent/services":
			filter = r.URL.Query().Get("filter")
			w.Write([]byte(`{
  "n1:web.1:8080": {"ID": "n1:web.1:8080", "Service": "web", "Port": 8080,
    "Meta": {"underlay_node": "n1", "container_id": "c1", "underlay_hash": "h1"},
    "Weights": {"Passing": 1, "Warning": 1}, "Proxy": {"Mode": "", "Expose": {}}},
  "n1:db.1:5432": {"ID": "n1:db.1:5432", "Meta": {"underlay_node": "n1", "container_id": "c2", "underlay_hash": "h2"}}
}`))
		case "/v1/agent/checks":
			w.Write([]byte(`{"n1:web.1:8080` + register.HealthCheckSuffix + `": {"CheckID": "x", "Status": "critical", "Output": "down"},
  "serfHealth": {"Status": "passing"}}`))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	t.Setenv("CONSUL_HTTP_TOKEN_FILE", "")
	c, err := NewClient(Options{Addr: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	got, err := NewCatalog(c).Services(context.Background(), "n1")
	if err != nil {
		t.Fatal(err)
	}
	if want := `Meta.` + register.MetaNode + ` == "n1"`; filter != want {
		t.Errorf("filter = %q, want %q", filter, want)
	}
	slices.SortFunc(got, func(a, b register.Registered) int { return strings.Compare(a.ID, b.ID) })
	want := []register.Registered{
		{ID: "n1:db.1:5432", ContainerID: "c2", Hash: "h2"},
		{ID: "n1:web.1:8080", ContainerID: "c1", Hash: "h1", HealthStatus: "critical"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Services (-want +got)\n%s", diff)
	}
}

// TestLocalAgentAnswersUncompressed: Go's transport asks for gzip unless
// told not to, and Consul then compresses every answer over 1 KB: from the
// local agent, the drift check's listing was compressed and decompressed
// for nothing. Before: Accept-Encoding "gzip" to a loopback agent.
func TestLocalAgentAnswersUncompressed(t *testing.T) {
	got := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case got <- r.Header.Get("Accept-Encoding"):
		default:
		}
		w.Write([]byte(`{}`))
	}))
	defer srv.Close()
	t.Setenv("CONSUL_HTTP_TOKEN_FILE", "")
	c, err := NewClient(Options{Addr: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewCatalog(c).Services(context.Background(), "n1"); err != nil {
		t.Fatal(err)
	}
	if enc := <-got; enc != "" {
		t.Errorf("a request to the local agent %s asked for Accept-Encoding %q, want none", srv.URL, enc)
	}
}

func TestLocalAgent(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:8500":          true,
		"http://127.0.0.1:8500":   true,
		"https://[::1]:8501":      true,
		"unix:///run/consul.sock": true,
		"localhost:8500":          true,
		"10.0.0.5:8500":           false,
		"https://consul.lan:8501": false,
	} {
		if got := localAgent(&api.Config{Address: addr}); got != want {
			t.Errorf("localAgent(%q) = %v, want %v", addr, got, want)
		}
	}
}

// TestClientKeepsConnections: Consul's pooled transport kept GOMAXPROCS+1
// idle connections per host, so each burst of concurrent registrations
// dialled the agent again for all but those. Before (two cores): "second
// burst of 10 opened 7 more connections".
func TestClientKeepsConnections(t *testing.T) {
	const burst = 10
	var conns atomic.Int32
	arrived := make(chan struct{}, burst)
	release := make(chan struct{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	t.Setenv("CONSUL_HTTP_TOKEN_FILE", "")
	c, err := NewClient(Options{Addr: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	cat := NewCatalog(c)
	runBurst := func() {
		var wg sync.WaitGroup
		for range burst {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := cat.Register(context.Background(), register.Service{ID: "s", Name: "s"}); err != nil {
					t.Error(err)
				}
			}()
		}
		for range burst {
			<-arrived // all in flight at once
		}
		for range burst {
			release <- struct{}{}
		}
		wg.Wait()
	}
	runBurst()
	first := conns.Load()
	runBurst()
	if more := conns.Load() - first; more > 0 {
		t.Errorf("second burst of %d opened %d more connections (first: %d); want them kept from the first", burst, more, first)
	}
}
