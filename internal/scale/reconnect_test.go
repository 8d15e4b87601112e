package scale

import (
	"bufio"
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestEventsRetryIsJittered: every event stream of the API (each route
// that serves one) tells its client how long to wait before reconnecting
// (retry:), and each stream its own time, between eventsRetry and twice
// that. Without it, every EventSource waited the browser's default, 3 s:
// after a restart of control, or a new leader, all the streams open on it
// came back at the same instant.
func TestEventsRetryIsJittered(t *testing.T) {
	e := newAPIEnv(t, Config{})
	for _, path := range []string{"/v1/orbiter/events", "/events", "/v1/underlay/events"} {
		seen := map[int]bool{}
		for range 20 {
			ms := firstRetry(t, e.srv.URL+path)
			if d := time.Duration(ms) * time.Millisecond; d < eventsRetry || d >= 2*eventsRetry {
				t.Errorf("%s: retry: %d ms, want within [%s, %s)", path, ms, eventsRetry, 2*eventsRetry)
			}
			seen[ms] = true
		}
		// 20 draws of 2000 values alike: one chance in 2000^19.
		if len(seen) < 2 {
			t.Errorf("%s: 20 streams were all told retry: %v: no jitter", path, seen)
		}
	}
}

// firstRetry opens the event stream at url and returns the milliseconds
// of its retry: field, which must come before any event.
func firstRetry(t *testing.T, url string) int {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d", url, resp.StatusCode)
	}
	br := bufio.NewReader(resp.Body)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("GET %s: the stream ended before a retry: field: %v", url, err)
		}
		line = strings.TrimSuffix(line, "\n")
		if v, ok := strings.CutPrefix(line, "retry:"); ok {
			ms, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatalf("GET %s: %q: want retry: MILLISECONDS (%v)", url, line, err)
			}
			return ms
		}
		if line == "" {
			// The first block ended: no retry: before the stream's
			// first event or keep-alive.
			t.Fatalf("GET %s: the stream's first block has no retry: field", url)
		}
	}
}
