package taskmetrics

import "github.com/prometheus/client_golang/prometheus"

// Metrics counts what the node's reports leave out. A nil *Metrics
// counts nothing.
type Metrics struct {
	leftOut *prometheus.GaugeVec
}

// NewMetrics registers the task metrics' series on reg (nil: none).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{leftOut: prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "underlay", Subsystem: "task_metrics", Name: "services_left_out",
		Help: "Services left out of this node's last task metrics report, by reason: refused, figures readers refuse; size, to bring the report under Consul's value limit (512 KiB). The agent's log names them.",
	}, []string{"reason"})}
	// Both series from the start, at 0.
	m.setLeftOut(0, 0)
	if reg != nil {
		reg.MustRegister(m.leftOut)
	}
	return m
}

func (m *Metrics) setLeftOut(refused, size int) {
	if m == nil {
		return
	}
	m.leftOut.WithLabelValues("refused").Set(float64(refused))
	m.leftOut.WithLabelValues("size").Set(float64(size))
}
