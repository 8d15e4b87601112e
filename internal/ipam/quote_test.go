package ipam

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/kvstore"
	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/netspec"
)

// TestPluginErrorsQuoteToShow: the plugin's refusals quote the pool or
// address a request names with what would not show escaped (U+3164 reads
// as nothing, and %q left it as it is), in the Err Docker shows.
func TestPluginErrorsQuoteToShow(t *testing.T) {
	pl := &Plugin{Alloc: NewAllocator(stalledKV{}, "n1", nil), Pools: SpecPools{Store: netspec.NewStore(stalledKV{})}, Timeout: time.Hour}
	for _, tc := range []struct {
		method string
		body   map[string]any
		want   string
	}{
		{"IpamDriver.RequestPool", map[string]any{"Pool": "10.0.0.0/24\u3164"}, `pool "10.0.0.0/24\u3164": not a CIDR`},
		{"IpamDriver.RequestAddress", map[string]any{"PoolID": "lan/v4", "Address": "10.0.0.5\u3164"}, `address "10.0.0.5\u3164": not an IP address`},
		{"IpamDriver.ReleaseAddress", map[string]any{"PoolID": "lan/v4", "Address": "fe80::1%x\u3164"}, `address "fe80::1%x\u3164": an address with a zone`},
	} {
		rec := httptest.NewRecorder()
		body, _ := json.Marshal(tc.body)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		pl.Handler().ServeHTTP(rec, httptest.NewRequest("POST", "/"+tc.method, bytes.NewReader(body)).WithContext(ctx))
		cancel()
		var out map[string]string
		json.Unmarshal(rec.Body.Bytes(), &out)
		if !strings.Contains(out["Err"], tc.want) {
			t.Errorf("%s %v: Err %s, want it to hold %s", tc.method, tc.body, out["Err"], tc.want)
		}
	}
}

// TestBadDocumentsQuoteToShow: documents and keys set apart as bad, which
// any token that may write the pool's keys chooses, are named with what
// would not show escaped.
func TestBadDocumentsQuoteToShow(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	kv := kvtest.New()
	b := netip.MustParsePrefix("10.2.0.32/28")
	kv.Put(ctx, blockPath(pool26, b), []byte(`{"node":"n2\u3164","allocs":{"10.2.0.33\u3164":{"node":"n2","at":"2026-03-01T12:00:00Z","kind":"task"}}}`))
	kv.Put(ctx, blockPath(pool26, netip.MustParsePrefix("10.2.0.48/28"))+"\u3164", []byte(`{"node":"n2","allocs":{}}`))
	kv.Put(ctx, keptPrefix(pool26)+"n3\u3164/x", []byte(`{"addrs":[]}`))
	c, err := Inspect(ctx, kv, pool26)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, bad := range c.Bad {
		got = append(got, bad.Err.Error())
	}
	all := strings.Join(got, "\n")
	for _, want := range []string{`node "n2\u3164" has a character that is not graphic`, `block key "10.2.0.48_28\u3164": netip.ParsePrefix("10.2.0.48/28\u3164")`, `"n3\u3164/x" is not a node identity`} {
		if !strings.Contains(all, want) {
			t.Errorf("bad documents:\n%s\nwant one holding %s", all, want)
		}
	}
	kv.Put(ctx, blockPath(pool26, b), []byte(`{"node":"n2","allocs":{"10.2.0.33\u3164":{"node":"n2","at":"2026-03-01T12:00:00Z","kind":"task"}}}`))
	if c, err = Inspect(ctx, kv, pool26); err != nil {
		t.Fatal(err)
	}
	got = got[:0]
	for _, bad := range c.Bad {
		got = append(got, bad.Err.Error())
	}
	if all, want := strings.Join(got, "\n"), `allocation "10.2.0.33\u3164" is not an address of block`; !strings.Contains(all, want) {
		t.Errorf("bad documents:\n%s\nwant one holding %s", all, want)
	}
}

// TestSpecAndFileErrorsQuoteToShow: errors naming a network read from a
// spec key or a pool ID (KV, Docker), a request's sub-pool, or what the
// freed file holds quote them with what would not show escaped (%q left
// U+3164 as it is: "lan\u3164" read "lan"); a Graphic name prints as %q
// printed it.
func TestSpecAndFileErrorsQuoteToShow(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	kv := kvtest.New()
	_, pluginCall := pluginFor(t, kv, "n1")
	_, subPool := pluginCall("IpamDriver.RequestPool", map[string]any{"Pool": lanSpec.Subnet.String(), "SubPool": "10.90.0.128/25\u3164"})
	_, specGone := specCheck(ctx, kv, Pool{Network: "lan\u3164", Prefix: lanSpec.Subnet})
	_, specGoneGraphic := specCheck(ctx, kv, Pool{Network: "gone", Prefix: lanSpec.Subnet})
	dir := t.TempDir()
	f, err := NewFreedFile(dir, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.Path, []byte(`{"freed":{"lan/v4\u3164":{"10.90.0.5\u3164":"2026-12-01T00:00:00Z"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, freedErr := f.Load()
	_, nodeErr := NewFreedFile(dir, "n1\u3164")
	for _, tc := range []struct {
		name string
		err  any
		want string
	}{
		{"sub-pool", subPool["Err"], `sub-pool "10.90.0.128/25\u3164": not a CIDR`},
		{"spec gone", specGone, `network "lan\u3164" was removed (its spec "underlay/networks/lan\u3164/spec" is gone)`},
		{"spec gone, Graphic", specGoneGraphic, `network "gone" was removed (its spec underlay/networks/gone/spec is gone)`},
		{"removing", &RemovingError{Pool: Pool{Network: "lan\u3164"}}, `network "lan\u3164" is being removed`},
		{"refused spec", refusedSpec("lan\u3164", errors.New("bad")), `network "lan\u3164": spec refused`},
		{"freed file", freedErr, `pool "lan/v4\u3164": "10.90.0.5\u3164" is not an address`},
		{"freed file's node", nodeErr, `node "n1\u3164" freed lately`},
	} {
		if got := fmt.Sprint(tc.err); !strings.Contains(got, tc.want) {
			t.Errorf("%s: error %s, want it to hold %s", tc.name, got, tc.want)
		}
	}
}

// TestKeptDocumentErrorQuotesToShow: a kept-addresses document's decode
// error carried netip's text, which quotes the address it refuses with
// %q and so left U+3164 as it is; it is escaped now.
func TestKeptDocumentErrorQuotesToShow(t *testing.T) {
	_, bad := decodeKept(pool26, []kvstore.Pair{
		{Key: keptPrefix(pool26) + "n1", Value: []byte(`{"addrs":["10.2.0.5` + "\u3164" + `"]}`)},
		{Key: keptPrefix(pool26) + "n2", Value: []byte(`{"addrs":["10.2.0.5x"]}`)},
	})
	var got []string
	for _, b := range bad {
		got = append(got, b.Err.Error())
	}
	all := strings.Join(got, "\n")
	for _, want := range []string{`ParseAddr("10.2.0.5\u3164"): unexpected character (at "\u3164")`, `ParseAddr("10.2.0.5x"): unexpected character (at "x")`} {
		if !strings.Contains(all, want) {
			t.Errorf("bad documents:\n%s\nwant one holding %s", all, want)
		}
	}
}
