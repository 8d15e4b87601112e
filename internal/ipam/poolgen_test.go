package ipam

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/netspec"
)

// TestLateReleaseOfANetworkMadeAgain: the pool ID Docker keeps for a
// network (NETWORK/v4) named no generation of it. A network whose tree was
// deleted while a container of this node held address A (an operator's
// `underlay node rm` of a live node, or a hand deletion of the spec and
// blocks), made again under the name and subnet, handed A to a new
// container; the old container's late ReleaseAddress, with the pool ID
// Docker stored for the old network, then freed A in the new one, and A
// went to a third container while the second held it. The pool ID now
// names the spec's generation: the late release is refused, naming the
// pool ID, and A stays the second container's; on a plugin that served
// the old network, and on one started since (an agent restarted).
func TestLateReleaseOfANetworkMadeAgain(t *testing.T) {
	for _, restarted := range []bool{false, true} {
		name := "same plugin"
		if restarted {
			name = "agent restarted"
		}
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			kv := kvtest.New()
			_, call := pluginFor(t, kv, "n1")
			must := mustCall(t, call)
			fams := []string{"v4", "v6"}
			subnets := map[string]map[string]any{
				"v4": {"Pool": lanSpec.Subnet.String()},
				"v6": {"Pool": lanSpec.IPv6Subnet.String(), "V6": true},
			}
			old, held := map[string]string{}, map[string]string{}
			for _, fam := range fams {
				req := subnets[fam]
				old[fam] = must("IpamDriver.RequestPool", req)["PoolID"].(string)
				held[fam] = must("IpamDriver.RequestAddress", map[string]any{"PoolID": old[fam]})["Address"].(string)
			}
			// The network's tree deleted while its containers live, and
			// the network made again under the name and subnets.
			st := netspec.NewStore(kv)
			if err := st.Delete(ctx, lanSpec.Name, NetworkPrefix(lanSpec.Name)); err != nil {
				t.Fatal(err)
			}
			if err := st.Create(ctx, lanSpec); err != nil {
				t.Fatal(err)
			}
			if restarted {
				call = serve(t, &Plugin{Alloc: NewAllocator(kv, "n1", nil), Pools: SpecPools{Store: netspec.NewStore(kv)}, Log: slog.New(slog.DiscardHandler)})
			}
			for _, fam := range fams {
				req := subnets[fam]
				cur := must("IpamDriver.RequestPool", req)["PoolID"].(string)
				addr := netip.MustParsePrefix(held[fam]).Addr()
				// A second container, in the new network, gets A.
				must("IpamDriver.RequestAddress", map[string]any{"PoolID": cur, "Address": addr.String()})
				// The first one's late release.
				code, out := call("IpamDriver.ReleaseAddress", map[string]any{"PoolID": old[fam], "Address": held[fam]})
				msg, _ := out["Err"].(string)
				if code != 500 || !strings.Contains(msg, quoted(old[fam])) || !strings.Contains(msg, "made again") {
					t.Errorf("%s: late release of %s with the old network's pool ID %q: %d %v, want refused, naming the pool ID and the network made again", fam, addr, old[fam], code, out)
				}
				// A third container.
				if code, out := call("IpamDriver.RequestAddress", map[string]any{"PoolID": cur, "Address": addr.String()}); code == 200 {
					t.Errorf("%s: %s, held by the new network's container, handed out again: %v", fam, addr, out)
				}
				p, _ := PoolOf(lanSpec, fam == "v6")
				all, err := Allocations(ctx, kv, p)
				if err != nil {
					t.Fatal(err)
				}
				if all[addr].Node != "n1" {
					t.Errorf("%s: %s after the late release: %+v, want held by n1", fam, addr, all[addr])
				}
			}
		})
	}
}

// TestPoolIDOfAGeneration: a pool ID naming the network's generation is
// served, gateway and IPv6 included, while the spec under the name has
// it, and its network's removal (`network rm`, the same generation)
// still releases its containers' addresses. Once the network is made
// again, a request naming the old generation is refused, naming the pool
// ID and saying the network was made again, even while the new network
// is being removed (whose pool, released from, would free the new
// network's address); its ReleasePool counts off its own record only.
func TestPoolIDOfAGeneration(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	pl, call := pluginFor(t, kv, "n1")
	st := netspec.NewStore(kv)
	// The agent's network reconciler reads the specs at every change.
	reconcile := func() {
		t.Helper()
		if _, err := pl.Pools.(SpecPools).Store.ReadListing(ctx); err != nil {
			t.Fatal(err)
		}
	}
	must := mustCall(t, call)
	gw := map[string]string{"RequestAddressType": "com.docker.network.gateway"}
	v4 := must("IpamDriver.RequestPool", map[string]any{"Pool": lanSpec.Subnet.String()})["PoolID"].(string)
	v6 := must("IpamDriver.RequestPool", map[string]any{"Pool": lanSpec.IPv6Subnet.String(), "V6": true})["PoolID"].(string)
	pair, _, err := kv.Get(ctx, netspec.SpecKey(lanSpec.Name))
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("lan/v4@%d", pair.CreateIndex); v4 != want {
		t.Errorf("RequestPool's pool ID %s, want %s: the network's generation is its spec's CreateIndex", v4, want)
	}
	if want := fmt.Sprintf("lan/v6@%d", pair.CreateIndex); v6 != want {
		t.Errorf("RequestPool's IPv6 pool ID %s, want %s", v6, want)
	}
	if out := must("IpamDriver.RequestAddress", map[string]any{"PoolID": v4, "Options": gw}); out["Address"] != "10.90.0.1/24" {
		t.Errorf("gateway of %s: %v, want 10.90.0.1/24", v4, out)
	}
	a4 := must("IpamDriver.RequestAddress", map[string]any{"PoolID": v4})["Address"].(string)
	a6 := must("IpamDriver.RequestAddress", map[string]any{"PoolID": v6})["Address"].(string)
	b4 := must("IpamDriver.RequestAddress", map[string]any{"PoolID": v4})["Address"].(string)

	// The network's removal, under way: its containers' addresses go.
	if err := st.MarkDeleting(ctx, lanSpec.Name); err != nil {
		t.Fatal(err)
	}
	reconcile()
	if code, out := call("IpamDriver.RequestAddress", map[string]any{"PoolID": v4}); code != 500 || !strings.Contains(fmt.Sprint(out["Err"]), "is being removed") {
		t.Errorf("request in %s while its network is being removed: %d %v, want refused", v4, code, out)
	}
	must("IpamDriver.ReleaseAddress", map[string]any{"PoolID": v4, "Address": a4})
	must("IpamDriver.ReleaseAddress", map[string]any{"PoolID": v6, "Address": a6})
	wantFree(t, ctx, kv, "its release during its network's removal", a4, a6)

	// Made again, and being removed in turn: this node holds b4 there.
	// The old network's last container's late release, then the old
	// network's gateway release and ReleasePool, as dockerd sends them.
	if err := st.Delete(ctx, lanSpec.Name, NetworkPrefix(lanSpec.Name)); err != nil {
		t.Fatal(err)
	}
	now := served(t, st, lanSpec)
	held := netip.MustParsePrefix(b4).Addr()
	if _, err := pl.Alloc.Allocate(ctx, now, held, KindTask); err != nil {
		t.Fatal(err)
	}
	if err := st.MarkDeleting(ctx, lanSpec.Name); err != nil {
		t.Fatal(err)
	}
	reconcile()
	for _, c := range []struct {
		method string
		req    map[string]any
	}{
		{"IpamDriver.ReleaseAddress", map[string]any{"PoolID": v4, "Address": b4}},
		{"IpamDriver.RequestAddress", map[string]any{"PoolID": v4}},
		{"IpamDriver.RequestAddress", map[string]any{"PoolID": v4, "Options": gw}},
		{"IpamDriver.RequestAddress", map[string]any{"PoolID": v6}},
		{"IpamDriver.ReleaseAddress", map[string]any{"PoolID": v4, "Address": "10.90.0.1"}},
	} {
		code, out := call(c.method, c.req)
		msg := fmt.Sprint(out["Err"])
		if code != 500 || !strings.Contains(msg, quoted(c.req["PoolID"].(string))) || !strings.Contains(msg, "made again") {
			t.Errorf("%s %v after the network was made again: %d %v, want refused, naming the pool ID and the network made again", c.method, c.req, code, out)
		}
	}
	all, err := Allocations(ctx, kv, now)
	if err != nil {
		t.Fatal(err)
	}
	if all[held].Node != "n1" {
		t.Errorf("%s, this node's in the network made again, after the old network's late release: %+v, want still n1's", held, all[held])
	}
	// Its ReleasePool counts off the old generation's record only.
	cur := now.PluginID()
	pl.mu.Lock()
	pl.pools[cur] = poolEntry{pool: now, requests: 1}
	pl.mu.Unlock()
	must("IpamDriver.ReleasePool", map[string]any{"PoolID": v4})
	if e, ok := pl.served(cur); !ok || e.requests != 1 {
		t.Errorf("%s recorded %t with %d RequestPools after the ReleasePool of %s; want kept with its 1", cur, ok, e.requests, v4)
	}
	if e, ok := pl.served(v4); ok && e.requests != 0 {
		t.Errorf("%s recorded with %d RequestPools after its last ReleasePool, want 0", v4, e.requests)
	}
}

// TestPoolIDWithABadGeneration: a pool ID's generation comes from the
// plugin socket: one not written as PluginID writes it (empty, not
// decimal, zero, too large, signed, a leading zero, or a second
// separator) is refused by every call that takes a pool ID, naming the
// ID quoted, never taken for an ID naming none.
func TestPoolIDWithABadGeneration(t *testing.T) {
	_, call := pluginFor(t, kvtest.New(), "n1")
	for _, id := range []string{"lan/v4@", "lan/v4@x", "lan/v4@0", "lan/v4@18446744073709551616", "lan/v4@-1", "lan/v4@+1",
		"lan/v4@01", "lan/v4@1@2", "lan/v4@@1", "lan/v6@1\nFAKE: line", "lan/v4@ 1", "lan@1/v4x"} {
		for _, c := range []struct {
			method string
			req    map[string]any
		}{
			{"IpamDriver.RequestAddress", map[string]any{"PoolID": id}},
			{"IpamDriver.RequestAddress", map[string]any{"PoolID": id, "Options": map[string]string{"RequestAddressType": "com.docker.network.gateway"}}},
			{"IpamDriver.ReleaseAddress", map[string]any{"PoolID": id, "Address": "10.90.0.200"}},
			{"IpamDriver.ReleasePool", map[string]any{"PoolID": id}},
		} {
			code, out := call(c.method, c.req)
			msg := fmt.Sprint(out["Err"])
			if code != 500 || !strings.Contains(msg, quoted(id)) || strings.Contains(msg, "\n") {
				t.Errorf("%s %q: %d %v, want refused, naming the pool ID quoted", c.method, c.req, code, out)
			}
		}
	}
}

// TestPoolIDOfAnOlderAgent: Docker keeps the pool IDs of its networks
// made while an older agent served the plugin, which named no generation
// (NETWORK/v4, NETWORK/v6). They are served as they always were, on a
// plugin that never answered their RequestPool: any address, the gateway,
// IPv6, a release, the ReleasePool. This is the upgrade path.
func TestPoolIDOfAnOlderAgent(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	pl, call := pluginFor(t, kv, "n1")
	must := mustCall(t, call)
	if out := must("IpamDriver.RequestAddress", map[string]any{"PoolID": "lan/v4", "Options": map[string]string{"RequestAddressType": "com.docker.network.gateway"}}); out["Address"] != "10.90.0.1/24" {
		t.Errorf("gateway of lan/v4: %v, want 10.90.0.1/24", out)
	}
	a4 := must("IpamDriver.RequestAddress", map[string]any{"PoolID": "lan/v4"})["Address"].(string)
	a6 := must("IpamDriver.RequestAddress", map[string]any{"PoolID": "lan/v6"})["Address"].(string)
	must("IpamDriver.ReleaseAddress", map[string]any{"PoolID": "lan/v4", "Address": a4})
	must("IpamDriver.ReleaseAddress", map[string]any{"PoolID": "lan/v6", "Address": a6})
	wantFree(t, ctx, kv, "its release under the older pool ID", a4, a6)
	for _, id := range []string{"lan/v4", "lan/v6"} {
		must("IpamDriver.ReleasePool", map[string]any{"PoolID": id})
		if _, ok := pl.served(id); ok {
			t.Errorf("%s still recorded as served after its ReleasePool, none of its addresses held", id)
		}
	}
}

// TestLateReleaseOfAnOlderGenerationOnceGone: a release whose network
// has no spec now falls back on the pool as this plugin served it under
// that ID, whose write, its spec gone, is bound to nothing. The network
// made again (served here under its new generation, A handed out there
// again) and its spec then deleted by hand, the blocks left: the old
// generation's late release fell back on the old pool and freed A in the
// blocks the new generation's container holds it in. It is refused now:
// this plugin served a later generation of the pool since.
func TestLateReleaseOfAnOlderGenerationOnceGone(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	pl, call := pluginFor(t, kv, "n1")
	must := mustCall(t, call)
	old := must("IpamDriver.RequestPool", map[string]any{"Pool": lanSpec.Subnet.String()})["PoolID"].(string)
	a := must("IpamDriver.RequestAddress", map[string]any{"PoolID": old})["Address"].(string)
	st := pl.Pools.(SpecPools).Store
	if err := st.Delete(ctx, lanSpec.Name, NetworkPrefix(lanSpec.Name)); err != nil {
		t.Fatal(err)
	}
	if err := st.Create(ctx, lanSpec); err != nil {
		t.Fatal(err)
	}
	cur := must("IpamDriver.RequestPool", map[string]any{"Pool": lanSpec.Subnet.String()})["PoolID"].(string)
	must("IpamDriver.RequestAddress", map[string]any{"PoolID": cur, "Address": netip.MustParsePrefix(a).Addr().String()})
	// The new network's spec deleted by hand, its blocks left; the
	// agent's reconciler reads the specs.
	if err := kv.Delete(ctx, netspec.SpecKey(lanSpec.Name)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.ReadListing(ctx); err != nil {
		t.Fatal(err)
	}
	code, out := call("IpamDriver.ReleaseAddress", map[string]any{"PoolID": old, "Address": a})
	if msg := fmt.Sprint(out["Err"]); code != 500 || !strings.Contains(msg, quoted(old)) {
		t.Errorf("late release of %s with the first network's pool ID %s, its name's spec gone since the network was made again: %d %v, want refused, naming the pool ID", a, old, code, out)
	}
	all, err := Allocations(ctx, kv, PoolOf4(lanSpec))
	if err != nil {
		t.Fatal(err)
	}
	if addr := netip.MustParsePrefix(a).Addr(); all[addr].Node != "n1" {
		t.Errorf("%s, held in the network made again, after the first network's late release: %+v, want still n1's", addr, all[addr])
	}
	// The new generation's own late release still frees it.
	must("IpamDriver.ReleaseAddress", map[string]any{"PoolID": cur, "Address": a})
}

// wantFree fails the test unless the addresses (as the plugin answers
// them, with their prefix length) are free in lan's pools, after what
// freed them.
func wantFree(t *testing.T, ctx context.Context, kv *kvtest.KV, after string, addrs ...string) {
	t.Helper()
	for _, addr := range addrs {
		a := netip.MustParsePrefix(addr).Addr()
		p, _ := PoolOf(lanSpec, a.Is6())
		all, err := Allocations(ctx, kv, p)
		if err != nil {
			t.Fatal(err)
		}
		if al, ok := all[a]; ok {
			t.Errorf("%s still allocated (%+v) after %s", addr, al, after)
		}
	}
}

// TestRecordsOfOlderGenerationsGo: lan is removed and made again under
// its name many times while this node keeps a container on each
// generation (its tree deleted under the container, as `node rm` of a
// live node does). Docker's networks of the older generations go, their
// containers' releases refused (made again) and their ReleasePools
// answered. Each older generation's record was kept: dropUnheld reads
// whether this node holds an address of the pool's ID, any generation's,
// and the latest generation's container holds one. The records grew by
// one with each remake for as long as the agent ran, and none was ever
// used: a request or release naming an older generation is refused
// (remadeError), whatever is recorded. An older generation's record now
// goes at its last ReleasePool once a later generation is recorded.
func TestRecordsOfOlderGenerationsGo(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	pl, call := pluginFor(t, kv, "n1")
	must := mustCall(t, call)
	st := pl.Pools.(SpecPools).Store
	req := map[string]any{"Pool": lanSpec.Subnet.String()}
	id := must("IpamDriver.RequestPool", req)["PoolID"].(string)
	addr := must("IpamDriver.RequestAddress", map[string]any{"PoolID": id})["Address"].(string)
	for i := range 5 {
		if err := st.Delete(ctx, lanSpec.Name, NetworkPrefix(lanSpec.Name)); err != nil {
			t.Fatal(err)
		}
		if err := st.Create(ctx, lanSpec); err != nil {
			t.Fatal(err)
		}
		cur := must("IpamDriver.RequestPool", req)["PoolID"].(string)
		next := must("IpamDriver.RequestAddress", map[string]any{"PoolID": cur})["Address"].(string)
		// The older network's container and Docker network go.
		if code, out := call("IpamDriver.ReleaseAddress", map[string]any{"PoolID": id, "Address": addr}); code == 200 {
			t.Errorf("remake %d: release of %s with the older pool ID %s answered %v, want refused", i, addr, id, out)
		}
		must("IpamDriver.ReleasePool", map[string]any{"PoolID": id})
		if _, ok := pl.served(id); ok {
			t.Errorf("remake %d: the record of %s kept after its ReleasePool, generation %s recorded since", i, id, cur)
		}
		if _, ok := pl.served(cur); !ok {
			t.Errorf("remake %d: the record of %s, served, is gone", i, cur)
		}
		id, addr = cur, next
	}
	pl.mu.Lock()
	n := len(pl.pools)
	pl.mu.Unlock()
	if n != 1 {
		t.Errorf("%d pool records after 5 remakes, want 1: the latest generation's", n)
	}
	// The latest generation is served as ever.
	must("IpamDriver.ReleaseAddress", map[string]any{"PoolID": id, "Address": addr})
	must("IpamDriver.ReleasePool", map[string]any{"PoolID": id})
}

// TestOlderAgentsPoolIDOnceMadeAgain: a pool ID of an older agent names no
// generation (NETWORK/v4), and is served from the spec under the name. The
// network's tree deleted under its containers and made again under the
// name (the plugin serving both), the old Docker network's late release
// under that ID freed an address in the network made again, where this
// node had handed it to another container:
//
//	late release of 10.90.0.128 under the older agent's pool ID "lan/v4", the network made again since: 200 map[], want refused, naming the pool ID and the network made again
//
// The plugin now takes such an ID, once it served it, for the generation
// it served it under: a network made again since is refused under it, as
// under an older generation's ID. Across an agent's restart it is not
// known (see doc.go): served then from the spec as it stands.
func TestOlderAgentsPoolIDOnceMadeAgain(t *testing.T) {
	ctx := context.Background()
	kv := kvtest.New()
	pl, call := pluginFor(t, kv, "n1")
	must := mustCall(t, call)
	held := must("IpamDriver.RequestAddress", map[string]any{"PoolID": "lan/v4"})["Address"].(string)
	addr := netip.MustParsePrefix(held).Addr()
	st := pl.Pools.(SpecPools).Store
	if err := st.Delete(ctx, lanSpec.Name, NetworkPrefix(lanSpec.Name)); err != nil {
		t.Fatal(err)
	}
	if err := st.Create(ctx, lanSpec); err != nil {
		t.Fatal(err)
	}
	cur := must("IpamDriver.RequestPool", map[string]any{"Pool": lanSpec.Subnet.String()})["PoolID"].(string)
	must("IpamDriver.RequestAddress", map[string]any{"PoolID": cur, "Address": addr.String()})
	code, out := call("IpamDriver.ReleaseAddress", map[string]any{"PoolID": "lan/v4", "Address": held})
	if msg, _ := out["Err"].(string); code != 500 || !strings.Contains(msg, `"lan/v4"`) || !strings.Contains(msg, "made again") {
		t.Errorf("late release of %s under the older agent's pool ID \"lan/v4\", the network made again since: %d %v, want refused, naming the pool ID and the network made again", addr, code, out)
	}
	if code, out := call("IpamDriver.RequestAddress", map[string]any{"PoolID": "lan/v4"}); code != 500 {
		t.Errorf("request under the older agent's pool ID \"lan/v4\", the network made again since: %d %v, want refused", code, out)
	}
	all, err := Allocations(ctx, kv, PoolOf4(lanSpec))
	if err != nil {
		t.Fatal(err)
	}
	if all[addr].Node != "n1" {
		t.Errorf("%s, held in the network made again, after the late release under \"lan/v4\": %+v, want still n1's", addr, all[addr])
	}
	// The network made again is served under its own ID.
	must("IpamDriver.ReleaseAddress", map[string]any{"PoolID": cur, "Address": held})
	wantFree(t, ctx, kv, "its release under "+cur, held)
}
