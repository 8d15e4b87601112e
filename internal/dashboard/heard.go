package dashboard

import "time"

// heard is an agent's latest report stamps, facts and doctor, and when the
// dashboard's clock first saw them.
type heard struct{ facts, doctor, at time.Time }

// hearAgents sets each agent's HeardAt from what the last refresh saw
// (prev), and returns what this one saw.
//
// A report's stamp is written by its agent's clock: judged by it, an agent
// whose clock is behind reads as stale while it reports, and a dead one
// whose clock was ahead reads as up for as long. An agent is heard when a
// stamp changes, by the dashboard's clock; one seen for the first time
// counts from its stamp if that is in the past, so a dashboard just started
// shows an agent long gone as stale at once.
func hearAgents(agents []AgentInput, prev map[string]heard, now time.Time) map[string]heard {
	next := make(map[string]heard, len(agents))
	for i := range agents {
		a := &agents[i]
		var doctor time.Time
		if a.Doctor != nil {
			doctor = a.Doctor.At
		}
		h, seen := prev[a.Node]
		if !seen || !h.facts.Equal(a.FactsAt) || !h.doctor.Equal(doctor) {
			h = heard{facts: a.FactsAt, doctor: doctor, at: now}
			if latest := later(a.FactsAt, doctor); !seen && latest.Before(now) {
				h.at = latest
			}
		}
		next[a.Node] = h
		if !a.FactsAt.IsZero() || !doctor.IsZero() {
			a.HeardAt = h.at
		}
	}
	return next
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
