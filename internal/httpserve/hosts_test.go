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
		{"", false}, // HTTP/1.0 without Host: refused like an unknown name
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
	if err != nil || !anyHost.Allows("rebind.example:8000") || !anyHost.Allows("") {
		t.Errorf(`"*" does not allow any host, or none (err %v)`, err)
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

// TestAllowedHostsHandlerNoHost: a request without Host (HTTP/1.0; Go's
// server refuses HTTP/1.1 without one) is refused 421 like an unknown
// name, saying that it named no host: what it reaches cannot be told from
// what a rebound name reaches. Before, it was served.
func TestAllowedHostsHandlerNoHost(t *testing.T) {
	a, _ := NewAllowedHosts("ctl.example")
	reached := 0
	h := a.Handler("--allowed-host", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached++ }))
	req := httptest.NewRequest("GET", "/v1/cluster", nil)
	req.Proto, req.ProtoMajor, req.ProtoMinor = "HTTP/1.0", 1, 0
	req.Host = ""
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var body struct{ Error string }
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("body %q: %v", rec.Body, err)
	}
	if rec.Code != http.StatusMisdirectedRequest || !strings.Contains(body.Error, "no Host") || reached != 0 {
		t.Errorf("no Host: %d %q, handler reached %d times; want 421 saying it has no Host, not reached", rec.Code, body.Error, reached)
	}
}

// TestAllowedHostsWithToken: a request by an unknown name that carries
// an Authorization header goes to the token-checked handler, whatever the
// header holds: there a bad token is refused. Handler alone, and
// WithToken without a checked handler, refuse it 421: a rebinding page
// may send a header of its own, and open routes look at none.
func TestAllowedHostsWithToken(t *testing.T) {
	a, _ := NewAllowedHosts()
	var open, checked int
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { open++ })
	tokenChecked := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { checked++ })
	req := httptest.NewRequest("GET", "/v1/cluster", nil)
	req.Host = "control.example:8000"
	req.Header.Set("Authorization", "Bearer anything")
	for _, h := range []http.Handler{a.Handler("--allowed-host", next), a.WithToken("--allowed-host", next, nil)} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusMisdirectedRequest || open != 0 || checked != 0 {
			t.Errorf("by name with a header, no token check: %d, open %d, checked %d; want 421", rec.Code, open, checked)
		}
	}
	h := a.WithToken("--allowed-host", next, tokenChecked)
	h.ServeHTTP(httptest.NewRecorder(), req)
	if open != 0 || checked != 1 {
		t.Errorf("by name with a header: open %d, checked %d; want to the token check", open, checked)
	}
	req.Header.Del("Authorization")
	req.Header.Set("Cookie", "underlay_session=x") // the browser's to send, to a rebound name too
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusMisdirectedRequest || open != 0 || checked != 1 {
		t.Errorf("by name with a cookie: %d, open %d, checked %d; want 421", rec.Code, open, checked)
	}
	req.Host = "127.0.0.1:8000"
	h.ServeHTTP(httptest.NewRecorder(), req)
	if open != 1 {
		t.Errorf("by address: open %d, want 1", open)
	}
}
