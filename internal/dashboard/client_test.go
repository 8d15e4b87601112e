package dashboard

import (
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/testlog"
)

// TestLogsNameTheClient: the login, scale and logout log lines named the
// peer, a reverse proxy's address for every user behind it, and the scale
// button's request reached the autoscaler's API without the proxy's
// X-Forwarded-For, so that its rate limit and the decision's source took
// the proxy for the client. The lines now name the client Config.Client
// (control: the API's, believing X-Forwarded-For from --trusted-proxies
// only) resolves, with via the proxy, and the API gets the header.
func TestLogsNameTheClient(t *testing.T) {
	behindProxy := func(r *http.Request) (string, string) {
		if xff := r.Header.Get("X-Forwarded-For"); xff != "" {
			return xff, r.RemoteAddr // this test's proxy is trusted
		}
		return r.RemoteAddr, ""
	}
	// The test's client connects from 127.0.0.1, its "proxy".
	for _, c := range []struct {
		name       string
		client     func(*http.Request) (string, string)
		wantClient string // a prefix
		wantVia    string
	}{
		{"via a trusted proxy", behindProxy, "203.0.113.5", "127.0.0.1:"},
		{"no Client: the peer", nil, "127.0.0.1:", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			records := testlog.NewRecords(256)
			ts := startServerLog(t, Config{Tokens: tokens("tok"), Client: c.client}, cardsInput(), slog.New(records))
			hc := ts.client(t)
			xff := map[string]string{"X-Forwarded-For": "203.0.113.5"}
			check := func(msg string) {
				t.Helper()
				r := records.Await(t, 5*time.Second, func(r slog.Record) bool { return r.Message == msg })
				got := map[string]string{}
				r.Attrs(func(a slog.Attr) bool { got[a.Key] = a.Value.String(); return true })
				if !strings.HasPrefix(got["client"], c.wantClient) || !strings.HasPrefix(got["via"], c.wantVia) || (c.wantVia == "") != (got["via"] == "") {
					t.Errorf("%q logged client=%q via=%q, want client=%s… via=%s…", msg, got["client"], got["via"], c.wantClient, c.wantVia)
				}
				if _, ok := got["remote"]; ok {
					t.Errorf("%q still logs remote=%q", msg, got["remote"])
				}
			}
			ts.post(t, hc, "/ui/login", `{"token":"wrong"}`, xff)
			check("dashboard login refused")
			resp, body := ts.post(t, hc, "/ui/login", `{"token":"tok"}`, xff)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("login: %d %s", resp.StatusCode, body)
			}
			check("dashboard login")
			csrf := sessionOf(t, body).CSRF
			if resp, body := ts.post(t, hc, "/ui/scale/hello", `{"direction":"up"}`, map[string]string{CSRFHeader: csrf, "X-Forwarded-For": "203.0.113.5"}); resp.StatusCode != http.StatusOK {
				t.Fatalf("scale: %d %s", resp.StatusCode, body)
			}
			check("scale request from the dashboard")
			if req, _, _ := ts.api.last(); req.Header.Get("X-Forwarded-For") != "203.0.113.5" {
				t.Errorf("the scale API got X-Forwarded-For %q, want the page's request's", req.Header.Get("X-Forwarded-For"))
			}
			ts.post(t, hc, "/ui/logout", `{}`, map[string]string{CSRFHeader: csrf, "X-Forwarded-For": "203.0.113.5"})
			check("dashboard logout")
		})
	}
}
