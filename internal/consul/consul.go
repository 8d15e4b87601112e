// Package consul connects underlay to a Consul agent: it builds the API
// client from flags and the standard CONSUL_HTTP_* environment (address, ACL
// token, TLS) and adapts it to the interfaces underlay's packages declare.
package consul

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/hashicorp/consul/api"
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
	if o.Token != "" {
		cfg.Token, cfg.TokenFile = o.Token, ""
	}
	if o.TokenFile != "" {
		b, err := os.ReadFile(o.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("consul: read token file: %w", err)
		}
		cfg.Token, cfg.TokenFile = strings.TrimSpace(string(b)), ""
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
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("consul client for %s: %w", cfg.Address, err)
	}
	return c, nil
}
