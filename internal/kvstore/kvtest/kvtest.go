// Package kvtest is an in-memory key/value store with Consul KV's
// semantics, for unit tests only: every write takes the next index of the
// store and gives it to the keys it writes as their modify index, and to
// those it creates as their create index (a write of the value a key has
// writes nothing: the key keeps its index); check-and-set compares the
// modify index; a transaction applies all of its operations or none; a
// blocking read returns once the key's index is greater than the one
// waited on; a listing of keys answers Consul's index for its prefix,
// tombstones of deleted keys counted until reaped (KeysIndex); writes
// Consul refuses for
// their size are errors (kvstore.CheckTxn). Hooks
// let a test fail a call or slip a write in before one, as another node
// racing would. DenyRead plays a token whose read rights on a prefix are
// gone, as Consul's ACLs do. Integration tests use a real Consul.
//
// WaitedOn checks the indexes a blocking loop waits on, against a fake
// Consul of the test's. It imports only kvstore and testing, and does no
// I/O.
package kvtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/underlay/underlay/internal/kvstore"
)

// MaxOps is how many operations Consul accepts in one transaction.
const MaxOps = kvstore.MaxTxnOps

// KV is the in-memory store. The zero value is not usable; call New.
type KV struct {
	// Hook, when set, runs before every call with the call's name (get,
	// list, keys, txn, put, delete, delete-tree, wait) and the keys it touches,
	// without the store's lock: it may write to the store itself (a racing
	// writer), and an error it returns fails the call (Consul out of reach).
	Hook func(call string, keys []string) error

	mu sync.Mutex // guards following fields
	// index is the store's raft index: the index of the last write.
	index uint64
	keys  map[string]entry
	// changed is closed and replaced on every write, waking blocking reads.
	changed chan struct{}
	// epoch counts LoseState calls: a Wait blocked across one fails.
	epoch uint64
	// waitHook, when set, is called with mu held as a Wait starts to
	// block (kvtest's own tests): once it has run, a write wakes it.
	waitHook func()
	// denied are the prefixes under which reads are refused (DenyRead).
	denied []string
	// tombstones are the index of the delete of each key deleted, or of
	// the prefix of each tree deleted, until reaped (ReapTombstones): what
	// a listing's index counts of a key gone (see KeysIndex).
	tombstones map[string]uint64
}

// DenyRead refuses, from now on, reads of the keys under each of
// prefixes, and no others, as Consul 1.8 does for a token without read
// rights on them: listings (List, Keys) leave those keys out with no
// error, and a read of one (Get, Wait) fails with
// kvstore.ErrPermissionDenied, whether the key is there or not
// (agent/consul/kvs_endpoint.go: KVS.List and KVS.ListKeys filter through
// FilterDirEnt; KVS.Get checks KeyRead of the key asked for). Writes and
// transactions are not refused. No prefixes gives every read back.
func (kv *KV) DenyRead(prefixes ...string) {
	kv.mu.Lock()
	defer kv.mu.Unlock()
	kv.denied = slices.Clone(prefixes)
}

// readableLocked says the reads of key are not refused (see DenyRead).
func (kv *KV) readableLocked(key string) bool {
	return !slices.ContainsFunc(kv.denied, func(p string) bool { return strings.HasPrefix(key, p) })
}

type entry struct {
	value []byte
	// index is the key's modify index, create the index of the write
	// that created it (see kvstore.Pair.CreateIndex).
	index, create uint64
}

// pair is e as the key's pair.
func (e entry) pair(key string) kvstore.Pair {
	return kvstore.Pair{Key: key, Value: slices.Clone(e.value), Index: e.index, CreateIndex: e.create}
}

// New returns an empty store whose first write gets index 2 (as a fresh
// Consul, whose first raft entries are its own).
func New() *KV {
	return &KV{index: 1, keys: map[string]entry{}, tombstones: map[string]uint64{}, changed: make(chan struct{})}
}

func (kv *KV) hook(call string, keys ...string) error {
	if kv.Hook == nil {
		return nil
	}
	if err := kv.Hook(call, keys); err != nil {
		return fmt.Errorf("kvtest %s %s: %w", call, strings.Join(keys, ","), err)
	}
	return nil
}

// Get returns a key's pair; ok is false when it is absent.
func (kv *KV) Get(ctx context.Context, key string) (kvstore.Pair, bool, error) {
	if err := kv.hook("get", key); err != nil {
		return kvstore.Pair{}, false, err
	}
	kv.mu.Lock()
	defer kv.mu.Unlock()
	if !kv.readableLocked(key) {
		return kvstore.Pair{}, false, fmt.Errorf("kvtest get %s: %w", key, kvstore.ErrPermissionDenied)
	}
	e, ok := kv.keys[key]
	if !ok {
		return kvstore.Pair{}, false, nil
	}
	return e.pair(key), true, nil
}

// List returns every key starting with prefix, in key order, but those
// whose reads are refused (DenyRead).
func (kv *KV) List(ctx context.Context, prefix string) ([]kvstore.Pair, error) {
	if err := kv.hook("list", prefix); err != nil {
		return nil, err
	}
	kv.mu.Lock()
	defer kv.mu.Unlock()
	var out []kvstore.Pair
	for k, e := range kv.keys {
		if strings.HasPrefix(k, prefix) && kv.readableLocked(k) {
			out = append(out, e.pair(k))
		}
	}
	slices.SortFunc(out, func(a, b kvstore.Pair) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

// Keys returns every key starting with prefix, in key order, without
// values: as Consul 1.8.7's GET /v1/kv/PREFIX?keys with no separator
// (agent/kvs_endpoint.go KVSGetKeys; agent/consul/kvs_endpoint.go
// ListKeys takes every entry of state.KVSList, a plain string prefix
// match over its radix tree, in key order). Consul answers an empty
// listing under a prefix with 404, which its client reads as no keys.
func (kv *KV) Keys(ctx context.Context, prefix string) ([]string, error) {
	if err := kv.hook("keys", prefix); err != nil {
		return nil, err
	}
	kv.mu.Lock()
	defer kv.mu.Unlock()
	var out []string
	for k := range kv.keys {
		if strings.HasPrefix(k, prefix) && kv.readableLocked(k) {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out, nil
}

// KeysIndex is Keys with the index Consul 1.8.7 answers the listing with
// (X-Consul-Index; agent/consul/state/kvs.go kvsListTxn, taken by
// KVS.ListKeys before it filters by ACLs): the highest modify index of
// the keys under prefix, those whose reads are refused included, or of a
// tombstone under it (a key deleted, a tree deleted at a prefix under
// it: until reaped, see ReapTombstones); with neither, or for the empty
// prefix, the store's index; at least 1. Every write under prefix moves
// it, as does a delete there until its tombstone is reaped; a reap may
// take it back to an index answered before, the key gone.
func (kv *KV) KeysIndex(ctx context.Context, prefix string) ([]string, uint64, error) {
	if err := kv.hook("keys", prefix); err != nil {
		return nil, 0, err
	}
	kv.mu.Lock()
	defer kv.mu.Unlock()
	var out []string
	var index uint64
	for k, e := range kv.keys {
		if !strings.HasPrefix(k, prefix) {
			continue
		}
		index = max(index, e.index)
		if kv.readableLocked(k) {
			out = append(out, k)
		}
	}
	for k, i := range kv.tombstones {
		if strings.HasPrefix(k, prefix) {
			index = max(index, i)
		}
	}
	if index == 0 || prefix == "" {
		index = kv.index
	}
	slices.Sort(out)
	return out, max(index, 1), nil
}

// ReapTombstones forgets the tombstones of deletes at or below index, as
// Consul's tombstone GC does once they are older than its tombstone TTL
// (15 minutes by default; agent/consul/state/graveyard.go ReapTxn): a
// listing's index then no longer counts them (see KeysIndex).
func (kv *KV) ReapTombstones(index uint64) {
	kv.mu.Lock()
	defer kv.mu.Unlock()
	maps.DeleteFunc(kv.tombstones, func(_ string, i uint64) bool { return i <= index })
}

// Txn applies ops atomically: all of them, or (a check failed) none. A
// transaction Consul refuses outright (kvstore.CheckTxn: too many
// operations, too large) is an error.
func (kv *KV) Txn(ctx context.Context, ops []kvstore.Op) (kvstore.Result, error) {
	if err := kvstore.CheckTxn(ops); err != nil {
		return kvstore.Result{}, fmt.Errorf("kvtest txn: %w", err)
	}
	return kv.txn(ctx, ops)
}

// txn is Txn without the check of its size.
func (kv *KV) txn(ctx context.Context, ops []kvstore.Op) (kvstore.Result, error) {
	keys := make([]string, len(ops))
	for i, op := range ops {
		keys[i] = op.Key
	}
	if err := kv.hook("txn", keys...); err != nil {
		return kvstore.Result{}, err
	}
	kv.mu.Lock()
	defer kv.mu.Unlock()
	// Apply to a copy: a failed check leaves the store as it was.
	next := maps.Clone(kv.keys)
	stones := maps.Clone(kv.tombstones)
	index := kv.index + 1
	var res kvstore.Result
	wrote := false
	for _, op := range ops {
		e, exists := next[op.Key]
		switch op.Verb {
		case kvstore.Set, kvstore.CAS:
			if op.Verb == kvstore.CAS && ((op.Index == 0 && exists) || (op.Index != 0 && (!exists || e.index != op.Index))) {
				return kvstore.Result{}, nil
			}
			if exists && bytes.Equal(e.value, op.Value) {
				// As Consul's: a write of the value the key has writes
				// nothing, and the key keeps its modify index.
				res.Pairs = append(res.Pairs, kvstore.Pair{Key: op.Key, Index: e.index, CreateIndex: e.create})
				continue
			}
			// As Consul's: the create index is kept by an update, and new
			// for a key absent (never written, or deleted since).
			create := e.create
			if !exists {
				create = index
			}
			next[op.Key] = entry{value: slices.Clone(op.Value), index: index, create: create}
			res.Pairs = append(res.Pairs, kvstore.Pair{Key: op.Key, Index: index, CreateIndex: create})
			wrote = true
		case kvstore.Get:
			if !exists {
				return kvstore.Result{}, nil
			}
			res.Pairs = append(res.Pairs, e.pair(op.Key))
		case kvstore.Delete:
			// As Consul's, deletes of nothing change nothing, nor the
			// store's index (which blocking reads of absent keys report).
			if exists {
				delete(next, op.Key)
				stones[op.Key] = index
				wrote = true
			}
		case kvstore.DeleteCAS:
			if !exists {
				continue // as Consul's: an absent key is no failure
			}
			if e.index != op.Index {
				return kvstore.Result{}, nil
			}
			delete(next, op.Key)
			stones[op.Key] = index
			wrote = true
		case kvstore.DeleteTree:
			deleted := false
			for k := range next {
				if strings.HasPrefix(k, op.Key) {
					delete(next, k)
					deleted = true
				}
			}
			// As Consul's kvsDeleteTreeTxn: one tombstone, at the
			// tree's prefix, none for the whole store.
			if deleted && op.Key != "" {
				stones[op.Key] = index
			}
			wrote = wrote || deleted
		case kvstore.CheckIndex:
			if !exists || e.index != op.Index {
				return kvstore.Result{}, nil
			}
		case kvstore.CheckNotExists:
			if exists {
				return kvstore.Result{}, nil
			}
		default:
			return kvstore.Result{}, fmt.Errorf("kvtest txn: unknown verb %q", op.Verb)
		}
	}
	res.OK = true
	if wrote {
		kv.keys, kv.tombstones = next, stones
		kv.index = index
		close(kv.changed)
		kv.changed = make(chan struct{})
	}
	return res, nil
}

// Put writes value unconditionally. A value Consul refuses
// (kvstore.CheckValue) is an error; a PUT's body is the value, with no
// base64 as a transaction's, so values a transaction cannot carry pass.
func (kv *KV) Put(ctx context.Context, key string, value []byte) error {
	if err := kvstore.CheckValue(key, value); err != nil {
		return fmt.Errorf("kvtest put: %w", err)
	}
	_, err := kv.txn(ctx, []kvstore.Op{{Verb: kvstore.Set, Key: key, Value: value}})
	return err
}

// Delete removes one key.
func (kv *KV) Delete(ctx context.Context, key string) error {
	_, err := kv.Txn(ctx, []kvstore.Op{{Verb: kvstore.Delete, Key: key}})
	return err
}

// DeleteTree removes every key starting with prefix.
func (kv *KV) DeleteTree(ctx context.Context, prefix string) error {
	_, err := kv.Txn(ctx, []kvstore.Op{{Verb: kvstore.DeleteTree, Key: prefix}})
	return err
}

// Wait is a blocking read of key, as Consul's (agent/consul/rpc.go
// blockingQuery): it returns at once for index 0, else once the index it
// reports for the key is greater than index, or when ctx ends. That index
// is the key's modify index, or for an absent key the store's index, so a
// blocking read of an absent key wakes on every write. A wait on an index
// the store has not reached (it lost its state since) blocks as Consul's
// does, until a write takes the store past index: Consul returns then at
// its wait time, and kvtest has none, so a caller that would notice only
// then hangs here. A Wait under way (from its Hook on) when the store
// loses its state fails, as a blocking query to a Consul agent that
// stops does.
func (kv *KV) Wait(ctx context.Context, key string, index uint64) (kvstore.Pair, bool, uint64, error) {
	// The call is under way from its Hook on: a loss of state from then
	// fails it.
	kv.mu.Lock()
	epoch := kv.epoch
	kv.mu.Unlock()
	if err := kv.hook("wait", key); err != nil {
		return kvstore.Pair{}, false, 0, err
	}
	for {
		kv.mu.Lock()
		if kv.epoch != epoch {
			kv.mu.Unlock()
			return kvstore.Pair{}, false, 0, fmt.Errorf("kvtest wait %s: %w", key, ErrUnreachable)
		}
		if !kv.readableLocked(key) {
			kv.mu.Unlock()
			return kvstore.Pair{}, false, 0, fmt.Errorf("kvtest wait %s: %w", key, kvstore.ErrPermissionDenied)
		}
		e, ok := kv.keys[key]
		last := e.index
		if !ok {
			last = kv.index
		}
		// As Consul's: an index below 1 is reported as 1, so that a
		// caller waiting on it next blocks.
		last = max(last, 1)
		changed := kv.changed
		if kv.waitHook != nil && index != 0 && last <= index {
			kv.waitHook()
		}
		kv.mu.Unlock()
		if index == 0 || last > index {
			if !ok {
				return kvstore.Pair{}, false, last, nil
			}
			return e.pair(key), true, last, nil
		}
		select {
		case <-ctx.Done():
			return kvstore.Pair{}, false, 0, fmt.Errorf("kvtest wait %s: %w", key, ctx.Err())
		case <-changed:
		}
	}
}

// Index is the store's index: that of its last write.
func (kv *KV) Index() uint64 {
	kv.mu.Lock()
	defer kv.mu.Unlock()
	return kv.index
}

// LoseState empties the store and starts its index over, as a Consul dev
// agent that restarted: indexes go backwards, and the Waits blocked fail
// (their connection to the agent that stopped is lost).
func (kv *KV) LoseState() {
	kv.mu.Lock()
	defer kv.mu.Unlock()
	kv.keys = map[string]entry{}
	kv.tombstones = map[string]uint64{}
	kv.index = 1
	kv.epoch++
	close(kv.changed)
	kv.changed = make(chan struct{})
}

// ErrUnreachable is what a Hook may return to play Consul out of reach.
var ErrUnreachable = errors.New("connection refused (kvtest)")
