package scale

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/testclock"
)

// listener is what an attacker who can write the leader key in Consul KV
// points followers at: it records every request it receives.
type listener struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []string // each request, headers and body
}

func newListener(t *testing.T) *listener {
	l := &listener{}
	l.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var sb strings.Builder
		r.Header.Write(&sb)
		l.mu.Lock()
		l.got = append(l.got, r.Method+" "+r.URL.String()+"\n"+sb.String()+"\n"+string(b))
		l.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"service":"web","from":1,"to":1000,"reason":"scaled","why":"forged by the listener"}`)
	}))
	t.Cleanup(l.srv.Close)
	return l
}

func (l *listener) addr() string { return strings.TrimPrefix(l.srv.URL, "http://") }

func (l *listener) requests() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.got...)
}

// TestFollowerNeverSendsCredentialsToTheLeaderKey: whoever can write the
// leader key in Consul KV can point followers at a listener of theirs. A
// scaling request to a follower must deliver no token there (nor the
// webhook signature), and the listener's answer must not be passed off as
// the leader's — even when the listener holds an address among --peers
// (an instance's host taken over).
func TestFollowerNeverSendsCredentialsToTheLeaderKey(t *testing.T) {
	const hookSecret = "webhook secret"
	configs := []struct {
		name string
		cfg  func(evil string) APIConfig
		// reached is whether the listener may see a request at all.
		reached bool
	}{
		{"no peer secret", func(string) APIConfig { return APIConfig{ForwardToLeader: true} }, false},
		{"peer secret, no --peers", func(string) APIConfig {
			return APIConfig{ForwardToLeader: true, Peer: PeerConfig{Secret: StaticSecret(peerSecret)}}
		}, false},
		{"peer secret, listener among --peers", func(evil string) APIConfig {
			return APIConfig{ForwardToLeader: true, Peer: PeerConfig{Secret: StaticSecret(peerSecret), Allow: []string{evil}}}
		}, true},
		{"peer secret and webhook secret, listener among --peers", func(evil string) APIConfig {
			return APIConfig{ForwardToLeader: true, WebhookSecret: StaticSecret(hookSecret), Peer: PeerConfig{Secret: StaticSecret(peerSecret), Allow: []string{evil}}}
		}, true},
		{"peer secret, listener not among --peers", func(string) APIConfig {
			return APIConfig{ForwardToLeader: true, Peer: PeerConfig{Secret: StaticSecret(peerSecret), Allow: []string{"10.0.0.1:8000"}}}
		}, false},
	}
	for _, c := range configs {
		t.Run(c.name, func(t *testing.T) {
			evil := newListener(t)
			ship := &fakeLeadership{leader: evil.addr()}
			follower := newAPIEnvWith(t, Config{Leadership: ship}, c.cfg(evil.addr()), svc("web", 1, "orbiter", "true"))
			am := amBody(firing("f1", "service", "web", "direction", "up"))
			for _, req := range []struct{ path, body string }{
				{"/v1/underlay/services/web/scale", `{"direction":"up"}`},
				{"/v1/orbiter/handle/autoswarm/web/up", ""},
				{"/v1/orbiter/handle/autoswarm/web", `{"direction":true}`},
				{"/v1/underlay/alertmanager", am},
			} {
				hdr := append([]string{"Authorization", "Bearer " + testToken}, signed([]byte(hookSecret), req.body, time.Now())...)
				code, body := follower.send(t, "POST", req.path, req.body, hdr...)
				if strings.Contains(body, "forged") || code == 200 {
					t.Errorf("%s: %d %s: the listener's answer was passed on as the leader's", req.path, code, body)
				}
			}
			got := evil.requests()
			for _, req := range got {
				if strings.Contains(req, testToken) || strings.Contains(req, "sha256="+hex.EncodeToString(hmacOf([]byte(hookSecret), am))) {
					t.Errorf("the listener named in the leader key received the caller's credentials:\n%s", req)
				}
				if strings.Contains(req, string(peerSecret)) {
					t.Errorf("the listener received the peer secret:\n%s", req)
				}
			}
			if len(got) > 0 && !c.reached {
				t.Errorf("the listener was reached %d times, want never", len(got))
			}
			if c.reached && len(got) != 4 {
				t.Errorf("the listener was reached %d times, want 4 (the test would prove nothing)", len(got))
			}
			if c.reached && counterValue(t, follower.api.metrics.forwarded.WithLabelValues("unverified")) != 4 {
				t.Errorf("unverified answers not counted")
			}
		})
	}
}

func hmacOf(secret []byte, body string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(body))
	return m.Sum(nil)
}

// send sends a request with headers (name, value, …); status and body.
func (e *apiEnv) send(t *testing.T, method, path, body string, hdr ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var peerSecret = []byte("peer secret shared by the instances")

// TestFollowerForwardsToTheLeader: with forwarding on and a peer secret, a
// follower passes a scaling request on to the leader, which decides; the
// caller's token is checked by the follower and not passed on; the leader
// never passes a forwarded request on again; a leader address that cannot
// be dialled gets the 503 naming it.
func TestFollowerForwardsToTheLeader(t *testing.T) {
	leaderShip := &fakeLeadership{leading: true, term: 1, leader: "self"}
	leader := newAPIEnvWith(t, Config{Leadership: leaderShip}, APIConfig{ForwardToLeader: true, Peer: PeerConfig{Secret: StaticSecret(peerSecret)}}, svc("web", 1, "orbiter", "true"))
	followerShip := &fakeLeadership{leader: leader.addr()}
	follower := newAPIEnvWith(t, Config{Leadership: followerShip}, APIConfig{ForwardToLeader: true,
		Peer: PeerConfig{Secret: StaticSecret(peerSecret), Allow: []string{leader.addr(), "0.0.0.0:8000"}}}, svc("web", 1, "orbiter", "true"))

	code, body := follower.do(t, "POST", "/v1/underlay/services/web/scale", testToken, `{"replicas": 3}`)
	if code != 200 || !strings.Contains(body, `"to":3`) || !strings.Contains(body, "via "+follower.addr()) {
		t.Errorf("through the follower: %d %s, want 200 scaling to 3, the source naming the follower", code, body)
	}
	if leader.swarm.replicas("web") != 3 || follower.swarm.replicas("web") != 1 {
		t.Errorf("replicas: leader's swarm %d, follower's %d; want the leader to have scaled", leader.swarm.replicas("web"), follower.swarm.replicas("web"))
	}
	if code, _ := follower.do(t, "POST", "/v1/underlay/services/web/scale", "wrong", `{"replicas": 2}`); code != 401 {
		t.Errorf("bad token through the follower: %d, want 401", code)
	}
	// A webhook through the follower: one result per alert, from the leader.
	if code, rs := follower.webhookResults(t, "/alertmanager", amBody(firing("f1", "service", "web", "direction", "up"))); code != 200 || len(rs) != 1 || rs[0].Result != "scaled" {
		t.Errorf("webhook through the follower: %d %v, want 200 scaled", code, resultsOf(rs))
	}
	// The leader lost its leadership meanwhile and names the follower: a
	// forwarded request is answered there, never sent back.
	leaderShip.set(false, follower.addr())
	if code, _ := follower.do(t, "POST", "/v1/underlay/services/web/scale", testToken, `{"replicas": 2}`); code != 503 {
		t.Errorf("with no leader anywhere: %d, want 503", code)
	}
	// An unspecified address (the leader listens on every interface and
	// advertises nothing else) is not dialled.
	followerShip.set(false, "0.0.0.0:8000")
	req, _ := http.NewRequest("POST", follower.srv.URL+"/v1/underlay/services/web/scale", strings.NewReader(`{"direction":"up"}`))
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get(LeaderHeader) != "0.0.0.0:8000" {
		t.Errorf("undialable leader: %d %q, want 503 naming it", resp.StatusCode, resp.Header.Get(LeaderHeader))
	}
}

// TestFollowerWithoutPeerSecretNamesTheLeader: no peer secret, nothing is
// passed on: the follower names the leader (the CLI's --follow-leader and
// Alertmanager's list of instances take it from there).
func TestFollowerWithoutPeerSecretNamesTheLeader(t *testing.T) {
	leader := newAPIEnvWith(t, Config{Leadership: &fakeLeadership{leading: true, term: 1}}, APIConfig{ForwardToLeader: true}, svc("web", 1, "orbiter", "true"))
	follower := newAPIEnvWith(t, Config{Leadership: &fakeLeadership{leader: leader.addr()}}, APIConfig{ForwardToLeader: true}, svc("web", 1, "orbiter", "true"))
	code, body := follower.do(t, "POST", "/v1/underlay/services/web/scale", testToken, `{"direction":"up"}`)
	if code != 503 || !strings.Contains(body, leader.addr()) || leader.swarm.replicas("web") != 1 {
		t.Errorf("follower without a peer secret: %d %s, leader's replicas %d; want 503 naming the leader, nothing passed on", code, body, leader.swarm.replicas("web"))
	}
}

// TestPeerRequestForgeryAndReplay: what a listener named in the leader key
// captures cannot be replayed to the real leader, and a request signed
// without the secret, too old, or sent twice is refused.
func TestPeerRequestForgeryAndReplay(t *testing.T) {
	clk := testclock.New(time.Now())
	leader := newAPIEnvWith(t, Config{Now: clk.Now, Leadership: &fakeLeadership{leading: true, term: 1}},
		APIConfig{ForwardToLeader: true, Peer: PeerConfig{Secret: StaticSecret(peerSecret)}}, svc("web", 1, "orbiter", "true", LabelMax, "100"))
	evil := newListener(t)
	// The listener holds an address among --peers (an instance's host
	// taken over): it gets the follower's request, signed.
	follower := newAPIEnvWith(t, Config{Now: clk.Now, Leadership: &fakeLeadership{leader: evil.addr()}},
		APIConfig{ForwardToLeader: true, Peer: PeerConfig{Secret: StaticSecret(peerSecret), Allow: []string{evil.addr()}}}, svc("web", 1, "orbiter", "true"))
	follower.do(t, "POST", "/v1/underlay/services/web/scale", testToken, `{"direction":"up"}`)
	captured := evil.requests()
	if len(captured) != 1 {
		t.Fatalf("listener captured %d requests, want 1", len(captured))
	}
	replay, err := http.ReadRequest(bufio.NewReader(strings.NewReader(strings.Replace(captured[0], "\n", " HTTP/1.1\n", 1))))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(replay.Body)
	hdr := []string{}
	for k := range replay.Header {
		hdr = append(hdr, k, replay.Header.Get(k))
	}
	if code, b := leader.send(t, "POST", "/v1/underlay/services/web/scale", string(body), hdr...); code != 401 || !strings.Contains(b, "sent to") {
		t.Errorf("captured request replayed to the leader: %d %s, want 401", code, b)
	}

	// Hand-made requests, signed as a follower would.
	sendPeer := func(p peerRequest, secret []byte) (int, string) {
		return leader.send(t, "POST", p.URI, string(p.Body), ForwardedHeader, p.By, PeerToHeader, p.To, PeerClientHeader, p.Client,
			PeerNonceHeader, p.Nonce, PeerTimeHeader, strconv.FormatInt(p.Time, 10), PeerSignatureHeader, p.sign(secret))
	}
	good := peerRequest{Method: "POST", URI: "/v1/underlay/services/web/scale", By: "follower:8000", To: leader.addr(),
		Client: "192.0.2.1:5555", Nonce: "n1", Time: clk.Now().Unix(), Body: []byte(`{"direction":"up"}`)}
	if code, b := sendPeer(good, peerSecret); code != 200 || !strings.Contains(b, "via follower:8000") {
		t.Fatalf("a genuine forwarded request: %d %s, want 200", code, b)
	}
	if code, _ := sendPeer(good, peerSecret); code != 401 {
		t.Errorf("the same request again: %d, want 401 (a replay)", code)
	}
	stale := good
	stale.Nonce, stale.Time = "n2", clk.Now().Add(-time.Minute).Unix()
	if code, _ := sendPeer(stale, peerSecret); code != 401 {
		t.Errorf("a request a minute old: %d, want 401", code)
	}
	forged := good
	forged.Nonce = "n3"
	if code, _ := sendPeer(forged, []byte("guessed secret")); code != 401 {
		t.Errorf("a request signed with another secret: %d, want 401", code)
	}
	tampered := good
	tampered.Nonce = "n4"
	req := tampered
	req.Body = []byte(`{"replicas":100}`) // signed one body, sends another
	if code, _ := leader.send(t, "POST", req.URI, string(req.Body), ForwardedHeader, req.By, PeerToHeader, req.To, PeerClientHeader, req.Client,
		PeerNonceHeader, req.Nonce, PeerTimeHeader, strconv.FormatInt(req.Time, 10), PeerSignatureHeader, tampered.sign(peerSecret)); code != 401 {
		t.Errorf("a body other than the one signed: %d, want 401", code)
	}
	if got := leader.swarm.replicas("web"); got != 2 {
		t.Errorf("web has %d replicas, want 2 (only the genuine request)", got)
	}
	if got := counterValue(t, leader.api.metrics.refused.WithLabelValues("bad_peer")); got != 5 {
		t.Errorf("bad_peer refusals %v, want 5", got)
	}

	// An instance without the secret accepts no forwarded request.
	plain := newAPIEnvWith(t, Config{Now: clk.Now}, APIConfig{}, svc("web", 1, "orbiter", "true"))
	good.To, good.Nonce = plain.addr(), "n5"
	if code, b := plain.send(t, "POST", good.URI, string(good.Body), ForwardedHeader, good.By, PeerToHeader, good.To, PeerClientHeader, good.Client,
		PeerNonceHeader, good.Nonce, PeerTimeHeader, strconv.FormatInt(good.Time, 10), PeerSignatureHeader, good.sign(peerSecret)); code != 401 || !strings.Contains(b, "no peer secret") {
		t.Errorf("forwarded to an instance without a peer secret: %d %s, want 401", code, b)
	}
}

// TestPeersBoundTheLeaderNamed: with --peers, the leader key naming
// another address is the word of whoever wrote the key; it is not named to
// the caller — in X-Underlay-Leader or "leader", which underlay scale
// --follow-leader sends its token to — however the follower answers:
// without a peer secret, with forwarding off, or to a request marked as
// passed on. Before, --peers held only when the follower could forward;
// then, a follower that could forward still named the address in its
// error's text, and the leader route named it.
func TestPeersBoundTheLeaderNamed(t *testing.T) {
	const hijacked = "evil.example:8000"
	peers := []string{"10.0.0.1:8000"}
	am := amBody(firing("f1", "service", "web", "direction", "up"))
	for _, c := range []struct {
		name string
		cfg  APIConfig
		hdr  []string
	}{
		{"no peer secret", APIConfig{ForwardToLeader: true, Peer: PeerConfig{Allow: peers}}, nil},
		{"forwarding off", APIConfig{Peer: PeerConfig{Allow: peers, Secret: StaticSecret(peerSecret)}}, nil},
		{"marked as passed on", APIConfig{ForwardToLeader: true, Peer: PeerConfig{Allow: peers, Secret: StaticSecret(peerSecret)}}, []string{ForwardedHeader, "10.0.0.2:8000"}},
		{"could forward", APIConfig{ForwardToLeader: true, Peer: PeerConfig{Allow: peers, Secret: StaticSecret(peerSecret)}}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			follower := newAPIEnvWith(t, Config{Leadership: &fakeLeadership{leader: hijacked}}, c.cfg, svc("web", 1, "orbiter", "true"))
			for _, req := range []struct{ path, body string }{
				{"/v1/underlay/services/web/scale", `{"direction":"up"}`},
				{"/v1/orbiter/handle/autoswarm/web/up", ""},
				{"/v1/underlay/alertmanager", am},
			} {
				r, _ := http.NewRequest("POST", follower.srv.URL+req.path, strings.NewReader(req.body))
				r.Header.Set("Authorization", "Bearer "+testToken)
				for i := 0; i+1 < len(c.hdr); i += 2 {
					r.Header.Set(c.hdr[i], c.hdr[i+1])
				}
				resp, err := http.DefaultClient.Do(r)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 503 {
					t.Errorf("%s: %d %s, want 503", req.path, resp.StatusCode, b)
				}
				if h := resp.Header.Get(LeaderHeader); h != "" {
					t.Errorf("%s: %s: %q, an address not among --peers %v", req.path, LeaderHeader, h, peers)
				}
				if strings.Contains(string(b), hijacked) {
					t.Errorf("%s: %s names %s, an address not among --peers %v", req.path, b, hijacked, peers)
				}
			}
			// Nor does the leader route.
			if code, b := follower.do(t, "GET", "/v1/underlay/leader", testToken, ""); code != 200 || strings.Contains(b, hijacked) {
				t.Errorf("GET /v1/underlay/leader: %d %s; want 200 not naming %s, an address not among --peers %v", code, b, hijacked, peers)
			}
		})
	}
}

// TestForwardedAnswerNamesOnlyListedLeaders: the leader's answer is signed
// over its status and body, not its headers; one on the way between
// follower and leader can add X-Underlay-Leader naming its own address,
// where underlay scale --follow-leader would then send its token. With
// --peers the follower passes on only a leader among them.
func TestForwardedAnswerNamesOnlyListedLeaders(t *testing.T) {
	const hijacked = "evil.example:8000"
	resp, mitmAddr := scaleThroughMITM(t, func(resp *http.Response) { resp.Header.Set(LeaderHeader, hijacked) })
	if h := resp.Header.Get(LeaderHeader); h == hijacked {
		t.Errorf("%s: %q, added on the way and not among --peers [%s]", LeaderHeader, h, mitmAddr)
	}
}

// TestForwardedAnswerIsJSON: nor does the signature cover the leader's
// Content-Type, which the follower passed on: one on the way could make
// the answer text/html, and a browser would read the leader's JSON, with
// what the client sent in it (a service name), as a page of control's
// origin. The scaling routes answer JSON only: the follower says so
// itself.
func TestForwardedAnswerIsJSON(t *testing.T) {
	resp, _ := scaleThroughMITM(t, func(resp *http.Response) { resp.Header.Set("Content-Type", "text/html") })
	if ct := resp.Header.Get("Content-Type"); ct != jsonType {
		t.Errorf("Content-Type %q, set on the way; want %q", ct, jsonType)
	}
}

// scaleThroughMITM scales web to 2 replicas through a follower whose
// leader is reached through a proxy that modifies its answers, and
// returns the follower's answer (its body read) and the proxy's address.
func scaleThroughMITM(t *testing.T, modify func(*http.Response)) (*http.Response, string) {
	t.Helper()
	var leaderURL atomic.Pointer[string]
	mitm := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, _ := url.Parse(*leaderURL.Load())
		rp := httputil.NewSingleHostReverseProxy(u)
		rp.ModifyResponse = func(resp *http.Response) error {
			modify(resp)
			return nil
		}
		rp.ServeHTTP(w, r)
	}))
	mitm.Start()
	t.Cleanup(mitm.Close)
	mitmAddr := strings.TrimPrefix(mitm.URL, "http://")
	leader := newAPIEnvWith(t, Config{Leadership: &fakeLeadership{leading: true, term: 1, leader: "self"}},
		APIConfig{ForwardToLeader: true, Peer: PeerConfig{Secret: StaticSecret(peerSecret), Self: mitmAddr}}, svc("web", 1, "orbiter", "true"))
	u := leader.srv.URL
	leaderURL.Store(&u)
	follower := newAPIEnvWith(t, Config{Leadership: &fakeLeadership{leader: mitmAddr}},
		APIConfig{ForwardToLeader: true, Peer: PeerConfig{Secret: StaticSecret(peerSecret), Allow: []string{mitmAddr}}}, svc("web", 1, "orbiter", "true"))
	r, _ := http.NewRequest("POST", follower.srv.URL+"/v1/underlay/services/web/scale", strings.NewReader(`{"replicas":2}`))
	r.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || leader.swarm.replicas("web") != 2 {
		t.Fatalf("through the follower: %d %s, leader's replicas %d; want 200 and 2", resp.StatusCode, b, leader.swarm.replicas("web"))
	}
	return resp, mitmAddr
}

// TestFollowerWithoutPeersDialsNoLeaderKeyAddress: whoever can write the
// leader key in Consul KV rewrites it to an address of theirs. A follower
// with a peer secret but no --peers has no way to tell that address from
// an instance's: it dials nothing, and answers 503 naming the address and
// why. Before, it dialled whatever the key named and delivered callers'
// bodies there.
func TestFollowerWithoutPeersDialsNoLeaderKeyAddress(t *testing.T) {
	evil := newListener(t)
	follower := newAPIEnvWith(t, Config{Leadership: &fakeLeadership{leader: evil.addr()}},
		APIConfig{ForwardToLeader: true, Peer: PeerConfig{Secret: StaticSecret(peerSecret)}}, svc("web", 1, "orbiter", "true"))
	for _, req := range []struct{ path, body string }{
		{"/v1/underlay/services/web/scale", `{"direction":"up"}`},
		{"/v1/orbiter/handle/autoswarm/web/up", ""},
		{"/v1/underlay/alertmanager", amBody(firing("f1", "service", "web", "direction", "up"))},
	} {
		r, _ := http.NewRequest("POST", follower.srv.URL+req.path, strings.NewReader(req.body))
		r.Header.Set("Authorization", "Bearer "+testToken)
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 503 || !strings.Contains(string(b), evil.addr()) || !strings.Contains(string(b), "--peers") {
			t.Errorf("%s: %d %s; want 503 naming %s and --peers", req.path, resp.StatusCode, b, evil.addr())
		}
	}
	if got := evil.requests(); len(got) != 0 {
		t.Errorf("the address in the leader key, among no --peers, got %d requests, want none:\n%s", len(got), strings.Join(got, "\n---\n"))
	}
}

// countingBody is a request body that counts the bytes read from it.
type countingBody struct {
	r    io.Reader
	read atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.read.Add(int64(n))
	return n, err
}

func (b *countingBody) Close() error { return nil }

// TestForgedPeerRequestsReadNoBody: a request claiming to come from a peer
// skips the rate limit and the token when its proof holds, so its body is
// read to check it — up to 4 MiB on the webhook routes, before anything
// else. One that cannot hold (this instance has no peer secret), or from a
// client already past its rate with its forgeries, is refused before a
// byte of its body is read. Before, every such body was read and hashed,
// and only then was the client's rate looked at.
func TestForgedPeerRequestsReadNoBody(t *testing.T) {
	for _, c := range []struct {
		name   string
		secret Secret
		want   int
		// proxied sends the requests through a trusted proxy, naming
		// their client in X-Forwarded-For: its rate is the client's.
		proxied bool
	}{
		{"no peer secret", nil, http.StatusUnauthorized, false},
		{"past its rate", StaticSecret(peerSecret), http.StatusTooManyRequests, false},
		{"past its rate behind a trusted proxy", StaticSecret(peerSecret), http.StatusTooManyRequests, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newAPIEnvWith(t, Config{}, APIConfig{ForwardToLeader: true, Peer: PeerConfig{Secret: c.secret},
				Limits: Limits{RateLimit: 1, RateBurst: 1, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("192.0.2.1/32")}}}, svc("web", 1, "orbiter", "true"))
			forge := func() (int, int64) {
				body := &countingBody{r: strings.NewReader(strings.Repeat("x", 1<<20))}
				req := httptest.NewRequest("POST", "/v1/underlay/alertmanager", nil)
				req.Body, req.ContentLength = body, 1<<20
				req.RemoteAddr = "192.0.2.9:4444"
				if c.proxied {
					req.RemoteAddr = "192.0.2.1:4444"
					req.Header.Set(ForwardedForHeader, "198.51.100.7")
				}
				req.Header.Set(PeerSignatureHeader, "sha256=00")
				req.Header.Set(PeerTimeHeader, strconv.FormatInt(time.Now().Unix(), 10))
				rec := httptest.NewRecorder()
				e.api.Handler().ServeHTTP(rec, req)
				return rec.Code, body.read.Load()
			}
			if c.want == http.StatusTooManyRequests {
				forge() // uses up the client's burst of 1
			}
			code, read := forge()
			if code != c.want || read != 0 {
				t.Errorf("forged peer request: %d, %d bytes of its body read; want %d and none", code, read, c.want)
			}
		})
	}
}
