// Package testdocker serves a dockerd of a unit test's own making on
// loopback and builds the Docker client to it, at API 1.41: the tests of
// underlay's Docker adapters fake the answers they need, and one that
// never comes (Hang). It imports Docker's client and the standard library.
package testdocker

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/client"
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
// never answers, ends with a deadline error naming want. It waits a
// minute at most: not a measure of speed, the hang is what is tested.
func GivesUp(t testing.TB, name, want string, call func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- call() }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s against a dockerd that does not answer: %v, want a deadline exceeded naming %q", name, err, want)
		}
	case <-time.After(time.Minute):
		t.Fatalf("%s still waiting after a minute for a dockerd that does not answer", name)
	}
}
