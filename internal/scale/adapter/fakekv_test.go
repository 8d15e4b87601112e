package adapter

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/consul/api"
)

// fakeKV is Consul's KV HTTP API in memory, enough for the adapters: get,
// list (recurse), keys, put (with cas), delete; every write moves the
// index on.
type fakeKV struct {
	mu    sync.Mutex
	index uint64
	pairs map[string]*api.KVPair
	// beforeWrite, when set, runs before each write is applied, with the
	// key, outside the lock: a test writes there as a concurrent writer.
	beforeWrite func(key string)
	// listed counts the pairs list requests (recurse) answered, values
	// and all.
	listed int
}

// listedPairs is how many pairs list requests have answered so far.
func (f *fakeKV) listedPairs() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.listed
}

// newFakeKV serves a fakeKV and returns it with a client of it.
func newFakeKV(t *testing.T) (*fakeKV, *api.Client) {
	t.Helper()
	f := &fakeKV{pairs: map[string]*api.KVPair{}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	c, err := api.NewClient(&api.Config{Address: strings.TrimPrefix(srv.URL, "http://")})
	if err != nil {
		t.Fatal(err)
	}
	return f, c
}

// put stores value at key, as a write by anyone else.
func (f *fakeKV) put(key string, value []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.index++
	p := &api.KVPair{Key: key, Value: value, ModifyIndex: f.index, CreateIndex: f.index}
	if old, ok := f.pairs[key]; ok {
		p.CreateIndex = old.CreateIndex
	}
	f.pairs[key] = p
}

// get is the value at key, nil when there is none.
func (f *fakeKV) get(key string) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p, ok := f.pairs[key]; ok {
		return p.Value
	}
	return nil
}

func (f *fakeKV) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key, ok := strings.CutPrefix(r.URL.Path, "/v1/kv/")
	if !ok {
		http.NotFound(w, r)
		return
	}
	q := r.URL.Query()
	if r.Method == http.MethodPut || r.Method == http.MethodDelete {
		if f.beforeWrite != nil {
			f.beforeWrite(key)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	w.Header().Set("X-Consul-Index", strconv.FormatUint(f.index, 10))
	w.Header().Set("Content-Type", "application/json")
	switch r.Method {
	case http.MethodGet:
		var out []*api.KVPair
		for k, p := range f.pairs {
			if k == key || ((q.Has("recurse") || q.Has("keys")) && strings.HasPrefix(k, key)) {
				out = append(out, p)
			}
		}
		sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
		if q.Has("keys") {
			keys := make([]string, len(out))
			for i, p := range out {
				keys[i] = p.Key
			}
			json.NewEncoder(w).Encode(keys)
			return
		}
		if len(out) == 0 {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		if q.Has("recurse") {
			f.listed += len(out)
		}
		json.NewEncoder(w).Encode(out)
	case http.MethodPut:
		body, _ := io.ReadAll(r.Body)
		old, had := f.pairs[key]
		if q.Has("cas") {
			cas, _ := strconv.ParseUint(q.Get("cas"), 10, 64)
			if (cas == 0 && had) || (cas != 0 && (!had || old.ModifyIndex != cas)) {
				io.WriteString(w, "false")
				return
			}
		}
		f.index++
		p := &api.KVPair{Key: key, Value: body, ModifyIndex: f.index, CreateIndex: f.index}
		if had {
			p.CreateIndex = old.CreateIndex
		}
		f.pairs[key] = p
		io.WriteString(w, "true")
	case http.MethodDelete:
		delete(f.pairs, key)
		f.index++
		io.WriteString(w, "true")
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
	}
}
