package register

import "github.com/prometheus/client_golang/prometheus"

// metrics are the agent's Prometheus series, namespace underlay, subsystem register.
type metrics struct {
	services       prometheus.Gauge
	writes         *prometheus.CounterVec
	errors         *prometheus.CounterVec
	warnings       prometheus.Counter
	resyncDuration prometheus.Histogram
	eventLatency   prometheus.Histogram
	reconnects     prometheus.Counter
	passesSkipped  prometheus.Counter
	prepared       *prometheus.CounterVec
	held           prometheus.Counter
	driftChecks    *prometheus.CounterVec
	queueDepth     prometheus.GaugeFunc
}

func newMetrics(reg prometheus.Registerer, q *queue) *metrics {
	const ns, sub = "underlay", "register"
	m := &metrics{
		services: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "services",
			Help: "Services this agent currently has registered in Consul.",
		}),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "consul_writes_total",
			Help: "Writes made to Consul, by operation (register, deregister, health).",
		}, []string{"op"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "errors_total",
			Help: "Failed operations, by operation (docker, consul_read, register, deregister, health).",
		}, []string{"op"}),
		warnings: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "metadata_warnings_total",
			Help: "Container metadata problems reported (each distinct problem once).",
		}),
		resyncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "resync_duration_seconds",
			Help:    "Time to read Consul and Docker and queue every container for a full resync.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		eventLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "event_to_consul_seconds",
			Help:    "Time from a Docker event to the Consul write it caused.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "docker_reconnects_total",
			Help: "Times the Docker event stream ended and was reopened.",
		}),
		passesSkipped: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "start_events_skipped_total",
			Help: "Start events that needed no inspect: the pass before, triggered by the container's network connect, already saw it running.",
		}),
		prepared: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "prepared_starts_total",
			Help: "Starts of containers read when created, by result: written (registered at the start event without reading Docker), late (the read at the create found the container already started), dropped (other events came; the container was read), corrected (the read after the start found the registration wrong and rewrote it).",
		}, []string{"result"}),
		held: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "service_id_held_total",
			Help: "Times a container wanted a service ID registered for another container, and waited for that registration to go instead of replacing it.",
		}),
		driftChecks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "drift_checks_total",
			Help: "Periodic checks of Consul against the agent's view, by result: read (Consul read and compared), deferred (the agent wrote within the period, so the check was put off).",
		}, []string{"result"}),
	}
	m.queueDepth = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: ns, Subsystem: sub, Name: "queue_depth",
		Help: "Containers waiting to be reconciled.",
	}, func() float64 { return float64(q.Len()) })
	if reg != nil {
		reg.MustRegister(m.services, m.writes, m.errors, m.warnings, m.resyncDuration, m.eventLatency, m.reconnects, m.passesSkipped, m.prepared, m.held, m.driftChecks, m.queueDepth)
	}
	return m
}
