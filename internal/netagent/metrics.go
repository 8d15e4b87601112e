package netagent

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the network reconciler's Prometheus series. A nil *Metrics
// records nothing.
type Metrics struct {
	invalid prometheus.Gauge
	gaveUp  prometheus.Counter
}

// NewMetrics registers the reconciler's series on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		invalid: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "underlay", Subsystem: "network", Name: "invalid_specs",
			Help: "Network specs in Consul this node refuses, at its last sync: each fails `underlay network create`'s checks (or cannot be decoded); nothing is changed on the host for them, and `underlay network inspect` shows why.",
		}),
		gaveUp: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "underlay", Subsystem: "network", Name: "consul_calls_given_up_total",
			Help: "Consul calls of the network sync (a read, a lease, a report) given up at their deadline, 10 s or the sync period when shorter: a Consul agent that does not answer. The sync goes on without them and the next one tries again.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.invalid, m.gaveUp)
	}
	return m
}

func (m *Metrics) setInvalid(n int) {
	if m != nil {
		m.invalid.Set(float64(n))
	}
}

func (m *Metrics) countGivenUp() {
	if m != nil {
		m.gaveUp.Inc()
	}
}
