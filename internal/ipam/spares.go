package ipam

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/underlay/underlay/internal/backoff"
)

// Spares: a node claims a few addresses of its own blocks ahead of demand,
// in Consul, as kind "spare" with its allocator's generation. They are its
// alone, exactly like allocated addresses, so handing one to Docker needs
// no write and cannot collide; the next write records it as a task and
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
	// spare that is no longer this node's (reclaimed by a leader that
	// thought this node dead) must never be handed out. It is also how
	// long a raised spare target lasts without demand before it halves.
	spareCheck = 15 * time.Second
	// recordDelay is how long a handed-out spare may stay recorded as a
	// spare before a write of its own records it as a task; most are
	// recorded sooner, in writes made anyway, and a task that ends sooner
	// needs no record at all. A crash meanwhile loses nothing: the
	// reclaimer adopts or returns a previous agent's spares.
	recordDelay = 500 * time.Millisecond
	// spareBurst caps how far a burst of requests raises a pool's spare
	// target: up to this many times the number kept.
	spareBurst = 8
)

// spareState is one pool's spares on this node.
type spareState struct {
	pool Pool
	// free spares are claimed in Consul and not handed out.
	free []netip.Addr
	// handed spares were given to Docker and are still recorded in Consul
	// as spares; the next write records them with these allocations.
	handed map[netip.Addr]Alloc
	// holdUntil: another node needed addresses; keep no spares until then.
	holdUntil time.Time
	// closing: the pool is being removed from this node.
	closing bool
	// suspect: Consul could not be asked, or lost its state; no spare is
	// handed out until a verifying sync has read the blocks again.
	suspect bool
	// stopWatch ends the pool's pressure watch; nil until it starts.
	stopWatch context.CancelFunc
	// target is how many spares to keep: the configured number, doubled
	// each time requests find none left (a burst), halved after a quiet
	// spareCheck. dry: a request found none since the last refill; busy:
	// since the last check.
	target    int
	dry, busy bool
	// waiters are requests that found no spare: the next write that
	// claims spares hands them out in order; a waiter whose channel is
	// closed goes the ordinary way.
	waiters []*spareWaiter
}

type spareWaiter struct {
	al Alloc
	ch chan netip.Addr
}

func (st *spareState) closeWaiters() {
	for _, w := range st.waiters {
		close(w.ch)
	}
	st.waiters = nil
}

// spares is the allocator's spare bookkeeping; mu is taken inside
// Allocator.mu, never the other way round, and never held across I/O.
type spares struct {
	mu    sync.Mutex
	want  int // spares to keep per pool; 0 while KeepSpares is not running
	pools map[string]*spareState
	// lastPressure limits how often this node asks for spares, by pool.
	lastPressure map[string]time.Time
	kick         chan struct{}
	log          *slog.Logger
}

func (a *Allocator) logger() *slog.Logger {
	a.sp.mu.Lock()
	defer a.sp.mu.Unlock()
	return a.sp.log
}

func newGen() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// mySpare reports whether al is a spare this allocator claimed.
func (a *Allocator) mySpare(al Alloc) bool {
	return al.Kind == KindSpare && al.Node == a.node && al.Gen == a.gen
}

// takeSpare hands out one of p's spares, if the allocator keeps any.
// want, when valid, asks for that address only.
func (a *Allocator) takeSpare(p Pool, want netip.Addr, al Alloc) (netip.Addr, bool) {
	a.sp.mu.Lock()
	defer a.sp.mu.Unlock()
	addr, ok, _ := a.takeSpareLocked(p, want, al, false)
	return addr, ok
}

// spareOrWait hands out one of p's spares or, when none is left, waits
// for the write that claims more (one write, shared by every request of
// a burst). false: go the ordinary way.
func (a *Allocator) spareOrWait(ctx context.Context, p Pool, al Alloc) (netip.Addr, bool) {
	a.sp.mu.Lock()
	addr, ok, w := a.takeSpareLocked(p, netip.Addr{}, al, true)
	a.sp.mu.Unlock()
	if ok || w == nil {
		return addr, ok
	}
	select {
	case addr, ok := <-w.ch:
		return addr, ok
	case <-ctx.Done():
	}
	a.sp.mu.Lock()
	defer a.sp.mu.Unlock()
	st := a.sp.pools[p.ID()]
	if st == nil {
		return netip.Addr{}, false // closed, and its waiters with it
	}
	if i := slices.Index(st.waiters, w); i >= 0 {
		st.waiters = slices.Delete(st.waiters, i, i+1)
		return netip.Addr{}, false
	}
	// Served or closed meanwhile (the channel is ready either way): a
	// served address not yet recorded stays a spare, since Docker has
	// given up; one recorded already is a leak the reclaimer returns.
	if addr, ok := <-w.ch; ok {
		if _, pending := st.handed[addr]; pending {
			delete(st.handed, addr)
			st.free = append(st.free, addr)
		}
	}
	return netip.Addr{}, false
}

// takeSpareLocked: see takeSpare; with wait, a request that finds none
// is registered as a waiter and returned.
func (a *Allocator) takeSpareLocked(p Pool, want netip.Addr, al Alloc, wait bool) (netip.Addr, bool, *spareWaiter) {
	if a.sp.want == 0 {
		return netip.Addr{}, false, nil
	}
	defer a.kickSpares()
	st := a.sp.pools[p.ID()]
	if st == nil {
		// dry: this request found none; its retry must not count as a
		// burst.
		st = &spareState{pool: p, handed: map[netip.Addr]Alloc{}, target: a.sp.want, dry: true}
		a.sp.pools[p.ID()] = st
	}
	if st.closing || st.suspect || !samePool(st.pool, p) {
		return netip.Addr{}, false, nil
	}
	i := 0
	if want.IsValid() {
		if i = slices.Index(st.free, want); i < 0 {
			return netip.Addr{}, false, nil
		}
	} else if len(st.free) == 0 {
		if !st.dry {
			st.dry, st.busy = true, true
			st.target = min(2*st.target, spareBurst*a.sp.want)
		}
		if !wait || a.now().Before(st.holdUntil) {
			return netip.Addr{}, false, nil
		}
		w := &spareWaiter{al: al, ch: make(chan netip.Addr, 1)}
		st.waiters = append(st.waiters, w)
		return netip.Addr{}, false, w
	}
	addr := st.free[i]
	st.free = slices.Delete(st.free, i, i+1)
	st.handed[addr] = al
	a.spareHandouts.Add(1)
	return addr, true, nil
}

// spareCount is the number of free spares over all pools.
func (a *Allocator) spareCount() int {
	a.sp.mu.Lock()
	defer a.sp.mu.Unlock()
	n := 0
	for _, st := range a.sp.pools {
		n += len(st.free)
	}
	return n
}

func (a *Allocator) kickSpares() {
	select {
	case a.sp.kick <- struct{}{}:
	default:
	}
}

// forgetSpare drops addr from p's spares, handed or not: it is being
// released. It returns a function that puts it back, for a failed release.
func (a *Allocator) forgetSpare(p Pool, addr netip.Addr) (undo func()) {
	a.sp.mu.Lock()
	defer a.sp.mu.Unlock()
	st := a.sp.pools[p.ID()]
	if st == nil {
		return func() {}
	}
	if al, ok := st.handed[addr]; ok {
		delete(st.handed, addr)
		return func() { a.sp.mu.Lock(); st.handed[addr] = al; a.sp.mu.Unlock() }
	}
	if i := slices.Index(st.free, addr); i >= 0 {
		st.free = slices.Delete(st.free, i, i+1)
		// Released while free: Docker never had it. Record it handed with
		// a task allocation if the release fails, so the reclaimer, not
		// this list, decides what happens to it.
		return func() {
			a.sp.mu.Lock()
			st.handed[addr] = Alloc{Node: a.node, At: a.now().UTC(), Kind: KindTask}
			a.sp.mu.Unlock()
		}
	}
	return func() {}
}

func samePool(x, y Pool) bool {
	return x.Network == y.Network && x.Prefix == y.Prefix && x.allocRange() == y.allocRange() &&
		x.blockBits() == y.blockBits() && maps.Equal(x.Reserved, y.Reserved)
}

// KeepSpares makes the allocator keep n addresses of every pool it serves
// claimed ahead of demand, handing them out with no wait on Consul, until
// ctx ends; it then records what it handed out and gives the rest back.
// Without it, every allocation waits for its Consul write.
func (a *Allocator) KeepSpares(ctx context.Context, n int, log *slog.Logger) {
	if n <= 0 {
		return
	}
	events := make(chan spareEvent, 16)
	a.sp.mu.Lock()
	a.sp.want = n
	a.sp.log = log
	a.sp.mu.Unlock()
	check := time.NewTicker(spareCheck)
	defer check.Stop()
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	for {
		verify := false
		select {
		case <-ctx.Done():
			a.sp.mu.Lock()
			a.sp.want = 0
			a.sp.mu.Unlock()
			// Give back what Docker never got, and record what it got.
			stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if _, err := a.syncSpares(stopCtx, nil, false); err != nil {
				log.Warn("spare addresses not all given back; the reclaimer will return them", "err", err)
			}
			return
		case ev := <-events:
			if ev.check {
				log.Warn("Consul was out of reach or lost its state: checking spares against it before handing any out", "pool", ev.pool)
				verify = true
				break
			}
			a.sp.mu.Lock()
			if st := a.sp.pools[ev.pool]; st != nil {
				st.holdUntil = a.now().Add(spareHold)
			}
			a.sp.mu.Unlock()
			log.Info("another node ran short of addresses: giving spares back", "pool", ev.pool)
		case <-a.sp.kick:
		case <-retry.C:
		case <-check.C:
			verify = true
		}
		pending, err := a.syncSpares(ctx, events, verify)
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn("spare addresses not updated; retrying", "err", err)
			retry.Reset(time.Second)
		case pending:
			retry.Reset(recordDelay)
		}
	}
}

// syncSpares brings every pool's spares up to date in Consul: records
// handed-out spares, claims replacements, gives spares back where another
// node needs them or when stopping (events nil), and, with verify,
// re-reads the blocks that hold spares.
func (a *Allocator) syncSpares(ctx context.Context, events chan<- spareEvent, verify bool) (pending bool, err error) {
	a.sp.mu.Lock()
	states := slices.Collect(maps.Values(a.sp.pools))
	a.sp.mu.Unlock()
	var firstErr error
	for _, st := range states {
		if events != nil {
			a.sp.mu.Lock()
			if st.stopWatch == nil && !st.closing {
				wctx, cancel := context.WithCancel(ctx)
				st.stopWatch = cancel
				go a.watchPressure(wctx, st.pool, events)
			}
			a.sp.mu.Unlock()
		}
		// Bounded: the allocator's lock is held meanwhile, and a stopped
		// Consul agent can leave a request unanswered.
		pctx, cancel := context.WithTimeout(ctx, commitTimeout)
		err := a.syncPool(pctx, st, events == nil, verify)
		cancel()
		if err != nil && firstErr == nil {
			firstErr = err
		}
		a.sp.mu.Lock()
		pending = pending || len(st.handed) > 0
		a.sp.mu.Unlock()
	}
	return pending, firstErr
}

// syncPool writes one pool's spare changes, one write per block touched.
func (a *Allocator) syncPool(ctx context.Context, st *spareState, stopping, verify bool) error {
	p := st.pool
	log := a.logger()
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.loadLocked(ctx, p); err != nil {
		return err
	}
	a.sp.mu.Lock()
	suspect := st.suspect
	a.sp.mu.Unlock()
	verify = verify || suspect
	if verify {
		for _, key := range a.myBlocks(p) {
			if err := a.refreshLocked(ctx, key); err != nil {
				return err
			}
		}
	}
	now := a.now()
	a.sp.mu.Lock()
	// Blocks with a spare handed out long enough ago get a write now.
	all := stopping || st.closing || verify
	var due []netip.Addr
	for addr, al := range st.handed {
		if all || now.Sub(al.At) >= recordDelay {
			due = append(due, addr)
		}
	}
	var drop []netip.Addr
	need := 0
	if verify {
		// Quiet since the last check: halve a raised target.
		if !st.busy {
			st.target = max(a.sp.want, st.target/2)
		}
		st.busy = false
	}
	switch {
	case stopping || st.closing || now.Before(st.holdUntil) || a.sp.want == 0:
		drop, st.free = st.free, nil
		st.closeWaiters()
	case len(st.free) > st.target:
		drop = slices.Clone(st.free[st.target:])
		st.free = st.free[:st.target]
	default:
		need = st.target - len(st.free) + len(st.waiters)
	}
	if verify {
		// A free spare Consul no longer holds for this allocator must go.
		kept := st.free[:0]
		for _, addr := range st.free {
			if c, ok := a.mine[blockPath(p, p.Block(addr))]; ok && a.mySpare(c.doc.Allocs[addr.String()]) {
				kept = append(kept, addr)
			} else {
				log.Error("a spare address is no longer this node's in Consul; not handing it out", "pool", p.ID(), "address", addr)
			}
		}
		st.free = kept
	}
	a.sp.mu.Unlock()

	byBlock := map[string][]netip.Addr{}
	for _, addr := range due {
		key := blockPath(p, p.Block(addr))
		byBlock[key] = append(byBlock[key], addr)
	}
	for _, addr := range drop {
		key := blockPath(p, p.Block(addr))
		byBlock[key] = append(byBlock[key], addr)
	}
	keys := slices.Sorted(maps.Keys(byBlock))
	if need > 0 {
		for _, key := range a.myBlocks(p) {
			if _, ok := byBlock[key]; !ok {
				keys = append(keys, key)
			}
		}
	}
	var firstErr error
	for _, key := range keys {
		got, err := a.writeSparesLocked(ctx, p, key, drop, need)
		need -= len(got)
		if err != nil && firstErr == nil {
			firstErr = err
		}
	}
	if need > 0 && firstErr == nil {
		got, err := a.claimSparesLocked(ctx, p, need)
		need -= len(got)
		firstErr = err
	}
	if firstErr != nil || need > 0 {
		// Not enough here: waiting requests go the ordinary way, which
		// borrows, or says what is wrong.
		a.sp.mu.Lock()
		st.closeWaiters()
		a.sp.mu.Unlock()
	}
	if suspect && firstErr == nil {
		// Every block holding spares was read again and what Consul no
		// longer holds was dropped: spares may be handed out again.
		a.sp.mu.Lock()
		st.suspect = false
		a.sp.mu.Unlock()
	}
	if firstErr != nil && len(drop) > 0 {
		// Whatever was not given back is still this node's: keep it.
		a.sp.mu.Lock()
		for _, addr := range drop {
			c := a.mine[blockPath(p, p.Block(addr))]
			if a.mySpare(c.doc.Allocs[addr.String()]) && !slices.Contains(st.free, addr) {
				st.free = append(st.free, addr)
			}
		}
		a.sp.mu.Unlock()
	}
	return firstErr
}

// handedIn returns the spares of p handed out in block b and not yet
// recorded. Releases take the allocator's lock, held by the caller, so
// none of them can be released before the caller's write.
func (a *Allocator) handedIn(p Pool, b netip.Prefix) map[netip.Addr]Alloc {
	a.sp.mu.Lock()
	defer a.sp.mu.Unlock()
	out := map[netip.Addr]Alloc{}
	if st := a.sp.pools[p.ID()]; st != nil {
		for addr, al := range st.handed {
			if b.Contains(addr) {
				out[addr] = al
			}
		}
	}
	return out
}

// withSpares folds this node's spare bookkeeping for block b into doc,
// which is about to be written anyway: spares handed out in b become their
// allocations and, with topUp, free addresses of b become spares up to the
// number kept. It returns the new document, the spares it records and
// those it adds, for settleSpares once the write succeeded.
func (a *Allocator) withSpares(p Pool, b netip.Prefix, doc BlockDoc, topUp bool) (BlockDoc, []netip.Addr, []netip.Addr) {
	if doc.Node != a.node {
		return doc, nil, nil
	}
	a.sp.mu.Lock()
	defer a.sp.mu.Unlock()
	st := a.sp.pools[p.ID()]
	if st == nil || !samePool(st.pool, p) {
		return doc, nil, nil
	}
	var recorded, added []netip.Addr
	for addr, al := range st.handed {
		if b.Contains(addr) && a.mySpare(doc.Allocs[addr.String()]) {
			if recorded == nil {
				doc = doc.clone()
			}
			doc.Allocs[addr.String()] = al
			recorded = append(recorded, addr)
		}
	}
	if topUp && a.sp.want > 0 && !st.closing && !a.now().Before(st.holdUntil) {
		doc, added = a.addSpares(p, b, doc, st.target-len(st.free))
	}
	return doc, recorded, added
}

// myBlocks lists the keys of p's blocks this node holds, in address order.
func (a *Allocator) myBlocks(p Pool) []string {
	prefix := poolPrefix(p)
	var keys []string
	for key := range a.mine {
		if strings.HasPrefix(key, prefix) {
			keys = append(keys, key)
		}
	}
	slices.SortFunc(keys, func(x, y string) int {
		bx, _ := parseBlockKey(strings.TrimPrefix(x, prefix))
		by, _ := parseBlockKey(strings.TrimPrefix(y, prefix))
		return bx.Addr().Compare(by.Addr())
	})
	return keys
}

// writeSparesLocked rewrites one block: handed spares in it become their
// allocations, dropped spares are freed, and up to need free addresses
// become new spares, which it returns.
func (a *Allocator) writeSparesLocked(ctx context.Context, p Pool, key string, drop []netip.Addr, need int) ([]netip.Addr, error) {
	b, err := parseBlockKey(strings.TrimPrefix(key, poolPrefix(p)))
	if err != nil {
		return nil, err
	}
	for range maxAttempts {
		handed := a.handedIn(p, b)
		c, ok := a.mine[key]
		if !ok {
			if err := a.refreshLocked(ctx, key); err != nil {
				return nil, err
			}
			if c, ok = a.mine[key]; !ok {
				// Not this node's block any more: its spares were taken
				// (a leader reclaimed them); nothing here is ours to write.
				var lost []netip.Addr
				for addr := range handed {
					if b.Contains(addr) {
						lost = append(lost, addr)
					}
				}
				a.lostSpares(p, lost)
				a.sp.mu.Lock()
				if st := a.sp.pools[p.ID()]; st != nil {
					st.free = slices.DeleteFunc(st.free, b.Contains)
				}
				a.sp.mu.Unlock()
				return nil, nil
			}
		}
		doc := c.doc.clone()
		var recorded, lost []netip.Addr
		dropped := 0
		for addr, al := range handed {
			if !b.Contains(addr) {
				continue
			}
			if !a.mySpare(doc.Allocs[addr.String()]) {
				// Releases take the allocator's lock too, so this spare
				// was not released: Consul lost it to another node.
				lost = append(lost, addr)
				continue
			}
			doc.Allocs[addr.String()] = al
			recorded = append(recorded, addr)
		}
		if len(lost) > 0 {
			a.lostSpares(p, lost)
		}
		for _, addr := range drop {
			if b.Contains(addr) && a.mySpare(doc.Allocs[addr.String()]) {
				delete(doc.Allocs, addr.String())
				dropped++
			}
		}
		doc, added := a.addSpares(p, b, doc, need)
		if len(recorded) == 0 && len(added) == 0 && dropped == 0 {
			return nil, nil
		}
		var won bool
		if len(doc.Allocs) == 0 {
			if won, err = a.kv.DeleteCAS(ctx, key, c.index); won {
				delete(a.mine, key)
			}
		} else {
			won, err = a.writeLocked(ctx, key, doc, c.index)
		}
		if err != nil {
			return nil, fmt.Errorf("update spares in %s: %w", key, err)
		}
		if won {
			a.settleSpares(p, recorded, added)
			return added, nil
		}
		if err := a.refreshLocked(ctx, key); err != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("update spares in %s: too much contention", key)
}

// settleSpares notes a successful write: recorded spares are no longer
// pending, added ones may be handed out.
func (a *Allocator) settleSpares(p Pool, recorded, added []netip.Addr) {
	a.sp.mu.Lock()
	defer a.sp.mu.Unlock()
	st := a.sp.pools[p.ID()]
	if st == nil {
		return
	}
	for _, addr := range recorded {
		delete(st.handed, addr)
	}
	for _, addr := range added {
		if len(st.waiters) > 0 {
			w := st.waiters[0]
			st.waiters = st.waiters[1:]
			st.handed[addr] = w.al
			a.spareHandouts.Add(1)
			w.ch <- addr
			a.kickSpares() // to record it
			continue
		}
		st.free = append(st.free, addr)
	}
	if len(added) > 0 {
		st.dry = false
	}
}

// lostSpares is the one case spares cannot cover: Consul no longer holds
// spares this node handed out. It says so loudly; the addresses' tasks and
// whoever holds them now must be told apart by an operator (`underlay ips`
// flags the duplicate).
func (a *Allocator) lostSpares(p Pool, lost []netip.Addr) {
	log := a.logger()
	a.sp.mu.Lock()
	defer a.sp.mu.Unlock()
	st := a.sp.pools[p.ID()]
	for _, addr := range lost {
		log.Error("an address handed out from this node's spares was reclaimed by another node", "pool", p.ID(), "address", addr)
		if st != nil {
			delete(st.handed, addr)
		}
	}
}

// addSpares claims up to n free addresses of block b in doc as this
// allocator's spares.
func (a *Allocator) addSpares(p Pool, b netip.Prefix, doc BlockDoc, n int) (BlockDoc, []netip.Addr) {
	var added []netip.Addr
	for len(added) < n {
		addr, ok := doc.free(p, b)
		if !ok {
			break
		}
		doc = doc.with(addr, Alloc{Node: a.node, At: a.now().UTC(), Kind: KindSpare, Gen: a.gen})
		added = append(added, addr)
	}
	return doc, added
}

// claimSparesLocked claims blocks no node holds for need spares.
func (a *Allocator) claimSparesLocked(ctx context.Context, p Pool, need int) ([]netip.Addr, error) {
	pairs, err := a.kv.ListPairs(ctx, poolPrefix(p))
	if err != nil {
		return nil, fmt.Errorf("read pool %s: %w", p.ID(), err)
	}
	var all []netip.Addr
	for _, b := range unclaimed(p, pairs) {
		if len(all) >= need {
			break
		}
		key := blockPath(p, b)
		doc, added := a.addSpares(p, b, BlockDoc{Node: a.node, Allocs: map[string]Alloc{}}, need-len(all))
		if len(added) == 0 {
			continue
		}
		won, err := a.writeLocked(ctx, key, doc, 0)
		if err != nil {
			return all, err
		}
		if won {
			a.settleSpares(p, nil, added)
			all = append(all, added...)
		}
	}
	// Spares never borrow: they come from own blocks or free ones only.
	return all, nil
}

// pressureKey is where a node short of addresses in p asks the others for
// their spares.
func pressureKey(p Pool) string { return KVPrefix + p.Network + "/" + p.Family() + "/pressure" }

type pressureNote struct {
	Node string    `json:"node"`
	At   time.Time `json:"at"`
}

// askForSpares writes p's pressure key, at most every 250 ms per pool.
func (a *Allocator) askForSpares(ctx context.Context, p Pool) error {
	now := a.now()
	a.sp.mu.Lock()
	if now.Sub(a.sp.lastPressure[p.ID()]) < 250*time.Millisecond {
		a.sp.mu.Unlock()
		return nil
	}
	a.sp.lastPressure[p.ID()] = now
	a.sp.mu.Unlock()
	b, _ := json.Marshal(pressureNote{Node: a.node, At: now.UTC()})
	if err := a.kv.Put(ctx, pressureKey(p), b); err != nil {
		return fmt.Errorf("ask other nodes for spare addresses of %s: %w", p.ID(), err)
	}
	return nil
}

// spareEvent is what a pool's watch tells KeepSpares: another node asks
// for spares, or (check) Consul was out of reach or lost its state.
type spareEvent struct {
	pool  string
	check bool
}

// suspendSpares stops hand-outs of p's spares until a verifying sync.
func (a *Allocator) suspendSpares(id string) {
	a.sp.mu.Lock()
	defer a.sp.mu.Unlock()
	if st := a.sp.pools[id]; st != nil {
		st.suspect = true
	}
}

// watchPressure follows p's pressure key with blocking queries. It reports
// each request for spares from another node; and since spares are handed
// out with no read of Consul, it guards them: while the key cannot be read
// they are suspended, and once it can again, or if the key is gone or
// Consul's index went backwards (a dev agent restarted empty, a snapshot
// restored), it asks for a check of every spare against Consul before
// any is handed out again.
func (a *Allocator) watchPressure(ctx context.Context, p Pool, out chan<- spareEvent) {
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
	erred := false
	delays := backoff.Backoff{Min: 200 * time.Millisecond, Max: 10 * time.Second}
	for ctx.Err() == nil {
		if index == 0 {
			// The key must exist: a blocking query on a missing key wakes
			// on writes to its neighbours, here every allocation.
			a.kv.CASIndex(ctx, key, []byte("{}"), 0)
		}
		v, next, ok, err := a.kv.WaitKey(ctx, key, index)
		if err != nil {
			if ctx.Err() == nil {
				a.suspendSpares(p.ID())
				erred = true
				backoff.Sleep(ctx, delays.Next())
			}
			continue
		}
		delays.Reset()
		lost := !ok || next < index
		if lost || erred {
			// Only a verifying sync lifts the suspension.
			a.suspendSpares(p.ID())
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
		if json.Unmarshal(v, &n) != nil || n.Node == "" || n.Node == a.node || a.now().Sub(n.At) > spareHold {
			continue
		}
		if !send(spareEvent{pool: p.ID()}) {
			return
		}
	}
}

// sparesElsewhere reports whether other nodes (or this node's earlier
// generations) hold spares of p that might come back.
func (a *Allocator) sparesElsewhere(p Pool, pairs []Pair) bool {
	for _, kv := range pairs {
		var doc BlockDoc
		if json.Unmarshal(kv.Value, &doc) != nil {
			continue
		}
		for _, al := range doc.Allocs {
			if al.Kind == KindSpare && !a.mySpare(al) {
				return true
			}
		}
	}
	return false
}

// ReleaseSpares gives back p's spares on this node and keeps none of p
// from now on: the network is being removed from this node.
func (a *Allocator) ReleaseSpares(ctx context.Context, p Pool) error {
	a.sp.mu.Lock()
	st := a.sp.pools[p.ID()]
	if st != nil {
		st.closing = true
	}
	a.sp.mu.Unlock()
	if st == nil {
		return nil
	}
	if err := a.syncPool(ctx, st, true, false); err != nil {
		return err
	}
	a.sp.mu.Lock()
	defer a.sp.mu.Unlock()
	if len(st.handed) == 0 && len(st.free) == 0 {
		delete(a.sp.pools, p.ID())
		if st.stopWatch != nil {
			st.stopWatch()
		}
	}
	return nil
}

// Adopt turns a spare of an earlier generation of this node into a task
// allocation: the reclaimer found a container holding it after a restart.
func (a *Allocator) adopt(ctx context.Context, p Pool, addr netip.Addr) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	key := blockPath(p, p.Block(addr))
	for range maxAttempts {
		v, index, ok, err := a.kv.Get(ctx, key)
		if err != nil || !ok {
			return err
		}
		var doc BlockDoc
		if err := json.Unmarshal(v, &doc); err != nil {
			return fmt.Errorf("decode %s: %w", key, err)
		}
		al := doc.Allocs[addr.String()]
		if al.Kind != KindSpare || al.Node != a.node || a.mySpare(al) {
			return nil
		}
		won, err := a.writeLocked(ctx, key, doc.with(addr, Alloc{Node: a.node, At: al.At, Kind: KindTask}), index)
		if err != nil || won {
			return err
		}
	}
	return fmt.Errorf("adopt %s: too much contention", addr)
}
