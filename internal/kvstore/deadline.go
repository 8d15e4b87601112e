package kvstore

import (
	"context"
	"time"
)

// WriteWait is the longest one write of a loop to the store may take (a
// publish, a heartbeat): a Consul agent that accepts the connection and
// never answers would otherwise hold the loop for good, its next rounds
// never run.
const WriteWait = 10 * time.Second

// WriteContext is ctx bounded for one write of a loop that runs every
// period: by WriteWait, or by period when shorter, so that a write that
// hangs is given up by the next round. A period of 0 or less bounds it
// by WriteWait.
func WriteContext(ctx context.Context, period time.Duration) (context.Context, context.CancelFunc) {
	d := WriteWait
	if period > 0 {
		d = min(d, period)
	}
	return context.WithTimeout(ctx, d)
}
