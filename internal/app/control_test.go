package app

import (
	"bytes"
	"context"
	"encoding/pem"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/scale"
	"github.com/underlay/underlay/internal/testfile"
	"github.com/underlay/underlay/internal/testnet"
)

func TestControlFlagErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("# no token\n\n"), 0o600)
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "no auth choice", wantErr: "--token-file or --token-consul-key is required"},
		{name: "both auth choices", args: []string{"--token-file", empty, "--insecure-no-auth"}, wantErr: "not both"},
		{name: "missing token file", args: []string{"--token-file", filepath.Join(dir, "nope")}, wantErr: "nope"},
		{name: "token file without a token", args: []string{"--token-file", empty}, wantErr: "no token found"},
		{name: "bad history limit", args: []string{"--insecure-no-auth", "--history-limit", "0"}, wantErr: "--history-limit 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var errOut bytes.Buffer
			cmd := newControlCommand(&globalFlags{logLevel: "info", logFormat: "text"}, IOStreams{Out: io.Discard, ErrOut: &errOut})
			cmd.SetArgs(tt.args)
			cmd.SetOut(io.Discard)
			cmd.SetErr(io.Discard)
			err := cmd.ExecuteContext(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestControlServes starts the command with Docker unreachable (a socket
// that does not exist): the API answers, health says 503, mutating routes
// and reads want a token, and it stops with its context.
func TestControlServes(t *testing.T) {
	addr, stop := startControl(t)

	get := func(method, path, token string) (int, string) {
		req, _ := http.NewRequest(method, "http://"+addr+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if code, _ := get("GET", "/v1/orbiter/health", ""); code != 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("control does not answer")
		}
		time.Sleep(20 * time.Millisecond)
	}
	checks := []struct {
		method, path, token string
		want                int
		wantIn              string
	}{
		{"GET", "/v1/orbiter/health", "", http.StatusServiceUnavailable, `"status":false`},
		{"GET", "/health", "", http.StatusServiceUnavailable, `"docker"`},
		{"GET", "/v1/orbiter/autoscaler", "", http.StatusUnauthorized, "missing bearer token"},
		{"GET", "/v1/orbiter/autoscaler", "tok", http.StatusOK, `{"data":[]}`},
		{"POST", "/v1/orbiter/handle/autoswarm/web/up", "", http.StatusUnauthorized, "missing bearer token"},
		{"POST", "/v1/orbiter/handle/autoswarm/web/up", "tok", http.StatusNotFound, "not found"},
		{"GET", "/metrics", "", http.StatusUnauthorized, "missing bearer token"},
		{"GET", "/metrics", "tok", http.StatusOK, "underlay_scale_services"},
	}
	for _, c := range checks {
		code, body := get(c.method, c.path, c.token)
		if code != c.want || !strings.Contains(body, c.wantIn) {
			t.Errorf("%s %s: %d %q; want %d containing %q", c.method, c.path, code, body, c.want, c.wantIn)
		}
	}
	// An open event stream must not hold the shutdown.
	req, _ := http.NewRequest("GET", "http://"+addr+"/v1/orbiter/events", nil)
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := stop(); err != nil {
		t.Errorf("control returned %v", err)
	}
}

// startControl starts `underlay control` on a loopback port, Docker and
// Consul out of reach, the token "tok" its only one, with args added. It
// returns the address it serves and stop, which ends its context and
// returns what it returned, failing the test when it has not stopped
// within 10 s; stop runs at the test's end too.
func startControl(t *testing.T, args ...string) (addr string, stop func() error) {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("DOCKER_HOST", "unix://"+filepath.Join(dir, "no-docker.sock"))
	tokens := filepath.Join(dir, "tokens")
	os.WriteFile(tokens, []byte("tok\n"), 0o600)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr = ln.Addr().String()
	t.Cleanup(func() { ln.Close() }) // for a control that never served it
	ctx, cancel := context.WithCancel(context.Background())
	cmd := newControlCommandFlags(&globalFlags{logLevel: "error", logFormat: "text"}, IOStreams{Out: io.Discard, ErrOut: io.Discard}, &controlFlags{listener: ln})
	cmd.SetArgs(append([]string{"--listen", addr, "--token-file", tokens, "--consul-addr", "127.0.0.1:1"}, args...))
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	var once sync.Once
	var ret error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case ret = <-done:
			case <-time.After(10 * time.Second):
				t.Error("control did not stop with its context")
			}
		})
		return ret
	}
	t.Cleanup(func() { stop() })
	return addr, stop
}

func TestControlMoreFlagErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	short := filepath.Join(dir, "short")
	os.WriteFile(short, []byte("password\n"), 0o600)
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "bad interval", args: []string{"--insecure-no-auth", "--interval", "0s"}, wantErr: "--interval 0s"},
		{name: "empty webhook secret", args: []string{"--insecure-no-auth", "--webhook-secret-file", empty}, wantErr: "is empty"},
		{name: "missing webhook secret", args: []string{"--insecure-no-auth", "--webhook-secret-file", filepath.Join(dir, "nope")}, wantErr: "nope"},
		{name: "no webhook max age", args: []string{"--insecure-no-auth", "--webhook-max-age", "0s"}, wantErr: "--webhook-max-age 0s"},
		{name: "webhook max age too long", args: []string{"--insecure-no-auth", "--webhook-max-age", "2h"}, wantErr: "--webhook-max-age 2h0m0s: want more than 0 and at most 1h0m0s"},
		{name: "bad prometheus", args: []string{"--insecure-no-auth", "--prometheus-url", "http://"}, wantErr: "--prometheus-url"},
		{name: "tls cert without key", args: []string{"--insecure-no-auth", "--tls-cert", empty}, wantErr: "--tls-cert and --tls-key go together"},
		{name: "client CA without a cert", args: []string{"--insecure-no-auth", "--tls-client-ca", empty}, wantErr: "--tls-cert and --tls-key go together"},
		{name: "bad tls cert", args: []string{"--insecure-no-auth", "--tls-cert", empty, "--tls-key", empty}, wantErr: "load TLS certificate"},
		{name: "auth-reads without tokens", args: []string{"--insecure-no-auth", "--auth-reads"}, wantErr: "--auth-reads needs tokens"},
		{name: "short peer secret", args: []string{"--insecure-no-auth", "--peer-secret-file", short}, wantErr: "want at least 16"},
		{name: "empty peer secret", args: []string{"--insecure-no-auth", "--peer-secret-file", empty}, wantErr: "is empty"},
		{name: "bad peers", args: []string{"--insecure-no-auth", "--peers", "10.0.0.1"}, wantErr: `--peers "10.0.0.1"`},
		{name: "no event readers", args: []string{"--insecure-no-auth", "--max-event-readers", "0"}, wantErr: "--max-event-readers 0"},
		{name: "no event readers per client", args: []string{"--insecure-no-auth", "--max-event-readers-per-client", "0"}, wantErr: "--max-event-readers-per-client 0"},
		{name: "negative rate", args: []string{"--insecure-no-auth", "--rate-limit", "-1"}, wantErr: "--rate-limit -1"},
		{name: "bad trusted proxy", args: []string{"--insecure-no-auth", "--trusted-proxies", "10.0.0.0/8,10.1.0.0/33"}, wantErr: `--trusted-proxies: trusted proxy "10.1.0.0/33"`},
		{name: "allowed host with a port", args: []string{"--insecure-no-auth", "--allowed-host", "ctl.example:8000"}, wantErr: `--allowed-host: allowed host "ctl.example:8000"`},
		{name: "allowed host as a URL", args: []string{"--insecure-no-auth", "--allowed-host", "http://ctl.example"}, wantErr: `allowed host "http://ctl.example"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := newControlCommand(&globalFlags{logLevel: "info", logFormat: "text"}, IOStreams{Out: io.Discard, ErrOut: io.Discard})
			cmd.SetArgs(tt.args)
			cmd.SetOut(io.Discard)
			cmd.SetErr(io.Discard)
			err := cmd.ExecuteContext(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestScaleCommand runs `underlay scale` against a stand-in for control
// that checks the requests: a follower naming the leader is retried once
// at the leader.
func TestScaleCommand(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	os.WriteFile(tokens, []byte("# ops\ntok\n"), 0o600)
	leader := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == "POST" && r.URL.Path == "/v1/underlay/services/web/scale":
			if r.Header.Get("Authorization") != "Bearer tok" {
				w.WriteHeader(401)
				io.WriteString(w, `{"error":"invalid bearer token"}`)
				return
			}
			b, _ := io.ReadAll(r.Body)
			switch string(b) {
			case `{"direction":"up"}`:
				io.WriteString(w, `{"service":"web","direction":"up","from":1,"to":2,"reason":"scaled","refused":false,"why":"scaled up from 1 to 2 replicas (bounds 1..10)"}`)
			case `{"replicas":9}`:
				io.WriteString(w, `{"service":"web","direction":"up","from":2,"to":2,"reason":"at_max","refused":true,"why":"at max"}`)
			default:
				w.WriteHeader(400)
				io.WriteString(w, `{"error":"unexpected body `+string(b)+`"}`)
			}
		case r.URL.Path == "/v1/underlay/services":
			io.WriteString(w, `{"data":[{"name":"autoswarm/web","service":"web","mode":"replicated","replicas":2,"policy":{"min":1,"max":5,"allow_down":true,"metrics":[{"name":"rps","query":"x","target":100}]}}]}`)
		case r.URL.Path == "/v1/underlay/services/web/history":
			io.WriteString(w, `{"data":[{"time":"2026-01-01T12:00:00Z","service":"web","direction":"up","source":"metrics","from":1,"to":2,"reason":"scaled","why":"w"}],`+
				`"bad_records":[{"key":"underlay/scale/history/web/x","error":"decode: EOF","fix":"consul kv delete underlay/scale/history/web/x"}]}`)
		default:
			w.WriteHeader(404)
			io.WriteString(w, `{"error":"not found"}`)
		}
	}))
	defer leader.Close()
	follower := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(scale.LeaderHeader, strings.TrimPrefix(leader.URL, "http://"))
		w.WriteHeader(503)
		io.WriteString(w, `{"error":"not the leader"}`)
	}))
	defer follower.Close()
	run := func(args ...string) (string, string, error) {
		var out, errOut bytes.Buffer
		cmd := newScaleCommand(IOStreams{Out: &out, ErrOut: &errOut})
		cmd.SetArgs(args)
		cmd.SetOut(io.Discard)
		cmd.SetErr(io.Discard)
		err := cmd.ExecuteContext(context.Background())
		return out.String(), errOut.String(), err
	}
	leaderAddr := strings.TrimPrefix(leader.URL, "http://")
	tests := []struct {
		name       string
		args       []string
		wantOut    string
		wantErrOut string
		wantErr    string
	}{
		{name: "up through a follower", args: []string{"web", "up", "--addr", follower.URL, "--token-file", tokens, "--follow-leader"}, wantOut: "web: 1 → 2 replicas: scaled"},
		{name: "to N refused", args: []string{"web", "--to", "9", "--addr", leaderAddr, "--token-file", tokens}, wantOut: "refused (at_max)"},
		{name: "no token", args: []string{"web", "up", "--addr", leaderAddr}, wantErr: "401: invalid bearer token"},
		{name: "bad direction", args: []string{"web", "sideways", "--addr", leaderAddr}, wantErr: `direction "sideways"`},
		{name: "no direction", args: []string{"web", "--addr", leaderAddr}, wantErr: "want SERVICE up|down"},
		{name: "ls", args: []string{"ls", "--addr", leaderAddr}, wantOut: "web      2         1    5    yes   rps=100"},
		{name: "ls json", args: []string{"ls", "--json", "--addr", leaderAddr}, wantOut: `"name": "autoswarm/web"`},
		{name: "history", args: []string{"history", "web", "--addr", leaderAddr}, wantOut: "2026-01-01T12:00:00Z  up         1     2   scaled  metrics",
			wantErrOut: "warning: skipped history record underlay/scale/history/web/x: decode: EOF; fix: consul kv delete underlay/scale/history/web/x"},
		{name: "history json", args: []string{"history", "web", "--json", "--addr", leaderAddr}, wantOut: `"source": "metrics"`, wantErrOut: "skipped history record"},
		{name: "unreachable", args: []string{"ls", "--addr", "127.0.0.1:1"}, wantErr: "reach control at http://127.0.0.1:1"},
		{name: "bad addr", args: []string{"ls", "--addr", "ftp://127.0.0.1:1"}, wantErr: `--addr "ftp://127.0.0.1:1"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, err := run(tt.args...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !strings.Contains(out, tt.wantOut) {
				t.Fatalf("out %q, err %v; want output containing %q", out, err, tt.wantOut)
			}
			if !strings.Contains(errOut, tt.wantErrOut) {
				t.Errorf("stderr %q, want it to contain %q", errOut, tt.wantErrOut)
			}
		})
	}
}

// TestScaleFollowLeader: the CLI sends its token to the leader a follower
// names only with --follow-leader, and only over the scheme it was given —
// never from https to http, nor to a leader named with another scheme —,
// and over http to another host only with --follow-leader-insecure.
func TestScaleFollowLeader(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	os.WriteFile(tokens, []byte("tok\n"), 0o600)
	var mu sync.Mutex
	var tokensSeen []string
	leader := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		tokensSeen = append(tokensSeen, r.Header.Get("Authorization"))
		mu.Unlock()
		io.WriteString(w, `{"service":"web","from":1,"to":2,"reason":"scaled"}`)
	}))
	defer leader.Close()
	naming := func(leaderAddr string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set(scale.LeaderHeader, leaderAddr)
			w.WriteHeader(503)
			io.WriteString(w, `{"error":"not the leader"}`)
		})
	}
	leaderAddr := strings.TrimPrefix(leader.URL, "http://")
	plainFollower := httptest.NewServer(naming(leaderAddr))
	defer plainFollower.Close()
	tlsFollower := httptest.NewTLSServer(naming(leaderAddr))
	defer tlsFollower.Close()
	httpsNamer := httptest.NewServer(naming("https://" + leaderAddr))
	defer httpsNamer.Close()
	ca := filepath.Join(dir, "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsFollower.Certificate().Raw}), 0o644)

	run := func(args ...string) error {
		cmd := newScaleCommand(IOStreams{Out: io.Discard, ErrOut: io.Discard})
		cmd.SetArgs(append(args, "--token-file", tokens))
		cmd.SetOut(io.Discard)
		cmd.SetErr(io.Discard)
		return cmd.ExecuteContext(context.Background())
	}
	seen := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(tokensSeen)
	}
	if err := run("web", "up", "--addr", plainFollower.URL); err == nil || !strings.Contains(err.Error(), "--follow-leader") || !strings.Contains(err.Error(), leaderAddr) {
		t.Errorf("without --follow-leader: %v, want an error naming the leader and the flag", err)
	}
	if err := run("web", "up", "--addr", tlsFollower.URL, "--cacert", ca, "--follow-leader"); err != nil {
		// The https follower names a bare address: it is tried over https,
		// which the plain leader cannot speak; the token never goes over http.
		if !strings.Contains(err.Error(), "https://"+leaderAddr) {
			t.Errorf("https follower naming a plain leader: %v, want an https attempt that fails", err)
		}
	} else {
		t.Error("https follower naming a plain leader: the call succeeded, so it went over http")
	}
	if err := run("web", "up", "--addr", httpsNamer.URL, "--follow-leader"); err == nil || !strings.Contains(err.Error(), "not followed") {
		t.Errorf("a leader named with another scheme: %v, want not followed", err)
	}
	if n := seen(); n != 0 {
		t.Errorf("the leader received %d requests with the token, want none", n)
	}
	if err := run("web", "up", "--addr", plainFollower.URL, "--follow-leader"); err != nil || seen() != 1 {
		t.Errorf("with --follow-leader over http: %v, %d requests at the leader; want it followed once", err, seen())
	}

	// Over plain http a leader on another host than --addr's gets the
	// token in clear: followed only with --follow-leader-insecure. Here
	// the other host is the name "localhost" against --addr 127.0.0.1,
	// so that nothing leaves the machine.
	_, port, _ := net.SplitHostPort(leaderAddr)
	byName := "localhost:" + port
	otherHost := httptest.NewServer(naming(byName))
	defer otherHost.Close()
	if err := run("web", "up", "--addr", otherHost.URL, "--follow-leader"); err == nil || !strings.Contains(err.Error(), byName) || !strings.Contains(err.Error(), "--follow-leader-insecure") {
		t.Errorf("a leader on another host over http: %v; want refused, naming it and --follow-leader-insecure", err)
	}
	if n := seen(); n != 1 {
		t.Errorf("a leader on another host over http: the leader received %d requests in all, want still 1", n)
	}
	if err := run("web", "up", "--addr", otherHost.URL, "--follow-leader-insecure"); err != nil || seen() != 2 {
		t.Errorf("with --follow-leader-insecure: %v, %d requests at the leader in all; want it followed (2)", err, seen())
	}
}

// TestControlBadValues checks values control took before it served: the
// context is already cancelled, Docker and Consul unreachable and the
// port its own, so that a value let through ends the run at once, without
// the error naming it.
func TestControlBadValues(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix://"+filepath.Join(t.TempDir(), "no-docker.sock"))
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		// The records of service web went to web/ at the KV root, and
		// trimming them to --history-limit deleted whatever else was
		// under web/.
		{name: "history prefix of slashes", args: []string{"--history-prefix", "/"}, wantErr: `--history-prefix "/"`},
		// NaN is not negative, yet it turned off the rate limit and the
		// limit on token guesses.
		{name: "rate limit not a number", args: []string{"--rate-limit", "NaN"}, wantErr: "--rate-limit NaN"},
		{name: "rate limit infinite", args: []string{"--rate-limit", "+Inf"}, wantErr: "--rate-limit +Inf"},
		// Followers pass requests on to the leader's host:port: a leader
		// advertising this could never be reached.
		{name: "advertise without a port", args: []string{"--leader-election", "--advertise", "control1"}, wantErr: `--advertise "control1"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			cmd := newControlCommand(&globalFlags{logLevel: "error", logFormat: "text"}, IOStreams{Out: io.Discard, ErrOut: io.Discard})
			cmd.SetArgs(append([]string{"--insecure-no-auth", "--listen", "127.0.0.1:0", "--consul-addr", "127.0.0.1:1"}, tt.args...))
			cmd.SetOut(io.Discard)
			cmd.SetErr(io.Discard)
			err := cmd.ExecuteContext(ctx)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestControlSecureCookies: behind a proxy that ends TLS, control sees
// plain HTTP and sent the dashboard's session cookie without Secure.
// --secure-cookies marks it Secure whatever the request came over.
func TestControlSecureCookies(t *testing.T) {
	tokens := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(tokens, []byte("tok\n"), 0o600)
	addr, _ := startControlLogged(t, "--token-file", tokens, "--secure-cookies")
	req, _ := http.NewRequest("POST", "http://"+addr+"/ui/login", strings.NewReader(`{"token":"tok"}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cs := resp.Cookies()
	if resp.StatusCode != http.StatusOK || len(cs) != 1 || !cs[0].Secure {
		t.Errorf("login: %d, Set-Cookie %q; want 200 and a Secure cookie", resp.StatusCode, resp.Header.Values("Set-Cookie"))
	}
}

// TestControlLimits: --rate-limit 0 lifts the limit on requests and keeps
// the one on failed token checks (the API's RateLimit is then negative);
// a negative --rate-limit is refused, naming it. Before, a negative value
// lifted both limits, and 0 was refused.
func TestControlLimits(t *testing.T) {
	def := scale.Limits{RateLimit: scale.DefaultRateLimit, RateBurst: scale.DefaultRateBurst,
		MaxEventReaders: scale.DefaultMaxEventReaders, MaxEventReadersPerClient: scale.DefaultMaxEventReadersPerClient}
	with := func(f func(*scale.Limits)) scale.Limits {
		l := def
		f(&l)
		return l
	}
	for _, c := range []struct {
		name    string
		in      scale.Limits
		wantErr string
		// wantRate is the API's RateLimit: negative, no request limit.
		wantRate float64
	}{
		{name: "defaults", in: def, wantRate: scale.DefaultRateLimit},
		{name: "no request limit", in: with(func(l *scale.Limits) { l.RateLimit = 0 }), wantRate: -1},
		{name: "negative", in: with(func(l *scale.Limits) { l.RateLimit = -1 }), wantErr: "--rate-limit -1"},
		{name: "negative fraction", in: with(func(l *scale.Limits) { l.RateLimit = -0.5 }), wantErr: "--rate-limit -0.5"},
		{name: "not a number", in: with(func(l *scale.Limits) { l.RateLimit = math.NaN() }), wantErr: "--rate-limit NaN"},
		{name: "infinite", in: with(func(l *scale.Limits) { l.RateLimit = math.Inf(1) }), wantErr: "--rate-limit +Inf"},
		{name: "no burst", in: with(func(l *scale.Limits) { l.RateBurst = 0 }), wantErr: "--rate-burst 0"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := controlLimits(c.in)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (c.wantRate < 0) != (got.RateLimit < 0) || (c.wantRate >= 0 && got.RateLimit != c.wantRate) {
				t.Errorf("RateLimit %g, want %g", got.RateLimit, c.wantRate)
			}
		})
	}
}

// TestControlPolicyFileRead: --policy-file is read at start as it is
// read again while control runs: a named pipe is refused, naming it,
// instead of holding control's start until something writes to it (and
// a device such as /dev/zero is not read without end).
func TestControlPolicyFileRead(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix://"+filepath.Join(t.TempDir(), "no-docker.sock"))
	fifo := filepath.Join(t.TempDir(), "policies.yaml")
	testfile.RefusesFIFO(t, "--policy-file", fifo, func() error {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		cmd := newControlCommand(&globalFlags{logLevel: "error", logFormat: "text"}, IOStreams{Out: io.Discard, ErrOut: io.Discard})
		cmd.SetArgs([]string{"--insecure-no-auth", "--listen", "127.0.0.1:0", "--consul-addr", "127.0.0.1:1", "--policy-file", fifo})
		cmd.SetOut(io.Discard)
		cmd.SetErr(io.Discard)
		return cmd.ExecuteContext(ctx)
	})
}

// TestControlReadsNeedTokenByDefault: with tokens, every read — the API's
// GET routes and event streams, the dashboard's snapshot and stream,
// /metrics — wants one by default, as scaling does; the login page and
// health stay open. --auth-reads=false opens the reads (a read-only
// board), and --insecure-no-auth, which has no token to ask for, reads
// open too.
func TestControlReadsNeedTokenByDefault(t *testing.T) {
	reads := []string{"/v1/orbiter/autoscaler", "/autoscaler", "/v1/orbiter/events", "/events",
		"/v1/underlay/services", "/v1/underlay/services/web/history", "/v1/underlay/leader", "/v1/underlay/events",
		"/v1/cluster", "/v1/cluster/events", "/metrics"}
	status := func(addr, path, token string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	addr, _ := startControl(t)
	for _, path := range reads {
		if code := status(addr, path, ""); code != http.StatusUnauthorized {
			t.Errorf("GET %s without a token: %d, want 401", path, code)
		}
		if code := status(addr, path, "wrong"); code != http.StatusUnauthorized {
			t.Errorf("GET %s with a wrong token: %d, want 401", path, code)
		}
	}
	for _, path := range []string{"/v1/orbiter/autoscaler", "/v1/cluster", "/metrics"} {
		if code := status(addr, path, "tok"); code != http.StatusOK {
			t.Errorf("GET %s with the token: %d, want 200", path, code)
		}
	}
	// The login page and its session (which says a login is due) are
	// served to anyone; health tells only whether control works.
	for path, want := range map[string]int{"/ui/": 200, "/ui/session": 200, "/health": 503, "/v1/orbiter/health": 503} {
		if code := status(addr, path, ""); code != want {
			t.Errorf("GET %s without a token: %d, want %d", path, code, want)
		}
	}

	for _, args := range [][]string{{"--auth-reads=false"}} {
		open, _ := startControl(t, args...)
		for _, path := range []string{"/v1/orbiter/autoscaler", "/v1/underlay/services", "/v1/cluster", "/metrics"} {
			if code := status(open, path, ""); code != http.StatusOK {
				t.Errorf("%v: GET %s without a token: %d, want 200", args, path, code)
			}
		}
	}
	open := startControlCommand(t, "--insecure-no-auth")
	if code := status(open, "/v1/cluster", ""); code != http.StatusOK {
		t.Errorf("--insecure-no-auth: GET /v1/cluster: %d, want 200", code)
	}
}

// TestControlMetricsCrossSiteRefused: /metrics, served beside the API,
// refuses a browser's cross-site read (403) as the API's reads and the
// dashboard's do, even open (--auth-reads=false); Prometheus, which is no
// browser, and a navigation are served.
func TestControlMetricsCrossSiteRefused(t *testing.T) {
	addr, _ := startControl(t, "--auth-reads=false")
	get := func(hdr ...string) int {
		t.Helper()
		return testnet.Status(t, http.MethodGet, "http://"+addr+"/metrics", "", hdr...)
	}
	if code := get("Sec-Fetch-Site", "cross-site", "Sec-Fetch-Mode", "no-cors"); code != http.StatusForbidden {
		t.Errorf("a cross-site read of /metrics: %d, want 403", code)
	}
	if code := get("Origin", "https://evil.example"); code != http.StatusForbidden {
		t.Errorf("/metrics read with another Origin: %d, want 403", code)
	}
	if code := get(); code != http.StatusOK {
		t.Errorf("/metrics with no browser headers: %d, want 200", code)
	}
	if code := get("Sec-Fetch-Site", "cross-site", "Sec-Fetch-Mode", "navigate"); code != http.StatusOK {
		t.Errorf("/metrics navigated to: %d, want 200", code)
	}
}
