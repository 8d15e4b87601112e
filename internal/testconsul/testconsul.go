// Package testconsul serves, on loopback, a Consul agent of a unit test's
// own making that accepts every request and never answers it (Hung), and
// checks that a call to it ends with a deadline error naming it
// (GivesUp): the tests of underlay's loops that write to Consul. It
// imports Consul's API client and the standard library.
package testconsul

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// Hung serves a Consul agent that holds every request unanswered until
// its caller gives up or the test ends, and returns a client to it.
func Hung(t testing.TB) *api.Client {
	t.Helper()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // before srv.Close, which waits for them
	c, err := api.NewClient(&api.Config{Address: srv.Listener.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// GivesUp checks that call (what name names), sent to a Consul agent that
// never answers, ends with a deadline error naming want. It waits a
// minute at most: not a measure of speed, the hang is what is tested.
func GivesUp(t testing.TB, name, want string, call func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- call() }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s against a Consul agent that does not answer: %v, want a deadline exceeded naming %q", name, err, want)
		}
	case <-time.After(time.Minute):
		t.Fatalf("%s still waiting after a minute for a Consul agent that does not answer", name)
	}
}
