// Package testnet keeps a unit test package off the machine's name
// service. Such tests reach made-up names (consul.example) through
// dialers of their own, to loopback; a test whose dialer failed to apply
// must fail, not ask the machine's resolver, off this machine. Status
// is the status a test's HTTP request gets; StreamServer serves streams. It imports only the standard
// library.
package testnet

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
)

// NoNameService makes every DNS lookup of the process fail (/etc/hosts
// still answers): call it from TestMain, before m.Run.
func NoNameService() {
	net.DefaultResolver = &net.Resolver{PreferGo: true, Dial: func(_ context.Context, network, address string) (net.Conn, error) {
		return nil, fmt.Errorf("unit tests: no name service (a lookup would have gone to %s over %s)", address, network)
	}}
}

// Main is a TestMain that runs m with NoNameService.
func Main(m *testing.M) {
	NoNameService()
	os.Exit(m.Run())
}

// Status sends method to url with body (none if empty) and the headers
// hdr names and values in turn, and returns the answer's status; an event
// stream served is ended once its status is read.
func Status(t testing.TB, method, url, body string, hdr ...string) int {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// StreamServer serves h on loopback for t, every request's context ended
// when t ends (an event stream left running would hold the server's
// Close for ever), and returns its URL and a client of one connection, so
// that a request follows the one before on the same connection.
func StreamServer(t testing.TB, h http.Handler) (string, *http.Client) {
	t.Helper()
	streams, endStreams := context.WithCancel(context.Background())
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(streams))
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(endStreams)
	hc := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
	t.Cleanup(hc.CloseIdleConnections)
	return srv.URL, hc
}
