package netagent

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the network reconciler's Prometheus series. A nil *Metrics
// records nothing.
type Metrics struct {
	invalid prometheus.Gauge
}

// NewMetrics registers the reconciler's series on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{invalid: prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "underlay", Subsystem: "network", Name: "invalid_specs",
		Help: "Network specs in Consul this node refuses, at its last sync: each fails `underlay network create`'s checks (or cannot be decoded); nothing is changed on the host for them, and `underlay network inspect` shows why.",
	})}
	if reg != nil {
		reg.MustRegister(m.invalid)
	}
	return m
}

func (m *Metrics) setInvalid(n int) {
	if m != nil {
		m.invalid.Set(float64(n))
	}
}
