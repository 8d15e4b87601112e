package httpserve

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
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
