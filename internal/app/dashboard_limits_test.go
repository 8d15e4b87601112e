package app

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestControlDashboardReadsRateLimited: the dashboard's open reads (its
// session, the snapshot, the event stream) are held to each client's read
// rate (--rate-limit after --rate-burst), as the API's reads and /metrics
// are: each is a whole snapshot sent, or a stream opened, and nothing else
// bounded how fast one client asked for them.
func TestControlDashboardReadsRateLimited(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("DOCKER_HOST", "unix://"+filepath.Join(dir, "no-docker.sock"))
	tokens := filepath.Join(dir, "tokens")
	os.WriteFile(tokens, []byte("tok\n"), 0o600)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	t.Cleanup(func() { ln.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	cmd := newControlCommandFlags(&globalFlags{logLevel: "error", logFormat: "text"}, IOStreams{Out: io.Discard, ErrOut: io.Discard}, &controlFlags{listener: ln})
	cmd.SetArgs([]string{"--listen", addr, "--token-file", tokens, "--consul-addr", "127.0.0.1:1", "--rate-limit", "0.001", "--rate-burst", "2"})
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("control did not stop with its context")
		}
	})

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
