package app

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestControlRefusesForeignHosts: a page of another site whose name was
// rebound to control's address (DNS rebinding) sends its own name as Host;
// control answers it 421 naming the host, on the API, the dashboard and
// /metrics alike, and serves IP literals, localhost and the names given
// with --allowed-host. Before, it served the open reads to any Host.
func TestControlRefusesForeignHosts(t *testing.T) {
	addr := startControlCommand(t, "--insecure-no-auth")
	_, port, _ := net.SplitHostPort(addr)
	for _, host := range []string{"rebind.example:" + port, "rebind.example", "localhost.rebind.example", "127.0.0.1.rebind.example"} {
		for _, path := range []string{"/v1/cluster", "/ui/", "/v1/orbiter/autoscaler", "/v1/underlay/services", "/metrics"} {
			code, body := getAs(t, addr, host, path)
			name, _, _ := strings.Cut(host, ":")
			if code != http.StatusMisdirectedRequest || !strings.Contains(body, `\"`+name+`\"`) || !strings.Contains(body, "--allowed-host") {
				t.Errorf("Host %s, GET %s: %d %q; want 421 naming the host and --allowed-host", host, path, code, body)
			}
		}
	}
	for _, host := range []string{addr, "127.0.0.1", "[::1]:" + port, "[::ffff:127.0.0.1]:" + port, "localhost:" + port, "LocalHost."} {
		if code, body := getAs(t, addr, host, "/v1/orbiter/autoscaler"); code != http.StatusOK {
			t.Errorf("Host %s: %d %q; want 200", host, code, body)
		}
	}
}

// TestControlHealthAnyHost: GET /health answers whatever the Host, as the
// README promises load balancers (which may check by a name of their
// own): it tells no more than whether control works. Before, a health
// check by name got 421.
func TestControlHealthAnyHost(t *testing.T) {
	addr := startControlCommand(t, "--insecure-no-auth")
	for _, path := range []string{"/health", "/v1/orbiter/health"} {
		if code, body := getAs(t, addr, "lb.example", path); code == http.StatusMisdirectedRequest {
			t.Errorf("Host lb.example, GET %s: %d %q; want answered", path, code, body)
		}
	}
}

// TestControlNoHost: an HTTP/1.0 request without Host (Go's server
// refuses HTTP/1.1 without one) gets 421 on the open reads, as an unknown
// name does, while GET /health still answers it. Before, the reads were
// served to it. (Health is 503 here: the test's control has no Docker.)
func TestControlNoHost(t *testing.T) {
	addr := startControlCommand(t, "--insecure-no-auth")
	for _, tt := range []struct {
		path    string
		refused bool
	}{
		{"/v1/cluster", true},
		{"/metrics", true},
		{"/ui/", true},
		{"/health", false},
		{"/v1/orbiter/health", false},
	} {
		if code := getNoHost(t, addr, tt.path); (code == http.StatusMisdirectedRequest) != tt.refused {
			t.Errorf("no Host, GET %s: %d; want refused (421) %v", tt.path, code, tt.refused)
		}
	}
}

// getNoHost GETs path from addr in HTTP/1.0 without a Host header, which
// net/http's client always sends; it returns the status.
func getNoHost(t *testing.T, addr, path string) int {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, "GET "+path+" HTTP/1.0\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("GET %s without Host: %v", path, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestControlAllowedHost: the names given with --allowed-host are served,
// in any case, with or without a port; others still are not.
func TestControlAllowedHost(t *testing.T) {
	addr := startControlCommand(t, "--insecure-no-auth", "--allowed-host", "ctl.example", "--allowed-host", "ctl2.example")
	_, port, _ := net.SplitHostPort(addr)
	for _, host := range []string{"ctl.example:" + port, "CTL.example.", "ctl2.example"} {
		if code, body := getAs(t, addr, host, "/v1/cluster"); code == http.StatusMisdirectedRequest {
			t.Errorf("Host %s: %d %q; want it served", host, code, body)
		}
	}
	if code, body := getAs(t, addr, "ctl.example.rebind.example", "/v1/cluster"); code != http.StatusMisdirectedRequest {
		t.Errorf("Host ctl.example.rebind.example: %d %q; want 421", code, body)
	}
}

// TestControlTokenByAnyName: by a name control does not know, a request
// with a bearer token is served once its token checks out (an
// Alertmanager webhook, underlay scale); a header alone is not enough —
// a rebinding page may send one, and open reads look at none — nor is
// any header when control has no tokens.
func TestControlTokenByAnyName(t *testing.T) {
	file := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(file, []byte("s3cret-token-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := startControlCommand(t, "--token-file", file)
	for _, tt := range []struct {
		auth string
		want int
	}{
		{"Bearer s3cret-token-0123456789", http.StatusOK},
		{"Bearer guessed", http.StatusUnauthorized},
		{"", http.StatusMisdirectedRequest},
	} {
		if code, body := getWith(t, addr, "control.example", "/v1/cluster", tt.auth); code != tt.want {
			t.Errorf("Host control.example, Authorization %q: %d %q; want %d", tt.auth, code, body, tt.want)
		}
	}
	open := startControlCommand(t, "--insecure-no-auth")
	if code, body := getWith(t, open, "control.example", "/v1/cluster", "Bearer anything"); code != http.StatusMisdirectedRequest {
		t.Errorf("no tokens, Host control.example with a header: %d %q; want 421", code, body)
	}
}

// getAs GETs path from addr with Host host; it returns the status and body.
func getAs(t *testing.T, addr, host, path string) (int, string) {
	t.Helper()
	return getWith(t, addr, host, path, "")
}

// getWith is getAs with an Authorization header auth ("": none).
func getWith(t *testing.T, addr, host, path, auth string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 200)) // enough to name the host
	return resp.StatusCode, string(b)
}
