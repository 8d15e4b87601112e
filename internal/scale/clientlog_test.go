package scale

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/underlay/underlay/internal/testlog"
)

// TestLogsNameTheClientBehindAProxy: with --trusted-proxies the rate
// limit counted the client X-Forwarded-For names, but the log lines and
// the decisions' source named the proxy. Both now name the client the
// limit counts, with the proxy as via; an X-Forwarded-For from a peer
// that is not a trusted proxy is not believed, there or in the limit.
func TestLogsNameTheClientBehindAProxy(t *testing.T) {
	e := newAPIEnv(t, Config{}, svc("web", 1, "orbiter", "true", LabelMax, "5"))
	records := testlog.NewRecords(64)
	tokens, err := ParseTokens(strings.NewReader(testToken + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	api := NewAPI(APIConfig{Tokens: tokens, Registerer: prometheus.NewRegistry(),
		Limits: Limits{RateLimit: -1, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.9/32")}}},
		e.ctrl, slog.New(records))
	h := api.Handler()
	send := func(peer, xff, token, path, body string) int {
		req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
		req.RemoteAddr = peer
		req.Header.Set("Content-Type", "application/json")
		if xff != "" {
			req.Header.Set(ForwardedForHeader, xff)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	attrs := func(r slog.Record) map[string]string {
		m := map[string]string{}
		r.Attrs(func(a slog.Attr) bool { m[a.Key] = a.Value.String(); return true })
		return m
	}
	for _, c := range []struct {
		name, peer, xff  string
		client, via, src string
	}{
		{"via a trusted proxy", "10.0.0.9:5555", "203.0.113.5", "203.0.113.5", "10.0.0.9:5555", "http 203.0.113.5 via 10.0.0.9:5555"},
		{"X-Forwarded-For from an untrusted peer", "198.51.100.7:4000", "203.0.113.5", "198.51.100.7:4000", "", "http 198.51.100.7:4000"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if code := send(c.peer, c.xff, "", "/v1/underlay/services/web/scale", `{"direction":"up"}`); code != http.StatusUnauthorized {
				t.Fatalf("a request with no token: %d, want 401", code)
			}
			rec := records.Await(t, 5*time.Second, func(r slog.Record) bool { return r.Message == "unauthenticated request refused" })
			got := attrs(rec)
			if got["client"] != c.client || got["via"] != c.via {
				t.Errorf("log line %q names client=%q via=%q, want client=%q via=%q", rec.Message, got["client"], got["via"], c.client, c.via)
			}
			if _, ok := got["remote"]; ok {
				t.Errorf("log line %q still has remote=%q", rec.Message, got["remote"])
			}
			before := e.history.len()
			send(c.peer, c.xff, testToken, "/v1/underlay/services/web/scale", `{"direction":"up"}`) // scaled, or refused in cooldown: recorded
			if e.history.len() == before {
				t.Fatal("the scale request recorded no decision")
			}
			e.history.mu.Lock()
			src := e.history.records[len(e.history.records)-1].Source
			e.history.mu.Unlock()
			if src != c.src {
				t.Errorf("decision source %q, want %q", src, c.src)
			}
		})
	}
}
