package ipam

import (
	"net/http/httptest"
	"testing"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
)

// TestReleasePoolForgetsThePool: the plugin's record of every pool it
// served (what a late release of an address falls back on once its spec
// is gone) never shrank: ReleasePool, which Docker calls as it removes a
// network from the node, was answered without the plugin. It is now
// dropped by the pool's last ReleasePool: one per RequestPool, or, for a
// pool served with none (after an agent's restart Docker does not ask for
// pools again), the first. Through the gate, once open, too.
func TestReleasePoolForgetsThePool(t *testing.T) {
	for _, through := range []string{"plugin", "gate"} {
		t.Run(through, func(t *testing.T) {
			kv := kvtest.New()
			pl, call := pluginFor(t, kv, "n1")
			if through == "gate" {
				g := NewGate("127.0.0.1:8500", 0, nil)
				g.Open(pl)
				srv := httptest.NewServer(g.Handler())
				t.Cleanup(srv.Close)
				call = caller(t, srv.URL)
			}
			must := func(method string, req map[string]any) {
				t.Helper()
				if code, out := call(method, req); code != 200 {
					t.Fatalf("%s %v: %d %v", method, req, code, out)
				}
			}
			served := func(id string) bool { _, ok := pl.served(id); return ok }
			must("IpamDriver.RequestPool", map[string]any{"Pool": "10.90.0.0/24"})
			must("IpamDriver.RequestPool", map[string]any{"Pool": "10.90.0.0/24"}) // a second Docker network of it
			must("IpamDriver.RequestAddress", map[string]any{"PoolID": "lan/v6"})  // served with no RequestPool
			must("IpamDriver.ReleasePool", map[string]any{"PoolID": "lan/v4"})
			if !served("lan/v4") {
				t.Errorf("lan/v4 forgotten at its first ReleasePool of two RequestPools")
			}
			must("IpamDriver.ReleasePool", map[string]any{"PoolID": "lan/v4"})
			must("IpamDriver.ReleasePool", map[string]any{"PoolID": "lan/v6"})
			must("IpamDriver.ReleasePool", map[string]any{"PoolID": "gone/v4"})
			for _, id := range []string{"lan/v4", "lan/v6"} {
				if served(id) {
					t.Errorf("%s still recorded as served after its last ReleasePool", id)
				}
			}
		})
	}
}

// caller calls methods of the plugin protocol served at url.
func caller(t *testing.T, url string) func(method string, req any) (int, map[string]any) {
	return func(method string, req any) (int, map[string]any) {
		t.Helper()
		code, out, err := post(url, method, req)
		if err != nil {
			t.Fatal(err)
		}
		return code, out
	}
}
