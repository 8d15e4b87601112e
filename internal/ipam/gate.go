package ipam

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Gate serves Docker's IPAM protocol from the agent's start, before the
// node's identity is claimed in Consul. dockerd, starting at boot with
// containers on cluster-IPAM networks, activates the plugin and asks its
// capabilities first; a plugin that does not answer, it waits for (for
// ever, on socket activation's backlog) or looks for again for about 15
// s, then fails the containers with an unclear error. The gate answers
// those calls (and ReleasePool, which frees nothing) at once. Pool and
// address requests wait for Open, for at most the gate's timeout, then
// are refused, naming what the node waits for: no address is handed out,
// or released, before the node's identity is claimed, the claim that
// makes its allocator the only one of its identity.
type Gate struct {
	consul  string
	timeout time.Duration
	log     *slog.Logger
	open    chan struct{} // closed by Open
	// waitHook, when set, is called as a request starts to wait (tests).
	waitHook func()

	mu sync.Mutex // guards following fields
	// plugin is the plugin's handler, set by Open before open is closed.
	plugin http.Handler
	// why is why the identity is not claimed yet (nil: not yet tried),
	// or, claimed set, why the gate is not open yet although it is.
	why     error
	claimed bool
}

// NewGate returns a closed gate. consul is the address of the Consul
// agent the identity is claimed in, named in refusals; timeout bounds
// each request's wait (0: the plugin's default, 5 s); log may be nil.
func NewGate(consul string, timeout time.Duration, log *slog.Logger) *Gate {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	return &Gate{consul: consul, timeout: timeout, log: log.With("component", "ipam"), open: make(chan struct{})}
}

// Waiting records why the node's identity is not claimed yet, for the
// refusals. A nil Gate ignores it (the agent serves no plugin).
func (g *Gate) Waiting(why error) {
	if g == nil || why == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.why = why
}

// Open lets requests through to pl: call it once the node's identity is
// claimed. Later calls change nothing.
func (g *Gate) Open(pl *Plugin) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.plugin != nil {
		return
	}
	g.plugin = pl.Handler()
	close(g.open)
	g.log.Info("IPAM plugin serving pool and address requests: node identity claimed")
}

// OpenWhenListed lets requests through to pl once listed is closed
// (Reclaimer.Listed: the node's containers listed, so that its
// allocations pass over what they hold), and returns; or returns when
// ctx ends first, the gate still closed. Call it once the node's identity
// is claimed: until listed, requests wait, and are refused naming the
// listing. An agent restarted while Consul had lost a running container's
// address would otherwise hand it to a second container at the first
// request, before its reclaimer's first listing.
func (g *Gate) OpenWhenListed(ctx context.Context, pl *Plugin, listed <-chan struct{}) {
	select {
	case <-listed:
		g.Open(pl)
		return
	default:
	}
	g.mu.Lock()
	g.why, g.claimed = errors.New("reading in Consul what this node handed out, and listing this node's containers, first: no address a container holds is handed out again"), true
	g.mu.Unlock()
	g.log.Info("node identity claimed: pool and address requests wait for the first listing of this node's containers")
	select {
	case <-listed:
		g.Open(pl)
	case <-ctx.Done():
	}
}

// Handler returns the gate's HTTP handler.
func (g *Gate) Handler() http.Handler {
	mux := http.NewServeMux()
	handshake(mux)
	mux.HandleFunc("POST /"+methodReleasePool, g.releasePool)
	// Only the plugin's own calls wait: any other path is answered 404
	// at once, as the plugin would answer it.
	for _, m := range []string{methodRequestPool, methodRequestAddress, methodReleaseAddress} {
		mux.HandleFunc("POST /"+m, g.held)
	}
	return mux
}

// releasePool answers ReleasePool at once: before the gate opens no pool
// was served, so nothing is forgotten; once open, the plugin forgets it.
func (g *Gate) releasePool(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	h := g.plugin
	g.mu.Unlock()
	if h == nil {
		h = reply(func(context.Context, struct{ PoolID string }) (any, error) { return struct{}{}, nil })
	}
	h.ServeHTTP(w, r)
}

// held serves a pool or address request once the gate is open, within
// the gate's timeout from its arrival.
func (g *Gate) held(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), g.timeout)
	defer cancel()
	select {
	case <-g.open:
	default:
		if g.waitHook != nil {
			g.waitHook()
		}
		select {
		case <-g.open:
		case <-ctx.Done():
			if r.Context().Err() != nil {
				return // dockerd went away: nobody to answer
			}
			err := g.refusal()
			g.log.Warn("request refused before the node's identity is claimed", "method", strings.TrimPrefix(r.URL.Path, "/"), "err", err)
			w.Header().Set("Content-Type", pluginMediaType)
			writeErr(w, err)
			return
		}
	}
	g.mu.Lock()
	h := g.plugin
	g.mu.Unlock()
	// The plugin's own bound counts from the request's arrival.
	h.ServeHTTP(w, r.WithContext(ctx))
}

// refusal is the error of a request the gate held for its whole timeout.
func (g *Gate) refusal() error {
	g.mu.Lock()
	why, claimed := g.why, g.claimed
	g.mu.Unlock()
	if claimed {
		return fmt.Errorf("node identity claimed, IPAM not serving yet: %w (waited %s; is Consul answering, and dockerd?)", why, g.timeout)
	}
	if why == nil {
		why = errors.New("the agent has not tried yet")
	}
	return fmt.Errorf("node identity not yet claimed in Consul at %s: %w (waited %s; no address is handed out or released before the claim)", g.consul, why, g.timeout)
}
