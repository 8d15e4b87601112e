package profiling

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestCheckAddr(t *testing.T) {
	for _, tc := range []struct {
		addr    string
		wantErr string // substring; empty: accepted
	}{
		{addr: "127.0.0.1:6060"},
		{addr: "127.0.0.2:6060"},
		{addr: "[::1]:6060"},
		{addr: "localhost:6060"},
		{addr: "127.0.0.1:0"},
		{addr: "0.0.0.0:6060", wantErr: `"0.0.0.0" is not a loopback address`},
		{addr: ":6060", wantErr: `"" is not a loopback address`},
		{addr: "[::]:6060", wantErr: `"::" is not a loopback address`},
		{addr: "10.1.2.3:6060", wantErr: `"10.1.2.3" is not a loopback address`},
		{addr: "example.com:6060", wantErr: `"example.com" is not a loopback address`},
		{addr: "127.0.0.1", wantErr: `profiler address "127.0.0.1": want HOST:PORT`},
		{addr: "127.0.0.1:", wantErr: "no port"},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			err := CheckAddr(tc.addr)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("CheckAddr(%q) = %v, want nil", tc.addr, err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("CheckAddr(%q) = %v, want an error containing %q", tc.addr, err, tc.wantErr)
			}
		})
	}
}

// TestServe: the profiles are served on loopback until the context ends,
// and a non-loopback address is refused before anything listens.
func TestServe(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if err := Serve(context.Background(), "0.0.0.0:0", log); err == nil || !strings.Contains(err.Error(), "not a loopback address") {
		t.Fatalf("Serve on 0.0.0.0 = %v, want a refusal", err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, addr, log) }()

	var body string
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/debug/pprof/goroutine?debug=1")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET goroutine profile: %s\n%s", resp.Status, b)
			}
			body = string(b)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("profiler not answering on %s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(body, "goroutine profile:") {
		t.Errorf("goroutine profile body does not look like one:\n%s", body)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve returned %v after its context ended", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
}

// TestHandlerRefusesForeignHosts: the profiler listens on loopback, which
// a page of another site reaches through DNS rebinding (its name pointed
// at 127.0.0.1) with its own name as Host; profiles, command line and
// goroutine stacks are for the operator only. Before, any Host was served.
func TestHandlerRefusesForeignHosts(t *testing.T) {
	h := Handler()
	for _, tt := range []struct {
		host string
		want int
	}{
		{"rebind.example:6060", http.StatusMisdirectedRequest},
		{"localhost.rebind.example", http.StatusMisdirectedRequest},
		{"127.0.0.1:6060", http.StatusOK},
		{"[::1]:6060", http.StatusOK},
		{"localhost:6060", http.StatusOK},
	} {
		req := httptest.NewRequest("GET", "/debug/pprof/cmdline", nil)
		req.Host = tt.host
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tt.want {
			t.Errorf("Host %s: %d %q, want %d", tt.host, rec.Code, rec.Body, tt.want)
		}
	}
}

// TestHandlerRefusesCrossSiteRequests: a page of any site the operator's
// browser shows can point an <img> or a no-cors fetch at
// http://127.0.0.1:6060/debug/pprof/trace?seconds=86400: its Host is the
// loopback address, which passes, and though the page cannot read the
// answer, the process traces (or holds the one CPU profile) for as long
// as the page asked. Requests a browser marks as coming from another
// site (Sec-Fetch-Site) are now refused; the operator's own (typed in
// the address bar, or from go tool pprof and curl, which send none) pass.
func TestHandlerRefusesCrossSiteRequests(t *testing.T) {
	h := Handler()
	for _, tt := range []struct {
		site string // Sec-Fetch-Site; "": none sent
		want int
	}{
		{"cross-site", http.StatusForbidden},
		{"same-site", http.StatusForbidden},
		{"same-origin", http.StatusOK},
		{"none", http.StatusOK},
		{"", http.StatusOK},
	} {
		req := httptest.NewRequest("GET", "/debug/pprof/cmdline", nil)
		req.Host = "127.0.0.1:6060"
		if tt.site != "" {
			req.Header.Set("Sec-Fetch-Site", tt.site)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tt.want {
			t.Errorf("Sec-Fetch-Site %q: %d %q, want %d", tt.site, rec.Code, rec.Body, tt.want)
		}
	}
}
