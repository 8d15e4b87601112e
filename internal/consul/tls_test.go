package consul

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// writeKey writes a new P-256 key to dir/name and returns its path.
func writeKey(t *testing.T, dir, name string) (string, *ecdsa.PrivateKey) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, k
}

// TestEndpointTLSAsClient: the doctor's endpoint presents the client
// certificate the Consul client presents, from the flags and the
// CONSUL_CLIENT_* environment alike: a certificate given by flag with its
// key in the environment (or the other way round) was refused by the
// endpoint, or its pair taken from the environment, while the client
// took it.
func TestEndpointTLSAsClient(t *testing.T) {
	dir := t.TempDir()
	keyFile, key := writeKey(t, dir, "client.key")
	otherKey, _ := writeKey(t, dir, "other.key")
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "underlay"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	certFile := filepath.Join(dir, "client.crt")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CONSUL_HTTP_TOKEN_FILE", "")
	t.Setenv("CONSUL_HTTP_ADDR", "")
	for _, tc := range []struct {
		name              string
		envCert, envKey   string
		flagCert, flagKey string
	}{
		{"both by flag", "", "", certFile, keyFile},
		{"certificate by flag, key from the environment", "", keyFile, certFile, ""},
		{"key by flag over the environment's", certFile, otherKey, "", keyFile},
	} {
		t.Setenv("CONSUL_CLIENT_CERT", tc.envCert)
		t.Setenv("CONSUL_CLIENT_KEY", tc.envKey)
		o := Options{Addr: "127.0.0.1:8501", CertFile: tc.flagCert, KeyFile: tc.flagKey}
		if _, err := NewClient(o); err != nil {
			t.Errorf("%s: client: %v", tc.name, err)
			continue
		}
		ep, err := NewEndpoint(o)
		if err != nil {
			t.Errorf("%s: endpoint: %v, want the client's certificate", tc.name, err)
			continue
		}
		// The certificate its handshakes present.
		tt, ok := ep.HTTP.Transport.(*tlsTransports)
		if !ok || tt.pair == nil {
			t.Errorf("%s: endpoint transport %T with no client certificate, want the client's", tc.name, ep.HTTP.Transport)
			continue
		}
		if cert := tt.pair.Certificate(); ep.Scheme != "https" || string(cert.Certificate[0]) != string(der) {
			t.Errorf("%s: endpoint %s with certificate %q, want https with the client's", tc.name, ep.Scheme, cert.Leaf.Subject)
		}
	}
}
