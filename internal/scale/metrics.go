package scale

import "github.com/prometheus/client_golang/prometheus"

// metrics are the controller's Prometheus series, namespace underlay, subsystem scale.
type metrics struct {
	decisions   *prometheus.CounterVec
	errors      *prometheus.CounterVec
	conflicts   prometheus.Counter
	reconnects  prometheus.Counter
	resettles   prometheus.Counter
	services    prometheus.GaugeFunc
	subscribers prometheus.GaugeFunc
	dropped     prometheus.CounterFunc
}

func newMetrics(reg prometheus.Registerer, c *Controller) *metrics {
	const ns, sub = "underlay", "scale"
	m := &metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "decisions_total",
			Help: "Scaling decisions, by result (scaled, refused, dry_run) and reason (scaled, at_max, at_min, cooldown, paused, down_not_allowed, disabled).",
		}, []string{"result", "reason"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "errors_total",
			Help: "Failed operations, by operation (docker_list, docker_inspect, docker_tasks, docker_update, history).",
		}, []string{"op"}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "version_conflicts_total",
			Help: "Service updates retried because someone else changed the service in between.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "docker_reconnects_total",
			Help: "Times the Docker service event stream ended and was reopened.",
		}),
		resettles: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "scale_down_rewrites_total",
			Help: "Replica counts written again because swarm still wanted more tasks running than a scale-down left (it lost the removal of some).",
		}),
		services: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "services",
			Help: "Services currently autoscaled.",
		}, func() float64 { return float64(c.serviceCount()) }),
		subscribers: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "event_subscribers",
			Help: "Readers of the events endpoint.",
		}, func() float64 { return float64(c.bus.Subscribers()) }),
		dropped: prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "event_subscribers_dropped_total",
			Help: "Readers of the events endpoint dropped for falling behind.",
		}, func() float64 { return float64(c.bus.Dropped()) }),
	}
	if reg != nil {
		reg.MustRegister(m.decisions, m.errors, m.conflicts, m.reconnects, m.resettles, m.services, m.subscribers, m.dropped)
	}
	return m
}

// observe counts one decision.
func (m *metrics) observe(r Record) {
	result := "scaled"
	switch {
	case r.Refused:
		result = "refused"
	case r.DryRun:
		result = "dry_run"
	}
	m.decisions.WithLabelValues(result, string(r.Reason)).Inc()
}
