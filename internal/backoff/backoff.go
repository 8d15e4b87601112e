// Package backoff is the one retry delay underlay's loops share: it doubles
// from Min up to Max and starts over after Reset, and Sleep waits for it
// unless the context ends first.
//
// It imports only the standard library and does no I/O.
package backoff

import (
	"context"
	"time"
)

// Backoff is a doubling delay. Set Min and Max: a Min below MinDelay
// counts as MinDelay (a zero delay would retry in a spin), a Max below
// Min as Min.
type Backoff struct {
	Min, Max time.Duration
	cur      time.Duration
}

// MinDelay is the shortest delay Next returns.
const MinDelay = 10 * time.Millisecond

// Next returns the delay before the next attempt: Min first, then twice the
// previous one, at most Max.
func (b *Backoff) Next() time.Duration {
	lo := max(b.Min, MinDelay)
	hi := max(b.Max, lo)
	if b.cur == 0 {
		b.cur = lo
	} else {
		b.cur = min(max(b.cur*2, lo), hi)
	}
	return b.cur
}

// Reset makes the next delay Min again, after a success.
func (b *Backoff) Reset() { b.cur = 0 }

// Sleep waits for d or until ctx ends.
func Sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
