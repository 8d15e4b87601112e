package netspec

import "time"

// Heard is a stamp another host's clock wrote (its agent's heartbeat) and
// when this host's clock first saw it.
type Heard struct{ Stamp, At time.Time }

// Hear is what a reader knows of a stamp it read at now, having known prev
// (seen: it had read one before).
//
// A stamp is judged by when the reader saw it change, by its own clock:
// judged by its age, a live writer whose clock is behind reads as silent,
// and a dead one whose clock was ahead as alive for as long. A stamp seen
// for the first time counts from itself when it is in the past, so a reader
// just started judges a writer long gone as gone at once.
func Hear(prev Heard, seen bool, stamp, now time.Time) Heard {
	if seen && prev.Stamp.Equal(stamp) {
		return prev
	}
	h := Heard{Stamp: stamp, At: now}
	if !seen && stamp.Before(now) {
		h.At = stamp
	}
	return h
}
