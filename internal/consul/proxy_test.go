package consul

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/underlay/underlay/internal/secretfile"
	"github.com/underlay/underlay/internal/testclock"
	"github.com/underlay/underlay/internal/testlog"
)

// transportOf is the *http.Transport under hc's token rotation,
// warning and TLS files' reload, if any.
func transportOf(t *testing.T, hc *http.Client) *http.Transport {
	t.Helper()
	rt := hc.Transport
	if tt, ok := rt.(tokenTransport); ok {
		rt = tt.base
	}
	if w, ok := rt.(*clearTokenWarning); ok {
		rt = w.base
	}
	if tt, ok := rt.(*tlsTransports); ok {
		// Its clones, made at the first request, take what is set on it.
		rt = tt.base
	}
	tr, ok := rt.(*http.Transport)
	if !ok {
		t.Fatalf("transport %T, want *http.Transport", rt)
	}
	return tr
}

// TestNoProxyFromEnvironment: an HTTP_PROXY or HTTPS_PROXY in the
// environment (set for something else: a package download, a build) made
// every Consul request, with its ACL token, go through that proxy. The
// client and the endpoint now use none unless ProxyFromEnv
// (--consul-proxy-from-env) asks for it, over TCP or with a token file
// alike. A unix:// socket is never proxied, ProxyFromEnv or not: through an
// https:// proxy every request failed, through an http:// one the proxy
// was named and never reached, the dialer going to the socket.
func TestNoProxyFromEnvironment(t *testing.T) {
	t.Setenv("HTTP_PROXY", "http://127.0.0.1:1")
	t.Setenv("HTTPS_PROXY", "http://127.0.0.1:1")
	t.Setenv("CONSUL_HTTP_ADDR", "")
	t.Setenv("CONSUL_HTTP_TOKEN", "")
	t.Setenv("CONSUL_HTTP_TOKEN_FILE", "")
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, o := range []Options{
		{Addr: "http://consul.example:8500", Token: "secret"},
		{Addr: "https://consul.example:8501", TokenFile: tokenFile},
		{Addr: "unix://" + filepath.Join(dir, "consul.sock"), Token: "secret"},
		{Addr: "unix://" + filepath.Join(dir, "consul.sock"), TokenFile: tokenFile},
	} {
		for _, fromEnv := range []bool{false, true} {
			o.ProxyFromEnv = fromEnv
			want := fromEnv && !strings.HasPrefix(o.Addr, "unix://")
			cfg, err := clientConfig(o)
			if err != nil {
				t.Fatalf("%+v: %v", o, err)
			}
			if proxied := transportOf(t, cfg.HttpClient).Proxy != nil; proxied != want {
				t.Errorf("client for %s, ProxyFromEnv %v: proxy from the environment %v, want %v", o.Addr, fromEnv, proxied, want)
			}
			ep, err := NewEndpoint(o)
			if err != nil {
				t.Fatalf("%+v: %v", o, err)
			}
			if proxied := transportOf(t, ep.HTTP).Proxy != nil; proxied != want {
				t.Errorf("endpoint for %s, ProxyFromEnv %v: proxy from the environment %v, want %v", o.Addr, fromEnv, proxied, want)
			}
		}
	}
}

// tokenServer is a plain HTTP server on loopback that records the last ACL
// token it was sent; reach makes hc's requests, whatever address they
// name, go to it, so that a client of a remote address is tried without
// any packet leaving the machine.
func tokenServer(t *testing.T) (reach func(hc *http.Client), last func() string) {
	t.Helper()
	var token atomic.Pointer[string]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v := r.Header.Get("X-Consul-Token")
		token.Store(&v)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte("{}"))
	}))
	t.Cleanup(srv.Close)
	reach = func(hc *http.Client) {
		transportOf(t, hc).DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", srv.Listener.Addr().String())
		}
	}
	last = func() string {
		if v := token.Load(); v != nil {
			return *v
		}
		return ""
	}
	return reach, last
}

// get makes a request of cfg's client to its agent, answered or not.
func get(t *testing.T, cfg *api.Config) {
	t.Helper()
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.Agent().Self()
}

// TestPlainTokenWarning: an ACL token sent over http:// to another host
// than this one can be read on the way: the client warns once, when the
// token is sent, naming the address (never the token); over loopback,
// https:// or a socket, or with no token, it says nothing.
func TestPlainTokenWarning(t *testing.T) {
	t.Setenv("CONSUL_HTTP_ADDR", "")
	t.Setenv("CONSUL_HTTP_TOKEN", "")
	t.Setenv("CONSUL_HTTP_TOKEN_FILE", "")
	t.Setenv("CONSUL_HTTP_SSL", "")
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		o    Options
		env  string // CONSUL_HTTP_ADDR
		ssl  bool   // CONSUL_HTTP_SSL
		warn bool
	}{
		{o: Options{Addr: "http://10.0.0.5:8500", Token: "secret"}, warn: true},
		{o: Options{Addr: "consul.example:8500", TokenFile: tokenFile}, warn: true},
		{o: Options{Token: "secret"}, env: "http://[2001:db8::5]:8500", warn: true},
		{o: Options{Addr: "http://10.0.0.5:8500"}},
		{o: Options{Addr: "https://10.0.0.5:8501", Token: "secret"}},
		{o: Options{Addr: "10.0.0.5:8501", Token: "secret"}, ssl: true},
		// Consul's client never goes back to http:// from CONSUL_HTTP_SSL's
		// https://, whatever the address says: the token goes encrypted.
		{o: Options{Token: "secret"}, env: "http://10.0.0.5:8501", ssl: true},
		{o: Options{Addr: "127.0.0.1:8500", Token: "secret"}},
		{o: Options{Addr: "http://localhost:8500", Token: "secret"}},
		{o: Options{Addr: "http://[::1]:8500", Token: "secret"}},
		{o: Options{Token: "secret"}}, // the default agent, 127.0.0.1:8500
		{o: Options{Addr: "unix://" + filepath.Join(dir, "consul.sock"), Token: "secret"}},
	} {
		t.Setenv("CONSUL_HTTP_ADDR", tc.env)
		t.Setenv("CONSUL_HTTP_SSL", strconv.FormatBool(tc.ssl))
		var logs testlog.Buffer
		tc.o.Log = slog.New(slog.NewTextHandler(&logs, nil))
		cfg, err := clientConfig(tc.o)
		if err != nil {
			t.Fatalf("%+v: %v", tc.o, err)
		}
		reach, _ := tokenServer(t)
		reach(cfg.HttpClient)
		for range 2 {
			get(t, cfg)
		}
		got := logs.String()
		if warned := strings.Contains(got, "in clear over http://"); warned != tc.warn {
			t.Errorf("%s%s with a token: warned %v, want %v:\n%s", tc.o.Addr, tc.env, warned, tc.warn, got)
		}
		if strings.Contains(got, "secret") {
			t.Errorf("%s: the token was logged:\n%s", tc.o.Addr, got)
		}
		if n := strings.Count(got, "in clear"); n > 1 {
			t.Errorf("%s: warned %d times, want once:\n%s", tc.o.Addr, n, got)
		}
	}
}

// TestPlainTokenWarnedWhenSent: the warning of a token in clear was
// decided once, when the client was built: a token file empty then (no
// ACL token) and given a token later sent it in clear over http:// to a
// remote agent with no warning ever. It is now given when a token is
// first sent that way, once; to a loopback agent, nothing is said.
func TestPlainTokenWarnedWhenSent(t *testing.T) {
	for _, v := range []string{"CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "CONSUL_HTTP_SSL"} {
		t.Setenv(v, "")
	}
	for _, tc := range []struct {
		addr string
		warn bool
	}{
		{"http://10.0.0.5:8500", true},
		{"http://127.0.0.1:8500", false},
	} {
		tokenFile := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(tokenFile, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		var logs testlog.Buffer
		clk := testclock.New(time.Now())
		cfg, err := clientConfig(Options{Addr: tc.addr, TokenFile: tokenFile, Log: slog.New(slog.NewTextHandler(&logs, nil)), fileClock: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		reach, last := tokenServer(t)
		reach(cfg.HttpClient)
		get(t, cfg)
		if strings.Contains(logs.String(), "in clear") {
			t.Errorf("%s: warned before any token was sent:\n%s", tc.addr, &logs)
		}

		if err := os.WriteFile(tokenFile, []byte("secret\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		// The file is read again secretfile.CheckEvery after the last read.
		clk.Add(secretfile.CheckEvery)
		get(t, cfg)
		if got := last(); got != "secret" {
			t.Fatalf("%s: token %q sent once the file held one, want secret", tc.addr, got)
		}
		get(t, cfg)
		checkClearWarning(t, tc.addr+": the token sent", logs.String(), tc.warn, "secret")
	}
}

// TestPlainBasicAuthWarning: CONSUL_HTTP_AUTH's user and password, which
// Consul's client sends with every request (basic authentication, for a
// proxy in front of Consul), went in clear over http:// to a remote agent
// with no warning: only an ACL token was warned of. It is now warned of
// the same way, once, naming the address and never the password; over
// loopback, nothing is said.
func TestPlainBasicAuthWarning(t *testing.T) {
	for _, v := range []string{"CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "CONSUL_HTTP_SSL"} {
		t.Setenv(v, "")
	}
	t.Setenv("CONSUL_HTTP_AUTH", "ops:s3cret")
	for _, tc := range []struct {
		addr string
		warn bool
	}{
		{"http://10.0.0.5:8500", true},
		{"http://127.0.0.1:8500", false},
	} {
		var logs testlog.Buffer
		cfg, err := clientConfig(Options{Addr: tc.addr, Log: slog.New(slog.NewTextHandler(&logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		reach, _ := tokenServer(t)
		reach(cfg.HttpClient)
		for range 2 {
			get(t, cfg)
		}
		checkClearWarning(t, tc.addr+" with CONSUL_HTTP_AUTH", logs.String(), tc.warn, "s3cret")
	}
}

// checkClearWarning checks logs, after requests that sent secret: warned
// once that it goes in clear when warn, else not at all, and never naming
// it.
func checkClearWarning(t *testing.T, what, logs string, warn bool, secret string) {
	t.Helper()
	want := 0
	if warn {
		want = 1
	}
	if n := strings.Count(logs, "in clear over http://"); n != want {
		t.Errorf("%s: warned %d times, want %d:\n%s", what, n, want, logs)
	}
	if strings.Contains(logs, secret) {
		t.Errorf("%s: %q was logged:\n%s", what, secret, logs)
	}
}
