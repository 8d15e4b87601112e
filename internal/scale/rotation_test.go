package scale

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// rotatingSecret is a Secret an operator rewrites while the API serves,
// as a secretfile.File sees it.
type rotatingSecret struct {
	mu sync.Mutex
	v  []byte
}

func (s *rotatingSecret) Value() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.v
}

func (s *rotatingSecret) set(v string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.v = []byte(v)
}

// TestWebhookSecretRotates: the webhook secret is read per request — a
// rotated secret is required from the next request on, the old one
// refused — and an empty one (anyone can sign with an empty key) refuses
// every request. Before, control read --webhook-secret-file once.
func TestWebhookSecretRotates(t *testing.T) {
	secret := &rotatingSecret{v: []byte("first webhook secret")}
	e := newAPIEnvWith(t, Config{}, APIConfig{WebhookSecret: secret}, svc("web", 1, "orbiter", "true", LabelMax, "100"))
	n := 0
	post := func(key string) int {
		t.Helper()
		n++ // a new firing each time, so that none is a duplicate
		body := amBody(firing("f"+string(rune('a'+n)), "service", "web", "direction", "up"))
		code, _ := e.send(t, "POST", "/v1/underlay/alertmanager", body,
			append([]string{"Authorization", "Bearer " + testToken}, signed([]byte(key), body, time.Now())...)...)
		return code
	}
	if code := post("first webhook secret"); code != 200 {
		t.Fatalf("signed with the secret: %d, want 200", code)
	}
	secret.set("second webhook secret")
	if code := post("first webhook secret"); code != 401 {
		t.Errorf("signed with the rotated-out secret: %d, want 401", code)
	}
	if code := post("second webhook secret"); code != 200 {
		t.Errorf("signed with the new secret: %d, want 200", code)
	}
	secret.set("")
	if code := post(""); code != 401 {
		t.Errorf("no secret in use, signed with an empty key: %d, want 401", code)
	}
}

// TestPeerSecretRotates: the peer secret is read per request: instances
// rotated together keep passing requests on; a leader rotated alone
// refuses the follower's old signature, and the follower drops its
// answer.
func TestPeerSecretRotates(t *testing.T) {
	leaderSecret := &rotatingSecret{v: []byte("first peer secret, long enough")}
	followerSecret := &rotatingSecret{v: []byte("first peer secret, long enough")}
	leader := newAPIEnvWith(t, Config{Leadership: &fakeLeadership{leading: true, term: 1}},
		APIConfig{ForwardToLeader: true, Peer: PeerConfig{Secret: leaderSecret}}, svc("web", 1, "orbiter", "true", LabelMax, "100"))
	follower := newAPIEnvWith(t, Config{Leadership: &fakeLeadership{leader: leader.addr()}},
		APIConfig{ForwardToLeader: true, Peer: PeerConfig{Secret: followerSecret, Allow: []string{leader.addr()}}}, svc("web", 1, "orbiter", "true"))
	scaleTo := func(n int) (int, string) {
		t.Helper()
		return follower.do(t, "POST", "/v1/underlay/services/web/scale", testToken, `{"replicas": `+strconv.Itoa(n)+`}`)
	}
	if code, body := scaleTo(2); code != 200 {
		t.Fatalf("through the follower: %d %s", code, body)
	}
	leaderSecret.set("second peer secret, long enough")
	followerSecret.set("second peer secret, long enough")
	if code, body := scaleTo(3); code != 200 || leader.swarm.replicas("web") != 3 {
		t.Errorf("both rotated: %d %s, leader's replicas %d; want 200 and 3", code, body, leader.swarm.replicas("web"))
	}
	leaderSecret.set("third peer secret, long enough")
	if code, body := scaleTo(4); code != 502 || leader.swarm.replicas("web") != 3 {
		t.Errorf("leader rotated alone: %d %s, leader's replicas %d; want 502 and 3", code, body, leader.swarm.replicas("web"))
	}
	if got := counterValue(t, leader.api.metrics.refused.WithLabelValues("bad_peer")); got != 1 {
		t.Errorf("bad_peer refusals at the leader: %g, want 1", got)
	}
}

// TestFollowerForwardsOverTLS: a follower reaches the leader over TLS
// with the configuration PeerConfig.TLS gives for each new connection
// (so that rotated certificate files are used), verifying the leader's
// certificate against its address; a leader whose certificate does not
// verify gets nothing.
func TestFollowerForwardsOverTLS(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	leader := newAPIEnvWith(t, Config{Leadership: &fakeLeadership{leading: true, term: 1}},
		APIConfig{ForwardToLeader: true, Peer: PeerConfig{Secret: StaticSecret(peerSecret), Self: ln.Addr().String()}},
		svc("web", 1, "orbiter", "true", LabelMax, "100"))
	tlsSrv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: leader.api.Handler()}}
	tlsSrv.StartTLS()
	t.Cleanup(tlsSrv.Close)
	roots := x509.NewCertPool()
	roots.AddCert(tlsSrv.Certificate())

	var made atomic.Int32
	var trust atomic.Bool
	trust.Store(true)
	peerTLS := func() *tls.Config {
		made.Add(1)
		if !trust.Load() {
			return &tls.Config{RootCAs: x509.NewCertPool()} // the CA file rotated to another CA
		}
		return &tls.Config{RootCAs: roots}
	}
	follower := newAPIEnvWith(t, Config{Leadership: &fakeLeadership{leader: ln.Addr().String()}},
		APIConfig{ForwardToLeader: true, Peer: PeerConfig{Secret: StaticSecret(peerSecret), TLS: peerTLS, Allow: []string{ln.Addr().String()}}}, svc("web", 1, "orbiter", "true"))
	if code, body := follower.do(t, "POST", "/v1/underlay/services/web/scale", testToken, `{"replicas": 4}`); code != 200 || leader.swarm.replicas("web") != 4 {
		t.Fatalf("over TLS: %d %s, leader's replicas %d; want 200 and 4", code, body, leader.swarm.replicas("web"))
	}
	if made.Load() != 1 {
		t.Errorf("%d configurations made for one connection, want 1", made.Load())
	}
	trust.Store(false)
	follower.api.peerClient.CloseIdleConnections()
	code, body := follower.do(t, "POST", "/v1/underlay/services/web/scale", testToken, `{"replicas": 5}`)
	if code != 502 || !strings.Contains(body, "certificate") || leader.swarm.replicas("web") != 4 {
		t.Errorf("leader's certificate not trusted by the new configuration: %d %s, replicas %d; want 502 naming the certificate and 4", code, body, leader.swarm.replicas("web"))
	}
	if made.Load() != 2 {
		t.Errorf("%d configurations made for two connections, want 2", made.Load())
	}
}
