// Package httpserve is how underlay serves HTTP: the agent's /healthz and
// /metrics, its IPAM plugin on a socket systemd passed, the profiler and
// control's API all go through Serve, with the timeouts of NewServer.
// StreamRetry opens the server-sent event streams of control's API and
// dashboard, so that their clients spread their reconnects. It imports
// only the standard library.
package httpserve

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"
)

// Timeouts of NewServer: a slow or idle client never holds a connection
// for long. A handler that streams lifts its own deadline
// (http.ResponseController).
const (
	ReadHeaderTimeout = 5 * time.Second
	ReadTimeout       = 30 * time.Second
	WriteTimeout      = 30 * time.Second
	IdleTimeout       = 2 * time.Minute
	MaxHeaderBytes    = 32 << 10
	// ShutdownTimeout bounds the graceful shutdown once ctx ends.
	ShutdownTimeout = 5 * time.Second
)

// NewServer is an http.Server of h with every timeout set and headers
// bounded, whose own messages go to logger (see ErrorLog); every answer
// says nosniff (NoSniff).
func NewServer(h http.Handler, logger *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           NoSniff(h),
		ErrorLog:          ErrorLog(logger),
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       ReadTimeout,
		WriteTimeout:      WriteTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
	}
}

// NoSniff is h with every answer saying X-Content-Type-Options: nosniff,
// set before h runs: answers a handler does not type itself (a 421, a
// mux's redirect, promhttp's /metrics) may echo what a request sent, and
// a browser sniffing them could take them for a page.
func NoSniff(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		h.ServeHTTP(w, r)
	})
}

// ErrorLog is an http.Server's ErrorLog writing to logger: net/http's
// own messages, left unset, go to the process's standard logger, with no
// level and no component. A failed TLS handshake, which any client or
// scanner causes, is at debug level, so as not to flood the log; a
// handler's panic, a bug, at error; the rest (accept errors, a handler
// misusing its response) at warn.
func ErrorLog(logger *slog.Logger) *log.Logger {
	return log.New(errorLogWriter{logger}, "", 0)
}

// errorLogWriter is ErrorLog's writer: each Write is one message.
type errorLogWriter struct{ logger *slog.Logger }

func (w errorLogWriter) Write(p []byte) (int, error) {
	msg := strings.TrimSuffix(string(p), "\n")
	level := slog.LevelWarn
	switch {
	case strings.HasPrefix(msg, "http: TLS handshake error"):
		level = slog.LevelDebug
	case strings.Contains(msg, "panic serving"): // http: and http2:
		level = slog.LevelError
	}
	w.logger.Log(context.Background(), level, msg)
	return len(p), nil
}

// Serve serves srv on ln until ctx ends, over TLS when srv has a TLS
// configuration, then shuts it down, waiting up to ShutdownTimeout for
// requests in flight. Requests run under ctx, so open streams end with it
// rather than holding the shutdown; the connections of those still running
// after ShutdownTimeout are closed (a hijacked one is its handler's). It
// returns nil once ctx ended.
func Serve(ctx context.Context, ln net.Listener, srv *http.Server) error {
	return serve(ctx, ln, srv, ShutdownTimeout)
}

// serve is Serve with the shutdown bounded by timeout.
func serve(ctx context.Context, ln net.Listener, srv *http.Server, timeout time.Duration) error {
	srv.BaseContext = func(net.Listener) context.Context { return ctx }
	stopped, shutDown := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(shutDown)
		select {
		case <-ctx.Done():
		case <-stopped:
			return
		}
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		defer cancel()
		if err := srv.Shutdown(sctx); errors.Is(err, context.DeadlineExceeded) {
			// Requests that outlast the bound (a handler deaf to its
			// context) would hold their connections to a timeout of
			// theirs, or for ever: they are cut.
			if srv.ErrorLog != nil {
				srv.ErrorLog.Printf("http: requests still running %s after the shutdown began: their connections are closed", timeout)
			}
			srv.Close()
		}
	}()
	var err error
	if srv.TLSConfig != nil {
		err = srv.ServeTLS(ln, "", "")
	} else {
		err = srv.Serve(ln)
	}
	// net/http's Serve returns as soon as the shutdown begins: wait for
	// the requests in flight, as promised.
	close(stopped)
	<-shutDown
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	}
	return nil
}
