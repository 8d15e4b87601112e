package app

import (
	"net/http"
	"testing"
)

// TestControlDashboardReadsRateLimited: the dashboard's open reads
// (--auth-reads=false: its session, the snapshot, the event stream) are
// held to each client's read rate (--rate-limit after --rate-burst), as
// the API's reads and /metrics are: each is a whole snapshot sent, or a
// stream opened, and nothing else bounded how fast one client asked for
// them.
func TestControlDashboardReadsRateLimited(t *testing.T) {
	addr, _ := startControl(t, "--auth-reads=false", "--rate-limit", "0.001", "--rate-burst", "2")

	get := func(path string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// The page and its assets are not reads of the cluster.
	for range 3 {
		if code := get("/ui/"); code != http.StatusOK {
			t.Fatalf("GET /ui/: %d, want 200", code)
		}
	}
	for i := range 2 {
		if code := get("/ui/session"); code != http.StatusOK {
			t.Fatalf("GET /ui/session, read %d of the burst of 2: %d, want 200", i+1, code)
		}
	}
	for _, path := range []string{"/ui/session", "/v1/cluster", "/v1/cluster/events"} {
		if code := get(path); code != http.StatusTooManyRequests {
			t.Errorf("GET %s past the client's reads: %d, want 429", path, code)
		}
	}
}
