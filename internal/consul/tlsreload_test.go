package consul

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/testclock"
	"github.com/underlay/underlay/internal/testlog"
	"github.com/underlay/underlay/internal/tlsfile"
)

// testCA is a certificate authority for tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, cn string) testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue is a certificate of ca for cn (a server's for 127.0.0.1 and
// consul.example, or a client's), as PEM and as a tls.Certificate.
func (ca testCA) issue(t *testing.T, cn string, server bool) (certPEM, keyPEM []byte, pair tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tmpl.ExtKeyUsage, tmpl.IPAddresses = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, []net.IP{net.IPv4(127, 0, 0, 1)}
		tmpl.DNSNames = []string{"consul.example"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	pair, err = tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, keyPEM, pair
}

// replace writes data to path as a secret manager does: a new file
// renamed over the old one.
func replace(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path+".new", data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
}

// serveTLS is an HTTPS server presenting the certificate serving holds
// at each handshake (httptest's own would be served to a client sending
// no server name, an IP address) and closing each connection after its
// answer, so that each request dials anew. With clientCA, it asks for a
// client certificate of it and answers with its common name.
func serveTLS(t *testing.T, serving *atomic.Pointer[tls.Certificate], clientCA *testCA) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		if len(r.TLS.PeerCertificates) > 0 {
			w.Write([]byte(r.TLS.PeerCertificates[0].Subject.CommonName))
		}
	}))
	srv.TLS = &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := &tls.Config{Certificates: []tls.Certificate{*serving.Load()}}
		if clientCA != nil {
			c.ClientAuth, c.ClientCAs = tls.RequireAndVerifyClientCert, x509.NewCertPool()
			c.ClientCAs.AddCert(clientCA.cert)
		}
		return c, nil
	}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshakes a test makes fail
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// TestTLSFilesRotation: Consul's client read --consul-cacert and the
// client certificate and key once; a rotated certificate was presented
// only after an agent restart, and a server certificate of a rotated CA
// was refused until then. New connections now use the files as they are:
// the client and the endpoint present the new client certificate and
// trust the new CA; a certificate written before its key keeps the last
// good pair, warned of once. The files are looked at once every
// tlsfile.CheckEvery at most: the test steps its clock past it.
func TestTLSFilesRotation(t *testing.T) {
	clientCA, serverCA1, serverCA2 := newTestCA(t, "client CA"), newTestCA(t, "server CA 1"), newTestCA(t, "server CA 2")
	_, _, server1 := serverCA1.issue(t, "consul 1", true)
	_, _, server2 := serverCA2.issue(t, "consul 2", true)
	var serving atomic.Pointer[tls.Certificate]
	serving.Store(&server1)
	srv := serveTLS(t, &serving, &clientCA)

	dir := t.TempDir()
	caFile, certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key")
	cert1, key1, _ := clientCA.issue(t, "agent 1", false)
	replace(t, caFile, serverCA1.pem)
	replace(t, certFile, cert1)
	replace(t, keyFile, key1)
	for _, v := range []string{"CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "CONSUL_CACERT", "CONSUL_CAPATH", "CONSUL_CLIENT_CERT", "CONSUL_CLIENT_KEY"} {
		t.Setenv(v, "")
	}
	var logs testlog.Buffer
	clk := testclock.New(time.Now())
	o := Options{Addr: srv.URL, CAFile: caFile, CertFile: certFile, KeyFile: keyFile,
		Log: slog.New(slog.NewTextHandler(&logs, nil)), fileClock: clk.Now}
	clients := bothClients(t, o)
	presented := func(name string) string {
		t.Helper()
		resp, err := clients[name].Get(srv.URL + "/v1/agent/self")
		if err != nil {
			t.Errorf("%s: %v", name, err)
			return ""
		}
		defer resp.Body.Close()
		b := make([]byte, 64)
		n, _ := resp.Body.Read(b)
		return string(b[:n])
	}
	for name := range clients {
		if got := presented(name); got != "agent 1" {
			t.Fatalf("%s presented %q, want agent 1", name, got)
		}
	}

	// The client certificate rotated: the certificate written first, its
	// key a moment later.
	cert2, key2, _ := clientCA.issue(t, "agent 2", false)
	replace(t, certFile, cert2)
	for range 2 {
		clk.Add(tlsfile.CheckEvery)
		for name := range clients {
			if got := presented(name); got != "agent 1" {
				t.Errorf("%s presented %q with the certificate rotated but not its key, want agent 1 kept", name, got)
			}
		}
	}
	// One warning each for the client and the endpoint, not one per
	// connection.
	if n := strings.Count(logs.String(), "level=WARN"); n != 2 {
		t.Errorf("the half-rotated pair warned of %d times, want twice (client and endpoint):\n%s", n, &logs)
	}
	replace(t, keyFile, key2)
	clk.Add(tlsfile.CheckEvery)
	for name := range clients {
		if got := presented(name); got != "agent 2" {
			t.Errorf("%s presented %q after the rotation, want agent 2", name, got)
		}
	}

	// The server's CA rotated: the new CA file first, then the server's
	// certificate of it.
	replace(t, caFile, append(append([]byte{}, serverCA1.pem...), serverCA2.pem...))
	serving.Store(&server2)
	clk.Add(tlsfile.CheckEvery)
	for name := range clients {
		if got := presented(name); got != "agent 2" {
			t.Errorf("%s with the server's CA rotated: presented %q, want agent 2 over a trusted connection", name, got)
		}
	}
}

// TestTLSDialSettings: the TLS settings of Consul's client hold on the
// connections reloadTLS dials: the CA directory of CONSUL_CAPATH, a CA
// file added to it trusted by the next connections; the server name of
// --consul-tls-server-name, with a port or not, as Consul's client takes
// it; InsecureSkipVerify.
func TestTLSDialSettings(t *testing.T) {
	ca1, ca2, other := newTestCA(t, "CA 1"), newTestCA(t, "CA 2"), newTestCA(t, "other CA")
	_, _, server1 := ca1.issue(t, "consul 1", true)
	_, _, server2 := ca2.issue(t, "consul 2", true)
	_, _, stranger := other.issue(t, "stranger", true)
	var serving atomic.Pointer[tls.Certificate]
	serving.Store(&server1)
	srv := serveTLS(t, &serving, nil)

	dir := t.TempDir()
	replace(t, filepath.Join(dir, "ca1.pem"), ca1.pem)
	for _, v := range []string{"CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "CONSUL_CACERT", "CONSUL_CLIENT_CERT", "CONSUL_CLIENT_KEY", "CONSUL_TLS_SERVER_NAME"} {
		t.Setenv(v, "")
	}
	t.Setenv("CONSUL_CAPATH", dir)
	clk := testclock.New(time.Now())
	client := func(o Options) *http.Client {
		t.Helper()
		o.Addr, o.fileClock = srv.URL, clk.Now
		cfg, err := clientConfig(o)
		if err != nil {
			t.Fatal(err)
		}
		return cfg.HttpClient
	}
	get := func(c *http.Client) error {
		resp, err := c.Get(srv.URL + "/v1/agent/self")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}

	c := client(Options{})
	if err := get(c); err != nil {
		t.Fatalf("a server of the CA in CONSUL_CAPATH: %v", err)
	}
	serving.Store(&server2)
	if err := get(c); err == nil {
		t.Fatal("a server of a CA not in CONSUL_CAPATH trusted")
	}
	replace(t, filepath.Join(dir, "ca2.pem"), ca2.pem)
	clk.Add(tlsfile.CheckEvery)
	if err := get(c); err != nil {
		t.Errorf("a server of a CA added to CONSUL_CAPATH: %v", err)
	}

	for _, tc := range []struct {
		name       string
		o          Options
		serve      *tls.Certificate
		wantRefuse bool
	}{
		{"server name", Options{TLSServerName: "consul.example"}, &server2, false},
		{"server name with a port", Options{TLSServerName: "consul.example:8501"}, &server2, false},
		{"another server name", Options{TLSServerName: "other.example"}, &server2, true},
		{"another CA's server", Options{}, &stranger, true},
		{"another CA's server, verification off", Options{InsecureSkipVerify: true}, &stranger, false},
	} {
		serving.Store(tc.serve)
		if err := get(client(tc.o)); (err != nil) != tc.wantRefuse {
			t.Errorf("%s: %v, want refused %v", tc.name, err, tc.wantRefuse)
		}
	}
}

// connectProxy is an HTTP proxy on loopback that answers CONNECT only: it
// pipes each tunnel to target, whatever host the request names (so that
// consul.example is reached without a name lookup), and counts them.
func connectProxy(t *testing.T, target string) (*url.URL, *atomic.Int64) {
	t.Helper()
	var tunnels atomic.Int64
	srv := httptest.NewServer(connectHandler(t, target, &tunnels))
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return u, &tunnels
}

// connectHandler answers CONNECT only, piping each tunnel to target and
// counting them in tunnels.
func connectHandler(t *testing.T, target string, tunnels *atomic.Int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
			return
		}
		up, err := net.Dial("tcp", target)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer up.Close()
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Errorf("proxy: %v", err)
			return
		}
		defer conn.Close()
		tunnels.Add(1)
		if _, err := conn.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
			return
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			io.Copy(up, buf) // what the client sent after CONNECT, buffered or not
			up.(*net.TCPConn).CloseWrite()
		}()
		io.Copy(conn, up)
		conn.Close()
		<-done
	})
}

// viaProxy makes hc's requests go through the CONNECT proxy at proxy, as
// an HTTPS_PROXY does with --consul-proxy-from-env (Go reads the
// environment's once per process, and never for a loopback address); it
// dials no other address.
func viaProxy(t *testing.T, hc *http.Client, proxy *url.URL) {
	t.Helper()
	tr := transportOf(t, hc)
	tr.Proxy = http.ProxyURL(proxy)
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr != proxy.Host {
			return nil, fmt.Errorf("dial %s: the test dials its proxy, %s, only", addr, proxy.Host)
		}
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
}

// TestTLSFilesRotationThroughProxy: with --consul-proxy-from-env and an
// HTTPS proxy, Go's transport makes the TLS connection to Consul itself
// after CONNECT, with its fixed TLS configuration: the TLS files' reload
// (a TLS dial of our own) was never called, and a rotated CA or client
// certificate was used only after a restart ("x509: certificate signed by
// unknown authority" once the server's CA rotated). Through the proxy too,
// the client and the endpoint now present the new client certificate and
// trust the CA file's current CAs, and only those.
func TestTLSFilesRotationThroughProxy(t *testing.T) {
	clientCA, serverCA1, serverCA2 := newTestCA(t, "client CA"), newTestCA(t, "server CA 1"), newTestCA(t, "server CA 2")
	_, _, server1 := serverCA1.issue(t, "consul 1", true)
	_, _, server2 := serverCA2.issue(t, "consul 2", true)
	var serving atomic.Pointer[tls.Certificate]
	serving.Store(&server1)
	srv := serveTLS(t, &serving, &clientCA)
	proxy, tunnels := connectProxy(t, srv.Listener.Addr().String())

	dir := t.TempDir()
	caFile, certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key")
	cert1, key1, _ := clientCA.issue(t, "agent 1", false)
	replace(t, caFile, serverCA1.pem)
	replace(t, certFile, cert1)
	replace(t, keyFile, key1)
	for _, v := range []string{"CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "CONSUL_CACERT", "CONSUL_CAPATH", "CONSUL_CLIENT_CERT", "CONSUL_CLIENT_KEY", "CONSUL_TLS_SERVER_NAME"} {
		t.Setenv(v, "")
	}
	_, port, err := net.SplitHostPort(srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	addr := "https://consul.example:" + port
	clk := testclock.New(time.Now())
	o := Options{Addr: addr, CAFile: caFile, CertFile: certFile, KeyFile: keyFile, ProxyFromEnv: true, fileClock: clk.Now}
	clients := bothClients(t, o)
	for _, hc := range clients {
		viaProxy(t, hc, proxy)
	}
	requests := int64(0)
	presented := func(name string) (string, error) {
		t.Helper()
		requests++
		resp, err := clients[name].Get(addr + "/v1/agent/self")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	check := func(when, want string) {
		t.Helper()
		for name := range clients {
			if got, err := presented(name); err != nil || got != want {
				t.Errorf("%s, %s: presented %q, %v; want %s over a trusted connection", when, name, got, err, want)
			}
		}
	}
	check("at start", "agent 1")

	cert2, key2, _ := clientCA.issue(t, "agent 2", false)
	replace(t, certFile, cert2)
	replace(t, keyFile, key2)
	clk.Add(tlsfile.CheckEvery)
	check("client certificate rotated", "agent 2")

	// The server's CA rotated: the CA file holds the new CA only, and the
	// server presents a certificate of it.
	replace(t, caFile, serverCA2.pem)
	serving.Store(&server2)
	clk.Add(tlsfile.CheckEvery)
	check("server CA rotated", "agent 2")

	// The old CA is out of the file: its certificate is refused.
	serving.Store(&server1)
	for name := range clients {
		var verr *tls.CertificateVerificationError
		if got, err := presented(name); !errors.As(err, &verr) {
			t.Errorf("%s: a server of the CA removed from the CA file: presented %q, %v; want a certificate verification error", name, got, err)
		}
	}
	if n := tunnels.Load(); n < requests {
		t.Errorf("%d tunnels through the proxy for %d requests, want one each", n, requests)
	}
}

// certOf is a certificate of tmpl signed by ca, or by itself when ca is
// nil: as a testCA, to sign others with, and as a tls.Certificate, to
// serve.
func certOf(t *testing.T, tmpl *x509.Certificate, ca *testCA) (testCA, tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	parent, signer := tmpl, key
	if ca != nil {
		parent, signer = ca.cert, ca.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	chain := [][]byte{der}
	if ca != nil {
		chain = append(chain, ca.cert.Raw)
	}
	return testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})},
		tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: cert}
}

// TestTLSVerifyThroughProxy: the server's certificate is verified as
// crypto/tls verifies it, directly and through a proxy alike: for the
// configured server name, or else for the host of the request (an IP
// address against the certificate's IP addresses, though it is sent no
// server name), within its validity, up to a CA of the CA file still
// valid; InsecureSkipVerify checks nothing. The endpoint verifies a
// server other than its agent (the doctor's Consul leader) for that
// server's host.
func TestTLSVerifyThroughProxy(t *testing.T) {
	now := time.Now()
	ca := newTestCA(t, "CA")
	expiredCA, _ := certOf(t, &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "expired CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: now.Add(-2 * time.Hour), NotAfter: now.Add(-time.Hour)}, nil)
	stranger := newTestCA(t, "unknown CA")
	leaf := func(issuer *testCA, dns []string, ips []net.IP, notAfter time.Time) *tls.Certificate {
		_, c := certOf(t, &x509.Certificate{SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "consul"},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, DNSNames: dns, IPAddresses: ips,
			NotBefore: now.Add(-3 * time.Hour), NotAfter: notAfter}, issuer)
		return &c
	}
	loopback := []net.IP{net.IPv4(127, 0, 0, 1)}
	names := []string{"consul.example"}
	good := leaf(&ca, names, loopback, now.Add(time.Hour))
	namesOnly := leaf(&ca, names, nil, now.Add(time.Hour))
	expired := leaf(&ca, names, loopback, now.Add(-time.Minute))
	ofExpiredCA := leaf(&expiredCA, names, loopback, now.Add(time.Hour))
	ofStranger := leaf(&stranger, names, loopback, now.Add(time.Hour))

	var serving atomic.Pointer[tls.Certificate]
	srv := serveTLS(t, &serving, nil)
	target := srv.Listener.Addr().String()
	proxy, _ := connectProxy(t, target)
	_, port, err := net.SplitHostPort(target)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	replace(t, caFile, append(append([]byte{}, ca.pem...), expiredCA.pem...))
	for _, v := range []string{"CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "CONSUL_CACERT", "CONSUL_CAPATH", "CONSUL_CLIENT_CERT", "CONSUL_CLIENT_KEY", "CONSUL_TLS_SERVER_NAME"} {
		t.Setenv(v, "")
	}

	for _, tc := range []struct {
		name       string
		host       string // of --consul-addr
		o          Options
		serve      *tls.Certificate
		wantRefuse bool
	}{
		{"DNS name", "consul.example", Options{}, good, false},
		{"wrong host name", "other.example", Options{}, good, true},
		{"IP address in the IP addresses", "127.0.0.1", Options{}, good, false},
		{"IP address not in the IP addresses", "127.0.0.1", Options{}, namesOnly, true},
		{"server name over an IP address", "127.0.0.1", Options{TLSServerName: "consul.example"}, namesOnly, false},
		{"wrong server name", "consul.example", Options{TLSServerName: "other.example"}, good, true},
		{"expired certificate", "consul.example", Options{}, expired, true},
		{"certificate of an expired CA", "consul.example", Options{}, ofExpiredCA, true},
		{"certificate of an unknown CA", "consul.example", Options{}, ofStranger, true},
		{"unknown CA, verification off", "consul.example", Options{InsecureSkipVerify: true}, ofStranger, false},
	} {
		serving.Store(tc.serve)
		for _, proxied := range []bool{false, true} {
			o := tc.o
			o.Addr, o.CAFile, o.ProxyFromEnv = "https://"+net.JoinHostPort(tc.host, port), caFile, proxied
			for who, hc := range bothClients(t, o) {
				if proxied {
					viaProxy(t, hc, proxy)
				} else {
					// Any host is the test's server, without a name lookup.
					transportOf(t, hc).DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
						var d net.Dialer
						return d.DialContext(ctx, network, target)
					}
				}
				err := getURL(hc, o.Addr+"/v1/agent/self")
				var verr *tls.CertificateVerificationError
				if refused := errors.As(err, &verr); refused != tc.wantRefuse || (!refused && err != nil) {
					t.Errorf("%s, %s, through a proxy %v: %v; want refused for its certificate %v", tc.name, who, proxied, err, tc.wantRefuse)
				}
			}
		}
	}

	// The endpoint of consul.example asked for a server at 127.0.0.1 (the
	// doctor's leader): that server's certificate must name 127.0.0.1.
	for _, proxied := range []bool{false, true} {
		ep, err := NewEndpoint(Options{Addr: "https://consul.example:" + port, CAFile: caFile, ProxyFromEnv: proxied})
		if err != nil {
			t.Fatal(err)
		}
		if proxied {
			viaProxy(t, ep.HTTP, proxy)
		}
		for _, tc := range []struct {
			serve      *tls.Certificate
			wantRefuse bool
		}{{good, false}, {namesOnly, true}} {
			serving.Store(tc.serve)
			err := getURL(ep.HTTP, "https://"+target+"/v1/status/leader")
			var verr *tls.CertificateVerificationError
			if refused := errors.As(err, &verr); refused != tc.wantRefuse || (!refused && err != nil) {
				t.Errorf("endpoint to another host, certificate for %v %v, through a proxy %v: %v; want refused %v",
					tc.serve.Leaf.DNSNames, tc.serve.Leaf.IPAddresses, proxied, err, tc.wantRefuse)
			}
		}
	}
}

// getURL is hc's GET of u, its answer read.
func getURL(hc *http.Client, u string) error {
	resp, err := hc.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.ReadAll(resp.Body)
	return err
}

// TestTLSTransportsBounded: the endpoint's TLS transports were kept per
// server name, one made at the first request to each host and never
// dropped, and the hosts it is asked for may come from Consul (the
// doctor's leader address): one per name, without end. They are now at
// most maxTransports, the least recently used dropped, so that the
// agent's, used all along, keeps its connections.
func TestTLSTransportsBounded(t *testing.T) {
	ca := newTestCA(t, "CA")
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	replace(t, caFile, ca.pem)
	for _, v := range []string{"CONSUL_HTTP_ADDR", "CONSUL_CACERT", "CONSUL_CAPATH", "CONSUL_CLIENT_CERT", "CONSUL_CLIENT_KEY", "CONSUL_TLS_SERVER_NAME"} {
		t.Setenv(v, "")
	}
	ep, err := NewEndpoint(Options{Addr: "https://consul.example:8501", CAFile: caFile})
	if err != nil {
		t.Fatal(err)
	}
	tt, ok := ep.HTTP.Transport.(*tlsTransports)
	if !ok {
		t.Fatalf("transport %T, want *tlsTransports", ep.HTTP.Transport)
	}
	// The transports are made before any dial: none is needed.
	tt.base.DialContext = func(_ context.Context, _, addr string) (net.Conn, error) {
		return nil, fmt.Errorf("dial %s: the test dials nothing", addr)
	}
	agent := func() *http.Transport {
		t.Helper()
		getURL(ep.HTTP, "https://consul.example:8501/v1/agent/self")
		tt.mu.Lock()
		defer tt.mu.Unlock()
		if c := tt.byKey[transportKey{name: "consul.example"}]; c != nil {
			return c.tr
		}
		return nil
	}
	first := agent()
	if first == nil {
		t.Fatal("no transport for the agent after a request to it")
	}
	for i := range 200 {
		getURL(ep.HTTP, fmt.Sprintf("https://leader-%d.example:8300/v1/status/leader", i))
		if got := agent(); got != first {
			t.Fatalf("after %d other hosts, the agent's transport was made again", i+1)
		}
	}
	tt.mu.Lock()
	n := len(tt.byKey)
	tt.mu.Unlock()
	if n > maxTransports {
		t.Errorf("%d TLS transports kept after requests to 201 hosts, want at most %d", n, maxTransports)
	}
}

// bothClients are the HTTP clients of o's Consul client and of its
// Endpoint (doctor's), whose transports are built alike and checked
// alike.
func bothClients(t *testing.T, o Options) map[string]*http.Client {
	t.Helper()
	cfg, err := clientConfig(o)
	if err != nil {
		t.Fatal(err)
	}
	ep, err := NewEndpoint(o)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]*http.Client{"client": cfg.HttpClient, "endpoint": ep.HTTP}
}

// TestTLSTransportDroppedClosesAfterLastRequest: a transport dropped from
// the maxTransports kept had its idle connections closed at the drop,
// but a request in flight on it then put its connection back among its
// idle ones, which nothing closed any more (CloseIdleConnections reaches
// the kept transports only): it stayed open until the idle timeout, 90s.
// It is now closed as the dropped transport's last request ends, over
// HTTP/1.1 and HTTP/2 alike; the request itself ends as it would have.
func TestTLSTransportDroppedClosesAfterLastRequest(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("HTTP/2 %v", h2), func(t *testing.T) { testDroppedTransport(t, h2) })
	}
}

func testDroppedTransport(t *testing.T, h2 bool) {
	started, release := make(chan struct{}), make(chan struct{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/held" {
			close(started)
			<-release
		}
		io.WriteString(w, "ok")
	}))
	srv.EnableHTTP2 = h2
	srv.StartTLS()
	t.Cleanup(srv.Close)
	var releaseOnce sync.Once
	releaseHeld := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(releaseHeld) // before srv.Close, which waits for the handler

	caFile := filepath.Join(t.TempDir(), "ca.pem")
	replace(t, caFile, newTestCA(t, "CA").pem)
	for _, v := range []string{"CONSUL_HTTP_ADDR", "CONSUL_CACERT", "CONSUL_CAPATH", "CONSUL_CLIENT_CERT", "CONSUL_CLIENT_KEY", "CONSUL_TLS_SERVER_NAME"} {
		t.Setenv(v, "")
	}
	// Not verified: every host is the one loopback server.
	ep, err := NewEndpoint(Options{Addr: "https://consul.example:8501", CAFile: caFile, InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	tt, ok := ep.HTTP.Transport.(*tlsTransports)
	if !ok {
		t.Fatalf("transport %T, want *tlsTransports", ep.HTTP.Transport)
	}
	conns := &connRecorder{}
	tt.base.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, srv.Listener.Addr().String())
		if err != nil {
			return nil, err
		}
		return conns.add(addr, c), nil
	}

	type result struct {
		body  string
		proto int
		err   error
	}
	held := make(chan result, 1)
	go func() {
		resp, err := ep.HTTP.Get("https://held.example:8501/held")
		if err != nil {
			held <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		held <- result{string(b), resp.ProtoMajor, err}
	}()
	<-started
	for i := range maxTransports {
		if err := getURL(ep.HTTP, fmt.Sprintf("https://leader-%d.example:8300/", i)); err != nil {
			t.Fatal(err)
		}
	}
	tt.mu.Lock()
	_, kept := tt.byKey[transportKey{name: "held.example"}]
	tt.mu.Unlock()
	if kept {
		t.Fatalf("held.example's transport kept after %d other hosts, want it dropped", maxTransports)
	}
	releaseHeld()
	r := <-held
	if r.err != nil || r.body != "ok" {
		t.Fatalf("the request in flight on the dropped transport: %q, %v; want it answered", r.body, r.err)
	}
	if want := map[bool]int{false: 1, true: 2}[h2]; r.proto != want {
		t.Fatalf("answered over HTTP/%d, want HTTP/%d", r.proto, want)
	}
	// Over HTTP/1.1 the transport's read loop puts the connection back,
	// and so closes it, after the body's Close returns: wait for that (far
	// less than the 90 s idle timeout it stayed open for).
	if n := conns.openAfter("held.example:8501", 10*time.Second); n != 0 {
		t.Errorf("%d connection(s) of the dropped transport open 10s after its last request ended", n)
	}
	if n := conns.open(fmt.Sprintf("leader-%d.example:8300", maxTransports-1)); n != 1 {
		t.Errorf("%d connection(s) of a kept transport open, want its idle one", n)
	}
}

// connRecorder counts the connections dialled for each address that are
// not closed yet.
type connRecorder struct {
	mu     sync.Mutex
	opened map[string]int // by the address dialled, those not closed
}

func (r *connRecorder) add(addr string, c net.Conn) net.Conn {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.opened == nil {
		r.opened = map[string]int{}
	}
	r.opened[addr]++
	return &recordedConn{Conn: c, closed: func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.opened[addr]--
	}}
}

func (r *connRecorder) open(addr string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.opened[addr]
}

// openAfter waits until no connection to addr is open, for at most
// within, and returns how many are.
func (r *connRecorder) openAfter(addr string, within time.Duration) int {
	deadline := time.Now().Add(within)
	for {
		n := r.open(addr)
		if n == 0 || time.Now().After(deadline) {
			return n
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// recordedConn calls closed at its first Close.
type recordedConn struct {
	net.Conn
	once   sync.Once
	closed func()
}

func (c *recordedConn) Close() error {
	c.once.Do(c.closed)
	return c.Conn.Close()
}
