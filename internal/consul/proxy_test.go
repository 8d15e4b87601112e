package consul

import (
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/underlay/underlay/internal/testlog"
)

// transportOf is the *http.Transport under hc's token rotation, if any.
func transportOf(t *testing.T, hc *http.Client) *http.Transport {
	t.Helper()
	rt := hc.Transport
	if tt, ok := rt.(tokenTransport); ok {
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
// (--consul-proxy-from-env) asks for it, over TCP, a socket or with a
// token file alike.
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
			cfg, err := clientConfig(o)
			if err != nil {
				t.Fatalf("%+v: %v", o, err)
			}
			if proxied := transportOf(t, cfg.HttpClient).Proxy != nil; proxied != fromEnv {
				t.Errorf("client for %s, ProxyFromEnv %v: proxy from the environment %v", o.Addr, fromEnv, proxied)
			}
			ep, err := NewEndpoint(o)
			if err != nil {
				t.Fatalf("%+v: %v", o, err)
			}
			if proxied := transportOf(t, ep.HTTP).Proxy != nil; proxied != fromEnv {
				t.Errorf("endpoint for %s, ProxyFromEnv %v: proxy from the environment %v", o.Addr, fromEnv, proxied)
			}
		}
	}
}

// TestPlainTokenWarning: an ACL token sent over http:// to another host
// than this one can be read on the way: the client warns once, when it is
// built, naming the address (never the token); over loopback, https:// or
// a socket, or with no token, it says nothing.
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
		if _, err := clientConfig(tc.o); err != nil {
			t.Fatalf("%+v: %v", tc.o, err)
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
