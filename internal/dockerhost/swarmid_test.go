package dockerhost

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
	"strings"
	"testing"
	"time"
)

// nodeCert is a PEM certificate with swarm's subject for a node: CN the
// node ID, OU its role, O the cluster ID.
func nodeCert(t *testing.T, cn string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: cn, OrganizationalUnit: []string{"swarm-manager"}, Organization: []string{"s1w0gm1dn1evyvv5e1xdmxq3z"}},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestSwarmNodeIDFromCert(t *testing.T) {
	root := t.TempDir()
	if _, err := SwarmNodeIDFromCert(root); err == nil {
		t.Error("no certificate: no error")
	}
	dir := filepath.Join(root, "swarm", "certificates")
	os.MkdirAll(dir, 0o700)
	write := func(b []byte) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "swarm-node.crt"), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(nodeCert(t, "dvnwu9pg080zwhfxcnu7dxhs6"))
	if id, err := SwarmNodeIDFromCert(root); err != nil || id != "dvnwu9pg080zwhfxcnu7dxhs6" {
		t.Errorf("SwarmNodeIDFromCert = %q, %v", id, err)
	}
	write(nodeCert(t, "not a node id"))
	if _, err := SwarmNodeIDFromCert(root); err == nil || !strings.Contains(err.Error(), `"not a node id"`) {
		t.Errorf("a certificate of another subject: %v, want an error naming it", err)
	}
	write([]byte("garbage"))
	if _, err := SwarmNodeIDFromCert(root); err == nil {
		t.Error("garbage: no error")
	}
}
