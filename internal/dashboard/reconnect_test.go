package dashboard

import (
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestStreamOpenRebuildsOnlyAStaleSnapshot: a stream opening on an
// unwatched dashboard asks for a rebuild only when the snapshot is older
// than Refresh, as a read of the snapshot does. Else a client (or another
// site's page, in a loop of EventSources) opening and closing streams one
// after another had every open rebuild — read the whole swarm, Consul's
// catalog and underlay's KV — back to back, without end.
func TestStreamOpenRebuildsOnlyAStaleSnapshot(t *testing.T) {
	now := t0
	s, err := New(Config{Refresh: time.Minute, Now: func() time.Time { return now }}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	s.publish(Build(cardsInput())) // built at t0
	open := func() {
		sub, _ := s.subscribe()
		s.unsubscribe(sub)
	}
	for range 3 {
		open()
		if len(s.kick) != 0 {
			t.Fatal("a stream opening on a snapshot built 0s ago asked for a rebuild")
		}
	}
	now = now.Add(2 * time.Minute)
	open()
	if len(s.kick) != 1 {
		t.Error("a stream opening on a snapshot built 2m ago (Refresh 1m) asked for no rebuild")
	}
}
