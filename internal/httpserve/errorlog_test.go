package httpserve

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/testlog"
)

// selfSigned is a TLS configuration with a certificate for 127.0.0.1.
func selfSigned(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// serveLoopback serves srv on a loopback port until the test ends and
// returns its address.
func serveLoopback(t *testing.T, srv *http.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, srv) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// TestServerLogsToSlog: NewServer's servers left http.Server's ErrorLog
// unset, so net/http's own messages (a handler's panic, a failed TLS
// handshake) went to the process's standard logger, with no level and no
// component. They now go to the server's slog logger: a panic, a bug, as
// an error; a handshake that failed, which any client causes, at debug.
func TestServerLogsToSlog(t *testing.T) {
	recs := testlog.NewRecords(16)
	log := slog.New(recs).With("component", "test")
	mux := http.NewServeMux()
	mux.HandleFunc("/panic", func(http.ResponseWriter, *http.Request) { panic("boom") })

	addr := serveLoopback(t, NewServer(mux, log))
	if resp, err := http.Get("http://" + addr + "/panic"); err == nil {
		resp.Body.Close()
		t.Fatalf("GET /panic: %s, want the connection closed", resp.Status)
	}
	r := recs.Await(t, 5*time.Second, func(r slog.Record) bool { return strings.Contains(r.Message, "panic serving") })
	if r.Level != slog.LevelError || !strings.Contains(r.Message, "boom") || testlog.Attr(r, "component") != "test" {
		t.Errorf("panic logged as %s %q component=%q, want an error naming boom, component=test", r.Level, r.Message, testlog.Attr(r, "component"))
	}

	srv := NewServer(mux, log)
	srv.TLSConfig = selfSigned(t)
	addr = serveLoopback(t, srv)
	// Plain HTTP to a TLS server: the handshake fails.
	if resp, err := http.Get("http://" + addr + "/"); err == nil {
		resp.Body.Close()
	}
	r = recs.Await(t, 5*time.Second, func(r slog.Record) bool { return strings.Contains(r.Message, "TLS handshake error") })
	if r.Level != slog.LevelDebug || testlog.Attr(r, "component") != "test" {
		t.Errorf("handshake error logged as %s %q component=%q, want debug, component=test", r.Level, r.Message, testlog.Attr(r, "component"))
	}
}
