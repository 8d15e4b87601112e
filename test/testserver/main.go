// Command testserver is the tiny HTTP server baked into underlay's test image.
//
// It answers on every address in LISTEN (default ":8080") with its hostname
// and IP addresses, serves /health with a status that can be switched at run
// time, and exits cleanly on SIGTERM. With BURN=1 it keeps one core busy. Run with -probe URL it performs one GET
// and exits 0 on a 2xx answer, so a FROM scratch image can use it as its own
// Docker HEALTHCHECK command.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	probe := flag.String("probe", "", "GET this URL once and exit 0 when it answers 2xx")
	flag.Parse()
	if *probe != "" {
		os.Exit(runProbe(*probe))
	}
	listen := os.Getenv("LISTEN")
	if listen == "" {
		listen = ":8080"
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if os.Getenv("BURN") == "1" {
		go burn(ctx) // CPU load for autoscaler tests
	}
	if err := serve(ctx, strings.Split(listen, ",")); err != nil {
		slog.Error("testserver", "err", err)
		os.Exit(1)
	}
}

// burn keeps one core busy until ctx ends.
func burn(ctx context.Context) {
	for x := 0; ctx.Err() == nil; x++ {
		for i := 0; i < 1_000_000; i++ {
			x ^= i
		}
	}
}

func runProbe(url string) int {
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		fmt.Fprintln(os.Stderr, resp.Status)
		return 1
	}
	return 0
}

// server holds the switchable health status (an HTTP status code).
type server struct {
	health atomic.Int64
}

func serve(ctx context.Context, addrs []string) error {
	s := &server{}
	s.health.Store(http.StatusOK)
	if v, err := strconv.Atoi(os.Getenv("HEALTH_STATUS")); err == nil {
		s.health.Store(int64(v))
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", s.handleInfo)
	mux.HandleFunc("/health", s.handleHealth)

	errc := make(chan error, len(addrs))
	var servers []*http.Server
	for _, addr := range addrs {
		hs := &http.Server{Addr: strings.TrimSpace(addr), Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		servers = append(servers, hs)
		go func() { errc <- hs.ListenAndServe() }()
	}
	slog.Info("testserver listening", "addrs", addrs)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, hs := range servers {
		if err := hs.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	}
	slog.Info("testserver stopped")
	return nil
}

func (s *server) handleInfo(w http.ResponseWriter, r *http.Request) {
	host, _ := os.Hostname()
	var ips []string
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() {
				ips = append(ips, n.IP.String())
			}
		}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"hostname": host, "ips": ips, "remote": r.RemoteAddr})
}

// handleHealth answers GET with the current status; POST or PUT with
// ?status=CODE switches it.
func (s *server) handleHealth(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost || r.Method == http.MethodPut {
		code, err := strconv.Atoi(r.URL.Query().Get("status"))
		if err != nil || code < 100 || code > 599 {
			http.Error(w, fmt.Sprintf("bad status %q: want an HTTP status code", r.URL.Query().Get("status")), http.StatusBadRequest)
			return
		}
		s.health.Store(int64(code))
	}
	code := int(s.health.Load())
	w.WriteHeader(code)
	fmt.Fprintf(w, "%d\n", code)
}
