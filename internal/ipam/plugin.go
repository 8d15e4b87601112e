package ipam

import (
	"bytes"
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
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode"

	"github.com/underlay/underlay/internal/httpserve"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/termtext"
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
	// A pool whose network is being removed is a *RemovingError.
	PoolFor(ctx context.Context, subnet netip.Prefix) (Pool, netip.Addr, error)
	// PoolByID returns a pool by its ID in the plugin protocol
	// (Pool.PluginID, or Pool.ID as older agents gave it to Docker),
	// reading the specs; one whose network is being removed is a
	// *RemovingError, which holds it. An ID naming another generation of
	// the network than the spec under the name has is refused.
	PoolByID(ctx context.Context, id string) (Pool, netip.Addr, error)
	// PoolSeen is PoolByID by the newest reading of the specs, without
	// reading them again: its error is that reading's (a *RemovingError
	// too), or errNotRead when there has been none.
	PoolSeen(id string) (p Pool, gw netip.Addr, err error)
	// PoolGone says the newest reading of the specs has no spec, readable
	// or not, of pool p's network; false when there has been none, or it
	// may be older than p's.
	PoolGone(p Pool) bool
	// SpecGone confirms by a direct read that the spec of pool p's
	// network, missing from a reading of the specs, is absent: Consul
	// leaves out of a listing the keys the token may not read (see
	// kvstore.Absence). A read that fails is warned of through log.
	SpecGone(ctx context.Context, p Pool, log *slog.Logger) bool
}

// Plugin serves Docker's remote IPAM protocol for one node.
type Plugin struct {
	// Alloc and Pools are over one KV: the network index Alloc reads
	// says when Pools' answers change (see fresh).
	Alloc *Allocator
	Pools PoolSource
	Log   *slog.Logger
	// Timeout bounds each request, so that with Consul unreachable Docker
	// gets a clear error quickly rather than a hung task.
	Timeout time.Duration
	// Metrics, when set, times every address request and release.
	Metrics *Metrics
	// lastResort is how long past Timeout the handler answers a request
	// still unanswered (a second when zero). Tests lengthen it: a process
	// held up over a second sees both deadlines pass at once, and either
	// answer may go out.
	lastResort time.Duration

	mu sync.Mutex // guards following fields
	// pools is every pool served, by its ID in the plugin protocol (one
	// per generation of a network, see Pool.PluginID), as last served:
	// what an address handed out came from, even once its spec is gone;
	// a pool is dropped by its last ReleasePool, or once its spec is
	// gone, when this node holds none of its addresses (see releasePool,
	// forgetGone); an older generation's, by its last ReleasePool once a
	// later one is recorded (see dropReleasedOlderLocked).
	pools map[string]poolEntry
	// drops counts the pools dropped: a request that read the specs
	// before a drop records no pool afresh (see pool).
	drops uint64
	// begun counts the address requests begun, underway those not yet
	// answered: a pool is dropped only if none ran while this node's
	// addresses of it were read (see dropUnheld).
	begun    uint64
	underway int
	// settled are, by pool ID as requested, fresh readings' answers that
	// stand until a network is created or deleted (see fresh), read while
	// the network index's modify index was settledAt.
	settled   map[string]error
	settledAt uint64
}

type poolEntry struct {
	pool    Pool
	gateway netip.Addr
	// requests counts the pool's RequestPools this plugin answered and
	// Docker has not released: one per Docker network of the pool on this
	// node that it saw made. 0 is a pool served with none (after an
	// agent's restart Docker asks for none again), or kept past its last
	// ReleasePool while this node holds addresses of it (see releasePool).
	requests int
}

// Handler returns the plugin's HTTP handler.
func (pl *Plugin) Handler() http.Handler {
	mux := http.NewServeMux()
	handshake(mux)
	mux.HandleFunc("POST /"+methodReleasePool, reply(pl.releasePool))
	mux.HandleFunc("POST /"+methodRequestPool, reply(bounded(pl, poolRequest.String, pl.requestPool)))
	mux.HandleFunc("POST /"+methodRequestAddress, reply(bounded(pl, addressRequest.String, pl.requestAddress)))
	mux.HandleFunc("POST /"+methodReleaseAddress, reply(bounded(pl, releaseRequest.String, pl.releaseAddress)))
	// A last resort (a request body slow to come): bounded answers a
	// request Consul holds up a second earlier, naming it.
	last := pl.lastResort
	if last <= 0 {
		last = time.Second
	}
	return http.TimeoutHandler(mux, pl.timeout()+last, `{"Err":"underlay ipam: request timed out"}`)
}

// The calls that need Consul and the node's identity: the gate holds
// them, and them alone, until the claim.
const (
	methodRequestPool    = "IpamDriver.RequestPool"
	methodRequestAddress = "IpamDriver.RequestAddress"
	methodReleaseAddress = "IpamDriver.ReleaseAddress"
)

// methodReleasePool frees nothing: the gate answers it at once until it
// opens (the plugin has served no pool yet), the plugin from then on.
const methodReleasePool = "IpamDriver.ReleasePool"

// handshake serves on mux the calls whose answers need neither Consul nor
// the node's identity: dockerd's activation and capability calls.
func handshake(mux *http.ServeMux) {
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
}

// releasePool counts off one RequestPool of pool id: Docker removes a
// network from the node, its addresses released first, with a
// ReleasePool. At the last by the count, the pool is forgotten once this
// node holds none of its addresses (see dropUnheld): the count is only
// what this plugin saw, and after an agent's restart Docker may hold
// networks of the pool whose RequestPools it never saw (Docker asks for
// none again), their containers' addresses still to be released, maybe
// once the spec is gone. A pool kept then goes at a later ReleasePool, or
// once its spec is gone (see forgetGone). Nothing is freed: pools live as
// long as their network spec; a late release of the pool is served from
// its spec, or, its spec gone, from the pool as served while it is kept.
// It is always answered: it frees nothing, and a pool kept costs nothing
// but memory. The record of an older generation of the network (made
// again since, and a later generation recorded) goes at its last
// ReleasePool whatever this node holds: nothing of it is served again.
func (pl *Plugin) releasePool(ctx context.Context, r poolRelease) (any, error) {
	// Only the record of that ID, that generation of its network, is
	// counted off. An ID no plugin gives is refused, naming it: it is
	// none of the pools served.
	if _, err := parseID(r.PoolID); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, pl.timeout())
	defer cancel()
	pl.mu.Lock()
	e, ok := pl.pools[r.PoolID]
	if ok && e.requests > 0 {
		e.requests--
		pl.pools[r.PoolID] = e
	}
	if ok && e.requests == 0 && pl.laterServedLocked(r.PoolID, e.pool) != 0 {
		// An older generation, released by Docker: nothing of it is
		// served or released again (see laterServed), whatever this
		// node holds of the pool's ID, which its later generation's
		// addresses keep held.
		delete(pl.pools, r.PoolID)
		pl.drops++
		ok = false
	}
	pl.mu.Unlock()
	if ok && e.requests == 0 {
		// Unless a RequestPool came meanwhile.
		pl.dropUnheld(ctx, r.PoolID, e.pool, func(cur poolEntry) bool { return cur.requests == 0 })
	}
	pl.forgetGone(ctx)
	return struct{}{}, nil
}

// forgetGone forgets the pools whose network has no spec, readable or
// not, in the newest reading of the specs, once this node holds none of
// their addresses (see dropUnheld): Docker's ReleasePool never came for
// them (dockerd down as the network was removed, or the agent restarted
// between), and nothing is left for a late release to free. A pool whose
// addresses this node still holds (its spec deleted by hand, the blocks
// left) is kept, and so is one whose spec a direct read does not confirm
// absent (SpecGone): a spec the token may not read is not listed either,
// and neither are the pool's blocks, where this node's addresses would
// pass for none. It runs at every ReleasePool, which Docker sends as it
// removes a network: not on the path of a container's start.
func (pl *Plugin) forgetGone(ctx context.Context) {
	pl.mu.Lock()
	gone := map[string]Pool{}
	for id, e := range pl.pools {
		if pl.Pools.PoolGone(e.pool) {
			gone[id] = e.pool
		}
	}
	pl.mu.Unlock()
	for id, p := range gone {
		if !pl.Pools.SpecGone(ctx, p, pl.log()) {
			continue
		}
		// Still gone: a RequestPool of a network made again under the
		// name read the specs, and is kept.
		if pl.dropUnheld(ctx, id, p, func(cur poolEntry) bool { return pl.Pools.PoolGone(cur.pool) }) {
			pl.log().Info("pool of a network gone forgotten: this node holds none of its addresses", "pool", cut(id))
		}
	}
}

// dropUnheld forgets pool id, p as recorded, if this node holds none of
// its addresses, read afresh from Consul, no address request ran
// meanwhile (one under way may hold an address Consul does not show yet),
// and still says so of its entry then. It keeps the pool when it cannot
// tell: a record kept too long costs memory, one dropped too early leaves
// an address a late release cannot free once the spec is gone. It
// reports whether it dropped the pool.
func (pl *Plugin) dropUnheld(ctx context.Context, id string, p Pool, still func(poolEntry) bool) bool {
	pl.mu.Lock()
	busy, begun := pl.underway > 0, pl.begun
	pl.mu.Unlock()
	if busy {
		return false
	}
	held, err := pl.Alloc.holds(ctx, p)
	if err != nil {
		pl.log().Debug("pool kept as served: cannot tell whether this node holds an address of it", "pool", cut(id), "err", err)
	}
	if err != nil || held {
		return false
	}
	pl.mu.Lock()
	defer pl.mu.Unlock()
	cur, ok := pl.pools[id]
	if !ok || pl.begun != begun || !still(cur) {
		return false
	}
	delete(pl.pools, id)
	pl.drops++
	return true
}

// bounded bounds h by the plugin's Timeout. A request still unanswered
// then is refused, naming it (what), the timeout and Consul — the only
// thing the plugin waits for — in the Err that Docker shows the user,
// instead of a bare context error. h goes on in the background: a batch's
// write, shared with other requests, is bounded by commitTimeout alone,
// and an address it allocates for nobody is a leak the reclaimer returns,
// as when Docker gives up on a slow plugin.
func bounded[Req any](pl *Plugin, what func(Req) string, h func(context.Context, Req) (any, error)) func(context.Context, Req) (any, error) {
	return func(ctx context.Context, req Req) (any, error) {
		ctx, cancel := context.WithTimeout(ctx, pl.timeout())
		defer cancel()
		type answer struct {
			resp any
			err  error
		}
		done := make(chan answer, 1)
		go func() {
			resp, err := h(ctx, req)
			done <- answer{resp, err}
		}()
		var a answer
		select {
		case a = <-done:
		case <-ctx.Done():
			select {
			case a = <-done: // answered as time ran out: the answer stands
			default:
				a.err = ctx.Err()
			}
		}
		if a.err == nil || !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return a.resp, a.err
		}
		err := fmt.Errorf("%s timed out after %s: Consul did not answer in time (is this node's Consul agent up, with a leader?)", what(req), pl.timeout())
		// A bare context error adds nothing; any other says what h was doing.
		if a.err.Error() != ctx.Err().Error() {
			err = fmt.Errorf("%w: %w", err, a.err)
		}
		pl.log().Warn("request timed out", "err", err)
		return nil, err
	}
}

// defaultTimeout bounds a request when Plugin.Timeout does not.
const defaultTimeout = 5 * time.Second

func (pl *Plugin) timeout() time.Duration {
	if pl.Timeout <= 0 {
		return defaultTimeout
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

func (r poolRequest) String() string { return fmt.Sprintf("request for the pool of subnet %s", r.Pool) }

func (pl *Plugin) requestPool(ctx context.Context, r poolRequest) (any, error) {
	if r.Pool == "" {
		return nil, errors.New("underlay ipam needs the network's subnet (--subnet); it does not choose one")
	}
	subnet, err := netip.ParsePrefix(r.Pool)
	if err != nil {
		return nil, fmt.Errorf("pool %s: not a CIDR", quoted(r.Pool))
	}
	if subnet.Addr().Is6() != r.V6 {
		return nil, fmt.Errorf("pool %s asked for with V6 %t: the subnet's family and the request's differ", subnet, r.V6)
	}
	p, gw, err := pl.Pools.PoolFor(ctx, subnet.Masked())
	if err != nil {
		return nil, err
	}
	// The pool hands out its network's range whatever is asked: a
	// narrower one (docker network create --ip-range) would be ignored.
	if r.SubPool != "" {
		sub, err := netip.ParsePrefix(r.SubPool)
		if err != nil {
			return nil, fmt.Errorf("sub-pool %s: not a CIDR", quoted(r.SubPool))
		}
		if sub.Masked() != p.allocRange() {
			return nil, fmt.Errorf("sub-pool %s (--ip-range): network %s hands out addresses of %s; give the range to `underlay network create --ip-range`",
				sub, p.Network, p.allocRange())
		}
	}
	// Docker keeps the ID with its network: it names the network's
	// generation, so that its requests are never served from a network
	// made again under the name (see Pool.PluginID).
	id := p.PluginID()
	pl.mu.Lock()
	if pl.pools == nil {
		pl.pools = map[string]poolEntry{}
	}
	pl.pools[id] = poolEntry{pool: p, gateway: gw, requests: pl.pools[id].requests + 1}
	pl.dropReleasedOlderLocked(p)
	pl.mu.Unlock()
	resp := map[string]any{"PoolID": id, "Pool": p.Prefix.String(), "Data": map[string]string{}}
	if gw.IsValid() {
		resp["Data"] = map[string]string{gatewayData: netip.PrefixFrom(gw, p.Prefix.Bits()).String()}
	}
	pl.log().Info("pool requested", "pool", p.ID(), "pool_id", id, "subnet", p.Prefix)
	return resp, nil
}

type poolRelease struct{ PoolID string }

func (r poolRelease) String() string { return fmt.Sprintf("release of pool %s", quoted(r.PoolID)) }

type addressRequest struct {
	PoolID  string
	Address string
	Options map[string]string
}

func (r addressRequest) String() string {
	if r.Address == "" {
		return fmt.Sprintf("request for any address in pool %s", quoted(r.PoolID))
	}
	return fmt.Sprintf("request for address %s in pool %s", r.Address, quoted(r.PoolID))
}

type releaseRequest struct{ PoolID, Address string }

func (r releaseRequest) String() string {
	return fmt.Sprintf("release of address %s in pool %s", r.Address, quoted(r.PoolID))
}

func (pl *Plugin) requestAddress(ctx context.Context, r addressRequest) (any, error) {
	pl.mu.Lock()
	pl.begun++
	pl.underway++
	pl.mu.Unlock()
	defer func() {
		pl.mu.Lock()
		pl.underway--
		pl.mu.Unlock()
	}()
	// The address first: a bad one is refused at once, for what it is,
	// not after a wait for Consul.
	var want netip.Addr
	if r.Address != "" {
		var err error
		if want, err = requestedAddr(r.Address); err != nil {
			return nil, err
		}
	}
	e, err := pl.pool(ctx, r.PoolID, false)
	if err != nil {
		return nil, err
	}
	if r.Options[optRequestType] == gatewayType {
		// Every node asks for the same gateway: it is shared, never
		// allocated, and nothing else may pass for it.
		gw := e.gateway
		if !gw.IsValid() {
			return nil, fmt.Errorf("pool %s has no gateway; give the network --gateway", e.pool.ID())
		}
		if want.IsValid() && want != gw {
			return nil, fmt.Errorf("gateway %s requested in %s, but the network's gateway is %s", want, e.pool.ID(), gw)
		}
		return map[string]any{"Address": netip.PrefixFrom(gw, e.pool.Prefix.Bits()).String(), "Data": map[string]string{}}, nil
	}
	start := time.Now()
	addr, err := pl.Alloc.Allocate(ctx, e.pool, want, KindTask)
	pl.Metrics.observe("request", start, err)
	if err != nil {
		pl.log().Warn("address request refused", "pool", e.pool.ID(), "addr", r.Address, "err", err)
		return nil, err
	}
	// Each address given and taken back, as registrations are: what a
	// duplicate or a leak is traced back with.
	pl.log().Info("address allocated", "pool", e.pool.ID(), "addr", addr, "asked", r.Address)
	return map[string]any{"Address": netip.PrefixFrom(addr, e.pool.Prefix.Bits()).String(), "Data": map[string]string{}}, nil
}

func (pl *Plugin) releaseAddress(ctx context.Context, r releaseRequest) (any, error) {
	addr, bits, err := releasedAddr(r.Address)
	if err != nil {
		return nil, err
	}
	e, err := pl.pool(ctx, r.PoolID, true)
	if remade := (*remadeError)(nil); errors.As(err, &remade) {
		// Docker's network of a generation gone, made again since: the
		// address may be this node's in the network made again, for
		// another container, and nothing tells the two apart. Refused,
		// not answered as released: dockerd logs the error and removes
		// the endpoint all the same (libnetwork's releaseAddress only
		// warns), so Docker's state is the same either way and the
		// refusal shows in both logs. Nothing of the old network is left
		// to free but what its tree, deleted, held.
		pl.log().Warn("release of an address of a network made again since Docker asked for its pool: refused, nothing released", "pool", cut(r.PoolID), "addr", r.Address, "err", err)
		return nil, fmt.Errorf("release of %s: %w: nothing released", addr, err)
	}
	if gone := (*RemovingError)(nil); errors.As(err, &gone) {
		// Its network is being removed: its containers are taken down,
		// and their addresses released, from the pool as its spec stands
		// (bound to it: refused in a network made again since).
		e, err = poolEntry{pool: gone.Pool, gateway: gone.Gateway}, nil
		pl.mu.Lock()
		err = pl.remadeSinceLocked(r.PoolID, gone.Pool)
		pl.mu.Unlock()
		if err != nil {
			pl.log().Warn("release of an address of a network made again since Docker asked for its pool: refused, nothing released", "pool", cut(r.PoolID), "addr", r.Address, "err", err)
			return nil, fmt.Errorf("release of %s: %w: nothing released", addr, err)
		}
	}
	if err != nil {
		// Its spec is gone or refused now, or cannot be read. Released
		// from the pool it was handed out of, the address frees only this
		// node's own record of it (see Release); refused, it would stay
		// allocated to no container, in a pool the sweep leaves alone.
		last, ok := pl.served(r.PoolID)
		if !ok {
			return nil, err
		}
		if later := pl.laterServed(r.PoolID, last.pool); later != 0 {
			// Its write, the spec gone, is bound to nothing: it would
			// free the address in the blocks a later generation, made
			// again under the name then deleted by hand, left here.
			err = fmt.Errorf("pool %s: %w", quoted(r.PoolID), &remadeError{name: last.pool.Network, gen: last.pool.specCreate, now: later})
			pl.log().Warn("release of an address of a network made again since Docker asked for its pool: refused, nothing released", "pool", cut(r.PoolID), "addr", r.Address, "err", err)
			return nil, fmt.Errorf("release of %s: %w: nothing released", addr, err)
		}
		msg := "releasing an address of a pool no longer served, from the pool as it was served"
		if unread := (*unreadError)(nil); errors.As(err, &unread) {
			msg = "cannot read the network specs from Consul: releasing the address from its pool as this plugin last served it"
		}
		pl.log().Warn(msg, "pool", cut(r.PoolID), "addr", r.Address, "err", err)
		e = last
	}
	if bits >= 0 && bits != e.pool.Prefix.Bits() {
		// Not an address the plugin handed out so: what it names is not
		// known, and nothing is freed on a guess.
		err := fmt.Errorf("address %q: prefix length /%d, but pool %s hands out its addresses as /%d (or bare): nothing released", r.Address, bits, e.pool.ID(), e.pool.Prefix.Bits())
		pl.log().Warn("address release refused", "pool", cut(r.PoolID), "addr", r.Address, "err", err)
		return nil, err
	}
	if addr == e.gateway {
		return struct{}{}, nil
	}
	start := time.Now()
	err = pl.Alloc.Release(ctx, e.pool, addr)
	pl.Metrics.observe("release", start, err)
	if err != nil {
		pl.log().Warn("address release failed", "pool", cut(r.PoolID), "addr", addr, "err", err)
		return nil, err
	}
	pl.log().Info("address released", "pool", cut(r.PoolID), "addr", addr)
	return struct{}{}, nil
}

// releasedAddr reads a release's address: bare, as Docker sends it
// (libnetwork's remote IPAM client: net.IP's String), or as the plugin
// hands addresses out, with a prefix length (bits; -1 when bare), which
// the caller checks is the pool's.
func releasedAddr(s string) (netip.Addr, int, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Addr(), p.Bits(), nil
	}
	a, err := requestedAddr(s)
	return a, -1, err
}

// requestedAddr reads a request's address. One with an IPv6 zone parses,
// but is no container's: refused here, its zone (any text) quoted, rather
// than copied raw into the pool's refusal.
func requestedAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		return netip.Addr{}, fmt.Errorf("address %s: not an IP address", quoted(s))
	case a.Zone() != "":
		return netip.Addr{}, fmt.Errorf("address %s: an address with a zone is no container's", quoted(s))
	}
	return a, nil
}

// pool returns a pool to hand out addresses of as its spec stands now: as
// the newest reading of the specs has it (the agent's network reconciler
// reads them at every change, the sweep at every sweep, so requests never
// wait for Consul), or as read now when that reading does not serve it (a
// spec made or fixed since, or none read yet: Docker does not ask for
// pools again after an agent's restart). A pool whose spec is gone or
// refused is an error, whatever was served before.
//
// For a release, the newest reading's word that the pool's network is
// being removed (a *RemovingError) is taken as a request takes its word
// that a pool is served, without reading the specs again: otherwise each
// release of a removal's containers reads every spec. The mark is never
// taken back, and changes nothing else of the spec: the pool it carries
// is the spec's until the spec is deleted, which the reconciler, reading
// at every change, sees as soon as it would see any other change; until
// then a release from it, bound to the marked spec (see RemovingError),
// is refused once the network was made again under the name.
//
// A pool is recorded afresh (served with no RequestPool: after an agent's
// restart) only if no pool was dropped since the specs were read: one
// dropped meanwhile by its last ReleasePool, a release of its addresses
// still under way, is not brought back with no RequestPool left. Any
// pool dropped holds off the record (no map of every ID ever dropped is
// kept): the next request or release of a pool still served records it.
func (pl *Plugin) pool(ctx context.Context, id string, release bool) (poolEntry, error) {
	// Refused before any reading: an ID no plugin gives is no pool's.
	if _, err := parseID(id); err != nil {
		return poolEntry{}, err
	}
	pl.mu.Lock()
	drops := pl.drops
	pl.mu.Unlock()
	p, gw, err := pl.Pools.PoolSeen(id)
	var gone *RemovingError
	if err != nil && !(release && errors.As(err, &gone)) {
		p, gw, err = pl.fresh(ctx, id)
	}
	if err != nil {
		return poolEntry{}, fmt.Errorf("pool %s: %w", quoted(id), err)
	}
	e := poolEntry{pool: p, gateway: gw}
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if err := pl.remadeSinceLocked(id, p); err != nil {
		return poolEntry{}, err
	}
	if pl.pools == nil {
		pl.pools = map[string]poolEntry{}
	}
	if cur, ok := pl.pools[id]; ok {
		e.requests = cur.requests
	} else if pl.drops != drops {
		return e, nil
	}
	pl.pools[id] = e
	return e, nil
}

// maxSettled bounds the answers fresh keeps: pool IDs come from the
// plugin socket.
const maxSettled = 256

// fresh is PoolByID, read now unless an answer read since the network
// index last changed settles it: that the pool's network is being
// removed (the mark is never taken back), or that it has no cluster-IPAM
// spec. Both stand until a network is created or deleted, which rewrites
// the index (netspec.IndexKey) in the same transaction as the spec, so a
// network made again under the name is read, and served, at once: one
// read of a small key instead of a listing of every network's keys, for
// each of a removal's requests and late releases. A spec written or
// deleted by hand, past the index, shows in the newest reading, which
// the agent's reconciler takes at every change and which pool consults
// first. Without the index, the specs are read, as before.
func (pl *Plugin) fresh(ctx context.Context, id string) (Pool, netip.Addr, error) {
	idx, found, idxErr := pl.Alloc.kv.Get(ctx, netspec.IndexKey)
	if !found {
		idx.Index = 0 // no network ever created
	}
	if idxErr == nil {
		pl.mu.Lock()
		err, ok := pl.settled[id]
		ok = ok && pl.settledAt == idx.Index
		pl.mu.Unlock()
		if ok {
			if rm := (*RemovingError)(nil); errors.As(err, &rm) {
				return rm.Pool, rm.Gateway, err
			}
			return Pool{}, netip.Addr{}, err
		}
	}
	p, gw, err := pl.Pools.PoolByID(ctx, id)
	var rm *RemovingError
	var gone *goneError
	if idxErr == nil && (errors.As(err, &rm) || errors.As(err, &gone)) {
		pl.mu.Lock()
		if pl.settledAt != idx.Index || len(pl.settled) >= maxSettled {
			pl.settled, pl.settledAt = map[string]error{}, idx.Index
		}
		pl.settled[id] = err
		pl.mu.Unlock()
	}
	return p, gw, err
}

// laterServed returns the latest generation of p's network this plugin
// serves p's family of, if later than p's (see Pool.PluginID), for a
// pool ID naming a generation, id; 0 otherwise. An ID naming none (an
// older agent's) is served as it always was.
func (pl *Plugin) laterServed(id string, p Pool) uint64 {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	return pl.laterServedLocked(id, p)
}

// laterServedLocked is laterServed with pl.mu held.
func (pl *Plugin) laterServedLocked(id string, p Pool) uint64 {
	if pid, err := parseID(id); err != nil || pid.gen == 0 {
		return 0
	}
	var later uint64
	for _, e := range pl.pools {
		if e.pool.ID() == p.ID() && e.pool.specCreate > max(p.specCreate, later) {
			later = e.pool.specCreate
		}
	}
	return later
}

// dropReleasedOlderLocked forgets the records of generations of p's pool
// older than p's (see Pool.PluginID) that Docker released (no
// RequestPool left: their last ReleasePool kept them while this node
// held an address of the pool's ID, which the new generation's
// addresses may be): nothing of them is served or released again (see
// laterServed), and a network made again many times would otherwise
// leave one record for each. IDs naming no generation are kept. pl.mu is
// held.
func (pl *Plugin) dropReleasedOlderLocked(p Pool) {
	for id, e := range pl.pools {
		if e.requests == 0 && e.pool.ID() == p.ID() && pl.laterServedLocked(id, e.pool) != 0 {
			delete(pl.pools, id)
			pl.drops++
		}
	}
}

// served returns pool id as it was last served.
// remadeSinceLocked refuses p, as the specs now have it, for id, a pool
// ID naming no generation (an older agent's, see Pool.PluginID), when
// this plugin served id under another generation of the network: it was
// made again since, and what Docker's network of the older generation
// asks for or releases under id must not be served from, nor freed in,
// the new one. A plugin started since the network was made again has no
// record of id: it serves id from the spec as it stands.
func (pl *Plugin) remadeSinceLocked(id string, p Pool) error {
	cur, ok := pl.pools[id]
	if !ok || strings.Contains(id, genSep) || cur.pool.specCreate == 0 || p.specCreate == 0 || cur.pool.specCreate == p.specCreate {
		return nil
	}
	return fmt.Errorf("pool %s: %w", quoted(id), &remadeError{name: p.Network, gen: cur.pool.specCreate, now: p.specCreate})
}

func (pl *Plugin) served(id string) (poolEntry, bool) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	e, ok := pl.pools[id]
	return e, ok
}

// maxQuoted bounds a pool ID, or a network name read from one, quoted
// into an error or a log: it comes from the plugin socket, up to a
// request body's 1 MiB.
const maxQuoted = 120

// quoted is s quoted as %q quotes it, cut as termtext.QuoteShort cuts
// it when longer than maxQuoted.
func quoted(s string) string { return termtext.QuoteShort(s, maxQuoted) }

// cut is s, or when longer than maxQuoted its head and how long it was,
// as termtext.Shorten cuts it: for a log attribute, which the handler
// quotes.
func cut(s string) string { return termtext.Shorten(s, maxQuoted) }

// pluginMediaType is the Content-Type of Docker's plugin protocol.
const pluginMediaType = "application/vnd.docker.plugins.v1.2+json"

// maxBody bounds a request body: Docker's are a few hundred bytes.
const maxBody = 1 << 20

// reply adapts a typed handler to Docker's plugin wire format: JSON in,
// JSON out, errors as {"Err": "..."} with status 500.
func reply[Req any](h func(context.Context, Req) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", pluginMediaType)
		var req Req
		// Bounded: the decoder holds a whole JSON value in memory.
		body := http.MaxBytesReader(w, r.Body, maxBody)
		if err := decodeOne(body, &req); err != nil {
			if tooLarge := (*http.MaxBytesError)(nil); errors.As(err, &tooLarge) {
				err = fmt.Errorf("larger than %d bytes", tooLarge.Limit)
			}
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

// decodeOne decodes body, one JSON value or nothing (Docker's activation
// sends no body), into v. Anything after the value is refused, and so is
// a key an object gives twice (see repeatedKey): a request is acted on
// whole or not at all.
func decodeOne(body io.Reader, v any) error {
	// Whole, to be read twice: the decoder holds it all anyway.
	data, err := io.ReadAll(body)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}
	switch _, err := dec.Token(); {
	case errors.Is(err, io.EOF):
	case err == nil:
		return errors.New("more than one JSON value")
	default:
		return fmt.Errorf("after the JSON value: %w", err)
	}
	if key, ok := repeatedKey(data); ok {
		return fmt.Errorf("key %s given twice", quoted(key))
	}
	return nil
}

// repeatedKey returns the first key that an object of data, one valid
// JSON value, gives twice: the decoder takes the last and drops the
// others. The top object's keys are compared as the decoder matches them
// to a request's fields, whatever their case (PoolID and poolid are one
// field); a nested object's (Options) exactly, as a map's.
func repeatedKey(data []byte) (string, bool) {
	type object struct {
		seen    map[string]bool // nil: an array
		wantKey bool            // the next token is a key, or the end
	}
	var stack []object
	dec := json.NewDecoder(bytes.NewReader(data))
	for {
		tok, err := dec.Token()
		if err != nil {
			return "", false // the end: data was decoded once already
		}
		if n := len(stack); n > 0 && stack[n-1].seen != nil && stack[n-1].wantKey {
			if key, ok := tok.(string); ok {
				k := key
				if n == 1 {
					k = foldKey(key)
				}
				if stack[n-1].seen[k] {
					return key, true
				}
				stack[n-1].seen[k], stack[n-1].wantKey = true, false
				continue
			}
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, object{seen: map[string]bool{}, wantKey: true})
			continue
		case json.Delim('['):
			stack = append(stack, object{})
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
		// A value ended: the object holding it wants a key next.
		if n := len(stack); n > 0 && stack[n-1].seen != nil {
			stack[n-1].wantKey = true
		}
	}
}

// foldKey is key folded as the decoder matches names without case
// (strings.EqualFold): each letter as the least of its case orbit.
func foldKey(key string) string {
	return strings.Map(func(r rune) rune {
		least := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			least = min(least, f)
		}
		return least
	}, key)
}

func writeErr(w http.ResponseWriter, err error) {
	w.WriteHeader(http.StatusInternalServerError)
	json.NewEncoder(w).Encode(map[string]string{"Err": "underlay ipam: " + err.Error()})
}

// Serve serves the plugin on socket until ctx ends. The socket is made
// 0600 (root's dockerd is its only client) before anyone can reach it; a
// directory others may write to is refused (they could replace the socket
// dockerd trusts); a socket another live process serves is never taken
// over, and a stale one is replaced. Stopping removes the socket only if
// it is still this plugin's.
func (pl *Plugin) Serve(ctx context.Context, socket string) error {
	// Handler's last resort answers a second after the timeout.
	return serveSocket(ctx, socket, pl.Handler(), pl.log(), pl.timeout()+time.Second)
}

// Serve serves the gate on socket until ctx ends, as Plugin.Serve does.
// A request may wait at the gate for its whole timeout, the plugin's own
// bound included.
func (g *Gate) Serve(ctx context.Context, socket string) error {
	return serveSocket(ctx, socket, g.Handler(), g.log, g.timeout)
}

// serveSocket serves h on socket; held is how long a request may wait
// before h answers it (see SocketServer).
func serveSocket(ctx context.Context, socket string, h http.Handler, log *slog.Logger, held time.Duration) error {
	ln, ours, err := listenPrivate(socket)
	if err != nil {
		return err
	}
	log.Info("serving Docker's IPAM plugin protocol", "socket", socket)
	return serveOn(ctx, ln, SocketServer(h, log, held), func() {
		if fi, err := os.Lstat(socket); err == nil && os.SameFile(fi, ours) {
			os.Remove(socket)
		}
	})
}

// SocketServer is the server of h on the plugin's socket, bounded as
// httpserve's servers are (an idle or slow client, or a huge header, holds
// nothing for long), its messages going to log. Its read and write
// deadlines count from a request's arrival, so they outlast held, how
// long a request may wait before h reads its body and answers: otherwise
// dockerd would get its connection closed instead of an answer.
func SocketServer(h http.Handler, log *slog.Logger, held time.Duration) *http.Server {
	srv := httpserve.NewServer(h, log)
	srv.ReadTimeout += held
	srv.WriteTimeout += held
	return srv
}

// serveOn serves srv on ln until ctx ends or serving fails, then runs
// cleanup; it leaves nothing running behind either way (the agent retries
// a failed Serve for as long as it runs).
func serveOn(ctx context.Context, ln net.Listener, srv *http.Server, cleanup func()) error {
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			srv.Close()
		case <-done:
		}
	}()
	err := srv.Serve(ln)
	srv.Close()
	cleanup()
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve IPAM plugin: %w", err)
	}
	return nil
}

// listenPrivate listens on socket, mode 0600 from the start: it binds in
// a private temporary directory beside it, sets the mode, and links the
// socket into place (a link never replaces a file that appeared
// meanwhile). It returns the socket's file info, to recognise it later.
func listenPrivate(socket string) (*net.UnixListener, os.FileInfo, error) {
	dir := filepath.Dir(socket)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("plugin directory: %w", err)
	}
	if err := checkPluginDir(dir); err != nil {
		return nil, nil, err
	}
	if err := removeStale(socket); err != nil {
		return nil, nil, err
	}
	tmp, err := os.MkdirTemp(dir, ".underlay-")
	if err != nil {
		return nil, nil, fmt.Errorf("plugin socket: %w", err)
	}
	defer os.RemoveAll(tmp)
	bound := filepath.Join(tmp, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: bound, Net: "unix"})
	if err != nil {
		return nil, nil, fmt.Errorf("listen on %s: %w", socket, err)
	}
	ln.SetUnlinkOnClose(false)
	fail := func(err error) (*net.UnixListener, os.FileInfo, error) {
		ln.Close()
		return nil, nil, err
	}
	if err := os.Chmod(bound, 0o600); err != nil {
		return fail(fmt.Errorf("plugin socket: %w", err))
	}
	if err := os.Link(bound, socket); err != nil {
		return fail(fmt.Errorf("plugin socket %s: %w", socket, err))
	}
	fi, err := os.Lstat(socket)
	if err != nil {
		return fail(fmt.Errorf("plugin socket: %w", err))
	}
	return ln, fi, nil
}

// checkPluginDir refuses a plugin directory that is not this process's
// user's, or that its group or others may write to.
func checkPluginDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("plugin directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("plugin directory %s is not a directory", dir)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("plugin directory %s is writable by group or others (mode %s): anyone could replace the socket dockerd trusts; fix: chmod go-w %s", dir, fi.Mode().Perm(), dir)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("plugin directory %s belongs to uid %d, not this agent's (%d): its owner could replace the socket dockerd trusts", dir, st.Uid, os.Geteuid())
	}
	return nil
}

// removeStale removes socket if it is a socket no process serves; one a
// live process serves is refused.
func removeStale(socket string) error {
	fi, err := os.Lstat(socket)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("plugin socket: %w", err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("plugin socket %s exists and is not a socket (%s); not removing it", socket, fi.Mode().Type())
	}
	if c, err := net.DialTimeout("unix", socket, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("plugin socket %s is served by another process (another agent on this node?); not taking it over", socket)
	}
	if err := os.Remove(socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale plugin socket: %w", err)
	}
	return nil
}

// log is Log, or a discarding logger, with the package's component.
func (pl *Plugin) log() *slog.Logger {
	if pl.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return pl.Log.With("component", "ipam")
}
