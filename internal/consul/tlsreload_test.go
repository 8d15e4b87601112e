package consul

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
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

// issue is a certificate of ca for cn (a server's for 127.0.0.1, or a
// client's), as PEM and as a tls.Certificate.
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

// TestTLSFilesRotation: Consul's client read --consul-cacert and the
// client certificate and key once; a rotated certificate was presented
// only after an agent restart, and a server certificate of a rotated CA
// was refused until then. New connections now use the files as they are:
// the client and the endpoint present the new client certificate and
// trust the new CA; a certificate written before its key keeps the last
// good pair.
func TestTLSFilesRotation(t *testing.T) {
	clientCA, serverCA1, serverCA2 := newTestCA(t, "client CA"), newTestCA(t, "server CA 1"), newTestCA(t, "server CA 2")
	_, _, server1 := serverCA1.issue(t, "consul 1", true)
	_, _, server2 := serverCA2.issue(t, "consul 2", true)
	var serving atomic.Pointer[tls.Certificate]
	serving.Store(&server1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close") // each request a new connection
		w.Write([]byte(r.TLS.PeerCertificates[0].Subject.CommonName))
	}))
	pool := x509.NewCertPool()
	pool.AddCert(clientCA.cert)
	// httptest's own certificate would be served to a client sending no
	// server name (an IP address): the config is chosen per connection.
	srv.TLS = &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		return &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool, Certificates: []tls.Certificate{*serving.Load()}}, nil
	}}
	srv.StartTLS()
	defer srv.Close()

	dir := t.TempDir()
	caFile, certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key")
	cert1, key1, _ := clientCA.issue(t, "agent 1", false)
	replace(t, caFile, serverCA1.pem)
	replace(t, certFile, cert1)
	replace(t, keyFile, key1)
	for _, v := range []string{"CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "CONSUL_CACERT", "CONSUL_CAPATH", "CONSUL_CLIENT_CERT", "CONSUL_CLIENT_KEY"} {
		t.Setenv(v, "")
	}
	o := Options{Addr: srv.URL, CAFile: caFile, CertFile: certFile, KeyFile: keyFile}
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
	for name := range clients {
		if got := presented(name); got != "agent 1" {
			t.Errorf("%s presented %q with the certificate rotated but not its key, want agent 1 kept", name, got)
		}
	}
	replace(t, keyFile, key2)
	for name := range clients {
		if got := presented(name); got != "agent 2" {
			t.Errorf("%s presented %q after the rotation, want agent 2", name, got)
		}
	}

	// The server's CA rotated: the new CA file first, then the server's
	// certificate of it.
	replace(t, caFile, append(append([]byte{}, serverCA1.pem...), serverCA2.pem...))
	serving.Store(&server2)
	for name := range clients {
		if got := presented(name); got != "agent 2" {
			t.Errorf("%s with the server's CA rotated: presented %q, want agent 2 over a trusted connection", name, got)
		}
	}
}
