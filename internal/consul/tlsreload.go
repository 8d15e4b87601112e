package consul

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
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
// once. With no file to follow and no proxy, it is tr as it is.
//
// The files are read in the TLS configuration's callbacks, not in a TLS
// dial of our own: through an HTTP proxy (--consul-proxy-from-env), Go's
// transport makes the TLS connection after CONNECT itself, with its
// TLSClientConfig, and never calls DialTLSContext. An https:// proxy's
// own TLS is not Consul's: proxyCAs (nil: the system's) verify it.
func reloadTLS(tr *http.Transport, conf api.TLSConfig, proxyCAs *x509.CertPool, log *slog.Logger, opts ...tlsfile.Option) (http.RoundTripper, error) {
	if conf.CAFile == "" && conf.CAPath == "" && conf.CertFile == "" && conf.KeyFile == "" && tr.Proxy == nil {
		return tr, nil
	}
	if log != nil {
		// Apart from the control server's certificate, in the same log.
		log = log.With("for", "consul")
	}
	t := &tlsTransports{base: tr, insecure: conf.InsecureSkipVerify, proxyCAs: proxyCAs, byKey: map[transportKey]*clone{}}
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
// transport's own. They are at most maxTransports: the hosts may come
// from Consul (the leader's address).
//
// A request through an https:// proxy goes through a clone of its own
// that makes the proxy's TLS connection itself (dialProxy): Go's
// transport would make it with TLSClientConfig, Consul's.
type tlsTransports struct {
	base       *http.Transport
	pair       *tlsfile.Pair  // nil: no client certificate
	roots      *tlsfile.Pool  // nil: the system's CAs
	insecure   bool           // the server's certificate is not checked
	serverName string         // "": the request's host
	proxyCAs   *x509.CertPool // an https:// proxy's CAs; nil: the system's

	mu    sync.Mutex // guards the fields below
	byKey map[transportKey]*clone
	uses  uint64 // requests so far, to tell the least recently used clone
}

// maxTransports bounds tlsTransports' clones: the agent and the Consul
// servers, a few, through a proxy or not.
const maxTransports = 16

// clone is one of tlsTransports' transports. Its fields but tr are
// guarded by tlsTransports.mu.
type clone struct {
	tr   *http.Transport
	used uint64 // tlsTransports.uses at its last request
	// inFlight counts its requests whose answer is not yet read to its end
	// or closed.
	inFlight int
	// dropped is set once it is no longer kept: its idle connections are
	// closed as its last request in flight ends.
	dropped bool
}

// transportKey names a clone of tlsTransports: the server name it
// verifies, and the https:// proxy it goes through.
type transportKey struct {
	name  string
	proxy string // the proxy's URL; "": none, or an http:// one
}

func (t *tlsTransports) RoundTrip(r *http.Request) (*http.Response, error) {
	proxy, err := t.httpsProxy(r)
	if err != nil {
		if r.Body != nil {
			r.Body.Close() // as a RoundTripper must, on errors too
		}
		return nil, err
	}
	key := transportKey{name: cmp.Or(t.serverName, r.URL.Hostname())}
	if proxy != nil {
		key.proxy = proxy.String()
	}
	c := t.transport(key, proxy)
	resp, err := c.tr.RoundTrip(r)
	if err != nil || resp.Body == nil || resp.StatusCode == http.StatusSwitchingProtocols {
		// No answer to read, or one whose connection is the caller's.
		t.ended(c)
		t.closeIfDone(c)
		return resp, err
	}
	resp.Body = &trackedBody{ReadCloser: resp.Body, t: t, c: c}
	return resp, nil
}

// ended counts one of c's requests in flight as ended.
func (t *tlsTransports) ended(c *clone) {
	t.mu.Lock()
	defer t.mu.Unlock()
	c.inFlight--
}

// closeIfDone closes c's idle connections when it was dropped and has no
// request in flight. Over HTTP/1.1 a transport closes the connections
// that become idle after a CloseIdleConnections itself; over HTTP/2 one
// that had a stream open at the drop would stay open to the idle timeout
// (90s): nothing else calls the dropped transport's CloseIdleConnections.
func (t *tlsTransports) closeIfDone(c *clone) {
	t.mu.Lock()
	done := c.dropped && c.inFlight == 0
	t.mu.Unlock()
	if done {
		c.tr.CloseIdleConnections()
	}
}

// trackedBody is the body of an answer through c: read to its end or
// closed, it ends c's request in flight. Over HTTP/2 the stream is
// forgotten, its connection idle, only once Close returns (the end of
// the data may come first), so both close c's idle connections if done.
type trackedBody struct {
	io.ReadCloser
	t    *tlsTransports
	c    *clone
	once sync.Once
}

func (b *trackedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.end()
	}
	return n, err
}

func (b *trackedBody) Close() error {
	err := b.ReadCloser.Close()
	b.end()
	return err
}

func (b *trackedBody) end() {
	b.once.Do(func() { b.t.ended(b.c) })
	b.t.closeIfDone(b.c)
}

// httpsProxy is the https:// proxy base sends r through; nil for none or
// an http:// one.
func (t *tlsTransports) httpsProxy(r *http.Request) (*url.URL, error) {
	if t.base.Proxy == nil {
		return nil, nil
	}
	u, err := t.base.Proxy(r)
	if err != nil || u == nil || u.Scheme != "https" {
		return nil, err
	}
	return u, nil
}

// CloseIdleConnections closes the idle connections of every clone, for
// http.Client.CloseIdleConnections.
func (t *tlsTransports) CloseIdleConnections() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range t.byKey {
		c.tr.CloseIdleConnections()
	}
}

// transport is the clone of base for key, made at the first request for
// it, with one more request in flight; proxy is key's https:// proxy.
// Past maxTransports, the least recently used one is dropped, its idle
// connections closed, and closed again when its last request in flight
// ends (which ends as it would have).
func (t *tlsTransports) transport(key transportKey, proxy *url.URL) *clone {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.uses++
	if c, ok := t.byKey[key]; ok {
		c.used = t.uses
		c.inFlight++
		return c
	}
	if len(t.byKey) >= maxTransports {
		// Every clone's last use is before this request's.
		oldest, least := transportKey{}, t.uses
		for k, c := range t.byKey {
			if c.used < least {
				oldest, least = k, c.used
			}
		}
		dropped := t.byKey[oldest]
		dropped.dropped = true
		dropped.tr.CloseIdleConnections()
		delete(t.byKey, oldest)
	}
	tr := t.base.Clone()
	tr.TLSClientConfig = t.config(key.name)
	if proxy != nil {
		// Every request of this clone goes through proxy, as base said at
		// RoundTrip: Go's transport calls DialTLSContext for it only.
		tr.Proxy = http.ProxyURL(proxy)
		tr.DialTLSContext = t.dialProxy(tr)
	}
	c := &clone{tr: tr, used: t.uses, inFlight: 1}
	t.byKey[key] = c
	return c
}

// dialProxy is the DialTLSContext of tr, whose requests all go through
// one https:// proxy. Go's transport calls it for the proxy's connection
// only, at the proxy's address as it dials it (a Unicode name in
// punycode): it makes Consul's, inside the tunnel, itself, with
// TLSClientConfig, which it used for the proxy's too without this. The
// proxy is verified as Go verifies a server by default, against the
// system's CAs (t.proxyCAs in tests) for its host, whatever Consul's
// settings, and is presented no client certificate: Consul's goes to
// Consul only.
func (t *tlsTransports) dialProxy(tr *http.Transport) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("proxy %s: %w", addr, err)
		}
		dial := tr.DialContext
		if dial == nil {
			dial = (&net.Dialer{}).DialContext
		}
		conn, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if d := tr.TLSHandshakeTimeout; d > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, d)
			defer cancel()
		}
		tc := tls.Client(conn, &tls.Config{ServerName: host, RootCAs: t.proxyCAs, MinVersion: tls.VersionTLS12})
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, fmt.Errorf("TLS with the proxy %s: %w", addr, err)
		}
		return tc, nil
	}
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
