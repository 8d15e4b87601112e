package dashboard

import "github.com/prometheus/client_golang/prometheus"

// metrics are the dashboard's Prometheus metrics.
type metrics struct {
	refresh      prometheus.Histogram
	sourceErrors *prometheus.CounterVec
	snapshots    prometheus.Counter
	dropped      prometheus.Counter
	logins       *prometheus.CounterVec
	scales       *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, s *Server) *metrics {
	const ns, sub = "underlay", "dashboard"
	m := &metrics{
		refresh: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "refresh_duration_seconds",
			Help:    "Time to read every source and build one snapshot.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		sourceErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "source_errors_total",
			Help: "Reads of a source (docker, consul, kv, history) that failed.",
		}, []string{"source"}),
		snapshots: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "snapshots_total",
			Help: "Snapshots published (the cluster changed).",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "streams_dropped_total",
			Help: "Event streams closed for falling behind (the page reconnects).",
		}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "logins_total",
			Help: "Logins to the page, by result (ok, refused).",
		}, []string{"result"}),
		scales: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "scale_requests_total",
			Help: "Scale requests made from the page, by HTTP status of the answer.",
		}, []string{"code"}),
	}
	if reg != nil {
		reg.MustRegister(m.refresh, m.sourceErrors, m.snapshots, m.dropped, m.logins, m.scales,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Namespace: ns, Subsystem: sub, Name: "streams",
				Help: "Open event streams (pages following the cluster).",
			}, func() float64 { return float64(s.subscribers()) }))
	}
	return m
}
