package scale

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/underlay/underlay/internal/termtext"
)

// Service labels read by ParsePolicy. Orbiter's labels keep their meaning;
// the underlay.scale.* labels take precedence over them when both are set.
const (
	// LabelOrbiter is Orbiter's switch: "true" enables autoscaling, "false"
	// disables it (Orbiter enabled a service whatever the value).
	LabelOrbiter = "orbiter"
	// LabelOrbiterUp and LabelOrbiterDown are Orbiter's step sizes, in replicas.
	LabelOrbiterUp   = "orbiter.up"
	LabelOrbiterDown = "orbiter.down"
	// LabelOrbiterCooldown is Orbiter's cooldown in seconds, for both directions.
	LabelOrbiterCooldown = "orbiter.cooldown"

	// LabelPrefix starts every underlay scaling label; an unknown label with
	// this prefix is an error, so that a typo is never silently ignored.
	LabelPrefix = "underlay.scale."
	// LabelEnabled is underlay's switch, equivalent to LabelOrbiter.
	LabelEnabled = LabelPrefix + "enabled"
	// LabelMin and LabelMax bound the replicas (hard clamp).
	LabelMin = LabelPrefix + "min"
	LabelMax = LabelPrefix + "max"
	// LabelStepUp and LabelStepDown are steps: replicas ("2") or a percentage
	// of the current replicas ("50%", rounded up, at least one replica).
	LabelStepUp   = LabelPrefix + "step-up"
	LabelStepDown = LabelPrefix + "step-down"
	// LabelCooldownUp and LabelCooldownDown are cooldowns: a Go duration
	// ("90s", "5m") or whole seconds ("90").
	LabelCooldownUp   = LabelPrefix + "cooldown-up"
	LabelCooldownDown = LabelPrefix + "cooldown-down"
	// LabelPaused refuses every decision while "true".
	LabelPaused = LabelPrefix + "paused"
	// LabelAllowDown must be "true" for any scale-down to happen.
	LabelAllowDown = LabelPrefix + "allow-down"
	// LabelStabilizationDown is the scale-down stabilization window, as a
	// cooldown: a scale-down goes no lower than the highest recommendation
	// made within it (Kubernetes' HPA behaviour).
	LabelStabilizationDown = LabelPrefix + "stabilization-down"
	// LabelMetricPrefix starts the labels of metric-driven scaling:
	// underlay.scale.metric.query and .target for one metric, or
	// underlay.scale.metric.<name>.query and .target for several.
	LabelMetricPrefix = LabelPrefix + "metric."
)

// Defaults of a Policy when its labels are absent.
const (
	DefaultMin          = 1
	DefaultMax          = 10
	DefaultCooldownUp   = 0
	DefaultCooldownDown = 5 * time.Minute
	// DefaultStabilizationDown is Kubernetes' HPA default.
	DefaultStabilizationDown = 5 * time.Minute
)

// Bounds of what labels may set, so that no arithmetic on them overflows.
const (
	// MaxReplicas bounds every replica count a label sets (min, max,
	// steps) and the replicas target tracking may want.
	MaxReplicas = 1_000_000
	// MaxPercent bounds a step given as a percentage.
	MaxPercent = 1000
	// MaxDuration bounds every duration a label sets: cooldowns and the
	// stabilization window.
	MaxDuration = 24 * time.Hour
)

// ErrBadLabel is wrapped by every error ParsePolicy returns.
var ErrBadLabel = errors.New("bad scaling label")

// Step is how far one decision moves the replicas: Replicas, or Percent of
// the current replicas when Percent is set.
type Step struct {
	Replicas int `json:"replicas,omitempty"`
	Percent  int `json:"percent,omitempty"`
}

// Delta is the number of replicas the step adds or removes from current:
// a percentage is rounded up, is never less than one replica nor more than
// MaxReplicas.
func (s Step) Delta(current int) int {
	if s.Percent == 0 {
		return s.Replicas
	}
	f := math.Ceil(float64(current) * float64(s.Percent) / 100)
	if !(f < MaxReplicas) {
		return MaxReplicas
	}
	return max(1, int(f))
}

// String is the step as a label value.
func (s Step) String() string {
	if s.Percent != 0 {
		return strconv.Itoa(s.Percent) + "%"
	}
	return strconv.Itoa(s.Replicas)
}

// Policy is how one service may be scaled.
type Policy struct {
	// Enabled is true when the service opted in (orbiter=true or
	// underlay.scale.enabled=true) and neither switch says false.
	Enabled bool `json:"enabled"`
	// Min and Max bound the replicas; Min 0 allows scaling to zero.
	Min int `json:"min"`
	Max int `json:"max"`
	// StepUp and StepDown are the size of one move.
	StepUp   Step `json:"step_up"`
	StepDown Step `json:"step_down"`
	// CooldownUp is the least time between two scale-ups.
	CooldownUp time.Duration `json:"cooldown_up"`
	// CooldownDown is the least time from any scale, up or down, to a scale-down.
	CooldownDown time.Duration `json:"cooldown_down"`
	// Paused refuses every decision.
	Paused bool `json:"paused"`
	// AllowDown permits scale-downs; without it nothing ever scales down.
	AllowDown bool `json:"allow_down"`
	// StabilizationDown is the window whose highest recommendation a
	// scale-down may not go below; 0 disables it.
	StabilizationDown time.Duration `json:"stabilization_down"`
	// Metrics drive target tracking; nil when the service scales on
	// requests only.
	Metrics []MetricSpec `json:"metrics,omitempty"`
}

// MetricSpec is one metric of target tracking: a Prometheus query whose
// value is the current average per replica, and the value wanted.
type MetricSpec struct {
	Name   string  `json:"name"`
	Query  string  `json:"query"`
	Target float64 `json:"target"`
}

// DefaultPolicy is the policy of a service that set no scaling label but
// the switch.
func DefaultPolicy() Policy {
	return Policy{
		Min: DefaultMin, Max: DefaultMax,
		StepUp: Step{Replicas: 1}, StepDown: Step{Replicas: 1},
		CooldownUp: DefaultCooldownUp, CooldownDown: DefaultCooldownDown,
		StabilizationDown: DefaultStabilizationDown,
	}
}

// ParsePolicy reads a service's policy from its labels. A bad value, an
// unknown underlay.scale.* label or a minimum above the maximum is an error
// naming the label and its value; labels of other tools are ignored.
func ParsePolicy(labels map[string]string) (Policy, error) {
	p := DefaultPolicy()
	var errs []error
	bad := func(key, problem string) {
		errs = append(errs, fmt.Errorf("%w: %s=%s: %s", ErrBadLabel, key, termtext.Q(labels[key]), problem))
	}
	sw := map[string]bool{}
	for _, key := range []string{LabelOrbiter, LabelEnabled} {
		if v, ok := labels[key]; ok {
			b, err := parseBool(v)
			if err != nil {
				bad(key, "want true or false")
				continue
			}
			sw[key] = b
		}
	}
	p.Enabled = (sw[LabelOrbiter] || sw[LabelEnabled]) && !isFalse(sw, LabelOrbiter) && !isFalse(sw, LabelEnabled)

	// Orbiter's labels first, so underlay's override them.
	if _, ok := labels[LabelOrbiterUp]; ok {
		n, err := parseCount(labels[LabelOrbiterUp], 1)
		if err != nil {
			bad(LabelOrbiterUp, err.Error())
		}
		p.StepUp = Step{Replicas: n}
	}
	if _, ok := labels[LabelOrbiterDown]; ok {
		n, err := parseCount(labels[LabelOrbiterDown], 1)
		if err != nil {
			bad(LabelOrbiterDown, err.Error())
		}
		p.StepDown = Step{Replicas: n}
	}
	if v, ok := labels[LabelOrbiterCooldown]; ok {
		n, err := parseBounded(v, 0, int(MaxDuration/time.Second))
		if err != nil {
			bad(LabelOrbiterCooldown, "want whole seconds: "+err.Error())
		}
		p.CooldownUp = time.Duration(n) * time.Second
		p.CooldownDown = p.CooldownUp
	}

	keys := make([]string, 0, len(labels))
	for k := range labels {
		if strings.HasPrefix(k, LabelPrefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, key := range keys {
		v := labels[key]
		var err error
		switch key {
		case LabelEnabled:
			continue // read above
		case LabelMin:
			p.Min, err = parseCount(v, 0)
		case LabelMax:
			p.Max, err = parseCount(v, 0)
		case LabelStepUp:
			p.StepUp, err = parseStep(v)
		case LabelStepDown:
			p.StepDown, err = parseStep(v)
		case LabelCooldownUp:
			p.CooldownUp, err = parseCooldown(v)
		case LabelCooldownDown:
			p.CooldownDown, err = parseCooldown(v)
		case LabelPaused:
			p.Paused, err = parseBool(v)
		case LabelAllowDown:
			p.AllowDown, err = parseBool(v)
		case LabelStabilizationDown:
			p.StabilizationDown, err = parseCooldown(v)
		default:
			if strings.HasPrefix(key, LabelMetricPrefix) {
				continue // read by parseMetrics
			}
			err = errors.New("unknown label")
		}
		if err != nil {
			bad(key, err.Error())
		}
	}
	metrics, merrs := parseMetrics(labels)
	p.Metrics = metrics
	errs = append(errs, merrs...)
	if len(errs) == 0 && p.Min > p.Max {
		errs = append(errs, fmt.Errorf("%w: %s=%d is above %s=%d", ErrBadLabel, LabelMin, p.Min, LabelMax, p.Max))
	}
	if len(errs) > 0 {
		return Policy{}, errors.Join(errs...)
	}
	return p, nil
}

// OptedIn reports whether the switches opt the service in — one says true
// and none says false — whatever the other labels; a service that opted in
// with bad labels is listed with its error rather than ignored.
func OptedIn(labels map[string]string) bool {
	on := false
	for _, key := range []string{LabelOrbiter, LabelEnabled} {
		if v, ok := labels[key]; ok {
			b, err := parseBool(v)
			if err == nil && !b {
				return false
			}
			on = on || (err == nil && b)
		}
	}
	return on
}

func isFalse(sw map[string]bool, key string) bool {
	v, ok := sw[key]
	return ok && !v
}

func parseBool(v string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "true", "1", "yes", "on":
		return true, nil
	case "false", "0", "no", "off":
		return false, nil
	}
	return false, errors.New("want true or false")
}

// parseCount parses a whole number from least to MaxReplicas.
func parseCount(v string, least int) (int, error) {
	return parseBounded(v, least, MaxReplicas)
}

// parseBounded parses a whole number from least to most.
func parseBounded(v string, least, most int) (int, error) {
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	switch {
	case errors.Is(err, strconv.ErrRange) && strings.HasPrefix(strings.TrimSpace(v), "-"):
		return 0, fmt.Errorf("must be at least %d", least)
	case errors.Is(err, strconv.ErrRange):
		return 0, fmt.Errorf("above the most, %d", most)
	case err != nil:
		return 0, errors.New("not a whole number")
	case n < int64(least):
		return 0, fmt.Errorf("must be at least %d", least)
	case n > int64(most):
		return 0, fmt.Errorf("above the most, %d", most)
	}
	return int(n), nil
}

func parseStep(v string) (Step, error) {
	v = strings.TrimSpace(v)
	if pct, ok := strings.CutSuffix(v, "%"); ok {
		n, err := parseBounded(pct, 1, MaxPercent)
		if err != nil && strings.HasPrefix(err.Error(), "above") {
			return Step{}, fmt.Errorf("percentage above %d%%", MaxPercent)
		}
		if err != nil {
			return Step{}, fmt.Errorf("percentage: %w", err)
		}
		return Step{Percent: n}, nil
	}
	n, err := parseCount(v, 1)
	if err != nil {
		return Step{}, fmt.Errorf("want replicas (2) or a percentage (50%%): %w", err)
	}
	return Step{Replicas: n}, nil
}

// parseCooldown parses a duration from 0 to MaxDuration: a Go duration
// ("90s") or whole seconds ("90"). Seconds are bounded before they are
// multiplied, so that a large number cannot wrap to a negative duration.
func parseCooldown(v string) (time.Duration, error) {
	v = strings.TrimSpace(v)
	most := fmt.Errorf("above the most, %s", MaxDuration)
	if n, err := strconv.ParseInt(v, 10, 64); err == nil || errors.Is(err, strconv.ErrRange) {
		switch {
		case strings.HasPrefix(v, "-"):
			return 0, errors.New("negative")
		case err != nil || n > int64(MaxDuration/time.Second):
			return 0, most
		}
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("want a duration (90s, 5m) or whole seconds, at most %s", MaxDuration)
	}
	switch {
	case d < 0:
		return 0, errors.New("negative")
	case d > MaxDuration:
		return 0, most
	}
	return d, nil
}

// parseMetrics reads the metric labels: underlay.scale.metric.query and
// .target (the metric is named "metric"), or underlay.scale.metric.<name>.query
// and .target, sorted by name. A query without a target, a target without a
// query or a target that is not a positive number is an error.
func parseMetrics(labels map[string]string) ([]MetricSpec, []error) {
	byName := map[string]*MetricSpec{}
	var errs []error
	bad := func(key, problem string) {
		errs = append(errs, fmt.Errorf("%w: %s=%s: %s", ErrBadLabel, termtext.Cell(key), termtext.Q(labels[key]), problem))
	}
	for key, v := range labels {
		rest, ok := strings.CutPrefix(key, LabelMetricPrefix)
		if !ok {
			continue
		}
		name, field := "metric", rest
		if i := strings.LastIndex(rest, "."); i >= 0 {
			name, field = rest[:i], rest[i+1:]
		}
		if name == "" {
			bad(key, "empty metric name")
			continue
		}
		m := byName[name]
		if m == nil {
			m = &MetricSpec{Name: name}
			byName[name] = m
		}
		switch field {
		case "query":
			if m.Query = strings.TrimSpace(v); m.Query == "" {
				bad(key, "empty query")
			}
		case "target":
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil || f <= 0 || math.IsInf(f, 0) || math.IsNaN(f) {
				bad(key, "want a positive number")
				continue
			}
			m.Target = f
		default:
			bad(key, "unknown label (want "+LabelMetricPrefix+"[NAME.]query or .target)")
		}
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []MetricSpec
	for _, n := range names {
		m := byName[n]
		prefix := LabelMetricPrefix + n + "."
		if n == "metric" {
			prefix = LabelMetricPrefix
		}
		switch {
		case m.Query == "" && m.Target > 0:
			errs = append(errs, fmt.Errorf("%w: metric %s has a target but no %squery", ErrBadLabel, termtext.Q(n), termtext.Lines(prefix)))
		case m.Query != "" && m.Target == 0:
			errs = append(errs, fmt.Errorf("%w: metric %s has a query but no %starget", ErrBadLabel, termtext.Q(n), termtext.Lines(prefix)))
		case m.Query != "":
			out = append(out, *m)
		}
	}
	return out, errs
}
