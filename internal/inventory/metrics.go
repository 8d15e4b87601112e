package inventory

import "github.com/prometheus/client_golang/prometheus"

// Metrics counts what the node's published inventory leaves out or
// shortens to fit Consul's value limit. A nil *Metrics counts nothing.
type Metrics struct {
	leftOut, shortened prometheus.Gauge
}

// NewMetrics registers the inventory's series on reg (nil: none).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		leftOut: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "underlay", Subsystem: "inventory", Name: "entries_left_out",
			Help: "Entries (container addresses) left out of this node's last published inventory to bring it under Consul's value limit (512 KiB): listed by address only (underlay ips: not reported), or past a few thousand, counted only. The agent's log names the first.",
		}),
		shortened: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "underlay", Subsystem: "inventory", Name: "entries_shortened",
			Help: "Entries of this node's last published inventory whose container, service, slot or task names were shortened to bring it under Consul's value limit (512 KiB).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.leftOut, m.shortened)
	}
	return m
}

func (m *Metrics) set(leftOut, shortened int) {
	if m == nil {
		return
	}
	m.leftOut.Set(float64(leftOut))
	m.shortened.Set(float64(shortened))
}
