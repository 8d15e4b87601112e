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

	"github.com/underlay/underlay/internal/secretfile"
	"github.com/underlay/underlay/internal/testclock"
)

// TestFileTokensRotate: a token added to or revoked from --token-file
// counts without a restart; no token is ever logged.
func TestFileTokensRotate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(path, []byte("# ops\nold-token-1\n"), 0o600)
	var logs bytes.Buffer
	clk := testclock.New(time.Now())
	ft, err := OpenTokenFile(path, slog.New(slog.NewTextHandler(&logs, nil)), secretfile.WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	if !ft.Valid("old-token-1") || ft.Valid("new-token-2") {
		t.Fatal("tokens as first read are wrong")
	}
	os.WriteFile(path, []byte("new-token-2\n"), 0o600)
	clk.Add(secretfile.CheckEvery)
	if !ft.Valid("new-token-2") {
		t.Fatal("the new token is not valid once the file was read again")
	}
	if ft.Valid("old-token-1") {
		t.Error("the revoked token is still valid")
	}
	if strings.Contains(logs.String(), "-token-") {
		t.Errorf("a token was logged:\n%s", logs.String())
	}
}

// TestFileTokensRevokedByEmptying: a token file emptied, left with
// comments only, or removed while control runs accepts no token at all —
// every request is refused, and that is logged once — until it holds a
// token again. Emptying the file is how an operator revokes every token
// at once. Before, the last tokens read stayed valid.
func TestFileTokensRevokedByEmptying(t *testing.T) {
	for _, c := range []struct {
		name  string
		empty func(path string)
	}{
		{"emptied", func(path string) { os.WriteFile(path, nil, 0o600) }},
		{"blank lines", func(path string) { os.WriteFile(path, []byte("\n \n"), 0o600) }},
		{"comments only", func(path string) { os.WriteFile(path, []byte("# all revoked\n"), 0o600) }},
		{"removed", func(path string) { os.Remove(path) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tokens")
			os.WriteFile(path, []byte("token-1\ntoken-2\n"), 0o600)
			var logs bytes.Buffer
			clk := testclock.New(time.Now())
			ft, err := OpenTokenFile(path, slog.New(slog.NewTextHandler(&logs, nil)), secretfile.WithClock(clk.Now))
			if err != nil {
				t.Fatal(err)
			}
			c.empty(path)
			clk.Add(secretfile.CheckEvery)
			for _, tok := range []string{"token-1", "token-2"} {
				if ft.Valid(tok) {
					t.Errorf("%s still valid after the token file was %s, want every token refused", tok, c.name)
				}
			}
			clk.Add(secretfile.CheckEvery)
			ft.Valid("token-1")
			if n := strings.Count(logs.String(), "every request"); n != 1 {
				t.Errorf("the revocation logged %d times, want once:\n%s", n, logs.String())
			}
			os.WriteFile(path, []byte("token-3\n"), 0o600)
			clk.Add(secretfile.CheckEvery)
			if !ft.Valid("token-3") || ft.Valid("token-1") {
				t.Errorf("a token written again: token-3 valid %v, token-1 valid %v; want only token-3", ft.Valid("token-3"), ft.Valid("token-1"))
			}
			if strings.Contains(logs.String(), "token-") {
				t.Errorf("a token was logged:\n%s", logs.String())
			}
		})
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

// TestOneAuthorizationHeader: a request with two Authorization headers is
// refused, saying so, whichever of them holds a right token: net/http
// reads the first, a proxy or a log may read the last, and which one
// counts would be a guess.
func TestOneAuthorizationHeader(t *testing.T) {
	tokens, _ := ParseTokens(strings.NewReader(testToken))
	for _, pair := range [][]string{
		{"Bearer " + testToken, "Bearer wrong"},
		{"Bearer wrong", "Bearer " + testToken},
		{"Bearer " + testToken, "Bearer " + testToken},
		{"Bearer " + testToken, ""},
	} {
		r := httptest.NewRequest("POST", "/", nil)
		r.Header["Authorization"] = pair
		err := CheckToken(tokens, r)
		if !errors.Is(err, ErrManyAuthorizations) || !strings.Contains(err.Error(), "Authorization") {
			t.Errorf("Authorization headers %q: %v, want %v", pair, err, ErrManyAuthorizations)
		}
		if tok, ok := BearerToken(r); ok {
			t.Errorf("Authorization headers %q: BearerToken %q, want none", pair, tok)
		}
	}
}
