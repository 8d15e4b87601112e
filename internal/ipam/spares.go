package ipam

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/underlay/underlay/internal/backoff"
	"github.com/underlay/underlay/internal/kvstore"
	"github.com/underlay/underlay/internal/netspec"
)

// Spares: a node claims a few addresses of its own blocks ahead of demand,
// in Consul, as kind "spare" with its allocator's generation. They are its
// alone, exactly like allocated addresses, so handing one to Docker needs
// no write and cannot collide; a later write records it as a task and
// claims a replacement. A node that runs out while others hold spares asks
// them, through a pressure key, to give theirs back.
const (
	// spareHold is how long a node neither keeps nor claims spares of a
	// pool after another node ran short of addresses in it.
	spareHold = 30 * time.Second
	// spareWait bounds how long a request waits for other nodes to give
	// their spares back before it reports the pool exhausted; it stays
	// well inside the plugin's request timeout.
	spareWait = 3 * time.Second
	// spareCheck is how often held spares are checked against Consul: a
	// spare that is no longer this node's must never be handed out. It is
	// also how long a raised spare target lasts without demand before it
	// halves.
	spareCheck = 15 * time.Second
	// recordDelay is how long a handed-out spare may stay recorded as a
	// spare before a write records it as a task. A crash meanwhile loses
	// nothing: the reclaimer adopts or returns a previous agent's spares.
	recordDelay = 500 * time.Millisecond
	// spareBurst caps how far a burst of requests raises a pool's spare
	// target: up to this many times the number kept.
	spareBurst = 8
	// pressureEvery limits how often a node asks for spares, per pool.
	pressureEvery = 250 * time.Millisecond
)

// keeper keeps a node's spares. It has its own lock, never held across
// I/O, and changes blocks only through the store's update.
type keeper struct {
	node, gen string
	store     *store
	kv        KV // the pressure keys only
	// freed are the addresses the node freed lately, never claimed as
	// spares (see reuse); held those local containers held at the last
	// sweep, never claimed either.
	freed *freedAddrs
	held  *heldAddrs
	now   func() time.Time
	kick  chan struct{}
	// handouts counts requests answered from a spare (a metric).
	handouts atomic.Int64
	// listed returns the newest listing of the network specs (nil: none
	// read yet); nil when not known (see WithSpecs). No spare is handed
	// out, nor kept, of a pool whose network it shows being removed.
	listed func() *netspec.Listing
	// afterWrite, when set (by tests), runs between a block's spare write
	// and the keeper's settling of it: the window where requests race the
	// keeper, with Consul already changed and the keeper's lists not yet.
	afterWrite func()

	mu sync.Mutex // guards following fields
	// want is how many spares to keep per pool; 0 while KeepSpares is not
	// running.
	want int
	log  *slog.Logger
	// pools are the pools this node serves, by ID.
	pools map[string]*sparePool
	// lastPressure is when this node last asked for spares, by pool.
	lastPressure map[string]time.Time
}

// sparePool is one pool's spares on this node.
type sparePool struct {
	pool Pool
	spareState
	// suspect: Consul could not be asked, or lost its state; no spare is
	// handed out until a verifying sync has read the blocks again.
	suspect bool
	// stopWatch ends the pool's pressure watch; nil until it starts.
	stopWatch context.CancelFunc
	// refused: the last sync had a write refused as the pool is not
	// served (its network being removed, gone, or no longer giving it);
	// what it left pending is retried with growing delays (see retryIn).
	refused bool
}

func newKeeper(node, gen string, st *store, kv KV, freed *freedAddrs, held *heldAddrs, now func() time.Time, log *slog.Logger) *keeper {
	return &keeper{node: node, gen: gen, store: st, kv: kv, freed: freed, held: held, now: now, log: log, kick: make(chan struct{}, 1),
		pools: map[string]*sparePool{}, lastPressure: map[string]time.Time{}}
}

func (k *keeper) mine(al Alloc) bool {
	return al.Kind == KindSpare && al.Node == k.node && al.Gen == k.gen
}

func (k *keeper) kickSync() {
	select {
	case k.kick <- struct{}{}:
	default:
	}
}

// take hands out one of p's free spares (want, when valid, only that one)
// as al. A request that finds none raises the pool's target: a burst.
//
// None is handed out once the newest listing of the specs shows p's
// network marked by `network rm`: the request read its pool from an
// older one (the plugin refuses a request whose reading shows the mark),
// and a spare, needing no write, would go to a container of a network
// the nodes are taking apart. The request then writes, bound to the spec
// as it read it, and is refused. A mark seen for the keeper's own pool
// closes it: its spares are given back (see syncPool), as at the
// network's teardown on this node (close), which may come much later.
func (k *keeper) take(p Pool, want netip.Addr, al Alloc) (netip.Addr, bool) {
	l := k.listing()
	k.mu.Lock()
	defer k.mu.Unlock()
	sp := k.pools[p.ID()]
	if sp == nil {
		// Known from now on, even before KeepSpares runs. Dry: this
		// request found none; its retry must not count as a burst.
		sp = &sparePool{pool: p, spareState: spareState{Handed: map[netip.Addr]Alloc{}, Target: k.want, Dry: true}}
		k.pools[p.ID()] = sp
	}
	if k.want == 0 {
		return netip.Addr{}, false
	}
	defer k.kickSync()
	if markedIn(l, sp.pool) {
		sp.Closing = true
	}
	if markedIn(l, p) {
		return netip.Addr{}, false
	}
	switch {
	case later(sp.pool, p) && !sameNetwork(sp.pool, p):
		// The network was removed and made again under the name since
		// sp's pool was read (its teardown missed on this node): sp's
		// spares are the old network's, never handed out for the new
		// one. sp gives them back, bound to its spec (refused, they are
		// forgotten: see syncPool), and goes, making way for p's.
		sp.Closing = true
	case later(sp.pool, p):
		k.rebind(sp, p)
	}
	if sp.Closing || sp.suspect || !samePool(sp.pool, p) {
		return netip.Addr{}, false
	}
	i := 0
	if want.IsValid() {
		if i = slices.Index(sp.Free, want); i < 0 {
			return netip.Addr{}, false
		}
	} else if len(sp.Free) == 0 {
		if !sp.Dry {
			sp.Dry, sp.Busy = true, true
			sp.Target = min(2*sp.Target, spareBurst*k.want)
		}
		return netip.Addr{}, false
	}
	a := sp.Free[i]
	sp.Free = slices.Delete(sp.Free, i, i+1)
	sp.Handed[a] = al
	k.handouts.Add(1)
	return a, true
}

// listing is the newest listing of the specs, nil when none is known.
func (k *keeper) listing() *netspec.Listing {
	if k.listed == nil {
		return nil
	}
	return k.listed()
}

// markedIn says listing l shows the spec of p's network marked for
// removal by `network rm`: the generation p was read from, or, either's
// unknown, any. The mark is never taken back, so no later listing serves
// that generation again; a network made again under the name is another
// generation, never refused for its predecessor's mark.
func markedIn(l *netspec.Listing, p Pool) bool {
	if l == nil {
		return false
	}
	i := slices.IndexFunc(l.Specs, func(s netspec.Spec) bool { return s.Name == p.Network })
	if i < 0 || !l.Specs[i].Deleting {
		return false
	}
	c := l.SpecCreateIndex(p.Network)
	return c == 0 || p.specCreate == 0 || c == p.specCreate
}

// releasing prepares the release of a: a free spare was never handed out,
// so its release is stray and refused; a handed one is forgotten (handed),
// and undo puts it back if the release fails. A spare being given back is
// not judged here: its write may already have freed it in Consul and a
// request been allocated it since, so the release's write decides by what
// Consul holds (see releaseOwn).
func (k *keeper) releasing(p Pool, a netip.Addr) (stray, handed bool, undo func()) {
	k.mu.Lock()
	defer k.mu.Unlock()
	sp := k.pools[p.ID()]
	if sp == nil || otherGeneration(sp.pool, p) {
		// Of another network under the name (made again): sp's spares
		// are none of p's addresses, whose release its write judges.
		return false, false, func() {}
	}
	if slices.Contains(sp.Free, a) {
		return true, false, func() {}
	}
	if al, ok := sp.Handed[a]; ok {
		delete(sp.Handed, a)
		return false, true, func() {
			k.mu.Lock()
			defer k.mu.Unlock()
			sp.Handed[a] = al
		}
	}
	return false, false, func() {}
}

// known returns the spares this keeper holds in p: free, handed or being
// given back.
func (k *keeper) known(p Pool) map[netip.Addr]bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := map[netip.Addr]bool{}
	if sp := k.pools[p.ID()]; sp != nil {
		for _, a := range sp.Free {
			out[a] = true
		}
		for _, a := range sp.Dropping {
			out[a] = true
		}
		for a := range sp.Handed {
			out[a] = true
		}
	}
	return out
}

// dropHeld takes out of p's free spares those a local container holds
// (held) and returns them. This keeper handed none of them out: each came
// to the container another way, Consul having lost or freed it while the
// container ran (the node frozen past the node timeout, its addresses
// reclaimed by the leader), and this keeper then claimed it again.
// Handed out, it would be a second container's address. The sweep then
// records it as the container's (see planSweep, adopt).
func (k *keeper) dropHeld(p Pool, held map[netip.Addr]bool) []netip.Addr {
	k.mu.Lock()
	defer k.mu.Unlock()
	sp := k.pools[p.ID()]
	if sp == nil {
		return nil
	}
	var dropped []netip.Addr
	sp.Free = slices.DeleteFunc(sp.Free, func(a netip.Addr) bool {
		if held[a] {
			dropped = append(dropped, a)
			return true
		}
		return false
	})
	return dropped
}

// count is the number of free spares over all pools.
func (k *keeper) count() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	n := 0
	for _, sp := range k.pools {
		n += len(sp.Free)
	}
	return n
}

func samePool(x, y Pool) bool {
	return x.Network == y.Network && x.Prefix == y.Prefix && x.allocRange() == y.allocRange() &&
		x.blockBits() == y.blockBits() && maps.Equal(x.Reserved, y.Reserved) &&
		// A network made again under the name is another pool: the old
		// one's spares went with its tree.
		(x.specIndex == 0 || y.specIndex == 0 || x.specIndex == y.specIndex)
}

// rebind makes sp's pool p, read from its spec rewritten in place since
// (by hand: the same network, its key's create index kept): its writes
// are bound to the spec as it is now, and its spares are handed out for
// requests read after the rewrite. Free spares p does not allow (the
// rewrite reserves them, or leaves them out of the range) are given back,
// never handed out. The pressure watch, which checks the spec as its pool
// was read, starts again with p. k.mu is held.
func (k *keeper) rebind(sp *sparePool, p Pool) {
	sp.pool = p
	keep := sp.Free[:0:0]
	for _, a := range sp.Free {
		if p.usable(a) {
			keep = append(keep, a)
		} else {
			sp.Dropping = append(sp.Dropping, a)
		}
	}
	sp.Free = keep
	if sp.stopWatch != nil {
		sp.stopWatch()
		sp.stopWatch = nil
	}
}

// later says y was read from a spec written after x's.
func later(x, y Pool) bool {
	return x.specIndex != 0 && y.specIndex > x.specIndex
}

// sameNetwork says x and y were read from one network's spec, the same
// generation of it (its create index), both known.
func sameNetwork(x, y Pool) bool {
	return x.specCreate != 0 && x.specCreate == y.specCreate
}

// otherGeneration says x and y were read from specs of two networks made
// under one name (their create indexes differ), both known.
func otherGeneration(x, y Pool) bool {
	return x.specCreate != 0 && y.specCreate != 0 && x.specCreate != y.specCreate
}

// enable makes the keeper keep n spares per pool (0: none).
func (k *keeper) enable(n int, log *slog.Logger) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.want = n
	if log != nil {
		k.log = log
	}
}

// run keeps n spares of every pool the node serves until ctx ends, then
// records what it handed out and gives the rest back.
func (k *keeper) run(ctx context.Context, n int, log *slog.Logger) {
	if n <= 0 {
		return
	}
	k.enable(n, log)
	k.kickSync() // pools used before now get their spares at once
	events := make(chan spareEvent, 16)
	check := time.NewTicker(spareCheck)
	defer check.Stop()
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	refused := refusedRetries()
	for {
		verify := false
		select {
		case <-ctx.Done():
			k.enable(0, nil)
			stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if _, err := k.syncAll(stopCtx, false, true); err != nil {
				log.Warn("spare addresses not all given back; the reclaimer will return them", "err", err)
			}
			k.stopWatches()
			return
		case ev := <-events:
			if ev.check {
				log.Warn("Consul was out of reach or lost its state: checking spares against it before handing any out", "pool", ev.pool)
				verify = true
				break
			}
			k.hold(ev.pool)
			log.Info("another node ran short of addresses: giving spares back", "pool", ev.pool)
		case <-k.kick:
		case <-retry.C:
		case <-check.C:
			verify = true
		}
		k.startWatches(ctx, events)
		pending, err := k.syncAll(ctx, verify, false)
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn("spare addresses not updated; retrying", "err", err)
			retry.Reset(time.Second)
		default:
			if d, ok := k.retryIn(pending, &refused); ok {
				retry.Reset(d)
			}
		}
	}
}

// refusedRetries are the delays between syncs while all that is left to
// write was refused as the network is being removed (see retryIn): from
// recordDelay up to spareCheck, when the keeper checks its spares anyway.
func refusedRetries() backoff.Backoff {
	return backoff.Backoff{Min: recordDelay, Max: spareCheck}
}

// retryIn is how long to wait after a sync before the next one, and
// whether to: recordDelay while spares are left to record or give back;
// growing delays (refused) while all of those are of pools whose writes
// the last sync found refused (see sparePool.refused): `network rm`
// removing the network, which may take minutes, and retrying them every
// recordDelay on every node would only load Consul until its delete.
func (k *keeper) retryIn(pending bool, refused *backoff.Backoff) (time.Duration, bool) {
	if !pending {
		refused.Reset()
		return 0, false
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, sp := range k.pools {
		if !sp.refused && (len(sp.Handed) > 0 || len(sp.Dropping) > 0) {
			refused.Reset()
			return recordDelay, true
		}
	}
	return refused.Next(), true
}

// hold makes the node keep no spares of a pool for spareHold: another
// node ran short.
func (k *keeper) hold(id string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if sp := k.pools[id]; sp != nil {
		sp.HoldUntil = k.now().Add(spareHold)
	}
}

// suspend stops hand-outs of a pool's spares until a verifying sync.
func (k *keeper) suspend(id string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if sp := k.pools[id]; sp != nil {
		sp.suspect = true
	}
}

func (k *keeper) startWatches(ctx context.Context, events chan<- spareEvent) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, sp := range k.pools {
		if sp.stopWatch == nil && !sp.Closing {
			wctx, cancel := context.WithCancel(ctx)
			sp.stopWatch = cancel
			go k.watchPressure(wctx, sp.pool, events)
		}
	}
}

func (k *keeper) stopWatches() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, sp := range k.pools {
		if sp.stopWatch != nil {
			sp.stopWatch()
			sp.stopWatch = nil
		}
	}
}

// syncAll brings every pool's spares up to date in Consul; pending
// reports whether some are left to record or give back.
func (k *keeper) syncAll(ctx context.Context, verify, stopping bool) (pending bool, err error) {
	l := k.listing()
	k.mu.Lock()
	pools := slices.SortedFunc(maps.Values(k.pools), func(x, y *sparePool) int { return strings.Compare(x.pool.ID(), y.pool.ID()) })
	for _, sp := range pools {
		// The mark's arrival, with no request since: its spares go back
		// (see take).
		if markedIn(l, sp.pool) {
			sp.Closing = true
		}
	}
	k.mu.Unlock()
	var firstErr error
	for _, sp := range pools {
		// Bounded: a stopped Consul agent can leave a request unanswered.
		pctx, cancel := context.WithTimeout(ctx, commitTimeout)
		err := k.syncPool(pctx, sp, stopping, verify)
		cancel()
		if err != nil && firstErr == nil {
			firstErr = err
		}
		k.mu.Lock()
		pending = pending || len(sp.Handed) > 0 || len(sp.Dropping) > 0
		k.dropClosed(sp)
		k.mu.Unlock()
	}
	return pending, firstErr
}

// syncPool writes one pool's spare changes, one write per block touched:
// handed spares recorded, spares given back, new ones claimed in the
// node's blocks and then in those it would claim (see claimable; known
// from the pool's keys first, every document read only when those fall
// short; never borrowed, nor among the addresses the node freed lately:
// a request takes those only when nothing else is free), and with verify
// every free spare checked against a fresh read.
func (k *keeper) syncPool(ctx context.Context, sp *sparePool, stopping, verify bool) error {
	p := sp.pool
	now := k.now()
	// Before any claim: an earlier agent's handouts are passed over. Not
	// read, they are tried again at the next sync; the claims below meet
	// the same failure.
	primeHandouts(ctx, k.store, k.held, p, k.node, k.gen, now)
	ru := reuse{freed: k.freed.recent(p, now), held: k.held.of(p)}
	k.mu.Lock()
	suspect := sp.suspect
	verify = verify || suspect
	plan := planSpares(sp.spareState, k.want, now, stopping, verify)
	sp.refused = false
	sp.Target, sp.Busy = plan.Target, plan.Busy
	// Spares being given back leave the free list now: never handed out.
	sp.Free, sp.Dropping = plan.Keep, plan.Drop
	var check []netip.Addr
	if verify {
		check = slices.Clone(plan.Keep)
	}
	k.mu.Unlock()

	need := plan.Need
	var firstErr error
	done := map[netip.Prefix]bool{}
	write := func(b netip.Prefix) {
		done[b] = true
		add := need
		if key, err := k.store.shadow(ctx, p, b); err != nil || key != "" {
			add = 0 // see view.shadowed; a failed listing fails the claims below too
		}
		var w spareWrite
		stored, err := k.store.update(ctx, p, b, func(doc BlockDoc) (BlockDoc, bool) {
			// Only spares still handed out: one Docker released since the
			// plan is gone from Consul too, and recording it would write
			// back an address no container holds.
			w = writeSpares(p, b, doc, k.node, k.gen, k.stillHanded(sp, plan.Record), plan.Drop, check, add, now, ru)
			return w.doc, w.changed
		})
		if notServed(err) {
			// Its network is being removed, or gone: a request that
			// read its spec before made the pool known again after the
			// teardown gave its spares back. Retried, the claim would
			// fail at every sync: the pool goes, as by ReleaseSpares,
			// once it holds nothing (see syncAll). Only a write where
			// there was no document is refused so: the spares handed
			// out of b, its document gone with the spec's tree, have
			// nothing left to record.
			k.mu.Lock()
			sp.Closing, sp.refused = true, true
			if errors.Is(err, errSpecGone) {
				maps.DeleteFunc(sp.Handed, func(a netip.Addr, _ Alloc) bool { return p.Block(a) == b })
				// Nor are spares of b to give back: b is gone, or the
				// network's made again under the name, where they are
				// not this pool's to free. Left recorded there (the spec
				// deleted by hand, the blocks left), they are spares
				// this keeper no longer knows, which the reclaimer
				// returns. Kept, they would hold the pool for good.
				sp.Dropping = slices.DeleteFunc(sp.Dropping, b.Contains)
			}
			k.mu.Unlock()
			return
		}
		if err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("update spares of %s in %s: %w", p.ID(), b, err)
			}
			return
		}
		k.mu.Lock()
		log := k.log
		k.mu.Unlock()
		k.held.noteFree(log, p, b, stored, ru)
		if k.afterWrite != nil {
			k.afterWrite()
		}
		k.settle(sp, b, plan.Record, w)
		need -= len(w.Added)
	}
	for _, b := range blocksOf(p, slices.Collect(maps.Keys(plan.Record)), plan.Drop, check) {
		write(b)
	}
	if need > 0 && firstErr == nil {
		own, err := k.store.own(ctx, p, k.node)
		if err != nil {
			firstErr = err
		}
		for _, b := range slices.SortedFunc(maps.Keys(own), comparePrefix) {
			if need > 0 && !done[b] {
				write(b)
			}
		}
	}
	if need > 0 && firstErr == nil {
		// Blocks to claim known from the pool's keys, reading no
		// document (see Allocator.claimListed), up to the first that
		// another node claimed first.
		v, err := k.store.listed(ctx, p)
		if err != nil {
			firstErr = err
		}
		for _, b := range claimable(p, v, k.node, ru) {
			if need <= 0 || firstErr != nil {
				break
			}
			before := need
			write(b)
			if need == before {
				break
			}
		}
	}
	if need > 0 && firstErr == nil {
		v, err := k.store.scan(ctx, p)
		if err != nil {
			firstErr = err
		}
		for _, b := range claimable(p, v, k.node, ru) {
			if need <= 0 || firstErr != nil {
				break
			}
			write(b)
		}
	}
	if suspect && firstErr == nil {
		// Every block holding spares was read again and what Consul no
		// longer holds was dropped: spares may be handed out again.
		k.mu.Lock()
		sp.suspect = false
		k.mu.Unlock()
	}
	return firstErr
}

// stillHanded returns the spares of record that are still handed out as
// recorded: a release forgets a handout before it frees the address.
func (k *keeper) stillHanded(sp *sparePool, record map[netip.Addr]Alloc) map[netip.Addr]Alloc {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make(map[netip.Addr]Alloc, len(record))
	for a, al := range record {
		if h, ok := sp.Handed[a]; ok && h.same(al) {
			out[a] = al
		}
	}
	return out
}

// settle notes one block's successful spare write (or fresh read).
func (k *keeper) settle(sp *sparePool, b netip.Prefix, record map[netip.Addr]Alloc, w spareWrite) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, a := range w.Recorded {
		if al, ok := sp.Handed[a]; ok && al.same(record[a]) {
			delete(sp.Handed, a)
		}
	}
	for _, a := range w.Lost {
		// Unless released meanwhile, the one case spares cannot cover:
		// Consul no longer holds a spare this node handed out.
		if al, ok := sp.Handed[a]; ok && al.same(record[a]) {
			k.log.Error("an address handed out from this node's spares is no longer this node's in Consul; `underlay ips` shows who else holds it", "pool", sp.pool.ID(), "addr", a)
			delete(sp.Handed, a)
		}
	}
	// Spares of b being given back are gone, or were not this node's.
	sp.Dropping = slices.DeleteFunc(sp.Dropping, b.Contains)
	for _, a := range w.Unconfirmed {
		if i := slices.Index(sp.Free, a); i >= 0 {
			k.log.Error("a spare address is no longer this node's in Consul; not handing it out", "pool", sp.pool.ID(), "addr", a)
			sp.Free = slices.Delete(sp.Free, i, i+1)
		}
	}
	for _, a := range w.Added {
		// Claimed for the pool as the sync read it: rebound since to a
		// rewrite that no longer allows a, it is given back.
		if sp.pool.usable(a) {
			sp.Free = append(sp.Free, a)
		} else {
			sp.Dropping = append(sp.Dropping, a)
		}
	}
	if len(w.Added) > 0 {
		sp.Dry = false
	}
}

// blocksOf lists, in address order, the blocks holding any of the
// addresses given.
func blocksOf(p Pool, lists ...[]netip.Addr) []netip.Prefix {
	set := map[netip.Prefix]bool{}
	for _, l := range lists {
		for _, a := range l {
			set[p.Block(a)] = true
		}
	}
	return slices.SortedFunc(maps.Keys(set), comparePrefix)
}

// close gives back p's spares and keeps none of p from now on: the network
// is being removed from this node. Those of a pool read from a spec
// created after p's was written, a network made again under the name,
// are left; those of one read from p's spec rewritten in place since
// (by hand, its create index kept: the same network) are given back.
func (k *keeper) close(ctx context.Context, p Pool) error {
	k.mu.Lock()
	sp := k.pools[p.ID()]
	var created uint64
	if sp != nil {
		// Without its create index known, the spec index it was read
		// at: a rewrite in place then passes for a network made again.
		if created = sp.pool.specCreate; created == 0 {
			created = sp.pool.specIndex
		}
	}
	if sp != nil && p.specIndex != 0 && created > p.specIndex {
		// Read from a spec created after p's was written: the network
		// made again under the name. p's spares went with its tree.
		sp = nil
	}
	if sp != nil {
		sp.Closing = true
	}
	k.mu.Unlock()
	if sp == nil {
		return nil
	}
	if err := k.syncPool(ctx, sp, true, false); err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.dropClosed(sp)
	return nil
}

// dropClosed forgets sp, a pool being removed, once it holds no spare;
// one known again since (a new network under the name) is kept. k.mu is
// held.
func (k *keeper) dropClosed(sp *sparePool) {
	id := sp.pool.ID()
	if !sp.Closing || k.pools[id] != sp || len(sp.Handed) > 0 || len(sp.Free) > 0 || len(sp.Dropping) > 0 {
		return
	}
	delete(k.pools, id)
	if sp.stopWatch != nil {
		sp.stopWatch()
	}
}

type pressureNote struct {
	Node string    `json:"node"`
	At   time.Time `json:"at"`
}

// askForSpares writes p's pressure key, at most every pressureEvery.
func (k *keeper) askForSpares(ctx context.Context, p Pool) error {
	now := k.now()
	k.mu.Lock()
	if now.Sub(k.lastPressure[p.ID()]) < pressureEvery {
		k.mu.Unlock()
		return nil
	}
	k.lastPressure[p.ID()] = now
	k.mu.Unlock()
	b, _ := json.Marshal(pressureNote{Node: k.node, At: now.UTC()})
	// Only while p's spec gives it: a request that read the spec before
	// `network rm` would leave the key under the deleted tree.
	if err := setUnderSpec(ctx, k.kv, p, pressureKey(p), b); err != nil {
		return fmt.Errorf("ask other nodes for spare addresses of %s: %w", p.ID(), err)
	}
	return nil
}

// spareEvent is what a pool's watch tells the keeper: another node asks
// for spares, or (check) Consul was out of reach or lost its state.
type spareEvent struct {
	pool  string
	check bool
}

// watchPressure follows p's pressure key with blocking reads. It reports
// each request for spares from another node; and since spares are handed
// out with no read of Consul, it guards them: while the key cannot be read
// they are suspended, and once it can again, or if the key is gone or
// Consul's index went backwards (a dev agent restarted empty, a snapshot
// restored), it asks for a check of every spare before any is handed out.
func (k *keeper) watchPressure(ctx context.Context, p Pool, out chan<- spareEvent) {
	key := pressureKey(p)
	send := func(ev spareEvent) bool {
		select {
		case out <- ev:
			return true
		case <-ctx.Done():
			return false
		}
	}
	var index uint64
	// refused: p's spec no longer gives p, as last read.
	erred, refused := false, false
	delays := backoff.Backoff{Min: 200 * time.Millisecond, Max: 10 * time.Second}
	for ctx.Err() == nil {
		if index == 0 {
			// The key must exist: a blocking read of a missing key wakes on
			// writes to its neighbours, here every allocation. It is
			// created only while p's spec gives p (see specCheck): a
			// watch of a pool read before `network rm` would leave it
			// under the deleted tree.
			// Bounded, the spec's read and the write: a Consul agent that
			// never answers held the watch for good.
			wctx, cancel := kvstore.WriteContext(ctx, 0)
			check, err := specChecks(wctx, k.kv, p)
			if err != nil {
				cancel()
				k.suspend(p.ID())
				if notServed(err) {
					// Checked once: a verifying sync drops the spares
					// gone with the tree, and its refused claims close
					// the pool, which ends this watch.
					if !refused && !send(spareEvent{pool: p.ID(), check: true}) {
						return
					}
					refused = true
				} else {
					erred = true
				}
				backoff.Sleep(ctx, delays.Next())
				continue
			}
			refused = false
			k.kv.Txn(wctx, append([]kvstore.Op{{Verb: kvstore.CAS, Key: key, Value: []byte("{}")}}, check...))
			cancel()
		}
		// After an error read at once: Consul may have restarted empty,
		// and a wait on an index it has not reached blocks until the
		// wait's timeout, with the spares suspended all along.
		wait := index
		if erred {
			wait = 0
		}
		pair, ok, next, err := k.kv.Wait(ctx, key, wait)
		if err != nil {
			if ctx.Err() == nil {
				k.suspend(p.ID())
				erred = true
				backoff.Sleep(ctx, delays.Next())
			}
			continue
		}
		delays.Reset()
		// A note read as a change of the key followed is a new ask,
		// whatever its stamp: another node's clock wrote it. One read
		// first, or after the key could not be read, may be old, and only
		// its stamp can tell.
		followed := index != 0 && !erred
		lost := !ok || next < index
		if lost {
			// Consul's state replaced: the copies of the pool's blocks
			// are the old state's, whatever index the new one reached.
			k.store.forgetCopies(p)
		}
		if lost || erred {
			// Only a verifying sync lifts the suspension.
			k.suspend(p.ID())
			erred = false
			if lost {
				index = 0
			}
			if !send(spareEvent{pool: p.ID(), check: true}) {
				return
			}
			if lost {
				continue
			}
		}
		if next == index {
			continue // the wait timed out
		}
		index = next
		var n pressureNote
		if json.Unmarshal(pair.Value, &n) != nil || n.Node == "" || n.Node == k.node || (!followed && k.now().Sub(n.At) > spareHold) {
			continue
		}
		if !send(spareEvent{pool: p.ID()}) {
			return
		}
	}
}
