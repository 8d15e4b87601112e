package ipam

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/httpserve"
	"github.com/underlay/underlay/internal/kvstore"
	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/netspec"
	"github.com/underlay/underlay/internal/testlog"
)

var lanSpec = netspec.Spec{Name: "lan", Subnet: netip.MustParsePrefix("10.90.0.0/24"), Gateway: netip.MustParseAddr("10.90.0.1"),
	IPRange: netip.MustParsePrefix("10.90.0.128/25"), Parent: "eth1", IPAM: netspec.Cluster, IPv6Subnet: netip.MustParsePrefix("fd00:90::/64")}

// pluginFor serves node's plugin over kv, which holds lanSpec.
func pluginFor(t *testing.T, kv *kvtest.KV, node string) (*Plugin, func(method string, req any) (int, map[string]any)) {
	t.Helper()
	st := netspec.NewStore(kv)
	if _, ok, _ := st.Get(context.Background(), lanSpec.Name); !ok {
		if err := st.Create(context.Background(), lanSpec); err != nil {
			t.Fatal(err)
		}
	}
	pl := &Plugin{Alloc: NewAllocator(kv, node, nil, WithSpecs(st)), Pools: SpecPools{Store: st}, Log: slog.New(slog.DiscardHandler)}
	return pl, serve(t, pl)
}

// mustCall is call failing the test unless the plugin answers 200: a
// step that must succeed, its answer returned.
func mustCall(t *testing.T, call func(method string, req any) (int, map[string]any)) func(method string, req map[string]any) map[string]any {
	return func(method string, req map[string]any) map[string]any {
		t.Helper()
		code, out := call(method, req)
		if code != 200 {
			t.Fatalf("%s %v: %d %v", method, req, code, out)
		}
		return out
	}
}

// serve serves pl until the test ends, returning a caller of its methods.
func serve(t *testing.T, pl *Plugin) func(method string, req any) (int, map[string]any) {
	t.Helper()
	srv := httptest.NewServer(pl.Handler())
	t.Cleanup(srv.Close)
	return func(method string, req any) (int, map[string]any) {
		t.Helper()
		b, _ := json.Marshal(req)
		resp, err := http.Post(srv.URL+"/"+method, "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var out map[string]any
		if err := json.Unmarshal(body, &out); err != nil {
			t.Fatalf("%s: %s: %v", method, body, err)
		}
		return resp.StatusCode, out
	}
}

// TestGatewayRequestMustBeTheGateway: a gateway request names the
// network's gateway or nothing; any other address is refused, not echoed.
func TestGatewayRequestMustBeTheGateway(t *testing.T) {
	_, call := pluginFor(t, kvtest.New(), "n1")
	gw := map[string]string{"RequestAddressType": "com.docker.network.gateway"}
	for _, c := range []struct {
		address, want string
	}{{"10.90.0.1", "10.90.0.1/24"}, {"", "10.90.0.1/24"}} {
		if code, out := call("IpamDriver.RequestAddress", map[string]any{"PoolID": "lan/v4", "Address": c.address, "Options": gw}); code != 200 || out["Address"] != c.want {
			t.Errorf("gateway request for %q: %d %v, want %s", c.address, code, out, c.want)
		}
	}
	for _, bad := range []string{"8.8.8.8", "10.90.0.2", "10.90.0.200"} {
		code, out := call("IpamDriver.RequestAddress", map[string]any{"PoolID": "lan/v4", "Address": bad, "Options": gw})
		if code != 500 || !strings.Contains(out["Err"].(string), bad) || !strings.Contains(out["Err"].(string), "10.90.0.1") {
			t.Errorf("gateway request for %s: %d %v, want an error naming it and the gateway", bad, code, out)
		}
	}
}

// TestUnknownPoolFamily: a pool ID of another family than v4 or v6 is an
// error, not taken for IPv4.
func TestUnknownPoolFamily(t *testing.T) {
	_, call := pluginFor(t, kvtest.New(), "n1")
	for _, id := range []string{"lan/zz", "lan/", "lan/V4"} {
		code, out := call("IpamDriver.RequestAddress", map[string]any{"PoolID": id})
		if code != 500 || !strings.Contains(out["Err"].(string), id) {
			t.Errorf("request in pool %q: %d %v, want an error naming it", id, code, out)
		}
	}
	if code, out := call("IpamDriver.RequestAddress", map[string]any{"PoolID": "lan/v6"}); code != 200 {
		t.Errorf("request in lan/v6: %d %v", code, out)
	}
}

// TestReleaseFromAnotherNodeIsRefused: a ReleaseAddress that reaches node
// n2's plugin for an address n1 holds (a retried request, a stale
// container) frees nothing, and says whose it is.
func TestReleaseFromAnotherNodeIsRefused(t *testing.T) {
	kv := kvtest.New()
	_, call1 := pluginFor(t, kv, "n1")
	_, call2 := pluginFor(t, kv, "n2")
	_, out := call1("IpamDriver.RequestAddress", map[string]any{"PoolID": "lan/v4"})
	addr := netip.MustParsePrefix(out["Address"].(string)).Addr()
	code, out := call2("IpamDriver.ReleaseAddress", map[string]any{"PoolID": "lan/v4", "Address": addr.String()})
	if code != 500 || !strings.Contains(out["Err"].(string), "n1") {
		t.Errorf("n2 releasing n1's %s: %d %v, want refused naming n1", addr, code, out)
	}
	all, _ := Allocations(context.Background(), kv, PoolOf4(lanSpec))
	if all[addr].Node != "n1" {
		t.Fatalf("%s after n2's stray release: %+v, want still n1's", addr, all[addr])
	}
	// n1 itself releases it.
	if code, out := call1("IpamDriver.ReleaseAddress", map[string]any{"PoolID": "lan/v4", "Address": addr.String()}); code != 200 {
		t.Errorf("n1 releasing its own %s: %d %v", addr, code, out)
	}
}

// PoolOf4 is spec's IPv4 pool.
func PoolOf4(s netspec.Spec) Pool { p, _ := PoolOf(s, false); return p }

func privateDir(t *testing.T) string {
	dir := filepath.Join(t.TempDir(), "plugins")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// serveBG runs pl.Serve on socket until the test ends and returns its
// error channel.
func serveBG(t *testing.T, pl *Plugin, socket string) (context.CancelFunc, <-chan error) {
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- pl.Serve(ctx, socket) }()
	t.Cleanup(cancel)
	return cancel, errc
}

func waitSocket(t *testing.T, socket string, errc <-chan error) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if c, err := net.Dial("unix", socket); err == nil {
			c.Close()
			return
		}
		select {
		case err := <-errc:
			t.Fatalf("Serve ended: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never served", socket)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestServeSocketIsPrivate: the socket is 0600 whatever the umask, and
// removed when the plugin stops.
func TestServeSocketIsPrivate(t *testing.T) {
	pl, _ := pluginFor(t, kvtest.New(), "n1")
	socket := filepath.Join(privateDir(t), "underlay.sock")
	stop, errc := serveBG(t, pl, socket)
	waitSocket(t, socket, errc)
	fi, err := os.Stat(socket)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("socket %v (%v), want a socket of mode 0600", fi.Mode(), err)
	}
	stop()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left after stop: %v", err)
	}
}

// TestServeRefusesAnUnsafeDirectory: a directory others may write to
// (anyone could replace the socket) is refused, naming it.
func TestServeRefusesAnUnsafeDirectory(t *testing.T) {
	pl, _ := pluginFor(t, kvtest.New(), "n1")
	dir := privateDir(t)
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	err := pl.Serve(context.Background(), filepath.Join(dir, "underlay.sock"))
	if err == nil || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "writable") {
		t.Errorf("Serve in a 0777 directory: %v, want a refusal naming it", err)
	}
}

// TestServeNeverTakesALiveSocket: a socket another live process serves is
// left alone (Serve fails, saying so); a stale one is replaced; a socket
// replaced while the plugin ran is not removed when it stops.
func TestServeNeverTakesALiveSocket(t *testing.T) {
	pl, _ := pluginFor(t, kvtest.New(), "n1")
	dir := privateDir(t)
	socket := filepath.Join(dir, "underlay.sock")
	other, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	err = pl.Serve(context.Background(), socket)
	if err == nil || !strings.Contains(err.Error(), "another process") {
		t.Errorf("Serve on a live socket: %v, want a refusal", err)
	}
	if c, err := net.Dial("unix", socket); err != nil {
		t.Fatalf("the other process's socket is gone: %v", err)
	} else {
		c.Close()
	}
	// Stale: the process is gone, the file is left.
	other.(*net.UnixListener).SetUnlinkOnClose(false)
	other.Close()
	stop, errc := serveBG(t, pl, socket)
	waitSocket(t, socket, errc)
	// Someone replaces the socket while we serve: it is theirs now.
	os.Remove(socket)
	theirs, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	defer theirs.Close()
	stop()
	<-errc
	if c, err := net.Dial("unix", socket); err != nil {
		t.Errorf("stopping removed a socket another process serves: %v", err)
	} else {
		c.Close()
	}
}

// failingListener fails at once, as a listener whose socket broke.
type failingListener struct{ net.Listener }

func (failingListener) Accept() (net.Conn, error) { return nil, errors.New("accept: broken") }

// TestFailedServeLeavesNoGoroutine: the agent retries a failed Serve every
// 10 s for as long as it runs; each failure must end everything it
// started.
func TestFailedServeLeavesNoGoroutine(t *testing.T) {
	pl, _ := pluginFor(t, kvtest.New(), "n1")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ln, err := net.Listen("unix", filepath.Join(privateDir(t), "x.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	before := runtime.NumGoroutine()
	for range 20 {
		if err := serveOn(ctx, failingListener{ln}, SocketServer(pl.Handler(), pl.log(), 0), func() {}); err == nil {
			t.Fatal("serve on a broken listener succeeded")
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("%d goroutines after 20 failed serves, %d before", n, before)
	}
}

// TestPluginRefusesInvalidSpecs: a spec written to KV past `network
// create` that fails its checks is refused by the plugin as the agents
// refuse it, naming the network and the problem: no pool, no address
// (here one of an ip range outside the subnet, which Docker would have
// taken for a container on the subnet).
func TestPluginRefusesInvalidSpecs(t *testing.T) {
	kv := kvtest.New()
	_, call := pluginFor(t, kv, "n1")
	bad := netspec.Spec{Name: "bad", Subnet: netip.MustParsePrefix("10.91.0.0/24"), Gateway: netip.MustParseAddr("10.91.0.1"),
		IPRange: netip.MustParsePrefix("10.99.0.0/28"), Parent: "eth2", IPAM: netspec.Cluster}
	b, _ := json.Marshal(bad)
	kv.Put(context.Background(), netspec.KVPrefix+"bad/spec", b)
	for _, c := range []struct {
		method string
		req    map[string]any
	}{
		{"IpamDriver.RequestPool", map[string]any{"Pool": "10.91.0.0/24"}},
		{"IpamDriver.RequestAddress", map[string]any{"PoolID": "bad/v4"}},
		{"IpamDriver.RequestAddress", map[string]any{"PoolID": "bad/v4", "Address": "10.99.0.5"}},
	} {
		code, out := call(c.method, c.req)
		if msg, _ := out["Err"].(string); code != 500 || !strings.Contains(msg, `"bad"`) || !strings.Contains(msg, "10.99.0.0/28") {
			t.Errorf("%s %v: %d %v, want refused naming the network and its bad ip range", c.method, c.req, code, out)
		}
	}
	all, _ := Allocations(context.Background(), kv, PoolOf4(bad))
	if len(all) != 0 {
		t.Errorf("allocations in the refused network: %v", all)
	}
	// The valid network beside it is served.
	if code, out := call("IpamDriver.RequestAddress", map[string]any{"PoolID": "lan/v4"}); code != 200 {
		t.Errorf("request in lan/v4: %d %v", code, out)
	}
}

// TestPluginRefusesHugeBodies: a request body far over any Docker sends
// is refused, saying so, before it is read whole into memory, and
// allocates nothing.
func TestPluginRefusesHugeBodies(t *testing.T) {
	kv := kvtest.New()
	pl, _ := pluginFor(t, kv, "n1")
	body := `{"PoolID":"lan/v4","Options":{"x":"` + strings.Repeat("a", 4<<20) + `"}}`
	rec := httptest.NewRecorder()
	pl.Handler().ServeHTTP(rec, httptest.NewRequest("POST", "/IpamDriver.RequestAddress", strings.NewReader(body)))
	var out map[string]string
	json.Unmarshal(rec.Body.Bytes(), &out)
	if rec.Code != 500 || !strings.Contains(out["Err"], "larger than") {
		t.Errorf("a 4 MiB request: %d %v, want refused as too large", rec.Code, out)
	}
	if all, _ := Allocations(context.Background(), kv, PoolOf4(lanSpec)); len(all) != 0 {
		t.Errorf("allocated %v for it", all)
	}
}

// TestRequestPoolRefusesWhatItWouldNotHonour: a sub-pool (docker network
// create --ip-range) other than the network's own range, and a family
// other than the subnet's, are refused, naming them: the pool's addresses
// would not be what was asked for.
func TestRequestPoolRefusesWhatItWouldNotHonour(t *testing.T) {
	_, call := pluginFor(t, kvtest.New(), "n1")
	for _, c := range []struct {
		req  map[string]any
		want string
	}{
		{map[string]any{"Pool": "10.90.0.0/24", "SubPool": "10.90.0.0/28"}, "10.90.0.0/28"},
		{map[string]any{"Pool": "10.90.0.0/24", "SubPool": "10.90.0.0"}, `"10.90.0.0"`},
		{map[string]any{"Pool": "10.90.0.0/24", "V6": true}, "10.90.0.0/24"},
		{map[string]any{"Pool": "fd00:90::/64", "V6": false}, "fd00:90::/64"},
		{map[string]any{"Pool": "fd00:90::/64", "SubPool": "fd00:90::/80", "V6": true}, "fd00:90::/80"},
	} {
		code, out := call("IpamDriver.RequestPool", c.req)
		if msg, _ := out["Err"].(string); code != 500 || !strings.Contains(msg, c.want) {
			t.Errorf("RequestPool %v: %d %v, want refused naming %s", c.req, code, out, c.want)
		}
	}
	for _, req := range []map[string]any{
		{"Pool": "10.90.0.0/24"},
		{"Pool": "10.90.0.0/24", "SubPool": "10.90.0.128/25"},
		{"Pool": "fd00:90::/64", "V6": true},
		{"Pool": "fd00:90::/64", "SubPool": "fd00:90::/64", "V6": true},
	} {
		if code, out := call("IpamDriver.RequestPool", req); code != 200 {
			t.Errorf("RequestPool %v: %d %v", req, code, out)
		}
	}
}

// TestReleaseOfTheShimIsRefused: a ReleaseAddress of this node's host
// shim address (Docker never got it) frees nothing, and says it is the
// shim rather than another node's.
func TestReleaseOfTheShimIsRefused(t *testing.T) {
	kv := kvtest.New()
	pl, call := pluginFor(t, kv, "n1")
	shim, err := pl.Alloc.Shim(context.Background(), PoolOf4(lanSpec))
	if err != nil {
		t.Fatal(err)
	}
	code, out := call("IpamDriver.ReleaseAddress", map[string]any{"PoolID": "lan/v4", "Address": shim.String()})
	msg, _ := out["Err"].(string)
	if code != 500 || !strings.Contains(msg, shim.String()) || !strings.Contains(msg, "host shim") || strings.Contains(msg, "not this node") {
		t.Errorf("releasing the shim %s: %d %v, want refused as this node's host shim", shim, code, out)
	}
	if all, _ := Allocations(context.Background(), kv, PoolOf4(lanSpec)); all[shim].Kind != KindShim || all[shim].Node != "n1" {
		t.Errorf("shim %s after the release: %+v", shim, all[shim])
	}
}

// TestPluginStopsServingSpecsGoneOrRefused: a pool served once is not
// served for the agent's life. Once the agent has read the specs again
// (its network reconciler does at every change under underlay/networks/,
// the leak sweep at every sweep, both through the plugin's store), a pool
// whose spec was removed, or rewritten past `network create` so that its
// checks refuse it, hands out no more addresses: the request is refused,
// naming the network and the problem, and allocates nothing. An address
// handed out before is still released, from the pool it came from; after
// a restart, with no such pool known, its release is refused and its
// record kept. The valid network beside it is served throughout.
func TestPluginStopsServingSpecsGoneOrRefused(t *testing.T) {
	for _, c := range []struct {
		name  string
		spoil func(kv *kvtest.KV)
		want  []string // in the refusal
	}{
		{"removed", func(kv *kvtest.KV) {
			kv.Delete(context.Background(), netspec.KVPrefix+"lan/spec")
		}, []string{`"lan"`, "no cluster-IPAM network"}},
		{"range outside its subnet", func(kv *kvtest.KV) {
			bad := lanSpec
			bad.IPRange = netip.MustParsePrefix("10.99.0.0/28")
			putSpec(t, kv, bad)
		}, []string{`"lan"`, "spec refused", "10.99.0.0/28"}},
		{"unreadable", func(kv *kvtest.KV) {
			kv.Put(context.Background(), netspec.KVPrefix+"lan/spec", []byte("{not json"))
		}, []string{`"lan"`, "spec refused", "decode"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			kv := kvtest.New()
			pl, call := pluginFor(t, kv, "n1")
			st := pl.Pools.(SpecPools).Store
			other := netspec.Spec{Name: "other", Subnet: netip.MustParsePrefix("10.91.0.0/24"), Gateway: netip.MustParseAddr("10.91.0.1"),
				Parent: "eth2", IPAM: netspec.Cluster}
			if err := st.Create(ctx, other); err != nil {
				t.Fatal(err)
			}
			request := func(pool string) (int, map[string]any) {
				t.Helper()
				return call("IpamDriver.RequestAddress", map[string]any{"PoolID": pool})
			}
			code, out := request("lan/v4")
			if code != 200 {
				t.Fatalf("request in lan/v4: %d %v", code, out)
			}
			handed := netip.MustParsePrefix(out["Address"].(string)).Addr()
			if code, out := request("other/v4"); code != 200 {
				t.Fatalf("request in other/v4: %d %v", code, out)
			}
			c.spoil(kv)
			if _, _, err := st.ReadSpecs(ctx); err != nil {
				t.Fatal(err)
			}
			code, out = request("lan/v4")
			msg, _ := out["Err"].(string)
			for _, want := range c.want {
				if code != 500 || !strings.Contains(msg, want) {
					t.Errorf("request in lan/v4 once its spec is %s: %d %v, want refused naming %s", c.name, code, out, want)
				}
			}
			lan := PoolOf4(lanSpec)
			if all, _ := Allocations(ctx, kv, lan); len(all) != 1 {
				t.Errorf("allocations in lan/v4: %v, want only %s", all, handed)
			}
			if code, out := request("other/v4"); code != 200 {
				t.Errorf("request in other/v4, a valid network: %d %v", code, out)
			}
			// A restarted agent knows no pool lan/v4: the release is
			// refused, and the record kept for a fixed spec's sweep.
			restarted := serve(t, &Plugin{Alloc: NewAllocator(kv, "n1", nil), Pools: SpecPools{Store: netspec.NewStore(kv)}})
			if code, out := restarted("IpamDriver.ReleaseAddress", map[string]any{"PoolID": "lan/v4", "Address": handed.String()}); code != 500 {
				t.Errorf("release of %s by a restarted agent: %d %v, want refused", handed, code, out)
			}
			if all, _ := Allocations(ctx, kv, lan); all[handed].Node != "n1" {
				t.Errorf("%s after a refused release: %+v, want still n1's", handed, all[handed])
			}
			if code, out := call("IpamDriver.ReleaseAddress", map[string]any{"PoolID": "lan/v4", "Address": handed.String()}); code != 200 {
				t.Errorf("release of %s, handed out before: %d %v", handed, code, out)
			}
			if all, _ := Allocations(ctx, kv, lan); len(all) != 0 {
				t.Errorf("allocations in lan/v4 after the release: %v", all)
			}
		})
	}
}

// TestPluginRequestsReadNoSpecs: once the specs have been read through the
// plugin's store, address requests and releases judge them by that
// reading: none waits for a listing of the specs.
func TestPluginRequestsReadNoSpecs(t *testing.T) {
	kv := kvtest.New()
	pl, call := pluginFor(t, kv, "n1")
	if _, _, err := pl.Pools.(SpecPools).Store.ReadSpecs(context.Background()); err != nil {
		t.Fatal(err)
	}
	var lists int
	kv.Hook = func(call string, keys []string) error {
		if call == "list" && strings.HasPrefix(keys[0], netspec.KVPrefix) {
			lists++
		}
		return nil
	}
	for range 5 {
		code, out := call("IpamDriver.RequestAddress", map[string]any{"PoolID": "lan/v4"})
		if code != 200 {
			t.Fatalf("request: %d %v", code, out)
		}
		if code, out := call("IpamDriver.ReleaseAddress", map[string]any{"PoolID": "lan/v4", "Address": out["Address"]}); code != 200 {
			t.Fatalf("release: %d %v", code, out)
		}
	}
	if lists != 0 {
		t.Errorf("%d listings of the specs for 5 requests and releases, want none", lists)
	}
}

// TestReleaseOfAnAddressOfAnotherPool: a release names the pool it frees
// in; an address that pool never hands out (another family's, outside
// its range) is refused, naming both, instead of answered as released
// while it stays allocated where it is.
func TestReleaseOfAnAddressOfAnotherPool(t *testing.T) {
	kv := kvtest.New()
	_, call := pluginFor(t, kv, "n1")
	_, out := call("IpamDriver.RequestAddress", map[string]any{"PoolID": "lan/v4"})
	v4 := netip.MustParsePrefix(out["Address"].(string)).Addr()
	_, out = call("IpamDriver.RequestAddress", map[string]any{"PoolID": "lan/v6"})
	v6 := netip.MustParsePrefix(out["Address"].(string)).Addr()
	for _, c := range []struct{ pool, addr string }{
		{"lan/v6", v4.String()}, {"lan/v4", v6.String()}, {"lan/v4", "10.90.0.5"}, {"lan/v4", "10.91.0.200"},
	} {
		code, out := call("IpamDriver.ReleaseAddress", map[string]any{"PoolID": c.pool, "Address": c.addr})
		msg, _ := out["Err"].(string)
		if code != 500 || !strings.Contains(msg, c.addr) || !strings.Contains(msg, c.pool) {
			t.Errorf("releasing %s in %s: %d %v, want refused naming both", c.addr, c.pool, code, out)
		}
	}
	for _, c := range []struct {
		pool Pool
		addr netip.Addr
	}{{PoolOf4(lanSpec), v4}, {func() Pool { p, _ := PoolOf(lanSpec, true); return p }(), v6}} {
		if all, _ := Allocations(context.Background(), kv, c.pool); all[c.addr].Node != "n1" {
			t.Errorf("%s after the releases in other pools: %+v, want still n1's", c.addr, all[c.addr])
		}
	}
}

// stalledKV is Consul out of reach: every call waits for its context to
// end, as the Consul client's requests do when no agent answers.
type stalledKV struct{}

func stall(ctx context.Context, call, key string) error {
	<-ctx.Done()
	return fmt.Errorf("consul %s %s: %w", call, key, ctx.Err())
}

func (stalledKV) Get(ctx context.Context, key string) (kvstore.Pair, bool, error) {
	return kvstore.Pair{}, false, stall(ctx, "get", key)
}
func (stalledKV) List(ctx context.Context, prefix string) ([]kvstore.Pair, error) {
	return nil, stall(ctx, "list", prefix)
}
func (stalledKV) Keys(ctx context.Context, prefix string) ([]string, error) {
	return nil, stall(ctx, "keys", prefix)
}
func (stalledKV) KeysIndex(ctx context.Context, prefix string) ([]string, uint64, error) {
	return nil, 0, stall(ctx, "keys", prefix)
}
func (stalledKV) Txn(ctx context.Context, ops []kvstore.Op) (kvstore.Result, error) {
	return kvstore.Result{}, stall(ctx, "txn", ops[0].Key)
}
func (stalledKV) Wait(ctx context.Context, key string, index uint64) (kvstore.Pair, bool, uint64, error) {
	return kvstore.Pair{}, false, 0, stall(ctx, "wait", key)
}
func (stalledKV) Put(ctx context.Context, key string, _ []byte) error { return stall(ctx, "put", key) }
func (stalledKV) Delete(ctx context.Context, key string) error        { return stall(ctx, "delete", key) }
func (stalledKV) DeleteTree(ctx context.Context, prefix string) error {
	return stall(ctx, "delete-tree", prefix)
}

// TestPluginTimeoutNamesTheRequest: with Consul out of reach, a request
// is answered once Timeout has passed, as Docker shows a plugin's error (a
// status other than 200 with the message in Err), and the message names
// the request, its pool and address, the timeout, and Consul — whether
// the request waited to read the specs or to allocate.
func TestPluginTimeoutNamesTheRequest(t *testing.T) {
	const timeout = 100 * time.Millisecond
	kv := kvtest.New()
	st := netspec.NewStore(kv)
	if err := st.Create(context.Background(), lanSpec); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.ReadSpecs(context.Background()); err != nil {
		t.Fatal(err)
	}
	specsRead := SpecPools{Store: st}                              // the reconciler read them before Consul went
	specsUnread := SpecPools{Store: netspec.NewStore(stalledKV{})} // none read since the agent started
	for _, c := range []struct {
		name   string
		pools  SpecPools
		method string
		req    map[string]any
		want   []string
	}{
		{"pool, specs unread", specsUnread, "IpamDriver.RequestPool", map[string]any{"Pool": "10.90.0.0/24"},
			[]string{"request for the pool of subnet 10.90.0.0/24"}},
		{"address, specs unread", specsUnread, "IpamDriver.RequestAddress", map[string]any{"PoolID": "lan/v4"},
			[]string{`request for any address in pool "lan/v4"`}},
		{"any address", specsRead, "IpamDriver.RequestAddress", map[string]any{"PoolID": "lan/v4"},
			[]string{`request for any address in pool "lan/v4"`}},
		{"given address", specsRead, "IpamDriver.RequestAddress", map[string]any{"PoolID": "lan/v4", "Address": "10.90.0.200"},
			[]string{`request for address 10.90.0.200 in pool "lan/v4"`}},
		{"release", specsRead, "IpamDriver.ReleaseAddress", map[string]any{"PoolID": "lan/v4", "Address": "10.90.0.200"},
			[]string{`release of address 10.90.0.200 in pool "lan/v4"`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			// The last resort an hour away: with a second, a process held
			// up that long at the deadline had either answer go out.
			pl := &Plugin{Alloc: NewAllocator(stalledKV{}, "n1", nil), Pools: c.pools, Timeout: timeout, lastResort: time.Hour}
			call := serve(t, pl)
			code, out := call(c.method, c.req)
			msg, _ := out["Err"].(string)
			var missing []string
			for _, want := range append(c.want, "timed out after 100ms", "Consul did not answer in time") {
				if !strings.Contains(msg, want) {
					missing = append(missing, want)
				}
			}
			if code != http.StatusInternalServerError || len(missing) > 0 {
				t.Errorf("%s with Consul out of reach: %d %v, want status 500 and an Err naming %q", c.method, code, out, missing)
			}
		})
	}
}

// TestServeSocketLogsToSlog: the plugin's http.Server had no ErrorLog, so
// net/http's own messages (a handler's panic, with its stack) went to the
// process's standard logger, without level or component. They now go to
// the plugin's logger, a panic as an error.
func TestServeSocketLogsToSlog(t *testing.T) {
	recs := testlog.NewRecords(16)
	socket := filepath.Join(privateDir(t), "underlay.sock")
	h := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("boom") })
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- serveSocket(ctx, socket, h, slog.New(recs).With("component", "ipam"), 0) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("serveSocket: %v", err)
		}
	})
	waitSocket(t, socket, errc)
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", socket)
	}}}
	if resp, err := client.Post("http://plugin/IpamDriver.RequestAddress", "application/json", strings.NewReader("{}")); err == nil {
		resp.Body.Close()
		t.Fatalf("request: %s, want the connection closed", resp.Status)
	}
	r := recs.Await(t, 5*time.Second, func(r slog.Record) bool { return strings.Contains(r.Message, "panic serving") })
	if r.Level != slog.LevelError || !strings.Contains(r.Message, "boom") || testlog.Attr(r, "component") != "ipam" {
		t.Errorf("panic logged as %s %q component=%q, want an error naming boom, component=ipam", r.Level, r.Message, testlog.Attr(r, "component"))
	}
}

// TestServeSocketIsBounded: the plugin's own socket server had only a
// header timeout: no idle timeout, no read or write timeout, and headers
// up to net/http's default of 1 MiB, so any client of the socket could
// hold connections and memory for as long as it liked. It is now bounded
// as httpserve.NewServer's servers are, with the read and write timeouts
// outlasting what a request may wait for (the gate's hold, the plugin's
// timeout).
func TestServeSocketIsBounded(t *testing.T) {
	pl, _ := pluginFor(t, kvtest.New(), "n1")
	socket := filepath.Join(privateDir(t), "underlay.sock")
	_, errc := serveBG(t, pl, socket)
	waitSocket(t, socket, errc)
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", socket)
	}}}
	req, _ := http.NewRequest("POST", "http://plugin/Plugin.Activate", strings.NewReader("{}"))
	req.Header.Set("X-Big", strings.Repeat("x", 2*httpserve.MaxHeaderBytes))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("request with %d bytes of headers: %s, want 431", 2*httpserve.MaxHeaderBytes, resp.Status)
	}

	for _, held := range []time.Duration{0, 3 * time.Minute} {
		srv := SocketServer(http.NotFoundHandler(), slog.New(slog.DiscardHandler), held)
		if srv.IdleTimeout != httpserve.IdleTimeout || srv.ReadHeaderTimeout != httpserve.ReadHeaderTimeout || srv.MaxHeaderBytes != httpserve.MaxHeaderBytes {
			t.Errorf("held %s: idle %s, header timeout %s, header bytes %d; want httpserve's %s, %s, %d", held,
				srv.IdleTimeout, srv.ReadHeaderTimeout, srv.MaxHeaderBytes, httpserve.IdleTimeout, httpserve.ReadHeaderTimeout, httpserve.MaxHeaderBytes)
		}
		if srv.ReadTimeout != httpserve.ReadTimeout+held || srv.WriteTimeout != httpserve.WriteTimeout+held {
			t.Errorf("held %s: read timeout %s, write timeout %s; want httpserve's plus the hold: %s, %s", held,
				srv.ReadTimeout, srv.WriteTimeout, httpserve.ReadTimeout+held, httpserve.WriteTimeout+held)
		}
	}
}

// TestPluginRefusesABadAddressAtOnce: an address request or release whose
// Address is no IP address was read only after its pool, so with Consul
// out of reach it waited the whole timeout and was refused as Consul's
// fault, the bad string (a newline in it too) copied raw into the Err
// Docker shows. It is now refused at once for what it is, quoted.
func TestPluginRefusesABadAddressAtOnce(t *testing.T) {
	const bad = "10.90.0.200\nFAKE: line"
	pl := &Plugin{Alloc: NewAllocator(stalledKV{}, "n1", nil), Pools: SpecPools{Store: netspec.NewStore(stalledKV{})}, Timeout: time.Hour}
	for _, method := range []string{"IpamDriver.RequestAddress", "IpamDriver.ReleaseAddress"} {
		t.Run(method, func(t *testing.T) {
			rec := httptest.NewRecorder()
			body, _ := json.Marshal(map[string]any{"PoolID": "lan/v4", "Address": bad})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			pl.Handler().ServeHTTP(rec, httptest.NewRequest("POST", "/"+method, bytes.NewReader(body)).WithContext(ctx))
			var out map[string]string
			json.Unmarshal(rec.Body.Bytes(), &out)
			if rec.Code != http.StatusInternalServerError || !strings.Contains(out["Err"], `address "10.90.0.200\nFAKE: line": not an IP address`) || strings.Contains(out["Err"], "\n") {
				t.Errorf("%s with Address %q: %d %q, want refused, naming it quoted as not an IP address", method, bad, rec.Code, out["Err"])
			}
		})
	}
}

// TestPluginRefusesDataAfterTheRequest: a body holding more than one JSON
// value was served as its first, the rest ignored: a release (or request)
// spoilt in transit or written by a broken client acted on part of what
// it said. Such a body is now refused, and nothing allocated or freed.
func TestPluginRefusesDataAfterTheRequest(t *testing.T) {
	kv := kvtest.New()
	pl, call := pluginFor(t, kv, "n1")
	if code, out := call("IpamDriver.RequestAddress", map[string]any{"PoolID": "lan/v4", "Address": "10.90.0.200"}); code != 200 {
		t.Fatalf("allocate: %d %v", code, out)
	}
	for _, c := range []struct{ method, body string }{
		{"IpamDriver.ReleaseAddress", `{"PoolID":"lan/v4","Address":"10.90.0.200"} {"PoolID":"lan/v4","Address":"10.90.0.201"}`},
		{"IpamDriver.ReleaseAddress", `{"PoolID":"lan/v4","Address":"10.90.0.200"}garbage`},
		{"IpamDriver.RequestAddress", `{"PoolID":"lan/v4"}]`},
	} {
		rec := httptest.NewRecorder()
		pl.Handler().ServeHTTP(rec, httptest.NewRequest("POST", "/"+c.method, strings.NewReader(c.body)))
		var out map[string]string
		json.Unmarshal(rec.Body.Bytes(), &out)
		if rec.Code != http.StatusInternalServerError || !strings.Contains(out["Err"], "bad request body") {
			t.Errorf("%s %s: %d %v, want refused as a bad request body", c.method, c.body, rec.Code, out)
		}
	}
	all, err := Allocations(context.Background(), kv, PoolOf4(lanSpec))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := all[netip.MustParseAddr("10.90.0.200")]; !ok || len(all) != 1 {
		t.Errorf("allocations after the refused bodies: %v, want 10.90.0.200 alone", all)
	}
}

// TestPluginRefusesAZonedAddress: an address with an IPv6 zone
// (fd00:90::10%eth0) parses as an IP address, so it went on to the pool
// and was refused there as not of the pool, the zone — any text, a
// newline too — copied raw into the Err Docker shows. No container's
// address has a zone: it is now refused at once for what it is, quoted.
func TestPluginRefusesAZonedAddress(t *testing.T) {
	_, call := pluginFor(t, kvtest.New(), "n1")
	const bad = "fd00:90::10%a\nFAKE: line"
	for _, c := range []struct {
		method string
		req    map[string]any
	}{
		{"IpamDriver.RequestAddress", map[string]any{"PoolID": "lan/v6", "Address": bad}},
		{"IpamDriver.RequestAddress", map[string]any{"PoolID": "lan/v6", "Address": bad, "Options": map[string]string{"RequestAddressType": "com.docker.network.gateway"}}},
		{"IpamDriver.ReleaseAddress", map[string]any{"PoolID": "lan/v6", "Address": bad}},
	} {
		code, out := call(c.method, c.req)
		msg, _ := out["Err"].(string)
		if code != http.StatusInternalServerError || !strings.Contains(msg, `address "fd00:90::10%a\nFAKE: line": `) || strings.Contains(msg, "\n") {
			t.Errorf("%s %v: %d %q, want refused, naming the address quoted", c.method, c.req, code, msg)
		}
	}
}

// TestReleaseWithAnotherPrefixLength: Docker's remote IPAM client sends a
// release's address bare (libnetwork ipams/remote: net.IP.String()); the
// plugin also takes it as it hands addresses out, with the pool's prefix
// length. One with another prefix length ("10.90.0.128/0") was taken as
// its address and freed it:
//
//	release of 10.90.0.128/0 in lan/v4: 200 map[], want refused naming "10.90.0.128/0" and /24
//
// Such a release is now refused, naming the value and the pool's prefix
// length, and frees nothing.
func TestReleaseWithAnotherPrefixLength(t *testing.T) {
	kv := kvtest.New()
	_, call := pluginFor(t, kv, "n1")
	for _, c := range []struct {
		pool Pool
		id   string
		bad  []string // prefix lengths refused
		bits int      // the pool's
	}{
		{PoolOf4(lanSpec), "lan/v4", []string{"0", "32", "25", "16"}, 24},
		{func() Pool { p, _ := PoolOf(lanSpec, true); return p }(), "lan/v6", []string{"0", "128", "120"}, 64},
	} {
		for _, form := range []string{"bare", "pool's prefix length"} {
			_, out := call("IpamDriver.RequestAddress", map[string]any{"PoolID": c.id})
			addr := netip.MustParsePrefix(out["Address"].(string)).Addr()
			for _, bits := range c.bad {
				v := addr.String() + "/" + bits
				code, out := call("IpamDriver.ReleaseAddress", map[string]any{"PoolID": c.id, "Address": v})
				msg, _ := out["Err"].(string)
				if code != 500 || !strings.Contains(msg, `"`+v+`"`) || !strings.Contains(msg, fmt.Sprintf("/%d", c.bits)) {
					t.Errorf("release of %s in %s: %d %v, want refused naming %q and /%d", v, c.id, code, out, v, c.bits)
				}
			}
			if all, _ := Allocations(context.Background(), kv, c.pool); all[addr].Node != "n1" {
				t.Fatalf("%s after releases with other prefix lengths: %+v, want still n1's", addr, all[addr])
			}
			v := addr.String()
			if form != "bare" {
				v = netip.PrefixFrom(addr, c.bits).String()
			}
			if code, out := call("IpamDriver.ReleaseAddress", map[string]any{"PoolID": c.id, "Address": v}); code != 200 {
				t.Errorf("release of %s in %s: %d %v", v, c.id, code, out)
			}
			if all, _ := Allocations(context.Background(), kv, c.pool); all[addr].Node != "" {
				t.Errorf("%s after its release as %s: %+v, want free", addr, v, all[addr])
			}
		}
	}
}
