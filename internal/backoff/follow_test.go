package backoff

import (
	"context"
	"log/slog"
	"testing"
)

// TestFollow: a stream that ends is reopened; every subscription is
// followed by Opened, every end before the context's by Lost, and every
// event reaches Handle.
func TestFollow(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	subscriptions, opened, lost := 0, 0, 0
	var got []int
	Follow(ctx, slog.New(slog.DiscardHandler), "test stream", Stream[int]{
		Subscribe: func(context.Context) (<-chan int, <-chan error) {
			subscriptions++
			events := make(chan int, 1)
			events <- subscriptions
			if subscriptions == 1 {
				close(events) // the first stream ends after one event
			}
			return events, make(chan error)
		},
		Opened: func() { opened++ },
		Handle: func(_ context.Context, ev int) {
			got = append(got, ev)
			if ev == 2 {
				cancel()
			}
		},
		Lost: func() { lost++ },
	})
	if subscriptions != 2 || opened != 2 || lost != 1 || len(got) != 2 || got[0] != 1 || got[1] != 2 {
		t.Errorf("subscriptions %d, opened %d, lost %d, events %v; want 2, 2, 1, [1 2]", subscriptions, opened, lost, got)
	}
}
