package dockerhost

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
	"github.com/google/go-cmp/cmp"

	"github.com/underlay/underlay/internal/taskmetrics"
	"github.com/underlay/underlay/internal/testdocker"
	"github.com/underlay/underlay/internal/testlog"
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
	labels := map[string]string{labelSwarmService: "web"}
	api := fakeStats(t, []container.Summary{{ID: "run", Labels: labels, State: "running"}, {ID: "gone", Labels: labels, State: "running"}}, stats)
	got, err := NewSource(api).Samples(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []taskmetrics.Sample{{ContainerID: "run", Service: "web", At: read, CPUTotal: 3 * time.Second, Memory: 400}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("Samples (-want +got):\n%s", d)
	}
}

// TestSamplesFailedStatsAreNoGoneTask: only a task container dockerd no
// longer has (404) or no longer runs (empty stats) is gone since the
// listing. One whose stats failed otherwise (dockerd's 500, a timeout)
// was left out as gone too: the report had the service one task short,
// and the next round took the task for new, with no CPU, which pulled the
// service's CPU per task down. Samples now fails, naming the container,
// and the round publishes nothing.
func TestSamplesFailedStatsAreNoGoneTask(t *testing.T) {
	read := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	labels := map[string]string{labelSwarmService: "web"}
	list := []container.Summary{{ID: "run", Labels: labels, State: "running"}, {ID: "removed", Labels: labels, State: "running"},
		{ID: "busy", Labels: labels, State: "running"}}
	stats := map[string]container.StatsResponse{"run": {ID: "run", Read: read}}
	api := fakeStatsFailing(t, list, stats, map[string]int{"busy": http.StatusInternalServerError})
	got, err := NewSource(api).Samples(context.Background())
	if err == nil || !strings.Contains(err.Error(), "busy") {
		t.Fatalf("Samples = %+v, %v; want an error naming container busy", got, err)
	}
	// What was measured comes with the error, and the error names the
	// container and its service: taskmetrics.Run leaves out one that
	// fails round after round, and publishes the rest.
	var ns *taskmetrics.NotSampledError
	if !errors.As(err, &ns) || len(ns.Unmeasured) != 1 || ns.Unmeasured[0].ContainerID != "busy" || ns.Unmeasured[0].Service != "web" || ns.Listed != 3 {
		t.Errorf("Samples's error = %#v, want a *taskmetrics.NotSampledError of container busy of service web, of 3 listed", err)
	}
	if len(got) != 1 || got[0].ContainerID != "run" {
		t.Errorf("Samples = %+v with its error, want container run's sample", got)
	}
	// Removed since the listing: gone, no error.
	api = fakeStatsFailing(t, list[:2], stats, nil)
	got, err = NewSource(api).Samples(context.Background())
	if err != nil || len(got) != 1 || got[0].ContainerID != "run" {
		t.Errorf("Samples = %+v, %v; want container run's sample alone", got, err)
	}
}

// TestSamplesWorkingSetCgroupV1: on cgroup v1 dockerd reports both the
// cgroup's own inactive_file and the hierarchy's total_inactive_file, and
// the usage is the hierarchy's (a container running systemd or dockerd
// has cgroups below its own): the working set is usage less the total, as
// docker stats counts it. On cgroup v2 only inactive_file is reported.
func TestSamplesWorkingSetCgroupV1(t *testing.T) {
	read := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name  string
		stats map[string]uint64
		want  uint64
	}{
		{"cgroup v1", map[string]uint64{"inactive_file": 100, "total_inactive_file": 600}, 400},
		{"cgroup v2", map[string]uint64{"inactive_file": 100}, 900},
		{"no file cache reported", nil, 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := container.StatsResponse{ID: "c", Read: read}
			st.MemoryStats.Usage = 1000
			st.MemoryStats.Stats = tc.stats
			api := fakeStats(t, []container.Summary{{ID: "c", Labels: map[string]string{labelSwarmService: "web"}}}, map[string]container.StatsResponse{"c": st})
			got, err := NewSource(api).Samples(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || got[0].Memory != tc.want {
				t.Errorf("Samples = %+v, want one sample of %d bytes", got, tc.want)
			}
		})
	}
}

// fakeStats is a client of a fake dockerd (API 1.41) that lists list and
// answers each container's one-shot stats from stats, or, for one not
// there, as dockerd does for a container removed since: 404, no such
// container.
func fakeStats(t *testing.T, list []container.Summary, stats map[string]container.StatsResponse) *client.Client {
	return fakeStatsFailing(t, list, stats, nil)
}

// fakeStatsFailing is fakeStats, answering the stats of the containers in
// failing with their status and message instead.
func fakeStatsFailing(t *testing.T, list []container.Summary, stats map[string]container.StatsResponse, failing map[string]int) *client.Client {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		id, isStats := strings.CutSuffix(strings.TrimPrefix(r.URL.Path, "/v1.41/containers/"), "/stats")
		switch st, ok := stats[id]; {
		case r.URL.Path == "/v1.41/containers/json":
			json.NewEncoder(w).Encode(list)
		case isStats && failing[id] != 0:
			w.WriteHeader(failing[id])
			fmt.Fprintf(w, `{"message":"stats of %s failed"}`, id)
		case isStats && ok:
			json.NewEncoder(w).Encode(st)
		case isStats:
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprintf(w, `{"message":"No such container: %s"}`, id)
		default:
			http.Error(w, `{"message":"not faked"}`, http.StatusNotFound)
		}
	}))
	t.Cleanup(srv.Close)
	api, err := client.NewClientWithOpts(client.WithHost("tcp://"+srv.Listener.Addr().String()), client.WithVersion("1.41"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { api.Close() })
	return api
}

// TestSamplesDoesNotWaitForAHungStatsRead: a stats read dockerd never
// answers (a container whose shim or cgroup hangs) held Samples, and so
// the node's task metrics, for good, with no warning: the read had no
// deadline. It now fails after statsWait, as a failed read: the round
// fails, and a container that hangs round after round is left out
// (taskmetrics.LeaveOutAfter).
func TestSamplesDoesNotWaitForAHungStatsRead(t *testing.T) {
	read := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	labels := map[string]string{labelSwarmService: "web"}
	list := []container.Summary{{ID: "run", Labels: labels, State: "running"}, {ID: "hung", Labels: labels, State: "running"}}
	d := testdocker.New(t)
	api := d.Serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/v1.41/containers/json":
			json.NewEncoder(w).Encode(list)
		case "/v1.41/containers/run/stats":
			json.NewEncoder(w).Encode(container.StatsResponse{ID: "run", Read: read})
		case "/v1.41/containers/hung/stats":
			d.Hang(r)
		default:
			http.Error(w, `{"message":"not faked"}`, http.StatusNotFound)
		}
	}))
	src := NewSource(api)
	src.statsWait = 50 * time.Millisecond
	type result struct {
		got []taskmetrics.Sample
		err error
	}
	done := make(chan result, 1)
	go func() {
		got, err := src.Samples(context.Background())
		done <- result{got, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-time.After(time.Minute): // not a measure of speed: the hang this test is about
		t.Fatal("Samples still waiting after a minute for a stats read dockerd does not answer")
	}
	var ns *taskmetrics.NotSampledError
	if !errors.As(r.err, &ns) || len(ns.Unmeasured) != 1 || ns.Unmeasured[0].ContainerID != "hung" {
		t.Errorf("Samples's error = %v, want a *taskmetrics.NotSampledError of container hung", r.err)
	}
	if len(r.got) != 1 || r.got[0].ContainerID != "run" {
		t.Errorf("Samples = %+v, want container run's sample", r.got)
	}
}

// TestTaskMetricsDoNotWaitForAHungListing: the task containers' listing
// (Samples) had no deadline of its own: a dockerd that never answered it
// held the round, and so the node's task metrics, for good, with no
// warning. It is bounded as the inventory's calls are (callWait): the
// round fails with the listing named, and the next round runs and
// publishes.
func TestTaskMetricsDoNotWaitForAHungListing(t *testing.T) {
	read := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	list := []container.Summary{{ID: "run", Labels: map[string]string{labelSwarmService: "web"}, State: "running"}}
	var listings atomic.Int32
	d := testdocker.New(t)
	api := d.Serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/v1.41/containers/json":
			if listings.Add(1) == 1 { // the first listing is never answered
				d.Hang(r)
				return
			}
			json.NewEncoder(w).Encode(list)
		case "/v1.41/containers/run/stats":
			json.NewEncoder(w).Encode(container.StatsResponse{ID: "run", Read: read})
		default:
			http.Error(w, `{"message":"not faked"}`, http.StatusNotFound)
		}
	}))
	src := NewSource(api)
	// Short, for the hung listing; long enough for the answered ones on
	// a loaded machine.
	src.callWait = time.Second
	logs := testlog.NewRecords(64)
	kv := &putRecorder{puts: make(chan string, 64)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		taskmetrics.Run(ctx, src, kv, "n1", "id1", 10*time.Millisecond, slog.New(logs), nil, nil)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		for { // a log record unread would hold Run
			select {
			case <-logs.C:
			case <-done:
				return
			}
		}
	})
	// Not measures of speed: the minute is the hang this test is about.
	r := logs.Await(t, time.Minute, func(r slog.Record) bool { return r.Message == "task metrics not sampled" })
	if err := testlog.Attr(r, "err"); !strings.Contains(err, "list task containers") {
		t.Errorf("the failed round's error = %q, want the listing named", err)
	}
	select {
	case key := <-kv.puts:
		if key != taskmetrics.IDPrefix+"id1" {
			t.Errorf("published under %s, want %s", key, taskmetrics.IDPrefix+"id1")
		}
	case <-time.After(time.Minute):
		t.Fatal("no report published after the hung listing failed")
	}
}

// putRecorder is a taskmetrics.KV that sends each key written on puts.
type putRecorder struct{ puts chan string }

func (k *putRecorder) Put(_ context.Context, key string, _ []byte) error {
	select {
	case k.puts <- key:
	default:
	}
	return nil
}
