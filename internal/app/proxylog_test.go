package app

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestControlLogsClientBehindProxy: control's dashboard names in its log
// the client the API's limits count: behind one of --trusted-proxies the
// one X-Forwarded-For names, via the proxy; from any other peer, the peer,
// whatever X-Forwarded-For it sends.
func TestControlLogsClientBehindProxy(t *testing.T) {
	tokens := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(tokens, []byte("tok\n"), 0o600)
	for _, c := range []struct {
		name, trusted string
		want          string
		wantVia       bool
	}{
		{"trusted proxy", "127.0.0.1", "client=203.0.113.5 via=127.0.0.1:", true},
		{"untrusted peer", "10.0.0.0/8", "client=127.0.0.1:", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			addr, logs := startControlLogged(t, "--token-file", tokens, "--trusted-proxies", c.trusted)
			req, _ := http.NewRequest("POST", "http://"+addr+"/ui/login", strings.NewReader(`{"token":"wrong"}`))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("X-Forwarded-For", "203.0.113.5")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("login with a wrong token: %d, want 401", resp.StatusCode)
			}
			var line string
			for l := range strings.Lines(logs.String()) {
				if strings.Contains(l, `msg="dashboard login refused"`) {
					line = l
				}
			}
			if !strings.Contains(line, c.want) || strings.Contains(line, "via=") != c.wantVia {
				t.Errorf("log line %q, want %s (via only through a trusted proxy)", line, c.want)
			}
		})
	}
}
