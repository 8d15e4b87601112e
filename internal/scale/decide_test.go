package scale

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestDecide(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	pol := func(f func(*Policy)) Policy {
		p := DefaultPolicy()
		p.Enabled, p.Max = true, 5
		if f != nil {
			f(&p)
		}
		return p
	}
	downOK := func(p *Policy) { p.AllowDown, p.CooldownDown = true, 0 }
	tests := []struct {
		name    string
		current int
		dir     Direction
		policy  Policy
		last    LastScale
		want    Decision // Why is ignored
	}{
		{name: "up by one", current: 1, dir: Up, policy: pol(nil), want: Decision{From: 1, To: 2, Reason: ReasonScaled}},
		{name: "up by a step, clamped to max", current: 3, dir: Up, policy: pol(func(p *Policy) { p.StepUp = Step{Replicas: 4} }), want: Decision{From: 3, To: 5, Reason: ReasonScaled}},
		{name: "up by percent", current: 4, dir: Up, policy: pol(func(p *Policy) { p.Max = 20; p.StepUp = Step{Percent: 50} }), want: Decision{From: 4, To: 6, Reason: ReasonScaled}},
		{name: "up at max refused", current: 5, dir: Up, policy: pol(nil), want: Decision{From: 5, To: 5, Reason: ReasonAtMax, Refused: true}},
		{name: "up above max refused, never turned into a down", current: 7, dir: Up, policy: pol(nil), want: Decision{From: 7, To: 7, Reason: ReasonAtMax, Refused: true}},
		{name: "up below min goes at least to min", current: 0, dir: Up, policy: pol(func(p *Policy) { p.Min = 3 }), want: Decision{From: 0, To: 3, Reason: ReasonScaled}},
		{name: "up from zero", current: 0, dir: Up, policy: pol(func(p *Policy) { p.Min = 0; p.StepUp = Step{Percent: 50} }), want: Decision{From: 0, To: 1, Reason: ReasonScaled}},
		{
			name: "up in cooldown refused", current: 2, dir: Up,
			policy: pol(func(p *Policy) { p.CooldownUp = time.Minute }), last: LastScale{Up: now.Add(-30 * time.Second)},
			want: Decision{From: 2, To: 2, Reason: ReasonCooldown, Refused: true},
		},
		{
			name: "up after cooldown", current: 2, dir: Up,
			policy: pol(func(p *Policy) { p.CooldownUp = time.Minute }), last: LastScale{Up: now.Add(-time.Minute)},
			want: Decision{From: 2, To: 3, Reason: ReasonScaled},
		},
		{
			name: "up right after a down is not held by the up cooldown", current: 2, dir: Up,
			policy: pol(func(p *Policy) { p.CooldownUp = time.Minute }), last: LastScale{Down: now.Add(-time.Second)},
			want: Decision{From: 2, To: 3, Reason: ReasonScaled},
		},
		{name: "down refused by default", current: 3, dir: Down, policy: pol(nil), want: Decision{From: 3, To: 3, Reason: ReasonDownDisabled, Refused: true}},
		{name: "down allowed", current: 3, dir: Down, policy: pol(downOK), want: Decision{From: 3, To: 2, Reason: ReasonScaled}},
		{name: "down clamped to min", current: 3, dir: Down, policy: pol(func(p *Policy) { downOK(p); p.StepDown = Step{Replicas: 5} }), want: Decision{From: 3, To: 1, Reason: ReasonScaled}},
		{name: "down at min refused", current: 1, dir: Down, policy: pol(downOK), want: Decision{From: 1, To: 1, Reason: ReasonAtMin, Refused: true}},
		{name: "down below min refused, never turned into an up", current: 0, dir: Down, policy: pol(downOK), want: Decision{From: 0, To: 0, Reason: ReasonAtMin, Refused: true}},
		{name: "down to zero when min is 0", current: 1, dir: Down, policy: pol(func(p *Policy) { downOK(p); p.Min = 0 }), want: Decision{From: 1, To: 0, Reason: ReasonScaled}},
		{name: "down above max clamps to max", current: 9, dir: Down, policy: pol(downOK), want: Decision{From: 9, To: 5, Reason: ReasonScaled}},
		{
			name: "down waits its cooldown after an up", current: 3, dir: Down,
			policy: pol(func(p *Policy) { downOK(p); p.CooldownDown = time.Minute }), last: LastScale{Up: now.Add(-10 * time.Second)},
			want: Decision{From: 3, To: 3, Reason: ReasonCooldown, Refused: true},
		},
		{
			name: "down after its cooldown", current: 3, dir: Down,
			policy: pol(func(p *Policy) { downOK(p); p.CooldownDown = time.Minute }), last: LastScale{Up: now.Add(-2 * time.Minute), Down: now.Add(-3 * time.Minute)},
			want: Decision{From: 3, To: 2, Reason: ReasonScaled},
		},
		// A cooldown of 0 is none, even when the last scale is dated
		// ahead of now (another manager's clock, a clock set back).
		{
			name: "up with no cooldown after a scale dated ahead", current: 2, dir: Up,
			policy: pol(func(p *Policy) { p.CooldownUp = 0 }), last: LastScale{Up: now.Add(time.Minute)},
			want: Decision{From: 2, To: 3, Reason: ReasonScaled},
		},
		{
			name: "down with no cooldown after a scale dated ahead", current: 3, dir: Down,
			policy: pol(downOK), last: LastScale{Up: now.Add(time.Minute)},
			want: Decision{From: 3, To: 2, Reason: ReasonScaled},
		},
		{name: "paused refuses up", current: 1, dir: Up, policy: pol(func(p *Policy) { p.Paused = true }), want: Decision{From: 1, To: 1, Reason: ReasonPaused, Refused: true}},
		{name: "paused refuses down", current: 3, dir: Down, policy: pol(func(p *Policy) { downOK(p); p.Paused = true }), want: Decision{From: 3, To: 3, Reason: ReasonPaused, Refused: true}},
		{name: "disabled refuses", current: 1, dir: Up, policy: DefaultPolicy(), want: Decision{From: 1, To: 1, Reason: ReasonDisabled, Refused: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decide(tt.current, tt.dir, tt.policy, tt.last, now)
			if err != nil {
				t.Fatal(err)
			}
			if got.Why == "" {
				t.Error("decision has no Why")
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.IgnoreFields(Decision{}, "Why")); diff != "" {
				t.Errorf("decision (-want +got):\n%s", diff)
			}
			if got.To < min(tt.policy.Min, got.From) || got.To > max(tt.policy.Max, got.From) {
				t.Errorf("target %d outside the bounds", got.To)
			}
		})
	}
}

func TestDecideUnknownDirection(t *testing.T) {
	p := DefaultPolicy()
	p.Enabled = true
	for _, d := range []Direction{"", "sideways", "UP"} {
		if _, err := Decide(1, d, p, LastScale{}, time.Now()); !errors.Is(err, ErrUnknownDirection) {
			t.Errorf("Decide(%q) error = %v, want ErrUnknownDirection", d, err)
		}
	}
}

func TestParseDirection(t *testing.T) {
	tests := []struct {
		in   string
		want Direction
		ok   bool
	}{
		{"up", Up, true}, {"UP", Up, true}, {"dOwN", Down, true}, {"down", Down, true},
		{"true", "", false}, {"false", "", false}, {"TRUE", "", false}, {" up", "", false}, {"down\n", "", false},
		{"", "", false}, {"left", "", false}, {"1", "", false}, {"ｕｐ", "", false}, {"uP\x00", "", false},
	}
	for _, tt := range tests {
		got, err := ParseDirection(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseDirection(%q) = %q, %v", tt.in, got, err)
		}
		if err != nil && !errors.Is(err, ErrUnknownDirection) {
			t.Errorf("ParseDirection(%q) error %v is not ErrUnknownDirection", tt.in, err)
		}
	}
}
