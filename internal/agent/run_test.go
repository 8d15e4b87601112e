package agent

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/client"

	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/register"
)

// TestRunStoppedWhileWaiting: an agent stopped (SIGTERM, `systemctl stop`)
// while it waits for Docker or Consul at start — for the node's name, or,
// with networks, for its swarm node ID — stops cleanly: Run returns nil,
// as it does once running, not the context's error (exit status 1, a unit
// left failed).
func TestRunStoppedWhileWaiting(t *testing.T) {
	dir := t.TempDir()
	dockerAPI, err := client.NewClientWithOpts(client.WithHost("unix://"+filepath.Join(dir, "no-docker.sock")), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	defer dockerAPI.Close()
	t.Setenv("CONSUL_HTTP_TOKEN_FILE", "")
	consulAPI, err := consul.NewClient(consul.Options{Addr: "unix://" + filepath.Join(dir, "no-consul.sock")})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"node name", Config{}},
		{"consul agent address", Config{Register: register.Config{Policy: register.Policy{Node: "n1"}}}},
		{"swarm node ID", Config{Register: register.Config{Policy: register.Policy{Node: "n1", HostIP: "192.0.2.1"}, Workers: 1, Resync: time.Minute},
			Networks: true, NetworkSync: time.Minute, StateDir: dir}},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		err := Run(ctx, tc.cfg, Clients{Docker: dockerAPI, Consul: consulAPI}, slog.New(slog.DiscardHandler))
		cancel()
		if err != nil {
			t.Errorf("stopped while waiting for the %s: %v, want nil", tc.name, err)
		}
	}
}

// TestRunRefusesBadHostName: without --node the node is named by Docker's
// host name, which was taken as it came. A name --node refuses (a '/'
// splits its Consul KV keys) is refused as well, naming it and --node,
// before anything is registered or claimed.
func TestRunRefusesBadHostName(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/_ping"):
			w.Header().Set("Api-Version", "1.44")
			w.Write([]byte("OK"))
		case strings.HasSuffix(r.URL.Path, "/info"):
			w.Write([]byte(`{"Name":"rack1/n1"}`))
		default:
			// Anything else is the agent going on with a name it should
			// have refused.
			http.Error(w, "not faked", http.StatusNotImplemented)
		}
	}))
	defer srv.Close()
	dockerAPI, err := client.NewClientWithOpts(client.WithHost("tcp://"+srv.Listener.Addr().String()), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	defer dockerAPI.Close()
	t.Setenv("CONSUL_HTTP_TOKEN_FILE", "")
	consulAPI, err := consul.NewClient(consul.Options{Addr: "unix://" + filepath.Join(t.TempDir(), "no-consul.sock")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = Run(ctx, Config{}, Clients{Docker: dockerAPI, Consul: consulAPI}, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), `docker host name "rack1/n1": '/' is not allowed`) || !strings.Contains(err.Error(), "--node") {
		t.Errorf("Run = %v, want an error naming host name \"rack1/n1\", its '/' and --node", err)
	}
}
