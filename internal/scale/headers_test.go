package scale

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestAnswersAreLabelled: every answer of the API — decisions, reads,
// its refusals (401, 400, 413, 404, the mux's 404 and 405) and the event
// stream — says X-Content-Type-Options: nosniff, and a JSON answer says
// it is JSON in UTF-8. Without nosniff, a browser may take an answer for
// what its bytes look like: an error echoing a service name or a
// direction (both the client's) read as HTML.
func TestAnswersAreLabelled(t *testing.T) {
	e := newAPIEnv(t, Config{}, svc("web", 1, "orbiter", "true"))
	const jsonType = "application/json; charset=utf-8"
	for _, c := range []struct {
		method, path, token, body string
		code                      int
		ctype                     string
	}{
		{"GET", "/v1/underlay/services", testToken, "", 200, jsonType},
		{"GET", "/health", "", "", 200, jsonType},
		{"GET", "/v1/underlay/services", "", "", 401, jsonType},
		{"POST", "/v1/underlay/services/web/scale", testToken, `{"direction": "<b>sideways</b>"}`, 400, jsonType},
		{"POST", "/v1/underlay/services/web/scale", testToken, strings.Repeat(" ", maxBody+1), 413, jsonType},
		{"POST", "/v1/underlay/services/%3Cb%3E/scale", testToken, `{"direction": "up"}`, 404, jsonType},
		{"POST", "/v1/underlay/services/web/scale", testToken, `{"direction": "up"}`, 200, jsonType},
		{"GET", "/v1/underlay/nope", "", "", 404, jsonType},
		{"DELETE", "/v1/orbiter/autoscaler", "", "", 405, jsonType},
		{"HEAD", "/v1/underlay/events", testToken, "", 200, "text/event-stream"},
	} {
		req, _ := http.NewRequest(c.method, e.srv.URL+c.path, strings.NewReader(c.body))
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.code {
			t.Errorf("%s %s: %d, want %d", c.method, c.path, resp.StatusCode, c.code)
		}
		if got := resp.Header.Get("Content-Type"); got != c.ctype {
			t.Errorf("%s %s: Content-Type %q, want %q", c.method, c.path, got, c.ctype)
		}
		if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("%s %s: X-Content-Type-Options %q, want nosniff", c.method, c.path, got)
		}
	}
}

// TestServerSaysNoSniff: control's server answers routes beside the API
// (/metrics from promhttp, the 421 of a refused Host, the outer mux's
// redirect of an unclean path) with no nosniff:
//
//	GET /metrics: X-Content-Type-Options "", want nosniff
func TestServerSaysNoSniff(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("# metrics\n")) })
	h := NewServer(mux, Limits{}, slog.New(slog.DiscardHandler)).Handler
	for _, path := range []string{"/metrics", "/v1//cluster"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if got := rec.Header().Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("GET %s: %d, X-Content-Type-Options %q, want nosniff", path, rec.Code, got)
		}
	}
}
