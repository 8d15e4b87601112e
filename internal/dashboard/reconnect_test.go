package dashboard

import (
	"bufio"
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
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

// TestStreamRetryIsJittered: every stream tells the browser how long to
// wait before reconnecting (retry:), and each its own time, between
// streamRetry and twice that. With one fixed retry, every page open on
// control reconnected at the same instant after a restart: a thundering
// herd of streams and snapshot reads on a control just started.
func TestStreamRetryIsJittered(t *testing.T) {
	ts := startServer(t, Config{}, cardsInput())
	seen := map[int]bool{}
	for range 20 {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", ts.http.URL+"/v1/cluster/events", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(resp.Body).ReadString('\n')
		cancel()
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		ms, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "retry:")))
		if err != nil || !strings.HasPrefix(line, "retry:") {
			t.Fatalf("the stream's first line %q: want retry: MILLISECONDS (%v)", line, err)
		}
		if d := time.Duration(ms) * time.Millisecond; d < streamRetry || d >= 2*streamRetry {
			t.Errorf("retry: %d ms, want within [%s, %s)", ms, streamRetry, 2*streamRetry)
		}
		seen[ms] = true
	}
	// 20 draws of 2000 values alike: one chance in 2000^19.
	if len(seen) < 2 {
		t.Errorf("20 streams were all told retry: %v: no jitter", seen)
	}
}

// TestScriptReconnectsWithJitter: the page's own reconnects (a stream
// refused, 503 or 401, closes for good; a stream gone quiet) wait a
// jittered delay, not the same backoff on every page.
func TestScriptReconnectsWithJitter(t *testing.T) {
	b, err := assets.ReadFile("assets/app.js")
	if err != nil {
		t.Fatal(err)
	}
	js := string(b)
	if !strings.Contains(js, "function jitter(ms) { return ms / 2 + Math.random() * ms; }") {
		t.Error("app.js has no jitter(ms), a delay spread over [ms/2, 3ms/2)")
	}
	for _, call := range []string{"setTimeout(async () => {", "reconnect(jitter(state.backoff))", "reconnect(jitter(KEEPALIVE_MS))"} {
		if !strings.Contains(js, call) {
			t.Errorf("app.js lacks %q", call)
		}
	}
	if strings.Contains(js, "reconnect(state.backoff)") || strings.Contains(js, "reconnect(0)") {
		t.Error("app.js still reconnects without jitter (reconnect(state.backoff) or reconnect(0))")
	}
}
