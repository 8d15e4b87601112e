package scale

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"log/slog"
)

const testToken = "s3cret"

// apiEnv is a controller on a fake swarm behind an httptest server.
type apiEnv struct {
	swarm   *fakeSwarm
	history *memHistory
	ctrl    *Controller
	reg     *prometheus.Registry
	api     *API
	srv     *httptest.Server
}

func newAPIEnv(t testing.TB, cfg Config, svcs ...Service) *apiEnv {
	t.Helper()
	return newAPIEnvWith(t, cfg, APIConfig{}, svcs...)
}

// newAPIEnvWith is newAPIEnv with API settings; the tokens are always set.
func newAPIEnvWith(t testing.TB, cfg Config, apiCfg APIConfig, svcs ...Service) *apiEnv {
	t.Helper()
	e := &apiEnv{swarm: newFakeSwarm(svcs...), history: &memHistory{}, reg: prometheus.NewRegistry()}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e.ctrl = NewController(cfg, e.swarm, e.history, log, e.reg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.ctrl.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, func() bool { return e.ctrl.Status().DockerConnected })
	tokens, err := ParseTokens(strings.NewReader("# ops\nother\n\n" + testToken + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if apiCfg.Tokens == nil {
		apiCfg.Tokens = tokens
	}
	apiCfg.KeepAlive = 50 * time.Millisecond
	if apiCfg.Limits.RateLimit == 0 {
		apiCfg.Limits.RateLimit = -1 // tests send bursts; TestRateLimited sets one
	}
	// The address is known before the API is made, so that it can
	// advertise it to its peers.
	e.srv = httptest.NewUnstartedServer(nil)
	if len(valueOf(apiCfg.Peer.Secret)) > 0 && apiCfg.Peer.Self == "" {
		apiCfg.Peer.Self = e.srv.Listener.Addr().String()
	}
	if apiCfg.Registerer == nil {
		apiCfg.Registerer = e.reg
	}
	e.api = NewAPI(apiCfg, e.ctrl, log)
	e.srv.Config.Handler = e.api.Handler()
	e.srv.Start()
	t.Cleanup(e.srv.Close)
	return e
}

// getAuthed GETs url with the test token: reads want one.
func getAuthed(url string) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	return http.DefaultClient.Do(req)
}

// addr is the API's host:port.
func (e *apiEnv) addr() string { return e.srv.Listener.Addr().String() }

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met after 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// do sends a request and returns the status and body.
func (e *apiEnv) do(t *testing.T, method, path, token, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func svc(id string, replicas int, labels ...string) Service {
	l := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		l[labels[i]] = labels[i+1]
	}
	return Service{ID: id, Name: id, Labels: l, Replicas: replicas, Version: 10}
}

func TestAPIStatusCodes(t *testing.T) {
	global := svc("glob", 0, "orbiter", "true")
	global.Global = true
	tests := []struct {
		name       string
		method     string
		path       string
		token      string
		body       string
		wantCode   int
		wantInBody string
		// wantReplicas of service "web" afterwards, when not 0.
		wantReplicas int
	}{
		{name: "no token", method: "POST", path: "/v1/orbiter/handle/autoswarm/web/up", wantCode: 401, wantInBody: "missing bearer token", wantReplicas: 1},
		{name: "wrong token", method: "POST", path: "/v1/orbiter/handle/autoswarm/web/up", token: "nope", wantCode: 401, wantInBody: "invalid bearer token", wantReplicas: 1},
		{name: "no token on body form", method: "POST", path: "/handle/autoswarm/web", body: `{"direction":true}`, wantCode: 401},
		{name: "unknown direction", method: "POST", path: "/v1/orbiter/handle/autoswarm/web/sideways", token: testToken, wantCode: 400, wantInBody: "unknown direction", wantReplicas: 1},
		{name: "boolean in the path is unknown", method: "POST", path: "/v1/orbiter/handle/autoswarm/web/true", token: testToken, wantCode: 400, wantReplicas: 1},
		{name: "body without direction", method: "POST", path: "/v1/orbiter/handle/autoswarm/web", token: testToken, body: `{}`, wantCode: 400, wantInBody: "no direction", wantReplicas: 1},
		{name: "empty body", method: "POST", path: "/v1/orbiter/handle/autoswarm/web", token: testToken, wantCode: 400, wantInBody: "malformed JSON", wantReplicas: 1},
		{name: "malformed body", method: "POST", path: "/v1/orbiter/handle/autoswarm/web", token: testToken, body: `{"direction":`, wantCode: 400, wantReplicas: 1},
		{name: "body with a number", method: "POST", path: "/v1/orbiter/handle/autoswarm/web", token: testToken, body: `{"direction":1}`, wantCode: 400, wantReplicas: 1},
		{name: "body with string true", method: "POST", path: "/v1/orbiter/handle/autoswarm/web", token: testToken, body: `{"direction":"true"}`, wantCode: 400, wantReplicas: 1},
		{name: "unknown service", method: "POST", path: "/v1/orbiter/handle/autoswarm/nope/up", token: testToken, wantCode: 404, wantInBody: "not found"},
		{name: "service that did not opt in", method: "POST", path: "/v1/orbiter/handle/autoswarm/plain/up", token: testToken, wantCode: 404},
		{name: "orbiter=false", method: "POST", path: "/v1/orbiter/handle/autoswarm/off/up", token: testToken, wantCode: 404},
		{name: "unknown autoscaler", method: "POST", path: "/v1/orbiter/handle/infra/web/up", token: testToken, wantCode: 404, wantInBody: "autoswarm", wantReplicas: 1},
		{name: "global service", method: "POST", path: "/v1/orbiter/handle/autoswarm/glob/up", token: testToken, wantCode: 409, wantInBody: "global mode"},
		{name: "bad labels", method: "POST", path: "/v1/orbiter/handle/autoswarm/bad/up", token: testToken, wantCode: 422, wantInBody: `underlay.scale.max=\"lots\"`},
		{name: "down refused by default", method: "POST", path: "/v1/orbiter/handle/autoswarm/web/down", token: testToken, wantCode: 200, wantInBody: `"refused":true`, wantReplicas: 1},
		{name: "GET on a POST route", method: "GET", path: "/v1/orbiter/handle/autoswarm/web/up", wantCode: 405},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newAPIEnv(t, Config{},
				svc("web", 1, "orbiter", "true", LabelMax, "3"),
				svc("plain", 1),
				svc("off", 1, "orbiter", "false"),
				svc("bad", 1, "orbiter", "true", LabelMax, "lots"),
				global)
			code, body := e.do(t, tt.method, tt.path, tt.token, tt.body)
			if code != tt.wantCode {
				t.Errorf("status %d, want %d; body %s", code, tt.wantCode, body)
			}
			if !strings.Contains(body, tt.wantInBody) {
				t.Errorf("body %s does not contain %q", body, tt.wantInBody)
			}
			if tt.wantReplicas != 0 {
				if got := e.swarm.replicas("web"); got != tt.wantReplicas {
					t.Errorf("web has %d replicas, want %d", got, tt.wantReplicas)
				}
			}
		})
	}
}

func TestAPIScales(t *testing.T) {
	e := newAPIEnv(t, Config{}, svc("web", 1, "orbiter", "true", LabelMax, "3", LabelAllowDown, "true", LabelCooldownDown, "0", LabelStabilizationDown, "0"))
	steps := []struct {
		path, body string
		want       Decision
	}{
		{"/v1/orbiter/handle/autoswarm/web/up", "", Decision{From: 1, To: 2, Reason: ReasonScaled}},
		{"/handle/autoswarm/web", `{"direction": true}`, Decision{From: 2, To: 3, Reason: ReasonScaled}},
		{"/v1/orbiter/handle/autoswarm/web", `{"direction": "up"}`, Decision{From: 3, To: 3, Reason: ReasonAtMax, Refused: true}},
		{"/handle/autoswarm/web/down", "", Decision{From: 3, To: 2, Reason: ReasonScaled}},
		{"/v1/orbiter/handle/autoswarm/web", `{"direction": false}`, Decision{From: 2, To: 1, Reason: ReasonScaled}},
		{"/v1/orbiter/handle/autoswarm/web", `{"direction": "down"}`, Decision{From: 1, To: 1, Reason: ReasonAtMin, Refused: true}},
	}
	for i, s := range steps {
		code, body := e.do(t, "POST", s.path, testToken, s.body)
		if code != 200 {
			t.Fatalf("step %d: status %d: %s", i, code, body)
		}
		var rec Record
		if err := json.Unmarshal([]byte(body), &rec); err != nil {
			t.Fatal(err)
		}
		rec.Why = ""
		if diff := cmp.Diff(s.want, rec.Decision); diff != "" {
			t.Errorf("step %d (%s): decision (-want +got):\n%s", i, s.path, diff)
		}
		if got := e.swarm.replicas("web"); got != s.want.To {
			t.Errorf("step %d: %d replicas, want %d", i, got, s.want.To)
		}
	}
	if n := e.history.len(); n != len(steps) {
		t.Errorf("history has %d records, want %d", n, len(steps))
	}
	if got := counterValue(t, e.ctrl.metrics.decisions.WithLabelValues("scaled", "scaled")); got != 4 {
		t.Errorf("scaled decisions metric = %v, want 4", got)
	}
	if got := counterValue(t, e.ctrl.metrics.decisions.WithLabelValues("refused", "at_max")); got != 1 {
		t.Errorf("refused at_max metric = %v, want 1", got)
	}
}

func TestAPIListAndHealth(t *testing.T) {
	e := newAPIEnv(t, Config{}, svc("web", 2, "orbiter", "true"), svc("plain", 1))
	for _, path := range []string{"/v1/orbiter/autoscaler", "/autoscaler"} {
		code, body := e.do(t, "GET", path, testToken, "")
		var got struct{ Data []ServiceInfo }
		if err := json.Unmarshal([]byte(body), &got); err != nil || code != 200 {
			t.Fatalf("%s: %d %s %v", path, code, body, err)
		}
		if len(got.Data) != 1 || got.Data[0].Name != "autoswarm/web" || got.Data[0].Replicas != 2 {
			t.Errorf("%s: %+v, want only autoswarm/web with 2 replicas", path, got.Data)
		}
	}
	for _, path := range []string{"/v1/orbiter/health", "/health"} {
		code, body := e.do(t, "GET", path, "", "")
		if code != 200 || !strings.Contains(body, `"status":true`) {
			t.Errorf("%s: %d %s", path, code, body)
		}
	}
}

func TestAPIDryRun(t *testing.T) {
	e := newAPIEnv(t, Config{DryRun: true}, svc("web", 1, "orbiter", "true"))
	code, body := e.do(t, "POST", "/v1/orbiter/handle/autoswarm/web/up", testToken, "")
	if code != 200 || !strings.Contains(body, `"dry_run":true`) || !strings.Contains(body, `"to":2`) {
		t.Errorf("dry run: %d %s", code, body)
	}
	if got := e.swarm.replicas("web"); got != 1 {
		t.Errorf("dry run changed replicas to %d", got)
	}
}

func TestControllerBurstNeverExceedsMax(t *testing.T) {
	e := newAPIEnv(t, Config{},
		svc("fast", 1, "orbiter", "true", LabelMax, "4"),
		svc("cool", 1, "orbiter", "true", LabelMax, "4", "orbiter.cooldown", "3600"))
	for _, name := range []string{"fast", "cool"} {
		var wg sync.WaitGroup
		var mu sync.Mutex
		scaled := 0
		for range 50 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rec, err := e.ctrl.Handle(context.Background(), Request{Autoscaler: AutoswarmName, Service: name, Direction: Up})
				if err != nil {
					t.Error(err)
					return
				}
				if !rec.Refused {
					mu.Lock()
					scaled++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		want := map[string][2]int{"fast": {3, 4}, "cool": {1, 2}}[name]
		if scaled != want[0] || e.swarm.replicas(name) != want[1] {
			t.Errorf("%s: %d scaled, %d replicas; want %d and %d", name, scaled, e.swarm.replicas(name), want[0], want[1])
		}
	}
}

func TestControllerRetriesVersionConflict(t *testing.T) {
	e := newAPIEnv(t, Config{}, svc("web", 1, "orbiter", "true"))
	e.swarm.conflicts = 2
	rec, err := e.ctrl.Handle(context.Background(), Request{Autoscaler: AutoswarmName, Service: "web", Direction: Up})
	if err != nil || rec.To != 2 || e.swarm.replicas("web") != 2 {
		t.Fatalf("rec %+v err %v replicas %d", rec, err, e.swarm.replicas("web"))
	}
	e.swarm.conflicts = 100
	if _, err := e.ctrl.Handle(context.Background(), Request{Autoscaler: AutoswarmName, Service: "web", Direction: Up}); err == nil || statusOf(err) != 503 {
		t.Errorf("endless conflicts: err %v, want a 503 error", err)
	}
}

func TestControllerFollowsEvents(t *testing.T) {
	e := newAPIEnv(t, Config{})
	names := func() []string {
		var out []string
		for _, s := range e.ctrl.Services() {
			out = append(out, s.Name)
		}
		return out
	}
	e.swarm.set(svc("a", 1, "orbiter", "true"), "create")
	e.swarm.set(svc("b", 1), "create")
	waitFor(t, func() bool { return cmp.Equal(names(), []string{"autoswarm/a"}) })
	e.swarm.set(svc("b", 1, LabelEnabled, "true"), "update")
	waitFor(t, func() bool { return cmp.Equal(names(), []string{"autoswarm/a", "autoswarm/b"}) })
	e.swarm.set(svc("a", 1, "orbiter", "false"), "update")
	waitFor(t, func() bool { return cmp.Equal(names(), []string{"autoswarm/b"}) })
	e.swarm.set(svc("b", 1), "remove")
	waitFor(t, func() bool { return len(names()) == 0 })
}

func TestControllerResyncsOnReconnect(t *testing.T) {
	e := newAPIEnv(t, Config{})
	e.swarm.setQuietly(svc("lost", 1, "orbiter", "true"))
	e.swarm.errs <- errors.New("docker restarted")
	waitFor(t, func() bool { return len(e.ctrl.Services()) == 1 })
	if got := counterValue(t, e.ctrl.metrics.reconnects); got != 1 {
		t.Errorf("reconnects = %v, want 1", got)
	}
}

func TestAPIEventsStream(t *testing.T) {
	e := newAPIEnv(t, Config{}, svc("web", 1, "orbiter", "true", LabelMax, "2"))
	const readers = 3
	got := make([][]Record, readers)
	var wg sync.WaitGroup
	for i := range readers {
		path := []string{"/v1/orbiter/events", "/events"}[i%2]
		resp, err := getAuthed(e.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
			t.Fatalf("content type %q", ct)
		}
		t.Cleanup(func() { resp.Body.Close() })
		wg.Add(1)
		go func() {
			defer wg.Done()
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() && len(got[i]) < 3 {
				if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
					var r Record
					if err := json.Unmarshal([]byte(data), &r); err != nil {
						t.Error(err)
						return
					}
					got[i] = append(got[i], r)
				}
			}
		}()
	}
	waitFor(t, func() bool { return e.ctrl.Broadcaster().Subscribers() == readers })
	for _, dir := range []string{"up", "up", "down"} {
		if code, body := e.do(t, "POST", "/v1/orbiter/handle/autoswarm/web/"+dir, testToken, ""); code != 200 {
			t.Fatalf("%s: %d %s", dir, code, body)
		}
	}
	wg.Wait()
	for i, recs := range got {
		var reasons []Reason
		for _, r := range recs {
			reasons = append(reasons, r.Reason)
		}
		want := []Reason{ReasonScaled, ReasonAtMax, ReasonDownDisabled}
		if diff := cmp.Diff(want, reasons); diff != "" {
			t.Errorf("reader %d reasons (-want +got):\n%s", i, diff)
		}
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestDirectionCaseRule: every route takes the same directions — "up" and
// "down" in any letter case, nothing else (no blanks, no "true"/"false"
// strings); Orbiter's booleans only as JSON true and false in its body form.
func TestDirectionCaseRule(t *testing.T) {
	e := newAPIEnv(t, Config{}, svc("web", 1, "orbiter", "true", LabelMax, "100", LabelAllowDown, "true",
		LabelCooldownDown, "0", LabelStabilizationDown, "0", LabelMin, "0"))
	type form struct {
		name string
		send func(dir string) (int, string)
	}
	forms := []form{
		{"orbiter path", func(d string) (int, string) {
			return e.do(t, "POST", "/v1/orbiter/handle/autoswarm/web/"+url.PathEscape(d), testToken, "")
		}},
		{"alertmanager path", func(d string) (int, string) {
			return e.do(t, "POST", "/v1/underlay/alertmanager/web/"+url.PathEscape(d), testToken, amBody(firing("p"+d)))
		}},
		{"orbiter body", func(d string) (int, string) {
			b, _ := json.Marshal(map[string]string{"direction": d})
			return e.do(t, "POST", "/v1/orbiter/handle/autoswarm/web", testToken, string(b))
		}},
		{"native body", func(d string) (int, string) {
			b, _ := json.Marshal(map[string]string{"direction": d})
			return e.do(t, "POST", "/v1/underlay/services/web/scale", testToken, string(b))
		}},
		{"alert label", func(d string) (int, string) {
			code, rs := e.webhookResults(t, "/v1/underlay/alertmanager", amBody(firing("l"+d, "service", "web", "direction", d)))
			if len(rs) == 1 && rs[0].Result == "error" {
				return 400, rs[0].Reason
			}
			return code, ""
		}},
	}
	good := []string{"up", "UP", "Up", "down", "DOWN", "dOwN"}
	bad := []string{"true", "TRUE", "True", "false", "False", " up", "up ", "up\n", "sideways", "1", "0", "ｕｐ", "uр" /* Cyrillic r */}
	for _, f := range forms {
		for _, d := range good {
			if code, body := f.send(d); code != 200 {
				t.Errorf("%s %q: %d %s, want 200", f.name, d, code, body)
			}
		}
		for _, d := range bad {
			if code, body := f.send(d); code != 400 || !strings.Contains(body, "unknown direction") {
				t.Errorf("%s %q: %d %s, want 400 unknown direction", f.name, d, code, body)
			}
		}
	}
	for _, body := range []string{`{"direction":true}`, `{"direction":false}`} {
		if code, b := e.do(t, "POST", "/v1/orbiter/handle/autoswarm/web", testToken, body); code != 200 {
			t.Errorf("orbiter body %s: %d %s, want 200", body, code, b)
		}
	}
	if code, b := e.do(t, "POST", "/v1/underlay/services/web/scale", testToken, `{"direction":true}`); code != 400 {
		t.Errorf("native body with a boolean: %d %s, want 400", code, b)
	}
}

// TestMuxRefusalsAreJSON: a path no route takes (even one the router
// cannot split, such as a direction of "%2F") and a method a route does
// not take are answered in JSON like everything else — 404, and 405 with
// Allow. Found by FuzzOrbiterBody (testdata/fuzz/FuzzOrbiterBody/bdcde056fcc2430f):
// net/http's plain-text "404 page not found".
func TestMuxRefusalsAreJSON(t *testing.T) {
	e := newAPIEnv(t, Config{}, svc("web", 1, "orbiter", "true"))
	for _, c := range []struct {
		method, path string
		want         int
	}{
		{"POST", "/v1/orbiter/handle/autoswarm/web/%2F", 404},
		{"GET", "/v1/underlay/nope", 404},
		{"DELETE", "/v1/orbiter/autoscaler", 405},
	} {
		req, _ := http.NewRequest(c.method, e.srv.URL+c.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var body errorBody
		if resp.StatusCode != c.want || json.Unmarshal(b, &body) != nil || body.Error == "" || resp.Header.Get("Content-Type") != jsonType {
			t.Errorf("%s %s: %d %q, want %d with a JSON error", c.method, c.path, resp.StatusCode, b, c.want)
		}
		if c.want == 405 && resp.Header.Get("Allow") == "" {
			t.Errorf("%s %s: 405 without Allow", c.method, c.path)
		}
	}
}

// TestScaleBodiesNameEachFieldOnce: a body naming its direction or its
// replicas twice — the same key repeated, or in another letter case, which
// encoding/json matches too — is refused naming the key, not decided on
// the last one: a proxy or log that reads the first sees another request
// than the one scaled. The native body takes its keys as written only.
func TestScaleBodiesNameEachFieldOnce(t *testing.T) {
	e := newAPIEnv(t, Config{}, svc("web", 2, "orbiter", "true", LabelMax, "10", LabelAllowDown, "true",
		LabelCooldownDown, "0", LabelStabilizationDown, "0"))
	const native, orbiter = "/v1/underlay/services/web/scale", "/v1/orbiter/handle/autoswarm/web"
	for _, c := range []struct {
		path, body, want string
	}{
		{native, `{"direction":"up","direction":"down"}`, `\"direction\" given twice`},
		{native, `{"direction":"up","Direction":"down"}`, `\"Direction\"`},
		{native, `{"Direction":"down"}`, `\"Direction\"`},
		{native, `{"replicas":3,"replicas":1}`, `\"replicas\" given twice`},
		{native, `{"replicaſ":1}`, `\"replicaſ\"`}, // U+017F folds to s in encoding/json
		{orbiter, `{"direction":true,"direction":false}`, `\"direction\" given twice`},
		{orbiter, `{"direction":"up","DIRECTION":"down"}`, `\"DIRECTION\"`},
	} {
		code, body := e.do(t, "POST", c.path, testToken, c.body)
		if code != 400 || !strings.Contains(body, c.want) {
			t.Errorf("%s %s: %d %s, want 400 naming %s", c.path, c.body, code, body, c.want)
		}
	}
	if got := e.swarm.replicas("web"); got != 2 {
		t.Errorf("web has %d replicas after ambiguous bodies, want 2 (unchanged)", got)
	}
	// Orbiter's body keeps encoding/json's rule for a key given once.
	if code, body := e.do(t, "POST", orbiter, testToken, `{"Direction":true}`); code != 200 {
		t.Errorf("orbiter body {\"Direction\":true}: %d %s, want 200", code, body)
	}
}

// TestNegativeReplicasNamed: a replica count below zero is a 400 that
// says what is wrong with it, not an "unknown direction" the body never
// gave.
func TestNegativeReplicasNamed(t *testing.T) {
	e := newAPIEnv(t, Config{}, svc("web", 2, "orbiter", "true"))
	code, body := e.do(t, "POST", "/v1/underlay/services/web/scale", testToken, `{"replicas":-1}`)
	if code != 400 || !strings.Contains(body, "replicas -1") || strings.Contains(body, "direction") {
		t.Errorf("replicas -1: %d %s, want 400 naming the count, not a direction", code, body)
	}
}

// TestNullScaleFieldsNamed: {"replicas":null} decoded as no replicas and
// was answered `unknown direction: ""`, a direction the body never gave;
// so were {"direction":null} and {}. Each is a 400 that names what is
// wrong, and nothing scales; a null beside the other field is as if
// absent.
func TestNullScaleFieldsNamed(t *testing.T) {
	e := newAPIEnv(t, Config{}, svc("web", 2, "orbiter", "true", LabelMax, "10"))
	const native = "/v1/underlay/services/web/scale"
	for _, c := range []struct{ body, want string }{
		{`{"replicas":null}`, "replicas is null"},
		{`{"replicas": null }`, "replicas is null"},
		{`{"direction":null}`, "direction is null"},
		{`{"direction":null,"replicas":null}`, "replicas is null"},
		{`{}`, "no direction or replicas"},
	} {
		code, body := e.do(t, "POST", native, testToken, c.body)
		if code != 400 || !strings.Contains(body, c.want) || strings.Contains(body, "unknown direction") {
			t.Errorf("%s: %d %s, want 400 saying %q", c.body, code, body, c.want)
		}
	}
	if got := e.swarm.replicas("web"); got != 2 {
		t.Fatalf("web has %d replicas after null bodies, want 2 (unchanged)", got)
	}
	if code, body := e.do(t, "POST", native, testToken, `{"direction":"up","replicas":null}`); code != 200 {
		t.Errorf(`{"direction":"up","replicas":null}: %d %s, want 200`, code, body)
	}
	if code, body := e.do(t, "POST", native, testToken, `{"direction":null,"replicas":4}`); code != 200 {
		t.Errorf(`{"direction":null,"replicas":4}: %d %s, want 200`, code, body)
	}
	if got := e.swarm.replicas("web"); got != 4 {
		t.Errorf("web has %d replicas, want 4", got)
	}
}
