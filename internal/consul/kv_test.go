package consul

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/underlay/underlay/internal/kvstore"
	"github.com/underlay/underlay/internal/kvstore/kvtest"
)

// TestTxnRefusal: a transaction ACLs refused is an error (the allocator
// used to take it for a lost check-and-set and retry until "too much
// contention"); a failed index check is not.
func TestTxnRefusal(t *testing.T) {
	for _, tc := range []struct {
		name string
		resp *api.TxnResponse
		want string
	}{
		{"no response", nil, ""},
		{"stale index", &api.TxnResponse{Errors: api.TxnErrors{{OpIndex: 0, What: `failed to set key "underlay/ipam/x", index is stale`}}}, ""},
		{"refused", &api.TxnResponse{Errors: api.TxnErrors{{OpIndex: 0, What: "Permission denied"}}}, "Permission denied"},
		{"unknown token", &api.TxnResponse{Errors: api.TxnErrors{{OpIndex: 1, What: "ACL not found"}}}, "ACL not found"},
	} {
		err := txnRefusal([]kvstore.Op{{Verb: kvstore.CAS, Key: "underlay/ipam/x"}, {Verb: kvstore.CheckIndex, Key: "underlay/spec"}}, tc.resp)
		if (tc.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: txnRefusal = %v, want %q", tc.name, err, tc.want)
		}
	}
}

// TestWatchAfterConsulRestartedEmpty: the Consul a prefix watch follows
// fails a blocking query and comes back empty, its index started again
// (a dev agent restarted). The watch reads at once and reports the change.
// Before, it waited again on its index from before the restart, which
// Consul answers only at the wait time, five minutes.
func TestWatchAfterConsulRestartedEmpty(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Consul's index: 5000, then, restarted empty, 3.
	var mu sync.Mutex
	index, queries := uint64(5000), 0
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/kv/", func(w http.ResponseWriter, r *http.Request) {
		wait, _ := strconv.ParseUint(r.URL.Query().Get("index"), 10, 64)
		mu.Lock()
		queries++
		if queries == 2 {
			index = 3 // the agent stops as it holds the query: it fails
			mu.Unlock()
			http.Error(w, "agent stopping", http.StatusInternalServerError)
			return
		}
		now := index
		mu.Unlock()
		if wait != 0 && now <= wait {
			// As Consul's blockingQuery: nothing past the index waited
			// on, so wait (here until the client gives up).
			<-r.Context().Done()
			return
		}
		w.Header().Set("X-Consul-Index", strconv.FormatUint(now, 10))
		w.Write([]byte(`[]`))
	})
	kv := kvServedBy(t, mux)
	changes := kv.Watch(ctx, "underlay/networks/")
	for i, what := range []string{"the first read", "the read after the restart"} {
		select {
		case <-changes:
		case <-ctx.Done():
			t.Fatalf("no change reported for %s (change %d)", what, i+1)
		}
	}
}

// TestKVCarriesCreateIndex: every pair the adapter reads (Get, List, Wait,
// a transaction's results) carries Consul's CreateIndex with its
// ModifyIndex: the allocator tells a spec made again (a later
// CreateIndex) from one rewritten (kvstore.Pair.CreateIndex).
func TestKVCarriesCreateIndex(t *testing.T) {
	const entry = `{"Key":"k","Value":"dg==","CreateIndex":5,"ModifyIndex":9}`
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/kv/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Consul-Index", "9")
		w.Write([]byte("[" + entry + "]"))
	})
	mux.HandleFunc("/v1/txn", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"Results":[{"KV":` + entry + `}],"Errors":null}`))
	})
	kv := kvServedBy(t, mux)
	ctx := context.Background()
	want := kvstore.Pair{Key: "k", Value: []byte("v"), Index: 9, CreateIndex: 5}
	got := map[string]kvstore.Pair{}
	p, _, err := kv.Get(ctx, "k")
	got["get"] = p
	l, lerr := kv.List(ctx, "k")
	if len(l) == 1 {
		got["list"] = l[0]
	}
	p, _, _, werr := kv.Wait(ctx, "k", 1)
	got["wait"] = p
	res, terr := kv.Txn(ctx, []kvstore.Op{{Verb: kvstore.Get, Key: "k"}})
	if len(res.Pairs) == 1 {
		got["txn"] = res.Pairs[0]
	}
	if err := errors.Join(err, lerr, werr, terr); err != nil {
		t.Fatal(err)
	}
	for _, call := range []string{"get", "list", "wait", "txn"} {
		if p := got[call]; p.Key != want.Key || string(p.Value) != string(want.Value) || p.Index != want.Index || p.CreateIndex != want.CreateIndex {
			t.Errorf("%s: %+v, want %+v", call, p, want)
		}
	}
}

// TestTxnResultsByPosition: Consul's transaction answers one result for
// each set, cas, get and check-index, in operation order (1.8
// state/txn.go txnKVS: a check-index returns the entry it checked, its
// value blanked); the adapter gives a pair for each Set, CAS and Get. A
// check of a key that the transaction then writes answers that key
// twice: the write's pair must be the write's, with its new modify
// index, not the check's. Before, the adapter took a key's first unused
// result, the check's, and gave the write the index it was checked at.
func TestTxnResultsByPosition(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/txn", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"Results":[` +
			`{"KV":{"Key":"spec","CreateIndex":3,"ModifyIndex":5}},` +
			`{"KV":{"Key":"k","CreateIndex":4,"ModifyIndex":7}},` +
			`{"KV":{"Key":"k","CreateIndex":4,"ModifyIndex":12}},` +
			`{"KV":{"Key":"k","Value":"dg==","CreateIndex":4,"ModifyIndex":12}}` +
			`],"Errors":null}`))
	})
	kv := kvServedBy(t, mux)
	res, err := kv.Txn(context.Background(), []kvstore.Op{
		{Verb: kvstore.CheckIndex, Key: "spec", Index: 5},
		{Verb: kvstore.CheckNotExists, Key: "other"},
		{Verb: kvstore.CheckIndex, Key: "k", Index: 7},
		{Verb: kvstore.Delete, Key: "gone"},
		{Verb: kvstore.Set, Key: "k", Value: []byte("v")},
		{Verb: kvstore.Get, Key: "k"},
	})
	if err != nil || !res.OK {
		t.Fatalf("txn: %+v %v", res, err)
	}
	want := []kvstore.Pair{{Key: "k", Index: 12, CreateIndex: 4}, {Key: "k", Value: []byte("v"), Index: 12, CreateIndex: 4}}
	if len(res.Pairs) != len(want) {
		t.Fatalf("pairs %+v, want %+v", res.Pairs, want)
	}
	for i, p := range res.Pairs {
		if p.Key != want[i].Key || string(p.Value) != string(want[i].Value) || p.Index != want[i].Index || p.CreateIndex != want[i].CreateIndex {
			t.Errorf("pair %d: %+v, want %+v", i, p, want[i])
		}
	}
}

// TestTxnSizeAsSent: kvstore.TxnSize is the size of the body the API
// client sends, so that the adapter refuses just what Consul would.
func TestTxnSizeAsSent(t *testing.T) {
	got := make(chan int, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/txn", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- len(b)
		w.Write([]byte(`{"Results":[],"Errors":null}`))
	})
	kv := kvServedBy(t, mux)
	ops := []kvstore.Op{
		{Verb: kvstore.Delete, Key: `a "quoted" <key> é`},
		{Verb: kvstore.DeleteCAS, Key: "b", Index: 1234567},
		{Verb: kvstore.CheckNotExists, Key: "c", Value: []byte{}},
		{Verb: kvstore.DeleteTree, Key: "d/", Value: []byte("12345")},
	}
	if _, err := kv.Txn(context.Background(), ops); err != nil {
		t.Fatal(err)
	}
	if n, want := <-got, kvstore.TxnSize(ops); n != want {
		t.Errorf("body of %d bytes sent, kvstore.TxnSize says %d", n, want)
	}
}

// TestKVRefusesTooLarge: a write Consul would answer 413 (a value above
// kv_max_value_size, a transaction above txn_max_req_len or of more than
// 64 operations) is refused before it is sent, with an error naming the
// key. Before, Consul's raw "Unexpected response code: 413 (Request body
// too large...)" came back, named by the transaction's first key only.
func TestKVRefusesTooLarge(t *testing.T) {
	sent := 0
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		sent++
		w.WriteHeader(http.StatusRequestEntityTooLarge)
		w.Write([]byte("Request body too large"))
	})
	kv := kvServedBy(t, mux)
	ctx := context.Background()
	big := make([]byte, 400<<10)
	_, terr := kv.Txn(ctx, []kvstore.Op{{Verb: kvstore.CheckIndex, Key: "spec", Index: 3}, {Verb: kvstore.CAS, Key: "underlay/block", Value: big}})
	perr := kv.Put(ctx, "underlay/report", make([]byte, 512<<10+1))
	for what, err := range map[string]error{"txn": terr, "put": perr} {
		key := map[string]string{"txn": "underlay/block", "put": "underlay/report"}[what]
		if err == nil || !strings.Contains(err.Error(), key) || !strings.Contains(err.Error(), "Consul's limit") {
			t.Errorf("%s: %v, want an error naming %s and Consul's limit", what, err, key)
		}
	}
	if sent != 0 {
		t.Errorf("%d requests sent to Consul, want none", sent)
	}
}

// TestTxnRefusalNamesEachOperation: Consul's refusal of a transaction
// lists each operation refused by its index, with a message that names
// no key ("Permission denied"); the adapter's error names each refused
// operation's verb and key. Before, it gave the first refusal alone,
// under the transaction's first key: an ACL policy denying the read of a
// network's spec read as one denying the write of the pool's block.
func TestTxnRefusalNamesEachOperation(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/txn", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusConflict)
		w.Write([]byte(`{"Results":null,"Errors":[{"OpIndex":1,"What":"Permission denied"},{"OpIndex":2,"What":"ACL not found"}]}`))
	})
	kv := kvServedBy(t, mux)
	_, err := kv.Txn(context.Background(), []kvstore.Op{
		{Verb: kvstore.CAS, Key: "underlay/block", Value: []byte("v"), Index: 4},
		{Verb: kvstore.CheckIndex, Key: "underlay/spec", Index: 3},
		{Verb: kvstore.Get, Key: "underlay/other"},
	})
	for _, want := range []string{"check-index underlay/spec: Permission denied", "get underlay/other: ACL not found"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("txn refused: %v, want %q in it", err, want)
		}
	}
}

// TestKVKeys: Keys asks Consul for the keys under a prefix alone, with
// ?keys and no separator, read consistently as List, and returns them as
// Consul lists them; an empty listing (Consul's 404) is no keys and no
// error; a key Consul's paths cannot name is refused unsent; an error
// names the prefix. KeysIndex answers the same keys with the listing's
// X-Consul-Index, a 404's too.
func TestKVKeys(t *testing.T) {
	var queries []string
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/kv/", func(w http.ResponseWriter, r *http.Request) {
		queries = append(queries, r.Method+" "+r.URL.Path+"?"+r.URL.RawQuery)
		switch strings.TrimPrefix(r.URL.Path, "/v1/kv/") {
		case "p/":
			w.Header().Set("X-Consul-Index", "9")
			w.Write([]byte(`["p/a","p/b/c","p/bc"]`))
		case "empty/":
			w.Header().Set("X-Consul-Index", "7")
			w.WriteHeader(http.StatusNotFound)
		default:
			w.WriteHeader(http.StatusForbidden)
			w.Write([]byte("Permission denied"))
		}
	})
	kv := kvServedBy(t, mux)
	ctx := context.Background()
	if got, index, err := kv.KeysIndex(ctx, "p/"); err != nil || strings.Join(got, " ") != "p/a p/b/c p/bc" || index != 9 {
		t.Errorf("KeysIndex(p/) = %q, %d, %v; want Consul's three keys at its X-Consul-Index, 9", got, index, err)
	}
	if got, index, err := kv.KeysIndex(ctx, "empty/"); err != nil || len(got) != 0 || index != 7 {
		t.Errorf("KeysIndex of an empty prefix = %q, %d, %v; want no keys at the 404's X-Consul-Index, 7", got, index, err)
	}
	queries = nil
	got, err := kv.Keys(ctx, "p/")
	if err != nil || strings.Join(got, " ") != "p/a p/b/c p/bc" {
		t.Errorf("Keys(p/) = %q, %v; want Consul's three keys", got, err)
	}
	if len(queries) != 1 || queries[0] != "GET /v1/kv/p/?consistent=&keys=" {
		t.Errorf("requests %q, want one GET of p/ with ?consistent and ?keys, no separator", queries)
	}
	if got, err := kv.Keys(ctx, "empty/"); err != nil || len(got) != 0 {
		t.Errorf("Keys of an empty prefix: %q, %v; want none, no error", got, err)
	}
	if _, err := kv.Keys(ctx, "denied/"); err == nil || !strings.Contains(err.Error(), "kv keys denied/") || !strings.Contains(err.Error(), "Permission denied") {
		t.Errorf("Keys refused by ACLs: %v; want an error naming the prefix and Consul's refusal", err)
	}
	queries = nil
	if _, err := kv.Keys(ctx, "p/../x/"); err == nil || !strings.Contains(err.Error(), "p/../x/") || len(queries) > 0 {
		t.Errorf("Keys of a redirected prefix: %v, requests %q; want an error naming it, nothing sent", err, queries)
	}
}

// TestKVReadRefusedIsPermissionDenied: Consul 1.8 answers a read of one
// key the token may not read with 403 (KVS.Get's acl.ErrPermissionDenied),
// present or not; the adapter's error wraps kvstore.ErrPermissionDenied,
// so that a caller confirming a key gone (kvstore.Absence) tells it from
// "absent". A 404 is no key, no error; another failure is no refusal.
func TestKVReadRefusedIsPermissionDenied(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/kv/", func(w http.ResponseWriter, r *http.Request) {
		switch strings.TrimPrefix(r.URL.Path, "/v1/kv/") {
		case "absent":
			w.Header().Set("X-Consul-Index", "9")
			w.WriteHeader(http.StatusNotFound)
		case "broken":
			w.WriteHeader(http.StatusInternalServerError)
			w.Write([]byte("rpc error"))
		default:
			w.WriteHeader(http.StatusForbidden)
			w.Write([]byte("Permission denied"))
		}
	})
	kv := kvServedBy(t, mux)
	ctx := context.Background()
	if _, ok, err := kv.Get(ctx, "absent"); ok || err != nil {
		t.Errorf("Get of an absent key: %v, %v; want absent, no error", ok, err)
	}
	_, _, err := kv.Get(ctx, "denied")
	if !errors.Is(err, kvstore.ErrPermissionDenied) || !strings.Contains(err.Error(), "kv get denied") {
		t.Errorf("Get refused: %v; want kvstore.ErrPermissionDenied, naming the key", err)
	}
	_, _, _, err = kv.Wait(ctx, "denied", 0)
	if !errors.Is(err, kvstore.ErrPermissionDenied) {
		t.Errorf("Wait refused: %v; want kvstore.ErrPermissionDenied", err)
	}
	if _, err := kv.List(ctx, "denied"); !errors.Is(err, kvstore.ErrPermissionDenied) {
		t.Errorf("List refused (acl_enable_key_list_policy): %v; want kvstore.ErrPermissionDenied", err)
	}
	if _, _, err := kv.Get(ctx, "broken"); err == nil || errors.Is(err, kvstore.ErrPermissionDenied) {
		t.Errorf("Get failing with 500: %v; want an error, not a refusal", err)
	}
}

// TestWatchIndexWentBackwards: Consul restarted empty between two blocking
// queries of a prefix watch, so the second, waiting on the index from
// before the restart, is answered only at the wait's end, with a lower
// index. The next query restarts the loop with index 0, which Consul
// answers at once, as its blocking-query rules say, and then waits on
// what that read answered. Before, it waited on index 1.
func TestWatchIndexWentBackwards(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var mu sync.Mutex
	now := uint64(5000)
	asked := make(chan uint64, 8) // the index each query waited on, as it came
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/kv/", func(w http.ResponseWriter, r *http.Request) {
		wait, _ := strconv.ParseUint(r.URL.Query().Get("index"), 10, 64)
		asked <- wait
		mu.Lock()
		index := now
		if wait == 5000 {
			// Restarted empty since the first query: Consul's blockingQuery
			// holds this one to its wait time (not waited out here), then
			// answers with its new index, an empty KV store's 1.
			now, index = 1, 1
		}
		mu.Unlock()
		if wait != 0 && wait != 5000 && index <= wait {
			<-r.Context().Done() // nothing past the index waited on
			return
		}
		w.Header().Set("X-Consul-Index", strconv.FormatUint(index, 10))
		w.Write([]byte(`[]`))
	})
	kv := kvServedBy(t, mux)
	kv.Watch(ctx, "underlay/networks/")
	kvtest.WaitedOn(ctx, t, asked, "the watch's queries", 0, 5000, 0, 1)
}

// TestWatchSeesRestartBetweenQueries: Consul restarted empty between two
// blocking queries of a prefix watch. The second, on the index from
// before the restart, fails nothing, and Consul 1.8.7 holds a query on an
// index above its own until its wait ends: the watch asked for five
// minutes, and saw the restart, and what Consul holds since, only then.
// It now asks for a short wait (kvstore.BlockingWait). This fake answers
// such a query at its wait's end when the wait is a minute at most (not
// waited out here), and holds it otherwise: the watch reports the change
// and reads afresh, at index 0, then waits on the new index.
func TestWatchSeesRestartBetweenQueries(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var mu sync.Mutex
	now := uint64(5000)
	restart := make(chan struct{}) // closed once the first change is read
	asked := make(chan uint64, 8)  // the index each query waited on, as it came
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/kv/", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		index, _ := strconv.ParseUint(q.Get("index"), 10, 64)
		wait, err := time.ParseDuration(q.Get("wait"))
		asked <- index
		if index == 5000 {
			select {
			case <-restart:
			case <-r.Context().Done():
				return
			}
			mu.Lock()
			now = 3 // restarted empty just before this query came
			mu.Unlock()
		}
		mu.Lock()
		cur := now
		mu.Unlock()
		short := err == nil && wait <= time.Minute
		if index != 0 && cur <= index && !(cur < index && short) {
			<-r.Context().Done() // nothing past the index, or a long wait
			return
		}
		w.Header().Set("X-Consul-Index", strconv.FormatUint(cur, 10))
		w.Write([]byte(`[]`))
	})
	kv := kvServedBy(t, mux)
	changes := kv.Watch(ctx, "underlay/networks/")
	for i, what := range []string{"the first read", "the restart"} {
		select {
		case <-changes:
		case <-ctx.Done():
			t.Fatalf("no change reported for %s (change %d)", what, i+1)
		}
		if i == 0 {
			close(restart)
		}
	}
	kvtest.WaitedOn(ctx, t, asked, "the watch's queries", 0, 5000, 0, 3)
}
