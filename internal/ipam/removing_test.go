package ipam

import (
	"context"
	"encoding/json"
	"errors"
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

// TestNoReleaseDuringARemovalIntoTheNetworkMadeAgain: a release of a
// network being removed frees from the pool the removal's error carries,
// which was bound to no spec: one committed, or answered from the newest
// reading of the specs, after the network was removed and made again under
// the name and subnet wrote into the new network's block, and freed an
// address this node holds there for a running container, handed out again
// while in use. That pool is now bound to the spec as read, marked: the
// release is refused, naming the network and its spec key. A release
// while the mark stands still frees (TestPoolOfANetworkBeingRemoved).
func TestNoReleaseDuringARemovalIntoTheNetworkMadeAgain(t *testing.T) {
	for _, how := range []string{"queued release", "specs read before the network was made again"} {
		t.Run(how, func(t *testing.T) {
			ctx := context.Background()
			kv := kvtest.New()
			served, call := pluginFor(t, kv, "n1")
			n1, n2 := served.Alloc, NewAllocator(kv, "n2", nil)
			code, out := call("IpamDriver.RequestAddress", map[string]any{"PoolID": "lan/v4"})
			if code != 200 {
				t.Fatalf("allocate: %d %v", code, out)
			}
			st := netspec.NewStore(kv)
			if err := st.MarkDeleting(ctx, lanSpec.Name); err != nil {
				t.Fatal(err)
			}
			// The plugin's store reads the specs since the mark, as the
			// agent's reconciler does, and not yet since the network was
			// made again.
			if _, err := served.Pools.(SpecPools).Store.ReadListing(ctx); err != nil {
				t.Fatal(err)
			}
			_, _, err := served.Pools.PoolByID(ctx, "lan/v4")
			var rm *RemovingError
			if !errors.As(err, &rm) {
				t.Fatalf("pool of the marked network: %v, want it being removed", err)
			}
			now := remakeLan(t, st)
			x, err := n1.Allocate(ctx, now, netip.MustParseAddr("10.90.0.130"), KindTask)
			if err != nil {
				t.Fatal(err)
			}
			switch how {
			case "queued release":
				err := n1.Release(ctx, rm.Pool, x)
				if !notServed(err) || !strings.Contains(err.Error(), `network "lan"`) || !strings.Contains(err.Error(), netspec.SpecKey(lanSpec.Name)) {
					t.Errorf("release of %s from the pool of the removal, after the network was made again: %v, want refused, naming the network and its spec key", x, err)
				}
			default:
				if code, out := call("IpamDriver.ReleaseAddress", map[string]any{"PoolID": "lan/v4", "Address": x.String()}); code != 500 || !strings.Contains(fmt.Sprint(out["Err"]), netspec.SpecKey(lanSpec.Name)) {
					t.Errorf("ReleaseAddress of %s from the newest reading, the network being removed, after it was made again: %d %v, want refused, naming the spec key", x, code, out)
				}
			}
			if again, err := n2.Allocate(ctx, now, x, KindTask); err == nil {
				t.Errorf("%s, held by n1 in the network made again, handed out to n2 too (%s)", x, again)
			}
			if err := n1.Release(ctx, now, x); err != nil {
				t.Errorf("release of %s from the network made again: %v", x, err)
			}
		})
	}
}

// TestReleaseDuringARemovalMarkedTwice: `network rm` marks the spec twice
// when the network has a swarm network (before and after removing it),
// so a release from the pool as the first mark was read is committed
// with the spec at another index. The spec's CreateIndex says it is the
// same network, still being removed: the release frees the address, as
// it did before releases during a removal were bound.
func TestReleaseDuringARemovalMarkedTwice(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	served, call := pluginFor(t, kv, "n1")
	code, out := call("IpamDriver.RequestAddress", map[string]any{"PoolID": "lan/v4"})
	if code != 200 {
		t.Fatalf("allocate: %d %v", code, out)
	}
	x := netip.MustParsePrefix(out["Address"].(string)).Addr()
	st := netspec.NewStore(kv)
	if err := st.MarkDeleting(ctx, lanSpec.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := served.Pools.(SpecPools).Store.ReadListing(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.MarkDeleting(ctx, lanSpec.Name); err != nil {
		t.Fatal(err)
	}
	if code, out := call("IpamDriver.ReleaseAddress", map[string]any{"PoolID": "lan/v4", "Address": x.String()}); code != 200 {
		t.Errorf("release of %s from the pool as first marked, the spec marked again: %d %v, want released", x, code, out)
	}
	held, err := Allocations(ctx, kv, PoolOf4(lanSpec))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := held[x]; ok {
		t.Errorf("%s still held after its release", x)
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

// TestLateShimReleaseOfANetworkMadeAgain: the node's network reconciler
// gives back its shim addresses and spares of a network being removed
// (NodeIPAM.ReleaseShim) from the spec as it read it, marked. A release
// that comes once the network was removed and made again under the name
// and subnet, and the node took its shim and spares in the new network,
// freed the new network's shim and gave its spares back: its pools were
// bound to no spec, and the spares were found by the pool's ID alone.
// Bound to the spec as read, the shim's release is refused, naming the
// spec key, and the new network's spares stay.
func TestLateShimReleaseOfANetworkMadeAgain(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	st := netspec.NewStore(kv)
	n := NodeIPAM{Alloc: NewAllocator(kv, "n1", nil), Pools: SpecPools{Store: st}}
	n.Alloc.spares.enable(2, nil)
	servedLan(t, st)
	if _, err := n.Shim(ctx, lanSpec, false); err != nil {
		t.Fatal(err)
	}
	if err := st.MarkDeleting(ctx, lanSpec.Name); err != nil {
		t.Fatal(err)
	}
	l, err := st.ReadListing(ctx)
	if err != nil {
		t.Fatal(err)
	}
	marked := l.Specs[0]
	now := remakeLan(t, st)
	shim, err := n.Shim(ctx, lanSpec, false)
	if err != nil {
		t.Fatal(err)
	}
	spares := len(keptSpares(t, n.Alloc, now))
	err = n.ReleaseShim(ctx, marked, l.SpecIndex(lanSpec.Name))
	if err == nil || !strings.Contains(err.Error(), netspec.SpecKey(lanSpec.Name)) {
		t.Errorf("late release of the shims of the network as marked, after it was made again: %v, want refused, naming the spec key", err)
	}
	held, err := Allocations(ctx, kv, now)
	if err != nil {
		t.Fatal(err)
	}
	if al := held[shim]; al.Node != "n1" || al.Kind != KindShim {
		t.Errorf("n1's shim %s in the network made again: %+v after the late release of the old network's, want n1's shim", shim, al)
	}
	if got := n.Alloc.spares.count(); got != spares {
		t.Errorf("%d spares kept in the network made again after the late release of the old network's, want %d", got, spares)
	}
}

// TestShimReleaseOfANetworkMarkedTwice: the shim release of a network
// being removed, bound to the spec as the reconciler read it marked,
// frees the node's shim once `network rm` marked the spec again (it
// marks twice when the network has a swarm network): the same network,
// still being removed. The spares of the pool as served before the mark
// are no longer kept.
func TestShimReleaseOfANetworkMarkedTwice(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	st := netspec.NewStore(kv)
	n := NodeIPAM{Alloc: NewAllocator(kv, "n1", nil), Pools: SpecPools{Store: st}}
	n.Alloc.spares.enable(2, nil)
	p := servedLan(t, st)
	shim, err := n.Shim(ctx, lanSpec, false)
	if err != nil {
		t.Fatal(err)
	}
	keptSpares(t, n.Alloc, p)
	if err := st.MarkDeleting(ctx, lanSpec.Name); err != nil {
		t.Fatal(err)
	}
	l, err := st.ReadListing(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.MarkDeleting(ctx, lanSpec.Name); err != nil {
		t.Fatal(err)
	}
	if err := n.ReleaseShim(ctx, l.Specs[0], l.SpecIndex(lanSpec.Name)); err != nil {
		t.Errorf("release of the shims of the network as first marked, marked again since: %v", err)
	}
	held, err := Allocations(ctx, kv, p)
	if err != nil {
		t.Fatal(err)
	}
	if al, ok := held[shim]; ok {
		t.Errorf("shim %s still allocated after its release: %+v", shim, al)
	}
	// Their records, written by the pool read before the mark, go with
	// the removal's delete of the tree (see boundRefusal).
	if got := n.Alloc.spares.count(); got != 0 {
		t.Errorf("%d spares kept after the release of the network's spares, want 0", got)
	}
}
