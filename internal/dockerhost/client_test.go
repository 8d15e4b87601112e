package dockerhost

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/docker/docker/client"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
)

// traced records whether OpenTelemetry's transport handled the requests
// it is given: that transport puts its labeler in each request's context.
type traced struct {
	base         http.RoundTripper
	seen, inOTel atomic.Int32
}

func (t *traced) RoundTrip(r *http.Request) (*http.Response, error) {
	t.seen.Add(1)
	if _, ok := otelhttp.ClientLabelerFromContext(r.Context()); ok {
		t.inOTel.Add(1)
	}
	return t.base.RoundTrip(r)
}

// pingServer answers Docker's /_ping, on loopback.
func pingServer(t testing.TB) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/_ping") {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Api-Version", "1.41")
		io.WriteString(w, "OK")
	}))
	t.Cleanup(srv.Close)
	return srv
}

// Docker's client wrapped every request in OpenTelemetry's transport (a
// span and a metric's attribute set each), collected by nothing in
// underlay; the clients made here send requests straight on.
func TestClientSkipsTracing(t *testing.T) {
	srv := pingServer(t)
	rt := &traced{base: http.DefaultTransport}
	c, err := NewClientAt("tcp://"+strings.TrimPrefix(srv.URL, "http://"), client.WithHTTPClient(&http.Client{Transport: rt}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	if rt.seen.Load() == 0 {
		t.Fatal("the request never reached the transport")
	}
	if n := rt.inOTel.Load(); n != 0 {
		t.Fatalf("%d of %d requests went through OpenTelemetry's transport, want none", n, rt.seen.Load())
	}
}

// BenchmarkClientPing is one request to a loopback server that answers
// at once, through Docker's client as built by default ("docker default")
// and as underlay builds it (NewClientAt): the client's own cost per
// request.
func BenchmarkClientPing(b *testing.B) {
	srv := pingServer(b)
	host := "tcp://" + strings.TrimPrefix(srv.URL, "http://")
	for _, tc := range []struct {
		name string
		make func() (*client.Client, error)
	}{
		{"docker default", func() (*client.Client, error) {
			return client.NewClientWithOpts(client.WithHost(host), client.WithAPIVersionNegotiation())
		}},
		{"underlay", func() (*client.Client, error) { return NewClientAt(host) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			c, err := tc.make()
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Ping(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// A DOCKER_HOST with a password (tcp://ops:s3cret@host:2375): Docker's
// client never sends it (it keeps the host alone), yet quotes the
// address as given in every failed connection's error ("Cannot connect
// to the Docker daemon at tcp://ops:s3cret@..."), which the agent and
// control log and the dashboard shows as the swarm source's error, to
// any reader without --auth-reads. It is refused, named with its
// password hidden.
func TestClientRefusesHostWithPassword(t *testing.T) {
	for _, host := range []string{"tcp://ops:s3cret@127.0.0.1:2375", "tcp://ops:s3/cret@127.0.0.1:2375", "http://ops:s3cret@127.0.0.1:2375"} {
		t.Run(host, func(t *testing.T) {
			t.Setenv("DOCKER_HOST", host)
			for name, newClient := range map[string]func() (*client.Client, error){
				"NewClient":   NewClient,
				"NewClientAt": func() (*client.Client, error) { return NewClientAt(host) },
			} {
				c, err := newClient()
				if err == nil {
					t.Errorf("%s: no error, its errors quote the daemon at %q; want %q refused, its password hidden", name, c.DaemonHost(), host)
					c.Close()
					continue
				}
				if strings.Contains(err.Error(), "s3") || !strings.Contains(err.Error(), "ops:xxxxx@127.0.0.1:2375") {
					t.Errorf("%s: %v; want %q refused, named with its password hidden", name, err, host)
				}
			}
		})
	}
	for _, host := range []string{"unix:///run/docker@x/docker.sock", "tcp://127.0.0.1:2375", "tcp://ops@127.0.0.1:2375"} {
		t.Setenv("DOCKER_HOST", host)
		for name, newClient := range map[string]func() (*client.Client, error){
			"NewClient":   NewClient,
			"NewClientAt": func() (*client.Client, error) { return NewClientAt(host) },
		} {
			c, err := newClient()
			if err != nil {
				t.Errorf("%s with %q: %v", name, host, err)
				continue
			}
			c.Close()
		}
	}
}

// TestClientKeepsConnections: Docker's client kept two idle connections
// per host, so each burst of concurrent requests (a burst of starts' reads,
// which dockerd holds until each start is over) dialled the daemon again
// for all but two of them. Before: "second burst of 10 opened 8 more
// connections".
func TestClientKeepsConnections(t *testing.T) {
	const burst = 10
	sock := filepath.Join(t.TempDir(), "docker.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var conns atomic.Int32
	arrived := make(chan struct{}, burst)
	release := make(chan struct{})
	srv := &httptest.Server{Listener: ln, Config: &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasSuffix(r.URL.Path, "/_ping") {
				w.Header().Set("Api-Version", "1.41")
				return
			}
			arrived <- struct{}{}
			<-release
			io.WriteString(w, `{"Id":"c1","Name":"/c1"}`)
		}),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		},
	}}
	srv.Start()
	defer srv.Close()
	c, err := NewClientAt("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	runBurst := func() {
		var wg sync.WaitGroup
		for range burst {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := c.ContainerInspect(context.Background(), "c1"); err != nil {
					t.Error(err)
				}
			}()
		}
		for range burst {
			<-arrived // all in flight at once
		}
		for range burst {
			release <- struct{}{}
		}
		wg.Wait()
	}
	runBurst()
	first := conns.Load()
	runBurst()
	if more := conns.Load() - first; more > 0 {
		t.Errorf("second burst of %d opened %d more connections (first: %d in all); want them kept from the first", burst, more, first)
	}
}
