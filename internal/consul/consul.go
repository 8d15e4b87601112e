// Package consul connects underlay to a Consul agent: it builds the API
// client from flags and the standard CONSUL_HTTP_* environment (address, ACL
// token, TLS) and adapts it to the interfaces underlay's packages declare.
//
// Every Consul client underlay makes is built here (NewClient, and
// NewEndpoint for plain HTTP requests). The adapters here implement the
// interfaces other packages declare: Catalog (register.Catalog), KV
// (netspec.KV, ipam.KV, inventory.KV, taskmetrics.KV, doctor.KV) over
// kvstore's vocabulary, and NodeCatalog (the catalog's underlay services,
// for node rm; internal/app adapts it to decommission.Services). It may import kvstore, register (for the types it
// adapts), secretfile, tlsfile and backoff; its I/O edge is Consul's HTTP
// API.
package consul

import (
	"cmp"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/underlay/underlay/internal/secretfile"
	"github.com/underlay/underlay/internal/termtext"
)

// Options override the CONSUL_HTTP_* environment; empty fields keep it.
type Options struct {
	Addr          string // host:port, http://host:port, https://host:port or unix:///path
	Token         string
	TokenFile     string
	CAFile        string
	CertFile      string
	KeyFile       string
	TLSServerName string
	// InsecureSkipVerify disables server certificate checks; for tests only.
	InsecureSkipVerify bool
	// ProxyFromEnv reaches Consul through the environment's HTTP_PROXY,
	// HTTPS_PROXY and NO_PROXY, unless over a unix:// socket. Off, no proxy
	// is used: it would see the ACL token of every request.
	ProxyFromEnv bool
	// Log receives the token file's warnings (readable by others, unreadable,
	// changed), the TLS files' and that of a credential sent in clear; nil
	// discards them. Tokens and passwords are never logged.
	Log *slog.Logger

	// fileClock is the clock of the looks at the token file
	// (secretfile.WithClock) and the TLS files (tlsfile.WithClock), for
	// tests; nil: time.Now.
	fileClock func() time.Time
	// proxyCAs verify an https:// proxy's certificate, for tests; nil:
	// the system's CAs.
	proxyCAs *x509.CertPool
}

// fileOptions are the options of o's token and TLS files (secretfile's,
// which tlsfile takes too).
func (o Options) fileOptions() []secretfile.Option {
	if o.fileClock == nil {
		return nil
	}
	return []secretfile.Option{secretfile.WithClock(o.fileClock)}
}

// NewClient returns a Consul API client for o on top of the environment.
func NewClient(o Options) (*api.Client, error) {
	cfg, err := clientConfig(o)
	if err != nil {
		return nil, err
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("consul client for %s: %w", cfg.Address, err)
	}
	return c, nil
}

// clientConfig is NewClient's configuration, with its HTTP client.
func clientConfig(o Options) (*api.Config, error) {
	cfg := api.DefaultConfig() // reads CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, CONSUL_CACERT...
	scheme, rest, err := checkedAddr(o, cfg.Address)
	if err != nil {
		return nil, err
	}
	switch {
	case scheme == "unix":
		cfg.Address = "unix://" + rest
	case o.Addr != "" && scheme != "":
		cfg.Scheme, cfg.Address = scheme, rest
	case scheme != "":
		// Consul's client takes the scheme, and never goes back to http
		// from CONSUL_HTTP_SSL's https.
		cfg.Address = scheme + "://" + rest
	default:
		cfg.Address = rest
	}
	if o.Token != "" && o.TokenFile != "" {
		return nil, errors.New("consul: give --consul-token or --consul-token-file, not both")
	}
	// A token file, given or from CONSUL_HTTP_TOKEN_FILE (which wins over
	// CONSUL_HTTP_TOKEN, as in Consul's CLI), is read again when it
	// changes: every request carries the file's current token.
	var tokenFile *secretfile.File
	switch path := cmp.Or(o.TokenFile, cfg.TokenFile); {
	case o.Token != "":
		cfg.Token, cfg.TokenFile = o.Token, ""
	case path != "":
		// Empty: no ACL token (a stack's secret on a Consul without ACLs).
		f, err := secretfile.OpenOptional(path, "consul ACL token", o.Log, o.fileOptions()...)
		if err != nil {
			return nil, fmt.Errorf("consul: %w", err)
		}
		tokenFile = f
		cfg.Token, cfg.TokenFile = string(f.Value()), ""
	}
	if err := applyTLS(cfg, o); err != nil {
		return nil, err
	}
	hc, err := httpClient(cfg, tokenFile, o)
	if err != nil {
		return nil, err
	}
	// Consul's client follows redirects anywhere.
	hc.CheckRedirect = sameHost
	cfg.HttpClient = hc
	return cfg, nil
}

// applyTLS sets o's TLS settings over the environment's in cfg: the
// client and the endpoint reach the agent with the same ones.
func applyTLS(cfg *api.Config, o Options) error {
	if o.CAFile != "" || o.CertFile != "" || o.KeyFile != "" {
		cfg.Scheme = "https"
	}
	if o.CAFile != "" {
		cfg.TLSConfig.CAFile = o.CAFile
	}
	if o.CertFile != "" {
		cfg.TLSConfig.CertFile = o.CertFile
	}
	if o.KeyFile != "" {
		cfg.TLSConfig.KeyFile = o.KeyFile
	}
	if (cfg.TLSConfig.CertFile == "") != (cfg.TLSConfig.KeyFile == "") {
		return errors.New("consul: a client certificate needs both --consul-client-cert and --consul-client-key")
	}
	if o.TLSServerName != "" {
		cfg.TLSConfig.Address = o.TLSServerName
	}
	if o.InsecureSkipVerify {
		cfg.TLSConfig.InsecureSkipVerify = true
	}
	return nil
}

// httpClient is the HTTP client for cfg's agent. With a token file, it
// sets every request's ACL token to the file's current one: Consul's
// client reads a token file once; this one follows rotations. It takes no
// proxy from the environment (HTTP_PROXY, HTTPS_PROXY) unless
// o.ProxyFromEnv: the proxy would see every request's ACL token; nor to a
// unix:// socket, which is never proxied (the dialer goes to the socket
// whatever the proxy; an https:// one failed every request). Its TLS
// files are read again when they change (reloadTLS). To an agent where a
// token goes in clear, the first request that carries one is warned of.
func httpClient(cfg *api.Config, f *secretfile.File, o Options) (*http.Client, error) {
	clearAddr, clear := inClear(cfg) // before a socket's address is replaced
	tr := cfg.Transport
	// Consul gzips an answer when asked, as Go's transport does unasked;
	// from the local agent that only costs both ends CPU (the agent's
	// drift check's listing, gzipped by Consul and gunzipped here, was a
	// tenth of the agent's CPU in a burst of starts, on a host that dockerd
	// keeps busy).
	tr.DisableCompression = localAgent(cfg)
	// Consul's pooled transport keeps GOMAXPROCS+1 idle connections per
	// host (3 on two cores): each burst of concurrent registrations (one
	// per worker) dialled the agent again for all but those.
	tr.MaxIdleConnsPerHost = max(tr.MaxIdleConnsPerHost, idleConns)
	if !o.ProxyFromEnv || strings.HasPrefix(cfg.Address, "unix://") {
		tr.Proxy = nil
	}
	if sock, ok := strings.CutPrefix(cfg.Address, "unix://"); ok {
		// Consul's client would build its own HTTP client for a socket
		// (with the environment's proxy): dial it ourselves, under a
		// placeholder host, whatever a redirect names.
		tr = tr.Clone()
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}
		cfg.Address = socketHost
	}
	hc, err := api.NewHttpClient(tr, cfg.TLSConfig)
	if err != nil {
		return nil, fmt.Errorf("consul client for %s: %w", cfg.Address, err)
	}
	if hc.Transport, err = reloadTLS(tr, cfg.TLSConfig, o.proxyCAs, o.Log, o.fileOptions()...); err != nil {
		return nil, err
	}
	if clear && o.Log != nil {
		// Under the token file's transport: it sets the token.
		hc.Transport = &clearTokenWarning{base: hc.Transport, addr: clearAddr, log: o.Log}
	}
	if f != nil {
		hc.Transport = tokenTransport{base: hc.Transport, file: f}
	}
	return hc, nil
}

// inClear tells whether what goes to cfg's agent goes in clear, over
// http:// to an address other than a loopback one, where others on the
// path may read it; and the agent's scheme://address. The address is a
// name or an IP address, host:port or host; a unix:// socket is local.
func inClear(cfg *api.Config) (string, bool) {
	addr, scheme := cfg.Address, cfg.Scheme
	if s, rest, ok := strings.Cut(addr, "://"); ok {
		addr = rest
		// As Consul's client: an address's http:// never takes back the
		// https:// of CONSUL_HTTP_SSL or of a CA given.
		if s != "http" {
			scheme = s
		}
	}
	if scheme != "http" {
		return "", false
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = strings.Trim(addr, "[]")
	}
	if termtext.LoopbackHost(host) {
		return "", false
	}
	return scheme + "://" + addr, true
}

// idleConns is how many idle connections to the agent a client keeps at
// least: as many as the registration's default workers.
const idleConns = 32

// localAgent tells whether cfg's agent is on this host: a unix:// socket,
// or a loopback address.
func localAgent(cfg *api.Config) bool {
	addr := cfg.Address
	if s, rest, ok := strings.Cut(addr, "://"); ok {
		if s == "unix" {
			return true
		}
		addr = rest
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = strings.Trim(addr, "[]")
	}
	return termtext.LoopbackHost(host)
}

// clearTokenWarning warns, once, when a request to an agent reached in
// clear first carries a credential: an ACL token, set at start or, from a
// token file empty then, written later; or CONSUL_HTTP_AUTH's user and
// password (an Authorization header, which Consul's client sets). Requests
// without one say nothing.
type clearTokenWarning struct {
	base http.RoundTripper
	addr string // scheme://host:port, for the warning
	log  *slog.Logger
	// warned is set by the first request with a token.
	warned atomic.Bool
}

func (w *clearTokenWarning) RoundTrip(r *http.Request) (*http.Response, error) {
	if (r.Header.Get("X-Consul-Token") != "" || r.Header.Get("Authorization") != "") && w.warned.CompareAndSwap(false, true) {
		w.log.Warn("the Consul ACL token (or CONSUL_HTTP_AUTH's password) goes in clear over http:// to a non-loopback address: use https:// (--consul-cacert) or a local Consul agent",
			"consul_addr", w.addr)
	}
	return w.base.RoundTrip(r)
}

// sameHost refuses a redirect to another scheme or host:port than the
// request's: Go's client drops only its own credential headers there, and
// would send the ACL token (X-Consul-Token, which the token file's
// transport sets on every request too) to whatever host an answer names.
// Consul redirects only within itself (a path cleaned, "/" to "/ui/").
func sameHost(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	first := via[0].URL
	if req.URL.Scheme != first.Scheme || req.URL.Host != first.Host {
		return fmt.Errorf("redirect to %s://%s, not %s://%s, refused: the ACL token goes to the configured Consul agent only",
			req.URL.Scheme, req.URL.Host, first.Scheme, first.Host)
	}
	return nil
}

// tokenTransport sets X-Consul-Token to the token file's current value.
// underlay never sets a token per request, so whatever the client put
// there came from the file, maybe before a rotation.
type tokenTransport struct {
	base http.RoundTripper
	file *secretfile.File
}

func (t tokenTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("X-Consul-Token", string(t.file.Value()))
	return t.base.RoundTrip(r)
}

// socketHost is the host name under which a unix:// socket's agent is
// reached: requests to it are dialled to the socket.
const socketHost = "consul.sock"

// Endpoint reaches a Consul agent with plain HTTP requests, for what
// Consul's client has no call for (a server's Date header): its scheme,
// host:port and an HTTP client with the TLS of the Options. It carries no
// ACL token.
type Endpoint struct {
	Scheme string
	Addr   string // host:port
	HTTP   *http.Client
}

// NewEndpoint is the Endpoint of the agent o names, on top of the
// environment, as NewClient reads them.
func NewEndpoint(o Options) (Endpoint, error) {
	cfg := api.DefaultConfig()
	scheme, rest, err := checkedAddr(o, cfg.Address)
	if err != nil {
		return Endpoint{}, err
	}
	if scheme != "unix" {
		cfg.Address, cfg.Scheme = rest, cmp.Or(scheme, cfg.Scheme)
	}
	if err := applyTLS(cfg, o); err != nil {
		return Endpoint{}, err
	}
	tr := cfg.Transport
	if !o.ProxyFromEnv || scheme == "unix" {
		// As the client's: what goes to Consul goes to Consul only, and a
		// socket is never proxied.
		tr.Proxy = nil
	}
	if scheme == "unix" {
		// The agent under the client's placeholder host, on its socket;
		// other hosts (doctor asks the leader's HTTP API) as named.
		sock := rest
		tr = tr.Clone()
		dial := tr.DialContext
		if dial == nil {
			dial = (&net.Dialer{}).DialContext
		}
		tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			if host, _, err := net.SplitHostPort(addr); err == nil && host == socketHost {
				var d net.Dialer
				return d.DialContext(ctx, "unix", sock)
			}
			return dial(ctx, network, addr)
		}
		cfg.Address, cfg.Scheme = socketHost, "http"
	}
	hc, err := api.NewHttpClient(tr, cfg.TLSConfig)
	if err != nil {
		return Endpoint{}, fmt.Errorf("consul http client: %w", err)
	}
	if hc.Transport, err = reloadTLS(tr, cfg.TLSConfig, o.proxyCAs, o.Log, o.fileOptions()...); err != nil {
		return Endpoint{}, err
	}
	// As the client's: a redirect to another host would take the request
	// (and the TLS client certificate) there, and its answer for Consul's.
	hc.CheckRedirect = sameHost
	return Endpoint{Scheme: cfg.Scheme, Addr: cfg.Address, HTTP: hc}, nil
}

// checkedAddr checks the agent's address: o.Addr, or env (Consul's
// client's reading of CONSUL_HTTP_ADDR) without it. Its error names the
// address and where it was given.
func checkedAddr(o Options, env string) (scheme, rest string, err error) {
	addr, from := env, "$CONSUL_HTTP_ADDR"
	if o.Addr != "" {
		addr, from = o.Addr, "--consul-addr"
	}
	scheme, rest, err = splitAddr(addr)
	if err != nil {
		return "", "", fmt.Errorf("consul: %s %q: %w", from, termtext.RedactAddr(addr), err)
	}
	return scheme, rest, nil
}

// splitAddr splits a Consul agent's address into its scheme ("" when it
// names none) and the rest: host:port, or host alone (a proxy on the
// scheme's port), a trailing slash dropped; or unix:// and a socket's
// path. Consul's client takes anything, then fails every request (or, for
// "http://", quietly reaches the default agent).
func splitAddr(addr string) (scheme, rest string, err error) {
	scheme, rest, found := strings.Cut(addr, "://")
	if !found {
		scheme, rest = "", addr
	}
	switch scheme {
	case "unix":
		if rest == "" {
			return "", "", errors.New("want unix:// and the path of Consul's socket")
		}
		return scheme, rest, nil
	case "", "http", "https":
	default:
		return "", "", fmt.Errorf("unknown scheme %s://: want http://, https:// or unix://", scheme)
	}
	rest = strings.TrimSuffix(rest, "/")
	const want = "want host:port, with http:// or https:// before it or not"
	if rest == "" || strings.ContainsAny(rest, "/?#@ \t\n") {
		return "", "", errors.New(want)
	}
	host, port, err := net.SplitHostPort(rest)
	if err != nil {
		// A host alone: a name, an IPv4 address, or an IPv6 one in brackets.
		host, port = rest, ""
		if h, ok := strings.CutPrefix(rest, "["); ok {
			h, ok = strings.CutSuffix(h, "]")
			if _, err := netip.ParseAddr(h); !ok || err != nil {
				return "", "", errors.New(want)
			}
			host = h
		} else if strings.Contains(rest, ":") {
			return "", "", errors.New(want)
		}
	}
	if strings.ContainsAny(host, "[]") {
		return "", "", errors.New(want)
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return "", "", fmt.Errorf("port %q: want 1 to 65535", port)
		}
	}
	return scheme, rest, nil
}
