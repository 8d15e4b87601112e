package client

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/scale"
)

func TestLeaderBase(t *testing.T) {
	tests := []struct {
		name, base, leader, want, wantErr string
	}{
		{name: "bare address over http", base: "http://10.0.0.1:8000", leader: "10.0.0.2:8000", want: "http://10.0.0.2:8000"},
		{name: "bare address over https", base: "https://10.0.0.1:8000", leader: "10.0.0.2:8000", want: "https://10.0.0.2:8000"},
		{name: "same scheme named", base: "https://a:1", leader: "https://b:2", want: "https://b:2"},
		{name: "never from https to http", base: "https://a:1", leader: "http://b:2", wantErr: "not followed"},
		{name: "not an address", base: "http://a:1", leader: "b:2/x", wantErr: "not an address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := leaderBase(tt.base, tt.leader)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("leaderBase = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestBaseURL(t *testing.T) {
	for in, want := range map[string]string{"127.0.0.1:8000": "http://127.0.0.1:8000", "https://h:1/": "https://h:1", "ftp://h:1": "", "http://h:1/api": ""} {
		got, err := baseURL(in)
		if (err != nil) != (want == "") || got != want {
			t.Errorf("baseURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// TestNewNamesTheAddrGiven: a bad --addr is named as the user wrote it,
// not with the http:// that a bare HOST:PORT gets.
func TestNewNamesTheAddrGiven(t *testing.T) {
	for _, addr := range []string{"", "h:1/api", "ftp://h:1", "h :1"} {
		_, err := New(Config{Addr: addr})
		if want := fmt.Sprintf("--addr %q: want HOST:PORT", addr); err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("New(--addr %q): %v, want an error starting %s", addr, err, want)
		}
	}
}

// TestNewHidesTheAddrPassword: a refused --addr with a user and password
// (a path after the host, or a password whose / reads as one) was quoted
// whole, password and all, in the error underlay scale prints. It is
// quoted with the password hidden, as the Consul and Prometheus
// addresses are.
func TestNewHidesTheAddrPassword(t *testing.T) {
	for addr, want := range map[string]string{
		"http://ops:s3cret@h:1/api":   `--addr "http://ops:xxxxx@h:1/api": want HOST:PORT`,
		"ops:s3cret@h:1/api":          `--addr "ops:xxxxx@h:1/api": want HOST:PORT`,
		"https://ops:1234/s3cret@h:1": `--addr "https://ops:xxxxx@h:1": want HOST:PORT`,
	} {
		_, err := New(Config{Addr: addr})
		if err == nil || strings.Contains(err.Error(), "s3cret") || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("New(--addr %q): %v, want an error starting %s", addr, err, want)
		}
	}
}

// TestHTTPSProxyOnly: a plain-http call to control goes direct, never to
// the environment's proxy, which would be sent the bearer token. Before,
// http_proxy got every http request, token and all.
func TestHTTPSProxyOnly(t *testing.T) {
	proxy, _ := url.Parse("http://proxy.example:3128")
	env := func(*http.Request) (*url.URL, error) { return proxy, nil }
	f := httpsProxyOnly(env)
	for _, tc := range []struct {
		url  string
		want *url.URL
	}{
		{"http://10.0.0.5:9470/v1/underlay/scale", nil},
		{"https://10.0.0.5:9470/v1/underlay/scale", proxy},
	} {
		r, err := http.NewRequest(http.MethodGet, tc.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := f(r)
		if err != nil || got != tc.want {
			t.Errorf("proxy for %s = %v, %v; want %v", tc.url, got, err, tc.want)
		}
	}
	// The client the calls use has it.
	hc, err := httpClient("", "", "")
	if err != nil {
		t.Fatal(err)
	}
	r, _ := http.NewRequest(http.MethodGet, "http://10.0.0.5:9470/", nil)
	t.Setenv("HTTP_PROXY", "http://proxy.example:3128")
	if got, _ := hc.Transport.(*http.Transport).Proxy(r); got != nil {
		t.Errorf("the calls' client sends http through %v", got)
	}
}

// TestReadToken: --token-file is read as control's secrets are: a FIFO
// (which blocked the CLI until a writer came) or a file of more than a
// secret's size is refused, naming the file, and a file group or others
// may read is warned of; the first non-comment line is the token.
func TestReadToken(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := readToken(fifo, nil)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), fifo) {
			t.Errorf("token file a FIFO: %v; want an error naming it", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("reading a FIFO as the token file still blocks after 10s")
	}

	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, bytes.Repeat([]byte("x"), 2<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if tok, err := readToken(big, nil); err == nil || !strings.Contains(err.Error(), "larger") {
		t.Errorf("token file of 2 MiB: %d bytes, %v; want refused as too large", len(tok), err)
	}

	open := filepath.Join(dir, "open")
	if err := os.WriteFile(open, []byte("# comment\n\n  s3cret  \nother\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	tok, err := readToken(open, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil || tok != "s3cret" {
		t.Errorf("token file: %q, %v; want s3cret", tok, err)
	}
	if !strings.Contains(logs.String(), "chmod 600") || strings.Contains(logs.String(), "s3cret") {
		t.Errorf("token file mode 0644: logged %q; want a warning naming chmod 600, never the token", logs.String())
	}
}

// TestErrorAnswerBounded: a non-2xx answer's "error" field went into the
// error whole, up to the 16 MiB read, while a body that is not JSON was
// cut at 200 characters: a control (or anything at --addr) answering a
// megabyte of error flooded the terminal. The field is now cut too, at
// 4 KiB (control's own errors fit), marked with its length.
func TestErrorAnswerBounded(t *testing.T) {
	long := strings.Repeat("x", 1<<20)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(map[string]string{"error": "bad " + long})
	}))
	t.Cleanup(srv.Close)
	c, err := New(Config{Addr: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Services(context.Background())
	if err == nil || !strings.Contains(err.Error(), ": 400: bad xxx") {
		t.Fatalf("Services: %.300v; want control's 400 with its error", err)
	}
	if n := len(err.Error()); n > maxErrorAnswer+200 {
		t.Errorf("Services: an error of %d bytes; want control's error cut as a body that is not JSON is", n)
	}
	if !strings.HasSuffix(err.Error(), fmt.Sprintf("… (%d bytes in all)", len("bad ")+len(long))) {
		t.Errorf("Services: %.100q…; want the cut marked with the error's length", err.Error()[len(err.Error())-100:])
	}
}

// TestDotServiceRefused: Scale and History sent the service "." or ".."
// (and "") as a path segment, which control's HTTP server cleans and
// answers with a redirect naming neither. They are refused before any
// call, naming the value, as the CLI and the server refuse them. A name
// of blanks only ("  ") was sent too; the CLI refuses it as empty, and
// the library now does so too.
func TestDotServiceRefused(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		http.Error(w, "unexpected call "+r.URL.Path, http.StatusTeapot)
	}))
	t.Cleanup(srv.Close)
	c, err := New(Config{Addr: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, name := range []string{".", "..", "", "  ", "\t"} {
		want := fmt.Sprintf("service %q: ", name)
		if _, err := c.Scale(ctx, name, "up", -1); err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("Scale(%q, up): %v; want an error starting %s", name, err, want)
		}
		if _, err := c.Scale(ctx, name, "", 3); err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("Scale(%q, to 3): %v; want an error starting %s", name, err, want)
		}
		if _, err := c.History(ctx, name); err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("History(%q): %v; want an error starting %s", name, err, want)
		}
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("%d calls reached control; want none", n)
	}
}

// dialVia makes c's calls to each address of routes reach its loopback
// address instead, and fails any other: tests name hosts that are not
// loopback (10.0.0.2, example.com) without a packet leaving the machine.
func dialVia(c *Client, routes map[string]string) {
	var d net.Dialer
	c.http.Transport.(*http.Transport).DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		to, ok := routes[addr]
		if !ok {
			return nil, fmt.Errorf("test dialer: no route to %s", addr)
		}
		return d.DialContext(ctx, network, to)
	}
}

// tokenSink is a control that answers every call and keeps the
// Authorization header of each.
type tokenSink struct {
	mu   sync.Mutex
	seen []string
}

func (s *tokenSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.seen = append(s.seen, r.Header.Get("Authorization"))
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"data":[]}`)
}

func (s *tokenSink) tokens() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.seen)
}

// namingLeader is a follower that answers every call 503 naming leader.
func namingLeader(leader string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set(scale.LeaderHeader, leader)
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `{"error":"not the leader"}`)
	})
}

func writeTokenFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(p, []byte("tok\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestFollowLeaderInClear: with --follow-leader over plain http, the
// token went in clear to whatever host a follower's 503 named. Now it
// goes only to a loopback address or to the host of --addr (another
// port), or anywhere with --follow-leader-insecure; over https the
// leader's certificate is verified as control's was.
func TestFollowLeaderInClear(t *testing.T) {
	tokens := writeTokenFile(t)
	leader := &tokenSink{}
	leaderSrv := httptest.NewServer(leader)
	t.Cleanup(leaderSrv.Close)
	leaderAddr := leaderSrv.Listener.Addr().String()

	for _, tc := range []struct {
		name     string
		addr     string // --addr, reached through routes
		named    string // the leader the follower names
		insecure bool
		only     bool     // --follow-leader-insecure without --follow-leader
		wantErr  []string // nil: followed
	}{
		{name: "another host", addr: "http://ctl.example:8000", named: "10.0.0.2:8000",
			wantErr: []string{"10.0.0.2:8000", "--follow-leader-insecure"}},
		{name: "another host named with its scheme", addr: "http://ctl.example:8000", named: "http://leader.example:8000",
			wantErr: []string{"leader.example:8000", "--follow-leader-insecure"}},
		{name: "another host, allowed", addr: "http://ctl.example:8000", named: "10.0.0.2:8000", insecure: true},
		{name: "another host, allowed alone", addr: "http://ctl.example:8000", named: "10.0.0.2:8000", insecure: true, only: true},
		{name: "same host, other port", addr: "http://ctl.example:8000", named: "CTL.example:9000"},
		{name: "loopback", addr: "http://ctl.example:8000", named: leaderAddr},
	} {
		t.Run(tc.name, func(t *testing.T) {
			follower := httptest.NewServer(namingLeader(tc.named))
			t.Cleanup(follower.Close)
			// --insecure-http lets the token go to --addr in clear; the
			// leader named is judged apart.
			c, err := New(Config{Addr: tc.addr, TokenFile: tokens, FollowLeader: !tc.only, FollowLeaderInsecure: tc.insecure, InsecureHTTP: true})
			if err != nil {
				t.Fatal(err)
			}
			u, _ := url.Parse(tc.addr)
			n, _ := url.Parse("http://" + strings.TrimPrefix(tc.named, "http://"))
			dialVia(c, map[string]string{u.Host: follower.Listener.Addr().String(), n.Host: leaderAddr})
			before := len(leader.tokens())
			_, err = c.Services(context.Background())
			got := leader.tokens()[before:]
			if tc.wantErr == nil {
				if err != nil || !slices.Equal(got, []string{"Bearer tok"}) {
					t.Errorf("Services: %v, the leader got %q; want it followed once, with the token", err, got)
				}
				return
			}
			for _, w := range tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("Services: %v; want refused, naming %s", err, w)
				}
			}
			if len(got) != 0 {
				t.Errorf("the leader at %s got %q in clear over http; want no call", tc.named, got)
			}
		})
	}
}

// TestFollowLeaderOverHTTPS: over https a leader on another host is
// followed without --follow-leader-insecure, its certificate verified
// against --cacert; one that does not verify gets no token.
func TestFollowLeaderOverHTTPS(t *testing.T) {
	tokens := writeTokenFile(t)
	leader := &tokenSink{}
	leaderSrv := httptest.NewUnstartedServer(leader)
	// The handshake this test fails on purpose is not news.
	leaderSrv.Config.ErrorLog = log.New(io.Discard, "", 0)
	leaderSrv.StartTLS()
	t.Cleanup(leaderSrv.Close)
	follower := httptest.NewTLSServer(namingLeader("example.com:8443"))
	t.Cleanup(follower.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	// httptest's servers share one certificate, for 127.0.0.1, ::1 and
	// example.com.
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: follower.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{Addr: follower.URL, TokenFile: tokens, FollowLeader: true, CACert: ca})
	if err != nil {
		t.Fatal(err)
	}
	dialVia(c, map[string]string{follower.Listener.Addr().String(): follower.Listener.Addr().String(), "example.com:8443": leaderSrv.Listener.Addr().String()})
	if _, err := c.Services(context.Background()); err != nil || !slices.Equal(leader.tokens(), []string{"Bearer tok"}) {
		t.Errorf("https leader on another host: %v, the leader got %q; want it followed once", err, leader.tokens())
	}

	// A name the certificate does not hold: the handshake fails, before
	// any token is sent.
	wrong := httptest.NewTLSServer(namingLeader("leader.example:8443"))
	t.Cleanup(wrong.Close)
	c, err = New(Config{Addr: wrong.URL, TokenFile: tokens, FollowLeader: true, CACert: ca})
	if err != nil {
		t.Fatal(err)
	}
	dialVia(c, map[string]string{wrong.Listener.Addr().String(): wrong.Listener.Addr().String(), "leader.example:8443": leaderSrv.Listener.Addr().String()})
	if _, err := c.Services(context.Background()); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("https leader whose certificate does not name it: %v; want a certificate error", err)
	}
	if n := len(leader.tokens()); n != 1 {
		t.Errorf("the leader got %d calls; want only the first", n)
	}
}

// TestFollowLeaderOnce: a leader that itself answers 503 naming another
// is not followed further: one hop only, whatever the flags.
func TestFollowLeaderOnce(t *testing.T) {
	tokens := writeTokenFile(t)
	third := &tokenSink{}
	thirdSrv := httptest.NewServer(third)
	t.Cleanup(thirdSrv.Close)
	second := httptest.NewServer(namingLeader(thirdSrv.Listener.Addr().String()))
	t.Cleanup(second.Close)
	first := httptest.NewServer(namingLeader(second.Listener.Addr().String()))
	t.Cleanup(first.Close)
	c, err := New(Config{Addr: first.URL, TokenFile: tokens, FollowLeader: true, FollowLeaderInsecure: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Services(context.Background()); err == nil || !strings.Contains(err.Error(), second.URL) || !strings.Contains(err.Error(), "503") {
		t.Errorf("a leader naming another: %v; want the second's 503", err)
	}
	if got := third.tokens(); len(got) != 0 {
		t.Errorf("the third control got %q; want no call (one hop only)", got)
	}
}

// TestMayFollow: where the token may go after a follower's 503.
func TestMayFollow(t *testing.T) {
	for _, tc := range []struct {
		from, to string
		insecure bool
		wantErr  string // "": followed
	}{
		{from: "http://10.0.0.1:8000", to: "http://10.0.0.2:8000", wantErr: "--follow-leader-insecure"},
		{from: "http://10.0.0.1:8000", to: "http://10.0.0.2:8000", insecure: true},
		{from: "http://10.0.0.1:8000", to: "http://10.0.0.1:9000"},
		{from: "http://ctl.example:8000", to: "http://CTL.Example.:9000"},
		{from: "http://ctl.example:8000", to: "http://ctl.example.org:8000", wantErr: "ctl.example.org:8000"},
		{from: "http://ctl.example:8000", to: "http://10.0.0.1:8000", wantErr: "in clear"},
		{from: "http://[::1]:8000", to: "http://[0::1]:9000"},
		{from: "http://10.0.0.1:8000", to: "http://[::ffff:10.0.0.1]:9000"},
		{from: "http://10.0.0.1:8000", to: "http://127.0.0.53:8000"},
		{from: "http://10.0.0.1:8000", to: "http://[::1]:8000"},
		{from: "http://10.0.0.1:8000", to: "http://[::ffff:127.0.0.1]:8000"},
		{from: "http://127.0.0.1:8000", to: "http://localhost:8000", wantErr: "in clear"},
		{from: "http://10.0.0.1:8000", to: "http://0.0.0.0:8000", wantErr: "in clear"},
		{from: "https://10.0.0.1:8000", to: "https://leader.example:8000"},
		{from: "https://10.0.0.1:8000", to: "http://127.0.0.1:8000", insecure: true, wantErr: "not reached over https"},
		{from: "https://10.0.0.1:8000", to: "http://10.0.0.1:9000", insecure: true, wantErr: "not reached over https"},
		{from: "http://10.0.0.1:8000", to: "https://10.0.0.2:8000", wantErr: "not reached over http"},
	} {
		err := mayFollow(tc.from, tc.to, tc.insecure)
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("mayFollow(%s, %s, insecure %v): %v; want %q (empty: followed)", tc.from, tc.to, tc.insecure, err, tc.wantErr)
		}
	}
}

// TestRedirectKeepsTheToken: a 3xx is control's answer, never followed:
// neither another host nor the same one gets the request again, token or
// not (net/http's own policy would resend it to the same domain, and a
// 307/308 with its body).
func TestRedirectKeepsTheToken(t *testing.T) {
	tokens := writeTokenFile(t)
	other := &tokenSink{}
	otherSrv := httptest.NewServer(other)
	t.Cleanup(otherSrv.Close)
	for _, code := range []int{http.StatusMovedPermanently, http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		for _, to := range []string{"http://other.example:8000/v1/underlay/services", "/elsewhere"} {
			var calls atomic.Int32
			ctl := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if calls.Add(1) == 1 {
					http.Redirect(w, r, to, code)
					return
				}
				other.ServeHTTP(w, r)
			}))
			c, err := New(Config{Addr: ctl.URL, TokenFile: tokens, FollowLeader: true, FollowLeaderInsecure: true})
			if err != nil {
				t.Fatal(err)
			}
			dialVia(c, map[string]string{ctl.Listener.Addr().String(): ctl.Listener.Addr().String(), "other.example:8000": otherSrv.Listener.Addr().String()})
			if _, err := c.Scale(context.Background(), "web", "up", -1); err == nil || !strings.Contains(err.Error(), fmt.Sprint(code)) {
				t.Errorf("%d to %s: %v; want an error naming the %d", code, to, err, code)
			}
			if got := other.tokens(); len(got) != 0 || calls.Load() != 1 {
				t.Errorf("%d to %s: the redirect was followed (%d calls at control, %q elsewhere); want none", code, to, calls.Load(), got)
			}
			ctl.Close()
		}
	}
}

// TestDoPathStaysOnControl: Do's path is appended to control's address;
// one not starting with "/" ("@host:port/…") made the address a user
// name and sent the call, token and all, to another host.
func TestDoPathStaysOnControl(t *testing.T) {
	tokens := writeTokenFile(t)
	other := &tokenSink{}
	otherSrv := httptest.NewServer(other)
	t.Cleanup(otherSrv.Close)
	ctl := httptest.NewServer(&tokenSink{})
	t.Cleanup(ctl.Close)
	c, err := New(Config{Addr: ctl.URL, TokenFile: tokens})
	if err != nil {
		t.Fatal(err)
	}
	var out any
	for _, path := range []string{"@" + otherSrv.Listener.Addr().String() + "/v1/underlay/services", "v1/underlay/services", ""} {
		if err := c.Do(context.Background(), http.MethodGet, path, nil, &out); err == nil || !strings.Contains(err.Error(), "path") {
			t.Errorf("Do(path %q): %v; want refused, naming the path", path, err)
		}
	}
	if got := other.tokens(); len(got) != 0 {
		t.Errorf("another host got %q; want no call", got)
	}
}

// TestNotFollowingNamesTheFlagThatWould: without --follow-leader, the
// error advised adding it even for a leader on another host over http,
// which --follow-leader then refuses; it names --follow-leader-insecure
// there, and --follow-leader where that is enough.
func TestNotFollowingNamesTheFlagThatWould(t *testing.T) {
	for _, tc := range []struct{ named, want, notWant string }{
		{named: "10.0.0.2:8000", want: "add --follow-leader-insecure"},
		{named: "127.0.0.1:9000", want: "or add --follow-leader)", notWant: "insecure"},
	} {
		follower := httptest.NewServer(namingLeader(tc.named))
		c, err := New(Config{Addr: follower.URL})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Services(context.Background())
		follower.Close()
		if err == nil || !strings.Contains(err.Error(), tc.want) || tc.notWant != "" && strings.Contains(err.Error(), tc.notWant) {
			t.Errorf("a follower naming %s: %v; want an error holding %q, not %q", tc.named, err, tc.want, tc.notWant)
		}
	}
}

// TestClipNotUTF8: an answer of bytes that are no UTF-8 keeps its first n
// bytes. Before, the cut looked back for a character's start as far as
// the first byte and kept none.
func TestClipNotUTF8(t *testing.T) {
	bad := strings.Repeat("\x80", 2*maxErrorAnswer)
	if got, want := clip(bad, maxErrorAnswer), bad[:maxErrorAnswer]+fmt.Sprintf("… (%d bytes in all)", len(bad)); got != want {
		t.Errorf("clip(%d bytes of \\x80) = %.20q… of %d bytes, want %d bytes", len(bad), got, len(got), len(want))
	}
}

// TestTokenInClearRefused: a token is sent over plain http only to a
// loopback address, unless InsecureHTTP (--insecure-http) allows any
// host: before, `underlay scale --addr 10.0.0.1:8000 --token-file …` sent
// the token in clear across the network without a word.
func TestTokenInClearRefused(t *testing.T) {
	tokens := writeTokenFile(t)
	for _, tc := range []struct {
		name     string
		addr     string
		token    bool
		insecure bool
		wantErr  string // "": accepted
	}{
		{name: "another host", addr: "10.0.0.1:8000", token: true, wantErr: "--insecure-http"},
		{name: "another host with its scheme", addr: "http://ctl.example:8000", token: true, wantErr: `"http://ctl.example:8000"`},
		{name: "a name for loopback", addr: "localhost:8000", token: true, wantErr: "--insecure-http"},
		{name: "another host, allowed", addr: "10.0.0.1:8000", token: true, insecure: true},
		{name: "another host, no token", addr: "10.0.0.1:8000"},
		{name: "loopback", addr: "127.0.0.1:8000", token: true},
		{name: "IPv6 loopback", addr: "[::1]:8000", token: true},
		{name: "https", addr: "https://ctl.example:8443", token: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{Addr: tc.addr, InsecureHTTP: tc.insecure}
			if tc.token {
				cfg.TokenFile = tokens
			}
			_, err := New(cfg)
			if tc.wantErr == "" {
				if err != nil {
					t.Errorf("New: %v, want accepted", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("New: %v, want refused naming %s", err, tc.wantErr)
			}
		})
	}
}

// TestNoTokenNamesTheFlag: control wants a token on reads by default, so
// `underlay scale ls` (or history) without --token-file, which once read
// freely, gets a 401: the error says which flag gives one.
func TestNoTokenNamesTheFlag(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		json.NewEncoder(w).Encode(map[string]string{"error": "missing bearer token"})
	}))
	t.Cleanup(srv.Close)
	c, err := New(Config{Addr: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Services(context.Background()); err == nil || !strings.Contains(err.Error(), ": 401: missing bearer token (reads want a token too: give --token-file)") {
		t.Errorf("Services without a token: %v; want the 401 naming --token-file", err)
	}
}
