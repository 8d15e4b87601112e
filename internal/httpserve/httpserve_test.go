package httpserve

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// TestServe: Serve answers until its context ends, then returns nil; an
// open streaming request ends with the context rather than holding the
// shutdown, and Serve returns once it has ended. Before, Serve returned
// as the shutdown began (net/http's Serve does), with requests still
// running, so this test could not tell a stream that held the shutdown.
func TestServe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	streaming, ended := make(chan struct{}), make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		close(streaming)
		<-r.Context().Done()
		// The request's last work, after its context ended: Serve
		// waits for it however long it takes (within ShutdownTimeout).
		time.Sleep(100 * time.Millisecond)
		close(ended)
	})
	srv := NewServer(mux, slog.New(slog.DiscardHandler))
	if srv.ReadHeaderTimeout == 0 || srv.WriteTimeout == 0 || srv.IdleTimeout == 0 || srv.ReadTimeout == 0 {
		t.Errorf("NewServer leaves a timeout unset: %+v", srv)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, srv) }()
	resp, err := http.Get("http://" + ln.Addr().String() + "/ok")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "ok" {
		t.Fatalf("GET /ok = %q", b)
	}
	stream, err := http.Get("http://" + ln.Addr().String() + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close()
	<-streaming
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve = %v, want nil", err)
	}
	select {
	case <-ended:
	default:
		t.Fatal("Serve returned with the stream's request still running: it held the shutdown, or Serve did not wait for it")
	}
}

// TestServeClosesHeldConnections: a request whose handler does not end
// with the context held its connection open past the shutdown's bound:
// Serve returned and left it open, to the idle or write timeout, or
// forever. Its connection is now closed before Serve returns.
func TestServeClosesHeldConnections(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec := &closeRecorder{Listener: ln}
	held, release := make(chan struct{}), make(chan struct{})
	defer close(release)
	mux := http.NewServeMux()
	mux.HandleFunc("/held", func(http.ResponseWriter, *http.Request) {
		close(held)
		<-release // not the request's context
	})
	srv := NewServer(mux, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- serve(ctx, rec, srv, 10*time.Millisecond) }()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /held HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	<-held
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve = %v, want nil", err)
	}
	if n := rec.open(); n != 0 {
		t.Fatalf("Serve returned with %d connection(s) still open after the shutdown's bound", n)
	}
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Error("the client read from its held connection after Serve returned, want it closed")
	}
}

// closeRecorder is a listener whose connections count how many are open.
type closeRecorder struct {
	net.Listener
	mu    sync.Mutex
	conns map[net.Conn]bool // the accepted ones, true once closed
}

func (l *closeRecorder) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	rc := &recordedConn{Conn: c, l: l}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conns == nil {
		l.conns = map[net.Conn]bool{}
	}
	l.conns[rc] = false
	return rc, nil
}

// open is the number of accepted connections not closed.
func (l *closeRecorder) open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, closed := range l.conns {
		if !closed {
			n++
		}
	}
	return n
}

type recordedConn struct {
	net.Conn
	l *closeRecorder
}

func (c *recordedConn) Close() error {
	c.l.mu.Lock()
	c.l.conns[c] = true
	c.l.mu.Unlock()
	return c.Conn.Close()
}

// TestNewServerSaysNoSniff: answers no handler typed (a 421 of a refused
// Host, a mux's redirect, promhttp's /metrics) said no nosniff.
//
//	GET /metrics: X-Content-Type-Options "", want nosniff
func TestNewServerSaysNoSniff(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "# metrics\n") })
	srv := httptest.NewServer(NewServer(mux, slog.New(slog.DiscardHandler)).Handler)
	defer srv.Close()
	for _, path := range []string{"/metrics", "/a//b", "/nothing"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("GET %s: %d, X-Content-Type-Options %q, want nosniff", path, resp.StatusCode, got)
		}
	}
}
