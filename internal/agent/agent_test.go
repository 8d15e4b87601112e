package agent

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

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
			h := statusHandler(func() register.Status { return tt.status }, reg)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
			if rec.Code != tt.want || !strings.Contains(rec.Body.String(), "docker") {
				t.Errorf("/healthz: %d %s, want %d with the status", rec.Code, rec.Body, tt.want)
			}
		})
	}
	rec := httptest.NewRecorder()
	statusHandler(func() register.Status { return register.Status{} }, reg).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if !strings.Contains(rec.Body.String(), "underlay_test_total") {
		t.Errorf("/metrics lacks the registry's metrics: %s", rec.Body)
	}
}
