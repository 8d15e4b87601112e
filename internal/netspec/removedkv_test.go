package netspec

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/underlay/underlay/internal/kvstore"
	"github.com/underlay/underlay/internal/kvstore/kvtest"
)

// TestRemovedGuard: the agent of a node `underlay node rm` removed writes
// nothing through RemovedGuard — puts, deletes, transactions, even one
// with no room left for the check — each refused with ErrNodeRemoved,
// naming the record; reads pass. Without the record every write lands,
// and a transaction whose own check fails answers so, no error. A token
// that may read the record but not write it (agent.hcl), whose checks of
// it Consul refuses, has it read before each write; one that may not
// read it writes unchecked, as before the record.
func TestRemovedGuard(t *testing.T) {
	ctx := context.Background()
	const id = "gone000000000000000000000"
	full := func(key string) []kvstore.Op {
		ops := make([]kvstore.Op, kvstore.MaxTxnOps)
		for i := range ops {
			ops[i] = kvstore.Op{Verb: kvstore.Set, Key: fmt.Sprintf("%s/%d", key, i), Value: []byte("x")}
		}
		return ops
	}
	writes := []struct {
		name  string
		write func(g *RemovedGuard) error
	}{
		{"put", func(g *RemovedGuard) error { return g.Put(ctx, "underlay/inventory/"+id, []byte("{}")) }},
		{"delete", func(g *RemovedGuard) error { return g.Delete(ctx, "underlay/kept") }},
		{"delete tree", func(g *RemovedGuard) error { return g.DeleteTree(ctx, "underlay/kept") }},
		{"txn", func(g *RemovedGuard) error {
			_, err := g.Txn(ctx, []kvstore.Op{{Verb: kvstore.CAS, Key: "underlay/lease", Value: []byte(id)}})
			return err
		}},
		{"full txn", func(g *RemovedGuard) error { _, err := g.Txn(ctx, full("underlay/many")); return err }},
	}
	record := func(kv *kvtest.KV) {
		if _, err := NewStore(kv).DeleteFacts(ctx, id, 0, NodeRemoval{ID: id, Node: "n1", RemovedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	for _, w := range writes {
		t.Run(w.name, func(t *testing.T) {
			kv := kvtest.New()
			kv.Put(ctx, "underlay/kept", []byte("1"))
			record(kv)
			before := kv.Index()
			err := w.write(GuardRemoved(kv, id))
			if !errors.Is(err, ErrNodeRemoved) || !strings.Contains(err.Error(), RemovedNodesKVPrefix+id) {
				t.Errorf("write of the removed node: %v, want %v naming %s", err, ErrNodeRemoved, RemovedNodesKVPrefix+id)
			}
			if kv.Index() != before {
				t.Errorf("the write of the removed node landed")
			}

			kv = kvtest.New()
			kv.Put(ctx, "underlay/kept", []byte("1"))
			before = kv.Index()
			if err := w.write(GuardRemoved(kv, id)); err != nil || kv.Index() == before {
				t.Errorf("write of a node not removed: %v, landed %v", err, kv.Index() != before)
			}

			// Consul 1.8 refuses a check of a key the token may not
			// write, as agent.hcl grants only read on the records
			// (kvtest's DenyRead refuses reads only): the record is
			// read before each write instead.
			refuseChecks := func(kv *kvtest.KV) {
				kv.Hook = func(call string, keys []string) error {
					if call == "txn" && strings.HasPrefix(keys[len(keys)-1], RemovedNodesKVPrefix) {
						return errors.New("Permission denied")
					}
					return nil
				}
			}
			kv = kvtest.New()
			kv.Put(ctx, "underlay/kept", []byte("1"))
			g := GuardRemoved(kv, id)
			refuseChecks(kv)
			before = kv.Index()
			if err := w.write(g); err != nil || kv.Index() == before {
				t.Errorf("write with a token that may read the record, not write it, no record: %v, landed %v", err, kv.Index() != before)
			}
			kv.Hook = nil
			record(kv)
			refuseChecks(kv)
			before = kv.Index()
			if err := w.write(g); !errors.Is(err, ErrNodeRemoved) || kv.Index() != before {
				t.Errorf("write with a token that may read the record, not write it, once recorded: %v, landed %v; want %v, nothing written", err, kv.Index() != before, ErrNodeRemoved)
			}

			// A token that may not read the record either writes
			// unchecked.
			kv = kvtest.New()
			kv.Put(ctx, "underlay/kept", []byte("1"))
			record(kv)
			kv.DenyRead(RemovedNodesKVPrefix)
			refuseChecks(kv)
			before = kv.Index()
			if err := w.write(GuardRemoved(kv, id)); err != nil || kv.Index() == before {
				t.Errorf("write with a token that cannot read the record: %v, landed %v; want it written, unchecked", err, kv.Index() != before)
			}
		})
	}

	kv := kvtest.New()
	record(kv)
	g := GuardRemoved(kv, id)
	if _, found, err := g.Get(ctx, RemovedNodesKVPrefix+id); !found || err != nil {
		t.Errorf("read through the guard: %v, %v", found, err)
	}
	if res, err := g.Txn(ctx, []kvstore.Op{{Verb: kvstore.Get, Key: RemovedNodesKVPrefix + id}}); !res.OK || err != nil {
		t.Errorf("transaction of reads through the guard: %+v, %v", res, err)
	}
	kv = kvtest.New()
	kv.Put(ctx, "underlay/lease", []byte("other"))
	if res, err := GuardRemoved(kv, id).Txn(ctx, []kvstore.Op{{Verb: kvstore.CAS, Key: "underlay/lease", Value: []byte(id)}}); res.OK || err != nil {
		t.Errorf("check-and-set of a key taken, no record: %+v, %v; want it failed, no error", res, err)
	}
}

// TestRemovals: node ls lists node rm's records oldest first, each by
// its key's identity; one that cannot be read still records a removal.
func TestRemovals(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	st := NewStore(kv)
	at := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	for _, r := range []NodeRemoval{{ID: "b", Node: "n2", RemovedAt: at, By: "ops@m1"}, {ID: "a", Node: "n1", RemovedAt: at.Add(time.Minute)}} {
		if _, err := st.DeleteFacts(ctx, r.ID, 0, r); err != nil {
			t.Fatal(err)
		}
	}
	kv.Put(ctx, RemovedNodesKVPrefix+"c", []byte("{"))
	got, err := st.Removals(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []NodeRemoval{{ID: "c"}, {ID: "b", Node: "n2", RemovedAt: at, By: "ops@m1"}, {ID: "a", Node: "n1", RemovedAt: at.Add(time.Minute)}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("removals (-want +got):\n%s", diff)
	}
}

// TestRemovedGuardRecordedMeanwhile: with the agent's rights on the
// records (read, not write: Consul refuses a check of one in a write's
// transaction), node rm taking the node's facts over and recording the
// removal just after the guard looked, and before the write reached
// Consul, has the write refused with ErrNodeRemoved, nothing written:
// every write checks, in its own transaction, that the facts it found
// the agent's are unchanged. The agent's own heartbeat refreshing its
// facts meanwhile refuses nothing.
func TestRemovedGuardRecordedMeanwhile(t *testing.T) {
	ctx := context.Background()
	const id = "gone000000000000000000000"
	writes := []struct {
		name, key string
		write     func(g *RemovedGuard) error
		// wrote says the write is done in kv.
		wrote func(kv *kvtest.KV) bool
	}{
		{"put", "underlay/inventory/" + id,
			func(g *RemovedGuard) error { return g.Put(ctx, "underlay/inventory/"+id, []byte("{}")) },
			func(kv *kvtest.KV) bool { _, found, _ := kv.Get(ctx, "underlay/inventory/"+id); return found }},
		{"delete", "underlay/kept",
			func(g *RemovedGuard) error { return g.Delete(ctx, "underlay/kept") },
			func(kv *kvtest.KV) bool { _, found, _ := kv.Get(ctx, "underlay/kept"); return !found }},
		{"delete tree", "underlay/kept",
			func(g *RemovedGuard) error { return g.DeleteTree(ctx, "underlay/kept") },
			func(kv *kvtest.KV) bool { _, found, _ := kv.Get(ctx, "underlay/kept"); return !found }},
		{"txn", "underlay/ipam/lease",
			func(g *RemovedGuard) error {
				_, err := g.Txn(ctx, []kvstore.Op{{Verb: kvstore.CAS, Key: "underlay/ipam/lease", Value: []byte(id)}})
				return err
			},
			func(kv *kvtest.KV) bool { _, found, _ := kv.Get(ctx, "underlay/ipam/lease"); return found }},
	}
	facts := func(holder string, at time.Time) []byte {
		b, err := json.Marshal(NodeFacts{ID: id, Node: "n1", Holder: Holder{Instance: holder}, UpdatedAt: at})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// racing makes kv refuse checks of the records, as Consul does for
	// agent.hcl's rights, and run meanwhile (with no such refusal) once,
	// as the write of key reaches the store, after the guard looked.
	racing := func(key string, meanwhile func(kv *kvtest.KV)) *kvtest.KV {
		kv := kvtest.New()
		kv.Put(ctx, "underlay/kept", []byte("1"))
		kv.Put(ctx, factsKey(id), facts("agent-1", time.Now()))
		done, other := false, false
		kv.Hook = func(call string, keys []string) error {
			switch {
			case other:
				return nil
			case call == "txn" && strings.HasPrefix(keys[len(keys)-1], RemovedNodesKVPrefix):
				return errors.New("Permission denied")
			case done || call == "get" || keys[0] != key:
				return nil
			}
			done, other = true, true
			meanwhile(kv)
			other = false
			return nil
		}
		return kv
	}
	for _, w := range writes {
		t.Run(w.name, func(t *testing.T) {
			kv := racing(w.key, func(kv *kvtest.KV) {
				// node rm's takeover of the facts, with its record, in
				// one transaction (decommission's takeOver).
				p, _, _ := kv.Get(ctx, factsKey(id))
				rec, _ := json.Marshal(NodeRemoval{ID: id, Node: "n1", RemovedAt: time.Now()})
				if res, err := kv.Txn(ctx, []kvstore.Op{
					{Verb: kvstore.CAS, Key: factsKey(id), Value: facts(Remover, time.Now()), Index: p.Index},
					{Verb: kvstore.Set, Key: RemovedNodesKVPrefix + id, Value: rec},
				}); err != nil || !res.OK {
					t.Errorf("node rm's takeover: %+v, %v", res, err)
				}
			})
			err := w.write(GuardRemoved(kv, id))
			if !errors.Is(err, ErrNodeRemoved) || w.wrote(kv) {
				t.Errorf("write as node rm recorded the removal: %v, landed %v; want %v, nothing written", err, w.wrote(kv), ErrNodeRemoved)
			}

			// A token that may not read the facts has the record read.
			kv = racing(w.key, func(*kvtest.KV) {})
			kv.DenyRead(NodesKVPrefix)
			if err := w.write(GuardRemoved(kv, id)); err != nil || !w.wrote(kv) {
				t.Errorf("write with a token that may not read the facts, no record: %v, landed %v; want it written", err, w.wrote(kv))
			}

			kv = racing(w.key, func(kv *kvtest.KV) { kv.Put(ctx, factsKey(id), facts("agent-1", time.Now().Add(time.Second))) })
			if err := w.write(GuardRemoved(kv, id)); err != nil || !w.wrote(kv) {
				t.Errorf("write as the agent's heartbeat refreshed its facts: %v, landed %v; want it written", err, w.wrote(kv))
			}
		})
	}
}

// TestRemovedGuardOwnFactsWrite: with the agent's read-only rights on the
// records, each guarded write also checked, after its ops, that the
// node's facts were unchanged; a write of the facts themselves (the
// claim, the heartbeat: a check-and-set of them) changed them first, so
// its check always failed and the agent's claim retried for good
// (TestIntegrationACLPolicies: "agent with its node's policy has not
// published"). Before: "the agent's check-and-set of its own facts: {OK:false …}".
func TestRemovedGuardOwnFactsWrite(t *testing.T) {
	ctx := context.Background()
	const id = "own0000000000000000000000"
	kv := kvtest.New()
	b, _ := json.Marshal(NodeFacts{ID: id, Node: "n1", Holder: Holder{Instance: "agent-1"}, UpdatedAt: time.Now()})
	kv.Put(ctx, factsKey(id), b)
	kv.Hook = func(call string, keys []string) error {
		if call == "txn" && strings.HasPrefix(keys[len(keys)-1], RemovedNodesKVPrefix) {
			return errors.New("Permission denied") // agent.hcl's rights
		}
		return nil
	}
	g := GuardRemoved(kv, id)
	for i := range 3 { // the claim, then heartbeats
		p, _, _ := kv.Get(ctx, factsKey(id))
		b, _ := json.Marshal(NodeFacts{ID: id, Node: "n1", Holder: Holder{Instance: "agent-1"}, UpdatedAt: time.Now().Add(time.Duration(i+1) * time.Second)})
		res, err := g.Txn(ctx, []kvstore.Op{{Verb: kvstore.CAS, Key: factsKey(id), Value: b, Index: p.Index}})
		if err != nil || !res.OK {
			t.Fatalf("the agent's check-and-set of its own facts, write %d: %+v, %v", i+1, res, err)
		}
	}
	// Its other writes still go through, checked against the facts it wrote.
	if err := g.Put(ctx, "underlay/inventory/"+id, []byte("{}")); err != nil {
		t.Errorf("a write after its own facts' write: %v", err)
	}
}
