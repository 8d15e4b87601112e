package scale_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"
	"github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/underlay/underlay/internal/scale"
	"github.com/underlay/underlay/internal/scale/adapter"
	"github.com/underlay/underlay/internal/testenv"
)

const integrationToken = "integration-token"

// TestIntegrationScaleOrbiterAPI drives the autoscaler through Orbiter's
// routes against the machine's dockerd as a single-node swarm (shared with
// other packages' tests, so it only looks at its own services) with history
// in a private Consul: services are found through Docker
// events, scaled within their bounds and cooldowns under bursts of
// concurrent calls, and every decision is kept and streamed; a restarted
// controller keeps the cooldowns.
func TestIntegrationScaleOrbiterAPI(t *testing.T) {
	testenv.Require(t)
	docker := testenv.Docker(t)
	testenv.Swarm(t, docker)
	consul := testenv.StartConsul(t)
	id := testenv.ID(t)

	history := adapter.NewKVHistory(consul.Client(), "", 10)
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctrl := scale.NewController(scale.Config{}, adapter.NewSwarm(docker), history, log, prometheus.NewRegistry())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ctrl.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	tokens, err := scale.ParseTokens(strings.NewReader(integrationToken + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	// No rate limit: the bursts below come from one client on purpose.
	srv := httptest.NewServer(scale.NewAPI(scale.APIConfig{Tokens: tokens, Limits: scale.Limits{RateLimit: -1}}, ctrl, log).Handler())
	t.Cleanup(srv.Close)
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		return ctrl.Status().DockerConnected, "controller has not listed the swarm's services"
	})

	// Created after the controller started: only Docker events can make them known.
	web, burst, cool := "ulscale-web-"+id, "ulscale-burst-"+id, "ulscale-cool-"+id
	webID := createService(t, docker, web, false, map[string]string{"orbiter": "true", scale.LabelMax: "3"})
	createService(t, docker, burst, false, map[string]string{"orbiter": "true", scale.LabelMax: "3"})
	createService(t, docker, cool, false, map[string]string{"orbiter": "true", scale.LabelMax: "5", "orbiter.cooldown": "3600"})
	glob := "ulscale-glob-" + id
	createService(t, docker, glob, true, map[string]string{"orbiter": "true"})
	createService(t, docker, "ulscale-plain-"+id, false, nil)
	testenv.Eventually(t, 15*time.Second, func() (bool, string) {
		n := 0
		var names []string
		for _, s := range ctrl.Services() {
			names = append(names, s.Name)
			if strings.HasSuffix(s.Service, id) {
				n++
			}
		}
		return n == 4, fmt.Sprintf("autoscaled: %v; want the 4 labelled services of this test", names)
	})

	events := readEvents(t, srv.URL+"/v1/orbiter/events")
	// post is safe in goroutines: a transport error is status 0.
	post := func(path, token, body string) (int, scale.Record, string) {
		req, _ := http.NewRequest("POST", srv.URL+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, scale.Record{}, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var rec scale.Record
		json.Unmarshal(b, &rec)
		return resp.StatusCode, rec, string(b)
	}
	expect := func(path, token, body string, wantCode int, wantReplicas uint64) scale.Record {
		t.Helper()
		code, rec, raw := post(path, token, body)
		if code != wantCode {
			t.Fatalf("POST %s: status %d, want %d: %s", path, code, wantCode, raw)
		}
		if got := replicas(t, docker, web); got != wantReplicas {
			t.Fatalf("after POST %s: %s has %d replicas, want %d", path, web, got, wantReplicas)
		}
		return rec
	}

	base := "/v1/orbiter/handle/autoswarm/" + web
	expect(base+"/up", "", "", http.StatusUnauthorized, 1)
	expect(base+"/up", "wrong", "", http.StatusUnauthorized, 1)
	expect(base+"/sideways", integrationToken, "", http.StatusBadRequest, 1)
	expect(base, integrationToken, `{}`, http.StatusBadRequest, 1)
	if rec := expect(base+"/up", integrationToken, "", http.StatusOK, 2); rec.Refused || rec.From != 1 || rec.To != 2 {
		t.Fatalf("first up: %+v, want 1 → 2", rec)
	}
	if rec := expect("/handle/autoswarm/"+web, integrationToken, `{"direction": true}`, http.StatusOK, 3); rec.Refused || rec.To != 3 {
		t.Fatalf("second up (Orbiter body, no prefix): %+v, want 2 → 3", rec)
	}
	// The swarm acts on it: three tasks of web run.
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		n := runningTasks(t, docker, webID)
		return n == 3, fmt.Sprintf("%s has %d running tasks, want 3", web, n)
	})
	// The adapter lists the tasks swarm wants running, one per slot: what
	// the controller checks after a scale-down.
	sw := adapter.NewSwarm(docker)
	wantedSlots := func() []int {
		tasks, err := sw.Wanted(testenv.Context(t, 10*time.Second), webID)
		if err != nil {
			t.Fatal(err)
		}
		var slots []int
		for _, tk := range tasks {
			slots = append(slots, tk.Slot)
		}
		slices.Sort(slots)
		return slots
	}
	if got := wantedSlots(); !slices.Equal(got, []int{1, 2, 3}) {
		t.Fatalf("%s: tasks wanted running in slots %v, want 1 2 3", web, got)
	}
	rec := expect(base+"/up", integrationToken, "", http.StatusOK, 3)
	if !rec.Refused || rec.Reason != scale.ReasonAtMax || !strings.Contains(rec.Why, "maximum 3") {
		t.Fatalf("up beyond max: %+v, want refused at_max", rec)
	}
	rec = expect(base+"/down", integrationToken, "", http.StatusOK, 3)
	if !rec.Refused || rec.Reason != scale.ReasonDownDisabled {
		t.Fatalf("down: %+v, want refused down_not_allowed", rec)
	}
	if code, _, raw := post("/v1/orbiter/handle/autoswarm/"+glob+"/up", integrationToken, ""); code != http.StatusConflict {
		t.Fatalf("global service: %d %s, want 409", code, raw)
	}
	if code, _, raw := post("/v1/orbiter/handle/autoswarm/ulscale-plain-"+id+"/up", integrationToken, ""); code != http.StatusNotFound {
		t.Fatalf("unlabelled service: %d %s, want 404", code, raw)
	}

	// Bursts of concurrent calls: the bound and the cooldown hold.
	for _, b := range []struct {
		name                 string
		wantScaled, wantReps int
	}{{burst, 2, 3}, {cool, 1, 2}} {
		var wg sync.WaitGroup
		var mu sync.Mutex
		scaled, codes := 0, map[int]int{}
		for range 30 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				code, rec, _ := post("/v1/orbiter/handle/autoswarm/"+b.name+"/up", integrationToken, "")
				mu.Lock()
				defer mu.Unlock()
				codes[code]++
				if code == http.StatusOK && !rec.Refused {
					scaled++
				}
			}()
		}
		wg.Wait()
		if codes[http.StatusOK] != 30 || scaled != b.wantScaled {
			t.Errorf("%s: statuses %v, %d scaled; want 30 × 200 and %d scaled", b.name, codes, scaled, b.wantScaled)
		}
		if got := replicas(t, docker, b.name); got != uint64(b.wantReps) {
			t.Errorf("%s: %d replicas after the burst, want %d", b.name, got, b.wantReps)
		}
	}

	// History in Consul: every decision on web, the newest 10 of the burst.
	qctx := testenv.Context(t, 10*time.Second)
	webHist, bad, err := history.List(qctx, web)
	if err != nil || len(bad) != 0 {
		t.Fatalf("history of %s: %v, unreadable %+v", web, err, bad)
	}
	var got []string
	for _, r := range webHist {
		got = append(got, fmt.Sprintf("%s %d→%d %s", r.Direction, r.From, r.To, r.Reason))
	}
	want := []string{"up 1→2 scaled", "up 2→3 scaled", "up 3→3 at_max", "down 3→3 down_not_allowed"}
	if strings.Join(got, "; ") != strings.Join(want, "; ") {
		t.Errorf("history of %s: %q, want %q", web, got, want)
	}
	burstHist, _, err := history.List(qctx, burst)
	if err != nil || len(burstHist) != 10 {
		t.Errorf("history of %s: %d records (%v), want the newest 10", burst, len(burstHist), err)
	}
	// A stray record among web's is set apart, named with its fix; the
	// others are still listed.
	strayKey := history.ServicePrefix(web) + "20000101T000000.000000000Z-00000000"
	if _, err := consul.Client().KV().Put(&api.KVPair{Key: strayKey, Value: []byte(`{"service":`)}, nil); err != nil {
		t.Fatal(err)
	}
	if recs, bad, err := history.List(qctx, web); err != nil || len(recs) != len(want) || len(bad) != 1 || bad[0].Key != strayKey ||
		bad[0].Fix != "consul kv delete "+strayKey {
		t.Errorf("history of %s with a stray record: %d records, unreadable %+v, %v; want %d records and the stray one named with its fix", web, len(recs), bad, err, len(want))
	}
	keys, _, err := consul.Client().KV().Keys(history.ServicePrefix(burst), "", nil)
	if err != nil || !slices.Contains(keys, history.ServicePrefix(burst)+"last-up") {
		t.Errorf("keys of %s: %v (%v), want its last-up kept apart from the trimmed records", burst, keys, err)
	}

	// The events stream saw every decision, in order.
	wantEvents := len(want) + 60
	var streamed []scale.Record
	timeout := time.After(10 * time.Second)
	for len(streamed) < wantEvents {
		select {
		case r := <-events:
			streamed = append(streamed, r)
		case <-timeout:
			t.Fatalf("events: %d decisions streamed, want %d", len(streamed), wantEvents)
		}
	}
	for i, r := range streamed {
		if i > 0 && r.Seq != streamed[i-1].Seq+1 {
			t.Errorf("events: seq %d after %d: a decision is missing", r.Seq, streamed[i-1].Seq)
		}
	}

	// A restarted controller keeps the cooldown: it reads the history in
	// Consul. An unreadable record of the last scale-down beside it (before,
	// a 503 for every request on the service until someone deleted it)
	// only times that direction's cooldown from now.
	if _, err := consul.Client().KV().Put(&api.KVPair{Key: history.ServicePrefix(cool) + "last-down", Value: []byte("garbage")}, nil); err != nil {
		t.Fatal(err)
	}
	ctrl2 := scale.NewController(scale.Config{}, adapter.NewSwarm(docker), history, log, prometheus.NewRegistry())
	ctx2, cancel2 := context.WithCancel(context.Background())
	done2 := make(chan struct{})
	go func() { ctrl2.Run(ctx2); close(done2) }()
	t.Cleanup(func() { cancel2(); <-done2 })
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		return len(ctrl2.Services()) >= 4, "second controller has not listed the services"
	})
	rec, err = ctrl2.Handle(qctx, scale.Request{Autoscaler: scale.AutoswarmName, Service: cool, Direction: scale.Up, Source: "test"})
	if err != nil || !rec.Refused || rec.Reason != scale.ReasonCooldown {
		t.Errorf("restarted controller on %s: %+v, %v; want refused for the cooldown", cool, rec, err)
	}
	if got := replicas(t, docker, cool); got != 2 {
		t.Errorf("%s: %d replicas after the restart, want 2", cool, got)
	}

	// A label edit is noticed through events: opting out makes web unknown.
	setLabel(t, docker, webID, "orbiter", "false")
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		for _, s := range ctrl.Services() {
			if s.Service == web {
				return false, web + " still autoscaled after orbiter=false"
			}
		}
		return true, ""
	})
	expect(base+"/up", integrationToken, "", http.StatusNotFound, 3)

	// Scaled down, swarm wants fewer tasks running, as the adapter lists.
	webNow, err := sw.Service(qctx, webID)
	if err != nil {
		t.Fatal(err)
	}
	if err := sw.SetReplicas(qctx, webID, webNow.Version, 1); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		got := wantedSlots()
		return len(got) == 1, fmt.Sprintf("%s scaled to 1: tasks wanted running in slots %v", web, got)
	})
}

// createService creates a service of the test image with service labels,
// replicated with one replica or global, and removes it when t ends.
func createService(t *testing.T, d *client.Client, name string, global bool, labels map[string]string) string {
	t.Helper()
	if labels == nil {
		labels = map[string]string{}
	}
	labels["io.underlay.test"] = name
	one := uint64(1)
	mode := swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &one}}
	if global {
		mode = swarm.ServiceMode{Global: &swarm.GlobalService{}}
	}
	spec := swarm.ServiceSpec{
		Annotations:  swarm.Annotations{Name: name, Labels: labels},
		TaskTemplate: swarm.TaskSpec{ContainerSpec: &swarm.ContainerSpec{Image: testenv.TestImage}},
		Mode:         mode,
	}
	return testenv.CreateService(t, d, spec)
}

func replicas(t *testing.T, d *client.Client, name string) uint64 {
	t.Helper()
	s, _, err := d.ServiceInspectWithRaw(testenv.Context(t, 10*time.Second), name, swarm.ServiceInspectOptions{})
	if err != nil {
		t.Fatalf("inspect service %s: %v", name, err)
	}
	return *s.Spec.Mode.Replicated.Replicas
}

func runningTasks(t *testing.T, d *client.Client, serviceID string) int {
	t.Helper()
	f := filters.NewArgs(filters.Arg("service", serviceID), filters.Arg("desired-state", "running"))
	tasks, err := d.TaskList(testenv.Context(t, 10*time.Second), swarm.TaskListOptions{Filters: f})
	if err != nil {
		t.Fatalf("list tasks of %s: %v", serviceID, err)
	}
	n := 0
	for _, tk := range tasks {
		if tk.Status.State == swarm.TaskStateRunning {
			n++
		}
	}
	return n
}

func setLabel(t *testing.T, d *client.Client, id, key, value string) {
	t.Helper()
	ctx := testenv.Context(t, 10*time.Second)
	s, _, err := d.ServiceInspectWithRaw(ctx, id, swarm.ServiceInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Spec.Labels[key] = value
	if _, err := d.ServiceUpdate(ctx, id, s.Version, s.Spec, swarm.ServiceUpdateOptions{}); err != nil {
		t.Fatalf("update labels of %s: %v", id, err)
	}
}

// readEvents subscribes to the events endpoint, with the test's token
// (reads want one), and returns its decisions.
func readEvents(t *testing.T, url string) <-chan scale.Record {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+integrationToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("events: status %d", resp.StatusCode)
	}
	t.Cleanup(func() { resp.Body.Close() })
	out := make(chan scale.Record, 1024)
	sc := bufio.NewScanner(resp.Body)
	sc.Scan() // the opening comment: the subscription exists from here
	go func() {
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				var r scale.Record
				if json.Unmarshal([]byte(data), &r) == nil {
					out <- r
				}
			}
		}
	}()
	return out
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}
