package dashboard

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
)

// BenchmarkStreamOpen opens one gzipped event stream per iteration, which
// sends the snapshot (a 3-node cluster's) and ends: what a page's
// (re)connecting costs the server, gzip's compressor included.
func BenchmarkStreamOpen(b *testing.B) {
	s, err := New(Config{}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	s.publish(Build(synthetic(3, 30, t0, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the stream sends its first frames, then ends
	req := httptest.NewRequestWithContext(ctx, "GET", "/v1/cluster/events", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		s.stream(w, req)
		if w.Body.Len() == 0 {
			b.Fatal("the stream sent nothing")
		}
	}
}

// BenchmarkSnapshotGzip compresses the current snapshot for GET
// /v1/cluster once per iteration, as the first read after each new
// snapshot does.
func BenchmarkSnapshotGzip(b *testing.B) {
	s, err := New(Config{}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	s.publish(Build(synthetic(3, 30, t0, nil)))
	b.ReportAllocs()
	for b.Loop() {
		s.mu.Lock()
		s.gz = s.lazyGzip(s.body) // compressed anew
		s.mu.Unlock()
		if _, gz := s.snapshotBodies(); len(gz) == 0 {
			b.Fatal("no gzipped body")
		}
	}
}

// TestStreamGzipReused: streams opened one after another, and
// concurrently, each with a gzip writer another stream used before, each
// send a whole gzip stream beginning with the current snapshot.
func TestStreamGzipReused(t *testing.T) {
	ts := startServer(t, Config{}, cardsInput())
	c := ts.client(t)
	open := func() error {
		req, _ := http.NewRequest(http.MethodGet, ts.http.URL+"/v1/cluster/events", nil)
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if !resp.Uncompressed {
			return errors.New("the stream was not gzipped")
		}
		// Read here, not with readEvent: some run apart from the test's
		// goroutine, where t.Fatal may not be called.
		r := bufio.NewReader(resp.Body)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return fmt.Errorf("read the stream: %w", err)
			}
			if strings.HasPrefix(line, "event: ") {
				if line != "event: snapshot\n" {
					return fmt.Errorf("first event %q; want the snapshot", line)
				}
				if line, err = r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "id: ") {
					return fmt.Errorf("then %q (%v); want its id", line, err)
				}
				if line, err = r.ReadString('\n'); err != nil || !strings.HasPrefix(line, `data: {"version":`) {
					return fmt.Errorf("then %.80q (%v); want its data", line, err)
				}
				return nil
			}
		}
	}
	for i := range 3 {
		if err := open(); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
	}
	var g errgroup.Group
	for range 4 {
		g.Go(open)
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
}
