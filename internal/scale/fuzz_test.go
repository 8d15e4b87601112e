package scale

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Fuzz targets: the parsers of everything a client or a label may send,
// and the target-tracking arithmetic. scripts/fuzz.sh runs each for
// FUZZTIME; the seed corpus is in testdata/fuzz/<target>/.

// FuzzParseDirection: only "up" and "down", in any ASCII case, are
// directions.
func FuzzParseDirection(f *testing.F) {
	for _, s := range []string{"up", "DOWN", "true", " up", "ｕｐ", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDirection(s)
		if err != nil {
			if !errors.Is(err, ErrUnknownDirection) || d != "" {
				t.Fatalf("ParseDirection(%q) = %q, %v", s, d, err)
			}
			return
		}
		if (d != Up && d != Down) || strings.ToLower(s) != string(d) {
			t.Fatalf("ParseDirection(%q) = %q", s, d)
		}
	})
}

// labelsFromText reads "key=value" lines, the fuzzers' label sets.
func labelsFromText(s string) map[string]string {
	labels := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		k, v, _ := strings.Cut(line, "=")
		labels[k] = v
	}
	return labels
}

// checkPolicy fails t when p breaks a bound ParsePolicy promises.
func checkPolicy(t *testing.T, p Policy) {
	t.Helper()
	switch {
	case p.Min < 0 || p.Min > p.Max || p.Max > MaxReplicas:
		t.Fatalf("bounds %d..%d", p.Min, p.Max)
	case p.CooldownUp < 0 || p.CooldownUp > MaxDuration, p.CooldownDown < 0 || p.CooldownDown > MaxDuration,
		p.StabilizationDown < 0 || p.StabilizationDown > MaxDuration:
		t.Fatalf("durations %s %s %s", p.CooldownUp, p.CooldownDown, p.StabilizationDown)
	}
	for _, s := range []Step{p.StepUp, p.StepDown} {
		if s.Replicas < 0 || s.Replicas > MaxReplicas || s.Percent < 0 || s.Percent > MaxPercent || (s.Replicas == 0) == (s.Percent == 0) {
			t.Fatalf("step %+v", s)
		}
	}
	for _, m := range p.Metrics {
		if m.Query == "" || !(m.Target > 0) || math.IsInf(m.Target, 0) {
			t.Fatalf("metric %+v", m)
		}
	}
}

// FuzzParsePolicy: any labels give a policy within every bound, or an
// error naming a label; deciding on that policy stays within its bounds.
func FuzzParsePolicy(f *testing.F) {
	for _, s := range []string{
		"orbiter=true\nunderlay.scale.max=5\nunderlay.scale.step-up=50%",
		"underlay.scale.enabled=true\nunderlay.scale.cooldown-up=10000000000",
		"orbiter=true\norbiter.cooldown=90\norbiter.up=3",
		"orbiter=true\nunderlay.scale.metric.rps.query=sum(x)\nunderlay.scale.metric.rps.target=1e-300",
		"orbiter=true\nunderlay.scale.min=0\nunderlay.scale.max=1000000\nunderlay.scale.stabilization-down=24h",
	} {
		f.Add(s, 3, 7)
	}
	f.Fuzz(func(t *testing.T, text string, current, target int) {
		labels := labelsFromText(text)
		p, err := ParsePolicy(labels)
		if err != nil {
			if !errors.Is(err, ErrBadLabel) {
				t.Fatalf("error %v does not wrap ErrBadLabel", err)
			}
			return
		}
		checkPolicy(t, p)
		p.Enabled, p.AllowDown, p.Paused = true, true, false
		now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		current = max(current, 0)
		for _, dir := range []Direction{Up, Down} {
			d, _ := Decide(current, dir, p, LastScale{}, now)
			checkDecision(t, current, dir, d, p)
		}
		dir, d := DecideTo(current, target, p, LastScale{}, now)
		checkDecision(t, current, dir, d, p)
	})
}

// checkDecision fails t when d leaves p's bounds or moves against dir.
func checkDecision(t *testing.T, current int, dir Direction, d Decision, p Policy) {
	t.Helper()
	if d.From != current {
		t.Fatalf("decision from %d, current %d", d.From, current)
	}
	if d.Refused {
		if d.To != current {
			t.Fatalf("refused decision moves %d→%d", current, d.To)
		}
		return
	}
	if d.To < p.Min || d.To > p.Max || (dir == Up && d.To < current) || (dir == Down && d.To > current) {
		t.Fatalf("%s %d→%d within %d..%d", dir, current, d.To, p.Min, p.Max)
	}
}

// FuzzParsePolicyFile: any file is refused or gives entries whose labels
// parse into policies within every bound.
func FuzzParsePolicyFile(f *testing.F) {
	for _, s := range []string{
		"services:\n  web:\n    min: 2\n    max: 10\n    step-up: 50%\n",
		"services:\n  web:\n    cooldown-up: 10000000000\n",
		"services:\n  a: &x {max: 3}\n  b: *x\n",
		"services: {web: {max: 1e19}}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		pf, err := ParsePolicyFile(data)
		for name, labels := range pf {
			p, perr := ParsePolicy(labels)
			if perr != nil {
				t.Fatalf("entry %q kept with bad labels: %v", name, perr)
			}
			checkPolicy(t, p)
		}
		if err == nil && pf == nil {
			t.Fatal("no error and no file")
		}
	})
}

// FuzzDesiredReplicas: target tracking never wants a negative count, never
// more than MaxReplicas (or current, when above it), never fewer than
// current when a metric is over its target beyond the tolerance or
// missing.
func FuzzDesiredReplicas(f *testing.F) {
	f.Add(3, 100.0, 50.0, 1.0, 1.0, false)
	f.Add(1, 1e19, 1.0, 0.0, 1.0, false)
	f.Add(0, 1e300, 1e-300, 5.0, 0.0, true)
	f.Fuzz(func(t *testing.T, current int, v1, t1, v2, t2 float64, missing bool) {
		current = max(current, 0)
		ms := []Metric{{Value: v1, Target: t1}, {Value: v2, Target: t2, Missing: missing}}
		got := DesiredReplicas(current, ms, DefaultTolerance)
		if got < 0 || got > max(current, MaxReplicas) {
			t.Fatalf("DesiredReplicas(%d, %v) = %d", current, ms, got)
		}
		over := t1 > 0 && v1/t1 > 1+DefaultTolerance+1e-9 && !math.IsInf(v1, 0)
		if (over || missing) && got < current {
			t.Fatalf("DesiredReplicas(%d, %v) = %d: lowered under load or with a metric missing", current, ms, got)
		}
	})
}

// fuzzEnv is an API on a fake swarm for the handler fuzzers: web may go
// from 1 to 50 replicas.
func fuzzEnv(f *testing.F) *apiEnv {
	return newAPIEnvWith(f, Config{}, APIConfig{}, svc("web", 1, "orbiter", "true", LabelMax, "50",
		LabelAllowDown, "true", LabelCooldownDown, "0", LabelStabilizationDown, "0"))
}

// serve sends one request to e's handler in memory.
func (e *apiEnv) serve(method, path string, body []byte) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, bytes.NewReader(body))
	r.Header.Set("Authorization", "Bearer "+testToken)
	w := httptest.NewRecorder()
	e.api.Handler().ServeHTTP(w, r)
	return w
}

// checkAnswer fails t when an answer's status is not one the API gives, or
// its body is not JSON, or web left its bounds.
func checkAnswer(t *testing.T, e *apiEnv, w *httptest.ResponseRecorder, codes ...int) {
	t.Helper()
	ok := false
	for _, c := range codes {
		ok = ok || w.Code == c
	}
	if !ok {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	if w.Code == http.StatusTemporaryRedirect || w.Code == http.StatusMovedPermanently {
		return // the mux cleaning a path with "." or ".." segments
	}
	if !json.Valid(w.Body.Bytes()) {
		t.Fatalf("answer is not JSON: %q", w.Body)
	}
	if n := e.swarm.replicas("web"); n < 1 || n > 50 {
		t.Fatalf("web at %d replicas, outside 1..50", n)
	}
}

// FuzzOrbiterBody: Orbiter's handle routes, with any direction in the path
// and any body (Orbiter's JSON, or an Alertmanager notification).
func FuzzOrbiterBody(f *testing.F) {
	e := fuzzEnv(f)
	f.Add("up", []byte(""))
	f.Add("", []byte(`{"direction":true}`))
	f.Add("", []byte(`{"direction":"TRUE"}`))
	f.Add("down", []byte(`{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"service":"web"},"fingerprint":"a"}]}`))
	f.Fuzz(func(t *testing.T, dir string, body []byte) {
		path := "/v1/orbiter/handle/autoswarm/web"
		if dir != "" {
			path += "/" + url.PathEscape(dir)
		}
		w := e.serve("POST", path, body)
		checkAnswer(t, e, w, 200, 301, 307, 400, 404, 405, 413, 503)
	})
}

// FuzzScaleBody: the native scale route with any body.
func FuzzScaleBody(f *testing.F) {
	e := fuzzEnv(f)
	for _, s := range []string{`{"direction":"up"}`, `{"replicas":7}`, `{"replicas":-1}`, `{"replicas":1e30}`, `{"direction":"up","replicas":2}`, `{`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		w := e.serve("POST", "/v1/underlay/services/web/scale", body)
		checkAnswer(t, e, w, 200, 400, 413)
		if w.Code == 200 {
			var rec Record
			if err := json.Unmarshal(w.Body.Bytes(), &rec); err != nil || rec.Service != "web" {
				t.Fatalf("200 without a record: %s", w.Body)
			}
		}
	})
}

// FuzzAlertmanagerBody: the Alertmanager route with any body: one result
// per alert, and one notification never takes more than one step per
// service and direction.
func FuzzAlertmanagerBody(f *testing.F) {
	e := fuzzEnv(f)
	f.Add([]byte(amBody(firing("a", "service", "web", "direction", "up"), firing("b", "service", "web", "direction", "up"))))
	f.Add([]byte(amBody(firing("a", "service", "web", "direction", "TRUE"), amAlert{status: "resolved", fingerprint: "c", labels: map[string]string{"service": "web"}})))
	f.Add([]byte(`{"version":"4","alerts":null}`))
	f.Add([]byte(`{"version":"4","alerts":[{"status":"firing","labels":{"service":"web","scale":"down"},"startsAt":"2026-01-01T00:00:00Z"}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		before := e.swarm.replicas("web")
		w := e.serve("POST", "/v1/underlay/alertmanager", body)
		checkAnswer(t, e, w, 200, 400, 413, 503)
		if w.Code != 200 {
			return
		}
		msg, err := ParseAlertmanager(bytes.NewReader(body))
		if err != nil {
			t.Fatalf("200 for a body ParseAlertmanager refuses: %v", err)
		}
		var ans webhookAnswer
		if err := json.Unmarshal(w.Body.Bytes(), &ans); err != nil || len(ans.Results) != len(msg.Alerts) {
			t.Fatalf("%d alerts, answer %s", len(msg.Alerts), w.Body)
		}
		if after := e.swarm.replicas("web"); after > before+1 || after < before-1 {
			t.Fatalf("one notification moved web %d→%d: more than one step", before, after)
		}
	})
}

// FuzzParseAlertmanager: the alert list, decoded one alert at a time to
// refuse a long one early, reads what encoding/json reads, and refuses
// only lists longer than MaxAlerts besides.
func FuzzParseAlertmanager(f *testing.F) {
	f.Add([]byte(amBody(firing("a", "service", "web", "direction", "up"))))
	f.Add([]byte(`{"version":"4","alerts":[{},{}],"Alerts":null}`))
	f.Add([]byte(`{"version":"4","ALERTS":[{"status":"firing","labels":{"a":"b"}}],"alerts":[]}`))
	f.Add([]byte(`{"version":"4","alerts":[{"startsAt":"x"}]}`))
	f.Add([]byte(`{"version":"4","alerts":[{}` + strings.Repeat(`,{}`, MaxAlerts) + `]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		msg, err := ParseAlertmanager(bytes.NewReader(body))
		var plain struct {
			Version string   `json:"version"`
			Alerts  *[]Alert `json:"alerts"`
		}
		dec := json.NewDecoder(bytes.NewReader(body))
		perr := dec.Decode(&plain)
		if perr == nil {
			if _, err := dec.Token(); err != io.EOF {
				perr = errors.New("data after the JSON object")
			}
		}
		plainOK := perr == nil && plain.Version == "4" && plain.Alerts != nil
		switch {
		case err == nil && !plainOK:
			t.Fatalf("accepted a body encoding/json refuses (%v)", perr)
		case err == nil && (len(msg.Alerts) > MaxAlerts || !reflect.DeepEqual(msg.Alerts, *plain.Alerts)):
			t.Fatalf("alerts differ from encoding/json's: %d against %d", len(msg.Alerts), len(*plain.Alerts))
		case err != nil && plainOK && len(*plain.Alerts) <= MaxAlerts:
			t.Fatalf("refused a body of %d alerts encoding/json reads: %v", len(*plain.Alerts), err)
		}
	})
}

// FuzzPeerHeaders: no forwarded request is accepted without the secret,
// whatever its headers and body.
func FuzzPeerHeaders(f *testing.F) {
	e := newAPIEnvWith(f, Config{}, APIConfig{Peer: PeerConfig{Secret: StaticSecret("the fuzzer does not know this")}}, svc("web", 1, "orbiter", "true"))
	f.Add("sha256=00", "1767225600", "nonce", "127.0.0.1:8000", []byte(`{"direction":"up"}`))
	f.Fuzz(func(t *testing.T, sig, ts, nonce, to string, body []byte) {
		r := httptest.NewRequest("POST", "/v1/underlay/services/web/scale", bytes.NewReader(body))
		for k, v := range map[string]string{PeerSignatureHeader: sig, PeerTimeHeader: ts, PeerNonceHeader: nonce, PeerToHeader: to} {
			r.Header[k] = []string{v}
		}
		w := httptest.NewRecorder()
		e.api.Handler().ServeHTTP(w, r)
		if w.Code == http.StatusOK || e.swarm.replicas("web") != 1 {
			t.Fatalf("a forged forwarded request was served: %d %s", w.Code, w.Body)
		}
	})
}

// FuzzParseTokens: every token line of a token file is accepted, and
// nothing else that a line could hold besides blanks and comments.
func FuzzParseTokens(f *testing.F) {
	f.Add("# ops\nalpha\n\n  beta  \n", "beta")
	f.Add("\n#only a comment\n", "#only a comment")
	f.Fuzz(func(t *testing.T, file, probe string) {
		tokens, err := ParseTokens(strings.NewReader(file))
		lines := map[string]bool{}
		sc := bufio.NewScanner(strings.NewReader(file))
		for sc.Scan() {
			if l := strings.TrimSpace(sc.Text()); l != "" && !strings.HasPrefix(l, "#") {
				lines[l] = true
			}
		}
		if sc.Err() != nil {
			return // a line longer than the scanner takes: ParseTokens refuses it too
		}
		if (err != nil) != (len(lines) == 0) {
			t.Fatalf("ParseTokens: %v with %d token lines", err, len(lines))
		}
		for l := range lines {
			if !tokens.Valid(l) {
				t.Fatalf("token %q of the file not valid", l)
			}
		}
		if tokens.Valid(probe) != lines[probe] {
			t.Fatalf("Valid(%q) = %v, want %v", probe, tokens.Valid(probe), lines[probe])
		}
	})
}

// FuzzClientKey: a client's rate-limit key does not depend on its port.
func FuzzClientKey(f *testing.F) {
	f.Add("192.0.2.1", uint16(1), uint16(2))
	f.Add("2001:db8::1%eth0", uint16(1), uint16(2))
	f.Fuzz(func(t *testing.T, host string, p1, p2 uint16) {
		a := clientKey(net.JoinHostPort(host, strconv.Itoa(int(p1))))
		b := clientKey(net.JoinHostPort(host, strconv.Itoa(int(p2))))
		if a != b {
			t.Fatalf("%q: ports %d and %d are clients %s and %s", host, p1, p2, a, b)
		}
	})
}

// FuzzWebhookSignature: VerifySignature accepts a timestamp and signature
// only when the signature is the MAC Sign gives for that timestamp and
// body, and the timestamp is decimal Unix seconds within the window;
// anything else is ErrBadSignature, never a panic.
func FuzzWebhookSignature(f *testing.F) {
	secret := []byte("the fuzzer does not know this")
	now := time.Unix(1_800_000_000, 0)
	ts, sig := Sign(secret, []byte(`{"version":"4"}`), now)
	f.Add(ts, sig, []byte(`{"version":"4"}`))
	f.Add("+1800000000", sig, []byte(`{"version":"4"}`))
	f.Add("", "sha256=", []byte{})
	f.Fuzz(func(t *testing.T, timestamp, header string, body []byte) {
		mac, err := VerifySignature(secret, body, timestamp, header, now, DefaultWebhookMaxAge)
		if err != nil {
			if !errors.Is(err, ErrBadSignature) || mac != nil {
				t.Fatalf("refusal %v (mac %x) does not wrap ErrBadSignature alone", err, mac)
			}
			return
		}
		sec, perr := strconv.ParseInt(timestamp, 10, 64)
		if perr != nil || strconv.FormatInt(sec, 10) != strings.TrimLeft(timestamp, "0") && timestamp != "0" {
			t.Fatalf("accepted timestamp %q, not plain decimal seconds", timestamp)
		}
		if d := now.Sub(time.Unix(sec, 0)).Abs(); d > DefaultWebhookMaxAge {
			t.Fatalf("accepted timestamp %q, %s from now", timestamp, d)
		}
		if want := webhookMAC(secret, timestamp, body); !bytes.Equal(mac, want) {
			t.Fatalf("accepted a signature other than the MAC of its timestamp and body")
		}
	})
}
