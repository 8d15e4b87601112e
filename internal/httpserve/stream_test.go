package httpserve

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestStreamRetry: the field is a block of its own, in whole milliseconds
// within [least, 2·least), drawn anew each time; a least of zero or below
// is a millisecond, not a panic of rand.N.
func TestStreamRetry(t *testing.T) {
	ms := func(field string) int {
		t.Helper()
		v, ok := strings.CutPrefix(field, "retry: ")
		n, err := strconv.Atoi(strings.TrimSuffix(v, "\n\n"))
		if !ok || !strings.HasSuffix(v, "\n\n") || err != nil {
			t.Fatalf("StreamRetry = %q, want \"retry: MILLISECONDS\\n\\n\"", field)
		}
		return n
	}
	seen := map[int]bool{}
	for range 20 {
		n := ms(StreamRetry(2 * time.Second))
		if n < 2000 || n >= 4000 {
			t.Errorf("StreamRetry(2s) = %d ms, want within [2000, 4000)", n)
		}
		seen[n] = true
	}
	if len(seen) < 2 {
		t.Errorf("StreamRetry(2s) drew %v 20 times: no jitter", seen)
	}
	for _, least := range []time.Duration{0, -time.Second, time.Microsecond} {
		if n := ms(StreamRetry(least)); n != 1 {
			t.Errorf("StreamRetry(%s) = %d ms, want 1", least, n)
		}
	}
}
