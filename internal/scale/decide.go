package scale

import (
	"errors"
	"fmt"
	"time"

	"github.com/underlay/underlay/internal/termtext"
)

// Direction is which way a request asks to scale.
type Direction string

// The two directions.
const (
	Up   Direction = "up"
	Down Direction = "down"
)

// ErrUnknownDirection is returned for any direction but up and down.
// Orbiter scaled down on anything but "up"; underlay refuses instead.
var ErrUnknownDirection = errors.New("unknown direction: want up or down")

// ParseDirection is the one rule for directions, on every route (paths,
// bodies, alert labels) and in the CLI: "up" or "down" in any letter case
// (ASCII only), and nothing else — no blanks around it, no "true" or
// "false" strings. Orbiter's booleans are accepted only as JSON true and
// false, by the parser of Orbiter's body form.
func ParseDirection(s string) (Direction, error) {
	switch {
	case asciiEqualFold(s, string(Up)):
		return Up, nil
	case asciiEqualFold(s, string(Down)):
		return Down, nil
	}
	return "", fmt.Errorf("%w: %s", ErrUnknownDirection, termtext.Q(s))
}

// asciiEqualFold is strings.EqualFold restricted to ASCII letters, so that
// no Unicode look-alike ever folds into a direction.
func asciiEqualFold(s, lower string) bool {
	if len(s) != len(lower) {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// Reason is a short, stable code saying what a decision did or why it was
// refused; it is the reason label of the decision metrics.
type Reason string

// The reasons a Decision carries.
const (
	ReasonScaled       Reason = "scaled"
	ReasonAtMax        Reason = "at_max"
	ReasonAtMin        Reason = "at_min"
	ReasonCooldown     Reason = "cooldown"
	ReasonPaused       Reason = "paused"
	ReasonDisabled     Reason = "disabled"
	ReasonDownDisabled Reason = "down_not_allowed"
	// ReasonStabilizing: a scale-down held by the stabilization window.
	ReasonStabilizing Reason = "stabilizing"
	// ReasonUnchanged: the replicas asked for are the current ones.
	ReasonUnchanged Reason = "unchanged"
)

// LastScale is when a service was last scaled, by direction; zero means never.
type LastScale struct {
	Up   time.Time `json:"up,omitzero"`
	Down time.Time `json:"down,omitzero"`
}

// Latest is the later of the two times.
func (l LastScale) Latest() time.Time {
	if l.Up.After(l.Down) {
		return l.Up
	}
	return l.Down
}

// Decision is the outcome of one scaling request.
type Decision struct {
	From int `json:"from"`
	To   int `json:"to"`
	// Reason is the code of what happened; ReasonScaled unless Refused.
	Reason Reason `json:"reason"`
	// Refused is true when the policy held the replicas where they were;
	// then To equals From.
	Refused bool `json:"refused"`
	// Why says it in a sentence.
	Why string `json:"why"`
}

// Decide applies policy p to a request to move current replicas in
// direction dir at now, given when the service was last scaled. It never
// returns a target outside [p.Min, p.Max] and never moves against the
// direction asked: an up on a service above its maximum is refused rather
// than turned into a scale-down.
//
// Cooldowns: an up waits p.CooldownUp from the last up; a down waits
// p.CooldownDown from the last scale in either direction, so a scale-up is
// never followed at once by a scale-down.
func Decide(current int, dir Direction, p Policy, last LastScale, now time.Time) (Decision, error) {
	if dir != Up && dir != Down {
		return Decision{}, fmt.Errorf("%w: %s", ErrUnknownDirection, termtext.Q(string(dir)))
	}
	if dir == Up {
		return decideTo(current, Up, current+p.StepUp.Delta(current), p, last, now), nil
	}
	return decideTo(current, Down, current-p.StepDown.Delta(current), p, last, now), nil
}

// DecideTo applies policy p to a request to set current replicas to target
// at now (underlay scale --to, and target tracking): the direction is
// target's side of current, and Decide's rules hold — bounds, cooldowns,
// AllowDown, pause. A target equal to current is refused as unchanged.
func DecideTo(current, target int, p Policy, last LastScale, now time.Time) (Direction, Decision) {
	if target == current {
		return "", Decision{From: current, To: current, Reason: ReasonUnchanged, Refused: true,
			Why: fmt.Sprintf("already at %d replicas", current)}
	}
	dir := Up
	if target < current {
		dir = Down
	}
	return dir, decideTo(current, dir, target, p, last, now)
}

// decideTo moves current towards target in direction dir under policy p.
func decideTo(current int, dir Direction, target int, p Policy, last LastScale, now time.Time) Decision {
	refuse := func(r Reason, format string, args ...any) Decision {
		return Decision{From: current, To: current, Reason: r, Refused: true, Why: fmt.Sprintf(format, args...)}
	}
	switch {
	case !p.Enabled:
		return refuse(ReasonDisabled, "autoscaling is disabled for this service")
	case p.Paused:
		return refuse(ReasonPaused, "autoscaling is paused (%s=true)", LabelPaused)
	}
	if dir == Up {
		if current >= p.Max {
			return refuse(ReasonAtMax, "%d replicas: already at or above the maximum %d", current, p.Max)
		}
		if left := cooldownLeft(last.Up, p.CooldownUp, now); left > 0 {
			return refuse(ReasonCooldown, "scale-up cooldown: %s left of %s", left.Round(time.Millisecond), p.CooldownUp)
		}
		target = min(max(target, p.Min), p.Max)
	} else {
		if !p.AllowDown {
			return refuse(ReasonDownDisabled, "scale-down is not allowed for this service (set %s=true)", LabelAllowDown)
		}
		if current <= p.Min {
			return refuse(ReasonAtMin, "%d replicas: already at or below the minimum %d", current, p.Min)
		}
		if left := cooldownLeft(last.Latest(), p.CooldownDown, now); left > 0 {
			return refuse(ReasonCooldown, "scale-down cooldown: %s left of %s", left.Round(time.Millisecond), p.CooldownDown)
		}
		target = max(min(target, p.Max), p.Min)
	}
	return Decision{From: current, To: target, Reason: ReasonScaled,
		Why: fmt.Sprintf("scaled %s from %d to %d replicas (bounds %d..%d)", dir, current, target, p.Min, p.Max)}
}

func cooldownLeft(last time.Time, cooldown time.Duration, now time.Time) time.Duration {
	if last.IsZero() || cooldown <= 0 {
		return 0
	}
	return last.Add(cooldown).Sub(now)
}
