package dashboard

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/testnet"
)

// TestStreamHeadEnds: a HEAD of the event stream (net/http serves HEAD on
// every GET route) is answered its headers, and ends. It streamed on,
// its pings going nowhere, until the client closed the connection: it
// held one of the client's event streams and the connection, where the
// client's next request waited for ever.
func TestStreamHeadEnds(t *testing.T) {
	ts := startServer(t, Config{}, cardsInput())
	// One connection: the next request goes where the HEAD went.
	url, hc := testnet.StreamServer(t, ts.Handler())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, c := range []struct{ method, path string }{{"HEAD", "/v1/cluster/events"}, {"GET", "/v1/cluster"}} {
		req, _ := http.NewRequestWithContext(ctx, c.method, url+c.path, nil)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s after HEAD /v1/cluster/events: %v", c.method, c.path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s %s: %d, want 200", c.method, c.path, resp.StatusCode)
		}
		if c.method == "HEAD" && resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Errorf("HEAD %s: Content-Type %q, want text/event-stream", c.path, resp.Header.Get("Content-Type"))
		}
	}
	if n := ts.subscribers(); n != 0 {
		t.Errorf("after the HEAD, %d streams subscribed, want 0", n)
	}
}
