package consul

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/consul/api"
)

// TestKVRefusesRedirectedKeys: Consul's HTTP server, like Go's ServeMux,
// redirects a path with an empty, "." or ".." segment to its cleaned form,
// and the client follows a DELETE or PUT as a GET: a key such as
// underlay/doctor/x/../y was reported deleted while nothing was. Such keys
// are refused before any request, naming the key.
func TestKVRefusesRedirectedKeys(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/kv/", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.Path)
		mu.Unlock()
		switch r.Method {
		case http.MethodGet:
			w.Write([]byte(`[{"Key":"` + strings.TrimPrefix(r.URL.Path, "/v1/kv/") + `","Value":null,"ModifyIndex":7}]`))
		default:
			w.Write([]byte("true"))
		}
	})
	kv := kvServedBy(t, mux)
	ctx := context.Background()
	for _, key := range []string{"underlay/doctor/x/../y", "underlay/doctor/..", "underlay/doctor/./y", "underlay//y"} {
		seen = nil
		calls := map[string]error{
			"delete": kv.Delete(ctx, key),
			"put":    kv.Put(ctx, key, []byte("{}")),
		}
		_, _, err := kv.Get(ctx, key)
		calls["get"] = err
		calls["delete tree"] = kv.DeleteTree(ctx, key)
		for op, err := range calls {
			if err == nil || !strings.Contains(err.Error(), key) {
				t.Errorf("%s %q: %v; want an error naming the key", op, key, err)
			}
		}
		if len(seen) > 0 {
			t.Errorf("%q: requests sent: %v", key, seen)
		}
	}
	seen = nil
	if err := kv.Delete(ctx, "underlay/doctor/a?b#c%d"); err != nil || len(seen) != 1 || seen[0] != "DELETE /v1/kv/underlay/doctor/a?b#c%d" {
		t.Errorf("delete of a key with ?, # and %%: %v, requests %v; want one DELETE of it", err, seen)
	}
}

// kvServedBy is a KV whose Consul is h, on a loopback test server that
// ends with the test.
func kvServedBy(t *testing.T, h http.Handler) *KV {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	c, err := api.NewClient(&api.Config{Address: strings.TrimPrefix(srv.URL, "http://")})
	if err != nil {
		t.Fatal(err)
	}
	return NewKV(c)
}
