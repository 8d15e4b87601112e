package dashboard

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// SessionCookie holds a page's session after it logged in: HttpOnly (the
// page's scripts never see it), SameSite=Strict (other sites' requests
// never carry it), never in a URL. Its value is the token and the
// session's end, sealed under a key of the process: a browser sends
// cookies to every port of the host, and stores them, so the cookie must
// not be the token, nor outlive sessionTTL wherever it is copied.
const SessionCookie = "underlay_session"

// CSRFHeader carries the session's CSRF token on the page's POSTs.
const CSRFHeader = "X-Underlay-CSRF"

// sessionTTL is how long a login lasts.
const sessionTTL = 12 * time.Hour

// token returns the token a request carries: the session cookie's, else a
// bearer token (scripts reading /v1/cluster with --auth-reads).
func (s *Server) token(r *http.Request) string {
	if tok := s.cookieToken(r); tok != "" {
		return tok
	}
	if t, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return strings.TrimSpace(t)
	}
	return ""
}

// cookieToken is the session cookie's token only: the page's POSTs are
// authenticated by their session, never by a header a script set. A
// cookie this process did not seal, or past its session's end, holds none.
func (s *Server) cookieToken(r *http.Request) string {
	c, err := r.Cookie(SessionCookie)
	if err != nil {
		return ""
	}
	tok, err := s.openSession(c.Value)
	if err != nil {
		return ""
	}
	return tok
}

// newSessionSealer is the AEAD sessions are sealed with, under a random
// key of the process.
func newSessionSealer() (cipher.AEAD, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("dashboard session key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("dashboard session key: %w", err)
	}
	return cipher.NewGCM(block)
}

// sealSession is the cookie value of a session of tok that ends at end:
// nonce, then the end (Unix seconds) and tok, sealed.
func (s *Server) sealSession(tok string, end time.Time) string {
	nonce := make([]byte, s.sealer.NonceSize(), s.sealer.NonceSize()+8+len(tok)+s.sealer.Overhead())
	rand.Read(nonce)
	plain := binary.BigEndian.AppendUint64(nil, uint64(end.Unix()))
	plain = append(plain, tok...)
	return base64.RawURLEncoding.EncodeToString(s.sealer.Seal(nonce, nonce, plain, []byte(SessionCookie)))
}

// errSession is wrapped by openSession's errors.
var errSession = errors.New("no session")

// openSession is the token of a cookie value sealSession made, while its
// session lasts.
func (s *Server) openSession(value string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(value)
	n := s.sealer.NonceSize()
	if err != nil || len(b) < n {
		return "", fmt.Errorf("%w: not a sealed session", errSession)
	}
	plain, err := s.sealer.Open(nil, b[:n], b[n:], []byte(SessionCookie))
	if err != nil || len(plain) < 8 {
		return "", fmt.Errorf("%w: not sealed by this process (restarted since the login?)", errSession)
	}
	end := time.Unix(int64(binary.BigEndian.Uint64(plain)), 0)
	if !s.cfg.Now().Before(end) {
		return "", fmt.Errorf("%w: ended at %s", errSession, end.UTC().Format(time.RFC3339))
	}
	return string(plain[8:]), nil
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
	return !s.cfg.AuthReads || s.valid(r, s.token(r))
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

// setSession stores a session of tok, sealed, in the session cookie.
func (s *Server) setSession(w http.ResponseWriter, r *http.Request, tok string) {
	http.SetCookie(w, &http.Cookie{
		Name: SessionCookie, Value: s.sealSession(tok, s.cfg.Now().Add(sessionTTL)), Path: "/",
		MaxAge: int(sessionTTL / time.Second), HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	})
}

func clearSession(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{
		Name: SessionCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	})
}
