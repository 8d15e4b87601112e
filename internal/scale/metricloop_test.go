package scale

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/testclock"
)

// fakeMetrics answers queries from a map; a missing query fails.
type fakeMetrics struct {
	mu     sync.Mutex
	values map[string]float64
}

func (f *fakeMetrics) Query(_ context.Context, q string) (float64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.values[q]
	if !ok {
		return 0, errors.New("no such series")
	}
	return v, nil
}

func (f *fakeMetrics) set(q string, v float64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.values[q] = v
}

func (f *fakeMetrics) drop(q string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.values, q)
}

func TestMetricDrivenScaling(t *testing.T) {
	clock := testclock.New(time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC))
	m := &fakeMetrics{values: map[string]float64{"load": 10, "queue": 1}}
	e := newAPIEnv(t, Config{Metrics: m, Interval: time.Hour, Now: clock.Now},
		svc("web", 2, "orbiter", "true", LabelMax, "8", LabelAllowDown, "true", LabelCooldownDown, "0",
			LabelStabilizationDown, "1m",
			LabelMetricPrefix+"load.query", "load", LabelMetricPrefix+"load.target", "10",
			LabelMetricPrefix+"queue.query", "queue", LabelMetricPrefix+"queue.target", "5"),
		svc("plain", 1, "orbiter", "true"))
	ctx := context.Background()
	step := func(name string, advance time.Duration, want int) {
		t.Helper()
		clock.Add(advance)
		e.ctrl.EvaluateMetrics(ctx)
		if got := e.swarm.replicas("web"); got != want {
			t.Fatalf("%s: web has %d replicas, want %d", name, got, want)
		}
	}
	step("on target: unchanged", time.Second, 2)
	m.set("load", 10.9)
	step("within the 10% tolerance", time.Second, 2)
	m.set("load", 30)
	step("load 3× the target: 2 → 6", time.Second, 6)
	m.set("queue", 50)
	step("the largest metric wins, clamped to the maximum", time.Second, 8)
	records := e.history.len()
	step("at the maximum: refused once", time.Second, 8)
	step("the same refusal is not recorded again", time.Second, 8)
	if got := e.history.len() - records; got != 1 {
		t.Errorf("%d records while held at the maximum, want 1", got)
	}
	m.set("load", 1)
	m.set("queue", 1)
	step("low load within the stabilization window: held", 10*time.Second, 8)
	m.drop("queue")
	step("a missing metric never scales down", 2*time.Minute, 8)
	m.set("queue", 1)
	step("the missing metric's recommendation (8) holds for a window", 30*time.Second, 8)
	step("after the window: down to what the metrics ask, 8 × 0.2 → 2", 31*time.Second, 2)
	if got := e.swarm.replicas("plain"); got != 1 {
		t.Errorf("plain (no metrics) has %d replicas, want 1", got)
	}
}

func TestMetricLoopOnlyOnLeader(t *testing.T) {
	l := &fakeLeadership{}
	m := &fakeMetrics{values: map[string]float64{"load": 100}}
	e := newAPIEnv(t, Config{Metrics: m, Interval: 10 * time.Millisecond, Leadership: l},
		svc("web", 1, "orbiter", "true", LabelMax, "4", LabelMetricPrefix+"query", "load", LabelMetricPrefix+"target", "10"))
	waitFor(t, func() bool { return len(e.ctrl.Services()) == 1 })
	// Two rounds after the service is known: the second began after the
	// first had skipped it, or would have scaled it.
	ticks := e.ctrl.metricTicks.Load()
	waitFor(t, func() bool { return e.ctrl.metricTicks.Load() >= ticks+2 })
	if got := e.swarm.replicas("web"); got != 1 {
		t.Fatalf("a follower scaled web to %d", got)
	}
	l.set(true, "me")
	waitFor(t, func() bool { return e.swarm.replicas("web") == 4 })
}

// TestMetricErrorsForgotten: the last error of a failing metric is kept to
// log it once; it is forgotten with its service, and with the metric when
// the labels drop it, so that services coming and going never grow it.
func TestMetricErrorsForgotten(t *testing.T) {
	m := &fakeMetrics{values: map[string]float64{}}
	e := newAPIEnv(t, Config{Metrics: m, Interval: time.Hour})
	errsLen := func() int {
		e.ctrl.mu.Lock()
		defer e.ctrl.mu.Unlock()
		n := 0
		for _, byMetric := range e.ctrl.metricErrs {
			n += len(byMetric)
		}
		return n
	}
	metricLabels := []string{"orbiter", "true", LabelMetricPrefix + "a.query", "broken", LabelMetricPrefix + "a.target", "1",
		LabelMetricPrefix + "b.query", "broken too", LabelMetricPrefix + "b.target", "1"}
	for i := range 20 {
		s := svc(fmt.Sprintf("s%d", i), 1, metricLabels...)
		e.swarm.set(s, "create")
		waitFor(t, func() bool { return len(e.ctrl.Services()) == 1 })
		e.ctrl.EvaluateMetrics(context.Background())
		if n := errsLen(); n != 2 {
			t.Fatalf("service %d: %d metric errors kept, want its 2", i, n)
		}
		e.swarm.set(s, "remove")
		waitFor(t, func() bool { return len(e.ctrl.Services()) == 0 })
		if n := errsLen(); n != 0 {
			t.Fatalf("service %d removed: %d metric errors still kept", i, n)
		}
	}
	s := svc("web", 1, metricLabels...)
	e.swarm.set(s, "create")
	waitFor(t, func() bool { return len(e.ctrl.Services()) == 1 })
	e.ctrl.EvaluateMetrics(context.Background())
	e.swarm.set(svc("web", 1, metricLabels[:6]...), "update") // metric b dropped
	waitFor(t, func() bool { return len(e.ctrl.Services()[0].Policy.Metrics) == 1 })
	if n := errsLen(); n != 1 {
		t.Errorf("metric b dropped from the labels: %d metric errors kept, want 1", n)
	}
}

// TestNonFiniteMetricIsUnreadable: Prometheus answers NaN for 0/0 (a rate
// over a quiet window) and +Inf for x/0. Such a value is no reading: kept
// in the record, it made the record unencodable as JSON, so a decision the
// other metric drove lost its history (and, after a restart, its cooldown)
// and reached event readers as an empty line.
func TestNonFiniteMetricIsUnreadable(t *testing.T) {
	for _, v := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		t.Run(fmt.Sprint(v), func(t *testing.T) {
			m := &fakeMetrics{values: map[string]float64{"load": 30, "ratio": v}}
			e := newAPIEnv(t, Config{Metrics: m, Interval: time.Hour},
				svc("web", 1, "orbiter", "true", LabelMax, "8",
					LabelMetricPrefix+"load.query", "load", LabelMetricPrefix+"load.target", "10",
					LabelMetricPrefix+"ratio.query", "ratio", LabelMetricPrefix+"ratio.target", "1"))
			rec, err := e.ctrl.evaluate(context.Background(), "web")
			if err != nil {
				t.Fatal(err)
			}
			if rec.To != 3 {
				t.Fatalf("scaled to %d, want 3 (load 3× its target; ratio unreadable)", rec.To)
			}
			if _, err := json.Marshal(rec); err != nil {
				t.Fatalf("the record of a decision with ratio %v cannot be kept: %v", v, err)
			}
			got := rec.Metrics[1]
			if got.Name != "ratio" || got.Value != 0 || !strings.Contains(got.Error, fmt.Sprint(v)) {
				t.Errorf("ratio recorded as %+v, want value 0 and an error naming %v", got, v)
			}
		})
	}
}

// TestMetricsEvaluateEachService: the metric loop looked each service up
// by name; a service named like another's ID was never evaluated (the
// other one was, twice).
func TestMetricsEvaluateEachService(t *testing.T) {
	m := &fakeMetrics{values: map[string]float64{"load": 30}}
	web := Service{ID: "k3x9d2mq7wz1", Name: "web", Replicas: 1, Version: 1, Labels: map[string]string{"orbiter": "true"}}
	other := Service{ID: "p0a8c5rz6vy4", Name: "k3x9d2mq7wz1", Replicas: 1, Version: 1,
		Labels: map[string]string{"orbiter": "true", LabelMax: "8", LabelMetricPrefix + "query": "load", LabelMetricPrefix + "target": "10"}}
	e := newAPIEnv(t, Config{Metrics: m, Interval: time.Hour}, web, other)
	e.ctrl.EvaluateMetrics(context.Background())
	if got := e.swarm.replicas(other.ID); got != 3 {
		t.Errorf("%s, named like web's ID, at load 3× its target: %d replicas, want 3", other.ID, got)
	}
}

// longErrorMetrics fails every query but "load" with an error of a
// megabyte, as a Prometheus answering {"status":"error","error":…} may.
type longErrorMetrics struct{}

func (longErrorMetrics) Query(_ context.Context, q string) (float64, error) {
	if q == "load" {
		return 30, nil
	}
	return 0, errors.New(strings.Repeat("x", 1<<20))
}

// TestMetricErrorBounded: a metric's error went whole into the record of
// the decision, kept in the history in Consul, whose values hold 512 KiB:
// a metric source's long error cost the record, and the time cooldowns
// run from after a restart. It is cut to maxMetricError bytes.
func TestMetricErrorBounded(t *testing.T) {
	e := newAPIEnv(t, Config{Metrics: longErrorMetrics{}, Interval: time.Hour},
		svc("web", 1, "orbiter", "true", LabelMax, "8",
			LabelMetricPrefix+"load.query", "load", LabelMetricPrefix+"load.target", "10",
			LabelMetricPrefix+"queue.query", "queue", LabelMetricPrefix+"queue.target", "1"))
	rec, err := e.ctrl.evaluate(context.Background(), "web")
	if err != nil {
		t.Fatal(err)
	}
	if rec.To != 3 {
		t.Fatalf("scaled to %d, want 3", rec.To)
	}
	if n := len(rec.Metrics[1].Error); n == 0 || n > 2*maxMetricError {
		t.Errorf("the failing metric's error is %d bytes long in the record, want 1 to %d", n, 2*maxMetricError)
	}
}

// relabelingMetrics answers every query with 30 after running during: a
// label edit landing while the metrics are read.
type relabelingMetrics struct{ during func() }

func (m relabelingMetrics) Query(context.Context, string) (float64, error) {
	m.during()
	return 30, nil
}

// TestMetricDecisionUsesTheLabelsItDecidesUnder: the metrics were read
// for the policy known before the decision, which reads the service again;
// an edit meanwhile that took the metric labels off (to stop metric-driven
// scaling) still scaled the service once on the metrics it no longer has.
func TestMetricDecisionUsesTheLabelsItDecidesUnder(t *testing.T) {
	web := svc("web", 1, "orbiter", "true", LabelMax, "8", LabelMetricPrefix+"query", "load", LabelMetricPrefix+"target", "10")
	var e *apiEnv
	edited := svc("web", 1, "orbiter", "true", LabelMax, "8")
	edited.Version = web.Version + 1
	e = newAPIEnv(t, Config{Metrics: relabelingMetrics{during: func() { e.swarm.setQuietly(edited) }}, Interval: time.Hour}, web)
	rec, err := e.ctrl.evaluate(context.Background(), "web")
	if err != nil {
		t.Fatal(err)
	}
	if got := e.swarm.replicas("web"); got != 1 || !rec.Refused {
		t.Errorf("metric labels taken off while the metrics were read: %d replicas (%s), want 1 and no decision", got, rec.Why)
	}
}
