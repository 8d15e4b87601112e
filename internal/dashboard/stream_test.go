package dashboard

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestStreamDropsAClientThatStopsReading: the event stream lifts the
// server's write timeout for its whole life, so a client that opened it
// and stopped reading held its handler blocked in a write for ever, with
// the frame it was writing (a whole snapshot) and its gzip writer, past
// the stream's being dropped from the server's subscribers. Each frame's
// write is now bounded by StreamWriteTimeout.
func TestStreamDropsAClientThatStopsReading(t *testing.T) {
	in := synthetic(20, 3000, t0, nil)
	ts := startServer(t, Config{StreamWriteTimeout: 200 * time.Millisecond}, in)
	ended := make(chan struct{})
	h := ts.Handler()
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
		if r.URL.Path == "/v1/cluster/events" {
			close(ended)
		}
	}))
	defer hs.Close()
	conn, err := net.Dial("tcp", hs.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// No gzip: whole snapshots fill the socket's buffers soon.
	if _, err := conn.Write([]byte("GET /v1/cluster/events HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(20 * time.Second)
	for i := 0; ; i++ {
		// Every rebuild a new snapshot, sent to the stream.
		done := *ts.Server.refreshed.Load()
		in.Control.Leading = i%2 == 0
		ts.src.set(in)
		select {
		case <-ended:
			return
		case <-deadline:
			t.Fatal("the stream's handler still writes to a client that has read nothing for 20s")
		case <-done:
		}
	}
}

// stuckWriter is a client's connection that takes nothing until released,
// then keeps what the stream writes.
type stuckWriter struct {
	hdr     http.Header
	stuck   chan struct{} // closed at the first write
	release chan struct{}
	once    sync.Once
	mu      sync.Mutex
	body    bytes.Buffer
}

func newStuckWriter() *stuckWriter {
	return &stuckWriter{hdr: http.Header{}, stuck: make(chan struct{}), release: make(chan struct{})}
}

func (w *stuckWriter) Header() http.Header { return w.hdr }
func (w *stuckWriter) WriteHeader(int)     {}
func (w *stuckWriter) Flush()              {}
func (w *stuckWriter) Write(b []byte) (int, error) {
	w.once.Do(func() { close(w.stuck) })
	<-w.release
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.body.Write(b)
}

func (w *stuckWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.body.String()
}

// TestStreamSendsASlowClientTheLatestSnapshotOnly: every snapshot was
// queued for every stream, up to 64, each a whole snapshot (2 MB for a
// cluster of 3,000 tasks), so a client slow to read held up to 64
// snapshots in the server's memory, and once it fell 64 behind and was
// dropped it was still sent every one of them, stale, before its stream
// ended. A stream now holds the latest snapshot only, which replaces the
// one it has not sent yet: the client gets what it has not seen, not each
// state in between, and stays connected.
func TestStreamSendsASlowClientTheLatestSnapshotOnly(t *testing.T) {
	s, err := New(Config{KeepAlive: time.Hour}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	snap := Build(synthetic(3, 10, t0, nil))
	s.publish(snap)
	w, ctx, cancel, ended := streamStuck(s)
	defer cancel()
	const published = 3 * subscriberBuffer
	for i := range published {
		snap.GeneratedAt = snap.GeneratedAt.Add(time.Second)
		snap.Control.Leader = fmt.Sprintf("10.0.0.%d:8000", i) // a change: published
		s.publish(snap)
	}
	last := s.currentVersion()
	close(w.release)
	select {
	case <-ended:
		t.Errorf("the stream ended after %d snapshots were published while its client read nothing", published)
	case <-waitCh(ctx, func() bool { return strings.Contains(w.String(), "id: "+itoa(last)+"\n") }):
	}
	cancel()
	<-ended
	if n := strings.Count(w.String(), "event: snapshot\n"); n > 2 {
		t.Errorf("a client that read nothing while %d snapshots were published was sent %d snapshots, want the one it connected to and the latest", published, n)
	}
	if !strings.Contains(w.String(), "id: "+itoa(last)+"\n") {
		t.Errorf("the client was not sent the latest snapshot, version %d", last)
	}
}

// waitCh is closed once cond holds (it is polled until ctx ends).
func waitCh(ctx context.Context, cond func() bool) <-chan struct{} {
	c := make(chan struct{})
	go func() {
		for !cond() {
			if ctx.Err() != nil {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		close(c)
	}()
	return c
}

// TestStreamSendsASlowClientEveryEvent: a stream that holds the latest
// snapshot only still sends every event published while its client was
// not reading, in order, once it reads again.
func TestStreamSendsASlowClientEveryEvent(t *testing.T) {
	s, err := New(Config{KeepAlive: time.Hour}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	in := cardsInput()
	s.publish(Build(in))
	w, ctx, cancel, ended := streamStuck(s)
	defer cancel()
	all := cardsInput().Nodes
	for i := range subscriberBuffer / 2 {
		in.Nodes = all[:1+(i+1)%2] // node1 leaves, and joins again
		in.Now = in.Now.Add(time.Second)
		s.publish(Build(in))
	}
	last := s.seq
	if last < subscriberBuffer/2 {
		t.Fatalf("%d events published, want at least one a snapshot", last)
	}
	close(w.release)
	select {
	case <-ended:
		t.Fatal("the stream ended")
	case <-waitCh(ctx, func() bool { return strings.Contains(w.String(), fmt.Sprintf(`"seq":%d,`, last)) }):
	}
	cancel()
	<-ended
	var seqs []uint64
	for _, f := range strings.Split(w.String(), "\n\n") {
		data, ok := strings.CutPrefix(f, "event: events\ndata: ")
		if !ok {
			continue
		}
		var evs []Event
		if err := json.Unmarshal([]byte(data), &evs); err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			seqs = append(seqs, e.Seq)
		}
	}
	for i, seq := range seqs {
		if seq != uint64(i+1) {
			t.Fatalf("events sent %v, want 1 to %d in order", seqs, last)
		}
	}
	if uint64(len(seqs)) != last {
		t.Errorf("%d events sent, want %d", len(seqs), last)
	}
}

// streamStuck starts s's event stream to a client that reads nothing once
// it has the first frame, and returns when the stream is stuck so: its
// writer, its request's context and cancel, and a channel closed when it
// ends.
func streamStuck(s *Server) (*stuckWriter, context.Context, context.CancelFunc, chan struct{}) {
	w := newStuckWriter()
	ctx, cancel := context.WithCancel(context.Background())
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		s.stream(w, httptest.NewRequest("GET", "/v1/cluster/events", nil).WithContext(ctx))
	}()
	<-w.stuck
	return w, ctx, cancel, ended
}
