package ipam

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/underlay/underlay/internal/netspec"
)

// ErrNotHeld is returned for a release of an address another node holds:
// it is not released.
var ErrNotHeld = errors.New("not released")

// Allocator hands out one node's addresses. One Allocator per node, named
// by the node's identity (its swarm node ID); other nodes' allocators race
// with it only through check-and-set writes of block documents, which its
// store makes. Concurrent requests of a pool share writes (see batcher);
// a keeper hands out spares claimed ahead of demand (see KeepSpares).
type Allocator struct {
	node   string
	gen    string // this process's generation, on its spares
	kv     KV
	store  *store
	spares *keeper
	// freed are the addresses this node freed lately: handed out again
	// only when nothing else is free (see reuse).
	freed *freedAddrs
	// held are the addresses local containers held at the last sweep:
	// never handed out (see reuse).
	held *heldAddrs
	// freedStore keeps freed across restarts (nil: in memory only).
	freedStore FreedStore
	saveMu     sync.Mutex // guards following field; orders saves of freed
	// saveFailing: the last save failed (logged once, until one works).
	saveFailing bool
	log         *slog.Logger
	now         func() time.Time
	// sleep waits between asks for other nodes' spares.
	sleep func(ctx context.Context, d time.Duration) error
	batch batcher
	// shimLocks serialise, per pool, the node's finding or allocating of
	// its shim address and its release (see Shim).
	shimLocks poolLocks
	// settleLocks serialise, per pool, the releases held back being done
	// (see settle).
	settleLocks poolLocks
	// lister lists the node's containers afresh for a request by name of
	// an address whose release is held back (see unheldNow); nil: none is
	// taken, and the request is served as a restart's.
	lister Held
}

// Option sets an optional part of an Allocator.
type Option func(*Allocator)

// WithFreedStore keeps what the allocator freed lately in s, so that a
// restarted agent still passes it over (see reuse): read as the allocator
// is made (unreadable, it is logged and taken as empty), written after
// every release done, before Docker is answered.
func WithFreedStore(s FreedStore) Option {
	return func(a *Allocator) { a.freedStore = s }
}

// WithSpecs has the allocator's keeper consult st's newest listing of
// the network specs (netspec.Store.Listed, read again by the agent's
// network reconciler at every change) before it hands out a spare: none
// is handed out, and none kept, of a network that listing shows marked
// for removal (see keeper.take). st is the store the plugin's pools are
// read from (SpecPools).
func WithSpecs(st *netspec.Store) Option {
	return func(a *Allocator) { a.spares.listed = st.Listed }
}

// WithHeld has the allocator list the node's containers through h when a
// request asks by name for an address whose release is held back (see
// Allocator.Release): given only if that listing shows no container
// holds it, nor may a start under way since before it was handed out.
// h is the reclaimer's (Reclaimer.Held).
func WithHeld(h Held) Option {
	return func(a *Allocator) { a.lister = h }
}

// NewAllocator returns the allocator of the node with identity node over
// kv; log may be nil.
func NewAllocator(kv KV, node string, log *slog.Logger, opts ...Option) *Allocator {
	return newAllocator(kv, node, newGen(), time.Now, log, opts...)
}

func newAllocator(kv KV, node, gen string, now func() time.Time, log *slog.Logger, opts ...Option) *Allocator {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "ipam")
	st := newStore(kv, log)
	freed, held := &freedAddrs{}, &heldAddrs{}
	a := &Allocator{node: node, gen: gen, kv: kv, store: st, spares: newKeeper(node, gen, st, kv, freed, held, now, log), freed: freed, held: held, log: log, now: now,
		sleep: func(ctx context.Context, d time.Duration) error {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(d):
				return nil
			}
		}}
	for _, o := range opts {
		o(a)
	}
	a.loadFreed()
	return a
}

// loadFreed reads back what an earlier agent of this node freed lately.
// Never fatal: without it, those addresses are only handed out sooner.
func (a *Allocator) loadFreed() {
	if a.freedStore == nil {
		return
	}
	saved, err := a.freedStore.Load()
	if err != nil {
		a.log.Warn("cannot read back the addresses this node freed lately: they may be handed out again at once", "err", err)
		return
	}
	if n := a.freed.restore(saved, a.now()); n > 0 {
		a.log.Info("read back the addresses this node freed lately: passed over while others are free", "addrs", n, "reuse_after", reuseAfter)
	}
}

// saveFreed saves what the node freed lately, if it keeps it; a failure
// is logged (once until the next success), never returned: the release
// it follows is done.
func (a *Allocator) saveFreed() {
	if a.freedStore == nil {
		return
	}
	a.saveMu.Lock()
	defer a.saveMu.Unlock()
	err := a.freedStore.Save(a.freed.all(a.now()))
	switch {
	case err != nil && !a.saveFailing:
		a.log.Warn("cannot save the addresses this node freed lately: a restarted agent may hand them out again at once", "err", err)
	case err == nil && a.saveFailing:
		a.log.Info("saving the addresses this node freed lately again")
	}
	a.saveFailing = err != nil
}

func newGen() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Node is the identity the allocator allocates for.
func (a *Allocator) Node() string { return a.node }

// commitTimeout bounds one batch's writes, whoever's request started it.
const commitTimeout = 10 * time.Second

// Allocate hands out want, or any free address when want is invalid, as
// kind. Task addresses come from the node's spares when it keeps any.
func (a *Allocator) Allocate(ctx context.Context, p Pool, want netip.Addr, kind string) (netip.Addr, error) {
	al := Alloc{Node: a.node, At: a.now().UTC(), Kind: kind}
	if pr, ok := a.held.pendingOf(p, want); ok && kind == KindTask && !pr.seenHeld {
		// Asked for by name with its release held back and no listing
		// since showing it held: a container restarted with its address
		// (Docker releases it, then asks for it), or another container's
		// --ip of it while the one it was handed to runs, its release a
		// resend. A fresh listing tells them apart; if no container may
		// hold it, the release is done first, then the request served as
		// any other.
		if err := a.unheldNow(ctx, p, want); err != nil {
			return netip.Addr{}, err
		}
		if _, err := a.settle(ctx, p, want); err != nil {
			return netip.Addr{}, fmt.Errorf("allocate %s in %s: free it first, its release held back: %w", want, p.ID(), err)
		}
	}
	// Shims are found again by reading Consul, so they are never handed
	// out before their write: no spares for them.
	if kind == KindTask && want.IsValid() && a.held.holds(p, want) && !a.freed.lately(p, want, a.now()) {
		// A local container holds it, as last listed or handed out
		// since, and it was not released here since: Consul showing it
		// free would have lost it under the container (see heldAddrs).
		return netip.Addr{}, fmt.Errorf("address %s in %s is already in use (a container on this node holds it, and it was not released since)", want, p.ID())
	}
	if kind == KindTask {
		if addr, ok := a.spares.take(p, want, al); ok {
			a.handedOut(p, addr, al.At)
			return addr, nil
		}
	}
	var addr netip.Addr
	var err error
	if want.IsValid() {
		addr, err = want, a.allocateAt(ctx, p, want, al)
	} else {
		r := a.batch.do(ctx, &request{pool: p, al: al}, a.commit)
		addr, err = r.addr, r.err
	}
	if err == nil && kind == KindTask {
		a.handedOut(p, addr, al.At)
	}
	return addr, err
}

// heldBackListWait bounds the listing of the containers a request by name
// of an address whose release is held back waits for (see unheldNow): it
// takes milliseconds, and up to dockerhost's inspectWait (2 s) when a
// start is under way (the restarting container's own, if its state is
// restarting); the request's write must still fit in the plugin's
// Timeout (5 s by default), or Docker's start fails on the plugin's
// time-out rather than on this refusal.
const heldBackListWait = 3 * time.Second

// unheldNow checks, by a listing of the node's containers begun now, that
// no container holds want, of p, whose release is held back, nor may a
// start under way since before want was handed out (see
// heldAddrs.judgeHeldBack): else another container runs, or starts, with
// it, the release held back a resend of an older container's, and the
// request (a --ip of an address in use) is refused. The restarted
// container the release was its own is in neither: its address goes at
// its exit, and its start began after (a restart policy's, which dockerd
// answers no inspect of, dated by the container's die event: the Held
// of dockerhost; the event missed, it is refused). A listing that fails or takes too
// long refuses the request too: it cannot be told from that (dockerd
// restoring containers at boot lists none until they are started; the
// restart of such a container with its address fails then, not
// duplicated; the sweep does the release once a listing shows it free).
// With no lister (see WithHeld) it is served as a restart's.
func (a *Allocator) unheldNow(ctx context.Context, p Pool, want netip.Addr) error {
	if a.lister == nil {
		return nil
	}
	lctx, cancel := context.WithTimeout(ctx, heldBackListWait)
	defer cancel()
	begun := a.now()
	local, err := a.lister.HeldAddresses(lctx)
	if err != nil {
		return fmt.Errorf("address %s in %s is not available yet: its release is held back (an earlier agent of this node freed it lately) until a listing of the containers shows none holds it, and the listing failed: %w", want, p.ID(), err)
	}
	switch a.held.judgeHeldBack(p, want, local.Held[p.Network], local.Starts[p.Network], begun) {
	case heldBackHeld:
		return fmt.Errorf("address %s in %s is already in use (a container on this node holds it: its release held back was a resend of an older container's)", want, p.ID())
	case heldBackStarting:
		return fmt.Errorf("address %s in %s is already in use (a container start under way on this node may hold it, and its release held back may be a resend of an older container's)", want, p.ID())
	case heldBackAgain:
		return fmt.Errorf("address %s in %s is not available yet: released again while this node's containers were listed; ask again", want, p.ID())
	}
	return nil
}

// handedOut notes that task address addr of p was handed out at at: it
// is passed over until a listing of the containers judges it (see
// heldAddrs), Consul may lose it before any sweep sees its container; and
// it is no longer one this node freed lately. Freed lately, an address a
// listed container holds is taken for one whose container stopped since
// (see Allocate, heldFree): asked for again, or lost by Consul, once its
// new container is listed, it would be handed to a second container.
// One freed lately is saved as handed out again before the request is
// answered (see freedAddrs.unfree): the only handouts that write the
// file, and rare (passed over while any other address is free).
func (a *Allocator) handedOut(p Pool, addr netip.Addr, at time.Time) {
	a.held.handOut(p, addr, at)
	if a.freed.unfree(p, addr) {
		a.saveFreed()
	}
}

// Release frees addr if this node holds it; releasing a free address
// succeeds. An address another node holds is never freed here (an error
// says whose it is): that is its own node's, or the departed-node
// reclaim's, to do. An address p never hands out (another family's,
// outside its range) is refused: answered as released, it would stay
// allocated wherever it is. A block is given back when its last address
// goes.
//
// The release of an address an earlier agent of this node freed lately
// (see freedAddrs.suspect), handed out again since by this agent or an
// earlier one, or by none that saved it, is held back: answered, but the
// address stays recorded, and passed over, until a listing of the
// containers taken after it shows none holds it, or the address is asked
// for by name (see Allocate). Docker resends a release whose answer it
// did not get (the agent killed as it served it); a release names no
// container, so the resend, once the address is a new container's, would
// free it under that container, and the node would hand it out again.
func (a *Allocator) Release(ctx context.Context, p Pool, addr netip.Addr) error {
	if !p.allocRange().Contains(addr) {
		return fmt.Errorf("address %s is not in pool %s (%s): nothing released", addr, p.ID(), p.allocRange())
	}
	if now := a.now(); a.freed.suspect(p, addr, now) {
		a.held.pend(p, addr, now)
		a.log.Info(msgHeldBack, "pool", p.ID(), "addr", addr)
		return nil
	}
	_, err := a.release(ctx, p, addr)
	return err
}

// msgHeldBack is logged at each release held back.
const msgHeldBack = "release of an address an earlier agent of this node freed lately (it may be Docker's resend of that release, the address handed out again since): held back until a listing of the containers shows none holds it"

// release frees addr if this node holds it (see Release), and says
// whether Consul recorded it as this node's until then.
func (a *Allocator) release(ctx context.Context, p Pool, addr netip.Addr) (bool, error) {
	stray, handed, undo := a.spares.releasing(p, addr)
	if stray {
		a.log.Warn("release of a spare address Docker never got: ignored", "pool", p.ID(), "addr", addr)
		return false, nil
	}
	// The batch puts the handout back if the release fails: a caller that
	// stops waiting leaves its release queued, and served.
	r := a.batch.do(ctx, &request{pool: p, release: addr, handed: handed, undo: undo}, a.commit)
	if r.err == nil {
		a.held.released(p, addr)
	}
	return r.freed, r.err
}

// settle does the release of addr, of p, held back (see Release), if it
// still is; one at a time per pool, so that the sweep's and a request's
// are not both done: the second would free the address the first
// handed out.
// It says whether that freed the address in Consul (a resend's, of an
// address no container was given again, finds it free).
func (a *Allocator) settle(ctx context.Context, p Pool, addr netip.Addr) (bool, error) {
	unlock, err := a.settleLocks.lock(ctx, p.ID())
	if err != nil {
		return false, fmt.Errorf("release %s in %s: %w", addr, p.ID(), err)
	}
	defer unlock()
	if _, ok := a.held.pendingOf(p, addr); !ok {
		return false, nil
	}
	freed, err := a.release(ctx, p, addr)
	if errors.Is(err, ErrNotHeld) {
		// Another node's since (freed by another way, then claimed):
		// not this node's to free any more, nor an error of the sweep's.
		a.held.unpend(p, addr)
		a.log.Info("release held back dropped: the address is another node's now", "pool", p.ID(), "addr", addr, "reason", err)
		return false, nil
	}
	return freed, err
}

// allocateAt allocates want, waiting a moment when another node keeps it
// as a spare (asked for, it may give it back).
func (a *Allocator) allocateAt(ctx context.Context, p Pool, want netip.Addr, al Alloc) error {
	if !p.usable(want) {
		return fmt.Errorf("address %s is not available in %s: outside %s, or the network, broadcast, gateway or an aux address", want, p.ID(), p.allocRange())
	}
	if key, err := a.store.shadow(ctx, p, p.Block(want)); err != nil {
		return fmt.Errorf("allocate %s in %s: %w", want, p.ID(), err)
	} else if key != "" {
		return fmt.Errorf("address %s is not available in %s: the bad key %s overlaps its block, and what it records there cannot be read; %s",
			want, p.ID(), key, BadDoc{Key: key}.RemovedBy())
	}
	waitUntil := a.now().Add(spareWait)
	for {
		var holder Alloc
		var held bool
		_, err := a.store.update(ctx, p, p.Block(want), func(doc BlockDoc) (BlockDoc, bool) {
			if holder, held = doc.alloc(want); held {
				return doc, false
			}
			if claims(doc) {
				doc.Node = a.node
			}
			doc.Allocs[want.String()] = al
			return doc, true
		})
		switch {
		case err != nil:
			return fmt.Errorf("allocate %s in %s: %w", want, p.ID(), err)
		case !held:
			return nil
		case holder.Kind == KindSpare && !a.spares.mine(holder) && a.now().Before(waitUntil):
			// Another node keeps it as a spare: ask for it back.
			if err := a.waitForSpares(ctx, p); err != nil {
				return err
			}
		default:
			return fmt.Errorf("address %s in %s is already in use (node %s)", want, p.ID(), holder.Node)
		}
	}
}

// waitForSpares asks other nodes for their spares of p and gives them a
// moment.
func (a *Allocator) waitForSpares(ctx context.Context, p Pool) error {
	if err := a.spares.askForSpares(ctx, p); err != nil {
		return err
	}
	if err := a.sleep(ctx, 50*time.Millisecond); err != nil {
		return fmt.Errorf("wait for spare addresses of %s: %w", p.ID(), err)
	}
	return nil
}

// request is one queued request: an allocation of any address as al, or
// with release set, the release of that address (handed: one the node
// handed out from its spares; undo, run if the release fails, hands it
// out again).
type request struct {
	pool    Pool
	al      Alloc
	release netip.Addr
	handed  bool
	undo    func()
	done    chan result
}

// answer sends a release's result, first undoing its preparation if it
// failed.
func (r *request) answer(res result) {
	if res.err != nil && r.undo != nil {
		r.undo()
	}
	r.done <- res
}

type result struct {
	addr netip.Addr
	err  error
	// freed: the release freed the address in Consul.
	freed bool
}

// batcher runs concurrent requests together: the request that finds no
// commit running commits everything queued, until the queue is empty, so
// requests that arrive during a write share the next one.
type batcher struct {
	mu      sync.Mutex // guards following fields
	queue   []*request
	running bool
}

func (b *batcher) do(ctx context.Context, r *request, commit func([]*request)) result {
	r.done = make(chan result, 1)
	b.mu.Lock()
	b.queue = append(b.queue, r)
	lead := !b.running
	b.running = true
	b.mu.Unlock()
	for lead {
		b.mu.Lock()
		batch := b.queue
		b.queue = nil
		if len(batch) == 0 {
			b.running = false
			lead = false
		}
		b.mu.Unlock()
		if len(batch) > 0 {
			commit(batch)
		}
	}
	select {
	case res := <-r.done:
		return res
	case <-ctx.Done():
		// The request may still be served; an address allocated then is a
		// leak the reclaimer returns, as when Docker gives up on a slow plugin.
		return result{err: ctx.Err()}
	}
}

// commit serves a batch, pool by pool: releases first, then allocations.
func (a *Allocator) commit(batch []*request) {
	// A pool read from another spec under the name (a network made
	// again) is another pool: served apart, each with its own.
	type poolKey struct {
		id   string
		spec uint64
	}
	var order []poolKey
	byPool := map[poolKey][]*request{}
	for _, r := range batch {
		id := poolKey{r.pool.ID(), r.pool.specIndex}
		if byPool[id] == nil {
			order = append(order, id)
		}
		byPool[id] = append(byPool[id], r)
	}
	for _, id := range order {
		var allocs, releases []*request
		for _, r := range byPool[id] {
			if r.release.IsValid() {
				releases = append(releases, r)
			} else {
				allocs = append(allocs, r)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
		if len(releases) > 0 {
			a.releaseBatch(ctx, releases)
		}
		if len(allocs) > 0 {
			a.allocateBatch(ctx, allocs)
		}
		cancel()
	}
}

// allocateBatch gives every request of one pool an address, with one
// write per block touched: first in the node's own blocks, as it knows
// them, then in blocks it claims, known from the pool's keys (see
// claimListed), then, from a fresh listing of every document, in its
// blocks, free blocks and other nodes' blocks in that order. Addresses
// the node freed lately are passed over until nothing else is free, and
// those local containers held at the last sweep always (see reuse). When the pool is full but other nodes keep spares, it asks for
// them and looks again, for at most spareWait.
func (a *Allocator) allocateBatch(ctx context.Context, reqs []*request) {
	p := reqs[0].pool
	fail := func(err error) {
		for _, r := range reqs {
			r.done <- result{err: err}
		}
	}
	if err := primeHandouts(ctx, a.store, a.held, p, a.node, a.gen, a.now()); err != nil {
		fail(err)
		return
	}
	own, err := a.store.own(ctx, p, a.node)
	if err != nil {
		fail(err)
		return
	}
	ru := reuse{freed: a.freed.recent(p, a.now()), held: a.held.of(p)}
	for _, b := range slices.SortedFunc(maps.Keys(own), comparePrefix) {
		if _, ok := own[b].free(p, b, ru); ok && len(reqs) > 0 {
			if reqs, err = a.fillBlock(ctx, p, b, reqs, ru, false); err != nil {
				fail(err)
				return
			}
		}
	}
	if len(reqs) > 0 {
		if reqs, err = a.claimListed(ctx, p, reqs, ru); err != nil {
			fail(err)
			return
		}
	}
	waitUntil := a.now().Add(spareWait)
	for attempt := 0; len(reqs) > 0; attempt++ {
		v, err := a.store.scan(ctx, p)
		if err != nil {
			fail(err)
			return
		}
		for _, b := range candidates(p, v, a.node, true, ru) {
			if len(reqs) == 0 {
				return
			}
			if reqs, err = a.fillBlock(ctx, p, b, reqs, ru, false); err != nil {
				fail(err)
				return
			}
		}
		last := reuse{freed: ru.freed, last: true, held: ru.held}
		switch {
		case len(reqs) == 0:
		case anyFree(p, v, ru) && attempt < maxAttempts:
			// Something was free but others took it first: look again.
		case anyFree(p, v, ru):
			fail(fmt.Errorf("allocate in %s: too much contention", p.ID()))
			return
		case !ru.last && anyFree(p, v, last):
			// Only addresses this node freed lately are free: better one of
			// those than none.
			a.log.Info("no address free but some this node freed lately: handing those out again", "pool", p.ID(), "reuse_after", reuseAfter)
			ru = last
		case !sparesElsewhere(v, a.node, a.gen) || !a.now().Before(waitUntil):
			fail(fmt.Errorf("%w in %s (%s)", ErrPoolExhausted, p.ID(), p.allocRange()))
			return
		default:
			// Other nodes keep spares: ask for them and look again.
			if err := a.waitForSpares(ctx, p); err != nil {
				fail(err)
				return
			}
		}
	}
}

// claimListed gives reqs addresses in blocks this node claims, known from
// the pool's keys and the store's copies (store.listed), reading no
// document: blocks with no node's affinity as last copied, then free
// blocks from the node's place (see claimable). It returns the requests
// left at the first block it cannot claim (another node claimed it
// first, or it turned unreadable) or when none is left to try: the caller
// then reads every document, to claim, borrow or wait (see
// allocateBatch). So a node that needs a new block, while the pool has
// free ones, reads the pool's keys and writes the block, as one create:
// one that another node made first fails, and is never handed out twice.
func (a *Allocator) claimListed(ctx context.Context, p Pool, reqs []*request, ru reuse) ([]*request, error) {
	v, err := a.store.listed(ctx, p)
	if err != nil {
		return reqs, fmt.Errorf("allocate in %s: %w", p.ID(), err)
	}
	for _, b := range claimable(p, v, a.node, ru) {
		left, err := a.fillBlock(ctx, p, b, reqs, ru, true)
		if err != nil || len(left) == 0 || len(left) == len(reqs) {
			return left, err
		}
		reqs = left
	}
	return reqs, nil
}

// fillBlock gives as many of reqs as block b has room for (addresses ru
// allows) an address, in one write, and returns the others; with claim,
// only when that claims b (see claims): no node has affinity for it as it
// is read. A block that turned unreadable is skipped.
func (a *Allocator) fillBlock(ctx context.Context, p Pool, b netip.Prefix, reqs []*request, ru reuse, claim bool) ([]*request, error) {
	als := make([]Alloc, len(reqs))
	for i, r := range reqs {
		als[i] = r.al
	}
	var got []netip.Addr
	doc, err := a.store.update(ctx, p, b, func(doc BlockDoc) (BlockDoc, bool) {
		if claim && !claims(doc) {
			got = nil
			return doc, false
		}
		doc, got = fill(p, b, doc, a.node, als, ru)
		return doc, len(got) > 0
	})
	if errors.Is(err, ErrBadDocument) {
		return reqs, nil
	}
	if err != nil {
		return reqs, fmt.Errorf("allocate in %s: %w", p.ID(), err)
	}
	a.held.noteFree(a.log, p, b, doc, ru)
	for i, addr := range got {
		reqs[i].done <- result{addr: addr}
	}
	return reqs[len(got):], nil
}

// releaseBatch releases every request's address, one write per block.
func (a *Allocator) releaseBatch(ctx context.Context, reqs []*request) {
	p := reqs[0].pool
	byBlock := map[netip.Prefix][]*request{}
	for _, r := range reqs {
		byBlock[p.Block(r.release)] = append(byBlock[p.Block(r.release)], r)
	}
	for _, b := range slices.SortedFunc(maps.Keys(byBlock), comparePrefix) {
		rs := byBlock[b]
		addrs := make([]netip.Addr, len(rs))
		handed := map[netip.Addr]bool{}
		for i, r := range rs {
			addrs[i] = r.release
			handed[r.release] = handed[r.release] || r.handed
		}
		var refused map[netip.Addr]Alloc
		var unhanded, freed []netip.Addr
		_, err := a.store.update(ctx, p, b, func(doc BlockDoc) (BlockDoc, bool) {
			doc, refused, unhanded, freed = releaseOwn(doc, a.node, a.gen, addrs, handed)
			return doc, len(freed) > 0
		})
		// One the block did not record (Consul lost it under its
		// container, now stopped) is noted freed too: a resend of its
		// release must find it free as well, not a new container's.
		noted := slices.DeleteFunc(slices.Clone(addrs), func(x netip.Addr) bool {
			_, ok := refused[x]
			return ok || slices.Contains(unhanded, x)
		})
		if err == nil && len(noted) > 0 {
			a.freed.add(p, noted, a.now())
			a.saveFreed()
		}
		for _, r := range rs {
			switch holder, ok := refused[r.release]; {
			case err != nil:
				r.answer(result{err: fmt.Errorf("release %s in %s: %w", r.release, p.ID(), err)})
			case ok && holder.Node == a.node && holder.Kind == KindShim:
				a.log.Warn("refused to release this node's host shim address", "pool", p.ID(), "addr", r.release)
				r.answer(result{err: fmt.Errorf("address %s in %s is this node's host shim address, never Docker's: %w; it goes when the network leaves this node",
					r.release, p.ID(), ErrNotHeld)})
			case ok:
				a.log.Warn("refused to release an address this node does not hold", "pool", p.ID(), "addr", r.release, "holder", holder.Node, "kind", holder.Kind)
				r.answer(result{err: fmt.Errorf("address %s in %s is held by node %s (%s), not this node (%s): %w; only its node, or the reclaim of a departed node, frees it",
					r.release, p.ID(), holder.Node, holder.Kind, a.node, ErrNotHeld)})
			case slices.Contains(unhanded, r.release):
				a.log.Warn("release of a spare address Docker never got: ignored", "pool", p.ID(), "addr", r.release)
				r.answer(result{})
			default:
				r.answer(result{freed: slices.Contains(freed, r.release)})
			}
		}
	}
}

// reclaimObserved frees the addresses of want that are still allocated
// exactly as observed (the reclaimer's path, for this node's leaks and
// departed nodes' addresses), and returns those it freed.
func (a *Allocator) reclaimObserved(ctx context.Context, p Pool, want map[netip.Addr]Alloc) ([]netip.Addr, error) {
	byBlock := map[netip.Prefix]map[netip.Addr]Alloc{}
	for addr, al := range want {
		b := p.Block(addr)
		if byBlock[b] == nil {
			byBlock[b] = map[netip.Addr]Alloc{}
		}
		byBlock[b][addr] = al
	}
	var all []netip.Addr
	var errs []error
	for _, b := range slices.SortedFunc(maps.Keys(byBlock), comparePrefix) {
		var freed []netip.Addr
		_, err := a.store.update(ctx, p, b, func(doc BlockDoc) (BlockDoc, bool) {
			doc, freed = reclaim(doc, byBlock[b])
			return doc, len(freed) > 0
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("reclaim in %s: %w", b, err))
			continue
		}
		all = append(all, freed...)
	}
	return all, errors.Join(errs...)
}

// adopt turns a spare of this node that its keeper does not hold (of an
// earlier generation, or taken out of the free spares as a local container
// holds it: see keeper.dropHeld), this node's shim address, or an
// allocation naming no node, into this node's task allocation: the
// reclaimer found a local container holding it. It returns what it
// turned, if it did.
func (a *Allocator) adopt(ctx context.Context, p Pool, addr netip.Addr) (Alloc, bool, error) {
	var was Alloc
	var adopted bool
	kept := a.spares.known(p)
	_, err := a.store.update(ctx, p, p.Block(addr), func(doc BlockDoc) (BlockDoc, bool) {
		al, ok := doc.alloc(addr)
		earlierSpare := al.Kind == KindSpare && al.Node == a.node && (!a.spares.mine(al) || !kept[addr])
		shim := al.Kind == KindShim && al.Node == a.node
		if adopted = ok && (earlierSpare || shim || al.Node == ""); !adopted {
			return doc, false
		}
		was = al
		doc.Allocs[addr.String()] = Alloc{Node: a.node, At: al.At, Kind: KindTask}
		return doc, true
	})
	return was, adopted && err == nil, err
}

// Shim returns this node's host shim address in p, allocating one (kind
// "shim") the first time; later calls, after restarts too, find it again.
// One the store's copies hold is confirmed by a fresh read of its block
// alone; otherwise every document of p is read.
//
// Calls for one pool are served one at a time: two first calls (the
// network sync and a plugin request at the agent's start) would each read
// the pool, find no shim and allocate one, leaving the node two shim
// records, one of them leaked for good. The second, served after the
// first, finds the first's address in a fresh read of its block. No other
// process allocates for this node: its identity is claimed (see Gate).
func (a *Allocator) Shim(ctx context.Context, p Pool) (netip.Addr, error) {
	unlock, err := a.shimLocks.lock(ctx, p.ID())
	if err != nil {
		return netip.Addr{}, fmt.Errorf("shim address in %s: %w", p.ID(), err)
	}
	defer unlock()
	if addr, ok, err := a.copiedShim(ctx, p); err != nil || ok {
		return addr, err
	}
	v, err := a.store.scan(ctx, p)
	if err != nil {
		return netip.Addr{}, err
	}
	if shims := a.shims(v); len(shims) > 0 {
		return shims[0], nil
	}
	return a.Allocate(ctx, p, netip.Addr{}, KindShim)
}

// copiedShim is this node's shim address in p as the store's copies have
// it (the lowest, as Shim's listing gives it), if a fresh read of its
// block still records it so: every sync of the node's networks asks for
// it, and reading the whole pool each time would cost each node every
// document of the pool. ok is false when the copies hold none, or the
// block no longer records it (released, reclaimed, the network made
// again), or cannot be read: the pool is then read whole.
func (a *Allocator) copiedShim(ctx context.Context, p Pool) (netip.Addr, bool, error) {
	addr, ok := a.store.copiedShim(p, a.node)
	if !ok {
		return netip.Addr{}, false, nil
	}
	cur, err := a.store.fresh(ctx, p, p.Block(addr))
	switch {
	case errors.Is(err, ErrBadDocument):
		return netip.Addr{}, false, nil
	case err != nil:
		return netip.Addr{}, false, fmt.Errorf("shim address in %s: %w", p.ID(), err)
	}
	al, held := cur.doc.alloc(addr)
	return addr, held && al.Kind == KindShim && al.Node == a.node, nil
}

// ReleaseShim gives back this node's shim address in p, if it has one.
func (a *Allocator) ReleaseShim(ctx context.Context, p Pool) error {
	unlock, err := a.shimLocks.lock(ctx, p.ID())
	if err != nil {
		return fmt.Errorf("release shim in %s: %w", p.ID(), err)
	}
	defer unlock()
	v, err := a.store.scan(ctx, p)
	if err != nil {
		return err
	}
	for _, addr := range a.shims(v) {
		if err := a.releaseShim(ctx, p, p.Block(addr), addr); err != nil {
			return err
		}
	}
	return nil
}

// releaseShim frees addr, of block b of p, if it is this node's shim.
func (a *Allocator) releaseShim(ctx context.Context, p Pool, b netip.Prefix, addr netip.Addr) error {
	_, err := a.store.update(ctx, p, b, func(doc BlockDoc) (BlockDoc, bool) {
		if al, ok := doc.alloc(addr); ok && al.Kind == KindShim && al.Node == a.node {
			delete(doc.Allocs, addr.String())
			return doc, true
		}
		return doc, false
	})
	if err != nil {
		return fmt.Errorf("release shim %s in %s: %w", addr, p.ID(), err)
	}
	return nil
}

// ReleaseShimsOf gives back this node's shim addresses, and its spares,
// in the pools of either family of network, known by its name only: its
// spec, with the pools' prefixes and block sizes, is gone. Each block is
// taken as its key spells it; a key that cannot be read is passed over.
// A pool that went with the spec has nothing to give back.
func (a *Allocator) ReleaseShimsOf(ctx context.Context, network string) error {
	var errs []error
	for _, whole := range []netip.Prefix{netip.PrefixFrom(netip.IPv4Unspecified(), 0), netip.PrefixFrom(netip.IPv6Unspecified(), 0)} {
		if err := a.ReleaseSpares(ctx, Pool{Network: network, Prefix: whole}); err != nil {
			errs = append(errs, err)
		}
		err := a.eachShimOf(ctx, network, whole, func(bp Pool, addr netip.Addr) {
			errs = append(errs, a.releaseShim(ctx, bp, bp.Prefix, addr))
		})
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// ShimsOf lists this node's shim addresses in the pools of either family
// of network, known by its name only, as ReleaseShimsOf finds them.
func (a *Allocator) ShimsOf(ctx context.Context, network string) ([]netip.Addr, error) {
	var out []netip.Addr
	var errs []error
	for _, whole := range []netip.Prefix{netip.PrefixFrom(netip.IPv4Unspecified(), 0), netip.PrefixFrom(netip.IPv6Unspecified(), 0)} {
		errs = append(errs, a.eachShimOf(ctx, network, whole, func(_ Pool, addr netip.Addr) { out = append(out, addr) }))
	}
	return out, errors.Join(errs...)
}

// eachShimOf calls fn with each of this node's shim addresses in the
// pool of network of whole's family, and the block holding it as a pool
// of its own: the same keys, and every address of the document is of it.
// Each block is taken as its key spells it; a key that cannot be read is
// passed over.
func (a *Allocator) eachShimOf(ctx context.Context, network string, whole netip.Prefix, fn func(bp Pool, addr netip.Addr)) error {
	p := Pool{Network: network, Prefix: whole}
	pairs, err := a.kv.List(ctx, poolPrefix(p))
	if err != nil {
		return fmt.Errorf("read pool %s: %w", p.ID(), err)
	}
	for _, pr := range pairs {
		b, err := parseBlockKey(strings.TrimPrefix(pr.Key, poolPrefix(p)))
		if err != nil || b.Addr().Is4() != whole.Addr().Is4() || b != b.Masked() {
			continue
		}
		doc, err := decodeBlock(p, b, pr.Value)
		if err != nil {
			continue
		}
		bp := Pool{Network: network, Prefix: b, BlockBits: b.Bits()}
		for _, addr := range doc.addrs() {
			if al := doc.Allocs[addr.String()]; al.Kind == KindShim && al.Node == a.node {
				fn(bp, addr)
			}
		}
	}
	return nil
}

// ShimNetworks names the networks in whose pools this node holds shim
// addresses, read from every pool in KV: what finds, after a restart,
// those a network's teardown could not give back. A key that cannot be
// read is passed over, as ReleaseShimsOf passes it over.
func (a *Allocator) ShimNetworks(ctx context.Context) ([]string, error) {
	pairs, err := a.kv.List(ctx, KVPrefix)
	if err != nil {
		return nil, fmt.Errorf("read the pools: %w", err)
	}
	var out []string
	for _, pr := range pairs {
		network, b, ok := parseBlockPath(pr.Key)
		if !ok || slices.Contains(out, network) {
			continue
		}
		doc, err := decodeBlock(Pool{Network: network, Prefix: b, BlockBits: b.Bits()}, b, pr.Value)
		if err != nil {
			continue
		}
		for _, al := range doc.Allocs {
			if al.Kind == KindShim && al.Node == a.node {
				out = append(out, network)
				break
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

func (a *Allocator) shims(v view) []netip.Addr {
	var out []netip.Addr
	for _, b := range slices.SortedFunc(maps.Keys(v.docs), comparePrefix) {
		doc := v.docs[b]
		for _, addr := range doc.addrs() {
			if al := doc.Allocs[addr.String()]; al.Kind == KindShim && al.Node == a.node {
				out = append(out, addr)
			}
		}
	}
	return out
}

// KeepSpares makes the allocator keep n addresses of every pool it serves
// claimed ahead of demand, handing them out with no wait on Consul, until
// ctx ends; it then records what it handed out and gives the rest back.
// Without it, every allocation waits for its Consul write.
func (a *Allocator) KeepSpares(ctx context.Context, n int, log *slog.Logger) {
	a.spares.run(ctx, n, log.With("component", "ipam"))
}

// ReleaseSpares gives back p's spares on this node and keeps none of p
// from now on: the network is being removed from this node.
func (a *Allocator) ReleaseSpares(ctx context.Context, p Pool) error {
	return a.spares.close(ctx, p)
}

// Contents is what a pool holds in Consul: its allocations, by address,
// its readable blocks with their documents (which node has affinity for
// each: the dashboard's subnet map outlines them), the addresses nodes
// keep for container starts under way, and the keys under its blocks/
// and kept/ that cannot be read.
type Contents struct {
	Allocs map[netip.Addr]Alloc
	Blocks map[netip.Prefix]BlockDoc
	// Kept are the addresses no container holds that their node's last
	// sweep kept: a container start under way there may hold them.
	Kept KeptAddrs
	Bad  []BadDoc
}

// Inspect reads a pool's contents.
func Inspect(ctx context.Context, kv KV, p Pool) (Contents, error) {
	pairs, err := kv.List(ctx, poolPrefix(p))
	if err != nil {
		return Contents{}, fmt.Errorf("read pool %s: %w", p.ID(), err)
	}
	v, bad := decodePool(p, pairs)
	pairs, err = kv.List(ctx, keptPrefix(p))
	if err != nil {
		return Contents{}, fmt.Errorf("read the addresses kept for starts in %s: %w", p.ID(), err)
	}
	kept, badKept := decodeKept(p, pairs)
	return Contents{Allocs: allocations(v), Blocks: v.docs, Kept: kept, Bad: append(bad, badKept...)}, nil
}

// Allocations lists every allocation of a pool, by address; unreadable
// documents are left out (see Inspect).
func Allocations(ctx context.Context, kv KV, p Pool) (map[netip.Addr]Alloc, error) {
	c, err := Inspect(ctx, kv, p)
	return c.Allocs, err
}

func allocations(v view) map[netip.Addr]Alloc {
	out := map[netip.Addr]Alloc{}
	for _, doc := range v.docs {
		for k, al := range doc.Allocs {
			out[netip.MustParseAddr(k)] = al // decodeBlock checked every key
		}
	}
	return out
}

// WriteStats counts an allocator's check-and-set writes of block documents
// since it was made.
type WriteStats struct {
	// Sent is every transaction sent, won or lost.
	Sent uint64
	// Conflicts are those Consul rolled back: another node (or another
	// process of this node) changed the block since it was read.
	Conflicts uint64
}

// WriteStats reports the allocator's block writes and lost check-and-sets.
func (a *Allocator) WriteStats() WriteStats {
	return WriteStats{Sent: a.store.writes.Load(), Conflicts: a.store.conflicts.Load()}
}

// SkippedDocuments is how many bad keys the allocator's last listings of
// its pools found (see BadDoc).
func (a *Allocator) SkippedDocuments() int { return a.store.badCount() }

// holds says whether this node holds an address of p in Consul, of any
// kind, read afresh: what a late release of one of p's addresses could
// free. A block document that cannot be read may record one: it counts as
// held.
func (a *Allocator) holds(ctx context.Context, p Pool) (bool, error) {
	pairs, err := a.kv.List(ctx, poolPrefix(p))
	if err != nil {
		return false, fmt.Errorf("read pool %s: %w", p.ID(), err)
	}
	v, bad := decodePool(p, pairs)
	if len(bad) > 0 {
		return true, nil
	}
	for _, doc := range v.docs {
		for _, al := range doc.Allocs {
			if al.Node == a.node {
				return true, nil
			}
		}
	}
	return false, nil
}
