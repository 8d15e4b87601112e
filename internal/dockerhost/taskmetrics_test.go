package dockerhost

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
	"github.com/google/go-cmp/cmp"

	"github.com/underlay/underlay/internal/taskmetrics"
)

// TestSamplesSkipsStoppedContainers: a task container that stops between
// the listing and its stats (a scale-down, a rolling update) is answered
// by dockerd with empty stats — no read time, no CPU, no memory
// (daemon/stats.go, every version). Counted, it is a task of 0 cores and 0
// bytes that pulls the service's average per replica down.
func TestSamplesSkipsStoppedContainers(t *testing.T) {
	read := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	running := container.StatsResponse{Name: "/web.1.a", ID: "run", Read: read}
	running.CPUStats.CPUUsage.TotalUsage = uint64(3 * time.Second)
	running.MemoryStats.Usage = 500
	running.MemoryStats.Stats = map[string]uint64{"inactive_file": 100}
	stats := map[string]container.StatsResponse{
		"run":  running,
		"gone": {Name: "/web.2.b", ID: "gone"}, // what dockerd answers for a container not running
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/v1.41/containers/json":
			labels := map[string]string{labelSwarmService: "web"}
			json.NewEncoder(w).Encode([]container.Summary{{ID: "run", Labels: labels, State: "running"}, {ID: "gone", Labels: labels, State: "running"}})
		case "/v1.41/containers/run/stats", "/v1.41/containers/gone/stats":
			id := r.URL.Path[len("/v1.41/containers/") : len(r.URL.Path)-len("/stats")]
			json.NewEncoder(w).Encode(stats[id])
		default:
			http.Error(w, `{"message":"not faked"}`, http.StatusNotFound)
		}
	}))
	defer srv.Close()
	api, err := client.NewClientWithOpts(client.WithHost("tcp://"+srv.Listener.Addr().String()), client.WithVersion("1.41"))
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	got, err := NewSource(api).Samples(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []taskmetrics.Sample{{ContainerID: "run", Service: "web", At: read, CPUTotal: 3 * time.Second, Memory: 400}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("Samples (-want +got):\n%s", d)
	}
}
