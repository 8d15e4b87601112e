// Package testdocker serves a dockerd of a unit test's own making on
// loopback and builds the Docker client to it, at API 1.41: the tests of
// underlay's Docker adapters fake the answers they need, and one that
// never comes (Hang). It imports Docker's client, testhang and
// the standard library.
package testdocker

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/docker/docker/client"

	"github.com/underlay/underlay/internal/testhang"
)

// Daemon is a fake dockerd for one test.
type Daemon struct {
	t       testing.TB
	release chan struct{}
}

// New makes a Daemon for t; Serve starts it.
func New(t testing.TB) *Daemon {
	return &Daemon{t: t, release: make(chan struct{})}
}

// Hang holds r, unanswered, until its caller gives up or the test ends:
// a dockerd that never answers.
func (d *Daemon) Hang(r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-d.release:
	}
}

// Serve answers with h until the test ends and returns a client to it.
// Hung requests are let go first, as the server's close waits for them.
func (d *Daemon) Serve(h http.Handler) *client.Client {
	t := d.t
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(d.release) }) // before srv.Close
	api, err := client.NewClientWithOpts(client.WithHost("tcp://"+srv.Listener.Addr().String()), client.WithVersion("1.41"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { api.Close() })
	return api
}

// GivesUp checks that call (what name names), sent to a dockerd that
// never answers, ends with a deadline error naming want (testhang.GivesUp).
func GivesUp(t testing.TB, name, want string, call func() error) {
	t.Helper()
	testhang.GivesUp(t, "a dockerd", name, want, call)
}
