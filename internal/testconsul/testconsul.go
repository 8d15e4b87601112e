// Package testconsul serves, on loopback, a Consul agent of a unit test's
// own making that accepts every request and never answers it (Hung), and
// checks that a call to it ends with a deadline error naming it
// (GivesUp), counting the requests it holds (Counted): the tests of underlay's loops that write to Consul. It
// imports Consul's API client, testhang and the standard library.
package testconsul

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/underlay/underlay/internal/testhang"
)

// Hung serves a Consul agent that holds every request unanswered until
// its caller gives up or the test ends, and returns a client to it.
func Hung(t testing.TB) *api.Client {
	t.Helper()
	c, _ := Counted(t)
	return c
}

// Counted is Hung, with a channel that receives once per request the agent
// holds: a loop that gives up its calls asks again.
func Counted(t testing.TB) (*api.Client, <-chan struct{}) {
	t.Helper()
	release := make(chan struct{})
	requests := make(chan struct{}, 1024)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case requests <- struct{}{}:
		default:
		}
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
	return c, requests
}

// GivesUp checks that call (what name names), sent to a Consul agent that
// never answers, ends with a deadline error naming want (testhang.GivesUp).
func GivesUp(t testing.TB, name, want string, call func() error) {
	t.Helper()
	testhang.GivesUp(t, "a Consul agent", name, want, call)
}
