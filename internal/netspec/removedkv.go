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
// old ranges and addresses held again. So each write is checked against
// the record, by the first of these the token allows (found at the first
// write, and kept):
//
//   - a check that the record is absent in the same Consul transaction
//     as the write, so that nothing lands once node rm wrote it. Consul
//     1.8 asks write rights on the record for such a check
//     (agent/consul/kvs_endpoint.go kvsPreApply: only check-index and
//     check-session ask read), which agent.hcl does not grant: an agent
//     could then delete the records that refuse it.
//   - a read of the record just before the write (agent.hcl's read
//     rights): only a write already past its read as node rm records the
//     removal lands, and node rm records it only after the agent's facts
//     went unchanged for a heartbeat and a half at least.
//   - none, for a token that may not read the record (an agent policy
//     from before it), as Store.Removal finds no record for it.
//
// A transaction with no room left for the check (kvstore.MaxTxnOps
// operations, or a body near Consul's limit) reads the record first too.
type RemovedGuard struct {
	NodeKV // reads, unchecked
	id     string
	// check is how writes are checked (a guardCheck), guardUnknown until
	// the first write found out.
	check atomic.Int32
}

// How RemovedGuard checks writes against the record of the removal.
const (
	guardUnknown int32 = iota // not found out yet
	guardTxn                  // in the write's transaction
	guardRead                 // read just before the write
	guardNone                 // the token may not read the record
)

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

// txn applies ops checked against the record (see RemovedGuard); plain
// applies them unchecked.
func (g *RemovedGuard) txn(ctx context.Context, ops []kvstore.Op, plain func(context.Context) (kvstore.Result, error)) (kvstore.Result, error) {
	if !writes(ops) {
		return plain(ctx)
	}
	how, err := g.how(ctx)
	if err != nil {
		return kvstore.Result{}, err
	}
	// The check goes last: a transaction's errors name its first key.
	checked := append(ops[:len(ops):len(ops)], kvstore.Op{Verb: kvstore.CheckNotExists, Key: g.key()})
	switch {
	case how == guardNone:
		return plain(ctx)
	case how == guardRead || kvstore.CheckTxn(checked) != nil:
		if err := g.read(ctx); err != nil {
			return kvstore.Result{}, err
		}
		return plain(ctx)
	}
	res, err := g.NodeKV.Txn(ctx, checked)
	if err == nil && !res.OK {
		// The record, or another check of ops.
		err = g.read(ctx)
	}
	return res, err
}

// how finds out, at the first write, how the token lets writes be
// checked (see RemovedGuard): a transaction of the check alone, then a
// read of the record if Consul refuses it. Consul out of reach decides
// nothing: the next write asks again.
func (g *RemovedGuard) how(ctx context.Context) (int32, error) {
	if how := g.check.Load(); how != guardUnknown {
		return how, nil
	}
	res, err := g.NodeKV.Txn(ctx, []kvstore.Op{{Verb: kvstore.CheckNotExists, Key: g.key()}})
	if err == nil {
		g.check.Store(guardTxn)
		if !res.OK {
			return guardTxn, g.read(ctx)
		}
		return guardTxn, nil
	}
	_, _, gerr := g.NodeKV.Get(ctx, g.key())
	switch {
	case errors.Is(gerr, kvstore.ErrPermissionDenied):
		g.check.Store(guardNone)
		return guardNone, nil
	case gerr != nil:
		return guardUnknown, fmt.Errorf("check the record of the removal of node %s: %w", g.id, err)
	}
	g.check.Store(guardRead)
	return guardRead, nil
}

// read reads the record: ErrNodeRemoved when there is one. A token
// that may not read it writes unchecked from then on.
func (g *RemovedGuard) read(ctx context.Context) error {
	p, found, err := g.NodeKV.Get(ctx, g.key())
	switch {
	case errors.Is(err, kvstore.ErrPermissionDenied):
		g.check.Store(guardNone)
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
