package scale

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/underlay/underlay/internal/httpserve"
)

// Limits keep slow and greedy clients from holding the API. Zero fields
// take the defaults below.
type Limits struct {
	// ReadHeaderTimeout bounds reading a request's headers (5s).
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included (30s).
	ReadTimeout time.Duration
	// WriteTimeout bounds an answer, from the end of the request's
	// headers (30s); the event stream is exempt.
	WriteTimeout time.Duration
	// IdleTimeout closes kept-alive connections idle this long (2m).
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's headers (32 KiB).
	MaxHeaderBytes int
	// MaxEventReaders bounds concurrent readers of the event stream (64);
	// one more is answered 503.
	MaxEventReaders int
	// MaxEventReadersPerClient bounds the event streams one client (an
	// IPv4 address, or an IPv6 /64, as the rate limit tells them apart)
	// holds, so that one cannot take every stream (8, at most
	// MaxEventReaders); one more is answered 429.
	MaxEventReadersPerClient int
	// RateLimit is how many scaling requests a second each client may
	// make, after a burst of RateBurst (10 a second, burst 40); beyond, 429
	// with Retry-After. When anyone may read (OpenReads, or no Tokens),
	// each client's reads are held to the same rate, counted apart.
	// Negative lifts the limit on requests (--rate-limit 0), never the one
	// on failed token checks, which then holds at DefaultRateLimit a
	// second after RateBurst.
	RateLimit float64
	RateBurst int
	// TrustedProxies are the reverse proxies (--trusted-proxies) whose
	// X-Forwarded-For names the client that the limits above count a
	// request against: its rightmost hop not among them. A request from
	// any other peer is its peer's, whatever it claims; none by default,
	// when every client behind a proxy shares the proxy's budgets.
	TrustedProxies []netip.Prefix
}

// Default limits.
const (
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultReadTimeout       = 30 * time.Second
	DefaultWriteTimeout      = 30 * time.Second
	DefaultIdleTimeout       = 2 * time.Minute
	DefaultMaxHeaderBytes    = 32 << 10
	DefaultMaxEventReaders   = 64
	DefaultRateLimit         = 10
	DefaultRateBurst         = 40
)

// DefaultMaxEventReadersPerClient leaves a page in a few browser tabs to
// each of several people behind one address, and 56 of the default 64
// streams to other clients.
const DefaultMaxEventReadersPerClient = 8

func (l Limits) withDefaults() Limits {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&l.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	def(&l.ReadTimeout, DefaultReadTimeout)
	def(&l.WriteTimeout, DefaultWriteTimeout)
	def(&l.IdleTimeout, DefaultIdleTimeout)
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if l.MaxEventReaders <= 0 {
		l.MaxEventReaders = DefaultMaxEventReaders
	}
	if l.MaxEventReadersPerClient <= 0 {
		l.MaxEventReadersPerClient = DefaultMaxEventReadersPerClient
	}
	l.MaxEventReadersPerClient = min(l.MaxEventReadersPerClient, l.MaxEventReaders)
	if l.RateLimit == 0 {
		l.RateLimit = DefaultRateLimit
	}
	if l.RateBurst <= 0 {
		l.RateBurst = DefaultRateBurst
	}
	return l
}

// NewServer is the http.Server of the API (h: its handler, maybe inside a
// mux with /metrics) with limits l: every timeout set, headers bounded. The
// event stream lifts its own deadlines. The server's own errors go to log
// (httpserve.ErrorLog): TLS handshakes that fail at debug level, as a
// scanner must not flood the log; a handler's panic as an error. Every
// answer says nosniff, those of the routes around the API included
// (/metrics, a refused Host's 421, the outer mux's redirects).
func NewServer(h http.Handler, l Limits, log *slog.Logger) *http.Server {
	l = l.withDefaults()
	return &http.Server{
		Handler:           httpserve.NoSniff(h),
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		ReadTimeout:       l.ReadTimeout,
		WriteTimeout:      l.WriteTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
		ErrorLog:          httpserve.ErrorLog(log.With("component", "scale_http")),
	}
}

// apiMetrics count what the API refused and passed on.
type apiMetrics struct {
	refused   *prometheus.CounterVec
	forwarded *prometheus.CounterVec
	readers   prometheus.GaugeFunc
}

func newAPIMetrics(reg prometheus.Registerer, a *API) *apiMetrics {
	const ns, sub = "underlay", "scale"
	m := &apiMetrics{
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "http_refused_total",
			Help: "HTTP requests refused before any decision, by reason (unauthenticated, token_guesses, bad_signature, replayed_signature, bad_peer, cross_site, rate_limited, read_rate_limited, too_large, too_many_alerts, busy, busy_client).",
		}, []string{"reason"}),
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "http_forwarded_total",
			Help: "Requests a follower passed on to the leader, by result (ok; unreachable; unverified: the answer lacked the peer secret's proof).",
		}, []string{"result"}),
		readers: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "http_event_readers",
			Help: "Open event streams.",
		}, func() float64 { return float64(a.readers.Load()) }),
	}
	if reg != nil {
		reg.MustRegister(m.refused, m.forwarded, m.readers)
	}
	return m
}

func (a *API) refuse(reason string) { a.metrics.refused.WithLabelValues(reason).Inc() }

func (a *API) forwarded(result string) { a.metrics.forwarded.WithLabelValues(result).Inc() }

// limitBody bounds r's body to n bytes: a Content-Length above it is
// answered 413 at once, a longer body fails its read (readBody answers 413).
func (a *API) limitBody(n int64, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > n {
			a.tooLarge(w, n)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, n)
		next.ServeHTTP(w, r)
	})
}

func (a *API) tooLarge(w http.ResponseWriter, n int64) {
	a.refuse("too_large")
	w.Header().Set("Connection", "close")
	writeJSON(w, http.StatusRequestEntityTooLarge, errorBody{Error: fmt.Sprintf("request body larger than %d bytes", n)})
}

// readBody reads r's whole body; on failure it answers (413 for a body
// over the limit, 400 otherwise) and returns false.
func (a *API) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	b, err := io.ReadAll(r.Body)
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		a.tooLarge(w, tooBig.Limit)
		return nil, false
	case err != nil:
		writeJSON(w, http.StatusBadRequest, errorBody{Error: "read body: " + err.Error()})
		return nil, false
	}
	return b, true
}

// rateLimit answers 429, with Retry-After in whole seconds, to a client
// past its rate on scaling routes. Requests a peer passed on are not
// limited again.
func (a *API) rateLimit(next http.Handler) http.Handler {
	if a.limiter == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := peerOf(r.Context()); ok || a.allow(w, r) {
			next.ServeHTTP(w, r)
		}
	})
}

// tooMany answers 429 with Retry-After (whole seconds of wait) and the
// limits in force.
func (a *API) tooMany(w http.ResponseWriter, wait time.Duration, what string) {
	secs := max(1, int(math.Ceil(wait.Seconds())))
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	writeJSON(w, http.StatusTooManyRequests, errorBody{Error: fmt.Sprintf("%s: at most %g a second after a burst of %d; retry in %ds",
		what, a.cfg.Limits.RateLimit, a.cfg.Limits.RateBurst, secs)})
}

// allow takes one request of r's client from the rate limiter; past the
// rate it answers 429 and returns false.
func (a *API) allow(w http.ResponseWriter, r *http.Request) bool {
	if a.limiter == nil {
		return true
	}
	client := a.client(r)
	ok, wait := a.limiter.allow(client)
	if ok {
		return true
	}
	a.refuse("rate_limited")
	a.tooMany(w, wait, fmt.Sprintf("too many scaling requests from %s", client))
	return false
}
