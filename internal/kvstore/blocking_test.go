package kvstore

import (
	"context"
	"testing"
	"time"
)

// TestBlockingIndex: a blocking loop's index follows Consul's rules. An
// index that went backwards is a change and the next read waits on 0
// (Consul answers it at once), and the answer to that read, the same
// lower index, is no second change; a loop never waits on 0 twice in a
// row for an answer of 0 (a spin); a failed read is followed by a read
// at 0; a change is an index that moved.
func TestBlockingIndex(t *testing.T) {
	type step struct {
		answer  uint64 // the index answered; failed when fail
		fail    bool
		changed bool
		next    uint64
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"first answer", []step{{answer: 7, changed: true, next: 7}}},
		{"wait timed out", []step{{answer: 7, changed: true, next: 7}, {answer: 7, next: 7}}},
		{"a write", []step{{answer: 7, changed: true, next: 7}, {answer: 9, changed: true, next: 9}}},
		{"went backwards", []step{
			{answer: 5000, changed: true, next: 5000},
			{answer: 3, changed: true, next: 0}, // restart the loop
			{answer: 3, next: 3},                // read again at once: no news
			{answer: 4, changed: true, next: 4},
		}},
		{"answered 0", []step{{answer: 0, next: 1}, {answer: 0, next: 1}}},
		{"went backwards to 0", []step{
			{answer: 1, changed: true, next: 1},
			{answer: 0, changed: true, next: 0},
			{answer: 0, next: 1}, // then waited on as 1: no spin
		}},
		{"failed", []step{
			{answer: 12, changed: true, next: 12},
			{fail: true, next: 0},
			{answer: 12, next: 12}, // the same index: no change
			{fail: true, next: 0},
			{answer: 2, changed: true, next: 0}, // restarted meanwhile
		}},
	} {
		var b BlockingIndex
		if b.Next() != 0 {
			t.Errorf("%s: a new loop waits on %d first, want 0", tc.name, b.Next())
		}
		for i, s := range tc.steps {
			changed := false
			if s.fail {
				b.Failed()
			} else {
				changed = b.Answered(s.answer)
			}
			if changed != s.changed || b.Next() != s.next {
				t.Errorf("%s, step %d (answer %d, failed %v): changed %v, next %d; want %v, %d", tc.name, i+1, s.answer, s.fail, changed, b.Next(), s.changed, s.next)
			}
		}
	}
}

// TestBlockingContext: a blocking read of BlockingWait is given up only
// after Consul's wait, its sixteenth of jitter and WriteWait for the
// answer (73.75 s), never before an answer Consul may legitimately send.
func TestBlockingContext(t *testing.T) {
	for _, c := range []struct {
		wait, want time.Duration
	}{
		{BlockingWait, 73750 * time.Millisecond},
		{80 * time.Millisecond, 105 * time.Millisecond},
	} {
		before := time.Now()
		ctx, cancel := BlockingContext(context.Background(), c.wait)
		deadline, ok := ctx.Deadline()
		cancel()
		if got := deadline.Sub(before); !ok || got < c.want || got > c.want+time.Second {
			t.Errorf("BlockingContext(%s): deadline in %s (set %v), want %s", c.wait, got, ok, c.want)
		}
	}
}
