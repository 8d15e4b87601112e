package consul

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestNodeAddressEndsItsRequest: Consul's Agent().Self takes no context,
// so NodeAddress gave up on a hung agent at its timeout but left the
// request open, a goroutine and a connection for each retry of the
// agent's start-up wait, for as long as the agent hung. The request now
// ends with the call.
func TestNodeAddressEndsItsRequest(t *testing.T) {
	arrived, gone := make(chan struct{}), make(chan struct{})
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		select {
		case <-r.Context().Done():
			close(gone)
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	t.Setenv("CONSUL_HTTP_TOKEN_FILE", "")
	c, err := NewClient(Options{Addr: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	cat := NewCatalog(c)
	cat.Timeout = 50 * time.Millisecond
	if _, err := cat.NodeAddress(context.Background()); err == nil {
		t.Fatal("NodeAddress of a hung agent succeeded")
	}
	<-arrived
	select {
	case <-gone:
	case <-time.After(5 * time.Second):
		t.Error("the request to the hung agent is still open 5 s after NodeAddress gave up")
	}
}

// TestNodeAddress: the address is the local agent's member address.
func TestNodeAddress(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/agent/self" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(`{"Member":{"Addr":"192.0.2.7","Name":"n1"},"Config":{}}`))
	}))
	defer srv.Close()
	t.Setenv("CONSUL_HTTP_TOKEN_FILE", "")
	c, err := NewClient(Options{Addr: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := NewCatalog(c).NodeAddress(context.Background()); err != nil || got != "192.0.2.7" {
		t.Errorf("NodeAddress = %q, %v; want 192.0.2.7", got, err)
	}
}
