package app

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testCA makes certificates for the tests: a CA, and leaf certificates it
// signs, written as PEM files.
type testCA struct {
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// File is the CA's certificate file.
	File string
}

func newTestCA(t *testing.T, dir, name string) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{dir: dir, cert: cert, key: key, File: filepath.Join(dir, name+".pem")}
	os.WriteFile(ca.File, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	return ca
}

// issue writes a certificate for 127.0.0.1 (server and client use) and its
// key; it returns their files.
func (ca *testCA) issue(t *testing.T, name string) (certFile, keyFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(ca.dir, name+".crt"), filepath.Join(ca.dir, name+".key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return certFile, keyFile
}

// startControl runs `underlay control` with args (Docker and Consul
// unreachable) on a free loopback port until the test ends; it returns the
// address once the port answers.
func startControlCommand(t *testing.T, args ...string) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("DOCKER_HOST", "unix://"+filepath.Join(dir, "no-docker.sock"))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	t.Cleanup(func() { ln.Close() }) // served, closed by control; this for a control that never served it
	ctx, cancel := context.WithCancel(context.Background())
	cmd := newControlCommandFlags(&globalFlags{logLevel: "error", logFormat: "text"}, IOStreams{Out: io.Discard, ErrOut: io.Discard}, &controlFlags{listener: ln})
	cmd.SetArgs(append([]string{"--listen", addr, "--consul-addr", "127.0.0.1:1"}, args...))
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("control: %v", err)
		}
	})
	// The test's listener takes connections before control serves it, or
	// when control ended early: only an answer (any, TLS's included) says
	// it serves.
	probe := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if resp, err := probe.Get("http://" + addr + "/v1/orbiter/health"); err == nil {
			resp.Body.Close()
			return addr
		}
		select {
		case err := <-done:
			done <- err // for the cleanup, which waits for it
			t.Fatalf("control ended: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("control does not listen")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestControlTLS: with --tls-cert, --tls-key and --tls-client-ca the API
// speaks only TLS and only to clients with a certificate of the CA;
// `underlay scale` reaches it with --cacert, --cert and --key. With
// --auth-reads, reads and /metrics want the token.
func TestControlTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir, "ca")
	other := newTestCA(t, dir, "other-ca")
	srvCert, srvKey := ca.issue(t, "control")
	cliCert, cliKey := ca.issue(t, "operator")
	strangerCert, strangerKey := other.issue(t, "stranger")
	tokens := filepath.Join(dir, "tokens")
	os.WriteFile(tokens, []byte("tok\n"), 0o600)
	addr := startControlCommand(t, "--token-file", tokens, "--auth-reads",
		"--tls-cert", srvCert, "--tls-key", srvKey, "--tls-client-ca", ca.File)

	scaleCmd := func(args ...string) (string, error) {
		var out strings.Builder
		cmd := newScaleCommand(IOStreams{Out: &out, ErrOut: io.Discard})
		cmd.SetArgs(args)
		cmd.SetOut(io.Discard)
		cmd.SetErr(io.Discard)
		err := cmd.ExecuteContext(context.Background())
		return out.String(), err
	}
	if out, err := scaleCmd("ls", "--addr", "https://"+addr, "--cacert", ca.File, "--cert", cliCert, "--key", cliKey, "--token-file", tokens); err != nil || !strings.Contains(out, "SERVICE") {
		t.Errorf("scale ls over mutual TLS: %q, %v", out, err)
	}
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"no token with --auth-reads", []string{"--cacert", ca.File, "--cert", cliCert, "--key", cliKey}, "401"},
		{"no client certificate", []string{"--cacert", ca.File, "--token-file", tokens}, "certificate"},
		{"a certificate of another CA", []string{"--cacert", ca.File, "--cert", strangerCert, "--key", strangerKey, "--token-file", tokens}, "certificate"},
		{"server not verified", []string{"--cert", cliCert, "--key", cliKey, "--token-file", tokens}, "certificate"},
	}
	for _, tt := range tests {
		if _, err := scaleCmd(append([]string{"ls", "--addr", "https://" + addr}, tt.args...)...); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%s: %v, want an error containing %q", tt.name, err, tt.wantErr)
		}
	}
	if _, err := scaleCmd("ls", "--addr", "http://"+addr, "--token-file", tokens); err == nil {
		t.Error("plain HTTP to the TLS port answered")
	}

	// /metrics behind the token, health open, over mutual TLS.
	tlsCfg, err := tlsClient(ca.File, cliCert, cliKey)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	for _, c := range []struct {
		path, token string
		want        int
	}{{"/metrics", "", 401}, {"/metrics", "tok", 200}, {"/v1/orbiter/health", "", 503}, {"/v1/underlay/events", "", 401}} {
		req, _ := http.NewRequest("GET", "https://"+addr+c.path, nil)
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("GET %s (token %q): %d, want %d", c.path, c.token, resp.StatusCode, c.want)
		}
	}

	// The served certificate's expiry, to alert on.
	pair, err := tls.LoadX509KeyPair(srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("underlay_control_tls_certificate_expiry_timestamp_seconds %g", float64(pair.Leaf.NotAfter.Unix()))
	req, _ := http.NewRequest("GET", "https://"+addr+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), want+"\n") {
		t.Errorf("/metrics has no line %q", want)
	}
}

func tlsClient(ca, cert, key string) (*tls.Config, error) {
	pool := x509.NewCertPool()
	b, err := os.ReadFile(ca)
	if err != nil {
		return nil, err
	}
	pool.AppendCertsFromPEM(b)
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, err
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}}, nil
}
