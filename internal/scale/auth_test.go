package scale

import (
	"bytes"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestFileTokensRotate: a token added to or revoked from --token-file
// counts without a restart; a file left without a token keeps the last
// tokens; no token is ever logged.
func TestFileTokensRotate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(path, []byte("# ops\nold-token-1\n"), 0o600)
	var logs bytes.Buffer
	ft, err := OpenTokenFile(path, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if !ft.Valid("old-token-1") || ft.Valid("new-token-2") {
		t.Fatal("tokens as first read are wrong")
	}
	os.WriteFile(path, []byte("new-token-2\n"), 0o600)
	deadline := time.Now().Add(5 * time.Second)
	for !ft.Valid("new-token-2") {
		if time.Now().After(deadline) {
			t.Fatal("the new token is not valid 5s after the file changed")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if ft.Valid("old-token-1") {
		t.Error("the revoked token is still valid")
	}
	os.WriteFile(path, []byte("# nothing left\n"), 0o600)
	for !strings.Contains(logs.String(), "holds no token") {
		if time.Now().After(deadline.Add(5 * time.Second)) {
			t.Fatal("a file without a token was not noticed")
		}
		time.Sleep(50 * time.Millisecond)
		ft.Valid("x")
	}
	if !ft.Valid("new-token-2") {
		t.Error("a file left without a token locked everyone out")
	}
	if strings.Contains(logs.String(), "-token-") {
		t.Errorf("a token was logged:\n%s", logs.String())
	}
}

// TestRequireToken: the reusable check answers 401 with WWW-Authenticate
// and tells the caller why; AnyToken accepts any set's token.
func TestRequireToken(t *testing.T) {
	a, _ := ParseTokens(strings.NewReader("alpha"))
	b, _ := ParseTokens(strings.NewReader("beta"))
	var reasons []error
	h := RequireToken(AnyToken{a, b}, func(_ *http.Request, err error) { reasons = append(reasons, err) },
		http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(204) }))
	for _, c := range []struct {
		header string
		want   int
	}{{"", 401}, {"Bearer", 401}, {"Bearer ", 401}, {"Basic alpha", 401}, {"Bearer gamma", 401}, {"Bearer alpha", 204}, {"Bearer  beta ", 204}} {
		r := httptest.NewRequest("GET", "/", nil)
		if c.header != "" {
			r.Header.Set("Authorization", c.header)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != c.want {
			t.Errorf("Authorization %q: %d, want %d", c.header, w.Code, c.want)
		}
		if w.Code == 401 && !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("Authorization %q: no WWW-Authenticate", c.header)
		}
	}
	if len(reasons) != 5 || !errors.Is(reasons[0], ErrNoToken) || !errors.Is(reasons[4], ErrBadToken) {
		t.Errorf("reasons %v", reasons)
	}
	if RequireToken(nil, nil, http.NotFoundHandler()) == nil {
		t.Error("nil tokens must let requests through")
	}
}

// TestBearerSchemeCase: the scheme of an Authorization header is
// case-insensitive (RFC 9110, 11.1): Alertmanager's http_config sends its
// authorization type as written ("type: bearer"), and such a caller holding
// a right token must not be told it sent none.
func TestBearerSchemeCase(t *testing.T) {
	tokens, _ := ParseTokens(strings.NewReader(testToken))
	for _, c := range []struct {
		header string
		want   error
	}{
		{"Bearer " + testToken, nil},
		{"bearer " + testToken, nil},
		{"BEARER " + testToken, nil},
		{"bEaReR  " + testToken + " ", nil},
		{"Bearer\t" + testToken, nil}, // RFC 9110's separator is 1*SP, but blanks are trimmed around the token anyway
		{"bearer wrong", ErrBadToken},
		{"Bearertoken", ErrNoToken},
		{"Basic " + testToken, ErrNoToken},
		{"bearer", ErrNoToken},
		{"bearer ", ErrNoToken},
	} {
		r := httptest.NewRequest("POST", "/", nil)
		r.Header.Set("Authorization", c.header)
		if err := CheckToken(tokens, r); !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
			t.Errorf("Authorization %q: %v, want %v", c.header, err, c.want)
		}
	}
}
