package scale

import (
	"bytes"
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/underlay/underlay/internal/termtext"
)

// Headers of a request a follower passes on to the leader. The follower
// has checked the caller's credentials; it sends none of them, only its
// own proof — an HMAC-SHA256, under the secret the instances share, of the
// request (method, path, body), its time, a nonce, the address the
// follower meant to reach and the caller's address. The leader's answer
// carries the same proof of its own, so a follower passes on only answers
// of an instance that holds the secret.
const (
	PeerSignatureHeader = "X-Underlay-Peer-Signature"
	PeerTimeHeader      = "X-Underlay-Peer-Time"
	PeerNonceHeader     = "X-Underlay-Peer-Nonce"
	PeerToHeader        = "X-Underlay-Peer-To"
	PeerClientHeader    = "X-Underlay-Peer-Client"
)

// PeerSkew bounds how far a forwarded request's time may be from the
// leader's clock; a nonce is remembered twice as long, so that no request
// is accepted twice.
const PeerSkew = 30 * time.Second

// maxPeerAnswer bounds the leader's answer a follower reads.
const maxPeerAnswer = 4 << 20

// PeerConfig is how control instances pass requests on to their leader.
type PeerConfig struct {
	// Secret is the key the instances share (--peer-secret-file), read
	// once per request. Without it (nil, or an empty value) a follower
	// passes nothing on: it answers 503 naming the leader.
	Secret Secret
	// Self is this instance's advertised address: a request passed on to it
	// must name it, so that one sent elsewhere cannot be replayed here.
	Self string
	// Allow is the only addresses a follower passes requests on to
	// (--peers). Empty, it passes nothing on: the leader key is anyone's
	// with KV write access, and an address there cannot be told from an
	// instance's, so the follower answers 503 naming it. Not empty, the
	// key naming another address is refused and not named to the caller.
	Allow []string
	// TLS, when not nil, makes followers reach the leader over https with
	// the configuration it returns, asked for each new connection (so that
	// certificate and CA files rotated meanwhile are used); the server's
	// name is set from the leader's address when the configuration has
	// none.
	TLS func() *tls.Config
	// Timeout bounds one forwarded request (default 20s, within the
	// server's write timeout).
	Timeout time.Duration
}

// peerRequest is what a forwarded request's signature covers.
type peerRequest struct {
	Method, URI, By, To, Client, Nonce string
	Time                               int64 // Unix seconds
	Body                               []byte
}

// writeFields writes each field with its length, so that no two requests
// sign the same bytes.
func writeFields(h hash.Hash, fields ...string) {
	for _, f := range fields {
		fmt.Fprintf(h, "%d:%s\n", len(f), f)
	}
}

func (p peerRequest) sign(secret []byte) string {
	m := hmac.New(sha256.New, secret)
	sum := sha256.Sum256(p.Body)
	writeFields(m, "underlay peer request v1", p.Method, p.URI, p.By, p.To, p.Client, p.Nonce,
		strconv.FormatInt(p.Time, 10), hex.EncodeToString(sum[:]))
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// signPeerAnswer is the signature of the leader's answer to the request
// of nonce.
func signPeerAnswer(secret []byte, nonce string, code int, body []byte) string {
	m := hmac.New(sha256.New, secret)
	sum := sha256.Sum256(body)
	writeFields(m, "underlay peer answer v1", nonce, strconv.Itoa(code), hex.EncodeToString(sum[:]))
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// peerRequestOf reads the peer headers of r, with body.
func peerRequestOf(r *http.Request, body []byte) (peerRequest, error) {
	ts, err := strconv.ParseInt(r.Header.Get(PeerTimeHeader), 10, 64)
	if err != nil {
		return peerRequest{}, fmt.Errorf("bad %s", PeerTimeHeader)
	}
	return peerRequest{Method: r.Method, URI: r.URL.RequestURI(), By: r.Header.Get(ForwardedHeader),
		To: r.Header.Get(PeerToHeader), Client: r.Header.Get(PeerClientHeader), Nonce: r.Header.Get(PeerNonceHeader),
		Time: ts, Body: body}, nil
}

// nonces remembers the nonces of accepted forwarded requests (or the
// signatures of accepted webhooks) for ttl, longer than a request's time
// is accepted, so that none is accepted twice. Only requests signed with
// the secret get in.
type nonces struct {
	// ttl is how long a nonce is remembered (2*PeerSkew when zero); max
	// bounds how many are (maxNonces when zero): beyond, new ones are
	// refused until some expire, never let through unremembered.
	ttl time.Duration
	max int

	mu   sync.Mutex // guards following fields
	seen map[string]time.Time
	// order holds the nonces of seen in the order they were added, from
	// order[head] on, so that expiry takes the oldest first and stops at
	// the first still in its time: it costs the nonces it drops, not a
	// pass over seen. Times taken from a clock set back may be out of
	// order; such a nonce is then kept longer, never shorter.
	order []timedNonce
	head  int
}

// newNonces remembers nonces for ttl, at most max of them.
func newNonces(ttl time.Duration, max int) *nonces {
	return &nonces{ttl: ttl, max: max, seen: map[string]time.Time{}}
}

// timedNonce is one nonce of nonces.order, with when it was added.
type timedNonce struct {
	nonce string
	at    time.Time
}

// maxNonces bounds the nonces remembered; beyond, forwarded requests are
// refused until some expire.
const maxNonces = 1 << 20

// Errors of nonces.record.
var (
	errNonceSeen = errors.New("accepted once already")
	errNonceFull = errors.New("too many remembered")
)

// add records nonce at now; false when it was seen already, or when too
// many are remembered.
func (n *nonces) add(nonce string, now time.Time) bool {
	return n.record(nonce, now) == nil
}

// record records nonce at now: errNonceSeen when it was seen already,
// errNonceFull when too many are remembered.
func (n *nonces) record(nonce string, now time.Time) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.expireLocked(now)
	if _, ok := n.seen[nonce]; ok {
		return errNonceSeen
	}
	if max := cmp.Or(n.max, maxNonces); len(n.seen) >= max {
		return errNonceFull
	}
	n.seen[nonce] = now
	n.order = append(n.order, timedNonce{nonce: nonce, at: now})
	return nil
}

// expireLocked drops the nonces older than ttl, oldest first. n.mu is
// held.
func (n *nonces) expireLocked(now time.Time) {
	ttl := cmp.Or(n.ttl, 2*PeerSkew)
	for n.head < len(n.order) && now.Sub(n.order[n.head].at) > ttl {
		delete(n.seen, n.order[n.head].nonce)
		n.order[n.head] = timedNonce{} // its string goes with it
		n.head++
	}
	// The dropped front is given back once it is half the slice, to a
	// new array (a burst's is not kept): each nonce is copied at most once
	// per halving, O(1) each on average.
	if n.head > 0 && n.head >= len(n.order)/2 {
		n.order = append([]timedNonce(nil), n.order[n.head:]...)
		n.head = 0
	}
}

// peerKey is the context key of a request a peer passed on.
type peerKey struct{}

// peerInfo says who passed a request on, and for whom: Client is the
// source the peer named (its API's source: the client, "… via" the
// trusted proxy it came through).
type peerInfo struct {
	By, Client string
}

func peerOf(ctx context.Context) (peerInfo, bool) {
	p, ok := ctx.Value(peerKey{}).(peerInfo)
	return p, ok
}

// errBadPeer is wrapped by verifyPeer's errors.
var errBadPeer = errors.New("forwarded request refused")

// verifyPeer checks a forwarded request: the signature under the shared
// secret, that it was meant for this instance, its time, and that it was
// not accepted before.
func (a *API) verifyPeer(r *http.Request, body, secret []byte) (peerRequest, error) {
	pc := a.cfg.Peer
	if len(secret) == 0 {
		return peerRequest{}, fmt.Errorf("%w: this instance has no peer secret (--peer-secret-file)", errBadPeer)
	}
	p, err := peerRequestOf(r, body)
	if err != nil {
		return p, fmt.Errorf("%w: %w", errBadPeer, err)
	}
	if !hmac.Equal([]byte(p.sign(secret)), []byte(r.Header.Get(PeerSignatureHeader))) {
		return p, fmt.Errorf("%w: bad signature (do the instances share one --peer-secret-file?)", errBadPeer)
	}
	now := a.c.cfg.Now()
	switch {
	case pc.Self == "" || p.To != pc.Self:
		return p, fmt.Errorf("%w: it was sent to %s, and this instance advertises %s", errBadPeer, termtext.Q(p.To), termtext.Q(pc.Self))
	case now.Sub(time.Unix(p.Time, 0)).Abs() > PeerSkew:
		return p, fmt.Errorf("%w: its time is more than %s from this instance's clock", errBadPeer, PeerSkew)
	case !a.nonces.add(p.Nonce, now):
		return p, fmt.Errorf("%w: accepted once already (a replay)", errBadPeer)
	}
	return p, nil
}

// peerAuth accepts requests a follower passed on: a request with a peer
// signature is verified (401 when it does not hold), then served with no
// token, signature or rate limit of its own — the follower checked them —
// and its answer is signed. Requests without a peer signature pass.
func (a *API) peerAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(PeerSignatureHeader) == "" {
			next.ServeHTTP(w, r)
			return
		}
		secret := valueOf(a.cfg.Peer.Secret) // one key for the check and the answer
		// Before the body is read (up to 4 MiB, hashed): a proof that
		// cannot hold, and a client whose forgeries used up its rate, are
		// refused as they are, so that forged requests cost no more than
		// any other refused one.
		if len(secret) == 0 {
			a.refusePeer(w, r, fmt.Errorf("%w: this instance has no peer secret (--peer-secret-file)", errBadPeer))
			return
		}
		// The client as refusePeer counts it (behind a trusted proxy, the
		// one X-Forwarded-For names, not the proxy).
		if a.limiter != nil {
			client := a.client(r)
			if empty, wait := a.limiter.empty(client); empty {
				a.refuse("rate_limited")
				a.tooMany(w, wait, fmt.Sprintf("too many scaling requests from %s", client))
				return
			}
		}
		body, ok := a.readBody(w, r)
		if !ok {
			return
		}
		p, err := a.verifyPeer(r, body, secret)
		if err != nil {
			a.refusePeer(w, r, err)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r = r.WithContext(context.WithValue(r.Context(), peerKey{}, peerInfo{By: p.By, Client: p.Client}))
		buf := &bufferedAnswer{header: http.Header{}, code: http.StatusOK}
		next.ServeHTTP(buf, r)
		for k, v := range buf.header {
			w.Header()[k] = v
		}
		w.Header().Set(PeerSignatureHeader, signPeerAnswer(secret, p.Nonce, buf.code, buf.body.Bytes()))
		w.WriteHeader(buf.code)
		w.Write(buf.body.Bytes())
	})
}

// refusePeer answers a forwarded request whose proof does not hold: 401,
// counted and logged, within the client's rate like any other client, so
// that forged requests flood neither the CPU nor the log (429 beyond).
func (a *API) refusePeer(w http.ResponseWriter, r *http.Request, err error) {
	if !a.allow(w, r) {
		return
	}
	a.refuse("bad_peer")
	a.log.Warn("request passed on by a peer refused", a.withClient(r, "path", r.URL.Path, "err", err)...)
	writeJSON(w, http.StatusUnauthorized, errorBody{Error: err.Error()})
}

// bufferedAnswer keeps an answer until it is signed.
type bufferedAnswer struct {
	header http.Header
	code   int
	wrote  bool
	body   bytes.Buffer
}

func (b *bufferedAnswer) Header() http.Header { return b.header }

func (b *bufferedAnswer) WriteHeader(code int) {
	if !b.wrote {
		b.code, b.wrote = code, true
	}
}

func (b *bufferedAnswer) Write(p []byte) (int, error) {
	b.wrote = true
	return b.body.Write(p)
}

// forwardable reports whether a follower passes requests on to leader,
// and if not, why.
func (a *API) forwardable(leader string) (bool, string) {
	pc := a.cfg.Peer
	switch {
	case !a.cfg.ForwardToLeader:
		return false, ""
	case len(valueOf(pc.Secret)) == 0:
		return false, "" // no way to prove itself to the leader: it names it instead
	case !dialable(leader):
		return false, ""
	case len(pc.Allow) == 0:
		return false, fmt.Sprintf("the leader key names %s, and this instance passes requests on to none but its --peers, which it has not: not passed on (list the instances' --advertise in --peers)", termtext.Q(leader))
	case !a.listed(leader):
		// Not named: the key is anyone's with KV write access, and its
		// address, written back to the caller, would be theirs to choose
		// (toLeader logs it).
		return false, "the leader key names an address not among this instance's --peers: not passed on"
	}
	return true, ""
}

// forward passes r on to the leader with the follower's own proof, never
// the caller's credentials, and passes back the leader's answer once its
// proof holds (else 502).
func (a *API) forward(w http.ResponseWriter, r *http.Request, leader string) {
	body, ok := a.readBody(w, r)
	if !ok {
		return
	}
	secret := valueOf(a.cfg.Peer.Secret) // one key for the request and its answer
	nonce := make([]byte, 16)
	rand.Read(nonce)
	p := peerRequest{Method: r.Method, URI: r.URL.RequestURI(), By: a.cfg.Peer.Self, To: leader, Client: a.source(r),
		Nonce: hex.EncodeToString(nonce), Time: a.c.cfg.Now().Unix(), Body: body}
	scheme := "http"
	if a.cfg.Peer.TLS != nil {
		scheme = "https"
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, scheme+"://"+leader+p.URI, bytes.NewReader(body))
	if err != nil {
		a.forwardFailed(w, r, leader, http.StatusBadGateway, err)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	req.Header.Set(ForwardedHeader, p.By)
	req.Header.Set(PeerToHeader, p.To)
	req.Header.Set(PeerClientHeader, p.Client)
	req.Header.Set(PeerNonceHeader, p.Nonce)
	req.Header.Set(PeerTimeHeader, strconv.FormatInt(p.Time, 10))
	req.Header.Set(PeerSignatureHeader, p.sign(secret))
	a.log.Debug("passing a request on to the leader", "leader", leader, "path", r.URL.Path)
	resp, err := a.peerClient.Do(req)
	if err != nil {
		a.forwarded("unreachable")
		a.forwardFailed(w, r, leader, http.StatusBadGateway, err)
		return
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxPeerAnswer+1))
	if err == nil && len(answer) > maxPeerAnswer {
		err = fmt.Errorf("answer larger than %d bytes", maxPeerAnswer)
	}
	if err != nil {
		a.forwarded("unreachable")
		a.forwardFailed(w, r, leader, http.StatusBadGateway, err)
		return
	}
	want := signPeerAnswer(secret, p.Nonce, resp.StatusCode, answer)
	if !hmac.Equal([]byte(want), []byte(resp.Header.Get(PeerSignatureHeader))) {
		a.forwarded("unverified")
		a.log.Warn("the address in the leader key answered without the peer secret's proof; its answer is dropped (a hijacked leader key, or instances with different --peer-secret-file)",
			"leader", leader, "path", r.URL.Path, "status", resp.StatusCode)
		writeJSON(w, http.StatusBadGateway, errorBody{Error: fmt.Sprintf("this control instance is not the leader, and the instance at %s, named leader in Consul, did not prove it shares the peer secret: its answer is dropped", leader)})
		return
	}
	a.forwarded("ok")
	// The routes passed on answer JSON only; a Content-Type added on the
	// way (text/html) would have a browser read the answer as a page.
	w.Header().Set("Content-Type", jsonType)
	for _, h := range []string{LeaderHeader, "Retry-After"} {
		v := resp.Header.Get(h)
		// The signature covers the status and body, not the headers: a
		// leader named there may have been added on the way.
		if h == LeaderHeader && !a.listed(v) {
			a.log.Warn("the leader's answer names a leader not among --peers; not passed on", "leader", v, "peers", a.cfg.Peer.Allow)
			continue
		}
		if v != "" {
			w.Header().Set(h, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	w.Write(answer)
}

func (a *API) forwardFailed(w http.ResponseWriter, r *http.Request, leader string, code int, err error) {
	a.log.Warn("passing a request on to the leader failed", a.withClient(r, "leader", leader, "path", r.URL.Path, "err", err)...)
	w.Header().Set(LeaderHeader, leader)
	writeJSON(w, code, errorBody{Error: fmt.Sprintf("this control instance is not the leader, and passing the request on to the leader at %s failed: %v", leader, err)})
}

// newPeerClient is the HTTP client of forwarded requests: no proxy from
// the environment, no redirects followed, TLS connections made with the
// configuration of the moment.
func newPeerClient(pc PeerConfig) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 4, IdleConnTimeout: 90 * time.Second, ResponseHeaderTimeout: pc.Timeout}
	if pc.TLS != nil {
		tr.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dialPeerTLS(ctx, network, addr, pc.TLS())
		}
	}
	return &http.Client{Transport: tr, Timeout: pc.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// peerHandshakeTimeout bounds a TLS handshake with the leader.
const peerHandshakeTimeout = 10 * time.Second

// dialPeerTLS dials addr over TLS with cfg, verifying the server's
// certificate against addr's host unless cfg names another server.
func dialPeerTLS(ctx context.Context, network, addr string, cfg *tls.Config) (net.Conn, error) {
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("leader address %q: %w", addr, err)
		}
		cfg = cfg.Clone()
		cfg.ServerName = host
	}
	ctx, cancel := context.WithTimeout(ctx, peerHandshakeTimeout)
	defer cancel()
	d := &tls.Dialer{Config: cfg}
	return d.DialContext(ctx, network, addr)
}
