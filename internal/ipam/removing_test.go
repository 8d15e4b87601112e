package ipam

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/netspec"
)

// TestPoolOfANetworkBeingRemoved: a pool whose network spec is marked
// deleting (`underlay network rm` under way) was still served: RequestPool
// and RequestAddress succeeded on it, handing out addresses of a network
// the nodes were taking apart. They are now refused, naming the network
// and that it is being removed, while ReleaseAddress and ReleasePool still
// work, on this plugin and on one that never served the pool (an agent
// restarted since), so its containers can be taken down.
func TestPoolOfANetworkBeingRemoved(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	served, call := pluginFor(t, kv, "n1")
	var held []string
	for _, addr := range []string{"10.90.0.200", "10.90.0.201"} {
		code, out := call("IpamDriver.RequestAddress", map[string]any{"PoolID": "lan/v4", "Address": addr})
		if code != 200 {
			t.Fatalf("allocate %s: %d %v", addr, code, out)
		}
		held = append(held, out["Address"].(string))
	}
	st := netspec.NewStore(kv)
	if err := st.MarkDeleting(ctx, lanSpec.Name); err != nil {
		t.Fatal(err)
	}
	// Both plugins' stores have read the specs since the mark, as the
	// agent's network reconciler does at every change.
	pl := &Plugin{Alloc: NewAllocator(kv, "n1", nil), Pools: SpecPools{Store: st}}
	for _, st := range []*netspec.Store{st, served.Pools.(SpecPools).Store} {
		if _, err := st.ReadListing(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for name, call := range map[string]func(string, any) (int, map[string]any){"serving": call, "restarted": serve(t, pl)} {
		for _, c := range []struct {
			method string
			req    map[string]any
		}{
			{"IpamDriver.RequestPool", map[string]any{"Pool": "10.90.0.0/24"}},
			{"IpamDriver.RequestPool", map[string]any{"Pool": "fd00:90::/64", "V6": true}},
			{"IpamDriver.RequestAddress", map[string]any{"PoolID": "lan/v4"}},
			{"IpamDriver.RequestAddress", map[string]any{"PoolID": "lan/v6", "Address": "fd00:90::10"}},
		} {
			code, out := call(c.method, c.req)
			msg, _ := out["Err"].(string)
			if code != 500 || !strings.Contains(msg, `network "lan" is being removed`) {
				t.Errorf("%s: %s %v: %d %v, want refused: network \"lan\" is being removed", name, c.method, c.req, code, out)
			}
		}
	}
	release := map[string]func(string, any) (int, map[string]any){"serving": call, "restarted": serve(t, pl)}
	for i, name := range []string{"serving", "restarted"} {
		if code, out := release[name]("IpamDriver.ReleaseAddress", map[string]any{"PoolID": "lan/v4", "Address": held[i]}); code != 200 {
			t.Errorf("%s: release %s: %d %v, want released", name, held[i], code, out)
		}
		if code, out := release[name]("IpamDriver.ReleasePool", map[string]any{"PoolID": "lan/v4"}); code != 200 {
			t.Errorf("%s: ReleasePool: %d %v, want answered", name, code, out)
		}
	}
	all, err := Allocations(ctx, kv, PoolOf4(lanSpec))
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range held {
		if _, ok := all[netip.MustParsePrefix(a).Addr()]; ok {
			t.Errorf("%s still allocated after its release: %v", a, all)
		}
	}
}

// TestPoolOfAStrangeNameIsQuoted: the refusal of a pool's IPv6 family
// for a network with no IPv6 subnet named the network raw, ahead of the
// check of its spec: a spec written past `network create` under a name
// with a newline (any text a key may hold) forged a line in the Err
// Docker shows. The name is now quoted.
func TestPoolOfAStrangeNameIsQuoted(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	const name = "lan\nFAKE: line"
	spec := lanSpec
	spec.Name, spec.IPv6Subnet = name, netip.Prefix{}
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Put(ctx, netspec.KVPrefix+name+"/spec", b); err != nil {
		t.Fatal(err)
	}
	call := serve(t, &Plugin{Alloc: NewAllocator(kv, "n1", nil), Pools: SpecPools{Store: netspec.NewStore(kv)}})
	for _, id := range []string{name + "/v6", name + "/v4"} {
		code, out := call("IpamDriver.RequestAddress", map[string]any{"PoolID": id})
		msg, _ := out["Err"].(string)
		if code != 500 || strings.Contains(msg, "\n") || !strings.Contains(msg, `"lan\nFAKE: line"`) {
			t.Errorf("request in pool %q: %d %q, want refused, the network's name quoted", id, code, msg)
		}
	}
}
