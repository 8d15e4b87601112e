package ipam

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/underlay/underlay/internal/netspec"
)

// DriverName is the IPAM driver name Docker networks use: the plugin
// socket's base name in Docker's plugin directory.
const DriverName = netspec.ClusterIPAMDriver

// DefaultSocket is where Docker discovers the plugin.
const DefaultSocket = "/run/docker/plugins/" + DriverName + ".sock"

// Docker's request option that marks a gateway request.
const (
	optRequestType = "RequestAddressType"
	gatewayType    = "com.docker.network.gateway"
	gatewayData    = "com.docker.network.gateway"
)

// PoolSource finds the cluster network a requested pool belongs to.
type PoolSource interface {
	// PoolFor returns the pool whose prefix is subnet, with its gateway.
	PoolFor(ctx context.Context, subnet netip.Prefix) (Pool, netip.Addr, error)
	// PoolByID returns a pool by Pool.ID, for requests after a restart.
	PoolByID(ctx context.Context, id string) (Pool, netip.Addr, error)
}

// Plugin serves Docker's remote IPAM protocol for one node.
type Plugin struct {
	Alloc *Allocator
	Pools PoolSource
	Log   *slog.Logger
	// Timeout bounds each request, so that with Consul unreachable Docker
	// gets a clear error quickly rather than a hung task.
	Timeout time.Duration
	// Metrics, when set, times every address request and release.
	Metrics *Metrics

	mu    sync.Mutex // guards pools
	pools map[string]poolEntry
}

type poolEntry struct {
	pool    Pool
	gateway netip.Addr
}

// Handler returns the plugin's HTTP handler.
func (pl *Plugin) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /Plugin.Activate", reply(func(context.Context, struct{}) (any, error) {
		return map[string][]string{"Implements": {"IpamDriver"}}, nil
	}))
	// No request replay: with it, every dockerd (20.10 to 29) would at
	// start ask again, as specific addresses, for its stored endpoints'
	// addresses, which this node holds already; without it, restored
	// containers get fresh addresses and the old ones are released.
	mux.HandleFunc("POST /IpamDriver.GetCapabilities", reply(func(context.Context, struct{}) (any, error) {
		return map[string]bool{"RequiresMACAddress": false, "RequiresRequestReplay": false}, nil
	}))
	mux.HandleFunc("POST /IpamDriver.GetDefaultAddressSpaces", reply(func(context.Context, struct{}) (any, error) {
		return map[string]string{"LocalDefaultAddressSpace": "underlay-local", "GlobalDefaultAddressSpace": "underlay-global"}, nil
	}))
	mux.HandleFunc("POST /IpamDriver.RequestPool", reply(pl.requestPool))
	mux.HandleFunc("POST /IpamDriver.ReleasePool", reply(func(context.Context, struct{ PoolID string }) (any, error) {
		return struct{}{}, nil // pools live as long as their network spec
	}))
	mux.HandleFunc("POST /IpamDriver.RequestAddress", reply(pl.requestAddress))
	mux.HandleFunc("POST /IpamDriver.ReleaseAddress", reply(pl.releaseAddress))
	return http.TimeoutHandler(mux, pl.timeout()+time.Second, `{"Err":"underlay ipam: request timed out"}`)
}

func (pl *Plugin) timeout() time.Duration {
	if pl.Timeout <= 0 {
		return 5 * time.Second
	}
	return pl.Timeout
}

type poolRequest struct {
	AddressSpace string
	Pool         string
	SubPool      string
	Options      map[string]string
	V6           bool
}

func (pl *Plugin) requestPool(ctx context.Context, r poolRequest) (any, error) {
	if r.Pool == "" {
		return nil, errors.New("underlay ipam needs the network's subnet (--subnet); it does not choose one")
	}
	subnet, err := netip.ParsePrefix(r.Pool)
	if err != nil {
		return nil, fmt.Errorf("pool %q: not a CIDR", r.Pool)
	}
	p, gw, err := pl.Pools.PoolFor(ctx, subnet.Masked())
	if err != nil {
		return nil, err
	}
	pl.mu.Lock()
	if pl.pools == nil {
		pl.pools = map[string]poolEntry{}
	}
	pl.pools[p.ID()] = poolEntry{pool: p, gateway: gw}
	pl.mu.Unlock()
	resp := map[string]any{"PoolID": p.ID(), "Pool": p.Prefix.String(), "Data": map[string]string{}}
	if gw.IsValid() {
		resp["Data"] = map[string]string{gatewayData: netip.PrefixFrom(gw, p.Prefix.Bits()).String()}
	}
	pl.Log.Info("pool requested", "pool", p.ID(), "subnet", p.Prefix)
	return resp, nil
}

type addressRequest struct {
	PoolID  string
	Address string
	Options map[string]string
}

func (pl *Plugin) requestAddress(ctx context.Context, r addressRequest) (any, error) {
	e, err := pl.pool(ctx, r.PoolID)
	if err != nil {
		return nil, err
	}
	var want netip.Addr
	if r.Address != "" {
		if want, err = netip.ParseAddr(r.Address); err != nil {
			return nil, fmt.Errorf("address %q: not an IP address", r.Address)
		}
	}
	if r.Options[optRequestType] == gatewayType {
		// Every node asks for the same gateway: it is shared, never allocated.
		gw := e.gateway
		if want.IsValid() {
			gw = want
		}
		if !gw.IsValid() {
			return nil, fmt.Errorf("pool %s has no gateway; give the network --gateway", r.PoolID)
		}
		return map[string]any{"Address": netip.PrefixFrom(gw, e.pool.Prefix.Bits()).String(), "Data": map[string]string{}}, nil
	}
	start := time.Now()
	addr, err := pl.Alloc.Allocate(ctx, e.pool, want, KindTask)
	pl.Metrics.observe("request", start, err)
	if err != nil {
		pl.Log.Warn("address request refused", "pool", r.PoolID, "address", r.Address, "err", err)
		return nil, err
	}
	return map[string]any{"Address": netip.PrefixFrom(addr, e.pool.Prefix.Bits()).String(), "Data": map[string]string{}}, nil
}

func (pl *Plugin) releaseAddress(ctx context.Context, r struct{ PoolID, Address string }) (any, error) {
	e, err := pl.pool(ctx, r.PoolID)
	if err != nil {
		return nil, err
	}
	addr, err := netip.ParseAddr(r.Address)
	if err != nil {
		if p, perr := netip.ParsePrefix(r.Address); perr == nil {
			addr, err = p.Addr(), nil
		} else {
			return nil, fmt.Errorf("address %q: not an IP address", r.Address)
		}
	}
	if addr == e.gateway {
		return struct{}{}, nil
	}
	start := time.Now()
	err = pl.Alloc.Release(ctx, e.pool, addr)
	pl.Metrics.observe("release", start, err)
	return struct{}{}, err
}

// pool returns a requested pool, reading its spec again after a restart
// of the agent (Docker does not ask for pools again).
func (pl *Plugin) pool(ctx context.Context, id string) (poolEntry, error) {
	pl.mu.Lock()
	e, ok := pl.pools[id]
	pl.mu.Unlock()
	if ok {
		return e, nil
	}
	p, gw, err := pl.Pools.PoolByID(ctx, id)
	if err != nil {
		return poolEntry{}, fmt.Errorf("unknown pool %q (was its network removed?): %w", id, err)
	}
	e = poolEntry{pool: p, gateway: gw}
	pl.mu.Lock()
	if pl.pools == nil {
		pl.pools = map[string]poolEntry{}
	}
	pl.pools[id] = e
	pl.mu.Unlock()
	return e, nil
}

// reply adapts a typed handler to Docker's plugin wire format: JSON in,
// JSON out, errors as {"Err": "..."} with status 500.
func reply[Req any](h func(context.Context, Req) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/vnd.docker.plugins.v1.2+json")
		var req Req
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil && !errors.Is(err, io.EOF) {
			writeErr(w, fmt.Errorf("bad request body: %w", err))
			return
		}
		resp, err := h(r.Context(), req)
		if err != nil {
			writeErr(w, err)
			return
		}
		json.NewEncoder(w).Encode(resp)
	}
}

func writeErr(w http.ResponseWriter, err error) {
	w.WriteHeader(http.StatusInternalServerError)
	json.NewEncoder(w).Encode(map[string]string{"Err": "underlay ipam: " + err.Error()})
}

// Serve listens on socket (replacing a stale one) until ctx ends.
func (pl *Plugin) Serve(ctx context.Context, socket string) error {
	if err := os.MkdirAll(filepath.Dir(socket), 0o755); err != nil {
		return fmt.Errorf("plugin directory: %w", err)
	}
	os.Remove(socket)
	ln, err := net.Listen("unix", socket)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", socket, err)
	}
	srv := &http.Server{Handler: pl.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
		os.Remove(socket)
	}()
	pl.Log.Info("serving Docker's IPAM plugin protocol", "socket", socket)
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
