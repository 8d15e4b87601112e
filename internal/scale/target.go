package scale

import "math"

// DefaultTolerance is the relative distance from a target within which
// target tracking leaves the replicas alone, as Kubernetes' HPA does.
const DefaultTolerance = 0.1

// Metric is one observation for target tracking: the current average Value
// per replica and the Target the operator wants it to be. Missing marks a
// metric that could not be read.
type Metric struct {
	Name    string
	Value   float64
	Target  float64
	Missing bool
}

// DesiredReplicas is HPA-style target tracking: for each metric,
// desired = ceil(current × value / target), unless value/target is within
// tolerance of 1, when it is current; several metrics take the largest.
//
// A missing or unusable metric (missing, a target ≤ 0, a value that is not
// a finite number ≥ 0) never lowers the answer: when any metric is unusable
// the result is at least current. With no usable metric the result is
// current. A current of zero is tracked as one replica, so load on a service
// scaled to zero can bring it back. Bounds are not applied here (Decide
// does), but the answer is never above MaxReplicas unless current is.
func DesiredReplicas(current int, metrics []Metric, tolerance float64) int {
	base := max(current, 1)
	desired, usable, unusable := 0, 0, false
	for _, m := range metrics {
		if m.Missing || m.Target <= 0 || m.Value < 0 || math.IsNaN(m.Value) || math.IsInf(m.Value, 0) {
			unusable = true
			continue
		}
		usable++
		ratio := m.Value / m.Target
		d := current
		if math.Abs(ratio-1) > tolerance+1e-9 { // the edge itself is within tolerance
			d = trackedReplicas(base, ratio, max(current, MaxReplicas))
		}
		desired = max(desired, d)
	}
	if usable == 0 {
		return current
	}
	if unusable {
		desired = max(desired, current)
	}
	return desired
}

// trackedReplicas is ceil(base × ratio), no more than limit: the product
// is clamped while still a float, because converting a float beyond the
// int range gives a meaningless (on amd64, negative) number — a metric of
// 1e19 wanted 0 replicas.
func trackedReplicas(base int, ratio float64, limit int) int {
	// The epsilon keeps 3 × 2.1/0.7 = 9.000000000000002 from becoming 10.
	f := math.Ceil(float64(base)*ratio - 1e-9)
	if !(f < float64(limit)) { // NaN too
		return limit
	}
	return max(int(f), 0)
}
