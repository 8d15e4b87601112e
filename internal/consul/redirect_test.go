package consul

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTokenNotSentThroughRedirect: an answer redirecting to another host
// (a proxy or agent misconfigured, or hostile) had the client follow it
// with the ACL token, given or from a token file, since Go's client drops
// only its own credential headers on such a redirect. The redirect fails
// the request, naming where it led, and the other host sees no request.
func TestTokenNotSentThroughRedirect(t *testing.T) {
	other := &tokenRecorder{}
	elsewhere := httptest.NewServer(other)
	defer elsewhere.Close()
	agent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL+r.URL.RequestURI(), http.StatusTemporaryRedirect)
	}))
	defer agent.Close()
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte("file-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CONSUL_HTTP_TOKEN_FILE", "")
	t.Setenv("CONSUL_HTTP_TOKEN", "")
	for _, o := range []Options{{Addr: agent.URL, Token: "given-token"}, {Addr: agent.URL, TokenFile: path}} {
		c, err := NewClient(o)
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = c.KV().Get("k", nil)
		if err == nil || !strings.Contains(err.Error(), "redirect to "+elsewhere.URL) {
			t.Errorf("token file %q: a read redirected to %s gave %v; want it refused, naming where it led", o.TokenFile, elsewhere.URL, err)
		}
	}
	other.mu.Lock()
	defer other.mu.Unlock()
	if len(other.tokens) != 0 {
		t.Errorf("the host redirected to got %d requests, with tokens %q; want none", len(other.tokens), other.tokens)
	}
}
