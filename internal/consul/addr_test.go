package consul

import (
	"net/http/httptest"
	"strings"
	"testing"
)

// TestConsulAddr: a bad --consul-addr (or $CONSUL_HTTP_ADDR) is refused
// when the client is built, naming it, rather than failing every request
// (the agent retried for ever) or silently meaning the default agent; a
// URL with a trailing slash reaches the agent it names.
func TestConsulAddr(t *testing.T) {
	t.Setenv("CONSUL_HTTP_TOKEN_FILE", "")
	t.Setenv("CONSUL_HTTP_TOKEN", "")
	t.Setenv("CONSUL_HTTP_ADDR", "")
	for _, addr := range []string{"http://", "https://", "127.0.0.1:85x0", "127.0.0.1:99999", "127.0.0.1:0", " 127.0.0.1:8500",
		"http://127.0.0.1:8500/consul", "http://user@127.0.0.1:8500", "127.0.0.1:8500?x=1", "[::1:8500", "ftp://h:21", "unix://", "[::1]:8500]"} {
		for _, build := range []struct {
			name string
			err  func(Options) error
		}{
			{"client", func(o Options) error { _, err := NewClient(o); return err }},
			{"endpoint", func(o Options) error { _, err := NewEndpoint(o); return err }},
		} {
			err := build.err(Options{Addr: addr})
			if err == nil || !strings.Contains(err.Error(), "--consul-addr") || !strings.Contains(err.Error(), addr) {
				t.Errorf("%s of --consul-addr %q: %v; want refused, naming it", build.name, addr, err)
			}
		}
	}
	t.Setenv("CONSUL_HTTP_ADDR", "127.0.0.1:85x0")
	if _, err := NewClient(Options{}); err == nil || !strings.Contains(err.Error(), "CONSUL_HTTP_ADDR") || !strings.Contains(err.Error(), "85x0") {
		t.Errorf("client of CONSUL_HTTP_ADDR=127.0.0.1:85x0: %v; want refused, naming it", err)
	}
	t.Setenv("CONSUL_HTTP_ADDR", "")

	rec := &tokenRecorder{}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	for _, addr := range []string{srv.URL, srv.URL + "/", strings.TrimPrefix(srv.URL, "http://")} {
		c, err := NewClient(Options{Addr: addr, Token: "t"})
		if err != nil {
			t.Errorf("client of --consul-addr %q: %v", addr, err)
			continue
		}
		if _, _, err := c.KV().Get("k", nil); err != nil {
			t.Errorf("client of --consul-addr %q: %v", addr, err)
		}
		ep, err := NewEndpoint(Options{Addr: addr})
		if err != nil || ep.Scheme != "http" || ep.Addr != strings.TrimPrefix(srv.URL, "http://") {
			t.Errorf("endpoint of --consul-addr %q: %+v, %v; want http to %s", addr, ep, err, strings.TrimPrefix(srv.URL, "http://"))
		}
	}
	for _, addr := range []string{"consul.example.com", "https://consul.example.com:8501", "[::1]:8500", "unix:///run/consul/http.sock"} {
		if _, err := NewClient(Options{Addr: addr}); err != nil {
			t.Errorf("client of --consul-addr %q: %v, want it taken", addr, err)
		}
	}
}

// TestConsulAddrHidesPassword: a --consul-addr (or $CONSUL_HTTP_ADDR)
// with user information, refused, was quoted whole, so the password of
// https://user:password@host went into the error underlay prints and
// logs. It is named with its password hidden, as the Prometheus adapter
// names its own.
func TestConsulAddrHidesPassword(t *testing.T) {
	for _, v := range []string{"CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE"} {
		t.Setenv(v, "")
	}
	// The last: the password may be s3cret@consul.example:8500/x, written
	// unescaped, so the host is hidden with it (termtext.RedactAddr).
	for addr, quoted := range map[string]string{
		"https://ops:s3cret@consul.example:8501":    "ops:xxxxx@consul.example",
		"ops:s3cret@consul.example:8500":            "ops:xxxxx@consul.example",
		"http://ops:s3cret@consul.example:8500/x@y": `"http://ops:xxxxx@y"`,
	} {
		for _, fromEnv := range []bool{false, true} {
			o := Options{Addr: addr}
			if fromEnv {
				o.Addr = ""
				t.Setenv("CONSUL_HTTP_ADDR", addr)
			}
			_, cerr := NewClient(o)
			_, eerr := NewEndpoint(o)
			for _, err := range []error{cerr, eerr} {
				if err == nil || strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), quoted) {
					t.Errorf("address %q (from the environment %v): %v; want refused, named with its password hidden", addr, fromEnv, err)
				}
			}
			t.Setenv("CONSUL_HTTP_ADDR", "")
		}
	}
}
