package scale

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/underlay/underlay/internal/testlog"
	"github.com/underlay/underlay/internal/testnet"
)

// TestBodyLimits: 64 KiB on every route but the webhook routes (4 MiB);
// beyond, 413 before anything is decided.
func TestBodyLimits(t *testing.T) {
	e := newAPIEnv(t, Config{}, svc("web", 1, "orbiter", "true", LabelMax, "1000"))
	pad := func(n int) string { return strings.Repeat(" ", n) }
	alerts := amBody(firing("f", "service", "web", "direction", "up"))
	tests := []struct {
		path, body string
		want       int
	}{
		{"/v1/underlay/services/web/scale", `{"direction":"up"}` + pad(64<<10), 413},
		{"/v1/underlay/services/web/scale", `{"direction":"up"}` + pad(60<<10), 200},
		{"/v1/underlay/alertmanager", alerts + pad(5<<20), 413},
		{"/v1/underlay/alertmanager", alerts + pad(1<<20), 200},
		{"/v1/orbiter/handle/autoswarm/web", `{"direction":true}` + pad(5<<20), 413},
		{"/v1/orbiter/handle/autoswarm/web", `{"direction":true}` + pad(1<<20), 200},
	}
	for _, tt := range tests {
		code, body := e.do(t, "POST", tt.path, testToken, tt.body)
		if code != tt.want {
			t.Errorf("%s, %d bytes: %d %.200s, want %d", tt.path, len(tt.body), code, body, tt.want)
		}
	}
	// Without a Content-Length (chunked), the limit holds while reading.
	req, _ := http.NewRequest("POST", e.srv.URL+"/v1/underlay/services/web/scale", io.MultiReader(strings.NewReader(`{"direction":"up"}`), strings.NewReader(pad(1<<20))))
	req.ContentLength = -1
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Errorf("chunked 1 MiB body: %d, want 413", resp.StatusCode)
	}
	if got := counterValue(t, e.api.metrics.refused.WithLabelValues("too_large")); got != 4 {
		t.Errorf("too_large refusals %v, want 4", got)
	}
}

// TestEventReadersCapped: past MaxEventReaders open streams, one more is
// answered 503; a closed stream frees its place.
func TestEventReadersCapped(t *testing.T) {
	e := newAPIEnvWith(t, Config{}, APIConfig{Limits: Limits{MaxEventReaders: 3}})
	var open []*http.Response
	for range 3 {
		resp, err := getAuthed(e.srv.URL + "/v1/underlay/events")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("reader: %v %v", resp, err)
		}
		open = append(open, resp)
	}
	resp, err := getAuthed(e.srv.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Errorf("fourth reader: %d, Retry-After %q; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	open[0].Body.Close()
	waitFor(t, func() bool { return e.api.readers.Load() == 2 })
	resp, err = getAuthed(e.srv.URL + "/events")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("reader after one left: %v %v", resp, err)
	}
	open = append(open[1:], resp)
	for _, r := range open {
		r.Body.Close()
	}
}

// TestRateLimited: a client past its burst on scaling routes gets 429 with
// Retry-After; another client does not; open reads are not limited by it.
func TestRateLimited(t *testing.T) {
	e := newAPIEnvWith(t, Config{}, APIConfig{OpenReads: true, Limits: Limits{RateLimit: 1, RateBurst: 5}}, svc("web", 1, "orbiter", "true", LabelMax, "1000"))
	codes := map[int]int{}
	var retry string
	for range 8 {
		req, _ := http.NewRequest("POST", e.srv.URL+"/v1/orbiter/handle/autoswarm/web/up", nil)
		req.Header.Set("Authorization", "Bearer wrong") // guessing tokens is limited too
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		codes[resp.StatusCode]++
		if resp.StatusCode == 429 {
			retry = resp.Header.Get("Retry-After")
		}
	}
	if codes[401] != 5 || codes[429] != 3 {
		t.Errorf("8 requests at once, burst 5: %v, want 5 × 401 and 3 × 429", codes)
	}
	if n, err := strconv.Atoi(retry); err != nil || n < 1 {
		t.Errorf("Retry-After %q, want whole seconds", retry)
	}
	for range 5 { // reads have a budget of their own (TestReadsRateLimited)
		if code, _ := e.do(t, "GET", "/v1/underlay/services", "", ""); code != 200 {
			t.Fatalf("a read was limited by the scaling requests' rate: %d", code)
		}
	}
	if got := e.swarm.replicas("web"); got != 1 {
		t.Errorf("web has %d replicas", got)
	}
	// Forged forwarded requests are limited too: the same client is past
	// its rate already.
	if code, _ := e.send(t, "POST", "/v1/orbiter/handle/autoswarm/web/up", "", PeerSignatureHeader, "sha256=00", PeerTimeHeader, "1"); code != 429 {
		t.Errorf("a forged peer request past the rate: %d, want 429", code)
	}
}

// TestReadsRateLimited: with OpenReads anyone may read, and reads were
// not rate-limited at all: one client could make the history and leader
// routes read Consul as fast as it could send. A client's reads are now
// held to the rate limit, in a bucket apart from its scaling requests
// (reading never uses up what a webhook sender may scale); health stays
// open for load balancers.
func TestReadsRateLimited(t *testing.T) {
	frozen := func() time.Time { return alertStart } // no refill meanwhile
	e := newAPIEnvWith(t, Config{Now: frozen}, APIConfig{OpenReads: true, History: &listHistory{}, Limits: Limits{RateLimit: 1, RateBurst: 5}},
		svc("web", 1, "orbiter", "true", LabelMax, "1000"))
	codes := map[int]int{}
	for range 8 {
		codes[getStatus(t, e.srv.URL+"/v1/underlay/services/web/history", "")]++
	}
	if codes[200] != 5 || codes[429] != 3 {
		t.Errorf("8 history reads at once, burst 5: %v, want 5 × 200 and 3 × 429", codes)
	}
	for _, path := range []string{"/v1/underlay/leader", "/v1/orbiter/autoscaler", "/v1/underlay/services", "/v1/underlay/events"} {
		if code := getStatus(t, e.srv.URL+path, ""); code != 429 {
			t.Errorf("GET %s from a client past its reads: %d, want 429", path, code)
		}
	}
	if code := getStatus(t, e.srv.URL+"/v1/orbiter/health", ""); code != 200 {
		t.Errorf("health from that client: %d, want 200", code)
	}
	if code, body := e.do(t, "POST", "/v1/orbiter/handle/autoswarm/web/up", testToken, ""); code != 200 {
		t.Errorf("a scaling request from a client past its reads: %d %s, want 200 (a budget of its own)", code, body)
	}
}

// TestTokenGuessesOnReads: reads wanting a token are not rate-limited but
// failed token checks are: past the burst of failures a client gets 429
// before its token is looked at (it could guess at network speed before);
// good reads never use up the budget.
func TestTokenGuessesOnReads(t *testing.T) {
	e := newAPIEnvWith(t, Config{}, APIConfig{Limits: Limits{RateLimit: 1, RateBurst: 5}}, svc("web", 1, "orbiter", "true"))
	for range 20 {
		if code := getStatus(t, e.srv.URL+"/v1/underlay/services", testToken); code != 200 {
			t.Fatalf("a read with the token: %d, want 200 (good reads are not limited)", code)
		}
	}
	codes := map[int]int{}
	for range 8 {
		codes[getStatus(t, e.srv.URL+"/v1/underlay/leader", "guess")]++
	}
	if codes[401] != 5 || codes[429] != 3 {
		t.Errorf("8 reads with a wrong token, burst 5: %v, want 5 × 401 and 3 × 429", codes)
	}
	if code := getStatus(t, e.srv.URL+"/v1/underlay/services", testToken); code != 429 {
		t.Errorf("the right token from a client past its failed checks: %d, want 429 (checking it would confirm a guess)", code)
	}
	if code := getStatus(t, e.srv.URL+"/v1/orbiter/health", ""); code != 200 {
		t.Errorf("health (no token) from that client: %d, want 200", code)
	}
}

// TestTokenGuessesWithoutRequestLimit: a negative RateLimit (--rate-limit
// 0) lifts the limit on requests, never the one on failed token checks:
// past the burst of failures a client gets 429 on scaling routes and reads
// alike, while good requests are not limited. Before, it lifted both, and
// tokens could be guessed at the speed of the network.
func TestTokenGuessesWithoutRequestLimit(t *testing.T) {
	frozen := func() time.Time { return alertStart } // no refill meanwhile
	for _, authReads := range []bool{false, true} {
		e := newAPIEnvWith(t, Config{Now: frozen}, APIConfig{OpenReads: !authReads, Limits: Limits{RateLimit: -1, RateBurst: 5}},
			svc("web", 1, "orbiter", "true", LabelMax, "1000"))
		for range 20 {
			if code, body := e.do(t, "POST", "/v1/underlay/services/web/scale", testToken, `{"direction":"up"}`); code != 200 {
				t.Fatalf("auth reads %v: a scaling request with the token: %d %s, want 200 (no request limit)", authReads, code, body)
			}
		}
		codes := map[int]int{}
		for range 8 {
			code, _ := e.do(t, "POST", "/v1/underlay/services/web/scale", "guess", `{"direction":"up"}`)
			codes[code]++
		}
		if codes[401] != 5 || codes[429] != 3 {
			t.Errorf("auth reads %v: 8 scaling requests with a wrong token, burst 5: %v, want 5 × 401 and 3 × 429", authReads, codes)
		}
		if code, _ := e.do(t, "POST", "/v1/underlay/services/web/scale", testToken, `{"direction":"up"}`); code != 429 {
			t.Errorf("auth reads %v: the right token from a client past its failed checks: %d, want 429", authReads, code)
		}
		if authReads {
			if code := getStatus(t, e.srv.URL+"/v1/underlay/services", "guess"); code != 429 {
				t.Errorf("a read with a wrong token from a client past its failed checks: %d, want 429", code)
			}
		}
	}
}

// TestAuthReads: by default, every GET route — the event stream
// included — wants the token; OpenReads opens them; health stays open for
// load balancers.
func TestAuthReads(t *testing.T) {
	hist := &listHistory{}
	for _, authReads := range []bool{false, true} {
		e := newAPIEnvWith(t, Config{}, APIConfig{OpenReads: !authReads, History: hist}, svc("web", 1, "orbiter", "true"))
		for _, path := range []string{"/v1/orbiter/autoscaler", "/autoscaler", "/v1/underlay/services", "/v1/underlay/services/web/history",
			"/v1/underlay/leader", "/v1/orbiter/events", "/events", "/v1/underlay/events"} {
			want := 200
			if authReads {
				want = 401
			}
			if code := getStatus(t, e.srv.URL+path, ""); code != want {
				t.Errorf("auth-reads %v: GET %s without a token: %d, want %d", authReads, path, code, want)
			}
			if code := getStatus(t, e.srv.URL+path, "wrong"); code != want {
				t.Errorf("auth-reads %v: GET %s with a wrong token: %d, want %d", authReads, path, code, want)
			}
			if code := getStatus(t, e.srv.URL+path, testToken); code != 200 {
				t.Errorf("auth-reads %v: GET %s with the token: %d, want 200", authReads, path, code)
			}
		}
		if code := getStatus(t, e.srv.URL+"/v1/orbiter/health", ""); code != 200 {
			t.Errorf("auth-reads %v: health without a token: %d, want 200", authReads, code)
		}
	}
}

// listHistory is a HistoryLister of fixed records.
type listHistory struct {
	recs []Record
	bad  []BadRecord
}

func (h listHistory) List(context.Context, string) ([]Record, []BadRecord, error) {
	return h.recs, h.bad, nil
}

// TestHistoryNamesUnreadableRecords: the history route answers the records
// it could read, and names those it could not with their fix.
func TestHistoryNamesUnreadableRecords(t *testing.T) {
	bad := BadRecord{Key: "underlay/scale/history/web/x", Error: "decode: unexpected end of JSON input", Fix: "consul kv delete underlay/scale/history/web/x"}
	hist := listHistory{recs: []Record{{Service: "web", Direction: Up, Decision: Decision{From: 1, To: 2}}}, bad: []BadRecord{bad}}
	e := newAPIEnvWith(t, Config{}, APIConfig{History: hist}, svc("web", 1, "orbiter", "true"))
	resp, err := getAuthed(e.srv.URL + "/v1/underlay/services/web/history")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ans HistoryAnswer
	if err := json.NewDecoder(resp.Body).Decode(&ans); err != nil || resp.StatusCode != 200 {
		t.Fatalf("history: %d, %v", resp.StatusCode, err)
	}
	if len(ans.Data) != 1 || len(ans.BadRecords) != 1 || ans.BadRecords[0] != bad {
		t.Errorf("history answer %+v, want the one record and the unreadable one named", ans)
	}
}

// getStatus GETs url with token (none when empty) and returns the status,
// reading at most the first line (event streams do not end).
func getStatus(t *testing.T, url, token string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	bufio.NewReader(resp.Body).ReadString('\n')
	return resp.StatusCode
}

// TestServerTimeouts: a client that sends its headers or its body slowly
// is cut off; an event stream outlives the read and write timeouts.
func TestServerTimeouts(t *testing.T) {
	e := newAPIEnv(t, Config{}, svc("web", 1, "orbiter", "true"))
	limits := Limits{ReadHeaderTimeout: 200 * time.Millisecond, ReadTimeout: 400 * time.Millisecond,
		WriteTimeout: 400 * time.Millisecond, IdleTimeout: 400 * time.Millisecond}
	api := NewAPI(APIConfig{Tokens: e.api.cfg.Tokens, KeepAlive: 100 * time.Millisecond}, e.ctrl, slog.New(slog.DiscardHandler))
	srv := NewServer(api.Handler(), limits, slog.New(slog.DiscardHandler))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	addr := ln.Addr().String()

	// cutOff dials, sends start, then the rest of the request one byte
	// at a time (a pause between bytes, so the request is slow), and says
	// whether the server closed the connection before the client had sent
	// the last byte. Sent whole, the request would be answered: a server
	// that waits for a slow client lets it finish.
	cutOff := func(start, rest string) bool {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		closed := make(chan struct{})
		go func() { io.Copy(io.Discard, c); close(closed) }()
		if _, err := io.WriteString(c, start); err != nil {
			t.Fatalf("send %q: %v", start, err)
		}
		for i := range len(rest) {
			select {
			case <-closed:
				return true
			case <-time.After(50 * time.Millisecond):
			}
			if _, err := c.Write([]byte{rest[i]}); err != nil {
				return true // the server closed it: the write was refused
			}
		}
		return false
	}
	const slow = 200 // bytes sent one at a time after the request's start
	if !cutOff("GET /v1/underlay/services HTTP/1.1\r\nHost: x\r\nX-Slow: ", strings.Repeat("a", slow-4)+"\r\n\r\n") {
		t.Errorf("a client sending its headers one byte at a time was let finish them (%d bytes after the start): the server kept the connection", slow)
	}
	body := fmt.Sprintf("POST /v1/underlay/services/web/scale HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n", testToken, slow)
	if !cutOff(body, `{"replicas":3}`+strings.Repeat(" ", slow-len(`{"replicas":3}`))) {
		t.Errorf("a client sending its body one byte at a time was let finish it (%d bytes): the server kept the connection", slow)
	}
	if got := e.swarm.replicas("web"); got != 1 {
		t.Errorf("a slow body scaled: %d replicas", got)
	}
	// Oversized headers: 431.
	req, _ := http.NewRequest("GET", "http://"+addr+"/v1/underlay/services", nil)
	req.Header.Set("X-Big", strings.Repeat("a", DefaultMaxHeaderBytes+8192))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("headers over the limit: %d, want 431", resp.StatusCode)
	}

	// The event stream lives on past both timeouts: keep-alives keep
	// coming. The server writes its nth keep-alive no sooner than n
	// periods after the stream opened, and a write past a deadline left
	// in place fails; so reading keepAlives of them shows the stream was
	// still written to at twice the timeouts, however late this side
	// reads what the server wrote before it closed.
	const keepAlives = 8 // 800ms of keep-alives: twice the 400ms timeouts
	resp, err = getAuthed("http://" + addr + "/v1/underlay/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for seen := 0; seen < keepAlives; {
		if !sc.Scan() {
			t.Fatalf("event stream ended after %d keep-alives, want %d (%s apart): %v", seen, keepAlives, api.cfg.KeepAlive, sc.Err())
		}
		if sc.Text() == ": keep-alive" {
			seen++
		}
	}
}

// TestLimitStreamsSharesTheCap: a stream served beside the API through
// LimitStreams (the dashboard's) counts among MaxEventReaders with the
// API's own.
func TestLimitStreamsSharesTheCap(t *testing.T) {
	e := newAPIEnvWith(t, Config{}, APIConfig{Limits: Limits{MaxEventReaders: 1}})
	held := make(chan struct{})
	t.Cleanup(func() { close(held) })
	beside := httptest.NewServer(e.api.LimitStreams(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		select {
		case <-held:
		case <-r.Context().Done():
		}
	})))
	t.Cleanup(beside.Close)
	resp, err := http.Get(beside.URL)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("the stream beside the API: %v %v", resp, err)
	}
	api, err := getAuthed(e.srv.URL + "/v1/underlay/events")
	if err != nil {
		t.Fatal(err)
	}
	api.Body.Close()
	if api.StatusCode != 503 {
		t.Errorf("the API's stream while the one beside holds the only place: %d, want 503", api.StatusCode)
	}
	resp.Body.Close()
	waitFor(t, func() bool { return e.api.readers.Load() == 0 })
	second, err := http.Get(beside.URL)
	if err != nil || second.StatusCode != 200 {
		t.Fatalf("after the first left: %v %v", second, err)
	}
	second.Body.Close()
}

// revocable is a token set whose tokens can be revoked while in use.
type revocable struct{ revoked atomic.Bool }

func (r *revocable) Valid(token string) bool { return token == testToken && !r.revoked.Load() }

// TestEventStreamEndsWithItsToken: with --auth-reads, an open decision
// stream ends once its token is revoked. Before, the token was checked
// when the stream opened only: a revoked reader went on reading every
// decision for as long as it kept the connection.
func TestEventStreamEndsWithItsToken(t *testing.T) {
	tokens := &revocable{}
	e := newAPIEnvWith(t, Config{}, APIConfig{Tokens: tokens})
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/v1/underlay/events", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /v1/underlay/events: %d", resp.StatusCode)
	}
	ended := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, resp.Body)
		ended <- err
	}()
	tokens.revoked.Store(true)
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the decision stream still open 5s after its token was revoked")
	}
}

// TestEventStreamsPerClient: one client may hold only so many event
// streams (8 by default), fewer than the instance serves (64), so that it
// cannot lock every other client out of the events; one more is answered
// 429 naming the client, while another client still gets one. Before, one
// client could take every stream up to the global cap.
func TestEventStreamsPerClient(t *testing.T) {
	e := newAPIEnvWith(t, Config{}, APIConfig{})
	entered := make(chan struct{})
	h := e.api.LimitStreams(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		entered <- struct{}{}
		<-r.Context().Done()
	}))
	type stream struct {
		cancel context.CancelFunc
		done   chan struct{}
	}
	// open opens a stream from remote: the stream when it was let in, else
	// the answer.
	open := func(remote string) (*stream, *httptest.ResponseRecorder) {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		req := httptest.NewRequestWithContext(ctx, "GET", "/v1/cluster/events", nil)
		req.RemoteAddr = remote
		rec := httptest.NewRecorder()
		s := &stream{cancel: cancel, done: make(chan struct{})}
		go func() { h.ServeHTTP(rec, req); close(s.done) }()
		select {
		case <-entered:
			return s, nil
		case <-s.done:
			return nil, rec
		case <-time.After(5 * time.Second):
			t.Fatalf("a stream from %s neither let in nor answered", remote)
			return nil, nil
		}
	}
	var held []*stream
	for i := range DefaultMaxEventReadersPerClient {
		s, rec := open(fmt.Sprintf("10.0.0.1:%d", 40000+i))
		if s == nil {
			t.Fatalf("stream %d of one client: %d %s, want it let in", i+1, rec.Code, rec.Body)
		}
		held = append(held, s)
	}
	s, rec := open("10.0.0.1:41000")
	if s != nil {
		held = append(held, s)
		t.Fatalf("stream %d of one client let in, with %d streams of the instance's %d free; want 429", len(held), DefaultMaxEventReaders-len(held)+1, DefaultMaxEventReaders)
	}
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" || !strings.Contains(rec.Body.String(), "10.0.0.1") {
		t.Errorf("stream %d of one client: %d %q, Retry-After %q; want 429 naming the client, with Retry-After", len(held)+1, rec.Code, rec.Body, rec.Header().Get("Retry-After"))
	}
	if s, rec := open("10.0.0.2:40000"); s == nil {
		t.Errorf("another client's stream: %d %s, want it let in", rec.Code, rec.Body)
	}
	held[0].cancel()
	<-held[0].done
	if s, rec := open("10.0.0.1:41001"); s == nil {
		t.Errorf("the client's stream after one of its own ended: %d %s, want it let in", rec.Code, rec.Body)
	}
}

// TestServerLogsPanicsAsErrors: the API server's ErrorLog wrote every
// net/http message at debug level, so that scanners' failed TLS
// handshakes do not flood the log; a handler's panic, with its stack,
// went there too, hidden at the default level. It is now an error; a
// failed handshake stays at debug (httpserve.ErrorLog).
func TestServerLogsPanicsAsErrors(t *testing.T) {
	recs := testlog.NewRecords(16)
	mux := http.NewServeMux()
	mux.HandleFunc("/panic", func(http.ResponseWriter, *http.Request) { panic("boom") })
	srv := NewServer(mux, Limits{}, slog.New(recs))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	if resp, err := http.Get("http://" + ln.Addr().String() + "/panic"); err == nil {
		resp.Body.Close()
		t.Fatalf("GET /panic: %s, want the connection closed", resp.Status)
	}
	r := recs.Await(t, 5*time.Second, func(r slog.Record) bool { return strings.Contains(r.Message, "panic serving") })
	if r.Level != slog.LevelError || testlog.Attr(r, "component") != "scale_http" {
		t.Errorf("panic logged as %s %q component=%q, want an error, component=scale_http", r.Level, r.Message, testlog.Attr(r, "component"))
	}
}

// TestCrossSiteScalingRefused: a page of another site in the operator's
// browser can POST to control (a form, or fetch in no-cors mode: a
// "simple" request, sent without a CORS preflight), and a browser says so
// in Sec-Fetch-Site and Origin. Without a token to check
// (--insecure-no-auth, Orbiter's open API) such a request scaled: any web
// page visited on a machine that reaches control could scale its
// services. Scaling routes now refuse it (403) before anything else;
// clients that are not browsers send neither header and pass, as do
// requests of control's own origin.
func TestCrossSiteScalingRefused(t *testing.T) {
	e := newAPIEnv(t, Config{}, svc("web", 1, "orbiter", "true", LabelMax, "100"))
	open := NewAPI(APIConfig{Limits: Limits{RateLimit: -1}}, e.ctrl, slog.New(slog.DiscardHandler)) // --insecure-no-auth
	srv := httptest.NewServer(open.Handler())
	t.Cleanup(srv.Close)
	post := func(path, body string, hdr ...string) int {
		t.Helper()
		return testnet.Status(t, http.MethodPost, srv.URL+path, body, hdr...)
	}
	for _, c := range []struct {
		name string
		hdr  []string
	}{
		{"Sec-Fetch-Site cross-site", []string{"Sec-Fetch-Site", "cross-site", "Content-Type", "text/plain"}},
		{"Sec-Fetch-Site same-site", []string{"Sec-Fetch-Site", "same-site"}},
		{"another Origin, an older browser", []string{"Origin", "https://evil.example"}},
	} {
		for _, path := range []string{"/v1/orbiter/handle/autoswarm/web/up", "/handle/autoswarm/web", "/v1/underlay/services/web/scale", "/v1/underlay/alertmanager"} {
			if code := post(path, `{"direction":"up"}`, c.hdr...); code != http.StatusForbidden {
				t.Errorf("%s, %s: %d, want 403", c.name, path, code)
			}
		}
	}
	if got := e.swarm.replicas("web"); got != 1 {
		t.Fatalf("web has %d replicas after cross-site requests, want 1", got)
	}
	// curl, Alertmanager: no such header. A page of control's own origin.
	if code := post("/v1/orbiter/handle/autoswarm/web/up", ""); code != 200 {
		t.Errorf("no browser headers: %d, want 200", code)
	}
	if code := post("/v1/orbiter/handle/autoswarm/web/up", "", "Sec-Fetch-Site", "same-origin", "Origin", srv.URL); code != 200 {
		t.Errorf("same origin: %d, want 200", code)
	}
	if got := e.swarm.replicas("web"); got != 3 {
		t.Errorf("web has %d replicas, want 3", got)
	}
}

// TestCrossSiteReadsRefused: a page of another site can make the
// operator's browser read control's GET routes (fetch, EventSource, an
// image). It cannot see the answer (no CORS), but control would still
// build it — the history and the leader read Consul — and hold event
// streams open, from the operator's address, within the operator's read
// budget. Every read route (health apart) now answers a browser's
// cross-site fetch 403 before its limits or any work, as the dashboard's
// reads do; a navigation (a link followed, an address typed), the same
// origin and clients that are no browser are served.
func TestCrossSiteReadsRefused(t *testing.T) {
	e := newAPIEnv(t, Config{}, svc("web", 1, "orbiter", "true", LabelMax, "100"))
	// Open reads, one a client before 429: a refusal must not take it.
	reg := prometheus.NewRegistry()
	open := NewAPI(APIConfig{Limits: Limits{RateLimit: 0.001, RateBurst: 1}, Registerer: reg}, e.ctrl, slog.New(slog.DiscardHandler))
	srv := httptest.NewServer(open.Handler())
	t.Cleanup(srv.Close)
	get := func(path string, hdr ...string) int {
		t.Helper()
		return testnet.Status(t, http.MethodGet, srv.URL+path, "", hdr...)
	}
	reads := []string{"/v1/orbiter/autoscaler", "/autoscaler", "/v1/orbiter/events", "/events", "/v1/underlay/services",
		"/v1/underlay/services/web/history", "/v1/underlay/leader", "/v1/underlay/events"}
	for _, c := range []struct {
		name string
		hdr  []string
	}{
		{"fetch, Sec-Fetch-Site cross-site", []string{"Sec-Fetch-Site", "cross-site", "Sec-Fetch-Mode", "cors"}},
		{"EventSource, Sec-Fetch-Site same-site", []string{"Sec-Fetch-Site", "same-site", "Sec-Fetch-Mode", "cors"}},
		{"an image, no-cors", []string{"Sec-Fetch-Site", "cross-site", "Sec-Fetch-Mode", "no-cors"}},
		{"another Origin, an older browser", []string{"Origin", "https://evil.example"}},
	} {
		for _, path := range reads {
			if code := get(path, c.hdr...); code != http.StatusForbidden {
				t.Errorf("%s, GET %s: %d, want 403", c.name, path, code)
			}
		}
	}
	if got, want := counterValue(t, open.metrics.refused.WithLabelValues("cross_site")), float64(4*len(reads)); got != want {
		t.Errorf("underlay_scale_http_refused_total{reason=cross_site} = %g, want %g", got, want)
	}
	// Health is for probes, whoever asks.
	if code := get("/v1/orbiter/health", "Sec-Fetch-Site", "cross-site", "Sec-Fetch-Mode", "cors"); code != http.StatusOK {
		t.Errorf("cross-site health: %d, want 200", code)
	}
	// The refusals took nothing of the client's one read: a navigation
	// (the operator following a link) is served, then the budget is spent.
	if code := get("/v1/orbiter/autoscaler", "Sec-Fetch-Site", "cross-site", "Sec-Fetch-Mode", "navigate"); code != http.StatusOK {
		t.Errorf("a cross-site navigation: %d, want 200", code)
	}
	if code := get("/v1/orbiter/autoscaler"); code != http.StatusTooManyRequests {
		t.Errorf("a second read: %d, want 429", code)
	}
	// Same origin, and no browser at all, from other clients' budgets
	// (the limits count per client; these share one): a fresh API.
	open2 := NewAPI(APIConfig{Limits: Limits{RateLimit: -1}}, e.ctrl, slog.New(slog.DiscardHandler))
	srv2 := httptest.NewServer(open2.Handler())
	t.Cleanup(srv2.Close)
	srv = srv2
	if code := get("/v1/underlay/services", "Sec-Fetch-Site", "same-origin", "Sec-Fetch-Mode", "cors", "Origin", srv2.URL); code != http.StatusOK {
		t.Errorf("same origin: %d, want 200", code)
	}
	if code := get("/v1/underlay/services"); code != http.StatusOK {
		t.Errorf("no browser headers: %d, want 200", code)
	}
	if code := get("/v1/underlay/leader", "Sec-Fetch-Site", "none", "Sec-Fetch-Mode", "cors"); code != http.StatusOK {
		t.Errorf("Sec-Fetch-Site none (typed by the user): %d, want 200", code)
	}
}
