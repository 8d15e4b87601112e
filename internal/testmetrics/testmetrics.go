// Package testmetrics reads back, in unit tests, what a component counted
// on its Prometheus registry.
package testmetrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Gauge is the value of the gauge name of no label registered on reg, or
// -1 when there is none.
func Gauge(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	return value(t, reg, name, (*dto.Metric).GetGauge)
}

// Counter is the value of the counter name of no label registered on reg,
// or -1 when there is none.
func Counter(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	return value(t, reg, name, (*dto.Metric).GetCounter)
}

// value reads the one series of name through of, its type's part.
func value[V interface{ GetValue() float64 }](t testing.TB, reg *prometheus.Registry, name string, of func(*dto.Metric) V) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name && len(f.GetMetric()) == 1 {
			return of(f.GetMetric()[0]).GetValue()
		}
	}
	return -1
}
