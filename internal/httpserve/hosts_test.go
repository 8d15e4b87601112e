package httpserve

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestAllowedHosts(t *testing.T) {
	a, err := NewAllowedHosts("ctl.example", "Manager1.")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		host string
		want bool
	}{
		{"", true}, // HTTP/1.0 without Host: no browser
		{"127.0.0.1", true},
		{"127.0.0.1:8000", true},
		{"172.31.0.11:8000", true},
		{"[::1]:8000", true},
		{"[fe80::1%25eth0]:8000", true},
		{"::1", true},
		{"localhost", true},
		{"localhost:8000", true},
		{"LOCALHOST.:8000", true},
		{"ctl.example:8000", true},
		{"CTL.EXAMPLE.", true},
		{"manager1", true},
		{"rebind.example", false},
		{"rebind.example:8000", false},
		{"localhost.rebind.example", false},
		{"127.0.0.1.rebind.example:8000", false},
		{"ctl.example.rebind.example", false},
		{"sub.ctl.example", false},
	}
	for _, tt := range tests {
		if got := a.Allows(tt.host); got != tt.want {
			t.Errorf("Allows(%q) = %v, want %v", tt.host, got, tt.want)
		}
	}
	anyHost, err := NewAllowedHosts("*")
	if err != nil || !anyHost.Allows("rebind.example:8000") {
		t.Errorf(`"*" does not allow any host (err %v)`, err)
	}
}

func TestAllowedHostsBadNames(t *testing.T) {
	for _, n := range []string{"", ".", "ctl.example:8000", "http://ctl.example", "ctl.example/ui", "ctl example"} {
		_, err := NewAllowedHosts("ok.example", n)
		if err == nil || !strings.Contains(err.Error(), `"`+n+`"`) {
			t.Errorf("NewAllowedHosts(%q): %v, want an error naming it", n, err)
		}
	}
}

// TestAllowedHostsHandler: a refused Host is answered 421, in JSON, naming
// the host and how to allow it, and never reaches the handler.
func TestAllowedHostsHandler(t *testing.T) {
	a, _ := NewAllowedHosts()
	reached := 0
	h := a.Handler("--allowed-host", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached++ }))
	req := httptest.NewRequest("GET", "/v1/cluster", nil)
	req.Host = "rebind.example:8000"
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var body struct{ Error string }
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("body %q: %v", rec.Body, err)
	}
	if rec.Code != http.StatusMisdirectedRequest || !strings.Contains(body.Error, `"rebind.example"`) || !strings.Contains(body.Error, "--allowed-host") || reached != 0 {
		t.Errorf("%d %q, handler reached %d times; want 421 naming the host and --allowed-host, not reached", rec.Code, body.Error, reached)
	}
	req.Host = "127.0.0.1:8000"
	h.ServeHTTP(httptest.NewRecorder(), req)
	if reached != 1 {
		t.Errorf("an IP literal's request reached the handler %d times, want 1", reached)
	}
}

// TestAllowedHostsPassAuthorized: a request that carries its own
// credentials (an Authorization header) passes whatever its Host, to be
// checked as usual: a rebinding page cannot send the operator's token,
// and the browser attaches none to another site's requests. Before, an
// Alertmanager webhook or an underlay scale by the server's DNS name,
// both with their bearer token, were refused 421 unless the name was
// allowed.
func TestAllowedHostsPassAuthorized(t *testing.T) {
	a, _ := NewAllowedHosts()
	reached := 0
	h := a.Handler("--allowed-host", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached++ }))
	req := httptest.NewRequest("POST", "/v1/underlay/services/web/scale", nil)
	req.Host = "control.example:8000"
	req.Header.Set("Authorization", "Bearer s3cret")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code == http.StatusMisdirectedRequest || reached != 1 {
		t.Errorf("a request with its bearer token by name: %d %q, handler reached %d times; want passed on", rec.Code, rec.Body, reached)
	}
	// A cookie is the browser's to send, to a rebound name as well: it
	// does not pass.
	req.Header.Del("Authorization")
	req.Header.Set("Cookie", "underlay_session=x")
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusMisdirectedRequest || reached != 1 {
		t.Errorf("a request with a cookie by name: %d, handler reached %d times; want 421", rec.Code, reached)
	}
}
