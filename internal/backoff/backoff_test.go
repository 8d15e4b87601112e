package backoff

import (
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	b := Backoff{Min: time.Second, Max: 5 * time.Second}
	var got []time.Duration
	for range 5 {
		got = append(got, b.Next())
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("delays %v, want %v", got, want)
		}
	}
	b.Reset()
	if d := b.Next(); d != time.Second {
		t.Errorf("after Reset: %s, want 1s", d)
	}
}

// TestBackoffUnset: a zero Min, or a Max below Min, never makes a zero or
// shrinking delay. Before, Backoff{} returned 0 forever: a retry loop
// spun, and Max 0 made every delay after the first 0.
func TestBackoffUnset(t *testing.T) {
	for _, b := range []Backoff{{}, {Min: 0, Max: time.Second}, {Min: time.Second, Max: 0}} {
		prev := time.Duration(0)
		for i := range 4 {
			d := b.Next()
			if d < MinDelay || d < prev {
				t.Fatalf("Backoff{Min: %s, Max: %s}: delay %d is %s (before it %s)", b.Min, b.Max, i, d, prev)
			}
			prev = d
		}
	}
}
