package ipam

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// KVPrefix is where allocation state lives.
const KVPrefix = "underlay/ipam/"

// Pair is a KV entry with its modify index.
type Pair struct {
	Key   string
	Value []byte
	Index uint64
}

// KV is the part of Consul's KV store the allocator needs; every write is
// a check-and-set on the modify index.
type KV interface {
	Get(ctx context.Context, key string) (value []byte, index uint64, ok bool, err error)
	ListPairs(ctx context.Context, prefix string) ([]Pair, error)
	// CASIndex writes value when the key's modify index is index (0: only
	// if absent) and returns the key's new modify index when it did.
	CASIndex(ctx context.Context, key string, value []byte, index uint64) (won bool, newIndex uint64, err error)
	// DeleteCAS deletes the key when its modify index is index.
	DeleteCAS(ctx context.Context, key string, index uint64) (bool, error)
	// Put writes value unconditionally (the pressure key only).
	Put(ctx context.Context, key string, value []byte) error
	// WaitKey reads key once Consul's index for it passes index (a
	// blocking query), returning the new index.
	WaitKey(ctx context.Context, key string, index uint64) (value []byte, newIndex uint64, ok bool, err error)
}

// maxAttempts bounds how often one request retries after losing a race;
// each loss means another writer made progress, so this is never reached
// in practice and only guards against a bug looping forever.
const maxAttempts = 100

// Allocator hands out a node's addresses. One Allocator per node; it
// serialises the node's own requests, while other nodes' agents race with it
// only through check-and-set writes.
type Allocator struct {
	kv   KV
	node string
	gen  string // this process's generation, on its spares
	now  func() time.Time
	sp   spares
	// spareHandouts counts requests answered from spares (a metric).
	spareHandouts atomic.Int64

	mu sync.Mutex // guards following fields, and serialises allocations
	// mine caches the blocks this node holds, by KV key: their documents
	// change only through this node, except when another node borrows, and
	// then the stale index makes our next write fail and re-read.
	mine map[string]cached
	// loaded records pools whose blocks were read from KV once.
	loaded map[string]bool

	qmu sync.Mutex // guards queue and committing
	// queue holds requests for any address waiting for the committer; one
	// goroutine at a time commits everything queued, as few block writes
	// as possible, so concurrent requests share writes (group commit).
	queue      []*allocReq
	committing bool
}

// allocReq is a queued request: an allocation of any address, or with
// release set, the release of that address.
type allocReq struct {
	pool    Pool
	al      Alloc
	release netip.Addr
	done    chan allocResult
}

type allocResult struct {
	addr netip.Addr
	err  error
}

// commitTimeout bounds one batch's writes, whoever's request started it.
const commitTimeout = 10 * time.Second

type cached struct {
	doc   BlockDoc
	index uint64
}

// NewAllocator returns node's allocator over kv.
func NewAllocator(kv KV, node string) *Allocator {
	return &Allocator{kv: kv, node: node, gen: newGen(), now: time.Now, mine: map[string]cached{}, loaded: map[string]bool{},
		sp: spares{pools: map[string]*spareState{}, lastPressure: map[string]time.Time{}, kick: make(chan struct{}, 1), log: slog.Default()}}
}

func poolPrefix(p Pool) string { return KVPrefix + p.Network + "/" + p.Family() + "/blocks/" }

func blockPath(p Pool, b netip.Prefix) string { return poolPrefix(p) + blockKey(b) }

// Allocate hands out want, or any free address when want is invalid.
// Concurrent requests for any address are committed together.
func (a *Allocator) Allocate(ctx context.Context, p Pool, want netip.Addr, kind string) (netip.Addr, error) {
	al := Alloc{Node: a.node, At: a.now().UTC(), Kind: kind}
	// Shims are found again by reading Consul, so they are never handed
	// out before their write: no spares for them.
	if kind == KindTask {
		if !want.IsValid() {
			if addr, ok := a.spareOrWait(ctx, p, al); ok {
				return addr, nil
			}
		} else if addr, ok := a.takeSpare(p, want, al); ok {
			return addr, nil
		}
	}
	if want.IsValid() {
		a.mu.Lock()
		defer a.mu.Unlock()
		if err := a.loadLocked(ctx, p); err != nil {
			return netip.Addr{}, err
		}
		return want, a.allocateSpecificLocked(ctx, p, want, al)
	}
	r := a.enqueue(ctx, &allocReq{pool: p, al: al, done: make(chan allocResult, 1)})
	return r.addr, r.err
}

// enqueue queues req, commits the queue if no one else is doing it, and
// waits for req's result.
func (a *Allocator) enqueue(ctx context.Context, req *allocReq) allocResult {
	a.qmu.Lock()
	a.queue = append(a.queue, req)
	lead := !a.committing
	a.committing = true
	a.qmu.Unlock()
	if lead {
		a.commitQueued()
	}
	select {
	case r := <-req.done:
		return r
	case <-ctx.Done():
		// The request may still be served; an address allocated then is a
		// leak the reclaimer returns, as when Docker gives up on a slow plugin.
		return allocResult{err: ctx.Err()}
	}
}

// commitQueued serves every queued request, pool by pool, until the queue
// is empty.
func (a *Allocator) commitQueued() {
	for {
		a.qmu.Lock()
		batch := a.queue
		a.queue = nil
		if len(batch) == 0 {
			a.committing = false
			a.qmu.Unlock()
			return
		}
		a.qmu.Unlock()
		byPool := map[string][]*allocReq{}
		var order []string
		for _, r := range batch {
			if byPool[r.pool.ID()] == nil {
				order = append(order, r.pool.ID())
			}
			byPool[r.pool.ID()] = append(byPool[r.pool.ID()], r)
		}
		for _, id := range order {
			var allocs, releases []*allocReq
			for _, r := range byPool[id] {
				if r.release.IsValid() {
					releases = append(releases, r)
				} else {
					allocs = append(allocs, r)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
			a.mu.Lock()
			if len(releases) > 0 {
				a.releaseBatchLocked(ctx, releases)
			}
			if len(allocs) > 0 {
				a.allocateBatchLocked(ctx, allocs)
			}
			a.mu.Unlock()
			cancel()
		}
	}
}

// allocateBatchLocked gives every request of one pool an address, with one
// write per block touched.
func (a *Allocator) allocateBatchLocked(ctx context.Context, reqs []*allocReq) {
	p := reqs[0].pool
	fail := func(err error) {
		for _, r := range reqs {
			r.done <- allocResult{err: err}
		}
	}
	if err := a.loadLocked(ctx, p); err != nil {
		fail(err)
		return
	}
	// Spares refilled while these requests queued serve them first.
	rest := reqs[:0]
	for _, r := range reqs {
		if r.al.Kind == KindTask {
			if addr, ok := a.takeSpare(p, netip.Addr{}, r.al); ok {
				r.done <- allocResult{addr: addr}
				continue
			}
		}
		rest = append(rest, r)
	}
	if reqs = rest; len(reqs) == 0 {
		return
	}
	waitUntil := a.now().Add(spareWait)
	for attempt := 0; attempt < maxAttempts; attempt++ {
		var err error
		if reqs, err = a.fromMineLocked(ctx, p, reqs); err != nil || len(reqs) == 0 {
			if err != nil {
				fail(err)
			}
			return
		}
		pairs, err := a.kv.ListPairs(ctx, poolPrefix(p))
		if err != nil {
			fail(fmt.Errorf("read pool %s: %w", p.ID(), err))
			return
		}
		if reqs, err = a.claimLocked(ctx, p, pairs, reqs); err != nil || len(reqs) == 0 {
			if err != nil {
				fail(err)
			}
			return
		}
		if reqs, err = a.borrowLocked(ctx, p, pairs, reqs); err != nil || len(reqs) == 0 {
			if err != nil {
				fail(err)
			}
			return
		}
		if !a.anyFree(p, pairs) {
			if !a.sparesElsewhere(p, pairs) || !a.now().Before(waitUntil) {
				fail(fmt.Errorf("%w in %s (%s)", ErrPoolExhausted, p.ID(), p.allocRange()))
				return
			}
			// Other nodes keep spares: ask for them and look again.
			if err := a.waitForSparesLocked(ctx, p); err != nil {
				fail(err)
				return
			}
			attempt--
			continue
		}
		// Something was free but others took it first: try again.
	}
	fail(fmt.Errorf("allocate in %s: too much contention", p.ID()))
}

// fill allocates to as many of reqs as block b of doc has free addresses,
// returning the new document, the requests served with their addresses,
// and those left.
func fill(p Pool, b netip.Prefix, doc BlockDoc, reqs []*allocReq) (BlockDoc, []allocResult, []*allocReq) {
	var got []allocResult
	for len(got) < len(reqs) {
		addr, ok := doc.free(p, b)
		if !ok {
			break
		}
		doc = doc.with(addr, reqs[len(got)].al)
		got = append(got, allocResult{addr: addr})
	}
	return doc, got, reqs[len(got):]
}

func answer(reqs []*allocReq, got []allocResult) {
	for i, r := range got {
		reqs[i].done <- r
	}
}

// fromMineLocked allocates from blocks this node holds; it returns the
// requests it could not serve.
func (a *Allocator) fromMineLocked(ctx context.Context, p Pool, reqs []*allocReq) ([]*allocReq, error) {
	prefix := poolPrefix(p)
	for key, c := range a.mine {
		if len(reqs) == 0 {
			break
		}
		if !strings.HasPrefix(key, prefix) {
			continue
		}
		b, err := parseBlockKey(strings.TrimPrefix(key, prefix))
		if err != nil {
			return reqs, err
		}
		for range maxAttempts {
			doc, got, rest := fill(p, b, c.doc, reqs)
			if len(got) == 0 {
				break
			}
			// The same write records spares handed out and tops them up.
			doc, recorded, added := a.withSpares(p, b, doc, true)
			won, err := a.writeLocked(ctx, key, doc, c.index)
			if err != nil {
				return reqs, err
			}
			if won {
				a.settleSpares(p, recorded, added)
				answer(reqs, got)
				reqs = rest
				break
			}
			// Someone borrowed from this block meanwhile: re-read it.
			if err := a.refreshLocked(ctx, key); err != nil {
				return reqs, err
			}
			var ok bool
			if c, ok = a.mine[key]; !ok {
				break // given back, or taken over
			}
		}
	}
	return reqs, nil
}

// claimLocked takes blocks no node holds, with their allocations in the
// same write.
func (a *Allocator) claimLocked(ctx context.Context, p Pool, pairs []Pair, reqs []*allocReq) ([]*allocReq, error) {
	for _, b := range unclaimed(p, pairs) {
		if len(reqs) == 0 {
			break
		}
		key := blockPath(p, b)
		doc, got, rest := fill(p, b, BlockDoc{Node: a.node, Allocs: map[string]Alloc{}}, reqs)
		if len(got) == 0 {
			continue // nothing usable in it: never worth claiming
		}
		won, err := a.writeLocked(ctx, key, doc, 0)
		if err != nil {
			return reqs, err
		}
		if won {
			answer(reqs, got)
			reqs = rest
		}
	}
	return reqs, nil
}

// borrowLocked allocates in other nodes' blocks with free addresses.
func (a *Allocator) borrowLocked(ctx context.Context, p Pool, pairs []Pair, reqs []*allocReq) ([]*allocReq, error) {
	for _, kv := range pairs {
		if len(reqs) == 0 {
			break
		}
		doc, b, err := decode(p, kv)
		if err != nil {
			return reqs, err
		}
		doc, got, rest := fill(p, b, doc, reqs)
		if len(got) == 0 {
			continue
		}
		won, err := a.writeLocked(ctx, kv.Key, doc, kv.Index)
		if err != nil {
			return reqs, err
		}
		if won {
			answer(reqs, got)
			reqs = rest
		}
	}
	return reqs, nil
}

// unclaimed lists the blocks of p no node holds, given all p's pairs.
func unclaimed(p Pool, pairs []Pair) []netip.Prefix {
	taken := make(map[string]bool, len(pairs))
	for _, kv := range pairs {
		taken[kv.Key] = true
	}
	var out []netip.Prefix
	for _, b := range p.Blocks() {
		if !taken[blockPath(p, b)] {
			out = append(out, b)
		}
	}
	return out
}

func (a *Allocator) anyFree(p Pool, pairs []Pair) bool {
	for _, kv := range pairs {
		if doc, b, err := decode(p, kv); err == nil {
			if _, ok := doc.free(p, b); ok {
				return true
			}
		}
	}
	for _, b := range unclaimed(p, pairs) {
		if _, ok := (BlockDoc{}).free(p, b); ok {
			return true
		}
	}
	return false
}

func (a *Allocator) allocateSpecificLocked(ctx context.Context, p Pool, want netip.Addr, al Alloc) error {
	if !p.usable(want) {
		return fmt.Errorf("address %s is not available in %s: outside %s, or the network, broadcast, gateway or an aux address", want, p.ID(), p.allocRange())
	}
	key := blockPath(p, p.Block(want))
	waitUntil := a.now().Add(spareWait)
	for range maxAttempts {
		v, index, ok, err := a.kv.Get(ctx, key)
		if err != nil {
			return fmt.Errorf("read block of %s: %w", want, err)
		}
		doc := BlockDoc{Node: a.node, Allocs: map[string]Alloc{}}
		if ok {
			if err := json.Unmarshal(v, &doc); err != nil {
				return fmt.Errorf("decode %s: %w", key, err)
			}
		}
		if holder, taken := doc.Allocs[want.String()]; taken {
			if holder.Kind == KindSpare && !a.mySpare(holder) && a.now().Before(waitUntil) {
				// Another node keeps it as a spare: ask for it back.
				if err := a.waitForSparesLocked(ctx, p); err != nil {
					return err
				}
				continue
			}
			return fmt.Errorf("address %s in %s is already in use (node %s)", want, p.ID(), holder.Node)
		}
		won, err := a.writeLocked(ctx, key, doc.with(want, al), index)
		if err != nil || won {
			return err
		}
	}
	return fmt.Errorf("allocate %s: too much contention", want)
}

// Release frees addr; releasing a free address succeeds. A block is given
// back, whoever holds it, when its last address is released. Concurrent
// releases are committed together, one write per block.
func (a *Allocator) Release(ctx context.Context, p Pool, addr netip.Addr) error {
	return a.enqueue(ctx, &allocReq{pool: p, release: addr, done: make(chan allocResult, 1)}).err
}

// releaseBatchLocked releases every request's address, one write per block.
func (a *Allocator) releaseBatchLocked(ctx context.Context, reqs []*allocReq) {
	p := reqs[0].pool
	byBlock := map[string][]*allocReq{}
	for _, r := range reqs {
		key := blockPath(p, p.Block(r.release))
		byBlock[key] = append(byBlock[key], r)
	}
	for key, rs := range byBlock {
		var undo []func()
		for _, r := range rs {
			undo = append(undo, a.forgetSpare(p, r.release))
		}
		err := a.releaseInBlockLocked(ctx, p, key, rs)
		for i, r := range rs {
			if err != nil {
				undo[i]()
			}
			r.done <- allocResult{err: err}
		}
	}
}

// waitForSparesLocked asks other nodes for their spares of p and gives
// them a moment, with the allocator unlocked meanwhile.
func (a *Allocator) waitForSparesLocked(ctx context.Context, p Pool) error {
	if err := a.askForSpares(ctx, p); err != nil {
		return err
	}
	a.mu.Unlock()
	defer a.mu.Lock()
	select {
	case <-ctx.Done():
		return fmt.Errorf("wait for spare addresses of %s: %w", p.ID(), ctx.Err())
	case <-time.After(50 * time.Millisecond):
		return nil
	}
}

func (a *Allocator) releaseInBlockLocked(ctx context.Context, p Pool, key string, rs []*allocReq) error {
	c, cachedOK := a.mine[key]
	for range maxAttempts {
		if !cachedOK {
			v, index, ok, err := a.kv.Get(ctx, key)
			if err != nil {
				return fmt.Errorf("read %s: %w", key, err)
			}
			if !ok {
				delete(a.mine, key)
				return nil // the whole block is free already
			}
			c = cached{index: index}
			if err := json.Unmarshal(v, &c.doc); err != nil {
				return fmt.Errorf("decode %s: %w", key, err)
			}
		}
		next := c.doc
		for _, r := range rs {
			next = next.without(r.release)
		}
		if len(next.Allocs) == len(c.doc.Allocs) {
			if cachedOK {
				// The cache may predate an allocation made through
				// another allocator (a borrow, or this node's name used
				// elsewhere): only a fresh read can say "not allocated".
				cachedOK = false
				continue
			}
			return nil // none was allocated
		}
		var won bool
		var err error
		var recorded []netip.Addr
		if len(next.Allocs) == 0 {
			if won, err = a.kv.DeleteCAS(ctx, key, c.index); won {
				delete(a.mine, key)
			}
		} else {
			// Spares handed out in this block are recorded in the same write.
			b, perr := parseBlockKey(strings.TrimPrefix(key, poolPrefix(p)))
			if perr != nil {
				return perr
			}
			next, recorded, _ = a.withSpares(p, b, next, false)
			won, err = a.writeLocked(ctx, key, next, c.index)
		}
		if won {
			a.settleSpares(p, recorded, nil)
		}
		if err != nil {
			return fmt.Errorf("release in %s: %w", key, err)
		}
		if won {
			return nil
		}
		cachedOK = false // stale: read it again
	}
	return fmt.Errorf("release in %s: too much contention", key)
}

// writeLocked writes doc with check-and-set and, on success, caches it
// when this node holds the block.
func (a *Allocator) writeLocked(ctx context.Context, key string, doc BlockDoc, index uint64) (bool, error) {
	b, err := json.Marshal(doc)
	if err != nil {
		return false, err
	}
	won, newIndex, err := a.kv.CASIndex(ctx, key, b, index)
	if err != nil {
		return false, fmt.Errorf("write %s: %w", key, err)
	}
	if won {
		a.remember(key, doc, newIndex)
	}
	return won, nil
}

func (a *Allocator) remember(key string, doc BlockDoc, index uint64) {
	if doc.Node == a.node {
		a.mine[key] = cached{doc: doc, index: index}
	} else {
		delete(a.mine, key)
	}
}

func (a *Allocator) refreshLocked(ctx context.Context, key string) error {
	v, index, ok, err := a.kv.Get(ctx, key)
	if err != nil {
		return err
	}
	if !ok {
		delete(a.mine, key)
		return nil
	}
	var doc BlockDoc
	if err := json.Unmarshal(v, &doc); err != nil {
		return fmt.Errorf("decode %s: %w", key, err)
	}
	a.remember(key, doc, index)
	return nil
}

// loadLocked reads, once per pool, the blocks this node already holds
// (after a restart, say).
func (a *Allocator) loadLocked(ctx context.Context, p Pool) error {
	if a.loaded[p.ID()] {
		return nil
	}
	pairs, err := a.kv.ListPairs(ctx, poolPrefix(p))
	if err != nil {
		return fmt.Errorf("read pool %s: %w", p.ID(), err)
	}
	for _, kv := range pairs {
		doc, _, err := decode(p, kv)
		if err != nil {
			return err
		}
		a.remember(kv.Key, doc, kv.Index)
	}
	a.loaded[p.ID()] = true
	return nil
}

func decode(p Pool, kv Pair) (BlockDoc, netip.Prefix, error) {
	var doc BlockDoc
	if err := json.Unmarshal(kv.Value, &doc); err != nil {
		return doc, netip.Prefix{}, fmt.Errorf("decode %s: %w", kv.Key, err)
	}
	b, err := parseBlockKey(strings.TrimPrefix(kv.Key, poolPrefix(p)))
	return doc, b, err
}

// Allocations lists every allocation of a pool, by address.
func Allocations(ctx context.Context, kv KV, p Pool) (map[netip.Addr]Alloc, error) {
	pairs, err := kv.ListPairs(ctx, poolPrefix(p))
	if err != nil {
		return nil, err
	}
	out := map[netip.Addr]Alloc{}
	for _, pr := range pairs {
		doc, _, err := decode(p, pr)
		if err != nil {
			return nil, err
		}
		for s, al := range doc.Allocs {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("%s: address %q: %w", pr.Key, s, err)
			}
			out[a] = al
		}
	}
	return out, nil
}

// Shim returns this node's host shim address in p, allocating one (kind
// "shim") the first time; later calls, after restarts too, find it again.
func (a *Allocator) Shim(ctx context.Context, p Pool) (netip.Addr, error) {
	all, err := Allocations(ctx, a.kv, p)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("read pool %s: %w", p.ID(), err)
	}
	for addr, al := range all {
		if al.Kind == KindShim && al.Node == a.node {
			return addr, nil
		}
	}
	return a.Allocate(ctx, p, netip.Addr{}, KindShim)
}

// ReleaseShim gives back this node's shim address in p, if it has one.
func (a *Allocator) ReleaseShim(ctx context.Context, p Pool) error {
	all, err := Allocations(ctx, a.kv, p)
	if err != nil {
		return fmt.Errorf("read pool %s: %w", p.ID(), err)
	}
	for addr, al := range all {
		if al.Kind == KindShim && al.Node == a.node {
			if err := a.Release(ctx, p, addr); err != nil {
				return err
			}
		}
	}
	return nil
}
