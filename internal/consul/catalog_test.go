package consul

import (
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
