package adapter

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/underlay/underlay/internal/testlog"
)

func TestParseQueryResponse(t *testing.T) {
	tests := []struct {
		name, body string
		want       float64
		wantErr    string
	}{
		{name: "one sample", body: `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000.1,"42.5"]}]}}`, want: 42.5},
		{name: "scalar", body: `{"status":"success","data":{"resultType":"scalar","result":[1700000000,"3"]}}`, want: 3},
		{name: "empty", body: `{"status":"success","data":{"resultType":"vector","result":[]}}`, wantErr: "no series"},
		{name: "several", body: `{"status":"success","data":{"resultType":"vector","result":[{"value":[1,"1"]},{"value":[1,"2"]}]}}`, wantErr: "2 series"},
		{name: "matrix", body: `{"status":"success","data":{"resultType":"matrix","result":[]}}`, wantErr: "a matrix"},
		{name: "error", body: `{"status":"error","errorType":"bad_data","error":"parse error"}`, wantErr: "bad_data: parse error"},
		{name: "not JSON", body: `<html>`, wantErr: "no JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseQueryResponse(200, []byte(tt.body))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("= %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestPrometheusQuery(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/prom/api/v1/query" || r.URL.Query().Get("query") != `sum(load{a="b"})` {
			http.Error(w, `{"status":"error","errorType":"test","error":"unexpected `+r.URL.String()+`"}`, 400)
			return
		}
		w.Write([]byte(`{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"7"]}]}}`))
	}))
	defer srv.Close()
	p, err := NewPrometheus(srv.URL+"/prom", nil, quiet())
	if err != nil {
		t.Fatal(err)
	}
	if v, err := p.Query(context.Background(), `sum(load{a="b"})`); err != nil || v != 7 {
		t.Fatalf("Query = %v, %v; want 7", v, err)
	}
	if _, err := NewPrometheus("http://", nil, quiet()); err == nil {
		t.Error("NewPrometheus accepted an address without a host")
	}
}

// TestNewPrometheusBadAddress: an address Prometheus's HTTP API cannot be
// reached at is refused, named, when control starts — a scheme other than
// http or https was taken, and every query then failed at each evaluation.
func TestNewPrometheusBadAddress(t *testing.T) {
	for _, addr := range []string{"http://", "ftp://prom:9090", "unix:///run/prometheus.sock"} {
		_, err := NewPrometheus(addr, nil, quiet())
		if err == nil || !strings.Contains(err.Error(), strconv.Quote(addr)) {
			t.Errorf("NewPrometheus(%q): %v, want an error naming it", addr, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:9090", "https://prom.example:9090/prometheus"} {
		if _, err := NewPrometheus(addr, nil, quiet()); err != nil {
			t.Errorf("NewPrometheus(%q): %v", addr, err)
		}
	}
}

// TestNewPrometheusBadAddressHidesPassword: an address refused was quoted
// whole, so the password of http://user:password@host went into the error
// control prints and logs. (ftp:// is no scheme to termtext.RedactAddr:
// the address reads as the user ftp, the password //ops:s3cret.)
func TestNewPrometheusBadAddressHidesPassword(t *testing.T) {
	for addr, quoted := range map[string]string{
		"ftp://ops:s3cret@prom:9090":      `"ftp:xxxxx@prom:9090"`,
		"http://ops:s3cret@prom:9090/%zz": "ops:xxxxx@",
		"http://ops:s3cret@":              "ops:xxxxx@",
	} {
		_, err := NewPrometheus(addr, nil, quiet())
		if err == nil || strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), quoted) {
			t.Errorf("NewPrometheus(%q): %v, want an error naming it with its password hidden", addr, err)
		}
	}
}

// TestNewPrometheusPasswordOfDigits: a password of digits before a / ?
// or # (https://ops:1234/x@prom:9090) parses as host ops, port 1234, the
// rest its path, query or fragment: it was taken, and the queries went to
// ops:1234 with the URL's password in their path, and their errors quoted
// it. An @ after the host is refused, the password hidden; one escaped
// (%2F) is taken.
func TestNewPrometheusPasswordOfDigits(t *testing.T) {
	for _, addr := range []string{
		"https://ops:1234/s3cret@prom:9090", "http://ops:1234?s3cret@prom:9090",
		"http://ops:1234#s3cret@prom:9090", "ops:1234/s3cret@prom:9090",
	} {
		_, err := NewPrometheus(addr, nil, quiet())
		if err == nil || strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "ops:xxxxx@prom:9090") {
			t.Errorf("NewPrometheus(%q): %v, want an error naming it with its password hidden", addr, err)
		}
	}
	if _, err := NewPrometheus("http://ops:1234%2Fs3cret@prom:9090", nil, quiet()); err != nil {
		t.Errorf("an escaped password: %v", err)
	}
}

// TestPrometheusRedirectKeepsCredentials: the adapter's client followed
// redirects as Go's default does, which sends the headers of Header (an
// Authorization, a tenant's header) on to the host the redirect names:
// the same host on another port or from https:// to http:// with
// Authorization, and any host with other headers. A redirect is no
// longer followed, and the error names where it pointed.
func TestPrometheusRedirectKeepsCredentials(t *testing.T) {
	elsewhere, got := headerRecorder(t)
	redirect := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL+r.URL.RequestURI(), http.StatusTemporaryRedirect)
	})
	overTLS := httptest.NewTLSServer(redirect)
	defer overTLS.Close()
	plain := httptest.NewServer(redirect)
	defer plain.Close()

	for _, tc := range []struct {
		name   string
		base   string
		client *http.Client
	}{
		{"https:// to http:// on the same host", overTLS.URL, overTLS.Client()},
		{"to another port, the default client", plain.URL, nil},
	} {
		got.Store(nil)
		p, err := NewPrometheus(tc.base, tc.client, quiet())
		if err != nil {
			t.Fatal(err)
		}
		p.Header.Set("Authorization", "Bearer s3cret")
		p.Header.Set("X-Scope-OrgID", "tenant")
		_, err = p.Query(context.Background(), "up")
		if h := got.Load(); h != nil {
			t.Errorf("%s: the redirect's target got Authorization %q, X-Scope-OrgID %q; want no request", tc.name, h.Get("Authorization"), h.Get("X-Scope-OrgID"))
		}
		if err == nil || !strings.Contains(err.Error(), elsewhere.URL) || !strings.Contains(err.Error(), "not followed") {
			t.Errorf("%s: %v, want an error naming the redirect's target, not followed", tc.name, err)
		}
	}
}

// TestPrometheusRedirectRedactsLocation: the error of a refused redirect
// quoted the server's Location header as is, a password in its user
// information included. It is quoted with the password replaced, and
// bounded however long the header.
func TestPrometheusRedirectRedactsLocation(t *testing.T) {
	for _, tc := range []struct {
		name, location, want string
	}{
		{"user and password", "http://ops:s3cret@127.0.0.1:9091/api/v1/query", `"http://ops:xxxxx@127.0.0.1:9091/api/v1/query"`},
		{"long, a password", "http://ops:s3cret@127.0.0.1:9091/" + strings.Repeat("a", 1000), `"http://ops:xxxxx@127.0.0.1:9091/aaaa`},
		{"no scheme", "ops:s3cret@prometheus.example:9090", `"ops:xxxxx@prometheus.example:9090"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Location", tc.location)
				w.WriteHeader(http.StatusFound)
			}))
			defer srv.Close()
			p, err := NewPrometheus(srv.URL, nil, quiet())
			if err != nil {
				t.Fatal(err)
			}
			_, err = p.Query(context.Background(), "up")
			if err == nil {
				t.Fatal("no error, want the redirect refused")
			}
			msg := err.Error()
			if strings.Contains(msg, "s3cret") || !strings.Contains(msg, tc.want) {
				t.Errorf("error %q, want it to quote %s and not the password", msg, tc.want)
			}
			if len(msg) > 500 {
				t.Errorf("error of %d bytes, want it bounded", len(msg))
			}
		})
	}
}

// TestPrometheusProxyGetsNoCredentials: with the environment's proxy (the
// default client's) and an http:// Prometheus, the query went to the
// proxy in clear, credentials included: Header's (an Authorization, a
// tenant's X-Scope-OrgID) and the URL's user and password, which Go sends
// as basic authentication. Such a query is refused, naming the proxy and
// the way out; one without credentials still goes through the proxy.
func TestPrometheusProxyGetsNoCredentials(t *testing.T) {
	proxy, got := headerRecorder(t)
	proxyURL, err := url.Parse(proxy.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxyURL.User = url.UserPassword("proxyuser", "proxypass")
	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
	for _, tc := range []struct {
		name, base, header, value string
	}{
		{"Authorization", "http://prom.example:9090", "Authorization", "Bearer s3cret"},
		{"a tenant's header", "http://prom.example:9090", "X-Scope-OrgID", "s3cret"},
		{"the URL's user", "http://ops:s3cret@prom.example:9090", "", ""},
	} {
		got.Store(nil)
		p, err := NewPrometheus(tc.base, client, quiet())
		if err != nil {
			t.Fatal(err)
		}
		if tc.header != "" {
			p.Header.Set(tc.header, tc.value)
		}
		_, err = p.Query(context.Background(), "up")
		if h := got.Load(); h != nil {
			t.Errorf("%s: the proxy got the query, Authorization %q, X-Scope-OrgID %q; want none", tc.name, h.Get("Authorization"), h.Get("X-Scope-OrgID"))
		}
		if err == nil || !strings.Contains(err.Error(), "proxy") || !strings.Contains(err.Error(), "https://") ||
			strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "proxypass") {
			t.Errorf("%s: %v, want an error naming the proxy (its password hidden) and https://", tc.name, err)
		}
	}
	got.Store(nil)
	p, err := NewPrometheus("http://prom.example:9090", client, quiet())
	if err != nil {
		t.Fatal(err)
	}
	if v, err := p.Query(context.Background(), "up"); err != nil || v != 7 || got.Load() == nil {
		t.Errorf("no credentials: Query = %v, %v, through the proxy %v; want 7 through it", v, err, got.Load() != nil)
	}
}

// headerRecorder is a loopback Prometheus, ending with the test, whose
// every query answers 7 and records the headers it came with.
func headerRecorder(t *testing.T) (*httptest.Server, *atomic.Pointer[http.Header]) {
	var got atomic.Pointer[http.Header]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Clone()
		got.Store(&h)
		w.Write([]byte(`{"status":"success","data":{"resultType":"scalar","result":[1,"7"]}}`))
	}))
	t.Cleanup(srv.Close)
	return srv, &got
}

// quiet is a logger that drops what it is given.
func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestPrometheusClearCredentialsWarning: credentials (the URL's user and
// password, sent as basic authentication; Header's values, a bearer
// token say) went in clear over http:// to a Prometheus on another host,
// with no proxy, and nothing said so. The first query that carries
// them now warns, once, naming the address (its password hidden) and
// the credentials (never their values) and saying to use https://. To
// a loopback address or localhost, over https://, or with no
// credentials, nothing is said. Every query goes to a test server on
// loopback whatever the address names (reachAll).
func TestPrometheusClearCredentialsWarning(t *testing.T) {
	plain, _ := headerRecorder(t)
	overTLS := httptest.NewTLSServer(plain.Config.Handler)
	t.Cleanup(overTLS.Close)
	for _, tc := range []struct {
		name, base, header string
		warn               []string // what the warning names
	}{
		{"a bearer token", "http://prom.example:9090", "Authorization", []string{`addr=http://prom.example:9090`, "Authorization"}},
		{"the URL's user", "http://ops:s3cret@10.0.0.5:9090", "", []string{`addr=http://ops:xxxxx@10.0.0.5:9090`, "the address's user and password"}},
		{"a tenant's header, IPv6", "http://[2001:db8::5]:9090", "X-Scope-OrgID", []string{`addr=http://[2001:db8::5]:9090`, "X-Scope-Orgid"}},
		{"both, no scheme", "ops:s3cret@prom.example:9090", "Authorization", []string{"Authorization, the address's user and password"}},
		{"loopback", "http://127.0.0.1:9090", "Authorization", nil},
		{"localhost", "http://ops:s3cret@LocalHost:9090", "", nil},
		{"IPv6 loopback", "http://[::1]:9090", "Authorization", nil},
		{"https", "https://ops:s3cret@example.com:9090", "Authorization", nil},
		{"no credentials", "http://prom.example:9090", "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := plain
			if strings.HasPrefix(tc.base, "https://") {
				srv = overTLS
			}
			var logs testlog.Buffer
			p, err := NewPrometheus(tc.base, reachAll(srv), slog.New(slog.NewTextHandler(&logs, nil)))
			if err != nil {
				t.Fatal(err)
			}
			if tc.header != "" {
				p.Header.Set(tc.header, "Bearer s3cret")
			}
			for range 2 {
				if v, err := p.Query(context.Background(), "up"); err != nil || v != 7 {
					t.Fatalf("Query = %v, %v; want 7", v, err)
				}
			}
			checkClearWarning(t, logs.String(), tc.warn)
		})
	}
}

// TestPrometheusClearCredentialsWarnedWhenSent: the warning comes with
// the first query that carries credentials, not with the first query:
// a Header set after queries without any is warned of then.
func TestPrometheusClearCredentialsWarnedWhenSent(t *testing.T) {
	srv, _ := headerRecorder(t)
	var logs testlog.Buffer
	p, err := NewPrometheus("http://prom.example:9090", reachAll(srv), slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Query(context.Background(), "up"); err != nil {
		t.Fatal(err)
	}
	checkClearWarning(t, logs.String(), nil)
	p.Header.Set("Authorization", "Bearer s3cret")
	for range 2 {
		if _, err := p.Query(context.Background(), "up"); err != nil {
			t.Fatal(err)
		}
	}
	checkClearWarning(t, logs.String(), []string{`addr=http://prom.example:9090`, "Authorization"})
}

// checkClearWarning checks logs: one warning of credentials in clear,
// set in the adapter's component and naming each of want, when want is
// given; none else; and never the secret s3cret.
func checkClearWarning(t *testing.T, logs string, want []string) {
	t.Helper()
	n := strings.Count(logs, "in clear over http://")
	if want == nil && n != 0 || want != nil && n != 1 {
		t.Errorf("warned %d times of credentials in clear, want %d:\n%s", n, min(len(want), 1), logs)
	}
	if want != nil {
		for _, s := range append(want, "component=scale_prometheus", "https://") {
			if !strings.Contains(logs, s) {
				t.Errorf("the warning does not name %q:\n%s", s, logs)
			}
		}
	}
	if strings.Contains(logs, "s3cret") {
		t.Errorf("a credential was logged:\n%s", logs)
	}
}

// reachAll is a client, without a proxy, whose every query goes to srv
// on loopback whatever host it names, so that a Prometheus elsewhere is
// tried without any packet leaving the machine; over https:// it trusts
// srv's certificate (for example.com).
func reachAll(srv *httptest.Server) *http.Client {
	tr := srv.Client().Transport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", srv.Listener.Addr().String())
	}
	return &http.Client{Transport: tr}
}
