package adapter

import (
	"context"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"

	"github.com/underlay/underlay/internal/scale"
	"github.com/underlay/underlay/internal/testdocker"
)

// TestServiceRefusesPaths checks that a service name that no swarm service
// can have never reaches Docker: the client would put it in the request's
// path as it is, and "../secrets/s" would read another object.
func TestServiceRefusesPaths(t *testing.T) {
	var mu sync.Mutex
	var paths []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.URL.Path)
		mu.Unlock()
		http.Error(w, `{"message":"no such service"}`, http.StatusNotFound)
	}))
	defer srv.Close()
	api, err := client.NewClientWithOpts(client.WithHost("tcp://"+srv.Listener.Addr().String()), client.WithVersion("1.41"))
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	s := NewSwarm(api)
	for _, name := range []string{"../secrets/s", "..", ".", "a/b", "a\nb", "", "-x", "web\x00"} {
		_, err := s.Service(context.Background(), name)
		if !errors.Is(err, scale.ErrNotFound) {
			t.Errorf("Service(%q): %v, want not found", name, err)
		}
	}
	mu.Lock()
	if len(paths) != 0 {
		t.Errorf("requests reached Docker: %q", paths)
	}
	paths = nil
	mu.Unlock()
	// Names and IDs swarm has still ask Docker.
	for _, name := range []string{"web", "stack_web-1", "0123456789abcdefghijklmno", "a.b"} {
		if _, err := s.Service(context.Background(), name); !errors.Is(err, scale.ErrNotFound) {
			t.Errorf("Service(%q): %v, want Docker's not found", name, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"/v1.41/services/web", "/v1.41/services/stack_web-1", "/v1.41/services/0123456789abcdefghijklmno", "/v1.41/services/a.b"}; len(paths) != len(want) {
		t.Errorf("requests %q, want %q", paths, want)
	} else {
		for i := range want {
			if paths[i] != want[i] {
				t.Errorf("request %d: %s, want %s", i, paths[i], want[i])
			}
		}
	}
}

// TestWanted: a task swarm still wants running but that has ended holds no
// slot (its replacement does). Before, it was counted, and a settled
// scale-down looked as if swarm had lost the removal of some tasks.
func TestWanted(t *testing.T) {
	task := func(svc string, desired, state swarm.TaskState) swarm.Task {
		return swarm.Task{ServiceID: svc, DesiredState: desired, Status: swarm.TaskStatus{State: state}}
	}
	for _, tc := range []struct {
		t    swarm.Task
		want bool
	}{
		{task("s1", swarm.TaskStateRunning, swarm.TaskStateRunning), true},
		{task("s1", swarm.TaskStateRunning, swarm.TaskStatePreparing), true},
		{task("s1", swarm.TaskStateReady, swarm.TaskStateAssigned), true},
		{task("s1", swarm.TaskStateRunning, swarm.TaskStateFailed), false},
		{task("s1", swarm.TaskStateRunning, swarm.TaskStateRejected), false},
		{task("s1", swarm.TaskStateRunning, swarm.TaskStateComplete), false},
		{task("s1", swarm.TaskStateShutdown, swarm.TaskStateRunning), false},
		{task("s1", swarm.TaskStateRemove, swarm.TaskStateRunning), false},
		{task("s1-other", swarm.TaskStateRunning, swarm.TaskStateRunning), false},
	} {
		if got := wanted(tc.t, "s1"); got != tc.want {
			t.Errorf("wanted(service %s, desired %s, state %s) = %v, want %v", tc.t.ServiceID, tc.t.DesiredState, tc.t.Status.State, got, tc.want)
		}
	}
}

// TestReplicasBeyondInt: Docker keeps a service's replicas as a uint64;
// beyond the int range the conversion wrapped to a negative count, from
// which a scale-up "rose" to the service's minimum: a scale-down of
// billions of replicas on a request to go up, with no allow-down.
func TestReplicasBeyondInt(t *testing.T) {
	for _, n := range []uint64{math.MaxInt64 + 1, math.MaxUint64} {
		svc := swarm.Service{ID: "k3x9d2mq7wz1"}
		svc.Spec.Name = "web"
		svc.Spec.Mode.Replicated = &swarm.ReplicatedService{Replicas: &n}
		if got := toService(svc).Replicas; got != math.MaxInt {
			t.Errorf("a service of %d replicas read as %d, want %d (the most an int holds)", n, got, math.MaxInt)
		}
	}
}

// TestSwarmCallsDoNotWaitForAHungDockerd: the autoscaler's Docker calls
// (the services' listing its resync loop repeats, a service's inspect on
// each event and decision, the tasks' listing the settle loop reads, the
// replica write) had no deadline of their own: a dockerd that never
// answered held the resync loop, or a service's decision lock, for good.
// Each is bounded (callWait): it fails naming the call, and the next one,
// dockerd answering again, runs.
func TestSwarmCallsDoNotWaitForAHungDockerd(t *testing.T) {
	var hung atomic.Bool
	hung.Store(true)
	d := testdocker.New(t)
	api := d.Serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hung.Load() {
			d.Hang(r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/v1.41/services":
			w.Write([]byte(`[{"ID":"svc1","Spec":{"Name":"web","Mode":{"Replicated":{"Replicas":1}}}}]`))
		default:
			http.Error(w, `{"message":"not faked"}`, http.StatusNotFound)
		}
	}))
	s := NewSwarm(api)
	s.callWait = 50 * time.Millisecond
	ctx := context.Background()
	for _, c := range []struct {
		name, want string // want: what the error names (the controller names the first two)
		call       func() error
	}{
		{"Services", `/v1.41/services"`, func() error { _, err := s.Services(ctx); return err }},
		{"Service", "/v1.41/services/web", func() error { _, err := s.Service(ctx, "web"); return err }},
		{"Wanted", "list tasks of service svc1", func() error { _, err := s.Wanted(ctx, "svc1"); return err }},
		{"SetReplicas", "update service svc1", func() error { return s.SetReplicas(ctx, "svc1", 1, 2) }},
	} {
		testdocker.GivesUp(t, c.name, c.want, c.call)
	}
	hung.Store(false)
	s.callWait = callWait // the answered call's bound: a loaded machine's listing may take 50 ms
	if got, err := s.Services(ctx); err != nil || len(got) != 1 {
		t.Errorf("Services once dockerd answers again: %v, %v; want web", got, err)
	}
}
