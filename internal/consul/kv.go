package consul

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/underlay/underlay/internal/backoff"
	"github.com/underlay/underlay/internal/ipam"
)

// KV adapts Consul's KV store to the small interfaces underlay's packages
// declare (netspec.KV).
type KV struct{ api *api.Client }

// NewKV wraps c.
func NewKV(c *api.Client) *KV { return &KV{api: c} }

// Get returns a key's value and modify index.
func (k *KV) Get(ctx context.Context, key string) ([]byte, uint64, bool, error) {
	p, _, err := k.api.KV().Get(key, (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	if err != nil {
		return nil, 0, false, fmt.Errorf("kv get %s: %w", key, err)
	}
	if p == nil {
		return nil, 0, false, nil
	}
	return p.Value, p.ModifyIndex, true, nil
}

// List returns every key under prefix.
func (k *KV) List(ctx context.Context, prefix string) (map[string][]byte, error) {
	pairs, _, err := k.api.KV().List(prefix, (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("kv list %s: %w", prefix, err)
	}
	out := make(map[string][]byte, len(pairs))
	for _, p := range pairs {
		out[p.Key] = p.Value
	}
	return out, nil
}

// CAS writes value if the key's modify index is index (0: only if absent).
func (k *KV) CAS(ctx context.Context, key string, value []byte, index uint64) (bool, error) {
	ok, _, err := k.api.KV().CAS(&api.KVPair{Key: key, Value: value, ModifyIndex: index}, (&api.WriteOptions{}).WithContext(ctx))
	if err != nil {
		return false, fmt.Errorf("kv cas %s: %w", key, err)
	}
	return ok, nil
}

// Put writes value unconditionally.
func (k *KV) Put(ctx context.Context, key string, value []byte) error {
	if _, err := k.api.KV().Put(&api.KVPair{Key: key, Value: value}, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("kv put %s: %w", key, err)
	}
	return nil
}

// Delete removes one key.
func (k *KV) Delete(ctx context.Context, key string) error {
	if _, err := k.api.KV().Delete(key, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("kv delete %s: %w", key, err)
	}
	return nil
}

// DeleteTree removes every key under prefix.
func (k *KV) DeleteTree(ctx context.Context, prefix string) error {
	if _, err := k.api.KV().DeleteTree(prefix, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("kv delete tree %s: %w", prefix, err)
	}
	return nil
}

// Watch sends on the returned channel whenever anything under prefix
// changes, using blocking queries; it retries with backoff while Consul is
// unreachable and stops when ctx ends. Sends never block: a change seen
// while the last one is unread is merged into it.
func (k *KV) Watch(ctx context.Context, prefix string) <-chan struct{} {
	out := make(chan struct{}, 1)
	go func() {
		var index uint64
		delays := backoff.Backoff{Min: 500 * time.Millisecond, Max: 30 * time.Second}
		for ctx.Err() == nil {
			q := (&api.QueryOptions{WaitIndex: index, WaitTime: 5 * time.Minute}).WithContext(ctx)
			_, meta, err := k.api.KV().Keys(prefix, "", q)
			if err != nil {
				backoff.Sleep(ctx, delays.Next())
				continue
			}
			delays.Reset()
			if meta.LastIndex < index {
				index = 0 // Consul's index went backwards (restarted): start over
				continue
			}
			if meta.LastIndex != index {
				index = meta.LastIndex
				select {
				case out <- struct{}{}:
				default:
				}
			}
		}
	}()
	return out
}

// WaitKey is a blocking read of one key: it returns once Consul's index
// for the key passes index (at once for index 0), or after a minute. The
// index it returns going backwards means Consul lost its state.
func (k *KV) WaitKey(ctx context.Context, key string, index uint64) ([]byte, uint64, bool, error) {
	p, meta, err := k.api.KV().Get(key, (&api.QueryOptions{WaitIndex: index, WaitTime: time.Minute}).WithContext(ctx))
	if err != nil {
		return nil, 0, false, fmt.Errorf("kv wait %s: %w", key, err)
	}
	if p == nil {
		return nil, meta.LastIndex, false, nil
	}
	return p.Value, meta.LastIndex, true, nil
}

// ListPairs returns every key under prefix with its value and modify index.
func (k *KV) ListPairs(ctx context.Context, prefix string) ([]ipam.Pair, error) {
	pairs, _, err := k.api.KV().List(prefix, (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("kv list %s: %w", prefix, err)
	}
	out := make([]ipam.Pair, len(pairs))
	for i, p := range pairs {
		out[i] = ipam.Pair{Key: p.Key, Value: p.Value, Index: p.ModifyIndex}
	}
	return out, nil
}

// CASIndex writes value if the key's modify index is index (0: only if
// absent), reading the new modify index in the same transaction.
func (k *KV) CASIndex(ctx context.Context, key string, value []byte, index uint64) (bool, uint64, error) {
	ops := api.TxnOps{
		{KV: &api.KVTxnOp{Verb: api.KVCAS, Key: key, Value: value, Index: index}},
		{KV: &api.KVTxnOp{Verb: api.KVGet, Key: key}},
	}
	ok, resp, _, err := k.api.Txn().Txn(ops, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return false, 0, fmt.Errorf("kv cas %s: %w", key, err)
	}
	if !ok {
		// Rolled back: the index check failed, unless Consul refused the
		// operations outright, which retrying cannot mend.
		if err := txnRefusal(resp); err != nil {
			return false, 0, fmt.Errorf("kv cas %s: %w", key, err)
		}
		return false, 0, nil
	}
	for _, r := range resp.Results {
		if r.KV != nil && r.KV.Key == key {
			return true, r.KV.ModifyIndex, nil
		}
	}
	return true, 0, nil
}

// DeleteCAS deletes key if its modify index is index.
func (k *KV) DeleteCAS(ctx context.Context, key string, index uint64) (bool, error) {
	ok, _, err := k.api.KV().DeleteCAS(&api.KVPair{Key: key, ModifyIndex: index}, (&api.WriteOptions{}).WithContext(ctx))
	if err != nil {
		return false, fmt.Errorf("kv delete-cas %s: %w", key, err)
	}
	return ok, nil
}

// txnRefusal returns the error of a rolled-back transaction that ACLs
// refused, nil for one whose index check failed.
func txnRefusal(resp *api.TxnResponse) error {
	if resp == nil {
		return nil
	}
	for _, e := range resp.Errors {
		if strings.Contains(e.What, "Permission denied") || strings.Contains(e.What, "ACL not found") {
			return errors.New(e.What)
		}
	}
	return nil
}
