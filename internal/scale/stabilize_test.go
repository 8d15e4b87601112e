package scale

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/underlay/underlay/internal/testclock"
)

func TestDecideTo(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	pol := func(f func(*Policy)) Policy {
		p := DefaultPolicy()
		p.Enabled, p.Max = true, 10
		if f != nil {
			f(&p)
		}
		return p
	}
	down := func(p *Policy) { p.AllowDown, p.CooldownDown = true, 0 }
	tests := []struct {
		name            string
		current, target int
		policy          Policy
		last            LastScale
		wantDir         Direction
		wantTo          int
		wantReason      Reason
		wantRefused     bool
	}{
		{name: "up to target", current: 2, target: 5, policy: pol(nil), wantDir: Up, wantTo: 5, wantReason: ReasonScaled},
		{name: "up clamped to max", current: 2, target: 50, policy: pol(nil), wantDir: Up, wantTo: 10, wantReason: ReasonScaled},
		{name: "same is unchanged", current: 3, target: 3, policy: pol(nil), wantTo: 3, wantReason: ReasonUnchanged, wantRefused: true},
		{name: "down needs allow-down", current: 5, target: 2, policy: pol(nil), wantDir: Down, wantTo: 5, wantReason: ReasonDownDisabled, wantRefused: true},
		{name: "down clamped to min", current: 5, target: 0, policy: pol(down), wantDir: Down, wantTo: 1, wantReason: ReasonScaled},
		{name: "down to zero when min is 0", current: 5, target: 0, policy: pol(func(p *Policy) { down(p); p.Min = 0 }), wantDir: Down, wantTo: 0, wantReason: ReasonScaled},
		{
			name: "up cooldown", current: 2, target: 4, policy: pol(func(p *Policy) { p.CooldownUp = time.Minute }),
			last: LastScale{Up: now.Add(-time.Second)}, wantDir: Up, wantTo: 2, wantReason: ReasonCooldown, wantRefused: true,
		},
		{name: "paused", current: 2, target: 4, policy: pol(func(p *Policy) { p.Paused = true }), wantDir: Up, wantTo: 2, wantReason: ReasonPaused, wantRefused: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, d := DecideTo(tt.current, tt.target, tt.policy, tt.last, now)
			got := []any{dir, d.To, d.Reason, d.Refused}
			want := []any{tt.wantDir, tt.wantTo, tt.wantReason, tt.wantRefused}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("DecideTo (-want +got):\n%s", diff)
			}
		})
	}
}

func TestStabilize(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	recs := []Recommendation{
		{Time: now.Add(-10 * time.Minute), Replicas: 9}, // outside a 5m window
		{Time: now.Add(-4 * time.Minute), Replicas: 4},
		{Time: now.Add(-time.Minute), Replicas: 3},
	}
	scaledDown := func(from, to int) Decision { return Decision{From: from, To: to, Reason: ReasonScaled} }
	tests := []struct {
		name       string
		d          Decision
		dir        Direction
		window     time.Duration
		wantTo     int
		wantReason Reason
	}{
		{name: "down raised to the highest in the window", d: scaledDown(6, 1), dir: Down, window: 5 * time.Minute, wantTo: 4, wantReason: ReasonScaled},
		{name: "down below the highest is held", d: scaledDown(4, 2), dir: Down, window: 5 * time.Minute, wantTo: 4, wantReason: ReasonStabilizing},
		{name: "a longer window sees older recommendations", d: scaledDown(10, 1), dir: Down, window: 15 * time.Minute, wantTo: 9, wantReason: ReasonScaled},
		{name: "no window", d: scaledDown(6, 1), dir: Down, window: 0, wantTo: 1, wantReason: ReasonScaled},
		{name: "up is never held", d: Decision{From: 1, To: 2, Reason: ReasonScaled}, dir: Up, window: 5 * time.Minute, wantTo: 2, wantReason: ReasonScaled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, ok := HighestRecommendation(recs, tt.window, now)
			got := Stabilize(tt.d, tt.dir, h, ok, tt.window)
			if got.To != tt.wantTo || got.Reason != tt.wantReason {
				t.Errorf("Stabilize = %+v, want to %d, reason %s", got, tt.wantTo, tt.wantReason)
			}
		})
	}
	if got := PruneRecommendations(append([]Recommendation(nil), recs...), 5*time.Minute, now); len(got) != 2 {
		t.Errorf("PruneRecommendations kept %d, want 2", len(got))
	}
}

// TestRecommendationsStayFew: every scale-up request adds a recommendation
// for the stabilization window (up to 24h), refused ones too; a client
// sending requests at a service held at its maximum made the list, and
// the time each decision takes to scan it, grow for the whole window. A
// recommendation no higher than a later one can never be the highest
// within the window, so it is dropped.
func TestRecommendationsStayFew(t *testing.T) {
	clock := testclock.New(time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC))
	e := newAPIEnv(t, Config{Now: clock.Now},
		svc("web", 4, "orbiter", "true", LabelMax, "4", LabelStabilizationDown, "24h"))
	for range 1000 {
		clock.Add(time.Second)
		if _, err := e.ctrl.Handle(context.Background(), Request{Service: "web", Direction: Up}); err != nil {
			t.Fatal(err)
		}
	}
	_, st, _ := e.ctrl.lookup("web")
	st.mu.Lock()
	n := len(st.recs)
	st.mu.Unlock()
	if n > 1 {
		t.Errorf("%d recommendations kept after 1000 scale-ups refused at 4 replicas, want 1", n)
	}
}

func TestAddRecommendation(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return now.Add(time.Duration(s) * time.Second) }
	var recs []Recommendation
	for i, r := range []int{5, 3, 4, 2, 2} {
		recs = AddRecommendation(recs, Recommendation{Time: at(i), Replicas: r})
	}
	want := []Recommendation{{Time: at(0), Replicas: 5}, {Time: at(2), Replicas: 4}, {Time: at(4), Replicas: 2}}
	if diff := cmp.Diff(want, recs); diff != "" {
		t.Errorf("recommendations (-want +got):\n%s", diff)
	}
	// One dated before the last (a clock set back) drops none: the later
	// ones may outlast it in the window.
	recs = AddRecommendation(recs, Recommendation{Time: at(1), Replicas: 9})
	if len(recs) != 4 {
		t.Errorf("a recommendation dated before the others dropped some: %+v", recs)
	}
}

// TestStabilizationWindowEdges: a recommendation exactly window old is
// within the window (the highest sees it, pruning keeps it), one a moment
// older is not; a window of 0 disables stabilization, even for a
// recommendation made this instant.
func TestStabilizationWindowEdges(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	const window = 5 * time.Minute
	for _, c := range []struct {
		age    time.Duration
		within bool
	}{
		{window, true},
		{window + time.Nanosecond, false},
	} {
		recs := []Recommendation{{Time: now.Add(-c.age), Replicas: 7}}
		if _, ok := HighestRecommendation(recs, window, now); ok != c.within {
			t.Errorf("a recommendation %s old, window %s: highest found %v, want %v", c.age, window, ok, c.within)
		}
		if kept := len(PruneRecommendations(recs, window, now)) == 1; kept != c.within {
			t.Errorf("a recommendation %s old, window %s: kept by pruning %v, want %v", c.age, window, kept, c.within)
		}
	}
	if h, ok := HighestRecommendation([]Recommendation{{Time: now, Replicas: 7}}, 0, now); ok {
		t.Errorf("window 0: highest %d found in a recommendation made now, want none (disabled)", h)
	}
}

// TestAddRecommendationSameInstant: recommendations made in one instant
// (a burst of requests, a clock that moves in steps) leave the window
// together, so only the highest of them is kept: a thousand requests at
// one time at a service held at its maximum keep one, not a thousand.
func TestAddRecommendationSameInstant(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	var recs []Recommendation
	for _, r := range []int{3, 5, 5, 4, 5} {
		recs = AddRecommendation(recs, Recommendation{Time: now, Replicas: r})
	}
	want := []Recommendation{{Time: now, Replicas: 5}}
	if diff := cmp.Diff(want, recs); diff != "" {
		t.Errorf("recommendations made at one instant (-want +got):\n%s", diff)
	}
}
