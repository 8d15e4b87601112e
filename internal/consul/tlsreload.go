package consul

import (
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"

	"github.com/hashicorp/consul/api"

	"github.com/underlay/underlay/internal/tlsfile"
)

// reloadTLS is the round tripper of tr's requests with conf's TLS files
// as they are at each new connection: Consul's client reads them once, so
// a rotated certificate or CA needed a restart. tlsfile looks at the files
// at most every tlsfile.CheckEvery (connections are pooled besides) and
// reads them again when one changed; a set that does not load (a
// certificate written before its key) keeps the last good one, warned of
// once. With no file to follow it is tr as it is.
//
// The files are read in the TLS configuration's callbacks, not in a TLS
// dial of our own: through an HTTP proxy (--consul-proxy-from-env), Go's
// transport makes the TLS connection after CONNECT itself, with its
// TLSClientConfig, and never calls DialTLSContext.
func reloadTLS(tr *http.Transport, conf api.TLSConfig, log *slog.Logger, opts ...tlsfile.Option) (http.RoundTripper, error) {
	if conf.CAFile == "" && conf.CAPath == "" && conf.CertFile == "" && conf.KeyFile == "" {
		return tr, nil
	}
	if log != nil {
		// Apart from the control server's certificate, in the same log.
		log = log.With("for", "consul")
	}
	t := &tlsTransports{base: tr, insecure: conf.InsecureSkipVerify, byName: map[string]*http.Transport{}}
	var err error
	if conf.CertFile != "" || conf.KeyFile != "" {
		if t.pair, err = tlsfile.OpenPair(conf.CertFile, conf.KeyFile, log, opts...); err != nil {
			return nil, fmt.Errorf("consul TLS: %w", err)
		}
	}
	// The CA file wins over the directory, as in Consul's client.
	switch {
	case conf.CAFile != "":
		t.roots, err = tlsfile.OpenPool(conf.CAFile, "Consul CA", log, opts...)
	case conf.CAPath != "":
		t.roots, err = tlsfile.OpenPoolDir(conf.CAPath, "Consul CA", log, opts...)
	}
	if err != nil {
		return nil, fmt.Errorf("consul TLS: %w", err)
	}
	t.serverName = conf.Address
	if strings.LastIndex(t.serverName, ":") > strings.LastIndex(t.serverName, "]") {
		// host:port, as Consul's client takes it
		if t.serverName, _, err = net.SplitHostPort(t.serverName); err != nil {
			return nil, fmt.Errorf("consul TLS server name %q: %w", conf.Address, err)
		}
	}
	return t, nil
}

// tlsTransports sends each request through a clone of base whose TLS
// configuration verifies the server against one name: the configured
// server name, or else the request's host. A VerifyConnection is not told
// which host a connection is for (its ConnectionState.ServerName is empty
// for an IP address, sent no SNI), and the Endpoint's client reaches other
// hosts than the agent (doctor: the Consul leader), so the name is the
// transport's own.
type tlsTransports struct {
	base       *http.Transport
	pair       *tlsfile.Pair // nil: no client certificate
	roots      *tlsfile.Pool // nil: the system's CAs
	insecure   bool          // the server's certificate is not checked
	serverName string        // "": the request's host

	mu     sync.Mutex // guards byName
	byName map[string]*http.Transport
}

func (t *tlsTransports) RoundTrip(r *http.Request) (*http.Response, error) {
	return t.transport(cmp.Or(t.serverName, r.URL.Hostname())).RoundTrip(r)
}

// CloseIdleConnections closes the idle connections of every clone, for
// http.Client.CloseIdleConnections.
func (t *tlsTransports) CloseIdleConnections() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, tr := range t.byName {
		tr.CloseIdleConnections()
	}
}

// transport is the clone of base verifying servers as name, made at the
// first request for it: a few (the agent, the Consul servers).
func (t *tlsTransports) transport(name string) *http.Transport {
	t.mu.Lock()
	defer t.mu.Unlock()
	if tr, ok := t.byName[name]; ok {
		return tr
	}
	tr := t.base.Clone()
	tr.TLSClientConfig = t.config(name)
	t.byName[name] = tr
	return tr
}

// config is a TLS configuration for servers named name that reads the
// files at each handshake: the client certificate is asked for when the
// server asks for one; the server's chain is verified against the CA
// files' current pool by VerifyConnection, crypto/tls's own verification
// (against RootCAs, fixed) being off. The user's InsecureSkipVerify checks
// nothing, as before.
func (t *tlsTransports) config(name string) *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: name, InsecureSkipVerify: t.insecure}
	if t.pair != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return t.pair.Certificate(), nil
		}
	}
	if t.roots != nil && !t.insecure {
		cfg.InsecureSkipVerify = true // verified below, against the current CAs
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			return verifyServer(cs, name, t.roots.Pool())
		}
	}
	return cfg
}

// verifyServer verifies the server's certificate of cs as crypto/tls
// does, against roots and for name (a DNS name or an IP address, checked
// against the certificate's IP addresses).
func verifyServer(cs tls.ConnectionState, name string, roots *x509.CertPool) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("tls: the server presented no certificate")
	}
	opts := x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: x509.NewCertPool()}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
		return &tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates, Err: err}
	}
	return nil
}
