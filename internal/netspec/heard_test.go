package netspec

import (
	"testing"
	"time"
)

// TestHear: a stamp is heard when it changes, by the reader's clock,
// whichever way it moved; one seen first counts from itself when it is in
// the past, and from now when it is ahead.
func TestHear(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	behind, ahead := now.Add(-time.Hour), now.Add(365*24*time.Hour)
	for _, c := range []struct {
		name  string
		prev  Heard
		seen  bool
		stamp time.Time
		want  Heard
	}{
		{"first, in the past", Heard{}, false, behind, Heard{behind, behind}},
		{"first, ahead", Heard{}, false, ahead, Heard{ahead, now}},
		{"unchanged", Heard{ahead, now.Add(-time.Hour)}, true, ahead, Heard{ahead, now.Add(-time.Hour)}},
		{"moved on, still behind", Heard{behind, now.Add(-time.Minute)}, true, behind.Add(30 * time.Second), Heard{behind.Add(30 * time.Second), now}},
		{"set back", Heard{ahead, now.Add(-time.Hour)}, true, behind, Heard{behind, now}},
	} {
		if got := Hear(c.prev, c.seen, c.stamp, now); got != c.want {
			t.Errorf("%s: Hear = %+v, want %+v", c.name, got, c.want)
		}
	}
}
