package netspec

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
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
//   - with read rights on the record (agent.hcl's), a check in the same
//     transaction that the node's facts are unchanged (check-index, which
//     asks read rights only) since they were last found not node rm's
//     with no record, or written by this agent. node rm records the
//     removal in the transaction that takes the facts over
//     (decommission's takeOver), or, for a node with no facts, in one
//     that checks there are none: either way a write checked so fails
//     once the record is written. It is then retried if the facts are
//     still not node rm's (the agent's heartbeat rewrote them), and
//     refused with ErrNodeRemoved if the record is there. With no facts
//     to check (none, or node rm's hold and no record), the record is
//     read just before the write.
//   - none, for a token that may not read the record (an agent policy
//     from before it), as Store.Removal finds no record for it.
//
// A transaction with no room left for the check (kvstore.MaxTxnOps
// operations, or a body near Consul's limit) reads the record first
// instead: one already past its read as node rm records the removal
// lands.
type RemovedGuard struct {
	NodeKV // reads, unchecked
	id     string
	// check is how writes are checked (a guardCheck), guardUnknown until
	// the first write found out.
	check atomic.Int32
	// facts is the modify index of the node's facts that guardFacts'
	// writes check: last found not node rm's, with no record, or written
	// by this agent; 0 when they are to be read again.
	facts atomic.Uint64
}

// How RemovedGuard checks writes against the record of the removal.
const (
	guardUnknown int32 = iota // not found out yet
	guardTxn                  // in the write's transaction
	guardFacts                // the node's facts checked in the write's transaction
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
	if !res.OK { // only the guard's check fails a lone write
		return fmt.Errorf("%s %s: refused by the check against a removal of swarm node %s by node rm, though no record of one is found", op.Verb, op.Key, g.id)
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
	switch how {
	case guardNone:
		return plain(ctx)
	case guardFacts:
		return g.txnFacts(ctx, ops, plain)
	}
	// The check goes last: a transaction's errors name its first key.
	checked := append(ops[:len(ops):len(ops)], kvstore.Op{Verb: kvstore.CheckNotExists, Key: g.key()})
	if kvstore.CheckTxn(checked) != nil {
		return g.readThen(ctx, plain)
	}
	res, err := g.NodeKV.Txn(ctx, checked)
	if err == nil && !res.OK {
		// The record, or another check of ops.
		err = g.read(ctx)
	}
	return res, err
}

// maxFactsTries bounds txnFacts' tries: each lost one means the agent
// rewrote its facts meanwhile, a heartbeat apart.
const maxFactsTries = 5

// txnFacts applies ops with a check that the node's facts are unchanged
// since they were found not node rm's (see RemovedGuard), retried while
// they change and stay so; plain applies them unchecked, once the record
// was read, when there are no facts to check or no room for the check.
func (g *RemovedGuard) txnFacts(ctx context.Context, ops []kvstore.Op, plain func(context.Context) (kvstore.Result, error)) (kvstore.Result, error) {
	n := len(ops)
	check := func(index uint64) []kvstore.Op {
		c := kvstore.Op{Verb: kvstore.CheckIndex, Key: factsKey(g.id), Index: index}
		if writesKey(ops, c.Key) {
			// Before the ops: a write of the facts themselves (the
			// claim, the heartbeat) changes their index, which a check
			// after it would find changed.
			return append([]kvstore.Op{c}, ops...)
		}
		return append(ops[:n:n], c)
	}
	if kvstore.CheckTxn(check(1)) != nil {
		return g.readThen(ctx, plain)
	}
	index := g.facts.Load()
	for range maxFactsTries {
		if index == 0 {
			var err error
			if index, err = g.readFacts(ctx); err != nil {
				return kvstore.Result{}, err
			}
			if index == 0 { // no facts to check; the record was read
				return plain(ctx)
			}
		}
		res, err := g.NodeKV.Txn(ctx, check(index))
		if err != nil {
			return res, err
		}
		if res.OK {
			g.learn(ops, res)
			return res, nil
		}
		// The facts changed (node rm took them over, or the agent's
		// heartbeat rewrote them), or another check of ops failed.
		g.facts.CompareAndSwap(index, 0)
		now, err := g.readFacts(ctx)
		if err != nil || now == index {
			return res, err
		}
		index = now
	}
	return kvstore.Result{}, fmt.Errorf("write as swarm node %s: its facts (%s) changed at each of %d tries", g.id, factsKey(g.id), maxFactsTries)
}

// writesKey says one of ops writes or deletes key.
func writesKey(ops []kvstore.Op, key string) bool {
	for _, op := range ops {
		switch op.Verb {
		case kvstore.Set, kvstore.CAS, kvstore.Delete, kvstore.DeleteCAS:
			if op.Key == key {
				return true
			}
		case kvstore.DeleteTree:
			if strings.HasPrefix(key, op.Key) {
				return true
			}
		}
	}
	return false
}

// readFacts reads the node's facts, then the record: the facts' modify
// index, kept for the next writes, when they are not node rm's and there
// is no record (ErrNodeRemoved when there is); 0 when there are none,
// they are node rm's hold and there is no record, or the token may not
// read them. Facts that cannot be
// decoded are no hold of node rm's, which writes them whole.
func (g *RemovedGuard) readFacts(ctx context.Context) (uint64, error) {
	p, found, err := g.NodeKV.Get(ctx, factsKey(g.id))
	switch {
	case errors.Is(err, kvstore.ErrPermissionDenied):
		return 0, g.read(ctx) // a token that may not read them: the record alone
	case err != nil:
		return 0, fmt.Errorf("read the facts of node %s, to check its writes against their takeover by node rm: %w", g.id, err)
	}
	var f NodeFacts
	if found && json.Unmarshal(p.Value, &f) == nil && f.Holder.Instance == Remover {
		found = false
	}
	// Read after the facts: a record written since is written with
	// their takeover, which the write's check of them refuses.
	if err := g.read(ctx); err != nil || !found {
		return 0, err
	}
	g.facts.Store(p.Index)
	return p.Index, nil
}

// learn keeps the modify index of the facts a successful transaction of
// ops wrote (the agent's heartbeat), so that the next write checks them
// without reading them again; facts it deleted are read again.
func (g *RemovedGuard) learn(ops []kvstore.Op, res kvstore.Result) {
	key, pair := factsKey(g.id), 0
	for _, op := range ops {
		switch op.Verb {
		case kvstore.Set, kvstore.CAS:
			if op.Key == key && pair < len(res.Pairs) {
				g.facts.Store(res.Pairs[pair].Index)
			}
			pair++
		case kvstore.Get:
			pair++
		case kvstore.Delete, kvstore.DeleteCAS:
			if op.Key == key {
				g.facts.Store(0)
			}
		case kvstore.DeleteTree:
			if strings.HasPrefix(key, op.Key) {
				g.facts.Store(0)
			}
		}
	}
}

// readThen reads the record, then applies ops unchecked (plain) if
// there is none.
func (g *RemovedGuard) readThen(ctx context.Context, plain func(context.Context) (kvstore.Result, error)) (kvstore.Result, error) {
	if err := g.read(ctx); err != nil {
		return kvstore.Result{}, err
	}
	return plain(ctx)
}

// how finds out, at the first write, how the token lets writes be
// checked (see RemovedGuard): a transaction of the check of the record
// alone, then, if Consul refuses it, a read of the record. Consul out of reach decides
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
	g.check.Store(guardFacts)
	return guardFacts, nil
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
