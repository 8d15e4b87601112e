package dashboard

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestSessionCookieHostPrefix: over TLS (control's own, --secure-cookies,
// or a page of an https origin) the session cookie is named with the
// __Host- prefix, by which a browser takes it only Secure, for Path=/ and
// with no Domain: another host of the domain, or a plain-HTTP page of this
// host (cookies are not kept apart by port), cannot set or shadow it.
// Without TLS (loopback, a lab) it keeps its plain name, which a browser
// would refuse with the prefix. A plain-named cookie is refused where the
// prefix is due (a cookie of an older release: log in again).
func TestSessionCookieHostPrefix(t *testing.T) {
	for _, tt := range []struct {
		name      string
		tls       bool
		secure    bool
		origin    string // "https": the page's Origin is https
		want      string
		plainRead bool // a plain-named cookie is read
	}{
		{name: "plain HTTP", want: SessionCookie, plainRead: true},
		{name: "control's TLS", tls: true, want: SecureSessionCookie},
		{name: "SecureCookies", secure: true, want: SecureSessionCookie},
		{name: "a page of an https origin", origin: "https", want: SecureSessionCookie, plainRead: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, Config{Tokens: tokens("tok"), SecureCookies: tt.secure}, cardsInput())
			base, client := ts.http.URL, http.DefaultClient
			if tt.tls {
				srv := httptest.NewTLSServer(ts.Handler())
				t.Cleanup(srv.Close)
				base, client = srv.URL, srv.Client()
			}
			origin := base
			if tt.origin == "https" {
				origin = "https://" + strings.TrimPrefix(base, "http://")
			}
			do := func(method, path, body string, cookies ...*http.Cookie) (*http.Response, string) {
				t.Helper()
				req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				if method == http.MethodPost {
					req.Header.Set("Origin", origin)
				}
				for _, c := range cookies {
					req.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
				}
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return resp, string(b)
			}
			resp, body := do(http.MethodPost, "/ui/login", `{"token":"tok"}`)
			if resp.StatusCode != 200 {
				t.Fatalf("login: %d %s", resp.StatusCode, body)
			}
			cks := resp.Cookies()
			if len(cks) != 1 {
				t.Fatalf("login set %d cookies (%q), want 1", len(cks), resp.Header.Values("Set-Cookie"))
			}
			ck := cks[0]
			if ck.Name != tt.want {
				t.Errorf("login's session cookie is named %q, want %q", ck.Name, tt.want)
			}
			if ck.Name == SecureSessionCookie && (!ck.Secure || ck.Path != "/" || ck.Domain != "") {
				t.Errorf("a %s cookie must be Secure, Path=/, with no Domain: %q", SecureSessionCookie, resp.Header.Get("Set-Cookie"))
			}
			if _, body := do(http.MethodGet, "/ui/session", "", ck); !sessionOf(t, body).LoggedIn {
				t.Errorf("the session cookie %s is not read back", ck.Name)
			}
			// The same session under the other name.
			plain := &http.Cookie{Name: SessionCookie, Value: ck.Value}
			if _, body := do(http.MethodGet, "/ui/session", "", plain); sessionOf(t, body).LoggedIn != tt.plainRead {
				t.Errorf("a session under the plain name %s read: %v, want %v", SessionCookie, !tt.plainRead, tt.plainRead)
			}
			csrf := sessionOf(t, body).CSRF
			req, _ := http.NewRequest(http.MethodPost, base+"/ui/logout", strings.NewReader(`{}`))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Origin", origin)
			req.Header.Set(CSRFHeader, csrf)
			req.AddCookie(&http.Cookie{Name: ck.Name, Value: ck.Value})
			out, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			out.Body.Close()
			cleared := out.Cookies()
			if out.StatusCode != 200 || len(cleared) != 1 || cleared[0].Name != tt.want || cleared[0].MaxAge >= 0 || cleared[0].Secure != (tt.want == SecureSessionCookie) {
				t.Errorf("logout: %d, Set-Cookie %q; want 200 clearing %s", out.StatusCode, out.Header.Values("Set-Cookie"), tt.want)
			}
		})
	}
}

// TestSameOriginIPv6: a page reached by an IPv6 literal (the browser sends
// Host and Origin with the address in brackets, in its canonical form)
// is same-origin with itself, and not with another address or port.
func TestSameOriginIPv6(t *testing.T) {
	for _, tt := range []struct {
		host, origin string
		ok           bool
	}{
		{"[::1]:8000", "http://[::1]:8000", true},
		{"[2001:db8::1]:8000", "https://[2001:db8::1]:8000", true},
		{"[2001:db8::1]", "http://[2001:db8::1]", true},
		{"[::ffff:7f00:1]:8000", "http://[::ffff:7f00:1]:8000", true},
		{"[::1]:8000", "http://[::1]:8001", false},
		{"[::1]:8000", "http://[::2]:8000", false},
		{"[::1]:8000", "http://127.0.0.1:8000", false},
		{"[::1]:8000", "http://[::1].evil.example:8000", false},
		{"[::1]:8000", "null", false},
	} {
		r := httptest.NewRequest(http.MethodPost, "/ui/login", nil)
		r.Host = tt.host
		r.Header.Set("Origin", tt.origin)
		if err := sameOrigin(r); (err == nil) != tt.ok {
			t.Errorf("Host %s, Origin %s: same origin %v, want %v", tt.host, tt.origin, err == nil, tt.ok)
		}
	}
}
