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
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/underlay/underlay/internal/scale"
)

// SessionCookie holds a page's session after it logged in: HttpOnly (the
// page's scripts never see it), SameSite=Strict (other sites' requests
// never carry it), never in a URL. Its value is the token, the session's
// end and a random ID (which its logout revokes), sealed under a key of
// the process: a browser sends cookies to every port of the host, and
// stores them, so the cookie must not be the token, nor outlive
// sessionTTL, nor its logout, wherever it is copied.
const SessionCookie = "underlay_session"

// SecureSessionCookie is the session cookie's name over TLS (Server.secure).
// __Host- makes a browser take it only Secure, for Path=/ and without a
// Domain, from a secure page, so that no other host of the domain, nor a
// plain-HTTP page of this host (another port), can set or shadow it.
const SecureSessionCookie = "__Host-" + SessionCookie

// CSRFHeader carries the session's CSRF token on the page's POSTs.
const CSRFHeader = "X-Underlay-CSRF"

// sessionTTL is how long a login lasts.
const sessionTTL = 12 * time.Hour

// token returns the token a request carries: the session cookie's, else a
// bearer token (scripts reading /v1/cluster).
func (s *Server) token(r *http.Request) string {
	if tok := s.cookieToken(r); tok != "" {
		return tok
	}
	if t, ok := scale.BearerToken(r); ok {
		return t
	}
	return ""
}

// cookieToken is the session cookie's token only: the page's POSTs are
// authenticated by their session, never by a header a script set. A
// cookie this process did not seal, past its session's end, or of a
// session logged out, holds none.
func (s *Server) cookieToken(r *http.Request) string {
	sess, _ := s.cookieSession(r)
	return sess.tok
}

// cookieSession is the session of r's session cookie, while it lasts:
// the __Host- one (a browser holds it only from a secure page), else,
// unless the server serves TLS or was told its pages are https
// (Config.SecureCookies), where the prefix is due, the plain one. A
// plain-named cookie there is an older release's, or another port's
// page's: the page logs in again.
func (s *Server) cookieSession(r *http.Request) (session, error) {
	c, err := r.Cookie(SecureSessionCookie)
	if err != nil && !s.servesSecure(r) {
		c, err = r.Cookie(SessionCookie)
	}
	if err != nil {
		return session{}, fmt.Errorf("%w: no %s cookie", errSession, s.cookieName(r))
	}
	return s.sessions.open(c.Value)
}

// cookieName is the name of the session cookie set in answer to r: with
// the __Host- prefix when the cookie is Secure (secure), which the prefix
// requires, with Path=/ and no Domain, as every session cookie is.
func (s *Server) cookieName(r *http.Request) string {
	if s.secure(r) {
		return SecureSessionCookie
	}
	return SessionCookie
}

// sealSession is the cookie value of a new session of tok that ends at end.
func (s *Server) sealSession(tok string, end time.Time) string {
	return s.sessions.seal(tok, end)
}

// sessionIDLen is the length of a session's random ID, by which its logout
// is remembered.
const sessionIDLen = 16

type sessionID [sessionIDLen]byte

// session is what a session cookie holds.
type session struct {
	id  sessionID
	tok string
	end time.Time
}

// maxRevoked bounds the sessions remembered as logged out before their
// end (about 100 bytes each).
const maxRevoked = 4096

// sessions seals sessions into cookie values, opens them, and refuses
// those logged out: a copy of a cookie taken before its logout (another
// tab, a stolen cookie) must not outlive it.
type sessions struct {
	now func() time.Time
	log *slog.Logger
	// max bounds revoked (maxRevoked).
	max int

	mu sync.Mutex // guards following fields
	// sealer seals the sessions under a random key of the process.
	sealer cipher.AEAD
	// revoked are the sessions logged out, by ID, with their end: each is
	// kept until then, when its cookie is refused anyway.
	revoked map[sessionID]time.Time
}

func newSessions(now func() time.Time, log *slog.Logger) (*sessions, error) {
	sealer, err := newSessionSealer()
	if err != nil {
		return nil, err
	}
	return &sessions{now: now, log: log, max: maxRevoked, sealer: sealer, revoked: map[sessionID]time.Time{}}, nil
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

// seal is the cookie value of a new session of tok that ends at end:
// nonce, then the end (Unix seconds), a random session ID and tok, sealed.
func (ss *sessions) seal(tok string, end time.Time) string {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	n := ss.sealer.NonceSize()
	nonce := make([]byte, n, n+8+sessionIDLen+len(tok)+ss.sealer.Overhead())
	rand.Read(nonce)
	plain := binary.BigEndian.AppendUint64(nil, uint64(end.Unix()))
	var id sessionID
	rand.Read(id[:])
	plain = append(plain, id[:]...)
	plain = append(plain, tok...)
	return base64.RawURLEncoding.EncodeToString(ss.sealer.Seal(nonce, nonce, plain, []byte(SessionCookie)))
}

// errSession is wrapped by open's errors.
var errSession = errors.New("no session")

// open is the session of a cookie value seal made, while it lasts and was
// not logged out.
func (ss *sessions) open(value string) (session, error) {
	b, err := base64.RawURLEncoding.DecodeString(value)
	ss.mu.Lock()
	defer ss.mu.Unlock()
	n := ss.sealer.NonceSize()
	if err != nil || len(b) < n {
		return session{}, fmt.Errorf("%w: not a sealed session", errSession)
	}
	plain, err := ss.sealer.Open(nil, b[:n], b[n:], []byte(SessionCookie))
	if err != nil || len(plain) < 8+sessionIDLen {
		return session{}, fmt.Errorf("%w: not sealed by this process (restarted, or every session ended, since the login?)", errSession)
	}
	sess := session{end: time.Unix(int64(binary.BigEndian.Uint64(plain)), 0), tok: string(plain[8+sessionIDLen:])}
	copy(sess.id[:], plain[8:])
	if !ss.now().Before(sess.end) {
		return session{}, fmt.Errorf("%w: ended at %s", errSession, sess.end.UTC().Format(time.RFC3339))
	}
	if _, ok := ss.revoked[sess.id]; ok {
		return session{}, fmt.Errorf("%w: logged out", errSession)
	}
	return sess, nil
}

// revoke remembers sess as logged out until its end. When max sessions
// are remembered already, none of which has ended, it ends every session
// instead, under a new key, as a restart does: forgetting a logout would
// let its cookie back in, and refusing one would leave it working.
func (ss *sessions) revoke(sess session) error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	now := ss.now()
	for id, end := range ss.revoked {
		if !now.Before(end) {
			delete(ss.revoked, id)
		}
	}
	if len(ss.revoked) < ss.max {
		ss.revoked[sess.id] = sess.end
		return nil
	}
	sealer, err := newSessionSealer()
	if err != nil {
		return fmt.Errorf("end every session: %w", err)
	}
	ss.sealer = sealer
	clear(ss.revoked)
	ss.log.Warn("dashboard sessions ended: too many logged-out sessions to remember; pages log in again", "logged_out", ss.max)
	return nil
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
	return !s.cfg.authReads() || s.valid(r, s.token(r))
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

// crossSiteRead reports whether r is a read a page of another origin made
// (a fetch, an EventSource, an image: Sec-Fetch-Site, or an Origin not
// this host's). The browser keeps the answer from that page (no CORS),
// but the server would still build it and send it, a whole snapshot, or
// hold a stream open, at that page's pace, from the operator's own
// address. A navigation (a link to the JSON followed, the address typed)
// is the operator's own reading. The rule is the autoscaler API's, for
// its reads.
func crossSiteRead(r *http.Request) bool {
	return scale.CrossSiteRead(r)
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

// setSession stores a new session of tok, sealed, in the session cookie.
func (s *Server) setSession(w http.ResponseWriter, r *http.Request, tok string) {
	http.SetCookie(w, &http.Cookie{
		Name: s.cookieName(r), Value: s.sealSession(tok, s.cfg.Now().Add(sessionTTL)), Path: "/",
		MaxAge: int(sessionTTL / time.Second), HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: s.secure(r),
	})
}

func (s *Server) clearSession(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{
		Name: s.cookieName(r), Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: s.secure(r),
	})
}

// secure reports whether r's cookies are to be marked Secure: always with
// Config.SecureCookies; else when r came over TLS to this server, or from
// a page of an https origin (the browser's Origin header: the browser
// then sends the cookie back over https only, as it would). Never by
// X-Forwarded-Proto, which any client sets, and a proxy in front may
// pass on as it came.
func (s *Server) secure(r *http.Request) bool {
	if s.servesSecure(r) {
		return true
	}
	u, err := url.Parse(r.Header.Get("Origin"))
	return err == nil && u.Scheme == "https"
}

// servesSecure reports whether every page of r's is https: r came over
// TLS to this server, or Config.SecureCookies says so.
func (s *Server) servesSecure(r *http.Request) bool {
	return s.cfg.SecureCookies || r.TLS != nil
}
