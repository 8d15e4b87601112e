package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
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
