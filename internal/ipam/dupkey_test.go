package ipam

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/netspec"
)

// TestPluginRefusesAKeyGivenTwice: a body naming a field twice, or an
// option twice, was served as its last value, the first ignored (and a
// field named in other letter case, "poolid", was taken for PoolID): a
// request spoilt in transit or written by a broken client was acted on
// by part of what it said, here a request for the v4 pool served from
// the v6 one, and a release of one address freeing another. Such a body
// is now refused, naming the key, and nothing allocated or freed.
func TestPluginRefusesAKeyGivenTwice(t *testing.T) {
	kv := kvtest.New()
	pl, call := pluginFor(t, kv, "n1")
	if code, out := call("IpamDriver.RequestAddress", map[string]any{"PoolID": "lan/v4", "Address": "10.90.0.200"}); code != 200 {
		t.Fatalf("allocate: %d %v", code, out)
	}
	for _, c := range []struct{ method, body, key string }{
		{"IpamDriver.RequestAddress", `{"PoolID":"lan/v4","PoolID":"lan/v6"}`, `"PoolID"`},
		{"IpamDriver.RequestAddress", `{"PoolID":"lan/v4","poolid":"lan/v6"}`, `"poolid"`},
		{"IpamDriver.RequestAddress", `{"PoolID":"lan/v4","Options":{"RequestAddressType":"com.docker.network.gateway","RequestAddressType":""}}`, `"RequestAddressType"`},
		{"IpamDriver.ReleaseAddress", `{"PoolID":"lan/v4","Address":"10.90.0.200","Address":"10.90.0.201"}`, `"Address"`},
		{"IpamDriver.RequestPool", `{"Pool":"10.90.0.0/24","V6":false,"V6":true}`, `"V6"`},
		{"IpamDriver.ReleasePool", `{"PoolID":"lan/v4","PoolID":"lan/v6"}`, `"PoolID"`},
	} {
		rec := httptest.NewRecorder()
		pl.Handler().ServeHTTP(rec, httptest.NewRequest("POST", "/"+c.method, strings.NewReader(c.body)))
		var out map[string]string
		json.Unmarshal(rec.Body.Bytes(), &out)
		if rec.Code != http.StatusInternalServerError || !strings.Contains(out["Err"], "bad request body") || !strings.Contains(out["Err"], c.key+" given twice") {
			t.Errorf("%s %s: %d %v, want refused as a bad request body naming %s given twice", c.method, c.body, rec.Code, out, c.key)
		}
	}
	all, err := Allocations(context.Background(), kv, PoolOf4(lanSpec))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := all[netip.MustParseAddr("10.90.0.200")]; !ok || len(all) != 1 {
		t.Errorf("v4 allocations after the refused bodies: %v, want 10.90.0.200 alone", all)
	}
	if all, _ := Allocations(context.Background(), kv, poolOf6(lanSpec)); len(all) != 0 {
		t.Errorf("v6 allocations after the refused bodies: %v, want none", all)
	}
	// Keys alike but for case are two options, and the same key in two
	// objects is no repetition.
	for _, body := range []string{
		`{"PoolID":"lan/v4","Options":{"a":"1","A":"2"}}`,
		`{"PoolID":"lan/v4","Options":{"PoolID":"x"}}`,
	} {
		rec := httptest.NewRecorder()
		pl.Handler().ServeHTTP(rec, httptest.NewRequest("POST", "/IpamDriver.RequestAddress", strings.NewReader(body)))
		if rec.Code != http.StatusOK {
			t.Errorf("%s: %d %s, want served", body, rec.Code, rec.Body)
		}
	}
}

func poolOf6(s netspec.Spec) Pool { p, _ := PoolOf(s, true); return p }
