package scale

import (
	"math"
	"testing"
)

func TestDesiredReplicas(t *testing.T) {
	tests := []struct {
		name    string
		current int
		metrics []Metric
		want    int
	}{
		{name: "no metrics keeps current", current: 3, want: 3},
		{name: "on target", current: 3, metrics: []Metric{{Value: 50, Target: 50}}, want: 3},
		{name: "within tolerance up", current: 4, metrics: []Metric{{Value: 54, Target: 50}}, want: 4},
		{name: "within tolerance down", current: 4, metrics: []Metric{{Value: 46, Target: 50}}, want: 4},
		{name: "at the tolerance edge", current: 10, metrics: []Metric{{Value: 55, Target: 50}}, want: 10},
		{name: "double load doubles", current: 3, metrics: []Metric{{Value: 100, Target: 50}}, want: 6},
		{name: "rounded up", current: 3, metrics: []Metric{{Value: 70, Target: 50}}, want: 5},
		{name: "no float noise", current: 3, metrics: []Metric{{Value: 0.9, Target: 0.3}}, want: 9},
		// 2.1/0.7 is 3.0000000000000004 in floats: 3 × that is not 10.
		{name: "no float noise in the ratio", current: 3, metrics: []Metric{{Value: 2.1, Target: 0.7}}, want: 9},
		{name: "half load halves", current: 4, metrics: []Metric{{Value: 25, Target: 50}}, want: 2},
		{name: "idle goes to zero", current: 4, metrics: []Metric{{Value: 0, Target: 50}}, want: 0},
		{name: "max over metrics", current: 2, metrics: []Metric{{Value: 25, Target: 50}, {Value: 150, Target: 50}, {Value: 100, Target: 50}}, want: 6},
		{name: "missing metric never lowers", current: 4, metrics: []Metric{{Value: 10, Target: 50}, {Missing: true}}, want: 4},
		{name: "missing metric does not stop an up", current: 4, metrics: []Metric{{Value: 100, Target: 50}, {Missing: true}}, want: 8},
		{name: "only missing metrics keep current", current: 4, metrics: []Metric{{Missing: true}}, want: 4},
		{name: "zero target is unusable", current: 4, metrics: []Metric{{Value: 1, Target: 0}, {Value: 10, Target: 50}}, want: 4},
		{name: "NaN is unusable", current: 4, metrics: []Metric{{Value: math.NaN(), Target: 1}}, want: 4},
		{name: "from zero", current: 0, metrics: []Metric{{Value: 120, Target: 50}}, want: 3},
		{name: "from zero, idle stays zero", current: 0, metrics: []Metric{{Value: 0, Target: 50}}, want: 0},
		// Products past any replica count are clamped before becoming an
		// int: 1e19 converted to a negative int, and wanted 0 replicas.
		{name: "huge value", current: 1, metrics: []Metric{{Value: 1e19, Target: 1}}, want: MaxReplicas},
		{name: "huger value", current: 3, metrics: []Metric{{Value: 1e300, Target: 1e-300}}, want: MaxReplicas},
		{name: "max float", current: 3, metrics: []Metric{{Value: math.MaxFloat64, Target: math.SmallestNonzeroFloat64}}, want: MaxReplicas},
		{name: "huge current under load stays", current: math.MaxInt, metrics: []Metric{{Value: 100, Target: 1}}, want: math.MaxInt},
		{name: "huge current idle", current: math.MaxInt, metrics: []Metric{{Value: 0, Target: 1}}, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := DesiredReplicas(tt.current, tt.metrics, DefaultTolerance); got != tt.want {
				t.Errorf("DesiredReplicas = %d, want %d", got, tt.want)
			}
		})
	}
}
