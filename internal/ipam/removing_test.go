package ipam

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
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

// TestReleasesDuringRemovalReadTheSpecsOnce: while a network's removal was
// under way, every ReleaseAddress of its pool read every spec from Consul
// again (the newest reading serves no pool of a network being removed):
// a network of 1000 containers taken down read the whole listing 1000
// times. The newest reading's word that the network is being removed is
// now taken as a request takes its word that a pool is served: the specs
// are read not at all by a plugin whose store read them since the mark
// (the agent's reconciler does at every change), once by one whose store
// has not, and every address is released.
func TestReleasesDuringRemovalReadTheSpecsOnce(t *testing.T) {
	for _, c := range []struct {
		name      string
		readSince bool
		want      int64
	}{{"specs read since the mark", true, 0}, {"specs not read since the agent started", false, 1}} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			kv := kvtest.New()
			_, call := pluginFor(t, kv, "n1")
			var held []string
			for range 10 {
				code, out := call("IpamDriver.RequestAddress", map[string]any{"PoolID": "lan/v4"})
				if code != 200 {
					t.Fatalf("allocate: %d %v", code, out)
				}
				held = append(held, out["Address"].(string))
			}
			st := netspec.NewStore(kv)
			if err := st.MarkDeleting(ctx, lanSpec.Name); err != nil {
				t.Fatal(err)
			}
			if c.readSince {
				if _, err := st.ReadListing(ctx); err != nil {
					t.Fatal(err)
				}
			}
			call = serve(t, &Plugin{Alloc: NewAllocator(kv, "n1", nil), Pools: SpecPools{Store: st}})
			var lists atomic.Int64
			kv.Hook = func(call string, keys []string) error {
				if call == "list" && strings.HasPrefix(keys[0], netspec.KVPrefix) {
					lists.Add(1)
				}
				return nil
			}
			for _, a := range held {
				if code, out := call("IpamDriver.ReleaseAddress", map[string]any{"PoolID": "lan/v4", "Address": a}); code != 200 {
					t.Errorf("release %s: %d %v, want released", a, code, out)
				}
			}
			if n := lists.Load(); n != c.want {
				t.Errorf("%d releases during the removal read the specs %d times, want %d", len(held), n, c.want)
			}
			kv.Hook = nil
			all, err := Allocations(ctx, kv, PoolOf4(lanSpec))
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range held {
				if _, ok := all[netip.MustParsePrefix(a).Addr()]; ok {
					t.Errorf("%s still allocated after its release", a)
				}
			}
			if code, out := call("IpamDriver.RequestAddress", map[string]any{"PoolID": "lan/v4"}); code != 500 || !strings.Contains(fmt.Sprint(out["Err"]), "is being removed") {
				t.Errorf("request during the removal: %d %v, want refused", code, out)
			}
		})
	}
}

// BenchmarkReleaseDuringRemoval releases an address of a network being
// removed, among 50 other networks' specs, the specs read since the mark
// (as the agent's reconciler reads them).
func BenchmarkReleaseDuringRemoval(b *testing.B) {
	ctx := context.Background()
	kv := kvtest.New()
	st := netspec.NewStore(kv)
	for i := range 50 {
		spec := lanSpec
		spec.Name, spec.IPv6Subnet = fmt.Sprintf("other%d", i), netip.Prefix{}
		spec.Subnet = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 100, byte(i), 0}), 24)
		spec.Gateway, spec.IPRange, spec.Parent = spec.Subnet.Addr().Next(), netip.Prefix{}, fmt.Sprintf("eth%d", i+2)
		if err := st.Create(ctx, spec); err != nil {
			b.Fatal(err)
		}
	}
	if err := st.Create(ctx, lanSpec); err != nil {
		b.Fatal(err)
	}
	pl := &Plugin{Alloc: NewAllocator(kv, "n1", nil), Pools: SpecPools{Store: st}}
	if err := st.MarkDeleting(ctx, lanSpec.Name); err != nil {
		b.Fatal(err)
	}
	if _, err := st.ReadListing(ctx); err != nil {
		b.Fatal(err)
	}
	req := releaseRequest{PoolID: "lan/v4", Address: "10.90.0.200"}
	for b.Loop() {
		if _, err := pl.releaseAddress(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}
