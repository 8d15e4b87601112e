package dashboard

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/underlay/underlay/internal/httpserve"
)

//go:embed assets
var assets embed.FS

// contentSecurityPolicy lets the page run its own script and style only:
// no inline script, nothing from elsewhere, no framing. Even a value that
// escaped escaping could not run.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// maxBody bounds the page's request bodies (a token, a direction).
const maxBody = 4 << 10

// Mount adds the dashboard's routes to mux:
//
//	GET  /ui/                      the page (GET /ui redirects)
//	GET  /ui/app.js, /ui/app.css   its script and style
//	GET  /ui/session               {auth, auth_reads, logged_in, csrf}
//	POST /ui/login                 {"token": "…"}: sets the session cookie
//	POST /ui/logout
//	POST /ui/scale/{service}       {"direction": "up"|"down"} or {"replicas": N}
//	GET  /v1/cluster               the snapshot (JSON)
//	GET  /v1/cluster/events        server-sent events: snapshot, events, ping
func (s *Server) Mount(mux *http.ServeMux) {
	mux.HandleFunc("GET /ui", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui/", http.StatusMovedPermanently)
	})
	mux.HandleFunc("GET /ui/{$}", s.page)
	for _, name := range []string{"app.js", "app.css"} {
		mux.Handle("GET /ui/"+name, asset(name))
	}
	guess := func(h http.HandlerFunc) http.Handler { return limited(s.cfg.GuessLimit, h) }
	read := func(h http.Handler) http.Handler { return sameSiteRead(limited(s.cfg.ReadLimit, h.ServeHTTP)) }
	mux.Handle("GET /ui/session", read(guess(s.session)))
	mux.Handle("POST /ui/login", limited(s.cfg.LoginLimit, guess(s.login).ServeHTTP))
	mux.HandleFunc("POST /ui/logout", s.logout)
	mux.Handle("POST /ui/scale/{service}", guess(s.scale))
	mux.Handle("GET /v1/cluster", read(guess(s.snapshot)))
	mux.Handle("GET /v1/cluster/events", read(limited(s.cfg.StreamLimit, guess(s.stream).ServeHTTP)))
}

// sameSiteRead answers 403 to a read another site's page made
// (crossSiteRead) before h, its limits included, sees it: that page
// cannot see the answer, but would have the server make it, and take the
// operator's streams and budgets.
func sameSiteRead(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if crossSiteRead(r) {
			writeJSON(w, http.StatusForbidden, errorBody{errCrossSite.Error() + ": a page of another site may not read the cluster"})
			return
		}
		h.ServeHTTP(w, r)
	})
}

// limited is h wrapped in limit, when there is one.
func limited(limit func(http.Handler) http.Handler, h http.HandlerFunc) http.Handler {
	if limit == nil {
		return h
	}
	return limit(h)
}

// Handler serves the dashboard's routes alone.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	s.Mount(mux)
	return mux
}

func secure(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	secure(w)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

type errorBody struct {
	Error string `json:"error"`
}

func (s *Server) page(w http.ResponseWriter, r *http.Request) {
	secure(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	writeBody(w, r, s.index, s.indexGz)
}

// asset serves an embedded file with an ETag, so a reload costs a 304,
// compressed for clients that accept gzip.
func asset(name string) http.Handler {
	body, err := assets.ReadFile("assets/" + name)
	if err != nil {
		panic(err) // embedded at build time: cannot happen
	}
	sum := sha256.Sum256(body)
	etag := `"` + hex.EncodeToString(sum[:8]) + `"`
	ctype := "text/css; charset=utf-8"
	if name == "app.js" {
		ctype = "text/javascript; charset=utf-8"
	}
	gz := gzipped(body)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		secure(w)
		w.Header().Set("ETag", etag)
		w.Header().Set("Cache-Control", "no-cache")
		if r.Header.Get("If-None-Match") == etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("Content-Type", ctype)
		writeBody(w, r, body, gz)
	})
}

// acceptsGzip reports whether the client takes gzip-encoded answers (every
// browser does).
func acceptsGzip(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept-Encoding"), "gzip")
}

// gzipped compresses b.
func gzipped(b []byte) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.DefaultCompression)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// writeBody writes body, or its gzipped form gz to a client that takes it.
func writeBody(w http.ResponseWriter, r *http.Request, body, gz []byte) {
	w.Header().Add("Vary", "Accept-Encoding")
	if gz != nil && acceptsGzip(r) {
		w.Header().Set("Content-Encoding", "gzip")
		body = gz
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Write(body)
}

// sessionInfo answers GET /ui/session and POST /ui/login.
type sessionInfo struct {
	// Auth is true when scaling needs a token; AuthReads when reading does.
	Auth      bool `json:"auth"`
	AuthReads bool `json:"auth_reads"`
	LoggedIn  bool `json:"logged_in"`
	// CSRF goes in the X-Underlay-CSRF header of the page's POSTs; given
	// once logged in, or when there is no authentication.
	CSRF    string `json:"csrf,omitempty"`
	Version string `json:"version"`
}

// sessionOf is the session of tok, which r carried (nil: a token known
// valid, or none).
func (s *Server) sessionOf(r *http.Request, tok string) sessionInfo {
	in := sessionInfo{Auth: s.cfg.Tokens != nil, AuthReads: s.cfg.authReads(), Version: s.cfg.Version}
	switch {
	case s.cfg.Tokens == nil:
		in.CSRF = s.csrf("")
	case tok != "" && (r == nil || s.valid(r, tok)):
		in.LoggedIn, in.CSRF = true, s.csrf(tok)
	}
	return in
}

func (s *Server) session(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.sessionOf(r, s.cookieToken(r)))
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if err := sameOrigin(r); err != nil {
		writeJSON(w, http.StatusForbidden, errorBody{err.Error()})
		return
	}
	if err := jsonBody(r); err != nil {
		writeJSON(w, http.StatusUnsupportedMediaType, errorBody{err.Error()})
		return
	}
	var body struct {
		Token string `json:"token"`
	}
	if _, code, err := readJSON(w, r, &body); err != nil {
		writeJSON(w, code, errorBody{err.Error()})
		return
	}
	if s.cfg.Tokens == nil {
		writeJSON(w, http.StatusOK, s.sessionOf(nil, ""))
		return
	}
	// Trimmed as tokens are read and bearer tokens taken: blanks pasted
	// with it are not part of it.
	body.Token = strings.TrimSpace(body.Token)
	if body.Token == "" {
		writeJSON(w, http.StatusBadRequest, errorBody{`no token given: want {"token": "…"}`})
		return
	}
	if !s.valid(r, body.Token) {
		s.metrics.logins.WithLabelValues("refused").Inc()
		s.log.Warn("dashboard login refused", s.withClient(r)...)
		writeJSON(w, http.StatusUnauthorized, errorBody{"invalid token"})
		return
	}
	s.metrics.logins.WithLabelValues("ok").Inc()
	s.log.Info("dashboard login", s.withClient(r)...)
	s.setSession(w, r, body.Token)
	writeJSON(w, http.StatusOK, s.sessionOf(nil, body.Token))
}

// logout ends the request's session on the server, so that a copy of its
// cookie is refused too, and asks the browser to forget the cookie.
func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	sess, err := s.cookieSession(r)
	if err := s.checkPost(r, sess.tok); err != nil {
		writeJSON(w, http.StatusForbidden, errorBody{err.Error()})
		return
	}
	if err == nil {
		if err := s.sessions.revoke(sess); err != nil {
			s.log.Error("dashboard logout", s.withClient(r, "err", err)...)
			writeJSON(w, http.StatusInternalServerError, errorBody{"the logout could not be recorded: " + err.Error()})
			return
		}
		s.log.Info("dashboard logout", s.withClient(r)...)
	}
	s.clearSession(w, r)
	writeJSON(w, http.StatusOK, s.sessionOf(nil, ""))
}

// readJSON reads r's body, one JSON value of at most maxBody bytes with
// no field v lacks, into v; when it cannot, the status to answer and why.
func readJSON(w http.ResponseWriter, r *http.Request, v any) ([]byte, int, error) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("request body over %d bytes", maxBody)
	case err != nil:
		return nil, http.StatusBadRequest, fmt.Errorf("read request body: %w", err)
	}
	// Strict, as the API reads its bodies: a field misspelt is named, not
	// taken for one missing.
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return nil, http.StatusBadRequest, fmt.Errorf("malformed JSON body: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, http.StatusBadRequest, errors.New("malformed JSON body: data after the JSON value")
	}
	return b, 0, nil
}

// withClient is args, a log line's attributes, after those naming r's
// client (Config.Client): client, and via when it came through a trusted
// proxy.
func (s *Server) withClient(r *http.Request, args ...any) []any {
	client, via := r.RemoteAddr, ""
	if s.cfg.Client != nil {
		client, via = s.cfg.Client(r)
	}
	if via == "" {
		return append([]any{"client", client}, args...)
	}
	return append([]any{"client", client, "via", via}, args...)
}

// scale passes a scale button's request to the autoscaler's API with the
// session's token.
func (s *Server) scale(w http.ResponseWriter, r *http.Request) {
	tok := s.cookieToken(r)
	if !s.valid(r, tok) {
		writeJSON(w, http.StatusUnauthorized, errorBody{"log in to scale services"})
		return
	}
	if err := s.checkPost(r, tok); err != nil {
		writeJSON(w, http.StatusForbidden, errorBody{err.Error()})
		return
	}
	if s.cfg.ScaleAPI == nil {
		writeJSON(w, http.StatusNotImplemented, errorBody{"no autoscaler behind this dashboard"})
		return
	}
	body, code, err := readJSON(w, r, &json.RawMessage{})
	if err != nil {
		writeJSON(w, code, errorBody{err.Error()})
		return
	}
	service := r.PathValue("service")
	req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, "/v1/underlay/services/"+url.PathEscape(service)+"/scale", bytes.NewReader(body))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{fmt.Sprintf("service %q: %v", service, err)})
		return
	}
	req.RemoteAddr, req.Host = r.RemoteAddr, r.Host
	// The API tells the client behind a trusted proxy from it, for its
	// rate limit and the decision's source, as for its own requests.
	for _, v := range r.Header.Values("X-Forwarded-For") {
		req.Header.Add("X-Forwarded-For", v)
	}
	req.Header.Set("Content-Type", "application/json")
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	rec := &statusWriter{ResponseWriter: w, code: http.StatusOK}
	secure(w)
	s.cfg.ScaleAPI.ServeHTTP(rec, req)
	s.metrics.scales.WithLabelValues(strconv.Itoa(rec.code)).Inc()
	s.log.Info("scale request from the dashboard", s.withClient(r, "service", service, "status", rec.code)...)
	signal(s.kick) // show the change as soon as Docker has it
}

// statusWriter records the status written through it.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

func (s *Server) snapshot(w http.ResponseWriter, r *http.Request) {
	if !s.mayRead(r) {
		s.unauthorized(w)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.SourceTimeout)
	s.fresh(ctx)
	cancel()
	b, gz := s.snapshotBodies()
	if b == nil {
		writeJSON(w, http.StatusServiceUnavailable, errorBody{"no snapshot yet: the sources are being read"})
		return
	}
	secure(w)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	writeBody(w, r, b, gz)
}

func (s *Server) unauthorized(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="underlay"`)
	writeJSON(w, http.StatusUnauthorized, errorBody{"log in (POST /ui/login) or send a bearer token to read the cluster"})
}

// streamRetry is the least a page waits before reconnecting a stream
// that dropped (the stream's retry: field, jittered up to twice it).
const streamRetry = 2 * time.Second

// ping is the stream's keep-alive: the page counts the stream live while
// pings arrive, and fetches the snapshot if its version is behind.
type ping struct {
	Time     time.Time `json:"time"`
	Version  uint64    `json:"version"`
	Instance string    `json:"instance"`
}

// streamHeaders are the headers of an event stream's answer.
func streamHeaders(w http.ResponseWriter) {
	secure(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store") // the snapshots, as GET /v1/cluster
	h.Set("X-Accel-Buffering", "no")
	h.Add("Vary", "Accept-Encoding")
}

// stream serves the events: the current snapshot and the event backlog,
// then every new snapshot and events, and a ping every KeepAlive.
func (s *Server) stream(w http.ResponseWriter, r *http.Request) {
	if !s.mayRead(r) {
		s.unauthorized(w)
		return
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		writeJSON(w, http.StatusInternalServerError, errorBody{"streaming unsupported"})
		return
	}
	if r.Method == http.MethodHead {
		// Its headers only: a stream's writes to a HEAD go nowhere, so
		// none would fail and end it, and it would hold a stream and the
		// connection (the client's next request on it) for ever.
		streamHeaders(w)
		w.WriteHeader(http.StatusOK)
		return
	}
	// The stream lives as long as the page: it lifts the server's write
	// timeout, which bounds every other answer, and bounds each frame's
	// writing instead (StreamWriteTimeout), so that a client that stops
	// reading does not hold the handler, its buffers and the frame.
	rc := http.NewResponseController(w)
	deadline := func() bool {
		err := rc.SetWriteDeadline(time.Now().Add(s.cfg.StreamWriteTimeout))
		return err == nil || errors.Is(err, http.ErrNotSupported)
	}
	if !deadline() {
		return
	}
	sub, first := s.subscribe()
	defer s.unsubscribe(sub)
	streamHeaders(w)
	h := w.Header()
	// Snapshots are JSON repeated with small changes: gzip, flushed after
	// every event, sends a tenth of the bytes.
	out := io.Writer(w)
	flush := fl.Flush
	if acceptsGzip(r) {
		h.Set("Content-Encoding", "gzip")
		zw := s.streamGzip.Get().(*gzip.Writer)
		zw.Reset(w)
		defer func() {
			zw.Close()
			zw.Reset(nil) // holds no connection while pooled
			s.streamGzip.Put(zw)
		}()
		out = zw
		flush = func() { zw.Flush(); fl.Flush() }
	}
	w.WriteHeader(http.StatusOK)
	// Each page its own reconnect time: after a restart of control,
	// pages told one retry would all come back at the same instant.
	io.WriteString(out, httpserve.StreamRetry(streamRetry))
	for _, f := range first {
		out.Write(f)
	}
	flush()
	tick := time.NewTicker(s.cfg.KeepAlive)
	defer tick.Stop()
	for {
		var frames [][]byte
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
			b, _ := json.Marshal(ping{Time: s.cfg.Now().UTC(), Version: s.currentVersion(), Instance: s.instance})
			frames = [][]byte{sseFrame("ping", "", b)}
		case <-sub.ready:
			var ok bool
			if frames, ok = s.pending(sub); !ok {
				return // fell behind: the page reconnects
			}
		}
		// The stream's token is checked again before it sends: a token
		// revoked, or a session ended, since it opened ends it, as it
		// refuses its next request.
		if !s.mayRead(r) {
			return
		}
		for _, f := range frames {
			if !deadline() {
				return
			}
			if _, err := out.Write(f); err != nil {
				return
			}
		}
		flush()
	}
}
