package profiling

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"

	"github.com/underlay/underlay/internal/httpserve"
)

// CheckAddr accepts host:port addresses whose host is a loopback IP
// address or "localhost", and refuses every other one with an error naming it.
func CheckAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("profiler address %q: want HOST:PORT on loopback, such as 127.0.0.1:6060: %w", addr, err)
	}
	if port == "" {
		return fmt.Errorf("profiler address %q: no port", addr)
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("profiler address %q: %q is not a loopback address (the profiler is served on loopback only)", addr, host)
	}
	return nil
}

// Handler serves the profiles under /debug/pprof/.
func Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index) // also serves heap, goroutine, block, mutex...
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	// Loopback is reached by a page whose name an attacker pointed at
	// 127.0.0.1 (DNS rebinding), with that name as Host: only addresses
	// and localhost are answered.
	return httpserve.AllowedHosts{}.Handler("", sameOriginOnly(mux))
}

// sameOriginOnly refuses requests a browser says another site's page
// made (Sec-Fetch-Site cross-site or same-site): such a page cannot read
// the answer, but an <img> of /debug/pprof/trace?seconds=86400 would have
// the process trace for a day. Requests typed in the address bar ("none"),
// the profiler's own pages' and those of clients that send no such header
// (go tool pprof, curl) pass.
func sameOriginOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch site := r.Header.Get("Sec-Fetch-Site"); site {
		case "", "none", "same-origin":
			next.ServeHTTP(w, r)
		default:
			http.Error(w, "the profiler answers no request another site's page made (Sec-Fetch-Site: "+site+")", http.StatusForbidden)
		}
	})
}

// Serve serves Handler on addr, which CheckAddr must accept, until ctx ends.
func Serve(ctx context.Context, addr string, log *slog.Logger) error {
	if err := CheckAddr(addr); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("profiler: %w", err)
	}
	// A resolved "localhost" may still name a non-loopback address.
	if ip := ln.Addr().(*net.TCPAddr).IP; !ip.IsLoopback() {
		ln.Close()
		return fmt.Errorf("profiler address %q: listens on %s, not loopback", addr, ip)
	}
	// No write timeout: a CPU profile or trace streams for its duration
	// (and pprof refuses a duration beyond it).
	log = log.With("component", "profiling")
	srv := httpserve.NewServer(Handler(), log)
	srv.WriteTimeout = 0
	log.Info("serving Go profiles", "url", "http://"+ln.Addr().String()+"/debug/pprof/")
	if err := httpserve.Serve(ctx, ln, srv); err != nil {
		return fmt.Errorf("profiler: %w", err)
	}
	return nil
}
