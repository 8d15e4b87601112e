package dashboard

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// SessionCookie holds a page's token after it logged in: HttpOnly (the
// page's scripts never see it), SameSite=Strict (other sites' requests
// never carry it), never in a URL.
const SessionCookie = "underlay_session"

// CSRFHeader carries the session's CSRF token on the page's POSTs.
const CSRFHeader = "X-Underlay-CSRF"

// sessionTTL is how long a login lasts.
const sessionTTL = 12 * time.Hour

// token returns the token a request carries: the session cookie's, else a
// bearer token (scripts reading /v1/cluster with --auth-reads).
func token(r *http.Request) string {
	if c, err := r.Cookie(SessionCookie); err == nil {
		if b, err := base64.RawURLEncoding.DecodeString(c.Value); err == nil {
			return string(b)
		}
	}
	if t, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return strings.TrimSpace(t)
	}
	return ""
}

// cookieToken is the session cookie's token only: the page's POSTs are
// authenticated by their session, never by a header a script set.
func cookieToken(r *http.Request) string {
	c, err := r.Cookie(SessionCookie)
	if err != nil {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(c.Value)
	if err != nil {
		return ""
	}
	return string(b)
}

// valid reports whether tok, which r carried, is accepted; every token is
// when there is no authentication. A token that is not is reported to
// TokenFailed (no token at all is a page not logged in, not a guess).
func (s *Server) valid(r *http.Request, tok string) bool {
	if s.cfg.Tokens == nil {
		return true
	}
	if tok == "" {
		return false
	}
	if !s.cfg.Tokens.Valid(tok) {
		if s.cfg.TokenFailed != nil {
			s.cfg.TokenFailed(r)
		}
		return false
	}
	return true
}

// mayRead reports whether r may read the snapshot and the events.
func (s *Server) mayRead(r *http.Request) bool {
	return !s.cfg.AuthReads || s.valid(r, token(r))
}

// csrf is the CSRF token of a session: an HMAC of its token under the
// process's key, so it is bound to the session and unknown to other sites,
// which cannot read /ui/session (no CORS).
func (s *Server) csrf(tok string) string {
	m := hmac.New(sha256.New, s.csrfKey)
	m.Write([]byte("csrf\x00" + tok))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// Errors of the POST checks.
var (
	errCrossSite   = errors.New("cross-site request refused")
	errContentType = errors.New("want Content-Type: application/json")
	errCSRF        = errors.New("missing or wrong " + CSRFHeader + " header: reload the page")
)

// sameOrigin refuses requests another site made: a browser names the
// requesting origin (Origin, Sec-Fetch-Site) on every POST.
func sameOrigin(r *http.Request) error {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return errCrossSite
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || u.Host != r.Host {
			return errCrossSite
		}
	}
	return nil
}

// jsonBody refuses bodies that are not JSON: an HTML form of another site
// cannot send application/json without a CORS preflight, which is never
// allowed.
func jsonBody(r *http.Request) error {
	ct := r.Header.Get("Content-Type")
	if ct != "application/json" && !strings.HasPrefix(ct, "application/json;") {
		return errContentType
	}
	return nil
}

// checkPost runs the checks every POST of the page passes: same origin,
// JSON, and the session's CSRF token.
func (s *Server) checkPost(r *http.Request, tok string) error {
	if err := sameOrigin(r); err != nil {
		return err
	}
	if err := jsonBody(r); err != nil {
		return err
	}
	got := r.Header.Get(CSRFHeader)
	if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(s.csrf(tok))) != 1 {
		return errCSRF
	}
	return nil
}

// setSession stores tok in the session cookie.
func setSession(w http.ResponseWriter, r *http.Request, tok string) {
	http.SetCookie(w, &http.Cookie{
		Name: SessionCookie, Value: base64.RawURLEncoding.EncodeToString([]byte(tok)), Path: "/",
		MaxAge: int(sessionTTL / time.Second), HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	})
}

func clearSession(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{
		Name: SessionCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	})
}
