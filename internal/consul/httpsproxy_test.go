package consul

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// tlsConnectProxy is an https:// CONNECT proxy on loopback presenting
// cert, tunnelling to target; it asks for a client certificate (and
// takes any), and presented lists the common names of those it was sent.
func tlsConnectProxy(t *testing.T, target string, cert tls.Certificate) (proxy *url.URL, presented func() []string) {
	t.Helper()
	var (
		mu    sync.Mutex
		names []string
	)
	var tunnels atomic.Int64
	connect := connectHandler(t, target, &tunnels)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) > 0 {
			mu.Lock()
			names = append(names, r.TLS.PeerCertificates[0].Subject.CommonName)
			mu.Unlock()
		}
		connect.ServeHTTP(w, r)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequestClientCert}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshakes a test makes fail
	srv.StartTLS()
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return u, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), names...)
	}
}

// TestHTTPSProxyTLSIsNotConsuls: through an https:// proxy
// (--consul-proxy-from-env, HTTPS_PROXY=https://…), Go's transport made
// the proxy's TLS connection with the Consul TLS configuration: the
// proxy's certificate was verified against Consul's CA file and Consul's
// server name, or not at all with Consul's InsecureSkipVerify, and the
// proxy was presented Consul's client certificate when it asked for one.
// The proxy is now verified as Go verifies a server by default (the
// system's CAs, here the test's, for the proxy's own host) and is
// presented no certificate; Consul, inside the tunnel, still gets its CA,
// name and client certificate.
func TestHTTPSProxyTLSIsNotConsuls(t *testing.T) {
	clientCA, consulCA, proxyCA, stranger := newTestCA(t, "client CA"), newTestCA(t, "Consul CA"),
		newTestCA(t, "proxy CA"), newTestCA(t, "unknown CA")
	_, _, consulCert := consulCA.issue(t, "consul", true)
	var serving atomic.Pointer[tls.Certificate]
	serving.Store(&consulCert)
	mtls := serveTLS(t, &serving, &clientCA) // answers with the client certificate's name
	plain := serveTLS(t, &serving, nil)

	proxyTmpl := func() *x509.Certificate {
		return &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "proxy"},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, DNSNames: []string{"proxy.example"},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	}
	_, proxyCert := certOf(t, proxyTmpl(), &proxyCA)
	_, strangerCert := certOf(t, proxyTmpl(), &stranger)
	// A proxy of the same CA as Consul's (one company's CA), for
	// 127.0.0.1 and consul.example: Consul's settings accepted it.
	_, _, sameCACert := consulCA.issue(t, "proxy of the Consul CA", true)
	// The system's CAs: the proxies' and the company's.
	systemCAs := x509.NewCertPool()
	systemCAs.AddCert(proxyCA.cert)
	systemCAs.AddCert(consulCA.cert)

	dir := t.TempDir()
	caFile, certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key")
	cert, key, _ := clientCA.issue(t, "agent", false)
	replace(t, caFile, consulCA.pem)
	replace(t, certFile, cert)
	replace(t, keyFile, key)
	for _, v := range []string{"CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "CONSUL_CACERT", "CONSUL_CAPATH", "CONSUL_CLIENT_CERT", "CONSUL_CLIENT_KEY", "CONSUL_TLS_SERVER_NAME"} {
		t.Setenv(v, "")
	}

	for _, tc := range []struct {
		name       string
		target     *httptest.Server
		o          Options
		proxy      tls.Certificate
		wantRefuse bool
		want       string // the answer: the client certificate Consul was presented
	}{
		{"Consul's TLS files, a proxy of its own CA", mtls, Options{CAFile: caFile, CertFile: certFile, KeyFile: keyFile}, proxyCert, false, "agent"},
		{"Consul's TLS files, a proxy of Consul's CA", mtls, Options{CAFile: caFile, CertFile: certFile, KeyFile: keyFile}, sameCACert, false, "agent"},
		{"Consul's TLS files, a proxy of an unknown CA", mtls, Options{CAFile: caFile, CertFile: certFile, KeyFile: keyFile}, strangerCert, true, ""},
		{"Consul unverified, a proxy of its own CA", plain, Options{InsecureSkipVerify: true}, proxyCert, false, ""},
		{"Consul unverified, a proxy of an unknown CA", plain, Options{InsecureSkipVerify: true}, strangerCert, true, ""},
	} {
		target := tc.target.Listener.Addr().String()
		_, port, err := net.SplitHostPort(target)
		if err != nil {
			t.Fatal(err)
		}
		proxy, presented := tlsConnectProxy(t, target, tc.proxy)
		o := tc.o
		o.Addr, o.ProxyFromEnv, o.proxyCAs = "https://consul.example:"+port, true, systemCAs
		for who, hc := range bothClients(t, o) {
			viaProxy(t, hc, proxy)
			got, err := answer(hc, o.Addr+"/v1/agent/self")
			var verr *tls.CertificateVerificationError
			if refused := errors.As(err, &verr); refused != tc.wantRefuse || (!refused && err != nil) {
				t.Errorf("%s, %s: %v; want the proxy refused for its certificate %v", tc.name, who, err, tc.wantRefuse)
			} else if got != tc.want {
				t.Errorf("%s, %s: Consul was presented %q, want %q", tc.name, who, got, tc.want)
			}
		}
		if names := presented(); len(names) > 0 {
			t.Errorf("%s: the proxy was presented client certificates %q, want none (Consul's goes to Consul only)", tc.name, names)
		}
	}
}

// answer is hc's GET of u and the answer's body.
func answer(hc *http.Client, u string) (string, error) {
	resp, err := hc.Get(u)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// TestHTTPSProxyIDN: an https:// proxy named in Unicode
// (HTTPS_PROXY=https://prôxy.example:port) is dialled by Go's transport
// at its punycode name, xn--prxy-wqa.example, which the proxy's clone
// took for another proxy than its own and refused. The proxy is now
// reached, and verified for that name.
func TestHTTPSProxyIDN(t *testing.T) {
	consulCA, proxyCA := newTestCA(t, "Consul CA"), newTestCA(t, "proxy CA")
	_, _, consulCert := consulCA.issue(t, "consul", true)
	var serving atomic.Pointer[tls.Certificate]
	serving.Store(&consulCert)
	plain := serveTLS(t, &serving, nil)
	_, proxyCert := certOf(t, &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "proxy"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, DNSNames: []string{"xn--prxy-wqa.example"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}, &proxyCA)
	systemCAs := x509.NewCertPool()
	systemCAs.AddCert(proxyCA.cert)
	for _, v := range []string{"CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "CONSUL_CACERT", "CONSUL_CAPATH", "CONSUL_CLIENT_CERT", "CONSUL_CLIENT_KEY", "CONSUL_TLS_SERVER_NAME"} {
		t.Setenv(v, "")
	}

	target := plain.Listener.Addr().String()
	_, port, err := net.SplitHostPort(target)
	if err != nil {
		t.Fatal(err)
	}
	loopback, _ := tlsConnectProxy(t, target, proxyCert)
	_, proxyPort, err := net.SplitHostPort(loopback.Host)
	if err != nil {
		t.Fatal(err)
	}
	proxy := &url.URL{Scheme: "https", Host: net.JoinHostPort("prôxy.example", proxyPort)}
	o := Options{Addr: "https://consul.example:" + port, ProxyFromEnv: true, InsecureSkipVerify: true, proxyCAs: systemCAs}
	ep, err := NewEndpoint(o)
	if err != nil {
		t.Fatal(err)
	}
	tr := transportOf(t, ep.HTTP)
	tr.Proxy = http.ProxyURL(proxy)
	// The proxy's name, as Go's transport dials it, is the loopback
	// proxy; nothing else is dialled.
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr != net.JoinHostPort("xn--prxy-wqa.example", proxyPort) {
			return nil, fmt.Errorf("dial %s: the test dials its proxy, xn--prxy-wqa.example:%s, only", addr, proxyPort)
		}
		var d net.Dialer
		return d.DialContext(ctx, network, loopback.Host)
	}
	if _, err := answer(ep.HTTP, o.Addr+"/v1/agent/self"); err != nil {
		t.Errorf("through the proxy %s: %v", proxy, err)
	}
}
