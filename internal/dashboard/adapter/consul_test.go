package adapter

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
)

// TestCatalogWatchAfterConsulRestarted: the Consul a catalog watch follows
// fails a blocking query and comes back empty, its index started again (a
// dev agent restarted). The watch reads at once and signals the change.
// Before, it waited again on its index from before the restart, which
// Consul answers only at the wait time, five minutes: the dashboard showed
// the old catalog that long.
func TestCatalogWatchAfterConsulRestarted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	queries := 0
	// As Consul's blockingQuery: index 5000, a failure as the agent stops,
	// then 3; an answer once the index is past the one waited on.
	query := func(q *api.QueryOptions) (uint64, error) {
		queries++
		now := uint64(5000)
		switch {
		case queries == 2:
			return 0, errors.New("agent stopping")
		case queries > 2:
			now = 3
		}
		if q.WaitIndex != 0 && now <= q.WaitIndex {
			<-q.Context().Done()
			return 0, q.Context().Err()
		}
		return now, nil
	}
	c := &Catalog{log: slog.New(slog.DiscardHandler)}
	out := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() { c.watch(ctx, out, "catalog", query); close(done) }()
	defer func() { cancel(); <-done }()
	for i, what := range []string{"the first read", "the read after the restart"} {
		select {
		case <-out:
		case <-ctx.Done():
			t.Fatalf("no change signalled for %s (change %d)", what, i+1)
		}
	}
}

// TestCatalogWatchIndexWentBackwards: Consul restarted empty between two
// blocking queries of a catalog watch; the second, waiting on the index
// from before, is answered at the wait's end with a lower index. The next
// query restarts the loop with index 0, answered at once, as Consul's
// blocking-query rules say. Before, it waited on index 1.
func TestCatalogWatchIndexWentBackwards(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	asked := make(chan uint64, 8) // the index each query waited on
	// As Consul's blockingQuery: index 5000, then, restarted empty, 1.
	now := uint64(5000)
	query := func(q *api.QueryOptions) (uint64, error) {
		asked <- q.WaitIndex
		switch {
		case q.WaitIndex == 5000:
			now = 1
			return now, nil // at the wait's end (not waited out here)
		case q.WaitIndex != 0 && now <= q.WaitIndex:
			<-q.Context().Done()
			return 0, q.Context().Err()
		}
		return now, nil
	}
	c := &Catalog{log: slog.New(slog.DiscardHandler)}
	done := make(chan struct{})
	go func() { c.watch(ctx, make(chan struct{}, 1), "catalog", query); close(done) }()
	defer func() { cancel(); <-done }()
	kvtest.WaitedOn(ctx, t, asked, "the watch's queries", 0, 5000, 0, 1)
}
