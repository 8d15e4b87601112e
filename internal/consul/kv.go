package consul

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/underlay/underlay/internal/backoff"
	"github.com/underlay/underlay/internal/kvstore"
)

// KV adapts Consul's KV store to the small interfaces underlay's packages
// declare (ipam.KV, netspec.KV, inventory.KV) over kvstore's types: reads
// (Get, List, Keys), one atomic transaction of check-and-set operations
// (Txn), a blocking read (Wait) and a prefix watch, plus plain writes.
type KV struct {
	api *api.Client
	// wait is how long a blocking read asks Consul to wait: 0 is
	// kvstore.BlockingWait (set shorter by tests only).
	wait time.Duration
}

// NewKV wraps c.
func NewKV(c *api.Client) *KV { return &KV{api: c} }

// Get returns a key's pair, read consistently; ok is false when absent.
// A key the token may not read, present or not, is an error wrapping
// kvstore.ErrPermissionDenied.
func (k *KV) Get(ctx context.Context, key string) (kvstore.Pair, bool, error) {
	if err := checkPath(key); err != nil {
		return kvstore.Pair{}, false, fmt.Errorf("kv get %q: %w", key, err)
	}
	p, _, err := k.api.KV().Get(key, (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	if err != nil {
		return kvstore.Pair{}, false, fmt.Errorf("kv get %s: %w", key, readError(err))
	}
	if p == nil {
		return kvstore.Pair{}, false, nil
	}
	return kvstore.Pair{Key: p.Key, Value: p.Value, Index: p.ModifyIndex, CreateIndex: p.CreateIndex}, true, nil
}

// List returns every key under prefix with its value and modify index, in
// key order, read consistently. Consul leaves out, with no error, the keys
// the token may not read: a key missing is not proof it is gone (see
// kvstore.Absence).
func (k *KV) List(ctx context.Context, prefix string) ([]kvstore.Pair, error) {
	if err := checkPath(prefix); err != nil {
		return nil, fmt.Errorf("kv list %q: %w", prefix, err)
	}
	pairs, _, err := k.api.KV().List(prefix, (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("kv list %s: %w", prefix, readError(err))
	}
	out := make([]kvstore.Pair, len(pairs))
	for i, p := range pairs {
		out[i] = kvstore.Pair{Key: p.Key, Value: p.Value, Index: p.ModifyIndex, CreateIndex: p.CreateIndex}
	}
	return out, nil
}

// Keys returns every key under prefix, in key order, read consistently as
// List, with no value (GET /v1/kv/PREFIX?keys, no separator: Consul
// 1.8.7's agent/kvs_endpoint.go KVSGetKeys and agent/consul/
// kvs_endpoint.go ListKeys, which takes every entry state.KVSList finds
// under the plain string prefix, in key order, filtered by ACLs as
// List's are). An empty listing Consul answers with 404, which is no keys.
func (k *KV) Keys(ctx context.Context, prefix string) ([]string, error) {
	keys, _, err := k.KeysIndex(ctx, prefix)
	return keys, err
}

// KeysIndex is Keys with the index Consul answers the listing with
// (X-Consul-Index, on a 404 too): state.KVSList's, the highest modify
// index of the keys under prefix, those the token may not read included,
// or of a tombstone under it (a key deleted there, until Consul's
// tombstone GC reaps it), or with neither the KV store's index. Any
// write under prefix moves it; it goes backwards when Consul restarts
// empty or a snapshot is restored, and a reap may take it back to an
// index answered before, the key deleted gone from the listing.
func (k *KV) KeysIndex(ctx context.Context, prefix string) ([]string, uint64, error) {
	if err := checkPath(prefix); err != nil {
		return nil, 0, fmt.Errorf("kv keys %q: %w", prefix, err)
	}
	keys, meta, err := k.api.KV().Keys(prefix, "", (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	if err != nil {
		return nil, 0, fmt.Errorf("kv keys %s: %w", prefix, readError(err))
	}
	return keys, meta.LastIndex, nil
}

// Txn applies ops in one Consul transaction: all of them, or, when a check
// fails, none (Result.OK false, no error).
func (k *KV) Txn(ctx context.Context, ops []kvstore.Op) (kvstore.Result, error) {
	if len(ops) == 0 {
		return kvstore.Result{OK: true}, nil
	}
	// Consul answers a transaction too large with a bare 413.
	if err := kvstore.CheckTxn(ops); err != nil {
		return kvstore.Result{}, fmt.Errorf("kv txn on %s: %w", ops[0].Key, err)
	}
	txn := make(api.TxnOps, len(ops))
	for i, op := range ops {
		txn[i] = &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVOp(op.Verb), Key: op.Key, Value: op.Value, Index: op.Index}}
	}
	ok, resp, _, err := k.api.Txn().Txn(txn, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return kvstore.Result{}, fmt.Errorf("kv txn on %s: %w", ops[0].Key, err)
	}
	if !ok {
		// Rolled back: a check failed, unless Consul refused the operations
		// outright (ACLs), which retrying cannot mend.
		if err := txnRefusal(ops, resp); err != nil {
			return kvstore.Result{}, fmt.Errorf("kv txn on %s: %w", ops[0].Key, err)
		}
		return kvstore.Result{}, nil
	}
	return txnPairs(ops, resp.Results)
}

// txnPairs picks, out of the results of a transaction of ops that
// succeeded, the pair of each Set, CAS and Get. Consul answers one result
// for each set, cas, get and check-index, in operation order (a check's
// is the entry it checked), and none for the other verbs: results are
// taken by position, since a key checked and then written in one
// transaction has two.
func txnPairs(ops []kvstore.Op, results api.TxnResults) (kvstore.Result, error) {
	res := kvstore.Result{OK: true}
	next := 0
	for i, op := range ops {
		switch op.Verb {
		case kvstore.Set, kvstore.CAS, kvstore.Get, kvstore.CheckIndex:
		default:
			continue
		}
		if next >= len(results) || results[next].KV == nil || results[next].KV.Key != op.Key {
			return kvstore.Result{}, fmt.Errorf("kv txn on %s: Consul's %d results do not answer operation %d (%s %s)", ops[0].Key, len(results), i, op.Verb, op.Key)
		}
		r := results[next].KV
		next++
		if op.Verb != kvstore.CheckIndex {
			res.Pairs = append(res.Pairs, kvstore.Pair{Key: r.Key, Value: r.Value, Index: r.ModifyIndex, CreateIndex: r.CreateIndex})
		}
	}
	return res, nil
}

// Put writes value unconditionally.
func (k *KV) Put(ctx context.Context, key string, value []byte) error {
	if err := checkPath(key); err != nil {
		return fmt.Errorf("kv put %q: %w", key, err)
	}
	if err := kvstore.CheckValue(key, value); err != nil {
		return fmt.Errorf("kv put %s: %w", key, err)
	}
	if _, err := k.api.KV().Put(&api.KVPair{Key: key, Value: value}, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("kv put %s: %w", key, err)
	}
	return nil
}

// Delete removes one key.
func (k *KV) Delete(ctx context.Context, key string) error {
	if err := checkPath(key); err != nil {
		return fmt.Errorf("kv delete %q: %w", key, err)
	}
	if _, err := k.api.KV().Delete(key, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("kv delete %s: %w", key, err)
	}
	return nil
}

// DeleteTree removes every key under prefix.
func (k *KV) DeleteTree(ctx context.Context, prefix string) error {
	if err := checkPath(prefix); err != nil {
		return fmt.Errorf("kv delete tree %q: %w", prefix, err)
	}
	if _, err := k.api.KV().DeleteTree(prefix, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("kv delete tree %s: %w", prefix, err)
	}
	return nil
}

// Watch sends on the returned channel whenever anything under prefix
// changes, using blocking queries; it retries with backoff while Consul is
// unreachable and stops when ctx ends. Sends never block: a change seen
// while the last one is unread is merged into it. Once Consul answers
// again the watch reads at once, and a change since (Consul restarted
// empty included) is sent without waiting out a blocking query; its index
// is kept by Consul's rules (kvstore.BlockingIndex), and each query waits
// kvstore.BlockingWait at most, so that a restart between two queries is
// seen within it.
func (k *KV) Watch(ctx context.Context, prefix string) <-chan struct{} {
	out := make(chan struct{}, 1)
	go func() {
		var index kvstore.BlockingIndex
		delays := backoff.Backoff{Min: 500 * time.Millisecond, Max: 30 * time.Second}
		for ctx.Err() == nil {
			wait := k.blockingWait()
			rctx, cancel := kvstore.BlockingContext(ctx, wait)
			q := (&api.QueryOptions{WaitIndex: index.Next(), WaitTime: wait}).WithContext(rctx)
			_, meta, err := k.api.KV().Keys(prefix, "", q)
			cancel()
			if err != nil {
				index.Failed()
				backoff.Sleep(ctx, delays.Next())
				continue
			}
			delays.Reset()
			if index.Answered(meta.LastIndex) {
				select {
				case out <- struct{}{}:
				default:
				}
			}
		}
	}()
	return out
}

// Wait is a blocking read of one key: it returns once Consul's index for
// the key is greater than index (at once for index 0), or after
// kvstore.BlockingWait (a minute) with the index Consul has; a Consul
// agent that does not answer is given up after kvstore.BlockingContext. The index returned is what to wait on next;
// it going backwards means Consul lost its state (a dev agent restarted, a
// snapshot restored), which a wait on an index Consul has not reached
// learns only at that minute: keep the index with a kvstore.BlockingIndex.
// Consul's index for an absent key moves with its neighbours' writes, so
// wait on keys that exist.
func (k *KV) Wait(ctx context.Context, key string, index uint64) (kvstore.Pair, bool, uint64, error) {
	if err := checkPath(key); err != nil {
		return kvstore.Pair{}, false, 0, fmt.Errorf("kv wait %q: %w", key, err)
	}
	wait := k.blockingWait()
	ctx, cancel := kvstore.BlockingContext(ctx, wait)
	defer cancel()
	p, meta, err := k.api.KV().Get(key, (&api.QueryOptions{WaitIndex: index, WaitTime: wait}).WithContext(ctx))
	if err != nil {
		return kvstore.Pair{}, false, 0, fmt.Errorf("kv wait %s: %w", key, readError(err))
	}
	if p == nil {
		return kvstore.Pair{}, false, meta.LastIndex, nil
	}
	return kvstore.Pair{Key: p.Key, Value: p.Value, Index: p.ModifyIndex, CreateIndex: p.CreateIndex}, true, meta.LastIndex, nil
}

// blockingWait is how long a blocking read asks Consul to wait.
func (k *KV) blockingWait() time.Duration {
	if k.wait > 0 {
		return k.wait
	}
	return kvstore.BlockingWait
}

// readError is err of a read, wrapping kvstore.ErrPermissionDenied as
// well when Consul refused it (403): a token without read rights on the
// key. Listings it does not refuse but filters (see
// kvstore.ErrPermissionDenied).
func readError(err error) error {
	var se api.StatusError
	if errors.As(err, &se) && se.Code == http.StatusForbidden {
		return fmt.Errorf("%w: %w", kvstore.ErrPermissionDenied, err)
	}
	return err
}

// errRedirectedKey is a key that Consul's HTTP paths cannot name.
var errRedirectedKey = errors.New(`an empty, "." or ".." segment: Consul's HTTP API redirects its path to another key (a delete or write then misses it, or hits the other key)`)

// checkPath refuses a key whose URL path (/v1/kv/KEY) Consul's HTTP server
// cleans and redirects (kvstore.PathRedirected); '?', '#' and '%' are
// escaped by the client and need no check. Transactions name their keys
// in the body and take any key.
func checkPath(key string) error {
	if kvstore.PathRedirected(key) {
		return errRedirectedKey
	}
	return nil
}

// txnRefusal returns the error of a rolled-back transaction of ops that
// ACLs refused, naming each operation refused (Consul's message names no
// key), nil for one whose index check failed.
func txnRefusal(ops []kvstore.Op, resp *api.TxnResponse) error {
	if resp == nil {
		return nil
	}
	var errs []error
	for _, e := range resp.Errors {
		if !strings.Contains(e.What, "Permission denied") && !strings.Contains(e.What, "ACL not found") {
			continue
		}
		if e.OpIndex < 0 || e.OpIndex >= len(ops) {
			errs = append(errs, fmt.Errorf("operation %d: %s", e.OpIndex, e.What))
			continue
		}
		op := ops[e.OpIndex]
		errs = append(errs, fmt.Errorf("%s %s: %s", op.Verb, op.Key, e.What))
	}
	return errors.Join(errs...)
}
