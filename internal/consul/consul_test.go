package consul

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/secretfile"
	"github.com/underlay/underlay/internal/testclock"
	"github.com/underlay/underlay/internal/testlog"
)

// tokenRecorder is a stand-in for Consul's HTTP API that records the ACL
// token of every request.
type tokenRecorder struct {
	mu     sync.Mutex
	tokens []string
}

func (r *tokenRecorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	r.tokens = append(r.tokens, req.Header.Get("X-Consul-Token"))
	r.mu.Unlock()
	w.Header().Set("X-Consul-Index", "1")
	w.WriteHeader(http.StatusNotFound) // no such key
}

func (r *tokenRecorder) last() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.tokens) == 0 {
		return ""
	}
	return r.tokens[len(r.tokens)-1]
}

// TestTokenFileRotation: the ACL token of --consul-token-file (or
// CONSUL_HTTP_TOKEN_FILE) is read again when the file changes, so a token
// is rotated without a restart.
func TestTokenFileRotation(t *testing.T) {
	for _, fromEnv := range []bool{false, true} {
		rec := &tokenRecorder{}
		srv := httptest.NewServer(rec)
		defer srv.Close()
		path := filepath.Join(t.TempDir(), "token")
		os.WriteFile(path, []byte("first-token\n"), 0o644)
		var logs testlog.Buffer
		clk := testclock.New(time.Now())
		o := Options{Addr: srv.URL, Log: slog.New(slog.NewTextHandler(&logs, nil)), fileClock: clk.Now}
		t.Setenv("CONSUL_HTTP_TOKEN_FILE", "")
		if fromEnv {
			t.Setenv("CONSUL_HTTP_TOKEN_FILE", path)
		} else {
			o.TokenFile = path
		}
		c, err := NewClient(o)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.KV().Get("k", nil); err != nil {
			t.Fatal(err)
		}
		if got := rec.last(); got != "first-token" {
			t.Fatalf("env %v: token %q, want first-token", fromEnv, got)
		}
		// Rotation: the file is replaced, as a secret manager does it. It
		// is looked at again secretfile.CheckEvery after the last look.
		tmp := path + ".new"
		os.WriteFile(tmp, []byte("second-token\n"), 0o600)
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
		clk.Add(secretfile.CheckEvery)
		c.KV().Get("k", nil)
		if got := rec.last(); got != "second-token" {
			t.Fatalf("env %v: token %q once the file changed, want second-token", fromEnv, got)
		}
		// A file emptied in the middle of a rewrite keeps the last token.
		os.WriteFile(path, nil, 0o600)
		clk.Add(secretfile.CheckEvery)
		c.KV().Get("k", nil)
		if !strings.Contains(logs.String(), "unreadable") {
			t.Fatalf("env %v: the emptied file was not noticed: %s", fromEnv, logs.String())
		}
		if got := rec.last(); got != "second-token" {
			t.Errorf("env %v: token %q after the file was emptied, want second-token kept", fromEnv, got)
		}
		if !strings.Contains(logs.String(), "readable or writable by group or others") {
			t.Errorf("env %v: no warning about a token file of mode 0644:\n%s", fromEnv, logs.String())
		}
		if strings.Contains(logs.String(), "-token") {
			t.Errorf("env %v: a token was logged:\n%s", fromEnv, logs.String())
		}
	}
}

// TestTokenFileOverSocket: a token file works with a unix:// address too
// (Consul's client would otherwise swap in its own HTTP client).
func TestTokenFileOverSocket(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "consul.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	rec := &tokenRecorder{}
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: rec}}
	srv.Start()
	defer srv.Close()
	path := filepath.Join(dir, "token")
	os.WriteFile(path, []byte("sock-token"), 0o600)
	t.Setenv("CONSUL_HTTP_TOKEN_FILE", "")
	c, err := NewClient(Options{Addr: "unix://" + sock, TokenFile: path})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.KV().Get("k", nil); err != nil {
		t.Fatal(err)
	}
	if got := rec.last(); got != "sock-token" {
		t.Errorf("token %q over the socket, want sock-token", got)
	}
}

// TestEmptyTokenFile: an empty --consul-token-file means no token, as the
// README's stack secrets on a Consul without ACLs hold an empty line (the
// agent refused to start with one); a token written to it later is used.
func TestEmptyTokenFile(t *testing.T) {
	rec := &tokenRecorder{}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	path := filepath.Join(t.TempDir(), "token")
	os.WriteFile(path, []byte("\n"), 0o600)
	t.Setenv("CONSUL_HTTP_TOKEN_FILE", "")
	t.Setenv("CONSUL_HTTP_TOKEN", "")
	clk := testclock.New(time.Now())
	c, err := NewClient(Options{Addr: srv.URL, TokenFile: path, fileClock: clk.Now})
	if err != nil {
		t.Fatalf("an empty token file: %v, want no token", err)
	}
	if _, _, err := c.KV().Get("k", nil); err != nil {
		t.Fatal(err)
	}
	if got := rec.last(); got != "" {
		t.Fatalf("token %q sent from an empty file", got)
	}
	os.WriteFile(path, []byte("later-token\n"), 0o600)
	clk.Add(secretfile.CheckEvery)
	c.KV().Get("k", nil)
	if got := rec.last(); got != "later-token" {
		t.Fatalf("token %q once it was written, want later-token", got)
	}
}

// TestEndpointOverSocket: the Endpoint of a unix:// address reaches the
// agent on its socket, as the client does (doctor reads the local agent's
// Date header through it), and still dials other hosts (the leader's
// HTTP API) as they are named.
func TestEndpointOverSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "consul.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	local := &httptest.Server{Listener: ln, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "socket")
	})}}
	local.Start()
	defer local.Close()
	leader := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "leader")
	}))
	defer leader.Close()
	ep, err := NewEndpoint(Options{Addr: "unix://" + sock})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ host, want string }{{ep.Addr, "socket"}, {leader.Listener.Addr().String(), "leader"}} {
		u := &url.URL{Scheme: ep.Scheme, Host: tc.host, Path: "/v1/status/leader"}
		resp, err := ep.HTTP.Get(u.String())
		if err != nil {
			t.Errorf("GET %s through the Endpoint of unix://%s: %v, want the %s's answer", u, sock, err, tc.want)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != tc.want {
			t.Errorf("GET %s through the Endpoint of unix://%s: answered %q, want the %s's", u, sock, b, tc.want)
		}
	}
}
