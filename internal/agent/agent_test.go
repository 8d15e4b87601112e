package agent

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/underlay/underlay/internal/httpserve"
	"github.com/underlay/underlay/internal/register"
)

func TestStatusHandler(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "underlay_test_total", Help: "t"}))
	tests := []struct {
		name   string
		status register.Status
		want   int
	}{
		{"healthy", register.Status{DockerConnected: true, ConsulReachable: true}, http.StatusOK},
		{"docker down", register.Status{ConsulReachable: true}, http.StatusServiceUnavailable},
		{"consul down", register.Status{DockerConnected: true}, http.StatusServiceUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := statusHandler(func() register.Status { return tt.status }, reg, httpserve.AllowedHosts{})
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
			if rec.Code != tt.want || !strings.Contains(rec.Body.String(), "docker") {
				t.Errorf("/healthz: %d %s, want %d with the status", rec.Code, rec.Body, tt.want)
			}
		})
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/metrics", nil)
	req.Host = "127.0.0.1:9465"
	statusHandler(func() register.Status { return register.Status{} }, reg, httpserve.AllowedHosts{}).ServeHTTP(rec, req)
	if !strings.Contains(rec.Body.String(), "underlay_test_total") {
		t.Errorf("/metrics lacks the registry's metrics: %s", rec.Body)
	}
}

// TestStatusRefusesForeignHosts: the status server listens on loopback by
// default, which a page whose name was rebound to 127.0.0.1 reaches with
// that name as Host; /metrics names the node's services and containers,
// and is answered to addresses, localhost and the allowed names only.
// /healthz, which tells no more than whether Docker and Consul answer,
// is answered whatever the Host (health checkers use names of their own),
// none included. Before, /metrics was served to any Host; then still to
// a request without one (HTTP/1.0).
func TestStatusRefusesForeignHosts(t *testing.T) {
	reg := prometheus.NewRegistry()
	hosts, err := httpserve.NewAllowedHosts("node1.example")
	if err != nil {
		t.Fatal(err)
	}
	h := statusHandler(func() register.Status { return register.Status{DockerConnected: true, ConsulReachable: true} }, reg, hosts)
	for _, tt := range []struct {
		host, path string
		want       int
	}{
		{"rebind.example:9465", "/metrics", http.StatusMisdirectedRequest},
		{"127.0.0.1:9465", "/metrics", http.StatusOK},
		{"localhost:9465", "/metrics", http.StatusOK},
		{"node1.example:9465", "/metrics", http.StatusOK},
		{"rebind.example:9465", "/healthz", http.StatusOK},
		{"", "/metrics", http.StatusMisdirectedRequest}, // HTTP/1.0 without Host
		{"", "/healthz", http.StatusOK},
	} {
		req := httptest.NewRequest("GET", tt.path, nil)
		req.Host = tt.host
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tt.want {
			t.Errorf("Host %s, GET %s: %d %q, want %d", tt.host, tt.path, rec.Code, rec.Body, tt.want)
		}
	}
}
