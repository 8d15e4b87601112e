package ipam

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/netspec"
)

// The model test drives 3 to 8 simulated nodes, each with its own
// allocator over one in-memory KV, through thousands of random steps —
// allocations, starts that take long or fail, releases (stray ones from
// the wrong node too), crashes and restarts of agents, spare syncs (some
// with Docker's requests run inside them, between a block's write and the
// keeper's settling of it), sweeps (some with Docker's requests run just
// after they list the containers), departed nodes and their reclaim,
// racing writes and failing ones, Consul losing running containers'
// addresses (a stray release, the leader's reclaim of a node frozen past
// the node timeout) — and checks after every step that no
// address has two live holders and that reserved addresses are never
// handed out, after every release answered that the address is no longer
// its node's; once the run settles, that every allocation has a live
// holder, and every address Consul lost is recorded again as its
// container's node's. A failure prints its seed and the shortest step list found that
// still fails.
//
// It runs for modelBudget (20s; 2s with -short), longer with
// UNDERLAY_IPAM_MODEL_TIME (a duration: `make fuzz` sets it), and replays
// one seed with UNDERLAY_IPAM_MODEL_SEED (its failure's steps shrunk with
// no time limit with UNDERLAY_IPAM_MODEL_SHRINK=full: minutes, to a
// dozen or two steps); UNDERLAY_IPAM_MODEL_LOSE=0 leaves out the steps
// where Consul loses running containers' addresses (to replay a seed of
// a run without them: the steps a seed makes differ).

const (
	envModelTime = "UNDERLAY_IPAM_MODEL_TIME"
	envModelSeed = "UNDERLAY_IPAM_MODEL_SEED"
	// envModelLose, set to 0, leaves opLose out of the steps.
	envModelLose = "UNDERLAY_IPAM_MODEL_LOSE"
	// envModelShrink, set to full, has a failure's steps shrunk with no
	// time limit, to the fewest the shrinker finds (minutes, for a
	// failure thousands of steps in); else it stops after a minute.
	envModelShrink = "UNDERLAY_IPAM_MODEL_SHRINK"
	modelBudget    = 20 * time.Second
)

type modelOp uint8

const (
	opAlloc    modelOp = iota // node A's Docker asks for any address, starting a container
	opAllocAt                 // node A's Docker asks for address B of the range, starting a container
	opStarted                 // node A's start B is done: the container runs (B%4 == 3: it failed, Docker releases)
	opRelease                 // node A's Docker releases its container B's address
	opStray                   // node A's plugin gets a release of node C's container B's address (or, B odd, of range address C)
	opCrash                   // node A's agent is killed -9: its state is lost, its containers run on
	opRestart                 // node A's agent starts again, a new generation
	opSync                    // node A's keeper syncs its spares (B odd: verifying)
	opPressure                // node A's keeper hears another node ran short
	opSweep                   // node A's reclaimer sweeps
	opDepart                  // node A leaves for good: agent and containers gone
	opLeader                  // the leader (node 0) sweeps, reclaiming departed nodes
	opConflict                // the next block write meets a racing write
	opFault                   // the next block write or listing (of documents or keys) fails (Consul out of reach)
	opTick                    // the clock moves B seconds
	opShim                    // node A takes its host shim
	opLose                    // Consul loses node A's running container B's address (B odd: every container's of A, as the leader's reclaim of A frozen)
	opResend                  // node A's Docker resends a release (B: which) an earlier agent of A served, its answer lost as that agent was killed
	opCount
)

var opNames = [...]string{"alloc", "allocAt", "started", "release", "stray", "crash", "restart", "sync", "pressure", "sweep", "depart",
	"leader", "conflict", "fault", "tick", "shim", "lose", "resend"}

type step struct {
	Op      modelOp
	A, B, C int
}

func (s step) String() string { return fmt.Sprintf("{%s %d %d %d}", opNames[s.Op], s.A, s.B, s.C) }

// weights of the ops, in op order.
var opWeights = [opCount]int{24, 4, 24, 16, 8, 2, 5, 14, 2, 7, 1, 4, 5, 3, 6, 2, 2, 4}

// modelConfig is what a seed picks besides the steps.
type modelConfig struct {
	nodes, spares int
}

func generate(seed uint64) (modelConfig, []step) {
	return generateWith(seed, os.Getenv(envModelLose) != "0")
}

// generateWith is generate, with or without opLose.
func generateWith(seed uint64, lose bool) (modelConfig, []step) {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	cfg := modelConfig{nodes: 3 + rng.IntN(6), spares: rng.IntN(5)}
	weights := opWeights
	if !lose {
		weights[opLose] = 0
	}
	total := 0
	for _, w := range weights {
		total += w
	}
	steps := make([]step, 2000+rng.IntN(2000))
	for i := range steps {
		n := rng.IntN(total)
		op := modelOp(0)
		for n >= weights[op] {
			n -= weights[op]
			op++
		}
		steps[i] = step{Op: op, A: rng.IntN(cfg.nodes), B: rng.IntN(64), C: rng.IntN(64)}
	}
	return cfg, steps
}

// modelPool: a /26 range of a /24 in /29 blocks, gateway and one aux
// address reserved: 61 usable addresses in 8 blocks, so nodes run out,
// borrow and wait for spares.
var modelSpec = netspec.Spec{Name: "m", Subnet: netip.MustParsePrefix("10.3.0.0/24"), Gateway: netip.MustParseAddr("10.3.0.1"),
	IPRange: netip.MustParsePrefix("10.3.0.0/26"), Aux: map[string]netip.Addr{"printer": netip.MustParseAddr("10.3.0.13")},
	Parent: "eth1", IPAM: netspec.Cluster}

const (
	modelGrace   = 10 * time.Second
	modelTimeout = 20 * time.Second
)

type modelNode struct {
	id         string
	alloc      *Allocator // nil while the agent is down
	reclaimer  *Reclaimer
	containers []netip.Addr
	// starting are containers being started: their address is allocated,
	// Docker does not show it yet (which lasts as long as the steps say).
	starting []modelStart
	shim     netip.Addr
	gone     bool
	gens     int
	// race are Docker's requests to run just after the next listing of
	// the node's containers: they make the listing stale, as requests
	// served while a sweep reads the pool do.
	race []step
	// freed is what the node's agents freed lately, kept in the agent's
	// state directory across its restarts (see FreedStore).
	freed memFreed
	// lastReleased is the address of the node's last release answered.
	lastReleased netip.Addr
	// inflight is the agent's last release answered if it answered no
	// request since: one a kill may cut off before its answer is sent. A
	// request with C%3 == 1 is served while that answer is still being
	// sent, and leaves it in flight: the release's address may be the
	// one it is given.
	inflight *servedRelease
	// resendable are the releases whose answers kills cut off (the
	// in-flight one at each kill): Docker resends each, once (opResend).
	resendable []servedRelease
	// resent is the address of the release Docker last resent.
	resent netip.Addr
}

// servedRelease is a release an agent of the node (generation gen)
// served at at.
type servedRelease struct {
	addr netip.Addr
	gen  int
	at   time.Time
}

// resendWindow is how long after its first try Docker's plugin client
// resends a call whose connection failed (pkg/plugins: 30 s).
const resendWindow = 30 * time.Second

type modelStart struct {
	addr  netip.Addr
	since time.Time // the container's creation
}

type world struct {
	// raceErr is the first error of steps run inside another step.
	raceErr error
	cfg     modelConfig
	kv      *kvtest.KV
	store   *netspec.Store
	pool    Pool
	clock   time.Time
	nodes   []*modelNode
	// conflict and fault arm the KV hook for the next block write;
	// checking disarms it while the invariants are read.
	conflict, fault, checking bool
	ctx                       context.Context
	stats                     modelStats
	// lost are the addresses Consul lost while a container of the node
	// named held them, until recorded again as that node's (or the
	// container goes): until then, not finding them recorded is no
	// failure, another holder of one is.
	lost map[netip.Addr]string
	// taken are the lost addresses another node took before they were
	// recorded again: the window a loss leaves (see check).
	taken map[netip.Addr]bool
}

// modelStats counts what a run did, to show what the steps reached.
type modelStats struct {
	allocs, spares, refused, departed, lost, taken int
	// resent counts Docker's resends of releases; window, the requests
	// by name for an address a container of the node holds, its release
	// held back with no listing since (see opAllocAt): each must be
	// refused.
	resent, window int
	// raced counts the requests run inside a sync or a sweep.
	raced int
}

func newWorld(cfg modelConfig) (*world, error) {
	w := &world{cfg: cfg, kv: kvtest.New(), clock: t0, ctx: context.Background(), lost: map[netip.Addr]string{}, taken: map[netip.Addr]bool{}}
	w.store = netspec.NewStore(w.kv)
	if err := w.store.Create(w.ctx, modelSpec); err != nil {
		return nil, err
	}
	w.pool, _ = PoolOf(modelSpec, false)
	w.pool.BlockBits = 29
	w.kv.Hook = w.hook
	for i := range cfg.nodes {
		n := &modelNode{id: fmt.Sprintf("n%d", i)}
		w.nodes = append(w.nodes, n)
		w.start(n)
		// Facts go stale at once: only the swarm's view keeps nodes alive.
		w.kv.Put(w.ctx, "underlay/nodes/"+n.id, []byte(fmt.Sprintf(`{"id":%q,"node":"same","updated_at":%q}`, n.id, t0.Add(-time.Hour).Format(time.RFC3339))))
	}
	return w, nil
}

func (w *world) hook(call string, keys []string) error {
	if w.checking || !strings.HasPrefix(keys[0], poolPrefix(w.pool)) || !slices.Contains([]string{"txn", "list", "keys"}, call) {
		return nil
	}
	switch {
	case w.fault:
		w.fault = false
		return kvtest.ErrUnreachable
	case w.conflict && call == "txn":
		w.conflict = false
		// Another writer rewrites the block as it is: its index moves.
		if p, ok, _ := w.kv.Get(w.ctx, keys[0]); ok {
			return w.kv.Put(w.ctx, keys[0], p.Value)
		}
	}
	return nil
}

func (w *world) now() time.Time { return w.clock }

func (w *world) start(n *modelNode) {
	n.gens++
	a := newAllocator(w.kv, n.id, fmt.Sprintf("%s-g%d", n.id, n.gens), w.now, nil, WithFreedStore(&n.freed), WithHeld(modelHeld{w, n}))
	a.sleep = func(context.Context, time.Duration) error { w.clock = w.clock.Add(50 * time.Millisecond); return nil }
	a.spares.enable(w.cfg.spares, nil)
	n.alloc = a
	n.reclaimer = &Reclaimer{Alloc: a, Pools: SpecPools{Store: w.store, BlockBits4: 29}, Held: modelHeld{w, n}, Cluster: modelCluster{w, n.id},
		Grace: modelGrace, NodeTimeout: modelTimeout, Fresh: time.Second, Log: a.log}
}

type modelHeld struct {
	w *world
	n *modelNode
}

func (h modelHeld) HeldAddresses(context.Context) (Local, error) {
	defer h.runRace()
	m := map[netip.Addr]bool{}
	for _, a := range h.n.containers {
		m[a] = true
	}
	// The host shim is no container: Docker's listing, which the real
	// Held reads (dockerhost.Source), does not show its address.
	var starts []Start
	for _, st := range h.n.starting {
		// dockerd holds a container for the whole of its start.
		starts = append(starts, Start{Since: st.since})
	}
	return Local{Held: map[string]map[netip.Addr]bool{modelSpec.Name: m}, Starts: map[string][]Start{modelSpec.Name: starts}}, nil
}

// runRace runs the node's racing requests, once.
func (h modelHeld) runRace() {
	race := h.n.race
	h.n.race = nil
	h.w.race("a sweep", race)
}

// modelCluster: node 0 leads; every node that has not departed is Ready.
type modelCluster struct {
	w  *world
	id string
}

func (c modelCluster) IsLeader(context.Context) (bool, error) { return c.id == "n0", nil }
func (c modelCluster) ReadyNodes(context.Context) ([]string, error) {
	var out []string
	for _, n := range c.w.nodes {
		if !n.gone {
			out = append(out, n.id)
		}
	}
	return out, nil
}

// apply runs one step; an error is a model failure.
func (w *world) apply(s step) error {
	n := w.nodes[s.A%len(w.nodes)]
	up := !n.gone && n.alloc != nil
	allowed := func(err error, ok ...error) error {
		if err == nil || errors.Is(err, kvtest.ErrUnreachable) {
			return nil
		}
		for _, o := range ok {
			if errors.Is(err, o) {
				return nil
			}
		}
		return fmt.Errorf("%s: %w", s, err)
	}
	switch s.Op {
	case opAlloc, opAllocAt:
		if !up {
			return nil
		}
		var want netip.Addr
		if s.Op == opAllocAt {
			want = nthAddr(w.pool, s.B)
			switch {
			case s.C == inflightAddr && n.inflight != nil:
				want = n.inflight.addr
			case s.C == resentAddr:
				want = n.resent
			case s.C%4 == 0 && n.lastReleased.IsValid():
				// A container restarted with its address (--ip): Docker
				// asks for the address it just released.
				want = n.lastReleased
			}
			if pr, ok := n.alloc.held.pendingOf(w.pool, want); ok && !pr.seenHeld && w.holds(n, want) {
				// Asked for by name while a container of the node holds it
				// and its release (a resend) is held back, no listing since
				// showing it held: a request Docker makes only for a user's
				// --ip of an address in use, which must be refused (see
				// Allocator.Allocate).
				w.stats.window++
			}
		}
		a, err := n.alloc.Allocate(w.ctx, w.pool, want, KindTask)
		if err != nil {
			if strings.Contains(err.Error(), "already in use") || strings.Contains(err.Error(), "not available") {
				return nil
			}
			return allowed(err, ErrPoolExhausted)
		}
		if !w.pool.usable(a) {
			return fmt.Errorf("%s: handed out %s, a reserved address", s, a)
		}
		w.stats.allocs++
		if s.C%3 != 1 && s.C != inflightAddr && s.C != resentAddr {
			n.inflight = nil
		}
		n.starting = append(n.starting, modelStart{addr: a, since: w.clock})
	case opStarted:
		if n.gone || len(n.starting) == 0 {
			return nil
		}
		i := s.B % len(n.starting)
		if s.C == newestStart {
			i = len(n.starting) - 1
		}
		st := n.starting[i]
		n.starting = slices.Delete(n.starting, i, i+1)
		if s.B%4 != 3 {
			n.containers = append(n.containers, st.addr)
			return nil
		}
		w.gone(n, st.addr)
		// A failed start: Docker releases the address (the plugin
		// answering, if the agent is up; else the sweep's leak).
		if n.alloc != nil {
			if err := n.alloc.Release(w.ctx, w.pool, st.addr); err != nil {
				return allowed(err)
			}
			return w.released(s, n, st.addr)
		}
	case opRelease:
		if !up || len(n.containers) == 0 {
			return nil
		}
		i := s.B % len(n.containers)
		a := n.containers[i]
		// Docker removes the container whatever the release answers; an
		// address whose release failed is a leak for the sweep.
		n.containers = slices.Delete(n.containers, i, i+1)
		taken := w.taken[a] && w.lost[a] == n.id
		w.gone(n, a)
		if err := n.alloc.Release(w.ctx, w.pool, a); err != nil {
			if taken && errors.Is(err, ErrNotHeld) {
				return nil // lost, then another node's
			}
			return allowed(err)
		}
		return w.released(s, n, a)
	case opStray:
		other := w.nodes[(s.A+1+s.C%(len(w.nodes)-1))%len(w.nodes)]
		if !up || other == n {
			return nil
		}
		a := nthAddr(w.pool, s.C)
		if s.B%2 == 0 && len(other.containers) > 0 {
			a = other.containers[s.B%len(other.containers)]
		}
		if slices.Contains(n.containers, a) || slices.ContainsFunc(n.starting, func(st modelStart) bool { return st.addr == a }) {
			return nil // its own: not stray
		}
		err := n.alloc.Release(w.ctx, w.pool, a)
		if errors.Is(err, ErrNotHeld) {
			w.stats.refused++
		}
		return allowed(err, ErrNotHeld)
	case opCrash:
		if up && n.inflight != nil && s.B%4 == 1 {
			// Killed as it serves a request by name for the address of the
			// release whose answer it is still sending (another
			// container's --ip; as when nothing else is free): the
			// address handed out, no answer sent.
			if err := w.apply(step{Op: opAllocAt, A: s.A, C: inflightAddr}); err != nil {
				return fmt.Errorf("%s: %w", s, err)
			}
		}
		if up && n.inflight != nil {
			n.resendable = append(n.resendable, *n.inflight)
			n.inflight = nil
		}
		if up {
			w.stats.spares += int(n.alloc.spares.handouts.Load())
			n.alloc, n.reclaimer = nil, nil
		}
	case opRestart:
		if !n.gone && n.alloc == nil {
			w.start(n)
			// As Reclaimer.Run does first, retrying until it is done (a
			// fault fails one read): what Consul records as the node's
			// handouts, then what the containers hold, is passed over
			// from then on.
			for range 3 {
				if n.reclaimer.start(w.ctx) {
					break
				}
			}
			if s.B%2 == 1 {
				// Docker's resends, waiting in the socket's backlog, are
				// the first requests the agent serves.
				return w.resend(s, n, len(n.resendable))
			}
		}
	case opSync:
		if !up {
			return nil
		}
		// With C%3 == 0, Docker's requests on the node race the sync: they
		// run between one of its block writes (the first, or with B/2 odd
		// the second) and its settling of that write.
		if s.C%3 == 0 {
			k := n.alloc.spares
			skip := s.B / 2 % 2
			k.afterWrite = func() {
				if skip > 0 {
					skip--
					return
				}
				k.afterWrite = nil
				w.race("a sync", raceSteps(s))
			}
			defer func() { k.afterWrite = nil }()
		}
		_, err := n.alloc.spares.syncAll(w.ctx, s.B%2 == 1, false)
		if err := w.takeRaceErr(); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
		return allowed(err)
	case opPressure:
		if up {
			n.alloc.spares.hold(w.pool.ID())
		}
	case opSweep:
		if !up {
			return nil
		}
		// With C%3 == 0, Docker's requests on the node race the sweep:
		// they run just after it lists the node's containers.
		if s.C%3 == 0 {
			n.race = raceSteps(s)
		}
		err := n.reclaimer.Sweep(w.ctx)
		n.race = nil
		if err := w.takeRaceErr(); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
		return allowed(err)
	case opDepart:
		if s.A%len(w.nodes) != 0 && !n.gone {
			w.stats.departed++
			for _, a := range n.containers {
				w.gone(n, a)
			}
			for _, st := range n.starting {
				w.gone(n, st.addr)
			}
			n.gone, n.alloc, n.reclaimer, n.containers, n.starting, n.shim = true, nil, nil, nil, nil, netip.Addr{}
		}
	case opLeader:
		if l := w.nodes[0]; l.alloc != nil {
			return allowed(l.reclaimer.Sweep(w.ctx))
		}
	case opConflict:
		w.conflict = true
	case opFault:
		w.fault = true
	case opTick:
		w.clock = w.clock.Add(time.Duration(s.B) * time.Second / 4)
	case opShim:
		if !up {
			return nil
		}
		a, err := n.alloc.Shim(w.ctx, w.pool)
		if err != nil {
			return allowed(err, ErrPoolExhausted)
		}
		if n.shim.IsValid() && a != n.shim {
			return fmt.Errorf("%s: %s's shim is %s, was %s", s, n.id, a, n.shim)
		}
		n.shim = a
	case opResend:
		if !up {
			return nil
		}
		return w.resend(s, n, 1)
	case opLose:
		if n.gone || len(n.containers) == 0 {
			return nil
		}
		lose := []netip.Addr{n.containers[s.C%len(n.containers)]}
		if s.B%2 == 1 {
			lose = slices.Clone(n.containers)
		}
		return w.lose(s, n, lose)
	}
	return nil
}

// resend has n's Docker resend up to count of the releases kills cut off
// (the B-th first), each once: resent until answered.
func (w *world) resend(s step, n *modelNode, count int) error {
	n.resendable = slices.DeleteFunc(n.resendable, func(r servedRelease) bool { return w.clock.Sub(r.at) > resendWindow })
	for range count {
		if len(n.resendable) == 0 {
			return nil
		}
		i := s.B % len(n.resendable)
		a := n.resendable[i].addr
		n.resendable = slices.Delete(n.resendable, i, i+1)
		w.stats.resent++
		if err := n.alloc.Release(w.ctx, w.pool, a); err != nil && !errors.Is(err, ErrNotHeld) && !errors.Is(err, kvtest.ErrUnreachable) {
			return fmt.Errorf("%s: resend of the release of %s: %w", s, a, err)
		}
		if s.C%3 == 2 {
			// Another container asks for the address by name (--ip) at
			// once: refused while the container it was handed to since
			// runs or starts (see opAllocAt).
			n.resent = a
			if err := w.apply(step{Op: opAllocAt, A: s.A, C: resentAddr}); err != nil {
				return fmt.Errorf("%s: %w", s, err)
			}
		}
	}
	return nil
}

// holds says whether a container of n, running or starting, holds a.
func (w *world) holds(n *modelNode, a netip.Addr) bool {
	return slices.Contains(n.containers, a) || slices.ContainsFunc(n.starting, func(st modelStart) bool { return st.addr == a })
}

// gone notes that n's container holding a is gone: a lost address of
// it is no longer owed a record.
func (w *world) gone(n *modelNode, a netip.Addr) {
	if w.lost[a] == n.id {
		delete(w.lost, a)
		delete(w.taken, a)
	}
}

// take notes that another node took a, lost under a running container.
func (w *world) take(a netip.Addr) {
	if !w.taken[a] {
		w.taken[a] = true
		w.stats.taken++
	}
}

// lose deletes the allocations of addrs, n's running containers', from
// Consul as a stray release or the leader's reclaim of n would: a write
// past n's allocator, whose copies of the blocks go stale.
func (w *world) lose(s step, n *modelNode, addrs []netip.Addr) error {
	w.checking = true
	defer func() { w.checking = false }()
	for _, a := range addrs {
		key := blockPath(w.pool, w.pool.Block(a))
		pair, ok, err := w.kv.Get(w.ctx, key)
		if err != nil {
			return fmt.Errorf("%s: read %s: %w", s, key, err)
		}
		if !ok {
			continue // lost already, not recorded again yet
		}
		doc, err := decodeBlock(w.pool, w.pool.Block(a), pair.Value)
		if err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
		if al, ok := doc.alloc(a); !ok || al.Node != n.id || w.taken[a] {
			continue // lost already, not recorded again yet; or another node's too
		}
		delete(doc.Allocs, a.String())
		w.stats.lost++
		w.lost[a] = n.id
		if len(doc.Allocs) == 0 {
			err = w.kv.Delete(w.ctx, key)
		} else {
			var b []byte
			if b, err = json.Marshal(doc); err == nil {
				err = w.kv.Put(w.ctx, key, b)
			}
		}
		if err != nil {
			return fmt.Errorf("%s: write %s: %w", s, key, err)
		}
	}
	return nil
}

// newestStart, as the C of a started step, picks the newest start.
const newestStart = 64

// inflightAddr, as the C of an allocAt step, asks for the address of the
// node's release in flight, and leaves it in flight.
const inflightAddr = 65

// resentAddr, as the C of an allocAt step, asks for the address of the
// node's release Docker last resent, and leaves the release in flight.
const resentAddr = 66

// race runs steps inside another step (what), keeping the first error for
// takeRaceErr.
func (w *world) race(what string, steps []step) {
	for _, r := range steps {
		w.stats.raced++
		if err := w.apply(r); err != nil && w.raceErr == nil {
			w.raceErr = fmt.Errorf("racing %s: %w", what, err)
		}
	}
}

// takeRaceErr returns and clears the first error of the steps run inside
// the current one.
func (w *world) takeRaceErr() error {
	err := w.raceErr
	w.raceErr = nil
	return err
}

// raceSteps are the requests of node A's Docker that race sync step s:
// allocations, starts done or failed (often the newest at once: a start
// that fails releases the address it was just given), releases and stray
// releases.
func raceSteps(s step) []step {
	ops := []modelOp{opAlloc, opAllocAt, opStarted, opRelease, opStray}
	rng := rand.New(rand.NewPCG(uint64(s.B), uint64(s.C)))
	var out []step
	for range 1 + rng.IntN(3) {
		op := ops[rng.IntN(len(ops))]
		out = append(out, step{Op: op, A: s.A, B: rng.IntN(64), C: rng.IntN(64)})
		if op == opAlloc && rng.IntN(2) == 0 {
			out = append(out, step{Op: opStarted, A: s.A, B: 3 + 4*rng.IntN(16), C: newestStart})
		}
	}
	return out
}

// released checks, after Docker's release of a on n was answered without
// error, that a is no longer n's in Consul: a release taken for a stray
// one leaves an allocation no container holds.
func (w *world) released(s step, n *modelNode, a netip.Addr) error {
	n.lastReleased, n.inflight = a, &servedRelease{addr: a, gen: n.gens, at: w.clock}
	all, err := w.allocations()
	if err != nil {
		return err
	}
	if _, ok := n.alloc.held.pendingOf(w.pool, a); ok {
		return nil // held back: done once a listing shows no container holds it (see settle)
	}
	if al, ok := all[a]; ok && al.Node == n.id && al.Kind != KindShim {
		return fmt.Errorf("%s: %s's release of %s answered, but Consul still records it as %+v", s, n.id, a, al)
	}
	return nil
}

// allocations reads the pool's allocations with the KV hook disarmed: the
// model's own reads meet no racing write or fault.
func (w *world) allocations() (map[netip.Addr]Alloc, error) {
	w.checking = true
	defer func() { w.checking = false }()
	return Allocations(w.ctx, w.kv, w.pool)
}

// nthAddr is the range's i-th address (mod its size).
func nthAddr(p Pool, i int) netip.Addr {
	a := p.allocRange().Addr()
	for range i % (1 << (32 - p.allocRange().Bits())) {
		a = a.Next()
	}
	return a
}

// check verifies the invariants: every allocation is usable; no address
// has two live holders (a container, a free spare, a shim); every live
// holder's address is recorded in Consul as its node's. With settled,
// also that every allocation has a live holder.
func (w *world) check(settled bool) error {
	all, err := w.allocations()
	if err != nil {
		return err
	}
	for a, al := range all {
		if !w.pool.usable(a) {
			return fmt.Errorf("reserved address %s allocated: %+v", a, al)
		}
	}
	type holder struct {
		who  string
		lost bool // its container's, Consul lost under it, not recorded again
	}
	holders := map[netip.Addr]holder{}
	// hold checks a's holder, who, on node: ok says what Consul must
	// record of it.
	hold := func(a netip.Addr, node, who string, ok func(Alloc) bool) error {
		al, found := all[a]
		lost := w.lost[a] == node && !(found && ok(al))
		if prev, dup := holders[a]; dup {
			if !prev.lost && !lost {
				return fmt.Errorf("DUPLICATE: %s held by %s and by %s", a, prev.who, who)
			}
			// Another node took an address Consul lost under a running
			// container before it was recorded again: the window no node
			// can close (Consul showed it free), counted, not a failure.
			w.take(a)
			if lost {
				return nil
			}
		}
		holders[a] = holder{who: who, lost: lost}
		switch {
		case lost && found:
			w.take(a) // recorded as another node's meanwhile
			return nil
		case lost && !settled:
			return nil // not recorded again yet
		case w.lost[a] == node && found && ok(al):
			delete(w.lost, a) // recorded again
		}
		if !found || !ok(al) {
			return fmt.Errorf("%s held by %s, but Consul records %+v (found %v)", a, who, al, found)
		}
		return nil
	}
	for _, n := range w.nodes {
		if n.gone {
			continue
		}
		for _, a := range n.containers {
			if err := hold(a, n.id, "a container of "+n.id, func(al Alloc) bool { return al.Node == n.id && al.Kind != KindShim }); err != nil {
				return err
			}
		}
		for _, st := range n.starting {
			if err := hold(st.addr, n.id, "a container starting on "+n.id, func(al Alloc) bool { return al.Node == n.id && al.Kind != KindShim }); err != nil {
				return err
			}
		}
		if n.shim.IsValid() {
			if err := hold(n.shim, n.id, "the shim of "+n.id, func(al Alloc) bool { return al.Node == n.id && al.Kind == KindShim }); err != nil {
				return err
			}
		}
		if n.alloc == nil {
			continue
		}
		n.alloc.spares.mu.Lock()
		var free []netip.Addr
		for _, sp := range n.alloc.spares.pools {
			free = append(free, sp.Free...)
		}
		n.alloc.spares.mu.Unlock()
		for _, a := range free {
			if err := hold(a, n.id, "a free spare of "+n.id, n.alloc.spares.mine); err != nil {
				return err
			}
		}
	}
	if settled {
		for a, al := range all {
			if _, ok := holders[a]; !ok {
				return fmt.Errorf("settled, but %s is allocated with no live holder: %+v", a, al)
			}
		}
	}
	return nil
}

// settle restarts every agent that is down and lets every start finish, then
// lets time pass with syncs and sweeps everywhere until leaks and departed
// nodes are gone.
func (w *world) settle() error {
	w.conflict, w.fault = false, false
	for _, n := range w.nodes {
		if !n.gone && n.alloc == nil {
			w.start(n)
		}
		for _, st := range n.starting {
			n.containers = append(n.containers, st.addr)
		}
		n.starting = nil
	}
	for range 4 {
		w.clock = w.clock.Add(modelGrace + modelTimeout + time.Second)
		for _, n := range w.nodes {
			if n.gone {
				continue
			}
			if _, err := n.alloc.spares.syncAll(w.ctx, true, false); err != nil {
				return fmt.Errorf("settle: %s syncs: %w", n.id, err)
			}
			if err := n.reclaimer.Sweep(w.ctx); err != nil {
				return fmt.Errorf("settle: %s sweeps: %w", n.id, err)
			}
		}
		if err := w.check(false); err != nil {
			return fmt.Errorf("settling: %w", err)
		}
		w.dropTaken()
	}
	return w.check(true)
}

// dropTaken removes the containers whose address Consul lost and another
// node took before it was recorded again, as an operator does once
// `underlay ips` flags the duplicate: nothing can record it again.
func (w *world) dropTaken() {
	for _, n := range w.nodes {
		n.containers = slices.DeleteFunc(n.containers, func(a netip.Addr) bool {
			if w.taken[a] && w.lost[a] == n.id {
				delete(w.lost, a)
				delete(w.taken, a)
				return true
			}
			return false
		})
	}
}

// run plays steps from scratch; it returns the first failure and the
// index of the step that caused it (len(steps) for settling).
func run(cfg modelConfig, steps []step) (int, modelStats, error) {
	w, err := newWorld(cfg)
	if err != nil {
		return 0, modelStats{}, err
	}
	for i, s := range steps {
		if err := w.apply(s); err != nil {
			return i, w.stats, err
		}
		if err := w.check(false); err != nil {
			return i, w.stats, fmt.Errorf("after %s: %w", s, err)
		}
	}
	for _, n := range w.nodes {
		if n.alloc != nil {
			w.stats.spares += int(n.alloc.spares.handouts.Load())
		}
	}
	return len(steps), w.stats, w.settle()
}

// shrink removes ever smaller chunks of steps, down to single steps,
// while the run still fails as first (a duplicate stays a duplicate),
// cutting the steps after the failing one; within budget, or with
// budget 0 (UNDERLAY_IPAM_MODEL_SHRINK=full) untimed, pass after pass
// until no step can go.
func shrink(cfg modelConfig, steps []step, first error, budget time.Duration) []step {
	deadline := time.Now().Add(budget)
	inTime := func() bool { return budget == 0 || time.Now().Before(deadline) }
	dup := strings.Contains(first.Error(), "DUPLICATE")
	// fails returns s cut after its failing step, or nil if it passes.
	fails := func(s []step) []step {
		at, _, err := run(cfg, s)
		if err == nil || dup && !strings.Contains(err.Error(), "DUPLICATE") {
			return nil
		}
		return s[:min(at+1, len(s))]
	}
	for {
		before := len(steps)
		for chunk := len(steps) / 2; chunk >= 1; chunk /= 2 {
			for i := 0; i+chunk <= len(steps) && inTime(); {
				if cut := fails(slices.Concat(steps[:i], steps[i+chunk:])); cut != nil {
					steps = cut
				} else {
					i += chunk
				}
			}
		}
		if budget != 0 || len(steps) == before {
			return steps
		}
	}
}

func TestModelNoDuplicates(t *testing.T) {
	budget := modelBudget
	if testing.Short() {
		budget = 2 * time.Second
	}
	if v := os.Getenv(envModelTime); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("%s=%q: %v", envModelTime, v, err)
		}
		budget = d
	}
	base := uint64(time.Now().UnixNano())
	one := false
	if v := os.Getenv(envModelSeed); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", envModelSeed, v, err)
		}
		base, one = s, true
	}
	deadline := time.Now().Add(budget)
	runs, total := 0, 0
	var sum modelStats
	for seed := base; one && runs == 0 || !one && time.Now().Before(deadline); seed++ {
		cfg, steps := generate(seed)
		at, st, err := run(cfg, steps)
		runs++
		total += len(steps)
		sum.allocs, sum.spares, sum.refused, sum.departed = sum.allocs+st.allocs, sum.spares+st.spares, sum.refused+st.refused, sum.departed+st.departed
		sum.raced, sum.lost, sum.taken = sum.raced+st.raced, sum.lost+st.lost, sum.taken+st.taken
		sum.resent, sum.window = sum.resent+st.resent, sum.window+st.window
		if err == nil {
			continue
		}
		t.Logf("seed %d (%d nodes, %d spares each) failed at step %d of %d: %v", seed, cfg.nodes, cfg.spares, at, len(steps), err)
		shrinkBudget := time.Minute
		if os.Getenv(envModelShrink) == "full" {
			shrinkBudget = 0
		}
		short := shrink(cfg, steps[:min(at+1, len(steps))], err, shrinkBudget)
		_, _, serr := run(cfg, short)
		var b strings.Builder
		for i, s := range short {
			fmt.Fprintf(&b, "  %3d %s\n", i, s)
		}
		t.Fatalf("seed %d: replay with %s=%d; shortest failing run found, %d steps (%v):\n%s",
			seed, envModelSeed, seed, len(short), serr, b.String())
	}
	t.Logf("%d seeded runs, %d steps, from seed %d: %d addresses handed out (%d from spares), %d stray releases refused, %d nodes departed, %d requests run inside a sync or a sweep, %d running containers' addresses lost by Consul (%d taken by another node before recorded again), %d releases resent (%d requests by name, from another container, for an address whose release a resend held back); no duplicate",
		runs, total, base, sum.allocs, sum.spares, sum.refused, sum.departed, sum.raced, sum.lost, sum.taken, sum.resent, sum.window)
}

// TestModelIsDeterministic: one seed replays to the same Consul state,
// which shrinking relies on.
func TestModelIsDeterministic(t *testing.T) {
	state := func() uint64 {
		cfg, steps := generateWith(42, true)
		w, err := newWorld(cfg)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range steps[:800] {
			if err := w.apply(s); err != nil {
				t.Fatal(err)
			}
			// As run does: the check notes what the steps rely on (lost
			// addresses another node took).
			if err := w.check(false); err != nil {
				t.Fatal(err)
			}
		}
		pairs, _ := w.kv.List(w.ctx, "")
		h := fnv.New64a()
		for _, p := range pairs {
			fmt.Fprintf(h, "%s=%s@%d;", p.Key, p.Value, p.Index)
		}
		return h.Sum64()
	}
	if a, b := state(), state(); a != b {
		t.Errorf("two runs of one seed ended in different states (%x, %x)", a, b)
	}
}
