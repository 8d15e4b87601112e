package scale

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParsePolicy(t *testing.T) {
	def := DefaultPolicy()
	enabled := func(f func(*Policy)) Policy {
		p := DefaultPolicy()
		p.Enabled = true
		if f != nil {
			f(&p)
		}
		return p
	}
	tests := []struct {
		name    string
		labels  map[string]string
		want    Policy
		wantErr []string // substrings of the error
	}{
		{name: "no labels: not enabled, defaults", want: def},
		{name: "orbiter=true enables", labels: map[string]string{"orbiter": "true"}, want: enabled(nil)},
		{name: "orbiter=false really disables", labels: map[string]string{"orbiter": "false"}, want: def},
		{
			name:   "orbiter=false wins over underlay.scale.enabled=true",
			labels: map[string]string{"orbiter": "false", LabelEnabled: "true"},
			want:   def,
		},
		{name: "underlay.scale.enabled enables", labels: map[string]string{LabelEnabled: "true"}, want: enabled(nil)},
		{
			name: "stabilization and metrics",
			labels: map[string]string{LabelEnabled: "true", LabelStabilizationDown: "30s",
				LabelMetricPrefix + "query": "sum(x)", LabelMetricPrefix + "target": "5",
				LabelMetricPrefix + "rps.query": "sum(rate(r[1m]))", LabelMetricPrefix + "rps.target": "100.5"},
			want: enabled(func(p *Policy) {
				p.StabilizationDown = 30 * time.Second
				p.Metrics = []MetricSpec{{Name: "metric", Query: "sum(x)", Target: 5}, {Name: "rps", Query: "sum(rate(r[1m]))", Target: 100.5}}
			}),
		},
		{
			name: "bad metric labels",
			labels: map[string]string{LabelEnabled: "true", LabelMetricPrefix + "query": "sum(x)",
				LabelMetricPrefix + "rps.target": "-1", LabelMetricPrefix + "cpu.target": "3", LabelMetricPrefix + "cpu.typo": "1"},
			wantErr: []string{`metric "metric" has a query but no underlay.scale.metric.target`, `rps.target="-1": want a positive number`,
				`metric "cpu" has a target but no underlay.scale.metric.cpu.query`, "cpu.typo"},
		},
		{
			name:   "orbiter steps and cooldown",
			labels: map[string]string{"orbiter": "true", "orbiter.up": "3", "orbiter.down": "2", "orbiter.cooldown": "30"},
			want: enabled(func(p *Policy) {
				p.StepUp, p.StepDown = Step{Replicas: 3}, Step{Replicas: 2}
				p.CooldownUp, p.CooldownDown = 30*time.Second, 30*time.Second
			}),
		},
		{
			name: "underlay labels override orbiter's",
			labels: map[string]string{"orbiter": "true", "orbiter.up": "3", "orbiter.cooldown": "30",
				LabelStepUp: "50%", LabelCooldownUp: "2m", LabelCooldownDown: "45"},
			want: enabled(func(p *Policy) {
				p.StepUp = Step{Percent: 50}
				p.CooldownUp, p.CooldownDown = 2*time.Minute, 45*time.Second
			}),
		},
		{
			name: "every underlay label",
			labels: map[string]string{LabelEnabled: "yes", LabelMin: "0", LabelMax: "20", LabelStepUp: "4",
				LabelStepDown: "25%", LabelPaused: "true", LabelAllowDown: "true"},
			want: enabled(func(p *Policy) {
				p.Min, p.Max, p.StepUp, p.StepDown, p.Paused, p.AllowDown = 0, 20, Step{Replicas: 4}, Step{Percent: 25}, true, true
			}),
		},
		{name: "other tools' labels are ignored", labels: map[string]string{"orbiter": "true", "com.docker.stack.namespace": "x"}, want: enabled(nil)},
		{name: "bad switch", labels: map[string]string{"orbiter": "maybe"}, wantErr: []string{`orbiter="maybe"`, "true or false"}},
		{name: "bad max", labels: map[string]string{LabelMax: "ten"}, wantErr: []string{`underlay.scale.max="ten"`, "whole number"}},
		{name: "negative min", labels: map[string]string{LabelMin: "-1"}, wantErr: []string{`underlay.scale.min="-1"`, "at least 0"}},
		{name: "zero step", labels: map[string]string{LabelStepUp: "0"}, wantErr: []string{`underlay.scale.step-up="0"`}},
		{name: "bad percent", labels: map[string]string{LabelStepDown: "x%"}, wantErr: []string{`underlay.scale.step-down="x%"`, "percentage"}},
		{name: "bad cooldown", labels: map[string]string{LabelCooldownUp: "10x"}, wantErr: []string{`underlay.scale.cooldown-up="10x"`, "duration"}},
		{name: "bad orbiter cooldown", labels: map[string]string{"orbiter.cooldown": "1m"}, wantErr: []string{`orbiter.cooldown="1m"`, "seconds"}},
		{name: "bad orbiter step", labels: map[string]string{"orbiter.up": "0"}, wantErr: []string{`orbiter.up="0"`}},
		{name: "unknown underlay label (typo)", labels: map[string]string{"underlay.scale.maximum": "3"}, wantErr: []string{`underlay.scale.maximum="3"`, "unknown label"}},
		{name: "min above max", labels: map[string]string{LabelMin: "5", LabelMax: "3"}, wantErr: []string{"underlay.scale.min=5 is above underlay.scale.max=3"}},
		{name: "min above default max", labels: map[string]string{LabelMin: "11"}, wantErr: []string{"underlay.scale.min=11 is above underlay.scale.max=10"}},
		{
			name:    "several errors are all named",
			labels:  map[string]string{LabelMax: "x", LabelMin: "y"},
			wantErr: []string{`underlay.scale.max="x"`, `underlay.scale.min="y"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePolicy(tt.labels)
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("no error; got %+v", got)
				}
				for _, s := range tt.wantErr {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not contain %q", err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("policy (-want +got):\n%s", diff)
			}
		})
	}
}

func TestStepDelta(t *testing.T) {
	tests := []struct {
		step    Step
		current int
		want    int
	}{
		{Step{Replicas: 2}, 10, 2},
		{Step{Percent: 50}, 10, 5},
		{Step{Percent: 50}, 3, 2},                       // rounded up
		{Step{Percent: 10}, 1, 1},                       // at least one
		{Step{Percent: 100}, 0, 1},                      // from zero
		{Step{Percent: 1000}, math.MaxInt, MaxReplicas}, // clamped before the int conversion
	}
	for _, tt := range tests {
		if got := tt.step.Delta(tt.current); got != tt.want {
			t.Errorf("%s of %d = %d, want %d", tt.step, tt.current, got, tt.want)
		}
	}
}

func TestOptedIn(t *testing.T) {
	tests := []struct {
		labels map[string]string
		want   bool
	}{
		{nil, false},
		{map[string]string{"orbiter": "true"}, true},
		{map[string]string{LabelEnabled: "on", LabelMax: "bad"}, true},
		{map[string]string{"orbiter": "true", LabelEnabled: "false"}, false},
		{map[string]string{"orbiter": "false", LabelEnabled: "true"}, false},
		{map[string]string{"orbiter": "perhaps"}, false},
		{map[string]string{LabelMax: "3"}, false},
	}
	for _, tt := range tests {
		if got := OptedIn(tt.labels); got != tt.want {
			t.Errorf("OptedIn(%v) = %v, want %v", tt.labels, got, tt.want)
		}
	}
}

// TestParsePolicyBounds: every count and duration a label sets has a
// bound; a value past it is an error naming the label and the value, never
// a wrapped-around number (10000000000 seconds overflowed to a negative
// duration, which was taken as no cooldown at all).
func TestParsePolicyBounds(t *testing.T) {
	tests := []struct {
		key, value string
		wantErr    string // "" when accepted
	}{
		{LabelCooldownUp, "10000000000", "above the most"},
		{LabelCooldownUp, "9223372036854775807", "above the most"},
		{LabelCooldownUp, "99999999999999999999", "above the most"},
		{LabelCooldownUp, "2562047h", "above the most"},
		{LabelCooldownUp, "25h", "above the most"},
		{LabelCooldownUp, "24h", ""},
		{LabelCooldownUp, "86400", ""},
		{LabelCooldownUp, "86401", "above the most"},
		{LabelCooldownUp, "0s", ""},
		{LabelStabilizationDown, "0s", ""},
		{LabelCooldownUp, "-1", "negative"},
		{LabelCooldownUp, "-1s", "negative"},
		{LabelCooldownDown, "10000000000", "above the most"},
		{LabelStabilizationDown, "10000000000", "above the most"},
		{LabelStabilizationDown, "1e9h", "want a duration"},
		{LabelOrbiterCooldown, "10000000000", "above the most"},
		{LabelOrbiterCooldown, "86400", ""},
		{LabelMax, "1000000", ""},
		{LabelMax, "1000001", "above the most"},
		{LabelMax, "9223372036854775807", "above the most"},
		{LabelMax, "99999999999999999999", "above the most"},
		{LabelMin, "1000001", "above the most"},
		{LabelStepUp, "1000001", "above the most"},
		{LabelStepUp, "1001%", "above 1000%"},
		{LabelStepUp, "0%", "percentage: must be at least 1"},
		{LabelStepDown, "0%", "percentage: must be at least 1"},
		{LabelStepDown, "99999999999999999999%", "above 1000%"},
		{LabelOrbiterUp, "1000001", "above the most"},
		{LabelOrbiterDown, "99999999999999999999", "above the most"},
		{LabelMetricPrefix + "target", "1e309", "want a positive number"},
		{LabelMetricPrefix + "target", "0", "want a positive number"},
	}
	for _, tt := range tests {
		labels := map[string]string{LabelOrbiter: "true", tt.key: tt.value}
		if strings.HasPrefix(tt.key, LabelMetricPrefix) {
			labels[LabelMetricPrefix+"query"] = "q"
		}
		if tt.key == LabelMin {
			labels[LabelMax] = "1000000"
		}
		p, err := ParsePolicy(labels)
		if tt.wantErr == "" {
			if err != nil {
				t.Errorf("%s=%s: %v, want it accepted", tt.key, tt.value, err)
			}
			if p.CooldownUp < 0 || p.CooldownDown < 0 || p.StabilizationDown < 0 {
				t.Errorf("%s=%s: negative duration in %+v", tt.key, tt.value, p)
			}
			continue
		}
		want := fmt.Sprintf("%s=%q", tt.key, tt.value)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%s=%s: err = %v, want one naming %s and saying %q", tt.key, tt.value, err, want, tt.wantErr)
		}
	}
}
