package dashboard

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// tokenSet is a set of tokens that may be revoked while the server runs.
type tokenSet struct {
	mu sync.Mutex
	ok map[string]bool
}

func tokens(ts ...string) *tokenSet {
	t := &tokenSet{ok: map[string]bool{}}
	for _, tok := range ts {
		t.ok[tok] = true
	}
	return t
}

func (t *tokenSet) Valid(tok string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.ok[tok]
}

func (t *tokenSet) revoke(tok string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.ok, tok)
}

// scaleAPI records the requests the dashboard passes on.
type scaleAPI struct {
	mu   sync.Mutex
	reqs []*http.Request
	body []string
}

func (a *scaleAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	a.mu.Lock()
	a.reqs = append(a.reqs, r)
	a.body = append(a.body, string(b))
	a.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"service":"hello","from":3,"to":4,"reason":"scaled","why":"scaled up from 3 to 4 replicas"}`)
}

func (a *scaleAPI) last() (*http.Request, string, int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.reqs) == 0 {
		return nil, "", 0
	}
	return a.reqs[len(a.reqs)-1], a.body[len(a.body)-1], len(a.reqs)
}

type testServer struct {
	*Server
	src  *fakeSources
	api  *scaleAPI
	http *httptest.Server
	// down makes every request fail with 503, as a control instance that
	// is restarting.
	down atomic.Bool
}

func startServer(t testing.TB, cfg Config, in Inputs) *testServer {
	t.Helper()
	return startServerLog(t, cfg, in, slog.New(slog.DiscardHandler))
}

// startServerLog is startServer logging to log.
func startServerLog(t testing.TB, cfg Config, in Inputs, log *slog.Logger) *testServer {
	t.Helper()
	src := newFakeSources(in)
	api := &scaleAPI{}
	cfg.Sources = src.sources()
	cfg.ScaleAPI = api
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return in.Now }
	}
	if cfg.KeepAlive == 0 {
		cfg.KeepAlive = 50 * time.Millisecond
	}
	cfg.Debounce = time.Millisecond
	s, err := New(cfg, log, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	ts := &testServer{Server: s, src: src, api: api}
	h := s.Handler()
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ts.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		h.ServeHTTP(w, r)
	}))
	ts.http = hs
	t.Cleanup(func() { hs.Close(); cancel(); <-done })
	waitFor(t, func() bool { return s.Snapshot() != nil }, "first snapshot")
	return ts
}

func waitFor(t testing.TB, cond func() bool, what string) {
	t.Helper()
	// A bound on a hang, not a measure: a large snapshot built under -race
	// on a loaded 2-core machine took over 10 s once.
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// client is a browser-like client of ts: a cookie jar, and the Origin
// header a browser sets on POSTs.
func (ts *testServer) client(t *testing.T) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar}
}

func (ts *testServer) post(t *testing.T, c *http.Client, path, body string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, ts.http.URL+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", ts.http.URL)
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func (ts *testServer) get(t *testing.T, c *http.Client, path string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, ts.http.URL+path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func sessionOf(t *testing.T, body string) sessionInfo {
	t.Helper()
	var s sessionInfo
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatalf("session %q: %v", body, err)
	}
	return s
}

func TestLoginAndScale(t *testing.T) {
	ts := startServer(t, Config{Tokens: tokens("s3cret token"), OpenReads: true}, cardsInput())
	c := ts.client(t)

	// Reads are open with OpenReads (--auth-reads=false); scaling is not.
	if resp, _ := ts.get(t, c, "/v1/cluster", nil); resp.StatusCode != 200 {
		t.Fatalf("GET /v1/cluster: %d, want 200 (reads open)", resp.StatusCode)
	}
	_, body := ts.get(t, c, "/ui/session", nil)
	if s := sessionOf(t, body); !s.Auth || s.LoggedIn || s.CSRF != "" {
		t.Fatalf("session before login = %+v; want auth, not logged in, no CSRF token", s)
	}
	if resp, _ := ts.post(t, c, "/ui/scale/hello", `{"direction":"up"}`, nil); resp.StatusCode != 401 {
		t.Errorf("scale without a session: %d, want 401", resp.StatusCode)
	}
	if resp, _ := ts.post(t, c, "/ui/login", `{"token":"wrong"}`, nil); resp.StatusCode != 401 {
		t.Errorf("login with a wrong token: %d, want 401", resp.StatusCode)
	}
	if resp, _ := ts.post(t, c, "/ui/login", `token=s3cret+token`, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}); resp.StatusCode != 415 {
		t.Errorf("login from a form: %d, want 415", resp.StatusCode)
	}
	if resp, _ := ts.post(t, c, "/ui/login", `{"token":"s3cret token"}`, map[string]string{"Origin": "http://evil.example"}); resp.StatusCode != 403 {
		t.Errorf("login from another origin: %d, want 403", resp.StatusCode)
	}

	resp, body := ts.post(t, c, "/ui/login", `{"token":"s3cret token"}`, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("login: %d %s", resp.StatusCode, body)
	}
	set := resp.Header.Get("Set-Cookie")
	for _, want := range []string{SessionCookie + "=", "HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="} {
		if !strings.Contains(set, want) {
			t.Errorf("Set-Cookie %q lacks %s", set, want)
		}
	}
	if strings.Contains(set, "s3cret") {
		t.Errorf("Set-Cookie %q carries the token in clear", set)
	}
	sess := sessionOf(t, body)
	if !sess.LoggedIn || sess.CSRF == "" {
		t.Fatalf("login answered %+v; want logged in with a CSRF token", sess)
	}
	if _, body := ts.get(t, c, "/ui/session", nil); sessionOf(t, body).CSRF != sess.CSRF {
		t.Errorf("session's CSRF token differs from login's")
	}

	// The session alone is not enough: CSRF token, JSON and same origin too.
	for name, hdr := range map[string]map[string]string{
		"no CSRF token":    {},
		"wrong CSRF token": {CSRFHeader: "x" + sess.CSRF},
		"another origin":   {CSRFHeader: sess.CSRF, "Origin": "http://evil.example"},
		"cross-site fetch": {CSRFHeader: sess.CSRF, "Sec-Fetch-Site": "cross-site"},
		"a form post":      {CSRFHeader: sess.CSRF, "Content-Type": "text/plain"},
	} {
		if resp, _ := ts.post(t, c, "/ui/scale/hello", `{"direction":"up"}`, hdr); resp.StatusCode != 403 {
			t.Errorf("scale with %s: %d, want 403", name, resp.StatusCode)
		}
	}
	if _, _, n := ts.api.last(); n != 0 {
		t.Fatalf("%d refused requests reached the scale API", n)
	}

	resp, body = ts.post(t, c, "/ui/scale/hello", `{"direction":"up"}`, map[string]string{CSRFHeader: sess.CSRF})
	if resp.StatusCode != 200 || !strings.Contains(body, `"to":4`) {
		t.Fatalf("scale: %d %s", resp.StatusCode, body)
	}
	req, fwd, _ := ts.api.last()
	if req.URL.Path != "/v1/underlay/services/hello/scale" || req.Header.Get("Authorization") != "Bearer s3cret token" || fwd != `{"direction":"up"}` {
		t.Errorf("scale API got %s %q with %q; want /v1/underlay/services/hello/scale, the session's bearer token, the body", req.URL.Path, fwd, req.Header.Get("Authorization"))
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("scale answer lacks the CSP: %q", csp)
	}

	// A token revoked since the login ends the session.
	ts.cfg.Tokens.(*tokenSet).revoke("s3cret token")
	if resp, _ := ts.post(t, c, "/ui/scale/hello", `{"direction":"up"}`, map[string]string{CSRFHeader: sess.CSRF}); resp.StatusCode != 401 {
		t.Errorf("scale with a revoked token: %d, want 401", resp.StatusCode)
	}
}

func TestLogout(t *testing.T) {
	ts := startServer(t, Config{Tokens: tokens("tok")}, cardsInput())
	c := ts.client(t)
	_, body := ts.post(t, c, "/ui/login", `{"token":"tok"}`, nil)
	csrf := sessionOf(t, body).CSRF
	if resp, _ := ts.post(t, c, "/ui/logout", `{}`, nil); resp.StatusCode != 403 {
		t.Errorf("logout without CSRF token: %d, want 403", resp.StatusCode)
	}
	resp, _ := ts.post(t, c, "/ui/logout", `{}`, map[string]string{CSRFHeader: csrf})
	if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Set-Cookie"), "Max-Age=0") {
		t.Errorf("logout: %d, Set-Cookie %q; want 200 and the cookie expired", resp.StatusCode, resp.Header.Get("Set-Cookie"))
	}
	if _, body := ts.get(t, c, "/ui/session", nil); sessionOf(t, body).LoggedIn {
		t.Error("still logged in after logout")
	}
}

// TestLogoutEndsTheSession: logging out ends the session on the server: a
// copy of its cookie taken before (another tab, a stolen cookie) is
// refused like an expired one, and the streams it opened end; the same
// token's other sessions go on. Before, logout only asked the browser to
// forget the cookie, and a copy kept working for 12 h.
func TestLogoutEndsTheSession(t *testing.T) {
	ts := startServer(t, Config{Tokens: tokens("tok")}, cardsInput())
	login := func(c *http.Client) (cookie map[string]string, csrf string) {
		t.Helper()
		resp, body := ts.post(t, c, "/ui/login", `{"token":"tok"}`, nil)
		for _, ck := range resp.Cookies() {
			if ck.Name == SessionCookie {
				cookie = map[string]string{"Cookie": SessionCookie + "=" + ck.Value}
			}
		}
		if resp.StatusCode != 200 || cookie == nil {
			t.Fatalf("login: %d %s, cookie %v", resp.StatusCode, body, cookie)
		}
		return cookie, sessionOf(t, body).CSRF
	}
	c := ts.client(t)
	copied, csrf := login(c)
	other, _ := login(ts.client(t))

	req, _ := http.NewRequest(http.MethodGet, ts.http.URL+"/v1/cluster/events", nil)
	req.Header.Set("Cookie", copied["Cookie"])
	stream, err := http.DefaultClient.Do(req)
	if err != nil || stream.StatusCode != 200 {
		t.Fatalf("GET /v1/cluster/events with the session: %v %v", stream, err)
	}
	defer stream.Body.Close()
	ended := make(chan struct{})
	go func() { io.Copy(io.Discard, stream.Body); close(ended) }()

	if resp, body := ts.post(t, c, "/ui/logout", `{}`, map[string]string{CSRFHeader: csrf}); resp.StatusCode != 200 {
		t.Fatalf("logout: %d %s", resp.StatusCode, body)
	}
	if resp, body := ts.get(t, http.DefaultClient, "/v1/cluster", copied); resp.StatusCode != 401 {
		t.Errorf("GET /v1/cluster with the logged-out session's cookie: %d %.80q, want 401", resp.StatusCode, body)
	}
	if _, body := ts.get(t, http.DefaultClient, "/ui/session", copied); sessionOf(t, body).LoggedIn {
		t.Errorf("the logged-out session's cookie still logs in: %s", body)
	}
	hdr := map[string]string{"Cookie": copied["Cookie"], CSRFHeader: csrf}
	if resp, body := ts.post(t, http.DefaultClient, "/ui/scale/hello", `{"direction":"up"}`, hdr); resp.StatusCode != 401 {
		t.Errorf("scale with the logged-out session's cookie: %d %.80q, want 401", resp.StatusCode, body)
	}
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Error("the logged-out session's event stream still open 5s after the logout")
	}
	if resp, _ := ts.get(t, http.DefaultClient, "/v1/cluster", other); resp.StatusCode != 200 {
		t.Errorf("GET /v1/cluster with another session of the same token: %d, want 200", resp.StatusCode)
	}
}

// TestLoggedOutSessionsBounded: a logout is remembered until its session
// would have ended anyway, then forgotten; when as many logouts as the
// bound are remembered, one more ends every session (a new key) rather
// than forget one or refuse the logout.
func TestLoggedOutSessionsBounded(t *testing.T) {
	in := cardsInput()
	var now atomic.Int64
	now.Store(in.Now.UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	ts := startServer(t, Config{Tokens: tokens("tok"), Now: clock}, in)
	ts.sessions.max = 3
	login := func() (*http.Client, string) {
		t.Helper()
		c := ts.client(t)
		resp, body := ts.post(t, c, "/ui/login", `{"token":"tok"}`, nil)
		if resp.StatusCode != 200 {
			t.Fatalf("login: %d %s", resp.StatusCode, body)
		}
		return c, sessionOf(t, body).CSRF
	}
	copyOf := func(c *http.Client) *http.Client {
		t.Helper()
		u, _ := url.Parse(ts.http.URL)
		dup := ts.client(t)
		dup.Jar.SetCookies(u, c.Jar.Cookies(u))
		return dup
	}
	logout := func(c *http.Client, csrf string) {
		t.Helper()
		if resp, body := ts.post(t, c, "/ui/logout", `{}`, map[string]string{CSRFHeader: csrf}); resp.StatusCode != 200 {
			t.Fatalf("logout: %d %s", resp.StatusCode, body)
		}
	}
	reads := func(c *http.Client) bool {
		t.Helper()
		resp, _ := ts.get(t, c, "/v1/cluster", nil)
		return resp.StatusCode == 200
	}
	remembered := func() int {
		ts.sessions.mu.Lock()
		defer ts.sessions.mu.Unlock()
		return len(ts.sessions.revoked)
	}

	// An early logout is forgotten once its session would have ended.
	early, csrf := login()
	logout(early, csrf)
	now.Add(int64(sessionTTL / 2))
	var copies []*http.Client
	for range 2 {
		c, csrf := login()
		copies = append(copies, copyOf(c))
		logout(c, csrf)
	}
	if got := remembered(); got != 3 {
		t.Fatalf("%d logouts remembered, want 3", got)
	}
	now.Add(int64(sessionTTL/2 + time.Second))
	kept, _ := login()
	last, csrf := login()
	lastCopy := copyOf(last)
	logout(last, csrf)
	if got := remembered(); got != 3 {
		t.Errorf("%d logouts remembered after the first one's session ended, want 3 (it forgotten, the new one remembered)", got)
	}
	for i, c := range append(copies, lastCopy) {
		if reads(c) {
			t.Errorf("logged-out session %d reads", i)
		}
	}
	if !reads(kept) {
		t.Fatal("a session not logged out does not read")
	}

	// One more logout than the bound ends every session.
	one, csrf := login()
	oneCopy := copyOf(one)
	logout(one, csrf)
	if reads(kept) || reads(oneCopy) || reads(lastCopy) {
		t.Errorf("past the bound of remembered logouts, sessions still read (kept %v, just logged out %v, logged out before %v)", reads(kept), reads(oneCopy), reads(lastCopy))
	}
	if got := remembered(); got != 0 {
		t.Errorf("%d logouts remembered after every session ended, want 0", got)
	}
	if again, _ := login(); !reads(again) {
		t.Error("a new login does not read after every session ended")
	}
}

func TestAuthReads(t *testing.T) {
	ts := startServer(t, Config{Tokens: tokens("tok")}, cardsInput())
	c := ts.client(t)
	for _, path := range []string{"/v1/cluster", "/v1/cluster/events"} {
		if resp, _ := ts.get(t, c, path, nil); resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("GET %s without a token: %d, want 401 with WWW-Authenticate", path, resp.StatusCode)
		}
	}
	if resp, _ := ts.get(t, c, "/v1/cluster", map[string]string{"Authorization": "Bearer tok"}); resp.StatusCode != 200 {
		t.Errorf("GET /v1/cluster with a bearer token: %d, want 200", resp.StatusCode)
	}
	// The page itself holds no data: it is served, and asks for the token.
	resp, body := ts.get(t, c, "/ui/", nil)
	if resp.StatusCode != 200 || !strings.Contains(body, `data-auth-reads="true"`) {
		t.Errorf("GET /ui/: %d; want 200, the page telling its script that reads need a token", resp.StatusCode)
	}
	ts.post(t, c, "/ui/login", `{"token":"tok"}`, nil)
	if resp, _ := ts.get(t, c, "/v1/cluster", nil); resp.StatusCode != 200 {
		t.Errorf("GET /v1/cluster with the session cookie: %d, want 200", resp.StatusCode)
	}
}

func TestNoAuth(t *testing.T) {
	ts := startServer(t, Config{}, cardsInput())
	c := ts.client(t)
	_, body := ts.get(t, c, "/ui/session", nil)
	sess := sessionOf(t, body)
	if sess.Auth || sess.CSRF == "" {
		t.Fatalf("session without authentication = %+v; want no auth and a CSRF token", sess)
	}
	if resp, _ := ts.post(t, c, "/ui/scale/hello", `{"replicas":5}`, nil); resp.StatusCode != 403 {
		t.Errorf("scale without CSRF token, no auth: %d, want 403 (other sites still may not)", resp.StatusCode)
	}
	resp, _ := ts.post(t, c, "/ui/scale/hello", `{"replicas":5}`, map[string]string{CSRFHeader: sess.CSRF})
	req, fwd, _ := ts.api.last()
	if resp.StatusCode != 200 || req == nil || req.Header.Get("Authorization") != "" || fwd != `{"replicas":5}` {
		t.Errorf("scale without auth: %d; want 200, passed on with no token", resp.StatusCode)
	}
}

func TestPageEscapesAndHeaders(t *testing.T) {
	ts := startServer(t, Config{Version: `<script>alert(1)</script>`}, cardsInput())
	c := ts.client(t)
	resp, body := ts.get(t, c, "/ui/", nil)
	if strings.Contains(body, "<script>alert") || !strings.Contains(body, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Errorf("the version is not escaped in the page:\n%s", body)
	}
	h := resp.Header
	for k, want := range map[string]string{"Content-Security-Policy": "default-src 'none'", "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY"} {
		if !strings.Contains(h.Get(k), want) {
			t.Errorf("%s: %q, want %q", k, h.Get(k), want)
		}
	}
	resp, js := ts.get(t, c, "/ui/app.js", nil)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/javascript") || len(js) < 1000 {
		t.Errorf("GET /ui/app.js: %d %s, %d bytes", resp.StatusCode, resp.Header.Get("Content-Type"), len(js))
	}
	if resp, _ := ts.get(t, c, "/ui/app.js", map[string]string{"If-None-Match": resp.Header.Get("ETag")}); resp.StatusCode != 304 {
		t.Errorf("GET /ui/app.js again with its ETag: %d, want 304", resp.StatusCode)
	}
	if resp, _ := ts.get(t, c, "/ui", nil); resp.Request.URL.Path != "/ui/" {
		t.Errorf("GET /ui ended at %s, want /ui/", resp.Request.URL.Path)
	}
}

// readEvent reads one server-sent event: its name and data.
func readEvent(t *testing.T, r *bufio.Reader) (string, string) {
	t.Helper()
	var name, data string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("read event stream: %v", err)
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "" && name != "":
			return name, data
		case strings.HasPrefix(line, "event: "):
			name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = strings.TrimPrefix(line, "data: ")
		}
	}
}

func TestSnapshotAndStream(t *testing.T) {
	in := cardsInput()
	ts := startServer(t, Config{}, in)
	c := ts.client(t)
	resp0, body := ts.get(t, c, "/v1/cluster", nil)
	if !resp0.Uncompressed {
		t.Error("GET /v1/cluster was not gzipped for a client that takes gzip")
	}
	var snap Snapshot
	if err := json.Unmarshal([]byte(body), &snap); err != nil {
		t.Fatal(err)
	}
	if snap.Version == 0 || len(snap.Nodes) != 2 || snap.Summary.Running != 4 {
		t.Fatalf("snapshot version %d, %d nodes, %d running", snap.Version, len(snap.Nodes), snap.Summary.Running)
	}

	req, _ := http.NewRequest(http.MethodGet, ts.http.URL+"/v1/cluster/events", nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" || !resp.Uncompressed {
		t.Fatalf("events Content-Type %q, gzipped %v; want text/event-stream, gzipped", ct, resp.Uncompressed)
	}
	r := bufio.NewReader(resp.Body)
	name, data := readEvent(t, r)
	if name != "snapshot" || !strings.Contains(data, `"version":`+itoa(snap.Version)) {
		t.Fatalf("first event %s %.80s; want the current snapshot", name, data)
	}
	name, data = readEvent(t, r)
	if name != "ping" || !strings.Contains(data, `"version":`+itoa(snap.Version)) {
		t.Fatalf("then %s %.80s; want a ping naming the version", name, data)
	}

	// A change: a new task. The stream carries the new snapshot and the event.
	in.Tasks = append(in.Tasks, SwarmTask{ID: "new", ServiceID: "s1", NodeID: "n1", Slot: 7, DesiredState: "running", State: "running", Since: in.Now})
	ts.src.set(in)
	var got Snapshot
	for got.Version <= snap.Version {
		name, data = readEvent(t, r)
		if name == "snapshot" {
			json.Unmarshal([]byte(data), &got)
		}
	}
	if got.Summary.Running != 5 {
		t.Errorf("new snapshot has %d running, want 5", got.Summary.Running)
	}
	for name != "events" {
		name, data = readEvent(t, r)
	}
	var evs []Event
	json.Unmarshal([]byte(data), &evs)
	if len(evs) != 1 || evs[0].Kind != EventTask || evs[0].Seq == 0 || !strings.Contains(evs[0].Message, "hello.7 running on node1") {
		t.Errorf("events %+v; want hello.7 started", evs)
	}
	// Nothing changed: no new snapshot, however many refreshes.
	before, refreshes := ts.currentVersion(), ts.refreshes.Load()
	for ts.refreshes.Load() < refreshes+2 {
		signal(ts.kick)
		time.Sleep(time.Millisecond)
	}
	if v := ts.currentVersion(); v != before {
		t.Errorf("version moved from %d to %d with nothing changed", before, v)
	}
}

func itoa(v uint64) string { return strconv.FormatUint(v, 10) }

func TestSourceFailureKeepsLastAnswer(t *testing.T) {
	ts := startServer(t, Config{}, cardsInput())
	ts.src.fail("docker", errors.New("Cannot connect to the Docker daemon"))
	signal(ts.kick)
	var snap Snapshot
	waitFor(t, func() bool {
		json.Unmarshal(ts.Snapshot(), &snap)
		return len(snap.Sources) == 1
	}, "the docker failure in the snapshot")
	if snap.Sources[0].Source != "docker" || !strings.Contains(snap.Sources[0].Error, "Cannot connect") {
		t.Errorf("sources = %+v", snap.Sources)
	}
	if len(snap.Nodes) != 2 || snap.Summary.Running != 4 {
		t.Errorf("with docker failing, %d nodes and %d running; want the last answer kept (2, 4)", len(snap.Nodes), snap.Summary.Running)
	}
	evs := ts.Events()
	if len(evs) == 0 || evs[len(evs)-1].Kind != EventSource {
		t.Errorf("events %+v; want the source lost", evs)
	}
}

func TestSamplesFollowReplicas(t *testing.T) {
	in := cardsInput()
	ts := startServer(t, Config{}, in)
	in.Services[0].Replicas = 4
	in.Now = in.Now.Add(time.Second)
	ts.src.set(in)
	var snap Snapshot
	waitFor(t, func() bool {
		signal(ts.kick) // no page follows: sources' signals wait for the idle period
		json.Unmarshal(ts.Snapshot(), &snap)
		return snap.Services[0].Desired == 4
	}, "the new replica count")
	pts := snap.Services[0].Replicas
	if len(pts) != 2 || pts[0].Desired != 3 || pts[1].Desired != 4 || pts[1].Running != 3 {
		t.Errorf("replica points %+v; want 3 then 4 desired, 3 running", pts)
	}
}

// TestIdleDashboard: with no page following, the sources' signals wait for
// the idle period; a read of an old snapshot rebuilds it first, and a page
// that connects gets a fresh one at once.
func TestIdleDashboard(t *testing.T) {
	clock := struct {
		sync.Mutex
		now time.Time
	}{now: t0}
	now := func() time.Time { clock.Lock(); defer clock.Unlock(); return clock.now }
	in := cardsInput()
	ts := startServer(t, Config{Refresh: time.Minute, IdleRefresh: time.Hour, Now: now}, in)
	c := ts.client(t)
	in.Services[0].Replicas = 7
	ts.src.set(in)

	// A snapshot younger than Refresh is served as it is…
	_, body := ts.get(t, c, "/v1/cluster", nil)
	var snap Snapshot
	json.Unmarshal([]byte(body), &snap)
	if snap.Services[0].Desired != 3 {
		t.Fatalf("desired %d: a fresh snapshot was rebuilt on a read", snap.Services[0].Desired)
	}
	// …an older one is rebuilt before it is served.
	clock.Lock()
	clock.now = clock.now.Add(2 * time.Minute)
	clock.Unlock()
	_, body = ts.get(t, c, "/v1/cluster", nil)
	json.Unmarshal([]byte(body), &snap)
	if snap.Services[0].Desired != 7 {
		t.Errorf("desired %d after reading a stale snapshot, want the sources' 7", snap.Services[0].Desired)
	}

	// A page connecting after a quiet time (longer than Refresh) gets
	// what changed at once.
	in.Services[0].Replicas = 9
	ts.src.set(in)
	clock.Lock()
	clock.now = clock.now.Add(2 * time.Minute)
	clock.Unlock()
	req, _ := http.NewRequest(http.MethodGet, ts.http.URL+"/v1/cluster/events", nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	for {
		name, data := readEvent(t, r)
		if name == "snapshot" {
			json.Unmarshal([]byte(data), &snap)
			if snap.Services[0].Desired == 9 {
				break
			}
		}
	}
}

// TestStreamOutlivesWriteTimeout: the server control runs bounds every
// answer's writing; the event stream lifts that bound for itself.
func TestStreamOutlivesWriteTimeout(t *testing.T) {
	ts := startServer(t, Config{KeepAlive: 20 * time.Millisecond}, cardsInput())
	hs := httptest.NewUnstartedServer(ts.Handler())
	hs.Config.WriteTimeout = 100 * time.Millisecond
	hs.Start()
	defer hs.Close()
	resp, err := http.Get(hs.URL + "/v1/cluster/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	// Pings come from a ticker, at most one a KeepAlive (20 ms) and one
	// held over: 15 of them span at least 280 ms of the server's time,
	// well past the write timeout, which would cut the connection and
	// fail the read. Counting pings within 500 ms of this process's time
	// failed whenever a loaded machine held it up for part of them.
	for pings := 0; pings < 15; {
		if name, _ := readEvent(t, r); name == "ping" {
			pings++
		}
	}
}

// TestLoginAndStreamLimits: LoginLimit wraps the login, StreamLimit the
// event stream, and nothing else (control passes the autoscaler API's rate
// limit and stream cap).
func TestLoginAndStreamLimits(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{}
	refuse := func(name string) func(http.Handler) http.Handler {
		return func(http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				seen[name]++
				mu.Unlock()
				w.WriteHeader(http.StatusTooManyRequests)
			})
		}
	}
	ts := startServer(t, Config{Tokens: tokens("tok"), OpenReads: true, LoginLimit: refuse("login"), StreamLimit: refuse("stream")}, cardsInput())
	for _, c := range []struct {
		method, path, body string
		want               int
	}{
		{"POST", "/ui/login", `{"token":"tok"}`, http.StatusTooManyRequests},
		{"GET", "/v1/cluster/events", "", http.StatusTooManyRequests},
		{"GET", "/v1/cluster", "", http.StatusOK},
		{"GET", "/ui/session", "", http.StatusOK},
	} {
		req, _ := http.NewRequest(c.method, ts.http.URL+c.path, strings.NewReader(c.body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s %s: %d, want %d", c.method, c.path, resp.StatusCode, c.want)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if seen["login"] != 1 || seen["stream"] != 1 {
		t.Errorf("limits called %v, want once each", seen)
	}
}

// TestReadLimit: ReadLimit wraps the reads of the cluster (session,
// snapshot, events) and nothing else: not the page and its assets, nor
// the POSTs (control passes the autoscaler API's read rate limit).
func TestReadLimit(t *testing.T) {
	var seen atomic.Int32
	readLimit := func(http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			seen.Add(1)
			w.WriteHeader(http.StatusTooManyRequests)
		})
	}
	ts := startServer(t, Config{Tokens: tokens("tok"), ReadLimit: readLimit}, cardsInput())
	c := ts.client(t)
	for _, path := range []string{"/ui/session", "/v1/cluster", "/v1/cluster/events"} {
		if resp, _ := ts.get(t, c, path, nil); resp.StatusCode != http.StatusTooManyRequests {
			t.Errorf("GET %s: %d, want 429", path, resp.StatusCode)
		}
	}
	for _, path := range []string{"/ui/", "/ui/app.js", "/ui/app.css"} {
		if resp, _ := ts.get(t, c, path, nil); resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %d, want 200", path, resp.StatusCode)
		}
	}
	if resp, body := ts.post(t, c, "/ui/login", `{"token":"tok"}`, nil); resp.StatusCode != http.StatusOK {
		t.Errorf("POST /ui/login: %d %s, want 200", resp.StatusCode, body)
	}
	if n := seen.Load(); n != 3 {
		t.Errorf("read limit called %d times, want 3", n)
	}
}

// TestGuessLimit: every route that checks a token reports a wrong one to
// TokenFailed (a missing one is no guess) and is wrapped in GuessLimit, so
// that the page's cookie and bearer checks cannot guess tokens faster than
// the API's (control passes the API's limit on failed checks).
func TestGuessLimit(t *testing.T) {
	var failed atomic.Int32
	guessLimit := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if failed.Load() >= 3 {
				w.WriteHeader(http.StatusTooManyRequests)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	ts := startServer(t, Config{Tokens: tokens("tok"), GuessLimit: guessLimit,
		TokenFailed: func(*http.Request) { failed.Add(1) }}, cardsInput())
	c := ts.client(t)
	for range 3 {
		ts.get(t, c, "/v1/cluster", nil)
		ts.get(t, c, "/ui/session", nil)
	}
	if n := failed.Load(); n != 0 {
		t.Fatalf("requests without a token counted as %d failed checks, want 0", n)
	}
	// A session of a wrong token: a cookie of this process that holds one.
	badCookie := map[string]string{"Cookie": SessionCookie + "=" + ts.sealSession("guess", ts.cfg.Now().Add(sessionTTL))}
	if resp, body := ts.get(t, c, "/ui/session", badCookie); resp.StatusCode != 200 || sessionOf(t, body).LoggedIn {
		t.Errorf("session of a wrong cookie: %d %s, want 200 not logged in", resp.StatusCode, body)
	}
	if resp, _ := ts.get(t, c, "/v1/cluster", map[string]string{"Authorization": "Bearer guess"}); resp.StatusCode != 401 {
		t.Errorf("snapshot with a wrong bearer token: %d, want 401", resp.StatusCode)
	}
	if resp, _ := ts.get(t, c, "/v1/cluster/events", map[string]string{"Authorization": "Bearer guess"}); resp.StatusCode != 401 {
		t.Errorf("events with a wrong bearer token: %d, want 401", resp.StatusCode)
	}
	if n := failed.Load(); n != 3 {
		t.Fatalf("3 wrong tokens reported as %d failed checks", n)
	}
	for _, path := range []string{"/ui/session", "/v1/cluster", "/v1/cluster/events"} {
		if resp, _ := ts.get(t, c, path, map[string]string{"Authorization": "Bearer tok"}); resp.StatusCode != http.StatusTooManyRequests {
			t.Errorf("GET %s past the failed checks: %d, want 429", path, resp.StatusCode)
		}
	}
	if resp, _ := ts.post(t, c, "/ui/login", `{"token":"tok"}`, nil); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("login past the failed checks: %d, want 429", resp.StatusCode)
	}
}

// TestAgentsJudgedByTheDashboardsClock: node1's agent reports every 30 s
// with its clock an hour behind, node2's last report is stamped a year
// ahead and never changes. By the stamps node1 reads as stale while it
// reports and node2 as up for a year; by when the dashboard saw the reports
// change, node1 is up throughout and node2 turns stale once it has not
// changed for agentStaleAfter.
func TestAgentsJudgedByTheDashboardsClock(t *testing.T) {
	var clock atomic.Int64
	clock.Store(t0.UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()).UTC() }
	in := cardsInput()
	agents := func(at time.Time) []AgentInput {
		return []AgentInput{
			{Node: "node1", FactsAt: at.Add(-time.Hour)},
			{Node: "node2", FactsAt: t0.Add(365 * 24 * time.Hour)},
		}
	}
	in.Agents = agents(t0)
	ts := startServer(t, Config{Now: now}, in)
	step := 30 * time.Second
	for i := 1; i <= 10; i++ {
		at := t0.Add(time.Duration(i) * step)
		clock.Store(at.UnixNano())
		in.Now, in.Agents = at, agents(at)
		ts.src.set(in)
		ts.refreshedSince(t, fmt.Sprintf("a refresh at %s", at)) // after the clock and the reports moved
		var snap Snapshot
		json.Unmarshal(ts.Snapshot(), &snap)
		state := map[string]string{}
		for _, n := range snap.Nodes {
			state[n.Name] = n.Agent.State
		}
		if state["node1"] != AgentUp {
			t.Errorf("after %s: node1's agent, reporting with its clock behind, is %s", at.Sub(t0), state["node1"])
		}
		// node2 was first seen at t0 (its stamp is ahead: counted from then).
		want := AgentUp
		if at.Sub(t0) > agentStaleAfter {
			want = AgentStale
		}
		if state["node2"] != want {
			t.Errorf("after %s: node2's agent, silent since t0 with its stamp a year ahead, is %s, want %s", at.Sub(t0), state["node2"], want)
		}
	}
}

// TestSessionCookieHoldsNoToken: the session cookie goes wherever the
// browser sends it — to every port of the host, into proxies' and
// browsers' stores — and outlives its Max-Age wherever it is copied. It
// must not be the token (it was the token in base64, valid as long as the
// token), and the server ends a session after sessionTTL whatever the
// client keeps.
func TestSessionCookieHoldsNoToken(t *testing.T) {
	const secret = "s3cret token"
	in := cardsInput()
	var now atomic.Int64
	now.Store(in.Now.UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	ts := startServer(t, Config{Tokens: tokens(secret), Now: clock}, in)
	c := ts.client(t)
	resp, body := ts.post(t, c, "/ui/login", `{"token":"`+secret+`"}`, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("login: %d %s", resp.StatusCode, body)
	}
	csrf := sessionOf(t, body).CSRF
	var value string
	for _, ck := range resp.Cookies() {
		if ck.Name == SessionCookie {
			value = ck.Value
		}
	}
	if value == "" {
		t.Fatal("login set no session cookie")
	}
	for _, enc := range []*base64.Encoding{base64.RawURLEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.StdEncoding} {
		if b, err := enc.DecodeString(value); err == nil && strings.Contains(string(b), secret) {
			t.Fatalf("the session cookie %q is the token %q in base64", value, b)
		}
	}
	cookie := map[string]string{"Cookie": SessionCookie + "=" + value}
	if _, body := ts.get(t, http.DefaultClient, "/ui/session", cookie); !sessionOf(t, body).LoggedIn {
		t.Fatalf("the session cookie alone is not a session: %s", body)
	}

	now.Add(int64(sessionTTL + time.Minute))
	if _, body := ts.get(t, http.DefaultClient, "/ui/session", cookie); sessionOf(t, body).LoggedIn {
		t.Errorf("a session cookie %s past its time still logs in: %s", sessionTTL+time.Minute, body)
	}
	if resp, _ := ts.post(t, http.DefaultClient, "/ui/scale/hello", `{"direction":"up"}`, map[string]string{"Cookie": SessionCookie + "=" + value, CSRFHeader: csrf}); resp.StatusCode != 401 {
		t.Errorf("scale with a session cookie past its time: %d, want 401", resp.StatusCode)
	}
}

// TestStreamEndsWithItsToken: with --auth-reads, the event stream carries
// every snapshot for as long as it is open; a token revoked, or a session
// past its end, must end the streams it opened, as it refuses their next
// request, not leave them reading the cluster until the page closes.
func TestStreamEndsWithItsToken(t *testing.T) {
	in := cardsInput()
	var now atomic.Int64
	now.Store(in.Now.UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	ts := startServer(t, Config{Tokens: tokens("bearer", "cookie"), Now: clock}, in)
	c := ts.client(t)
	if resp, body := ts.post(t, c, "/ui/login", `{"token":"cookie"}`, nil); resp.StatusCode != 200 {
		t.Fatalf("login: %d %s", resp.StatusCode, body)
	}
	open := func(c *http.Client, hdr map[string]string) <-chan error {
		req, _ := http.NewRequest(http.MethodGet, ts.http.URL+"/v1/cluster/events", nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		if resp.StatusCode != 200 {
			t.Fatalf("GET /v1/cluster/events: %d", resp.StatusCode)
		}
		r := bufio.NewReader(resp.Body)
		if name, _ := readEvent(t, r); name != "snapshot" {
			t.Fatalf("first event %s, want the snapshot", name)
		}
		ended := make(chan error, 1)
		go func() {
			_, err := io.Copy(io.Discard, r)
			ended <- err
		}()
		return ended
	}
	wantEnd := func(ended <-chan error, what string) {
		t.Helper()
		select {
		case <-ended:
		case <-time.After(5 * time.Second):
			t.Errorf("the event stream still open 5s after %s", what)
		}
	}

	byBearer := open(http.DefaultClient, map[string]string{"Authorization": "Bearer bearer"})
	ts.cfg.Tokens.(*tokenSet).revoke("bearer")
	wantEnd(byBearer, "its bearer token was revoked")

	bySession := open(c, nil)
	now.Add(int64(sessionTTL + time.Minute))
	wantEnd(bySession, "its session ended")
}

// TestReadsOfAnUnchangedClusterRebuildOnce: a read of a snapshot older than
// Refresh rebuilds it first; a rebuild that finds nothing changed keeps
// the snapshot, and its time, as they were. That time must not count as
// the snapshot's age, or every read of a quiet cluster — a script polling
// /v1/cluster, open to anyone without --auth-reads — reads every source
// again and waits for it.
func TestReadsOfAnUnchangedClusterRebuildOnce(t *testing.T) {
	in := cardsInput()
	var now atomic.Int64
	now.Store(in.Now.UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	ts := startServer(t, Config{Refresh: time.Minute, IdleRefresh: time.Hour, Now: clock}, in)
	c := ts.client(t)
	read := func() Snapshot {
		t.Helper()
		resp, body := ts.get(t, c, "/v1/cluster", nil)
		var snap Snapshot
		if err := json.Unmarshal([]byte(body), &snap); resp.StatusCode != 200 || err != nil {
			t.Fatalf("GET /v1/cluster: %d %s", resp.StatusCode, body)
		}
		return snap
	}
	// Past every grace period of the cards: what is built from here on
	// no longer changes with the time.
	now.Add(int64(time.Hour))
	settled := read()
	now.Add(int64(time.Hour))
	before := ts.refreshes.Load()
	for range 3 {
		if snap := read(); snap.Version != settled.Version {
			t.Fatalf("snapshot version %d, then %d: the cluster did not settle", settled.Version, snap.Version)
		}
	}
	if n := ts.refreshes.Load() - before; n != 1 {
		t.Errorf("3 reads of an unchanged cluster at one time made %d rebuilds, want 1 (the snapshot was an hour old, then just rebuilt)", n)
	}
}

// TestStreamIsNotStored: the event stream carries every snapshot, as
// GET /v1/cluster does, behind the same token with --auth-reads; no cache
// (the browser's, a proxy's) may keep it, as none may keep the snapshot.
func TestStreamIsNotStored(t *testing.T) {
	ts := startServer(t, Config{Tokens: tokens("tok")}, cardsInput())
	req, _ := http.NewRequest(http.MethodGet, ts.http.URL+"/v1/cluster/events", nil)
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	snap, _ := ts.get(t, http.DefaultClient, "/v1/cluster", map[string]string{"Authorization": "Bearer tok"})
	for what, r := range map[string]*http.Response{"GET /v1/cluster": snap, "GET /v1/cluster/events": resp} {
		if r.StatusCode != 200 || !strings.Contains(r.Header.Get("Cache-Control"), "no-store") {
			t.Errorf("%s: %d, Cache-Control %q; want 200, no-store", what, r.StatusCode, r.Header.Get("Cache-Control"))
		}
	}
}

// TestLoginTakesTheTokenAsTheAPIDoes: tokens are read trimmed (a line of
// the token file, of the Consul key) and the API trims a bearer token; a
// token pasted into the login with the blank a terminal's selection adds
// is the same token, not a wrong one counted as a guess.
func TestLoginTakesTheTokenAsTheAPIDoes(t *testing.T) {
	var failed atomic.Int32
	ts := startServer(t, Config{Tokens: tokens("tok"), TokenFailed: func(*http.Request) { failed.Add(1) }}, cardsInput())
	if resp, _ := ts.get(t, http.DefaultClient, "/v1/cluster", map[string]string{"Authorization": "Bearer tok "}); resp.StatusCode != 200 {
		t.Fatalf("GET /v1/cluster with a bearer token and a blank: %d, want 200", resp.StatusCode)
	}
	c := ts.client(t)
	resp, body := ts.post(t, c, "/ui/login", `{"token":" tok \t"}`, nil)
	if resp.StatusCode != 200 || !sessionOf(t, body).LoggedIn || failed.Load() != 0 {
		t.Fatalf("login with the token between blanks: %d %s, %d failed checks; want 200, logged in, none", resp.StatusCode, body, failed.Load())
	}
	if resp, _ := ts.get(t, c, "/v1/cluster", nil); resp.StatusCode != 200 {
		t.Errorf("GET /v1/cluster with the session: %d, want 200", resp.StatusCode)
	}
}

// TestBadBodiesNamed: the page's bodies are a token or a direction; one
// over maxBody is answered 413 naming the bound (as the API answers its
// own), and one that is not JSON 400 saying where it is not.
func TestBadBodiesNamed(t *testing.T) {
	ts := startServer(t, Config{}, cardsInput())
	c := ts.client(t)
	_, body := ts.get(t, c, "/ui/session", nil)
	csrf := map[string]string{CSRFHeader: sessionOf(t, body).CSRF}
	huge := `{"direction":"up","pad":"` + strings.Repeat("x", maxBody) + `"}`
	for _, tc := range []struct {
		path, body string
		code       int
		want       string
	}{
		{"/ui/scale/hello", huge, http.StatusRequestEntityTooLarge, "4096 bytes"},
		{"/ui/login", `{"token":"` + strings.Repeat("x", maxBody) + `"}`, http.StatusRequestEntityTooLarge, "4096 bytes"},
		{"/ui/scale/hello", `{"direction":up}`, http.StatusBadRequest, "invalid character 'u'"},
	} {
		resp, got := ts.post(t, c, tc.path, tc.body, csrf)
		if resp.StatusCode != tc.code || !strings.Contains(got, tc.want) {
			t.Errorf("POST %s with %.30q…: %d %s; want %d naming %q", tc.path, tc.body, resp.StatusCode, got, tc.code, tc.want)
		}
	}
	if _, _, n := ts.api.last(); n != 0 {
		t.Errorf("%d bad bodies reached the scale API", n)
	}
}

// TestLoginBodyNamed: a login body the page never sends — a misspelt
// field ({"tokn": …}), no token, or one that is all blanks — was read as
// an empty token and answered 401 "invalid token", as a wrong token is,
// which sent its sender looking for another token. It is now 400 naming
// what is wrong, as the API answers a body it cannot use.
func TestLoginBodyNamed(t *testing.T) {
	ts := startServer(t, Config{Tokens: tokens("tok")}, cardsInput())
	c := ts.client(t)
	for _, tc := range []struct{ body, want string }{
		{`{"tokn":"tok"}`, `unknown field \"tokn\"`},
		{`{}`, "no token"},
		{`{"token":" \t"}`, "no token"},
	} {
		resp, got := ts.post(t, c, "/ui/login", tc.body, nil)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(got, tc.want) {
			t.Errorf("login with %s: %d %s; want 400 naming %s", tc.body, resp.StatusCode, got, tc.want)
		}
	}
	if resp, got := ts.post(t, c, "/ui/login", `{"token":"tok"}`, nil); resp.StatusCode != 200 {
		t.Errorf("login with the token: %d %s, want 200", resp.StatusCode, got)
	}
}

// secureSession reports whether c is the session cookie, Secure.
func secureSession(c *http.Cookie) bool {
	return (c.Name == SessionCookie || c.Name == SecureSessionCookie) && c.Secure
}

// TestSessionCookieSecure: the session cookie was marked Secure only when
// control itself served TLS, so behind a proxy ending TLS a browser could
// send it over plain HTTP later. It is Secure now whenever Config.
// SecureCookies says so (control --secure-cookies), and when the page's
// own origin (the browser's Origin header) is https; X-Forwarded-Proto,
// which any client sets, is not taken for it.
func TestSessionCookieSecure(t *testing.T) {
	for _, tt := range []struct {
		name   string
		secure bool
		hdr    func(ts *testServer) map[string]string
		want   bool
	}{
		{"plain HTTP", false, func(*testServer) map[string]string { return nil }, false},
		{"X-Forwarded-Proto alone", false, func(*testServer) map[string]string { return map[string]string{"X-Forwarded-Proto": "https"} }, false},
		{"a page of an https origin", false, func(ts *testServer) map[string]string {
			return map[string]string{"Origin": "https://" + strings.TrimPrefix(ts.http.URL, "http://")}
		}, true},
		{"SecureCookies", true, func(*testServer) map[string]string { return nil }, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, Config{Tokens: tokens("tok"), SecureCookies: tt.secure}, cardsInput())
			c := ts.client(t)
			resp, body := ts.post(t, c, "/ui/login", `{"token":"tok"}`, tt.hdr(ts))
			if resp.StatusCode != 200 {
				t.Fatalf("login: %d %s", resp.StatusCode, body)
			}
			if got := slices.ContainsFunc(resp.Cookies(), secureSession); got != tt.want {
				t.Errorf("login's session cookie Secure = %v, want %v (Set-Cookie %q)", got, tt.want, resp.Header.Get("Set-Cookie"))
			}
			csrf := sessionOf(t, body).CSRF
			hdr := map[string]string{CSRFHeader: csrf}
			maps.Copy(hdr, tt.hdr(ts))
			// The jar keeps a Secure cookie for https: given back by hand.
			req, _ := http.NewRequest(http.MethodPost, ts.http.URL+"/ui/logout", strings.NewReader(`{}`))
			req.Header.Set("Content-Type", "application/json")
			for k, v := range hdr {
				req.Header.Set(k, v)
			}
			for _, ck := range resp.Cookies() {
				req.AddCookie(&http.Cookie{Name: ck.Name, Value: ck.Value})
			}
			out, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			out.Body.Close()
			if got := slices.ContainsFunc(out.Cookies(), secureSession); out.StatusCode != 200 || got != tt.want {
				t.Errorf("logout: %d, cookie Secure = %v, want 200 and %v", out.StatusCode, got, tt.want)
			}
		})
	}
}
