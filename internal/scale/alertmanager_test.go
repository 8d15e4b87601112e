package scale

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// alertStart is the startsAt of the tests' alerts: an hour ago, within
// AlertMaxAge of the controllers' clocks (a firing older asks for nothing).
var alertStart = time.Now().UTC().Truncate(time.Second).Add(-time.Hour)

// amAlert is one alert of a test webhook.
type amAlert struct {
	status, fingerprint string
	labels              map[string]string
}

// amBody is an Alertmanager version 4 webhook body.
func amBody(alerts ...amAlert) string {
	type alert struct {
		Status      string            `json:"status"`
		Labels      map[string]string `json:"labels"`
		StartsAt    time.Time         `json:"startsAt"`
		EndsAt      time.Time         `json:"endsAt"`
		Fingerprint string            `json:"fingerprint"`
	}
	msg := struct {
		Version  string  `json:"version"`
		Status   string  `json:"status"`
		Receiver string  `json:"receiver"`
		Alerts   []alert `json:"alerts"`
	}{Version: "4", Status: "firing", Receiver: "underlay"}
	for _, a := range alerts {
		msg.Alerts = append(msg.Alerts, alert{Status: a.status, Labels: a.labels, StartsAt: alertStart, Fingerprint: a.fingerprint})
	}
	b, _ := json.Marshal(msg)
	return string(b)
}

func firing(fp string, labels ...string) amAlert {
	l := map[string]string{"alertname": "HighLoad"}
	for i := 0; i+1 < len(labels); i += 2 {
		l[labels[i]] = labels[i+1]
	}
	return amAlert{status: "firing", fingerprint: fp, labels: l}
}

func TestParseAlertmanager(t *testing.T) {
	tests := []struct {
		name, body, wantErr string
	}{
		{name: "malformed", body: `{`, wantErr: "malformed JSON"},
		{name: "old version", body: `{"version":"3","alerts":[]}`, wantErr: `version "3"`},
		{name: "no alerts", body: `{"version":"4"}`, wantErr: "no alerts list"},
		// What follows the notification would be ignored: a second one,
		// or the rest of a body cut and pasted together.
		{name: "a second notification", body: amBody(firing("a", "service", "web")) + amBody(firing("b", "service", "db")), wantErr: "after the JSON object"},
		{name: "data after", body: amBody(firing("a", "service", "web")) + ` x`, wantErr: "after the JSON object"},
		{name: "blanks after", body: amBody(firing("a", "service", "web")) + " \n"},
		{name: "good", body: amBody(firing("a", "service", "web"))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseAlertmanager(strings.NewReader(tt.body))
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestAlertActions(t *testing.T) {
	msg, err := ParseAlertmanager(strings.NewReader(amBody(
		firing("f1", "service", "web", "direction", "up"),
		firing("f2", "underlay_service", "api", "service", "ignored", "scale", "DOWN"),
		amAlert{status: "resolved", fingerprint: "f3", labels: map[string]string{"service": "web", "direction": "up"}},
		firing("f1", "service", "web", "direction", "up"),
		firing("f4", "direction", "up"),
		firing("f5", "service", "web"),
		firing("f6", "service", "web", "direction", "sideways"),
	)))
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		Service   string
		Direction Direction
		Skip      string
	}
	var got []row
	for _, a := range AlertActions(msg, "", "") {
		skip := a.Skip
		if i := strings.Index(skip, ":"); i > 0 {
			skip = skip[:i]
		}
		got = append(got, row{a.Service, a.Direction, skip})
	}
	want := []row{
		{"web", Up, ""},
		{"api", Down, ""},
		{"web", "", `alert is "resolved"`},
		{"web", "", "duplicate of an earlier alert in this notification"},
		{"", "", "no service"},
		{"web", "", "no direction"},
		{"web", "", "unknown direction"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("AlertActions (-want +got):\n%s", diff)
	}
	// The route wins over the labels.
	acts := AlertActions(msg, "routed", Down)
	if acts[0].Service != "routed" || acts[0].Direction != Down || acts[4].Skip != "" {
		t.Errorf("with route: %+v, %+v; want routed/down for every firing alert", acts[0], acts[4])
	}
}

// webhookResults posts body to path and decodes the per-alert results.
func (e *apiEnv) webhookResults(t testing.TB, path, body string, hdr ...string) (int, []AlertResult) {
	t.Helper()
	req, _ := http.NewRequest("POST", e.srv.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testToken)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ans struct {
		Results []AlertResult `json:"results"`
		Error   string        `json:"error"`
	}
	json.NewDecoder(resp.Body).Decode(&ans)
	return resp.StatusCode, ans.Results
}

func resultsOf(rs []AlertResult) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Service+" "+r.Result)
	}
	return out
}

func TestWebhookScalesOncePerFiring(t *testing.T) {
	alog := &memAlertLog{seen: map[string]bool{}}
	e := newAPIEnv(t, Config{AlertLog: alog},
		svc("web", 1, "orbiter", "true", LabelMax, "5"), svc("api", 1, "orbiter", "true", LabelMax, "1"))
	body := amBody(firing("f1", "service", "web", "direction", "up"), firing("f2", "service", "api", "direction", "up"))
	steps := []struct {
		path string
		body string
		want []string
	}{
		{"/v1/underlay/alertmanager", body, []string{"web scaled", "api refused"}},
		// Alertmanager re-sends: web has scaled for this firing; api may still try.
		{"/alertmanager", body, []string{"web duplicate", "api refused"}},
		// A resolved notification never scales.
		{"/v1/underlay/alertmanager", amBody(amAlert{status: "resolved", fingerprint: "f1", labels: map[string]string{"service": "web", "direction": "up"}}), []string{"web skipped"}},
		// Orbiter's route, pointed at by an Alertmanager: the route's service and direction win.
		{"/v1/orbiter/handle/autoswarm/web/up", amBody(firing("f3", "service", "api", "direction", "down")), []string{"web scaled"}},
		{"/v1/orbiter/handle/autoswarm/web/up", amBody(firing("f3")), []string{"web duplicate"}},
		{"/v1/underlay/alertmanager/web", amBody(firing("f4", "direction", "up")), []string{"web scaled"}},
		{"/v1/underlay/alertmanager", amBody(firing("f5", "service", "nope", "direction", "up")), []string{"nope error"}},
	}
	for i, s := range steps {
		code, rs := e.webhookResults(t, s.path, s.body)
		if code != 200 {
			t.Fatalf("step %d: status %d", i, code)
		}
		if diff := cmp.Diff(s.want, resultsOf(rs)); diff != "" {
			t.Errorf("step %d (%s): results (-want +got):\n%s", i, s.path, diff)
		}
	}
	if got := e.swarm.replicas("web"); got != 4 {
		t.Errorf("web has %d replicas, want 4 (three firings)", got)
	}
	if len(alog.seen) != 3 {
		t.Errorf("alert log holds %d firings, want the 3 that scaled", len(alog.seen))
	}

	// A restarted controller sharing the alert log does not scale again.
	e2 := newAPIEnv(t, Config{AlertLog: alog}, svc("web", 4, "orbiter", "true", LabelMax, "5"))
	if _, rs := e2.webhookResults(t, "/alertmanager", body); rs[0].Result != "duplicate" || e2.swarm.replicas("web") != 4 {
		t.Errorf("after a restart: %v, %d replicas; want a duplicate and 4", resultsOf(rs), e2.swarm.replicas("web"))
	}
}

func TestWebhookConcurrentResends(t *testing.T) {
	e := newAPIEnv(t, Config{}, svc("web", 1, "orbiter", "true", LabelMax, "10"))
	body := amBody(firing("f1", "service", "web", "direction", "up"))
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() { defer wg.Done(); e.webhookResults(t, "/alertmanager", body) }()
	}
	wg.Wait()
	if got := e.swarm.replicas("web"); got != 2 {
		t.Errorf("web has %d replicas after 20 concurrent copies of one firing, want 2", got)
	}
}

func TestWebhookSignatureAndErrors(t *testing.T) {
	secret := []byte("hush")
	alog := &memAlertLog{seen: map[string]bool{}}
	e := newAPIEnvWith(t, Config{AlertLog: alog}, APIConfig{WebhookSecret: StaticSecret(secret)}, svc("web", 1, "orbiter", "true"))
	body := amBody(firing("f1", "service", "web", "direction", "up"))
	if code, _ := e.webhookResults(t, "/alertmanager", body); code != http.StatusUnauthorized {
		t.Errorf("unsigned: %d, want 401", code)
	}
	if code, _ := e.webhookResults(t, "/alertmanager", body, signed([]byte("wrong"), body, time.Now())...); code != http.StatusUnauthorized {
		t.Errorf("wrong signature: %d, want 401", code)
	}
	if code, _ := e.do(t, "POST", "/alertmanager", "", body); code != http.StatusUnauthorized {
		t.Errorf("no token: %d, want 401", code)
	}
	if code, _ := e.webhookResults(t, "/alertmanager", `{"version":"4"}`, signed(secret, `{"version":"4"}`, time.Now())...); code != http.StatusBadRequest {
		t.Errorf("no alerts: %d, want 400", code)
	}
	// The alert log unreachable: 503, so that Alertmanager retries; nothing scaled.
	alog.err = errors.New("consul down")
	// Each attempt is signed anew, at its own second, as a sender
	// retrying must (a signature is accepted once).
	if code, rs := e.webhookResults(t, "/alertmanager", body, signed(secret, body, time.Now().Add(-time.Second))...); code != http.StatusServiceUnavailable || e.swarm.replicas("web") != 1 {
		t.Errorf("alert log down: %d %v, %d replicas; want 503 and 1", code, resultsOf(rs), e.swarm.replicas("web"))
	}
	alog.err = nil
	if code, rs := e.webhookResults(t, "/alertmanager", body, signed(secret, body, time.Now())...); code != 200 || rs[0].Result != "scaled" {
		t.Errorf("signed: %d %v, want 200 scaled", code, resultsOf(rs))
	}
}

// memAlertLog is an AlertLog in memory.
type memAlertLog struct {
	mu   sync.Mutex
	seen map[string]bool
	err  error
	// lookups counts Seen calls, each a KV read in Consul.
	lookups int
}

func (l *memAlertLog) Seen(_ context.Context, key string) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lookups++
	return l.seen[key], l.err
}

func (l *memAlertLog) Mark(_ context.Context, key, _ string, _ time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return l.err
	}
	l.seen[key] = true
	return nil
}

// fakeLeadership is a Leadership the test flips.
type fakeLeadership struct {
	mu      sync.Mutex
	leading bool
	term    uint64
	leader  string
}

func (f *fakeLeadership) Leading() (uint64, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.term, f.leading
}

func (f *fakeLeadership) Leader(context.Context) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.leader, nil
}

func (f *fakeLeadership) set(leading bool, leader string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if leading && !f.leading {
		f.term++
	}
	f.leading, f.leader = leading, leader
}

func TestFollowerRefusesNamingTheLeader(t *testing.T) {
	l := &fakeLeadership{leader: "10.0.0.7:8000"}
	e := newAPIEnv(t, Config{Leadership: l}, svc("web", 1, "orbiter", "true"))
	req, _ := http.NewRequest("POST", e.srv.URL+"/v1/underlay/services/web/scale", strings.NewReader(`{"direction":"up"}`))
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get(LeaderHeader) != "10.0.0.7:8000" {
		t.Errorf("follower: %d, leader header %q; want 503 naming 10.0.0.7:8000", resp.StatusCode, resp.Header.Get(LeaderHeader))
	}
	if code, rs := e.webhookResults(t, "/alertmanager", amBody(firing("f1", "service", "web", "direction", "up"))); code != 503 || rs[0].Result != "error" {
		t.Errorf("follower webhook: %d %v, want 503", code, resultsOf(rs))
	}
	l.set(true, "self")
	if code, body := e.do(t, "POST", "/v1/underlay/services/web/scale", testToken, `{"replicas": 3}`); code != 200 || e.swarm.replicas("web") != 3 {
		t.Errorf("leader: %d %s, %d replicas; want 200 and 3", code, body, e.swarm.replicas("web"))
	}
	code, body := e.do(t, "GET", "/v1/underlay/leader", testToken, "")
	if code != 200 || !strings.Contains(body, `"leading":true`) {
		t.Errorf("leader route: %d %s", code, body)
	}
}

func TestNativeScaleRoute(t *testing.T) {
	e := newAPIEnv(t, Config{}, svc("web", 2, "orbiter", "true", LabelAllowDown, "true", LabelCooldownDown, "0", LabelStabilizationDown, "0"))
	steps := []struct {
		body     string
		wantCode int
		wantTo   int
	}{
		{`{"direction":"up"}`, 200, 3},
		{`{"replicas": 7}`, 200, 7},
		{`{"replicas": 1}`, 200, 1},
		{`{"replicas": -1}`, 400, 1},
		{`{"direction":"up","replicas":2}`, 400, 1},
		{`{"direction":"sideways"}`, 400, 1},
		{`{`, 400, 1},
	}
	for i, s := range steps {
		code, body := e.do(t, "POST", "/v1/underlay/services/web/scale", testToken, s.body)
		if code != s.wantCode || e.swarm.replicas("web") != s.wantTo {
			t.Errorf("step %d %s: %d %s, %d replicas; want %d and %d", i, s.body, code, body, e.swarm.replicas("web"), s.wantCode, s.wantTo)
		}
	}
	if code, _ := e.do(t, "POST", "/v1/underlay/services/web/scale", "", `{"direction":"up"}`); code != 401 {
		t.Errorf("no token: %d, want 401", code)
	}
	if code, body := e.do(t, "GET", "/v1/underlay/services/web/history", testToken, ""); code != http.StatusNotImplemented {
		t.Errorf("history without a lister: %d %s", code, body)
	}
}

// BenchmarkWebhook is the latency of one Alertmanager notification through
// the API to a scale-up, Docker excluded (a fake swarm, no history).
func BenchmarkWebhook(b *testing.B) {
	e := newAPIEnv(b, Config{}, svc("web", 1, "orbiter", "true", LabelMax, strconv.Itoa(MaxReplicas)))
	b.ResetTimer()
	for i := range b.N {
		code, rs := e.webhookResults(b, "/alertmanager", amBody(firing(fmt.Sprintf("f%d", i), "service", "web", "direction", "up")))
		if code != 200 || rs[0].Result != "scaled" {
			b.Fatalf("notification %d: %d %v", i, code, resultsOf(rs))
		}
	}
}

// TestWebhookAlertCap: a notification of more than 1,000 alerts is
// refused whole, 413 naming the count and the bound, and acts on nothing;
// one of 1,000 is served, one result per alert, one step. Before, any
// count the 4 MiB body holds was decoded and acted on alert by alert
// under the webhook lock.
func TestWebhookAlertCap(t *testing.T) {
	e := newAPIEnvWith(t, Config{}, APIConfig{}, svc("web", 1, "orbiter", "true", LabelMax, "100"))
	alerts := func(n int) string {
		as := make([]amAlert, n)
		for i := range as {
			as[i] = firing(fmt.Sprintf("fp%d", i), "service", "web", "direction", "up")
		}
		return amBody(as...)
	}
	code, body := e.send(t, "POST", "/v1/underlay/alertmanager", alerts(1001), "Authorization", "Bearer "+testToken)
	if code != 413 || !strings.Contains(body, "1001 alerts, at most 1000") || !strings.Contains(body, "max_alerts") {
		t.Errorf("1001 alerts: %d %.300s, want 413 naming the count, the bound and max_alerts", code, body)
	}
	if got := e.swarm.replicas("web"); got != 1 {
		t.Errorf("a refused notification scaled web to %d", got)
	}
	code, rs := e.webhookResults(t, "/v1/underlay/alertmanager", alerts(1000))
	if code != 200 || len(rs) != 1000 || e.swarm.replicas("web") != 2 {
		t.Errorf("1000 alerts: %d, %d results, web at %d; want 200, 1000 results, 2 replicas", code, len(rs), e.swarm.replicas("web"))
	}
	// Orbiter's routes take Alertmanager's bodies too.
	code, body = e.send(t, "POST", "/v1/orbiter/handle/autoswarm/web/up", alerts(1001), "Authorization", "Bearer "+testToken)
	if code != 413 || !strings.Contains(body, "1001 alerts") {
		t.Errorf("1001 alerts on Orbiter's route: %d %.300s, want 413", code, body)
	}
}

// TestParseAlertmanagerCount: a list past MaxAlerts is refused with
// ErrTooManyAlerts (and ErrBadWebhook), naming its length, however small
// its alerts.
func TestParseAlertmanagerCount(t *testing.T) {
	body := `{"version":"4","alerts":[{}` + strings.Repeat(`,{}`, 99_999) + `]}`
	_, err := ParseAlertmanager(strings.NewReader(body))
	if !errors.Is(err, ErrTooManyAlerts) || !errors.Is(err, ErrBadWebhook) || !strings.Contains(err.Error(), "100000 alerts, at most 1000") {
		t.Errorf("100000 empty alerts: %v", err)
	}
	for _, bad := range []string{`{"version":"4","alerts":{}}`, `{"version":"4","alerts":[1]}`, `{"version":"4","alerts":[{}` + strings.Repeat(`,{}`, 1000) + `,1]}`} {
		if _, err := ParseAlertmanager(strings.NewReader(bad)); !errors.Is(err, ErrBadWebhook) {
			t.Errorf("%.40s…: %v, want ErrBadWebhook", bad, err)
		}
	}
	msg, err := ParseAlertmanager(strings.NewReader(`{"version":"4","alerts":[]}`))
	if err != nil || msg.Alerts == nil || len(msg.Alerts) != 0 {
		t.Errorf("empty list: %v %v, want an empty, non-nil list", msg.Alerts, err)
	}
}

// TestWebhookUnknownServicesCostNoLookup: alerts naming services control
// does not manage are answered without reading the alert log (a Consul KV
// read each): a notification of 1,000 made-up services costs no read.
// Before, each cost one.
func TestWebhookUnknownServicesCostNoLookup(t *testing.T) {
	alog := &memAlertLog{seen: map[string]bool{}}
	e := newAPIEnvWith(t, Config{AlertLog: alog}, APIConfig{}, svc("web", 1, "orbiter", "true"))
	as := make([]amAlert, 1000)
	for i := range as {
		as[i] = firing(fmt.Sprintf("fp%d", i), "service", fmt.Sprintf("made-up-%d", i), "direction", "up")
	}
	code, rs := e.webhookResults(t, "/v1/underlay/alertmanager", amBody(as...))
	if code != 200 || len(rs) != 1000 || rs[0].Result != "error" || !strings.Contains(rs[0].Reason, "not found") {
		t.Fatalf("1000 unknown services: %d, %d results, first %+v", code, len(rs), rs[0])
	}
	alog.mu.Lock()
	n := alog.lookups
	alog.mu.Unlock()
	if n != 0 {
		t.Errorf("%d alert log reads for services control does not manage, want 0", n)
	}
	if code, rs := e.webhookResults(t, "/v1/underlay/alertmanager", amBody(firing("w", "service", "web", "direction", "up"))); code != 200 || rs[0].Result != "scaled" {
		t.Errorf("a known service: %d %v, want scaled", code, resultsOf(rs))
	}
}

// TestNativeScaleBodyIsStrict: the native route's body is a direction or
// a replica count, and nothing else: a field it does not know is refused,
// named, rather than ignored — {"direction":"up","dry_run":true} scaled
// for real, and {"direction":"up","replica":2} (a typo) stepped up
// instead of setting 2.
func TestNativeScaleBodyIsStrict(t *testing.T) {
	e := newAPIEnv(t, Config{}, svc("web", 1, "orbiter", "true"))
	for _, c := range []struct{ body, field string }{
		{`{"direction":"up","dry_run":true}`, "dry_run"},
		{`{"direction":"up","replica":2}`, "replica"},
	} {
		code, body := e.do(t, "POST", "/v1/underlay/services/web/scale", testToken, c.body)
		if code != 400 || !strings.Contains(body, c.field) || e.swarm.replicas("web") != 1 {
			t.Errorf("%s: %d %s, %d replicas; want 400 naming %s, nothing scaled", c.body, code, body, e.swarm.replicas("web"), c.field)
		}
	}
}

// TestWebhookLongFingerprint: Alertmanager's fingerprints are 16 hex
// digits. One of megabytes was kept as the firing's key, in memory for a
// day (and in the alert log's value, and in every log line naming it) each
// time it scaled: the alert is now refused, naming the length, and no
// copy of it is kept or sent back.
func TestWebhookLongFingerprint(t *testing.T) {
	alog := &memAlertLog{seen: map[string]bool{}}
	e := newAPIEnv(t, Config{AlertLog: alog}, svc("web", 1, "orbiter", "true", LabelMax, "5"))
	long := strings.Repeat("f", 1<<20)
	code, rs := e.webhookResults(t, "/alertmanager", amBody(firing(long, "service", "web", "direction", "up")))
	if code != 200 || len(rs) != 1 {
		t.Fatalf("status %d, %d results; want 200 and one result", code, len(rs))
	}
	r := rs[0]
	if r.Result != "error" || !strings.Contains(r.Reason, fmt.Sprintf("fingerprint of %d bytes", len(long))) {
		t.Errorf("a fingerprint of %d bytes: %s, %.200q; want error naming its length", len(long), r.Result, r.Reason)
	}
	if len(r.Key)+len(r.Fingerprint) > 2*maxFingerprint+100 {
		t.Errorf("the answer sends back %d bytes of the fingerprint", len(r.Key)+len(r.Fingerprint))
	}
	if got := e.swarm.replicas("web"); got != 1 {
		t.Errorf("web scaled to %d on an alert with a fingerprint of %d bytes", got, len(long))
	}
	e.ctrl.alerts.lock(context.Background())
	n := len(e.ctrl.alerts.done)
	e.ctrl.alerts.unlock()
	if n != 0 || len(alog.seen) != 0 {
		t.Errorf("%d firings remembered, %d in the alert log; want none", n, len(alog.seen))
	}
}

// TestAlertMemoryBounded: in dry-run every firing alert would scale, and
// each was remembered in memory for a day: a sender of notifications of
// 1,000 new firings grew the set by 1,000 a request. With an alert log,
// which answers for what memory forgets, the set is bounded; a re-send of
// a forgotten firing is still a duplicate.
func TestAlertMemoryBounded(t *testing.T) {
	alog := &memAlertLog{seen: map[string]bool{}}
	e := newAPIEnv(t, Config{AlertLog: alog, DryRun: true}, svc("web", 1, "orbiter", "true", LabelMax, "5"))
	e.ctrl.alerts.max = 100
	notification := func(round int) AlertmanagerMessage {
		msg := AlertmanagerMessage{Version: "4"}
		for i := range MaxAlerts {
			msg.Alerts = append(msg.Alerts, Alert{Status: "firing", Fingerprint: fmt.Sprintf("r%di%d", round, i), StartsAt: alertStart,
				Labels: map[string]string{"service": "web", "direction": "up"}})
		}
		return msg
	}
	for round := range 5 {
		e.ctrl.HandleAlerts(context.Background(), notification(round), "", "", "test")
		e.ctrl.alerts.lock(context.Background())
		n := len(e.ctrl.alerts.done)
		e.ctrl.alerts.unlock()
		if n > 100 {
			t.Fatalf("after %d notifications of %d new firings: %d remembered in memory, want at most 100", round+1, MaxAlerts, n)
		}
	}
	rs := e.ctrl.HandleAlerts(context.Background(), notification(0), "", "", "test")
	if rs[0].Result != "duplicate" {
		t.Errorf("a re-send of a firing memory forgot: %s (%s), want duplicate", rs[0].Result, rs[0].Reason)
	}
}

// TestWebhookStartOutOfRange: a startsAt with an offset that moves it out
// of years 0 to 9999 in UTC scaled, but the answer could not be encoded:
// the sender got 200 with no body, no result of any alert. Such an alert
// is now an error naming its startsAt.
func TestWebhookStartOutOfRange(t *testing.T) {
	e := newAPIEnv(t, Config{}, svc("web", 1, "orbiter", "true", LabelMax, "5"))
	for _, start := range []string{"0000-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"} {
		body := strings.Replace(amBody(firing("f1", "service", "web", "direction", "up")), alertStart.Format(time.RFC3339), start, 1)
		code, rs := e.webhookResults(t, "/alertmanager", body)
		if code != 200 || len(rs) != 1 || rs[0].Result != "error" || !strings.Contains(rs[0].Reason, start) {
			t.Errorf("startsAt %s: %d, %+v; want 200 and an error naming it", start, code, rs)
		}
	}
	if got := e.swarm.replicas("web"); got != 1 {
		t.Errorf("web scaled to %d on alerts dated out of range", got)
	}
}

// TestWebhookOldFiringSkipped: the alert log forgets a firing that scaled
// a retention (7 days) after it scaled. An alert still firing after that
// (Alertmanager re-sends it every repeat_interval), or a notification
// captured and replayed then, scaled again. A firing that started more
// than AlertMaxAge ago (a day less than the retention) now asks for
// nothing: it is skipped, naming its start.
func TestWebhookOldFiringSkipped(t *testing.T) {
	now := alertStart.Add(30 * 24 * time.Hour)
	e := newAPIEnv(t, Config{Now: func() time.Time { return now }}, svc("web", 1, "orbiter", "true", LabelMax, "5"))
	body := func(fp string, start time.Time) string {
		return strings.Replace(amBody(firing(fp, "service", "web", "direction", "up")), alertStart.Format(time.RFC3339), start.Format(time.RFC3339), 1)
	}
	old := now.Add(-DefaultAlertMaxAge - time.Minute)
	code, rs := e.webhookResults(t, "/alertmanager", body("f1", old))
	if code != 200 || len(rs) != 1 || rs[0].Result != "skipped" || !strings.Contains(rs[0].Reason, old.Format(time.RFC3339)) {
		t.Errorf("a firing started %s ago: %d %+v; want 200 and skipped, naming its start", now.Sub(old), code, rs)
	}
	if got := e.swarm.replicas("web"); got != 1 {
		t.Errorf("web scaled to %d on a firing older than the alert log keeps", got)
	}
	recent := now.Add(-DefaultAlertMaxAge + time.Hour)
	if code, rs := e.webhookResults(t, "/alertmanager", body("f2", recent)); code != 200 || len(rs) != 1 || rs[0].Result != "scaled" {
		t.Errorf("a firing started %s ago: %d %+v; want scaled", now.Sub(recent), code, rs)
	}
}

// TestWebhookLongAlertName: an alert's name went whole into the source of
// the decision it made, kept in the history in Consul, whose values hold
// 512 KiB: the record of a scale on an alert named with a megabyte could
// not be written, and with it went the time the service's cooldowns run
// from after a restart. The name is cut to maxAlertName bytes.
func TestWebhookLongAlertName(t *testing.T) {
	e := newAPIEnv(t, Config{}, svc("web", 1, "orbiter", "true", LabelMax, "5"))
	a := firing("f1", "service", "web", "direction", "up")
	a.labels["alertname"] = strings.Repeat("HighLoad", 1<<17)
	code, rs := e.webhookResults(t, "/alertmanager", amBody(a))
	if code != 200 || len(rs) != 1 || rs[0].Result != "scaled" {
		t.Fatalf("%d, %v; want 200 and web scaled", code, resultsOf(rs))
	}
	if n := len(rs[0].Decision.Source); n > 1024 {
		t.Errorf("the decision's source is %d bytes long, want at most 1024", n)
	}
	if !strings.HasPrefix(rs[0].AlertName, "HighLoadHighLoad") {
		t.Errorf("alert name %.40q…, want its start kept", rs[0].AlertName)
	}
}

// hungAlertLog is an alert log whose reads hang until released, as with
// Consul hung: the webhook reading it holds the turn meanwhile.
type hungAlertLog struct {
	memAlertLog
	entered chan struct{} // closed at the first read
	once    sync.Once
	release chan struct{}
}

func (l *hungAlertLog) Seen(ctx context.Context, key string) (bool, error) {
	l.once.Do(func() { close(l.entered) })
	<-l.release
	return l.memAlertLog.Seen(ctx, key)
}

// TestWebhookGivesUpWaitingForItsTurn: webhooks are handled one at a time,
// and one waiting behind a webhook stuck on Consul waited on a mutex that
// ignored its request's end, keeping its notification until its turn. One
// whose request ended gives up, answering each alert with an unavailable
// error (503: Alertmanager retries); the one holding the turn still scales
// once, and its re-send is a duplicate.
func TestWebhookGivesUpWaitingForItsTurn(t *testing.T) {
	alog := &hungAlertLog{memAlertLog: memAlertLog{seen: map[string]bool{}}, entered: make(chan struct{}), release: make(chan struct{})}
	e := newAPIEnv(t, Config{AlertLog: alog}, svc("web", 1, "orbiter", "true", LabelMax, "5"))
	msg := AlertmanagerMessage{Version: "4", Alerts: []Alert{{Status: "firing", Fingerprint: "f1", StartsAt: alertStart,
		Labels: map[string]string{"service": "web", "direction": "up"}}}}
	first := make(chan []AlertResult, 1)
	go func() { first <- e.ctrl.HandleAlerts(context.Background(), msg, "", "", "test") }()
	<-alog.entered

	ended, cancel := context.WithCancel(context.Background())
	cancel()
	second := make(chan []AlertResult, 1)
	go func() { second <- e.ctrl.HandleAlerts(ended, msg, "", "", "test") }()
	select {
	case rs := <-second:
		if len(rs) != 1 || rs[0].Result != "error" || !errors.Is(rs[0].Err, ErrUnavailable) || !errors.Is(rs[0].Err, context.Canceled) {
			t.Errorf("a webhook whose request ended while it waited: %v; want an unavailable error for its alert", resultsOf(rs))
		}
	case <-time.After(10 * time.Second):
		close(alog.release)
		<-second
		<-first
		t.Fatal("a webhook whose request ended still waits for its turn after 10s")
	}
	close(alog.release)
	if rs := <-first; len(rs) != 1 || rs[0].Result != "scaled" {
		t.Errorf("the webhook holding the turn: %v; want scaled", resultsOf(rs))
	}
	if rs := e.ctrl.HandleAlerts(context.Background(), msg, "", "", "test"); len(rs) != 1 || rs[0].Result != "duplicate" {
		t.Errorf("a re-send after: %v; want duplicate", resultsOf(rs))
	}
	if got := e.swarm.replicas("web"); got != 2 {
		t.Errorf("web at %d replicas, want 2: one step", got)
	}
}

// stuckAlertLog is an alert log on a hung Consul: every read and write
// waits until its context ends.
type stuckAlertLog struct{}

func (stuckAlertLog) Seen(ctx context.Context, _ string) (bool, error) {
	<-ctx.Done()
	return false, ctx.Err()
}

func (stuckAlertLog) Mark(ctx context.Context, _, _ string, _ time.Time) error {
	<-ctx.Done()
	return ctx.Err()
}

// handleAlertsWithin runs HandleAlerts with a request that never ends
// and fails the test when it has not returned within limit (the turn is
// then released by ending the request).
func handleAlertsWithin(t *testing.T, c *Controller, msg AlertmanagerMessage, limit time.Duration) []AlertResult {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan []AlertResult, 1)
	go func() { done <- c.HandleAlerts(ctx, msg, "", "", "test") }()
	select {
	case rs := <-done:
		return rs
	case <-time.After(limit):
		cancel()
		<-done
		t.Fatalf("the webhook still held the turn on a hung Consul after %v, with AlertTimeout %v", limit, c.cfg.AlertTimeout)
		return nil
	}
}

// TestWebhookHoldsTheTurnBounded: the webhook holding the turn read the
// alert log with its request's context only, so on a hung Consul it held
// the turn, and made every webhook behind it give up, for as long as its
// sender waited (Alertmanager: minutes). Its Consul work now ends by
// AlertTimeout: the alerts it could not check are answered unavailable
// (503, sent again), none scales unchecked, and the next webhook gets the
// turn.
func TestWebhookHoldsTheTurnBounded(t *testing.T) {
	alog := &stuckAlertLog{}
	e := newAPIEnv(t, Config{AlertLog: alog, AlertTimeout: 50 * time.Millisecond, HistoryTimeout: time.Hour},
		svc("web", 1, "orbiter", "true", LabelMax, "5"))
	msg := AlertmanagerMessage{Version: "4"}
	for i := range 3 {
		msg.Alerts = append(msg.Alerts, Alert{Status: "firing", Fingerprint: fmt.Sprintf("f%d", i), StartsAt: alertStart,
			Labels: map[string]string{"service": "web", "direction": "up"}})
	}
	for round := range 2 { // the second: the turn was given back
		rs := handleAlertsWithin(t, e.ctrl, msg, 10*time.Second)
		for _, r := range rs {
			if r.Result != "error" || !errors.Is(r.Err, ErrUnavailable) || r.Decision != nil {
				t.Errorf("round %d: %s on a hung Consul: %s (%s), want an unavailable error and no decision", round, r.Fingerprint, r.Result, r.Reason)
			}
		}
	}
	if got := e.swarm.replicas("web"); got != 1 {
		t.Errorf("web at %d replicas: a firing scaled unchecked", got)
	}
}

// TestWebhookMarksBounded: on a Consul that takes reads but hangs on
// writes, each alert grouped with one that scaled waited HistoryTimeout
// for its mark, one after another, holding the turn: a notification of
// 1,000 alerts of one service held it for 1,000 of them. The marks end by
// the turn's deadline; every firing is still remembered in memory, so a
// re-send takes no step.
func TestWebhookMarksBounded(t *testing.T) {
	alog := &markStuckAlertLog{}
	e := newAPIEnv(t, Config{AlertLog: alog, AlertTimeout: 50 * time.Millisecond, HistoryTimeout: 200 * time.Millisecond},
		svc("web", 1, "orbiter", "true", LabelMax, "5"))
	msg := AlertmanagerMessage{Version: "4"}
	for i := range 100 {
		msg.Alerts = append(msg.Alerts, Alert{Status: "firing", Fingerprint: fmt.Sprintf("f%d", i), StartsAt: alertStart,
			Labels: map[string]string{"service": "web", "direction": "up"}})
	}
	rs := handleAlertsWithin(t, e.ctrl, msg, 5*time.Second)
	if rs[0].Result != "scaled" {
		t.Fatalf("the first alert: %s (%s), want scaled", rs[0].Result, rs[0].Reason)
	}
	for _, r := range rs[1:] {
		if r.Result != "grouped" {
			t.Fatalf("%s: %s (%s), want grouped", r.Fingerprint, r.Result, r.Reason)
		}
	}
	for _, r := range handleAlertsWithin(t, e.ctrl, msg, 5*time.Second) {
		if r.Result != "duplicate" {
			t.Errorf("re-sent, %s: %s (%s), want duplicate", r.Fingerprint, r.Result, r.Reason)
		}
	}
	if got := e.swarm.replicas("web"); got != 2 {
		t.Errorf("web at %d replicas, want 2: one step", got)
	}
}

// markStuckAlertLog reads at once (nothing seen) and hangs on writes.
type markStuckAlertLog struct{ stuckAlertLog }

func (markStuckAlertLog) Seen(context.Context, string) (bool, error) { return false, nil }

// slowMarkAlertLog is an alert log on a Consul whose writes are slow
// while slow is set: each mark takes delay, then is kept.
type slowMarkAlertLog struct {
	memAlertLog
	slow  atomic.Bool
	delay time.Duration
}

func (l *slowMarkAlertLog) Mark(ctx context.Context, key, service string, at time.Time) error {
	if l.slow.Load() {
		select {
		case <-time.After(l.delay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return l.memAlertLog.Mark(ctx, key, service, at)
}

// TestGroupedFiringsSurviveARestart: the firings grouped with one that
// scaled, reached once the webhook's time for Consul had run out, were
// kept in memory only (logged and counted): a restarted control took
// Alertmanager's re-send of the notification for new firings and scaled
// again. They are written to the alert log after the turn, at the latest
// when control stops.
func TestGroupedFiringsSurviveARestart(t *testing.T) {
	alog := &slowMarkAlertLog{memAlertLog: memAlertLog{seen: map[string]bool{}}, delay: 300 * time.Millisecond}
	sw := newFakeSwarm(svc("web", 1, "orbiter", "true", LabelMax, "5"))
	hist := &memHistory{}
	cfg := Config{AlertLog: alog, AlertTimeout: 100 * time.Millisecond, HistoryTimeout: 5 * time.Second}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	msg := AlertmanagerMessage{Version: "4"}
	for i := range 3 {
		msg.Alerts = append(msg.Alerts, Alert{Status: "firing", Fingerprint: fmt.Sprintf("f%d", i), StartsAt: alertStart,
			Labels: map[string]string{"service": "web", "direction": "up"}})
	}
	for round, want := range []string{"scaled", "duplicate"} {
		c := NewController(cfg, sw, hist, log, nil)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { c.Run(ctx); close(done) }()
		waitFor(t, func() bool { return c.Status().DockerConnected })
		alog.slow.Store(round == 0) // the first mark outlasts AlertTimeout
		rs := c.HandleAlerts(context.Background(), msg, "", "", "test")
		alog.slow.Store(false)
		cancel() // control stops, then starts again
		<-done
		if rs[0].Result != want {
			t.Fatalf("control %d, the first alert: %s (%s), want %s", round+1, rs[0].Result, rs[0].Reason, want)
		}
		if round == 0 {
			for _, r := range rs[1:] {
				if r.Result != "grouped" {
					t.Fatalf("%s: %s (%s), want grouped", r.Fingerprint, r.Result, r.Reason)
				}
			}
		}
	}
	if got := sw.replicas("web"); got != 2 {
		t.Errorf("web at %d replicas after a notification and its re-send to a restarted control, want 2: one step", got)
	}
}
