package httpserve

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// StreamRetry is the retry: field that opens a server-sent event stream,
// a block of its own: how long the client (a browser's EventSource) waits
// before reconnecting when the stream drops. Each call draws its own time
// in [least, 2·least), whole milliseconds, so that after a restart or a
// change of leader the clients of many streams do not all come back at
// the same instant, as they do on EventSource's default (3 s for all).
// A least under a millisecond is taken as one.
func StreamRetry(least time.Duration) string {
	least = max(least, time.Millisecond)
	return fmt.Sprintf("retry: %d\n\n", (least + rand.N(least)).Milliseconds())
}
