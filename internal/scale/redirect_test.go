package scale

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestMuxRedirectsSayWhere: a path net/http cleans (a "..", a "//") is
// answered a redirect to the clean path, as net/http does, with its
// Location and a JSON error naming it. A redirect to a path no route
// takes kept the status only (a 307 with no Location, and the error
// `POST "/v1/underlay/services/../scale": `, which no client can follow);
// one to a route's path was net/http's own, in HTML.
func TestMuxRedirectsSayWhere(t *testing.T) {
	e := newAPIEnv(t, Config{}, svc("web", 1, "orbiter", "true"))
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, c := range []struct {
		method, path, want string
		code               int
	}{
		{"POST", "/v1/underlay/services/web/../web/scale", "/v1/underlay/services/web/scale", 307},
		{"POST", "/v1/underlay//services/web/scale", "/v1/underlay/services/web/scale", 307},
		{"GET", "/v1//underlay/leader", "/v1/underlay/leader", 307},
		{"POST", "/v1/underlay/services/../scale", "/v1/underlay/scale", 307},
	} {
		req, _ := http.NewRequest(c.method, e.srv.URL+c.path, strings.NewReader(`{"direction": "up"}`))
		req.Header.Set("Authorization", "Bearer "+testToken)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var body errorBody
		if err := json.Unmarshal(b, &body); err != nil {
			t.Errorf("%s %s: %q: %v", c.method, c.path, b, err)
		}
		if resp.StatusCode != c.code || resp.Header.Get("Location") != c.want || !strings.Contains(body.Error, c.want) {
			t.Errorf("%s %s: %d, Location %q, %q; want %d to %s, named", c.method, c.path, resp.StatusCode, resp.Header.Get("Location"), body.Error, c.code, c.want)
		}
	}
}
