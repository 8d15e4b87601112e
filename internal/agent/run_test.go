package agent

import (
	"context"
	"log/slog"
	"path/filepath"
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
