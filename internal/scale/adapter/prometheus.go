package adapter

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/underlay/underlay/internal/termtext"
)

// Prometheus evaluates instant queries through Prometheus's HTTP API
// (/api/v1/query); it implements scale.MetricSource.
type Prometheus struct {
	base   *url.URL
	client *http.Client
	log    *slog.Logger
	// Header is added to every request (an Authorization header, say).
	Header http.Header
	// clearWarned is set by the first query that sends credentials in
	// clear (warnClear).
	clearWarned atomic.Bool
}

// NewPrometheus returns a client of the Prometheus server at base
// ("http://127.0.0.1:9090"); client nil means a client with a 10s timeout.
// Redirects are never followed, whatever client's policy: Go's default
// sends Header's credentials on to the host a redirect names (another
// port, https:// to http://, or any host for headers other than
// Authorization); the scale client follows none either. A query with
// credentials to an http:// base through a proxy is refused (checkProxy);
// the first sent in clear otherwise, to a host other than this one, is
// warned of on log (warnClear).
func NewPrometheus(base string, client *http.Client, log *slog.Logger) (*Prometheus, error) {
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	u, err := url.Parse(base)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("prometheus address %q: want http://HOST:PORT or https://HOST:PORT", termtext.RedactAddr(base))
	}
	// A password of digits before a / ? or # parses as a port, the rest
	// as a path, query or fragment: queries would go to the user's name
	// as a host, the password in their URL.
	_, rest, _ := strings.Cut(base, "://")
	if i := strings.IndexAny(rest, "/?#"); i >= 0 && strings.Contains(rest[i:], "@") {
		return nil, fmt.Errorf("prometheus address %q: an @ after the host; a password's / ? or # is written %%2F %%3F %%23", termtext.RedactAddr(base))
	}
	c := http.Client{Timeout: 10 * time.Second}
	if client != nil {
		c = *client
	}
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &Prometheus{base: u, client: &c, log: log.With("component", "scale_prometheus"), Header: http.Header{}}, nil
}

// checkProxy refuses req when it carries credentials (Header's, or the
// URL's user, which Go sends as basic authentication) to an http://
// Prometheus through a proxy (the environment's, HTTP_PROXY, with the
// default client): the proxy would read them, as it reads the whole
// query. To an https:// Prometheus a proxy only tunnels. A warning would
// come after the credentials had gone; refused, the query fails, and
// the error says how to go without the proxy or over https://. A
// client's transport other than an *http.Transport is taken as it is:
// its proxy, if any, is unknown here. Control, the one caller in the
// product, passes no client, so the transport is http.DefaultTransport,
// which nothing in the binary replaces.
func (p *Prometheus) checkProxy(req *http.Request) error {
	what := p.credentials(req)
	if req.URL.Scheme != "http" || len(what) == 0 {
		return nil
	}
	rt := p.client.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	tr, ok := rt.(*http.Transport)
	if !ok || tr.Proxy == nil {
		return nil
	}
	proxy, err := tr.Proxy(req)
	if err != nil || proxy == nil {
		return nil // the transport fails on the same error, or goes direct
	}
	return fmt.Errorf("prometheus query not sent: its credentials (%s) would go through the proxy %s, which reads a plain http:// request whole; give --prometheus-url as https:// (the proxy then only tunnels) or name its host in NO_PROXY",
		strings.Join(what, ", "), proxy.Redacted())
}

// warnClear warns, once, when req is the first query to carry
// credentials in clear: over http:// to an address other than a loopback
// one or localhost, not through a proxy (checkProxy refuses those), so
// that others on the path may read them. It names them, never their
// values, as the Consul client warns of its ACL token. It decides on the
// request's URL, not on the transport: one other than an *http.Transport
// that encrypts http:// requests (a tunnel, a service mesh) would
// be warned of all the same, a warning too many rather than one
// missing. None occurs in the product: control passes no client
// (checkProxy).
func (p *Prometheus) warnClear(req *http.Request) {
	if p.clearWarned.Load() || req.URL.Scheme != "http" || termtext.LoopbackHost(req.URL.Hostname()) {
		return
	}
	what := p.credentials(req)
	if len(what) > 0 && p.clearWarned.CompareAndSwap(false, true) {
		p.log.Warn("the Prometheus queries' credentials go in clear over http:// to a non-loopback address: give --prometheus-url as https://",
			"addr", p.base.Redacted(), "credentials", strings.Join(what, ", "))
	}
}

// credentials names the credentials req carries, never their values:
// Header's names, sorted, and the URL's user and password, which Go
// sends as basic authentication.
func (p *Prometheus) credentials(req *http.Request) []string {
	what := slices.Sorted(maps.Keys(p.Header))
	if req.URL.User != nil {
		what = append(what, "the address's user and password")
	}
	return what
}

// queryResponse is the part of /api/v1/query's answer read here.
type queryResponse struct {
	Status    string `json:"status"`
	ErrorType string `json:"errorType"`
	Error     string `json:"error"`
	Data      struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	} `json:"data"`
}

// Query implements scale.MetricSource: the query must give a scalar or a
// vector of exactly one sample.
func (p *Prometheus) Query(ctx context.Context, query string) (float64, error) {
	u := p.base.JoinPath("api/v1/query")
	u.RawQuery = url.Values{"query": {query}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return 0, err
	}
	for k, v := range p.Header {
		req.Header[k] = v
	}
	if err := p.checkProxy(req); err != nil {
		return 0, err
	}
	p.warnClear(req)
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("query prometheus: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		// The Location may carry user:password: redacted before it is cut,
		// so that a cut cannot leave part of the password unredacted.
		loc := termtext.RedactAddr(resp.Header.Get("Location"))
		return 0, fmt.Errorf("prometheus answered %d, a redirect to %.200q: not followed, so that the query's credentials go to the configured address only; give the address it names", resp.StatusCode, loc)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return 0, fmt.Errorf("read prometheus answer: %w", err)
	}
	return ParseQueryResponse(resp.StatusCode, b)
}

// ParseQueryResponse reads the single value of an /api/v1/query answer.
func ParseQueryResponse(code int, body []byte) (float64, error) {
	var qr queryResponse
	if err := json.Unmarshal(body, &qr); err != nil {
		return 0, fmt.Errorf("prometheus answered %d with no JSON: %.200s", code, body)
	}
	if qr.Status != "success" {
		return 0, fmt.Errorf("prometheus: %s: %s", qr.ErrorType, qr.Error)
	}
	switch qr.Data.ResultType {
	case "scalar":
		var sample []json.RawMessage
		if err := json.Unmarshal(qr.Data.Result, &sample); err != nil {
			return 0, fmt.Errorf("prometheus scalar: %w", err)
		}
		return sampleValue(sample)
	case "vector":
		var vec []struct {
			Metric map[string]string `json:"metric"`
			Value  []json.RawMessage `json:"value"`
		}
		if err := json.Unmarshal(qr.Data.Result, &vec); err != nil {
			return 0, fmt.Errorf("prometheus vector: %w", err)
		}
		switch len(vec) {
		case 0:
			return 0, fmt.Errorf("query returned no series")
		case 1:
			return sampleValue(vec[0].Value)
		}
		return 0, fmt.Errorf("query returned %d series, want one (aggregate it, with sum or avg)", len(vec))
	}
	return 0, fmt.Errorf("query returned a %s, want a scalar or a one-sample vector", qr.Data.ResultType)
}

// sampleValue reads [<time>, "<value>"].
func sampleValue(s []json.RawMessage) (float64, error) {
	if len(s) != 2 {
		return 0, fmt.Errorf("sample %v: want [time, value]", s)
	}
	var v string
	if err := json.Unmarshal(s[1], &v); err != nil {
		return 0, fmt.Errorf("sample value: %w", err)
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return 0, fmt.Errorf("sample value %q: %w", v, err)
	}
	return f, nil
}
