package app

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
		{name: "no auth choice", wantErr: "--token-file is required"},
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
// want a token, and it stops with its context.
func TestControlServes(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("DOCKER_HOST", "unix://"+filepath.Join(dir, "no-docker.sock"))
	tokens := filepath.Join(dir, "tokens")
	os.WriteFile(tokens, []byte("tok\n"), 0o600)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	ctx, cancel := context.WithCancel(context.Background())
	cmd := newControlCommand(&globalFlags{logLevel: "error", logFormat: "text"}, IOStreams{Out: io.Discard, ErrOut: io.Discard})
	cmd.SetArgs([]string{"--listen", addr, "--token-file", tokens, "--consul-addr", "127.0.0.1:1"})
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()

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
		{"GET", "/v1/orbiter/autoscaler", "", http.StatusOK, `{"data":[]}`},
		{"POST", "/v1/orbiter/handle/autoswarm/web/up", "", http.StatusUnauthorized, "missing bearer token"},
		{"POST", "/v1/orbiter/handle/autoswarm/web/up", "tok", http.StatusNotFound, "not found"},
		{"GET", "/metrics", "", http.StatusOK, "underlay_scale_services"},
	}
	for _, c := range checks {
		code, body := get(c.method, c.path, c.token)
		if code != c.want || !strings.Contains(body, c.wantIn) {
			t.Errorf("%s %s: %d %q; want %d containing %q", c.method, c.path, code, body, c.want, c.wantIn)
		}
	}
	// An open event stream must not hold the shutdown.
	resp, err := http.Get("http://" + addr + "/v1/orbiter/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("control returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("control did not stop with its context")
	}
}
