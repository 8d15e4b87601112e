package dashboard

import (
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
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
