package adapter

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/docker/docker/client"

	"github.com/underlay/underlay/internal/scale"
)

// inspected is a service as Docker 29 (API 1.52) shows it: an image in its
// full form, as the API takes it from any SDK, and task resources the v28
// client's types do not have (SwapBytes, MemorySwappiness).
const inspected = `{"ID":"svc1","Version":{"Index":7},"CreatedAt":"2026-12-01T10:00:00Z",
"Spec":{"Name":"web","Labels":{"underlay.scale.enabled":"true"},
"TaskTemplate":{"ContainerSpec":{"Image":"docker.io/library/nginx:1.25","Env":["A=1"],"Isolation":"default"},
"Resources":{"Limits":{"MemoryBytes":104857600},"SwapBytes":209715200,"MemorySwappiness":10},
"ForceUpdate":0,"Runtime":"container","FutureField":{"x":[1,2.50,"y"]}},
"Mode":{"Replicated":{"Replicas":2}},"EndpointSpec":{"Mode":"vip"}},
"Endpoint":{"Spec":{}}}`

// specTree is s's Spec decoded with nothing typed, for comparison.
func specTree(t *testing.T, s []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(s, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestWithReplicas(t *testing.T) {
	spec, version, err := withReplicas([]byte(inspected), 5)
	if err != nil || version != 7 {
		t.Fatalf("withReplicas: version %d, %v", version, err)
	}
	want := specTree(t, []byte(inspected))["Spec"].(map[string]any)
	want["Mode"].(map[string]any)["Replicated"].(map[string]any)["Replicas"] = 5.0
	if got := specTree(t, spec); !reflect.DeepEqual(got, want) {
		t.Errorf("spec written back\n%v\nwant the spec read with Replicas 5 and nothing else changed\n%v", got, want)
	}
	if !strings.Contains(string(spec), `2.50`) {
		t.Errorf("spec written back %s: a number is no longer as Docker wrote it", spec)
	}
	for _, mode := range []string{`{"Global":{}}`, `{"ReplicatedJob":{"MaxConcurrent":1}}`, `{"GlobalJob":{}}`} {
		svc := `{"Version":{"Index":1},"Spec":{"Name":"g","Mode":` + mode + `}}`
		if _, _, err := withReplicas([]byte(svc), 1); !errors.Is(err, scale.ErrGlobalService) {
			t.Errorf("mode %s: %v, want ErrGlobalService", mode, err)
		}
	}
	for _, bad := range []string{``, `[]`, `{"Version":{"Index":1}}`, `{"Spec":{"Mode":"x"}}`, `{"Spec":{"Mode":{"Replicated":{"Replicas":1}}`} {
		if _, _, err := withReplicas([]byte(bad), 1); err == nil || errors.Is(err, scale.ErrGlobalService) {
			t.Errorf("withReplicas(%q): %v, want an error reading it", bad, err)
		}
	}
	if _, _, err := withReplicas([]byte(inspected), -1); err == nil {
		t.Error("withReplicas(-1): no error")
	}
}

// fakeDaemon answers as a Docker 29 manager of one service: GET and update
// at any API version, recording the version and body of each update.
type fakeDaemon struct {
	mu       sync.Mutex
	updates  []string // "VERSION QUERY BODY"
	answer   func(w http.ResponseWriter) bool
	notFound bool
}

func (f *fakeDaemon) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ver, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	switch {
	case r.URL.Path == "/_ping":
		w.Header().Set("API-Version", "1.52")
		io.WriteString(w, "OK")
	case r.URL.Path == "/version" || rest == "version":
		io.WriteString(w, `{"Version":"29.8.0","ApiVersion":"1.52","MinAPIVersion":"1.40"}`)
	case f.notFound:
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"message":"service web not found"}`)
	case r.Method == http.MethodGet && rest == "services/web":
		io.WriteString(w, inspected)
	case r.Method == http.MethodPost && rest == "services/web/update":
		b, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.updates = append(f.updates, ver+" "+r.URL.RawQuery+" "+string(b))
		f.mu.Unlock()
		if f.answer == nil || !f.answer(w) {
			io.WriteString(w, `{"Warnings":null}`)
		}
	default:
		http.Error(w, `{"message":"unexpected `+r.Method+` `+r.URL.Path+`"}`, http.StatusBadRequest)
	}
}

func newFakeSwarm(t *testing.T, f *fakeDaemon) *Swarm {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	api, err := client.NewClientWithOpts(client.WithHost("tcp://"+srv.Listener.Addr().String()), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { api.Close() })
	return NewSwarm(api)
}

// TestSetReplicasWritesBackTheSpecAsRead: scaling changes the replica
// count and nothing else of the spec. Before, the typed client posted the
// image as "nginx:1.25" and no swap limits (at API 1.51, below which
// Docker 29 clears them too): a new task template, which restarts every
// task of the service.
func TestSetReplicasWritesBackTheSpecAsRead(t *testing.T) {
	f := &fakeDaemon{}
	s := newFakeSwarm(t, f)
	if err := s.SetReplicas(context.Background(), "web", 7, 3); err != nil {
		t.Fatal(err)
	}
	if len(f.updates) != 1 {
		t.Fatalf("%d updates, want 1", len(f.updates))
	}
	ver, rest, _ := strings.Cut(f.updates[0], " ")
	query, body, _ := strings.Cut(rest, " ")
	if ver != "v1.52" || query != "version=7" {
		t.Errorf("update at %s ?%s, want the daemon's own API version v1.52 and ?version=7", ver, query)
	}
	want := specTree(t, []byte(inspected))["Spec"].(map[string]any)
	want["Mode"].(map[string]any)["Replicated"].(map[string]any)["Replicas"] = 3.0
	if got := specTree(t, []byte(body)); !reflect.DeepEqual(got, want) {
		t.Errorf("update sent\n%v\nwant the spec read with Replicas 3 and nothing else changed\n%v", got, want)
	}
}

func TestSetReplicasErrors(t *testing.T) {
	ctx := context.Background()
	f := &fakeDaemon{}
	s := newFakeSwarm(t, f)
	if err := s.SetReplicas(ctx, "web", 6, 3); !errors.Is(err, scale.ErrVersionConflict) {
		t.Errorf("at an old version: %v, want ErrVersionConflict", err)
	}
	if len(f.updates) != 0 {
		t.Errorf("an update was sent at an old version: %q", f.updates)
	}
	f.answer = func(w http.ResponseWriter) bool {
		w.WriteHeader(http.StatusInternalServerError)
		io.WriteString(w, `{"message":"rpc error: code = Unknown desc = update out of sequence"}`)
		return true
	}
	if err := s.SetReplicas(ctx, "web", 7, 3); !errors.Is(err, scale.ErrVersionConflict) || !strings.Contains(err.Error(), "out of sequence") {
		t.Errorf("update out of sequence: %v, want ErrVersionConflict with Docker's message", err)
	}
	f.answer = func(w http.ResponseWriter) bool {
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"message":"invalid replicas"}`)
		return true
	}
	if err := s.SetReplicas(ctx, "web", 7, 3); err == nil || errors.Is(err, scale.ErrVersionConflict) || !strings.Contains(err.Error(), "invalid replicas") {
		t.Errorf("update refused: %v, want Docker's message", err)
	}
	f.notFound = true
	if err := s.SetReplicas(ctx, "web", 7, 3); !errors.Is(err, scale.ErrNotFound) {
		t.Errorf("service gone: %v, want ErrNotFound", err)
	}
	if err := s.SetReplicas(ctx, "../secrets/x", 7, 3); !errors.Is(err, scale.ErrNotFound) {
		t.Errorf("a path for a name: %v, want ErrNotFound", err)
	}
}
