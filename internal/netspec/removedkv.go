package netspec

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/underlay/underlay/internal/kvstore"
)

// NodeKV is Consul's KV store as an agent's parts use it: what Store and
// the cluster IPAM read and write, and deletes.
type NodeKV interface {
	KV
	Keys(ctx context.Context, prefix string) ([]string, error)
	KeysIndex(ctx context.Context, prefix string) ([]string, uint64, error)
	Wait(ctx context.Context, key string, index uint64) (p kvstore.Pair, ok bool, next uint64, err error)
	Delete(ctx context.Context, key string) error
}

// RemovedGuard is the KV store of the agent of one swarm node ID: every
// write through it — facts, network reports, range leases, cluster-IPAM
// addresses, inventory, doctor and task reports, deletes — is refused,
// with ErrNodeRemoved and nothing written, once `underlay node rm`
// recorded the removal of that ID (RemovedNodesKVPrefix). Reads pass
// through.
//
// An agent cut off from Consul while node rm removed its node learns it
// at its heartbeat (Store.PublishNode), up to a heartbeat after it came
// back; its other parts would write meanwhile, their records staying
// after node rm returned: the node looking alive on its networks, its
// old ranges and addresses held again. So each write carries, in the
// same Consul transaction, a check that the record is absent: no write
// lands once node rm wrote it, whatever the agent knew.
//
// A token that may not read the record (an agent policy from before
// it: see deploy/consul/agent.hcl) has the check refused: writes then go
// unchecked, as Store.Removal finds no record for it. A transaction with
// no room left for the check (kvstore.MaxTxnOps operations, or a body
// near Consul's limit) reads the record just before instead.
type RemovedGuard struct {
	NodeKV // reads, unchecked
	id     string
	// unreadable is set once the token was found unable to read the
	// record: writes go unchecked from then on.
	unreadable atomic.Bool
}

// GuardRemoved wraps kv for the agent of swarm node ID id.
func GuardRemoved(kv NodeKV, id string) *RemovedGuard {
	return &RemovedGuard{NodeKV: kv, id: id}
}

// Txn applies ops, refused with ErrNodeRemoved if they write and the
// node is removed.
func (g *RemovedGuard) Txn(ctx context.Context, ops []kvstore.Op) (kvstore.Result, error) {
	return g.txn(ctx, ops, func(ctx context.Context) (kvstore.Result, error) { return g.NodeKV.Txn(ctx, ops) })
}

// Put writes value, refused with ErrNodeRemoved if the node is removed.
func (g *RemovedGuard) Put(ctx context.Context, key string, value []byte) error {
	return g.do(ctx, kvstore.Op{Verb: kvstore.Set, Key: key, Value: value}, func(ctx context.Context) error { return g.NodeKV.Put(ctx, key, value) })
}

// Delete removes key, refused with ErrNodeRemoved if the node is removed.
func (g *RemovedGuard) Delete(ctx context.Context, key string) error {
	return g.do(ctx, kvstore.Op{Verb: kvstore.Delete, Key: key}, func(ctx context.Context) error { return g.NodeKV.Delete(ctx, key) })
}

// DeleteTree removes every key under prefix, refused with
// ErrNodeRemoved if the node is removed.
func (g *RemovedGuard) DeleteTree(ctx context.Context, prefix string) error {
	return g.do(ctx, kvstore.Op{Verb: kvstore.DeleteTree, Key: prefix}, func(ctx context.Context) error { return g.NodeKV.DeleteTree(ctx, prefix) })
}

// do is the write op, done unchecked by plain.
func (g *RemovedGuard) do(ctx context.Context, op kvstore.Op, plain func(context.Context) error) error {
	res, err := g.txn(ctx, []kvstore.Op{op}, func(ctx context.Context) (kvstore.Result, error) {
		return kvstore.Result{OK: true}, plain(ctx)
	})
	if err != nil {
		return err
	}
	if !res.OK { // only the check fails a lone write: the record came, and went
		return fmt.Errorf("%s %s: refused by a record of the removal of swarm node %s, gone since", op.Verb, op.Key, g.id)
	}
	return nil
}

// txn applies ops with the check of the record appended (the
// transaction's first key still names it in errors); plain applies
// them unchecked.
func (g *RemovedGuard) txn(ctx context.Context, ops []kvstore.Op, plain func(context.Context) (kvstore.Result, error)) (kvstore.Result, error) {
	if !writes(ops) || g.unreadable.Load() {
		return plain(ctx)
	}
	checked := append(ops[:len(ops):len(ops)], kvstore.Op{Verb: kvstore.CheckNotExists, Key: g.key()})
	if kvstore.CheckTxn(checked) != nil {
		if err := g.check(ctx); err != nil {
			return kvstore.Result{}, err
		}
		return plain(ctx)
	}
	res, err := g.NodeKV.Txn(ctx, checked)
	switch {
	case err != nil:
		// Refused outright: the token may be one that cannot read the
		// record, which refuses every check of it.
		if _, _, gerr := g.NodeKV.Get(ctx, g.key()); errors.Is(gerr, kvstore.ErrPermissionDenied) {
			g.unreadable.Store(true)
			return plain(ctx)
		}
		return kvstore.Result{}, err
	case !res.OK:
		// The record, or another check of ops.
		if err := g.check(ctx); err != nil {
			return kvstore.Result{}, err
		}
	}
	return res, nil
}

// check reads the record: ErrNodeRemoved when there is one.
func (g *RemovedGuard) check(ctx context.Context) error {
	p, found, err := g.NodeKV.Get(ctx, g.key())
	switch {
	case errors.Is(err, kvstore.ErrPermissionDenied):
		g.unreadable.Store(true)
		return nil
	case err != nil:
		return fmt.Errorf("read the record of the removal of node %s: %w", g.id, err)
	case !found:
		return nil
	}
	r := parseRemoval(g.id, p.Value)
	return fmt.Errorf("swarm node %s: %w at %s (%s): nothing is written under it; to bring the node back, join the swarm again (docker swarm leave, then docker swarm join), and the agent serves the new ID",
		g.id, ErrNodeRemoved, r.RemovedAt.Format(time.RFC3339), g.key())
}

func (g *RemovedGuard) key() string { return RemovedNodesKVPrefix + g.id }

// writes says ops write (or delete) a key.
func writes(ops []kvstore.Op) bool {
	for _, op := range ops {
		switch op.Verb {
		case kvstore.Get, kvstore.CheckIndex, kvstore.CheckNotExists:
		default:
			return true
		}
	}
	return false
}
