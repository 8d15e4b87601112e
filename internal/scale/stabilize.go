package scale

import (
	"fmt"
	"time"
)

// Recommendation is a replica count asked for at a time: by a scale-up
// request (the replicas it reached or held) or by one evaluation of a
// service's metrics (the raw desired replicas).
type Recommendation struct {
	Time     time.Time
	Replicas int
}

// HighestRecommendation is the highest replica count recommended within
// window before now, and false when there is none (or window is 0).
func HighestRecommendation(recs []Recommendation, window time.Duration, now time.Time) (int, bool) {
	if window <= 0 {
		return 0, false
	}
	best, ok := 0, false
	for _, r := range recs {
		if now.Sub(r.Time) <= window && (!ok || r.Replicas > best) {
			best, ok = r.Replicas, true
		}
	}
	return best, ok
}

// PruneRecommendations drops those older than window, in place.
func PruneRecommendations(recs []Recommendation, window time.Duration, now time.Time) []Recommendation {
	out := recs[:0]
	for _, r := range recs {
		if now.Sub(r.Time) <= window {
			out = append(out, r)
		}
	}
	return out
}

// Stabilize applies a scale-down stabilization window to d, as Kubernetes'
// HPA does: a scale-down goes no lower than highest, the highest
// recommendation within window, and is refused as stabilizing when that
// leaves the replicas where they are. Other decisions pass unchanged.
func Stabilize(d Decision, dir Direction, highest int, ok bool, window time.Duration) Decision {
	if dir != Down || d.Refused || !ok || highest <= d.To {
		return d
	}
	if highest >= d.From {
		return Decision{From: d.From, To: d.From, Reason: ReasonStabilizing, Refused: true,
			Why: fmt.Sprintf("scale-down stabilization: %d replicas were recommended within the last %s", highest, window)}
	}
	d.To = highest
	d.Why = fmt.Sprintf("scaled down from %d to %d replicas, the highest recommendation within the last %s", d.From, d.To, window)
	return d
}

// AddRecommendation appends r to recs, first dropping the latest ones
// no higher than r and not dated after it: each leaves the window no
// later than r, so it can never be the highest within it. The list stays
// as short as its distinct falling values, however many requests come.
func AddRecommendation(recs []Recommendation, r Recommendation) []Recommendation {
	n := len(recs)
	for n > 0 && recs[n-1].Replicas <= r.Replicas && !recs[n-1].Time.After(r.Time) {
		n--
	}
	return append(recs[:n], r)
}
