package scale

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/testnet"
)

// TestEventsHeadEnds: a HEAD of an event stream (net/http serves HEAD on
// every GET route) is answered its headers, and ends. It streamed on,
// with nothing to send a body to, until the client closed the
// connection: it held one of the client's event streams and the
// connection, where the client's next request waited for ever.
func TestEventsHeadEnds(t *testing.T) {
	e := newAPIEnv(t, Config{})
	// One connection: the next request goes where the HEAD went.
	url, hc := testnet.StreamServer(t, e.api.Handler())
	for _, path := range []string{"/v1/orbiter/events", "/events", "/v1/underlay/events"} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		for _, method := range []string{"HEAD", "GET"} {
			target := url + path
			if method == "GET" {
				target = url + "/v1/underlay/leader"
			}
			req, _ := http.NewRequestWithContext(ctx, method, target, nil)
			req.Header.Set("Authorization", "Bearer "+testToken)
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatalf("%s %s after HEAD %s: %v", method, target, path, err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("%s %s: %d, want 200", method, target, resp.StatusCode)
			}
			if method == "HEAD" && resp.Header.Get("Content-Type") != "text/event-stream" {
				t.Errorf("HEAD %s: Content-Type %q, want text/event-stream", path, resp.Header.Get("Content-Type"))
			}
		}
		cancel()
		if n := e.api.readers.Load(); n != 0 {
			t.Errorf("after HEAD %s: %d event streams counted open, want 0", path, n)
		}
	}
}
