package ipam

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/underlay/underlay/internal/kvstore/kvtest"
	"github.com/underlay/underlay/internal/netspec"
)

// TestSweepLeavesRefusedSpecsAlone: a spec written to KV past `network
// create` that fails its checks (netspec.CheckStored) is served by no
// agent, and its pool is not swept either: neither this node's leaks nor
// a departed node's addresses are reclaimed there, and the refusal is
// logged once, not at every sweep. The valid network beside it is swept
// as before.
func TestSweepLeavesRefusedSpecsAlone(t *testing.T) {
	for _, c := range []struct {
		name  string
		spoil func(ctx context.Context, kv *kvtest.KV, spec netspec.Spec)
		want  string // in the logged refusal
		// refused are the networks whose refusal is logged (once each).
		refused []string
	}{
		{"gateway outside the subnet", func(ctx context.Context, kv *kvtest.KV, spec netspec.Spec) {
			spec.Gateway = netip.MustParseAddr("10.9.9.1")
			putSpec(t, kv, spec)
		}, "10.9.9.1", []string{"net"}},
		{"another network on its subnet", func(ctx context.Context, kv *kvtest.KV, spec netspec.Spec) {
			putSpec(t, kv, netspec.Spec{Name: "twin", Subnet: spec.Subnet, Gateway: spec.Gateway, Parent: "eth9", IPAM: netspec.Cluster})
		}, "twin", []string{"net", "twin"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			kv := kvtest.New()
			st, p := clusterNet(t, kv)
			good := netspec.Spec{Name: "good", Subnet: netip.MustParsePrefix("10.3.0.0/24"), Gateway: netip.MustParseAddr("10.3.0.1"),
				Parent: "eth3", IPAM: netspec.Cluster}
			if err := st.Create(ctx, good); err != nil {
				t.Fatal(err)
			}
			clock := t0
			now := func() time.Time { return clock }
			leader := newAllocator(kv, "leader", "g", now, nil)
			dead := newAllocator(kv, "dead", "g", now, nil)
			// In each pool: a leak of this node's and an address of a
			// node gone from the swarm.
			leaks := map[string]netip.Addr{}
			for _, q := range []Pool{p, PoolOf4(good)} {
				for _, a := range []*Allocator{leader, dead} {
					addr, err := a.Allocate(ctx, q, netip.Addr{}, KindTask)
					if err != nil {
						t.Fatal(err)
					}
					leaks[q.Network+"/"+a.Node()] = addr
				}
			}
			var spec netspec.Spec
			for _, s := range mustSpecs(t, st) {
				if s.Name == p.Network {
					spec = s
				}
			}
			c.spoil(ctx, kv, spec)
			logs := &logCounter{}
			r := &Reclaimer{Alloc: leader, Pools: SpecPools{Store: st}, Held: noHeld{}, Cluster: fakeCluster{ready: []string{"leader"}},
				Grace: 10 * time.Second, NodeTimeout: 5 * time.Second, Fresh: 5 * time.Second, Log: slog.New(logs)}
			for range 5 {
				clock = clock.Add(15 * time.Second)
				if err := r.Sweep(ctx); err != nil {
					t.Fatal(err)
				}
			}
			for _, q := range []Pool{p, PoolOf4(good)} {
				all, err := Allocations(ctx, kv, q)
				if err != nil {
					t.Fatal(err)
				}
				for _, node := range []string{"leader", "dead"} {
					addr := leaks[q.Network+"/"+node]
					switch kept := all[addr].Node == node; {
					case q.Network == p.Network && !kept:
						t.Errorf("%s's %s in refused network %s reclaimed (now %+v): a refused spec's pool must be left alone", node, addr, q.Network, all[addr])
					case q.Network == good.Name && kept:
						t.Errorf("%s's %s in valid network %s not reclaimed after 5 sweeps", node, addr, q.Network)
					}
				}
			}
			const msg = "network spec refused: its pool is not swept until it is fixed"
			out := logs.buf.String()
			if n := logs.count(msg); n != len(c.refused) || !strings.Contains(out, c.want) {
				t.Errorf("refusal logged %d times in 5 sweeps (want once for each of %v, naming %s):\n%s", n, c.refused, c.want, out)
			}
			for _, name := range c.refused {
				if !strings.Contains(out, "network="+name+" ") {
					t.Errorf("no refusal logged for %s:\n%s", name, out)
				}
			}
		})
	}
}

// putSpec writes spec to KV as a hand (or a bug) would, past `network create`.
func putSpec(t *testing.T, kv *kvtest.KV, spec netspec.Spec) {
	t.Helper()
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Put(context.Background(), netspec.KVPrefix+spec.Name+"/spec", b); err != nil {
		t.Fatal(err)
	}
}

func mustSpecs(t *testing.T, st *netspec.Store) []netspec.Spec {
	t.Helper()
	specs, err := st.Specs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return specs
}
