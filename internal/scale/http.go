package scale

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/underlay/underlay/internal/httpserve"
	"github.com/underlay/underlay/internal/termtext"
)

// maxBody bounds request bodies on every route but the webhook routes; a
// direction needs a few bytes.
const maxBody = 64 << 10

// maxWebhookBody bounds the bodies of the webhook routes (Alertmanager's
// and Orbiter's, which take Alertmanager's notifications too), which may
// carry many alerts.
const maxWebhookBody = 4 << 20

// APIConfig configures the HTTP API.
type APIConfig struct {
	// Tokens authenticate the scaling routes and the reads (unless
	// OpenReads); nil disables authentication (underlay control
	// --insecure-no-auth), reads included.
	Tokens TokenSet
	// OpenReads lets anyone read: the GET routes — the event stream
	// included — answer without a token (underlay control
	// --auth-reads=false), within the read rate limit. By default, with
	// Tokens, they want one as scaling does; health is always open.
	OpenReads bool
	// KeepAlive is the period of comment lines on the events stream, which
	// keep proxies from closing an idle stream (default 15s).
	KeepAlive time.Duration
	// WebhookSecret, when not nil, makes the Alertmanager routes require
	// an HMAC-SHA256 signature of the time and the body (TimestampHeader,
	// SignatureHeader) besides the token; while its value is empty they
	// refuse every request.
	WebhookSecret Secret
	// WebhookMaxAge is how far a signed webhook's time may be from this
	// instance's clock, either way (DefaultWebhookMaxAge when zero); a
	// signature is accepted once within it.
	WebhookMaxAge time.Duration
	// History lists a service's records for the history route; nil answers
	// 501 there.
	History HistoryLister
	// ForwardToLeader makes a follower pass scaling requests on to the
	// leader (when Peer.Secret is set and the leader's advertised address is
	// one to dial) instead of answering 503 naming it.
	ForwardToLeader bool
	// Peer is how requests are passed on between instances.
	Peer PeerConfig
	// Limits bound what one client may hold.
	Limits Limits
	// Registerer takes the API's metrics; nil keeps them unregistered.
	Registerer prometheus.Registerer
}

// HistoryLister lists a service's decision records, oldest first, and
// those it could not read.
type HistoryLister interface {
	List(ctx context.Context, service string) (records []Record, bad []BadRecord, err error)
}

// LeaderHeader names the leader's address on a follower's 503.
const LeaderHeader = "X-Underlay-Leader"

// ForwardedHeader marks a request a follower passed on to the leader, with
// the follower's address; the receiver never passes it on again, so
// leadership moving meanwhile cannot make a loop.
const ForwardedHeader = "X-Underlay-Forwarded-By"

// API serves the Orbiter-compatible HTTP API of a Controller.
type API struct {
	cfg     APIConfig
	c       *Controller
	log     *slog.Logger
	metrics *apiMetrics
	limiter *rateLimiter // nil: no rate limit
	// authReads is whether reads want a token: there are tokens, and
	// reads are not open (OpenReads).
	authReads bool
	// guesses limits failed token checks per client, on every route that
	// checks one (reads with authReads and /metrics are not otherwise
	// rate-limited), whatever RateLimit says.
	guesses *rateLimiter
	// reads limits each client's reads when anyone may read (not
	// authReads), apart from its scaling requests; nil: no limit.
	reads  *rateLimiter
	nonces *nonces
	// crossSite refuses the scaling requests a browser says another
	// site's page made (Sec-Fetch-Site, Origin).
	crossSite *http.CrossOriginProtection
	// signatures remembers the MACs of accepted webhook signatures for
	// twice WebhookMaxAge, so that none is accepted twice.
	signatures *nonces
	peerClient *http.Client
	// readers counts open event streams.
	readers atomic.Int64

	clientsMu sync.Mutex // guards following fields
	// clientReaders counts each client's open event streams; a client
	// without any has no entry, so it holds at most MaxEventReaders.
	clientReaders map[netip.Prefix]int
}

// NewAPI returns the API of c.
func NewAPI(cfg APIConfig, c *Controller, log *slog.Logger) *API {
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = 15 * time.Second
	}
	if cfg.WebhookMaxAge <= 0 {
		cfg.WebhookMaxAge = DefaultWebhookMaxAge
	}
	if cfg.Peer.Timeout <= 0 {
		cfg.Peer.Timeout = 20 * time.Second
	}
	cfg.Limits = cfg.Limits.withDefaults()
	a := &API{crossSite: http.NewCrossOriginProtection(), cfg: cfg, c: c, log: log.With("component", "scale_api"),
		nonces: newNonces(2*PeerSkew, maxNonces), signatures: newNonces(2*cfg.WebhookMaxAge, maxWebhookSignatures), peerClient: newPeerClient(cfg.Peer), clientReaders: map[netip.Prefix]int{},
		authReads: cfg.Tokens != nil && !cfg.OpenReads}
	if cfg.Limits.RateLimit > 0 {
		a.limiter = newRateLimiter(cfg.Limits.RateLimit, cfg.Limits.RateBurst, c.cfg.Now)
		if !a.authReads {
			a.reads = newRateLimiter(cfg.Limits.RateLimit, cfg.Limits.RateBurst, c.cfg.Now)
		}
	}
	// Failed token checks are limited whatever the request limit: without
	// one, at the default rate.
	guessRate := cfg.Limits.RateLimit
	if !(guessRate > 0) || math.IsInf(guessRate, 1) {
		guessRate = DefaultRateLimit
	}
	a.guesses = newRateLimiter(guessRate, cfg.Limits.RateBurst, c.cfg.Now)
	a.metrics = newAPIMetrics(cfg.Registerer, a)
	a.crossSite.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.refuse("cross_site")
		a.log.Debug("cross-site request refused", a.withClient(r, "path", r.URL.Path, "origin", r.Header.Get("Origin"), "sec_fetch_site", r.Header.Get("Sec-Fetch-Site"))...)
		writeJSON(w, http.StatusForbidden, errorBody{Error: "cross-site request refused: a page of another site may not scale services (Sec-Fetch-Site or Origin)"})
	}))
	return a
}

// Handler routes Orbiter's paths, under /v1/orbiter and without it:
//
//	POST /handle/{autoscaler}/{service}/{direction}   (bearer token)
//	POST /handle/{autoscaler}/{service}               (bearer token; {"direction": true|false|"up"|"down"})
//	GET  /autoscaler, /health, /events                (token unless OpenReads, but health)
//
// and underlay's:
//
//	POST /v1/underlay/alertmanager, /alertmanager, /v1/underlay/alertmanager/{service}[/{direction}]
//	POST /v1/underlay/services/{service}/scale        (bearer token; {"direction": "up"|"down"} or {"replicas": N})
//	GET  /v1/underlay/services, /v1/underlay/services/{service}/history, /v1/underlay/leader, /v1/underlay/events
//
// Orbiter's handle routes also take Alertmanager webhook bodies. Scaling
// routes are rate-limited per client, then authenticated, then passed on
// to the leader by a follower; reads (health excepted) are rate-limited
// per client, apart, when anyone may read (OpenReads, or no Tokens).
func (a *API) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, prefix := range []string{"/v1/orbiter", ""} {
		mux.Handle("POST "+prefix+"/handle/{autoscaler}/{service}/{direction}", a.scaling(maxWebhookBody, a.toLeader(a.handleRoute)))
		mux.Handle("POST "+prefix+"/handle/{autoscaler}/{service}", a.scaling(maxWebhookBody, a.toLeader(a.handleBody)))
		mux.Handle("GET "+prefix+"/autoscaler", a.read(a.list))
		mux.Handle("GET "+prefix+"/health", a.limitBody(maxBody, http.HandlerFunc(a.health)))
		mux.Handle("GET "+prefix+"/events", a.read(a.events))
	}
	for _, path := range []string{"/v1/underlay/alertmanager", "/alertmanager", "/v1/underlay/alertmanager/{service}", "/v1/underlay/alertmanager/{service}/{direction}"} {
		mux.Handle("POST "+path, a.scaling(maxWebhookBody, a.requireSignature(a.toLeader(a.alertmanager))))
	}
	mux.Handle("POST /v1/underlay/services/{service}/scale", a.scaling(maxBody, a.toLeader(a.scaleNative)))
	mux.Handle("GET /v1/underlay/services", a.read(a.list))
	mux.Handle("GET /v1/underlay/services/{service}/history", a.read(a.history))
	mux.Handle("GET /v1/underlay/leader", a.read(a.leader))
	mux.Handle("GET /v1/underlay/events", a.read(a.events))
	return jsonMuxErrors(mux)
}

// jsonMuxErrors answers the mux's own refusals — 404 for a path no route
// takes, 405 for a method a route does not — in JSON, as every other
// answer of the API, instead of net/http's plain text (and a redirect to
// a cleaned path with its Location, instead of HTML); every answer says
// nosniff.
func jsonMuxErrors(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		noSniff(w) // on every answer, a leader's passed on included
		escaped := r.URL.EscapedPath()
		if _, pattern := mux.Handler(r); pattern != "" && cleanPath(escaped) == escaped {
			mux.ServeHTTP(w, r)
			return
		}
		buf := &bufferedAnswer{header: http.Header{}, code: http.StatusOK}
		mux.ServeHTTP(buf, r)
		msg := strings.ToLower(strings.TrimSpace(buf.body.String()))
		for _, h := range []string{"Allow", "Location"} {
			if v := buf.header.Get(h); v != "" {
				w.Header().Set(h, v)
			}
		}
		if loc := buf.header.Get("Location"); loc != "" {
			// The mux redirects a path it cleans (a "..", a "//"),
			// whether a route takes the clean one or not.
			msg = "not a clean path: it is " + termtext.Q(loc)
		}
		writeJSON(w, buf.code, errorBody{Error: fmt.Sprintf("%s %s: %s", r.Method, termtext.Q(r.URL.Path), msg)})
	})
}

// cleanPath is p as net/http's mux cleans it before routing (and
// redirects to when it differs): no ".", "..", or empty segment; a
// trailing slash kept.
func cleanPath(p string) string {
	if p == "" || p[0] != '/' {
		p = "/" + p
	}
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c
}

// scaling is the chain of every scaling route: requests another site's
// page made refused, a body limit, requests passed on by a peer verified,
// the rate limit, the token. A page of any site can make a browser POST
// here without a CORS preflight (a form, fetch in no-cors mode); it
// cannot add a token, but with --insecure-no-auth none is asked for, and
// control's address is often one the browser reaches (127.0.0.1).
func (a *API) scaling(limit int64, next http.Handler) http.Handler {
	return a.crossSite.Handler(a.limitBody(limit, a.peerAuth(a.rateLimit(a.RequireToken(next)))))
}

// read is the chain of the GET routes: a browser's cross-site read
// refused, then the token when reads want one (AuthReads), else the read
// rate limit.
func (a *API) read(next http.HandlerFunc) http.Handler {
	h := http.Handler(next)
	if a.authReads {
		h = a.RequireToken(h)
	}
	return a.SameSiteRead(a.limitBody(maxBody, a.ReadLimit(h)))
}

// CrossSiteRead reports whether r is a read a page of another origin made
// in a browser: a fetch, an EventSource, an image (Sec-Fetch-Site other
// than same-origin or none, or an Origin not r's Host). The browser keeps
// the answer from that page (no CORS), but the server would still build
// it — a Consul read, a whole snapshot — or hold a stream open, at that
// page's pace, from the operator's address and within the operator's
// budgets. A navigation (a link followed, the address typed) is the
// operator's own reading; clients that are no browser send neither
// header.
func CrossSiteRead(r *http.Request) bool {
	if r.Header.Get("Sec-Fetch-Mode") == "navigate" {
		return false
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return true
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		return err != nil || u.Host != r.Host
	}
	return false
}

// SameSiteRead answers 403 to a read another site's page made
// (CrossSiteRead) before next, its limits and token check included, sees
// it, counted as cross_site. Every GET route but health is wrapped in it,
// and so are reads served beside the API (/metrics).
func (a *API) SameSiteRead(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if CrossSiteRead(r) {
			a.refuse("cross_site")
			a.log.Debug("cross-site read refused", a.withClient(r, "path", r.URL.Path, "origin", r.Header.Get("Origin"), "sec_fetch_site", r.Header.Get("Sec-Fetch-Site"))...)
			writeJSON(w, http.StatusForbidden, errorBody{Error: "cross-site request refused: a page of another site may not read the autoscaler (Sec-Fetch-Site or Origin)"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// AuthReads reports whether reads want a token: there are tokens, and
// reads are not open (OpenReads). Handlers served beside the API that
// serve reads (/metrics, the dashboard's) follow it.
func (a *API) AuthReads() bool { return a.authReads }

// ReadLimit holds the reads of each client to the rate limit (--rate-limit
// a second after --rate-burst; beyond, 429 with Retry-After) when anyone
// may read (OpenReads, or no Tokens), in a bucket apart from the client's scaling
// requests, so that reading never uses up what a webhook sender may scale:
// open reads cost work (the history and leader routes read Consul) that
// nothing else bounds. Otherwise reads need a token (AuthReads), and failed
// checks are limited (GuessLimit): it passes every request. Handlers served
// beside the API that anyone may read (/metrics, the dashboard's reads)
// are wrapped in it.
func (a *API) ReadLimit(next http.Handler) http.Handler {
	if a.reads == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		client := a.client(r)
		if ok, wait := a.reads.allow(client); !ok {
			a.refuse("read_rate_limited")
			a.tooMany(w, wait, fmt.Sprintf("too many reads from %s", client))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// errorBody is every error response.
type errorBody struct {
	Error string `json:"error"`
}

// RequireToken is the API's token check as middleware (the package's
// RequireToken with this API's tokens, counting and logging refusals), for
// other handlers served beside the API, such as /metrics when reads want
// a token. Requests a peer passed on, verified, pass. A client whose
// failed checks used up its rate is answered 429 (GuessLimit).
func (a *API) RequireToken(next http.Handler) http.Handler {
	checked := a.GuessLimit(RequireToken(a.cfg.Tokens, a.unauthenticated, next))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := peerOf(r.Context()); ok {
			next.ServeHTTP(w, r)
			return
		}
		checked.ServeHTTP(w, r)
	})
}

// GuessLimit answers 429 to a client whose failed token checks used up its
// rate (--rate-limit a second after --rate-burst) before its token is
// looked at, so that tokens cannot be guessed at the speed of the network
// on any route, reads included. Handlers served beside the API that check
// tokens themselves (the dashboard's session cookie) are wrapped in it and
// report each failed check with TokenFailed.
func (a *API) GuessLimit(next http.Handler) http.Handler {
	if a.cfg.Tokens == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		client := a.client(r)
		if empty, wait := a.guesses.empty(client); empty {
			a.refuse("token_guesses")
			a.tooMany(w, wait, fmt.Sprintf("too many requests with a bad or no token from %s", client))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// client is the client r's limits count against: its peer's address, or,
// from one of Limits.TrustedProxies, the client X-Forwarded-For names
// (clientAddr).
func (a *API) client(r *http.Request) netip.Prefix {
	return addrKey(clientAddr(r.RemoteAddr, r.Header.Values(ForwardedForHeader), a.cfg.Limits.TrustedProxies))
}

// Client names who sent r, as the limits count it (client) and as every
// log line and decision source names it: from one of
// Limits.TrustedProxies, the client X-Forwarded-For names, with via the
// proxy (r's peer, "ip:port"); else r's peer, via "": an X-Forwarded-For
// from any other peer is not believed.
func (a *API) Client(r *http.Request) (client, via string) {
	ip := clientAddr(r.RemoteAddr, r.Header.Values(ForwardedForHeader), a.cfg.Limits.TrustedProxies)
	if !ip.IsValid() || ip == remoteAddr(r.RemoteAddr) {
		return r.RemoteAddr, ""
	}
	return ip.String(), r.RemoteAddr
}

// withClient is args, a log line's attributes, after those naming r's
// client (Client): client, and via when it came through a trusted proxy.
func (a *API) withClient(r *http.Request, args ...any) []any {
	client, via := a.Client(r)
	if via == "" {
		return append([]any{"client", client}, args...)
	}
	return append([]any{"client", client, "via", via}, args...)
}

// TokenFailed takes a failed token check of r's client from its rate.
func (a *API) TokenFailed(r *http.Request) {
	a.guesses.allow(a.client(r))
}

// unauthenticated counts and logs a request refused for its token, and
// takes it from its client's failed checks; at debug level, since anyone
// can send many (the metric shows a flood).
func (a *API) unauthenticated(r *http.Request, err error) {
	a.refuse("unauthenticated")
	a.TokenFailed(r)
	a.log.Debug("unauthenticated request refused", a.withClient(r, "path", r.URL.Path, "problem", err)...)
}

// maxWebhookSignatures bounds the webhook signatures remembered: 65,536
// within twice --webhook-max-age (10 minutes by default) is over a hundred
// signed webhooks a second. Beyond, signed webhooks are answered 503 until
// some expire; only a holder of the secret can fill it.
const maxWebhookSignatures = 1 << 16

// requireSignature checks the webhook signature of the Alertmanager routes
// when a secret is set, before a follower passes the request on: the
// leader trusts the follower's check. A signature is accepted once: the
// same one again within the window — a captured request sent again, or a
// retry signed in the same second — is answered 503, so that a sender
// retrying signs anew, and acts on nothing.
func (a *API) requireSignature(next http.Handler) http.Handler {
	if a.cfg.WebhookSecret == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := peerOf(r.Context()); ok {
			next.ServeHTTP(w, r)
			return
		}
		body, ok := a.readBody(w, r)
		if !ok {
			return
		}
		secret := a.cfg.WebhookSecret.Value()
		now := a.c.cfg.Now()
		mac, err := VerifySignature(secret, body, r.Header.Get(TimestampHeader), r.Header.Get(SignatureHeader), now, a.cfg.WebhookMaxAge)
		if len(secret) == 0 {
			// Anyone can sign with an empty key: no key, no entry.
			err = fmt.Errorf("%w: this instance has no webhook secret in use", ErrBadSignature)
		}
		if err != nil {
			a.refuse("bad_signature")
			a.log.Warn("webhook signature refused", a.withClient(r, "path", r.URL.Path, "err", err)...)
			writeJSON(w, http.StatusUnauthorized, errorBody{Error: err.Error()})
			return
		}
		switch err := a.signatures.record(string(mac), now); {
		case errors.Is(err, errNonceSeen):
			a.refuse("replayed_signature")
			a.log.Warn("webhook signature accepted once already; refused (a captured request sent again, or a retry signed within the same second)",
				a.withClient(r, "path", r.URL.Path, "timestamp", r.Header.Get(TimestampHeader))...)
			w.Header().Set("Retry-After", "1")
			writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: fmt.Sprintf(
				"%v: this signature was accepted once already, nothing is done again; a retry must be signed anew, with a new %s", ErrBadSignature, TimestampHeader)})
			return
		case err != nil:
			a.refuse("busy")
			a.log.Warn("webhook refused: too many signatures to remember within twice --webhook-max-age", a.withClient(r, "bound", maxWebhookSignatures)...)
			w.Header().Set("Retry-After", "5")
			writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: fmt.Sprintf(
				"%d signed webhooks accepted within %s already, the most this instance remembers to refuse their replay; retry shortly", maxWebhookSignatures, 2*a.cfg.WebhookMaxAge)})
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		next.ServeHTTP(w, r)
	})
}

// toLeader passes a scaling request on to the leader when this instance
// follows, forwarding is on, the instances share a peer secret and the
// leader's address may be dialled and is among Peer.Allow (--peers);
// otherwise next answers it (on a follower, 503 naming the leader). The
// caller's credentials are checked here and never passed on: see forward.
func (a *API) toLeader(next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !a.cfg.ForwardToLeader || r.Header.Get(ForwardedHeader) != "" {
			next(w, r)
			return
		}
		var nl *NotLeaderError
		if _, err := a.c.leading(r.Context()); !errors.As(err, &nl) {
			next(w, r)
			return
		}
		ok, why := a.forwardable(nl.Leader)
		switch {
		case why != "":
			a.log.Warn("leader not passed on to", "leader", nl.Leader, "why", why)
			body := struct {
				errorBody
				Leader string `json:"leader,omitempty"`
			}{errorBody: errorBody{Error: ErrNotLeader.Error() + "; " + why}}
			// Named as any follower that does not forward names it, unless
			// --peers leaves it out.
			if a.listed(nl.Leader) {
				body.Leader = nl.Leader
				w.Header().Set(LeaderHeader, nl.Leader)
			}
			writeJSON(w, http.StatusServiceUnavailable, body)
		case ok:
			a.forward(w, r, nl.Leader)
		default:
			next(w, r)
		}
	})
}

// listedLeader is err, but for a NotLeaderError naming a leader not among
// Peer.Allow (--peers): that is the leader key's word only, so the caller
// is not told to send its request, and its token, there (underlay scale
// --follow-leader would); it is logged instead.
func (a *API) listedLeader(err error) error {
	var nl *NotLeaderError
	if !errors.As(err, &nl) || a.listed(nl.Leader) {
		return err
	}
	a.log.Warn("the leader key names an address not among --peers; not named to the caller", "leader", nl.Leader, "peers", a.cfg.Peer.Allow)
	return &NotLeaderError{Unknown: errors.New("the leader key names an address not among this instance's --peers")}
}

// listed reports whether leader may be named to callers: --peers lists it,
// or no --peers was given, or it is empty.
func (a *API) listed(leader string) bool {
	allow := a.cfg.Peer.Allow
	return leader == "" || len(allow) == 0 || slices.Contains(allow, leader)
}

// dialable reports whether a leader's advertised address can be dialled:
// host:port with a host that is not an unspecified address (":8000" or
// "0.0.0.0:8000", the default when the leader listens on every interface).
func dialable(addr string) bool {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" || port == "" {
		return false
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsUnspecified() {
		return false
	}
	return true
}

func (a *API) handleRoute(w http.ResponseWriter, r *http.Request) {
	// Only up and down: Orbiter's booleans belong to the body form.
	d, err := ParseDirection(r.PathValue("direction"))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{Error: err.Error()})
		return
	}
	body, ok := a.readBody(w, r)
	if !ok {
		return
	}
	if LooksLikeAlertmanager(body) {
		// An Alertmanager webhook pointed at Orbiter's route: act per
		// firing alert, never on resolved ones or re-sends.
		a.webhook(w, r, body, r.PathValue("autoscaler"), d)
		return
	}
	a.scale(w, r, Request{Direction: d})
}

func (a *API) handleBody(w http.ResponseWriter, r *http.Request) {
	body, ok := a.readBody(w, r)
	if !ok {
		return
	}
	if LooksLikeAlertmanager(body) {
		a.webhook(w, r, body, r.PathValue("autoscaler"), "")
		return
	}
	dir, err := parseBody(body)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{Error: err.Error()})
		return
	}
	a.scale(w, r, Request{Direction: dir})
}

// alertmanager serves the Alertmanager webhook routes, with the service
// and direction taken from the route when it names them.
func (a *API) alertmanager(w http.ResponseWriter, r *http.Request) {
	body, ok := a.readBody(w, r)
	if !ok {
		return
	}
	var err error
	var dir Direction
	if raw := r.PathValue("direction"); raw != "" {
		if dir, err = ParseDirection(raw); err != nil {
			writeJSON(w, http.StatusBadRequest, errorBody{Error: err.Error()})
			return
		}
	}
	a.webhook(w, r, body, AutoswarmName, dir)
}

// webhookAnswer is the answer to an Alertmanager webhook.
type webhookAnswer struct {
	Results []AlertResult `json:"results"`
	Error   string        `json:"error,omitempty"`
}

// webhook acts on an Alertmanager body. It answers 200 with one result per
// alert — refusals and per-alert mistakes included, since a retry would not
// change them — and 503 when any alert met an unavailable dependency or a
// follower, so that Alertmanager retries (alerts that scaled are then
// recognised as duplicates).
func (a *API) webhook(w http.ResponseWriter, r *http.Request, body []byte, autoscaler string, dir Direction) {
	msg, err := ParseAlertmanager(bytes.NewReader(body))
	if errors.Is(err, ErrTooManyAlerts) {
		a.refuse("too_many_alerts")
		a.log.Warn("webhook refused: too many alerts; set max_alerts in Alertmanager's webhook_config", a.withClient(r, "err", err)...)
		writeJSON(w, http.StatusRequestEntityTooLarge, errorBody{Error: err.Error()})
		return
	}
	if err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{Error: err.Error()})
		return
	}
	if autoscaler != AutoswarmName {
		writeJSON(w, http.StatusNotFound, errorBody{Error: fmt.Sprintf("autoscaler %s: %v (services detected in the swarm are under %q)", termtext.Q(autoscaler), ErrNotFound, AutoswarmName)})
		return
	}
	results := a.c.HandleAlerts(r.Context(), msg, r.PathValue("service"), dir, "alertmanager "+a.source(r))
	if results == nil {
		results = []AlertResult{} // a list, of none: not null
	}
	ans := webhookAnswer{Results: results}
	code := http.StatusOK
	for i, res := range results {
		if err := a.listedLeader(res.Err); err != res.Err {
			res.Err, res.Reason = err, err.Error()
			results[i] = res
		}
		if res.Err != nil && statusOf(res.Err) >= 500 {
			code = http.StatusServiceUnavailable
			ans.Error = res.Err.Error()
			var nl *NotLeaderError
			if errors.As(res.Err, &nl) && nl.Leader != "" {
				w.Header().Set(LeaderHeader, nl.Leader)
			}
		}
	}
	if code != http.StatusOK {
		a.log.Warn("webhook not fully handled; Alertmanager will retry", "err", ans.Error)
	}
	writeJSON(w, code, ans)
}

// scaleBody is the body of POST /v1/underlay/services/{service}/scale:
// a direction, or a replica count.
type scaleBody struct {
	Direction string `json:"direction,omitempty"`
	Replicas  *int   `json:"replicas,omitempty"`
}

func (a *API) scaleNative(w http.ResponseWriter, r *http.Request) {
	body, ok := a.readBody(w, r)
	if !ok {
		return
	}
	var b scaleBody
	err := decodeStrict(body, &b)
	if err == nil {
		err = keysOnce(body, true, "direction", "replicas")
	}
	if err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{Error: "malformed JSON body: " + err.Error() + ` (want {"direction": "up"|"down"} or {"replicas": N})`})
		return
	}
	if b.Replicas == nil && b.Direction == "" {
		if msg := noScaleField(body); msg != "" {
			writeJSON(w, http.StatusBadRequest, errorBody{Error: msg})
			return
		}
	}
	var req Request
	switch {
	case b.Replicas != nil && b.Direction != "":
		writeJSON(w, http.StatusBadRequest, errorBody{Error: "give direction or replicas, not both"})
		return
	case b.Replicas != nil:
		req.To = b.Replicas
	default:
		d, err := ParseDirection(b.Direction)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, errorBody{Error: err.Error() + " (or give replicas)"})
			return
		}
		req.Direction = d
	}
	a.scale(w, r, req)
}

// noScaleField says what is wrong with a native scale body that decoded
// to neither a direction nor replicas, which a null or a missing field
// both decode to: answered as ParseDirection("") it would be an unknown
// direction "", which the body never gave. It is "" for a direction
// given as "", which ParseDirection names. body has decoded already.
func noScaleField(body []byte) string {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return ""
	}
	null := func(name string) bool { return bytes.Equal(bytes.TrimSpace(fields[name]), []byte("null")) }
	switch {
	case null("replicas"):
		return `replicas is null: want a count of replicas, 0 or more (or give "direction": "up"|"down")`
	case null("direction"):
		return `direction is null: want "up" or "down" (or give "replicas": N)`
	case fields["direction"] == nil:
		return `no direction or replicas: want {"direction": "up"|"down"} or {"replicas": N}`
	}
	return ""
}

// decodeStrict decodes the JSON object b into v, refusing a field v does
// not have, named — a field ignored would scale for real what its sender
// meant otherwise (a "dry_run", a typo) — and anything after the object.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON object")
	}
	return nil
}

func (a *API) history(w http.ResponseWriter, r *http.Request) {
	if a.cfg.History == nil {
		writeJSON(w, http.StatusNotImplemented, errorBody{Error: "no history store"})
		return
	}
	recs, bad, err := a.cfg.History.List(r.Context(), r.PathValue("service"))
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: fmt.Sprintf("%v: %v", ErrUnavailable, err)})
		return
	}
	writeJSON(w, http.StatusOK, HistoryAnswer{Data: recs, BadRecords: bad})
}

// HistoryAnswer answers GET /v1/underlay/services/{service}/history.
type HistoryAnswer struct {
	// Data are the records, oldest first.
	Data []Record `json:"data"`
	// BadRecords are the records that could not be read, left out of Data.
	BadRecords []BadRecord `json:"bad_records,omitempty"`
}

// leaderInfo answers GET /v1/underlay/leader.
type leaderInfo struct {
	// Leading is true when this instance decides.
	Leading bool `json:"leading"`
	// Leader is the leader's advertised address, when known and, with
	// --peers, among them.
	Leader string `json:"leader,omitempty"`
	// Error says why a leader the key names is not given.
	Error string `json:"error,omitempty"`
}

func (a *API) leader(w http.ResponseWriter, r *http.Request) {
	info := leaderInfo{Leading: a.c.Leading()}
	if l := a.c.cfg.Leadership; l != nil {
		info.Leader, _ = l.Leader(r.Context())
	}
	// As on a follower's 503: an address --peers leaves out is the leader
	// key's word only, anyone's with KV write access, and is not given
	// out (at debug level: anyone may read; the scaling routes warn).
	if !a.listed(info.Leader) {
		a.log.Debug("the leader key names an address not among --peers; not named to the reader", "leader", info.Leader, "peers", a.cfg.Peer.Allow)
		info.Leader, info.Error = "", "the leader key names an address not among this instance's --peers"
	}
	writeJSON(w, http.StatusOK, info)
}

// keysOnce refuses, naming it, a key of the JSON object b that gives one of
// names a second time: the same key repeated, or in another letter case,
// which encoding/json takes for the same field (Unicode folding: "ſ" is
// "s") and decides on the last one — while a proxy, a log or a signing
// sender that reads the first sees another request than the one decided.
// With exact, a key must also be written as its name is. b has decoded
// already.
func keysOnce(b []byte, exact bool, names ...string) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if _, err := dec.Token(); err != nil { // {
		return err
	}
	given := map[string]string{} // name: the key that gave it
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, _ := tok.(string)
		for _, n := range names {
			if !strings.EqualFold(key, n) {
				continue
			}
			if exact && key != n {
				return fmt.Errorf("field %q: write it %q", key, n)
			}
			if prev, ok := given[n]; ok {
				return fmt.Errorf("field %q given twice (%q, then %q): which one counts would be a guess", n, prev, key)
			}
			given[n] = key
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return err
		}
	}
	return nil
}

// parseBody reads Orbiter's {"direction": true|false} (JSON booleans), or
// a direction string as ParseDirection takes it. A missing direction is an
// error: Orbiter took it for false and scaled down.
func parseBody(b []byte) (Direction, error) {
	var body struct {
		Direction json.RawMessage `json:"direction"`
	}
	if err := json.Unmarshal(b, &body); err != nil {
		return "", fmt.Errorf("malformed JSON body: %w", err)
	}
	if err := keysOnce(b, false, "direction"); err != nil {
		return "", fmt.Errorf("malformed JSON body: %w", err)
	}
	raw := string(body.Direction)
	switch {
	case raw == "" || raw == "null":
		return "", fmt.Errorf("%w: body has no direction", ErrUnknownDirection)
	case raw == "true":
		return Up, nil
	case raw == "false":
		return Down, nil
	}
	var s string
	if err := json.Unmarshal(body.Direction, &s); err != nil {
		return "", fmt.Errorf("%w: %s", ErrUnknownDirection, termtext.Lines(raw))
	}
	d, err := ParseDirection(s)
	if err != nil && (asciiEqualFold(s, "true") || asciiEqualFold(s, "false")) {
		return "", fmt.Errorf("%w: %q (a string; Orbiter's booleans are JSON true and false)", ErrUnknownDirection, s)
	}
	return d, err
}

func (a *API) scale(w http.ResponseWriter, r *http.Request, req Request) {
	req.Autoscaler = r.PathValue("autoscaler")
	req.Service = r.PathValue("service")
	req.Source = "http " + a.source(r)
	rec, err := a.c.Handle(r.Context(), req)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, rec)
}

// source is who sent r (Client): the client, "… via" the trusted proxy
// it came through; for a request a peer passed on, the source the peer
// named, "… via" the peer.
func (a *API) source(r *http.Request) string {
	if p, ok := peerOf(r.Context()); ok {
		return p.Client + " via " + p.By
	}
	if client, via := a.Client(r); via != "" {
		return client + " via " + via
	}
	return r.RemoteAddr
}

// writeError answers err with its status; a follower's 503 names the
// leader in LeaderHeader and in the body.
func (a *API) writeError(w http.ResponseWriter, r *http.Request, err error) {
	code := statusOf(err)
	err = a.listedLeader(err)
	body := struct {
		errorBody
		Leader string `json:"leader,omitempty"`
	}{errorBody: errorBody{Error: err.Error()}}
	var nl *NotLeaderError
	if errors.As(err, &nl) {
		body.Leader = nl.Leader
		if nl.Leader != "" {
			w.Header().Set(LeaderHeader, nl.Leader)
		}
	} else if code >= 500 {
		a.log.Warn("scaling request failed", "service", r.PathValue("service"), "err", err)
	}
	writeJSON(w, code, body)
}

// statusOf maps Handle's errors to HTTP statuses. Policy refusals are not
// errors: they are answered 200 with refused=true, so that webhook senders
// (Alertmanager) do not retry until something scales.
func statusOf(err error) int {
	switch {
	case errors.Is(err, ErrUnknownDirection), errors.Is(err, ErrBadWebhook), errors.Is(err, ErrBadReplicas):
		return http.StatusBadRequest
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrGlobalService):
		return http.StatusConflict
	case errors.Is(err, ErrBadPolicy):
		return http.StatusUnprocessableEntity
	}
	return http.StatusServiceUnavailable
}

// list answers Orbiter's {"data": [{"name": "autoswarm/<service>"}]},
// with underlay's fields beside the name.
func (a *API) list(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, struct {
		Data []ServiceInfo `json:"data"`
	}{a.c.Services()})
}

// health answers Orbiter's {"status": true, "info": {}} with the
// controller's Status beside; 503 with the problem in info while Docker is
// unreachable.
func (a *API) health(w http.ResponseWriter, _ *http.Request) {
	st := a.c.Status()
	body := struct {
		OK   bool              `json:"status"`
		Info map[string]string `json:"info"`
		Status
	}{true, map[string]string{}, st}
	code := http.StatusOK
	if !st.DockerConnected {
		body.OK = false
		body.Info["docker"] = "not connected"
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, body)
}

// eventsRetry is the least an event stream's client waits before
// reconnecting (the stream's retry: field, jittered up to twice it).
const eventsRetry = 2 * time.Second

// events streams every decision as a server-sent event: "event: decision",
// "id: <seq>", "data: <record JSON>". A reader that falls more than
// DefaultSubscriberBuffer records behind gets "event: overflow" and the
// stream ends; it never silently misses a decision.
func (a *API) events(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		writeJSON(w, http.StatusInternalServerError, errorBody{Error: "streaming unsupported"})
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
	release, ok := a.takeReader(w, r)
	if !ok {
		return
	}
	defer release()
	// A stream lasts: the server's read and write timeouts, meant for
	// requests, must not end it. It ends with the client or the server.
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Time{})
	rc.SetWriteDeadline(time.Time{})
	bus := a.c.Broadcaster()
	sub := bus.Subscribe()
	defer bus.Unsubscribe(sub)
	streamHeaders(w)
	w.WriteHeader(http.StatusOK)
	// Each stream its own reconnect time: after a restart of control or a
	// new leader, clients all on EventSource's default would come back at
	// the same instant.
	fmt.Fprint(w, httpserve.StreamRetry(eventsRetry))
	fmt.Fprint(w, ": underlay scale events\n\n")
	fl.Flush()
	tick := time.NewTicker(a.cfg.KeepAlive)
	defer tick.Stop()
	// When reads want a token it is checked again before each write: one
	// revoked since the stream opened ends it, as it refuses the next
	// request. (A peer's request was verified by its signature.)
	_, peer := peerOf(r.Context())
	recheck := a.authReads && !peer
	for {
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
			if recheck && CheckToken(a.cfg.Tokens, r) != nil {
				return
			}
			fmt.Fprint(w, ": keep-alive\n\n")
			fl.Flush()
		case rec, ok := <-sub.C:
			if recheck && CheckToken(a.cfg.Tokens, r) != nil {
				return
			}
			if !ok {
				if sub.Overflowed() {
					fmt.Fprint(w, "event: overflow\ndata: {\"error\":\"reader fell behind; reconnect and read the history\"}\n\n")
					fl.Flush()
				}
				return
			}
			b, _ := json.Marshal(rec)
			if _, err := fmt.Fprintf(w, "event: decision\nid: %d\ndata: %s\n\n", rec.Seq, b); err != nil {
				return
			}
			fl.Flush()
		}
	}
}

// streamHeaders are the headers of an event stream's answer.
func streamHeaders(w http.ResponseWriter) {
	noSniff(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
}

// takeReader counts one more event stream of r's client; beyond
// MaxEventReaders it answers 503 with Retry-After, beyond the client's
// MaxEventReadersPerClient 429, and returns false. The caller gives the
// stream back with release.
func (a *API) takeReader(w http.ResponseWriter, r *http.Request) (release func(), ok bool) {
	lim := a.cfg.Limits
	if n := a.readers.Add(1); n > int64(lim.MaxEventReaders) {
		a.readers.Add(-1)
		a.refuse("busy")
		w.Header().Set("Retry-After", "5")
		writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: fmt.Sprintf("%d event streams are open already, the most this instance serves", lim.MaxEventReaders)})
		return nil, false
	}
	client := a.client(r)
	a.clientsMu.Lock()
	held := a.clientReaders[client]
	if held >= lim.MaxEventReadersPerClient {
		a.clientsMu.Unlock()
		a.readers.Add(-1)
		a.refuse("busy_client")
		w.Header().Set("Retry-After", "5")
		writeJSON(w, http.StatusTooManyRequests, errorBody{Error: fmt.Sprintf("client %s holds %d event streams already, the most one client may (--max-event-readers-per-client); close one", client, held)})
		return nil, false
	}
	a.clientReaders[client] = held + 1
	a.clientsMu.Unlock()
	return func() {
		a.clientsMu.Lock()
		if a.clientReaders[client]--; a.clientReaders[client] <= 0 {
			delete(a.clientReaders, client)
		}
		a.clientsMu.Unlock()
		a.readers.Add(-1)
	}, true
}

// LimitStreams holds an event stream served beside the API (the
// dashboard's) to the API's caps: it counts among MaxEventReaders with the
// API's own streams (beyond, 503 with Retry-After), and among its client's
// MaxEventReadersPerClient (beyond, 429).
func (a *API) LimitStreams(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		release, ok := a.takeReader(w, r)
		if !ok {
			return
		}
		defer release()
		next.ServeHTTP(w, r)
	})
}

// RateLimit holds a route served beside the API that checks a token (the
// dashboard's login) to the scaling routes' rate limit: each client's
// requests there and on the API share one budget, so that guessing tokens
// is no faster there; beyond, 429 with Retry-After.
func (a *API) RateLimit(next http.Handler) http.Handler { return a.rateLimit(next) }

// jsonType is the Content-Type of the API's JSON answers.
const jsonType = "application/json; charset=utf-8"

// noSniff keeps a browser from taking an answer for what its bytes look
// like (an error echoing a client's service name or direction as HTML).
func noSniff(w http.ResponseWriter) { w.Header().Set("X-Content-Type-Options", "nosniff") }

func writeJSON(w http.ResponseWriter, code int, v any) {
	noSniff(w)
	w.Header().Set("Content-Type", jsonType)
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
