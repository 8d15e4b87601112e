package taskmetrics

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts what the node's reports leave out. A nil *Metrics
// counts nothing.
type Metrics struct {
	leftOut      *prometheus.GaugeVec
	tasksLeftOut prometheus.Gauge
}

// NewMetrics registers the task metrics' series on reg (nil: none).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{leftOut: prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "underlay", Subsystem: "task_metrics", Name: "services_left_out",
		Help: "Services left out of this node's last task metrics report, by reason: refused, figures readers refuse; size, to bring the report under Consul's value limit (512 KiB). The agent's log names them.",
	}, []string{"reason"}), tasksLeftOut: prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "underlay", Subsystem: "task_metrics", Name: "tasks_left_out",
		Help: fmt.Sprintf("Task containers left out of this node's last task metrics report: their stats read failed %d rounds in a row or more (one that fails fewer rounds holds the report back). The agent's log names them.", LeaveOutAfter),
	})}
	// Both series from the start, at 0.
	m.setLeftOut(0, 0)
	if reg != nil {
		reg.MustRegister(m.leftOut, m.tasksLeftOut)
	}
	return m
}

func (m *Metrics) setTasksLeftOut(n int) {
	if m == nil {
		return
	}
	m.tasksLeftOut.Set(float64(n))
}

func (m *Metrics) setLeftOut(refused, size int) {
	if m == nil {
		return
	}
	m.leftOut.WithLabelValues("refused").Set(float64(refused))
	m.leftOut.WithLabelValues("size").Set(float64(size))
}
