package scale

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestAPIErrorsQuoteToShow: an API answer's error quotes the service,
// autoscaler, direction or path the request named with what would not
// show escaped (U+3164 reads as nothing, and %q left it as it is), so
// "web\u3164" is not read as "web".
func TestAPIErrorsQuoteToShow(t *testing.T) {
	global := svc("glob\u3164", 0, "orbiter", "true")
	global.Global = true
	e := newAPIEnv(t, Config{}, svc("web", 1, "orbiter", "true"), global,
		svc("bad\u3164", 1, "orbiter", "true", LabelMax, "lots"))
	for _, c := range []struct{ name, path, body, want string }{
		{"service", "/v1/underlay/services/web%E3%85%A4/scale", `{"direction":"up"}`, `service "web\u3164": not found`},
		{"autoscaler", "/v1/orbiter/handle/infra%E3%85%A4/web/up", "", `autoscaler "infra\u3164": not found`},
		{"direction in the path", "/v1/orbiter/handle/autoswarm/web/up%E3%85%A4", "", `unknown direction: want up or down: "up\u3164"`},
		{"direction in the body", "/v1/orbiter/handle/autoswarm/web", `{"direction":"up\u3164"}`, `"up\u3164"`},
		{"global service", "/v1/orbiter/handle/autoswarm/glob%E3%85%A4/up", "", `service "glob\u3164": `},
		{"bad labels", "/v1/orbiter/handle/autoswarm/bad%E3%85%A4/up", "", `service "bad\u3164": `},
		{"no such path", "/v1/underlay/nope%E3%85%A4", "", `POST "/v1/underlay/nope\u3164": `},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, body := e.do(t, "POST", c.path, testToken, c.body)
			var got errorBody
			if err := json.Unmarshal([]byte(body), &got); err != nil {
				t.Fatalf("answer %s: %v", body, err)
			}
			if !strings.Contains(got.Error, c.want) {
				t.Errorf("error %s, want it to hold %s", got.Error, c.want)
			}
		})
	}
}

// TestControllerErrorsQuoteToShow: Handle's and Decide's errors quote
// what the request named with what would not show escaped, and so does
// the error of a service removed while it scaled.
func TestControllerErrorsQuoteToShow(t *testing.T) {
	sw := newFakeSwarm(svc("web\u3164", 1, "orbiter", "true"))
	c := NewController(Config{}, sw, &memHistory{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err := c.resync(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, dirErr := c.Handle(context.Background(), Request{Service: "web", Direction: "up\u3164"})
	_, decideErr := Decide(1, "up\u3164", DefaultPolicy(), LastScale{}, time.Now())
	sw.mu.Lock()
	sw.removeOnWrite = true
	sw.mu.Unlock()
	_, removedErr := c.Handle(context.Background(), Request{Service: "web\u3164", Direction: Up})
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"direction", dirErr, `unknown direction: want up or down: "up\u3164"`},
		{"Decide's direction", decideErr, `unknown direction: want up or down: "up\u3164"`},
		{"removed while scaling", removedErr, `service "web\u3164": removed while scaling`},
	} {
		if tc.err == nil || !strings.Contains(tc.err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to hold %s", tc.name, tc.err, tc.want)
		}
	}
}

// TestWebhookAndLabelErrorsQuoteToShow: what an Alertmanager webhook's
// body or a service's labels hold is quoted with what would not show
// escaped in the errors and skips that name it.
func TestWebhookAndLabelErrorsQuoteToShow(t *testing.T) {
	_, versionErr := ParseAlertmanager(strings.NewReader(strings.Replace(amBody(firing("f1", "service", "web")), `"version":"4"`, `"version":"4\u3164"`, 1)))
	msg, err := ParseAlertmanager(strings.NewReader(amBody(amAlert{status: "firing\u3164", fingerprint: "f1", labels: map[string]string{"service": "web", "direction": "up"}})))
	if err != nil {
		t.Fatal(err)
	}
	skip := ""
	for _, a := range AlertActions(msg, "", "") {
		skip = a.Skip
	}
	_, labelErr := ParsePolicy(map[string]string{LabelOrbiter: "true", LabelMax: "lots\u3164"})
	_, metricErr := ParsePolicy(map[string]string{LabelOrbiter: "true", LabelMetricPrefix + "cpu\u3164.target": "0.5"})
	_, metricKeyErr := ParsePolicy(map[string]string{LabelOrbiter: "true", LabelMetricPrefix + "cpu\u3164.target": "x"})
	for _, tc := range []struct{ name, got, want string }{
		{"webhook version", errText(versionErr), `version "4\u3164", want "4"`},
		{"alert status", skip, `alert is "firing\u3164": only firing alerts scale`},
		{"label value", errText(labelErr), LabelMax + `="lots\u3164"`},
		{"metric name", errText(metricErr), `metric "cpu\u3164" has a target but no ` + LabelMetricPrefix + `cpu\u3164.query`},
		{"metric label key", errText(metricKeyErr), `"` + LabelMetricPrefix + `cpu\u3164.target"="x"`},
	} {
		if !strings.Contains(tc.got, tc.want) {
			t.Errorf("%s: %s, want it to hold %s", tc.name, tc.got, tc.want)
		}
	}
}

func errText(err error) string {
	if err == nil {
		return "no error"
	}
	return err.Error()
}

// globalOnWrite is a swarm whose services turn global between a
// decision's inspect and its write.
type globalOnWrite struct{ *fakeSwarm }

func (globalOnWrite) SetReplicas(context.Context, string, uint64, int) error { return ErrGlobalService }

// TestDecisionAndPeerErrorsQuoteToShow: the errors of a decision on a
// service gone, opted out or turned global meanwhile, of a metric loop's
// service gone, of a forwarded request sent to another instance, of a
// leader key naming an address when there are no --peers, and of a body's
// direction that is not JSON's string, quote the name or address (a
// request's, a label's, a KV key's) with what would not show escaped:
// %q left U+3164 as it is, and "web\u3164" read "web". Graphic ones
// print as before.
func TestDecisionAndPeerErrorsQuoteToShow(t *testing.T) {
	const f = "\u3164"
	ctx := context.Background()
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	sw := newFakeSwarm(svc("plain"+f, 1), svc("plain", 1))
	c := NewController(Config{}, sw, &memHistory{}, discard, nil)
	_, goneErr := c.decideLocked(ctx, "api", "gone", "gone"+f, &state{}, nil)
	_, goneGraphicErr := c.decideLocked(ctx, "api", "gone", "gone", &state{}, nil)
	_, optedOutErr := c.decideLocked(ctx, "api", "plain"+f, "plain"+f, &state{}, nil)
	_, loopErr := c.evaluate(ctx, "web"+f)

	gw := globalOnWrite{newFakeSwarm(svc("web"+f, 1, "orbiter", "true"))}
	gc := NewController(Config{}, gw, &memHistory{}, discard, nil)
	if err := gc.resync(ctx); err != nil {
		t.Fatal(err)
	}
	_, globalErr := gc.Handle(ctx, Request{Service: "web" + f, Direction: Up})

	secret := []byte("s")
	a := &API{cfg: APIConfig{ForwardToLeader: true, Peer: PeerConfig{Secret: StaticSecret(secret), Self: "me:8000"}}, c: c}
	p := peerRequest{Method: "POST", URI: "/v1/underlay/services/web/scale", By: "f:8000", To: "me" + f + ":8000", Nonce: "n1", Time: time.Now().Unix()}
	r := httptest.NewRequest(p.Method, p.URI, nil)
	for k, v := range map[string]string{ForwardedHeader: p.By, PeerToHeader: p.To, PeerNonceHeader: p.Nonce,
		PeerTimeHeader: strconv.FormatInt(p.Time, 10), PeerSignatureHeader: p.sign(secret)} {
		r.Header.Set(k, v)
	}
	_, peerErr := a.verifyPeer(r, nil, secret)
	_, leaderWhy := a.forwardable("leader" + f + ":8000")
	_, directionErr := parseBody([]byte(`{"direction":{"up` + f + `":1}}`))

	for _, tc := range []struct{ name, got, want string }{
		{"service gone", errText(goneErr), `service "gone\u3164": not found`},
		{"service gone, Graphic", errText(goneGraphicErr), `service "gone": not found`},
		{"opted out", errText(optedOutErr), `service "plain\u3164": not found among autoscaled services`},
		{"metric loop", errText(loopErr), `service "web\u3164": not found`},
		{"turned global", errText(globalErr), `service "web\u3164": service is in global mode`},
		{"sent to", errText(peerErr), `it was sent to "me\u3164:8000", and this instance advertises "me:8000"`},
		{"leader key", leaderWhy, `the leader key names "leader\u3164:8000", and`},
		{"direction", errText(directionErr), `{"up\u3164":1}`},
	} {
		if !strings.Contains(tc.got, tc.want) {
			t.Errorf("%s: %s, want it to hold %s", tc.name, tc.got, tc.want)
		}
	}
}
