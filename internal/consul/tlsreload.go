package consul

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"

	"github.com/hashicorp/consul/api"

	"github.com/underlay/underlay/internal/tlsfile"
)

// reloadTLS makes tr dial TLS with conf's files as they are at each new
// connection: Consul's client reads them once, so a rotated certificate
// or CA needed a restart. tlsfile looks at the files at most every
// tlsfile.CheckEvery (connections are pooled besides) and reads them
// again when one changed; a set that does not load (a certificate written
// before its key) keeps the last good one, warned of once. With no file
// to follow it leaves tr as it is.
func reloadTLS(tr *http.Transport, conf api.TLSConfig, log *slog.Logger, opts ...tlsfile.Option) error {
	if conf.CAFile == "" && conf.CAPath == "" && conf.CertFile == "" && conf.KeyFile == "" {
		return nil
	}
	if log != nil {
		// Apart from the control server's certificate, in the same log.
		log = log.With("for", "consul")
	}
	var pair *tlsfile.Pair
	var err error
	if conf.CertFile != "" || conf.KeyFile != "" {
		if pair, err = tlsfile.OpenPair(conf.CertFile, conf.KeyFile, log, opts...); err != nil {
			return fmt.Errorf("consul TLS: %w", err)
		}
	}
	// The CA file wins over the directory, as in Consul's client.
	var roots *tlsfile.Pool
	switch {
	case conf.CAFile != "":
		roots, err = tlsfile.OpenPool(conf.CAFile, "Consul CA", log, opts...)
	case conf.CAPath != "":
		roots, err = tlsfile.OpenPoolDir(conf.CAPath, "Consul CA", log, opts...)
	}
	if err != nil {
		return fmt.Errorf("consul TLS: %w", err)
	}
	serverName := conf.Address
	if strings.LastIndex(serverName, ":") > strings.LastIndex(serverName, "]") {
		// host:port, as Consul's client takes it
		if serverName, _, err = net.SplitHostPort(serverName); err != nil {
			return fmt.Errorf("consul TLS server name %q: %w", conf.Address, err)
		}
	}
	dial := tr.DialContext
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	tr.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		cfg := tlsfile.ClientConfig(pair, roots)
		cfg.InsecureSkipVerify = conf.InsecureSkipVerify
		cfg.ServerName = serverName
		if cfg.ServerName == "" {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				host = addr
			}
			cfg.ServerName = host
		}
		// The protocols the transport offers (h2 with HTTP/2 on), as
		// with its own TLS dial.
		if tr.TLSClientConfig != nil {
			cfg.NextProtos = slices.Clone(tr.TLSClientConfig.NextProtos)
		}
		raw, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		c := tls.Client(raw, cfg)
		if err := c.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, err
		}
		return c, nil
	}
	return nil
}
