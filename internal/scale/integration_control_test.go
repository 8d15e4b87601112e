package scale_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/docker/client"
	consulapi "github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/underlay/underlay/internal/scale"
	"github.com/underlay/underlay/internal/scale/adapter"
	"github.com/underlay/underlay/internal/testenv"
)

// Debian's packages of Prometheus and Alertmanager (scripts/install-deps.sh).
const (
	prometheusBin   = "/usr/bin/prometheus"
	alertmanagerBin = "/usr/bin/prometheus-alertmanager"
)

// controlEnv is an in-process control: a controller on the machine's
// swarm with history in a private Consul, behind the API on loopback.
type controlEnv struct {
	ctrl    *scale.Controller
	history *adapter.KVHistory
	srv     *httptest.Server
	// addr is the API's host:port, which it advertises when elected.
	addr string
	// cancel stops the controller (and its leader election).
	cancel context.CancelFunc
	done   chan struct{}
}

// controlOpts are the settings of one in-process control.
type controlOpts struct {
	cfg scale.Config
	api scale.APIConfig
	// wrap, when not nil, wraps the API's handler.
	wrap func(http.Handler) http.Handler
	// leaderKey, when set, elects a leader through this Consul lock, the
	// instance advertising its API's address.
	leaderKey string
	// observe follows leaderKey without competing for it: always a follower.
	observe bool
	// ln, when not nil, is the API's listener (its address known before,
	// to list it in the instances' --peers).
	ln net.Listener
}

// startControl starts a controller (its history and alert log in consul)
// and its API; the API always takes integrationToken, and has no rate
// limit unless o.api sets one (the tests send bursts from one client).
func startControl(t *testing.T, docker *client.Client, consul *testenv.Consul, o controlOpts, log *slog.Logger) *controlEnv {
	t.Helper()
	e := &controlEnv{history: adapter.NewKVHistory(consul.Client(), "", 100), done: make(chan struct{})}
	e.srv = httptest.NewUnstartedServer(nil) // 127.0.0.1
	if o.ln != nil {
		e.srv.Listener.Close()
		e.srv.Listener = o.ln
	}
	e.addr = e.srv.Listener.Addr().String()
	cfg := o.cfg
	cfg.AlertLog = adapter.NewKVAlertLog(consul.Client(), "", 0, slog.New(slog.NewTextHandler(io.Discard, nil)))
	var leader *adapter.ConsulLeader
	if o.leaderKey != "" {
		leader = adapter.NewConsulLeader(adapter.LeaderConfig{Key: o.leaderKey, Advertise: e.addr}, consul.Client(), log)
		cfg.Leadership = leader
	}
	e.ctrl = scale.NewController(cfg, adapter.NewSwarm(docker), e.history, log, prometheus.NewRegistry())
	tokens, err := scale.ParseTokens(strings.NewReader(integrationToken + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	apiCfg := o.api
	apiCfg.Tokens, apiCfg.History, apiCfg.Peer.Self = tokens, e.history, e.addr
	if apiCfg.Limits.RateLimit == 0 {
		apiCfg.Limits.RateLimit = -1
	}
	var h http.Handler = scale.NewAPI(apiCfg, e.ctrl, log).Handler()
	if o.wrap != nil {
		h = o.wrap(h)
	}
	e.srv.Config.Handler = h
	e.srv.Start()
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); e.ctrl.Run(ctx) }()
	if leader != nil && !o.observe {
		wg.Add(1)
		go func() { defer wg.Done(); leader.Run(ctx) }()
	}
	go func() { wg.Wait(); close(e.done) }()
	t.Cleanup(func() { e.stop(); e.srv.Close() })
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		return e.ctrl.Status().DockerConnected, "controller has not listed the swarm's services"
	})
	return e
}

func (e *controlEnv) stop() { e.cancel(); <-e.done }

// waitManaged waits until the controller manages service.
func (e *controlEnv) waitManaged(t *testing.T, service string) {
	t.Helper()
	testenv.Eventually(t, 15*time.Second, func() (bool, string) {
		for _, s := range e.ctrl.Services() {
			if s.Service == service {
				return true, ""
			}
		}
		return false, service + " not autoscaled yet"
	})
}

// scaledRecords are the applied decisions of service in its history.
func (e *controlEnv) scaledRecords(t *testing.T, service string) []string {
	t.Helper()
	recs, _, err := e.history.List(testenv.Context(t, 10*time.Second), service)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range recs {
		if !r.Refused {
			out = append(out, fmt.Sprintf("%s %d→%d", r.Direction, r.From, r.To))
		}
	}
	return out
}

// loopbackPort is a free TCP port on 127.0.0.1.
func loopbackPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startProgram runs bin with args until the test ends, and waits until
// ready answers 200. Its output is logged when the test fails.
func startProgram(t *testing.T, bin string, ready string, args ...string) {
	t.Helper()
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s missing (install the Debian package with scripts/install-deps.sh): %v", bin, err)
	}
	var out bytes.Buffer
	var mu sync.Mutex
	cmd := exec.Command(bin, args...)
	cmd.Stdout = lockedWriter{&mu, &out}
	cmd.Stderr = lockedWriter{&mu, &out}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			mu.Lock()
			t.Logf("%s output:\n%s", filepath.Base(bin), out.String())
			mu.Unlock()
		}
	})
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		resp, err := http.Get(ready)
		if err != nil {
			return false, fmt.Sprintf("%s not ready: %v", bin, err)
		}
		resp.Body.Close()
		return resp.StatusCode == 200, fmt.Sprintf("%s not ready: %d", bin, resp.StatusCode)
	})
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// webhookCounter counts the webhook deliveries the control API handled
// (answered), by notification status.
type webhookCounter struct {
	mu     sync.Mutex
	counts map[string]int
}

func (c *webhookCounter) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "POST" && r.URL.Path == "/v1/underlay/alertmanager" {
			b, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(b))
			var msg struct {
				Status string `json:"status"`
			}
			json.Unmarshal(b, &msg)
			next.ServeHTTP(w, r)
			c.mu.Lock()
			c.counts[msg.Status]++
			c.mu.Unlock()
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (c *webhookCounter) get(status string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts[status]
}

// TestIntegrationScaleAlertmanager: a real Alertmanager, re-sending its
// notification every couple of seconds, scales a swarm service exactly
// once for one firing alert, and not again when the alert resolves.
func TestIntegrationScaleAlertmanager(t *testing.T) {
	testenv.Require(t)
	docker := testenv.Docker(t)
	testenv.Swarm(t, docker)
	consul := testenv.StartConsul(t)
	id := testenv.ID(t)
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))

	hooks := &webhookCounter{counts: map[string]int{}}
	ctl := startControl(t, docker, consul, controlOpts{wrap: hooks.wrap}, log)
	name := "ulscale-am-" + id
	createService(t, docker, name, false, map[string]string{"orbiter": "true", scale.LabelMax: "5"})
	ctl.waitManaged(t, name)

	dir := t.TempDir()
	port := loopbackPort(t)
	conf := fmt.Sprintf(`route:
  receiver: underlay
  group_by: [alertname, service]
  group_wait: 100ms
  group_interval: 1s
  repeat_interval: 2s
receivers:
  - name: underlay
    webhook_configs:
      - url: %s/v1/underlay/alertmanager
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials: %s
`, ctl.srv.URL, integrationToken)
	os.WriteFile(filepath.Join(dir, "alertmanager.yml"), []byte(conf), 0o600)
	am := fmt.Sprintf("http://127.0.0.1:%d", port)
	startProgram(t, alertmanagerBin, am+"/-/ready",
		"--config.file="+filepath.Join(dir, "alertmanager.yml"), "--storage.path="+dir,
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port), "--cluster.listen-address=", "--log.level=warn")

	start := time.Now().UTC().Add(-time.Second)
	postAlert := func(endsAt time.Time) {
		t.Helper()
		alert := map[string]any{
			"labels":   map[string]string{"alertname": "UnderlayScaleTest", "service": name, "direction": "up"},
			"startsAt": start,
		}
		if !endsAt.IsZero() {
			alert["endsAt"] = endsAt
		}
		b, _ := json.Marshal([]any{alert})
		resp, err := http.Post(am+"/api/v2/alerts", "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("post alert: %d %s", resp.StatusCode, body)
		}
	}
	postAlert(time.Time{})
	testenv.Eventually(t, 20*time.Second, func() (bool, string) {
		n := replicas(t, docker, name)
		return n == 2, fmt.Sprintf("%s has %d replicas, want 2 after the alert fired", name, n)
	})
	// Alertmanager re-sends the firing notification (repeat_interval 2s).
	testenv.Eventually(t, 20*time.Second, func() (bool, string) {
		n := hooks.get("firing")
		return n >= 3, fmt.Sprintf("%d firing notifications delivered, want 3 or more", n)
	})
	if n := replicas(t, docker, name); n != 2 {
		t.Fatalf("%s has %d replicas after %d notifications of one firing, want 2", name, n, hooks.get("firing"))
	}

	postAlert(time.Now().UTC().Add(-time.Second)) // resolve it
	// Handled: a scale it caused would have been applied by now.
	testenv.Eventually(t, 20*time.Second, func() (bool, string) {
		n := hooks.get("resolved")
		return n >= 1, "no resolved notification handled yet"
	})
	if n := replicas(t, docker, name); n != 2 {
		t.Errorf("%s has %d replicas after the alert resolved, want 2", name, n)
	}
	if got := ctl.scaledRecords(t, name); strings.Join(got, "; ") != "up 1→2" {
		t.Errorf("applied decisions on %s: %q, want exactly one up 1→2", name, got)
	}
}

// TestIntegrationScalePrometheus: a real Prometheus scraping a gauge the
// test sets drives a scale-up while the gauge is high and, once it drops
// and the stabilization window has passed, one scale-down — no flapping.
func TestIntegrationScalePrometheus(t *testing.T) {
	testenv.Require(t)
	docker := testenv.Docker(t)
	testenv.Swarm(t, docker)
	consul := testenv.StartConsul(t)
	id := testenv.ID(t)
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))

	// The exporter: one gauge the test sets.
	reg := prometheus.NewRegistry()
	load := prometheus.NewGauge(prometheus.GaugeOpts{Name: "ulscale_test_load", Help: "Load per replica, set by the test."})
	reg.MustRegister(load)
	load.Set(25)
	exporter := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(exporter.Close)

	dir := t.TempDir()
	port := loopbackPort(t)
	conf := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: ulscale
    static_configs:
      - targets: [%q]
`, strings.TrimPrefix(exporter.URL, "http://"))
	os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(conf), 0o600)
	promURL := fmt.Sprintf("http://127.0.0.1:%d", port)
	startProgram(t, prometheusBin, promURL+"/-/ready",
		"--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port), "--log.level=warn")
	prom, err := adapter.NewPrometheus(promURL, nil, log)
	if err != nil {
		t.Fatal(err)
	}

	queries := &countingSource{src: prom}
	ctl := startControl(t, docker, consul, controlOpts{cfg: scale.Config{Metrics: queries, Interval: 500 * time.Millisecond}}, log)
	events := ctl.ctrl.Broadcaster().Subscribe()
	t.Cleanup(func() { ctl.ctrl.Broadcaster().Unsubscribe(events) })
	name := "ulscale-prom-" + id
	createService(t, docker, name, false, map[string]string{
		"orbiter": "true", scale.LabelMax: "3", scale.LabelAllowDown: "true",
		scale.LabelCooldownDown: "1s", scale.LabelStabilizationDown: "4s",
		scale.LabelMetricPrefix + "query":  `max(ulscale_test_load{job="ulscale"})`,
		scale.LabelMetricPrefix + "target": "10",
	})
	ctl.waitManaged(t, name)

	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		n := replicas(t, docker, name)
		return n == 3, fmt.Sprintf("%s has %d replicas, want 3 under load 25 for a target of 10", name, n)
	})
	queries.wait(t, 4) // load stays high: four more evaluations, no change
	if n := replicas(t, docker, name); n != 3 {
		t.Fatalf("%s moved to %d replicas under steady load", name, n)
	}
	load.Set(1)
	low := time.Now()
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		n := replicas(t, docker, name)
		return n == 1, fmt.Sprintf("%s has %d replicas, want 1 once the load dropped to 1", name, n)
	})
	if held := time.Since(low); held < 3*time.Second {
		t.Errorf("scaled down %s after the load dropped: the 4s stabilization window did not hold", held)
	}
	queries.wait(t, 4) // low load stays low: four more evaluations, no change
	if n := replicas(t, docker, name); n != 1 {
		t.Errorf("%s moved to %d replicas under steady low load", name, n)
	}

	var applied []string
	for drained := false; !drained; {
		select {
		case r := <-events.C:
			if r.Service == name && !r.Refused {
				applied = append(applied, fmt.Sprintf("%s %d→%d", r.Direction, r.From, r.To))
				if len(r.Metrics) != 1 || r.Metrics[0].Error != "" {
					t.Errorf("decision %d without its metric snapshot: %+v", r.Seq, r.Metrics)
				}
			}
		default:
			drained = true
		}
	}
	if strings.Join(applied, "; ") != "up 1→3; down 3→1" {
		t.Errorf("applied decisions on %s: %q, want up 1→3 then down 3→1, nothing else", name, applied)
	}
}

// TestIntegrationScaleLeaderFailover: two control instances on one Consul
// elect one leader; the follower refuses naming it; when the leader stops,
// the follower takes over within seconds and scales.
func TestIntegrationScaleLeaderFailover(t *testing.T) {
	testenv.Require(t)
	docker := testenv.Docker(t)
	testenv.Swarm(t, docker)
	consul := testenv.StartConsul(t)
	id := testenv.ID(t)
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))

	key := "underlay/scale/leader-" + id
	var ctls [2]*controlEnv
	for i := range ctls {
		// No peer secret: followers name the leader rather than pass on.
		ctls[i] = startControl(t, docker, consul, controlOpts{leaderKey: key, api: scale.APIConfig{ForwardToLeader: true}}, log)
	}
	name := "ulscale-lead-" + id
	createService(t, docker, name, false, map[string]string{"orbiter": "true", scale.LabelMax: "5"})
	ctls[0].waitManaged(t, name)
	ctls[1].waitManaged(t, name)

	leaderIdx := -1
	testenv.Eventually(t, 15*time.Second, func() (bool, string) {
		for i, c := range ctls {
			if c.ctrl.Leading() {
				leaderIdx = i
				return true, ""
			}
		}
		return false, "no leader elected"
	})
	leader, follower := ctls[leaderIdx], ctls[1-leaderIdx]
	if follower.ctrl.Leading() {
		t.Fatal("both instances lead")
	}
	post := func(c *controlEnv) (int, string, string) {
		req, _ := http.NewRequest("POST", c.srv.URL+"/v1/orbiter/handle/autoswarm/"+name+"/up", nil)
		req.Header.Set("Authorization", "Bearer "+integrationToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get(scale.LeaderHeader), string(b)
	}
	wantLeader := ctls[leaderIdx].addr
	if code, hdr, body := post(follower); code != 503 || hdr != wantLeader {
		t.Fatalf("follower: %d, leader %q, %s; want 503 naming %s", code, hdr, body, wantLeader)
	}
	if code, _, body := post(leader); code != 200 || replicas(t, docker, name) != 2 {
		t.Fatalf("leader: %d %s; want 200 and 2 replicas", code, body)
	}

	stopped := time.Now()
	leader.stop() // the leader process ends: its context is cancelled
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		return follower.ctrl.Leading(), "the follower has not taken over"
	})
	took := time.Since(stopped)
	t.Logf("failover took %s", took)
	if took > 5*time.Second {
		t.Errorf("failover took %s, want a few seconds at most", took)
	}
	if code, _, body := post(follower); code != 200 || replicas(t, docker, name) != 3 {
		t.Fatalf("new leader: %d %s; want 200 and 3 replicas", code, body)
	}

	// A crash or a partition: the leader's session is invalidated under it.
	// It notices, stops deciding, and competes again; alone, it wins the
	// lock back once Consul's lock delay (1s) has passed.
	kv := consul.Client().KV()
	pair, _, err := kv.Get(key, nil)
	if err != nil || pair == nil || pair.Session == "" {
		t.Fatalf("lock key %s: %+v, %v; want it held", key, pair, err)
	}
	if _, err := consul.Client().Session().Destroy(pair.Session, nil); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		p, _, err := kv.Get(key, nil)
		if err != nil || p == nil {
			return false, fmt.Sprintf("lock key: %v", err)
		}
		return p.Session != "" && p.Session != pair.Session && follower.ctrl.Leading(),
			fmt.Sprintf("lock held by session %q (the destroyed one was %q), leading %v", p.Session, pair.Session, follower.ctrl.Leading())
	})
	if code, _, body := post(follower); code != 200 || replicas(t, docker, name) != 4 {
		t.Fatalf("after re-election: %d %s; want 200 and 4 replicas", code, body)
	}
}

// TestIntegrationScaleLeaderKeyHijack: anyone with KV write access can
// redirect the leader key — a plain PUT on the held key keeps its Session —
// and, once the lock is free, anyone with session rights can take it under
// a name of their choosing. Neither delivers a caller's token anywhere:
//
//   - A plain PUT: followers see that the value is not what the lock's
//     holder advertised (the session's name), ignore it and dial nothing.
//   - A lock held by an impostor's own session: a follower without
//     --peers dials nothing and answers 503 naming the address; one whose
//     --peers lists the impostor's address (an instance's host taken over)
//     dials it but sends no token and no webhook signature, and passes
//     back no answer without the peer secret's proof (502); one whose
//     --peers does not list it does not dial it; what the listener
//     captured does not replay at the real leader.
func TestIntegrationScaleLeaderKeyHijack(t *testing.T) {
	testenv.Require(t)
	docker := testenv.Docker(t)
	testenv.Swarm(t, docker)
	consul := testenv.StartConsul(t)
	id := testenv.ID(t)
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))

	key := "underlay/scale/leader-" + id
	secret := []byte("integration peer secret, 32 bytes")
	// The two instances list each other in --peers, as they must to
	// pass requests on.
	var lns [2]net.Listener
	var peers []string
	for i := range lns {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns[i], peers = ln, append(peers, ln.Addr().String())
	}
	peerAPI := scale.APIConfig{ForwardToLeader: true, Peer: scale.PeerConfig{Secret: scale.StaticSecret(secret), Allow: peers}}
	var ctls [2]*controlEnv
	for i := range ctls {
		ctls[i] = startControl(t, docker, consul, controlOpts{leaderKey: key, api: peerAPI, ln: lns[i]}, log)
	}
	name := "ulscale-hijack-" + id
	createService(t, docker, name, false, map[string]string{"orbiter": "true", scale.LabelMax: "10"})
	var leader, follower *controlEnv
	testenv.Eventually(t, 15*time.Second, func() (bool, string) {
		for i, c := range ctls {
			if c.ctrl.Leading() {
				leader, follower = c, ctls[1-i]
				return true, ""
			}
		}
		return false, "no leader elected"
	})
	leader.waitManaged(t, name)
	follower.waitManaged(t, name)

	// The listener of the attacker records what reaches it and answers
	// with a forged decision.
	var mu sync.Mutex
	var captured []*http.Request
	var bodies [][]byte
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		captured, bodies = append(captured, r.Clone(context.Background())), append(bodies, b)
		mu.Unlock()
		io.WriteString(w, `{"service":"`+name+`","from":1,"to":10,"reason":"scaled","why":"forged"}`)
	}))
	t.Cleanup(evil.Close)
	evilAddr := strings.TrimPrefix(evil.URL, "http://")
	seen := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(captured)
	}
	scaleVia := func(c *controlEnv) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", c.srv.URL+"/v1/underlay/services/"+name+"/scale", strings.NewReader(`{"direction":"up"}`))
		req.Header.Set("Authorization", "Bearer "+integrationToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := scaleVia(follower); code != 200 || replicas(t, docker, name) != 2 {
		t.Fatalf("through the follower before the hijack: %d %s, %d replicas; want 200 and 2", code, body, replicas(t, docker, name))
	}

	// 1. A plain PUT, no session, on the held key.
	kv := consul.Client().KV()
	before, _, err := kv.Get(key, nil)
	if err != nil || before == nil || before.Session == "" {
		t.Fatalf("lock key %s: %+v, %v; want it held", key, before, err)
	}
	if _, err := kv.Put(&consulapi.KVPair{Key: key, Value: []byte(evilAddr)}, nil); err != nil {
		t.Fatal(err)
	}
	after, _, err := kv.Get(key, nil)
	if err != nil || string(after.Value) != evilAddr || after.Session != before.Session {
		t.Fatalf("after the PUT: %+v, %v; want the listener's address under the same session %s", after, err, before.Session)
	}
	code, body := scaleVia(follower)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "someone other than its lock holder") || strings.Contains(body, `"leader":`) {
		t.Errorf("through the follower after a plain PUT: %d %s; want 503 saying the key was tampered with, naming no leader", code, body)
	}
	if n := seen(); n != 0 {
		t.Errorf("the listener was dialled %d times after a plain PUT, want never", n)
	}
	if code, body := scaleVia(leader); code != 200 || replicas(t, docker, name) != 3 {
		t.Errorf("the leader after the PUT: %d %s; want it still deciding (3 replicas)", code, body)
	}

	// 2. An impostor holds the lock of another key with its own session,
	// named as a leader's would be; followers of that key use it.
	key2 := key + "-impostor"
	sid, _, err := consul.Client().Session().Create(&consulapi.SessionEntry{Name: "underlay-control " + evilAddr, TTL: "60s"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { consul.Client().Session().Destroy(sid, nil) })
	if ok, _, err := kv.Acquire(&consulapi.KVPair{Key: key2, Value: []byte(evilAddr), Session: sid}, nil); err != nil || !ok {
		t.Fatalf("acquire %s: %v %v", key2, ok, err)
	}
	// A follower without --peers dials nothing the key names; one whose
	// --peers lists the listener's address (an instance's host taken
	// over) dials it; one whose --peers does not, does not.
	unlisted := peerAPI
	unlisted.Peer.Allow = nil
	plain := startControl(t, docker, consul, controlOpts{leaderKey: key2, observe: true, api: unlisted}, log)
	takenOver := peerAPI
	takenOver.Peer.Allow = []string{evilAddr}
	listed := startControl(t, docker, consul, controlOpts{leaderKey: key2, observe: true, api: takenOver}, log)
	fenced := startControl(t, docker, consul, controlOpts{leaderKey: key2, observe: true, api: peerAPI}, log)

	code, body = scaleVia(plain)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, evilAddr) || !strings.Contains(body, "--peers") || seen() != 0 {
		t.Errorf("through a follower of the impostor without --peers: %d %s, listener reached %d times; want 503 naming the address and --peers, never dialled", code, body, seen())
	}
	code, body = scaleVia(listed)
	if code != http.StatusBadGateway || strings.Contains(body, "forged") {
		t.Errorf("through a follower of the impostor: %d %s, want 502 and no forged answer", code, body)
	}
	if seen() != 1 {
		t.Fatalf("the listener got %d requests, want the follower's 1 (else the test proves nothing)", seen())
	}
	mu.Lock()
	got, gotBody := captured[0], bodies[0]
	mu.Unlock()
	var dump strings.Builder
	got.Header.Write(&dump)
	if strings.Contains(dump.String()+string(gotBody), integrationToken) || got.Header.Get("Authorization") != "" {
		t.Errorf("the listener received the caller's credentials:\n%s\n%s", dump.String(), gotBody)
	}
	if strings.Contains(dump.String()+string(gotBody), string(secret)) {
		t.Error("the listener received the peer secret")
	}
	code, body = scaleVia(fenced)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "--peers") || seen() != 1 {
		t.Errorf("through the follower with --peers: %d %s, listener reached %d times; want 503 naming --peers, never dialled", code, body, seen())
	}

	// What the listener captured does not replay at the real leader.
	replay, _ := http.NewRequest("POST", leader.srv.URL+got.URL.RequestURI(), bytes.NewReader(gotBody))
	replay.Header = got.Header.Clone()
	resp, err := http.DefaultClient.Do(replay)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the captured request replayed at the leader: %d, want 401", resp.StatusCode)
	}
	if n := replicas(t, docker, name); n != 3 {
		t.Errorf("%s has %d replicas, want 3 (the two genuine requests)", name, n)
	}
}

// countingSource counts the queries of the controller's metric
// evaluations: each evaluation reads the metric before deciding, so the
// n+1th read comes after the nth decision.
type countingSource struct {
	src scale.MetricSource
	n   atomic.Int64
}

func (c *countingSource) Query(ctx context.Context, q string) (float64, error) {
	c.n.Add(1)
	return c.src.Query(ctx, q)
}

// wait waits until n more queries were made (the first of them may be in
// flight: one more is awaited).
func (c *countingSource) wait(t *testing.T, n int64) {
	t.Helper()
	want := c.n.Load() + n + 1
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		got := c.n.Load()
		return got >= want, fmt.Sprintf("%d metric queries, want %d", got, want)
	})
}
