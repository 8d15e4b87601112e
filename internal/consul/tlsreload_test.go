package consul

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
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
	cfg, err := clientConfig(o)
	if err != nil {
		t.Fatal(err)
	}
	ep, err := NewEndpoint(o)
	if err != nil {
		t.Fatal(err)
	}
	clients := map[string]*http.Client{"client": cfg.HttpClient, "endpoint": ep.HTTP}
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
