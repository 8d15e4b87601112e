package ipam

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"sync"
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
	now  func() time.Time

	mu sync.Mutex // guards following fields, and serialises allocations
	// mine caches the blocks this node holds, by KV key: their documents
	// change only through this node, except when another node borrows, and
	// then the stale index makes our next write fail and re-read.
	mine map[string]cached
	// loaded records pools whose blocks were read from KV once.
	loaded map[string]bool
}

type cached struct {
	doc   BlockDoc
	index uint64
}

// NewAllocator returns node's allocator over kv.
func NewAllocator(kv KV, node string) *Allocator {
	return &Allocator{kv: kv, node: node, now: time.Now, mine: map[string]cached{}, loaded: map[string]bool{}}
}

func poolPrefix(p Pool) string { return KVPrefix + p.Network + "/" + p.Family() + "/blocks/" }

func blockPath(p Pool, b netip.Prefix) string { return poolPrefix(p) + blockKey(b) }

// Allocate hands out want, or any free address when want is invalid.
func (a *Allocator) Allocate(ctx context.Context, p Pool, want netip.Addr, kind string) (netip.Addr, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.loadLocked(ctx, p); err != nil {
		return netip.Addr{}, err
	}
	al := Alloc{Node: a.node, At: a.now().UTC(), Kind: kind}
	if want.IsValid() {
		return want, a.allocateSpecificLocked(ctx, p, want, al)
	}
	for range maxAttempts {
		addr, done, err := a.fromMineLocked(ctx, p, al)
		if err != nil || done {
			return addr, err
		}
		pairs, err := a.kv.ListPairs(ctx, poolPrefix(p))
		if err != nil {
			return netip.Addr{}, fmt.Errorf("read pool %s: %w", p.ID(), err)
		}
		addr, done, err = a.claimLocked(ctx, p, pairs, al)
		if err != nil || done {
			return addr, err
		}
		addr, done, err = a.borrowLocked(ctx, p, pairs, al)
		if err != nil || done {
			return addr, err
		}
		if !a.anyFree(p, pairs) {
			return netip.Addr{}, fmt.Errorf("%w in %s (%s)", ErrPoolExhausted, p.ID(), p.allocRange())
		}
		// Something was free but others took it first: try again.
	}
	return netip.Addr{}, fmt.Errorf("allocate in %s: too much contention", p.ID())
}

// fromMineLocked allocates from a block this node holds.
func (a *Allocator) fromMineLocked(ctx context.Context, p Pool, al Alloc) (netip.Addr, bool, error) {
	prefix := poolPrefix(p)
	for key, c := range a.mine {
		if !strings.HasPrefix(key, prefix) {
			continue
		}
		b, err := parseBlockKey(strings.TrimPrefix(key, prefix))
		if err != nil {
			return netip.Addr{}, false, err
		}
		addr, ok := c.doc.free(p, b)
		if !ok {
			continue
		}
		won, err := a.writeLocked(ctx, key, c.doc.with(addr, al), c.index)
		if err != nil {
			return netip.Addr{}, false, err
		}
		if won {
			return addr, true, nil
		}
		// Someone borrowed from this block meanwhile: re-read it and retry.
		if err := a.refreshLocked(ctx, key); err != nil {
			return netip.Addr{}, false, err
		}
		return a.fromMineLocked(ctx, p, al)
	}
	return netip.Addr{}, false, nil
}

// claimLocked takes a block no node holds, with the allocation in the same write.
func (a *Allocator) claimLocked(ctx context.Context, p Pool, pairs []Pair, al Alloc) (netip.Addr, bool, error) {
	taken := make(map[string]bool, len(pairs))
	for _, kv := range pairs {
		taken[kv.Key] = true
	}
	for _, b := range p.Blocks() {
		key := blockPath(p, b)
		if taken[key] {
			continue
		}
		doc := BlockDoc{Node: a.node, Allocs: map[string]Alloc{}}
		addr, ok := doc.free(p, b)
		if !ok {
			continue // nothing usable in it: never worth claiming
		}
		won, err := a.writeLocked(ctx, key, doc.with(addr, al), 0)
		if err != nil {
			return netip.Addr{}, false, err
		}
		if won {
			return addr, true, nil
		}
	}
	return netip.Addr{}, false, nil
}

// borrowLocked allocates in another node's block with a free address.
func (a *Allocator) borrowLocked(ctx context.Context, p Pool, pairs []Pair, al Alloc) (netip.Addr, bool, error) {
	for _, kv := range pairs {
		doc, b, err := decode(p, kv)
		if err != nil {
			return netip.Addr{}, false, err
		}
		addr, ok := doc.free(p, b)
		if !ok {
			continue
		}
		won, err := a.writeLocked(ctx, kv.Key, doc.with(addr, al), kv.Index)
		if err != nil {
			return netip.Addr{}, false, err
		}
		if won {
			return addr, true, nil
		}
	}
	return netip.Addr{}, false, nil
}

func (a *Allocator) anyFree(p Pool, pairs []Pair) bool {
	held := map[string]bool{}
	for _, kv := range pairs {
		held[kv.Key] = true
		if doc, b, err := decode(p, kv); err == nil {
			if _, ok := doc.free(p, b); ok {
				return true
			}
		}
	}
	for _, b := range p.Blocks() {
		if !held[blockPath(p, b)] {
			if _, ok := (BlockDoc{}).free(p, b); ok {
				return true
			}
		}
	}
	return false
}

func (a *Allocator) allocateSpecificLocked(ctx context.Context, p Pool, want netip.Addr, al Alloc) error {
	if !p.usable(want) {
		return fmt.Errorf("address %s is not available in %s: outside %s, or the network, broadcast, gateway or an aux address", want, p.ID(), p.allocRange())
	}
	key := blockPath(p, p.Block(want))
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
// back, whoever holds it, when its last address is released.
func (a *Allocator) Release(ctx context.Context, p Pool, addr netip.Addr) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	key := blockPath(p, p.Block(addr))
	for range maxAttempts {
		v, index, ok, err := a.kv.Get(ctx, key)
		if err != nil {
			return fmt.Errorf("read block of %s: %w", addr, err)
		}
		if !ok {
			delete(a.mine, key)
			return nil
		}
		var doc BlockDoc
		if err := json.Unmarshal(v, &doc); err != nil {
			return fmt.Errorf("decode %s: %w", key, err)
		}
		if _, held := doc.Allocs[addr.String()]; !held {
			a.remember(key, doc, index)
			return nil
		}
		next := doc.without(addr)
		var won bool
		if len(next.Allocs) == 0 {
			won, err = a.kv.DeleteCAS(ctx, key, index)
			if won {
				delete(a.mine, key)
			}
		} else {
			won, err = a.writeLocked(ctx, key, next, index)
		}
		if err != nil {
			return fmt.Errorf("release %s: %w", addr, err)
		}
		if won {
			return nil
		}
	}
	return fmt.Errorf("release %s: too much contention", addr)
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
