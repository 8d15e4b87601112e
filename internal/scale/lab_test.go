package scale_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"
	"github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/underlay/underlay/internal/consul"
	"github.com/underlay/underlay/internal/dockerhost"
	"github.com/underlay/underlay/internal/lab"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/scale"
	"github.com/underlay/underlay/internal/scale/adapter"
	"github.com/underlay/underlay/internal/testenv"
)

// TestIntegrationLabAutoscaler is issue 6's burst on the lab: a service of
// the test image on an underlay network, registered in Consul by the
// agents, gets 100 concurrent Orbiter "up" calls. The autoscaler never
// takes it beyond its maximum of 6, answers every call with a decision,
// and the agents end up registering all 6 replicas, passing.
func TestIntegrationLabAutoscaler(t *testing.T) {
	testenv.Require(t)
	al := startAutoscalerLab(t, "10.209.0.0/16")
	ctx := testenv.Context(t, 3*time.Minute)
	m := al.lab.Nodes[0]
	svc := "ulscale-lab-" + testenv.ID(t)
	createLabService(t, m.Docker, svc, al.network, map[string]string{
		scale.LabelOrbiter: "true", scale.LabelMax: "6", scale.LabelMin: "1", scale.LabelCooldownUp: "0",
	})
	ctl := startLabControl(t, m.Docker, m.Consul)
	ctl.waitManaged(t, svc)
	waitPassing(t, m.Consul, svc, 1, 90*time.Second)

	// Watch the service's spec while the burst runs: the maximum holds at
	// every moment, not only at the end.
	watchCtx, stopWatch := context.WithCancel(ctx)
	highest := make(chan uint64, 1)
	go func() {
		var hi uint64
		for watchCtx.Err() == nil {
			if s, _, err := m.Docker.ServiceInspectWithRaw(watchCtx, svc, swarm.ServiceInspectOptions{}); err == nil {
				hi = max(hi, *s.Spec.Mode.Replicated.Replicas)
			}
			time.Sleep(10 * time.Millisecond)
		}
		highest <- hi
	}()

	const calls = 100
	type answer struct {
		code int
		rec  scale.Record
		raw  string
	}
	answers := make([]answer, calls)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			code, raw := ctl.post(ctx, "/v1/orbiter/handle/autoswarm/"+svc+"/up")
			a := answer{code: code, raw: raw}
			json.Unmarshal([]byte(raw), &a.rec)
			answers[i] = a
		}()
	}
	close(start)
	wg.Wait()
	stopWatch()
	if hi := <-highest; hi > 6 {
		t.Errorf("%s reached %d replicas during the burst, above its maximum 6", svc, hi)
	}

	scaled, refusals := 0, map[scale.Reason]int{}
	for i, a := range answers {
		switch {
		case a.code < 200 || a.code > 299:
			t.Errorf("call %d: status %d, want 2xx: %s", i, a.code, a.raw)
		case a.rec.Service != svc || a.rec.Reason == "" || a.rec.Why == "":
			t.Errorf("call %d: %s, want a decision on %s", i, a.raw, svc)
		case a.rec.To > 6:
			t.Errorf("call %d: decided %d → %d, above the maximum 6", i, a.rec.From, a.rec.To)
		case a.rec.Refused:
			refusals[a.rec.Reason]++
		default:
			scaled++
		}
	}
	if scaled != 5 || refusals[scale.ReasonAtMax] != calls-5 {
		t.Errorf("%d calls scaled and refusals %v; want 5 scaled (1 → 6) and %d refused at_max", scaled, refusals, calls-5)
	}
	if got := replicas(t, m.Docker, svc); got != 6 {
		t.Errorf("%s has %d replicas after the burst, want 6", svc, got)
	}
	// The swarm runs them, spread over the nodes, and the agents register
	// every one in Consul with a passing health check.
	waitPassing(t, m.Consul, svc, 6, 100*time.Second)
	if got := replicas(t, m.Docker, svc); got != 6 {
		t.Errorf("%s has %d replicas at the end, want 6", svc, got)
	}
}

// autoscalerLab is a 3-node lab with an underlay network for services.
type autoscalerLab struct {
	lab     *testenv.Lab
	network string
}

// startAutoscalerLab starts a 3-node lab on subnet (a /16) and creates the
// underlay network "web" on it with per-node ranges of 64 addresses, as
// `underlay network create` on node1.
func startAutoscalerLab(tb testing.TB, subnet string) *autoscalerLab {
	tb.Helper()
	l := testenv.StartLab(tb, lab.Config{Nodes: 3, UnderlaySubnet: subnet})
	m := l.Nodes[0]
	tb.Setenv("DOCKER_HOST", m.DockerHost)
	ctx := testenv.Context(tb, 2*time.Minute)
	st := netspec.NewStore(consul.NewKV(m.Consul))
	name := "web"
	l.CreateNetwork(name, "--subnet", l.Subnet.String(), "--gateway", l.Gateway.String(), "--parent", "eth1", "--per-node-size", "64")
	testenv.Eventually(tb, 60*time.Second, func() (bool, string) {
		states, err := st.NodeStates(ctx, name)
		ready := 0
		for _, s := range states {
			if s.State == netspec.StateReady {
				ready++
			}
		}
		return ready == 3, fmt.Sprintf("%d nodes have realised %s, want 3 (%v)", ready, name, err)
	})
	return &autoscalerLab{lab: l, network: name}
}

// createLabService creates a one-replica service of the test image on net
// with service labels; its tasks ask the agents for a Consul registration
// under the service's name with an HTTP check every second. It is removed
// when tb ends.
func createLabService(tb testing.TB, d *client.Client, name, net string, labels map[string]string) string {
	tb.Helper()
	labels["io.underlay.test"] = name
	one := uint64(1)
	spec := swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: name, Labels: labels},
		TaskTemplate: swarm.TaskSpec{
			ContainerSpec: &swarm.ContainerSpec{Image: testenv.TestImage, Env: []string{
				"SERVICE_NAME=" + name, "SERVICE_CHECK_HTTP=/health", "SERVICE_CHECK_INTERVAL=1s",
			}},
			Networks: []swarm.NetworkAttachmentConfig{{Target: net}},
		},
		Mode: swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &one}},
	}
	return testenv.CreateService(tb, d, spec)
}

// waitPassing waits until exactly n instances of service are passing.
func waitPassing(tb testing.TB, c *api.Client, service string, n int, timeout time.Duration) {
	tb.Helper()
	testenv.Eventually(tb, timeout, func() (bool, string) {
		got, err := instances(c, service, true)
		return got == n, fmt.Sprintf("%d instances of %s passing in Consul, want %d (%v)", got, service, n, err)
	})
}

// labControl is an in-process `underlay control` on a lab: a controller
// on node1's dockerd with its history in node1's Consul, behind the API
// on a loopback listener. Its Docker client times the service updates it
// sends, and the API the requests it receives.
type labControl struct {
	ctrl   *scale.Controller
	url    string
	timing *updateTiming
}

// startLabControl starts the controller and its API until tb ends.
func startLabControl(tb testing.TB, d *client.Client, c *api.Client) *labControl {
	tb.Helper()
	timing := &updateTiming{}
	timed, err := dockerhost.NewClientAt(d.DaemonHost(),
		func(cl *client.Client) error {
			hc := cl.HTTPClient()
			hc.Transport = &timedTransport{base: hc.Transport}
			return client.WithHTTPClient(hc)(cl)
		})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { timed.Close() })
	log := testenv.TestLogger(tb)
	history := adapter.NewKVHistory(c, "", 100)
	ctrl := scale.NewController(scale.Config{AlertLog: adapter.NewKVAlertLog(c, "", 0, log)},
		// Replica counts are written through the adapter's own raw requests:
		// timed as well.
		adapter.NewSwarmWrapped(timed, func(rt http.RoundTripper) http.RoundTripper { return &timedTransport{base: rt} }),
		history, log, prometheus.NewRegistry())
	tokens, err := scale.ParseTokens(strings.NewReader(integrationToken + "\n"))
	if err != nil {
		tb.Fatal(err)
	}
	// No rate limit: the 100 concurrent calls come from one client on purpose.
	h := scale.NewAPI(scale.APIConfig{Tokens: tokens, History: history, Limits: scale.Limits{RateLimit: -1}}, ctrl, log).Handler()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := &http.Server{Handler: timing.wrap(h), ReadHeaderTimeout: 5 * time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); ctrl.Run(ctx) }()
	go func() { defer wg.Done(); srv.Serve(ln) }()
	tb.Cleanup(func() {
		cancel()
		srv.Close()
		wg.Wait()
	})
	testenv.Eventually(tb, 15*time.Second, func() (bool, string) {
		return ctrl.Status().DockerConnected, "controller has not listed the swarm's services"
	})
	return &labControl{ctrl: ctrl, url: "http://" + ln.Addr().String(), timing: timing}
}

// waitManaged waits until the controller manages service.
func (lc *labControl) waitManaged(tb testing.TB, service string) {
	tb.Helper()
	testenv.Eventually(tb, 15*time.Second, func() (bool, string) {
		for _, s := range lc.ctrl.Services() {
			if s.Service == service {
				return true, ""
			}
		}
		return false, service + " not autoscaled yet"
	})
}

// post sends an authenticated POST with no body; a transport error is
// status 0. It is safe in goroutines.
func (lc *labControl) post(ctx context.Context, path string) (int, string) {
	req, err := http.NewRequestWithContext(ctx, "POST", lc.url+path, nil)
	if err != nil {
		return 0, err.Error()
	}
	req.Header.Set("Authorization", "Bearer "+integrationToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// updateTiming collects, per API request, when it was received, how long
// it read services from Docker, when the controller's first Docker service
// update started and how long the updates took.
type updateTiming struct {
	mu       sync.Mutex // guards following fields
	requests []*requestTiming
}

// requestTiming is one API request as the server saw it.
type requestTiming struct {
	mu          sync.Mutex // guards following fields
	received    time.Time
	inspect     time.Duration // reading services from Docker before the first update
	updateStart time.Time     // zero: no service update was sent
	update      time.Duration // all service updates of the request
	updates     int
	total       time.Duration // received to handler return
}

type timingKey struct{}

// wrap records every request handled by h.
func (u *updateTiming) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rt := &requestTiming{received: time.Now()}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), timingKey{}, rt)))
		total := time.Since(rt.received)
		rt.mu.Lock()
		done := requestTiming{received: rt.received, updateStart: rt.updateStart, update: rt.update, updates: rt.updates,
			inspect: rt.inspect, total: total}
		rt.mu.Unlock()
		u.mu.Lock()
		u.requests = append(u.requests, &done)
		u.mu.Unlock()
	})
}

// take returns the requests recorded so far and forgets them.
func (u *updateTiming) take() []*requestTiming {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := u.requests
	u.requests = nil
	return out
}

// timedTransport times Docker's service calls (reads before the first
// update, and POST /services/ID/update) and charges them to the API request
// in the request's context, if any. An update's time is until Docker's
// answer: the update as the swarm manager accepts it, not its tasks
// starting.
type timedTransport struct {
	base http.RoundTripper
}

func (t *timedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	rt, ok := req.Context().Value(timingKey{}).(*requestTiming)
	if !ok || !strings.Contains(req.URL.Path, "/services/") {
		return t.base.RoundTrip(req)
	}
	t0 := time.Now()
	resp, err := t.base.RoundTrip(req)
	d := time.Since(t0)
	rt.mu.Lock()
	defer rt.mu.Unlock()
	switch {
	case req.Method == http.MethodPost && strings.HasSuffix(req.URL.Path, "/update"):
		if rt.updates == 0 {
			rt.updateStart = t0
		}
		rt.updates++
		rt.update += d
	case req.Method == http.MethodGet && rt.updates == 0:
		rt.inspect += d
	}
	return resp, err
}
