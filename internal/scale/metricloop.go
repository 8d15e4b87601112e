package scale

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/underlay/underlay/internal/termtext"
)

// SourceMetrics is the Source of metric-driven decisions.
const SourceMetrics = "metrics"

// metricLoop evaluates the metrics of every service that has some, every
// Interval, while this instance leads.
func (c *Controller) metricLoop(ctx context.Context) {
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if c.Leading() {
			c.EvaluateMetrics(ctx)
		}
		c.metricTicks.Add(1)
	}
}

// EvaluateMetrics evaluates once the metrics of every autoscaled service
// that has some and scales it towards the desired replicas.
func (c *Controller) EvaluateMetrics(ctx context.Context) {
	c.mu.Lock()
	var todo []*managed
	for _, m := range c.services {
		if m.err == nil && !m.svc.Global && len(m.policy.Metrics) > 0 {
			todo = append(todo, m)
		}
	}
	c.mu.Unlock()
	for _, m := range todo {
		if ctx.Err() != nil {
			return
		}
		// By ID: a name may be another service's ID, which lookup takes first.
		if _, err := c.evaluate(ctx, m.svc.ID); err != nil {
			c.log.Warn("metric-driven decision failed", "service", m.svc.Name, "err", err)
		}
	}
}

// evaluate reads one service's metrics and decides on them: target
// tracking (DesiredReplicas, 10% tolerance, the largest over the metrics),
// then Decide's bounds and cooldowns and the stabilization window. A metric
// that cannot be read never lowers the replicas. A refusal repeated every
// interval is recorded once.
func (c *Controller) evaluate(ctx context.Context, service string) (Record, error) {
	m, st, ok := c.lookup(service)
	if !ok {
		return Record{}, fmt.Errorf("service %s: %w", termtext.Q(service), ErrNotFound)
	}
	specs := m.policy.Metrics
	values, metrics := c.readMetrics(ctx, m.svc, specs)
	pl := func(current int, p Policy, last LastScale, now time.Time) plan {
		if !slices.Equal(p.Metrics, specs) {
			// The labels the decision reads are not those the metrics
			// were read for: nothing is decided on them.
			return plan{d: Decision{From: current, To: current, Reason: ReasonUnchanged, Refused: true,
				Why: "the service's metric labels changed while its metrics were read; they are read again next interval"}}
		}
		desired := DesiredReplicas(current, metrics, DefaultTolerance)
		dir, d := DecideTo(current, desired, p, last, now)
		return plan{dir: dir, d: d, desired: desired, metrics: values, recommend: &desired}
	}
	record := func(st *state, r Record) bool {
		if !r.Refused {
			st.metricRefusal = ""
			return true
		}
		if r.Reason == ReasonUnchanged {
			st.metricRefusal = ""
			return false
		}
		key := fmt.Sprintf("%s %d→%d", r.Reason, r.From, r.Desired)
		if key == st.metricRefusal {
			return false
		}
		st.metricRefusal = key
		return true
	}
	return c.decide(ctx, m, st, SourceMetrics, pl, record)
}

// maxMetricError bounds the error of a metric kept in a record.
const maxMetricError = 1024

// readMetrics evaluates each query; a failing one, or one whose value is
// not a finite number, is Missing.
func (c *Controller) readMetrics(ctx context.Context, svc Service, specs []MetricSpec) ([]MetricValue, []Metric) {
	service := svc.Name
	values := make([]MetricValue, len(specs))
	metrics := make([]Metric, len(specs))
	for i, s := range specs {
		qctx, cancel := context.WithTimeout(ctx, min(c.cfg.Interval, 10*time.Second))
		q := s.Query
		if strings.HasPrefix(q, BuiltinPrefix) {
			q += "@" + service // built-in metrics are per service
		}
		v, err := c.cfg.Metrics.Query(qctx, q)
		cancel()
		if err == nil && (math.IsNaN(v) || math.IsInf(v, 0)) {
			// Prometheus answers NaN for 0/0 and ±Inf for x/0. No
			// reading, and kept in the record it would make the record
			// unencodable as JSON: lost from the history and the stream.
			err = fmt.Errorf("the query's value is %v, not a finite number", v)
		}
		if err != nil && len(err.Error()) > maxMetricError {
			// Kept in the record, which the history keeps in Consul
			// (values of 512 KiB at most), and in the log.
			err = errors.New(strings.ToValidUTF8(err.Error()[:maxMetricError], "") + "…")
		}
		values[i] = MetricValue{Name: s.Name, Value: v, Target: s.Target}
		metrics[i] = Metric{Name: s.Name, Value: v, Target: s.Target, Missing: err != nil}
		c.noteMetricError(svc, s, err)
		if err != nil {
			values[i].Value = 0
			values[i].Error = err.Error()
		}
	}
	return values, metrics
}

// noteMetricError counts a failed query and logs it when its error changes.
func (c *Controller) noteMetricError(svc Service, s MetricSpec, err error) {
	c.mu.Lock()
	errs := c.metricErrs[svc.ID]
	prev, had := errs[s.Name]
	switch {
	case err != nil && c.services[svc.ID] != nil: // not removed meanwhile
		if errs == nil {
			errs = map[string]string{}
			c.metricErrs[svc.ID] = errs
		}
		errs[s.Name] = err.Error()
	case had:
		delete(errs, s.Name)
		if len(errs) == 0 {
			delete(c.metricErrs, svc.ID)
		}
	}
	c.mu.Unlock()
	switch {
	case err != nil:
		c.metrics.errors.WithLabelValues("metric_query").Inc()
		if !had || prev != err.Error() {
			c.log.Warn("metric unreadable; it cannot lower the replicas", "service", svc.Name, "metric", s.Name, "query", s.Query, "err", err)
		}
	case had:
		c.log.Info("metric readable again", "service", svc.Name, "metric", s.Name)
	}
}
