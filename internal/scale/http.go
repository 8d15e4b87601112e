package scale

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// maxBody bounds request bodies; a direction needs a few bytes.
const maxBody = 64 << 10

// APIConfig configures the HTTP API.
type APIConfig struct {
	// Tokens authenticate mutating routes; nil disables authentication
	// (underlay control --insecure-no-auth).
	Tokens *Tokens
	// KeepAlive is the period of comment lines on the events stream, which
	// keep proxies from closing an idle stream (default 15s).
	KeepAlive time.Duration
}

// API serves the Orbiter-compatible HTTP API of a Controller.
type API struct {
	cfg APIConfig
	c   *Controller
	log *slog.Logger
}

// NewAPI returns the API of c.
func NewAPI(cfg APIConfig, c *Controller, log *slog.Logger) *API {
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = 15 * time.Second
	}
	return &API{cfg: cfg, c: c, log: log.With("component", "scale-api")}
}

// Handler routes Orbiter's paths, under /v1/orbiter and without it:
//
//	POST /handle/{autoscaler}/{service}/{direction}   (bearer token)
//	POST /handle/{autoscaler}/{service}               (bearer token; body {"direction": "up"|"down"|true|false})
//	GET  /autoscaler                                  (open)
//	GET  /health                                      (open)
//	GET  /events                                      (open; server-sent events)
func (a *API) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, prefix := range []string{"/v1/orbiter", ""} {
		mux.Handle("POST "+prefix+"/handle/{autoscaler}/{service}/{direction}", a.auth(http.HandlerFunc(a.handleRoute)))
		mux.Handle("POST "+prefix+"/handle/{autoscaler}/{service}", a.auth(http.HandlerFunc(a.handleBody)))
		mux.HandleFunc("GET "+prefix+"/autoscaler", a.list)
		mux.HandleFunc("GET "+prefix+"/health", a.health)
		mux.HandleFunc("GET "+prefix+"/events", a.events)
	}
	return mux
}

// errorBody is every error response.
type errorBody struct {
	Error string `json:"error"`
}

func (a *API) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.cfg.Tokens == nil {
			next.ServeHTTP(w, r)
			return
		}
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || !a.cfg.Tokens.Valid(strings.TrimSpace(token)) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="underlay"`)
			msg := "missing bearer token"
			if ok {
				msg = "invalid bearer token"
			}
			a.log.Warn("unauthenticated request refused", "path", r.URL.Path, "remote", r.RemoteAddr, "problem", msg)
			writeJSON(w, http.StatusUnauthorized, errorBody{Error: msg})
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (a *API) handleRoute(w http.ResponseWriter, r *http.Request) {
	// Only up and down: Orbiter's booleans belong to the body form.
	d := Direction(strings.ToLower(r.PathValue("direction")))
	if d != Up && d != Down {
		writeJSON(w, http.StatusBadRequest, errorBody{Error: fmt.Sprintf("%v: %q", ErrUnknownDirection, r.PathValue("direction"))})
		return
	}
	a.scale(w, r, d)
}

func (a *API) handleBody(w http.ResponseWriter, r *http.Request) {
	dir, err := parseBody(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{Error: err.Error()})
		return
	}
	a.scale(w, r, dir)
}

// parseBody reads Orbiter's {"direction": true|false}, or "up"/"down". A
// missing direction is an error: Orbiter took it for false and scaled down.
func parseBody(r io.Reader) (Direction, error) {
	var body struct {
		Direction json.RawMessage `json:"direction"`
	}
	if err := json.NewDecoder(r).Decode(&body); err != nil {
		return "", fmt.Errorf("malformed JSON body: %w", err)
	}
	raw := strings.TrimSpace(string(body.Direction))
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
		return "", fmt.Errorf("%w: %s", ErrUnknownDirection, raw)
	}
	if s == "true" || s == "false" {
		return "", fmt.Errorf("%w: %q (a string; Orbiter's booleans are JSON true and false)", ErrUnknownDirection, s)
	}
	return ParseDirection(s)
}

func (a *API) scale(w http.ResponseWriter, r *http.Request, dir Direction) {
	rec, err := a.c.Handle(r.Context(), Request{
		Autoscaler: r.PathValue("autoscaler"), Service: r.PathValue("service"),
		Direction: dir, Source: "http " + r.RemoteAddr,
	})
	if err != nil {
		code := statusOf(err)
		if code >= 500 {
			a.log.Warn("scaling request failed", "service", r.PathValue("service"), "err", err)
		}
		writeJSON(w, code, errorBody{Error: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, rec)
}

// statusOf maps Handle's errors to HTTP statuses. Policy refusals are not
// errors: they are answered 200 with refused=true, so that webhook senders
// (Alertmanager) do not retry until something scales.
func statusOf(err error) int {
	switch {
	case errors.Is(err, ErrUnknownDirection):
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
	bus := a.c.Broadcaster()
	sub := bus.Subscribe()
	defer bus.Unsubscribe(sub)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, ": underlay scale events\n\n")
	fl.Flush()
	tick := time.NewTicker(a.cfg.KeepAlive)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
			fmt.Fprint(w, ": keep-alive\n\n")
			fl.Flush()
		case rec, ok := <-sub.C:
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

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
