package dashboard

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestCrossSiteReadsRefused: a page of another site the operator visits
// can make the browser fetch the snapshot or open the event stream (an
// EventSource, fetch in no-cors mode): it cannot read the answer, but the
// server would build, send and hold it (a rebuild, a whole snapshot and
// the backlog, a stream among the client's few). The browser names the
// requesting page (Sec-Fetch-Site, Origin): such reads are refused before
// any work, as the page's POSTs are. The page's own reads, a link
// followed to the JSON, and clients that are no browser (no such header)
// are served.
func TestCrossSiteReadsRefused(t *testing.T) {
	ts := startServer(t, Config{}, cardsInput())
	c := ts.client(t)
	do := func(path string, hdr map[string]string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, ts.http.URL+path, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		// The stream, when served, never ends: its first bytes tell.
		b := make([]byte, 512)
		n, _ := io.ReadAtLeast(resp.Body, b, 1)
		return resp.StatusCode, string(b[:n])
	}
	crossSite := map[string]map[string]string{
		"cross-site fetch":      {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors", "Origin": "http://evil.example"},
		"cross-site no-cors":    {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"},
		"another port's page":   {"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "cors", "Origin": "http://" + strings.Split(ts.http.Listener.Addr().String(), ":")[0] + ":1"},
		"origin only, no fetch": {"Origin": "http://evil.example"},
	}
	open := map[string]map[string]string{
		"the page's own":     {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"},
		"typed in":           {"Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "navigate"},
		"a link followed":    {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"},
		"no browser":         {},
		"same origin, named": {"Origin": ts.http.URL},
	}
	for _, path := range []string{"/v1/cluster", "/v1/cluster/events", "/ui/session"} {
		for name, hdr := range crossSite {
			if code, body := do(path, hdr); code != http.StatusForbidden || !strings.Contains(body, "cross-site") {
				t.Errorf("GET %s, %s: %d %.80q, want 403 cross-site request refused", path, name, code, body)
			}
		}
		for name, hdr := range open {
			if code, body := do(path, hdr); code != http.StatusOK {
				t.Errorf("GET %s, %s: %d %.80q, want 200", path, name, code, body)
			}
		}
	}
}
