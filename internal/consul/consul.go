// Package consul connects underlay to a Consul agent: it builds the API
// client from flags and the standard CONSUL_HTTP_* environment (address, ACL
// token, TLS) and adapts it to the interfaces underlay's packages declare.
//
// Every Consul client underlay makes is built here (NewClient, and
// NewEndpoint for plain HTTP requests). The adapters here implement the
// interfaces other packages declare: Catalog (register.Catalog), KV
// (netspec.KV, ipam.KV, inventory.KV, taskmetrics.KV, doctor.KV) over
// kvstore's vocabulary. It may import kvstore, register (for the types it
// adapts), secretfile and backoff; its I/O edge is Consul's HTTP API.
package consul

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"

	"github.com/hashicorp/consul/api"

	"github.com/underlay/underlay/internal/secretfile"
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
	// Log receives the token file's warnings (readable by others, unreadable,
	// changed); nil discards them. Tokens are never logged.
	Log *slog.Logger
}

// NewClient returns a Consul API client for o on top of the environment.
func NewClient(o Options) (*api.Client, error) {
	cfg := api.DefaultConfig() // reads CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, CONSUL_CACERT...
	if o.Addr != "" {
		addr := o.Addr
		switch {
		case strings.HasPrefix(addr, "https://"):
			cfg.Scheme, addr = "https", strings.TrimPrefix(addr, "https://")
		case strings.HasPrefix(addr, "http://"):
			cfg.Scheme, addr = "http", strings.TrimPrefix(addr, "http://")
		}
		cfg.Address = addr
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
		f, err := secretfile.OpenOptional(path, "consul ACL token", o.Log)
		if err != nil {
			return nil, fmt.Errorf("consul: %w", err)
		}
		tokenFile = f
		cfg.Token, cfg.TokenFile = string(f.Value()), ""
	}
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
		return nil, errors.New("consul: a client certificate needs both --consul-client-cert and --consul-client-key")
	}
	if o.TLSServerName != "" {
		cfg.TLSConfig.Address = o.TLSServerName
	}
	if o.InsecureSkipVerify {
		cfg.TLSConfig.InsecureSkipVerify = true
	}
	if tokenFile != nil {
		if err := rotateTokens(cfg, tokenFile); err != nil {
			return nil, err
		}
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("consul client for %s: %w", cfg.Address, err)
	}
	return c, nil
}

// rotateTokens gives cfg an HTTP client that sets every request's ACL token
// to the token file's current one. Consul's client reads a token file once;
// this one follows rotations.
func rotateTokens(cfg *api.Config, f *secretfile.File) error {
	tr := cfg.Transport
	if sock, ok := strings.CutPrefix(cfg.Address, "unix://"); ok {
		// Consul's client would replace our HTTP client for a socket: dial
		// it ourselves, under a placeholder host.
		tr = tr.Clone()
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}
		cfg.Address = "consul.sock"
	}
	hc, err := api.NewHttpClient(tr, cfg.TLSConfig)
	if err != nil {
		return fmt.Errorf("consul client for %s: %w", cfg.Address, err)
	}
	hc.Transport = tokenTransport{base: hc.Transport, file: f}
	cfg.HttpClient = hc
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
	if o.Addr != "" {
		cfg.Address = o.Addr
	}
	cfg.Address, cfg.Scheme = splitScheme(cfg.Address, cfg.Scheme)
	if o.CAFile != "" || o.CertFile != "" || o.KeyFile != "" {
		cfg.Scheme = "https"
	}
	if o.CAFile != "" {
		cfg.TLSConfig.CAFile = o.CAFile
	}
	if o.CertFile != "" {
		cfg.TLSConfig.CertFile, cfg.TLSConfig.KeyFile = o.CertFile, o.KeyFile
	}
	if o.TLSServerName != "" {
		cfg.TLSConfig.Address = o.TLSServerName
	}
	cfg.TLSConfig.InsecureSkipVerify = cfg.TLSConfig.InsecureSkipVerify || o.InsecureSkipVerify
	hc, err := api.NewHttpClient(cfg.Transport, cfg.TLSConfig)
	if err != nil {
		return Endpoint{}, fmt.Errorf("consul http client: %w", err)
	}
	return Endpoint{Scheme: cfg.Scheme, Addr: cfg.Address, HTTP: hc}, nil
}

func splitScheme(addr, scheme string) (string, string) {
	switch {
	case strings.HasPrefix(addr, "https://"):
		return strings.TrimPrefix(addr, "https://"), "https"
	case strings.HasPrefix(addr, "http://"):
		return strings.TrimPrefix(addr, "http://"), "http"
	}
	return addr, scheme
}
