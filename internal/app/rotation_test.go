package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/scale"
	"github.com/underlay/underlay/internal/testlog"
	"github.com/underlay/underlay/internal/testnet"
)

// startControlLogged runs `underlay control` with args (Docker and Consul
// unreachable) on a free loopback port until the test ends, logging at
// info level; it returns the address once the port answers, and the log.
// If control ends first (it could not start), the test fails at once with
// its error and its output.
func startControlLogged(t testing.TB, args ...string) (string, *testlog.Buffer) {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("DOCKER_HOST", "unix://"+filepath.Join(dir, "no-docker.sock"))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	logs := &testlog.Buffer{}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := newControlCommand(&globalFlags{logLevel: "info", logFormat: "text"}, IOStreams{Out: io.Discard, ErrOut: logs})
	cmd.SetArgs(append([]string{"--listen", addr, "--consul-addr", "127.0.0.1:1"}, args...))
	// As the root command does: the error is reported here, once.
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	// ended is closed once control has returned runErr.
	var runErr error
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		runErr = cmd.ExecuteContext(ctx)
	}()
	listening := false
	t.Cleanup(func() {
		cancel()
		<-ended
		// An end before it listened has failed the test already.
		if listening && runErr != nil {
			t.Errorf("control: %v\n%s", runErr, logs.String())
		}
	})
	deadline := time.After(5 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			listening = true
			return addr, logs
		}
		select {
		case <-ended:
			t.Fatalf("control ended before it listened on %s: %v; its output:\n%s", addr, runErr, logs.String())
		case <-deadline:
			t.Fatalf("control does not listen on %s after 5s; its output:\n%s", addr, logs.String())
		case <-tick.C:
		}
	}
}

// fatalTB is a testing.TB whose Fatalf ends the goroutine calling it, as
// testing's does, and records the message, and whose cleanups run when
// run returns: a helper's failure made visible to the test of the helper.
type fatalTB struct {
	testing.TB
	mu       sync.Mutex
	fatal    string
	errs     []string
	cleanups []func()
}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.mu.Lock()
	f.fatal = fmt.Sprintf(format, args...)
	f.mu.Unlock()
	runtime.Goexit()
}

func (f *fatalTB) Fatal(args ...any) { f.Fatalf("%s", fmt.Sprint(args...)) }

func (f *fatalTB) Errorf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs = append(f.errs, fmt.Sprintf(format, args...))
}

func (f *fatalTB) Cleanup(fn func()) { f.cleanups = append(f.cleanups, fn) }

// run calls helper with f in a goroutine of its own, then f's cleanups,
// last first, and returns once they have returned.
func (f *fatalTB) run(helper func(testing.TB)) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			for i := len(f.cleanups) - 1; i >= 0; i-- {
				f.cleanups[i]()
			}
		}()
		helper(f)
	}()
	<-done
}

// TestStartControlEndsWhenControlDoes: when control ends while starting
// (here, its --listen address taken), startControlLogged fails the test
// at once, with control's error and output. Before, it read control's end
// while polling the port, failed, and its cleanup then waited for that
// end again, forever: the test hung until go test's timeout.
func TestStartControlEndsWhenControlDoes(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	f := &fatalTB{TB: t}
	f.run(func(tb testing.TB) { startControlLogged(tb, "--insecure-no-auth", "--listen", busy.Addr().String()) })
	for _, want := range []string{"address already in use", "authentication disabled"} {
		if !strings.Contains(f.fatal, want) {
			t.Errorf("failure %q: want it to hold %q (control's error and its log)", f.fatal, want)
		}
	}
	if len(f.errs) > 0 {
		t.Errorf("reported again at cleanup: %q", f.errs)
	}
}

// waitUntil polls cond until it holds, for at most 5 s: several times the
// second control takes to see a rewritten file.
func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 5s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func serialOf(t *testing.T, certFile string) *big.Int {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(certFile, strings.TrimSuffix(certFile, ".crt")+".key")
	if err != nil {
		t.Fatal(err)
	}
	return pair.Leaf.SerialNumber
}

// TestControlReloadsTLSFiles: control serves the certificate of
// --tls-cert/--tls-key as the files are now. A rewrite caught half done
// (the new certificate beside the old key) keeps the old pair in use and
// is logged; once the key follows, new handshakes present the new
// certificate. No handshake fails meanwhile, and no key is logged. Before,
// control read the files once at start.
func TestControlReloadsTLSFiles(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir, "ca")
	oldCert, oldKey := ca.issue(t, "control-old")
	newCert, newKey := ca.issue(t, "control-new")
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	copyFile(t, oldCert, certFile)
	copyFile(t, oldKey, keyFile)
	addr, logs := startControlLogged(t, "--insecure-no-auth", "--tls-cert", certFile, "--tls-key", keyFile)

	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	presented := func() *big.Int {
		t.Helper()
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots})
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber
	}
	oldSerial, newSerial := serialOf(t, oldCert), serialOf(t, newCert)
	if got := presented(); got.Cmp(oldSerial) != 0 {
		t.Fatalf("at start: serial %x, want %x", got, oldSerial)
	}

	copyFile(t, newCert, certFile) // the key is not rewritten yet
	waitUntil(t, "the half-done rewrite is logged", func() bool {
		presented() // a handshake makes control look at the files
		return strings.Contains(logs.String(), "files unusable")
	})
	if got := presented(); got.Cmp(oldSerial) != 0 {
		t.Errorf("rewrite half done: serial %x, want the old %x", got, oldSerial)
	}
	copyFile(t, newKey, keyFile)
	waitUntil(t, "the new certificate is presented", func() bool { return presented().Cmp(newSerial) == 0 })
	out := logs.String()
	if !strings.Contains(out, "TLS certificate changed; new handshakes present it") || !strings.Contains(out, "CN=control-new") {
		t.Errorf("the change is not logged:\n%s", out)
	}
	if strings.Contains(out, "PRIVATE KEY") {
		t.Errorf("a key is logged:\n%s", out)
	}
}

// TestControlRereadsSecretFiles: the webhook and peer secret files are
// read again when they change. Before, control read them once at start:
// a rotated webhook secret was refused until a restart. A webhook secret
// file emptied or removed leaves no secret in use (fail closed): before,
// the last secret read stayed valid.
func TestControlRereadsSecretFiles(t *testing.T) {
	dir := t.TempDir()
	hookFile, peerFile := filepath.Join(dir, "webhook"), filepath.Join(dir, "peer")
	os.WriteFile(hookFile, []byte("first webhook secret\n"), 0o600)
	os.WriteFile(peerFile, []byte("first peer secret, long enough\n"), 0o600)
	// No rate limit: the test polls faster than the default allows.
	addr, logs := startControlLogged(t, "--insecure-no-auth", "--rate-limit", "0", "--webhook-secret-file", hookFile, "--peer-secret-file", peerFile)

	const body = `{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"service":"web","direction":"up"},"startsAt":"2026-01-01T00:00:00Z"}]}`
	postBody := func(body string, hdr ...string) int {
		t.Helper()
		return testnet.Status(t, http.MethodPost, "http://"+addr+"/v1/underlay/alertmanager", body, hdr...)
	}
	post := func(hdr ...string) int { return postBody(body, hdr...) }
	// Each request is another alert: a signature is accepted once, and
	// the test sends many within a second.
	n := 0
	signed := func(secret string) int {
		n++
		body := strings.Replace(body, `"startsAt"`, fmt.Sprintf(`"fingerprint":"f%d","startsAt"`, n), 1)
		ts, sig := scale.Sign([]byte(secret), []byte(body), time.Now())
		return postBody(body, scale.TimestampHeader, ts, scale.SignatureHeader, sig)
	}
	// Docker is unreachable: a webhook let in gets as far as the
	// controller, which answers 200 (service not found, an error result)
	// or, once it has seen Docker is gone, 503 (Alertmanager retries).
	letIn := func(code int) bool { return code == http.StatusOK || code == http.StatusServiceUnavailable }
	if code := signed("first webhook secret"); !letIn(code) {
		t.Fatalf("signed with the webhook secret: %d, want 200 or 503", code)
	}
	os.WriteFile(hookFile, []byte("second webhook secret\n"), 0o600)
	waitUntil(t, "the rotated webhook secret is accepted", func() bool { return letIn(signed("second webhook secret")) })
	if code := signed("first webhook secret"); code != http.StatusUnauthorized {
		t.Errorf("signed with the rotated-out webhook secret: %d, want 401", code)
	}
	// Emptied or removed while control runs: no secret is in use, and
	// every signed request is refused (as the token file does), logged.
	for _, breakIt := range []struct {
		name string
		do   func()
	}{
		{"emptied", func() { os.WriteFile(hookFile, nil, 0o600) }},
		{"removed", func() { os.Remove(hookFile) }},
	} {
		breakIt.do()
		waitUntil(t, "the webhook secret file "+breakIt.name+" refuses the old secret", func() bool {
			return signed("second webhook secret") == http.StatusUnauthorized
		})
		os.WriteFile(hookFile, []byte("third webhook secret\n"), 0o600)
		waitUntil(t, "the webhook secret written again is accepted", func() bool { return letIn(signed("third webhook secret")) })
		os.WriteFile(hookFile, []byte("second webhook secret\n"), 0o600)
		waitUntil(t, "the second webhook secret is accepted again", func() bool { return letIn(signed("second webhook secret")) })
	}
	if !strings.Contains(logs.String(), "webhook secret file unreadable or empty; none in use") {
		t.Errorf("the webhook secret file's loss is not logged:\n%s", logs.String())
	}

	// The peer secret is read when a request claims to come from a peer.
	forged := func() int { return post(scale.PeerSignatureHeader, "sha256=00", scale.PeerTimeHeader, "0") }
	if code := forged(); code != http.StatusUnauthorized {
		t.Fatalf("forged peer request: %d, want 401", code)
	}
	os.WriteFile(peerFile, []byte("short\n"), 0o600)
	waitUntil(t, "a too short peer secret is refused", func() bool {
		forged()
		return strings.Contains(logs.String(), "peer secret file changed to a value refused")
	})
	os.WriteFile(peerFile, []byte("second peer secret, long enough\n"), 0o600)
	waitUntil(t, "the rotated peer secret is in use", func() bool {
		forged()
		return strings.Contains(logs.String(), "peer secret file changed; its new value is in use")
	})
	if out := logs.String(); strings.Contains(out, "peer secret, long enough") || strings.Contains(out, "webhook secret\"") || strings.Contains(out, "short") {
		t.Errorf("a secret is logged:\n%s", out)
	}
}

// TestControlDashboardShareTheAPILimits: the dashboard's routes served by
// control are held to the API's limits: a login (a token check) counts
// against the client's rate like a scaling request, so that guessing
// tokens is no faster there; the dashboard's event stream counts against
// --max-event-readers with the API's. Before, logins were unlimited (each
// refusal logged as a warning) and the dashboard's streams uncapped.
func TestControlDashboardShareTheAPILimits(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	os.WriteFile(tokens, []byte("the-token\n"), 0o600)
	// Open reads: the streams below come from the client whose guesses
	// are used up.
	addr, _ := startControlLogged(t, "--token-file", tokens, "--auth-reads=false", "--rate-limit", "0.001", "--rate-burst", "3", "--max-event-readers", "1")

	login := func(token string) int {
		t.Helper()
		req, _ := http.NewRequest("POST", "http://"+addr+"/ui/login", strings.NewReader(`{"token":"`+token+`"}`))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for i := range 3 {
		if code := login("guess"); code != http.StatusUnauthorized {
			t.Fatalf("guess %d: %d, want 401", i, code)
		}
	}
	if code := login("guess"); code != http.StatusTooManyRequests {
		t.Errorf("a guess past the burst: %d, want 429", code)
	}

	stream := func(path string) *http.Response {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	if resp := stream("/v1/underlay/events"); resp.StatusCode != http.StatusOK {
		t.Fatalf("the API's event stream: %d", resp.StatusCode)
	}
	if resp := stream("/v1/cluster/events"); resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("the dashboard's stream beyond --max-event-readers: %d, want 503 with Retry-After", resp.StatusCode)
	}
}
