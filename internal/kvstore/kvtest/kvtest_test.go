package kvtest_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/kvstore"
	"github.com/underlay/underlay/internal/kvstore/kvtest"
)

func TestTxnIsAtomicAndChecksIndexes(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	res, err := kv.Txn(ctx, []kvstore.Op{{Verb: kvstore.CAS, Key: "a", Value: []byte("1")}, {Verb: kvstore.Set, Key: "b", Value: []byte("2")}})
	if err != nil || !res.OK || len(res.Pairs) != 2 || res.Pairs[0].Index != res.Pairs[1].Index {
		t.Fatalf("create: %+v %v", res, err)
	}
	a := res.Pairs[0].Index
	// A create-only CAS on an existing key fails the whole transaction.
	res, err = kv.Txn(ctx, []kvstore.Op{{Verb: kvstore.Set, Key: "c", Value: []byte("3")}, {Verb: kvstore.CAS, Key: "a", Value: []byte("x")}})
	if err != nil || res.OK {
		t.Fatalf("create-only on an existing key: %+v %v", res, err)
	}
	if _, ok, _ := kv.Get(ctx, "c"); ok {
		t.Error("a failed transaction wrote c")
	}
	// CAS at the right index wins once; the same index again loses.
	for i, want := range []bool{true, false} {
		res, err := kv.Txn(ctx, []kvstore.Op{{Verb: kvstore.CAS, Key: "a", Value: []byte("2"), Index: a}})
		if err != nil || res.OK != want {
			t.Fatalf("cas %d: %+v %v, want ok=%v", i, res, err, want)
		}
	}
	// Checks and delete-tree.
	p, _, _ := kv.Get(ctx, "a")
	res, _ = kv.Txn(ctx, []kvstore.Op{{Verb: kvstore.CheckIndex, Key: "a", Index: p.Index}, {Verb: kvstore.CheckNotExists, Key: "zz"}, {Verb: kvstore.DeleteTree, Key: ""}})
	if !res.OK {
		t.Fatal("checks that hold failed")
	}
	if all, _ := kv.List(ctx, ""); len(all) != 0 {
		t.Errorf("delete-tree left %v", all)
	}
	if _, err := kv.Txn(ctx, make([]kvstore.Op, kvtest.MaxOps+1)); err == nil {
		t.Error("a transaction of 65 operations was accepted")
	}
}

func TestWaitBlocksUntilTheKeyChanges(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	kv.Put(ctx, "k", []byte("1"))
	p, ok, last, err := kv.Wait(ctx, "k", 0)
	if err != nil || !ok || last != p.Index {
		t.Fatalf("first read: %+v %v %d %v", p, ok, last, err)
	}
	// The write comes once the Wait blocks, so its wake-up is what is
	// tested, not a Wait that came late and found the write done.
	waiting := make(chan struct{}, 1)
	kvtest.SetWaitHook(kv, func() {
		select {
		case waiting <- struct{}{}:
		default:
		}
	})
	got := make(chan uint64)
	go func() {
		_, _, next, _ := kv.Wait(ctx, "k", last)
		got <- next
	}()
	select {
	case <-got:
		t.Fatal("returned before any write")
	case <-waiting:
	}
	kv.Put(ctx, "k", []byte("2"))
	select {
	case next := <-got:
		if next <= last {
			t.Errorf("index %d after a write, was %d", next, last)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait still blocked 5s after a write")
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if _, _, _, err := kv.Wait(cctx, "k", kv.Index()); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("wait past its context: %v", err)
	}
}

// TestWaitOnAnIndexAhead: as Consul's blocking query, a Wait returns once
// the index it reports is greater than the one waited on, not as soon as
// it differs: a wait on an index the store has not reached (it lost its
// state) blocks until writes take the store past it, as Consul's until
// its wait time. A Wait blocked when the store loses its state fails, as
// a query to an agent that stops; one on index 0 answers at once, with
// the new, lower index. Before, a wait on an index ahead returned at once.
func TestWaitOnAnIndexAhead(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	kv.Put(ctx, "k", []byte("1"))
	kv.Put(ctx, "k", []byte("2"))
	_, _, last, _ := kv.Wait(ctx, "k", 0)
	waiting := make(chan struct{}, 1)
	kvtest.SetWaitHook(kv, func() {
		select {
		case waiting <- struct{}{}:
		default:
		}
	})
	type answer struct {
		next uint64
		err  error
	}
	wait := func(index uint64) <-chan answer {
		got := make(chan answer, 1)
		go func() {
			_, _, next, err := kv.Wait(ctx, "k", index)
			got <- answer{next, err}
		}()
		return got
	}
	// Blocked across the loss of the store's state: fails.
	got := wait(last)
	<-waiting
	kv.LoseState()
	if a := <-got; !errors.Is(a.err, kvtest.ErrUnreachable) {
		t.Errorf("a Wait blocked as the store lost its state: index %d, %v; want %v", a.next, a.err, kvtest.ErrUnreachable)
	}
	if _, ok, next, err := kv.Wait(ctx, "k", 0); err != nil || ok || next >= last {
		t.Errorf("read after losing state: ok=%v index %d %v, want absent and an index below %d", ok, next, err, last)
	}
	// Waiting on the old index, ahead of the store's: blocks through a
	// write that leaves the store at or below it, returns after one past.
	got = wait(last)
	select {
	case a := <-got:
		t.Fatalf("a Wait on index %d, ahead of the store's %d, returned at once: %d, %v", last, kv.Index(), a.next, a.err)
	case <-waiting:
	}
	for kv.Index() < last {
		kv.Put(ctx, "other", []byte(strconv.FormatUint(kv.Index(), 10)))
		select {
		case a := <-got:
			t.Fatalf("a Wait on index %d returned at the store's index %d: %d, %v", last, kv.Index(), a.next, a.err)
		case <-waiting:
		}
	}
	kv.Put(ctx, "k", []byte("3"))
	if a := <-got; a.err != nil || a.next <= last {
		t.Errorf("a Wait on index %d after a write past it: %d, %v", last, a.next, a.err)
	}
}

func TestHookFailsCallsAndRaces(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	kv.Put(ctx, "k", []byte("1"))
	p, _, _ := kv.Get(ctx, "k")
	raced := false
	kv.Hook = func(call string, keys []string) error {
		if call == "txn" && !raced {
			raced = true
			return kv.Put(ctx, "k", []byte("other"))
		}
		if call == "get" {
			return kvtest.ErrUnreachable
		}
		return nil
	}
	res, err := kv.Txn(ctx, []kvstore.Op{{Verb: kvstore.CAS, Key: "k", Value: []byte("mine"), Index: p.Index}})
	if err != nil || res.OK {
		t.Errorf("CAS after a racing write: %+v %v, want a lost check", res, err)
	}
	if _, _, err := kv.Get(ctx, "k"); !errors.Is(err, kvtest.ErrUnreachable) {
		t.Errorf("get with the hook failing it: %v", err)
	}
}

// TestCreateIndexAsConsuls: a key's create index is set by the write that
// creates it, kept by every update (Set, CAS), given by every read (Get,
// List, Wait, a transaction's Get and writes), and new once the key is
// deleted and written again, as Consul's.
func TestCreateIndexAsConsuls(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	res, err := kv.Txn(ctx, []kvstore.Op{{Verb: kvstore.CAS, Key: "k", Value: []byte("1")}})
	if err != nil || !res.OK || res.Pairs[0].CreateIndex != res.Pairs[0].Index {
		t.Fatalf("create: %+v %v, want a create index that is the modify index", res, err)
	}
	created := res.Pairs[0].CreateIndex
	res, err = kv.Txn(ctx, []kvstore.Op{{Verb: kvstore.Set, Key: "k", Value: []byte("2")}, {Verb: kvstore.CAS, Key: "k", Value: []byte("3"), Index: kv.Index() + 1}})
	if err != nil || !res.OK || res.Pairs[0].CreateIndex != created || res.Pairs[1].CreateIndex != created {
		t.Fatalf("updates by set and CAS: %+v %v, want create index %d kept", res, err, created)
	}
	res, err = kv.Txn(ctx, []kvstore.Op{{Verb: kvstore.Get, Key: "k"}})
	if err != nil || !res.OK || res.Pairs[0].CreateIndex != created || res.Pairs[0].Index == created {
		t.Fatalf("transaction's get after updates: %+v %v, want create index %d and a later modify index", res, err, created)
	}
	check := func(when string, want uint64) {
		t.Helper()
		p, ok, err := kv.Get(ctx, "k")
		if err != nil || !ok || p.CreateIndex != want {
			t.Errorf("%s: get %+v %v %v, want create index %d", when, p, ok, err, want)
		}
		if l, err := kv.List(ctx, ""); err != nil || len(l) != 1 || l[0].CreateIndex != want {
			t.Errorf("%s: list %+v %v, want create index %d", when, l, err, want)
		}
		if p, ok, _, err := kv.Wait(ctx, "k", 0); err != nil || !ok || p.CreateIndex != want {
			t.Errorf("%s: wait %+v %v %v, want create index %d", when, p, ok, err, want)
		}
	}
	check("after updates", created)
	if err := kv.Delete(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if err := kv.Put(ctx, "k", []byte("again")); err != nil {
		t.Fatal(err)
	}
	check("deleted and written again", kv.Index())
	if kv.Index() <= created {
		t.Errorf("the key written again has create index %d, not above its first %d", kv.Index(), created)
	}
	// Deleted and written again in one transaction (a tree deleted with
	// the key, then the key): a new key too.
	before := kv.Index()
	res, err = kv.Txn(ctx, []kvstore.Op{{Verb: kvstore.DeleteTree, Key: ""}, {Verb: kvstore.Set, Key: "k", Value: []byte("new")}})
	if err != nil || !res.OK || res.Pairs[0].CreateIndex <= before {
		t.Errorf("deleted and written in one transaction: %+v %v, want a create index above %d", res, err, before)
	}
}

// TestUnchangedWriteKeepsIndex: a Set or CAS that writes a key's value
// again, unchanged, writes nothing, as Consul's (1.8 kvsSetTxn: "Skip
// further writing in the state store if the entry is not actually
// changed"): the key keeps its modify index, which the transaction's
// result gives, the store its index, and a blocking read is not woken. A
// write of the same value does not make others' check-and-set fail.
func TestUnchangedWriteKeepsIndex(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	if err := kv.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	p, _, _ := kv.Get(ctx, "k")
	for _, op := range []kvstore.Op{
		{Verb: kvstore.Set, Key: "k", Value: []byte("v")},
		{Verb: kvstore.CAS, Key: "k", Value: []byte("v"), Index: p.Index},
	} {
		res, err := kv.Txn(ctx, []kvstore.Op{op})
		if err != nil || !res.OK || len(res.Pairs) != 1 || res.Pairs[0].Index != p.Index || res.Pairs[0].CreateIndex != p.CreateIndex {
			t.Errorf("%s of the same value: %+v %v, want ok with modify index %d kept", op.Verb, res, err, p.Index)
		}
		if got, _, _ := kv.Get(ctx, "k"); got.Index != p.Index {
			t.Errorf("%s of the same value: modify index %d, want %d kept", op.Verb, got.Index, p.Index)
		}
		if kv.Index() != p.Index {
			t.Errorf("%s of the same value: store index %d, want %d kept", op.Verb, kv.Index(), p.Index)
		}
	}
	// A transaction that changes another key writes that one only.
	res, err := kv.Txn(ctx, []kvstore.Op{{Verb: kvstore.Set, Key: "k", Value: []byte("v")}, {Verb: kvstore.Set, Key: "o", Value: []byte("x")}})
	if err != nil || !res.OK || res.Pairs[0].Index != p.Index || res.Pairs[1].Index <= p.Index {
		t.Errorf("same value with another key's write: %+v %v, want k at %d, o later", res, err, p.Index)
	}
}

// TestDeleteCASOfAbsentKey: a delete-cas of a key that is absent succeeds,
// whatever its index, as Consul's (1.8 kvsDeleteCASTxn: "if !ok ||
// e.ModifyIndex != cidx { return entry == nil, nil }"): it fails only
// when the key exists at another modify index. A transaction that counts
// on it to tell a key deleted by someone else is not refused by Consul.
func TestDeleteCASOfAbsentKey(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	if err := kv.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	p, _, _ := kv.Get(ctx, "k")
	if err := kv.Delete(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	res, err := kv.Txn(ctx, []kvstore.Op{{Verb: kvstore.DeleteCAS, Key: "k", Index: p.Index}, {Verb: kvstore.Set, Key: "o", Value: []byte("x")}})
	if err != nil || !res.OK {
		t.Errorf("delete-cas of a deleted key: %+v %v, want ok", res, err)
	}
	if _, ok, _ := kv.Get(ctx, "o"); !ok {
		t.Error("the transaction's set was not written")
	}
	// A key that exists at another index still fails it.
	o, _, _ := kv.Get(ctx, "o")
	if res, err := kv.Txn(ctx, []kvstore.Op{{Verb: kvstore.DeleteCAS, Key: "o", Index: o.Index - 1}}); err != nil || res.OK {
		t.Errorf("delete-cas at a stale index: %+v %v, want a lost check", res, err)
	}
}

// TestDeleteOfNothingKeepsIndex: a delete of an absent key, a delete-cas
// of one, and a delete-tree of a prefix no key has change nothing, and
// the store's index stays, as Consul's (1.8 kvsDeleteTxn: "if entry ==
// nil { return nil }"; kvsDeleteTreeTxn updates the kvs index only "if
// deleted"): a blocking read of an absent key, whose index is the
// store's, is not woken by them.
func TestDeleteOfNothingKeepsIndex(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	if err := kv.Put(ctx, "a/k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	before := kv.Index()
	for _, op := range []kvstore.Op{
		{Verb: kvstore.Delete, Key: "absent"},
		{Verb: kvstore.DeleteCAS, Key: "absent", Index: 3},
		{Verb: kvstore.DeleteTree, Key: "b/"},
	} {
		res, err := kv.Txn(ctx, []kvstore.Op{op})
		if err != nil || !res.OK {
			t.Errorf("%s %s: %+v %v, want ok", op.Verb, op.Key, res, err)
		}
		if kv.Index() != before {
			t.Errorf("%s %s of nothing: store index %d, want %d kept", op.Verb, op.Key, kv.Index(), before)
		}
	}
	if _, _, last, err := kv.Wait(ctx, "absent", 0); err != nil || last != before {
		t.Errorf("blocking read of an absent key: index %d %v, want %d", last, err, before)
	}
}

// TestLimitsAsConsuls: kvtest refuses what Consul refuses with a 413 (a
// value above 512 KiB, a transaction whose body, values in base64, is
// above 512 KiB) and takes what it takes (a PUT of 512 KiB: its body is
// the value). Before, kvtest took writes of any size, which Consul
// refuses: a value that grows past the limit passed unit tests.
func TestLimitsAsConsuls(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	if err := kv.Put(ctx, "k", make([]byte, 512<<10)); err != nil {
		t.Errorf("put of 512 KiB: %v", err)
	}
	if err := kv.Put(ctx, "underlay/big", make([]byte, 512<<10+1)); err == nil || !strings.Contains(err.Error(), "underlay/big") {
		t.Errorf("put above 512 KiB: %v, want an error naming the key", err)
	}
	res, err := kv.Txn(ctx, []kvstore.Op{{Verb: kvstore.CAS, Key: "underlay/block", Value: make([]byte, 400<<10)}})
	if err == nil || res.OK || !strings.Contains(err.Error(), "underlay/block") {
		t.Errorf("txn of 400 KiB (533 KiB in base64): %+v %v, want an error naming the key", res, err)
	}
	if _, ok, _ := kv.Get(ctx, "underlay/block"); ok {
		t.Error("the refused transaction wrote its key")
	}
}

// TestKeysAsConsuls: Keys lists the keys starting with the prefix, as a
// plain string prefix (not a path: "a/b" holds "a/bc"), in key order,
// with no values, as Consul 1.8.7's ?keys with no separator does (a key
// deeper under a "/" is listed whole, not cut at the separator).
func TestKeysAsConsuls(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	for _, k := range []string{"a/b/2", "a/bc", "a/b/1/deep", "a/b", "b/x", "a/", "A/b"} {
		kv.Put(ctx, k, []byte("value of "+k))
	}
	var calls []string
	kv.Hook = func(call string, keys []string) error {
		calls = append(calls, call+" "+strings.Join(keys, ","))
		return nil
	}
	for _, tc := range []struct{ prefix, want string }{
		{"a/b", "a/b a/b/1/deep a/b/2 a/bc"},
		{"a/b/", "a/b/1/deep a/b/2"},
		{"a/", "a/ a/b a/b/1/deep a/b/2 a/bc"},
		{"", "A/b a/ a/b a/b/1/deep a/b/2 a/bc b/x"},
		{"c/", ""},
	} {
		got, err := kv.Keys(ctx, tc.prefix)
		if err != nil || strings.Join(got, " ") != tc.want {
			t.Errorf("Keys(%q) = %q, %v; want %q", tc.prefix, got, err, tc.want)
		}
		var listed []string
		l, _ := kv.List(ctx, tc.prefix)
		for _, p := range l {
			listed = append(listed, p.Key)
		}
		if strings.Join(listed, " ") != tc.want {
			t.Errorf("List(%q) keys %q, Keys %q: want the same keys", tc.prefix, listed, got)
		}
	}
	if calls[0] != "keys a/b" {
		t.Errorf("hook saw %q first, want the call named keys with its prefix", calls[0])
	}
	kv.Hook = func(string, []string) error { return kvtest.ErrUnreachable }
	if _, err := kv.Keys(ctx, "a/"); !errors.Is(err, kvtest.ErrUnreachable) {
		t.Errorf("Keys with the hook failing it: %v", err)
	}
}

// TestDenyReadAsConsulACLs: keys under a prefix whose reads are denied
// are left out of listings with no error, as Consul 1.8's FilterDirEnt
// does, and a read of one, present or not, is refused.
func TestDenyReadAsConsulACLs(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	for _, k := range []string{"a/1", "b/1", "b/2"} {
		if err := kv.Put(ctx, k, []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	kv.DenyRead("b/")
	pairs, err := kv.List(ctx, "")
	if err != nil || len(pairs) != 1 || pairs[0].Key != "a/1" {
		t.Errorf("List with b/ denied: %+v, %v; want only a/1, no error", pairs, err)
	}
	keys, err := kv.Keys(ctx, "b/")
	if err != nil || len(keys) != 0 {
		t.Errorf("Keys(b/) denied: %q, %v; want none, no error", keys, err)
	}
	for _, k := range []string{"b/1", "b/absent"} {
		if _, _, err := kv.Get(ctx, k); !errors.Is(err, kvstore.ErrPermissionDenied) {
			t.Errorf("Get(%s) denied: %v; want kvstore.ErrPermissionDenied", k, err)
		}
		if _, _, _, err := kv.Wait(ctx, k, 0); !errors.Is(err, kvstore.ErrPermissionDenied) {
			t.Errorf("Wait(%s) denied: %v; want kvstore.ErrPermissionDenied", k, err)
		}
	}
	if _, ok, err := kv.Get(ctx, "a/1"); !ok || err != nil {
		t.Errorf("Get(a/1), not denied: %v, %v", ok, err)
	}
	kv.DenyRead()
	if keys, err := kv.Keys(ctx, "b/"); err != nil || len(keys) != 2 {
		t.Errorf("Keys(b/) once allowed again: %q, %v; want both", keys, err)
	}
}

// TestKeysIndexAsConsuls: the index of a listing of keys is Consul
// 1.8.7's (agent/consul/state/kvs.go kvsListTxn): the highest modify
// index of the keys under the prefix, those the token may not read
// included (KVS.ListKeys filters after), or of a tombstone under it (a
// key deleted there, until its tombstone is reaped; a deleted tree leaves
// one tombstone, at its own prefix); when the prefix has neither, the
// store's index; never below 1. Its keys are Keys'.
func TestKeysIndexAsConsuls(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	put := func(k, v string) uint64 {
		t.Helper()
		if err := kv.Put(ctx, k, []byte(v)); err != nil {
			t.Fatal(err)
		}
		return kv.Index()
	}
	check := func(what, prefix string, wantKeys string, want uint64) {
		t.Helper()
		keys, index, err := kv.KeysIndex(ctx, prefix)
		if err != nil || strings.Join(keys, " ") != wantKeys || index != want {
			t.Errorf("%s: KeysIndex(%q) = %q, %d, %v; want %q, %d", what, prefix, keys, index, err, wantKeys, want)
		}
	}
	check("an empty store", "p/", "", 1)
	a1 := put("p/a", "1")
	put("p/b", "1")
	other := put("q/x", "1")
	check("two keys", "p/", "p/a p/b", a1+1)
	check("no key under the prefix", "r/", "", other)
	check("every key", "", "p/a p/b q/x", other)
	a2 := put("p/a", "2")
	check("a key rewritten", "p/", "p/a p/b", a2)
	put("p/a", "2")
	check("a key written its own value", "p/", "p/a p/b", a2)
	put("q/x", "2")
	check("a write elsewhere", "p/", "p/a p/b", a2)
	if err := kv.Delete(ctx, "p/b"); err != nil {
		t.Fatal(err)
	}
	del := kv.Index()
	check("a key deleted: its tombstone", "p/", "p/a", del)
	if err := kv.Delete(ctx, "p/absent"); err != nil {
		t.Fatal(err)
	}
	check("a delete of nothing", "p/", "p/a", del)
	kv.DenyRead("p/a")
	a3 := put("p/a", "3")
	check("a key the token may not read", "p/", "", a3)
	kv.DenyRead()
	kv.ReapTombstones(del)
	check("the tombstone reaped: back to the keys' own", "p/", "p/a", a3)
	kv.ReapTombstones(kv.Index())
	put("t/1/k", "1")
	if err := kv.DeleteTree(ctx, "t/"); err != nil {
		t.Fatal(err)
	}
	tree := kv.Index()
	check("a tree deleted, under its prefix", "t/", "", tree)
	put("u/k", "1")
	check("a tree deleted, listed below its prefix: no tombstone there, the store's index", "t/1/", "", kv.Index())
	kv.LoseState()
	check("state lost", "p/", "", 1)
	kv.Hook = func(string, []string) error { return kvtest.ErrUnreachable }
	if _, _, err := kv.KeysIndex(ctx, "p/"); !errors.Is(err, kvtest.ErrUnreachable) {
		t.Errorf("KeysIndex with the hook failing it: %v", err)
	}
}
