package tlsfile

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/testclock"
	"github.com/underlay/underlay/internal/testlog"
)

// testCA makes a CA and certificates it signs, as PEM.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) *testCA {
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
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// leaf is an issued certificate: its PEM, its key's PEM and its serial.
type leaf struct {
	certPEM, keyPEM []byte
	serial          *big.Int
}

// issue makes a certificate for 127.0.0.1, server and client use, valid
// for an hour.
func (ca *testCA) issue(t *testing.T, name string) leaf {
	t.Helper()
	return ca.issueUntil(t, name, time.Now().Add(time.Hour))
}

func (ca *testCA) issueUntil(t *testing.T, name string, notAfter time.Time) leaf {
	t.Helper()
	return ca.issueBetween(t, name, time.Now().Add(-time.Hour), notAfter)
}

func (ca *testCA) issueBetween(t *testing.T, name string, notBefore, notAfter time.Time) leaf {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: notBefore, NotAfter: notAfter,
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	return leaf{certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), serial: serial}
}

func write(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// serveTLS accepts TLS connections with cfg until the test ends, completing
// each handshake; it returns the address and a function that gives the
// serial of the last client certificate seen.
func serveTLS(t *testing.T, cfg *tls.Config) (string, func() *big.Int) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var mu sync.Mutex
	var last *big.Int
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tc := c.(*tls.Conn)
			if tc.Handshake() == nil {
				if pc := tc.ConnectionState().PeerCertificates; len(pc) > 0 {
					mu.Lock()
					last = pc[0].SerialNumber
					mu.Unlock()
				}
				tc.Write([]byte("x")) // lets the client see the handshake's end (TLS 1.3)
			}
			tc.Close()
		}
	}()
	return ln.Addr().String(), func() *big.Int {
		mu.Lock()
		defer mu.Unlock()
		return last
	}
}

// handshake connects to addr with cfg and returns the serial of the
// server's certificate.
func handshake(t *testing.T, addr string, cfg *tls.Config) (*big.Int, error) {
	t.Helper()
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	// With TLS 1.3 the client's certificate is checked after the client's
	// handshake ends: a refusal shows on the first read.
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		return nil, err
	}
	return c.ConnectionState().PeerCertificates[0].SerialNumber, nil
}

// TestServerPicksUpRotatedCertificate: a new handshake presents the
// certificate written after start; a half-done rewrite (a new certificate
// beside the old key, a truncated certificate, a missing key) keeps the
// last good pair, is logged once without the key, and the pair completed
// afterwards is picked up. Before tlsfile, the pair was read once at start.
func TestServerPicksUpRotatedCertificate(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	ca := newTestCA(t, "ca")
	first, second, third := ca.issue(t, "first"), ca.issue(t, "second"), ca.issue(t, "third")
	write(t, certFile, first.certPEM)
	write(t, keyFile, first.keyPEM)
	var logs testlog.Buffer
	clk := testclock.New(time.Now())
	pair, err := OpenPair(certFile, keyFile, slog.New(slog.NewTextHandler(&logs, nil)), WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := serveTLS(t, ServerConfig(pair, nil))
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	client := &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}
	presents := func(step string, want leaf) {
		t.Helper()
		got, err := handshake(t, addr, client)
		if err != nil {
			t.Fatalf("%s: handshake: %v", step, err)
		}
		if got.Cmp(want.serial) != 0 {
			t.Errorf("%s: server presents serial %x, want %x", step, got, want.serial)
		}
	}
	presents("at start", first)

	write(t, certFile, second.certPEM)
	write(t, keyFile, second.keyPEM)
	presents("rotated, within CheckEvery", first)
	clk.Add(CheckEvery)
	presents("rotated", second)

	// The rewrite caught half done: the new certificate beside the old
	// key, then a truncated certificate, then a missing key.
	write(t, certFile, third.certPEM)
	clk.Add(CheckEvery)
	presents("new certificate, old key", second)
	write(t, certFile, third.certPEM[:len(third.certPEM)/2])
	clk.Add(CheckEvery)
	presents("truncated certificate", second)
	os.Remove(keyFile)
	clk.Add(CheckEvery)
	presents("key missing", second)
	write(t, certFile, third.certPEM)
	write(t, keyFile, third.keyPEM)
	clk.Add(CheckEvery)
	presents("rewrite done", third)

	out := logs.String()
	for _, want := range []string{"TLS certificate changed; new handshakes present it", `subject="CN=second"`, `subject="CN=third"`,
		"files unusable", "private key does not match public key", "files usable again"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "private key does not match public key"); n != 1 {
		t.Errorf("the mismatch is logged %d times, want once:\n%s", n, out)
	}
	for _, k := range []leaf{first, second, third} {
		b64 := strings.Split(string(k.keyPEM), "\n")[1]
		if strings.Contains(out, b64) || strings.Contains(out, "PRIVATE KEY-----") {
			t.Fatalf("a key is logged:\n%s", out)
		}
	}
}

// TestNotAfterFollowsRotation: the expiry control exports is the
// certificate's in use, the rotated one once read again.
func TestNotAfterFollowsRotation(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	ca := newTestCA(t, "ca")
	soon, later := time.Now().Add(72*time.Hour).Truncate(time.Second), time.Now().Add(90*24*time.Hour).Truncate(time.Second)
	first, second := ca.issueUntil(t, "first", soon), ca.issueUntil(t, "second", later)
	write(t, certFile, first.certPEM)
	write(t, keyFile, first.keyPEM)
	clk := testclock.New(time.Now())
	pair, err := OpenPair(certFile, keyFile, nil, WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	if got := pair.NotAfter(); !got.Equal(soon) {
		t.Errorf("NotAfter %s, want %s", got, soon)
	}
	write(t, certFile, second.certPEM)
	write(t, keyFile, second.keyPEM)
	clk.Add(CheckEvery)
	if got := pair.NotAfter(); !got.Equal(later) {
		t.Errorf("NotAfter after rotation %s, want %s", got, later)
	}
}

// TestExpiredRenewalKeepsTheValidCertificate: a certificate file rewritten
// with one already expired (a renewal job that copied an old backup)
// replaced the valid certificate in use, logged at info level only, and
// every new handshake failed. The valid one now stays in use and the
// expired one is warned of, naming its expiry; a valid renewal after it
// is taken.
func TestExpiredRenewalKeepsTheValidCertificate(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	ca := newTestCA(t, "ca")
	valid, expired, renewed := ca.issue(t, "valid"), ca.issueUntil(t, "expired", time.Now().Add(-time.Minute)), ca.issue(t, "renewed")
	write(t, certFile, valid.certPEM)
	write(t, keyFile, valid.keyPEM)
	clk := testclock.New(time.Now())
	var logs testlog.Buffer
	pair, err := OpenPair(certFile, keyFile, slog.New(slog.NewTextHandler(&logs, nil)), WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	write(t, certFile, expired.certPEM)
	write(t, keyFile, expired.keyPEM)
	clk.Add(CheckEvery)
	if got := pair.Certificate().Leaf.SerialNumber; got.Cmp(valid.serial) != 0 {
		t.Errorf("certificate in use after an expired one was written: serial %s, want the valid one's %s", got, valid.serial)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "expired") {
		t.Errorf("the expired certificate was not warned of:\n%s", logs.String())
	}
	write(t, certFile, renewed.certPEM)
	write(t, keyFile, renewed.keyPEM)
	clk.Add(CheckEvery)
	if got := pair.Certificate().Leaf.SerialNumber; got.Cmp(renewed.serial) != 0 {
		t.Errorf("certificate in use after a valid renewal: serial %s, want %s", got, renewed.serial)
	}
}

// TestNotYetValidRenewalWaits: a certificate written whose validity has
// not begun (an issuer's clock ahead, a renewal staged early) does not
// replace the valid one in use — every new handshake would fail on it —;
// it is warned of once, and taken once its validity begins. Before, it
// replaced the valid certificate at once.
func TestNotYetValidRenewalWaits(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	ca := newTestCA(t, "ca")
	start := time.Now()
	valid := ca.issue(t, "valid")
	early := ca.issueBetween(t, "early", start.Add(10*time.Minute), start.Add(50*time.Minute))
	write(t, certFile, valid.certPEM)
	write(t, keyFile, valid.keyPEM)
	clk := testclock.New(start)
	var logs testlog.Buffer
	pair, err := OpenPair(certFile, keyFile, slog.New(slog.NewTextHandler(&logs, nil)), WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	write(t, certFile, early.certPEM)
	write(t, keyFile, early.keyPEM)
	for range 3 {
		clk.Add(CheckEvery)
		if got := pair.Certificate().Leaf.SerialNumber; got.Cmp(valid.serial) != 0 {
			t.Fatalf("certificate in use after one not yet valid was written: serial %s, want the valid one's %s", got, valid.serial)
		}
	}
	if n := strings.Count(logs.String(), "not valid before"); n != 1 || !strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("the certificate not yet valid was warned of %d times, want once:\n%s", n, logs.String())
	}
	clk.Add(10 * time.Minute)
	if got := pair.Certificate().Leaf.SerialNumber; got.Cmp(early.serial) != 0 {
		t.Errorf("certificate in use once the new one's validity began: serial %s, want %s", got, early.serial)
	}
}

// TestServerPicksUpRotatedClientCA: with mutual TLS, clients of a CA
// written into the client CA file after start get in, and a CA file
// rewritten without a certificate keeps the last CAs.
func TestServerPicksUpRotatedClientCA(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, caFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "clients.pem")
	ca, newCA := newTestCA(t, "ca"), newTestCA(t, "new-ca")
	srv, oldClient, newClient := ca.issue(t, "server"), ca.issue(t, "old-client"), newCA.issue(t, "new-client")
	write(t, certFile, srv.certPEM)
	write(t, keyFile, srv.keyPEM)
	write(t, caFile, ca.pem)
	pair, err := OpenPair(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	clk := testclock.New(time.Now())
	pool, err := OpenPool(caFile, "client CA", nil, WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := serveTLS(t, ServerConfig(pair, pool))
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	dial := func(c leaf) error {
		cert, err := tls.X509KeyPair(c.certPEM, c.keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		_, err = handshake(t, addr, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", Certificates: []tls.Certificate{cert}})
		return err
	}
	if err := dial(oldClient); err != nil {
		t.Fatalf("client of the CA: %v", err)
	}
	if err := dial(newClient); err == nil {
		t.Fatal("client of another CA let in")
	}
	write(t, caFile, newCA.pem)
	clk.Add(CheckEvery)
	if err := dial(newClient); err != nil {
		t.Errorf("client of the CA written after start: %v", err)
	}
	if err := dial(oldClient); err == nil {
		t.Error("client of the CA removed from the file still let in")
	}
	write(t, caFile, []byte("-----BEGIN CERT"))
	clk.Add(CheckEvery)
	if err := dial(newClient); err != nil {
		t.Errorf("CA file half written: client of the last CAs refused: %v", err)
	}
}

// TestClientConfig: a client verifies servers against the CA file as it is
// when the configuration is made (another CA's server, or one whose name
// does not match, refused) and presents its certificate as it is at the
// handshake.
func TestClientConfig(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, caFile := filepath.Join(dir, "c.crt"), filepath.Join(dir, "c.key"), filepath.Join(dir, "ca.pem")
	ca, otherCA := newTestCA(t, "ca"), newTestCA(t, "other-ca")
	cli1, cli2 := ca.issue(t, "client-1"), ca.issue(t, "client-2")
	write(t, certFile, cli1.certPEM)
	write(t, keyFile, cli1.keyPEM)
	write(t, caFile, ca.pem)
	clk := testclock.New(time.Now())
	pair, err := OpenPair(certFile, keyFile, nil, WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	roots, err := OpenPool(caFile, "server CA", nil, WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}

	serverWith := func(c leaf) (string, func() *big.Int) {
		cert, err := tls.X509KeyPair(c.certPEM, c.keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return serveTLS(t, &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAnyClientCert})
	}
	good, lastClient := serverWith(ca.issue(t, "server"))
	stranger, strangerClient := serverWith(otherCA.issue(t, "stranger"))
	withName := func(name string) *tls.Config {
		c := ClientConfig(pair, roots)
		c.ServerName = name
		return c
	}
	if _, err := handshake(t, good, withName("127.0.0.1")); err != nil {
		t.Fatalf("server of the CA: %v", err)
	}
	if got := lastClient(); got == nil || got.Cmp(cli1.serial) != 0 {
		t.Errorf("client presented %x, want %x", got, cli1.serial)
	}
	for name, c := range map[string]struct {
		addr string
		cfg  *tls.Config
	}{
		"another CA's server": {stranger, withName("127.0.0.1")},
		"name mismatch":       {good, withName("control.example")},
	} {
		if _, err := handshake(t, c.addr, c.cfg); err == nil {
			t.Errorf("%s: handshake succeeded", name)
		}
	}

	write(t, caFile, otherCA.pem)
	write(t, certFile, cli2.certPEM)
	write(t, keyFile, cli2.keyPEM)
	clk.Add(CheckEvery)
	if _, err := handshake(t, stranger, withName("127.0.0.1")); err != nil {
		t.Errorf("server of the CA written after start: %v", err)
	}
	if got := strangerClient(); got == nil || got.Cmp(cli2.serial) != 0 {
		t.Errorf("after rotation the client presented %x, want %x", got, cli2.serial)
	}
	if _, err := handshake(t, good, withName("127.0.0.1")); err == nil {
		t.Error("server of the CA removed from the file still trusted")
	}
	if c := ClientConfig(pair, nil); c.RootCAs != nil || c.InsecureSkipVerify {
		t.Error("without a CA file, servers are verified against the system's CAs")
	}
}

// TestServerConfigKeepsHTTP2: a configuration made per handshake still
// offers HTTP/2 to net/http's server, as its own ServeTLS would.
func TestServerConfigKeepsHTTP2(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	ca := newTestCA(t, "ca")
	l := ca.issue(t, "server")
	write(t, certFile, l.certPEM)
	write(t, keyFile, l.keyPEM)
	pair, err := OpenPair(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{TLSConfig: ServerConfig(pair, nil), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Proto)
	})}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true}}
	resp, err := c.Get("https://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if string(b) != "HTTP/2.0" {
		t.Errorf("protocol %q, want HTTP/2.0", b)
	}
}

// TestOpenErrors: a pair that does not load and a CA file without a
// certificate are refused at start, naming the files.
func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "ca")
	a, b := ca.issue(t, "a"), ca.issue(t, "b")
	certFile, keyFile, caFile := filepath.Join(dir, "a.crt"), filepath.Join(dir, "b.key"), filepath.Join(dir, "ca.pem")
	write(t, certFile, a.certPEM)
	write(t, keyFile, b.keyPEM)
	write(t, caFile, []byte("not PEM"))
	if _, err := OpenPair(certFile, keyFile, nil); err == nil || !strings.Contains(err.Error(), certFile) || !strings.Contains(err.Error(), keyFile) {
		t.Errorf("mismatched pair: %v, want an error naming both files", err)
	}
	if _, err := OpenPair(certFile, "", nil); err == nil {
		t.Error("no key file accepted")
	}
	if _, err := OpenPool(caFile, "client CA", nil); err == nil || !strings.Contains(err.Error(), caFile) || !strings.Contains(err.Error(), "client CA") {
		t.Errorf("CA file without a certificate: %v, want an error naming it", err)
	}
}

// TestResumedSessionRechecksClientCA: a client whose CA is removed from
// the client CA file is refused even when it offers a session ticket from
// before (crypto/tls checks a resumed session against the ClientCAs of
// GetConfigForClient's configuration; some older Go releases did not); a
// client of a CA still in the file resumes.
func TestResumedSessionRechecksClientCA(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, caFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "clients.pem")
	ca, otherCA := newTestCA(t, "ca"), newTestCA(t, "other-ca")
	srv, kept, dropped := ca.issue(t, "server"), ca.issue(t, "kept-client"), otherCA.issue(t, "dropped-client")
	write(t, certFile, srv.certPEM)
	write(t, keyFile, srv.keyPEM)
	write(t, caFile, append(append([]byte{}, ca.pem...), otherCA.pem...))
	pair, err := OpenPair(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	clk := testclock.New(time.Now())
	pool, err := OpenPool(caFile, "client CA", nil, WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := serveTLS(t, ServerConfig(pair, pool))
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	clientOf := func(l leaf) *tls.Config {
		cert, err := tls.X509KeyPair(l.certPEM, l.keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", Certificates: []tls.Certificate{cert},
			ClientSessionCache: tls.NewLRUClientSessionCache(4)}
	}
	dial := func(cfg *tls.Config) (resumed bool, err error) {
		c, err := tls.Dial("tcp", addr, cfg)
		if err != nil {
			return false, err
		}
		defer c.Close()
		// The read takes the session ticket (TLS 1.3 sends it after the
		// handshake) and shows a refusal of the client.
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			return false, err
		}
		return c.ConnectionState().DidResume, nil
	}
	keptCfg, droppedCfg := clientOf(kept), clientOf(dropped)
	for _, cfg := range []*tls.Config{keptCfg, droppedCfg} {
		if _, err := dial(cfg); err != nil {
			t.Fatalf("first handshake: %v", err)
		}
	}
	if resumed, err := dial(keptCfg); err != nil || !resumed {
		t.Fatalf("second handshake: resumed %v, %v; want a resumed session (else the test proves nothing)", resumed, err)
	}
	write(t, caFile, ca.pem) // other-ca removed
	clk.Add(CheckEvery)
	if _, err := dial(droppedCfg); err == nil {
		t.Error("a client of a removed CA got in on its session ticket")
	}
	if resumed, err := dial(keptCfg); err != nil || !resumed {
		t.Errorf("a client of a kept CA: resumed %v, %v; want resumed", resumed, err)
	}
}

// TestWatchSeesRotationByRename: a file replaced by rename with the same
// size and modification time (a copy that kept its times, then mv) is
// seen as changed. Before, the stamp was size and mtime only: the old
// certificate stayed in use.
func TestWatchSeesRotationByRename(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tls.crt")
	write(t, path, []byte("first-certificate"))
	clk := testclock.New(time.Now())
	w := newWatch(clk.Now, path)
	stamps, err := w.stat()
	if err != nil {
		t.Fatal(err)
	}
	w.loaded = stamps
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	next := filepath.Join(dir, "tls.crt.new")
	write(t, next, []byte("other-certificate")) // the same size
	if err := os.Chtimes(next, st.ModTime(), st.ModTime()); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(next, path); err != nil {
		t.Fatal(err)
	}
	clk.Add(CheckEvery)
	if _, load := w.look(); !load {
		t.Error("a file renamed over the certificate, same size and mtime, is not seen as changed")
	}
	clk.Add(CheckEvery)
	if _, load := w.look(); !load {
		t.Error("asked again: still to load (nothing was loaded)")
	}
}

// within runs f, and fails t when it has not returned within 5 s; then it
// opens fifo for writing, which lets an open of it for reading blocked in
// f through, so that f's goroutine ends.
func within(t *testing.T, what, fifo string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		if w, err := os.OpenFile(fifo, os.O_WRONLY, 0); err == nil {
			w.Close()
		}
		<-done
		t.Fatalf("%s blocked on a FIFO", what)
	}
}

// TestOnlyRegularBoundedFilesAreRead: the files were read whole with
// os.ReadFile, whatever they were: a path naming a FIFO blocked OpenPair
// and OpenPool until some process wrote to it, and a pair or CA file
// rotated into one blocked Certificate or Pool under its lock, and with
// it every handshake after; a device such as /dev/zero, or a huge file,
// was read until memory ran out. A file that is not a regular one, or
// is larger than maxFileSize, is now refused (at start) or keeps the last
// good one (on rotation), at once.
func TestOnlyRegularBoundedFilesAreRead(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "ca")
	good := ca.issue(t, "good")
	certFile, keyFile, caFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "ca.pem")
	write(t, certFile, good.certPEM)
	write(t, keyFile, good.keyPEM)
	write(t, caFile, ca.pem)
	fifo := filepath.Join(dir, "fifo")
	mkfifo := func() {
		t.Helper()
		if err := syscall.Mkfifo(fifo, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	mkfifo()
	within(t, "OpenPair", fifo, func() {
		if _, err := OpenPair(certFile, fifo, nil); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("OpenPair with a FIFO for its key: %v, want an error saying it is not a regular file", err)
		}
	})
	within(t, "OpenPool", fifo, func() {
		if _, err := OpenPool(fifo, "client CA", nil); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("OpenPool of a FIFO: %v, want an error saying it is not a regular file", err)
		}
	})
	huge := filepath.Join(dir, "huge.pem")
	write(t, huge, append(slices.Clone(ca.pem), make([]byte, maxFileSize)...))
	if _, err := OpenPool(huge, "client CA", nil); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("OpenPool of a file over maxFileSize: %v, want an error saying it is too large", err)
	}
	if _, err := OpenPair(huge, keyFile, nil); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("OpenPair with a certificate file over maxFileSize: %v, want an error saying it is too large", err)
	}

	clk := testclock.New(time.Now())
	pair, err := OpenPair(certFile, keyFile, nil, WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	pool, err := OpenPool(caFile, "client CA", nil, WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(fifo, keyFile); err != nil {
		t.Fatal(err)
	}
	clk.Add(CheckEvery)
	within(t, "Certificate", keyFile, func() {
		if got := pair.Certificate().Leaf.SerialNumber; got.Cmp(good.serial) != 0 {
			t.Errorf("serial %s once the key file became a FIFO, want the last good pair's %s", got, good.serial)
		}
	})
	mkfifo()
	if err := os.Rename(fifo, caFile); err != nil {
		t.Fatal(err)
	}
	within(t, "Pool", caFile, func() {
		if pool.Pool() == nil {
			t.Error("no pool once the CA file became a FIFO, want the last good one")
		}
	})
}

// TestKeyOwnerWarned: a key file 0600 but owned by another unprivileged
// user passed with no word, though that user may replace the key. It is
// now warned of at load, naming the uid; a key of this process's user is
// not.
func TestKeyOwnerWarned(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "ca")
	a := ca.issue(t, "a")
	certFile, keyFile := filepath.Join(dir, "a.crt"), filepath.Join(dir, "a.key")
	write(t, certFile, a.certPEM)
	write(t, keyFile, a.keyPEM)
	var logs testlog.Buffer
	if _, err := OpenPair(certFile, keyFile, slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs.String(), "belongs to") {
		t.Errorf("a key of this process's user warned of:\n%s", logs.String())
	}
	if os.Geteuid() != 0 {
		return // only root can give the file to another user
	}
	if err := os.Chown(keyFile, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenPair(certFile, keyFile, slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "TLS key file belongs to uid 65534") {
		t.Errorf("key owned by uid 65534: log\n%s\nwant a warning naming it", logs.String())
	}
}

// TestPoolDir: a directory of CA files (Consul's CONSUL_CAPATH) is one
// pool of every file under it, at any depth; a file added or removed is
// picked up CheckEvery later, not before; a file with no certificate keeps
// the last pool and is warned of once; a link inside to a directory is not
// followed, and the directory named through a link is followed when the
// link is swapped (a mounted Kubernetes secret).
func TestPoolDir(t *testing.T) {
	dir := t.TempDir()
	cas, next := filepath.Join(dir, "cas"), filepath.Join(dir, "next")
	for _, d := range []string{filepath.Join(cas, "sub"), next} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	a, b, c := newTestCA(t, "a"), newTestCA(t, "b"), newTestCA(t, "c")
	write(t, filepath.Join(cas, "a.pem"), a.pem)
	write(t, filepath.Join(cas, "sub", "b.pem"), b.pem)
	write(t, filepath.Join(next, "c.pem"), c.pem)
	if err := os.Symlink(next, filepath.Join(cas, "..data")); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "current")
	if err := os.Symlink(cas, link); err != nil {
		t.Fatal(err)
	}
	var logs testlog.Buffer
	clk := testclock.New(time.Now())
	pool, err := OpenPoolDir(link, "server CA", slog.New(slog.NewTextHandler(&logs, nil)), WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	leaves := map[*testCA]*x509.Certificate{}
	for _, ca := range []*testCA{a, b, c} {
		l := ca.issue(t, "server")
		blk, _ := pem.Decode(l.certPEM)
		if leaves[ca], err = x509.ParseCertificate(blk.Bytes); err != nil {
			t.Fatal(err)
		}
	}
	trusts := func(step string, want map[*testCA]bool) {
		t.Helper()
		roots := pool.Pool()
		for ca, w := range want {
			_, err := leaves[ca].Verify(x509.VerifyOptions{Roots: roots})
			if got := err == nil; got != w {
				t.Errorf("%s: a server of CA %s trusted %v, want %v", step, ca.cert.Subject.CommonName, got, w)
			}
		}
	}
	trusts("at start", map[*testCA]bool{a: true, b: true, c: false})

	write(t, filepath.Join(cas, "c.pem"), c.pem)
	if err := os.Remove(filepath.Join(cas, "a.pem")); err != nil {
		t.Fatal(err)
	}
	trusts("changed, within CheckEvery", map[*testCA]bool{a: true, c: false})
	clk.Add(CheckEvery)
	trusts("a file added and one removed", map[*testCA]bool{a: false, b: true, c: true})

	write(t, filepath.Join(cas, "README"), []byte("the CAs of the Consul servers"))
	for range 2 {
		clk.Add(CheckEvery)
		trusts("a file with no certificate added", map[*testCA]bool{b: true, c: true})
	}
	if n := strings.Count(logs.String(), "files unusable"); n != 1 {
		t.Errorf("a file with no certificate warned of %d times, want once:\n%s", n, &logs)
	}

	write(t, filepath.Join(next, "a.pem"), a.pem)
	tmp := filepath.Join(dir, "current.new")
	if err := os.Symlink(next, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, link); err != nil {
		t.Fatal(err)
	}
	clk.Add(CheckEvery)
	trusts("the link swapped to another directory", map[*testCA]bool{a: true, b: false, c: true})

	for name, path := range map[string]string{"empty": t.TempDir(), "missing": filepath.Join(dir, "missing")} {
		if _, err := OpenPoolDir(path, "server CA", nil); err == nil || !strings.Contains(err.Error(), "server CA") {
			t.Errorf("OpenPoolDir of a %s directory: %v, want an error naming the pool", name, err)
		}
	}
}
