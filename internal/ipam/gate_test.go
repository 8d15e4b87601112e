package ipam

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/netspec"
)

// post calls method on the plugin at url, as dockerd does.
func post(url, method string, req any) (int, map[string]any, error) {
	b, _ := json.Marshal(req)
	resp, err := http.Post(url+"/"+method, pluginMediaType, bytes.NewReader(b))
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(body, &out); err != nil {
		return resp.StatusCode, nil, errors.New(string(body))
	}
	return resp.StatusCode, out, nil
}

// TestGateBeforeTheClaim: before the node's identity is claimed, the gate
// answers dockerd's activation and capability calls (and ReleasePool,
// which frees nothing) as the plugin does, and refuses pool and address
// requests once its timeout has passed, naming Consul's address and why
// the claim has not happened; nothing is allocated.
func TestGateBeforeTheClaim(t *testing.T) {
	g := NewGate("127.0.0.1:8500", 100*time.Millisecond, nil)
	srv := httptest.NewServer(g.Handler())
	t.Cleanup(srv.Close)
	for _, c := range []struct {
		method string
		want   string // in the answer
	}{
		{"Plugin.Activate", `"Implements":["IpamDriver"]`},
		{"IpamDriver.GetCapabilities", `"RequiresRequestReplay":false`},
		{"IpamDriver.GetDefaultAddressSpaces", `"LocalDefaultAddressSpace":"underlay-local"`},
		{"IpamDriver.ReleasePool", `{}`},
	} {
		code, out, err := post(srv.URL, c.method, map[string]any{"PoolID": "lan/v4"})
		got, _ := json.Marshal(out)
		if err != nil || code != http.StatusOK || !strings.Contains(string(got), c.want) {
			t.Errorf("%s before the claim: %d %s %v, want answered with %s", c.method, code, got, err, c.want)
		}
	}
	g.Waiting(errors.New("claim identity abc123: connection refused"))
	for _, c := range []struct {
		method string
		req    map[string]any
	}{
		{"IpamDriver.RequestPool", map[string]any{"Pool": "10.90.0.0/24"}},
		{"IpamDriver.RequestAddress", map[string]any{"PoolID": "lan/v4"}},
		{"IpamDriver.RequestAddress", map[string]any{"PoolID": "lan/v4", "Address": "10.90.0.200"}},
		{"IpamDriver.ReleaseAddress", map[string]any{"PoolID": "lan/v4", "Address": "10.90.0.200"}},
	} {
		code, out, err := post(srv.URL, c.method, c.req)
		msg, _ := out["Err"].(string)
		want := "node identity not yet claimed in Consul at 127.0.0.1:8500: claim identity abc123: connection refused"
		if err != nil || code != http.StatusInternalServerError || !strings.Contains(msg, want) {
			t.Errorf("%s %v before the claim: %d %v %v, want refused with %q", c.method, c.req, code, out, err, want)
		}
	}
}

// TestGateOpensOnTheClaim: a request waiting at the gate when the claim
// completes is served by the plugin, as every later one; a gate opened
// twice keeps the first plugin.
func TestGateOpensOnTheClaim(t *testing.T) {
	kv := kvtest.New()
	st := netspec.NewStore(kv)
	if err := st.Create(context.Background(), lanSpec); err != nil {
		t.Fatal(err)
	}
	g := NewGate("127.0.0.1:8500", 10*time.Second, nil)
	waiting := make(chan struct{})
	g.waitHook = func() { close(waiting) }
	srv := httptest.NewServer(g.Handler())
	t.Cleanup(srv.Close)
	type answer struct {
		code int
		out  map[string]any
		err  error
	}
	held := make(chan answer, 1)
	go func() {
		code, out, err := post(srv.URL, "IpamDriver.RequestAddress", map[string]any{"PoolID": "lan/v4"})
		held <- answer{code, out, err}
	}()
	<-waiting
	if all, _ := Allocations(context.Background(), kv, PoolOf4(lanSpec)); len(all) != 0 {
		t.Fatalf("allocations before the claim: %v, want none", all)
	}
	g.Open(&Plugin{Alloc: NewAllocator(kv, "n1", nil), Pools: SpecPools{Store: st}})
	g.Open(&Plugin{Alloc: NewAllocator(kv, "n2", nil), Pools: SpecPools{Store: st}})
	a := <-held
	if a.err != nil || a.code != http.StatusOK {
		t.Fatalf("request waiting at the gate as it opened: %d %v %v, want served", a.code, a.out, a.err)
	}
	code, out, err := post(srv.URL, "IpamDriver.RequestAddress", map[string]any{"PoolID": "lan/v4"})
	if err != nil || code != http.StatusOK {
		t.Fatalf("request after the claim: %d %v %v, want served", code, out, err)
	}
	all, _ := Allocations(context.Background(), kv, PoolOf4(lanSpec))
	for _, s := range []any{a.out["Address"], out["Address"]} {
		addr := netip.MustParsePrefix(s.(string)).Addr()
		if all[addr].Node != "n1" {
			t.Errorf("%s handed out through the gate: %+v, want n1's", addr, all[addr])
		}
	}
}

// TestGateAnswersUnknownMethodsAtOnce: before the claim, the gate held
// every POST but the handshake's, so a method the plugin does not serve
// (IpamDriver.Nope) waited the gate's whole timeout before its 404. It is
// now answered 404 at once; only the plugin's pool and address calls wait.
func TestGateAnswersUnknownMethodsAtOnce(t *testing.T) {
	g := NewGate("127.0.0.1:8500", time.Hour, nil)
	waiting := make(chan string, 4)
	g.waitHook = func() { waiting <- "waiting" }
	h := g.Handler()
	for _, method := range []string{"IpamDriver.Nope", "Plugin.Nope", "", "IpamDriver.RequestPool/x"} {
		ctx, cancel := context.WithCancel(context.Background())
		rec := httptest.NewRecorder()
		done := make(chan struct{})
		go func() {
			defer close(done)
			h.ServeHTTP(rec, httptest.NewRequest("POST", "/"+method, strings.NewReader("{}")).WithContext(ctx))
		}()
		select {
		case <-done:
		case <-waiting:
			t.Errorf("POST /%s before the claim: held at the gate, want answered 404 at once", method)
			cancel()
			<-done
		}
		cancel()
		if rec.Code != http.StatusNotFound {
			t.Errorf("POST /%s before the claim: %d %q, want 404", method, rec.Code, rec.Body)
		}
	}
	// The plugin's own calls still wait.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/IpamDriver.RequestAddress", strings.NewReader("{}")).WithContext(ctx))
	}()
	select {
	case <-waiting:
	case <-done:
		t.Errorf("RequestAddress before the claim: answered, want held at the gate")
	}
	cancel()
	<-done
}
